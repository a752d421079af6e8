//! Exact top-k selections of a model's scores, and the standardisation the threshold head
//! predicts on: what fitting and pruning share.

use hyperprune_sdk::PruneRequest;

use crate::features::Encoded;
use crate::mask::{self, MaskMode};
use crate::network::Allocation;

/// A hard mask and its boundary, one threshold per layer.
pub struct Selection {
    /// Keep masks, one per layer.
    pub keep: Vec<Vec<bool>>,
    /// Per layer: the score between its lowest kept and highest pruned weight (the same for
    /// every layer under a learned allocation: the global boundary).
    pub thresholds: Vec<f32>,
}

/// The exact top-k mask of `scores` for a global request at `s`: across layers when the
/// allocation is learned; within each layer, at global magnitude pruning's split (floors
/// included), when it is magnitude's.
pub fn select(allocation: Allocation, encoded: &Encoded, scores: &[f32], s: f64, floor: f64) -> Selection {
    let layers = split_layers(encoded, scores);
    let request = PruneRequest::global(s, 0);
    match allocation {
        Allocation::Learned => {
            let m = mask::build(&layers, &request, floor, MaskMode::TopK);
            Selection { thresholds: vec![m.threshold; m.keep.len()], keep: m.keep }
        }
        Allocation::Magnitude => {
            let ranks = encoded.model_ranks();
            let by_magnitude = mask::build(&split_layers(encoded, &ranks), &request, floor, MaskMode::TopK);
            let budgets: Vec<usize> = by_magnitude.keep.iter().map(|k| k.iter().filter(|&&x| x).count()).collect();
            let (keep, thresholds) = mask::with_budgets(&layers, &budgets);
            Selection { keep, thresholds }
        }
    }
}

impl Selection {
    /// The mask as 0/1 floats, layer order.
    pub fn as_f32(&self) -> Vec<f32> {
        self.keep.iter().flatten().map(|&k| if k { 1.0 } else { 0.0 }).collect()
    }

    /// Each weight's layer threshold, layer order.
    pub(crate) fn per_weight(&self) -> Vec<f32> {
        self.keep.iter().zip(&self.thresholds).flat_map(|(k, &t)| std::iter::repeat_n(t, k.len())).collect()
    }

    /// `scores` (layer order) measured from their layer's threshold, comparable across layers:
    /// what the refinement starts from.
    pub(crate) fn measure_from_thresholds(&self, scores: &mut [f32]) {
        scores.iter_mut().zip(self.per_weight()).for_each(|(s, t)| *s -= t);
    }
}

/// `scores` cut into the layers of `encoded`.
pub fn split_layers<'s>(encoded: &Encoded, scores: &'s [f32]) -> Vec<&'s [f32]> {
    let mut rest = scores;
    encoded
        .views
        .iter()
        .map(|v| {
            let (head, tail) = rest.split_at(v.len());
            rest = tail;
            head
        })
        .collect()
}

pub(crate) fn mean(v: &[f32]) -> f32 {
    (v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64) as f32
}

/// Scores standardised over the model's weights: what the threshold head predicts on.
pub fn standardise(scores: &mut [f32]) {
    let (m, sd) = (mean(scores), std_dev(scores).max(1e-6));
    scores.iter_mut().for_each(|s| *s = (*s - m) / sd);
}

pub(crate) fn std_dev(v: &[f32]) -> f32 {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt() as f32
}

//! From scores to a mask: exact global top-k with a per-layer floor, per-layer top-k, or a
//! threshold at zero (the sparsity then emerges from the scores, held within
//! [`THRESHOLD_BAND`] of the request).
//!
//! The floor keeps the `max(1, ⌈floor · n_l⌉)` best-scored weights of every layer whatever
//! the global ranking says, so that no layer is cut off (a network with an empty layer
//! outputs a constant). It is taken out of the kept budget, so the achieved sparsity still
//! equals the request exactly.

use hyperprune_sdk::{PruneRequest, Scope, masking};

/// How far the sparsity of a [`MaskMode::Threshold`] mask may emerge from the request: a
/// mask whose threshold prunes more (fewer) weights than `s + band` (`s − band`) keeps the
/// best-scored weights at that bound instead. The achieved sparsity stays non-decreasing in
/// `s` wherever the emerging one is.
pub const THRESHOLD_BAND: f64 = 0.015;

/// How scores become a mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskMode {
    /// Keep exactly `round((1 − s) · p)` weights: the best scores (and the floors).
    TopK,
    /// Keep every weight whose score is above zero (and the floors), the sparsity held within
    /// [`THRESHOLD_BAND`] of the request.
    Threshold,
}

/// A mask and where its boundary lies.
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    /// Keep masks, one per layer.
    pub keep: Vec<Vec<bool>>,
    /// Flat index (layer order) of the lowest-scored weight kept by the ranking (not by a
    /// floor), when there is one: the weight at the boundary.
    pub boundary: Option<usize>,
    /// Score midway between the lowest kept and the highest pruned weight (by the ranking).
    pub threshold: f32,
}

impl Mask {
    /// The mask as 0/1 floats, layer order.
    pub fn as_f32(&self) -> Vec<f32> {
        self.keep.iter().flatten().map(|&k| if k { 1.0 } else { 0.0 }).collect()
    }

    /// Fraction of weights pruned.
    pub fn sparsity(&self) -> f64 {
        let total: usize = self.keep.iter().map(Vec::len).sum();
        let kept: usize = self.keep.iter().flatten().filter(|&&k| k).count();
        if total == 0 { 0.0 } else { 1.0 - kept as f64 / total as f64 }
    }
}

/// How many weights each layer keeps whatever the ranking: `max(1, ⌈floor · n_l⌉)` (none when
/// `floor` is 0), scaled down when together they would exceed `budget`.
pub fn floors(sizes: &[usize], floor: f64, budget: usize) -> Vec<usize> {
    if floor <= 0.0 {
        return vec![0; sizes.len()];
    }
    let want: Vec<usize> = sizes.iter().map(|&n| ((floor * n as f64).ceil() as usize).max(1).min(n)).collect();
    let total: usize = want.iter().sum();
    if total <= budget {
        return want;
    }
    want.iter().map(|&f| f * budget / total).collect()
}

/// The mask for `request` from per-layer `scores` (higher = keep).
pub fn build(scores: &[&[f32]], request: &PruneRequest, floor: f64, mode: MaskMode) -> Mask {
    let sizes: Vec<usize> = scores.iter().map(|s| s.len()).collect();
    let p: usize = sizes.iter().sum();
    if request.scope == Scope::PerLayer && mode == MaskMode::TopK {
        let keep = masking::per_layer_keep(scores, request.sparsity);
        return Mask { boundary: None, threshold: f32::NAN, keep };
    }
    let budget = p - request.pruned_count(p);
    let floors = floors(&sizes, floor, budget);
    // Floors are reserved by lifting their scores above every other score.
    let mut lifted: Vec<Vec<f32>> = scores.iter().map(|s| s.to_vec()).collect();
    for (layer, &f) in lifted.iter_mut().zip(&floors) {
        for i in masking::top_indices(layer, f) {
            layer[i] = f32::INFINITY;
        }
    }
    let views: Vec<&[f32]> = lifted.iter().map(Vec::as_slice).collect();
    let keep = match mode {
        MaskMode::TopK => masking::global_keep(&views, request.sparsity),
        MaskMode::Threshold => {
            let kept = views.iter().flat_map(|s| s.iter()).filter(|&&v| v > 0.0).count();
            let emerged = 1.0 - kept as f64 / p.max(1) as f64;
            let s = request.sparsity;
            let held = emerged.clamp(s - THRESHOLD_BAND, s + THRESHOLD_BAND);
            if (held - emerged).abs() > 1e-12 {
                masking::global_keep(&views, held)
            } else {
                views.iter().map(|s| s.iter().map(|&v| v > 0.0).collect()).collect()
            }
        }
    };
    let (mut low_kept, mut high_pruned) = ((f32::INFINITY, None), f32::NEG_INFINITY);
    let mut at = 0;
    for (layer, k) in views.iter().zip(&keep) {
        for (i, (&v, &kept)) in layer.iter().zip(k).enumerate() {
            if kept && v.is_finite() && v < low_kept.0 {
                low_kept = (v, Some(at + i));
            } else if !kept && v > high_pruned {
                high_pruned = v;
            }
        }
        at += layer.len();
    }
    Mask { keep, boundary: low_kept.1, threshold: masking::boundary(low_kept.0, high_pruned) }
}

/// `keep` (one mask per layer, a refinement of `start` at the same budget) with every layer
/// back at its floor (`floors[l]` weights at least): a layer below it takes back its
/// best-scored pruned weights (`scores`, flat in layer order), and as many weights leave the
/// layers above their floor, lowest score first, among those `start` kept too (the weights
/// the refinement added stay; failing those, any weight above its layer's floor). Masks at
/// or above every floor are returned as they are.
pub fn restore_floors(keep: &mut [Vec<bool>], start: &[Vec<bool>], scores: &[f32], floors: &[usize]) {
    let starts: Vec<usize> = keep
        .iter()
        .scan(0, |at, k| {
            let first = *at;
            *at += k.len();
            Some(first)
        })
        .collect();
    let mut kept: Vec<usize> = keep.iter().map(|k| k.iter().filter(|&&x| x).count()).collect();
    let mut owed = 0;
    for (l, layer) in keep.iter_mut().enumerate() {
        let short = floors[l].saturating_sub(kept[l]);
        if short == 0 {
            continue;
        }
        let layer_scores = &scores[starts[l]..][..layer.len()];
        let mut pruned: Vec<usize> = (0..layer.len()).filter(|&i| !layer[i]).collect();
        pruned.sort_unstable_by(|&a, &b| layer_scores[b].total_cmp(&layer_scores[a]).then(a.cmp(&b)));
        for &i in pruned.iter().take(short) {
            layer[i] = true;
        }
        kept[l] += short.min(pruned.len());
        owed += short.min(pruned.len());
    }
    if owed == 0 {
        return;
    }
    // Candidates to leave: (second pass, score, layer, index), the start's kept weights first.
    let mut candidates: Vec<(bool, f32, usize, usize)> = Vec::new();
    for (l, layer) in keep.iter().enumerate() {
        if kept[l] <= floors[l] {
            continue;
        }
        for (i, &k) in layer.iter().enumerate() {
            if k {
                candidates.push((!start[l][i], scores[starts[l] + i], l, i));
            }
        }
    }
    candidates.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then((a.2, a.3).cmp(&(b.2, b.3))));
    for (_, _, l, i) in candidates {
        if owed == 0 {
            break;
        }
        if kept[l] > floors[l] {
            keep[l][i] = false;
            kept[l] -= 1;
            owed -= 1;
        }
    }
}

/// Keeps the `budgets[l]` best-scored weights of each layer `l`; returns the keep masks and,
/// per layer, the score midway between its lowest kept and highest pruned weight.
pub fn with_budgets(scores: &[&[f32]], budgets: &[usize]) -> (Vec<Vec<bool>>, Vec<f32>) {
    scores
        .iter()
        .zip(budgets)
        .map(|(layer, &b)| {
            let mut keep = vec![false; layer.len()];
            for i in masking::top_indices(layer, b.min(layer.len())) {
                keep[i] = true;
            }
            let low_kept = layer.iter().zip(&keep).filter(|(_, k)| **k).map(|(v, _)| *v).fold(f32::INFINITY, f32::min);
            let high_pruned =
                layer.iter().zip(&keep).filter(|(_, k)| !**k).map(|(v, _)| *v).fold(f32::NEG_INFINITY, f32::max);
            (keep, masking::boundary(low_kept, high_pruned))
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyperprune_sdk::rng::SplitMix64;

    #[test]
    fn top_k_is_exact_for_many_sparsities_and_keeps_every_floor() {
        let mut rng = SplitMix64::new(7);
        let sizes = [150usize, 2400, 30, 10];
        let scores: Vec<Vec<f32>> =
            sizes.iter().enumerate().map(|(l, &n)| (0..n).map(|_| rng.next_f32() + l as f32).collect()).collect();
        let views: Vec<&[f32]> = scores.iter().map(Vec::as_slice).collect();
        let p: usize = sizes.iter().sum();
        for _ in 0..50 {
            let s = 0.3 + 0.69 * rng.next_f64();
            let request = PruneRequest::global(s, 0);
            let mask = build(&views, &request, 0.01, MaskMode::TopK);
            let pruned = mask.keep.iter().flatten().filter(|&&k| !k).count();
            assert_eq!(pruned, request.pruned_count(p), "s = {s}");
            // Layer 0 has the lowest scores: only its floor survives high sparsities.
            assert!(mask.keep.iter().all(|k| k.iter().any(|&x| x)), "a layer was emptied at s = {s}");
        }
    }

    #[test]
    fn a_refined_mask_gets_its_floors_back_from_the_weights_the_start_kept() {
        // Three layers; floors 2 / 1 / 1. The refinement left layer 0 with one weight, took
        // weight 3 of layer 1 in (the start pruned it) and kept the budget of 6.
        let start = vec![vec![true, true, false, false], vec![true, true, true, false], vec![true, false]];
        let mut keep = vec![vec![true, false, false, false], vec![true, true, true, true], vec![true, false]];
        let scores = [0.9, 0.8, 0.7, 0.1, 0.6, 0.2, 0.5, 0.05, 0.4, 0.3];
        restore_floors(&mut keep, &start, &scores, &[2, 1, 1]);
        // Layer 0 takes back its best pruned weight (1, score 0.8); layer 1 gives up the
        // lowest-scored weight the start kept too (1, score 0.2), not the refinement's 3 (0.05).
        assert_eq!(keep, vec![vec![true, true, false, false], vec![true, false, true, true], vec![true, false]]);
        // At or above every floor: unchanged.
        let before = keep.clone();
        restore_floors(&mut keep, &start, &scores, &[1, 1, 1]);
        assert_eq!(keep, before);
        // Nothing of the start left to give above the floors: the refinement's weights go,
        // lowest score first, and no layer goes below its floor.
        let start = vec![vec![true, true], vec![false, false, false]];
        let mut keep = vec![vec![false, false], vec![true, true, false]];
        restore_floors(&mut keep, &start, &[0.5, 0.9, 0.3, 0.1, 0.2], &[1, 1]);
        assert_eq!(keep, vec![vec![false, true], vec![true, false, false]]);
    }

    #[test]
    fn budgets_are_kept_per_layer_with_thresholds_between() {
        let (a, b) = ([0.1f32, 0.9, 0.5], [3.0f32, 1.0]);
        let (keep, thresholds) = with_budgets(&[&a, &b], &[2, 0]);
        assert_eq!(keep, vec![vec![false, true, true], vec![false, false]]);
        assert!((thresholds[0] - 0.3).abs() < 1e-6);
        assert_eq!(thresholds[1], 3.0);
    }

    #[test]
    fn floors_never_exceed_the_budget() {
        assert_eq!(floors(&[100, 1000], 0.01, 1000), vec![1, 10]);
        assert_eq!(floors(&[100, 1000], 0.0, 1000), vec![0, 0]);
        assert!(floors(&[100, 1000, 5], 0.5, 10).iter().sum::<usize>() <= 10);
    }

    #[test]
    fn a_threshold_far_from_the_request_is_held_at_the_band() {
        // 100 scores, 30 of them positive: the threshold alone prunes 70 %.
        let a: Vec<f32> = (0..100).map(|i| i as f32 - 69.5).collect();
        let pruned = |s: f64| {
            let mask = build(&[&a], &PruneRequest::global(s, 0), 0.0, MaskMode::Threshold);
            let kept: Vec<usize> = (0..100).filter(|&i| mask.keep[0][i]).collect();
            // Whatever the count, the best scores are the ones kept.
            assert!(kept.iter().all(|&i| i >= 100 - kept.len()), "s = {s}");
            100 - kept.len()
        };
        // Within the band, the threshold decides; beyond it, the band's bound.
        assert_eq!(pruned(0.69), 70);
        assert_eq!(pruned(0.71), 70);
        assert_eq!(pruned(0.503), 52);
        assert_eq!(pruned(0.903), 89);
        let counts: Vec<usize> = (0..=60).map(|i| pruned(0.4 + 0.01 * i as f64)).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        // The band, and half a weight of rounding.
        let off = |(&c, i): (&usize, i32)| (c as f64 / 100.0 - (0.4 + 0.01 * i as f64)).abs();
        assert!(counts.iter().zip(0..).all(|x| off(x) <= THRESHOLD_BAND + 0.005 + 1e-9), "{counts:?}");
    }

    #[test]
    fn threshold_mode_keeps_positive_scores_and_the_boundary_is_between() {
        let a = [-1.0f32, 0.5, 2.0, -0.2];
        let mask = build(&[&a], &PruneRequest::global(0.5, 0), 0.0, MaskMode::Threshold);
        assert_eq!(mask.keep[0], vec![false, true, true, false]);
        let mask = build(&[&a], &PruneRequest::global(0.5, 0), 0.0, MaskMode::TopK);
        assert_eq!(mask.keep[0], vec![false, true, true, false]);
        assert_eq!(mask.boundary, Some(1));
        assert!((mask.threshold - 0.15).abs() < 1e-6);
    }
}

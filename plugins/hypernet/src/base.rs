//! The base score: what the network's score is a residual on (`skip · base + head(h)`).
//!
//! The base is the model-wide percentile rank of `|w| / ‖W_l‖^α`, with `‖W_l‖` the L2 norm
//! of the weight's layer: `α = 0` is global magnitude pruning, `α = 1` magnitude pruning
//! with layer-normalised scores (`magnitude --opt normalize=layer-l2`), which keeps more of
//! the small layers. Which is better depends on the compression: on the Fashion-MNIST zoos
//! the layer-normalised split is ahead at 2×–4× (cnn-s at 4×: 63.8 % retention against
//! 47.5) and behind from 16× on (lenet5 at 16×: 25.4 against 34.3). So `α` is a function of
//! the compression `c`: one value per knot at `c` = 2, 4, 8, 16, 32, linear in `log₂ c`
//! between them and constant outside. The fit chooses each knot on the val members, with
//! the untrained network, before training; the state stores the knots.
//!
//! After training, the fit also chooses on the val members, at each knot, how far the mask
//! follows the trained network rather than its base: the score is `γ · z(network) + (1 − γ)
//! · z(base)`, `z` standardising over the model's weights, `γ` from [`GAIN_GRID`] (1: the
//! network as fitted, 0: the base alone). A network that gains at 16× but loses at 8× keeps
//! its scores at 16× and prunes by the base at 8×. `γ` is interpolated between the knots as
//! `α` is. (Scaling the network's head alone would not do: it also reads the magnitude ranks,
//! and a fitted network's skip weight can be small beside its head.)
//!
//! The layer-normalised family does not contain LAMP (Lee et al., ICLR 2021), the strongest
//! data-free formula on several zoos, whose per-layer budget follows each layer's tail of
//! squares rather than its norm. So the last choice at each knot, on the val members, has a
//! fourth candidate beside `γ` = 1, 0.5, 0: LAMP alone ([`LAMP_ALONE`]), the network left
//! out. A knot where LAMP keeps more on the val members than the fitted network and its
//! base prunes as LAMP does; so does a knot where no candidate keeps more than chance on the
//! val members (every mask there leaves the network guessing, so they cannot choose). The
//! base can also be LAMP's rank throughout (`base=lamp`, `λ = 1`: the network is then
//! trained as a residual on LAMP); in general it is the blend
//! `λ · rank(LAMP) + (1 − λ) · rank(|w| / ‖W_l‖^α)`, `λ` interpolated as `α` is. Training
//! on LAMP's rank rather than choosing it at the end was measured and is not the default
//! (the research log, *LAMP in the base*).

use serde::{Deserialize, Serialize};

use crate::features::{Encoded, percentile_ranks};
use crate::network::{NetConfig, Params};

/// The values of `α` the fit chooses each knot from.
pub const ALPHA_GRID: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

/// The values of the network's weight `γ` the fit chooses each knot from (1 first: ties keep
/// the network as fitted).
pub const GAIN_GRID: [f64; 3] = [1.0, 0.5, 0.0];

/// The candidate of the last choice at each knot (after [`GAIN_GRID`]'s) that prunes by
/// LAMP's rank alone: `γ = 0`, `λ = 1` there.
pub const LAMP_ALONE: f64 = -1.0;

/// `log₂` of the compressions at the knots: 2×, 4×, 8×, 16×, 32×.
const KNOTS: [f64; 5] = [1.0, 2.0, 3.0, 4.0, 5.0];

/// The layer-normalisation exponent and the head's gain at each knot.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Base {
    /// `α` at 2×, 4×, 8×, 16× and 32×.
    pub alpha: [f64; 5],
    /// `γ` at 2×, 4×, 8×, 16× and 32× (absent in a state: 1, the network as fitted).
    #[serde(default = "full_gain")]
    pub gain: [f64; 5],
    /// `λ`, LAMP's weight in the base, at 2×, 4×, 8×, 16× and 32× (absent in a state: 0).
    #[serde(default)]
    pub lamp: [f64; 5],
}

fn full_gain() -> [f64; 5] {
    [1.0; 5]
}

impl Base {
    /// Global magnitude ranks at every compression (what states before the base had).
    pub const GLOBAL: Base = Base { alpha: [0.0; 5], gain: [1.0; 5], lamp: [0.0; 5] };

    /// Layer-normalised magnitude ranks at every compression.
    pub const LAYER_L2: Base = Base { alpha: [1.0; 5], gain: [1.0; 5], lamp: [0.0; 5] };

    /// LAMP's ranks at every compression.
    pub const LAMP: Base = Base { alpha: [0.0; 5], gain: [1.0; 5], lamp: [1.0; 5] };

    /// The same `α` at every compression, the head as fitted.
    pub fn uniform(alpha: f64) -> Base {
        Base { alpha: [alpha; 5], ..Base::GLOBAL }
    }

    /// `α` at sparsity `s`.
    pub fn alpha(&self, s: f64) -> f64 {
        interpolate(&self.alpha, s)
    }

    /// `λ` at sparsity `s`.
    pub fn lamp(&self, s: f64) -> f64 {
        interpolate(&self.lamp, s)
    }

    /// `γ` at sparsity `s`.
    pub fn gain(&self, s: f64) -> f64 {
        interpolate(&self.gain, s)
    }

    /// The knot nearest to sparsity `s` (in `log₂ c`).
    pub fn knot(s: f64) -> usize {
        let x = (1.0 / (1.0 - s).max(1e-9)).log2();
        (0..KNOTS.len()).min_by(|&a, &b| (KNOTS[a] - x).abs().total_cmp(&(KNOTS[b] - x).abs())).unwrap_or(0)
    }

    /// The base scores of a model with weights `weights` at sparsity `s`, or `None` where
    /// `α = 0` and `λ = 0` (the encoding's model-wide magnitude rank is the base then).
    pub fn ranks(&self, weights: &[&[f32]], s: f64) -> Option<Vec<f32>> {
        let (alpha, lamp) = (self.alpha(s), self.lamp(s) as f32);
        if lamp <= 0.0 {
            return (alpha > 0.0).then(|| scaled_ranks(weights, alpha as f32));
        }
        let by_lamp = lamp_ranks(weights);
        if lamp >= 1.0 {
            return Some(by_lamp);
        }
        let family = scaled_ranks(weights, alpha as f32);
        Some(by_lamp.iter().zip(family).map(|(l, f)| lamp * l + (1.0 - lamp) * f).collect())
    }
}

/// `knots` (at 2×, …, 32×) at sparsity `s`: linear in `log₂ c` between them, flat outside.
fn interpolate(knots: &[f64; 5], s: f64) -> f64 {
    let x = (1.0 / (1.0 - s).max(1e-9)).log2().clamp(KNOTS[0], KNOTS[4]);
    let i = KNOTS.iter().rposition(|&k| k <= x).unwrap_or(0).min(3);
    let t = (x - KNOTS[i]) / (KNOTS[i + 1] - KNOTS[i]);
    knots[i] + t * (knots[i + 1] - knots[i])
}

/// The scores of a fitted network for `encoded` (the model with weights `weights`) at
/// sparsity `s` on `base`, and its predicted threshold.
pub fn scores(
    config: &NetConfig,
    params: &Params,
    base: &Base,
    encoded: &Encoded,
    weights: &[&[f32]],
    s: f64,
) -> (Vec<f32>, f32) {
    scores_on(config, params, base, encoded, base.ranks(weights, s), s)
}

/// [`scores`] from the base's ranks at `s` (as [`Base::ranks`] gives them), computed apart.
pub fn scores_on(
    config: &NetConfig,
    params: &Params,
    base: &Base,
    encoded: &Encoded,
    ranks: Option<Vec<f32>>,
    s: f64,
) -> (Vec<f32>, f32) {
    let gain = base.gain(s) as f32;
    if gain <= 0.0 {
        // The base alone: the network need not run.
        return (ranks.unwrap_or_else(|| encoded.model_ranks()), crate::infer::threshold_at(params, s));
    }
    let (scores, threshold) = crate::infer::forward(config, params, encoded, ranks.as_deref(), s);
    if gain >= 1.0 {
        return (scores, threshold);
    }
    let base_scores = ranks.unwrap_or_else(|| encoded.model_ranks());
    let (net, by_base) = (standardised(&scores), standardised(&base_scores));
    (net.iter().zip(by_base).map(|(n, b)| gain * n + (1.0 - gain) * b).collect(), threshold)
}

/// `(v − mean) / std` over `v` (std floored at 1e-6).
fn standardised(v: &[f32]) -> Vec<f32> {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let sd = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt().max(1e-6);
    v.iter().map(|&x| ((x as f64 - mean) / sd) as f32).collect()
}

/// The model-wide percentile rank of the LAMP score.
pub fn lamp_ranks(weights: &[&[f32]]) -> Vec<f32> {
    let scores: Vec<f32> = hyperprune_sdk::scores::lamp(weights).into_iter().flatten().collect();
    percentile_ranks(&scores)
}

/// The model-wide percentile rank of `|w| / ‖W_l‖^α`.
pub fn scaled_ranks(weights: &[&[f32]], alpha: f32) -> Vec<f32> {
    let scaled: Vec<f32> = weights
        .iter()
        .flat_map(|w| {
            let norm = (w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt() as f32).max(1e-12);
            let scale = norm.powf(-alpha);
            w.iter().map(move |v| v.abs() * scale)
        })
        .collect();
    percentile_ranks(&scaled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_is_linear_in_log_compression_between_the_knots_and_flat_outside() {
        let base = Base { alpha: [1.0, 0.5, 0.0, 0.0, 0.25], ..Base::GLOBAL };
        let at = |c: f64| base.alpha(1.0 - 1.0 / c);
        assert!((at(1.5) - 1.0).abs() < 1e-12);
        assert!((at(2.0) - 1.0).abs() < 1e-12);
        assert!((at(2f64.powf(1.5)) - 0.75).abs() < 1e-9);
        assert!((at(4.0) - 0.5).abs() < 1e-9);
        assert!((at(12.0)).abs() < 1e-12);
        assert!((at(2f64.powf(4.5)) - 0.125).abs() < 1e-9);
        assert!((at(100.0) - 0.25).abs() < 1e-12);
        assert_eq!(Base::knot(0.5), 0);
        assert_eq!(Base::knot(1.0 - 1.0 / 11.0), 2);
        assert_eq!(Base::knot(0.999), 4);
    }

    #[test]
    fn layer_normalised_ranks_favour_the_layer_with_the_smaller_norm() {
        // Layer 0 has large weights, layer 1 small ones: globally layer 1 ranks lowest;
        // normalised by their layers' norms, the layers interleave.
        let (a, b) = ([4.0f32, -3.0, 2.0, 1.0], [0.4f32, 0.3, -0.2, 0.1]);
        let global = scaled_ranks(&[&a, &b], 0.0);
        assert!(global[4..].iter().all(|&r| r < global[3]));
        let normalised = scaled_ranks(&[&a, &b], 1.0);
        // Same relative sizes in both layers: equal normalised values share their rank.
        assert_eq!(&normalised[..4], &normalised[4..]);
        assert_eq!(global, percentile_ranks(&[4.0, 3.0, 2.0, 1.0, 0.4, 0.3, 0.2, 0.1]));
    }

    #[test]
    fn lamp_weight_blends_lamp_ranks_into_the_base() {
        // Layer 0 large, layer 1 the same weights over 64 (exact in f32): LAMP scores the two
        // layers alike (1/30, 4/29, 9/25, 1), so its ranks interleave them; the global family
        // (alpha 0) ranks every small weight last.
        let a = [10.0f32, 20.0, 30.0, 40.0];
        let b = a.map(|w| w / 64.0);
        let weights: [&[f32]; 2] = [&a, &b];
        let lamp = Base::LAMP.ranks(&weights, 0.75).expect("lamp ranks");
        assert_eq!(lamp, lamp_ranks(&weights));
        assert_eq!(&lamp[..4], &lamp[4..]);
        assert_eq!(Base::GLOBAL.ranks(&weights, 0.75), None);
        // Half LAMP, half global magnitude, at 4x only: the mean of the two rank vectors.
        let half = Base { lamp: [0.0, 0.5, 0.0, 0.0, 0.0], ..Base::GLOBAL };
        let global = scaled_ranks(&weights, 0.0);
        let blended = half.ranks(&weights, 0.75).expect("blended ranks");
        for ((x, l), g) in blended.iter().zip(&lamp).zip(&global) {
            assert!((x - 0.5 * (l + g)).abs() < 1e-6);
        }
        // At 2x the weight is 0 again: no base beyond the encoding's magnitude ranks.
        assert_eq!(half.ranks(&weights, 0.5), None);
    }
}

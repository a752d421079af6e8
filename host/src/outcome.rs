//! Checking what a plugin returned before anything uses it: one mask per layer, names and
//! lengths that match, no bits set past a mask's end, finite new weights, and the sparsity
//! the request asked for ([`verify_sparsity`]). A bad outcome is an error (an error row in a
//! bench), never a crash, and never a number in a table.

use hyperprune_core::Model;
use hyperprune_sdk::{Pattern, PruneOutcome, PruneRequest, Scope};

/// What is wrong with an outcome, or with applying it. The host prefixes the pruner
/// (`plugin 'x' returned an invalid outcome: ...`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OutcomeError {
    /// Not one mask per prunable layer.
    #[error("returned {masks} masks for a model with {layers} prunable layers")]
    MaskCount {
        /// Masks returned.
        masks: usize,
        /// Prunable layers of the model.
        layers: usize,
    },
    /// A mask for another layer than the one at its place.
    #[error("returned a mask for '{mask}' where '{expected}' was expected")]
    MaskName {
        /// The mask's layer name.
        mask: String,
        /// The layer at its place.
        expected: String,
    },
    /// A mask whose length or word count is not the layer's.
    #[error(
        "mask of '{layer}' has length {len} ({words} words); the layer has {weights} weights ({layer_words} words)"
    )]
    MaskLength {
        /// The layer.
        layer: String,
        /// The mask's length.
        len: u64,
        /// The mask's 64-bit words.
        words: usize,
        /// The layer's weights.
        weights: usize,
        /// The words its mask needs.
        layer_words: usize,
    },
    /// Bits set past a mask's last weight.
    #[error("mask of '{layer}' has bits set past its {len} weights: mask values must be 0 or 1 for each weight only")]
    BitsPastEnd {
        /// The layer.
        layer: String,
        /// The mask's length.
        len: u64,
    },
    /// New weights of another count than the layer's weights.
    #[error("new weights of '{layer}' have {values} values; the layer has {weights}")]
    NewWeightsLength {
        /// The layer.
        layer: String,
        /// Values given.
        values: usize,
        /// The layer's weights.
        weights: usize,
    },
    /// New weights with NaN or infinite values.
    #[error("new weights of '{layer}' contain NaN or infinite values")]
    NewWeightsNotFinite {
        /// The layer.
        layer: String,
    },
    /// An N:M mask with a group that keeps too many weights.
    #[error(
        "not a valid {n}:{m} mask: layer {layer}, row {row}, group {group} keeps {kept} of {size} weights \
         (at most {allowed} allowed)"
    )]
    NotNM {
        /// N.
        n: usize,
        /// M.
        m: usize,
        /// Prunable layer index.
        layer: usize,
        /// Row in the layer.
        row: usize,
        /// Group in the row.
        group: usize,
        /// Weights the group keeps.
        kept: usize,
        /// Weights in the group.
        size: usize,
        /// Weights it may keep.
        allowed: usize,
    },
    /// Global scope: not exactly `round(s · p)` weights pruned.
    #[error(
        "achieved sparsity {achieved:.6} ({pruned} of {total} weights pruned) differs from the requested {requested} \
         (round(s·p) = {want} pruned)"
    )]
    GlobalSparsity {
        /// Pruned over all weights.
        achieved: f64,
        /// Weights pruned.
        pruned: usize,
        /// Prunable weights.
        total: usize,
        /// The requested sparsity.
        requested: f64,
        /// Weights the request asks to prune.
        want: usize,
    },
    /// Per-layer scope: a layer that prunes neither `floor(s · p_l)` nor `ceil(s · p_l)`.
    #[error(
        "scope=layer: layer {layer} prunes {pruned} of {weights} weights; the requested sparsity {requested} asks for {}",
        asked_for(*.ideal)
    )]
    LayerSparsity {
        /// Prunable layer index.
        layer: usize,
        /// Weights it pruned.
        pruned: usize,
        /// Its weights.
        weights: usize,
        /// The requested sparsity.
        requested: f64,
        /// `s · p_l`.
        ideal: f64,
    },
    /// Applying the masks to the model failed (never for an outcome checked against it).
    #[error("{0}")]
    Apply(String),
}

/// What a per-layer request asks a layer to prune, given `s · p_l`: `k`, or `k or k + 1`.
fn asked_for(ideal: f64) -> String {
    if ideal.fract() == 0.0 {
        format!("{}", ideal as usize)
    } else {
        format!("{} or {}", ideal.floor() as usize, ideal.ceil() as usize)
    }
}

/// A validated outcome: keep masks and optional new weights, in prunable-layer order.
#[derive(Debug, Clone)]
pub struct CheckedOutcome {
    /// Keep masks (`true` = kept).
    pub keep: Vec<Vec<bool>>,
    /// New weights per layer, where the plugin gave them.
    pub new_weights: Vec<Option<Vec<f32>>>,
}

impl CheckedOutcome {
    /// Pruned weights over all prunable weights.
    pub fn achieved_sparsity(&self) -> f64 {
        let total: usize = self.keep.iter().map(Vec::len).sum();
        let pruned: usize = self.keep.iter().map(|k| k.iter().filter(|&&x| !x).count()).sum();
        if total == 0 { 0.0 } else { pruned as f64 / total as f64 }
    }

    /// A copy of `model` with pruned weights zeroed and new weights applied.
    ///
    /// # Errors
    /// Never for an outcome checked against the same model.
    pub fn apply(&self, model: &Model) -> Result<Model, OutcomeError> {
        let mut pruned = model.clone();
        pruned.apply_masks(&self.keep, Some(&self.new_weights)).map_err(OutcomeError::Apply)?;
        Ok(pruned)
    }
}

/// Checks `outcome` against `model`.
///
/// # Errors
/// A message saying which layer is wrong and how.
pub fn check(model: &Model, outcome: &PruneOutcome) -> Result<CheckedOutcome, OutcomeError> {
    let layers: Vec<_> = model.prunable().collect();
    if outcome.layers.len() != layers.len() {
        return Err(OutcomeError::MaskCount { masks: outcome.layers.len(), layers: layers.len() });
    }
    let mut keep = Vec::with_capacity(layers.len());
    let mut new_weights = Vec::with_capacity(layers.len());
    for (mask, (param, w)) in outcome.layers.iter().zip(&layers) {
        if mask.name.as_str() != param.name {
            return Err(OutcomeError::MaskName { mask: mask.name.to_string(), expected: param.name.clone() });
        }
        if mask.len as usize != w.len() || mask.keep_bits.len() != w.len().div_ceil(64) {
            return Err(OutcomeError::MaskLength {
                layer: param.name.clone(),
                len: mask.len,
                words: mask.keep_bits.len(),
                weights: w.len(),
                layer_words: w.len().div_ceil(64),
            });
        }
        let tail = mask.len % 64;
        if tail > 0 && mask.keep_bits.last().is_some_and(|&word| word >> tail != 0) {
            return Err(OutcomeError::BitsPastEnd { layer: param.name.clone(), len: mask.len });
        }
        keep.push(mask.keep());
        new_weights.push(match mask.new_weights.as_ref().into_option() {
            None => None,
            Some(v) if v.len() != w.len() => {
                return Err(OutcomeError::NewWeightsLength {
                    layer: param.name.clone(),
                    values: v.len(),
                    weights: w.len(),
                });
            }
            Some(v) if v.iter().any(|x| !x.is_finite()) => {
                return Err(OutcomeError::NewWeightsNotFinite { layer: param.name.clone() });
            }
            Some(v) => Some(v.to_vec()),
        });
    }
    Ok(CheckedOutcome { keep, new_weights })
}

/// Checks that `outcome` prunes what `request` asked for, on layers of `row_lens` (each
/// layer's row length: its weights per output unit):
///
/// - global scope: exactly `round(s · p)` of all `p` prunable weights pruned;
/// - per-layer scope: each layer `l` prunes `floor(s · p_l)` or `ceil(s · p_l)` of its weights;
/// - `N:M`: every group of `m` consecutive weights of a row keeps at most `n` (a row's
///   shorter last group at most `round(n/m · len)`), the layout `sdk::masking::nm_keep` uses.
///
/// # Errors
/// The first mismatch, with the requested and the achieved numbers.
pub fn verify_sparsity(
    outcome: &CheckedOutcome,
    request: &PruneRequest,
    row_lens: &[usize],
) -> Result<(), OutcomeError> {
    let pruned = |keep: &[bool]| keep.iter().filter(|&&k| !k).count();
    match (request.pattern, request.scope) {
        (Pattern::NM { n, m }, _) => {
            let (n, m) = (n as usize, m as usize);
            for (l, (keep, &row_len)) in outcome.keep.iter().zip(row_lens).enumerate() {
                if row_len == 0 || !keep.len().is_multiple_of(row_len) {
                    continue;
                }
                for (r, row) in keep.chunks(row_len).enumerate() {
                    for (g, group) in row.chunks(m).enumerate() {
                        let allowed = if group.len() == m {
                            n
                        } else {
                            ((n as f64 / m as f64) * group.len() as f64).round() as usize
                        };
                        let kept = group.iter().filter(|&&k| k).count();
                        if kept > allowed {
                            return Err(OutcomeError::NotNM {
                                n,
                                m,
                                layer: l,
                                row: r,
                                group: g,
                                kept,
                                size: group.len(),
                                allowed,
                            });
                        }
                    }
                }
            }
            Ok(())
        }
        (Pattern::Unstructured, Scope::Global) => {
            let total: usize = outcome.keep.iter().map(Vec::len).sum();
            let want = ((request.sparsity * total as f64).round() as usize).min(total);
            let got: usize = outcome.keep.iter().map(|k| pruned(k)).sum();
            if got == want {
                return Ok(());
            }
            Err(OutcomeError::GlobalSparsity {
                achieved: got as f64 / total.max(1) as f64,
                pruned: got,
                total,
                requested: request.sparsity,
                want,
            })
        }
        (Pattern::Unstructured, Scope::PerLayer) => {
            for (l, keep) in outcome.keep.iter().enumerate() {
                let ideal = request.sparsity * keep.len() as f64;
                let got = pruned(keep);
                if got < ideal.floor() as usize || got > ideal.ceil() as usize {
                    return Err(OutcomeError::LayerSparsity {
                        layer: l,
                        pruned: got,
                        weights: keep.len(),
                        requested: request.sparsity,
                        ideal,
                    });
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(keep: Vec<Vec<bool>>) -> CheckedOutcome {
        let new_weights = vec![None; keep.len()];
        CheckedOutcome { keep, new_weights }
    }

    fn request(sparsity: f64, scope: Scope, pattern: Pattern) -> PruneRequest {
        PruneRequest { sparsity, scope, pattern, seed: 0 }
    }

    fn mask(len: usize, pruned: &[usize]) -> Vec<bool> {
        (0..len).map(|i| !pruned.contains(&i)).collect()
    }

    #[test]
    fn global_scope_needs_exactly_round_s_p_pruned() {
        let global = request(0.5, Scope::Global, Pattern::Unstructured);
        // 10 weights, s = 0.5: exactly 5 pruned, anywhere.
        assert!(verify_sparsity(&outcome(vec![mask(4, &[0, 1, 2, 3]), mask(6, &[0])]), &global, &[2, 3]).is_ok());
        let nothing =
            verify_sparsity(&outcome(vec![mask(4, &[]), mask(6, &[])]), &global, &[2, 3]).unwrap_err().to_string();
        assert!(nothing.contains("0 of 10 weights pruned") && nothing.contains("5 pruned"), "{nothing}");
        assert!(verify_sparsity(&outcome(vec![mask(4, &[0, 1, 2]), mask(6, &[0, 1, 2])]), &global, &[2, 3]).is_err());
        // round(0.25 · 10) = round(2.5) = 3.
        let quarter = request(0.25, Scope::Global, Pattern::Unstructured);
        assert!(verify_sparsity(&outcome(vec![mask(10, &[1, 5, 9])]), &quarter, &[5]).is_ok());
        assert!(verify_sparsity(&outcome(vec![mask(10, &[1, 5])]), &quarter, &[5]).is_err());
    }

    #[test]
    fn layer_scope_checks_every_layer() {
        let layer = request(0.5, Scope::PerLayer, Pattern::Unstructured);
        // Layer sizes 4 and 5: 2, and 2 or 3.
        assert!(verify_sparsity(&outcome(vec![mask(4, &[0, 1]), mask(5, &[0, 1, 2])]), &layer, &[2, 5]).is_ok());
        assert!(verify_sparsity(&outcome(vec![mask(4, &[0, 1]), mask(5, &[0, 1])]), &layer, &[2, 5]).is_ok());
        // Right total, wrong split.
        let e = verify_sparsity(&outcome(vec![mask(4, &[0, 1, 2]), mask(5, &[0, 1])]), &layer, &[2, 5]).unwrap_err();
        assert_eq!(e.to_string(), "scope=layer: layer 0 prunes 3 of 4 weights; the requested sparsity 0.5 asks for 2");
        let e = verify_sparsity(&outcome(vec![mask(4, &[0, 1]), mask(5, &[0])]), &layer, &[2, 5]).unwrap_err();
        assert!(
            e.to_string().ends_with("layer 1 prunes 1 of 5 weights; the requested sparsity 0.5 asks for 2 or 3"),
            "{e}"
        );
    }

    #[test]
    fn n_m_allows_at_most_n_per_group() {
        let two_four = request(0.0, Scope::Global, Pattern::NM { n: 2, m: 4 });
        // One layer, 2 rows of 6: groups of 4 keep at most 2, the tail of 2 at most 1.
        let good = vec![vec![true, false, true, false, true, false, false, true, false, true, false, false]];
        assert!(verify_sparsity(&outcome(good), &two_four, &[6]).is_ok());
        let bad = vec![vec![true, true, true, false, false, false, false, false, false, false, false, false]];
        let e = verify_sparsity(&outcome(bad), &two_four, &[6]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "not a valid 2:4 mask: layer 0, row 0, group 0 keeps 3 of 4 weights (at most 2 allowed)"
        );
        let bad_tail = vec![vec![true, true, false, false, true, true, false, false, false, false, false, false]];
        assert!(verify_sparsity(&outcome(bad_tail), &two_four, &[6]).is_err());
    }
}

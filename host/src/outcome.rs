//! Checking what a plugin returned before anything uses it: one mask per layer, names and
//! lengths that match, finite new weights. A bad outcome is an error (an error row in a
//! bench), never a crash.

use hyperprune_core::Model;
use hyperprune_sdk::PruneOutcome;

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
    pub fn apply(&self, model: &Model) -> Result<Model, String> {
        let mut pruned = model.clone();
        pruned.apply_masks(&self.keep, Some(&self.new_weights))?;
        Ok(pruned)
    }
}

/// Checks `outcome` against `model`.
///
/// # Errors
/// A message saying which layer is wrong and how.
pub fn check(model: &Model, outcome: &PruneOutcome) -> Result<CheckedOutcome, String> {
    let layers: Vec<_> = model.prunable().collect();
    if outcome.layers.len() != layers.len() {
        return Err(format!(
            "returned {} masks for a model with {} prunable layers",
            outcome.layers.len(),
            layers.len()
        ));
    }
    let mut keep = Vec::with_capacity(layers.len());
    let mut new_weights = Vec::with_capacity(layers.len());
    for (mask, (param, w)) in outcome.layers.iter().zip(&layers) {
        if mask.name.as_str() != param.name {
            return Err(format!("returned a mask for '{}' where '{}' was expected", mask.name, param.name));
        }
        if mask.len as usize != w.len() || mask.keep_bits.len() != w.len().div_ceil(64) {
            return Err(format!(
                "mask of '{}' has length {} ({} words); the layer has {} weights ({} words)",
                param.name,
                mask.len,
                mask.keep_bits.len(),
                w.len(),
                w.len().div_ceil(64)
            ));
        }
        keep.push(mask.keep());
        new_weights.push(match mask.new_weights.as_ref().into_option() {
            None => None,
            Some(v) if v.len() != w.len() => {
                return Err(format!(
                    "new weights of '{}' have {} values; the layer has {}",
                    param.name,
                    v.len(),
                    w.len()
                ));
            }
            Some(v) if v.iter().any(|x| !x.is_finite()) => {
                return Err(format!("new weights of '{}' contain NaN or infinite values", param.name));
            }
            Some(v) => Some(v.to_vec()),
        });
    }
    Ok(CheckedOutcome { keep, new_weights })
}

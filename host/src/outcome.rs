//! Checking what a plugin returned before anything uses it: one mask per layer, names and
//! lengths that match, no bits set past a mask's end, finite new weights, and the sparsity
//! the request asked for ([`verify_sparsity`]). A bad outcome is an error (an error row in a
//! bench), never a crash, and never a number in a table.

use hyperprune_core::Model;
use hyperprune_sdk::{Pattern, PruneOutcome, PruneRequest, Scope};

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
        let tail = mask.len % 64;
        if tail > 0 && mask.keep_bits.last().is_some_and(|&word| word >> tail != 0) {
            return Err(format!(
                "mask of '{}' has bits set past its {} weights: mask values must be 0 or 1 for each weight only",
                param.name, mask.len
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
pub fn verify_sparsity(outcome: &CheckedOutcome, request: &PruneRequest, row_lens: &[usize]) -> Result<(), String> {
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
                            return Err(format!(
                                "not a valid {n}:{m} mask: layer {l}, row {r}, group {g} keeps {kept} of {} weights \
                                 (at most {allowed} allowed)",
                                group.len()
                            ));
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
            Err(format!(
                "achieved sparsity {:.6} ({got} of {total} weights pruned) differs from the requested {} (round(s·p) = \
                 {want} pruned)",
                got as f64 / total.max(1) as f64,
                request.sparsity
            ))
        }
        (Pattern::Unstructured, Scope::PerLayer) => {
            for (l, keep) in outcome.keep.iter().enumerate() {
                let ideal = request.sparsity * keep.len() as f64;
                let got = pruned(keep);
                if got < ideal.floor() as usize || got > ideal.ceil() as usize {
                    return Err(format!(
                        "scope=layer: layer {l} prunes {got} of {} weights; the requested sparsity {} asks for {}",
                        keep.len(),
                        request.sparsity,
                        if ideal.fract() == 0.0 {
                            format!("{}", ideal as usize)
                        } else {
                            format!("{} or {}", ideal.floor() as usize, ideal.ceil() as usize)
                        }
                    ));
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
        let nothing = verify_sparsity(&outcome(vec![mask(4, &[]), mask(6, &[])]), &global, &[2, 3]).unwrap_err();
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
        assert!(e.contains("layer 0 prunes 3 of 4") && e.contains("asks for 2"), "{e}");
    }

    #[test]
    fn n_m_allows_at_most_n_per_group() {
        let two_four = request(0.0, Scope::Global, Pattern::NM { n: 2, m: 4 });
        // One layer, 2 rows of 6: groups of 4 keep at most 2, the tail of 2 at most 1.
        let good = vec![vec![true, false, true, false, true, false, false, true, false, true, false, false]];
        assert!(verify_sparsity(&outcome(good), &two_four, &[6]).is_ok());
        let bad = vec![vec![true, true, true, false, false, false, false, false, false, false, false, false]];
        let e = verify_sparsity(&outcome(bad), &two_four, &[6]).unwrap_err();
        assert!(e.contains("2:4") && e.contains("row 0, group 0 keeps 3"), "{e}");
        let bad_tail = vec![vec![true, true, false, false, true, true, false, false, false, false, false, false]];
        assert!(verify_sparsity(&outcome(bad_tail), &two_four, &[6]).is_err());
    }
}

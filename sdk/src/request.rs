//! What the host asks a pruner for.

use abi_stable::StableAbi;

/// How the pruned weights are spread over layers.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One ranking over all prunable weights of the model.
    Global,
    /// Every layer pruned to the same sparsity (up to rounding; totals stay exact).
    PerLayer,
}

/// The structure of the mask.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Any weight may be pruned.
    Unstructured,
    /// In every group of `m` consecutive weights of a row, keep `n` (e.g. 2:4). The
    /// sparsity is then `1 - n/m`, whatever [`PruneRequest::sparsity`] says.
    NM {
        /// Weights kept per group.
        n: u32,
        /// Group size.
        m: u32,
    },
}

/// One pruning request.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq)]
pub struct PruneRequest {
    /// Fraction of prunable weights to remove, in `[0, 1)`.
    pub sparsity: f64,
    /// Global or per-layer allocation.
    pub scope: Scope,
    /// Unstructured or N:M.
    pub pattern: Pattern,
    /// Seed for every random choice the pruner makes.
    pub seed: u64,
}

impl PruneRequest {
    /// A global, unstructured request.
    pub fn global(sparsity: f64, seed: u64) -> PruneRequest {
        PruneRequest { sparsity, scope: Scope::Global, pattern: Pattern::Unstructured, seed }
    }

    /// Number of weights to prune out of `n`: `round(sparsity · n)`.
    pub fn pruned_count(&self, n: usize) -> usize {
        ((self.sparsity * n as f64).round() as usize).min(n)
    }
}

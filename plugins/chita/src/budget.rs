//! How the sparsity budget is split into independent subproblems.
//!
//! Whole model (`block_size = 0`): one problem over all `p` weights. Global scope gives one
//! budget group, `p − round(s·p)` kept; per-layer scope gives one group per layer with the
//! counts of [`masking::per_layer_counts`], so the projection of every IHT step keeps each
//! layer's own count.
//!
//! Blocks (`block_size > 0`, CHITA's block approximation for large `p`): the Fisher is
//! treated as block diagonal. Each layer is cut into consecutive chunks of at most
//! `block_size` weights (a block never straddles two layers) and each block is solved on its
//! own. A block's budget comes from a ranking of the separable saliency `w̄ⱼ²(‖Gⱼ‖² + μ)`
//! (the cost of removing weight `j` alone): the weights the ranking would keep, over the
//! whole model for global scope or within each layer for per-layer scope, are counted per
//! block. Totals stay exact either way.

use hyperprune_sdk::{Scope, masking};

use crate::solver::Group;

/// One independent subproblem: the flattened columns `start..end`, with budget groups
/// relative to `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// First column (weight index in layer order).
    pub start: usize,
    /// One past the last column.
    pub end: usize,
    /// Budgets, tiling `0..end − start`.
    pub groups: Vec<Group>,
}

/// The subproblems for pruning `sparsity` of weights laid out in layers of `layer_sizes`.
/// `saliency` (one per weight) is read only when `block_size > 0`.
pub fn plan(layer_sizes: &[usize], scope: Scope, sparsity: f64, block_size: usize, saliency: &[f64]) -> Vec<Block> {
    let p: usize = layer_sizes.iter().sum();
    let keep_counts = per_layer_keep_counts(layer_sizes, scope, sparsity);
    if block_size == 0 {
        let groups = match scope {
            Scope::Global => vec![Group { start: 0, end: p, keep: p - pruned(sparsity, p) }],
            Scope::PerLayer => layer_groups(layer_sizes, &keep_counts, 0),
        };
        return vec![Block { start: 0, end: p, groups }];
    }
    let scores: Vec<f32> = saliency.iter().map(|&s| s as f32).collect();
    let mut views: Vec<&[f32]> = Vec::with_capacity(layer_sizes.len());
    let mut offset = 0;
    for &n in layer_sizes {
        views.push(&scores[offset..offset + n]);
        offset += n;
    }
    let keep = match scope {
        Scope::Global => masking::global_keep(&views, sparsity),
        Scope::PerLayer => masking::per_layer_keep(&views, sparsity),
    };
    let mut blocks = Vec::new();
    let mut offset = 0;
    for layer_keep in &keep {
        for (c, chunk) in layer_keep.chunks(block_size).enumerate() {
            let start = offset + c * block_size;
            let kept = chunk.iter().filter(|&&k| k).count();
            blocks.push(Block {
                start,
                end: start + chunk.len(),
                groups: vec![Group { start: 0, end: chunk.len(), keep: kept }],
            });
        }
        offset += layer_keep.len();
    }
    blocks
}

fn per_layer_keep_counts(layer_sizes: &[usize], scope: Scope, sparsity: f64) -> Vec<usize> {
    match scope {
        Scope::PerLayer => {
            masking::per_layer_counts(layer_sizes, sparsity).iter().zip(layer_sizes).map(|(pr, n)| n - pr).collect()
        }
        Scope::Global => layer_sizes.to_vec(),
    }
}

fn layer_groups(layer_sizes: &[usize], keep: &[usize], base: usize) -> Vec<Group> {
    let mut groups = Vec::with_capacity(layer_sizes.len());
    let mut start = base;
    for (&n, &k) in layer_sizes.iter().zip(keep) {
        groups.push(Group { start, end: start + n, keep: k });
        start += n;
    }
    groups
}

/// `round(s·n)`, as the host counts it.
fn pruned(sparsity: f64, n: usize) -> usize {
    ((sparsity * n as f64).round() as usize).min(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(blocks: &[Block]) -> usize {
        blocks.iter().flat_map(|b| &b.groups).map(|g| g.keep).sum()
    }

    #[test]
    fn whole_model_budgets_are_exact() {
        let sizes = [150, 2400, 37, 840];
        let p: usize = sizes.iter().sum();
        for s in [0.0, 0.5, 0.75, 0.9375, 0.96875] {
            let global = plan(&sizes, Scope::Global, s, 0, &[]);
            assert_eq!(global.len(), 1);
            assert_eq!(kept(&global), p - (s * p as f64).round() as usize, "s={s}");
            let layer = plan(&sizes, Scope::PerLayer, s, 0, &[]);
            assert_eq!(layer[0].groups.len(), sizes.len());
            assert_eq!(kept(&layer), p - (s * p as f64).round() as usize, "s={s}");
            let counts = masking::per_layer_counts(&sizes, s);
            for ((g, n), c) in layer[0].groups.iter().zip(sizes).zip(counts) {
                assert_eq!(g.end - g.start, n);
                assert_eq!(g.keep, n - c);
            }
        }
    }

    #[test]
    fn blocks_stay_inside_layers_and_budgets_sum_exactly() {
        let sizes = [150, 2400, 37, 840];
        let p: usize = sizes.iter().sum();
        let saliency: Vec<f64> = (0..p).map(|j| ((j * 7919) % 1000) as f64).collect();
        for scope in [Scope::Global, Scope::PerLayer] {
            for s in [0.5, 0.9] {
                let blocks = plan(&sizes, scope, s, 500, &saliency);
                assert_eq!(kept(&blocks), p - (s * p as f64).round() as usize, "{scope:?} s={s}");
                let bounds: Vec<usize> = sizes
                    .iter()
                    .scan(0, |a, n| {
                        *a += n;
                        Some(*a)
                    })
                    .collect();
                let mut next = 0;
                for b in &blocks {
                    assert_eq!(b.start, next);
                    assert!(b.end - b.start <= 500);
                    // No block straddles a layer boundary.
                    assert!(bounds.iter().all(|&e| e <= b.start || e >= b.end), "{b:?}");
                    next = b.end;
                }
                assert_eq!(next, p);
            }
        }
    }
}

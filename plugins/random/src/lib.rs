//! # hyperprune-plugin-random
//!
//! Random pruning: every weight gets a uniform random score from the request's seed, and
//! the lowest scores are pruned. The floor every other method must beat, and the check
//! that a benchmark is not rigged. Same seed, same mask.

use hyperprune_sdk::rng::SplitMix64;
use hyperprune_sdk::{
    Capabilities, Ctx, Example, ModelRef, PluginError, PruneOutcome, PruneRequest, Pruner, PrunerInfo, export_pruner,
    masking,
};

/// Random pruning.
#[derive(Debug, Default)]
pub struct RandomPruner;

/// Uniform scores in `[0, 1)` for layers of the given sizes, deterministic in `seed`.
pub fn random_scores(sizes: &[usize], seed: u64) -> Vec<Vec<f32>> {
    let mut rng = SplitMix64::new(seed);
    sizes.iter().map(|&n| (0..n).map(|_| rng.next_f32()).collect()).collect()
}

impl Pruner for RandomPruner {
    fn info(&self) -> PrunerInfo {
        PrunerInfo {
            name: "random".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "prunes uniformly random weights (seeded); the baseline every method must beat".into(),
            options: vec![],
            capabilities: Capabilities::default(),
            examples: vec![Example { description: "random 50% mask".into(), options: vec![], sparsity: 0.5 }],
        }
    }

    fn prune(&self, model: &ModelRef<'_>, request: &PruneRequest, _ctx: &Ctx<'_>) -> Result<PruneOutcome, PluginError> {
        let sizes: Vec<usize> = model.layers().iter().map(|l| l.weights.len()).collect();
        let scores = random_scores(&sizes, request.seed);
        let views: Vec<&[f32]> = scores.iter().map(Vec::as_slice).collect();
        let rows: Vec<usize> = model.layers().iter().map(|l| l.row_len()).collect();
        Ok(PruneOutcome::from_keep(model, &masking::keep_for_request(&views, &rows, request)))
    }
}

export_pruner!(RandomPruner);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_scores_repeat_and_differ_across_seeds() {
        assert_eq!(random_scores(&[5, 3], 1), random_scores(&[5, 3], 1));
        assert_ne!(random_scores(&[5, 3], 1), random_scores(&[5, 3], 2));
    }
}

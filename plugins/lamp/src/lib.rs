//! # hyperprune-plugin-lamp
//!
//! LAMP, layer-adaptive magnitude-based pruning (Lee, Park, Mo, Ahn and Shin, "Layer-adaptive
//! sparsity for the magnitude-based pruning", ICLR 2021). Each weight's score is its square
//! divided by the sum of the squares of every weight of its layer at least as large:
//!
//! ```text
//! score(w) = w² / Σ_{v in layer, |v| ≥ |w|} v²
//! ```
//!
//! Scores lie in `(0, 1]` and the largest weight of every layer scores exactly 1, so one
//! global ranking of LAMP scores picks a sparsity for every layer without emptying any
//! (the paper's method: `--scope global`, the default). Needs no data.
//!
//! What it is not: within one layer the score is monotone in `|w|`, so per-layer scope and
//! N:M patterns give exactly the masks of magnitude pruning; LAMP only differs from
//! magnitude in how a global budget is spread over layers. It never updates weights.
//!
//! The key decision: weights of equal `|w|` get equal scores (the sum runs over every
//! `|v| ≥ |w|`, ties included), so a score depends on the weights only, never on the order a
//! sort happened to leave them in; equal scores are then broken by position, as everywhere.

mod score;

use hyperprune_sdk::{
    Capabilities, Ctx, Example, ModelRef, PluginError, PruneOutcome, PruneRequest, Pruner, PrunerInfo, export_pruner,
    masking,
};

pub use score::lamp_scores;

/// LAMP pruning.
#[derive(Debug, Default)]
pub struct Lamp;

impl Pruner for Lamp {
    fn info(&self) -> PrunerInfo {
        PrunerInfo {
            name: "lamp".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "LAMP (Lee et al., ICLR 2021, \"Layer-adaptive sparsity for the magnitude-based pruning\"): \
                          scores each weight by w² over the sum of the squares of its layer's weights at least as \
                          large, then ranks all layers together, so every layer gets its own sparsity; no data needed"
                .into(),
            options: vec![],
            capabilities: Capabilities::default(),
            examples: vec![
                Example { description: "LAMP to 90%, one global ranking".into(), options: vec![], sparsity: 0.9 },
                Example { description: "LAMP to 75%".into(), options: vec![], sparsity: 0.75 },
            ],
        }
    }

    fn prune(&self, model: &ModelRef<'_>, request: &PruneRequest, _ctx: &Ctx<'_>) -> Result<PruneOutcome, PluginError> {
        let scores = lamp_scores(&model.weights());
        let views: Vec<&[f32]> = scores.iter().map(Vec::as_slice).collect();
        let rows: Vec<usize> = model.layers().iter().map(|l| l.row_len()).collect();
        Ok(PruneOutcome::from_keep(model, &masking::keep_for_request(&views, &rows, request)))
    }
}

export_pruner!(Lamp);

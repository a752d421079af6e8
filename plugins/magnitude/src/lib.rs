//! # hyperprune-plugin-magnitude
//!
//! The reference plugin: prunes the weights of smallest absolute value. Copy this crate to
//! start a new pruner: `lib.rs` holds the export and the options, `score.rs` the algorithm
//! as plain Rust, unit-tested without FFI.
//!
//! Options: `normalize` = `none` ranks raw |w| (global magnitude pruning, Han et al. 2015);
//! `layer-l2` divides each layer's scores by that layer's L2 norm first, so that layers
//! with small weights are not emptied by a global ranking.

mod score;

use hyperprune_sdk::{
    Capabilities, Ctx, Example, ModelRef, OptionSpec, Options, PluginError, PruneOutcome, PruneRequest, Pruner,
    PrunerInfo, export_pruner, masking,
};

pub use score::{Normalize, magnitude_scores};

/// Magnitude pruning.
#[derive(Debug, Default)]
pub struct Magnitude {
    normalize: Normalize,
}

impl Pruner for Magnitude {
    fn info(&self) -> PrunerInfo {
        PrunerInfo {
            name: "magnitude".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "prunes the weights of smallest |w| (global or per layer); no data needed".into(),
            options: vec![OptionSpec::choice(
                "normalize",
                &["none", "layer-l2"],
                "none",
                "none: rank raw |w|; layer-l2: divide each layer's |w| by the layer's L2 norm before a global ranking",
            )],
            capabilities: Capabilities::default(),
            examples: vec![
                Example { description: "global magnitude pruning to 90%".into(), options: vec![], sparsity: 0.9 },
                Example {
                    description: "layer-normalised ranking at 75%".into(),
                    options: vec!["normalize=layer-l2".into()],
                    sparsity: 0.75,
                },
            ],
        }
    }

    fn configure(&mut self, options: &Options) -> Result<(), PluginError> {
        self.normalize = options.str("normalize").parse()?;
        Ok(())
    }

    fn prune(&self, model: &ModelRef<'_>, request: &PruneRequest, _ctx: &Ctx<'_>) -> Result<PruneOutcome, PluginError> {
        let scores = magnitude_scores(&model.weights(), self.normalize);
        let views: Vec<&[f32]> = scores.iter().map(Vec::as_slice).collect();
        let rows: Vec<usize> = model.layers().iter().map(|l| l.row_len()).collect();
        Ok(PruneOutcome::from_keep(model, &masking::keep_for_request(&views, &rows, request)))
    }
}

export_pruner!(Magnitude);

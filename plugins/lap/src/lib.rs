//! # hyperprune-plugin-lap
//!
//! LAP, lookahead pruning (Park, Lee, Mo and Shin, "Lookahead: A far-sighted alternative of
//! magnitude-based pruning", ICLR 2020). Magnitude pruning looks at one weight alone; LAP
//! also looks one layer back and one ahead, scoring the weight that links input `k` to
//! output `j` of prunable layer `l` by the size of the paths through it:
//!
//! ```text
//! score(W_l[j, k]) = W_l[j, k]² · ‖W_{l-1}[k, :]‖² · ‖W_{l+1}[:, j]‖²
//! ```
//!
//! - `W_l[j, k]` is one weight: for a convolution, every kernel position of the pair
//!   (output channel `j`, input channel `k`) shares the two factors.
//! - `W_{l-1}[k, :]` is everything the previous prunable layer feeds into unit or channel
//!   `k`: row `k` of a linear weight, output channel `k` of a convolution (all its input
//!   channels and kernel positions).
//! - `W_{l+1}[:, j]` is everything the next prunable layer reads from unit or channel `j`:
//!   column `j` of a linear weight, input channel `j` of a convolution. Across a conv→linear
//!   flatten it is the linear's columns `j·h·w .. (j+1)·h·w` (PyTorch flattens channel-major),
//!   with `h·w = in_features / channels`.
//! - The first prunable layer has no previous factor (1), the last no next factor (1).
//!
//! "Previous" and "next" follow the network's graph ([`ModelRef::links`]): across pooling,
//! activations, dropout, flatten and batch normalisation, which keep channels, and across a
//! residual `add`, which joins channels: the previous factor sums over every layer whose
//! output reaches input channel `k` (in a ResNet block, the block's last conv and whatever
//! the shortcut carries), the next factor over every layer that reads output channel `j`.
//! In a chain they are the neighbouring prunable layers. Where a link's shapes disagree (the
//! producer's outputs are not the reader's inputs, nor a whole number of `h·w` positions of
//! them behind a flatten) that link is left out and the plugin says so in a debug log; a
//! side with no link gets factor 1.
//!
//! A batch normalisation reading a layer's output is folded in, as the paper's `lap_bn`
//! does: output row `j` is scaled by `γ_j / √(running_var_j + ε)` before scoring, so the
//! score sees the weights the network applies.
//!
//! The paper ranks within each layer, at sparsities chosen beforehand; here, as for every
//! pruner, the request's scope decides: `--scope layer` is the paper's setting,
//! `--scope global` ranks raw LAP scores across layers, and N:M patterns pick within groups.
//! Needs no data.
//!
//! What it is not: not the data-dependent LAP variants (activations), not the sequential
//! forward/backward LAP that re-scores after each layer is pruned, and no weight update.

mod score;

use hyperprune_sdk::{
    Capabilities, Ctx, Example, LayerRef, LogLevel, ModelRef, PluginError, PruneOutcome, PruneRequest, Pruner,
    PrunerInfo, export_pruner, masking,
};

pub use score::{LapLayer, LapScores, fan_out, lap_scores};

/// Lookahead pruning.
#[derive(Debug, Default)]
pub struct Lap;

impl Pruner for Lap {
    fn info(&self) -> PrunerInfo {
        PrunerInfo {
            name: "lap".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "LAP (Park et al., ICLR 2020, \"Lookahead: a far-sighted alternative of magnitude-based \
                          pruning\"): scores each weight by w² times the squared norms of what the previous layer \
                          feeds into its input and what the next layer reads from its output; the paper ranks per \
                          layer (--scope layer); no data needed"
                .into(),
            options: vec![],
            capabilities: Capabilities::default(),
            examples: vec![
                Example { description: "LAP to 75%, one global ranking".into(), options: vec![], sparsity: 0.75 },
                Example { description: "LAP to 90%".into(), options: vec![], sparsity: 0.9 },
            ],
        }
    }

    fn prune(&self, model: &ModelRef<'_>, request: &PruneRequest, ctx: &Ctx<'_>) -> Result<PruneOutcome, PluginError> {
        let layers = model.layers();
        let effective = effective_weights(model);
        let lap_layers: Vec<LapLayer<'_>> = layers.iter().zip(&effective).map(|(l, w)| lap_layer(l, w)).collect();
        let lap = lap_scores(&lap_layers, &model.links());
        for &(p, c) in &lap.unlinked {
            let (a, b) = (&layers[p], &layers[c]);
            ctx.log(
                LogLevel::Debug,
                &format!(
                    "lap: '{}' {:?} does not fit '{}' {:?} (outputs and inputs disagree); \
                     leaving that link out of both scores",
                    a.name(),
                    a.shape(),
                    b.name(),
                    b.shape()
                ),
            );
        }
        let views: Vec<&[f32]> = lap.scores.iter().map(Vec::as_slice).collect();
        let rows: Vec<usize> = layers.iter().map(|l| l.row_len()).collect();
        Ok(PruneOutcome::from_keep(model, &masking::keep_for_request(&views, &rows, request)))
    }
}

/// Each layer's weights as the network applies them in eval mode: output row `j` times the
/// factor `γ_j / √(var_j + ε)` of the batch normalisation that reads the layer, where one
/// does (the paper's `lap_bn`); the weights themselves elsewhere.
fn effective_weights(model: &ModelRef<'_>) -> Vec<Vec<f32>> {
    model
        .layers()
        .iter()
        .zip(model.batchnorm_factors())
        .map(|(layer, factors)| {
            let w = layer.weights();
            match factors.filter(|f| !f.is_empty() && w.len().is_multiple_of(f.len())) {
                Some(f) => {
                    let row = w.len() / f.len();
                    w.chunks(row)
                        .zip(&f)
                        .flat_map(|(r, &s)| r.iter().map(move |&x| (f64::from(x) * s) as f32))
                        .collect()
                }
                None => w.to_vec(),
            }
        })
        .collect()
}

/// The layer's shape as LAP reads it; a shape of fewer than two dimensions gives zero
/// inputs, which scores by magnitude and links to nothing.
fn lap_layer<'a>(layer: &LayerRef<'_>, weights: &'a [f32]) -> LapLayer<'a> {
    let shape = layer.shape();
    LapLayer {
        kind: layer.kind,
        out: shape.first().copied().unwrap_or(0),
        inputs: shape.get(1).copied().unwrap_or(0),
        weights,
    }
}

export_pruner!(Lap);

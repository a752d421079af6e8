//! Row-wise magnitude pruning: every output unit keeps its own largest weights.
use hyperprune_sdk::{Ctx, ModelRef, PluginError, PruneOutcome, PruneRequest, Pruner, PrunerInfo};
use hyperprune_sdk::{export_pruner, masking};

#[derive(Default)]
struct RowMagnitude;

impl Pruner for RowMagnitude {
    fn info(&self) -> PrunerInfo {
        PrunerInfo {
            name: "row-magnitude".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "prunes the smallest |w| of every output row to the requested sparsity".into(),
            options: vec![],
            capabilities: Default::default(),
            examples: vec![],
        }
    }

    fn prune(&self, model: &ModelRef<'_>, request: &PruneRequest, _: &Ctx<'_>) -> Result<PruneOutcome, PluginError> {
        let mut keep = Vec::new();
        for layer in model.layers() {
            let rows: Vec<&[f32]> = layer.weights().chunks(layer.row_len()).collect();
            let counts = masking::per_layer_counts(&vec![layer.row_len(); rows.len()], request.sparsity);
            let scores = |row: &[f32]| row.iter().map(|w| w.abs()).collect::<Vec<f32>>();
            keep.push(rows.iter().zip(counts).flat_map(|(r, c)| masking::layer_keep_count(&scores(r), c)).collect());
        }
        Ok(PruneOutcome::from_keep(model, &keep))
    }
}

export_pruner!(RowMagnitude);

//! `hyperprune eval`: one model, optionally masked, on a dataset's test split.

use std::path::Path;

use hyperprune_core::Model;
use hyperprune_core::metrics::compression;

use crate::cli::{EvalArgs, Format};
use crate::failure::bad_input;

/// Runs `eval`.
///
/// # Errors
/// Bad input: model, arch, masks file, dataset, or a model that does not fit the dataset.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let mut model = crate::inputs::model(&args.model, args.arch.as_deref())?;
    if let Some(masks) = &args.masks {
        let keep = read_masks(masks, &model)?;
        model.apply_masks(&keep, None).map_err(|e| bad_input(format!("{}: {e}", masks.display())))?;
    }
    let data = super::zoo::dataset(&args.data)?;
    check_fits(&model, &data)?;
    let engine = crate::engines::engine(args.exec.engine, &args.exec.device)?;
    let eval = engine.evaluate(&[&model], &data.test)?.remove(0);
    let c = compression(&model);
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "model": args.model, "dataset": data.name, "samples": eval.samples,
                "accuracy": eval.accuracy, "loss": eval.loss,
                "sparsity": c.sparsity, "compression": c.compression, "model_compression": c.model_compression,
                "flops": c.flops, "dense_flops": c.dense_flops,
            })
        ),
        Format::Table => println!(
            "{}: accuracy {:.2}%, loss {:.4} on {} test images of {} (sparsity {:.2}%, compression {:.2}x, FLOPs {}/{})",
            args.model.display(),
            100.0 * eval.accuracy,
            eval.loss,
            eval.samples,
            data.name,
            100.0 * c.sparsity,
            c.compression,
            c.flops,
            c.dense_flops
        ),
    }
    Ok(())
}

/// Checks that the model's input shape and classes match the dataset's.
///
/// # Errors
/// Bad input saying both shapes.
pub fn check_fits(model: &Model, data: &hyperprune_core::dataset::Dataset) -> anyhow::Result<()> {
    let spec = model.spec();
    if spec.input != data.input_shape() || spec.classes != data.classes {
        return Err(bad_input(format!(
            "architecture '{}' takes {:?} inputs and {} classes, but dataset '{}' has {:?} and {}",
            spec.name,
            spec.input,
            spec.classes,
            data.name,
            data.input_shape(),
            data.classes
        )));
    }
    Ok(())
}

/// Reads a masks file (u8 tensors named like the weights, 1 = kept).
fn read_masks(path: &Path, model: &Model) -> anyhow::Result<Vec<Vec<bool>>> {
    let bytes = std::fs::read(path).map_err(|e| bad_input(format!("{}: {e}", path.display())))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad_input(format!("{}: not a valid safetensors file ({e})", path.display())))?;
    model
        .prunable()
        .map(|(p, w)| {
            let view =
                st.tensor(&p.name).map_err(|_| bad_input(format!("{}: no mask for '{}'", path.display(), p.name)))?;
            if view.dtype() != safetensors::Dtype::U8 || view.data().len() != w.len() {
                return Err(bad_input(format!(
                    "{}: mask '{}' must be u8 with {} entries, found {:?} with {} bytes",
                    path.display(),
                    p.name,
                    w.len(),
                    view.dtype(),
                    view.data().len()
                )));
            }
            Ok(view.data().iter().map(|&b| b != 0).collect())
        })
        .collect()
}

//! `hyperprune eval`: one model, optionally masked, on a dataset's test split.

use hyperprune_core::masks::read_masks;
use hyperprune_core::metrics::compression;

use crate::cli::{EvalArgs, Format};
use crate::failure::bad_input;

/// Runs `eval`.
///
/// # Errors
/// Bad input: model, arch, masks file, dataset, or a model that does not fit the dataset.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let mut model = crate::inputs::model(&args.model, args.arch.as_deref())?;
    let bn_stats = crate::bn_stats::BnStats::from_args(args.bn.bn_correct, args.bn.bn_recalibrate)?;
    let dense = model.clone();
    if let Some(masks) = &args.masks {
        let keep = read_masks(masks, &model).map_err(bad_input)?;
        model.apply_masks(&keep, None).map_err(|e| bad_input(format!("{}: {e}", masks.display())))?;
    }
    let data = crate::inputs::dataset(&args.data)?;
    crate::inputs::check_fits(model.spec(), &data)?;
    let engine = crate::engines::engine(args.exec.engine, &args.exec.device)?;
    let split = crate::calibration::TrainSplit::new(&data.train);
    let model = bn_stats.apply(engine.as_ref(), &dense, model, Some(&split)).map_err(anyhow::Error::msg)?;
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

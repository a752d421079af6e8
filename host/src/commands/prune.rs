//! `hyperprune prune`: one model, one pruner, one sparsity.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use hyperprune_core::model::write_atomic;
use hyperprune_core::{Model, model::encode_u8};

use crate::calibration::TrainSplit;
use crate::cli::IsolateArg;
use crate::cli::{GlobalArgs, PruneArgs};
use crate::context::DataServices;
use crate::isolation::Isolation;
use crate::outcome::CheckedOutcome;
use crate::pruning::request_from;
use crate::session::{DataSource, WorkerCall};

/// How the command line names the data settings in messages.
const CLI_DATA_FLAGS: (&str, &str) = ("--dataset NAME", "--data-dir DIR");

/// Runs `prune`: nothing is written unless every check passed.
///
/// # Errors
/// Bad input (model file, arch, pruner name, options, sparsity, a learnable pruner's missing
/// or rejected state, a state that does not fit the model) or the plugin's failure.
pub fn run(global: &GlobalArgs, args: PruneArgs) -> anyhow::Result<()> {
    if args.repeat == 0 || (args.repeat > 1 && args.isolate == IsolateArg::Worker) {
        return Err(crate::failure::bad_input(format!(
            "--repeat {}: give at least 1, and time repeated calls in this process (--isolate none)",
            args.repeat
        )));
    }
    let request = request_from(&args.request, args.sparsity)?;
    let bn_stats = crate::bn_stats::BnStats::from_args(args.bn.bn_correct, args.bn.bn_recalibrate)?;
    if bn_stats.uses_data() && args.dataset.is_none() {
        return Err(crate::failure::bad_input(
            "--bn-recalibrate draws training images: pass --dataset NAME (or --bn-correct, which needs none)",
        ));
    }
    let masks_path = masks_path(&args.out);
    let mut inputs = vec![("--model", args.model.as_path())];
    if let Some(arch) = args.arch.as_deref().map(Path::new).filter(|p| p.is_file()) {
        inputs.push(("--arch", arch));
    }
    crate::inputs::refuse_overwriting(&[("--out", &args.out), ("the masks file of --out", &masks_path)], &inputs)?;
    let model = crate::inputs::model(&args.model, args.arch.as_deref())?;
    // Under --isolate worker, loading and configuring the plugin are tried in a worker
    // first, so a plugin that crashes there cannot take this process with it.
    let isolation = match args.isolate {
        IsolateArg::Worker => Some(Isolation::from_args(args.timeout, args.worker_memory)?),
        IsolateArg::None => None,
    };
    let registry = super::registry_isolated(global, isolation.as_ref())?;
    super::probe_configure(&registry, &args.pruner, &args.request.options, isolation.as_ref())?;
    let (pruner, data) = crate::session::configure(
        &registry,
        &args.pruner,
        &args.request.options,
        &model,
        DataSource {
            dataset: args.dataset.as_deref(),
            data_dir: args.data_dir.clone(),
            arrays: None,
            flags: CLI_DATA_FLAGS,
        },
        |state| {
            crate::inputs::refuse_overwriting(
                &[("--out", &args.out), ("the masks file of --out", &masks_path)],
                &[("state file", state)],
            )
        },
    )?;
    let engine = crate::engines::engine(args.exec.engine, &args.exec.device)?;
    let split = data.as_ref().map(|d| TrainSplit::new(&d.train));
    let services = split.as_ref().map(|split| DataServices { engine: engine.as_ref(), split });
    let cancel = AtomicBool::new(false);
    // `--repeat N` calls the pruner N times (in this process) and keeps the last outcome;
    // every call must give the same masks.
    let mut times = Vec::with_capacity(args.repeat);
    let mut last: Option<CheckedOutcome> = None;
    for _ in 0..args.repeat {
        let start = std::time::Instant::now();
        let outcome = match &isolation {
            Some(isolation) => WorkerCall {
                isolation,
                pruner: &pruner,
                model_file: (args.model.clone(), args.arch.clone()),
                data: args.dataset.clone().map(|d| (d, args.data_dir.clone())),
                engine: crate::isolation::engine_of(&args.exec),
                calib_samples: args.calib_samples,
            }
            .prune(&model, &request, &cancel),
            None => {
                let ctx = pruner.prune_context(services, &cancel).with_default_samples(args.calib_samples);
                pruner.prune(&model, &request, &ctx)
            }
        }
        .map_err(|e| if e.is_bad_input() { crate::failure::bad_input(e) } else { anyhow::Error::msg(e.message) })?;
        times.push(start.elapsed().as_secs_f64());
        if last.as_ref().is_some_and(|l| l.keep != outcome.keep) {
            anyhow::bail!("pruner '{}' gave different masks for the same request on repeated calls", pruner.name());
        }
        last = Some(outcome);
    }
    let (outcome, elapsed) = (last.expect("--repeat is at least 1"), times[times.len() - 1]);
    let pruned = outcome.apply(&model).map_err(anyhow::Error::msg)?;
    let pruned = bn_stats.apply(engine.as_ref(), &model, pruned, split.as_ref()).map_err(anyhow::Error::msg)?;

    write_atomic(&masks_path, &masks_bytes(&model, &outcome)).with_context(|| "writing the masks")?;
    if let Err(e) = pruned.save(&args.out) {
        let _ = std::fs::remove_file(&masks_path);
        return Err(e).context("writing the pruned model");
    }
    print_summary(&model, &outcome, args.sparsity);
    match bn_stats {
        crate::bn_stats::BnStats::Stale => {}
        crate::bn_stats::BnStats::Correct => {
            println!("batch normalisation statistics corrected from the pruned weights (data-free)")
        }
        crate::bn_stats::BnStats::Recalibrate(n) => {
            println!("batch normalisation statistics re-estimated from {n} training images")
        }
    }
    if let (true, Some(d)) = (args.eval, &data) {
        let evals = engine.evaluate(&[&model, &pruned], &d.test)?;
        println!(
            "test accuracy on {}: dense {:.2}% -> pruned {:.2}% (retention {:.2}%), loss {:.4} -> {:.4}",
            d.name,
            100.0 * evals[0].accuracy,
            100.0 * evals[1].accuracy,
            100.0 * evals[1].accuracy / evals[0].accuracy.max(f64::MIN_POSITIVE),
            evals[0].loss,
            evals[1].loss
        );
    }
    if times.len() > 1 {
        times.sort_by(f64::total_cmp);
        let ms = |t: f64| t * 1e3;
        println!(
            "{} calls, same masks each time: median {:.3} ms, fastest {:.3} ms, slowest {:.3} ms",
            times.len(),
            ms(times[times.len() / 2]),
            ms(times[0]),
            ms(times[times.len() - 1])
        );
    }
    println!(
        "pruner {} {} in {:.3}s; wrote {} and {}",
        pruner.name(),
        pruner.plugin.info.version,
        elapsed,
        args.out.display(),
        masks_path.display()
    );
    Ok(())
}

/// `<dir>/<name>.masks.safetensors` for an output model path (`<name>` is the file name
/// without a `.safetensors` suffix; any other dots are kept).
pub fn masks_path(out: &Path) -> PathBuf {
    let name = out.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let stem = name.strip_suffix(".safetensors").unwrap_or(&name);
    out.with_file_name(format!("{stem}.masks.safetensors"))
}

fn masks_bytes(model: &Model, outcome: &CheckedOutcome) -> Vec<u8> {
    let entries: Vec<(String, Vec<usize>, Vec<u8>)> = model
        .prunable()
        .zip(&outcome.keep)
        .map(|((p, _), k)| (p.name.clone(), p.shape.clone(), k.iter().map(|&x| x as u8).collect()))
        .collect();
    encode_u8(&entries)
}

fn print_summary(model: &Model, outcome: &CheckedOutcome, requested: f64) {
    println!("{:<16} {:<16} {:>9} {:>9} {:>9}", "LAYER", "SHAPE", "WEIGHTS", "PRUNED", "SPARSITY");
    let (mut total, mut pruned_total) = (0usize, 0usize);
    for ((p, w), keep) in model.prunable().zip(&outcome.keep) {
        let pruned = keep.iter().filter(|&&k| !k).count();
        total += w.len();
        pruned_total += pruned;
        println!(
            "{:<16} {:<16} {:>9} {:>9} {:>8.2}%",
            p.name,
            format!("{:?}", p.shape),
            w.len(),
            pruned,
            100.0 * pruned as f64 / w.len().max(1) as f64
        );
    }
    let achieved = pruned_total as f64 / total.max(1) as f64;
    println!(
        "{:<16} {:<16} {:>9} {:>9} {:>8.2}%  (requested {:.2}%, compression {:.2}x)",
        "total",
        "",
        total,
        pruned_total,
        100.0 * achieved,
        100.0 * requested,
        1.0 / (1.0 - achieved).max(f64::MIN_POSITIVE)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_path_keeps_dots_that_are_not_the_extension() {
        assert_eq!(masks_path(Path::new("/t/m.safetensors")), Path::new("/t/m.masks.safetensors"));
        assert_eq!(masks_path(Path::new("/t/x-0.5")), Path::new("/t/x-0.5.masks.safetensors"));
    }
}

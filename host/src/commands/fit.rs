//! `hyperprune fit`: fit a learnable pruner on a zoo and save its state.

use hyperprune_core::zoo::Zoo;

use crate::calibration::TrainSplit;
use crate::cli::IsolateArg;
use crate::cli::{DataArgs, FitArgs, GlobalArgs};
use crate::context::DataServices;
use crate::failure::bad_input;
use crate::fitting::{FitFiles, FitSummary, fit};
use crate::isolation::{Isolation, Setup};
use crate::pruning::{ConfiguredPruner, STATE_OPTION};

/// The pruner option `--seed` sets.
const SEED_OPTION: &str = "seed";

/// Runs `fit`.
///
/// # Errors
/// Bad input (zoo, pruner, options, a zoo without train members, a checkpoint the pruner
/// rejects), the plugin's failure, or I/O writing the state.
pub fn run(global: &GlobalArgs, args: FitArgs) -> anyhow::Result<()> {
    // Under --isolate worker, loading and configuring the plugin are tried in a worker
    // first, so a plugin that crashes there cannot take this process with it.
    let isolation = match args.isolate {
        IsolateArg::Worker => Some(Isolation::from_args(600.0, args.worker_memory)?), // only the memory limit applies
        IsolateArg::None => None,
    };
    let registry = super::registry_isolated(global, isolation.as_ref())?;
    let zoo = Zoo::open(&args.zoo).map_err(bad_input)?;
    let options = options_with_seed(&registry, &args)?;
    super::probe_configure(&registry, &args.pruner, &options, isolation.as_ref())?;
    let mut pruner = ConfiguredPruner::new(&registry, &args.pruner, &options)?;
    if pruner.state_file.is_some() {
        return Err(bad_input(format!(
            "fit writes the state to --out {}; drop the option {STATE_OPTION}=FILE",
            args.out.display()
        )));
    }
    let files = FitFiles::for_state(&args.out);
    let zoo_file = zoo.dir().join(hyperprune_core::zoo::ZOO_FILE);
    let member_files: Vec<std::path::PathBuf> = zoo.meta().members.iter().map(|m| zoo.dir().join(&m.file)).collect();
    let mut inputs = vec![("zoo file", zoo_file.as_path())];
    inputs.extend(member_files.iter().map(|f| ("zoo member", f.as_path())));
    crate::inputs::refuse_overwriting(
        &[
            ("--out", &files.state),
            ("the fit curve of --out", &files.curve),
            ("the checkpoint of --out", &files.checkpoint),
        ],
        &inputs,
    )?;
    let summary = if let Some(isolation) = &isolation {
        fit_in_worker(&args, isolation, &pruner, &zoo, &files)?
    } else if pruner.plugin.info.capabilities.fit_needs_data {
        let data =
            crate::inputs::dataset(&DataArgs { dataset: zoo.meta().dataset.clone(), data_dir: args.data_dir.clone() })?;
        crate::inputs::check_zoo_fits(&zoo, &data)?;
        let engine = crate::engines::engine(args.exec.engine, &args.exec.device)?;
        let split = TrainSplit::new(&data.train);
        tracing::debug!(
            "dataset {}: {} calibration samples, a val slice of {}",
            data.name,
            split.calibration_len(),
            split.val_len()
        );
        let services = DataServices { engine: engine.as_ref(), split: &split };
        fit(&mut pruner, &zoo, &files, Some(services), args.calib_samples, args.train_members)?
    } else {
        fit(&mut pruner, &zoo, &files, None, args.calib_samples, args.train_members)?
    };
    println!(
        "fitted {} {} on {} train members ({} val) of {} in {:.2} s{}; wrote {} ({} bytes) and {} ({} curve {})",
        pruner.name(),
        pruner.plugin.info.version,
        summary.train,
        summary.val,
        zoo.dir().display(),
        summary.seconds,
        if summary.resumed { ", resumed from a checkpoint" } else { "" },
        files.state.display(),
        summary.state_bytes,
        files.curve.display(),
        summary.curve_rows,
        if summary.curve_rows == 1 { "row" } else { "rows" },
    );
    Ok(())
}

/// `fit --isolate worker`: the fit runs in a supervised worker, which writes the files.
///
/// # Errors
/// Bad input (memory limit, options, zoo, checkpoint) or the plugin's failure, including a
/// worker that died.
fn fit_in_worker(
    args: &FitArgs,
    isolation: &Isolation,
    pruner: &ConfiguredPruner,
    zoo: &Zoo,
    files: &FitFiles,
) -> anyhow::Result<FitSummary> {
    let setup = Setup {
        state: None,
        zoo: Some(args.zoo.clone()),
        data: pruner
            .plugin
            .info
            .capabilities
            .fit_needs_data
            .then(|| (zoo.meta().dataset.clone(), args.data_dir.clone())),
        ..Setup::of(pruner, crate::isolation::engine_of(&args.exec), args.calib_samples, isolation.memory_limit)
    };
    crate::isolation::fit_in_worker(&setup, &files.state, args.train_members)
}

/// `--opt` with `seed=S` added for `--seed S`.
fn options_with_seed(registry: &crate::plugins::Registry, args: &FitArgs) -> anyhow::Result<Vec<String>> {
    let mut options = args.options.clone();
    let Some(seed) = args.seed else {
        return Ok(options);
    };
    let Some(plugin) = registry.get(&args.pruner) else {
        return Ok(options); // ConfiguredPruner::new names the unknown pruner.
    };
    if !plugin.info.options.iter().any(|o| o.name == SEED_OPTION) {
        return Err(bad_input(format!(
            "pruner '{}' declares no '{SEED_OPTION}' option, so --seed cannot reach it; drop --seed",
            args.pruner
        )));
    }
    if options.iter().any(|o| o.split_once('=').is_some_and(|(k, _)| k.trim() == SEED_OPTION)) {
        return Err(bad_input(format!("give the seed once: --seed {seed} or --opt {SEED_OPTION}=..., not both")));
    }
    options.push(format!("{SEED_OPTION}={seed}"));
    Ok(options)
}

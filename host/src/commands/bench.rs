//! `hyperprune bench` and `hyperprune bench merge`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use hyperprune_core::Model;
use hyperprune_core::model::write_atomic;
use hyperprune_core::zoo::{Split, Zoo};
use hyperprune_sdk::{Pattern, PruneRequest, Scope};
use indicatif::{ProgressBar, ProgressStyle};

use crate::bench::plan::{Shard, sparsity_for, tasks};
use crate::bench::run::{Bench, BenchMember, IsolatedRun};
use crate::calibration::TrainSplit;
use crate::cli::{BenchArgs, BenchCommand, DataArgs, GlobalArgs, IsolateArg, ScopeArg};
use crate::context::DataServices;
use crate::failure::bad_input;
use crate::fitting::{FitFiles, StateTarget, fit, load_state_file, read_state_header};
use crate::isolation::{Isolation, Setup};
use crate::plugins::Registry;
use crate::pruning::ConfiguredPruner;
use crate::results::{RESULTS_FILE, ResultsWriter, RunLock, read_complete_rows, read_rows};
use crate::state_file::StateHeader;

/// The compression ratios a bench reports when none are given.
pub const DEFAULT_COMPRESSIONS: [f64; 5] = [2.0, 4.0, 8.0, 16.0, 32.0];

/// Runs `bench` or `bench merge`.
///
/// # Errors
/// Bad input (zoo, pruners, options, sparsities, shard) or I/O failures. Plugin failures
/// are error rows, not errors.
pub fn run(global: &GlobalArgs, args: BenchArgs) -> anyhow::Result<()> {
    if let Some(BenchCommand::Merge { out, runs }) = args.command {
        return merge(&out, &runs);
    }
    let zoo_dir =
        args.zoo.clone().ok_or_else(|| bad_input("bench needs --zoo DIR (a folder made by `hyperprune zoo train`)"))?;
    let out = args.out.clone().ok_or_else(|| bad_input("bench needs --out DIR (the run folder, e.g. runs/NAME)"))?;
    // A bench refused for bad input before it wrote a row leaves no new folder behind.
    let created = !out.exists();
    let result = bench(global, &args, zoo_dir, &out);
    if let Err(e) = &result {
        let rows = std::fs::metadata(out.join(RESULTS_FILE)).map_or(0, |m| m.len());
        if created && rows == 0 && crate::failure::is_bad_input(e) {
            let _ = std::fs::remove_dir_all(&out);
        }
    }
    result
}

/// A bench into `out`; see [`run`].
fn bench(global: &GlobalArgs, args: &BenchArgs, zoo_dir: PathBuf, out: &Path) -> anyhow::Result<()> {
    let out = out.to_path_buf();
    // Under --isolate worker (the default), loading and configuring every plugin are tried
    // in a worker first, so one that crashes there sits out instead of ending the bench.
    let probing = match args.isolate {
        IsolateArg::Worker => Some(Isolation::from_args(args.timeout, args.worker_memory)?),
        IsolateArg::None => None,
    };
    let registry = super::registry_isolated(global, probing.as_ref())?;
    let zoo = Zoo::open(&zoo_dir).map_err(bad_input)?;
    let split: Split = args.split.parse().map_err(bad_input)?;
    let sparsities = sparsities(args)?;
    let bn_stats = crate::bn_stats::BnStats::from_args(args.bn.bn_correct, args.bn.bn_recalibrate)?;
    let shard = args.shard.as_deref().map(str::parse::<Shard>).transpose().map_err(bad_input)?;
    let mut pruners = configure_pruners(&registry, &args.pruners, &args.options, probing.as_ref())?;
    if args.pruners.iter().any(|n| n == "all") && zoo.members(Split::Train).is_empty() {
        // `all` on a zoo with nothing to fit on: the learnable pruners without a state sit out.
        pruners.retain(|p| {
            let keep = !p.learnable() || p.state_file.is_some();
            if !keep {
                tracing::warn!(
                    "{}: skipped, the zoo has no train members to fit it on (pass --opt {}.state=FILE)",
                    p.name(),
                    p.name()
                );
            }
            keep
        });
    }
    let data =
        crate::inputs::dataset(&DataArgs { dataset: zoo.meta().dataset.clone(), data_dir: args.data_dir.clone() })?;
    crate::inputs::check_zoo_fits(&zoo, &data)?;
    let engine = crate::engines::engine(args.exec.engine, &args.exec.device)?;

    let mut infos: Vec<_> = zoo.members(split).into_iter().cloned().collect();
    if let Some(k) = args.members {
        infos.truncate(k);
    }
    if infos.is_empty() {
        return Err(bad_input(format!("{}: no trained members in split '{}'", zoo_dir.display(), args.split)));
    }
    let models: Vec<Model> = infos.iter().map(|m| zoo.load(m)).collect::<Result<_, _>>().map_err(bad_input)?;
    let dense = engine.evaluate(&models.iter().collect::<Vec<_>>(), &data.test)?;

    // The states given with `P.state=FILE` are read before the run folder is made: a missing
    // or foreign state is refused without leaving a folder, a lock or a run.json behind.
    let target = StateTarget { dataset: Some(&zoo.meta().dataset), archs: &zoo_archs(&zoo) };
    for pruner in pruners.iter_mut().filter(|p| p.learnable()) {
        if let Some(path) = pruner.state_file.clone() {
            load_state_file(pruner, &path, Some(target))?;
        }
    }
    // Rows already in the folder are checked before anything is written there: a bench into
    // a folder whose results are not a bench's is refused with the folder untouched.
    let results_path = out.join(RESULTS_FILE);
    if results_path.is_file() {
        read_complete_rows(&results_path)?;
    }
    let created = !out.exists();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let _lock = RunLock::acquire(&out).inspect_err(|_| {
        if created {
            let _ = std::fs::remove_dir_all(&out);
        }
    })?;
    // A merged zoo's networks may run on different engines; the run records the first's.
    let engine_name = models.first().map_or(engine.name(), |m| engine.name_for(m.spec()));
    write_run_json(&out, args, &zoo, engine_name)?;
    let train_split = TrainSplit::new(&data.train);
    tracing::debug!(
        "dataset {}: {} calibration samples, a val slice of {}",
        data.name,
        train_split.calibration_len(),
        train_split.val_len()
    );
    let services = DataServices { engine: engine.as_ref(), split: &train_split };
    let isolated = probing.map(|isolation| IsolatedRun {
        isolation,
        zoo_dir: zoo_dir.clone(),
        data: (zoo.meta().dataset.clone(), args.data_dir.clone()),
        engine: crate::isolation::engine_of(&args.exec),
    });
    fit_learnable(&mut pruners, &zoo, &out, services, args.calib_samples, isolated.as_ref())?;

    let members: Vec<BenchMember> = infos
        .into_iter()
        .zip(models)
        .zip(dense)
        .map(|((info, model), dense)| BenchMember { info, model, dense })
        .collect();
    let bench = Bench {
        zoo: zoo.meta().name.clone(),
        dataset: &data,
        split: &train_split,
        engine: engine.as_ref(),
        members,
        pruners,
        request: PruneRequest {
            sparsity: 0.0,
            scope: match args.scope {
                ScopeArg::Global => Scope::Global,
                ScopeArg::Layer => Scope::PerLayer,
            },
            pattern: Pattern::Unstructured,
            seed: args.seed,
        },
        calib_samples: args.calib_samples,
        jobs: args.jobs,
        isolation: isolated,
        bn_stats,
    };
    let all = tasks(bench.members.len(), bench.pruners.len(), &sparsities, shard);
    let existing = read_rows(&results_path)?;
    let mut writer = ResultsWriter::open(&results_path, &existing)?;
    let bar = if global.quiet { ProgressBar::hidden() } else { ProgressBar::new(all.len() as u64) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} rows, eta {eta} {msg}")
            .expect("valid template"),
    );
    if bench.isolation.is_some() {
        crate::isolation::catch_interrupt();
    }
    crate::isolation::tune_allocator();
    let done_before = all.iter().filter(|t| writer.has(&bench.key(t))).count();
    bar.set_position(done_before as u64);
    if done_before > 0 {
        bar.println(format!("resuming: {done_before} of {} rows already in {}", all.len(), results_path.display()));
    }
    let total = all.len() as u64;
    let counts = bench.run(&all, &mut writer, args.stop_after, &|row| {
        bar.inc(1);
        tracing::trace!(target: crate::logging::PROGRESS, done = bar.position(), total, unit = "rows");
        bar.set_message(format!("{} {} {:.0}x", row.member, row.pruner, row.compression));
        if let Some(e) = &row.error {
            let line =
                format!("error: member {} {} at sparsity {}: {e}", row.member, row.pruner, row.requested_sparsity);
            if global.quiet { tracing::warn!("{line}") } else { bar.println(line) }
        }
    })?;
    bar.finish_and_clear();
    tracing::info!("{} ok rows, {} error rows, {} already present", counts.ok, counts.errors, counts.skipped);
    finish(&out, global.quiet || args.no_summary)
}

/// Writes the report and prints the summary table.
fn finish(out: &Path, quiet: bool) -> anyhow::Result<()> {
    let paths = crate::report::write_report(out)?;
    if !quiet {
        let rows = read_rows(&out.join(RESULTS_FILE))?;
        println!("{}", crate::report::summary_table(&rows));
        println!("report: {}", paths.html.display());
    }
    Ok(())
}

/// The sparsities to run: `--sparsity`, `--compression` (each value already checked by
/// [`crate::values`]) or the default compressions; a value given twice is refused, since
/// every task would run twice.
fn sparsities(args: &BenchArgs) -> anyhow::Result<Vec<f64>> {
    for (flag, list) in [("--sparsity", &args.sparsity), ("--compression", &args.compression)] {
        if let Some(twice) = crate::values::distinct(list) {
            return Err(bad_input(format!("{flag} lists {twice} twice; give each value once")));
        }
    }
    let list: Vec<f64> = if !args.sparsity.is_empty() {
        args.sparsity.clone()
    } else if !args.compression.is_empty() {
        args.compression.iter().map(|&c| sparsity_for(c)).collect()
    } else {
        DEFAULT_COMPRESSIONS.iter().map(|&c| sparsity_for(c)).collect()
    };
    if let Some(bad) = list.iter().find(|s| !(0.0..1.0).contains(*s)) {
        return Err(bad_input(format!("sparsity must be in [0, 1), got {bad}")));
    }
    Ok(list)
}

/// Splits `pruner.name=value` options by pruner and configures every pruner.
fn configure_pruners(
    registry: &Registry,
    names: &[String],
    options: &[String],
    probing: Option<&Isolation>,
) -> anyhow::Result<Vec<ConfiguredPruner>> {
    let names: Vec<String> = if names.iter().any(|n| n == "all") {
        registry.plugins.iter().map(|p| p.name().to_string()).collect()
    } else {
        names.to_vec()
    };
    if let Some(twice) = names.iter().enumerate().find(|(i, n)| names[..*i].contains(n)).map(|(_, n)| n) {
        return Err(bad_input(format!(
            "--pruners names '{twice}' twice; run one pruner with several settings in separate benches (or \
             separate --out folders) and join them with `bench merge`"
        )));
    }
    if names.is_empty() {
        return Err(bad_input(format!("no pruners to run (installed: {})", registry.names())));
    }
    for o in options {
        let prefix = o.split_once('.').map(|(p, _)| p).filter(|p| !p.contains('='));
        match prefix {
            Some(p) if names.iter().any(|n| n == p) => {}
            _ => {
                return Err(bad_input(format!(
                    "--opt '{o}' must look like PRUNER.NAME=VALUE for one of {}",
                    names.join(", ")
                )));
            }
        }
    }
    let requested: Vec<(String, Vec<String>)> = names
        .iter()
        .map(|name| {
            let mine = options.iter().filter_map(|o| o.strip_prefix(&format!("{name}.")).map(str::to_string)).collect();
            (name.clone(), mine)
        })
        .collect();
    let probed = match probing {
        Some(isolation) => crate::isolation::probe_configure(registry, &requested, isolation),
        None => vec![Ok(()); requested.len()],
    };
    let mut pruners = Vec::with_capacity(names.len());
    for ((name, mine), probed) in requested.iter().zip(probed) {
        if let Err(how) = probed {
            tracing::warn!("{name}: disabled for this bench: plugin '{name}' crashed while configuring: {how}");
            continue;
        }
        match ConfiguredPruner::new(registry, name, mine) {
            Ok(p) => pruners.push(p),
            // A plugin that crashes while creating or configuring itself sits out; the
            // others run. Bad input (a name, an option) still stops the bench.
            Err(e) if !crate::failure::is_bad_input(&e) => tracing::warn!("{name}: disabled for this bench: {e}"),
            Err(e) => return Err(e),
        }
    }
    if pruners.is_empty() {
        return Err(anyhow::anyhow!("no pruner could be configured (see the warnings above)"));
    }
    Ok(pruners)
}

/// Readies every learnable pruner: keeps the curve of a state given with `--opt P.state=FILE`
/// (loaded before the run folder was made), else loads the state a previous run of
/// this bench fitted with the same key (pruner, version, options, train split) in
/// `out/state/P-KEY.bin`, else fits it on the zoo's train members and saves the state there
/// (see [`crate::fitting`]).
fn fit_learnable(
    pruners: &mut [ConfiguredPruner],
    zoo: &Zoo,
    out: &Path,
    data: DataServices<'_>,
    calib_samples: u64,
    isolated: Option<&IsolatedRun>,
) -> anyhow::Result<()> {
    let archs = zoo_archs(zoo);
    let target = Some(StateTarget { dataset: Some(&zoo.meta().dataset), archs: &archs });
    // Under --isolate worker a state the bench fitted is loaded in a probe worker before it
    // is loaded here, so a plugin whose `load_state` crashes is one error line, not the end
    // of this process (a state given with `state=FILE` was probed with the configuration).
    let load = |pruner: &mut ConfiguredPruner, path: &Path| -> anyhow::Result<()> {
        if let Some(run) = isolated {
            let setup = Setup {
                state: Some(path.to_path_buf()),
                ..Setup::of(pruner, run.engine.clone(), calib_samples, run.isolation.memory_limit)
            };
            if let Some(Err(how)) = crate::isolation::probe(&[setup], &run.isolation).pop() {
                return Err(anyhow::anyhow!(
                    "plugin '{}' crashed while loading the state {}: {how}",
                    pruner.name(),
                    path.display()
                ));
            }
        }
        load_state_file(pruner, path, target).map(drop)
    };
    for pruner in pruners.iter_mut().filter(|p| p.learnable()) {
        if let Some(path) = pruner.state_file.clone() {
            // Loaded (and checked) before the run folder was made.
            keep_fit_curve(pruner.name(), &path, out);
            continue;
        }
        let header = StateHeader::new(pruner, zoo, None);
        let files = FitFiles::for_state(&out.join("state").join(format!("{}-{}.bin", pruner.name(), header.key())));
        if files.state.is_file() {
            if read_state_header(&files.state)?.as_ref() == Some(&header) {
                tracing::info!("{}: loading the state fitted earlier from {}", pruner.name(), files.state.display());
                load(pruner, &files.state)?;
                continue;
            }
            tracing::warn!("{}: {} was fitted for other settings; fitting anew", pruner.name(), files.state.display());
        }
        let summary = match isolated {
            Some(run) => {
                tracing::info!(
                    "fitting {} on {} train members ({} val) of zoo {}",
                    pruner.name(),
                    zoo.members(hyperprune_core::zoo::Split::Train).len(),
                    zoo.members(hyperprune_core::zoo::Split::Val).len(),
                    zoo.dir().display()
                );
                let setup = Setup {
                    state: None,
                    zoo: Some(run.zoo_dir.clone()),
                    data: pruner.plugin.info.capabilities.fit_needs_data.then(|| run.data.clone()),
                    ..Setup::of(pruner, run.engine.clone(), calib_samples, run.isolation.memory_limit)
                };
                let summary = crate::isolation::fit_in_worker(&setup, &files.state, None)?;
                load(pruner, &files.state)?;
                summary
            }
            None => fit(pruner, zoo, &files, Some(data), calib_samples, None)?,
        };
        tracing::info!(
            "{}: fitted on {} train members in {:.2} s; state {}",
            pruner.name(),
            summary.train,
            summary.seconds,
            files.state.display()
        );
    }
    Ok(())
}

/// The architecture names of the zoo's members, sorted, without repeats.
fn zoo_archs(zoo: &Zoo) -> Vec<String> {
    let mut archs: Vec<String> = zoo.meta().members.iter().map(|m| m.arch.name.clone()).collect();
    archs.sort();
    archs.dedup();
    archs
}

/// A state given with `P.state=FILE` brings the curve of its fit (`NAME.fit.jsonl` beside it,
/// when there is one) into `RUN/state/P-NAME.fit.jsonl`, so the run's report plots it as it
/// plots a fit made in the run; benches that add rows with other states add their curves.
/// Without a curve there is nothing to keep; a failed copy is a warning, not an error.
fn keep_fit_curve(pruner: &str, state: &Path, out: &Path) {
    let curve = FitFiles::for_state(state).curve;
    if !curve.is_file() {
        return;
    }
    let stem = state.file_stem().map_or_else(|| "state".into(), |s| s.to_string_lossy().into_owned());
    let dir = out.join("state");
    let dest = dir.join(format!("{pruner}-{stem}.fit.jsonl"));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::copy(&curve, &dest)) {
        tracing::warn!("{pruner}: could not copy the fit curve {} to {}: {e}", curve.display(), dest.display());
    }
}

fn write_run_json(out: &Path, args: &BenchArgs, zoo: &Zoo, engine: &str) -> anyhow::Result<()> {
    let run = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "hyperprune_version": env!("CARGO_PKG_VERSION"),
        "sdk_version": hyperprune_sdk::SDK_VERSION,
        "seed": args.seed,
        "machine": crate::machine::describe(),
        "started": crate::clock::now_utc(),
        "engine": engine,
        "zoo": zoo.dir().display().to_string(),
        "split": args.split,
        "calib_samples": args.calib_samples,
    });
    write_atomic(&out.join(crate::report::RUN_FILE), serde_json::to_string_pretty(&run)?.as_bytes())?;
    Ok(())
}

/// `bench merge`: joins run folders (first row of a key wins) and reports the result. The
/// output folder's own rows, when it has some, are the first input, so merging into a run
/// never loses them; the inputs are only read (a torn last line is skipped, not cut). Every
/// input is read before anything is written, and a merge that fails leaves no new folder.
fn merge(out: &Path, runs: &[PathBuf]) -> anyhow::Result<()> {
    // Every input is checked before the output folder is made or locked, so a refused merge
    // changes no file; the output's own rows are read again under the lock.
    let own = out.join(RESULTS_FILE);
    for results in runs.iter().map(|r| r.join(RESULTS_FILE)).chain(own.is_file().then_some(own)) {
        if !results.is_file() {
            return Err(bad_input(format!(
                "{}: not found; bench merge joins run folders made by `hyperprune bench`",
                results.display()
            )));
        }
        read_complete_rows(&results)?;
    }
    let created = !out.exists();
    let result = (|| -> anyhow::Result<()> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let _lock = RunLock::acquire(out)?;
        let target = out.join(RESULTS_FILE);
        let mut inputs: Vec<&Path> = Vec::new();
        if target.is_file() {
            inputs.push(out);
        }
        for run in runs {
            if !inputs.iter().any(|seen| same_folder(seen, run)) {
                inputs.push(run);
            }
        }
        let mut seen = std::collections::HashSet::new();
        let mut text = String::new();
        let mut run_json = None;
        for run in &inputs {
            let results = run.join(RESULTS_FILE);
            if !results.is_file() {
                return Err(bad_input(format!(
                    "{}: not found; bench merge joins run folders made by `hyperprune bench`",
                    results.display()
                )));
            }
            for row in read_complete_rows(&results)? {
                if seen.insert(row.key()) {
                    text.push_str(&serde_json::to_string(&row)?);
                    text.push('\n');
                }
            }
            if run_json.is_none() {
                run_json = std::fs::read(run.join(crate::report::RUN_FILE)).ok();
            }
        }
        let run_file = out.join(crate::report::RUN_FILE);
        if let (false, Some(bytes)) = (run_file.exists(), &run_json) {
            write_atomic(&run_file, bytes)?;
        }
        write_atomic(&target, text.as_bytes())?;
        let own = if inputs.first().is_some_and(|first| *first == out) { " (its own rows included)" } else { "" };
        println!("merged {} rows from {} runs into {}{own}", seen.len(), inputs.len(), target.display());
        finish(out, false)
    })();
    if result.is_err() && created {
        let _ = std::fs::remove_dir_all(out);
    }
    result
}

/// Whether two paths name the same folder (compared after resolving links and `..`; as
/// written when either cannot be resolved).
fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

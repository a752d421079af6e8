//! `hyperprune zoo train|show|list`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use hyperprune_core::engine::Optimizer;
use hyperprune_core::zoo::{Split, Zoo, ZooError, ZooEvent, ZooSettings, plan, train_zoo};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{Format, GlobalArgs, OptimizerArg, ZooCommand, ZooTrainArgs};
use crate::failure::bad_input;

/// Runs a `zoo` subcommand.
///
/// # Errors
/// Bad input (arch, dataset, settings, an existing zoo with other settings, a chunk too large
/// for memory) or training failures.
pub fn run(global: &GlobalArgs, cmd: ZooCommand) -> anyhow::Result<()> {
    match cmd {
        ZooCommand::Train(args) => train(global, *args).map(|_| ()),
        ZooCommand::Show { dir, format } => show(&dir, format),
        ZooCommand::Merge { out, zoos } => merge(&out, &zoos),
        ZooCommand::List { root } => {
            let zoos = Zoo::list(&root);
            if zoos.is_empty() {
                println!("no zoos under {}", root.display());
            }
            for zoo in zoos {
                match zoo {
                    Ok(z) => {
                        let m = z.meta();
                        let trained = z.members(Split::All).len();
                        println!(
                            "{:<32} {:<12} {:<14} {:>4}/{:<4} members",
                            z.dir().display(),
                            m.arch.name,
                            m.dataset,
                            trained,
                            m.members.len()
                        );
                    }
                    Err(e) => println!("{e}"),
                }
            }
            Ok(())
        }
    }
}

/// `zoo merge`: every trained member of `zoos` (one dataset) in a new zoo at `out`, ids
/// `ZOO:ID`, files copied; the base architecture and settings are the first zoo's (each
/// member keeps its own architecture and hyperparameters). Nothing is left behind on failure.
fn merge(out: &Path, zoos: &[PathBuf]) -> anyhow::Result<()> {
    if out.exists() {
        return Err(bad_input(format!("{}: already exists; zoo merge writes a new folder", out.display())));
    }
    let opened: Vec<Zoo> = zoos.iter().map(|d| Zoo::open(d).map_err(bad_input)).collect::<Result<_, _>>()?;
    let first = opened[0].meta();
    if let Some(other) = opened.iter().find(|z| z.meta().dataset != first.dataset) {
        return Err(bad_input(format!(
            "{}: dataset '{}', but {} has '{}'; a zoo holds members of one dataset",
            other.dir().display(),
            other.meta().dataset,
            opened[0].dir().display(),
            first.dataset
        )));
    }
    let mut meta = first.clone();
    meta.name = out.file_name().map_or_else(|| "merged".into(), |n| n.to_string_lossy().into_owned());
    meta.members.clear();
    let result = (|| -> anyhow::Result<()> {
        std::fs::create_dir_all(out.join("members")).with_context(|| format!("creating {}", out.display()))?;
        for zoo in &opened {
            for member in zoo.meta().members.iter().filter(|m| m.is_trained()) {
                let mut m = member.clone();
                m.id = format!("{}:{}", zoo.meta().name, member.id);
                let file_name = Path::new(&member.file).file_name().map(|f| f.to_string_lossy().into_owned());
                m.file = format!("members/{}-{}", zoo.meta().name, file_name.unwrap_or_else(|| member.id.clone()));
                std::fs::copy(zoo.dir().join(&member.file), out.join(&m.file))
                    .with_context(|| format!("copying {}", zoo.dir().join(&member.file).display()))?;
                meta.members.push(m);
            }
        }
        Zoo::new(out, meta.clone()).save_meta()?;
        Zoo::open(out).map_err(bad_input)?; // the checks every reader applies
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(out);
    }
    result?;
    let count = |split: Split| meta.members.iter().filter(|m| m.split == split).count();
    println!(
        "merged {} zoos into {}: {} members (train {}, val {}, test {})",
        zoos.len(),
        out.display(),
        meta.members.len(),
        count(Split::Train),
        count(Split::Val),
        count(Split::Test)
    );
    Ok(())
}

/// Trains (or resumes) a zoo and returns it.
///
/// # Errors
/// As [`run`].
pub fn train(global: &GlobalArgs, args: ZooTrainArgs) -> anyhow::Result<Zoo> {
    let arch = crate::inputs::arch(&args.arch)?;
    let data = crate::inputs::dataset(&args.data)?;
    crate::inputs::check_fits(&arch, &data)?;
    let [train, val, test] = args.split.as_slice() else {
        return Err(bad_input(format!("--split needs three fractions train,val,test, got {:?}", args.split)));
    };
    let engine = crate::engines::engine(args.exec.engine, &args.exec.device)?;
    let settings = ZooSettings {
        epochs: args.epochs,
        batch_size: args.batch_size,
        optimizer: match args.optimizer {
            OptimizerArg::Adam => Optimizer::Adam,
            OptimizerArg::Sgd => Optimizer::Sgd { momentum: args.momentum },
        },
        lr: args.lr,
        vary: args.vary.clone(),
        seed: args.seed,
        split: [*train, *val, *test],
        shared_data_order: args.shared_data_order,
    };
    let name = args.out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "zoo".into());
    let engine_name = engine.name_for(&arch);
    let meta = plan(&name, &arch, &data.name, engine_name, settings, args.members).map_err(bad_input)?;
    let bar = progress_bar(global.quiet);
    let mut done_members = 0usize;
    let mut total_steps = 0u64;
    let trained = train_zoo(&args.out, meta, engine.as_ref(), &data, args.chunk, &mut |event| match event {
        ZooEvent::Start { total, remaining, steps } => {
            if remaining < total {
                bar.println(format!("resuming: {} of {total} members already trained", total - remaining));
            }
            bar.set_length(steps as u64);
            total_steps = steps as u64;
            bar.set_message(format!("{remaining} members to train on {engine_name}"));
        }
        ZooEvent::Steps { done } => {
            bar.set_position(done as u64);
            tracing::trace!(target: crate::logging::PROGRESS, done = done as u64, total = total_steps, unit = "steps");
        }
        ZooEvent::MemberDone { id, test_accuracy } => {
            done_members += 1;
            bar.set_message(format!("{done_members} trained, last: member {id} {:.1}%", 100.0 * test_accuracy));
            let line = format!("member {id}: test accuracy {:.2}%", 100.0 * test_accuracy);
            if global.quiet { tracing::info!("{line}") } else { bar.println(line) }
        }
    });
    // Settings and memory refusals, and another zoo in the folder, are the user's to fix.
    let zoo = trained.map_err(|e| match e {
        ZooError::Settings(_) | ZooError::Memory { .. } | ZooError::Format { .. } => bad_input(e),
        other => other.into(),
    })?;
    bar.finish_and_clear();
    if !global.quiet {
        summary(&zoo);
    }
    Ok(zoo)
}

fn progress_bar(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps, eta {eta} {msg}")
            .expect("valid template"),
    );
    bar
}

fn summary(zoo: &Zoo) {
    let accs: Vec<f64> = zoo.members(Split::All).iter().filter_map(|m| m.test_accuracy).collect();
    let (mean, std) = mean_std(&accs);
    let split_count = |s| zoo.members(s).len();
    println!(
        "zoo {} ({} on {}): {} members (train {}, val {}, test {}); dense test accuracy {:.2}% ± {:.2}",
        zoo.dir().display(),
        zoo.meta().arch.name,
        zoo.meta().dataset,
        accs.len(),
        split_count(Split::Train),
        split_count(Split::Val),
        split_count(Split::Test),
        100.0 * mean,
        100.0 * std
    );
}

/// Mean and sample standard deviation (0 for fewer than two values).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64;
    (mean, var.sqrt())
}

fn show(dir: &Path, format: Format) -> anyhow::Result<()> {
    let zoo = Zoo::open(dir).map_err(bad_input)?;
    if let Format::Json = format {
        println!("{}", serde_json::to_string_pretty(zoo.meta())?);
        return Ok(());
    }
    let m = zoo.meta();
    // A merged zoo holds members of several architectures: name each, with its count.
    let mut archs: Vec<(&str, usize)> = Vec::new();
    for member in &m.members {
        match archs.iter_mut().find(|(name, _)| *name == member.arch.name) {
            Some((_, count)) => *count += 1,
            None => archs.push((&member.arch.name, 1)),
        }
    }
    let mixed = archs.len() > 1;
    let arch = if mixed {
        let each: Vec<String> = archs.iter().map(|(name, count)| format!("{name}: {count}")).collect();
        format!("{} architectures ({})", archs.len(), each.join(", "))
    } else {
        m.arch.name.clone()
    };
    println!(
        "zoo {} — {arch} on {}, trained by {}, seed {}, vary {}",
        m.name,
        m.dataset,
        m.engine,
        m.settings.seed,
        m.settings.vary.join(",")
    );
    let id_width = m.members.iter().map(|member| member.id.len()).max().unwrap_or(0).max(6);
    println!(
        "{:<id_width$} {:<6} {:<9} {:<16} {:>9} {:>8} {:>8} {:>9} {:>9}{}",
        "ID",
        "SPLIT",
        "ACT",
        "INIT",
        "LR",
        "WD",
        "DROPOUT",
        "TRAIN%",
        "TEST%",
        if mixed { "  ARCH" } else { "" }
    );
    for member in &m.members {
        let h = &member.hyperparams;
        let pct = |x: Option<f64>| x.map(|a| format!("{:.2}", 100.0 * a)).unwrap_or_else(|| "-".into());
        println!(
            "{:<id_width$} {:<6} {:<9} {:<16} {:>9.2e} {:>8} {:>8} {:>9} {:>9}{}",
            member.id,
            format!("{:?}", member.split).to_lowercase(),
            h.activation.name(),
            serde_json::to_value(h.init)?.as_str().unwrap_or("?"),
            h.lr,
            h.weight_decay,
            h.dropout,
            pct(member.train_accuracy),
            pct(member.test_accuracy),
            if mixed { format!("  {}", member.arch.name) } else { String::new() }
        );
    }
    let accs: Vec<f64> = zoo.members(Split::All).iter().filter_map(|m| m.test_accuracy).collect();
    if !accs.is_empty() {
        let mut sorted = accs.clone();
        sorted.sort_by(f64::total_cmp);
        let (mean, std) = mean_std(&accs);
        let q = |f: f64| 100.0 * sorted[((sorted.len() - 1) as f64 * f).round() as usize];
        println!(
            "test accuracy: mean {:.2}% ± {:.2}, min {:.2}%, median {:.2}%, max {:.2}% over {} trained members",
            100.0 * mean,
            100.0 * std,
            q(0.0),
            q(0.5),
            q(1.0),
            accs.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    /// Runs `hyperprune zoo train ARGS --out DIR` in-process.
    fn zoo_train(args: &[&str], out: &Path) -> anyhow::Result<Zoo> {
        let mut argv = vec!["hyperprune", "-q", "zoo", "train", "--out", out.to_str().expect("utf-8 temp path")];
        argv.extend(args);
        let cli = Cli::try_parse_from(argv).expect("the arguments parse");
        let Command::Zoo(ZooCommand::Train(args)) = cli.command else { unreachable!("a zoo train command") };
        train(&cli.global, *args)
    }

    #[test]
    fn counts_of_zero_and_nonsense_numbers_are_refused_by_the_parser_naming_the_option() {
        let out = "/nonexistent/zoo";
        for (flag, value) in [
            ("--batch-size", "0"),
            ("--members", "0"),
            ("--epochs", "0"),
            ("--lr", "NaN"),
            ("--lr", "-1"),
            ("--chunk", "0"),
        ] {
            let argv = ["hyperprune", "zoo", "train", "--out", out, flag, value];
            let err = Cli::try_parse_from(argv).expect_err("refused");
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{flag} {value}");
            assert!(err.to_string().contains(flag), "{err}");
        }
        let err =
            Cli::try_parse_from(["hyperprune", "zoo", "train", "--out", out, "--split", "NaN,0.5,0.5"]).unwrap_err();
        assert!(err.to_string().contains("--split") && err.to_string().contains("finite"), "{err}");
    }

    #[test]
    fn a_split_that_does_not_sum_to_one_is_bad_input_and_leaves_no_folder() {
        let parent = tempfile::tempdir().expect("temp dir");
        let out = parent.path().join("zoo");
        let err = zoo_train(&["--split", "0.5,0.5,0.5", "--members", "2"], &out).expect_err("refused");
        assert!(crate::failure::is_bad_input(&err), "{err:#}");
        assert!(format!("{err:#}").contains("split fractions must be in [0, 1] and sum to 1"), "{err:#}");
        assert!(!out.exists(), "no output folder is left behind");
    }

    #[test]
    fn an_architecture_too_large_for_memory_is_one_line_of_bad_input_and_leaves_no_folder() {
        if hyperprune_core::zoo::available_memory().is_none() {
            eprintln!("skipped: the available memory is unknown on this machine, so no check is made");
            return;
        }
        let parent = tempfile::tempdir().expect("temp dir");
        let spec = parent.path().join("huge.json");
        std::fs::write(
            &spec,
            r#"{"name":"huge","input":[1,8,8],"classes":10,"layers":[{"type":"flatten"},
                {"type":"linear","out_features":8589934592},{"type":"relu"},{"type":"linear","out_features":10}]}"#,
        )
        .expect("write spec");
        let out = parent.path().join("zoo");
        let err = zoo_train(&["--arch", spec.to_str().expect("utf-8"), "--members", "2"], &out).expect_err("refused");
        let text = format!("{err:#}");
        assert!(crate::failure::is_bad_input(&err), "{text}");
        assert!(
            text.contains("GiB is available") && text.contains("--chunk") && text.contains("--batch-size"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!out.exists(), "no output folder is left behind");
    }
}

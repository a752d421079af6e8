//! One file per subcommand; `run` dispatches.

mod bench;
mod bench_engine;
mod demo;
mod eval;
mod fit;
mod plugins;
mod prune;
mod report;
mod zoo;

use crate::cli::{Cli, Command};
use crate::failure::bad_input;
use crate::plugins::{Registry, discover, discover_checked};

/// Runs the parsed command line.
///
/// # Errors
/// Whatever the subcommand reports.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Plugins(cmd) => plugins::run(&cli.global, cmd),
        Command::Prune(args) => prune::run(&cli.global, args),
        Command::Zoo(cmd) => zoo::run(&cli.global, cmd),
        Command::Bench(args) => bench::run(&cli.global, args),
        Command::Worker => crate::isolation::serve(),
        Command::Fit(args) => fit::run(&cli.global, args),
        Command::Eval(args) => eval::run(args),
        Command::Demo(args) => demo::run(&cli.global, args),
        Command::BenchEngine(cmd) => bench_engine::run(cmd),
        Command::Report(args) => report::run(args),
    }
}

/// Discovers plugins; a `--plugin FILE` that fails to load is an error.
///
/// # Errors
/// Bad input naming the first explicit plugin file that could not be loaded.
pub fn registry(global: &crate::cli::GlobalArgs) -> anyhow::Result<Registry> {
    registry_isolated(global, None)
}

/// [`registry`]; under `--isolate worker` (`isolation` given) every plugin file is first
/// loaded in a worker, so one whose `info` aborts, crashes or hangs is a file that failed to
/// load (a warning, or the error of its `--plugin`) instead of the end of this process.
///
/// # Errors
/// As [`registry`].
pub fn registry_isolated(
    global: &crate::cli::GlobalArgs,
    isolation: Option<&crate::isolation::Isolation>,
) -> anyhow::Result<Registry> {
    let registry = match isolation {
        None => discover(&global.plugins),
        Some(isolation) => {
            let check = |files: &[std::path::PathBuf]| {
                let setups: Vec<crate::isolation::Setup> =
                    files.iter().map(|f| crate::isolation::Setup::load_only(f, isolation.memory_limit)).collect();
                crate::isolation::probe(&setups, isolation)
            };
            discover_checked(&global.plugins, Some(&check))
        }
    };
    if let Some(first) = registry.explicit_failures.first() {
        return Err(bad_input(first));
    }
    Ok(registry)
}

/// Under `--isolate worker`, configures `name` with `options` in a worker first (see
/// [`crate::isolation::probe_configure`]): a plugin that crashes or hangs there is one error
/// line instead of the end of this process.
///
/// # Errors
/// How the plugin crashed while configuring.
pub fn probe_configure(
    registry: &Registry,
    name: &str,
    options: &[String],
    isolation: Option<&crate::isolation::Isolation>,
) -> anyhow::Result<()> {
    let Some(isolation) = isolation else { return Ok(()) };
    let probed = crate::isolation::probe_configure(registry, &[(name.to_string(), options.to_vec())], isolation);
    match probed.into_iter().next() {
        Some(Err(how)) => Err(anyhow::anyhow!("plugin '{name}' crashed while configuring: {how}")),
        _ => Ok(()),
    }
}

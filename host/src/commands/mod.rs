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
use crate::plugins::{Registry, discover};

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
    let registry = discover(&global.plugins);
    if let Some(first) = registry.explicit_failures.first() {
        return Err(bad_input(first));
    }
    Ok(registry)
}

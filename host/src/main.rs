//! `hyperprune`: load pruner plugins, train model zoos, prune, bench and report.
//!
//! Argument structs live in `cli.rs` and only parse; each subcommand's work is one file
//! under `commands/`. Errors carry context with `anyhow`; bad input exits with code 2,
//! other failures with 1.

mod bench;
mod calibration;
mod cli;
mod clock;
mod commands;
mod context;
mod engines;
mod failure;
mod fitting;
mod inputs;
mod isolation;
mod logging;
mod machine;
mod outcome;
mod plugins;
mod pruning;
mod report;
mod results;
mod state_file;
#[cfg(test)]
mod testing;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging::init(&cli.global);
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if failure::is_bad_input(&err) { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

//! `hyperprune`: load pruner plugins, train model zoos, prune, bench and report.
//!
//! A thin binary over the `hyperprune_host` library: argument structs live in `cli.rs` and
//! only parse; each subcommand's work is one file under `commands/`. Errors carry context
//! with `anyhow`; bad input exits with code 2, other failures with 1.

use hyperprune_host::{cli, commands, failure, logging};
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return refuse_arguments(&err),
    };
    quit_quietly_on_a_closed_stdout();
    logging::init(&cli.global);
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if failure::is_bad_input(&err) { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

/// A command line clap refused. A value that is not what its option expects is one line
/// (`error: invalid value '0' for '--jobs <JOBS>': expected ...`), exit code 2; help,
/// version and usage errors print as clap renders them.
fn refuse_arguments(err: &clap::Error) -> ExitCode {
    match err.kind() {
        ErrorKind::ValueValidation | ErrorKind::InvalidValue => {
            let rendered = err.render().to_string();
            eprintln!("{}", rendered.lines().next().unwrap_or("error: invalid value"));
            ExitCode::from(2)
        }
        _ => err.exit(),
    }
}

/// `hyperprune ... | head` closes stdout early; Rust ignores SIGPIPE, so the next `println!`
/// panics. End the process quietly instead, with the shell's code for a closed pipe (141):
/// every result row was flushed before it was printed. (SIGPIPE is not restored instead: a
/// bench writes to its workers' pipes and must outlive a worker that died.)
fn quit_quietly_on_a_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
}

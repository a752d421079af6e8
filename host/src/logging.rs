//! Log set-up: `-v`/`-q` pick the level, `--log-format json` switches to JSON lines.

use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

use crate::cli::{GlobalArgs, LogFormat};

/// The target of progress events: `tracing::trace!(target: PROGRESS, done, total, unit)`.
/// The command line draws its own bars and never shows them; an embedding (the Python
/// module) turns them into its progress display.
pub const PROGRESS: &str = "hyperprune::progress";

/// Whether commands draw progress bars on the terminal (see [`set_bars`]).
static BARS: AtomicBool = AtomicBool::new(true);

/// Turns the terminal progress bars of long commands on or off; an embedding that shows
/// progress its own way (from [`PROGRESS`] events) turns them off.
pub fn set_bars(on: bool) {
    BARS.store(on, Ordering::Relaxed);
}

/// Whether long commands draw terminal progress bars.
pub fn bars() -> bool {
    BARS.load(Ordering::Relaxed)
}

/// Installs the global subscriber. `RUST_LOG` overrides the level flags.
pub fn init(args: &GlobalArgs) {
    let level = if args.quiet {
        "warn"
    } else {
        match args.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    let _ = match args.log_format {
        LogFormat::Text => builder.without_time().try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

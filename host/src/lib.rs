//! The hyperprune host as a library: what the `hyperprune` command does, callable from other
//! crates (the Python module in `python/` is one).
//!
//! The binary (`main.rs`) is a thin shell over this crate: it parses the command line and
//! hands it to [`commands::run`]. Everything a command uses is here: plugin discovery and
//! loading ([`plugins`]), configuring and calling a pruner and checking its outcome
//! ([`pruning`], [`outcome`]), reading the user's models and datasets ([`inputs`]), picking
//! an engine ([`engines`]). [`session`] bundles those into the few calls an embedding needs
//! (load a model, prune, evaluate), on the same code path as `hyperprune prune`.
//!
//! Not for: plugin authors (they depend on `hyperprune-sdk` only) or numerics (those live in
//! `hyperprune-core` and the engine crates).
//!
//! Commands and [`session`] return `anyhow` errors; those caused by the caller's input carry a
//! [`failure::BadInput`] in their chain ([`failure::is_bad_input`]), which is how the CLI
//! exits with code 2 and the Python module raises `InputError`. The modules below them return
//! typed errors, a type per module implementing `std::error::Error` (such as
//! [`values::ValueError`], [`outcome::OutcomeError`], [`state_file::StateFileError`] or
//! [`isolation::CallError`]), whose messages are the ones users read; the caller that knows
//! whose fault it is marks bad input.

pub mod bench;
pub mod bn_stats;
pub mod calibration;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod context;
pub mod engines;
pub mod failure;
pub mod fit_sink;
pub mod fitting;
pub mod inputs;
pub mod interrupt;
pub mod isolation;
pub mod logging;
pub mod machine;
pub mod outcome;
pub mod plugins;
pub mod pruning;
pub mod report;
pub mod results;
pub mod session;
pub mod state_file;
#[cfg(test)]
mod testing;
pub mod values;

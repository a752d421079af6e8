//! Integration tests: one binary, one module per area.

mod bad_input;
mod bench;
mod fashion;
mod fixtures;
mod plugins;

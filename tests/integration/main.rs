//! Integration tests: one binary, one module per area.

mod bad_input;
mod fixtures;
mod plugins;

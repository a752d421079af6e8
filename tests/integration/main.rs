//! Integration tests: one binary, one module per area.

mod adversarial;
mod bad_input;
mod bench;
mod data_aware;
mod fashion;
mod fitting;
mod fixtures;
mod graphs;
mod hypernet;
mod isolation;
mod plugins;
mod study;
mod torch_fixture;

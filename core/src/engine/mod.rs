//! The [`Engine`] trait: what runs a network (forward, training, evaluation, the calibration
//! services), with the types it speaks in and the seeded initialisation every engine shares.
//!
//! The engines themselves live in their own crates, one per engine as burn keeps one crate
//! per backend: `hyperprune-engine-cpu` (`CpuEngine`, hand-written, the CPU default) and
//! `hyperprune-engine-burn` (`BurnEngine`, the reference, and CUDA). Only the host and tests
//! pick one.

mod base;
mod init;

pub use base::{
    DenseMatrix, Engine, EngineError, Evaluation, Init, Optimizer, TrainConfig, TrainEvent, TrainJob, check_samples,
    check_temperature, supported,
};
pub use init::init_model;

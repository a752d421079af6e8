//! Execution engines behind the [`Engine`] trait.

mod base;
mod init;

pub use base::{DenseMatrix, Engine, EngineError, Evaluation, Init, Optimizer, TrainConfig, TrainEvent, TrainJob};
pub use init::init_model;

//! Execution engines behind the [`Engine`] trait.

mod base;

pub use base::{DenseMatrix, Engine, EngineError, Evaluation, Init, Optimizer, TrainConfig, TrainEvent, TrainJob};

//! Execution engines behind the [`Engine`] trait.

mod base;
pub mod burn;
pub mod cpu;
mod init;

pub use self::burn::{BurnEngine, FlexEngine};
pub use self::cpu::CpuEngine;
pub use base::{DenseMatrix, Engine, EngineError, Evaluation, Init, Optimizer, TrainConfig, TrainEvent, TrainJob};
pub use init::init_model;

//! Model zoos: populations of trained CNNs of one architecture on one dataset, with
//! per-member hyperparameters and a train / val / test split by member.
//!
//! On disk a zoo is a folder: `zoo.json` ([`ZooMeta`]) and `members/NNNN.safetensors`.
//! [`plan`] samples the members, [`train_zoo`] trains them resumably, [`Zoo::open`] and
//! [`Zoo::members`] serve the harness and learned pruners.

mod meta;
mod plan;
mod store;
mod train;

use std::path::PathBuf;

pub use meta::{Hyperparams, MemberInfo, Split, ZOO_FORMAT, ZooMeta, ZooSettings};
pub use plan::{VARY_FACTORS, plan};
pub use store::{ZOO_FILE, Zoo};
pub use train::{ZooEvent, train_zoo};

/// What can go wrong with a zoo. File errors name the file.
#[derive(Debug, thiserror::Error)]
pub enum ZooError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `zoo.json` is malformed.
    #[error("{}: not a valid zoo.json: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The settings are invalid or differ from an existing zoo.
    #[error("{0}")]
    Settings(String),
    /// A member file failed.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}

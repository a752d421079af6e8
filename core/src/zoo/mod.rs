//! Model zoos: populations of trained CNNs of one architecture on one dataset, with
//! per-member hyperparameters and a train / val / test split by member.
//!
//! On disk a zoo is a folder: `zoo.json` ([`ZooMeta`]) and `members/NNNN.safetensors`.
//! [`plan`] samples the members, [`train_zoo`] trains them resumably, [`Zoo::open`] and
//! [`Zoo::members`] serve the harness and learned pruners.

mod memory;
mod meta;
mod plan;
mod store;
mod train;

use std::path::PathBuf;

pub use memory::{ACTIVATION_COPIES, PARAM_COPIES, available_memory, chunk_memory, plan_memory};
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
    /// A chunk of members would not fit in memory.
    #[error(
        "training {members} '{arch}' members together at batch size {batch_size} needs about {:.1} GiB, but {:.1} GiB \
         is available; train fewer members at once (--chunk), lower --batch-size, or use a smaller architecture",
        memory::gib(*needed),
        memory::gib(*available)
    )]
    Memory {
        /// The architecture.
        arch: String,
        /// Members trained together (the chunk).
        members: usize,
        /// The mini-batch size.
        batch_size: usize,
        /// Estimated bytes (see [`chunk_memory`]).
        needed: u64,
        /// Bytes available (see [`available_memory`]).
        available: u64,
    },
    /// A member file failed.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}

//! Datasets: the UCI digits embedded in the crate, IDX files (MNIST, Fashion-MNIST, ...),
//! CIFAR-10 binary batches. Each is registered with `inventory` behind [`DatasetSource`].

mod base;

pub use base::{DataOptions, Dataset, DatasetEntry, DatasetError, DatasetSource, Samples, load, sources};

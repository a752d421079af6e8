//! Datasets: the UCI digits embedded in the crate, IDX files (MNIST, Fashion-MNIST, ...),
//! CIFAR-10 binary batches. Each is registered with `inventory` behind [`DatasetSource`];
//! [`load`] finds one by name and [`sources`] lists them.
//!
//! | name | what | where |
//! |---|---|---|
//! | `digits` | UCI optical digits, `[1, 8, 8]`, 10 classes, 1,347 / 450 | embedded |
//! | `mnist` | MNIST, `[1, 28, 28]`, 10 classes | `--data-dir` |
//! | `fashion-mnist` | Fashion-MNIST, `[1, 28, 28]`, 10 classes | `--data-dir`, then `/usr/share/datasets/fashion-mnist` (`apt-get install -y dataset-fashion-mnist`) |
//! | `idx` | any MNIST-format IDX folder; size and classes (max label + 1) from the files | `--data-dir` |
//! | `cifar10` | CIFAR-10 binary batches, `[3, 32, 32]`, 10 classes | `--data-dir` or its `cifar-10-batches-bin/` |
//!
//! Nothing is downloaded: there is no network at run time.

mod base;
mod cifar;
mod digits;
mod idx;

pub use base::{DataOptions, Dataset, DatasetEntry, DatasetError, DatasetSource, Samples, load, sources};

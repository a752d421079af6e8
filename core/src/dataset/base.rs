//! The dataset trait and the in-memory sample container every engine consumes.

use std::path::{Path, PathBuf};

/// Labelled images in memory, already normalised, in `[n, c, h, w]` order.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// `[channels, height, width]` of one image.
    pub shape: [usize; 3],
    /// `n · c · h · w` normalised pixels.
    pub images: Vec<f32>,
    /// `n` labels in `0..classes`.
    pub labels: Vec<u32>,
}

impl Samples {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Scalars per image.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let d = self.image_len();
        &self.images[i * d..(i + 1) * d]
    }

    /// The mean and the uncentred second moment `E[x xᵀ]` (`d × d`, row-major) of the
    /// flattened images, in f64.
    pub fn moments(&self) -> (Vec<f64>, Vec<f64>) {
        let d = self.image_len();
        let images = &self.images[..self.len() * d];
        let mut mean = vec![0.0f64; d];
        for image in images.chunks_exact(d) {
            mean.iter_mut().zip(image).for_each(|(m, &v)| *m += v as f64);
        }
        let mut second = vec![0.0f64; d * d];
        crate::gram::accumulate_gram(&mut second, images, d);
        crate::gram::mirror_upper(&mut second, d);
        let scale = 1.0 / self.len().max(1) as f64;
        mean.iter_mut().chain(second.iter_mut()).for_each(|v| *v *= scale);
        (mean, second)
    }

    /// The samples at `indices`, in that order (a copy).
    pub fn subset(&self, indices: &[usize]) -> Samples {
        let d = self.image_len();
        let mut images = Vec::with_capacity(indices.len() * d);
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Samples { shape: self.shape, images, labels: indices.iter().map(|&i| self.labels[i]).collect() }
    }

    /// The first `n` samples (all if fewer).
    pub fn head(&self, n: usize) -> Samples {
        let n = n.min(self.len());
        Samples {
            shape: self.shape,
            images: self.images[..n * self.image_len()].to_vec(),
            labels: self.labels[..n].to_vec(),
        }
    }
}

/// A dataset loaded in memory: its train and test splits.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Registered name, e.g. `digits`.
    pub name: String,
    /// Number of classes.
    pub classes: usize,
    /// Train split (calibration data comes from here).
    pub train: Samples,
    /// Test split (every reported accuracy comes from here).
    pub test: Samples,
    /// How raw pixels were mapped to the stored floats, e.g. `"x / 255"`.
    pub normalisation: String,
}

impl Dataset {
    /// `[channels, height, width]` of one image.
    pub fn input_shape(&self) -> [usize; 3] {
        self.train.shape
    }
}

/// Where a source may look for files.
#[derive(Debug, Clone, Default)]
pub struct DataOptions {
    /// A folder given by the user (`--data-dir`); searched first.
    pub data_dir: Option<PathBuf>,
}

/// What can go wrong loading a dataset. Every file error names the file.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// No source has that name.
    #[error("unknown dataset '{name}' (known: {known})")]
    Unknown {
        /// Name asked for.
        name: String,
        /// Registered names.
        known: String,
    },
    /// The files were not found.
    #[error("dataset '{name}': {message}")]
    NotFound {
        /// Dataset name.
        name: String,
        /// Where it looked and how to fix it.
        message: String,
    },
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file's content is wrong.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong and what was expected.
        message: String,
    },
}

impl DatasetError {
    /// A format error for `path`.
    pub fn format(path: &Path, message: impl Into<String>) -> DatasetError {
        DatasetError::Format { path: path.to_path_buf(), message: message.into() }
    }
}

/// A source of a dataset, registered with `inventory` (see [`DatasetEntry`]).
pub trait DatasetSource: Sync {
    /// Registered name.
    fn name(&self) -> &'static str;
    /// One line: what it is and where it is looked for.
    fn description(&self) -> &'static str;
    /// `[channels, height, width]`.
    fn input_shape(&self) -> [usize; 3];
    /// Number of classes.
    fn classes(&self) -> usize;
    /// Loads both splits.
    ///
    /// # Errors
    /// [`DatasetError`] naming the file or saying where it looked.
    fn load(&self, options: &DataOptions) -> Result<Dataset, DatasetError>;
}

/// A registered dataset source.
pub struct DatasetEntry(pub &'static dyn DatasetSource);

inventory::collect!(DatasetEntry);

/// Every registered source, sorted by name.
pub fn sources() -> Vec<&'static dyn DatasetSource> {
    let mut all: Vec<&'static dyn DatasetSource> = inventory::iter::<DatasetEntry>.into_iter().map(|e| e.0).collect();
    all.sort_by_key(|s| s.name());
    all
}

/// Loads the dataset called `name`.
///
/// # Errors
/// [`DatasetError::Unknown`] listing the known names, or the source's own error.
pub fn load(name: &str, options: &DataOptions) -> Result<Dataset, DatasetError> {
    let source = sources().into_iter().find(|s| s.name() == name).ok_or_else(|| DatasetError::Unknown {
        name: name.to_string(),
        known: sources().iter().map(|s| s.name()).collect::<Vec<_>>().join(", "),
    })?;
    source.load(options)
}

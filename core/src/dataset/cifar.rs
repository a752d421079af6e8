//! `cifar10`: the binary version of CIFAR-10 (`cifar-10-binary.tar.gz`), read from
//! `--data-dir`.
//!
//! Each batch file is a run of 3,073-byte records: one label byte in `0..10`, then a 32 × 32
//! colour image as 1,024 red, 1,024 green and 1,024 blue bytes, row-major, which is already
//! the `[c, h, w]` order of [`Samples`]. Train is `data_batch_1.bin`..`data_batch_5.bin` in
//! order, test is `test_batch.bin`. Record counts are not fixed, so a subset in the same format
//! loads too.

use std::fs;
use std::path::{Path, PathBuf};

use super::base::{DataOptions, Dataset, DatasetEntry, DatasetError, DatasetSource, Samples};

/// `[channels, height, width]` of one image.
const SHAPE: [usize; 3] = [3, 32, 32];

/// Bytes of one image.
const IMAGE_LEN: usize = 3 * 32 * 32;

/// Bytes of one record: the label, then the image.
const RECORD_LEN: usize = 1 + IMAGE_LEN;

/// Number of classes.
const CLASSES: usize = 10;

/// The train batches, in the order their records are concatenated.
const TRAIN_BATCHES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];

/// The test batch.
const TEST_BATCH: &str = "test_batch.bin";

/// The folder the official archive extracts to; searched inside `--data-dir`.
const ARCHIVE_FOLDER: &str = "cifar-10-batches-bin";

/// CIFAR-10, binary version.
struct Cifar10;

/// The registered instance.
static CIFAR10: Cifar10 = Cifar10;

inventory::submit! { DatasetEntry(&CIFAR10) }

impl DatasetSource for Cifar10 {
    fn name(&self) -> &'static str {
        "cifar10"
    }

    fn description(&self) -> &'static str {
        "CIFAR-10, 32x32 colour, binary batches from --data-dir (or its cifar-10-batches-bin/ subfolder)"
    }

    fn input_shape(&self) -> [usize; 3] {
        SHAPE
    }

    fn classes(&self) -> usize {
        CLASSES
    }

    fn load(&self, options: &DataOptions) -> Result<Dataset, DatasetError> {
        let dir = self.locate(options)?;
        let mut train = Samples { shape: SHAPE, images: Vec::new(), labels: Vec::new() };
        for name in TRAIN_BATCHES {
            read_batch(&dir.join(name), &mut train)?;
        }
        let mut test = Samples { shape: SHAPE, images: Vec::new(), labels: Vec::new() };
        read_batch(&dir.join(TEST_BATCH), &mut test)?;
        Ok(Dataset {
            name: self.name().to_string(),
            classes: CLASSES,
            train,
            test,
            normalisation: "x / 255".to_string(),
        })
    }
}

impl Cifar10 {
    /// The first of `--data-dir` and `--data-dir/cifar-10-batches-bin` that holds all six
    /// batch files.
    ///
    /// # Errors
    /// [`DatasetError::NotFound`] saying where it looked, what was missing and how to fix it.
    fn locate(&self, options: &DataOptions) -> Result<PathBuf, DatasetError> {
        let wanted: Vec<&str> = TRAIN_BATCHES.iter().copied().chain([TEST_BATCH]).collect();
        let mut looked = Vec::new();
        if let Some(dir) = &options.data_dir {
            for dir in [dir.clone(), dir.join(ARCHIVE_FOLDER)] {
                if !dir.is_dir() {
                    looked.push(format!("{} (no such folder)", dir.display()));
                    continue;
                }
                let missing: Vec<&str> = wanted.iter().copied().filter(|name| !dir.join(name).is_file()).collect();
                if missing.is_empty() {
                    tracing::debug!(dataset = self.name(), dir = %dir.display(), "reading CIFAR-10 batches");
                    return Ok(dir);
                }
                looked.push(format!("{} (missing {})", dir.display(), missing.join(", ")));
            }
        }
        let place = if looked.is_empty() {
            "no --data-dir given".to_string()
        } else {
            format!("looked in {}", looked.join("; "))
        };
        Err(DatasetError::NotFound {
            name: self.name().to_string(),
            message: format!(
                "{place}; download the binary version (cifar-10-binary.tar.gz) from \
                 https://www.cs.toronto.edu/~kriz/cifar.html, extract it, and pass --data-dir DIR holding {}",
                wanted.join(", ")
            ),
        })
    }
}

/// Appends the records of the batch file at `path` to `samples`, pixels scaled by `1/255`.
///
/// # Errors
/// [`DatasetError::Io`] if it cannot be read; [`DatasetError::Format`] if it is empty, its
/// length is not a whole number of records, or a label is out of range.
fn read_batch(path: &Path, samples: &mut Samples) -> Result<(), DatasetError> {
    let bytes = fs::read(path).map_err(|source| DatasetError::Io { path: path.to_path_buf(), source })?;
    if bytes.is_empty() {
        return Err(DatasetError::format(path, format!("empty; expected records of {RECORD_LEN} bytes")));
    }
    let partial = bytes.len() % RECORD_LEN;
    if partial != 0 {
        return Err(DatasetError::format(
            path,
            format!(
                "truncated record: {} bytes is {} whole records and {partial} bytes over; expected a multiple of \
                 {RECORD_LEN} (1 label byte + {IMAGE_LEN} pixel bytes)",
                bytes.len(),
                bytes.len() / RECORD_LEN
            ),
        ));
    }
    let records = bytes.len() / RECORD_LEN;
    samples.images.reserve(records * IMAGE_LEN);
    samples.labels.reserve(records);
    for (i, record) in bytes.chunks_exact(RECORD_LEN).enumerate() {
        let (label, pixels) = (record[0], &record[1..]);
        if usize::from(label) >= CLASSES {
            return Err(DatasetError::format(
                path,
                format!("record {i}: label {label} is out of range; expected labels in 0..{CLASSES}"),
            ));
        }
        samples.labels.push(u32::from(label));
        samples.images.extend(pixels.iter().map(|&p| f32::from(p) / 255.0));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` records with labels `(first_label + i) % 10`; record `i`'s pixel `j` is `(i + j) % 256`.
    fn batch(n: usize, first_label: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n * RECORD_LEN);
        for i in 0..n {
            out.push(((first_label + i) % CLASSES) as u8);
            out.extend((0..IMAGE_LEN).map(|j| ((i + j) % 256) as u8));
        }
        out
    }

    /// Writes the five train batches (2 records each) and a test batch (3 records) in `dir`.
    fn write_batches(dir: &Path) {
        fs::create_dir_all(dir).expect("create dir");
        for (b, name) in TRAIN_BATCHES.iter().enumerate() {
            fs::write(dir.join(name), batch(2, 2 * b)).expect("write");
        }
        fs::write(dir.join(TEST_BATCH), batch(3, 7)).expect("write");
    }

    fn load_from(dir: &Path) -> Result<Dataset, DatasetError> {
        Cifar10.load(&DataOptions { data_dir: Some(dir.to_path_buf()) })
    }

    fn error_from(dir: &Path) -> String {
        match load_from(dir) {
            Ok(_) => panic!("cifar10 loaded from {} but should have failed", dir.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn cifar10_reads_generated_batches_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_batches(dir.path());
        let d = load_from(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((d.train.len(), d.test.len(), d.classes), (10, 3, 10));
        assert_eq!(d.input_shape(), [3, 32, 32]);
        assert_eq!(d.train.labels, (0..10).collect::<Vec<u32>>());
        assert_eq!(d.test.labels, vec![7, 8, 9]);
        // Record i's pixel j is (i + j) % 256, scaled by 1/255.
        assert_eq!(d.train.image(1)[0], 1.0 / 255.0);
        assert_eq!(d.train.image(0)[255], 1.0);
        assert_eq!(d.test.images.len(), 3 * IMAGE_LEN);
        assert!(d.train.images.iter().all(|&x| (0.0..=1.0).contains(&x)));
    }

    #[test]
    fn cifar10_accepts_the_archive_subfolder() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_batches(&dir.path().join(ARCHIVE_FOLDER));
        let d = load_from(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.train.len(), 10);
    }

    #[test]
    fn cifar10_truncated_record_names_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_batches(dir.path());
        let path = dir.path().join("data_batch_3.bin");
        let bytes = batch(2, 0);
        fs::write(&path, &bytes[..bytes.len() - 1]).expect("write");
        let err = error_from(dir.path());
        assert!(err.contains("data_batch_3.bin") && err.contains("truncated record"), "{err}");
        assert!(err.contains("1 whole records and 3072 bytes over"), "{err}");
    }

    #[test]
    fn cifar10_label_out_of_range_names_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_batches(dir.path());
        let mut bytes = batch(3, 0);
        bytes[2 * RECORD_LEN] = 10;
        fs::write(dir.path().join(TEST_BATCH), bytes).expect("write");
        let err = error_from(dir.path());
        assert!(err.contains("test_batch.bin") && err.contains("record 2: label 10 is out of range"), "{err}");
    }

    #[test]
    fn cifar10_empty_batch_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_batches(dir.path());
        fs::write(dir.path().join("data_batch_1.bin"), []).expect("write");
        let err = error_from(dir.path());
        assert!(err.contains("data_batch_1.bin") && err.contains("empty"), "{err}");
    }

    /// Bad input, everywhere: mutants of each batch file never panic the reader, and every
    /// refusal names the mutated file.
    #[test]
    fn property_mutated_cifar10_batches_never_panic_and_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut refused = 0;
        for (i, name) in TRAIN_BATCHES.iter().chain([&TEST_BATCH]).enumerate() {
            write_batches(dir.path());
            let path = dir.path().join(name);
            let valid = fs::read(&path).expect("read");
            let label = format!("CIFAR-10 ({name})");
            refused +=
                crate::mutation::check_reader(&label, &valid, &path, 400, i as u64, |_| load_from(dir.path())).refused;
        }
        assert!(refused > 1200, "{refused} of 2400 refused");
    }

    #[test]
    fn cifar10_not_found_says_where_it_looked_and_how_to_fix_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_batches(dir.path());
        fs::remove_file(dir.path().join("data_batch_5.bin")).expect("remove");
        let err = error_from(dir.path());
        assert!(err.contains(&dir.path().display().to_string()) && err.contains("missing data_batch_5.bin"), "{err}");
        assert!(err.contains("cifar-10-batches-bin (no such folder)") && err.contains("--data-dir"), "{err}");

        let err = Cifar10.load(&DataOptions::default()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("no --data-dir given") && err.contains("cifar-10-binary.tar.gz"), "{err}");
    }
}

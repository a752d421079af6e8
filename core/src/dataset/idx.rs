//! IDX files, the format of MNIST and its drop-in successors, and the sources that read them:
//! `mnist`, `fashion-mnist` and the generic `idx`.
//!
//! An IDX file opens with a big-endian magic number: two zero bytes, a type byte (`0x08`,
//! unsigned byte) and the number of dimensions; each dimension follows as a big-endian `u32`,
//! then the data, row-major. Images are `[n, rows, cols]` (magic `0x00000803`), labels `[n]`
//! (magic `0x00000801`). A folder holds four files under standard names, each raw or gzipped;
//! gzip is recognised from the content, not the name. When both `name` and `name.gz` are
//! present, the raw file is read and a warning names both.
//!
//! The reader is strict: a wrong magic number, a short or over-long file, image and label
//! counts that differ, or a label out of range are each a [`DatasetError::Format`] naming the
//! file, because any of them means the folder does not hold what the user thinks it does.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::base::{DataOptions, Dataset, DatasetEntry, DatasetError, DatasetSource, Samples};

/// Magic number of an IDX file of unsigned-byte images `[n, rows, cols]`.
const IMAGES_MAGIC: u32 = 0x0000_0803;

/// Magic number of an IDX file of unsigned-byte labels `[n]`.
const LABELS_MAGIC: u32 = 0x0000_0801;

/// First two bytes of a gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Standard names of the train images, train labels, test images and test labels (each may
/// also end in `.gz`).
const FILE_NAMES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// Where Debian's package `dataset-fashion-mnist` installs the official files (gzipped, under
/// the standard names).
const FASHION_MNIST_DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// What a named IDX dataset must hold; the generic `idx` source has none and reads the shape
/// and class count from the files.
struct Expected {
    /// Image height and width.
    rows: usize,
    cols: usize,
    /// Labels must lie in `0..classes`.
    classes: usize,
}

/// An IDX dataset: where it is looked for and what its files must hold.
struct IdxSource {
    name: &'static str,
    description: &'static str,
    /// Folders searched after `--data-dir`.
    default_dirs: &'static [&'static str],
    /// Whether `--data-dir/<name>` is searched after `--data-dir` itself.
    subfolder: bool,
    expected: Option<Expected>,
    /// How to get the files, said before "or pass --data-dir DIR ..." when they are not found.
    install_hint: &'static str,
}

static MNIST: IdxSource = IdxSource {
    name: "mnist",
    description: "MNIST handwritten digits, 28x28, IDX files from --data-dir (or its mnist/ subfolder)",
    default_dirs: &[],
    subfolder: true,
    expected: Some(Expected { rows: 28, cols: 28, classes: 10 }),
    install_hint: "",
};

static FASHION_MNIST: IdxSource = IdxSource {
    name: "fashion-mnist",
    description: "Fashion-MNIST, 28x28, IDX files from --data-dir or /usr/share/datasets/fashion-mnist (Debian)",
    default_dirs: &[FASHION_MNIST_DEBIAN_DIR],
    subfolder: true,
    expected: Some(Expected { rows: 28, cols: 28, classes: 10 }),
    install_hint: "install it with `apt-get install -y dataset-fashion-mnist`, or ",
};

static GENERIC_IDX: IdxSource = IdxSource {
    name: "idx",
    description: "any MNIST-format IDX folder (--data-dir); image size and classes (max label + 1) read from the files, \
                  28x28 and 10 listed as the usual case",
    default_dirs: &[],
    subfolder: false,
    expected: None,
    install_hint: "",
};

inventory::submit! { DatasetEntry(&MNIST) }
inventory::submit! { DatasetEntry(&FASHION_MNIST) }
inventory::submit! { DatasetEntry(&GENERIC_IDX) }

impl DatasetSource for IdxSource {
    fn name(&self) -> &'static str {
        self.name
    }

    fn description(&self) -> &'static str {
        self.description
    }

    /// For the generic `idx` source the true shape is known only after loading
    /// ([`Dataset::input_shape`]); the MNIST shape is given as the usual case.
    fn input_shape(&self) -> [usize; 3] {
        self.expected.as_ref().map_or([1, 28, 28], |e| [1, e.rows, e.cols])
    }

    /// For the generic `idx` source the true count is known only after loading
    /// ([`Dataset::classes`]); 10 is given as the usual case.
    fn classes(&self) -> usize {
        self.expected.as_ref().map_or(10, |e| e.classes)
    }

    fn load(&self, options: &DataOptions) -> Result<Dataset, DatasetError> {
        let [train_images, train_labels, test_images, test_labels] = self.locate(options)?;
        let train = read_split(&train_images, &train_labels)?;
        let test = read_split(&test_images, &test_labels)?;
        if (test.rows, test.cols) != (train.rows, train.cols) {
            return Err(DatasetError::format(
                &test_images,
                format!(
                    "images are {}x{} but the train images ({}) are {}x{}; expected one size for both splits",
                    test.rows,
                    test.cols,
                    train_images.display(),
                    train.rows,
                    train.cols
                ),
            ));
        }
        let classes = match &self.expected {
            Some(expected) => {
                for (split, images, labels) in
                    [(&train, &train_images, &train_labels), (&test, &test_images, &test_labels)]
                {
                    split.check(expected, images, labels)?;
                }
                expected.classes
            }
            None => {
                let classes = train.labels.iter().chain(&test.labels).max().map_or(0, |&l| usize::from(l) + 1);
                if classes < 2 {
                    return Err(DatasetError::format(
                        &train_labels,
                        format!(
                            "the labels here and in {} hold only class 0; expected at least two classes",
                            test_labels.display()
                        ),
                    ));
                }
                classes
            }
        };
        Ok(Dataset {
            name: self.name.to_string(),
            classes,
            train: train.into_samples(),
            test: test.into_samples(),
            normalisation: "x / 255".to_string(),
        })
    }
}

impl IdxSource {
    /// The four files of the first folder that holds all of them: `--data-dir`, its
    /// `<name>` subfolder, then the default folders.
    ///
    /// # Errors
    /// [`DatasetError::NotFound`] listing each folder and what it lacked, and how to fix it.
    fn locate(&self, options: &DataOptions) -> Result<[PathBuf; 4], DatasetError> {
        let mut candidates = Vec::new();
        if let Some(dir) = &options.data_dir {
            candidates.push(dir.clone());
            let sub = dir.join(self.name);
            if self.subfolder && sub.is_dir() {
                candidates.push(sub);
            }
        }
        candidates.extend(self.default_dirs.iter().map(PathBuf::from));

        let mut looked = Vec::new();
        for dir in &candidates {
            if !dir.is_dir() {
                looked.push(format!("{} (no such folder)", dir.display()));
                continue;
            }
            let found = FILE_NAMES.map(|name| find_file(dir, name));
            if let [Some(a), Some(b), Some(c), Some(d)] = found.clone() {
                tracing::debug!(dataset = self.name, dir = %dir.display(), "reading IDX files");
                return Ok([a, b, c, d].map(Found::read_path));
            }
            let missing: Vec<&str> =
                FILE_NAMES.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(name, _)| *name).collect();
            looked.push(format!("{} (missing {})", dir.display(), missing.join(", ")));
        }

        let wanted = FILE_NAMES.map(|n| format!("{n}[.gz]")).join(", ");
        let place = if looked.is_empty() {
            "no --data-dir given".to_string()
        } else {
            format!("looked in {}", looked.join("; "))
        };
        Err(DatasetError::NotFound {
            name: self.name.to_string(),
            message: format!("{place}; {}pass --data-dir DIR holding {wanted}", self.install_hint),
        })
    }
}

/// `dir/name` if it is a file (noting a `dir/name.gz` beside it, which it shadows), else
/// `dir/name.gz` if that is.
fn find_file(dir: &Path, name: &str) -> Option<Found> {
    let (raw, gz) = (dir.join(name), dir.join(format!("{name}.gz")));
    match (raw.is_file(), gz.is_file()) {
        (true, gz_too) => Some(Found { path: raw, ignored: gz_too.then_some(gz) }),
        (false, true) => Some(Found { path: gz, ignored: None }),
        (false, false) => None,
    }
}

/// A file found under one of the standard names.
#[derive(Debug, Clone)]
struct Found {
    /// The file that is read.
    path: PathBuf,
    /// A `.gz` of the same name that is not read, because the raw file wins.
    ignored: Option<PathBuf>,
}

impl Found {
    /// The path, after warning when a `.gz` beside it is ignored: the two may differ (an old
    /// extraction beside a new download) and the user should know which one was read.
    fn read_path(self) -> PathBuf {
        if let Some(gz) = &self.ignored {
            tracing::warn!(
                "both {} and {} exist; reading {} and ignoring the .gz (delete one to silence this)",
                self.path.display(),
                gz.display(),
                self.path.display()
            );
        }
        self.path
    }
}

/// One split as stored: raw bytes, checked against each other but not yet against a
/// dataset's expectations.
struct IdxSplit {
    rows: usize,
    cols: usize,
    pixels: Vec<u8>,
    labels: Vec<u8>,
}

impl IdxSplit {
    /// Checks the image size and the label range against `expected`.
    ///
    /// # Errors
    /// [`DatasetError::Format`] naming `images_path` or `labels_path`.
    fn check(&self, expected: &Expected, images_path: &Path, labels_path: &Path) -> Result<(), DatasetError> {
        if (self.rows, self.cols) != (expected.rows, expected.cols) {
            return Err(DatasetError::format(
                images_path,
                format!("images are {}x{}, expected {}x{}", self.rows, self.cols, expected.rows, expected.cols),
            ));
        }
        if let Some((i, &label)) = self.labels.iter().enumerate().find(|(_, l)| usize::from(**l) >= expected.classes) {
            return Err(DatasetError::format(
                labels_path,
                format!("label {label} at index {i} is out of range; expected labels in 0..{}", expected.classes),
            ));
        }
        Ok(())
    }

    /// The split as normalised samples (`x / 255`), shape `[1, rows, cols]`.
    fn into_samples(self) -> Samples {
        Samples {
            shape: [1, self.rows, self.cols],
            images: self.pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
            labels: self.labels.into_iter().map(u32::from).collect(),
        }
    }
}

/// Reads an images file and its labels file and checks that they hold as many items.
///
/// # Errors
/// Any error of [`read_idx`], or [`DatasetError::Format`] on a count mismatch or an empty
/// file.
fn read_split(images_path: &Path, labels_path: &Path) -> Result<IdxSplit, DatasetError> {
    let ([count, rows, cols], pixels) = read_idx::<3>(images_path)?;
    if count == 0 {
        return Err(DatasetError::format(images_path, "holds no images; expected at least one"));
    }
    let ([label_count], labels) = read_idx::<1>(labels_path)?;
    if label_count != count {
        return Err(DatasetError::format(
            labels_path,
            format!(
                "count mismatch: {label_count} labels, but {} holds {count} images; expected one label per image",
                images_path.display()
            ),
        ));
    }
    Ok(IdxSplit { rows, cols, pixels, labels })
}

/// The most data bytes an IDX file may declare: far above any dataset this reads (EMNIST's
/// largest split is 0.55 GB), and a bound on what a malicious or broken file, a gzip bomb
/// among them, can make the reader allocate.
pub const MAX_IDX_DATA_BYTES: usize = 1 << 30;

/// Reads an IDX file of unsigned bytes with `N` dimensions (magic `0x000008NN`), gzipped or
/// not. Returns the dimensions and the data. A gzip stream is decompressed only as far as
/// the header declares (and one byte more, to detect trailing data), so a small file that
/// inflates without end cannot exhaust memory.
///
/// # Errors
/// [`DatasetError::Io`] if it cannot be read; [`DatasetError::Format`] on bad gzip data, a
/// wrong magic number, a declared size over [`MAX_IDX_DATA_BYTES`], or data shorter or
/// longer than the header declares.
fn read_idx<const N: usize>(path: &Path) -> Result<([usize; N], Vec<u8>), DatasetError> {
    let bytes = fs::read(path).map_err(|source| DatasetError::Io { path: path.to_path_buf(), source })?;
    let gzipped = bytes.starts_with(&GZIP_MAGIC);
    let mut stream: Box<dyn Read + '_> =
        if gzipped { Box::new(GzDecoder::new(bytes.as_slice())) } else { Box::new(bytes.as_slice()) };
    let corrupt = |e: std::io::Error| DatasetError::format(path, format!("gzip data is corrupt or truncated: {e}"));
    let magic = 0x0000_0800 | N as u32;
    let header_len = 4 * (1 + N);
    let kind = match magic {
        IMAGES_MAGIC => "IDX images, unsigned bytes [n, rows, cols]",
        LABELS_MAGIC => "IDX labels, unsigned bytes [n]",
        _ => "IDX, unsigned bytes",
    };
    let mut header = Vec::with_capacity(header_len);
    stream.by_ref().take(header_len as u64).read_to_end(&mut header).map_err(corrupt)?;

    let found = be_u32(&header, 0).ok_or_else(|| {
        DatasetError::format(
            path,
            format!("truncated: {} bytes, expected an IDX header of {header_len} bytes", header.len()),
        )
    })?;
    if found != magic {
        return Err(DatasetError::format(
            path,
            format!("wrong magic number 0x{found:08x}, expected 0x{magic:08x} ({kind}); is this the right file?"),
        ));
    }
    let mut dims = [0usize; N];
    for (d, dim) in dims.iter_mut().enumerate() {
        *dim = be_u32(&header, 4 * (1 + d)).ok_or_else(|| {
            DatasetError::format(
                path,
                format!("truncated header: {} bytes, expected {header_len} ({kind})", header.len()),
            )
        })? as usize;
    }
    let data_len = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_IDX_DATA_BYTES)
        .ok_or_else(|| {
            DatasetError::format(
                path,
                format!(
                    "the header declares {dims:?}, more than the {MAX_IDX_DATA_BYTES} data bytes this reader accepts"
                ),
            )
        })?;
    let mut data = Vec::with_capacity(if gzipped { data_len.min(bytes.len().saturating_mul(8)) } else { data_len });
    stream.take(data_len as u64 + 1).read_to_end(&mut data).map_err(corrupt)?;
    let found_len = data.len();
    if found_len < data_len {
        return Err(DatasetError::format(
            path,
            format!("truncated: the header declares {dims:?}, expected {data_len} data bytes, found {found_len}"),
        ));
    }
    if found_len > data_len {
        // Count what follows, without holding it: a raw file's rest is known, a gzip
        // stream's is not (and may be endless), so it is named only as "more".
        let extra = if gzipped { "more".to_string() } else { (bytes.len() - header_len - data_len).to_string() };
        return Err(DatasetError::format(
            path,
            format!("{extra} unexpected bytes after the {data_len} data bytes the header declares ({dims:?})"),
        ));
    }
    Ok((dims, data))
}

/// The big-endian `u32` at `offset`, if the bytes reach that far.
fn be_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let word = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    /// An IDX file: the magic number, the dimensions, then `data`.
    fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    /// `n` images of `rows × cols` with pixel values counting up, and labels `i % classes`.
    fn images_and_labels(n: u32, rows: u32, cols: u32, classes: u8) -> (Vec<u8>, Vec<u8>) {
        let pixels: Vec<u8> = (0..n * rows * cols).map(|i| (i % 256) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % u32::from(classes)) as u8).collect();
        (idx_bytes(IMAGES_MAGIC, &[n, rows, cols], &pixels), idx_bytes(LABELS_MAGIC, &[n], &labels))
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(bytes).and_then(|()| enc.finish()).unwrap_or_default()
    }

    /// A temp folder with four well-formed raw IDX files: 6 train and 4 test 28 × 28 images.
    fn valid_folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let (train_images, train_labels) = images_and_labels(6, 28, 28, 10);
        let (test_images, test_labels) = images_and_labels(4, 28, 28, 10);
        for (name, bytes) in FILE_NAMES.iter().zip([train_images, train_labels, test_images, test_labels]) {
            fs::write(dir.path().join(name), bytes).expect("write");
        }
        dir
    }

    fn options(dir: &Path) -> DataOptions {
        DataOptions { data_dir: Some(dir.to_path_buf()) }
    }

    /// The error message of loading `source` from `dir`; panics if it loads.
    fn load_error(source: &IdxSource, dir: &Path) -> String {
        match source.load(&options(dir)) {
            Ok(_) => panic!("{} loaded from {} but should have failed", source.name, dir.display()),
            Err(e) => e.to_string(),
        }
    }

    fn mnist_10k() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/mnist-10k")
    }

    #[test]
    fn mnist_10k_loads_8000_train_2000_test() {
        let dir = mnist_10k();
        assert!(dir.is_dir(), "{} is missing: it is part of the repository", dir.display());
        let d = MNIST.load(&options(&dir)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((d.train.len(), d.test.len()), (8_000, 2_000));
        assert_eq!(d.input_shape(), [1, 28, 28]);
        assert_eq!(d.classes, 10);
        assert_eq!(d.train.images.len(), 8_000 * 784);
        for s in [&d.train, &d.test] {
            assert!(s.labels.iter().all(|&l| l < 10));
            assert!(s.images.iter().all(|&x| (0.0..=1.0).contains(&x)));
        }
        // The generic source reads the same folder and infers the same classes.
        let g = super::super::load("idx", &options(&dir)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((g.classes, g.train.len(), g.input_shape()), (10, 8_000, [1, 28, 28]));
    }

    #[test]
    #[ignore = "needs dataset-fashion-mnist (apt-get install -y dataset-fashion-mnist)"]
    fn fashion_mnist_loads_60000_train_10000_test() {
        let d = super::super::load("fashion-mnist", &DataOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((d.train.len(), d.test.len()), (60_000, 10_000));
        assert_eq!((d.input_shape(), d.classes), ([1, 28, 28], 10));
    }

    #[test]
    fn reads_raw_and_gzipped_files_and_normalises() {
        let dir = valid_folder();
        // Gzip one file, keeping the standard name plus `.gz`.
        let raw = dir.path().join(FILE_NAMES[2]);
        let bytes = fs::read(&raw).expect("read");
        fs::write(dir.path().join(format!("{}.gz", FILE_NAMES[2])), gzip(&bytes)).expect("write");
        fs::remove_file(&raw).expect("remove");

        let d = MNIST.load(&options(dir.path())).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((d.train.len(), d.test.len()), (6, 4));
        assert_eq!(d.train.labels, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(d.test.images[1], 1.0 / 255.0);
        assert_eq!(d.test.images[255], 1.0);
        assert_eq!(d.normalisation, "x / 255");
    }

    #[test]
    fn generic_infers_shape_and_classes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (a, b) = images_and_labels(5, 3, 4, 27);
        let (c, d) = images_and_labels(30, 3, 4, 27);
        for (name, bytes) in FILE_NAMES.iter().zip([a, b, c, d]) {
            fs::write(dir.path().join(name), bytes).expect("write");
        }
        let g = GENERIC_IDX.load(&options(dir.path())).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((g.classes, g.input_shape(), g.test.len()), (27, [1, 3, 4], 30));
        // The named sources insist on 28 × 28.
        let err = load_error(&MNIST, dir.path());
        assert!(err.contains("train-images-idx3-ubyte") && err.contains("expected 28x28"), "{err}");
    }

    #[test]
    fn a_gzip_bomb_or_a_huge_declared_size_is_refused_without_inflating_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 2 images of 4x4 declared, then 32 MiB of zeros: about 32 KiB gzipped.
        let mut bomb = idx_bytes(IMAGES_MAGIC, &[2, 4, 4], &[7; 32]);
        bomb.resize(bomb.len() + (32 << 20), 0);
        let path = dir.path().join("bomb.gz");
        fs::write(&path, gzip(&bomb)).expect("write");
        assert!(fs::metadata(&path).expect("meta").len() < 1 << 20);
        let err = read_idx::<3>(&path).unwrap_err().to_string();
        assert!(err.contains("bomb.gz") && err.contains("more unexpected bytes after the 32 data bytes"), "{err}");
        // The same data raw says how many bytes follow.
        fs::write(&path, idx_bytes(IMAGES_MAGIC, &[2, 4, 4], &[7; 40])).expect("write");
        let err = read_idx::<3>(&path).unwrap_err().to_string();
        assert!(err.contains("8 unexpected bytes after the 32 data bytes"), "{err}");
        // A header that declares more than the cap is refused before any data is read.
        fs::write(&path, gzip(&idx_bytes(IMAGES_MAGIC, &[70_000, 200, 200], &[1; 10]))).expect("write");
        let err = read_idx::<3>(&path).unwrap_err().to_string();
        assert!(err.contains("[70000, 200, 200]") && err.contains("1073741824 data bytes"), "{err}");
        // A valid gzipped file still reads.
        fs::write(&path, gzip(&idx_bytes(IMAGES_MAGIC, &[2, 4, 4], &[7; 32]))).expect("write");
        assert_eq!(read_idx::<3>(&path).expect("valid"), ([2, 4, 4], vec![7; 32]));
    }

    #[test]
    fn wrong_magic_names_the_file() {
        let dir = valid_folder();
        // A labels file where the images file belongs.
        let labels = fs::read(dir.path().join(FILE_NAMES[1])).expect("read");
        fs::write(dir.path().join(FILE_NAMES[0]), labels).expect("write");
        let err = load_error(&MNIST, dir.path());
        assert!(err.contains("train-images-idx3-ubyte") && err.contains("wrong magic number 0x00000801"), "{err}");
        assert!(err.contains("expected 0x00000803"), "{err}");
    }

    #[test]
    fn truncated_file_names_the_file() {
        let dir = valid_folder();
        let path = dir.path().join(FILE_NAMES[2]);
        let bytes = fs::read(&path).expect("read");
        fs::write(&path, &bytes[..bytes.len() - 100]).expect("write");
        let err = load_error(&MNIST, dir.path());
        assert!(err.contains("t10k-images-idx3-ubyte") && err.contains("truncated"), "{err}");

        // Cut inside the header, and a gzip stream cut short.
        fs::write(&path, &bytes[..6]).expect("write");
        let err = load_error(&MNIST, dir.path());
        assert!(err.contains("t10k-images-idx3-ubyte") && err.contains("truncated header"), "{err}");
        fs::remove_file(&path).expect("remove");
        let gz = gzip(&bytes);
        fs::write(dir.path().join(format!("{}.gz", FILE_NAMES[2])), &gz[..gz.len() / 2]).expect("write");
        let err = load_error(&MNIST, dir.path());
        assert!(err.contains("t10k-images-idx3-ubyte.gz") && err.contains("truncated"), "{err}");
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let dir = valid_folder();
        let path = dir.path().join(FILE_NAMES[3]);
        let mut bytes = fs::read(&path).expect("read");
        bytes.push(0);
        fs::write(&path, bytes).expect("write");
        let err = load_error(&MNIST, dir.path());
        assert!(err.contains("t10k-labels-idx1-ubyte") && err.contains("1 unexpected bytes"), "{err}");
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let dir = valid_folder();
        let (_, labels) = images_and_labels(5, 28, 28, 10);
        fs::write(dir.path().join(FILE_NAMES[1]), labels).expect("write");
        let err = load_error(&MNIST, dir.path());
        assert!(err.contains("train-labels-idx1-ubyte") && err.contains("train-images-idx3-ubyte"), "{err}");
        assert!(err.contains("count mismatch: 5 labels") && err.contains("6 images"), "{err}");
    }

    #[test]
    fn label_out_of_range_names_the_file() {
        let dir = valid_folder();
        fs::write(dir.path().join(FILE_NAMES[3]), idx_bytes(LABELS_MAGIC, &[4], &[0, 1, 10, 2])).expect("write");
        let err = load_error(&MNIST, dir.path());
        assert!(err.contains("t10k-labels-idx1-ubyte") && err.contains("label 10 at index 2 is out of range"), "{err}");
        assert!(err.contains("expected labels in 0..10"), "{err}");
    }

    #[test]
    fn not_found_says_where_it_looked_and_how_to_fix_it() {
        let dir = valid_folder();
        fs::remove_file(dir.path().join(FILE_NAMES[1])).expect("remove");
        let err = load_error(&MNIST, dir.path());
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(err.contains("missing train-labels-idx1-ubyte") && err.contains("--data-dir"), "{err}");

        let err = match MNIST.load(&DataOptions::default()) {
            Ok(_) => panic!("mnist loaded without --data-dir"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("no --data-dir given") && err.contains("t10k-images-idx3-ubyte[.gz]"), "{err}");

        // Fashion-MNIST names the Debian folder and package, whether or not it is installed.
        let err = match FASHION_MNIST.locate(&options(dir.path())) {
            Ok(_) => return,
            Err(e) => e.to_string(),
        };
        assert!(err.contains(FASHION_MNIST_DEBIAN_DIR) && err.contains("apt-get install -y dataset-fashion-mnist"));
    }

    #[test]
    fn raw_and_gzipped_copies_warn_once_naming_both_and_read_the_raw_one() {
        let dir = valid_folder();
        // The .gz holds other labels, so the test can tell which file was read.
        let raw = dir.path().join(FILE_NAMES[1]);
        let gz = dir.path().join(format!("{}.gz", FILE_NAMES[1]));
        fs::write(&gz, gzip(&idx_bytes(LABELS_MAGIC, &[6], &[9; 6]))).expect("write");
        let log = CapturedLog::default();
        let subscriber = tracing_subscriber::fmt().with_writer(log.clone()).with_ansi(false).finish();
        let d = tracing::subscriber::with_default(subscriber, || MNIST.load(&options(dir.path())))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.train.labels, vec![0, 1, 2, 3, 4, 5], "the raw file is read");
        let log = log.text();
        assert_eq!(log.matches("WARN").count(), 1, "{log}");
        let (raw, gz) = (raw.display().to_string(), gz.display().to_string());
        assert!(log.contains(&format!("both {raw} and {gz} exist; reading {raw}")), "{log}");
    }

    /// Log output captured in memory.
    #[derive(Clone, Default)]
    struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl CapturedLog {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("log lock")).into_owned()
        }
    }

    impl Write for CapturedLog {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl tracing_subscriber::fmt::MakeWriter<'_> for CapturedLog {
        type Writer = CapturedLog;

        fn make_writer(&self) -> CapturedLog {
            self.clone()
        }
    }

    #[test]
    fn labels_of_a_single_class_name_the_label_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (a, b) = images_and_labels(5, 3, 4, 1);
        let (c, d) = images_and_labels(2, 3, 4, 1);
        for (name, bytes) in FILE_NAMES.iter().zip([a, b, c, d]) {
            fs::write(dir.path().join(name), bytes).expect("write");
        }
        let err = load_error(&GENERIC_IDX, dir.path());
        assert!(err.contains("train-labels-idx1-ubyte") && err.contains("t10k-labels-idx1-ubyte"), "{err}");
        assert!(err.contains("only class 0") && err.contains("at least two classes"), "{err}");
    }

    /// Bad input, everywhere: mutants of each of the four files never panic the named and the
    /// generic sources, raw or gzipped, and every refusal names the mutated file.
    #[test]
    fn property_mutated_idx_files_never_panic_and_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (train_images, train_labels) = images_and_labels(3, 28, 28, 10);
        let (test_images, test_labels) = images_and_labels(2, 28, 28, 10);
        let files = [train_images, train_labels, test_images, test_labels];
        let write_all = || {
            for (name, bytes) in FILE_NAMES.iter().zip(&files) {
                fs::write(dir.path().join(name), bytes).expect("write");
            }
        };
        let mut refused = 0;
        for (i, (name, valid)) in FILE_NAMES.iter().zip(&files).enumerate() {
            write_all();
            let path = dir.path().join(name);
            let seed = i as u64;
            for (source, cases) in [(&MNIST, 500), (&GENERIC_IDX, 250)] {
                let label = format!("IDX {} ({name})", source.name);
                let load = |_: &Path| source.load(&options(dir.path()));
                refused += crate::mutation::check_reader(&label, valid, &path, cases, seed, load).refused;
            }
        }
        // A gzipped file: mutants are mostly corrupt streams, and a few decompress.
        write_all();
        fs::remove_file(dir.path().join(FILE_NAMES[1])).expect("remove");
        let gz = dir.path().join(format!("{}.gz", FILE_NAMES[1]));
        let load = |_: &Path| MNIST.load(&options(dir.path()));
        refused +=
            crate::mutation::check_reader("IDX mnist (gzipped labels)", &gzip(&files[1]), &gz, 250, 9, load).refused;
        assert!(refused > 2000, "{refused} of 3250 refused");
    }

    #[test]
    fn searches_the_named_subfolder() {
        let parent = tempfile::tempdir().expect("temp dir");
        let dir = valid_folder();
        fs::rename(dir.path(), parent.path().join("mnist")).expect("rename");
        let d = MNIST.load(&options(parent.path())).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.train.len(), 6);
    }
}

//! `digits`: the UCI optical digits, embedded in the crate so that hyperprune runs with no
//! set-up and no network.
//!
//! The data is the test set of the UCI "Optical Recognition of Handwritten Digits" data set
//! (Alpaydin & Kaynak, 1998; CC BY 4.0), as shipped by scikit-learn: 1,797 rows of 65
//! integers, 64 pixels in `0..=16` then the label. UCI gives no train/test split for these
//! rows, so one is fixed here by a seeded shuffle.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::base::{DataOptions, Dataset, DatasetEntry, DatasetError, DatasetSource, Samples};

/// The gzipped CSV, embedded at build time.
const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// How the embedded file is named in errors.
const EMBEDDED_PATH: &str = "hyperprune-core/data/digits.csv.gz (embedded)";

/// Seed of the shuffle that splits the rows into train and test. Changing it changes every
/// result ever reported on `digits`, so it stays fixed.
const SPLIT_SEED: u64 = 1998;

/// Rows in the embedded file.
const ROWS: usize = 1_797;

/// Rows held out for the test split (a quarter, rounded); the other 1,347 train.
const TEST_ROWS: usize = 450;

/// Pixels per image (8 × 8).
const PIXELS: usize = 64;

/// Largest pixel value (the UCI images count set bits in 4 × 4 blocks).
const PIXEL_MAX: u32 = 16;

/// Number of classes.
const CLASSES: usize = 10;

/// The embedded UCI digits.
struct Digits;

/// The registered instance.
static DIGITS: Digits = Digits;

inventory::submit! { DatasetEntry(&DIGITS) }

impl DatasetSource for Digits {
    fn name(&self) -> &'static str {
        "digits"
    }

    fn description(&self) -> &'static str {
        "UCI optical digits, 8x8, 1,347 train / 450 test, embedded (no set-up)"
    }

    fn input_shape(&self) -> [usize; 3] {
        [1, 8, 8]
    }

    fn classes(&self) -> usize {
        CLASSES
    }

    fn load(&self, _options: &DataOptions) -> Result<Dataset, DatasetError> {
        let path = Path::new(EMBEDDED_PATH);
        let mut text = String::new();
        GzDecoder::new(DIGITS_CSV_GZ)
            .read_to_string(&mut text)
            .map_err(|e| DatasetError::format(path, format!("embedded gzip data is unreadable: {e}")))?;
        let all = parse_csv(path, &text)?;
        if all.len() != ROWS {
            return Err(DatasetError::format(path, format!("expected {ROWS} rows, found {}", all.len())));
        }
        let (train, test) = split(&all);
        Ok(Dataset {
            name: self.name().to_string(),
            classes: CLASSES,
            train,
            test,
            normalisation: format!("x / {PIXEL_MAX}"),
        })
    }
}

/// Parses the CSV: one image a line, 64 pixels in `0..=16` then a label in `0..10`, pixels
/// scaled by `1/16`. Blank lines are skipped.
fn parse_csv(path: &Path, text: &str) -> Result<Samples, DatasetError> {
    let mut images = Vec::with_capacity(ROWS * PIXELS);
    let mut labels = Vec::with_capacity(ROWS);
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let line_no = i + 1;
        let values = line
            .split(',')
            .map(|v| v.trim().parse::<u32>())
            .collect::<Result<Vec<u32>, _>>()
            .map_err(|e| DatasetError::format(path, format!("line {line_no}: expected integers, {e}")))?;
        if values.len() != PIXELS + 1 {
            return Err(DatasetError::format(
                path,
                format!(
                    "line {line_no}: expected {} values (64 pixels and a label), found {}",
                    PIXELS + 1,
                    values.len()
                ),
            ));
        }
        let (pixels, label) = values.split_at(PIXELS);
        if let Some(p) = pixels.iter().find(|&&p| p > PIXEL_MAX) {
            return Err(DatasetError::format(path, format!("line {line_no}: pixel {p} out of range 0..={PIXEL_MAX}")));
        }
        let label = label[0];
        if label as usize >= CLASSES {
            return Err(DatasetError::format(path, format!("line {line_no}: label {label} out of range 0..{CLASSES}")));
        }
        images.extend(pixels.iter().map(|&p| p as f32 / PIXEL_MAX as f32));
        labels.push(label);
    }
    Ok(Samples { shape: [1, 8, 8], images, labels })
}

/// Splits `all` by a shuffle seeded with [`SPLIT_SEED`]: the last [`TEST_ROWS`] shuffled rows
/// test, the rest train. Both splits keep the shuffled order, so a prefix is a random sample.
fn split(all: &Samples) -> (Samples, Samples) {
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(SPLIT_SEED));
    let (train, test) = order.split_at(all.len().saturating_sub(TEST_ROWS));
    (all.subset(train), all.subset(test))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_digits() -> Dataset {
        match Digits.load(&DataOptions::default()) {
            Ok(d) => d,
            Err(e) => panic!("digits failed to load: {e}"),
        }
    }

    #[test]
    fn digits_loads_1347_train_450_test() {
        let d = load_digits();
        assert_eq!(d.name, "digits");
        assert_eq!(d.classes, 10);
        assert_eq!(d.train.len(), 1_347);
        assert_eq!(d.test.len(), 450);
        assert_eq!(d.input_shape(), [1, 8, 8]);
        assert_eq!(d.test.shape, [1, 8, 8]);
        assert_eq!(d.train.images.len(), 1_347 * 64);
        assert_eq!(d.test.images.len(), 450 * 64);
    }

    #[test]
    fn digits_labels_and_pixels_in_range() {
        let d = load_digits();
        for s in [&d.train, &d.test] {
            assert!(s.labels.iter().all(|&l| l < 10));
            assert!(s.images.iter().all(|&x| (0.0..=1.0).contains(&x)));
        }
        // Every class is present in both splits (a shuffle of ~180 per class makes this sure).
        for c in 0..10 {
            assert!(d.train.labels.contains(&c) && d.test.labels.contains(&c), "class {c} missing");
        }
        // The maximum pixel value 16 occurs, so it maps to exactly 1.
        assert!(d.train.images.contains(&1.0));
    }

    #[test]
    fn digits_split_is_identical_on_two_loads() {
        let (a, b) = (load_digits(), load_digits());
        assert_eq!(a.train, b.train);
        assert_eq!(a.test, b.test);
    }

    #[test]
    fn digits_is_registered() {
        let d = match super::super::load("digits", &DataOptions::default()) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(d.train.len() + d.test.len(), 1_797);
    }

    #[test]
    fn digits_csv_errors_name_the_line_and_never_panic() {
        let path = Path::new("bad.csv");
        let row = |label: &str| format!("{}{label}", "0,".repeat(64));
        let cases = [
            (row("10"), "label 10 out of range"),
            (row("x"), "expected integers"),
            ("1,2,3".to_string(), "expected 65 values"),
            (format!("17,{}", row("1").split_once(',').map_or("", |(_, r)| r)), "pixel 17 out of range"),
            (row("-1"), "expected integers"),
        ];
        for (text, want) in cases {
            let text = format!("{}\n{text}\n", row("3"));
            let err = parse_csv(path, &text).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(want) && err.contains("line 2") && err.contains("bad.csv"), "{err:?} lacks {want:?}");
        }
        assert_eq!(parse_csv(path, &format!("{}\n\n", row("3"))).map(|s| s.labels).ok(), Some(vec![3]));
    }

    /// Bad input, everywhere: the embedded file is read from memory, but its parser gets the
    /// same treatment as the file readers: mutants of a few rows never panic it, and every
    /// refusal names the file.
    #[test]
    fn property_mutated_digits_csv_never_panics_and_errors_name_the_file() {
        let mut text = String::new();
        GzDecoder::new(DIGITS_CSV_GZ).read_to_string(&mut text).expect("embedded gzip");
        let valid: String = text.lines().take(4).map(|l| format!("{l}\n")).collect();
        let dir = tempfile::tempdir().expect("temp dir");
        let parse = |path: &Path| {
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            parse_csv(path, &String::from_utf8_lossy(&bytes)).map_err(|e| e.to_string())
        };
        let tally = crate::mutation::check_reader(
            "digits CSV",
            valid.as_bytes(),
            &dir.path().join("digits.csv"),
            2000,
            1,
            parse,
        );
        assert!(tally.refused > 1000, "{tally:?}");
    }
}

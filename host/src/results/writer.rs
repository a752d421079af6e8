//! Appending to `results.jsonl`, one flushed line per row.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::ResultRow;

/// Appends rows to a results file, one flushed line at a time.
pub struct ResultsWriter {
    path: PathBuf,
    file: std::fs::File,
    keys: HashSet<String>,
}

impl ResultsWriter {
    /// Opens `path` for appending; `existing` rows are remembered so they are not repeated.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn open(path: &Path, existing: &[ResultRow]) -> anyhow::Result<ResultsWriter> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(ResultsWriter { path: path.to_path_buf(), file, keys: existing.iter().map(ResultRow::key).collect() })
    }

    /// Whether a row with this key is already written.
    pub fn has(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// Appends one row and flushes it to disk.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn append(&mut self, row: &ResultRow) -> anyhow::Result<()> {
        let mut line = serde_json::to_string(row)?;
        line.push('\n');
        self.file.write_all(line.as_bytes()).with_context(|| format!("appending to {}", self.path.display()))?;
        self.file.flush()?;
        self.keys.insert(row.key());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::table::tests::row;
    use crate::results::{RESULTS_FILE, read_rows};

    #[test]
    fn every_float_reads_back_bit_for_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RESULTS_FILE);
        let mut written = Vec::new();
        let mut writer = ResultsWriter::open(&path, &[]).unwrap();
        for i in 0..500 {
            let mut r = row(&format!("{i:04}"), "magnitude", 0.5, Some(0.5), 0.1);
            // Any finite double, including ones far from "nice" decimals.
            let any = |rng: &mut rand_chacha::ChaCha8Rng| loop {
                let x = f64::from_bits(rng.random::<u64>());
                if x.is_finite() {
                    return x;
                }
            };
            // Within each field's meaning (the reader checks it), with every mantissa bit used.
            r.requested_sparsity = rng.random();
            r.compression = 1.0 / (1.0 - r.requested_sparsity);
            r.dense_accuracy = rng.random();
            r.dense_loss = any(&mut rng).abs();
            r.pruned_accuracy = Some(rng.random());
            r.retention = r.pruned_accuracy.map(|p| p / r.dense_accuracy);
            r.prune_seconds = Some(rng.random::<f64>() / 3.0);
            r.achieved_sparsity = Some(rng.random());
            writer.append(&r).unwrap();
            written.push(r);
        }
        let back = read_rows(&path).unwrap();
        let bits = |r: &ResultRow| {
            [r.requested_sparsity, r.dense_accuracy, r.dense_loss, r.retention.unwrap(), r.prune_seconds.unwrap()]
                .map(f64::to_bits)
        };
        assert_eq!(back.len(), written.len());
        for (a, b) in written.iter().zip(&back) {
            assert_eq!(bits(a), bits(b));
            assert_eq!(a.achieved_sparsity.map(f64::to_bits), b.achieved_sparsity.map(f64::to_bits));
        }
    }
}

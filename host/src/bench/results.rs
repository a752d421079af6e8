//! `results.jsonl`: read what is there (to resume), append row by row, flushed.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::row::ResultRow;

/// File name of the results inside a run folder.
pub const RESULTS_FILE: &str = "results.jsonl";

/// Reads every row of a results file for resuming. A missing file is empty; an incomplete
/// last line (a run killed mid-write) is cut from the file with a warning.
///
/// # Errors
/// A line that does not parse, naming the file and line; I/O errors.
pub fn read_rows(path: &Path) -> anyhow::Result<Vec<ResultRow>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let complete = text.rfind('\n').map_or(0, |end| end + 1);
    if complete < text.len() {
        tracing::warn!("{}: dropping an incomplete last line (the previous run was interrupted)", path.display());
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        file.set_len(complete as u64)?;
    }
    crate::report::read_results(path)
}

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

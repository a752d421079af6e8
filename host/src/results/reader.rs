//! Reading `results.jsonl`: for a report or a merge ([`read_results`]) and for resuming a
//! bench ([`read_rows`], which also cuts a line an interrupted run left half-written).

use std::collections::HashSet;
use std::path::Path;

use anyhow::Context as _;

use super::{RESULTS_FILE, ResultRow};
use crate::failure::bad_input;

/// Reads a `results.jsonl`; blank lines are skipped, and rows that repeat an earlier row's
/// key are dropped with a warning.
///
/// # Errors
/// Bad input when the file cannot be read, or naming the file and line number of a line that
/// is not a result row.
pub fn read_results(path: &Path) -> anyhow::Result<Vec<ResultRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        bad_input(format!(
            "cannot read {}: {e}; expected the results of a bench run (runs/NAME/{RESULTS_FILE}), UTF-8 JSON lines",
            path.display()
        ))
    })?;
    parse_rows(path, &text)
}

/// Every row of `text` (the contents of `path`), each checked against its meaning
/// ([`ResultRow::check`]).
fn parse_rows(path: &Path, text: &str) -> anyhow::Result<Vec<ResultRow>> {
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), index + 1);
        let row: ResultRow = serde_json::from_str(line).map_err(|e| {
            bad_input(format!(
                "{}: not a result row: {e}; fix or delete that line (the bench reruns missing rows)",
                at()
            ))
        })?;
        row.check().map_err(|e| {
            bad_input(format!("{}: not a valid result row: {e}; fix or delete that line (the bench reruns it)", at()))
        })?;
        rows.push(row);
    }
    Ok(dedupe(path, rows))
}

/// Reads the complete rows of a results file without changing it (the inputs of a merge):
/// an incomplete last line, which a run killed mid-write leaves, is skipped with a warning.
///
/// # Errors
/// As [`read_results`].
pub fn read_complete_rows(path: &Path) -> anyhow::Result<Vec<ResultRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        bad_input(format!(
            "cannot read {}: {e}; expected the results of a bench run (runs/NAME/{RESULTS_FILE}), UTF-8 JSON lines",
            path.display()
        ))
    })?;
    let complete = text.rfind('\n').map_or(0, |end| end + 1);
    if complete < text.len() {
        tracing::warn!("{}: skipping an incomplete last line (its run was interrupted)", path.display());
    }
    parse_rows(path, &text[..complete])
}

/// Reads every row of a results file for resuming. A missing file is empty; an incomplete
/// last line (a run killed mid-write) is cut from the file with a warning.
///
/// # Errors
/// A line that does not parse, naming the file and line (bad input, as is a file that is
/// not UTF-8); I/O errors.
pub fn read_rows(path: &Path) -> anyhow::Result<Vec<ResultRow>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(bad_input(format!(
                "{}: not UTF-8 text; expected the JSON lines a bench writes (move the file away to start afresh)",
                path.display()
            )));
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let complete = text.rfind('\n').map_or(0, |end| end + 1);
    if complete < text.len() {
        // Check the complete rows before cutting anything: a file that is not a results file
        // is refused untouched.
        parse_rows(path, &text[..complete])?;
        tracing::warn!("{}: dropping an incomplete last line (the previous run was interrupted)", path.display());
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        file.set_len(complete as u64)?;
    }
    read_results(path)
}

/// Drops every row whose key an earlier row already has, with one warning naming the file
/// and the count: a mean must never count a result twice.
fn dedupe(path: &Path, rows: Vec<ResultRow>) -> Vec<ResultRow> {
    let before = rows.len();
    let mut seen = HashSet::new();
    let rows: Vec<ResultRow> = rows.into_iter().filter(|r| seen.insert(r.key())).collect();
    if rows.len() < before {
        tracing::warn!(
            "{}: {} rows repeat the key of an earlier row; the first of each is kept",
            path.display(),
            before - rows.len()
        );
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::table::tests::row;

    #[test]
    fn duplicate_keys_are_dropped_first_one_kept() {
        let mut second = row("0001", "magnitude", 0.5, Some(0.5), 0.1);
        second.retention = Some(0.25);
        let rows =
            vec![row("0001", "magnitude", 0.5, Some(0.9), 0.1), row("0002", "magnitude", 0.5, Some(0.8), 0.1), second];
        let kept = dedupe(Path::new("r.jsonl"), rows);
        assert_eq!(kept.iter().map(|r| r.retention).collect::<Vec<_>>(), [Some(0.9), Some(0.8)]);
    }

    #[test]
    fn property_mutated_results_files_never_panic_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RESULTS_FILE);
        let rows = crate::report::table::tests::rows();
        let valid: String = rows.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
        let (mut accepted, mut refused) = (0, 0);
        for (case, bytes) in crate::testing::mutants(valid.as_bytes(), 2000, 11).into_iter().enumerate() {
            std::fs::write(&path, &bytes).unwrap();
            let result = std::panic::catch_unwind(|| read_results(&path));
            match result.unwrap_or_else(|_| panic!("case {case} panicked")) {
                Ok(_) => accepted += 1,
                Err(e) => {
                    assert!(format!("{e:#}").contains(&path.display().to_string()), "case {case}: {e:#}");
                    refused += 1;
                }
            }
            // Resuming cuts an incomplete last line and must not panic either.
            let _ = read_rows(&path);
        }
        assert!(refused > 1000 && accepted > 0, "accepted {accepted}, refused {refused}");
    }
}

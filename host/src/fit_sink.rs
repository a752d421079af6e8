//! Where a running fit's `Context::record` and `Context::checkpoint` calls go: the curve file
//! and the checkpoint beside the state file ([`FitFiles`]; the layout is described in
//! [`crate::fitting`]), and the fit's progress bar. The context ([`crate::context`]) writes
//! to a [`FitSink`]; the fit ([`crate::fitting`]) opens it.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use hyperprune_core::model::{ModelError, write_atomic};
use indicatif::{ProgressBar, ProgressStyle};

use crate::state_file::{CheckpointHeader, StateHeader, encode_checkpoint};

/// Why a curve row or a checkpoint was not written; the message is what the plugin gets.
#[derive(Debug, thiserror::Error)]
pub enum FitSinkError {
    /// The curve row is not JSON.
    #[error("the curve row is not JSON ({0}); it was not recorded")]
    RowNotJson(serde_json::Error),
    /// The curve row is JSON, but not an object.
    #[error("the curve row is not a JSON object; it was not recorded")]
    RowNotAnObject,
    /// Appending to the curve file failed.
    #[error("{}: {error}", .path.display())]
    Curve {
        /// The curve file.
        path: PathBuf,
        /// The write's error.
        error: std::io::Error,
    },
    /// Writing the checkpoint file failed.
    #[error("{0}")]
    Checkpoint(ModelError),
}

/// The files of a fit, all derived from the state file's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitFiles {
    /// The fitted state.
    pub state: PathBuf,
    /// `<state stem>.fit.jsonl` in the state's folder: the curve rows.
    pub curve: PathBuf,
    /// `<state file name>.checkpoint`: the newest checkpoint of a running fit.
    pub checkpoint: PathBuf,
}

impl FitFiles {
    /// The files that go with state file `state`.
    pub fn for_state(state: &Path) -> FitFiles {
        let name = state.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "state".into());
        let stem = state.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "state".into());
        FitFiles {
            state: state.to_path_buf(),
            curve: state.with_file_name(format!("{stem}.fit.jsonl")),
            checkpoint: state.with_file_name(format!("{name}.checkpoint")),
        }
    }
}

/// Where a running fit's `record` and `checkpoint` calls go.
pub struct FitSink {
    curve: Mutex<File>,
    curve_path: PathBuf,
    checkpoint: PathBuf,
    /// The fit, written with every checkpoint so that only this fit resumes from it.
    fit: StateHeader,
    /// Curve rows in the file, those of the resumed fit included.
    rows: AtomicU64,
    /// Steps done of the plugin's `progress`, with the latest loss and val retention of its
    /// curve rows; drawn on stderr when it is a terminal and info lines show (not `-q`).
    bar: ProgressBar,
    /// The latest `loss` and `val_retention` of the curve rows, for the bar.
    latest: Mutex<[Option<f64>; 2]>,
}

impl FitSink {
    /// Opens the curve file of `fit`: when it resumes from a checkpoint written after
    /// `resume = Some(rows)` curve rows, the curve keeps its first `rows` lines (the fit
    /// records the later ones again) and is appended to; else it starts empty.
    ///
    /// # Errors
    /// The curve file cannot be read, cut or opened.
    pub fn open(files: &FitFiles, resume: Option<u64>, fit: StateHeader) -> anyhow::Result<FitSink> {
        let context = || format!("opening {}", files.curve.display());
        if let Some(rows) = resume {
            let text = match std::fs::read(&files.curve) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e).with_context(context),
            };
            let mut lines = 0u64;
            let keep = text
                .iter()
                .position(|&b| {
                    lines += u64::from(b == b'\n');
                    lines == rows && b == b'\n'
                })
                .map_or(if rows == 0 { 0 } else { text.len() }, |end| end + 1);
            if keep < text.len() {
                let file = OpenOptions::new().write(true).open(&files.curve).with_context(context)?;
                file.set_len(keep as u64).with_context(context)?;
            }
        }
        let curve = OpenOptions::new()
            .create(true)
            .write(true)
            .append(resume.is_some())
            .truncate(resume.is_none())
            .open(&files.curve)
            .with_context(context)?;
        let rows = match resume {
            Some(_) => {
                std::fs::read(&files.curve).map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64).unwrap_or(0)
            }
            None => 0,
        };
        let bar = if tracing::enabled!(tracing::Level::INFO) && crate::logging::bars() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} fit [{elapsed_precise}] {bar:30} {pos}/{len} steps, eta {eta} {msg}",
                )
                .expect("a valid template"),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        Ok(FitSink {
            curve: Mutex::new(curve),
            curve_path: files.curve.clone(),
            checkpoint: files.checkpoint.clone(),
            fit,
            rows: AtomicU64::new(rows),
            bar,
            latest: Mutex::new([None; 2]),
        })
    }

    /// Logs `line` at info level above the progress bar (the bar is redrawn below it).
    pub fn info(&self, line: &str) {
        self.bar.suspend(|| tracing::info!("{line}"));
    }

    /// The plugin's progress: `done` of `total` steps.
    pub fn progress(&self, done: u64, total: u64) {
        if self.bar.length() != Some(total) {
            self.bar.set_length(total);
        }
        self.bar.set_position(done);
        tracing::trace!(target: crate::logging::PROGRESS, done, total, unit = "steps");
    }

    /// Clears the progress bar (the fit ended).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Appends one curve row (a JSON object) as one line, flushed.
    ///
    /// # Errors
    /// The row is not a JSON object, or the write failed.
    pub fn record(&self, row_json: &str) -> Result<(), FitSinkError> {
        let row: serde_json::Value = serde_json::from_str(row_json).map_err(FitSinkError::RowNotJson)?;
        if !row.is_object() {
            return Err(FitSinkError::RowNotAnObject);
        }
        let mut file = self.curve.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(file, "{row}")
            .and_then(|()| file.flush())
            .map_err(|error| FitSinkError::Curve { path: self.curve_path.clone(), error })?;
        self.rows.fetch_add(1, Ordering::Relaxed);
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, key) in latest.iter_mut().zip(["loss", "val_retention"]) {
            if let Some(v) = row.get(key).and_then(serde_json::Value::as_f64) {
                *slot = Some(v);
            }
        }
        let parts: Vec<String> = latest
            .iter()
            .zip(["loss", "val retention"])
            .filter_map(|(v, name)| v.map(|v| format!("{name} {v:.4}")))
            .collect();
        self.bar.set_message(parts.join(", "));
        Ok(())
    }

    /// Stores `state` as the newest checkpoint, atomically, with the fit's header and the
    /// count of curve rows recorded so far.
    ///
    /// # Errors
    /// The write failed.
    pub fn checkpoint(&self, state: &[u8]) -> Result<(), FitSinkError> {
        // The curve lock orders the count against `record`.
        let _curve = self.curve.lock().unwrap_or_else(|e| e.into_inner());
        let header = CheckpointHeader { fit: self.fit.clone(), curve_rows: self.rows.load(Ordering::Relaxed) };
        write_atomic(&self.checkpoint, &encode_checkpoint(&header, state)).map_err(FitSinkError::Checkpoint)
    }

    /// Curve rows in the curve file (a resumed fit's earlier rows included).
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::state_file::decode_checkpoint;
    use crate::state_file::tests::header;

    #[test]
    fn fit_files_sit_beside_the_state() {
        let f = FitFiles::for_state(Path::new("/s/learner.state"));
        assert_eq!(f.curve, Path::new("/s/learner.fit.jsonl"));
        assert_eq!(f.checkpoint, Path::new("/s/learner.state.checkpoint"));
        let f = FitFiles::for_state(Path::new("run/state/hypernet.bin"));
        assert_eq!(f.curve, Path::new("run/state/hypernet.fit.jsonl"));
        let f = FitFiles::for_state(Path::new("plain"));
        assert_eq!((f.curve, f.checkpoint), (PathBuf::from("plain.fit.jsonl"), PathBuf::from("plain.checkpoint")));
    }

    #[test]
    fn the_progress_bar_follows_the_plugin_and_the_curves_latest_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FitSink::open(&FitFiles::for_state(&dir.path().join("p.state")), None, header()).unwrap();
        sink.progress(3, 10);
        sink.record(r#"{"step": 3, "val_retention": 0.25}"#).unwrap();
        sink.record(r#"{"step": 4, "loss": 0.125}"#).unwrap();
        assert_eq!((sink.bar.position(), sink.bar.length()), (3, Some(10)));
        assert_eq!(sink.bar.message(), "loss 0.1250, val retention 0.2500");
        sink.record(r#"{"step": 5, "loss": 0.0625}"#).unwrap();
        assert_eq!(sink.bar.message(), "loss 0.0625, val retention 0.2500");
    }

    #[test]
    fn the_curve_gets_one_flushed_line_per_object_row_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let files = FitFiles::for_state(&dir.path().join("p.state"));
        let sink = FitSink::open(&files, None, header()).unwrap();
        sink.record("{\n  \"step\": 1,\n  \"loss\": 0.5\n}").unwrap();
        assert!(sink.record("[1, 2]").is_err());
        assert!(sink.record("not json").is_err());
        sink.record(r#"{"step": 2}"#).unwrap();
        assert_eq!(std::fs::read_to_string(&files.curve).unwrap(), "{\"loss\":0.5,\"step\":1}\n{\"step\":2}\n");
        assert_eq!(sink.rows(), 2);
        drop(sink);
        let resumed = FitSink::open(&files, Some(2), header()).unwrap();
        resumed.record(r#"{"step": 3}"#).unwrap();
        assert_eq!(std::fs::read_to_string(&files.curve).unwrap().lines().count(), 3, "a resumed fit appends");
        drop(resumed);
        FitSink::open(&files, None, header()).unwrap();
        assert_eq!(std::fs::read_to_string(&files.curve).unwrap(), "", "a fresh fit starts a fresh curve");
    }

    #[test]
    fn a_resumed_fit_cuts_the_curve_rows_recorded_after_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let files = FitFiles::for_state(&dir.path().join("p.state"));
        let sink = FitSink::open(&files, None, header()).unwrap();
        sink.record(r#"{"step": 1}"#).unwrap();
        sink.checkpoint(b"after step 1").unwrap();
        sink.record(r#"{"step": 2}"#).unwrap();
        sink.record(r#"{"step": 3}"#).unwrap();
        drop(sink); // killed after step 3: the checkpoint is of step 1
        let (written, payload) =
            decode_checkpoint(&files.checkpoint, &std::fs::read(&files.checkpoint).unwrap()).unwrap();
        assert_eq!((written.curve_rows, payload.as_slice()), (1, &b"after step 1"[..]));
        let resumed = FitSink::open(&files, Some(written.curve_rows), header()).unwrap();
        assert_eq!(resumed.rows(), 1);
        resumed.record(r#"{"step": 2}"#).unwrap();
        assert_eq!(std::fs::read_to_string(&files.curve).unwrap(), "{\"step\":1}\n{\"step\":2}\n");
    }

    #[test]
    fn refused_rows_say_why_and_what_happened_to_them() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FitSink::open(&FitFiles::for_state(&dir.path().join("p.state")), None, header()).unwrap();
        assert_eq!(
            sink.record("[1]").unwrap_err().to_string(),
            "the curve row is not a JSON object; it was not recorded"
        );
        let e = sink.record("{").unwrap_err().to_string();
        assert!(e.starts_with("the curve row is not JSON (") && e.ends_with("); it was not recorded"), "{e}");
        assert_eq!(sink.rows(), 0);
    }
}

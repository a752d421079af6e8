//! Fitting a learnable pruner on a zoo, and loading a fitted state: one implementation for
//! `hyperprune fit` and for a bench's in-run fit.
//!
//! A fit writes three files beside its state file `DIR/NAME.EXT`:
//!
//! - `DIR/NAME.EXT` itself, written atomically once `fit` returned;
//! - `DIR/NAME.fit.jsonl`, the curve: one JSON object per `Context::record` call, appended
//!   and flushed line by line (truncated when a fit starts afresh, appended to when it
//!   resumes);
//! - `DIR/NAME.EXT.checkpoint`, the newest `Context::checkpoint`, written atomically. A fit
//!   that finds it calls `load_state` with it before `fit` ("resuming from checkpoint"); it
//!   is deleted once the final state is written.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use abi_stable::std_types::{RSlice, RStr};
use anyhow::Context as _;
use hyperprune_core::model::write_atomic;
use hyperprune_core::zoo::{MemberInfo, Split, Zoo};
use hyperprune_core::{LayerViews, Model};
use hyperprune_sdk::{ErrorKind, LayerRef, MemberRef, TensorRef, ZooRef};

use crate::context::DataServices;
use crate::failure::bad_input;
use crate::pruning::{ConfiguredPruner, plugin_error};

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
    rows: AtomicU64,
}

impl FitSink {
    /// Opens the curve file (appending when `resume`, else truncating it).
    ///
    /// # Errors
    /// The curve file cannot be opened.
    pub fn open(files: &FitFiles, resume: bool) -> anyhow::Result<FitSink> {
        let curve = OpenOptions::new()
            .create(true)
            .write(true)
            .append(resume)
            .truncate(!resume)
            .open(&files.curve)
            .with_context(|| format!("opening {}", files.curve.display()))?;
        Ok(FitSink {
            curve: Mutex::new(curve),
            curve_path: files.curve.clone(),
            checkpoint: files.checkpoint.clone(),
            rows: AtomicU64::new(0),
        })
    }

    /// Appends one curve row (a JSON object) as one line, flushed.
    ///
    /// # Errors
    /// The row is not a JSON object, or the write failed.
    pub fn record(&self, row_json: &str) -> Result<(), String> {
        let row: serde_json::Value = serde_json::from_str(row_json)
            .map_err(|e| format!("the curve row is not JSON ({e}); it was not recorded"))?;
        if !row.is_object() {
            return Err("the curve row is not a JSON object; it was not recorded".into());
        }
        let mut file = self.curve.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(file, "{row}")
            .and_then(|()| file.flush())
            .map_err(|e| format!("{}: {e}", self.curve_path.display()))?;
        self.rows.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Stores `state` as the newest checkpoint, atomically.
    ///
    /// # Errors
    /// The write failed.
    pub fn checkpoint(&self, state: &[u8]) -> Result<(), String> {
        write_atomic(&self.checkpoint, state).map_err(|e| e.to_string())
    }

    /// Curve rows recorded so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }
}

/// What a fit did.
#[derive(Debug, Clone)]
pub struct FitSummary {
    /// Train members fitted on.
    pub train: usize,
    /// Val members handed over.
    pub val: usize,
    /// Whether it resumed from a checkpoint.
    pub resumed: bool,
    /// Curve rows recorded.
    pub curve_rows: u64,
    /// Size of the state, bytes.
    pub state_bytes: usize,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Fits `pruner` on the zoo's train members (its val members beside them) and writes the
/// state to `files.state`, resuming from `files.checkpoint` when it exists. `data` is
/// handed to the pruner only if it declared `fit_needs_data`.
///
/// # Errors
/// Bad input: a pruner that learns nothing, a zoo without train members or with members of
/// different architectures, an unreadable member, a checkpoint the pruner rejects. Other
/// errors: the plugin's failure, or writing the files.
pub fn fit(
    pruner: &mut ConfiguredPruner,
    zoo: &Zoo,
    files: &FitFiles,
    data: Option<DataServices<'_>>,
    calib_samples: u64,
) -> anyhow::Result<FitSummary> {
    let start = Instant::now();
    let name = pruner.name().to_string();
    if !pruner.learnable() {
        return Err(bad_input(format!(
            "pruner '{name}' is not learnable: it prunes without fitting, so there is nothing to fit; fit takes a \
             pruner whose capabilities say learnable (see `hyperprune plugins list`)"
        )));
    }
    let (train, val) = fit_members(zoo, &name)?;
    if let Some(parent) = files.state.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let resumed = resume_from_checkpoint(pruner, &files.checkpoint)?;
    let sink = FitSink::open(files, resumed)?;
    let cancel = AtomicBool::new(false);
    let ctx = pruner.fit_context(data, &cancel).with_default_samples(calib_samples).with_fit_sink(&sink);

    let load = |members: &[&MemberInfo]| -> anyhow::Result<Vec<Model>> {
        members.iter().map(|m| zoo.load(m)).collect::<Result<_, _>>().map_err(bad_input)
    };
    let (train_models, val_models) = (load(&train)?, load(&val)?);
    let (train_views, val_views): (Vec<LayerViews<'_>>, Vec<LayerViews<'_>>) =
        (train_models.iter().map(LayerViews::new).collect(), val_models.iter().map(LayerViews::new).collect());
    let (train_parts, val_parts): (Vec<_>, Vec<_>) =
        (train_views.iter().map(LayerViews::parts).collect(), val_views.iter().map(LayerViews::parts).collect());
    let (train_hp, val_hp) = (hyperparams(&train), hyperparams(&val));
    let train_refs = member_refs(&train_views, &train_parts, &train, &train_hp);
    let val_refs = member_refs(&val_views, &val_parts, &val, &val_hp);
    let zoo_ref = ZooRef {
        name: RStr::from_str(&zoo.meta().name),
        dataset: RStr::from_str(&zoo.meta().dataset),
        members: RSlice::from_slice(&train_refs),
        val: RSlice::from_slice(&val_refs),
    };
    tracing::info!(
        "fitting {name} on {} train members ({} val) of zoo {}",
        train.len(),
        val.len(),
        zoo.dir().display()
    );
    pruner.fit(zoo_ref, &ctx).map_err(anyhow::Error::msg)?;
    let state = pruner.save_state().map_err(anyhow::Error::msg)?;
    write_atomic(&files.state, &state).with_context(|| "writing the fitted state")?;
    pruner.mark_state(&state);
    if files.checkpoint.exists() {
        std::fs::remove_file(&files.checkpoint)
            .with_context(|| format!("removing the finished fit's checkpoint {}", files.checkpoint.display()))?;
    }
    Ok(FitSummary {
        train: train.len(),
        val: val.len(),
        resumed,
        curve_rows: sink.rows(),
        state_bytes: state.len(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The zoo's trained train and val members, checked to share one architecture.
fn fit_members<'z>(zoo: &'z Zoo, pruner: &str) -> anyhow::Result<(Vec<&'z MemberInfo>, Vec<&'z MemberInfo>)> {
    let (train, val) = (zoo.members(Split::Train), zoo.members(Split::Val));
    if train.is_empty() {
        return Err(bad_input(format!(
            "{}: the zoo has no trained members in its train split, so pruner '{pruner}' has nothing to fit on; \
             train a zoo whose --split gives train a share (e.g. 0.7,0.15,0.15)",
            zoo.dir().display()
        )));
    }
    let signature = |m: &MemberInfo| -> anyhow::Result<(String, Vec<Vec<usize>>)> {
        let params =
            m.arch.params().map_err(|e| bad_input(format!("{}: member {}: {e}", zoo.dir().display(), m.id)))?;
        Ok((m.arch.name.clone(), params.into_iter().filter(|p| p.prunable).map(|p| p.shape).collect()))
    };
    let first = signature(train[0])?;
    for m in train.iter().chain(&val).skip(1) {
        let other = signature(m)?;
        if other != first {
            return Err(bad_input(format!(
                "{}: members {} ({}, prunable shapes {:?}) and {} ({}, {:?}) differ in architecture; a pruner fits \
                 on members of one architecture",
                zoo.dir().display(),
                train[0].id,
                first.0,
                first.1,
                m.id,
                other.0,
                other.1
            )));
        }
    }
    Ok((train, val))
}

/// Calls `load_state` with the checkpoint, if there is one. Returns whether there was.
fn resume_from_checkpoint(pruner: &mut ConfiguredPruner, checkpoint: &Path) -> anyhow::Result<bool> {
    let Ok(bytes) = std::fs::read(checkpoint) else {
        return Ok(false);
    };
    tracing::info!("{}: resuming from checkpoint {}", pruner.name(), checkpoint.display());
    pruner.load_state(&bytes).map_err(|e| {
        bad_input(format!(
            "{}: pruner '{}' cannot resume from this checkpoint: {}; delete the file to fit from scratch",
            checkpoint.display(),
            pruner.name(),
            e.message
        ))
    })?;
    Ok(true)
}

fn hyperparams(members: &[&MemberInfo]) -> Vec<String> {
    members.iter().map(|m| serde_json::to_string(&m.hyperparams).unwrap_or_default()).collect()
}

/// Borrowed member views for a `ZooRef`.
fn member_refs<'a>(
    views: &'a [LayerViews<'a>],
    parts: &'a [(Vec<LayerRef<'a>>, Vec<TensorRef<'a>>)],
    infos: &'a [&MemberInfo],
    hyperparams: &'a [String],
) -> Vec<MemberRef<'a>> {
    views
        .iter()
        .zip(parts)
        .zip(infos)
        .zip(hyperparams)
        .map(|(((view, (layers, others)), info), hp)| MemberRef {
            id: RStr::from_str(&info.id),
            model: view.view(layers, others),
            dense_accuracy: info.test_accuracy.unwrap_or(0.0),
            hyperparams_json: RStr::from_str(hp),
        })
        .collect()
}

/// Reads state file `path` and restores it into `pruner` (the host-level option
/// `state=FILE`).
///
/// # Errors
/// Bad input naming the file: it does not exist or cannot be read, or the pruner rejects
/// it (a corrupt state, or one written by another pruner or for another architecture; the
/// plugin's message follows). A panic in the plugin is a plugin failure, not bad input.
pub fn load_state_file(pruner: &mut ConfiguredPruner, path: &Path) -> anyhow::Result<()> {
    let name = pruner.name().to_string();
    if !path.is_file() {
        return Err(bad_input(format!(
            "{}: state file not found; fit it first with `hyperprune fit --pruner {name} --zoo DIR --out {}`",
            path.display(),
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| bad_input(format!("{}: {e}", path.display())))?;
    tracing::debug!("{name}: loading the fitted state {}", path.display());
    pruner.load_state(&bytes).map_err(|e| match e.kind {
        ErrorKind::Panicked => anyhow::anyhow!("{}: {}", path.display(), plugin_error(&name, &e)),
        _ => bad_input(format!("{}: pruner '{name}' cannot load this state: {}", path.display(), e.message)),
    })?;
    pruner.mark_state(&bytes);
    Ok(())
}

/// The one-line refusal for a learnable pruner asked to prune with no state.
pub fn must_be_fitted(name: &str) -> anyhow::Error {
    bad_input(format!(
        "pruner '{name}' must be fitted first: run `hyperprune fit --pruner {name} --zoo DIR --out {name}.state`, \
         then pass --opt state={name}.state"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_curve_gets_one_flushed_line_per_object_row_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let files = FitFiles::for_state(&dir.path().join("p.state"));
        let sink = FitSink::open(&files, false).unwrap();
        sink.record("{\n  \"step\": 1,\n  \"loss\": 0.5\n}").unwrap();
        assert!(sink.record("[1, 2]").is_err());
        assert!(sink.record("not json").is_err());
        sink.record(r#"{"step": 2}"#).unwrap();
        assert_eq!(std::fs::read_to_string(&files.curve).unwrap(), "{\"loss\":0.5,\"step\":1}\n{\"step\":2}\n");
        assert_eq!(sink.rows(), 2);
        drop(sink);
        let resumed = FitSink::open(&files, true).unwrap();
        resumed.record(r#"{"step": 3}"#).unwrap();
        assert_eq!(std::fs::read_to_string(&files.curve).unwrap().lines().count(), 3, "a resumed fit appends");
        drop(resumed);
        FitSink::open(&files, false).unwrap();
        assert_eq!(std::fs::read_to_string(&files.curve).unwrap(), "", "a fresh fit starts a fresh curve");
    }
}

//! Fitting a learnable pruner on a zoo, and loading a fitted state: one implementation for
//! `hyperprune fit` and for a bench's in-run fit.
//!
//! A fit writes three files beside its state file `DIR/NAME.EXT`:
//!
//! - `DIR/NAME.EXT` itself, written atomically once `fit` returned: the host's header (see
//!   [`StateHeader`]: which pruner, version and options, fitted on which zoo) and the
//!   plugin's own bytes;
//! - `DIR/NAME.fit.jsonl`, the curve: one JSON object per `Context::record` call, appended
//!   and flushed line by line (truncated when a fit starts afresh; when it resumes, cut back
//!   to the rows recorded before its checkpoint, then appended to);
//! - `DIR/NAME.EXT.checkpoint`, the newest `Context::checkpoint`, written atomically with
//!   the host's [`CheckpointHeader`](crate::state_file::CheckpointHeader) (the fit that wrote it, and its curve's length then). A
//!   fit that finds it resumes only if it is the same fit (pruner, version, options, zoo):
//!   it calls `load_state` with it before `fit` ("resuming from checkpoint"); a checkpoint of
//!   another fit is refused as bad input. It is deleted once the final state is written.
//!
//! The curve and the checkpoint are written by a [`FitSink`](crate::fit_sink::FitSink), which
//! the fit's context holds.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use abi_stable::std_types::{RSlice, RStr};
use anyhow::Context as _;
use hyperprune_core::model::write_atomic;
use hyperprune_core::zoo::{MemberInfo, Split, Zoo};
use hyperprune_core::{LayerViews, Model};
use hyperprune_sdk::{ErrorKind, LayerRef, MemberRef, NodeRef, TensorRef, ZooRef};
use serde::{Deserialize, Serialize};

use crate::calibration::TrainSplit;
use crate::context::DataServices;
use crate::failure::bad_input;
use crate::fit_sink::FitSink;
use crate::pruning::{ConfiguredPruner, FitData, plugin_error, state_fingerprint};
use crate::state_file::{FitZoo, StateHeader, decode_checkpoint, decode_state, encode_state};

/// The files of a fit: the state, its curve and its checkpoint (see [`crate::fit_sink`]).
pub use crate::fit_sink::FitFiles;

/// Synthetic inputs a `fit_data=synthetic` fit draws its calibration samples from.
const SYNTHETIC_INPUTS: usize = 4096;

impl FitZoo {
    /// The identity of `zoo`'s train split, or of its first `limit` train members.
    pub fn of(zoo: &Zoo, limit: Option<usize>) -> FitZoo {
        let mut train = zoo.members(Split::Train);
        train.truncate(limit.unwrap_or(usize::MAX));
        let records = serde_json::to_vec(&train).unwrap_or_default();
        let mut archs: Vec<String> = train.iter().map(|m| m.arch.name.clone()).collect();
        archs.sort();
        archs.dedup();
        FitZoo {
            name: zoo.meta().name.clone(),
            dataset: zoo.meta().dataset.clone(),
            archs,
            train_members: train.len(),
            train_hash: state_fingerprint(&records),
        }
    }
}

impl StateHeader {
    /// The header of a state `pruner` fits on `zoo` (its first `limit` train members) now.
    pub fn new(pruner: &ConfiguredPruner, zoo: &Zoo, limit: Option<usize>) -> StateHeader {
        StateHeader {
            pruner: pruner.name().to_string(),
            pruner_version: pruner.plugin.info.version.clone(),
            options: pruner.fit_options(),
            fit_zoo: FitZoo::of(zoo, limit),
        }
    }

    /// 8 hex digits naming the (pruner, version, options, fit zoo) key: a bench keeps the
    /// state it fits in `RUN/state/PRUNER-KEY.bin`, so other settings never reuse it.
    pub fn key(&self) -> String {
        let key = serde_json::json!([self.pruner, self.pruner_version, self.options, self.fit_zoo.train_hash]);
        state_fingerprint(key.to_string().as_bytes())[..8].to_string()
    }

    /// Where this header differs from `pruner` as configured now, in plugin version or in the
    /// options given explicitly, one phrase each.
    pub fn differences(&self, pruner: &ConfiguredPruner) -> Vec<String> {
        let mut out = Vec::new();
        if self.pruner_version != pruner.plugin.info.version {
            out.push(format!("plugin version {} (now {})", self.pruner_version, pruner.plugin.info.version));
        }
        // Only the options given now: an option left at its default says nothing about the
        // state (a learned pruner's fit options come from the state it loads).
        let given: Vec<&str> =
            pruner.assignments.iter().filter_map(|a| a.split_once('=')).map(|(k, _)| k.trim()).collect();
        let now = pruner.fit_options();
        if let (Some(a), Some(b)) = (self.options.as_object(), now.as_object()) {
            for (name, value) in a.iter().filter(|(name, _)| given.contains(&name.as_str())) {
                match b.get(name) {
                    Some(now) if now == value => {}
                    Some(now) => out.push(format!("{name}={value} (now {now})")),
                    None => out.push(format!("{name}={value} (now unset)")),
                }
            }
        }
        out
    }
}

/// What a fit did.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// Fits `pruner` on the zoo's train members (the first `train_limit` of them, when given;
/// its val members beside them) and writes the
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
    train_limit: Option<usize>,
) -> anyhow::Result<FitSummary> {
    let start = Instant::now();
    let name = pruner.name().to_string();
    if !pruner.learnable() {
        return Err(bad_input(format!(
            "pruner '{name}' is not learnable: it prunes without fitting, so there is nothing to fit; fit takes a \
             pruner whose capabilities say learnable (see `hyperprune plugins list`)"
        )));
    }
    let (mut train, val) = fit_members(zoo, &name, pruner.plugin.info.capabilities.fits_any_arch)?;
    match train_limit {
        Some(0) => return Err(bad_input("--train-members must be at least 1")),
        Some(k) if k > train.len() => {
            return Err(bad_input(format!(
                "{}: --train-members {k}, but the zoo has {} trained train members",
                zoo.dir().display(),
                train.len()
            )));
        }
        Some(k) => train.truncate(k),
        None => {}
    }
    if let Some(parent) = files.state.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    // fit_data=synthetic: the services serve inputs with no image in them.
    let synthetic_inputs = match (pruner.fit_data, &data) {
        (FitData::Synthetic, Some(d)) => Some(d.split.synthetic_inputs(SYNTHETIC_INPUTS, 0)),
        _ => None,
    };
    let synthetic_split = synthetic_inputs.as_ref().map(TrainSplit::synthetic);
    let data = match (data, &synthetic_split) {
        (Some(d), Some(split)) => {
            tracing::info!("fit_data=synthetic: {SYNTHETIC_INPUTS} synthetic inputs, no images, no validation");
            Some(DataServices { engine: d.engine, split })
        }
        (data, _) => data,
    };
    let header = StateHeader::new(pruner, zoo, train_limit);
    let resumed = resume_from_checkpoint(pruner, &files.checkpoint, &header)?;
    let sink = FitSink::open(files, resumed, header.clone())?;
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
    let fitted = pruner.fit(zoo_ref, &ctx);
    sink.finish();
    fitted?;
    let state = pruner.save_state()?;
    write_atomic(&files.state, &encode_state(&header, &state)).with_context(|| "writing the fitted state")?;
    pruner.mark_state(&state, Some((&header.fit_zoo.name, header.fit_zoo.train_members, &header.options)));
    pruner.state_path = Some(files.state.clone());
    if files.checkpoint.exists() {
        std::fs::remove_file(&files.checkpoint)
            .with_context(|| format!("removing the finished fit's checkpoint {}", files.checkpoint.display()))?;
    }
    Ok(FitSummary {
        train: train.len(),
        val: val.len(),
        resumed: resumed.is_some(),
        curve_rows: sink.rows(),
        state_bytes: state.len(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The zoo's trained train and val members, checked to share one architecture unless the
/// pruner declared `fits_any_arch`.
fn fit_members<'z>(
    zoo: &'z Zoo,
    pruner: &str,
    any_arch: bool,
) -> anyhow::Result<(Vec<&'z MemberInfo>, Vec<&'z MemberInfo>)> {
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
    for m in train.iter().chain(&val).skip(1).filter(|_| !any_arch) {
        let other = signature(m)?;
        if other != first {
            return Err(bad_input(format!(
                "{}: members {} ({}, prunable shapes {:?}) and {} ({}, {:?}) differ in architecture; pruner \
                 '{pruner}' fits on members of one architecture (its capabilities do not say fits_any_arch)",
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

/// Calls `load_state` with the checkpoint, if there is one and `fit` wrote it. Returns the
/// curve rows recorded before it, or `None` when there is no checkpoint.
///
/// # Errors
/// Bad input: a checkpoint of another fit (another pruner, version, options or zoo), one the
/// host did not write, or one the pruner rejects; each says to delete it.
fn resume_from_checkpoint(
    pruner: &mut ConfiguredPruner,
    checkpoint: &Path,
    fit: &StateHeader,
) -> anyhow::Result<Option<u64>> {
    let Ok(bytes) = std::fs::read(checkpoint) else {
        return Ok(None);
    };
    let (header, bytes) = decode_checkpoint(checkpoint, &bytes).map_err(bad_input)?;
    if &header.fit != fit {
        return Err(bad_input(format!(
            "{}: a checkpoint of another fit ({}); delete it to fit from scratch, or write this fit's state \
             elsewhere with --out",
            checkpoint.display(),
            checkpoint_differences(&header.fit, fit).join("; ")
        )));
    }
    tracing::info!("{}: resuming from checkpoint {}", pruner.name(), checkpoint.display());
    pruner.load_state(&bytes).map_err(|e| {
        bad_input(format!(
            "{}: pruner '{}' cannot resume from this checkpoint: {}; delete the file to fit from scratch",
            checkpoint.display(),
            pruner.name(),
            e.message
        ))
    })?;
    Ok(Some(header.curve_rows))
}

/// How the fit that wrote a checkpoint (`then`) differs from this one (`now`), one phrase
/// each: pruner, version, the options that differ, the zoo.
fn checkpoint_differences(then: &StateHeader, now: &StateHeader) -> Vec<String> {
    let mut out = Vec::new();
    if then.pruner != now.pruner || then.pruner_version != now.pruner_version {
        out.push(format!(
            "pruner {} {}, this fit {} {}",
            then.pruner, then.pruner_version, now.pruner, now.pruner_version
        ));
    }
    let empty = serde_json::Map::new();
    let (a, b) = (then.options.as_object().unwrap_or(&empty), now.options.as_object().unwrap_or(&empty));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys.into_iter().filter(|k| a.get(*k) != b.get(*k)) {
        let show = |v: Option<&serde_json::Value>| v.map_or_else(|| "unset".to_string(), ToString::to_string);
        out.push(format!("option {key} = {}, this fit {}", show(a.get(key)), show(b.get(key))));
    }
    let zoo = |z: &FitZoo| format!("zoo '{}' ({} train members, hash {})", z.name, z.train_members, z.train_hash);
    if then.fit_zoo != now.fit_zoo {
        out.push(format!("{}, this fit {}", zoo(&then.fit_zoo), zoo(&now.fit_zoo)));
    }
    out
}

fn hyperparams(members: &[&MemberInfo]) -> Vec<String> {
    members.iter().map(|m| serde_json::to_string(&m.hyperparams).unwrap_or_default()).collect()
}

/// Borrowed member views for a `ZooRef`.
fn member_refs<'a>(
    views: &'a [LayerViews<'a>],
    parts: &'a [(Vec<LayerRef<'a>>, Vec<TensorRef<'a>>, Vec<NodeRef<'a>>)],
    infos: &'a [&MemberInfo],
    hyperparams: &'a [String],
) -> Vec<MemberRef<'a>> {
    views
        .iter()
        .zip(parts)
        .zip(infos)
        .zip(hyperparams)
        .map(|(((view, (layers, others, nodes)), info), hp)| MemberRef {
            id: RStr::from_str(&info.id),
            model: view.view(layers, others, nodes),
            dense_accuracy: info.test_accuracy.unwrap_or(0.0),
            hyperparams_json: RStr::from_str(hp),
        })
        .collect()
}

/// What a loaded state is applied to: the dataset (when known) and the architectures.
#[derive(Debug, Clone, Copy)]
pub struct StateTarget<'a> {
    /// Dataset name.
    pub dataset: Option<&'a str>,
    /// Architecture names.
    pub archs: &'a [String],
}

/// The host header of state file `path`, without loading the state: None for a bare plugin
/// state.
///
/// # Errors
/// Bad input naming the file: unreadable, or a corrupt header.
pub fn read_state_header(path: &Path) -> anyhow::Result<Option<StateHeader>> {
    let bytes = std::fs::read(path).map_err(|e| bad_input(format!("{}: {e}", path.display())))?;
    Ok(decode_state(path, &bytes).map_err(bad_input)?.header)
}

/// Reads state file `path` and restores it into `pruner` (the host-level option
/// `state=FILE`). Returns the state's header (None for a bare plugin state, with a warning).
/// A state fitted with another plugin version or other options warns in one line; so does
/// one fitted on another dataset or architecture than `target` (dataset, arch names), when
/// given: applying a state across zoos is a study, not a mistake, but never a silent one.
///
/// # Errors
/// Bad input naming the file: it does not exist or cannot be read, its header is corrupt or
/// names another pruner, or the pruner rejects the payload (a corrupt state, or one for
/// another architecture; the plugin's message follows). A panic in the plugin is a plugin
/// failure, not bad input.
pub fn load_state_file(
    pruner: &mut ConfiguredPruner,
    path: &Path,
    target: Option<StateTarget<'_>>,
) -> anyhow::Result<Option<StateHeader>> {
    let name = pruner.name().to_string();
    if !path.is_file() {
        return Err(bad_input(format!(
            "{}: state file not found; fit it first with `hyperprune fit --pruner {name} --zoo DIR --out {}`",
            path.display(),
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| bad_input(format!("{}: {e}", path.display())))?;
    let file = decode_state(path, &bytes).map_err(bad_input)?;
    match &file.header {
        Some(header) if header.pruner != name => {
            return Err(bad_input(format!(
                "{}: this state was fitted by pruner '{}', not '{name}'",
                path.display(),
                header.pruner
            )));
        }
        _ => {}
    }
    // Said once the state loaded: a state the plugin refuses is one error line, not more.
    let warnings = match &file.header {
        Some(header) => mismatches(path, header, pruner, target),
        None => vec![format!(
            "{}: a bare plugin state without the host's header (written before states were keyed): its fit zoo is \
             unknown; refit to record it",
            path.display()
        )],
    };
    tracing::debug!("{name}: loading the fitted state {}", path.display());
    pruner.load_state(&file.payload).map_err(|e| match e.kind {
        ErrorKind::Panicked => anyhow::anyhow!("{}: {}", path.display(), plugin_error(&name, &e)),
        _ => bad_input(format!("{}: pruner '{name}' cannot load this state: {}", path.display(), e.message)),
    })?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    pruner.mark_state(
        &file.payload,
        file.header.as_ref().map(|h| (h.fit_zoo.name.as_str(), h.fit_zoo.train_members, &h.options)),
    );
    pruner.state_path = Some(path.to_path_buf());
    Ok(file.header)
}

/// One warning line per kind of mismatch between a loaded state and its use.
fn mismatches(
    path: &Path,
    header: &StateHeader,
    pruner: &ConfiguredPruner,
    target: Option<StateTarget<'_>>,
) -> Vec<String> {
    let mut out = Vec::new();
    let differences = header.differences(pruner);
    if !differences.is_empty() {
        out.push(format!("{}: fitted with {}", path.display(), differences.join(", ")));
    }
    let Some(target) = target else { return out };
    let fit = &header.fit_zoo;
    let other_dataset = target.dataset.is_some_and(|d| d != fit.dataset);
    let other_arch = target.archs.iter().any(|a| !fit.archs.contains(a));
    if other_dataset || other_arch {
        out.push(format!(
            "{}: fitted on zoo '{}' ({} {}), now applied to {} {}: a cross-zoo transfer",
            path.display(),
            fit.name,
            fit.dataset,
            fit.archs.join("+"),
            target.dataset.unwrap_or("a model of"),
            target.archs.join("+"),
        ));
    }
    out
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
    use crate::state_file::tests::header;

    #[test]
    fn the_key_changes_with_every_part_of_it() {
        let base = header();
        let key = base.key();
        assert_eq!((key.len(), key.clone()), (8, header().key()), "8 hex digits, deterministic");
        let mut other = header();
        other.pruner_version = "0.2.1".into();
        assert_ne!(other.key(), key);
        let mut other = header();
        other.options["steps"] = 601.into();
        assert_ne!(other.key(), key);
        let mut other = header();
        other.fit_zoo.train_hash = "fedcba9876543210".into();
        assert_ne!(other.key(), key);
    }
}

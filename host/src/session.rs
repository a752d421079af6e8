//! The calls an embedding makes (the Python module is one): load a model, find plugins,
//! prune, evaluate. Each is the in-process path of the matching command (`hyperprune prune`
//! with `--isolate none`, `hyperprune eval`), built from the same pieces, with the same
//! checks and the same one-line bad-input messages; nothing is written to disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use hyperprune_core::Model;
use hyperprune_core::dataset::{Dataset, Samples};
use hyperprune_core::model::encode_f32;
use hyperprune_sdk::PruneRequest;

use crate::bn_stats::BnStats;
use crate::calibration::TrainSplit;
use crate::cli::{DataArgs, RequestArgs, ScopeArg};
use crate::context::DataServices;
use crate::engines::EngineKind;
use crate::failure::bad_input;
use crate::fitting::{StateTarget, load_state_file, must_be_fitted};
use crate::isolation::{CallError, Isolation, Setup, Task, Worker};
use crate::outcome::CheckedOutcome;
use crate::plugins::{Registry, discover};
use crate::pruning::{ConfiguredPruner, PruneFailure, request_from};

/// The plugin file name prefix of the in-tree plugins (`libhyperprune_plugin_NAME.so`).
pub const IN_TREE_PREFIX: &str = "libhyperprune_plugin_";

/// Finds the plugins: the in-tree plugin files in `dirs` (`libhyperprune_plugin_*`), the
/// third-party files in `files`, then what `hyperprune` itself finds
/// (`$HYPERPRUNE_PLUGIN_PATH`, the executable's folder). The first plugin of a name wins.
///
/// A file that fails to load is not an error here: it is named when a pruner is not found
/// ([`Registry::unknown`]).
pub fn find_plugins(dirs: &[PathBuf], files: &[PathBuf]) -> Registry {
    let mut explicit: Vec<PathBuf> = files.to_vec();
    explicit.extend(in_tree_files(dirs));
    discover(&explicit)
}

/// The in-tree plugin files (`libhyperprune_plugin_*`) in `dirs`, in order, each folder's
/// sorted by name.
pub fn in_tree_files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension().is_some_and(|e| e == std::env::consts::DLL_EXTENSION)
                    && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(IN_TREE_PREFIX))
            })
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

/// Loads a model file, with an optional architecture (preset name or spec JSON file).
///
/// # Errors
/// Bad input naming the file and the problem.
pub fn load_model(path: &Path, arch: Option<&str>) -> anyhow::Result<Model> {
    crate::inputs::model(path, arch)
}

/// A model from named tensors `(name, shape, values)` (a state dict) and an architecture
/// (preset name or spec JSON file): the tensors are checked as a model file's are.
///
/// # Errors
/// Bad input: unknown arch, a missing or extra tensor, a shape that does not match.
///
/// # Panics
/// When a tensor's value count is not the product of its shape.
pub fn model_from_tensors(tensors: &[(String, Vec<usize>, Vec<f32>)], arch: &str) -> anyhow::Result<Model> {
    let spec = crate::inputs::arch(arch)?;
    let entries: Vec<(String, Vec<usize>, &[f32])> =
        tensors.iter().map(|(n, s, v)| (n.clone(), s.clone(), v.as_slice())).collect();
    let bytes = encode_f32(&entries, None);
    Model::from_bytes(Path::new("<state dict>"), &bytes, Some(&spec)).map_err(bad_input)
}

/// What to prune and how: the arguments of `hyperprune prune` that are not files.
#[derive(Debug, Clone)]
pub struct PruneSettings {
    /// Pruner name.
    pub pruner: String,
    /// Fraction of prunable weights to remove, in [0, 1).
    pub sparsity: f64,
    /// Global or per-layer allocation.
    pub scope: ScopeArg,
    /// `unstructured` or `N:M`.
    pub pattern: String,
    /// Pruner options `name=value` (host-level ones such as `state=FILE` included).
    pub options: Vec<String>,
    /// Seed for every random choice.
    pub seed: u64,
    /// Dataset for data-aware pruners (calibration from its train split).
    pub dataset: Option<String>,
    /// Folder with the dataset's files.
    pub data_dir: Option<PathBuf>,
    /// Calibration samples for pruners that ask for the default.
    pub calib_samples: u64,
    /// The caller's own calibration images and labels, instead of a named dataset.
    pub arrays: Option<Samples>,
    /// What happens to batch normalisation statistics after masking (`--bn-correct`,
    /// `--bn-recalibrate N`).
    pub bn: BnStats,
    /// Run the plugin in a supervised worker process (`--isolate worker`) with this timeout
    /// (seconds) and memory limit (MiB; `None` for half the machine's memory).
    pub isolate: Option<(f64, Option<u64>)>,
}

impl Default for PruneSettings {
    /// The CLI's defaults: magnitude, 0.9, global, unstructured, seed 0, 1024 samples.
    fn default() -> PruneSettings {
        PruneSettings {
            pruner: "magnitude".into(),
            sparsity: 0.9,
            scope: ScopeArg::Global,
            pattern: "unstructured".into(),
            options: Vec::new(),
            seed: 0,
            dataset: None,
            data_dir: None,
            calib_samples: 1024,
            arrays: None,
            bn: BnStats::Stale,
            isolate: None,
        }
    }
}

/// One prunable layer of a pruned model.
#[derive(Debug, Clone)]
pub struct PrunedLayer {
    /// Parameter name.
    pub name: String,
    /// Parameter shape.
    pub shape: Vec<usize>,
    /// Keep mask, 1 = kept (as in the masks file `hyperprune prune` writes).
    pub keep: Vec<u8>,
    /// The layer's weights after pruning, when the pruner moved weights.
    pub new_weights: Option<Vec<f32>>,
}

/// What a prune call gave.
#[derive(Debug, Clone)]
pub struct Pruned {
    /// Prunable layers, in model order.
    pub layers: Vec<PrunedLayer>,
    /// The pruned model (masks and new weights applied).
    pub model: Model,
    /// Pruned weights over all prunable weights.
    pub sparsity: f64,
    /// Seconds the plugin's `prune` took.
    pub seconds: f64,
    /// Seconds the whole call took in the host (configure, prune, checks, masks applied,
    /// batch normalisation fixed): what `hyperprune prune` spends in process on it.
    pub host_seconds: f64,
    /// The pruner's name.
    pub pruner: String,
    /// The pruner's version.
    pub version: String,
}

/// Where a prune call's calibration data comes from, and how the caller names the two
/// settings in messages (`--dataset`/`--data-dir` on the command line).
pub struct DataSource<'a> {
    /// Dataset name, if any.
    pub dataset: Option<&'a str>,
    /// Folder with the dataset's files.
    pub data_dir: Option<PathBuf>,
    /// The caller's own training images (calibration only), instead of a named dataset.
    pub arrays: Option<Samples>,
    /// How the caller spells `(dataset NAME, data-dir DIR)` in a message.
    pub flags: (&'a str, &'a str),
}

/// How [`prune`]'s settings are named in its messages.
const OPTION_NAMES: (&str, &str) = ("dataset=NAME", "data_dir=DIR");

/// The pruner of a prune call, configured, its state loaded when it is learnable, and the
/// dataset it calibrates on, checked against `model`: the steps `hyperprune prune` and
/// [`prune`] share. `before_state` sees a learnable pruner's state file before it is read
/// (the command refuses an `--out` that would overwrite it).
///
/// # Errors
/// Bad input: unknown pruner or options, a learnable pruner without a state or with one that
/// does not fit, a data-aware pruner without a dataset, a dataset that does not fit `model`.
pub fn configure(
    registry: &Registry,
    name: &str,
    options: &[String],
    model: &Model,
    data: DataSource<'_>,
    before_state: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<(ConfiguredPruner, Option<Dataset>)> {
    let mut pruner = ConfiguredPruner::new(registry, name, options)?;
    if pruner.learnable() {
        let state = pruner.state_file.clone().ok_or_else(|| must_be_fitted(name))?;
        before_state(&state)?;
        let target = StateTarget { dataset: data.dataset, archs: std::slice::from_ref(&model.spec().name) };
        load_state_file(&mut pruner, &state, Some(target))?;
    }
    let (dataset_flag, dir_flag) = data.flags;
    if let Some(samples) = data.arrays {
        let empty = Samples { shape: samples.shape, images: Vec::new(), labels: Vec::new() };
        let dataset = arrays_dataset(model, samples, empty)?;
        return Ok((pruner, Some(dataset)));
    }
    if pruner.prunes_with_data() && data.dataset.is_none() {
        return Err(bad_input(format!(
            "pruner '{}' needs calibration data: pass {dataset_flag} (and {dir_flag} if its files are not in the default place)",
            pruner.name()
        )));
    }
    let dataset = match data.dataset {
        Some(name) => {
            let dataset = crate::inputs::dataset(&DataArgs { dataset: name.to_string(), data_dir: data.data_dir })?;
            crate::inputs::check_fits(model.spec(), &dataset)?;
            Some(dataset)
        }
        None => None,
    };
    Ok((pruner, dataset))
}

/// Prunes `model` as `hyperprune prune` does (in this process, or in a worker when
/// `settings.isolate` says so). `cancel` is what the plugin's `cancelled()` reads: set it
/// (from another thread) to ask a long call to stop.
///
/// # Errors
/// Bad input (pruner name, options, sparsity, pattern, dataset, a learnable pruner's missing
/// state, a data-aware pruner without a dataset) or the plugin's failure.
pub fn prune(
    registry: &Registry,
    model: &Model,
    settings: &PruneSettings,
    cancel: &AtomicBool,
) -> anyhow::Result<Pruned> {
    let start = std::time::Instant::now();
    let request_args = RequestArgs {
        scope: settings.scope,
        pattern: settings.pattern.clone(),
        options: settings.options.clone(),
        seed: settings.seed,
    };
    let request = request_from(&request_args, settings.sparsity)?;
    if settings.bn.uses_data() && settings.dataset.is_none() && settings.arrays.is_none() {
        return Err(bad_input(
            "bn_recalibrate draws training images: pass dataset=NAME or (images, labels) (or bn_correct, which needs none)",
        ));
    }
    let isolation = match settings.isolate {
        Some((timeout, memory)) => {
            if settings.arrays.is_some() {
                return Err(bad_input(
                    "isolate: a worker process loads its calibration data by name: pass dataset=NAME, not arrays",
                ));
            }
            Some(Isolation::from_args(timeout, memory)?)
        }
        None => None,
    };
    let (pruner, data) = configure(
        registry,
        &settings.pruner,
        &settings.options,
        model,
        DataSource {
            dataset: settings.dataset.as_deref(),
            data_dir: settings.data_dir.clone(),
            arrays: settings.arrays.clone(),
            flags: OPTION_NAMES,
        },
        |_| Ok(()),
    )?;
    let engine = crate::engines::engine(EngineKind::default(), "cpu")?;
    let split = data.as_ref().map(|d| TrainSplit::new(&d.train));
    let services = split.as_ref().map(|split| DataServices { engine: engine.as_ref(), split });
    let prune_start = std::time::Instant::now();
    let outcome = match &isolation {
        Some(isolation) => {
            // The worker reads the model from a file, as `hyperprune prune` hands it its --model.
            let folder = tempfile::tempdir()?;
            let file = folder.path().join("model.safetensors");
            model.save(&file)?;
            let worker = WorkerCall {
                isolation,
                pruner: &pruner,
                model_file: (file, None),
                data: settings.dataset.clone().map(|d| (d, settings.data_dir.clone())),
                engine: ("cpu".into(), "cpu".into()),
                calib_samples: settings.calib_samples,
            };
            worker.prune(model, &request, cancel)
        }
        None => {
            let ctx = pruner.prune_context(services, cancel).with_default_samples(settings.calib_samples);
            pruner.prune(model, &request, &ctx)
        }
    }
    .map_err(|e| if e.is_bad_input() { bad_input(e) } else { anyhow::Error::msg(e.message) })?;
    let seconds = prune_start.elapsed().as_secs_f64();
    let pruned = outcome.apply(model).map_err(anyhow::Error::msg)?;
    let pruned = settings.bn.apply(engine.as_ref(), model, pruned, split.as_ref()).map_err(anyhow::Error::msg)?;
    let layers = model
        .prunable()
        .zip(outcome.keep.iter().zip(&outcome.new_weights))
        .map(|((p, _), (keep, new_weights))| PrunedLayer {
            name: p.name.clone(),
            shape: p.shape.clone(),
            keep: keep.iter().map(|&k| u8::from(k)).collect(),
            new_weights: new_weights.clone(),
        })
        .collect();
    Ok(Pruned {
        layers,
        model: pruned,
        sparsity: outcome.achieved_sparsity(),
        seconds,
        host_seconds: start.elapsed().as_secs_f64(),
        pruner: pruner.name().to_string(),
        version: pruner.plugin.info.version.to_string(),
    })
}

/// One prune call in a supervised worker process (`--isolate worker`): the plugin runs
/// there, and its outcome is checked here like an in-process one.
pub struct WorkerCall<'a> {
    /// Timeout and memory limit.
    pub isolation: &'a Isolation,
    /// The configured pruner (its name, options and state are sent to the worker).
    pub pruner: &'a ConfiguredPruner,
    /// The model file the worker reads, with its arch (preset name or spec file) if given.
    pub model_file: (PathBuf, Option<String>),
    /// Dataset name and folder, when the pruner calibrates.
    pub data: Option<(String, Option<PathBuf>)>,
    /// Engine name and device the worker's data services use.
    pub engine: (String, String),
    /// Calibration samples for calls that ask for the default.
    pub calib_samples: u64,
}

impl WorkerCall<'_> {
    /// Prunes `model` (the same network as `model_file`) in a fresh worker.
    ///
    /// # Errors
    /// A failed call, including a worker that died, hung or was interrupted, as for an
    /// in-process call.
    pub fn prune(
        &self,
        model: &Model,
        request: &PruneRequest,
        cancel: &AtomicBool,
    ) -> Result<CheckedOutcome, PruneFailure> {
        let pruner = self.pruner;
        let data = if pruner.prunes_with_data() { self.data.clone() } else { None };
        let setup =
            Setup { data, ..Setup::of(pruner, self.engine.clone(), self.calib_samples, self.isolation.memory_limit) };
        let failure = |e: CallError| match e {
            CallError::Failed { message, bad_input } => {
                PruneFailure { kind: bad_input.then_some(hyperprune_sdk::ErrorKind::InvalidOptions), message }
            }
            CallError::Crashed(how) => {
                PruneFailure { kind: None, message: format!("plugin '{}': {how}", pruner.name()) }
            }
            CallError::Interrupted => PruneFailure { kind: None, message: "interrupted".into() },
        };
        let mut worker = Worker::start(&setup, self.isolation).map_err(failure)?;
        let mut task = Task::new("", request);
        task.model = Some(self.model_file.clone());
        match worker.prune(&task, self.isolation.timeout, cancel) {
            Ok((outcome, _, _)) => pruner.accept(model, &outcome, request),
            Err(e) => Err(failure(e)),
        }
    }
}

/// A dataset of the caller's own arrays: `train` for calibration, `test` for evaluation,
/// checked against `model`'s input shape and classes.
///
/// # Errors
/// Bad input: images of another shape than the model's input, a label outside its classes,
/// image and label counts that differ.
pub fn arrays_dataset(model: &Model, train: Samples, test: Samples) -> anyhow::Result<Dataset> {
    let spec = model.spec();
    for (what, s) in [("calibration", &train), ("evaluation", &test)] {
        let per_image: usize = s.shape.iter().product();
        if s.images.is_empty() && s.labels.is_empty() {
            continue;
        }
        if s.shape != spec.input {
            return Err(bad_input(format!(
                "{what} images: architecture '{}' takes images of shape {:?} (channels, height, width), got {:?}",
                spec.name, spec.input, s.shape
            )));
        }
        if per_image == 0 || s.images.len() != per_image * s.labels.len() {
            return Err(bad_input(format!(
                "{what} arrays: {} labels but {} images of shape {:?}",
                s.labels.len(),
                s.images.len() / per_image.max(1),
                s.shape
            )));
        }
        if let Some(bad) = s.labels.iter().find(|&&l| l as usize >= spec.classes) {
            return Err(bad_input(format!(
                "{what} labels: label {bad} is outside architecture '{}''s {} classes (0..{})",
                spec.name, spec.classes, spec.classes
            )));
        }
    }
    Ok(Dataset { name: "arrays".into(), classes: spec.classes, train, test, normalisation: "as given".into() })
}

/// Test-split accuracy and mean loss, as `hyperprune eval` reports them.
#[derive(Debug, Clone, Copy)]
pub struct Scores {
    /// Top-1 accuracy in [0, 1].
    pub accuracy: f64,
    /// Mean cross-entropy loss.
    pub loss: f64,
    /// Test images evaluated.
    pub samples: usize,
}

/// Evaluates `model` on a dataset's test split, as `hyperprune eval` does (no BN change).
///
/// # Errors
/// Bad input: unknown dataset, missing files, a model that does not fit the dataset.
pub fn evaluate(model: &Model, dataset: &str, data_dir: Option<PathBuf>) -> anyhow::Result<Scores> {
    let data = crate::inputs::dataset(&DataArgs { dataset: dataset.to_string(), data_dir })?;
    crate::inputs::check_fits(model.spec(), &data)?;
    evaluate_on(model, &data.test)
}

/// Accuracy and mean loss of `model` on `samples` (the caller's own test images).
///
/// # Errors
/// Bad input: samples that do not fit the model (see [`arrays_dataset`]), or none.
pub fn evaluate_arrays(model: &Model, samples: Samples) -> anyhow::Result<Scores> {
    if samples.labels.is_empty() {
        return Err(bad_input("evaluation arrays: no images"));
    }
    let empty = Samples { shape: samples.shape, images: Vec::new(), labels: Vec::new() };
    let data = arrays_dataset(model, empty, samples)?;
    evaluate_on(model, &data.test)
}

fn evaluate_on(model: &Model, data: &Samples) -> anyhow::Result<Scores> {
    let engine = crate::engines::engine(EngineKind::default(), "cpu")?;
    let eval = engine.evaluate(&[model], data)?.remove(0);
    Ok(Scores { accuracy: eval.accuracy, loss: eval.loss, samples: eval.samples })
}

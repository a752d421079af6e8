//! The calls an embedding makes (the Python module is one): load a model, find plugins,
//! prune, evaluate. Each is the in-process path of the matching command (`hyperprune prune`
//! with `--isolate none`, `hyperprune eval`), built from the same pieces, with the same
//! checks and the same one-line bad-input messages; nothing is written to disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use hyperprune_core::Model;
use hyperprune_core::dataset::Dataset;
use hyperprune_core::model::encode_f32;

use crate::calibration::TrainSplit;
use crate::cli::{DataArgs, RequestArgs, ScopeArg};
use crate::context::DataServices;
use crate::engines::EngineKind;
use crate::failure::bad_input;
use crate::fitting::{StateTarget, load_state_file, must_be_fitted};
use crate::plugins::{Registry, discover};
use crate::pruning::{ConfiguredPruner, request_from};

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
        explicit.extend(found);
    }
    discover(&explicit)
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

/// Prunes `model` as `hyperprune prune --isolate none` does.
///
/// # Errors
/// Bad input (pruner name, options, sparsity, pattern, dataset, a learnable pruner's missing
/// state, a data-aware pruner without a dataset) or the plugin's failure.
pub fn prune(registry: &Registry, model: &Model, settings: &PruneSettings) -> anyhow::Result<Pruned> {
    let request_args = RequestArgs {
        scope: settings.scope,
        pattern: settings.pattern.clone(),
        options: settings.options.clone(),
        seed: settings.seed,
    };
    let request = request_from(&request_args, settings.sparsity)?;
    let (pruner, data) = configure(
        registry,
        &settings.pruner,
        &settings.options,
        model,
        DataSource { dataset: settings.dataset.as_deref(), data_dir: settings.data_dir.clone(), flags: OPTION_NAMES },
        |_| Ok(()),
    )?;
    let engine = crate::engines::engine(EngineKind::default(), "cpu")?;
    let split = data.as_ref().map(|d| TrainSplit::new(&d.train));
    let services = split.as_ref().map(|split| DataServices { engine: engine.as_ref(), split });
    let cancel = AtomicBool::new(false);
    let start = std::time::Instant::now();
    let ctx = pruner.prune_context(services, &cancel).with_default_samples(settings.calib_samples);
    let outcome = pruner
        .prune(model, &request, &ctx)
        .map_err(|e| if e.is_bad_input() { bad_input(e) } else { anyhow::Error::msg(e.message) })?;
    let seconds = start.elapsed().as_secs_f64();
    let pruned = outcome.apply(model).map_err(anyhow::Error::msg)?;
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
        pruner: pruner.name().to_string(),
        version: pruner.plugin.info.version.to_string(),
    })
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
    let engine = crate::engines::engine(EngineKind::default(), "cpu")?;
    let eval = engine.evaluate(&[model], &data.test)?.remove(0);
    Ok(Scores { accuracy: eval.accuracy, loss: eval.loss, samples: eval.samples })
}

//! `hyperprune._native`: the Rust half of the `hyperprune` Python module.
//!
//! A thin layer over `hyperprune_host::session`: every call is the host's own code path
//! (the one `hyperprune prune --isolate none` and `hyperprune eval` take). Arrays cross as
//! little-endian bytes plus a shape, so this crate needs no numpy bindings; the pure-Python
//! package (`hyperprune/__init__.py`) turns them into numpy arrays and back.
//!
//! Key decision: no Rust panic reaches Python. Every entry point runs under
//! `catch_unwind` and turns a panic into `HyperpruneError`; the host's bad-input errors
//! (its one-line messages) become `InputError`, a plugin's failure `PluginError`. Prune and
//! evaluate release the GIL.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Mutex;

use hyperprune_core::Model;
use hyperprune_host::cli::ScopeArg;
use hyperprune_host::failure::is_bad_input;
use hyperprune_host::plugins::Registry;
use hyperprune_host::session::{self, PruneSettings};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

create_exception!(_native, HyperpruneError, PyException, "Base class of every hyperprune error.");
create_exception!(
    _native,
    InputError,
    HyperpruneError,
    "Bad input: the host's one-line message says what and how to fix it."
);
create_exception!(_native, PluginError, HyperpruneError, "A pruner plugin failed, or could not be loaded.");

/// The plugin folders and third-party files searched, and what was found there.
struct Plugins {
    dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
    registry: Registry,
}

static PLUGINS: Mutex<Option<Plugins>> = Mutex::new(None);

/// An `anyhow` error from the host as the matching Python exception.
fn to_py(err: anyhow::Error) -> PyErr {
    let message = format!("{err:#}");
    if is_bad_input(&err) { InputError::new_err(message) } else { PluginError::new_err(message) }
}

/// Runs `f`, turning a panic into `HyperpruneError`.
fn guarded<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        Err(HyperpruneError::new_err(format!("internal error (a bug in hyperprune): {message}")))
    })
}

fn with_plugins<T>(f: impl FnOnce(&mut Plugins) -> PyResult<T>) -> PyResult<T> {
    let mut guard = PLUGINS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match guard.as_mut() {
        Some(plugins) => f(plugins),
        None => Err(HyperpruneError::new_err("no plugin folders set: call set_plugin_dirs first")),
    }
}

/// Sets the folders searched for in-tree plugin files (`libhyperprune_plugin_*.so`) and
/// loads what is there. Returns the names found.
#[pyfunction]
fn set_plugin_dirs(dirs: Vec<PathBuf>) -> PyResult<Vec<String>> {
    guarded(|| {
        let registry = session::find_plugins(&dirs, &[]);
        let names = registry.plugins.iter().map(|p| p.name().to_string()).collect();
        *PLUGINS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some(Plugins { dirs, files: Vec::new(), registry });
        Ok(names)
    })
}

/// Every plugin found, as `(info JSON, file path)` pairs.
#[pyfunction]
fn plugins() -> PyResult<Vec<(String, String)>> {
    guarded(|| {
        with_plugins(|p| {
            Ok(p.registry
                .plugins
                .iter()
                .map(|plugin| {
                    (serde_json::to_string(&plugin.info).unwrap_or_default(), plugin.path.display().to_string())
                })
                .collect())
        })
    })
}

/// Loads a third-party plugin file (with the same ABI checks as `hyperprune --plugin`);
/// returns its name. A later plugin of the same name as an in-tree one takes precedence.
#[pyfunction]
fn load_plugin(path: PathBuf) -> PyResult<String> {
    guarded(|| {
        let plugin = hyperprune_host::plugins::load(&path).map_err(|e| PluginError::new_err(e.to_string()))?;
        with_plugins(|p| {
            p.files.retain(|f| f != &path);
            p.files.insert(0, path.clone());
            p.registry = session::find_plugins(&p.dirs, &p.files);
            Ok(plugin.name().to_string())
        })
    })
}

/// Why no plugin is called `name`: the installed names, and plugin files that failed to load
/// (a plugin built against another SDK, for one).
#[pyfunction]
fn unknown_plugin(name: &str) -> PyResult<String> {
    guarded(|| with_plugins(|p| Ok(p.registry.unknown(name))))
}

/// A model: an architecture and its parameter values.
#[pyclass(module = "hyperprune._native", frozen)]
struct NativeModel {
    model: Model,
}

#[pymethods]
impl NativeModel {
    /// Loads a safetensors model, with an optional arch (preset name or spec JSON file).
    #[staticmethod]
    #[pyo3(signature = (path, arch=None))]
    fn load(path: PathBuf, arch: Option<String>) -> PyResult<NativeModel> {
        guarded(|| session::load_model(&path, arch.as_deref()).map(|model| NativeModel { model }).map_err(to_py))
    }

    /// A model from `(name, shape, little-endian f32 bytes)` tensors and an arch.
    #[staticmethod]
    fn from_tensors(tensors: Vec<(String, Vec<usize>, Vec<u8>)>, arch: String) -> PyResult<NativeModel> {
        guarded(|| {
            let mut parsed = Vec::with_capacity(tensors.len());
            for (name, shape, bytes) in tensors {
                let values: Vec<f32> =
                    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                if values.len() != shape.iter().product::<usize>() || bytes.len() % 4 != 0 {
                    return Err(InputError::new_err(format!(
                        "tensor '{name}': {} bytes of f32 values do not fill shape {shape:?}",
                        bytes.len()
                    )));
                }
                parsed.push((name, shape, values));
            }
            session::model_from_tensors(&parsed, &arch).map(|model| NativeModel { model }).map_err(to_py)
        })
    }

    /// The architecture's name.
    #[getter]
    fn arch(&self) -> String {
        self.model.spec().name.clone()
    }

    /// The architecture spec as JSON.
    fn spec_json(&self) -> PyResult<String> {
        serde_json::to_string(self.model.spec()).map_err(|e| HyperpruneError::new_err(e.to_string()))
    }

    /// Every parameter as `(name, shape, prunable, little-endian f32 bytes)`.
    fn tensors<'py>(&self, py: Python<'py>) -> Vec<(String, Vec<usize>, bool, Bound<'py, PyBytes>)> {
        self.model
            .params()
            .iter()
            .zip(self.model.values())
            .map(|(p, v)| {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                (p.name.clone(), p.shape.clone(), p.prunable, PyBytes::new(py, &bytes))
            })
            .collect()
    }

    /// A copy with keep masks `(name, u8 bytes)` applied to its prunable layers (every
    /// prunable layer must be named).
    fn masked(&self, masks: Vec<(String, Vec<u8>)>) -> PyResult<NativeModel> {
        guarded(|| {
            let mut keep = Vec::new();
            for (p, w) in self.model.prunable() {
                let Some((_, bytes)) = masks.iter().find(|(n, _)| n == &p.name) else {
                    return Err(InputError::new_err(format!("masks: no mask for prunable layer '{}'", p.name)));
                };
                if bytes.len() != w.len() {
                    return Err(InputError::new_err(format!(
                        "masks: layer '{}' has {} weights, its mask {} values",
                        p.name,
                        w.len(),
                        bytes.len()
                    )));
                }
                keep.push(bytes.iter().map(|&b| b != 0).collect::<Vec<bool>>());
            }
            let mut model = self.model.clone();
            model.apply_masks(&keep, None).map_err(InputError::new_err)?;
            Ok(NativeModel { model })
        })
    }
}

/// A pruned layer as Python sees it: `(name, shape, mask bytes, new weight bytes or None)`.
type LayerTuple<'py> = (String, Vec<usize>, Bound<'py, PyBytes>, Option<Bound<'py, PyBytes>>);

/// Prunes `model`; returns a dict with `layers` (`(name, shape, mask bytes, new weight bytes
/// or None)`), `model`, `sparsity`, `seconds`, `pruner`, `version`.
#[pyfunction]
#[pyo3(signature = (model, pruner, sparsity, scope, pattern, options, seed, dataset, data_dir, calib_samples))]
#[allow(clippy::too_many_arguments)]
fn prune<'py>(
    py: Python<'py>,
    model: &NativeModel,
    pruner: String,
    sparsity: f64,
    scope: &str,
    pattern: String,
    options: Vec<String>,
    seed: u64,
    dataset: Option<String>,
    data_dir: Option<PathBuf>,
    calib_samples: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let scope = match scope {
        "global" => ScopeArg::Global,
        "layer" => ScopeArg::Layer,
        other => return Err(InputError::new_err(format!("scope must be 'global' or 'layer', got '{other}'"))),
    };
    let settings = PruneSettings { pruner, sparsity, scope, pattern, options, seed, dataset, data_dir, calib_samples };
    let pruned = py
        .detach(|| guarded(|| with_plugins(|p| session::prune(&p.registry, &model.model, &settings).map_err(to_py))))?;
    let dict = PyDict::new(py);
    let layers: Vec<LayerTuple<'py>> = pruned
        .layers
        .iter()
        .map(|l| {
            let weights = l.new_weights.as_ref().map(|w| {
                let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
                PyBytes::new(py, &bytes)
            });
            (l.name.clone(), l.shape.clone(), PyBytes::new(py, &l.keep), weights)
        })
        .collect();
    dict.set_item("layers", layers)?;
    dict.set_item("model", NativeModel { model: pruned.model })?;
    dict.set_item("sparsity", pruned.sparsity)?;
    dict.set_item("seconds", pruned.seconds)?;
    dict.set_item("pruner", pruned.pruner)?;
    dict.set_item("version", pruned.version)?;
    Ok(dict)
}

/// Test-split accuracy, loss and sample count of `model` on `dataset`.
#[pyfunction]
#[pyo3(signature = (model, dataset, data_dir=None))]
fn evaluate(
    py: Python<'_>,
    model: &NativeModel,
    dataset: String,
    data_dir: Option<PathBuf>,
) -> PyResult<(f64, f64, usize)> {
    let scores = py.detach(|| guarded(|| session::evaluate(&model.model, &dataset, data_dir).map_err(to_py)))?;
    Ok((scores.accuracy, scores.loss, scores.samples))
}

/// The module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("HyperpruneError", m.py().get_type::<HyperpruneError>())?;
    m.add("InputError", m.py().get_type::<InputError>())?;
    m.add("PluginError", m.py().get_type::<PluginError>())?;
    m.add_class::<NativeModel>()?;
    m.add_function(wrap_pyfunction!(set_plugin_dirs, m)?)?;
    m.add_function(wrap_pyfunction!(plugins, m)?)?;
    m.add_function(wrap_pyfunction!(load_plugin, m)?)?;
    m.add_function(wrap_pyfunction!(unknown_plugin, m)?)?;
    m.add_function(wrap_pyfunction!(prune, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    Ok(())
}

//! `hyperprune._native`: the Rust half of the `hyperprune` Python module.
//!
//! A thin layer over `hyperprune_host::session`: every call is the host's own code path
//! (the one `hyperprune prune --isolate none` and `hyperprune eval` take). Arrays cross as
//! little-endian bytes plus a shape, so this crate needs no numpy bindings; the pure-Python
//! package (`hyperprune/__init__.py`) turns them into numpy arrays and back.
//!
//! Key decisions:
//! - No Rust panic reaches Python. Every entry point runs under `catch_unwind` and turns a
//!   panic into `HyperpruneError`; the host's bad-input errors (its one-line messages) become
//!   `InputError`, a plugin's failure `PluginError`.
//! - Long calls (prune, evaluate, fit, bench, zoo training) run on a call thread while the
//!   caller's thread waits with the GIL released. Every tenth of a second (and at the end) it
//!   takes the GIL to hand the host's log events and progress to Python (`set_log_sink`) and
//!   to check for Ctrl-C: a `KeyboardInterrupt` sets the plugin's `cancelled()` and the
//!   host's interrupt flag, waits for the call to return, then raises. Call threads are kept
//!   between calls, and both sides poll for a millisecond before they block, so a prune of a
//!   small network pays no thread start and no wake-up (`scripts/python_overhead.py`).

mod logs;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyperprune_core::Model;
use hyperprune_core::dataset::Samples;
use hyperprune_host::bn_stats::BnStats;
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

/// A job for a call thread: runs the call and stores its result where the caller reads it.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// A call thread's queue: jobs, each with the channel that hears of its end.
type Queue = std::sync::mpsc::Sender<(Job, std::sync::mpsc::Sender<()>)>;

/// Idle call threads, each waiting on its own queue: a long call takes one (or starts one),
/// and the thread puts itself back when the call is done, so a short call (a prune of a small
/// network takes a tenth of a millisecond) pays no thread start.
static IDLE: Mutex<Vec<Queue>> = Mutex::new(Vec::new());

/// Runs `job` on an idle call thread (or a new one); `done` receives `()` once `job` has
/// returned and the thread is idle again.
fn submit(job: Job, done: std::sync::mpsc::Sender<()>) {
    let idle = IDLE.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let mut pending = (job, done);
    if let Some(queue) = idle {
        match queue.send(pending) {
            Ok(()) => return,
            Err(std::sync::mpsc::SendError(back)) => pending = back,
        }
    }
    let (queue, jobs) = std::sync::mpsc::channel::<(Job, std::sync::mpsc::Sender<()>)>();
    let me = queue.clone();
    let spawned = std::thread::Builder::new().name("hyperprune-call".into()).spawn(move || {
        let mut next = jobs.recv().ok();
        while let Some((job, done)) = next.take() {
            job();
            IDLE.lock().unwrap_or_else(|e| e.into_inner()).push(me.clone());
            let _ = done.send(());
            // Calls come in runs (a prune per sparsity, per layer, per model): stay awake a
            // moment for the next one before blocking.
            let spin = std::time::Instant::now();
            while next.is_none() && spin.elapsed() < SPIN {
                match jobs.try_recv() {
                    Ok(job) => next = Some(job),
                    Err(std::sync::mpsc::TryRecvError::Empty) => std::hint::spin_loop(),
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                }
            }
            if next.is_none() {
                next = jobs.recv().ok();
            }
        }
    });
    match spawned {
        Ok(_) => queue.send(pending).unwrap_or_else(|_| unreachable!("the new thread holds its queue")),
        // No thread to be had: run it here (the GIL is held, Ctrl-C is seen afterwards).
        Err(_) => {
            let (job, done) = pending;
            job();
            let _ = done.send(());
        }
    }
}

/// How long the waiting thread polls for the end of a call before it blocks.
const SPIN: Duration = Duration::from_millis(1);

/// Blocks until the call thread reports `done`, also when dropped during an unwind: the
/// job borrows the caller's stack, so the caller must never leave before it ends.
struct Join {
    // In a mutex because the GIL-free wait borrows it, which needs a `Sync` capture.
    done: Mutex<std::sync::mpsc::Receiver<()>>,
    finished: bool,
}

impl Drop for Join {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.done.lock().unwrap_or_else(|e| e.into_inner()).recv();
        }
    }
}

/// Runs `work` on a call thread with the GIL released; meanwhile hands the host's log events
/// to Python and checks for Ctrl-C (see the module's key decisions). `work` gets the flag a
/// plugin's `cancelled()` reads.
fn run_long<T: Send>(py: Python<'_>, work: impl FnOnce(&AtomicBool) -> PyResult<T> + Send) -> PyResult<T> {
    hyperprune_host::isolation::clear_interrupt();
    let cancel = AtomicBool::new(false);
    let slot: Mutex<Option<PyResult<T>>> = Mutex::new(None);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let job: Box<dyn FnOnce() + Send + '_> = Box::new(|| {
        let result = guarded(|| work(&cancel));
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
    });
    // SAFETY: the job borrows `cancel`, `slot` and `work`'s captures from this frame. `join`
    // (declared after them, so dropped before them) blocks until the call thread reports the
    // job done, on every way out of this function, an unwind included; so the borrows end
    // before the frame does, as with `std::thread::scope`.
    let job: Job = unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + '_>, Job>(job) };
    let mut join = Join { done: Mutex::new(done_rx), finished: false };
    submit(job, done_tx);
    let mut interrupted: Option<PyErr> = None;
    loop {
        let finished = py.detach(|| {
            let done = join.done.lock().unwrap_or_else(|e| e.into_inner());
            // A short call (a prune of a small network) ends within a millisecond: wait for it
            // awake rather than pay the wake-up of a blocked thread, a sizable part of its cost.
            let spin = std::time::Instant::now();
            while spin.elapsed() < SPIN {
                match done.try_recv() {
                    Ok(()) | Err(std::sync::mpsc::TryRecvError::Disconnected) => return true,
                    Err(std::sync::mpsc::TryRecvError::Empty) => std::hint::spin_loop(),
                }
            }
            match done.recv_timeout(Duration::from_millis(100)) {
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => true,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => false,
            }
        });
        // A Ctrl-C surfaces either from the log sink (Python runs its signal handler in the
        // next Python code, often the sink) or from `check_signals`.
        let signal = logs::flush(py).and_then(|()| py.check_signals());
        if interrupted.is_none()
            && let Err(err) = signal
        {
            cancel.store(true, Ordering::SeqCst);
            hyperprune_host::isolation::interrupt();
            interrupted = Some(err);
        }
        if finished {
            break;
        }
    }
    join.finished = true;
    let result = slot
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_else(|| Err(HyperpruneError::new_err("internal error: a call thread died")));
    if let Err(err) = logs::flush(py)
        && interrupted.is_none()
    {
        interrupted = Some(err);
    }
    match interrupted {
        Some(err) => Err(err),
        None => result,
    }
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

/// Calibration or evaluation arrays from Python: `(f32 little-endian image bytes, [n, c, h,
/// w], labels)`.
type Arrays = (Vec<u8>, Vec<usize>, Vec<u32>);

fn samples_of(arrays: Arrays) -> PyResult<Samples> {
    let (bytes, shape, labels) = arrays;
    let [n, c, h, w] = shape[..] else {
        return Err(InputError::new_err(format!(
            "images: expected an array of shape (n, channels, height, width), got {} dimensions",
            shape.len()
        )));
    };
    if bytes.len() != 4 * n * c * h * w || labels.len() != n {
        return Err(InputError::new_err(format!(
            "images and labels: {} labels for {n} images of shape ({c}, {h}, {w})",
            labels.len()
        )));
    }
    let images = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Ok(Samples { shape: [c, h, w], images, labels })
}

/// Prunes `model`; returns a dict with `layers` (`(name, shape, mask bytes, new weight bytes
/// or None)`), `model`, `sparsity`, `seconds`, `host_seconds`, `pruner`, `version`.
#[pyfunction]
#[pyo3(signature = (model, pruner, sparsity, scope, pattern, options, seed, dataset, data_dir, calib_samples,
                    arrays=None, bn_correct=false, bn_recalibrate=None, isolate=None))]
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
    arrays: Option<Arrays>,
    bn_correct: bool,
    bn_recalibrate: Option<u64>,
    isolate: Option<(f64, Option<u64>)>,
) -> PyResult<Bound<'py, PyDict>> {
    let scope = match scope {
        "global" => ScopeArg::Global,
        "layer" => ScopeArg::Layer,
        other => return Err(InputError::new_err(format!("scope must be 'global' or 'layer', got '{other}'"))),
    };
    let arrays = arrays.map(samples_of).transpose()?;
    let bn = BnStats::from_args(bn_correct, bn_recalibrate).map_err(|_| {
        InputError::new_err("bn_correct and bn_recalibrate are two ways to fix the same statistics: give one")
    })?;
    let settings = PruneSettings {
        pruner,
        sparsity,
        scope,
        pattern,
        options,
        seed,
        dataset,
        data_dir,
        calib_samples,
        arrays,
        bn,
        isolate,
    };
    let pruned = run_long(py, |cancel| {
        with_plugins(|p| session::prune(&p.registry, &model.model, &settings, cancel).map_err(to_py))
    })?;
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
    dict.set_item("host_seconds", pruned.host_seconds)?;
    dict.set_item("pruner", pruned.pruner)?;
    dict.set_item("version", pruned.version)?;
    Ok(dict)
}

/// Test-split accuracy, loss and sample count of `model` on `dataset` (a name), or on the
/// caller's `arrays`.
#[pyfunction]
#[pyo3(signature = (model, dataset, data_dir=None, arrays=None))]
fn evaluate(
    py: Python<'_>,
    model: &NativeModel,
    dataset: Option<String>,
    data_dir: Option<PathBuf>,
    arrays: Option<Arrays>,
) -> PyResult<(f64, f64, usize)> {
    let arrays = arrays.map(samples_of).transpose()?;
    let scores = run_long(py, |_| {
        match (arrays, dataset) {
            (Some(samples), _) => session::evaluate_arrays(&model.model, samples),
            (None, Some(name)) => session::evaluate(&model.model, &name, data_dir),
            (None, None) => {
                Err(hyperprune_host::failure::bad_input("dataset: give a dataset name or (images, labels)"))
            }
        }
        .map_err(to_py)
    })?;
    Ok((scores.accuracy, scores.loss, scores.samples))
}

/// Runs a `hyperprune` command line (without the program name) in this process, as the
/// binary would, plugins from the folders and files set here; what it prints goes to this
/// process's standard output.
#[pyfunction]
fn run_command(py: Python<'_>, args: Vec<String>) -> PyResult<()> {
    use clap::Parser;
    // The plugins this module found (one file a name), as explicit plugin files.
    let files: Vec<PathBuf> = with_plugins(|p| Ok(p.registry.plugins.iter().map(|pl| pl.path.clone()).collect()))?;
    let mut argv = vec!["hyperprune".to_string(), "-q".to_string()];
    for file in files {
        argv.push("--plugin".into());
        argv.push(file.display().to_string());
    }
    argv.extend(args);
    let cli = hyperprune_host::cli::Cli::try_parse_from(&argv).map_err(|e| {
        let rendered = e.render().to_string();
        InputError::new_err(
            rendered.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ").to_string(),
        )
    })?;
    run_long(py, |_| hyperprune_host::commands::run(cli).map_err(to_py))
}

/// A registered dataset's splits as `(name, classes, normalisation, train, test)`, each split
/// `(f32 little-endian image bytes, [n, c, h, w], labels)`.
#[pyfunction]
#[pyo3(signature = (name, data_dir=None))]
#[allow(clippy::type_complexity)]
fn dataset_arrays<'py>(
    py: Python<'py>,
    name: String,
    data_dir: Option<PathBuf>,
) -> PyResult<(
    String,
    usize,
    String,
    (Bound<'py, PyBytes>, Vec<usize>, Vec<u32>),
    (Bound<'py, PyBytes>, Vec<usize>, Vec<u32>),
)> {
    let data = run_long(py, |_| {
        hyperprune_host::inputs::dataset(&hyperprune_host::cli::DataArgs { dataset: name, data_dir }).map_err(to_py)
    })?;
    let split = |s: &Samples| {
        let bytes: Vec<u8> = s.images.iter().flat_map(|x| x.to_le_bytes()).collect();
        let [c, h, w] = s.shape;
        (PyBytes::new(py, &bytes), vec![s.len(), c, h, w], s.labels.clone())
    };
    Ok((data.name.clone(), data.classes, data.normalisation.clone(), split(&data.train), split(&data.test)))
}

/// A zoo's `zoo.json` (checked as every command checks it), as JSON.
#[pyfunction]
fn zoo_meta(path: PathBuf) -> PyResult<String> {
    guarded(|| {
        let zoo = hyperprune_core::zoo::Zoo::open(&path)
            .map_err(|e| InputError::new_err(format!("{}: {e}", path.display())))?;
        serde_json::to_string(zoo.meta()).map_err(|e| HyperpruneError::new_err(e.to_string()))
    })
}

/// Names the `hyperprune` executable that serves isolated calls (`isolate=True`).
#[pyfunction]
fn set_worker_executable(path: PathBuf) {
    hyperprune_host::isolation::set_worker_executable(path);
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
    m.add_function(wrap_pyfunction!(run_command, m)?)?;
    m.add_function(wrap_pyfunction!(zoo_meta, m)?)?;
    m.add_function(wrap_pyfunction!(dataset_arrays, m)?)?;
    m.add_function(wrap_pyfunction!(set_worker_executable, m)?)?;
    m.add_function(wrap_pyfunction!(logs::set_log_sink, m)?)?;
    logs::install();
    // Ctrl-C stays Python's KeyboardInterrupt: `run_long` turns it into the host's flag.
    hyperprune_host::isolation::leave_sigint_to_embedding();
    Ok(())
}

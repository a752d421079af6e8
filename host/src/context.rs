//! The host side of the SDK `Context`: logging and progress for plugins, and the data
//! services (layer Hessians, per-sample gradients, masked loss, evaluation) computed by
//! core's engine on the run's dataset. Every callback catches panics, so a host bug
//! becomes an error returned to the plugin, never an unwind across the ABI.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use abi_stable::std_types::{RResult, RSlice, RStr};
use hyperprune_core::Model;
use hyperprune_core::dataset::{Dataset, Samples};
use hyperprune_core::engine::Engine;
use hyperprune_sdk::ffi::panic_message;
use hyperprune_sdk::{
    CalibRequest, Context, DataSplit, ErrorKind, Evaluation, LogLevel, LossAndGrad, Matrix, ModelRef, PluginError,
};

/// The engine and dataset behind the data services.
#[derive(Clone, Copy)]
pub struct DataServices<'a> {
    /// Runs the networks.
    pub engine: &'a dyn Engine,
    /// Calibration samples come from its train split; never from its test split.
    pub dataset: &'a Dataset,
}

/// The context handed to one plugin call.
pub struct HostContext<'a> {
    plugin: String,
    data: Option<DataServices<'a>>,
    cancel: &'a AtomicBool,
    /// Largest number of calibration samples any service used in this call.
    calib_used: AtomicU64,
    /// Samples used when a plugin asks for 0 ("the host's default").
    default_samples: u64,
}

impl<'a> HostContext<'a> {
    /// A context for plugin `plugin`, with data services when `data` is given.
    pub fn new(plugin: &str, data: Option<DataServices<'a>>, cancel: &'a AtomicBool) -> HostContext<'a> {
        HostContext { plugin: plugin.to_string(), data, cancel, calib_used: AtomicU64::new(0), default_samples: 1024 }
    }

    /// Sets how many calibration samples a request for 0 samples gets (`--calib-samples`).
    pub fn with_default_samples(mut self, samples: u64) -> HostContext<'a> {
        self.default_samples = samples;
        self
    }

    /// The largest number of calibration samples a data service used so far.
    pub fn calibration_samples_used(&self) -> u64 {
        self.calib_used.load(Ordering::Relaxed)
    }

    fn service<T>(&self, name: &str, f: impl FnOnce(DataServices<'a>) -> Result<T, String>) -> RResult<T, PluginError> {
        let Some(data) = self.data else {
            return RResult::RErr(PluginError::new(
                ErrorKind::Unavailable,
                format!(
                    "host service '{name}' is not available in this run: give a dataset (--dataset) to use data-aware pruners"
                ),
            ));
        };
        match catch_unwind(AssertUnwindSafe(|| f(data))) {
            Ok(Ok(v)) => RResult::ROk(v),
            Ok(Err(message)) => RResult::RErr(PluginError::new(ErrorKind::Failed, format!("{name}: {message}"))),
            Err(payload) => RResult::RErr(PluginError::new(
                ErrorKind::Failed,
                format!("{name}: the host panicked: {}", panic_message(payload.as_ref())),
            )),
        }
    }

    fn calibration(&self, data: &Samples, calib: CalibRequest) -> Samples {
        let n = if calib.samples == 0 { self.default_samples } else { calib.samples };
        let samples = calibration_subset(data, n as usize, calib.seed);
        self.calib_used.fetch_max(samples.len() as u64, Ordering::Relaxed);
        samples
    }
}

/// `n` samples drawn without replacement by a seeded shuffle (all when `n` is 0 or larger
/// than the split). Equal seeds give equal subsets. Calibration data always comes from a
/// dataset's train split, never from its test split.
pub fn calibration_subset(data: &Samples, n: usize, seed: u64) -> Samples {
    let total = data.len();
    let n = if n == 0 { total } else { n.min(total) };
    let mut rng = hyperprune_sdk::rng::SplitMix64::new(seed ^ 0xC0FF_EE00_D1CE_5EED);
    let mut idx: Vec<usize> = (0..total).collect();
    for i in 0..n {
        let j = i + (rng.next_u64() % (total - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(n);
    data.subset(&idx)
}

fn model_from(view: &ModelRef<'_>) -> Result<Model, String> {
    Model::from_ref(view).map_err(|e| e.to_string())
}

impl Context for HostContext<'_> {
    fn log(&self, level: LogLevel, message: RStr<'_>) {
        let plugin = &self.plugin;
        match level {
            // A bench prunes hundreds of times: a plugin's per-call info lines show with -v.
            LogLevel::Debug => tracing::trace!("[{plugin}] {message}"),
            LogLevel::Info => tracing::debug!("[{plugin}] {message}"),
            LogLevel::Warn => tracing::warn!("[{plugin}] {message}"),
        }
    }

    fn progress(&self, done: u64, total: u64) {
        tracing::trace!("[{}] progress {done}/{total}", self.plugin);
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    fn layer_input_hessian(
        &self,
        model: ModelRef<'_>,
        layer: u32,
        calib: CalibRequest,
    ) -> RResult<Matrix<f64>, PluginError> {
        self.service("layer_input_hessian", |d| {
            let model = model_from(&model)?;
            let samples = self.calibration(&d.dataset.train, calib);
            let (m, _n) = d.engine.layer_input_hessian(&model, layer as usize, &samples).map_err(|e| e.to_string())?;
            Ok(Matrix { rows: m.rows as u64, cols: m.cols as u64, data: m.data.into() })
        })
    }

    fn per_sample_gradients(&self, model: ModelRef<'_>, calib: CalibRequest) -> RResult<Matrix<f32>, PluginError> {
        self.service("per_sample_gradients", |d| {
            let model = model_from(&model)?;
            let samples = self.calibration(&d.dataset.train, calib);
            let m = d
                .engine
                .per_sample_gradients(&model, &samples, calib.minibatch.max(1) as usize)
                .map_err(|e| e.to_string())?;
            Ok(Matrix { rows: m.rows as u64, cols: m.cols as u64, data: m.data.into() })
        })
    }

    fn masked_loss_and_grad(
        &self,
        model: ModelRef<'_>,
        soft_mask: RSlice<'_, f32>,
        calib: CalibRequest,
    ) -> RResult<LossAndGrad, PluginError> {
        self.service("masked_loss_and_grad", |d| {
            let model = model_from(&model)?;
            let samples = self.calibration(&d.dataset.train, calib);
            let (loss, grad) =
                d.engine.masked_loss_and_grad(&model, soft_mask.as_slice(), &samples).map_err(|e| e.to_string())?;
            Ok(LossAndGrad { loss, grad: grad.into() })
        })
    }

    fn evaluate(&self, model: ModelRef<'_>, split: DataSplit, samples: u64) -> RResult<Evaluation, PluginError> {
        self.service("evaluate", |d| {
            let model = model_from(&model)?;
            let data = match split {
                DataSplit::Train => self.calibration(&d.dataset.train, CalibRequest { samples, minibatch: 1, seed: 0 }),
                DataSplit::Test => d.dataset.test.head(if samples == 0 { usize::MAX } else { samples as usize }),
            };
            let e = d.engine.evaluate(&[&model], &data).map_err(|e| e.to_string())?;
            let e = e.first().ok_or("the engine returned no evaluation")?;
            Ok(Evaluation { accuracy: e.accuracy, loss: e.loss, samples: e.samples as u64 })
        })
    }
}

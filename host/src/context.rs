//! The host side of the SDK `Context`: logging and progress for plugins, the data services
//! (layer Hessians, per-sample gradients, masked loss and distillation, evaluation, input
//! moments) computed by core's engine on the run's dataset, the data-free synaptic flow
//! (SynFlow's score, core's `synflow`) and distillation on inputs the plugin supplies, and a
//! fit's curve rows and checkpoints. Every callback
//! catches panics, so a host bug becomes an error returned to the plugin, never an unwind
//! across the ABI.
//!
//! Whether a call gets data is the host's decision, not a convention: a pruner that declared
//! it needs no data gets a context whose data services all answer `Unavailable`. The
//! synaptic flow and the distillation on supplied inputs read no data, so every context
//! answers them, in every run (without data services, on a CPU engine of its own).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use abi_stable::std_types::{RResult, RSlice, RStr, RVec};
use hyperprune_core::Model;
use hyperprune_core::dataset::Samples;
use hyperprune_core::engine::Engine;
use hyperprune_sdk::ffi::panic_message;
use hyperprune_sdk::{
    CalibRequest, Context, DataSplit, ErrorKind, Evaluation, InputMoments, LogLevel, LossAndGrad, Matrix, ModelRef,
    PluginError,
};

use crate::calibration::TrainSplit;
use crate::fit_sink::FitSink;

/// The engine and data behind the data services.
#[derive(Clone, Copy)]
pub struct DataServices<'a> {
    /// Runs the networks.
    pub engine: &'a dyn Engine,
    /// The dataset's train split, cut into calibration samples and the val slice; the test
    /// split never reaches a plugin.
    pub split: &'a TrainSplit<'a>,
}

/// What the data services of one call answer.
#[derive(Clone)]
enum DataAccess<'a> {
    /// Computed on this engine and data.
    Served(DataServices<'a>),
    /// The run has no dataset (`hyperprune prune` without `--dataset`).
    NoDataset,
    /// The pruner declared it needs none; the message says so.
    Declined(String),
}

/// The context handed to one plugin call.
pub struct HostContext<'a> {
    plugin: String,
    data: DataAccess<'a>,
    cancel: &'a AtomicBool,
    /// Largest number of calibration samples any service used in this call.
    calib_used: AtomicU64,
    /// Samples used when a plugin asks for 0 ("the host's default").
    default_samples: u64,
    /// Where `record` and `checkpoint` go while fitting.
    fit: Option<&'a FitSink>,
    /// The CPU engine of the data-free distillation when the call has no data services,
    /// made on first use.
    own_engine: OnceLock<Box<dyn Engine>>,
}

impl<'a> HostContext<'a> {
    /// A context for plugin `plugin`, with data services when `data` is given.
    pub fn new(plugin: &str, data: Option<DataServices<'a>>, cancel: &'a AtomicBool) -> HostContext<'a> {
        HostContext {
            plugin: plugin.to_string(),
            data: data.map_or(DataAccess::NoDataset, DataAccess::Served),
            cancel,
            calib_used: AtomicU64::new(0),
            default_samples: 1024,
            fit: None,
            own_engine: OnceLock::new(),
        }
    }

    /// Refuses every data service, whether or not the run has data: the pruner declared
    /// (in its capabilities, `what`) that it needs none.
    pub fn declining_data(mut self, what: &str) -> HostContext<'a> {
        self.data = DataAccess::Declined(format!("pruner '{}' declared it needs no data ({what})", self.plugin));
        self
    }

    /// Sends `record` and `checkpoint` to `sink` (a running fit).
    pub fn with_fit_sink(mut self, sink: &'a FitSink) -> HostContext<'a> {
        self.fit = Some(sink);
        self
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
        let data = match &self.data {
            DataAccess::Served(data) => *data,
            DataAccess::NoDataset => {
                return RResult::RErr(PluginError::unavailable(format!(
                    "host service '{name}' is not available in this run: give a dataset (--dataset) to use data-aware pruners"
                )));
            }
            DataAccess::Declined(why) => {
                return RResult::RErr(PluginError::unavailable(format!(
                    "host service '{name}' is not available: {why}; declare it in the pruner's capabilities to get data"
                )));
            }
        };
        guarded(name, || f(data))
    }

    /// `Unavailable` for service `name`, which reads labels, when this call is served
    /// synthetic inputs (whose labels mean nothing).
    fn refuse_labels<T>(&self, name: &str) -> Option<RResult<T, PluginError>> {
        match &self.data {
            DataAccess::Served(d) if d.split.is_synthetic() => Some(RResult::RErr(PluginError::unavailable(format!(
                "host service '{name}' is not available: this call is served synthetic inputs (fit_data=synthetic or \
                 calib_data=moments), which have no labels"
            )))),
            _ => None,
        }
    }

    /// The CPU engine this context makes on first use, for the services that read no data
    /// when the call has no data services.
    fn own_engine(&self) -> Result<&dyn Engine, String> {
        if let Some(e) = self.own_engine.get() {
            return Ok(e.as_ref());
        }
        let e = crate::engines::engine(crate::engines::EngineKind::Cpu, "cpu").map_err(|e| e.to_string())?;
        Ok(self.own_engine.get_or_init(|| e).as_ref())
    }

    fn calibration(&self, split: &TrainSplit<'_>, calib: CalibRequest) -> Samples {
        let n = if calib.samples == 0 { self.default_samples } else { calib.samples };
        let samples = split.calibration(n as usize, calib.seed);
        self.calib_used.fetch_max(samples.len() as u64, Ordering::Relaxed);
        samples
    }
}

/// Runs a host callback, turning its error into kind `Failed` and a panic into an error
/// naming the service.
fn guarded<T, E: std::fmt::Display>(name: &str, f: impl FnOnce() -> Result<T, E>) -> RResult<T, PluginError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(message)) => RResult::RErr(PluginError::new(ErrorKind::Failed, format!("{name}: {message}"))),
        Err(payload) => RResult::RErr(PluginError::new(
            ErrorKind::Failed,
            format!("{name}: the host panicked: {}", panic_message(payload.as_ref())),
        )),
    }
}

fn model_from(view: &ModelRef<'_>) -> Result<Model, String> {
    Model::from_ref(view).map_err(|e| e.to_string())
}

impl Context for HostContext<'_> {
    fn log(&self, level: LogLevel, message: RStr<'_>) {
        let plugin = &self.plugin;
        match (level, self.fit) {
            // A fit runs once and says what it chose: its info lines show, above the bar, and
            // its debug lines with -v.
            (LogLevel::Debug, Some(_)) => tracing::debug!("[{plugin}] {message}"),
            (LogLevel::Debug, None) => tracing::trace!("[{plugin}] {message}"),
            (LogLevel::Info, Some(sink)) => sink.info(&format!("[{plugin}] {message}")),
            // A bench prunes hundreds of times: a plugin's per-call info lines show with -v.
            (LogLevel::Info, None) => tracing::debug!("[{plugin}] {message}"),
            (LogLevel::Warn, _) => tracing::warn!("[{plugin}] {message}"),
        }
    }

    fn progress(&self, done: u64, total: u64) {
        tracing::trace!("[{}] progress {done}/{total}", self.plugin);
        match self.fit {
            Some(sink) => sink.progress(done, total),
            None => tracing::trace!(target: crate::logging::PROGRESS, done, total, unit = "steps"),
        }
    }

    fn cancelled(&self) -> bool {
        // The call's own flag, or Ctrl-C caught by the process (the command line's handler, or
        // an embedding's `isolation::interrupt`).
        self.cancel.load(Ordering::Relaxed) || crate::interrupt::interrupted()
    }

    fn layer_input_hessian(
        &self,
        model: ModelRef<'_>,
        layer: u32,
        calib: CalibRequest,
    ) -> RResult<Matrix<f64>, PluginError> {
        self.service("layer_input_hessian", |d| {
            let model = model_from(&model)?;
            let samples = self.calibration(d.split, calib);
            let (m, _n) = d.engine.layer_input_hessian(&model, layer as usize, &samples).map_err(|e| e.to_string())?;
            Ok(Matrix { rows: m.rows as u64, cols: m.cols as u64, data: m.data.into() })
        })
    }

    fn per_sample_gradients(&self, model: ModelRef<'_>, calib: CalibRequest) -> RResult<Matrix<f32>, PluginError> {
        if let Some(refused) = self.refuse_labels("per_sample_gradients") {
            return refused;
        }
        self.service("per_sample_gradients", |d| {
            let model = model_from(&model)?;
            let samples = self.calibration(d.split, calib);
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
        if let Some(refused) = self.refuse_labels("masked_loss_and_grad") {
            return refused;
        }
        self.service("masked_loss_and_grad", |d| {
            let model = model_from(&model)?;
            let samples = self.calibration(d.split, calib);
            let (loss, grad) =
                d.engine.masked_loss_and_grad(&model, soft_mask.as_slice(), &samples).map_err(|e| e.to_string())?;
            Ok(LossAndGrad { loss, grad: grad.into() })
        })
    }

    fn evaluate(&self, model: ModelRef<'_>, split: DataSplit, samples: u64) -> RResult<Evaluation, PluginError> {
        if let Some(refused) = self.refuse_labels("evaluate") {
            return refused;
        }
        self.service("evaluate", |d| {
            let model = model_from(&model)?;
            let data = match split {
                DataSplit::Train => self.calibration(d.split, CalibRequest { samples, minibatch: 1, seed: 0 }),
                DataSplit::Val => d.split.val(samples as usize),
            };
            if data.is_empty() {
                let which = if split == DataSplit::Val { "val slice" } else { "calibration part" };
                return Err(format!("the {which} of this dataset's train split is empty"));
            }
            let e = d.engine.evaluate(&[&model], &data).map_err(|e| e.to_string())?;
            let e = e.first().ok_or("the engine returned no evaluation")?;
            Ok(Evaluation { accuracy: e.accuracy, loss: e.loss, samples: e.samples as u64 })
        })
    }

    fn masked_distill_loss_and_grad(
        &self,
        model: ModelRef<'_>,
        soft_mask: RSlice<'_, f32>,
        calib: CalibRequest,
        temperature: f64,
    ) -> RResult<LossAndGrad, PluginError> {
        self.service("masked_distill_loss_and_grad", |d| {
            let model = model_from(&model)?;
            let samples = self.calibration(d.split, calib);
            let (loss, grad) = d
                .engine
                .masked_distill_loss_and_grad(&model, soft_mask.as_slice(), &samples, temperature)
                .map_err(|e| e.to_string())?;
            Ok(LossAndGrad { loss, grad: grad.into() })
        })
    }

    fn record(&self, row_json: RStr<'_>) {
        let Some(sink) = self.fit else { return };
        if let RResult::RErr(e) = guarded("record", || sink.record(row_json.as_str())) {
            tracing::warn!("[{}] {e}", self.plugin);
        }
    }

    fn checkpoint(&self, state: RSlice<'_, u8>) -> RResult<(), PluginError> {
        match self.fit {
            Some(sink) => guarded("checkpoint", || sink.checkpoint(state.as_slice())),
            None => RResult::RErr(PluginError::unavailable(
                "host service 'checkpoint' is only available while fitting (`hyperprune fit`)",
            )),
        }
    }

    fn input_moments(&self, calib: CalibRequest) -> RResult<InputMoments, PluginError> {
        self.service("input_moments", |d| {
            let samples = self.calibration(d.split, calib);
            if samples.is_empty() {
                return Err("the calibration part of this dataset's train split is empty".into());
            }
            Ok(moments(&samples))
        })
    }

    fn masked_distill_on_inputs(
        &self,
        model: ModelRef<'_>,
        soft_mask: RSlice<'_, f32>,
        inputs: RSlice<'_, f32>,
        images: u64,
        temperature: f64,
    ) -> RResult<LossAndGrad, PluginError> {
        // No data (the plugin brings the inputs): answered whatever the run's dataset and
        // the pruner's declaration.
        guarded("masked_distill_on_inputs", || {
            let model = model_from(&model)?;
            let shape = model.spec().input;
            let per_image = shape.iter().product::<usize>();
            let n = images as usize;
            if n == 0 || inputs.len() != n * per_image {
                return Err(format!(
                    "inputs: expected {n} images of the model's {}x{}x{} = {per_image} values ({} in all), got {} \
                     values",
                    shape[0],
                    shape[1],
                    shape[2],
                    n * per_image,
                    inputs.len()
                ));
            }
            if let Some(i) = inputs.iter().position(|v| !v.is_finite()) {
                return Err(format!("inputs: value {i} is not finite"));
            }
            let samples = Samples { shape, images: inputs.to_vec(), labels: vec![0; n] };
            let engine = match &self.data {
                DataAccess::Served(d) => d.engine,
                _ => self.own_engine()?,
            };
            let (loss, grad) = engine
                .masked_distill_loss_and_grad(&model, soft_mask.as_slice(), &samples, temperature)
                .map_err(|e| e.to_string())?;
            Ok(LossAndGrad { loss, grad: grad.into() })
        })
    }

    fn synaptic_flow(&self, model: ModelRef<'_>, keep: RSlice<'_, u8>) -> RResult<RVec<f64>, PluginError> {
        // No data: answered whatever the run's dataset and the pruner's declaration.
        guarded("synaptic_flow", || {
            let model = model_from(&model)?;
            let keep: Vec<bool> = keep.iter().map(|&k| k != 0).collect();
            hyperprune_core::synflow::synaptic_flow(&model, &keep).map(RVec::from).map_err(|e| e.to_string())
        })
    }
}

/// The mean and the (uncentred) second moment of the flattened images of `samples`.
fn moments(samples: &Samples) -> InputMoments {
    let d = samples.image_len() as u64;
    let (mean, second) = samples.moments();
    InputMoments {
        mean: mean.into(),
        second: Matrix { rows: d, cols: d, data: second.into() },
        samples: samples.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_model() -> ModelRef<'static> {
        ModelRef {
            arch_json: RStr::from_str("{}"),
            layers: RSlice::from_slice(&[]),
            others: RSlice::from_slice(&[]),
            nodes: RSlice::from_slice(&[]),
        }
    }

    /// A `cnn-digits` model with seeded uniform weights.
    fn digits_model() -> Model {
        let spec = hyperprune_core::preset("cnn-digits").unwrap();
        hyperprune_core::engine::init_model(&spec, hyperprune_core::engine::Init::Uniform, 3).unwrap()
    }

    #[test]
    fn a_context_declining_data_refuses_every_data_service_and_says_why() {
        let cancel = AtomicBool::new(false);
        let ctx = HostContext::new("p", None, &cancel).declining_data("capabilities.needs_data is false");
        let calib = CalibRequest { samples: 4, minibatch: 1, seed: 0 };
        let errors = [
            ctx.layer_input_hessian(empty_model(), 0, calib).unwrap_err(),
            ctx.per_sample_gradients(empty_model(), calib).unwrap_err(),
            ctx.masked_loss_and_grad(empty_model(), RSlice::from_slice(&[]), calib).unwrap_err(),
            ctx.masked_distill_loss_and_grad(empty_model(), RSlice::from_slice(&[]), calib, 1.0).unwrap_err(),
            ctx.evaluate(empty_model(), DataSplit::Val, 0).unwrap_err(),
            ctx.input_moments(calib).unwrap_err(),
        ];
        for e in errors {
            assert!(e.is_unavailable() && e.message.contains("pruner 'p' declared it needs no data"), "{e}");
        }
        ctx.record(RStr::from_str("{}"));
        assert!(ctx.checkpoint(RSlice::from_slice(b"x")).unwrap_err().is_unavailable());
        assert_eq!(ctx.calibration_samples_used(), 0);
    }

    #[test]
    fn a_call_served_moment_matched_inputs_refuses_the_services_that_read_labels() {
        let cancel = AtomicBool::new(false);
        let engine = crate::engines::engine(crate::engines::EngineKind::Cpu, "cpu").unwrap();
        let mut rng = hyperprune_sdk::rng::SplitMix64::new(2);
        let images = (0..40 * 64).map(|_| rng.next_f32()).collect();
        let train = Samples { shape: [1, 8, 8], images, labels: vec![1; 40] };
        let split = TrainSplit::new(&train).moment_matched();
        let ctx = HostContext::new("obs", Some(DataServices { engine: engine.as_ref(), split: &split }), &cancel);
        let model = digits_model();
        let ones = vec![1.0f32; model.prunable_count()];
        let calib = CalibRequest { samples: 16, minibatch: 1, seed: 0 };
        hyperprune_core::model_ref(&model, |view| {
            let errors = [
                ctx.per_sample_gradients(view, calib).unwrap_err(),
                ctx.masked_loss_and_grad(view, RSlice::from_slice(&ones), calib).unwrap_err(),
                ctx.evaluate(view, DataSplit::Val, 0).unwrap_err(),
            ];
            for e in errors {
                assert!(e.is_unavailable() && e.message.contains("no labels"), "{e}");
            }
            // The services that read inputs only answer, from the synthetic inputs.
            let distill = ctx.masked_distill_loss_and_grad(view, RSlice::from_slice(&ones), calib, 1.0).unwrap();
            assert!(
                distill.loss.abs() < 1e-6 && distill.grad.len() == ones.len(),
                "an all-ones mask is the dense model"
            );
            assert!(ctx.layer_input_hessian(view, 0, calib).is_ok());
        });
        let moments = ctx.input_moments(calib).unwrap();
        assert_eq!(moments.samples, 16);
        assert_eq!(ctx.calibration_samples_used(), 16);
    }

    #[test]
    fn the_synaptic_flow_is_answered_without_data_and_checks_the_mask() {
        let cancel = AtomicBool::new(false);
        let ctx = HostContext::new("synflow", None, &cancel).declining_data("capabilities.needs_data is false");
        let model = digits_model();
        let n = model.prunable_count();
        let mut keep = vec![1u8; n];
        keep[0] = 0;
        let scores = hyperprune_core::model_ref(&model, |view| ctx.synaptic_flow(view, RSlice::from_slice(&keep)))
            .unwrap()
            .into_vec();
        let direct = hyperprune_core::synflow::synaptic_flow(&model, &keep.iter().map(|&k| k != 0).collect::<Vec<_>>());
        assert_eq!(scores, direct.unwrap());
        assert_eq!(scores[0], 0.0);
        assert!(scores[1..].iter().all(|s| *s > 0.0));
        let e = hyperprune_core::model_ref(&model, |view| ctx.synaptic_flow(view, RSlice::from_slice(&keep[1..])))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Failed);
        assert!(e.message.starts_with("synaptic_flow: the keep mask has") && e.message.contains(&n.to_string()), "{e}");
    }

    #[test]
    fn the_distillation_on_supplied_inputs_is_answered_without_data_and_checks_the_inputs() {
        let cancel = AtomicBool::new(false);
        let ctx = HostContext::new("hypernet", None, &cancel).declining_data("capabilities.needs_data is false");
        let model = digits_model();
        let n = model.prunable_count();
        let mut rng = hyperprune_sdk::rng::SplitMix64::new(5);
        let inputs: Vec<f32> = (0..4 * 64).map(|_| rng.next_f32()).collect();
        let ones = vec![1.0f32; n];
        let mut half = ones.clone();
        half.iter_mut().step_by(2).for_each(|m| *m = 0.0);
        hyperprune_core::model_ref(&model, |view| {
            let dense = ctx
                .masked_distill_on_inputs(view, RSlice::from_slice(&ones), RSlice::from_slice(&inputs), 4, 1.0)
                .unwrap();
            assert!(dense.loss.abs() < 1e-6 && dense.grad.len() == n, "an all-ones mask is the dense model");
            let pruned = ctx
                .masked_distill_on_inputs(view, RSlice::from_slice(&half), RSlice::from_slice(&inputs), 4, 1.0)
                .unwrap();
            assert!(pruned.loss > 1e-6, "half the weights pruned changes the logits: {}", pruned.loss);
            // The same as the engine's distillation on those inputs.
            let engine = crate::engines::engine(crate::engines::EngineKind::Cpu, "cpu").unwrap();
            let samples = Samples { shape: [1, 8, 8], images: inputs.clone(), labels: vec![0; 4] };
            let (loss, grad) = engine.masked_distill_loss_and_grad(&model, &half, &samples, 1.0).unwrap();
            assert_eq!((pruned.loss, pruned.grad.as_slice()), (loss, grad.as_slice()));
            // Images of another size, even when their values divide into the model's: refused.
            let e = ctx
                .masked_distill_on_inputs(view, RSlice::from_slice(&ones), RSlice::from_slice(&inputs), 1, 1.0)
                .unwrap_err();
            assert!(
                e.message.contains("expected 1 images of the model's 1x8x8 = 64 values (64 in all), got 256"),
                "{e}"
            );
        });
    }

    #[test]
    fn input_moments_are_the_mean_and_uncentred_second_moment_of_the_flattened_images() {
        // Two 1×1×2 images: (1, 2) and (3, -4).
        let samples = Samples { shape: [1, 1, 2], images: vec![1.0, 2.0, 3.0, -4.0], labels: vec![0, 1] };
        let m = moments(&samples);
        assert_eq!(m.samples, 2);
        assert_eq!(m.mean.as_slice(), &[2.0, -1.0]);
        assert_eq!((m.second.rows, m.second.cols), (2, 2));
        // E[x0²] = 5, E[x0 x1] = (2 − 12)/2 = −5, E[x1²] = 10.
        assert_eq!(m.second.data.as_slice(), &[5.0, -5.0, -5.0, 10.0]);
    }
}

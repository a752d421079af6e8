//! Host services a plugin may call while it prunes or fits: logging, progress,
//! cancellation, the data services (calibration statistics, gradients, evaluation), and
//! services that run the network without data (SynFlow's synaptic flow).
//!
//! The data services run on the host's engine and dataset; a plugin never sees images.
//! Each takes the model to work on as a [`ModelRef`], so a pruner can ask for statistics
//! at modified weights (multi-stage methods) as well as at the original ones.

// `sabi_trait` expands to impls that trip this lint on current compilers.
#![allow(non_local_definitions)]

use abi_stable::StableAbi;
use abi_stable::sabi_trait;
use abi_stable::sabi_trait::prelude::TD_Opaque;
use abi_stable::std_types::{RResult, RSlice, RStr, RVec};

use crate::error::{ErrorKind, PluginError};
use crate::model::ModelRef;

/// Severity of a log line.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Detailed tracing.
    Debug,
    /// Normal progress messages.
    Info,
    /// Something the user should look at.
    Warn,
}

/// Which calibration data to use and how much of it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalibRequest {
    /// Number of samples from the dataset's train split; 0 asks for the host's default
    /// (the bench's `--calib-samples`, 1024 unless set).
    pub samples: u64,
    /// Mini-batch size for averaged per-sample gradients (1 = true per-sample).
    pub minibatch: u64,
    /// Seed choosing the samples.
    pub seed: u64,
}

/// A dense row-major matrix.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct Matrix<T> {
    /// Rows.
    pub rows: u64,
    /// Columns.
    pub cols: u64,
    /// `rows · cols` values, row-major.
    pub data: RVec<T>,
}

impl<T: Copy> Matrix<T> {
    /// Element `(r, c)`.
    pub fn get(&self, r: usize, c: usize) -> T {
        self.data[r * self.cols as usize + c]
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &[T] {
        let c = self.cols as usize;
        &self.data[r * c..(r + 1) * c]
    }
}

/// A loss and its gradient.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct LossAndGrad {
    /// The mean loss over the samples (cross-entropy, or the distillation KL).
    pub loss: f64,
    /// Gradient of the loss with respect to the soft mask, one value per prunable weight in
    /// layer order.
    pub grad: RVec<f32>,
}

/// Accuracy and loss of a model on some samples.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Fraction of samples classified correctly.
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Number of samples used.
    pub samples: u64,
}

/// The first two moments of a dataset's inputs, each image flattened to `c·h·w` values in
/// the order a linear layer after a flatten reads them (normalised as the networks see
/// them). No image leaves the host: a data-free pruner can store these and use them when
/// it prunes without data.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct InputMoments {
    /// `E[x]`, one value per input value.
    pub mean: RVec<f64>,
    /// `E[x xᵀ]` (not centred), `d × d`.
    pub second: Matrix<f64>,
    /// Number of samples averaged over.
    pub samples: u64,
}

/// Where a data service evaluates. The dataset's test split is not among them: it is the
/// host's alone, for the numbers a bench reports.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSplit {
    /// Calibration samples: the dataset's train split less the val slice.
    Train,
    /// A held-out slice of the dataset's train split (never used for calibration), for
    /// choosing settings.
    Val,
}

/// The host side of a call: implemented by the host, called by plugins.
///
/// Services the host cannot provide in a run (no dataset, a pruner run from
/// `hyperprune prune` without `--dataset`) answer with an error of kind
/// [`ErrorKind::Unavailable`]. New services are appended after the last one, with a default
/// body answering `Unavailable`. abi_stable accepts a plugin whose vtables have more methods
/// than the host's but refuses one with fewer, so a host that gained a service cannot load
/// plugins built before it: appending one is a minor version (0.x) of the SDK, and the
/// host's version probe refuses older plugins in one line before abi_stable sees them.
#[sabi_trait]
pub trait Context: Send + Sync {
    /// Writes a log line, attributed to the plugin.
    fn log(&self, level: LogLevel, message: RStr<'_>);

    /// Reports progress of the current call: `done` out of `total` steps.
    fn progress(&self, done: u64, total: u64);

    /// True once the user asked to stop; long loops should check it and return.
    fn cancelled(&self) -> bool;

    /// The Hessian of layer `layer`'s inputs, `XᵀX / n` (f64, `d × d`), where `X` holds one
    /// row per input position: for a linear layer `d = in`; for a conv layer the input is
    /// unfolded (im2col) in the order of a weight row `[in, kh, kw]`, `d = in·kh·kw`, with
    /// one row per sample and output position, and `n` counts those rows.
    fn layer_input_hessian(
        &self,
        model: ModelRef<'_>,
        layer: u32,
        calib: CalibRequest,
    ) -> RResult<Matrix<f64>, PluginError>;

    /// Per-sample gradients of the cross-entropy with respect to every prunable weight:
    /// `n × p` (f32), rows averaged over mini-batches of `calib.minibatch` samples, columns in
    /// layer order.
    fn per_sample_gradients(&self, model: ModelRef<'_>, calib: CalibRequest) -> RResult<Matrix<f32>, PluginError>;

    /// Loss of the model with weights `w ⊙ m` for a soft mask `m` (one value per prunable
    /// weight, layer order) on a batch of train samples, and its gradient with respect to `m`.
    fn masked_loss_and_grad(
        &self,
        model: ModelRef<'_>,
        soft_mask: RSlice<'_, f32>,
        calib: CalibRequest,
    ) -> RResult<LossAndGrad, PluginError>;

    /// Accuracy and loss of the model as given (zero the pruned weights first) on
    /// `samples` samples of `split` (0 = the whole split).
    fn evaluate(&self, model: ModelRef<'_>, split: DataSplit, samples: u64) -> RResult<Evaluation, PluginError>;

    /// Distillation of the dense model into the soft-masked one: the mean over calibration
    /// samples of `T² · KL(softmax(z/T) ‖ softmax(z_m/T))`, where `z` are the logits of the
    /// model as given and `z_m` those with prunable weights `w ⊙ m`, and its gradient with
    /// respect to `m` (one value per prunable weight, layer order). The `T²` factor keeps
    /// gradient magnitudes comparable across temperatures (Hinton et al., 2015).
    fn masked_distill_loss_and_grad(
        &self,
        model: ModelRef<'_>,
        soft_mask: RSlice<'_, f32>,
        calib: CalibRequest,
        temperature: f64,
    ) -> RResult<LossAndGrad, PluginError>;

    /// Records one row of a fit's curve (a JSON object: step, loss, val retention, ...);
    /// the host appends it to `<state stem>.fit.jsonl` beside the state file it writes
    /// (`hyperprune fit`, or a bench's own fit). Outside a fit, a no-op.
    fn record(&self, row_json: RStr<'_>);

    /// Stores a checkpoint of a running `fit` (what [`crate::Pruner::save_state`] would
    /// return now). When a fit is interrupted, the next `hyperprune fit` into the same state
    /// file calls `load_state` with the newest checkpoint before `fit`, so the pruner can
    /// resume. Errors when the host cannot store checkpoints in this run.
    #[sabi(last_prefix_field)]
    fn checkpoint(&self, state: RSlice<'_, u8>) -> RResult<(), PluginError>;

    /// The mean and second moment of the model inputs (flattened images) over calibration
    /// samples of the train split. Appended in SDK 0.2 after `checkpoint`: a host built
    /// before it lacks the service.
    fn input_moments(&self, calib: CalibRequest) -> RResult<InputMoments, PluginError>;

    /// SynFlow's score (Tanaka et al., NeurIPS 2020) of every prunable weight, layer order:
    /// `∂R/∂θ ⊙ θ` in the linearised network (every parameter replaced by its absolute
    /// value, batch normalisation in eval mode folded to its per-channel affine map and
    /// linearised alike, activations the identity), where `R` is the sum of the logits for
    /// one all-ones input and the weights with `keep[i] == 0` are zero. Computed in f64;
    /// non-negative, and zero for a pruned weight.
    ///
    /// Needs no data: a host answers it in every run, for pruners that declared no data too.
    /// `keep` holds one byte per prunable weight (0 = pruned). Added in SDK 0.4; the default
    /// body answers [`ErrorKind::Unavailable`], so a context written for SDK 0.3 (a plugin's
    /// own test context) still compiles.
    fn synaptic_flow(&self, model: ModelRef<'_>, keep: RSlice<'_, u8>) -> RResult<RVec<f64>, PluginError> {
        let _ = (model, keep);
        RResult::RErr(PluginError::new(
            ErrorKind::Unavailable,
            "host service 'synaptic_flow' is not implemented by this context (written before hyperprune-sdk 0.4 \
             added it)",
        ))
    }

    /// [`Context::masked_distill_loss_and_grad`] on inputs the plugin supplies instead of
    /// calibration images: `inputs` holds `images` flattened images of the model's input
    /// shape (`images · c · h · w` values), normalised as the dataset's are. Reads no data, so a host answers
    /// it in every run, for pruners that declared no data too: a data-free pruner that
    /// carries its own inputs (e.g. draws from input moments stored when it was fitted)
    /// refines a mask with it.
    ///
    /// Added in SDK 0.5; the default body answers [`ErrorKind::Unavailable`], so a context
    /// written for SDK 0.4 still compiles.
    fn masked_distill_on_inputs(
        &self,
        model: ModelRef<'_>,
        soft_mask: RSlice<'_, f32>,
        inputs: RSlice<'_, f32>,
        images: u64,
        temperature: f64,
    ) -> RResult<LossAndGrad, PluginError> {
        let _ = (model, soft_mask, inputs, images, temperature);
        RResult::RErr(PluginError::new(
            ErrorKind::Unavailable,
            "host service 'masked_distill_on_inputs' is not implemented by this context (written before \
             hyperprune-sdk 0.5 added it)",
        ))
    }
}

/// The FFI handle of a host context, as passed across the ABI.
pub type ContextRef<'a> = Context_TO<'a, abi_stable::sabi_types::RRef<'a, ()>>;

/// The FFI handle of any [`Context`] implementation (what the host passes to `prune`).
pub fn context_ref<C: Context>(ctx: &C) -> ContextRef<'_> {
    Context_TO::from_ptr(ctx, TD_Opaque)
}

/// The context a plugin's code receives: typed wrappers over [`Context`].
pub struct Ctx<'a> {
    inner: ContextRef<'a>,
}

impl<'a> Ctx<'a> {
    /// Wraps an FFI handle.
    pub fn new(inner: ContextRef<'a>) -> Ctx<'a> {
        Ctx { inner }
    }

    /// Builds a context over any [`Context`] implementation (used by the host and tests).
    pub fn from_impl<C: Context + 'a>(ctx: &'a C) -> Ctx<'a> {
        Ctx { inner: context_ref(ctx) }
    }

    /// Logs at info level. The host shows a fit's info lines (what it chose, where it
    /// stands) and a prune's with `-v`, since a bench prunes hundreds of times.
    pub fn info(&self, message: &str) {
        self.inner.log(LogLevel::Info, message.into());
    }

    /// Logs at the given level.
    pub fn log(&self, level: LogLevel, message: &str) {
        self.inner.log(level, message.into());
    }

    /// Reports progress.
    pub fn progress(&self, done: usize, total: usize) {
        self.inner.progress(done as u64, total as u64);
    }

    /// Whether the user asked to stop.
    pub fn cancelled(&self) -> bool {
        self.inner.cancelled()
    }

    /// See [`Context::layer_input_hessian`].
    ///
    /// # Errors
    /// The host's error: kind [`ErrorKind::Unavailable`] when the run has no data (or the
    /// pruner declared it needs none), `Failed` when the service failed.
    pub fn layer_input_hessian(
        &self,
        model: &ModelRef<'_>,
        layer: usize,
        calib: CalibRequest,
    ) -> Result<Matrix<f64>, PluginError> {
        self.inner.layer_input_hessian(*model, layer as u32, calib).into_result()
    }

    /// See [`Context::per_sample_gradients`].
    ///
    /// # Errors
    /// As [`Ctx::layer_input_hessian`].
    pub fn per_sample_gradients(&self, model: &ModelRef<'_>, calib: CalibRequest) -> Result<Matrix<f32>, PluginError> {
        self.inner.per_sample_gradients(*model, calib).into_result()
    }

    /// See [`Context::masked_loss_and_grad`].
    ///
    /// # Errors
    /// As [`Ctx::layer_input_hessian`].
    pub fn masked_loss_and_grad(
        &self,
        model: &ModelRef<'_>,
        soft_mask: &[f32],
        calib: CalibRequest,
    ) -> Result<LossAndGrad, PluginError> {
        self.inner.masked_loss_and_grad(*model, RSlice::from_slice(soft_mask), calib).into_result()
    }

    /// See [`Context::input_moments`].
    ///
    /// # Errors
    /// As [`Ctx::layer_input_hessian`].
    pub fn input_moments(&self, calib: CalibRequest) -> Result<InputMoments, PluginError> {
        self.inner.input_moments(calib).into_result()
    }

    /// See [`Context::synaptic_flow`]: `keep` holds one entry per prunable weight, in layer
    /// order, and the scores come back in the same order.
    ///
    /// # Errors
    /// The host's error: kind [`ErrorKind::Unavailable`] from a host or test context that
    /// does not compute it, `Failed` when the service failed (a mask of the wrong length, a
    /// flow that overflows f64).
    pub fn synaptic_flow(&self, model: &ModelRef<'_>, keep: &[bool]) -> Result<Vec<f64>, PluginError> {
        let bytes: Vec<u8> = keep.iter().map(|&k| u8::from(k)).collect();
        self.inner.synaptic_flow(*model, RSlice::from_slice(&bytes)).into_result().map(RVec::into_vec)
    }

    /// See [`Context::evaluate`].
    ///
    /// # Errors
    /// As [`Ctx::layer_input_hessian`].
    pub fn evaluate(&self, model: &ModelRef<'_>, split: DataSplit, samples: usize) -> Result<Evaluation, PluginError> {
        self.inner.evaluate(*model, split, samples as u64).into_result()
    }

    /// See [`Context::masked_distill_loss_and_grad`].
    ///
    /// # Errors
    /// As [`Ctx::layer_input_hessian`].
    pub fn masked_distill_loss_and_grad(
        &self,
        model: &ModelRef<'_>,
        soft_mask: &[f32],
        calib: CalibRequest,
        temperature: f64,
    ) -> Result<LossAndGrad, PluginError> {
        self.inner.masked_distill_loss_and_grad(*model, RSlice::from_slice(soft_mask), calib, temperature).into_result()
    }

    /// See [`Context::masked_distill_on_inputs`]: `inputs` holds `images` flattened images.
    ///
    /// # Errors
    /// The host's error: kind [`ErrorKind::Unavailable`] from a context that does not
    /// compute it, `Failed` when `inputs` is not `images` images of the model's input shape
    /// or the mask has the wrong length.
    pub fn masked_distill_on_inputs(
        &self,
        model: &ModelRef<'_>,
        soft_mask: &[f32],
        inputs: &[f32],
        images: usize,
        temperature: f64,
    ) -> Result<LossAndGrad, PluginError> {
        let (mask, inputs) = (RSlice::from_slice(soft_mask), RSlice::from_slice(inputs));
        self.inner.masked_distill_on_inputs(*model, mask, inputs, images as u64, temperature).into_result()
    }

    /// See [`Context::record`]: `row` should be a JSON object.
    pub fn record(&self, row: &serde_json::Value) {
        self.inner.record(row.to_string().as_str().into());
    }

    /// See [`Context::checkpoint`].
    ///
    /// # Errors
    /// Kind `Unavailable` when the host stores no checkpoints in this run.
    pub fn checkpoint(&self, state: &[u8]) -> Result<(), PluginError> {
        self.inner.checkpoint(RSlice::from_slice(state)).into_result()
    }
}

/// A context without data: logs to stderr, never cancels, and answers every data service
/// with [`ErrorKind::Unavailable`]. For plugin unit tests and data-free runs. It has no
/// engine either, so the data-free [`Context::synaptic_flow`] is unavailable too; test a
/// pruner that calls it with [`TestHost::with_synaptic_flow`].
#[derive(Debug, Default, Clone, Copy)]
pub struct NoData;

fn unavailable<T>(service: &str) -> RResult<T, PluginError> {
    RResult::RErr(PluginError::new(
        ErrorKind::Unavailable,
        format!("host service '{service}' is not available in this run (no dataset was given)"),
    ))
}

/// The answer of a context that runs no network to a data-free service.
fn no_engine<T>(service: &str) -> RResult<T, PluginError> {
    RResult::RErr(PluginError::new(
        ErrorKind::Unavailable,
        format!("host service '{service}' is not available from this context (it runs no network)"),
    ))
}

/// Answers every data service of a [`Context`] with [`ErrorKind::Unavailable`]: what the
/// host hands a pruner that declared it needs no data.
macro_rules! no_data_services {
    () => {
        fn layer_input_hessian(&self, _: ModelRef<'_>, _: u32, _: CalibRequest) -> RResult<Matrix<f64>, PluginError> {
            unavailable("layer_input_hessian")
        }

        fn per_sample_gradients(&self, _: ModelRef<'_>, _: CalibRequest) -> RResult<Matrix<f32>, PluginError> {
            unavailable("per_sample_gradients")
        }

        fn masked_loss_and_grad(
            &self,
            _: ModelRef<'_>,
            _: RSlice<'_, f32>,
            _: CalibRequest,
        ) -> RResult<LossAndGrad, PluginError> {
            unavailable("masked_loss_and_grad")
        }

        fn evaluate(&self, _: ModelRef<'_>, _: DataSplit, _: u64) -> RResult<Evaluation, PluginError> {
            unavailable("evaluate")
        }

        fn masked_distill_loss_and_grad(
            &self,
            _: ModelRef<'_>,
            _: RSlice<'_, f32>,
            _: CalibRequest,
            _: f64,
        ) -> RResult<LossAndGrad, PluginError> {
            unavailable("masked_distill_loss_and_grad")
        }

        fn record(&self, _: RStr<'_>) {}

        fn checkpoint(&self, _: RSlice<'_, u8>) -> RResult<(), PluginError> {
            unavailable("checkpoint")
        }

        fn input_moments(&self, _: CalibRequest) -> RResult<InputMoments, PluginError> {
            unavailable("input_moments")
        }

        fn synaptic_flow(&self, _: ModelRef<'_>, _: RSlice<'_, u8>) -> RResult<RVec<f64>, PluginError> {
            no_engine("synaptic_flow")
        }

        fn masked_distill_on_inputs(
            &self,
            _: ModelRef<'_>,
            _: RSlice<'_, f32>,
            _: RSlice<'_, f32>,
            _: u64,
            _: f64,
        ) -> RResult<LossAndGrad, PluginError> {
            no_engine("masked_distill_on_inputs")
        }
    };
}

impl Context for NoData {
    fn log(&self, level: LogLevel, message: RStr<'_>) {
        eprintln!("[{level:?}] {message}");
    }

    fn progress(&self, _done: u64, _total: u64) {}

    fn cancelled(&self) -> bool {
        false
    }

    no_data_services!();
}

/// How a [`TestHost`] answers [`Context::layer_input_hessian`].
pub type HessianFn<'a> =
    dyn Fn(ModelRef<'_>, u32, CalibRequest) -> RResult<Matrix<f64>, PluginError> + Send + Sync + 'a;

/// How a [`TestHost`] answers [`Context::per_sample_gradients`].
pub type GradientsFn<'a> = dyn Fn(ModelRef<'_>, CalibRequest) -> RResult<Matrix<f32>, PluginError> + Send + Sync + 'a;

/// How a [`TestHost`] answers [`Context::masked_distill_loss_and_grad`]: model, soft mask,
/// request, temperature.
pub type DistillFn<'a> =
    dyn Fn(ModelRef<'_>, &[f32], CalibRequest, f64) -> RResult<LossAndGrad, PluginError> + Send + Sync + 'a;

/// How a [`TestHost`] answers [`Context::masked_distill_on_inputs`]: model, soft mask,
/// inputs, temperature.
pub type InputsDistillFn<'a> =
    dyn Fn(ModelRef<'_>, &[f32], &[f32], f64) -> RResult<LossAndGrad, PluginError> + Send + Sync + 'a;

/// How a [`TestHost`] answers [`Context::input_moments`].
pub type MomentsFn<'a> = dyn Fn(CalibRequest) -> RResult<InputMoments, PluginError> + Send + Sync + 'a;

/// How a [`TestHost`] answers [`Context::evaluate`]: model, split, samples.
pub type EvaluateFn<'a> = dyn Fn(ModelRef<'_>, DataSplit, u64) -> RResult<Evaluation, PluginError> + Send + Sync + 'a;

/// How a [`TestHost`] answers [`Context::synaptic_flow`]: model, keep mask (one entry per
/// prunable weight, layer order).
pub type SynFlowFn<'a> = dyn Fn(ModelRef<'_>, &[bool]) -> RResult<RVec<f64>, PluginError> + Send + Sync + 'a;

/// A stand-in host for a plugin's unit tests: it answers the data services it was given a
/// closure for, and every other one like [`NoData`] (kind [`ErrorKind::Unavailable`]). Logs
/// are dropped and it never cancels; fit-curve rows and checkpoints are kept, for
/// [`TestHost::records`] and [`TestHost::checkpoints`].
///
/// ```
/// use hyperprune_sdk::{Ctx, Matrix, TestHost};
/// use hyperprune_sdk::abi_stable::std_types::RResult;
///
/// let host = TestHost::new()
///     .with_gradients(|_model, _request| RResult::ROk(Matrix { rows: 1, cols: 2, data: vec![0.5, -0.5].into() }));
/// let ctx = Ctx::from_impl(&host);
/// # let _ = ctx;
/// ```
#[derive(Default)]
pub struct TestHost<'a> {
    hessian: Option<Box<HessianFn<'a>>>,
    gradients: Option<Box<GradientsFn<'a>>>,
    distill: Option<Box<DistillFn<'a>>>,
    evaluate: Option<Box<EvaluateFn<'a>>>,
    moments: Option<Box<MomentsFn<'a>>>,
    synaptic_flow: Option<Box<SynFlowFn<'a>>>,
    inputs_distill: Option<Box<InputsDistillFn<'a>>>,
    records: std::sync::Mutex<Vec<String>>,
    checkpoints: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl<'a> TestHost<'a> {
    /// A host that answers no data service.
    pub fn new() -> TestHost<'a> {
        TestHost::default()
    }

    /// Answers layer-input Hessians with `f`.
    pub fn with_hessian(
        mut self,
        f: impl Fn(ModelRef<'_>, u32, CalibRequest) -> RResult<Matrix<f64>, PluginError> + Send + Sync + 'a,
    ) -> TestHost<'a> {
        self.hessian = Some(Box::new(f));
        self
    }

    /// Answers per-sample gradients with `f`.
    pub fn with_gradients(
        mut self,
        f: impl Fn(ModelRef<'_>, CalibRequest) -> RResult<Matrix<f32>, PluginError> + Send + Sync + 'a,
    ) -> TestHost<'a> {
        self.gradients = Some(Box::new(f));
        self
    }

    /// Answers the distillation service with `f`.
    pub fn with_distill(
        mut self,
        f: impl Fn(ModelRef<'_>, &[f32], CalibRequest, f64) -> RResult<LossAndGrad, PluginError> + Send + Sync + 'a,
    ) -> TestHost<'a> {
        self.distill = Some(Box::new(f));
        self
    }

    /// Answers evaluation with `f`.
    pub fn with_evaluate(
        mut self,
        f: impl Fn(ModelRef<'_>, DataSplit, u64) -> RResult<Evaluation, PluginError> + Send + Sync + 'a,
    ) -> TestHost<'a> {
        self.evaluate = Some(Box::new(f));
        self
    }

    /// Answers input moments with `f`.
    pub fn with_moments(
        mut self,
        f: impl Fn(CalibRequest) -> RResult<InputMoments, PluginError> + Send + Sync + 'a,
    ) -> TestHost<'a> {
        self.moments = Some(Box::new(f));
        self
    }

    /// Answers the synaptic flow with `f` (model, keep mask).
    pub fn with_synaptic_flow(
        mut self,
        f: impl Fn(ModelRef<'_>, &[bool]) -> RResult<RVec<f64>, PluginError> + Send + Sync + 'a,
    ) -> TestHost<'a> {
        self.synaptic_flow = Some(Box::new(f));
        self
    }

    /// Answers the distillation on supplied inputs with `f` (model, soft mask, inputs,
    /// temperature).
    pub fn with_inputs_distill(
        mut self,
        f: impl Fn(ModelRef<'_>, &[f32], &[f32], f64) -> RResult<LossAndGrad, PluginError> + Send + Sync + 'a,
    ) -> TestHost<'a> {
        self.inputs_distill = Some(Box::new(f));
        self
    }

    /// The fit-curve rows recorded so far (JSON text).
    pub fn records(&self) -> Vec<String> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The checkpoints stored so far, oldest first.
    pub fn checkpoints(&self) -> Vec<Vec<u8>> {
        self.checkpoints.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Context for TestHost<'_> {
    fn log(&self, _level: LogLevel, _message: RStr<'_>) {}

    fn progress(&self, _done: u64, _total: u64) {}

    fn cancelled(&self) -> bool {
        false
    }

    fn layer_input_hessian(
        &self,
        model: ModelRef<'_>,
        layer: u32,
        request: CalibRequest,
    ) -> RResult<Matrix<f64>, PluginError> {
        match &self.hessian {
            Some(f) => f(model, layer, request),
            None => unavailable("layer_input_hessian"),
        }
    }

    fn per_sample_gradients(&self, model: ModelRef<'_>, request: CalibRequest) -> RResult<Matrix<f32>, PluginError> {
        match &self.gradients {
            Some(f) => f(model, request),
            None => unavailable("per_sample_gradients"),
        }
    }

    fn masked_loss_and_grad(
        &self,
        _: ModelRef<'_>,
        _: RSlice<'_, f32>,
        _: CalibRequest,
    ) -> RResult<LossAndGrad, PluginError> {
        unavailable("masked_loss_and_grad")
    }

    fn evaluate(&self, model: ModelRef<'_>, split: DataSplit, samples: u64) -> RResult<Evaluation, PluginError> {
        match &self.evaluate {
            Some(f) => f(model, split, samples),
            None => unavailable("evaluate"),
        }
    }

    fn masked_distill_loss_and_grad(
        &self,
        model: ModelRef<'_>,
        soft_mask: RSlice<'_, f32>,
        request: CalibRequest,
        temperature: f64,
    ) -> RResult<LossAndGrad, PluginError> {
        match &self.distill {
            Some(f) => f(model, soft_mask.as_slice(), request, temperature),
            None => unavailable("masked_distill_loss_and_grad"),
        }
    }

    fn record(&self, row_json: RStr<'_>) {
        if let Ok(mut r) = self.records.lock() {
            r.push(row_json.to_string());
        }
    }

    fn checkpoint(&self, state: RSlice<'_, u8>) -> RResult<(), PluginError> {
        if let Ok(mut c) = self.checkpoints.lock() {
            c.push(state.to_vec());
        }
        RResult::ROk(())
    }

    fn input_moments(&self, request: CalibRequest) -> RResult<InputMoments, PluginError> {
        match &self.moments {
            Some(f) => f(request),
            None => unavailable("input_moments"),
        }
    }

    fn synaptic_flow(&self, model: ModelRef<'_>, keep: RSlice<'_, u8>) -> RResult<RVec<f64>, PluginError> {
        match &self.synaptic_flow {
            Some(f) => f(model, &keep.iter().map(|&k| k != 0).collect::<Vec<bool>>()),
            None => no_engine("synaptic_flow"),
        }
    }

    fn masked_distill_on_inputs(
        &self,
        model: ModelRef<'_>,
        soft_mask: RSlice<'_, f32>,
        inputs: RSlice<'_, f32>,
        _images: u64,
        temperature: f64,
    ) -> RResult<LossAndGrad, PluginError> {
        match &self.inputs_distill {
            Some(f) => f(model, soft_mask.as_slice(), inputs.as_slice(), temperature),
            None => no_engine("masked_distill_on_inputs"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::RSlice;

    #[test]
    fn a_test_host_answers_what_it_was_given_and_nothing_else() {
        let model = ModelRef {
            arch_json: RStr::from_str("{}"),
            layers: RSlice::from_slice(&[]),
            others: RSlice::from_slice(&[]),
            nodes: RSlice::from_slice(&[]),
        };
        let calib = CalibRequest { samples: 4, minibatch: 1, seed: 0 };
        let host = TestHost::new().with_gradients(|_, request| {
            RResult::ROk(Matrix { rows: request.samples, cols: 1, data: vec![1.5; request.samples as usize].into() })
        });
        let ctx = Ctx::from_impl(&host);
        let g = ctx.per_sample_gradients(&model, calib).unwrap();
        assert_eq!((g.rows, g.cols, g.get(3, 0)), (4, 1, 1.5));
        let err = ctx.layer_input_hessian(&model, 0, calib).unwrap_err();
        assert!(err.is_unavailable(), "{err}");
        assert!(err.message.contains("layer_input_hessian") && err.message.contains("not available"), "{err}");
        assert!(ctx.evaluate(&model, DataSplit::Val, 10).unwrap_err().is_unavailable());
        assert!(ctx.masked_distill_loss_and_grad(&model, &[], calib, 1.0).unwrap_err().is_unavailable());
        assert!(ctx.input_moments(calib).unwrap_err().is_unavailable());
        assert!(ctx.synaptic_flow(&model, &[true]).unwrap_err().is_unavailable());
        assert!(ctx.masked_distill_on_inputs(&model, &[], &[], 0, 1.0).unwrap_err().is_unavailable());
        assert!(!ctx.cancelled());
    }

    #[test]
    fn the_synaptic_flow_crosses_the_context_as_bytes_and_back_as_scores() {
        let model = ModelRef {
            arch_json: RStr::from_str("{}"),
            layers: RSlice::from_slice(&[]),
            others: RSlice::from_slice(&[]),
            nodes: RSlice::from_slice(&[]),
        };
        // A stand-in flow: 2 per kept weight.
        let host = TestHost::new()
            .with_synaptic_flow(|_, keep| RResult::ROk(keep.iter().map(|&k| if k { 2.0 } else { 0.0 }).collect()));
        let scores = Ctx::from_impl(&host).synaptic_flow(&model, &[true, false, true]).unwrap();
        assert_eq!(scores, [2.0, 0.0, 2.0]);
        let e = Ctx::from_impl(&NoData).synaptic_flow(&model, &[true]).unwrap_err();
        assert!(e.is_unavailable() && e.message.contains("runs no network"), "{e}");
    }

    /// A context written for SDK 0.3 (no `synaptic_flow`) still compiles and answers it with
    /// the trait's default: `Unavailable`, naming the version that added it.
    #[test]
    fn a_context_written_before_the_synaptic_flow_answers_unavailable_naming_the_sdk_version() {
        struct Old;
        impl Context for Old {
            fn log(&self, _: LogLevel, _: RStr<'_>) {}
            fn progress(&self, _: u64, _: u64) {}
            fn cancelled(&self) -> bool {
                false
            }
            fn layer_input_hessian(
                &self,
                _: ModelRef<'_>,
                _: u32,
                _: CalibRequest,
            ) -> RResult<Matrix<f64>, PluginError> {
                unavailable("layer_input_hessian")
            }
            fn per_sample_gradients(&self, _: ModelRef<'_>, _: CalibRequest) -> RResult<Matrix<f32>, PluginError> {
                unavailable("per_sample_gradients")
            }
            fn masked_loss_and_grad(
                &self,
                _: ModelRef<'_>,
                _: RSlice<'_, f32>,
                _: CalibRequest,
            ) -> RResult<LossAndGrad, PluginError> {
                unavailable("masked_loss_and_grad")
            }
            fn evaluate(&self, _: ModelRef<'_>, _: DataSplit, _: u64) -> RResult<Evaluation, PluginError> {
                unavailable("evaluate")
            }
            fn masked_distill_loss_and_grad(
                &self,
                _: ModelRef<'_>,
                _: RSlice<'_, f32>,
                _: CalibRequest,
                _: f64,
            ) -> RResult<LossAndGrad, PluginError> {
                unavailable("masked_distill_loss_and_grad")
            }
            fn record(&self, _: RStr<'_>) {}
            fn checkpoint(&self, _: RSlice<'_, u8>) -> RResult<(), PluginError> {
                unavailable("checkpoint")
            }
            fn input_moments(&self, _: CalibRequest) -> RResult<InputMoments, PluginError> {
                unavailable("input_moments")
            }
        }
        let model = ModelRef {
            arch_json: RStr::from_str("{}"),
            layers: RSlice::from_slice(&[]),
            others: RSlice::from_slice(&[]),
            nodes: RSlice::from_slice(&[]),
        };
        let e = Ctx::from_impl(&Old).synaptic_flow(&model, &[true]).unwrap_err();
        assert!(e.is_unavailable() && e.message.contains("before hyperprune-sdk 0.4 added it"), "{e}");
    }
}

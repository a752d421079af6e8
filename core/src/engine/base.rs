//! The engine trait: everything that runs a network, behind one interface, so that burn
//! (reference, CUDA, autodiff; `hyperprune-engine-burn`) and a hand-tuned CPU implementation
//! (`hyperprune-engine-cpu`) can be swapped and tested against each other.

use serde::{Deserialize, Serialize};

use crate::arch::ArchSpec;
use crate::dataset::Samples;
use crate::model::Model;

/// Weight initialisation schemes used by model zoos (biases start at zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// U(-a, a) with a = 1/sqrt(fan_in) (PyTorch's default for conv/linear weights).
    Uniform,
    /// N(0, 1/fan_in).
    Normal,
    /// Kaiming (He) uniform: U(-b, b), b = sqrt(6/fan_in).
    KaimingUniform,
    /// Kaiming (He) normal: N(0, 2/fan_in).
    KaimingNormal,
}

/// Optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum Optimizer {
    /// Adam (Kingma & Ba), betas (0.9, 0.999), eps 1e-8; L2 weight decay added to the gradient.
    Adam,
    /// SGD with momentum; L2 weight decay added to the gradient.
    Sgd {
        /// Momentum (0 = plain SGD).
        momentum: f32,
    },
}

/// How one member is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the train split.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Learning rate.
    pub lr: f32,
    /// L2 weight decay coefficient.
    pub weight_decay: f32,
    /// Optimiser.
    pub optimizer: Optimizer,
    /// Seed for shuffling and dropout.
    pub seed: u64,
}

/// One member to train: its initial weights (see [`crate::engine::init_model`]) and
/// its configuration. Dropout comes from the spec.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// Initial model.
    pub model: Model,
    /// Training configuration.
    pub config: TrainConfig,
}

/// Accuracy and mean cross-entropy on a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Fraction correct.
    pub accuracy: f64,
    /// Mean cross-entropy (natural log).
    pub loss: f64,
    /// Number of samples.
    pub samples: usize,
}

/// Progress reported during training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrainEvent {
    /// `done` of `total` optimisation steps finished for job `job`.
    Step {
        /// Index into the jobs.
        job: usize,
        /// Steps done.
        done: usize,
        /// Steps in all.
        total: usize,
    },
    /// An epoch of job `job` ended with this mean train loss.
    Epoch {
        /// Index into the jobs.
        job: usize,
        /// Epoch number, from 1.
        epoch: usize,
        /// Mean train loss over the epoch.
        loss: f64,
    },
}

/// A row-major matrix returned by calibration services.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseMatrix<T> {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Values.
    pub data: Vec<T>,
}

/// What can go wrong inside an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model and the samples do not fit together.
    #[error("{0}")]
    Mismatch(String),
    /// The engine does not support this.
    #[error("engine '{engine}' does not support {what}")]
    Unsupported {
        /// Engine name.
        engine: &'static str,
        /// What was asked.
        what: String,
    },
    /// The device could not be used.
    #[error("{0}")]
    Device(String),
    /// Training diverged.
    #[error("training diverged: {0}")]
    Diverged(String),
}

impl EngineError {
    /// `engine` has no op for layer `node` of kind `layer`.
    pub fn unsupported_layer(engine: &'static str, node: &str, layer: &crate::arch::LayerSpec) -> EngineError {
        EngineError::Unsupported { engine, what: format!("layer '{node}' of type {}", layer.type_name()) }
    }
}

/// An engine's [`Engine::supports`] answer from its attempt to compile `spec`: the
/// [`EngineError::Unsupported`] it met, else `Ok` (other errors are the calls' to report).
///
/// # Errors
/// The compilation's [`EngineError::Unsupported`].
pub fn supported<T>(compiled: Result<T, EngineError>) -> Result<(), EngineError> {
    match compiled {
        Err(e @ EngineError::Unsupported { .. }) => Err(e),
        _ => Ok(()),
    }
}

/// Runs networks described by [`crate::ArchSpec`]: forward, training, evaluation and the
/// calibration services of the SDK's host `Context`.
///
/// Every method is deterministic for fixed inputs and seeds. Masked weights are expected
/// to be zero in the [`Model`] passed in (see [`Model::apply_masks`]); engines compute
/// with them as exact zeros.
pub trait Engine: Send + Sync {
    /// Short name, e.g. `burn-flex` or `cpu`.
    fn name(&self) -> &'static str;

    /// Whether this engine has an op for every layer of `spec`: `Ok`, or
    /// [`EngineError::Unsupported`] naming the first layer it cannot run (an engine may run
    /// a subset of the layer kinds; the host then runs such a network on the burn engine,
    /// which runs them all). Other problems with the spec are left to the calls themselves.
    ///
    /// # Errors
    /// [`EngineError::Unsupported`] as above.
    fn supports(&self, spec: &ArchSpec) -> Result<(), EngineError> {
        let _ = spec;
        Ok(())
    }

    /// The name of the engine that runs networks of `spec`: [`Engine::name`], unless this
    /// engine hands such networks to another (the host's fallback), whose name it then gives.
    /// Zoos and bench runs record this name.
    fn name_for(&self, spec: &ArchSpec) -> &'static str {
        let _ = spec;
        self.name()
    }

    /// Logits `[n, classes]` (row-major) for the samples' images.
    ///
    /// # Errors
    /// [`EngineError::Mismatch`] when image and model shapes differ.
    fn logits(&self, model: &Model, samples: &Samples) -> Result<Vec<f32>, EngineError>;

    /// Accuracy and loss of each model on `samples`.
    ///
    /// # Errors
    /// As [`Engine::logits`].
    fn evaluate(&self, models: &[&Model], samples: &Samples) -> Result<Vec<Evaluation>, EngineError>;

    /// Trains every job on `samples`, returning the trained models in job order.
    ///
    /// # Errors
    /// Shape mismatch, or non-finite weights after a step ([`EngineError::Diverged`]).
    fn train(
        &self,
        jobs: Vec<TrainJob>,
        samples: &Samples,
        observer: &mut dyn FnMut(TrainEvent),
    ) -> Result<Vec<Model>, EngineError>;

    /// `XᵀX / n` (f64) of the inputs of prunable layer `layer` (index among prunable
    /// layers), conv inputs unfolded in the order of a weight row `[in, kh, kw]`; `n`
    /// counts unfolded rows (samples × output positions). Returns the matrix and `n`.
    ///
    /// # Errors
    /// A bad layer index or shape mismatch.
    fn layer_input_hessian(
        &self,
        model: &Model,
        layer: usize,
        samples: &Samples,
    ) -> Result<(DenseMatrix<f64>, usize), EngineError>;

    /// Gradients of the cross-entropy with respect to all prunable weights (layer order):
    /// one row per mini-batch of `minibatch` consecutive samples (averaged within it);
    /// `minibatch == 1` gives true per-sample gradients.
    ///
    /// # Errors
    /// Shape mismatch.
    fn per_sample_gradients(
        &self,
        model: &Model,
        samples: &Samples,
        minibatch: usize,
    ) -> Result<DenseMatrix<f32>, EngineError>;

    /// Mean cross-entropy of the model with prunable weights `w ⊙ m` and its gradient with
    /// respect to the soft mask `m` (one value per prunable weight, layer order).
    ///
    /// # Errors
    /// Shape mismatch or a mask of the wrong length.
    fn masked_loss_and_grad(
        &self,
        model: &Model,
        soft_mask: &[f32],
        samples: &Samples,
    ) -> Result<(f64, Vec<f32>), EngineError>;

    /// Distillation of the dense model into its soft-masked copy: the mean over `samples` of
    /// `T² · KL(softmax(z/T) ‖ softmax(z_m/T))`, where `z` are the logits of `model` as given and
    /// `z_m` the logits with prunable weights `w ⊙ m`, and the gradient of that mean with respect
    /// to the soft mask `m` (one value per prunable weight, layer order).
    ///
    /// # Errors
    /// Shape mismatch, a mask of the wrong length, no samples, or a temperature that is not
    /// finite and positive.
    fn masked_distill_loss_and_grad(
        &self,
        model: &Model,
        soft_mask: &[f32],
        samples: &Samples,
        temperature: f64,
    ) -> Result<(f64, Vec<f32>), EngineError>;

    /// `model` with every batch normalisation's running mean and variance re-estimated from
    /// `samples` (weights, scales and shifts unchanged): each batch norm's statistics are the
    /// mean and unbiased variance of its input over all samples, in train-mode forward passes
    /// (each batch norm normalising with its batch's statistics, as PyTorch does when
    /// recalibrating with momentum None). A model without batch normalisation is returned as it is.
    ///
    /// "Over all samples" is meant exactly. Up to 1024 samples pass in one batch, and the
    /// result is then PyTorch's (`momentum=None`, one batch of every sample). More samples pass
    /// in mini-batches of nearly equal size (at most 1024, at least 512), and a batch norm's
    /// statistics are the pooled mean and unbiased variance of all the values per channel its
    /// input took in those passes (`n·h·w` of them), not PyTorch's plain average of per-batch
    /// means and of per-batch unbiased variances: that average weighs a short last batch as
    /// much as a full one and leaves out the spread of the batch means, so it depends on how
    /// the samples were cut. Here the batches matter only through the batch statistics that
    /// earlier batch norms normalise with; the first batch norm's statistics do not depend on
    /// them at all. Dropout stays inactive: the statistics are those of the network that will
    /// be evaluated.
    ///
    /// # Errors
    /// [`EngineError::Mismatch`] on a shape mismatch or when a batch norm would see fewer than
    /// two values per channel (no samples, or one sample and a 1×1 map: no unbiased variance);
    /// [`EngineError::Mismatch`] or [`EngineError::Unsupported`] when the engine cannot run a
    /// network with batch normalisation.
    fn recalibrate_batchnorm(&self, model: &Model, samples: &Samples) -> Result<Model, EngineError>;
}

/// Checks a distillation temperature, for [`Engine::masked_distill_loss_and_grad`]: every
/// engine calls it first, so that all of them refuse the same values with the same message.
///
/// # Errors
/// [`EngineError::Mismatch`] when `temperature` is not finite and positive.
pub fn check_temperature(temperature: f64) -> Result<(), EngineError> {
    if temperature.is_finite() && temperature > 0.0 {
        Ok(())
    } else {
        Err(EngineError::Mismatch(format!(
            "the distillation temperature must be finite and positive, {temperature} given; use 1 to distil the plain softmax, or a larger value to soften it"
        )))
    }
}

/// Checks that `samples` fit `spec`: every engine calls it before running a network, so that
/// all of them refuse the same inputs with the same message.
///
/// # Errors
/// [`EngineError::Mismatch`] naming the network, when the image shape, the number of
/// pixels or a label does not fit.
pub fn check_samples(spec: &ArchSpec, samples: &Samples) -> Result<(), EngineError> {
    if samples.shape != spec.input {
        return Err(EngineError::Mismatch(format!(
            "images are {:?} (c, h, w) but network '{}' expects {:?}; use a dataset of that shape or another architecture",
            samples.shape, spec.name, spec.input
        )));
    }
    if samples.images.len() != samples.len() * samples.image_len() {
        return Err(EngineError::Mismatch(format!(
            "{} labels need {} pixels, {} given",
            samples.len(),
            samples.len() * samples.image_len(),
            samples.images.len()
        )));
    }
    if let Some(&label) = samples.labels.iter().find(|&&l| l as usize >= spec.classes) {
        return Err(EngineError::Mismatch(format!(
            "label {label} is out of range for network '{}' with {} classes",
            spec.name, spec.classes
        )));
    }
    Ok(())
}

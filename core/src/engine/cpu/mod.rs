//! A CPU [`Engine`] with hand-written forward and backward passes, built for training and
//! calibrating many small networks of one spec at once.
//!
//! burn's CPU backend spends most of its time outside arithmetic on networks as small as
//! `cnn-s` (~1.2 MFLOP per image and training step) and does not scale with threads or
//! with members batched into grouped convolutions. This engine instead:
//!
//! - stores activations channel-major with the images of a chunk inside
//!   (`[c, n, h·w]`, see [`plan`]), so that a convolution over a chunk is a single matrix
//!   product with the unfolded input (im2col) and a linear layer is the same product;
//! - runs those products with the `gemm` crate's SIMD kernels, single-threaded, and spreads
//!   work over threads itself, by (batch source, run of images) for training and by chunks
//!   of images for everything else, with item boundaries that never depend on the thread
//!   count and sums taken in item order: results are bit-identical for any thread count;
//! - trains every member of a call in lock-step; members whose seeds agree share their
//!   batches and the unfolding of the first layer's input (see [`train`] for the batch
//!   semantics: a member's result never depends on which other jobs train beside it);
//! - computes per-sample gradients directly from batched backward passes, as products of
//!   the output gradients and the unfolded inputs over each run's columns.
//!
//! Supported layers: everything [`crate::LayerSpec`] describes (conv2d with stride and
//! padding, linear, max and average pooling, flatten, ReLU, tanh, GELU, sigmoid, dropout).

mod activation;
pub mod bench;
mod calibration;
mod direct;
mod gemm;
mod inference;
mod layers;
mod optim;
mod parallel;
mod pass;
mod plan;
#[cfg(test)]
mod reference;
mod train;

use crate::dataset::Samples;
use crate::engine::{DenseMatrix, Engine, EngineError, Evaluation, TrainEvent, TrainJob};
use crate::model::Model;

/// The CPU engine. Cheap to create; holds only its thread count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuEngine {
    threads: usize,
}

impl CpuEngine {
    /// An engine using every core the machine offers.
    pub fn new() -> Self {
        CpuEngine { threads: parallel::available_threads() }
    }

    /// An engine using `threads` threads (`0` means every core). Results do not depend on it.
    pub fn with_threads(threads: usize) -> Self {
        if threads == 0 { CpuEngine::new() } else { CpuEngine { threads } }
    }

    /// The number of threads it runs on.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

impl Default for CpuEngine {
    fn default() -> Self {
        CpuEngine::new()
    }
}

impl Engine for CpuEngine {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn logits(&self, model: &Model, samples: &Samples) -> Result<Vec<f32>, EngineError> {
        inference::logits(self.threads, model, samples)
    }

    fn evaluate(&self, models: &[&Model], samples: &Samples) -> Result<Vec<Evaluation>, EngineError> {
        inference::evaluate(self.threads, models, samples)
    }

    fn train(
        &self,
        jobs: Vec<TrainJob>,
        samples: &Samples,
        observer: &mut dyn FnMut(TrainEvent),
    ) -> Result<Vec<Model>, EngineError> {
        train::train(self.threads, jobs, samples, observer)
    }

    fn layer_input_hessian(
        &self,
        model: &Model,
        layer: usize,
        samples: &Samples,
    ) -> Result<(DenseMatrix<f64>, usize), EngineError> {
        calibration::layer_input_hessian(self.threads, model, layer, samples)
    }

    fn per_sample_gradients(
        &self,
        model: &Model,
        samples: &Samples,
        minibatch: usize,
    ) -> Result<DenseMatrix<f32>, EngineError> {
        calibration::per_sample_gradients(self.threads, model, samples, minibatch)
    }

    fn masked_loss_and_grad(
        &self,
        model: &Model,
        soft_mask: &[f32],
        samples: &Samples,
    ) -> Result<(f64, Vec<f32>), EngineError> {
        calibration::masked_loss_and_grad(self.threads, model, soft_mask, samples)
    }
}

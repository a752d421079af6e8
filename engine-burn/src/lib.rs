//! # hyperprune-engine-burn
//!
//! The burn implementation of hyperprune's [`Engine`]: the reference every other engine is
//! tested against, and the one that runs on CUDA. One crate per engine, as burn keeps one
//! crate per backend: `hyperprune-core` defines the trait, this crate and
//! `hyperprune-engine-cpu` implement it, and the host picks one.
//!
//! It is not the fast CPU engine: on networks as small as a zoo's, burn's CPU backend spends
//! most of its time outside arithmetic, which is why `hyperprune-engine-cpu` exists and is held
//! to this one.
//!
//! A network is compiled from its [`hyperprune_core::ArchSpec`]'s graph at run time into a
//! list of operations over flat parameter tensors, each reading its inputs by node index (see
//! `network.rs`); training takes gradients with burn's autodiff and applies Adam or SGD itself
//! (`optimizer.rs`), so nothing needs a `#[derive(Module)]` type per architecture. Everything
//! random (shuffling, dropout) comes from the member's seed, drawn on the host: equal jobs give
//! bit-identical models.
//!
//! [`BurnEngine`] is generic over an autodiff backend; [`FlexEngine`] names burn's
//! pure-Rust CPU backend, and `cuda_engine` (feature `cuda`) builds one on an NVIDIA GPU.

#![deny(missing_docs)]

mod batch;
mod batch_norm;
mod calibration;
#[cfg(feature = "cuda")]
mod cuda;
mod dropout;
mod network;
mod optimizer;
mod recalibration;
mod train;

use std::marker::PhantomData;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::AutodiffBackend;

use self::batch::{INFERENCE_BATCH, check_samples, chunks, images_in};
use self::network::{Plan, download, upload};
use hyperprune_core::dataset::Samples;
use hyperprune_core::engine::{DenseMatrix, Engine, EngineError, Evaluation, TrainEvent, TrainJob, supported};
use hyperprune_core::model::Model;

#[cfg(feature = "cuda")]
pub use self::cuda::cuda_engine;

/// An [`Engine`] on the burn backend `B` (an autodiff backend; inference runs on its
/// inner backend, without a graph).
pub struct BurnEngine<B: AutodiffBackend> {
    name: &'static str,
    device: B::Device,
    backend: PhantomData<fn() -> B>,
}

/// [`BurnEngine`] on burn's pure-Rust CPU backend.
pub type FlexEngine = BurnEngine<Autodiff<Flex>>;

impl FlexEngine {
    /// The CPU engine, named `burn-flex`.
    pub fn new() -> Self {
        BurnEngine::with_device("burn-flex", Default::default())
    }
}

impl Default for FlexEngine {
    fn default() -> Self {
        FlexEngine::new()
    }
}

impl<B: AutodiffBackend> BurnEngine<B> {
    /// An engine called `name` (what [`Engine::name`] reports) running on `device`.
    pub fn with_device(name: &'static str, device: B::Device) -> Self {
        BurnEngine { name, device, backend: PhantomData }
    }

    /// The device it runs on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// [`Engine::recalibrate_batchnorm`] with forward passes of at most `most` samples instead
    /// of 1024: the statistics are pooled over the passes exactly as there, so tests can check
    /// the pooling (here and in the engines held to this one) on a few samples. `most` is at
    /// least 4, so that no pass of a split set holds a single sample.
    ///
    /// # Errors
    /// As [`Engine::recalibrate_batchnorm`].
    ///
    /// # Panics
    /// When `most` is 0, and in debug builds when it is below 4.
    pub fn recalibrate_batchnorm_in_passes(
        &self,
        model: &Model,
        samples: &Samples,
        most: usize,
    ) -> Result<Model, EngineError> {
        recalibration::recalibrate_in_batches::<B::InnerBackend>(model, samples, most, &self.device)
    }
}

impl<B: AutodiffBackend> Engine for BurnEngine<B> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn supports(&self, spec: &hyperprune_core::ArchSpec) -> Result<(), EngineError> {
        supported(Plan::new(spec))
    }

    fn logits(&self, model: &Model, samples: &Samples) -> Result<Vec<f32>, EngineError> {
        let plan = Plan::new(model.spec())?;
        check_samples(&plan.spec, samples)?;
        let params = upload::<B::InnerBackend>(model.values(), &self.device);
        let mut logits = Vec::with_capacity(samples.len() * plan.spec.classes);
        for range in chunks(samples.len(), INFERENCE_BATCH) {
            let x = images_in::<B::InnerBackend>(samples, range, &self.device);
            logits.extend(download(plan.logits(&params, x, None)));
        }
        Ok(logits)
    }

    fn evaluate(&self, models: &[&Model], samples: &Samples) -> Result<Vec<Evaluation>, EngineError> {
        if samples.is_empty() {
            return Err(EngineError::Mismatch("evaluation needs at least one sample, none given".into()));
        }
        models.iter().map(|model| Ok(evaluation(&self.logits(model, samples)?, &samples.labels))).collect()
    }

    fn train(
        &self,
        jobs: Vec<TrainJob>,
        samples: &Samples,
        observer: &mut dyn FnMut(TrainEvent),
    ) -> Result<Vec<Model>, EngineError> {
        for job in &jobs {
            check_samples(job.model.spec(), samples)?;
        }
        // Members train one at a time, sequential networks and graphs alike: this engine is
        // the reference, and batching members into grouped convolutions did not pay on burn
        // (the design notes, "Engine behind a trait").
        jobs.iter().enumerate().map(|(i, job)| train::train_job::<B>(i, job, samples, &self.device, observer)).collect()
    }

    fn layer_input_hessian(
        &self,
        model: &Model,
        layer: usize,
        samples: &Samples,
    ) -> Result<(DenseMatrix<f64>, usize), EngineError> {
        calibration::layer_input_hessian::<B::InnerBackend>(model, layer, samples, &self.device)
    }

    fn per_sample_gradients(
        &self,
        model: &Model,
        samples: &Samples,
        minibatch: usize,
    ) -> Result<DenseMatrix<f32>, EngineError> {
        calibration::per_sample_gradients::<B>(model, samples, minibatch, &self.device)
    }

    fn masked_loss_and_grad(
        &self,
        model: &Model,
        soft_mask: &[f32],
        samples: &Samples,
    ) -> Result<(f64, Vec<f32>), EngineError> {
        calibration::masked_loss_and_grad::<B>(model, soft_mask, samples, &self.device)
    }

    fn masked_distill_loss_and_grad(
        &self,
        model: &Model,
        soft_mask: &[f32],
        samples: &Samples,
        temperature: f64,
    ) -> Result<(f64, Vec<f32>), EngineError> {
        calibration::masked_distill_loss_and_grad::<B>(model, soft_mask, samples, temperature, &self.device)
    }

    fn recalibrate_batchnorm(&self, model: &Model, samples: &Samples) -> Result<Model, EngineError> {
        recalibration::recalibrate_batchnorm::<B::InnerBackend>(model, samples, &self.device)
    }
}

/// Accuracy and mean cross-entropy (log-sum-exp in f64) from row-major logits.
fn evaluation(logits: &[f32], labels: &[u32]) -> Evaluation {
    let classes = logits.len() / labels.len();
    let mut correct = 0;
    let mut loss = 0.0;
    for (row, &label) in logits.chunks(classes).zip(labels) {
        let (best, max) = row.iter().enumerate().fold(
            (0, f32::NEG_INFINITY),
            |(bi, bv), (i, &v)| {
                if v > bv { (i, v) } else { (bi, bv) }
            },
        );
        correct += usize::from(best == label as usize);
        let max = max as f64;
        let log_sum = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
        loss += log_sum - row[label as usize] as f64;
    }
    Evaluation {
        accuracy: correct as f64 / labels.len() as f64,
        loss: loss / labels.len() as f64,
        samples: labels.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::network::tests::{random_images, random_values};
    use super::*;
    use hyperprune_core::arch::preset;

    #[test]
    fn evaluation_agrees_with_logits_and_mismatches_name_the_network() {
        let spec = preset("cnn-digits").unwrap();
        let model = Model::new(spec.clone(), random_values(&spec, 4)).unwrap();
        let samples = Samples { shape: [1, 8, 8], images: random_images(5, 64, 2), labels: vec![0, 1, 2, 3, 4] };
        let engine = FlexEngine::new();
        let logits = engine.logits(&model, &samples).unwrap();
        assert_eq!(logits.len(), 50);
        let eval = engine.evaluate(&[&model, &model], &samples).unwrap();
        assert_eq!(eval[0], eval[1]);
        let mut loss = 0.0;
        let mut correct = 0;
        for (row, &label) in logits.chunks(10).zip(&samples.labels) {
            let lse = row.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
            loss += lse - row[label as usize] as f64;
            let best = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            correct += usize::from(best == label as usize);
        }
        // Logits are O(1): log-sum-exp with or without the max shift agrees to ~1e-15.
        assert!((eval[0].loss - loss / 5.0).abs() < 1e-12, "{eval:?}");
        assert_eq!((eval[0].accuracy, eval[0].samples), (correct as f64 / 5.0, 5));

        let wrong_shape = Samples { shape: [1, 28, 28], images: vec![0.0; 784], labels: vec![0] };
        let err = engine.logits(&model, &wrong_shape).unwrap_err().to_string();
        assert!(err.contains("cnn-digits") && err.contains("[1, 8, 8]"), "{err}");
        let bad_label = Samples { labels: vec![0, 1, 2, 3, 10], ..samples };
        let err = engine.evaluate(&[&model], &bad_label).unwrap_err().to_string();
        assert!(err.contains("label 10") && err.contains("10 classes"), "{err}");
    }
}

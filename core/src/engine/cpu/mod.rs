//! A CPU [`Engine`] with hand-written forward and backward passes, built for training and
//! calibrating many small networks of one spec at once.
//!
//! burn's CPU backend spends most of its time outside arithmetic on networks as small as
//! `cnn-s` (~1.2 MFLOP per image and training step) and does not scale with threads or
//! with members batched into grouped convolutions. This engine instead:
//!
//! - stores activations channel-major with the images of a chunk inside (`[c, n, h·w]`),
//!   so that a layer over a whole chunk of images is one kernel call;
//! - runs stride-1 convolutions with register-blocked AVX2/FMA kernels straight from
//!   zero-padded input planes (forward, input gradient and weight gradient, `direct.rs`),
//!   and everything else (linear layers, strided convolutions, CPUs without AVX2) as
//!   matrix products of the `gemm` crate over unfolded inputs (im2col);
//! - spreads work over threads itself, by (team of members, run of images) for training
//!   and by chunks of images for everything else, with item boundaries that never depend
//!   on the thread count and sums taken in item order: results are bit-identical for any
//!   thread count;
//! - trains every member of a call in lock-step; a member's shuffle and dropout masks come
//!   from its own seed, exactly as in the burn engine, so its result never depends on which
//!   other jobs train beside it; members with equal seeds share batches and the image-only
//!   work of each chunk (`train.rs` has the details);
//! - computes per-sample gradients directly from batched backward passes: a row of a
//!   layer is the product of the output gradients and the (unfolded) inputs over the
//!   columns of its samples, i.e. the sum of the per-sample outer products `δ_i x_iᵀ`.
//!
//! Supported layers: everything [`crate::LayerSpec`] describes (conv2d with stride and
//! padding, linear, max and average pooling, flatten, ReLU, tanh, GELU, sigmoid, dropout).

mod activation;
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
#[cfg(test)]
mod synthetic;
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

    fn masked_distill_loss_and_grad(
        &self,
        model: &Model,
        soft_mask: &[f32],
        samples: &Samples,
        temperature: f64,
    ) -> Result<(f64, Vec<f32>), EngineError> {
        calibration::masked_distill_loss_and_grad(self.threads, model, soft_mask, samples, temperature)
    }

    /// Nothing to re-estimate without batch normalisation: the model as it is. A network with
    /// batch normalisation is one this engine cannot run, and it says so as everywhere else.
    fn recalibrate_batchnorm(&self, model: &Model, samples: &Samples) -> Result<Model, EngineError> {
        let spec = model.spec();
        if spec.layers.iter().any(|l| matches!(l, crate::LayerSpec::BatchNorm2d { .. })) {
            plan::Plan::new(spec)?;
            return Err(EngineError::Unsupported { engine: "cpu", what: "batch normalisation".into() });
        }
        crate::engine::base::check_samples(spec, samples)?;
        Ok(model.clone())
    }
}

#[cfg(test)]
mod tests {
    //! The CPU engine against the burn engine, the reference every engine is held to.

    use super::reference::{random_model, tiny_spec};
    use super::synthetic::random_samples;
    use super::*;
    use crate::engine::{FlexEngine, Optimizer, TrainConfig};

    /// Largest |a − b| over the largest |b|: both engines compute in f32 with different
    /// summation orders (relative rounding ~1e-6), so 1e-4 of the scale separates agreement
    /// from any real discrepancy by two orders of magnitude.
    fn relative(a: &[f32], b: &[f32]) -> f64 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f64, |m, &v| m.max(v.abs() as f64)).max(1e-12);
        a.iter().zip(b).fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs())) / scale
    }

    /// burn sums `T² · p · (log p − log q)` in f32: each log-softmax value carries an
    /// absolute error of ~1e-7 of the logits' size (O(1) here), so a sample's KL is off by
    /// ~1e-6 and the loss by ~1e-6·T² (the CPU engine sums in f64 and is exact by comparison).
    /// A wrong loss (no T², a reversed KL) is off by O(loss), ≥ 1e-2 here.
    const DISTILL_LOSS_TOL: f64 = 1e-5;

    fn specs() -> Vec<crate::ArchSpec> {
        let mut specs: Vec<_> =
            ["cnn-s", "cnn-digits", "lenet5", "mlpnet"].iter().map(|n| crate::preset(n).unwrap()).collect();
        specs.push(tiny_spec());
        specs
    }

    #[test]
    fn logits_hessians_and_gradients_match_burn() {
        let (cpu, burn) = (CpuEngine::with_threads(2), FlexEngine::new());
        for spec in specs() {
            let samples = random_samples(spec.input, 12, spec.classes, 61);
            for seed in [1, 2] {
                let model = random_model(&spec, seed);
                let what = format!("{} member {seed}", spec.name);
                let r = relative(&cpu.logits(&model, &samples).unwrap(), &burn.logits(&model, &samples).unwrap());
                assert!(r < 1e-4, "{what}: logits differ by {r}");
                for minibatch in [1, 5] {
                    let (a, b) = (
                        cpu.per_sample_gradients(&model, &samples, minibatch).unwrap(),
                        burn.per_sample_gradients(&model, &samples, minibatch).unwrap(),
                    );
                    assert_eq!((a.rows, a.cols), (b.rows, b.cols), "{what}");
                    for row in 0..a.rows {
                        let range = row * a.cols..(row + 1) * a.cols;
                        let r = relative(&a.data[range.clone()], &b.data[range]);
                        assert!(r < 1e-4, "{what}: minibatch {minibatch} row {row} differs by {r}");
                    }
                }
                for layer in 0..model.params().iter().filter(|p| p.prunable).count() {
                    let ((a, na), (b, nb)) = (
                        cpu.layer_input_hessian(&model, layer, &samples).unwrap(),
                        burn.layer_input_hessian(&model, layer, &samples).unwrap(),
                    );
                    assert_eq!((a.rows, na), (b.rows, nb), "{what} layer {layer}");
                    let scale = b.data.iter().fold(0f64, |m, v| m.max(v.abs()));
                    let err = a.data.iter().zip(&b.data).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
                    assert!(err <= 1e-5 * scale, "{what}: hessian of layer {layer} differs by {err} (scale {scale})");
                }
                let mask: Vec<f32> = (0..model.prunable_count()).map(|j| (j % 5) as f32 / 4.0).collect();
                let ((la, ga), (lb, gb)) = (
                    cpu.masked_loss_and_grad(&model, &mask, &samples).unwrap(),
                    burn.masked_loss_and_grad(&model, &mask, &samples).unwrap(),
                );
                assert!((la - lb).abs() < 1e-5 * lb.abs().max(1.0), "{what}: masked loss {la} vs {lb}");
                let r = relative(&ga, &gb);
                assert!(r < 1e-4, "{what}: mask gradient differs by {r}");
                for temperature in [1.0, 4.0] {
                    let ((la, ga), (lb, gb)) = (
                        cpu.masked_distill_loss_and_grad(&model, &mask, &samples, temperature).unwrap(),
                        burn.masked_distill_loss_and_grad(&model, &mask, &samples, temperature).unwrap(),
                    );
                    assert!(
                        (la - lb).abs() < DISTILL_LOSS_TOL * temperature * temperature,
                        "{what}, T = {temperature}: distillation loss {la} vs {lb}"
                    );
                    let r = relative(&ga, &gb);
                    assert!(r < 1e-4, "{what}, T = {temperature}: distillation gradient differs by {r}");
                }
            }
        }
    }

    /// Without batch normalisation there is nothing to re-estimate; with it, the network is
    /// one this engine cannot run, and the refusal is the one every other method gives.
    #[test]
    fn recalibrating_batch_norm_returns_a_plain_model_and_refuses_a_resnet() {
        let engine = CpuEngine::with_threads(2);
        let spec = tiny_spec();
        let model = random_model(&spec, 3);
        let samples = random_samples(spec.input, 5, spec.classes, 4);
        assert_eq!(engine.recalibrate_batchnorm(&model, &samples).unwrap(), model);
        let resnet = crate::preset("resnet:depth=8,width=8,input=1x8x8").unwrap();
        let model = Model::zeros(resnet.clone()).unwrap();
        let samples = random_samples(resnet.input, 5, resnet.classes, 4);
        let refusal = engine.logits(&model, &samples).unwrap_err().to_string();
        let err = engine.recalibrate_batchnorm(&model, &samples).unwrap_err().to_string();
        assert_eq!(err, refusal);
        assert!(err.contains("batchnorm2d"), "{err}");
    }

    #[test]
    fn training_follows_burn_step_for_step() {
        // Same shuffles, same dropout masks, same update rule: with SGD (updates linear in
        // the gradients) 6 steps keep the f32 rounding differences near 1e-6 relative. Adam
        // is left out: for gradients near 0 its update lr·g/(|g| + ε) turns rounding noise
        // into steps of size lr.
        let spec = crate::preset("cnn-digits").unwrap().with_dropout(0.2);
        let samples = random_samples(spec.input, 90, 10, 71);
        let jobs = || -> Vec<TrainJob> {
            (0..3)
                .map(|i| TrainJob {
                    model: random_model(&spec, 80 + i),
                    config: TrainConfig {
                        epochs: 2,
                        batch_size: 32,
                        lr: 0.05,
                        weight_decay: 1e-3,
                        optimizer: Optimizer::Sgd { momentum: 0.9 },
                        seed: [5, 5, 6][i as usize],
                    },
                })
                .collect()
        };
        let mut cpu_losses = Vec::new();
        let a = CpuEngine::with_threads(2)
            .train(jobs(), &samples, &mut |e| {
                if let TrainEvent::Epoch { loss, .. } = e {
                    cpu_losses.push(loss)
                }
            })
            .unwrap();
        let mut burn_losses = Vec::new();
        let b = FlexEngine::new()
            .train(jobs(), &samples, &mut |e| {
                if let TrainEvent::Epoch { loss, .. } = e {
                    burn_losses.push(loss)
                }
            })
            .unwrap();
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            for (t, (u, v)) in x.values().iter().zip(y.values()).enumerate() {
                let r = relative(u, v);
                assert!(r < 1e-4, "job {i}, tensor {t}: weights differ by {r}");
            }
        }
        cpu_losses.sort_by(f64::total_cmp);
        burn_losses.sort_by(f64::total_cmp);
        for (x, y) in cpu_losses.iter().zip(&burn_losses) {
            assert!((x - y).abs() < 1e-4 * y, "epoch losses {cpu_losses:?} vs {burn_losses:?}");
        }
    }
}

//! # hyperprune-engine-cpu
//!
//! A CPU [`Engine`] with hand-written forward and backward passes, built for training and
//! calibrating many small networks of one spec at once: hyperprune's CPU default. One crate
//! per engine, as burn keeps one crate per backend: `hyperprune-core` defines the trait, this
//! crate and `hyperprune-engine-burn` implement it, and the host picks one.
//!
//! It is not a reference: every result here is tested against the burn engine (this crate's
//! tests run both), which stays the engine of record and the one that runs on a GPU.
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
//! Supported networks: every graph [`hyperprune_core::ArchSpec::graph`] accepts, of every layer
//! [`hyperprune_core::LayerSpec`] describes (conv2d with stride, padding and without bias, linear, max
//! and average pooling, flatten, ReLU, tanh, GELU, sigmoid, dropout, batch normalisation,
//! residual adds, global average pooling); a kind added to the spec later is refused with
//! [`EngineError::Unsupported`] until it has an op here ([`Engine::supports`] says so before
//! a call, and the host then runs that network on the burn engine). Batch normalisation runs in train mode inside
//! [`Engine::train`] only, on the statistics of the whole mini-batch, which that step then
//! passes as one chunk (`train.rs`); everything else runs it in eval mode.

#![deny(missing_docs)]

mod activation;
mod batch_norm;
mod calibration;
mod direct;
mod gemm;
mod inference;
mod layers;
mod optim;
mod parallel;
mod pass;
mod plan;
mod recalibration;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod synthetic;
mod train;

use hyperprune_core::dataset::Samples;
use hyperprune_core::engine::{DenseMatrix, Engine, EngineError, Evaluation, TrainEvent, TrainJob, supported};
use hyperprune_core::model::Model;

/// The CPU engine. Cheap to create; holds only its thread count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuEngine {
    threads: usize,
}

impl CpuEngine {
    /// An engine using every core the machine offers.
    pub fn new() -> Self {
        CpuEngine { threads: hyperprune_sdk::available_threads() }
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

    fn supports(&self, spec: &hyperprune_core::ArchSpec) -> Result<(), EngineError> {
        supported(plan::Plan::new(spec))
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

    fn recalibrate_batchnorm(&self, model: &Model, samples: &Samples) -> Result<Model, EngineError> {
        recalibration::recalibrate_batchnorm(self.threads, model, samples)
    }
}

#[cfg(test)]
mod tests {
    //! The CPU engine against the burn engine, the reference every engine is held to.

    use super::reference::{random_model, tiny_spec};
    use super::synthetic::random_samples;
    use super::*;
    use hyperprune_core::engine::{Optimizer, TrainConfig};
    use hyperprune_core::{ArchSpec, preset};
    use hyperprune_engine_burn::FlexEngine;

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

    /// Every sequential preset and the tiny net (12 samples, two members each), and
    /// residual networks with batch norm, strided and padded bias-free convs, projection
    /// shortcuts and global pooling: ResNet-8 (12 samples, two members) and ResNet-20
    /// (`resnet20`'s widths and blocks; 4 samples, one member, to keep burn's per-sample
    /// gradients quick), both on 8×8 inputs.
    fn specs() -> Vec<(ArchSpec, usize, &'static [u64])> {
        let names: [(&str, usize, &[u64]); 6] = [
            ("cnn-s", 12, &[1, 2]),
            ("cnn-digits", 12, &[1, 2]),
            ("lenet5", 12, &[1, 2]),
            ("mlpnet", 12, &[1, 2]),
            ("resnet:depth=8,width=8,input=1x8x8", 12, &[1, 2]),
            ("resnet:depth=20,width=16,input=1x8x8", 4, &[1]),
        ];
        let mut specs: Vec<_> = names.iter().map(|&(n, samples, seeds)| (preset(n).unwrap(), samples, seeds)).collect();
        specs.push((tiny_spec(), 12, &[1, 2]));
        specs
    }

    #[test]
    fn logits_hessians_and_gradients_match_burn() {
        let (cpu, burn) = (CpuEngine::with_threads(2), FlexEngine::new());
        for (spec, n, seeds) in specs() {
            let samples = random_samples(spec.input, n, spec.classes, 61);
            for &seed in seeds {
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
                let e = (cpu.evaluate(&[&model], &samples).unwrap()[0], burn.evaluate(&[&model], &samples).unwrap()[0]);
                assert!(e.0.accuracy == e.1.accuracy && (e.0.loss - e.1.loss).abs() < 1e-5 * e.1.loss, "{what}: {e:?}");
            }
        }
    }

    /// Without batch normalisation there is nothing to re-estimate; with it, the statistics
    /// are burn's: one batch of every sample, and pooled over batches for more than 1024.
    #[test]
    fn recalibrating_batch_norm_matches_burn() {
        let (cpu, burn) = (CpuEngine::with_threads(2), FlexEngine::new());
        let spec = tiny_spec();
        let model = random_model(&spec, 3);
        let samples = random_samples(spec.input, 5, spec.classes, 4);
        assert_eq!(cpu.recalibrate_batchnorm(&model, &samples).unwrap(), model);
        let mut resnet_s = preset("resnet-s").unwrap();
        resnet_s.input = [1, 8, 8];
        // One batch of 40 samples; and 21 samples in batches of at most 8 (7 each), whose
        // statistics are pooled.
        let cases = [(preset("resnet:depth=8,width=8,input=1x8x8").unwrap(), 40, 1024), (resnet_s, 21, 8)];
        for (spec, n, most) in cases {
            let model = random_model(&spec, 5);
            let samples = random_samples(spec.input, n, spec.classes, 6);
            let a = recalibration::recalibrate_in_batches(2, &model, &samples, most).unwrap();
            let b = burn.recalibrate_batchnorm_in_passes(&model, &samples, most).unwrap();
            if most == 1024 {
                assert_eq!(cpu.recalibrate_batchnorm(&model, &samples).unwrap(), a);
            }
            for (i, p) in model.params().iter().enumerate() {
                let (x, y) = (&a.values()[i], &b.values()[i]);
                if p.role.is_buffer() {
                    // Statistics of f32 activations of O(1), pooled in f64 here and in burn,
                    // normalised with f32 batch statistics on both sides: they agree to
                    // ~3e-7 relative. Stale statistics miss 1e-5 by far; normalising with
                    // the unbiased instead of the biased batch variance moves deeper
                    // statistics by ~2e-4.
                    let r = relative(x, y);
                    assert!(r < 1e-5, "{} ({n} samples): {} differs by {r}: {x:?} vs {y:?}", spec.name, p.name);
                    assert_ne!(x, &model.values()[i], "{} should be re-estimated", p.name);
                } else {
                    assert_eq!(x, &model.values()[i], "{} changed", p.name);
                }
            }
        }
        let few = preset("resnet:depth=8,width=2,input=1x4x4").unwrap();
        let model = random_model(&few, 7);
        let one = random_samples(few.input, 1, few.classes, 8);
        let (a, b) = (
            cpu.recalibrate_batchnorm(&model, &one).unwrap_err(),
            burn.recalibrate_batchnorm(&model, &one).unwrap_err(),
        );
        assert_eq!(a.to_string(), b.to_string());
    }

    /// Without batch normalisation there is nothing to re-estimate, on either engine.
    #[test]
    fn a_model_without_batch_norm_comes_back_as_it_is_on_both_engines() {
        let spec = preset("cnn-digits").unwrap().with_dropout(0.3);
        let model = random_model(&spec, 51);
        let samples = random_samples(spec.input, 6, spec.classes, 52);
        assert_eq!(FlexEngine::new().recalibrate_batchnorm(&model, &samples).unwrap(), model);
        assert_eq!(CpuEngine::with_threads(2).recalibrate_batchnorm(&model, &samples).unwrap(), model);
    }

    #[test]
    fn training_follows_burn_step_for_step() {
        // Same shuffles, same dropout masks, same update rule: with SGD (updates linear in
        // the gradients) 6 steps keep the f32 rounding differences near 1e-6 relative. Adam
        // is left out: for gradients near 0 its update lr·g/(|g| + ε) turns rounding noise
        // into steps of size lr.
        let spec = preset("cnn-digits").unwrap().with_dropout(0.2);
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

    /// Train-mode batch norm (batch statistics forward and backward, running statistics
    /// after each step, buffers left out of the update and of weight decay) on residual
    /// networks, three members batched as the CPU engine batches them (two share a seed).
    #[test]
    fn training_a_resnet_follows_burn_step_for_step() {
        // Same shuffles and update rule: with SGD, 6 steps keep the f32 rounding differences
        // near 1e-6 relative, as for the sequential nets above. 40 samples in batches of 16:
        // the last batch of each epoch holds 8.
        let mut resnet_s = preset("resnet-s").unwrap();
        resnet_s.input = [1, 8, 8];
        for spec in [preset("resnet:depth=8,width=8,input=1x8x8").unwrap(), resnet_s] {
            let samples = random_samples(spec.input, 40, spec.classes, 72);
            let jobs = || -> Vec<TrainJob> {
                (0..3)
                    .map(|i| TrainJob {
                        model: random_model(&spec, 90 + i),
                        config: TrainConfig {
                            epochs: 2,
                            batch_size: 16,
                            lr: 0.05,
                            weight_decay: 1e-3,
                            optimizer: Optimizer::Sgd { momentum: 0.9 },
                            seed: [5, 5, 6][i as usize],
                        },
                    })
                    .collect()
            };
            let a = CpuEngine::with_threads(2).train(jobs(), &samples, &mut |_| {}).unwrap();
            let b = FlexEngine::new().train(jobs(), &samples, &mut |_| {}).unwrap();
            for (i, ((x, y), start)) in a.iter().zip(&b).zip(jobs()).enumerate() {
                for ((p, u), (v, w)) in
                    x.params().iter().zip(x.values()).zip(y.values().iter().zip(start.model.values()))
                {
                    let r = relative(u, v);
                    assert!(r < 1e-4, "{} job {i}: {} differs by {r}", spec.name, p.name);
                    assert_ne!(u, w, "{} job {i}: {} did not move", spec.name, p.name);
                }
            }
        }
    }
}

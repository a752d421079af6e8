//! Re-estimating the running statistics of every batch normalisation from training images,
//! the usual repair after one-shot pruning: the pruned convs feed their batch norms another
//! distribution than the one the dense network's statistics describe.
//!
//! The samples run through the network in train-mode forward passes without a graph, and
//! each batch norm's per-batch mean and variance are pooled over the batches in f64 (Chan,
//! Golub & LeVeque's pairwise update), which makes the result the statistics of all the
//! values the batch norm's input took, whatever the batches (see
//! [`hyperprune_core::engine::Engine::recalibrate_batchnorm`] for the semantics).

use burn::tensor::backend::Backend;

use super::batch::{check_samples, images_in};
use super::network::{Op, Plan, Training, download, upload};
use hyperprune_core::arch::FeatureShape;
use hyperprune_core::dataset::Samples;
use hyperprune_core::engine::EngineError;
use hyperprune_core::model::Model;

/// The most samples in one train-mode pass: as many as inference takes at once, so that a
/// usual recalibration budget (a few hundred images) runs as one batch and its statistics are
/// exactly those of one full-batch pass.
const RECALIBRATION_BATCH: usize = 1024;

/// `model` with its batch norms' running statistics re-estimated from `samples`, in passes
/// of at most [`RECALIBRATION_BATCH`] samples.
///
/// # Errors
/// As [`hyperprune_core::engine::Engine::recalibrate_batchnorm`].
pub(super) fn recalibrate_batchnorm<Bk: Backend>(
    model: &Model,
    samples: &Samples,
    device: &Bk::Device,
) -> Result<Model, EngineError> {
    recalibrate_in_batches::<Bk>(model, samples, RECALIBRATION_BATCH, device)
}

/// A batch norm layer and what it sees.
struct Layer {
    /// Index of its scale in the parameter list; shift, running mean and running variance
    /// follow.
    scale: usize,
    /// Channels.
    channels: usize,
    /// Values per channel and sample (`h·w` of its input).
    positions: usize,
}

/// [`recalibrate_batchnorm`] in passes of at most `most` samples (at least 4, so that no
/// pass of a split set holds a single sample).
pub(crate) fn recalibrate_in_batches<Bk: Backend>(
    model: &Model,
    samples: &Samples,
    most: usize,
    device: &Bk::Device,
) -> Result<Model, EngineError> {
    debug_assert!(most >= 4, "passes of {most} samples could leave one sample alone");
    let mut plan = Plan::new(model.spec())?;
    check_samples(&plan.spec, samples)?;
    let layers = batch_norm_layers(&plan, samples.len())?;
    if layers.is_empty() {
        return Ok(model.clone());
    }
    // Momentum 1 makes the "running" statistics a train-mode pass leaves behind the batch's
    // own (mean and unbiased variance); dropout is off, as in the network that is evaluated.
    for op in &mut plan.ops {
        match op {
            Op::BatchNorm { momentum, .. } => *momentum = 1.0,
            Op::Dropout { p } => *p = 0.0,
            _ => {}
        }
    }
    // Reset the stale statistics: train mode does not read them, and momentum 1 multiplies
    // them by zero, which a non-finite stale value would survive.
    let mut values = model.values().to_vec();
    for layer in &layers {
        values[layer.scale + 2].fill(0.0);
        values[layer.scale + 3].fill(1.0);
    }
    let params = upload::<Bk>(&values, device);
    let mut pooled: Vec<PooledMoments> = layers.iter().map(|l| PooledMoments::new(l.channels)).collect();
    let mut training = Training::<Bk>::new(0);
    for range in balanced_chunks(samples.len(), most) {
        let batch = range.len();
        let x = images_in::<Bk>(samples, range, device);
        drop(plan.logits(&params, x, Some(&mut training)));
        let mut running = training.running.drain(..);
        // A pass runs the batch norms in layer order, each leaving its mean, then its variance.
        for (layer, moments) in layers.iter().zip(&mut pooled) {
            let (Some((m, mean)), Some((v, var))) = (running.next(), running.next()) else {
                unreachable!("every batch norm leaves its statistics")
            };
            debug_assert_eq!((m, v), (layer.scale + 2, layer.scale + 3));
            moments.add_batch(batch * layer.positions, &download(mean), &download(var));
        }
    }
    for (layer, moments) in layers.iter().zip(pooled) {
        let (mean, var) = moments.mean_and_unbiased_var();
        values[layer.scale + 2] = mean;
        values[layer.scale + 3] = var;
    }
    Model::new(plan.spec, values).map_err(|e| EngineError::Mismatch(e.to_string()))
}

/// The batch norms of `plan`, in layer order, checked to see at least two values per
/// channel from `n` samples.
fn batch_norm_layers(plan: &Plan, n: usize) -> Result<Vec<Layer>, EngineError> {
    let invalid = |e: hyperprune_core::arch::ArchError| EngineError::Mismatch(e.to_string());
    let inputs = plan.spec.input_shapes().map_err(invalid)?;
    let mut layers = Vec::new();
    for (i, (op, input)) in plan.ops.iter().zip(inputs).enumerate() {
        let (&Op::BatchNorm { scale, .. }, FeatureShape::Map { c, h, w }) = (op, input) else {
            continue;
        };
        if n * h * w < 2 {
            let name = plan.spec.graph().map_err(invalid)?.nodes[i].name.clone();
            return Err(EngineError::Mismatch(format!(
                "recalibrating batch norm '{name}' (layer {i}) of '{}' needs at least two values per channel, \
                 {n} sample(s) of {h}×{w} give {}; recalibrate on more samples",
                plan.spec.name,
                n * h * w
            )));
        }
        layers.push(Layer { scale, channels: c, positions: h * w });
    }
    Ok(layers)
}

/// `0..n` cut into `⌈n / most⌉` consecutive ranges whose lengths differ by at most one:
/// when `n > most`, every range holds more than `most / 2` samples (no short last batch).
fn balanced_chunks(n: usize, most: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let k = n.div_ceil(most).max(1);
    (0..k).map(move |i| i * n / k..(i + 1) * n / k)
}

/// Per-channel count, mean and sum of squared deviations of the values seen so far.
struct PooledMoments {
    count: f64,
    mean: Vec<f64>,
    /// `Σ (x − mean)²`.
    m2: Vec<f64>,
}

impl PooledMoments {
    fn new(channels: usize) -> Self {
        PooledMoments { count: 0.0, mean: vec![0.0; channels], m2: vec![0.0; channels] }
    }

    /// Adds a batch of `count` values per channel with these means and unbiased variances
    /// (Chan et al.: the squared difference of the means, weighted, joins the sums of squares).
    fn add_batch(&mut self, count: usize, mean: &[f32], unbiased_var: &[f32]) {
        let (na, nb) = (self.count, count as f64);
        let n = na + nb;
        for c in 0..self.mean.len() {
            let m2b = if count > 1 { unbiased_var[c] as f64 * (nb - 1.0) } else { 0.0 };
            let delta = mean[c] as f64 - self.mean[c];
            self.mean[c] += delta * nb / n;
            self.m2[c] += m2b + delta * delta * na * nb / n;
        }
        self.count = n;
    }

    /// The mean and the unbiased variance `Σ (x − mean)² / (count − 1)`, as f32.
    fn mean_and_unbiased_var(self) -> (Vec<f32>, Vec<f32>) {
        let denominator = self.count - 1.0;
        (self.mean.iter().map(|&m| m as f32).collect(), self.m2.iter().map(|&s| (s / denominator) as f32).collect())
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::FlexEngine;
    use crate::network::tests::{random_images, random_values};
    use hyperprune_core::arch::{ArchSpec, ParamLayerKind, ParamRole, preset};
    use hyperprune_core::engine::{Engine, Init, Optimizer, TrainConfig, TrainJob, init_model};

    /// conv (1 → 2 channels, 2×2 kernel, with bias) → bn → relu → global pool → linear, on
    /// 3×3 images: the batch norm sees 2×2 maps.
    fn conv_bn() -> ArchSpec {
        ArchSpec::from_json(
            r#"{"name":"conv-bn","input":[1,3,3],"classes":2,"layers":[
                {"type":"conv2d","name":"conv","out_channels":2,"kernel":2},
                {"type":"batchnorm2d","name":"bn"},
                {"type":"relu"},
                {"type":"global_avgpool"},{"type":"flatten"},
                {"type":"linear","name":"fc","out_features":2}]}"#,
        )
        .unwrap()
    }

    fn samples(spec: &ArchSpec, n: usize, seed: u64) -> Samples {
        let d: usize = spec.input.iter().product();
        Samples { shape: spec.input, images: random_images(n, d, seed), labels: vec![0; n] }
    }

    /// Per channel, the mean and unbiased variance of the conv's outputs over every sample
    /// and position, by direct f64 loops.
    fn naive_conv_moments(model: &Model, samples: &Samples) -> (Vec<f64>, Vec<f64>) {
        let (w, b) = (model.tensor("conv.weight").unwrap(), model.tensor("conv.bias").unwrap());
        let mut outputs = vec![Vec::new(); 2];
        for s in 0..samples.len() {
            let x = samples.image(s);
            for (o, out) in outputs.iter_mut().enumerate() {
                for (y, z) in (0..2).flat_map(|y| (0..2).map(move |z| (y, z))) {
                    let mut v = b[o] as f64;
                    for (ky, kx) in (0..2).flat_map(|ky| (0..2).map(move |kx| (ky, kx))) {
                        v += w[o * 4 + ky * 2 + kx] as f64 * x[(y + ky) * 3 + z + kx] as f64;
                    }
                    out.push(v);
                }
            }
        }
        let mean: Vec<f64> = outputs.iter().map(|v| v.iter().sum::<f64>() / v.len() as f64).collect();
        let var = outputs
            .iter()
            .zip(&mean)
            .map(|(v, m)| v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64)
            .collect();
        (mean, var)
    }

    /// Inputs in [−1, 1], weights of O(1): conv outputs of O(1) summed in f32 from 5 terms
    /// (error ~1e-7), means and variances over 40–60 such values: 1e-5 relative to the
    /// larger of the value and 1 leaves two orders of margin, while the stale statistics of
    /// `random_values` (means in ±0.5, variances in 0.5..2) or a biased variance (off by
    /// 1/(n − 1) ≥ 1/59 relative) miss it by far more.
    fn assert_moments(model: &Model, want: &(Vec<f64>, Vec<f64>), what: &str) {
        let got = (model.tensor("bn.running_mean").unwrap(), model.tensor("bn.running_var").unwrap());
        for (c, (&g, &w)) in got.0.iter().zip(&want.0).chain(got.1.iter().zip(&want.1)).enumerate() {
            assert!((g as f64 - w).abs() <= 1e-5 * w.abs().max(1.0), "{what}: statistic {c}: {g} vs {w}; {got:?}");
        }
    }

    #[test]
    fn recalibrated_statistics_are_the_mean_and_unbiased_variance_of_the_batch_norm_input() {
        let spec = conv_bn();
        let model = Model::new(spec.clone(), random_values(&spec, 21)).unwrap();
        let samples = samples(&spec, 15, 22);
        let want = naive_conv_moments(&model, &samples);
        let engine = FlexEngine::new();
        let one_pass = engine.recalibrate_batchnorm(&model, &samples).unwrap();
        assert_moments(&one_pass, &want, "one pass of 15");
        // Passes of 5 samples: the first batch norm's input does not depend on the batches,
        // so pooling gives the same statistics (an average of per-batch variances would not).
        let device = Default::default();
        let pooled = recalibrate_in_batches::<Flex>(&model, &samples, 5, &device).unwrap();
        assert_moments(&pooled, &want, "three passes of 5");
        // Passes of 4: 15 samples in balanced batches of 3, 4, 4, 4 (no batch of one).
        assert_eq!(balanced_chunks(15, 4).map(|r| r.len()).collect::<Vec<_>>(), vec![3, 4, 4, 4]);
        let uneven = recalibrate_in_batches::<Flex>(&model, &samples, 4, &device).unwrap();
        assert_moments(&uneven, &want, "passes of 3, 4, 4, 4");
    }

    /// A second batch norm sees the first one's output normalised with the batch's own
    /// statistics (biased variance, as in training), not with the running ones.
    #[test]
    fn deeper_batch_norms_see_inputs_normalised_with_batch_statistics() {
        let spec = ArchSpec::from_json(
            r#"{"name":"two-bn","input":[1,3,3],"classes":2,"layers":[
                {"type":"conv2d","name":"conv","out_channels":2,"kernel":2},
                {"type":"batchnorm2d","name":"bn"},
                {"type":"relu"},
                {"type":"batchnorm2d","name":"bn2"},
                {"type":"global_avgpool"},{"type":"flatten"},
                {"type":"linear","name":"fc","out_features":2}]}"#,
        )
        .unwrap();
        let model = Model::new(spec.clone(), random_values(&spec, 31)).unwrap();
        let samples = samples(&spec, 12, 32);
        let got = FlexEngine::new().recalibrate_batchnorm(&model, &samples).unwrap();
        let (mean, var) = naive_conv_moments(&model, &samples);
        let (g, b) = (model.tensor("bn.weight").unwrap(), model.tensor("bn.bias").unwrap());
        let (w, bias) = (model.tensor("conv.weight").unwrap(), model.tensor("conv.bias").unwrap());
        for c in 0..2 {
            let biased = var[c] * (47.0 / 48.0);
            let mut relu = Vec::new();
            for s in 0..samples.len() {
                let x = samples.image(s);
                for (y, z) in (0..2).flat_map(|y| (0..2).map(move |z| (y, z))) {
                    let conv = bias[c] as f64
                        + (0..4).map(|k| w[c * 4 + k] as f64 * x[(y + k / 2) * 3 + z + k % 2] as f64).sum::<f64>();
                    let normalised = g[c] as f64 * (conv - mean[c]) / (biased + 1e-5).sqrt() + b[c] as f64;
                    relu.push(normalised.max(0.0));
                }
            }
            let m = relu.iter().sum::<f64>() / 48.0;
            let v = relu.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 47.0;
            let (gm, gv) = (got.tensor("bn2.running_mean").unwrap()[c], got.tensor("bn2.running_var").unwrap()[c]);
            // Normalised values of O(1) from f32 statistics (relative error ~1e-6): 1e-4
            // absolute; normalising with the running statistics instead moves them by O(0.1).
            assert!(
                (gm as f64 - m).abs() < 1e-4 && (gv as f64 - v).abs() < 1e-4,
                "channel {c}: {gm}, {gv} vs {m}, {v}"
            );
        }
    }

    #[test]
    fn weights_scales_and_shifts_stay_bit_identical() {
        let mut spec = preset("resnet-s").unwrap();
        spec.input = [1, 8, 8];
        let model = Model::new(spec.clone(), random_values(&spec, 41)).unwrap();
        let got = FlexEngine::new().recalibrate_batchnorm(&model, &samples(&spec, 40, 42)).unwrap();
        let mut buffers = 0;
        for (i, p) in model.params().iter().enumerate() {
            if p.role.is_buffer() {
                assert_ne!(got.values()[i], model.values()[i], "{} should be re-estimated", p.name);
                buffers += 1;
            } else {
                assert_eq!(got.values()[i], model.values()[i], "{} changed", p.name);
            }
        }
        assert!(buffers > 0);
    }

    #[test]
    fn too_few_values_per_channel_and_wrong_shapes_are_refused() {
        // On 4×4 inputs the last stage of this ResNet normalises 1×1 maps.
        let spec = preset("resnet:depth=8,width=2,input=1x4x4").unwrap();
        let model = Model::new(spec.clone(), random_values(&spec, 61)).unwrap();
        let engine = FlexEngine::new();
        let err = engine.recalibrate_batchnorm(&model, &samples(&spec, 1, 62)).unwrap_err().to_string();
        assert!(err.contains("at least two values per channel") && err.contains("1×1"), "{err}");
        let err = engine.recalibrate_batchnorm(&model, &samples(&spec, 0, 62)).unwrap_err().to_string();
        assert!(err.contains("at least two values per channel"), "{err}");
        engine.recalibrate_batchnorm(&model, &samples(&spec, 2, 62)).unwrap();
        let wrong = Samples { shape: [1, 8, 8], images: vec![0.0; 64], labels: vec![0] };
        let err = engine.recalibrate_batchnorm(&model, &wrong).unwrap_err().to_string();
        assert!(err.contains("[1, 8, 8]"), "{err}");
    }

    /// Zeroes the half of all conv weights (pooled over every conv) of smallest magnitude.
    fn prune_half_of_conv_weights(model: &mut Model) {
        let convs: Vec<usize> = (model.params().iter().enumerate())
            .filter(|(_, p)| p.kind == ParamLayerKind::Conv2d && p.role == ParamRole::Weight)
            .map(|(i, _)| i)
            .collect();
        let mut magnitudes: Vec<(f32, usize, usize)> = convs
            .iter()
            .flat_map(|&i| model.values()[i].iter().enumerate().map(move |(j, w)| (w.abs(), i, j)))
            .collect();
        magnitudes.sort_by(|a, b| a.0.total_cmp(&b.0));
        let half = magnitudes.len() / 2;
        for &(_, i, j) in &magnitudes[..half] {
            model.values_mut()[i][j] = 0.0;
        }
    }

    /// The case recalibration exists for: after one-shot magnitude pruning of a trained
    /// ResNet, the dense statistics are stale and re-estimating them recovers accuracy.
    #[test]
    fn recalibration_recovers_accuracy_after_pruning_a_trained_resnet() {
        let spec = preset("resnet:depth=8,width=8,input=1x8x8").unwrap();
        let data = hyperprune_core::dataset::load("digits", &Default::default()).expect("the embedded digits load");
        let engine = FlexEngine::new();
        let config = TrainConfig {
            epochs: 2,
            batch_size: 32,
            lr: 3e-3,
            weight_decay: 1e-4,
            optimizer: Optimizer::Adam,
            seed: 5,
        };
        let job = TrainJob { model: init_model(&spec, Init::KaimingNormal, 5).unwrap(), config };
        let trained = engine.train(vec![job], &data.train, &mut |_| {}).unwrap().remove(0);
        let mut pruned = trained.clone();
        prune_half_of_conv_weights(&mut pruned);
        let mut order: Vec<usize> = (0..data.train.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(6));
        let calibration = data.train.subset(&order[..512]);
        let recalibrated = engine.recalibrate_batchnorm(&pruned, &calibration).unwrap();
        let eval = engine.evaluate(&[&trained, &pruned, &recalibrated], &data.test).unwrap();
        eprintln!(
            "resnet depth 8 width 8 on digits, {} test images: dense {:.4} (loss {:.4}); 50% of conv weights \
             pruned: {:.4} (loss {:.4}) with stale batch norm statistics, {:.4} (loss {:.4}) recalibrated on 512 \
             train images",
            eval[0].samples,
            eval[0].accuracy,
            eval[0].loss,
            eval[1].accuracy,
            eval[1].loss,
            eval[2].accuracy,
            eval[2].loss
        );
        assert!(eval[2].accuracy > eval[1].accuracy, "{eval:?}");
    }

    #[test]
    fn pooled_moments_match_one_pass_over_all_values() {
        let mut rng = ChaCha8Rng::seed_from_u64(71);
        let values: Vec<f64> = (0..30).map(|_| rng.random_range(-3.0..5.0)).collect();
        let mut pooled = PooledMoments::new(1);
        for batch in [&values[..7], &values[7..8], &values[8..30]] {
            let m = batch.iter().sum::<f64>() / batch.len() as f64;
            let v = batch.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (batch.len() as f64 - 1.0).max(1.0);
            pooled.add_batch(batch.len(), &[m as f32], &[v as f32]);
        }
        let m = values.iter().sum::<f64>() / 30.0;
        let v = values.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 29.0;
        let (gm, gv) = pooled.mean_and_unbiased_var();
        // Batch moments rounded to f32 (relative 6e-8) before pooling: 1e-6 relative.
        assert!((gm[0] as f64 - m).abs() < 1e-6 * m.abs().max(1.0), "{gm:?} vs {m}");
        assert!((gv[0] as f64 - v).abs() < 1e-6 * v, "{gv:?} vs {v}");
    }
}

//! The calibration services pruners ask the host for: layer-input Hessians, per-sample
//! gradients, and the loss (cross-entropy or distillation of the dense model) and gradient
//! of a soft-masked model.

use std::ops::Range;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::UnfoldOptions;
use burn::tensor::{Tensor, activation, module};

use super::batch::{INFERENCE_BATCH, check_samples, chunks, images_in, one_hot};
use super::network::{Features, Op, Plan, cross_entropy_sum, distillation_sum, download, upload};
use hyperprune_core::dataset::Samples;
use hyperprune_core::engine::check_temperature;
use hyperprune_core::engine::{DenseMatrix, EngineError};
use hyperprune_core::gram::{accumulate_gram, mirror_upper};
use hyperprune_core::model::Model;

/// Unfolded input scalars per forward chunk of the Hessian (bounds memory at ~16 MB).
const HESSIAN_CHUNK_SCALARS: usize = 4 << 20;

/// Rows of per-sample gradients gathered on the device before one read-back.
const GRADIENT_ROWS_PER_READ: usize = 64;

/// `XᵀX / n` of the inputs of prunable layer `layer`, accumulated in f64 on the host.
///
/// Conv inputs are unfolded by burn's `unfold4d`, whose row order `[in, kh, kw]` is that of
/// a weight row; padding contributes zeros and `n` counts samples × output positions.
///
/// # Errors
/// [`EngineError::Mismatch`] for a bad layer index, no samples, or samples that do not fit.
pub(super) fn layer_input_hessian<B: Backend>(
    model: &Model,
    layer: usize,
    samples: &Samples,
    device: &B::Device,
) -> Result<(DenseMatrix<f64>, usize), EngineError> {
    let plan = prepare(model, samples)?;
    let &op_index = plan.prunable_layers.get(layer).ok_or_else(|| {
        EngineError::Mismatch(format!(
            "prunable layer {layer} does not exist: network '{}' has {} prunable layers",
            plan.spec.name,
            plan.prunable_layers.len()
        ))
    })?;
    let op = plan.ops[op_index].clone();
    let (d, positions) = match op {
        Op::Conv { shape: [_, c, k, _], .. } => {
            let hyperprune_core::arch::FeatureShape::Map { h, w, .. } =
                plan.spec.shapes().expect("checked by Plan::new")[op_index]
            else {
                unreachable!("a conv outputs a map")
            };
            (c * k * k, h * w)
        }
        Op::Linear { shape: [_, i], .. } => (i, 1),
        _ => unreachable!("prunable layers are conv or linear"),
    };
    let params = upload::<B>(model.values(), device);
    let mut gram = vec![0f64; d * d];
    let mut rows = 0;
    let batch = (HESSIAN_CHUNK_SCALARS / (d * positions)).clamp(1, INFERENCE_BATCH);
    for range in chunks(samples.len(), batch) {
        let input = plan.forward(&params, images_in::<B>(samples, range, device), op_index, None);
        let unfolded = match (&op, input) {
            (&Op::Conv { shape: [_, _, k, _], stride, padding, .. }, Features::Map(x)) => {
                let options = UnfoldOptions::new([stride, stride], [padding, padding], [1, 1]);
                let u = module::unfold4d(x, [k, k], options); // [b, d, positions]
                let [b, d, l] = u.dims();
                u.swap_dims(1, 2).reshape([b * l, d])
            }
            (Op::Linear { .. }, Features::Flat(x)) => x,
            _ => unreachable!("a valid spec feeds conv a map and linear a vector"),
        };
        let x = download(unfolded);
        rows += x.len() / d;
        accumulate_gram(&mut gram, &x, d);
    }
    mirror_upper(&mut gram, d);
    let scale = 1.0 / rows as f64;
    gram.iter_mut().for_each(|v| *v *= scale);
    Ok((DenseMatrix { rows: d, cols: d, data: gram }, rows))
}

/// Gradients of the mean cross-entropy over each run of `minibatch` consecutive samples
/// with respect to every prunable weight (layer order, row-major within a layer); the last
/// run may be shorter and is averaged over its own samples.
///
/// One backward pass per row: exact and simple, the reference other engines are held to.
///
/// # Errors
/// [`EngineError::Mismatch`] for `minibatch == 0`, no samples, or samples that do not fit.
pub(super) fn per_sample_gradients<B: AutodiffBackend>(
    model: &Model,
    samples: &Samples,
    minibatch: usize,
    device: &B::Device,
) -> Result<DenseMatrix<f32>, EngineError> {
    if minibatch == 0 {
        return Err(EngineError::Mismatch("the gradient mini-batch size must be positive".into()));
    }
    let plan = prepare(model, samples)?;
    let prunable: Vec<usize> = plan.prunable_params().collect();
    let inner = upload::<B::InnerBackend>(model.values(), device);
    let cols = model.prunable_count();
    let mut data = Vec::with_capacity(samples.len().div_ceil(minibatch) * cols);
    let mut pending = Vec::with_capacity(GRADIENT_ROWS_PER_READ);
    for range in chunks(samples.len(), minibatch) {
        let params: Vec<Tensor<B, 1>> = inner
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let p = Tensor::from_inner(p.clone());
                if prunable.contains(&i) { p.require_grad() } else { p }
            })
            .collect();
        let targets = one_hot::<B>(samples.labels[range.clone()].iter().copied(), plan.spec.classes, device);
        let len = range.len();
        let logits = plan.logits(&params, images_in::<B>(samples, range, device), None);
        let grads = cross_entropy_sum(logits, targets).div_scalar(len as f64).backward();
        let row = prunable.iter().map(|&i| params[i].grad(&grads).unwrap_or_else(|| inner[i].zeros_like())).collect();
        pending.push(Tensor::cat(row, 0));
        if pending.len() == GRADIENT_ROWS_PER_READ {
            data.extend(download(Tensor::cat(std::mem::take(&mut pending), 0)));
        }
    }
    if !pending.is_empty() {
        data.extend(download(Tensor::cat(pending, 0)));
    }
    Ok(DenseMatrix { rows: data.len() / cols, cols, data })
}

/// Mean cross-entropy of the model with prunable weights `w ⊙ m`, and its gradient with
/// respect to `m` (layer order).
///
/// # Errors
/// [`EngineError::Mismatch`] for a mask of the wrong length, no samples, or samples that
/// do not fit.
pub(super) fn masked_loss_and_grad<B: AutodiffBackend>(
    model: &Model,
    soft_mask: &[f32],
    samples: &Samples,
    device: &B::Device,
) -> Result<(f64, Vec<f32>), EngineError> {
    masked_objective::<B>(model, soft_mask, samples, device, |plan, _, params, range| {
        let targets = one_hot::<B>(samples.labels[range.clone()].iter().copied(), plan.spec.classes, device);
        cross_entropy_sum(plan.logits(params, images_in::<B>(samples, range, device), None), targets)
    })
}

/// Mean distillation loss `T² · KL(softmax(z/T) ‖ softmax(z_m/T))` of the model with
/// prunable weights `w ⊙ m` (logits `z_m`) against the model as given (logits `z`, taken
/// without a graph), and its gradient with respect to `m` (layer order).
///
/// # Errors
/// [`EngineError::Mismatch`] for a temperature that is not finite and positive, a mask of
/// the wrong length, no samples, or samples that do not fit.
pub(super) fn masked_distill_loss_and_grad<B: AutodiffBackend>(
    model: &Model,
    soft_mask: &[f32],
    samples: &Samples,
    temperature: f64,
    device: &B::Device,
) -> Result<(f64, Vec<f32>), EngineError> {
    check_temperature(temperature)?;
    masked_objective::<B>(model, soft_mask, samples, device, |plan, dense, params, range| {
        let teacher = plan.logits(dense, images_in::<B::InnerBackend>(samples, range.clone(), device), None);
        let log_p = Tensor::from_inner(activation::log_softmax(teacher.div_scalar(temperature), 1));
        distillation_sum(plan.logits(params, images_in::<B>(samples, range, device), None), log_p, temperature)
    })
}

/// The mean over `samples` of `chunk_loss` (a chunk's summed loss, given the plan, the
/// weights as given, the weights `w ⊙ m` and the chunk's samples), and its gradient with
/// respect to `m` (layer order).
fn masked_objective<B: AutodiffBackend>(
    model: &Model,
    soft_mask: &[f32],
    samples: &Samples,
    device: &B::Device,
    chunk_loss: impl Fn(&Plan, &[Tensor<B::InnerBackend, 1>], &[Tensor<B, 1>], Range<usize>) -> Tensor<B, 1>,
) -> Result<(f64, Vec<f32>), EngineError> {
    let plan = prepare(model, samples)?;
    if soft_mask.len() != model.prunable_count() {
        return Err(EngineError::Mismatch(format!(
            "the soft mask has {} entries, network '{}' has {} prunable weights",
            soft_mask.len(),
            plan.spec.name,
            model.prunable_count()
        )));
    }
    let inner = upload::<B::InnerBackend>(model.values(), device);
    let mut masks = Vec::new();
    let mut offset = 0;
    for (_, w) in model.prunable() {
        masks.push(soft_mask[offset..offset + w.len()].to_vec());
        offset += w.len();
    }
    let masks = upload::<B::InnerBackend>(&masks, device);
    let n = samples.len() as f64;
    let mut loss = 0.0;
    let mut grad: Option<Tensor<B::InnerBackend, 1>> = None;
    for range in chunks(samples.len(), INFERENCE_BATCH) {
        let leaves: Vec<Tensor<B, 1>> = masks.iter().map(|m| Tensor::from_inner(m.clone()).require_grad()).collect();
        let mut leaf = leaves.iter();
        let params: Vec<Tensor<B, 1>> = plan
            .params
            .iter()
            .zip(&inner)
            .map(|(p, w)| {
                let w = Tensor::from_inner(w.clone());
                if p.prunable { w * leaf.next().expect("one mask per prunable weight").clone() } else { w }
            })
            .collect();
        let chunk_loss = chunk_loss(&plan, &inner, &params, range);
        let grads = chunk_loss.clone().div_scalar(n).backward();
        loss += download(chunk_loss.inner())[0] as f64;
        let g = Tensor::cat(
            leaves.iter().zip(&masks).map(|(l, m)| l.grad(&grads).unwrap_or_else(|| m.zeros_like())).collect(),
            0,
        );
        grad = Some(match grad {
            Some(sum) => sum + g,
            None => g,
        });
    }
    Ok((loss / n, grad.map(download).unwrap_or_default()))
}

/// Compiles the model's network and checks the samples against it.
fn prepare(model: &Model, samples: &Samples) -> Result<Plan, EngineError> {
    let plan = Plan::new(model.spec())?;
    check_samples(&plan.spec, samples)?;
    if samples.is_empty() {
        return Err(EngineError::Mismatch("calibration needs at least one sample, none given".into()));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::images_in;
    use crate::network::tests::{naive_forward, one_block, random_images, random_values, widen};
    use burn::backend::{Autodiff, Flex};
    use hyperprune_core::arch::ArchSpec;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    type B = Autodiff<Flex>;

    /// Strided, padded conv, a second conv, max pooling, dropout (inactive here) and two
    /// linear layers: every kind of prunable layer and input layout the services handle.
    fn tiny() -> (Model, Samples) {
        let spec: ArchSpec = serde_json::from_str(
            r#"{"name":"calib","input":[2,6,6],"classes":3,"layers":[
                {"type":"conv2d","out_channels":3,"kernel":3,"stride":2,"padding":1},{"type":"tanh"},
                {"type":"conv2d","out_channels":4,"kernel":2},{"type":"gelu"},
                {"type":"maxpool","kernel":2},{"type":"flatten"},
                {"type":"linear","out_features":5},{"type":"tanh"},{"type":"dropout","p":0.3},
                {"type":"linear","out_features":3}]}"#,
        )
        .unwrap();
        let mut model = Model::new(spec.clone(), random_values(&spec, 3)).unwrap();
        // Prune a few weights, as a pruner's calibration request would see them.
        let keep: Vec<Vec<bool>> = model.prunable().map(|(_, w)| (0..w.len()).map(|i| i % 5 != 2).collect()).collect();
        model.apply_masks(&keep, None).unwrap();
        let n = 7;
        let samples = Samples {
            shape: spec.input,
            images: random_images(n, 72, 4),
            labels: (0..n).map(|i| (i * 2 % 3) as u32).collect(),
        };
        (model, samples)
    }

    /// A residual block with batch norm (eval mode in every service), a few weights pruned.
    fn residual() -> (Model, Samples) {
        let spec = one_block();
        let mut model = Model::new(spec.clone(), random_values(&spec, 5)).unwrap();
        let keep: Vec<Vec<bool>> = model.prunable().map(|(_, w)| (0..w.len()).map(|i| i % 7 != 3).collect()).collect();
        model.apply_masks(&keep, None).unwrap();
        let n = 5;
        let samples = Samples {
            shape: spec.input,
            images: random_images(n, 50, 6),
            labels: (0..n).map(|i| (i % 3) as u32).collect(),
        };
        (model, samples)
    }

    /// Cross-entropy of sample `s` under the f64 reference forward pass.
    fn naive_loss(spec: &ArchSpec, values: &[Vec<f64>], samples: &Samples, s: usize) -> f64 {
        let logits = naive_forward(spec, values, samples.image(s));
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = logits.iter().map(|v| (v - max).exp()).sum::<f64>().ln() + max;
        lse - logits[samples.labels[s] as usize]
    }

    /// `T² · KL(softmax(z/T) ‖ softmax(z_s/T))` of sample `s` under the f64 reference forward
    /// pass, `z` the logits under `teacher` and `z_s` those under `student`.
    fn naive_distillation(
        spec: &ArchSpec,
        teacher: &[Vec<f64>],
        student: &[Vec<f64>],
        samples: &Samples,
        s: usize,
        temperature: f64,
    ) -> f64 {
        let log_softmax = |values: &[Vec<f64>]| {
            let z: Vec<f64> = naive_forward(spec, values, samples.image(s)).iter().map(|v| v / temperature).collect();
            let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = z.iter().map(|v| (v - max).exp()).sum::<f64>().ln() + max;
            z.into_iter().map(move |v| v - lse)
        };
        let log_q: Vec<f64> = log_softmax(student).collect();
        let kl: f64 = log_softmax(teacher).zip(log_q).map(|(lp, lq)| lp.exp() * (lp - lq)).sum();
        temperature * temperature * kl
    }

    /// `(parameter index, offset in a gradient row)` of every prunable weight tensor.
    fn prunable_offsets(model: &Model) -> Vec<(usize, usize)> {
        let mut offset = 0;
        let mut out = Vec::new();
        for (i, p) in model.params().iter().enumerate().filter(|(_, p)| p.prunable) {
            out.push((i, offset));
            offset += p.numel();
        }
        out
    }

    /// `values` with each prunable weight times its mask entry.
    fn apply_mask(model: &Model, values: &[Vec<f64>], mask: &[f64]) -> Vec<Vec<f64>> {
        let mut v = values.to_vec();
        for (param, offset) in prunable_offsets(model) {
            v[param].iter_mut().enumerate().for_each(|(j, w)| *w *= mask[offset + j]);
        }
        v
    }

    /// Checks `grad` (the engine's gradient with respect to the mask) against central
    /// differences of `f` at a few probes of every prunable tensor, and that a weight that
    /// is zero gets a zero gradient (its mask entry cannot change anything).
    fn assert_mask_gradient(model: &Model, grad: &[f32], mask: &[f64], f: impl Fn(&[f64]) -> f64, label: &str) {
        let scale = grad.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        for (param, offset) in prunable_offsets(model) {
            for j in probes(model.values()[param].len()) {
                let fd = central_difference(|h| {
                    let mut m = mask.to_vec();
                    m[offset + j] += h;
                    f(&m)
                });
                let got = grad[offset + j] as f64;
                assert!((got - fd).abs() <= 1e-4 * scale, "{label}param {param}[{j}]: {got} vs {fd}");
            }
        }
        let (_, first) = model.prunable().next().unwrap();
        assert!(first.iter().zip(grad).all(|(&w, &g)| w != 0.0 || g == 0.0));
    }

    /// A few coordinates of a tensor of `numel` values: ends, middle, and an odd one.
    fn probes(numel: usize) -> [usize; 4] {
        [0, numel / 2, numel * 2 / 3 + 1, numel - 1]
    }

    /// Central difference in f64 with step 1e-5: truncation error O(h²) ≈ 1e-10 and
    /// rounding ≈ 1e-16 / 1e-5 = 1e-11, both far below the f32 error of the engine
    /// (≈ 1e-6 of the row's scale), which therefore sets the 1e-4 tolerances below.
    fn central_difference(f: impl Fn(f64) -> f64) -> f64 {
        let h = 1e-5;
        (f(h) - f(-h)) / (2.0 * h)
    }

    fn naive_unfold(x: &[f32], dims: [usize; 4], op: &Op) -> Vec<Vec<f64>> {
        let [n, c, h, w] = dims;
        let at = |b: usize, ch: usize, y: isize, xx: isize| {
            if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                0.0
            } else {
                x[((b * c + ch) * h + y as usize) * w + xx as usize] as f64
            }
        };
        let mut rows = Vec::new();
        match *op {
            Op::Conv { shape: [_, _, k, _], stride, padding, .. } => {
                let (oh, ow) = ((h + 2 * padding - k) / stride + 1, (w + 2 * padding - k) / stride + 1);
                for b in 0..n {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut row = Vec::new();
                            for ch in 0..c {
                                for ky in 0..k {
                                    for kx in 0..k {
                                        let y = (oy * stride + ky) as isize - padding as isize;
                                        let xx = (ox * stride + kx) as isize - padding as isize;
                                        row.push(at(b, ch, y, xx));
                                    }
                                }
                            }
                            rows.push(row);
                        }
                    }
                }
            }
            _ => rows.extend(x.chunks(c).map(|r| r.iter().map(|&v| v as f64).collect())),
        }
        rows
    }

    #[test]
    fn hessian_matches_a_naive_unfold_for_every_prunable_layer() {
        let (model, samples) = tiny();
        assert_hessians_match_naive_unfold(&model, &samples);
    }

    #[test]
    fn hessian_of_a_residual_block_reads_each_layer_s_own_input() {
        let (model, samples) = residual();
        assert_hessians_match_naive_unfold(&model, &samples);
    }

    fn assert_hessians_match_naive_unfold(model: &Model, samples: &Samples) {
        let device = Default::default();
        let plan = Plan::new(model.spec()).unwrap();
        let params = upload::<Flex>(model.values(), &device);
        for (layer, &op_index) in plan.prunable_layers.iter().enumerate() {
            let (hessian, n) = layer_input_hessian::<Flex>(model, layer, samples, &device).unwrap();
            // The layer's inputs come from the forward pass, itself checked against naive
            // loops in network.rs; the unfolding and the accumulation are what is tested here.
            let x = images_in::<Flex>(samples, 0..samples.len(), &device);
            let (x, dims) = match plan.forward(&params, x, op_index, None) {
                Features::Map(x) => {
                    let dims = x.dims();
                    (download(x), dims)
                }
                Features::Flat(x) => {
                    let [b, f] = x.dims();
                    (download(x), [b, f, 1, 1])
                }
            };
            let rows = naive_unfold(&x, dims, &plan.ops[op_index]);
            let d = rows[0].len();
            assert_eq!((hessian.rows, hessian.cols, n), (d, d, rows.len()), "layer {layer}");
            let scale = hessian.data.iter().fold(0f64, |m, v| m.max(v.abs()));
            for i in 0..d {
                for j in 0..d {
                    let want = rows.iter().map(|r| r[i] * r[j]).sum::<f64>() / rows.len() as f64;
                    // Same f32 inputs summed in f64 in another order: ~1e-16 per term.
                    assert!((hessian.data[i * d + j] - want).abs() <= 1e-12 * scale, "layer {layer} ({i}, {j})");
                }
            }
        }
    }

    #[test]
    fn per_sample_gradients_match_central_differences() {
        let (model, samples) = tiny();
        assert_per_sample_gradients_match_central_differences(&model, &samples, &[0, 3, 6]);
    }

    /// Eval mode: batch norm with running statistics is an affine map per channel, and the
    /// residual add sums the gradients of both branches into the block input.
    #[test]
    fn per_sample_gradients_through_batch_norm_and_a_residual_add_match_central_differences() {
        let (model, samples) = residual();
        assert_per_sample_gradients_match_central_differences(&model, &samples, &[0, 2, 4]);
    }

    fn assert_per_sample_gradients_match_central_differences(model: &Model, samples: &Samples, rows: &[usize]) {
        let grads = per_sample_gradients::<B>(model, samples, 1, &Default::default()).unwrap();
        assert_eq!((grads.rows, grads.cols), (samples.len(), model.prunable_count()));
        let values = widen(model.values());
        for &s in rows {
            let row = &grads.data[s * grads.cols..(s + 1) * grads.cols];
            let scale = row.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
            for (param, offset) in prunable_offsets(model) {
                for j in probes(values[param].len()) {
                    let fd = central_difference(|h| {
                        let mut v = values.clone();
                        v[param][j] += h;
                        naive_loss(model.spec(), &v, samples, s)
                    });
                    let got = row[offset + j] as f64;
                    assert!((got - fd).abs() <= 1e-4 * scale, "sample {s}, param {param}[{j}]: {got} vs {fd}");
                }
            }
        }
    }

    #[test]
    fn minibatch_rows_are_means_of_per_sample_rows() {
        let (model, samples) = tiny();
        let device = Default::default();
        let single = per_sample_gradients::<B>(&model, &samples, 1, &device).unwrap();
        let grouped = per_sample_gradients::<B>(&model, &samples, 3, &device).unwrap();
        let cols = single.cols;
        assert_eq!((grouped.rows, grouped.cols), (3, cols), "7 samples in runs of 3, 3 and 1");
        let scale = single.data.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (r, group) in [0..3, 3..6, 6..7].into_iter().enumerate() {
            for c in 0..cols {
                let mean = group.clone().map(|s| single.data[s * cols + c]).sum::<f32>() / group.len() as f32;
                // Both are f32 backward passes over the same network: a few ulps of the scale.
                assert!((grouped.data[r * cols + c] - mean).abs() <= 1e-5 * scale, "row {r}, column {c}");
            }
        }
    }

    #[test]
    fn masked_loss_and_grad_match_direct_loss_and_central_differences() {
        let (model, samples) = tiny();
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let mask: Vec<f32> = (0..model.prunable_count()).map(|_| rng.random_range(0.0..1.0)).collect();
        let (loss, grad) = masked_loss_and_grad::<B>(&model, &mask, &samples, &Default::default()).unwrap();
        assert_eq!(grad.len(), mask.len());
        let dense = widen(model.values());
        let masked = |mask: &[f64]| {
            let v = apply_mask(&model, &dense, mask);
            (0..samples.len()).map(|s| naive_loss(model.spec(), &v, &samples, s)).sum::<f64>() / samples.len() as f64
        };
        let mask64: Vec<f64> = mask.iter().map(|&m| m as f64).collect();
        let want = masked(&mask64);
        // An f32 forward pass and log-softmax: ~1e-7 relative.
        assert!((loss - want).abs() <= 1e-5 * want, "{loss} vs {want}");
        assert_mask_gradient(&model, &grad, &mask64, masked, "");
    }

    #[test]
    fn masked_distillation_matches_direct_loss_and_central_differences() {
        let (model, samples) = tiny();
        let mut rng = ChaCha8Rng::seed_from_u64(22);
        let mask: Vec<f32> = (0..model.prunable_count()).map(|_| rng.random_range(0.0..1.0)).collect();
        let mask64: Vec<f64> = mask.iter().map(|&m| m as f64).collect();
        let dense = widen(model.values());
        for temperature in [1.0, 4.0] {
            let (loss, grad) =
                masked_distill_loss_and_grad::<B>(&model, &mask, &samples, temperature, &Default::default()).unwrap();
            assert_eq!(grad.len(), mask.len());
            let distilled = |mask: &[f64]| {
                let v = apply_mask(&model, &dense, mask);
                (0..samples.len())
                    .map(|s| naive_distillation(model.spec(), &dense, &v, &samples, s, temperature))
                    .sum::<f64>()
                    / samples.len() as f64
            };
            let want = distilled(&mask64);
            // burn sums T² · p · (log p − log q) in f32: log-softmax values of O(1) logits
            // are off by ~1e-7 each, the loss by ~1e-6·T²; a wrong loss is off by O(loss).
            assert!(want > 1e-2, "T = {temperature}: loss {want} too small to test");
            assert!((loss - want).abs() <= 1e-5 * temperature * temperature, "T = {temperature}: {loss} vs {want}");
            assert_mask_gradient(&model, &grad, &mask64, distilled, &format!("T = {temperature}, "));
        }
        for temperature in [0.0, -2.0, f64::NAN, f64::INFINITY] {
            let err = masked_distill_loss_and_grad::<B>(&model, &mask, &samples, temperature, &Default::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("temperature must be finite and positive"), "{temperature}: {err}");
        }
    }

    #[test]
    fn bad_layer_index_and_mask_length_are_mismatches_naming_the_network() {
        let (model, samples) = tiny();
        let device = Default::default();
        let err = layer_input_hessian::<Flex>(&model, 4, &samples, &device).unwrap_err().to_string();
        assert!(err.contains("prunable layer 4") && err.contains("'calib' has 4"), "{err}");
        let err = masked_loss_and_grad::<B>(&model, &[1.0; 3], &samples, &device).unwrap_err().to_string();
        assert!(err.contains("3 entries") && err.contains("calib"), "{err}");
        let err = per_sample_gradients::<B>(&model, &samples, 0, &device).unwrap_err().to_string();
        assert!(err.contains("positive"), "{err}");
        let err = masked_distill_loss_and_grad::<B>(&model, &[1.0; 3], &samples, 1.0, &device).unwrap_err().to_string();
        assert!(err.contains("3 entries") && err.contains("calib"), "{err}");
    }
}

//! The calibration services pruners ask the host for: layer-input Hessians, per-sample
//! gradients, and the loss (cross-entropy or distillation of the dense model) and gradient
//! of a soft-masked model.
//!
//! Sums over samples are split into a fixed number of slices of consecutive chunks (at most
//! [`SLICES`], never depending on the thread count), each summed in order, then the slices
//! in order: results are identical for any thread count.

use std::ops::Range;

use super::gemm::{MatMut, MatRef, matmul};
use super::layers;
use super::parallel;
use super::pass::{self, GradSink, Segment, Workspace};
use super::plan::{Op, Plan};
use hyperprune_core::dataset::Samples;
use hyperprune_core::engine::check_temperature;
use hyperprune_core::engine::{DenseMatrix, EngineError};
use hyperprune_core::model::Model;

/// Partial sums a calibration reduction is split into.
const SLICES: usize = 8;

/// Most images per forward pass.
const MAX_CHUNK: usize = 64;

/// Compiles the model's network and checks the samples against it.
fn prepare(model: &Model, samples: &Samples) -> Result<Plan, EngineError> {
    let plan = Plan::new(model.spec())?;
    plan.check_samples(samples)?;
    if samples.is_empty() {
        return Err(EngineError::Mismatch("calibration needs at least one sample, none given".into()));
    }
    Ok(plan)
}

/// The sample ranges of the chunks, grouped into at most [`SLICES`] slices of consecutive
/// chunks.
fn slices(samples: usize, chunk: usize) -> Vec<Vec<Range<usize>>> {
    let chunks: Vec<Range<usize>> =
        (0..samples.div_ceil(chunk)).map(|c| c * chunk..((c + 1) * chunk).min(samples)).collect();
    let per_slice = chunks.len().div_ceil(SLICES).max(1);
    chunks.chunks(per_slice).map(<[_]>::to_vec).collect()
}

/// `XᵀX / n` (f64) of the inputs of prunable layer `layer`, convolution inputs unfolded in
/// weight-row order `[in, kh, kw]` (padding contributes zeros); `n` = samples × output
/// positions.
///
/// # Errors
/// [`EngineError::Mismatch`] for a bad layer index, no samples, or samples that do not fit.
pub(crate) fn layer_input_hessian(
    threads: usize,
    model: &Model,
    layer: usize,
    samples: &Samples,
) -> Result<(DenseMatrix<f64>, usize), EngineError> {
    let plan = prepare(model, samples)?;
    let target = plan.prunable.get(layer).ok_or_else(|| {
        EngineError::Mismatch(format!(
            "prunable layer {layer} does not exist: network '{}' has {} prunable layers",
            plan.spec.name,
            plan.prunable.len()
        ))
    })?;
    let l = target.layer;
    let Op::Dense { geom, .. } = plan.layers[l].op else { unreachable!("prunable layers are dense") };
    let d = geom.unfolded();
    let params = plan.flatten(model.values());
    let chunk = pass::chunk_images(&plan, MAX_CHUNK);
    let slices = slices(samples.len(), chunk);
    let mut partials: Vec<Vec<f64>> = vec![Vec::new(); slices.len()];
    let mut scratch: Vec<(Workspace, Vec<f32>, Vec<f64>)> = (0..threads).map(|_| Default::default()).collect();
    parallel::for_each(&mut partials, &mut scratch, |s, gram, (ws, cols, wide)| {
        gram.resize(d * d, 0.0);
        for range in &slices[s] {
            let n = range.len();
            let width = n * geom.out_plane();
            pass::forward(&plan, &params, range.clone().map(|i| samples.image(i)), l, false, None, ws);
            let x = ws.input_of(&plan, l);
            let unfolded: &[f32] = if geom.is_pointwise() {
                x
            } else {
                cols.resize(d * width, 0.0);
                layers::unfold(&geom, n, x, cols, 1);
                cols
            };
            wide.clear();
            wide.extend(unfolded[..d * width].iter().map(|&v| v as f64));
            let u = MatRef::row_major(&wide[..], d, width);
            matmul(MatMut::row_major(gram, d, d), u, u.t(), true, 1.0);
        }
    });
    let rows = samples.len() * geom.out_plane();
    let mut gram = vec![0.0; d * d];
    for p in &partials {
        gram.iter_mut().zip(p).for_each(|(g, v)| *g += v);
    }
    let scale = 1.0 / rows as f64;
    gram.iter_mut().for_each(|v| *v *= scale);
    Ok((DenseMatrix { rows: d, cols: d, data: gram }, rows))
}

/// Gradients of the mean cross-entropy over each run of `minibatch` consecutive samples
/// with respect to every prunable weight (layer order, row-major within a layer); the last
/// run may be shorter and is averaged over its own samples.
///
/// Rows come straight from batched backward passes: a run's row of a layer is
/// `δ_run × unfold(x)_runᵀ / |run|` over the run's columns (see [`GradSink::Rows`]).
///
/// # Errors
/// [`EngineError::Mismatch`] for `minibatch == 0`, no samples, or samples that do not fit.
pub(crate) fn per_sample_gradients(
    threads: usize,
    model: &Model,
    samples: &Samples,
    minibatch: usize,
) -> Result<DenseMatrix<f32>, EngineError> {
    if minibatch == 0 {
        return Err(EngineError::Mismatch("the gradient mini-batch size must be positive".into()));
    }
    let plan = prepare(model, samples)?;
    let params = plan.flatten(model.values());
    let (n, p) = (samples.len(), plan.prunable_len);
    let rows = n.div_ceil(minibatch);
    let chunk = pass::chunk_images(&plan, MAX_CHUNK);
    // A work item holds whole runs, so that no row is shared by two threads.
    let rows_per_item = (chunk / minibatch).max(1);
    // Written zeros, not `vec![0.0; ..]`: a zeroed allocation of this size is mapped lazily,
    // and threads faulting its pages in together contend in the kernel (for lenet5's 250 MB,
    // 2 threads took 4× the system time of 1). One thread touches every page first instead.
    let mut data = Vec::with_capacity(rows * p);
    data.resize(rows * p, 0f32);
    let mut outputs: Vec<&mut [f32]> = data.chunks_mut(rows_per_item * p).collect();
    let mut scratch: Vec<(Workspace, Vec<Segment>)> = (0..threads).map(|_| Default::default()).collect();
    parallel::for_each(&mut outputs, &mut scratch, |item, out, (ws, segments)| {
        let first_row = item * rows_per_item;
        let images = first_row * minibatch..((first_row + rows_per_item) * minibatch).min(n);
        for start in images.clone().step_by(chunk) {
            let range = start..(start + chunk).min(images.end);
            segments.clear();
            let mut at = range.start;
            while at < range.end {
                let row = at / minibatch;
                let run = row * minibatch..((row + 1) * minibatch).min(n);
                let end = run.end.min(range.end);
                let scale = 1.0 / run.len() as f32;
                segments.push(Segment { start: at - range.start, end: end - range.start, row: row - first_row, scale });
                at = end;
            }
            pass::forward(&plan, &params, range.clone().map(|i| samples.image(i)), plan.layers.len(), false, None, ws);
            ws.cross_entropy(&plan, &samples.labels[range], Some(1.0));
            pass::backward(
                &plan,
                &params,
                None,
                ws,
                &mut GradSink::Rows { rows: &mut out[..], segments: &segments[..] },
            );
        }
    });
    Ok(DenseMatrix { rows, cols: p, data })
}

/// Mean cross-entropy of the model with prunable weights `w ⊙ m`, and its gradient with
/// respect to `m`: the gradient with respect to the effective weights, times `w`.
///
/// # Errors
/// [`EngineError::Mismatch`] for a mask of the wrong length, no samples, or samples that
/// do not fit.
pub(crate) fn masked_loss_and_grad(
    threads: usize,
    model: &Model,
    soft_mask: &[f32],
    samples: &Samples,
) -> Result<(f64, Vec<f32>), EngineError> {
    masked_objective(threads, model, soft_mask, samples, Objective::CrossEntropy)
}

/// Mean distillation loss `T² · KL(softmax(z/T) ‖ softmax(z_m/T))` of the model with
/// prunable weights `w ⊙ m` (logits `z_m`) against the model as given (logits `z`), and its
/// gradient with respect to `m`.
///
/// # Errors
/// [`EngineError::Mismatch`] for a temperature that is not finite and positive, a mask of
/// the wrong length, no samples, or samples that do not fit.
pub(crate) fn masked_distill_loss_and_grad(
    threads: usize,
    model: &Model,
    soft_mask: &[f32],
    samples: &Samples,
    temperature: f64,
) -> Result<(f64, Vec<f32>), EngineError> {
    check_temperature(temperature)?;
    masked_objective(threads, model, soft_mask, samples, Objective::Distillation { temperature })
}

/// What a soft-masked model is scored by.
#[derive(Debug, Clone, Copy)]
enum Objective {
    /// Cross-entropy against the labels.
    CrossEntropy,
    /// Distillation of the model as given (the teacher) into its masked copy.
    Distillation {
        /// Softmax temperature `T`, finite and positive.
        temperature: f64,
    },
}

/// Mean `objective` of the model with prunable weights `w ⊙ m` over `samples`, and its
/// gradient with respect to `m`: the gradient with respect to the effective weights, times
/// `w`.
///
/// A chunk's teacher logits come from a forward pass with the weights as given, just before
/// the masked pass over the same images, which reuses the parameter-free prefix.
fn masked_objective(
    threads: usize,
    model: &Model,
    soft_mask: &[f32],
    samples: &Samples,
    objective: Objective,
) -> Result<(f64, Vec<f32>), EngineError> {
    let plan = prepare(model, samples)?;
    if soft_mask.len() != plan.prunable_len {
        return Err(EngineError::Mismatch(format!(
            "the soft mask has {} entries, network '{}' has {} prunable weights",
            soft_mask.len(),
            plan.spec.name,
            plan.prunable_len
        )));
    }
    let weights = plan.flatten(model.values());
    let mut params = weights.clone();
    for l in &plan.prunable {
        let mask = &soft_mask[l.prunable_offset..][..l.len];
        params[l.offset..][..l.len].iter_mut().zip(mask).for_each(|(w, m)| *w *= m);
    }
    let chunk = pass::chunk_images(&plan, MAX_CHUNK);
    let slices = slices(samples.len(), chunk);
    let scale = 1.0 / samples.len() as f32;
    let (all, reuse) = (plan.layers.len(), pass::prefix_is_shared(&plan));
    let mut partials: Vec<(f64, Vec<f32>)> = vec![(0.0, Vec::new()); slices.len()];
    let mut scratch = Scratch::take(threads);
    parallel::for_each(&mut partials, &mut scratch.0, |s, (loss, grad), (ws, teacher)| {
        grad.resize(plan.param_len, 0.0);
        for range in &slices[s] {
            let images = || range.clone().map(|i| samples.image(i));
            *loss += match objective {
                Objective::CrossEntropy => {
                    pass::forward(&plan, &params, images(), all, false, None, ws);
                    ws.cross_entropy(&plan, &samples.labels[range.clone()], Some(scale)).0
                }
                Objective::Distillation { temperature } => {
                    pass::forward(&plan, &weights, images(), all, false, None, ws);
                    teacher.clear();
                    teacher.extend_from_slice(ws.logits(&plan));
                    pass::forward(&plan, &params, images(), all, reuse, None, ws);
                    ws.distillation(&plan, teacher, temperature, scale)
                }
            };
            pass::backward(&plan, &params, None, ws, &mut GradSink::Sum(grad));
        }
    });
    let mut grad = vec![0f32; plan.param_len];
    let mut loss = 0.0;
    for (l, g) in &partials {
        loss += l;
        grad.iter_mut().zip(g).for_each(|(a, b)| *a += b);
    }
    let mut out = vec![0f32; plan.prunable_len];
    for l in &plan.prunable {
        let (g, w) = (&grad[l.offset..][..l.len], &weights[l.offset..][..l.len]);
        out[l.prunable_offset..][..l.len].iter_mut().zip(g.iter().zip(w)).for_each(|(o, (g, w))| *o = g * w);
    }
    Ok((loss / samples.len() as f64, out))
}

/// The workspaces of [`masked_objective`]'s threads, kept between calls: a refinement calls
/// it once a step on the same network, and fresh buffers (allocated, zeroed, faulted in) cost
/// a tenth of a small network's step. A workspace handed another network drops its buffers
/// ([`Workspace::prepare`]), so what is kept is at most one chunk's buffers per thread.
struct Scratch(Vec<(Workspace, Vec<f32>)>);

static SCRATCH: std::sync::Mutex<Vec<(Workspace, Vec<f32>)>> = std::sync::Mutex::new(Vec::new());

impl Scratch {
    /// `threads` workspaces, the kept ones first.
    fn take(threads: usize) -> Scratch {
        let mut kept = SCRATCH.lock().unwrap_or_else(|e| e.into_inner());
        let first = kept.len() - kept.len().min(threads);
        let mut out: Vec<_> = kept.drain(first..).collect();
        out.resize_with(threads, Default::default);
        Scratch(out)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut kept = SCRATCH.lock().unwrap_or_else(|e| e.into_inner());
        let room = hyperprune_sdk::available_threads().saturating_sub(kept.len());
        kept.extend(self.0.drain(..).take(room));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{self, Params, random_model, tiny_spec};
    use crate::synthetic::random_samples;

    /// Central difference step: in f64 the truncation error (~h²·f''') is ~1e-12 and the
    /// rounding error (~1e-16/h) ~1e-10, and a step this small almost never moves a ReLU
    /// input or a max-pooling winner across its switch.
    const H: f64 = 1e-6;

    /// Engine gradients are f32: sums of at most a few hundred products, relative rounding
    /// ~1e-6, plus the fast tanh (3e-7). A wrong gradient is off by O(1); 1e-4 of the
    /// largest entry separates the two by two orders of magnitude on each side.
    const TOL: f64 = 1e-4;

    /// `(tensor, index)` of every prunable weight, in prunable order.
    fn prunable_positions(model: &Model) -> Vec<(usize, usize)> {
        model
            .params()
            .iter()
            .enumerate()
            .filter(|(_, p)| p.prunable)
            .flat_map(|(t, p)| (0..p.numel()).map(move |i| (t, i)))
            .collect()
    }

    fn assert_close(got: &[f32], want: &[f64], what: &str) {
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        assert!(scale > 1e-3, "{what}: gradients too small to test");
        for (j, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((*g as f64 - w).abs() <= TOL * scale, "{what}, weight {j}: {g} vs {w} (scale {scale})");
        }
    }

    #[test]
    fn per_sample_gradients_match_central_differences() {
        let spec = tiny_spec();
        let model = random_model(&spec, 11);
        let samples = random_samples(spec.input, 5, 3, 12);
        let params = reference::params_of(&model);
        let positions = prunable_positions(&model);
        for minibatch in [1, 2, 5] {
            let g = per_sample_gradients(2, &model, &samples, minibatch).unwrap();
            assert_eq!((g.rows, g.cols), (5usize.div_ceil(minibatch), positions.len()));
            for row in 0..g.rows {
                let range = row * minibatch..((row + 1) * minibatch).min(5);
                let fd: Vec<f64> = positions
                    .iter()
                    .map(|&(t, i)| {
                        let at = |d: f64| {
                            let mut p: Params = params.clone();
                            p[t][i] += d;
                            reference::mean_loss(&spec, &p, &samples, range.clone())
                        };
                        (at(H) - at(-H)) / (2.0 * H)
                    })
                    .collect();
                let got = &g.data[row * g.cols..(row + 1) * g.cols];
                assert_close(got, &fd, &format!("minibatch {minibatch}, row {row}"));
            }
        }
    }

    /// The reference parameters with each prunable weight (at `positions`) times its mask entry.
    fn apply_mask(dense: &[Vec<f64>], positions: &[(usize, usize)], mask: &[f64]) -> Vec<Vec<f64>> {
        let mut p = dense.to_vec();
        for (&(t, i), &v) in positions.iter().zip(mask) {
            p[t][i] *= v;
        }
        p
    }

    /// `∂f/∂m_j` by central differences (step `H`) for every mask entry `j`.
    fn mask_central_differences(mask: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
        (0..mask.len())
            .map(|j| {
                let at = |d: f64| {
                    let mut m = mask.to_vec();
                    m[j] += d;
                    f(&m)
                };
                (at(H) - at(-H)) / (2.0 * H)
            })
            .collect()
    }

    #[test]
    fn masked_loss_and_grad_match_central_differences() {
        let spec = tiny_spec();
        let model = random_model(&spec, 21);
        let samples = random_samples(spec.input, 7, 3, 22);
        let positions = prunable_positions(&model);
        let mask: Vec<f32> = (0..positions.len()).map(|j| ((j * 7919) % 13) as f32 / 8.0).collect();
        let dense = reference::params_of(&model);
        let masked = |m: &[f64]| reference::mean_loss(&spec, &apply_mask(&dense, &positions, m), &samples, 0..7);
        let m64: Vec<f64> = mask.iter().map(|&v| v as f64).collect();
        let (loss, grad) = masked_loss_and_grad(2, &model, &mask, &samples).unwrap();
        assert!((loss - masked(&m64)).abs() < 1e-5, "{loss} vs {}", masked(&m64));
        let fd = mask_central_differences(&m64, masked);
        assert_close(&grad, &fd, "mask gradient");
        assert!(masked_loss_and_grad(1, &model, &mask[1..], &samples).is_err());
    }

    #[test]
    fn masked_distillation_matches_the_reference_and_central_differences() {
        let spec = tiny_spec();
        let model = random_model(&spec, 23);
        let samples = random_samples(spec.input, 7, 3, 24);
        let positions = prunable_positions(&model);
        let mask: Vec<f32> = (0..positions.len()).map(|j| ((j * 7919) % 13) as f32 / 8.0).collect();
        let m64: Vec<f64> = mask.iter().map(|&v| v as f64).collect();
        let dense = reference::params_of(&model);
        for temperature in [1.0, 4.0] {
            let distilled = |m: &[f64]| {
                reference::mean_distillation(
                    &spec,
                    &dense,
                    &apply_mask(&dense, &positions, m),
                    &samples,
                    0..7,
                    temperature,
                )
            };
            let (loss, grad) = masked_distill_loss_and_grad(2, &model, &mask, &samples, temperature).unwrap();
            let want = distilled(&m64);
            // The loss is taken in f64 from f32 logits (absolute error ~1e-6): it moves by
            // at most Σ|∂loss/∂z| ≤ 2T per unit of logit error on each of teacher and
            // student, so 1e-5·T bounds it, far below the loss itself.
            assert!(want > 1e-2, "T = {temperature}: loss {want} too small to test");
            assert!((loss - want).abs() < 1e-5 * temperature, "T = {temperature}: {loss} vs {want}");
            let fd = mask_central_differences(&m64, distilled);
            assert_close(&grad, &fd, &format!("T = {temperature}, mask gradient"));
        }
    }

    #[test]
    fn masked_distillation_of_an_unmasked_model_is_zero() {
        // cnn-s with 100 samples: several chunks and slices, and the direct convolutions
        // whose padded input the masked pass reuses from the teacher's.
        for (spec, n) in [(tiny_spec(), 7), (hyperprune_core::preset("cnn-s").unwrap(), 100)] {
            let model = random_model(&spec, 25);
            let samples = random_samples(spec.input, n, spec.classes, 26);
            let ones = vec![1.0; model.prunable_count()];
            for temperature in [1.0, 4.0] {
                let (loss, grad) = masked_distill_loss_and_grad(2, &model, &ones, &samples, temperature).unwrap();
                assert!(loss.abs() <= 1e-6, "{} T = {temperature}: loss {loss}", spec.name);
                let worst = grad.iter().fold(0f32, |m, g| m.max(g.abs()));
                assert!(worst <= 1e-6, "{} T = {temperature}: gradient up to {worst}", spec.name);
            }
        }
    }

    #[test]
    fn masked_distillation_rejects_a_bad_mask_temperature_or_no_samples() {
        let spec = tiny_spec();
        let model = random_model(&spec, 27);
        let samples = random_samples(spec.input, 3, 3, 28);
        let mask = vec![0.5; model.prunable_count()];
        let err = masked_distill_loss_and_grad(1, &model, &mask[1..], &samples, 1.0).unwrap_err().to_string();
        assert!(err.contains("soft mask has") && err.contains("'tiny'"), "{err}");
        for temperature in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = masked_distill_loss_and_grad(1, &model, &mask, &samples, temperature).unwrap_err().to_string();
            assert!(err.contains("temperature must be finite and positive"), "{temperature}: {err}");
        }
        let none = Samples { shape: spec.input, images: Vec::new(), labels: Vec::new() };
        let err = masked_distill_loss_and_grad(1, &model, &mask, &none, 1.0).unwrap_err().to_string();
        assert!(err.contains("at least one sample"), "{err}");
    }

    #[test]
    fn per_sample_rows_average_to_the_minibatch_gradient() {
        // cnn-s with 100 samples: several chunks and work items, runs crossing chunks.
        let spec = hyperprune_core::preset("cnn-s").unwrap();
        let model = random_model(&spec, 31);
        let samples = random_samples(spec.input, 100, 10, 32);
        let single = per_sample_gradients(2, &model, &samples, 1).unwrap();
        for minibatch in [7, 100] {
            let rows = per_sample_gradients(1, &model, &samples, minibatch).unwrap();
            for r in 0..rows.rows {
                let range = r * minibatch..((r + 1) * minibatch).min(100);
                for j in (0..single.cols).step_by(17) {
                    let mean = range.clone().map(|i| single.data[i * single.cols + j] as f64).sum::<f64>()
                        / range.len() as f64;
                    let got = rows.data[r * rows.cols + j] as f64;
                    assert!((got - mean).abs() < 1e-5 * (1.0 + mean.abs()), "row {r}, weight {j}: {got} vs {mean}");
                }
            }
        }
        assert!(per_sample_gradients(1, &model, &samples, 0).is_err());
    }

    #[test]
    fn hessians_match_a_naive_unfold() {
        for (spec, n) in [
            (tiny_spec(), 6),
            (hyperprune_core::preset("cnn-s").unwrap(), 3),
            (hyperprune_core::preset("lenet5").unwrap(), 2),
        ] {
            let model = random_model(&spec, 41);
            let samples = random_samples(spec.input, n, spec.classes, 42);
            let params = reference::params_of(&model);
            let plan = Plan::new(&spec).unwrap();
            for (index, p) in plan.prunable.iter().enumerate() {
                let (h, count) = layer_input_hessian(2, &model, index, &samples).unwrap();
                let rows: Vec<Vec<f64>> =
                    (0..n).flat_map(|i| reference::unfolded_rows(&spec, &params, samples.image(i), p.layer)).collect();
                let d = rows[0].len();
                assert_eq!((h.rows, h.cols, count), (d, d, rows.len()), "{} layer {index}", spec.name);
                let mut want = vec![0.0; d * d];
                for r in &rows {
                    for a in 0..d {
                        for b in 0..d {
                            want[a * d + b] += r[a] * r[b] / rows.len() as f64;
                        }
                    }
                }
                // The engine's layer inputs are f32 (relative error ~1e-6).
                let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
                for (g, w) in h.data.iter().zip(&want) {
                    assert!((g - w).abs() < 1e-5 * scale, "{} layer {index}: {g} vs {w}", spec.name);
                }
            }
        }
        let model = random_model(&tiny_spec(), 1);
        let samples = random_samples([2, 9, 9], 2, 3, 1);
        let err = layer_input_hessian(1, &model, 5, &samples).unwrap_err().to_string();
        assert!(err.contains("has 5 prunable layers"), "{err}");
    }

    #[test]
    fn kept_workspaces_give_what_fresh_ones_give() {
        // The same call before and after calls that leave workspaces of another network and
        // of other chunk sizes behind: lenet5's padded first convolution keeps zero borders
        // in its workspace, which cnn-s's unpadded one (same layer index) would write over.
        let (a, b) = (hyperprune_core::preset("lenet5").unwrap(), hyperprune_core::preset("cnn-s").unwrap());
        let (model_a, model_b) = (random_model(&a, 61), random_model(&b, 62));
        let mask_a: Vec<f32> = (0..model_a.prunable_count()).map(|i| (i % 3) as f32 / 2.0).collect();
        let samples = random_samples(a.input, 16, 10, 63);
        let call = |threads| masked_distill_loss_and_grad(threads, &model_a, &mask_a, &samples, 1.0).unwrap();
        SCRATCH.lock().unwrap().clear();
        let first = call(2);
        let ones = vec![1.0; model_b.prunable_count()];
        masked_distill_loss_and_grad(2, &model_b, &ones, &random_samples(b.input, 9, 10, 64), 1.0).unwrap();
        masked_distill_loss_and_grad(2, &model_a, &mask_a, &random_samples(a.input, 5, 10, 65), 2.0).unwrap();
        assert_eq!(call(2), first);
        assert_eq!(call(1), first);
        assert!(first.0 > 0.0 && first.1.iter().any(|&g| g != 0.0));
    }

    #[test]
    fn calibration_is_identical_for_any_thread_count() {
        let spec = hyperprune_core::preset("cnn-digits").unwrap();
        let model = random_model(&spec, 51);
        let samples = random_samples(spec.input, 300, 10, 52);
        let mask = vec![0.5; model.prunable_count()];
        let one = (
            layer_input_hessian(1, &model, 1, &samples).unwrap().0,
            per_sample_gradients(1, &model, &samples, 3).unwrap(),
            masked_loss_and_grad(1, &model, &mask, &samples).unwrap(),
            masked_distill_loss_and_grad(1, &model, &mask, &samples, 2.0).unwrap(),
        );
        for threads in [2, 3] {
            assert_eq!(layer_input_hessian(threads, &model, 1, &samples).unwrap().0, one.0);
            assert_eq!(per_sample_gradients(threads, &model, &samples, 3).unwrap(), one.1);
            assert_eq!(masked_loss_and_grad(threads, &model, &mask, &samples).unwrap(), one.2);
            assert_eq!(masked_distill_loss_and_grad(threads, &model, &mask, &samples, 2.0).unwrap(), one.3);
        }
    }
}

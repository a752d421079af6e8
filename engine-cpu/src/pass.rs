//! The forward and backward pass of one model over one chunk of images.
//!
//! A [`Workspace`] holds everything a pass keeps for its backward half (every layer's
//! output, the padded or unfolded inputs of convolutions, the winners of max pooling, the
//! batch statistics of train-mode batch norms); one is owned by each thread and reused from
//! chunk to chunk, so that the hot loop allocates nothing.
//!
//! A pass runs in eval mode unless it is given a [`Training`]: then dropout is active and
//! batch normalisation uses the statistics of the pass's images, which must then be the
//! whole mini-batch.
//!
//! Weight gradients go to a [`GradSink`]: summed into a flat gradient (training, masked
//! loss), or, per run of consecutive images, written as rows of a per-sample gradient
//! matrix. A row is computed straight from the backward pass as the product of the output
//! gradients and the inputs over the columns of the run's images (`δ_run × unfold(x)_runᵀ`,
//! or the direct kernel's correlation restricted to those images), i.e. the sum of the
//! per-image outer products `δ_i · unfold(x_i)ᵀ`, never by one backward pass per image.

use super::activation;
use super::activation::relu_gate;
use super::batch_norm::{self, BatchStats};
use super::direct::{self, Direct, GradLayout};
use super::gemm::{MatMut, MatRef, matmul, matmul_on};
use super::layers;
use super::parallel;
use super::plan::{Op, Plan};

/// Buffers of one thread for passes over chunks of images of one network.
///
/// Padded copies keep their zero borders from one pass to the next (only interiors are
/// rewritten), which is valid while the network and the chunk size stay the same: a
/// workspace handed another network drops its buffers.
#[derive(Debug, Default)]
pub(crate) struct Workspace {
    /// The network it serves.
    spec: Option<hyperprune_core::arch::ArchSpec>,
    /// `acts[0]`: the images (`[c, n, s]`); `acts[l + 1]`: the output of layer `l` (in a
    /// chain, the input of layer `l + 1`); the last: the logits `[classes, n]`.
    acts: Vec<Vec<f32>>,
    /// Per non-pointwise convolution: its unfolded input (reused for its input gradient),
    /// or, on the direct path, its zero-padded input.
    cols: Vec<Vec<f32>>,
    /// Per direct convolution: its padded output gradient; and the flipped weights of an
    /// input gradient.
    dpad: Vec<Vec<f32>>,
    flipped: Vec<f32>,
    /// Winning input offset of each max-pooling output.
    argmax: Vec<Vec<u32>>,
    /// Per batch norm: the batch statistics of the last train-mode pass.
    stats: Vec<BatchStats>,
    /// Whether the last forward pass ran in train mode.
    training: bool,
    /// Gradient with respect to the current layer's output, and the next one down.
    grad: Vec<f32>,
    grad_next: Vec<f32>,
    /// Per layer whose gradient [`Plan::accumulates`]: the sum of its output gradients so
    /// far, and whether any has arrived in this backward pass.
    summed: Vec<Vec<f32>>,
    arrived: Vec<bool>,
    /// Images in the current chunk.
    n: usize,
    /// Threads a direct convolution may split itself over (0 or 1: none): set when the
    /// work items of a step are fewer than the threads (one batch-norm member training
    /// alone), so that the spare threads help inside the item. Results do not depend on it.
    pub(crate) op_threads: usize,
}

/// Grows `v` to at least `len` values (never shrinks, so buffers are allocated once). A
/// buffer that grows is allocated afresh as zeroed memory rather than written with zeros
/// here: its pages are then first touched by the parallel kernels that fill it, on every
/// thread, instead of by one thread's pass (the first step of a `resnet20` member at batch
/// 128 faults in about 670 MB).
fn reserve<T: Copy + Default>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        *v = vec![T::default(); len];
    }
}

/// A train-mode pass: the dropout factors of the chunk's images. `masks[l]` holds, for
/// dropout layer `l`, factors `[batch, features]` for the whole mini-batch, and the chunk
/// starts at batch image `first`; layers with an empty mask pass their input through.
/// Batch norms normalise with the chunk's statistics, so a network with batch norm must
/// pass the whole mini-batch as one chunk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Training<'a> {
    /// Per layer (empty for every other layer).
    pub masks: &'a [Vec<f32>],
    /// Index of the chunk's first image in the mini-batch.
    pub first: usize,
}

/// Where weight gradients go.
pub(crate) enum GradSink<'a> {
    /// Added into a flat gradient of all parameters ([`Plan::offsets`] layout).
    Sum(&'a mut [f32]),
    /// Added, for each segment, as `scale ·` the segment's summed gradient into row
    /// `segment.row` of a `[rows, prunable_len]` matrix of prunable weights only.
    Rows {
        /// The rows, row-major.
        rows: &'a mut [f32],
        /// The runs of images.
        segments: &'a [Segment],
    },
}

/// A run of consecutive images of a chunk that shares one gradient row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Segment {
    /// First image (within the chunk).
    pub start: usize,
    /// One past the last image.
    pub end: usize,
    /// Row it goes to.
    pub row: usize,
    /// Factor applied to the summed gradient (1 / images in the row).
    pub scale: f32,
}

impl Workspace {
    /// Sizes the buffers for chunks of `n` images of `plan`.
    pub fn prepare(&mut self, plan: &Plan, n: usize) {
        if self.spec.as_ref() != Some(&plan.spec) {
            *self = Workspace { spec: Some(plan.spec.clone()), ..Workspace::default() };
        }
        let layers = plan.layers.len();
        self.dpad.resize_with(layers, Vec::new);
        self.acts.resize_with(layers + 1, Vec::new);
        self.cols.resize_with(layers, Vec::new);
        self.argmax.resize_with(layers, Vec::new);
        self.stats.resize_with(layers, BatchStats::default);
        self.summed.resize_with(layers, Vec::new);
        self.arrived.resize(layers, false);
        reserve(&mut self.acts[0], plan.image_len() * n);
        for (l, layer) in plan.layers.iter().enumerate() {
            reserve(&mut self.acts[l + 1], layer.out_len() * n);
            match &layer.op {
                // The direct path keeps its padded input in `cols` ([`direct::pad`] sizes it,
                // keeping its zero borders from pass to pass); growing it to the unfolded
                // size here would clear every border and cost a large memset a pass.
                Op::Dense { geom, .. } if direct::supports(geom) => {}
                Op::Dense { geom, .. } if !geom.is_pointwise() => {
                    reserve(&mut self.cols[l], geom.unfolded() * geom.out_plane() * n)
                }
                Op::MaxPool(_) => reserve(&mut self.argmax[l], layer.out_len() * n),
                _ => {}
            }
            if plan.accumulates[l] && plan.needs_grad[l] {
                reserve(&mut self.summed[l], layer.out_len() * n);
            }
        }
        reserve(&mut self.grad, plan.max_act_len() * n);
        reserve(&mut self.grad_next, plan.max_act_len() * n);
        self.n = n;
    }

    /// The logits of the last forward pass.
    ///
    /// # Shapes
    /// - returns `[classes, n]`
    pub fn logits(&self, plan: &Plan) -> &[f32] {
        &self.acts[plan.layers.len()][..plan.classes() * self.n]
    }

    /// The input of one-input layer `l` from the last forward pass (which must have
    /// computed it).
    ///
    /// # Shapes
    /// - returns `[c, n, s]` for the layer's input `(c, s)`
    pub fn input_of(&self, plan: &Plan, l: usize) -> &[f32] {
        &self.acts[plan.layers[l].inputs[0]][..plan.layers[l].in_len() * self.n]
    }

    /// The batch statistics batch norm layer `l` took in the last forward pass, which must
    /// have run in train mode.
    pub fn batch_stats(&self, l: usize) -> &BatchStats {
        assert!(self.training, "batch statistics exist after a train-mode pass only");
        &self.stats[l]
    }

    /// The cross-entropy of the last forward pass against `labels` (summed loss, correct
    /// count); with `grad_scale`, also seeds the backward pass with
    /// `grad_scale · (softmax − onehot)`.
    pub fn cross_entropy(&mut self, plan: &Plan, labels: &[u32], grad_scale: Option<f32>) -> (f64, usize) {
        assert_eq!(labels.len(), self.n);
        let logits = &self.acts[plan.layers.len()][..plan.classes() * self.n];
        let grad = grad_scale.map(|s| (s, &mut self.grad[..plan.classes() * self.n]));
        match grad {
            Some((scale, g)) => layers::softmax_cross_entropy(plan.classes(), logits, labels, scale, Some(g)),
            None => layers::softmax_cross_entropy(plan.classes(), logits, labels, 1.0, None),
        }
    }

    /// The distillation loss of the last forward pass (the student) against `teacher`
    /// logits at `temperature`, summed over the chunk, and seeds the backward pass with its
    /// gradient times `grad_scale` (see [`layers::softmax_distillation`]).
    ///
    /// # Shapes
    /// - `teacher`: `[classes, n]`, as [`Workspace::logits`]
    pub fn distillation(&mut self, plan: &Plan, teacher: &[f32], temperature: f64, grad_scale: f32) -> f64 {
        let len = plan.classes() * self.n;
        let student = &self.acts[plan.layers.len()][..len];
        layers::softmax_distillation(plan.classes(), student, teacher, temperature, grad_scale, &mut self.grad[..len])
    }
}

/// Runs layers `0..until` on `images`, keeping every layer's output in `ws`; in train mode
/// when `training` is given (see the module documentation).
///
/// With `reuse_prefix`, the images are those of the previous call on this workspace and
/// the layers up to and including the unfolding of the first convolution, which have no
/// parameters, are not recomputed: members of one batch share that work. The caller must
/// only ask for it when [`prefix_is_shared`] holds.
///
/// # Shapes
/// - `params`: `[plan.param_len]`; each image: `[c·h·w]` of the spec's input
pub(crate) fn forward<'a>(
    plan: &Plan,
    params: &[f32],
    images: impl ExactSizeIterator<Item = &'a [f32]>,
    until: usize,
    reuse_prefix: bool,
    training: Option<Training<'_>>,
    ws: &mut Workspace,
) {
    let n = images.len();
    ws.prepare(plan, n);
    ws.training = training.is_some();
    let threads = ws.op_threads;
    let Workspace { acts, cols, argmax, stats, .. } = ws;
    let [c, h, w] = plan.spec.input;
    let start = if reuse_prefix { plan.first_dense.min(until) } else { 0 };
    if !reuse_prefix {
        layers::gather(c, h * w, images, &mut acts[0]);
    }
    let mut fused = false;
    for l in start..until {
        if std::mem::take(&mut fused) {
            // A ReLU its batch norm or add already computed.
            continue;
        }
        let layer = &plan.layers[l];
        let (c, s) = layer.input;
        // Every input buffer comes before the output buffer `l + 1`.
        let (before, after) = acts.split_at_mut(l + 1);
        let x = &before[layer.inputs[0]][..layer.in_len() * n];
        // A batch norm or add whose one reader is a ReLU writes the ReLU's output (buffer
        // `l + 2`) in the same pass; its own buffer stays unwritten ([`Plan::relu_after`]).
        let relu = plan.relu_after[l] && l + 1 < until;
        fused = relu;
        let y = &mut after[usize::from(relu)][..layer.out_len() * n];
        match &layer.op {
            Op::Dense { geom, weight, bias, .. } if direct::supports(geom) => {
                if !(reuse_prefix && l == plan.first_dense) {
                    direct::pad(c * n, geom.h, geom.w, geom.pad, x, &mut cols[l], threads);
                }
                let wt = &params[*weight..][..geom.cout * geom.unfolded()];
                let b = bias.map(|b| &params[b..][..geom.cout]);
                direct::forward(&Direct::forward(geom, n), &cols[l], wt, b, y, threads);
            }
            Op::Dense { geom, weight, bias, .. } => {
                let (k, width) = (geom.unfolded(), n * geom.out_plane());
                let unfolded: &[f32] = if geom.is_pointwise() {
                    x
                } else {
                    if !(reuse_prefix && l == plan.first_dense) {
                        layers::unfold(geom, n, x, &mut cols[l], threads);
                    }
                    &cols[l][..k * width]
                };
                let wt = MatRef::row_major(&params[*weight..][..geom.cout * k], geom.cout, k);
                let unfolded = MatRef::row_major(unfolded, k, width);
                matmul_on(threads, MatMut::row_major(y, geom.cout, width), wt, unfolded, false, 1.0);
                if let Some(b) = bias {
                    layers::add_bias(y, &params[*b..][..geom.cout], width);
                }
            }
            Op::MaxPool(g) => layers::max_pool(g, c * n, x, y, &mut argmax[l]),
            Op::AvgPool(g) => layers::avg_pool(g, c * n, x, y),
            Op::Act(a) => activation::forward(*a, x, y),
            Op::Dropout { .. } => match training {
                Some(t) if !t.masks[l].is_empty() => layers::dropout(c, n, s, t.first, &t.masks[l], x, y),
                _ => y.copy_from_slice(x),
            },
            Op::Flatten => layers::flatten(c, n, s, x, y),
            Op::BatchNorm(g) if training.is_some() => {
                batch_norm::forward_train(g, params, n * s, x, y, &mut stats[l], relu, threads)
            }
            Op::BatchNorm(g) => batch_norm::forward_eval(g, params, n * s, x, y, relu),
            Op::Add => {
                let inputs: Vec<&[f32]> = layer.inputs.iter().map(|&b| &before[b][..layer.in_len() * n]).collect();
                layers::sum_into(&inputs, y, relu, threads)
            }
            Op::GlobalAvgPool => layers::global_avg_pool(s, x, y),
        }
    }
}

/// Whether layers up to the first convolution's unfolded input depend on the images alone
/// (no dropout before it), so that members of one batch may share them.
pub(crate) fn prefix_is_shared(plan: &Plan) -> bool {
    !plan.layers[..plan.first_dense].iter().any(|l| matches!(l.op, Op::Dropout { .. }))
}

/// Adds `g` into the summed output gradient of layer `j` (the first arrival is copied);
/// with `relu_out`, the output of a ReLU fused after the layer that sends `g`, `g` is that
/// ReLU's output gradient and passes through its backward rule on the way. Element-wise,
/// in runs over `threads`.
fn arrive(summed: &mut [f32], arrived: &mut bool, g: &[f32], relu_out: Option<&[f32]>, threads: usize) {
    let first = !std::mem::replace(arrived, true);
    parallel::in_parts(threads, &mut summed[..g.len()], |start, summed| {
        let g = &g[start..][..summed.len()];
        let r = relu_out.map(|r| &r[start..][..summed.len()]);
        activation::with_avx2(
            #[inline(always)]
            || match r {
                None if first => summed.copy_from_slice(g),
                None => summed.iter_mut().zip(g).for_each(|(s, &g)| *s += g),
                Some(r) if first => summed.iter_mut().zip(g).zip(r).for_each(|((s, &g), &r)| *s = relu_gate(g, r)),
                Some(r) => summed.iter_mut().zip(g).zip(r).for_each(|((s, &g), &r)| *s += relu_gate(g, r)),
            },
        )
    });
}

/// Back-propagates the gradient seeded by [`Workspace::cross_entropy`] or
/// [`Workspace::distillation`] through the whole network, sending weight (and, for
/// [`GradSink::Sum`], bias, scale and shift) gradients to `sink`.
///
/// `training` must be the one given to the forward pass: batch norms differentiate
/// through the batch statistics after a train-mode pass, as affine maps otherwise.
///
/// # Shapes
/// - `params`: `[plan.param_len]`
pub(crate) fn backward(
    plan: &Plan,
    params: &[f32],
    training: Option<Training<'_>>,
    ws: &mut Workspace,
    sink: &mut GradSink<'_>,
) {
    assert_eq!(training.is_some(), ws.training, "backward must run in the forward pass's mode");
    let (n, threads) = (ws.n, ws.op_threads);
    let Workspace { acts, cols, argmax, grad, grad_next, dpad, flipped, stats, summed, arrived, .. } = ws;
    arrived.fill(false);
    let summing = matches!(sink, GradSink::Sum(_));
    for l in (plan.first_dense..plan.layers.len()).rev() {
        if !plan.needs_grad[l] {
            continue;
        }
        if l > plan.first_dense && plan.relu_after[l - 1] && plan.needs_grad[l - 1] {
            // A ReLU its batch norm or add computed in the forward pass: that layer's backward
            // pass applies the ReLU's rule to this gradient as it reads it.
            continue;
        }
        let layer = &plan.layers[l];
        let (c, s) = layer.input;
        // The input buffer `b` is the output of layer `b − 1`, which needs a gradient when
        // it depends on parameters; it gets it handed down in `grad_next`, or summed.
        let source = layer.inputs[0];
        let need_dx = source > 0 && plan.needs_grad[source - 1];
        let sums_dx = need_dx && plan.accumulates[source - 1];
        let (summed_below, summed_here) = summed.split_at_mut(l);
        // With a fused ReLU the gradient arriving is the ReLU's (layer `l + 1`), gated by its
        // output (buffer `l + 2`); this layer's own output buffer was never written.
        let fused = plan.relu_after[l];
        let arriving = l + usize::from(fused);
        let dy: &[f32] = if plan.accumulates[arriving] {
            &summed_here[arriving - l][..layer.out_len() * n]
        } else {
            &grad[..layer.out_len() * n]
        };
        let relu_out = fused.then(|| &acts[l + 2][..layer.out_len() * n]);
        let dx = &mut grad_next[..layer.in_len() * n];
        let x = &acts[source][..layer.in_len() * n];
        let y = &acts[l + 1][..layer.out_len() * n];
        match &layer.op {
            Op::Dense { geom, weight, bias, prunable } if direct::supports(geom) => {
                let (k, width) = (geom.unfolded(), n * geom.out_plane());
                let d = Direct::forward(geom, n);
                // Unless the batch norm above wrote it padded already.
                if need_dx && !gradient_arrives_padded(plan, l, summing) {
                    direct::pad(geom.cout * n, geom.oh, geom.ow, geom.k - 1 - geom.pad, dy, &mut dpad[l], threads);
                }
                match sink {
                    GradSink::Sum(g) => {
                        let dw = &mut g[*weight..][..geom.cout * k];
                        // A "same" convolution's padded gradient (there for the input gradient)
                        // is the faster layout for the weight gradient too.
                        match GradLayout::padded(geom).filter(|_| need_dx) {
                            Some(layout) => direct::weight_grad(&d, 0..n, &cols[l], &dpad[l], layout, 1.0, dw, threads),
                            None => direct::weight_grad(&d, 0..n, &cols[l], dy, GradLayout::Rows, 1.0, dw, threads),
                        }
                        if let Some(b) = bias {
                            layers::add_row_sums(&mut g[*b..][..geom.cout], dy, width);
                        }
                    }
                    GradSink::Rows { rows, segments } => {
                        let p = &plan.prunable[*prunable];
                        for seg in segments.iter() {
                            let row = &mut rows[seg.row * plan.prunable_len + p.prunable_offset..][..p.len];
                            let rows = GradLayout::Rows;
                            direct::weight_grad(&d, seg.start..seg.end, &cols[l], dy, rows, seg.scale, row, threads);
                        }
                    }
                }
                if need_dx {
                    let wt = &params[*weight..][..geom.cout * k];
                    direct::flip(geom.cout, geom.cin, geom.k, wt, flipped);
                    direct::forward(&Direct::input_gradient(geom, n), &dpad[l], flipped, None, dx, threads);
                }
            }
            Op::Dense { geom, weight, bias, prunable } => {
                let (k, width, plane) = (geom.unfolded(), n * geom.out_plane(), geom.out_plane());
                let unfolded = if geom.is_pointwise() { x } else { &cols[l][..k * width] };
                let dy_m = MatRef::row_major(dy, geom.cout, width);
                let cols_m = MatRef::row_major(unfolded, k, width);
                match sink {
                    GradSink::Sum(g) => {
                        let dw = MatMut::row_major(&mut g[*weight..][..geom.cout * k], geom.cout, k);
                        matmul_on(threads, dw, dy_m, cols_m.t(), true, 1.0);
                        if let Some(b) = bias {
                            layers::add_row_sums(&mut g[*b..][..geom.cout], dy, width);
                        }
                    }
                    GradSink::Rows { rows, segments } => {
                        let p = &plan.prunable[*prunable];
                        for seg in segments.iter() {
                            let row = &mut rows[seg.row * plan.prunable_len + p.prunable_offset..][..p.len];
                            let (a, b) = (seg.start * plane, seg.end * plane);
                            let dw = MatMut::row_major(row, geom.cout, k);
                            matmul(dw, dy_m.columns(a, b), cols_m.columns(a, b).t(), true, seg.scale);
                        }
                    }
                }
                if need_dx {
                    let wt = MatRef::row_major(&params[*weight..][..geom.cout * k], geom.cout, k).t();
                    if geom.is_pointwise() {
                        matmul_on(threads, MatMut::row_major(dx, k, width), wt, dy_m, false, 1.0);
                    } else {
                        // The unfolded input is no longer needed: its buffer takes the
                        // unfolded gradient.
                        let dcols = &mut cols[l][..k * width];
                        matmul_on(threads, MatMut::row_major(dcols, k, width), wt, dy_m, false, 1.0);
                        layers::fold(geom, n, dcols, dx, threads);
                    }
                }
            }
            Op::MaxPool(g) => layers::max_pool_backward(g, c * n, dy, &argmax[l], dx),
            Op::AvgPool(g) => layers::avg_pool_backward(g, c * n, dy, dx),
            Op::Act(a) => activation::backward(*a, x, y, dy, dx),
            Op::Dropout { .. } => match training {
                Some(t) if !t.masks[l].is_empty() => layers::dropout(c, n, s, t.first, &t.masks[l], dy, dx),
                _ => dx.copy_from_slice(dy),
            },
            Op::Flatten => layers::unflatten(c, n, s, dy, dx),
            Op::BatchNorm(g) => {
                let batch = training.is_some().then(|| &stats[l]);
                let dparams = match sink {
                    GradSink::Sum(sum) => Some(&mut **sum),
                    // Rows hold prunable weights only.
                    GradSink::Rows { .. } => None,
                };
                let out = match source.checked_sub(1).map(|p| &plan.layers[p].op) {
                    // The convolution below reads this gradient padded: write it so.
                    Some(Op::Dense { geom, .. }) if need_dx && gradient_arrives_padded(plan, source - 1, summing) => {
                        let (buf, q) = (&mut dpad[source - 1], geom.k - 1 - geom.pad);
                        direct::padded_buffer(geom.cout * n, geom.oh, geom.ow, q, buf);
                        Some((&mut buf[..], batch_norm::Layout::Padded { h: geom.oh, w: geom.ow, q }))
                    }
                    _ if need_dx => Some((&mut *dx, batch_norm::Layout::Flat)),
                    _ => None,
                };
                batch_norm::backward(g, params, n * s, x, batch, dy, relu_out, out, dparams, threads);
            }
            Op::GlobalAvgPool => layers::global_avg_pool_backward(s, dy, dx),
            Op::Add => {
                // The gradient fans out unchanged to every input; an add's inputs always sum.
                for &b in &layer.inputs {
                    if b > 0 && plan.needs_grad[b - 1] {
                        arrive(&mut summed_below[b - 1], &mut arrived[b - 1], dy, relu_out, threads);
                    }
                }
                continue;
            }
        }
        if sums_dx {
            arrive(&mut summed_below[source - 1], &mut arrived[source - 1], dx, None, threads);
        } else if need_dx {
            std::mem::swap(grad, grad_next);
        }
    }
}

/// Whether direct convolution `l`'s output gradient reaches it already padded for its input
/// gradient, written so by the batch norm that is its one reader (no bias to sum, a summed
/// gradient and a "same" convolution's padded layout, which the weight gradient then reads
/// too), so that [`backward`] skips the padding pass. `summing`: weight gradients go to a
/// [`GradSink::Sum`] (per-sample rows read the gradient unpadded).
fn gradient_arrives_padded(plan: &Plan, l: usize, summing: bool) -> bool {
    let Op::Dense { geom, bias: None, .. } = &plan.layers[l].op else { return false };
    let source = plan.layers[l].inputs[0];
    let reader = plan.layers.get(l + 1).filter(|r| r.inputs == [l + 1]);
    summing
        && direct::supports(geom)
        && GradLayout::padded(geom).is_some()
        && source > 0
        && plan.needs_grad[source - 1]
        && !plan.accumulates[l]
        && matches!(reader.map(|r| &r.op), Some(Op::BatchNorm(_)))
}

/// Scalars a pass keeps per image (the image, every layer's output, unfolded inputs,
/// summed gradients, two gradient buffers).
fn scalars_per_image(plan: &Plan) -> usize {
    let kept: usize = plan
        .layers
        .iter()
        .enumerate()
        .map(|(l, layer)| {
            let extra = match &layer.op {
                Op::Dense { geom, .. } if direct::supports(geom) => Direct::forward(geom, 1).padded_len(),
                Op::Dense { geom, .. } if !geom.is_pointwise() => geom.unfolded() * geom.out_plane(),
                _ => 0,
            };
            let summed = if plan.accumulates[l] && plan.needs_grad[l] { layer.out_len() } else { 0 };
            layer.out_len() + extra + summed
        })
        .sum();
    plan.image_len() + kept + 2 * plan.max_act_len()
}

/// Working set of a pass over one chunk. Larger chunks amortise per-pass costs (flipping
/// weights, small products for linear layers); smaller ones stay in cache. On `cnn-s`
/// (2 cores, 512 KiB L2 each, 8 MiB shared L3) 1 MiB, about 12 images, trained ~1.5× faster
/// than 256 KiB and ~10% faster than 2 MiB.
const CHUNK_BYTES: usize = 1 << 20;

/// Images per pass: as many as fit [`CHUNK_BYTES`], at least 1 and at most `cap`.
///
/// Depends on the network alone, so that results never depend on the thread count.
pub(crate) fn chunk_images(plan: &Plan, cap: usize) -> usize {
    (CHUNK_BYTES / (4 * scalars_per_image(plan))).clamp(1, cap.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One forward and backward pass of `plan` over `images` (train mode when `train`): the
    /// logits and the flat gradient, of the whole batch or per image ([`GradSink::Rows`]).
    fn pass(plan: &Plan, params: &[f32], images: &[Vec<f32>], train: bool, per_image: bool) -> (Vec<f32>, Vec<f32>) {
        let mut ws = Workspace::default();
        let masks = vec![Vec::new(); plan.layers.len()];
        let training = train.then_some(Training { masks: &masks, first: 0 });
        forward(plan, params, images.iter().map(Vec::as_slice), plan.layers.len(), false, training, &mut ws);
        let labels: Vec<u32> = (0..images.len() as u32).map(|i| i % plan.classes() as u32).collect();
        ws.cross_entropy(plan, &labels, Some(0.25));
        let grad = if per_image {
            let mut rows = vec![0.0; images.len() * plan.prunable_len];
            let segments: Vec<Segment> =
                (0..images.len()).map(|i| Segment { start: i, end: i + 1, row: i, scale: 1.0 }).collect();
            backward(plan, params, training, &mut ws, &mut GradSink::Rows { rows: &mut rows, segments: &segments });
            rows
        } else {
            let mut grad = vec![0.0; plan.param_len];
            backward(plan, params, training, &mut ws, &mut GradSink::Sum(&mut grad));
            grad
        };
        (ws.logits(plan).to_vec(), grad)
    }

    #[test]
    fn relus_fused_into_batch_norms_and_adds_give_the_separate_relus_results_bit_for_bit() {
        let spec = hyperprune_core::preset("resnet-s").unwrap();
        let fused = Plan::new(&spec).unwrap();
        let mut separate = Plan::new(&spec).unwrap();
        separate.relu_after.fill(false);
        // Every ReLU of a ResNet follows a batch norm or an add: the stem's and two a block.
        assert_eq!(fused.relu_after.iter().filter(|&&f| f).count(), 7);
        let params = crate::reference::random_model(&spec, 5).values().concat();
        let images: Vec<Vec<f32>> =
            (0..6).map(|i| (0..fused.image_len()).map(|p| ((p * 31 + i * 17) % 29) as f32 / 29.0).collect()).collect();
        for (train, per_image) in [(true, false), (false, false), (false, true)] {
            let (logits, grad) = pass(&fused, &params, &images, train, per_image);
            assert!(grad.iter().any(|&g| g != 0.0) && grad.iter().all(|g| g.is_finite()));
            assert_eq!((logits, grad), pass(&separate, &params, &images, train, per_image), "train {train}");
        }
    }
}

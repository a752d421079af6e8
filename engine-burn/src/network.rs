//! A network compiled from an [`ArchSpec`] at run time: the nodes of its graph as
//! operations that index into flat parameter tensors and read their inputs by node index,
//! and a forward pass generic over the burn backend.
//!
//! Parameters travel as one flat `Tensor<_, 1>` per entry of [`ArchSpec::params`] and are
//! reshaped at use. That keeps a runtime-built network free of burn's `Module` derive, lets
//! one optimiser routine update every parameter alike, and makes "the input of layer `i`"
//! and "weights times a mask" plain substitutions in the parameter list.
//!
//! A forward pass runs in eval mode unless it is given a [`Training`]: then dropout is
//! active and batch normalisation uses the batch's statistics, leaving the running
//! statistics it computed in the [`Training`] for the training step to store.

use burn::tensor::backend::Backend;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData, activation, module};

use super::batch_norm::{BatchNormParams, batch_norm_eval, batch_norm_train};
use super::dropout::DropoutMasks;
use hyperprune_core::arch::{Activation, ArchSpec, LayerSpec, ParamRole, ParamSpec, Source};
use hyperprune_core::engine::EngineError;

/// One step of the forward pass.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Op {
    /// Convolution with weight `params[weight]` of shape `[out, in, k, k]`.
    Conv {
        /// Index of the weight in the parameter list.
        weight: usize,
        /// Index of the bias, if any.
        bias: Option<usize>,
        /// `[out, in, k, k]`.
        shape: [usize; 4],
        /// Stride in both directions.
        stride: usize,
        /// Zero padding on every side.
        padding: usize,
    },
    /// Fully connected layer with weight `params[weight]` of shape `[out, in]`.
    Linear {
        /// Index of the weight in the parameter list.
        weight: usize,
        /// Index of the bias, if any.
        bias: Option<usize>,
        /// `[out, in]`.
        shape: [usize; 2],
    },
    /// Batch normalisation over channels (see `batch_norm.rs`).
    BatchNorm {
        /// Index of the scale `γ`; the shift, running mean and running variance follow it
        /// in the parameter list.
        scale: usize,
        /// Added to the variance.
        eps: f64,
        /// Weight of the batch in the running statistics.
        momentum: f64,
    },
    /// Elementwise sum of every input.
    Add,
    /// `[n, c, h, w]` to `[n, c, 1, 1]`, the mean over each map.
    GlobalAvgPool,
    /// Max pooling.
    MaxPool {
        /// Window size.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// Average pooling (no padding, so every window is full).
    AvgPool {
        /// Window size.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// `[n, c, h, w]` to `[n, c·h·w]`.
    Flatten,
    /// Elementwise activation.
    Activation(Activation),
    /// Dropout, active only in training.
    Dropout {
        /// Drop probability.
        p: f32,
    },
}

/// The operations of an [`ArchSpec`]'s graph, with the parameter indices they use.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// The spec it was built from.
    pub spec: ArchSpec,
    /// Parameter descriptions, in [`ArchSpec::params`] order.
    pub params: Vec<ParamSpec>,
    /// One op per graph node (= spec layer), in topological order; the last is the output.
    pub ops: Vec<Op>,
    /// What each op reads, in order.
    pub inputs: Vec<Vec<Source>>,
    /// Index into `ops` (= spec layer index) of every prunable layer, in order.
    pub prunable_layers: Vec<usize>,
}

/// What a train-mode forward pass needs besides the parameters, and what it leaves behind.
pub(super) struct Training<Bk: Backend> {
    /// Dropout masks, drawn from the member's seed.
    pub dropout: DropoutMasks,
    /// `(parameter index, new value)` of every running statistic the last pass computed,
    /// detached from the graph; the training step stores them and clears the list.
    pub running: Vec<(usize, Tensor<Bk, 1>)>,
}

impl<Bk: Backend> Training<Bk> {
    /// Training state for the member trained with `seed`.
    pub fn new(seed: u64) -> Self {
        Training { dropout: DropoutMasks::new(seed), running: Vec::new() }
    }
}

impl Plan {
    /// Compiles `spec`.
    ///
    /// # Errors
    /// [`EngineError::Mismatch`] when the spec is invalid.
    pub fn new(spec: &ArchSpec) -> Result<Plan, EngineError> {
        let invalid = |e: hyperprune_core::arch::ArchError| EngineError::Mismatch(e.to_string());
        let graph = spec.graph().map_err(invalid)?;
        let params = spec.params().map_err(invalid)?;
        let find = |layer: usize, role: ParamRole| params.iter().position(|p| p.layer == layer && p.role == role);
        let mut ops = Vec::with_capacity(spec.layers.len());
        let mut prunable_layers = Vec::new();
        for (i, layer) in spec.layers.iter().enumerate() {
            let op = match layer {
                LayerSpec::Conv2d { stride, padding, .. } => {
                    let weight = find(i, ParamRole::Weight).expect("a conv layer owns a weight");
                    let s = &params[weight].shape;
                    Op::Conv {
                        weight,
                        bias: find(i, ParamRole::Bias),
                        shape: [s[0], s[1], s[2], s[3]],
                        stride: *stride,
                        padding: *padding,
                    }
                }
                LayerSpec::Linear { .. } => {
                    let weight = find(i, ParamRole::Weight).expect("a linear layer owns a weight");
                    let s = &params[weight].shape;
                    Op::Linear { weight, bias: find(i, ParamRole::Bias), shape: [s[0], s[1]] }
                }
                LayerSpec::BatchNorm2d { eps, momentum, .. } => {
                    let scale = find(i, ParamRole::Scale).expect("a batch norm layer owns a scale");
                    // `ArchSpec::params` lists scale, shift, running mean, running variance.
                    let roles = [ParamRole::Scale, ParamRole::Shift, ParamRole::RunningMean, ParamRole::RunningVar];
                    let in_order = params
                        .get(scale..scale + 4)
                        .is_some_and(|p| p.iter().zip(roles).all(|(p, role)| p.layer == i && p.role == role));
                    if !in_order {
                        return Err(EngineError::Mismatch(format!(
                            "network '{}', layer {i}: batch norm tensors are not scale, shift, running mean, \
                             running variance in a row",
                            spec.name
                        )));
                    }
                    Op::BatchNorm { scale, eps: *eps, momentum: *momentum }
                }
                LayerSpec::Add => Op::Add,
                LayerSpec::GlobalAvgPool => Op::GlobalAvgPool,
                LayerSpec::MaxPool { kernel, stride } => {
                    Op::MaxPool { kernel: *kernel, stride: stride.unwrap_or(*kernel) }
                }
                LayerSpec::AvgPool { kernel, stride } => {
                    Op::AvgPool { kernel: *kernel, stride: stride.unwrap_or(*kernel) }
                }
                LayerSpec::Flatten => Op::Flatten,
                LayerSpec::Dropout { p } => Op::Dropout { p: *p },
                LayerSpec::Relu | LayerSpec::Tanh | LayerSpec::Gelu | LayerSpec::Sigmoid => {
                    Op::Activation(layer.activation().expect("an activation layer"))
                }
                other => return Err(EngineError::unsupported_layer("burn", &graph.nodes[i].name, other)),
            };
            if layer.is_prunable() {
                prunable_layers.push(i);
            }
            ops.push(op);
        }
        let inputs = graph.nodes.into_iter().map(|n| n.inputs).collect();
        Ok(Plan { spec: spec.clone(), params, ops, inputs, prunable_layers })
    }

    /// Indices into the parameter list of the prunable weights, in layer order.
    pub fn prunable_params(&self) -> impl Iterator<Item = usize> + '_ {
        self.params.iter().enumerate().filter(|(_, p)| p.prunable).map(|(i, _)| i)
    }

    /// Whether parameter `i` is trained by the optimiser (buffers are not).
    pub fn is_trained(&self, i: usize) -> bool {
        !self.params[i].role.is_buffer()
    }

    /// Logits of a batch.
    ///
    /// Eval mode unless `training` is given (see the module documentation).
    ///
    /// # Shapes
    /// - `params[i]`: `[numel of params[i]]`
    /// - `x`: `[batch, c, h, w]` with `[c, h, w] = spec.input`
    /// - returns `[batch, classes]`
    pub fn logits<Bk: Backend>(
        &self,
        params: &[Tensor<Bk, 1>],
        x: Tensor<Bk, 4>,
        training: Option<&mut Training<Bk>>,
    ) -> Tensor<Bk, 2> {
        let last = self.ops.len() - 1;
        match self.run(params, x, self.ops.len(), Some(last), training) {
            Some(Features::Flat(y)) => y,
            _ => unreachable!("a valid spec ends in flat features"),
        }
    }

    /// The input of node `node` (a one-input node, such as every prunable layer).
    ///
    /// # Shapes
    /// - `params[i]`: `[numel of params[i]]`
    /// - `x`: `[batch, c, h, w]`
    /// - returns `[batch, c', h', w']` or `[batch, features]`, whichever node `node` takes
    pub fn forward<Bk: Backend>(
        &self,
        params: &[Tensor<Bk, 1>],
        x: Tensor<Bk, 4>,
        node: usize,
        training: Option<&mut Training<Bk>>,
    ) -> Features<Bk> {
        match self.inputs[node][0] {
            Source::Network => Features::Map(x),
            Source::Node(j) => self.run(params, x, j + 1, Some(j), training).expect("node j is computed and kept"),
        }
    }

    /// Runs nodes `0..until` and returns the output of node `keep`, if given. A node's
    /// output is dropped after its last reader among those nodes, so that a deep network
    /// holds only the activations still needed (autodiff keeps what backward needs).
    fn run<Bk: Backend>(
        &self,
        params: &[Tensor<Bk, 1>],
        x: Tensor<Bk, 4>,
        until: usize,
        keep: Option<usize>,
        mut training: Option<&mut Training<Bk>>,
    ) -> Option<Features<Bk>> {
        let mut last_reader = vec![0; until];
        for (i, inputs) in self.inputs[..until].iter().enumerate() {
            for &source in inputs {
                if let Source::Node(j) = source {
                    last_reader[j] = i;
                }
            }
        }
        let mut outputs: Vec<Option<Features<Bk>>> = Vec::with_capacity(until);
        for (i, op) in self.ops[..until].iter().enumerate() {
            let read = |outputs: &[Option<Features<Bk>>], source: Source| match source {
                Source::Network => Features::Map(x.clone()),
                Source::Node(j) => outputs[j].clone().expect("a node is kept until its last reader"),
            };
            let inputs: Vec<Features<Bk>> = self.inputs[i].iter().map(|&s| read(&outputs, s)).collect();
            for &source in &self.inputs[i] {
                if let Source::Node(j) = source
                    && last_reader[j] == i
                    && keep != Some(j)
                {
                    outputs[j] = None;
                }
            }
            outputs.push(Some(self.apply(i, op, params, inputs, training.as_deref_mut())));
        }
        keep.and_then(|k| outputs[k].take())
    }

    /// Node `i`'s op on its inputs.
    fn apply<Bk: Backend>(
        &self,
        i: usize,
        op: &Op,
        params: &[Tensor<Bk, 1>],
        mut inputs: Vec<Features<Bk>>,
        training: Option<&mut Training<Bk>>,
    ) -> Features<Bk> {
        if let Op::Add = op {
            let first = inputs.remove(0);
            return inputs.into_iter().fold(first, Features::add);
        }
        let h = inputs.pop().expect("a one-input node has its input");
        match (op, h) {
            (&Op::Conv { weight, bias, shape, stride, padding }, Features::Map(x)) => {
                let w = params[weight].clone().reshape(shape);
                let b = bias.map(|b| params[b].clone());
                let options = ConvOptions::new([stride, stride], [padding, padding], [1, 1], 1);
                Features::Map(module::conv2d(x, w, b, options))
            }
            (&Op::Linear { weight, bias, shape }, Features::Flat(x)) => {
                // burn's `linear` takes the weight as `[in, out]`; ours is PyTorch's `[out, in]`.
                let w = params[weight].clone().reshape(shape).transpose();
                Features::Flat(module::linear(x, w, bias.map(|b| params[b].clone())))
            }
            (&Op::BatchNorm { scale, eps, momentum }, Features::Map(x)) => {
                let bn = BatchNormParams {
                    scale: params[scale].clone(),
                    shift: params[scale + 1].clone(),
                    mean: params[scale + 2].clone(),
                    var: params[scale + 3].clone(),
                    eps,
                    momentum,
                };
                match training {
                    Some(training) => {
                        let (y, running) = batch_norm_train(x, &bn);
                        training.running.push((scale + 2, running.mean));
                        training.running.push((scale + 3, running.var));
                        Features::Map(y)
                    }
                    None => Features::Map(batch_norm_eval(x, &bn)),
                }
            }
            (Op::GlobalAvgPool, Features::Map(x)) => Features::Map(x.mean_dims(&[2, 3])),
            (&Op::MaxPool { kernel, stride }, Features::Map(x)) => {
                Features::Map(module::max_pool2d(x, [kernel, kernel], [stride, stride], [0, 0], [1, 1], false))
            }
            (&Op::AvgPool { kernel, stride }, Features::Map(x)) => {
                Features::Map(module::avg_pool2d(x, [kernel, kernel], [stride, stride], [0, 0], true, false))
            }
            (Op::Flatten, Features::Map(x)) => Features::Flat(x.flatten(1, 3)),
            (Op::Flatten, flat @ Features::Flat(_)) => flat,
            (&Op::Activation(a), h) => h.activate(a),
            (&Op::Dropout { p }, h) => match training {
                Some(training) if p > 0.0 => h.drop_out(&mut training.dropout, p),
                _ => h,
            },
            (op, _) => unreachable!("node {i}: {op:?} does not fit its input in a valid spec"),
        }
    }
}

/// Activations between layers: a feature map or a flat vector per sample.
#[derive(Debug, Clone)]
pub(super) enum Features<Bk: Backend> {
    /// `[batch, c, h, w]`.
    Map(Tensor<Bk, 4>),
    /// `[batch, features]`.
    Flat(Tensor<Bk, 2>),
}

impl<Bk: Backend> Features<Bk> {
    fn activate(self, a: Activation) -> Self {
        match self {
            Features::Map(x) => Features::Map(activate(x, a)),
            Features::Flat(x) => Features::Flat(activate(x, a)),
        }
    }

    /// Elementwise sum; a valid spec adds only equal shapes.
    fn add(self, other: Self) -> Self {
        match (self, other) {
            (Features::Map(a), Features::Map(b)) => Features::Map(a + b),
            (Features::Flat(a), Features::Flat(b)) => Features::Flat(a + b),
            _ => unreachable!("a valid spec adds features of one shape"),
        }
    }

    fn drop_out(self, masks: &mut DropoutMasks, p: f32) -> Self {
        match self {
            Features::Map(x) => Features::Map(drop_out(x, masks, p)),
            Features::Flat(x) => Features::Flat(drop_out(x, masks, p)),
        }
    }
}

fn activate<Bk: Backend, const D: usize>(x: Tensor<Bk, D>, a: Activation) -> Tensor<Bk, D> {
    match a {
        Activation::Relu => activation::relu(x),
        Activation::Tanh => activation::tanh(x),
        Activation::Gelu => activation::gelu(x),
        Activation::Sigmoid => activation::sigmoid(x),
    }
}

/// Inverted dropout with a mask drawn on the host, so that it follows the member's seed
/// whatever the backend.
fn drop_out<Bk: Backend, const D: usize>(x: Tensor<Bk, D>, masks: &mut DropoutMasks, p: f32) -> Tensor<Bk, D> {
    let dims = x.dims();
    let mask = masks.draw(dims.iter().product(), p);
    let mask = Tensor::<Bk, D>::from_data(TensorData::new(mask, dims), &x.device());
    x * mask
}

/// Sum over the batch of the cross-entropy of `logits` against one-hot `targets`.
///
/// # Shapes
/// - `logits`, `targets`: `[batch, classes]`
/// - returns `[1]`
pub(super) fn cross_entropy_sum<Bk: Backend>(logits: Tensor<Bk, 2>, targets: Tensor<Bk, 2>) -> Tensor<Bk, 1> {
    (activation::log_softmax(logits, 1) * targets).sum().neg()
}

/// Sum over the batch of `T² · KL(p ‖ softmax(logits/T))` for the teacher's log-probabilities
/// `log p` (constants: no gradient flows into the teacher).
///
/// # Shapes
/// - `logits`, `teacher_log_probs`: `[batch, classes]`
/// - returns `[1]`
pub(super) fn distillation_sum<Bk: Backend>(
    logits: Tensor<Bk, 2>,
    teacher_log_probs: Tensor<Bk, 2>,
    temperature: f64,
) -> Tensor<Bk, 1> {
    let log_q = activation::log_softmax(logits.div_scalar(temperature), 1);
    let p = teacher_log_probs.clone().exp();
    (p * (teacher_log_probs - log_q)).sum().mul_scalar(temperature * temperature)
}

/// Uploads parameter values as flat tensors.
///
/// # Shapes
/// - returns one `[values[i].len()]` tensor per entry
pub(super) fn upload<Bk: Backend>(values: &[Vec<f32>], device: &Bk::Device) -> Vec<Tensor<Bk, 1>> {
    values.iter().map(|v| Tensor::from_data(TensorData::new(v.clone(), [v.len()]), device)).collect()
}

/// Reads a tensor back as f32 values, row-major.
pub(super) fn download<Bk: Backend, const D: usize>(x: Tensor<Bk, D>) -> Vec<f32> {
    x.into_data().convert::<f32>().into_vec::<f32>().expect("converted to f32 just before")
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use burn::backend::Flex;
    use hyperprune_core::arch::preset;
    use hyperprune_core::engine::{Init, init_model};
    use hyperprune_core::model::Model;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    type Bk = Flex;

    fn logits_of(spec: &ArchSpec, values: &[Vec<f32>], images: &[f32], n: usize) -> Vec<f32> {
        let plan = Plan::new(spec).unwrap();
        let device = Default::default();
        let params = upload::<Bk>(values, &device);
        let [c, h, w] = spec.input;
        let x = Tensor::<Bk, 4>::from_data(TensorData::new(images.to_vec(), [n, c, h, w]), &device);
        download(plan.logits(&params, x, None))
    }

    /// A direct f64 forward pass (logits of one image) in eval mode: nested loops over the
    /// graph's nodes, no im2col, no burn.
    pub(crate) fn naive_forward(spec: &ArchSpec, values: &[Vec<f64>], image: &[f32]) -> Vec<f64> {
        let plan = Plan::new(spec).unwrap();
        let graph = spec.graph().unwrap();
        let network: Vec<f64> = image.iter().map(|&v| v as f64).collect();
        let mut outputs: Vec<Vec<f64>> = Vec::new();
        for (op, node) in plan.ops.iter().zip(&graph.nodes) {
            let inputs: Vec<&[f64]> = node
                .inputs
                .iter()
                .map(|&s| match s {
                    Source::Network => network.as_slice(),
                    Source::Node(j) => outputs[j].as_slice(),
                })
                .collect();
            let (c, h, w) = match node.input {
                hyperprune_core::arch::FeatureShape::Map { c, h, w } => (c, h, w),
                hyperprune_core::arch::FeatureShape::Flat(n) => (n, 1, 1),
            };
            let y = naive_op(op, values, &inputs, (c, h, w));
            outputs.push(y);
        }
        outputs.pop().unwrap()
    }

    /// One op of [`naive_forward`] on inputs of shape `(c, h, w)` (flat: `(n, 1, 1)`).
    fn naive_op(op: &Op, values: &[Vec<f64>], inputs: &[&[f64]], (c, h, w): (usize, usize, usize)) -> Vec<f64> {
        let val = |i: usize, j: usize| values[i][j];
        let x = inputs[0];
        match *op {
            Op::Conv { weight, bias, shape: [o, ci, k, _], stride, padding } => {
                let oh = (h + 2 * padding - k) / stride + 1;
                let ow = (w + 2 * padding - k) / stride + 1;
                let mut y = vec![0.0; o * oh * ow];
                for oc in 0..o {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut s = bias.map_or(0.0, |b| val(b, oc));
                            for ic in 0..ci {
                                for ky in 0..k {
                                    for kx in 0..k {
                                        let iy = (oy * stride + ky) as isize - padding as isize;
                                        let ix = (ox * stride + kx) as isize - padding as isize;
                                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                            continue;
                                        }
                                        let xv = x[(ic * h + iy as usize) * w + ix as usize];
                                        s += val(weight, ((oc * ci + ic) * k + ky) * k + kx) * xv;
                                    }
                                }
                            }
                            y[(oc * oh + oy) * ow + ox] = s;
                        }
                    }
                }
                y
            }
            Op::MaxPool { kernel, stride } | Op::AvgPool { kernel, stride } => {
                let max = matches!(op, Op::MaxPool { .. });
                let (oh, ow) = ((h - kernel) / stride + 1, (w - kernel) / stride + 1);
                let mut y = vec![0.0; c * oh * ow];
                for ch in 0..c {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let window = (0..kernel * kernel)
                                .map(|t| x[(ch * h + oy * stride + t / kernel) * w + ox * stride + t % kernel]);
                            y[(ch * oh + oy) * ow + ox] = if max {
                                window.fold(f64::NEG_INFINITY, f64::max)
                            } else {
                                window.sum::<f64>() / (kernel * kernel) as f64
                            };
                        }
                    }
                }
                y
            }
            Op::Linear { weight, bias, shape: [o, i] } => (0..o)
                .map(|r| bias.map_or(0.0, |b| val(b, r)) + (0..i).map(|j| val(weight, r * i + j) * x[j]).sum::<f64>())
                .collect(),
            Op::BatchNorm { scale, eps, .. } => (0..c * h * w)
                .map(|t| {
                    let ch = t / (h * w);
                    let (g, b, m, v) = (val(scale, ch), val(scale + 1, ch), val(scale + 2, ch), val(scale + 3, ch));
                    g * (x[t] - m) / (v + eps).sqrt() + b
                })
                .collect(),
            Op::Add => (0..x.len()).map(|t| inputs.iter().map(|input| input[t]).sum()).collect(),
            Op::GlobalAvgPool => x.chunks(h * w).map(|map| map.iter().sum::<f64>() / (h * w) as f64).collect(),
            Op::Flatten | Op::Dropout { .. } => x.to_vec(),
            Op::Activation(a) => x
                .iter()
                .map(|&v| match a {
                    Activation::Relu => v.max(0.0),
                    Activation::Tanh => v.tanh(),
                    Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                    Activation::Gelu => 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2)),
                })
                .collect(),
        }
    }

    /// erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7, far inside the
    /// 1e-4 tolerance of the tests that use it).
    fn erf(x: f64) -> f64 {
        let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
        let poly =
            t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
        (1.0 - poly * (-x * x).exp()).copysign(x)
    }

    /// The values in f64.
    pub(crate) fn widen(values: &[Vec<f32>]) -> Vec<Vec<f64>> {
        values.iter().map(|v| v.iter().map(|&x| x as f64).collect()).collect()
    }

    pub(crate) fn random_images(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// Compares against the naive forward, relative to the largest logit magnitude.
    /// f32 sums of at most a few hundred terms of size O(1) err by ~1e-6 relative, so 1e-4
    /// leaves two orders of margin while still catching any wrong index or layout.
    fn assert_matches_naive(spec: &ArchSpec, values: &[Vec<f32>], n: usize) {
        let d: usize = spec.input.iter().product();
        let images = random_images(n, d, 11);
        let got = logits_of(spec, values, &images, n);
        let classes = spec.classes;
        let values64 = widen(values);
        for s in 0..n {
            let want = naive_forward(spec, &values64, &images[s * d..(s + 1) * d]);
            let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
            for (k, want) in want.iter().enumerate() {
                let err = (got[s * classes + k] as f64 - want).abs() / scale;
                assert!(err < 1e-4, "{}: sample {s} class {k}: {} vs {want}", spec.name, got[s * classes + k]);
            }
        }
    }

    #[test]
    fn masked_linear_forward_matches_hand_computation() {
        let spec: ArchSpec = serde_json::from_str(
            r#"{"name":"tiny","input":[1,2,2],"classes":2,"layers":[
                {"type":"flatten"},{"type":"linear","out_features":3},{"type":"tanh"},
                {"type":"linear","out_features":2,"bias":false}]}"#,
        )
        .unwrap();
        let mut model = Model::new(
            spec.clone(),
            vec![
                vec![0.5, -1.0, 0.25, 2.0, 1.5, 0.75, -0.5, 1.0, -2.0, 0.1, 0.3, -0.7],
                vec![0.1, -0.2, 0.3],
                vec![1.0, -1.0, 0.5, 2.0, 0.25, -0.5],
            ],
        )
        .unwrap();
        let keep = vec![
            vec![true, false, true, true, false, true, true, true, true, false, true, true],
            vec![false, true, true, true, true, false],
        ];
        model.apply_masks(&keep, None).unwrap();
        let x = [0.3f32, -0.8, 1.2, 0.5];
        let got = logits_of(&spec, model.values(), &x, 1);
        // Hand computation of the pruned network (zeroed weights left out of the sums).
        let h = [
            (0.1 + 0.5 * 0.3 + 0.25 * 1.2 + 2.0 * 0.5f64).tanh(),
            (-0.2 + 0.75 * -0.8 - 0.5 * 1.2 + 1.0 * 0.5f64).tanh(),
            (0.3 - 2.0 * 0.3 + 0.3 * 1.2 - 0.7 * 0.5f64).tanh(),
        ];
        let want = [-h[1] + 0.5 * h[2], 2.0 * h[0] + 0.25 * h[1]];
        for (g, w) in got.iter().zip(want) {
            // One f32 dot of 4 terms and a tanh: error ~1e-7, well inside 1e-5.
            assert!((*g as f64 - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    /// Kaiming weights and small random (non-zero) biases.
    pub(crate) fn random_values(spec: &ArchSpec, seed: u64) -> Vec<Vec<f32>> {
        let mut values = init_model(spec, Init::KaimingUniform, seed).unwrap().values().to_vec();
        let mut rng = ChaCha8Rng::seed_from_u64(seed + 1000);
        for (p, v) in spec.params().unwrap().iter().zip(&mut values) {
            if !p.prunable {
                v.iter_mut().for_each(|x| *x = rng.random_range(-0.1..0.1));
            }
        }
        // Batch norm away from the identity: scales and variances in a range that keeps
        // activations O(1), means large enough to matter.
        for op in &Plan::new(spec).unwrap().ops {
            if let &Op::BatchNorm { scale, .. } = op {
                values[scale].iter_mut().for_each(|x| *x = rng.random_range(0.5..1.5));
                values[scale + 2].iter_mut().for_each(|x| *x = rng.random_range(-0.5..0.5));
                values[scale + 3].iter_mut().for_each(|x| *x = rng.random_range(0.5..2.0));
            }
        }
        values
    }

    /// Two 1×1 convs of the network's input, added, pooled and read out through an
    /// identity linear layer: every number below is checked by hand.
    #[test]
    fn add_and_global_avg_pool_forward_match_hand_computation() {
        let spec = ArchSpec::from_json(
            r#"{"name":"sum","input":[1,2,2],"classes":2,"layers":[
                {"type":"conv2d","name":"a","out_channels":2,"kernel":1,"bias":false},
                {"type":"conv2d","name":"b","out_channels":2,"kernel":1,"bias":false,"inputs":["input"]},
                {"type":"add","name":"sum","inputs":["a","b"]},
                {"type":"global_avgpool"},{"type":"flatten"},
                {"type":"linear","out_features":2,"bias":false}]}"#,
        )
        .unwrap();
        let values = vec![vec![2.0, -1.0], vec![0.5, 3.0], vec![1.0, 0.0, 0.0, 1.0]];
        // a = [2, 4, 6, 8 | -1, -2, -3, -4], b = [0.5, 1, 1.5, 2 | 3, 6, 9, 12],
        // a + b = [2.5, 5, 7.5, 10 | 2, 4, 6, 8], pooled [6.25, 5].
        let got = logits_of(&spec, &values, &[1.0, 2.0, 3.0, 4.0], 1);
        // Small integers and quarters are exact in f32.
        assert_eq!(got, vec![6.25, 5.0]);

        // The input of node `b` is the network's input, not node `a`'s output.
        let plan = Plan::new(&spec).unwrap();
        let device = Default::default();
        let x = Tensor::<Bk, 4>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 2, 2]), &device);
        let Features::Map(input) = plan.forward(&upload::<Bk>(&values, &device), x, 1, None) else {
            panic!("a conv reads a map")
        };
        assert_eq!(download(input), vec![1.0, 2.0, 3.0, 4.0]);
    }

    /// conv → bn → relu → conv → bn → add (block input) → relu → global pool → linear.
    pub(crate) fn one_block() -> ArchSpec {
        ArchSpec::from_json(
            r#"{"name":"one-block","input":[2,5,5],"classes":3,"layers":[
                {"type":"conv2d","name":"stem","out_channels":3,"kernel":3,"padding":1},
                {"type":"relu","name":"block_in"},
                {"type":"conv2d","name":"conv1","out_channels":3,"kernel":3,"padding":1,"bias":false},
                {"type":"batchnorm2d","name":"bn1"},
                {"type":"relu"},
                {"type":"conv2d","name":"conv2","out_channels":3,"kernel":3,"padding":1,"bias":false},
                {"type":"batchnorm2d","name":"bn2"},
                {"type":"add","name":"sum","inputs":["bn2","block_in"]},
                {"type":"relu"},
                {"type":"global_avgpool"},{"type":"flatten"},
                {"type":"linear","name":"fc","out_features":3}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn residual_block_with_batch_norm_matches_naive_loops_in_eval_mode() {
        let spec = one_block();
        let values = random_values(&spec, 9);
        let d: usize = spec.input.iter().product();
        assert_eq!(logits_of(&spec, &values, &random_images(5, d, 1), 5).len(), 5 * 3);
        assert_matches_naive(&spec, &values, 4);
    }

    #[test]
    fn conv_and_max_pool_forward_matches_naive_loops_on_cnn_digits() {
        let spec = preset("cnn-digits").unwrap();
        assert_matches_naive(&spec, &random_values(&spec, 5), 4);
    }

    #[test]
    fn stride_padding_avg_pool_and_every_activation_match_naive_loops() {
        let spec: ArchSpec = serde_json::from_str(
            r#"{"name":"mixed","input":[2,9,9],"classes":3,"layers":[
                {"type":"conv2d","out_channels":3,"kernel":3,"stride":2,"padding":1},{"type":"gelu"},
                {"type":"avgpool","kernel":2,"stride":1},{"type":"sigmoid"},
                {"type":"conv2d","out_channels":4,"kernel":2,"bias":false},{"type":"relu"},
                {"type":"flatten"},{"type":"dropout","p":0.5},{"type":"linear","out_features":3}]}"#,
        )
        .unwrap();
        assert_matches_naive(&spec, &random_values(&spec, 2), 3);
    }
}

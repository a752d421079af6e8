//! SynFlow's synaptic flow: the score of every prunable weight in a network made linear,
//! computed in f64 for one all-ones image (Tanaka, Kunin, Yamins and Ganguli, "Pruning neural
//! networks without any data by iteratively conserving synaptic flow", NeurIPS 2020).
//!
//! The network is linearised: every parameter `θ` is replaced by `|θ|`, pruned weights are
//! zero, and the input is one image of ones. The objective is the sum of the logits,
//!
//! ```text
//! R = 1ᵀ f(1; |θ ⊙ m|)          (the paper's R_SF = 1ᵀ (Π_l |θ^[l]|) 1, eq. 2, with biases)
//! S(θ) = ∂R/∂θ ⊙ θ              (eq. 1; taken in the linearised network, so S ≥ 0)
//! ```
//!
//! and [`synaptic_flow`] returns `S` for every prunable weight. The evaluator runs the
//! network's graph forward and backward for that single image in f64: products of `|W|`
//! over a deep network overflow or underflow f32.
//!
//! How each node kind is linearised:
//!
//! - conv and linear: `|W|`, masked, and `|b|` (the authors take the absolute value of the
//!   whole `state_dict`, biases included).
//! - activations (ReLU, tanh, GELU, sigmoid) and dropout: the identity. Every flow is
//!   non-negative (a positive input through non-negative maps), so a ReLU is the identity
//!   anyway and this is the authors' computation; for the saturating activations the
//!   linearised network of the paper's `R_SF` is taken literally, because running them would
//!   saturate on the large positive flows (`tanh(40) = 1` in f64) and zero the gradient of
//!   every earlier layer, which would then be pruned whole.
//! - batch normalisation (eval mode, running statistics): folded into the affine map per
//!   channel it computes, `y = a·x + c` with `a = γ / √(var + ε)` and `c = β − a·μ`, and then
//!   linearised like a conv with a bias, `|a|·x + |c|`. The authors' code takes the absolute
//!   value of `γ`, `β`, `μ` and `var` each and runs `|γ|(x − |μ|)/√(|var| + ε) + |β|`. At
//!   initialisation, where the paper applies SynFlow (`γ = 1, β = 0, μ = 0, var = 1`), the two
//!   agree. On a trained network the authors' form subtracts `|μ|`, which can make a channel
//!   negative, and the ReLU after it then cuts every path through that channel; the folded
//!   form keeps every flow non-negative, as the conservation argument assumes.
//! - max pooling: the maximum, its gradient to the first maximal position of each window;
//!   average pooling, global average pooling, flatten and add as they are.
//!
//! What it is not: the pruning loop. The iterative schedule (prune a little, re-score the
//! masked network, repeat) is the `synflow` plugin's; this module answers one scoring round,
//! through the host service `synaptic_flow`.

use crate::arch::{ArchError, FeatureShape, Graph, LayerSpec, ParamRole, Source};
use crate::model::Model;

/// Why the synaptic flow of a model could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum SynFlowError {
    /// The model's architecture does not lower to a graph.
    #[error(transparent)]
    Arch(#[from] ArchError),
    /// The keep mask does not have one entry per prunable weight.
    #[error(
        "the keep mask has {found} entries, but architecture '{arch}' has {expected} prunable weights; pass one \
         entry per prunable weight, in layer order"
    )]
    MaskLength {
        /// The architecture name.
        arch: String,
        /// The number of prunable weights.
        expected: usize,
        /// The mask's length.
        found: usize,
    },
    /// The flow overflowed f64 (or a parameter was not finite).
    #[error(
        "the synaptic flow of architecture '{arch}' is {flow} in f64: the product of its absolute weights overflows; \
         is a weight or batch norm statistic enormous or non-finite?"
    )]
    NotFinite {
        /// The architecture name.
        arch: String,
        /// The flow `R` that was computed.
        flow: f64,
    },
}

/// `∂R/∂θ ⊙ θ` of the linearised, masked network (see the module documentation) for every
/// prunable weight, in layer order (the order of [`Model::prunable`]): non-negative, and zero
/// where `keep` is false.
///
/// `keep` holds one entry per prunable weight, in the same order; a pruned weight is zero in
/// the network the flow is computed on.
///
/// # Errors
/// [`SynFlowError::MaskLength`] when `keep` has the wrong length, [`SynFlowError::Arch`] when
/// the spec does not lower to a graph, [`SynFlowError::NotFinite`] when the flow overflows.
pub fn synaptic_flow(model: &Model, keep: &[bool]) -> Result<Vec<f64>, SynFlowError> {
    let net = Linearised::new(model, keep)?;
    let outputs = net.forward();
    let flow: f64 = outputs.last().map_or(0.0, |logits| logits.iter().sum());
    let not_finite = || SynFlowError::NotFinite { arch: model.spec().name.clone(), flow };
    if !flow.is_finite() {
        return Err(not_finite());
    }
    let grads = net.backward(&outputs);
    let mut scores = Vec::with_capacity(keep.len());
    for (l, params) in net.layers.iter().enumerate() {
        if let (Params::Affine { weight, .. }, Some(grad)) = (params, &grads[l]) {
            scores.extend(weight.iter().zip(grad).map(|(w, g)| w * g));
        }
    }
    if scores.iter().any(|s| !s.is_finite()) {
        return Err(not_finite());
    }
    Ok(scores)
}

/// A layer's parameters, linearised.
#[derive(Debug, Clone, PartialEq)]
enum Params {
    /// A layer without parameters.
    None,
    /// Conv or linear: `|W ⊙ m|` and `|b|`.
    Affine { weight: Vec<f64>, bias: Option<Vec<f64>> },
    /// Batch normalisation folded to `|a|·x + |c|` per channel.
    Channel { scale: Vec<f64>, shift: Vec<f64> },
}

impl Params {
    /// A conv or linear layer's `|W ⊙ m|` and `|b|`.
    fn affine(&self) -> (&[f64], Option<&[f64]>) {
        match self {
            Params::Affine { weight, bias } => (weight, bias.as_deref()),
            _ => unreachable!("conv and linear layers are linearised to an affine map"),
        }
    }

    /// A batch normalisation's `|a|` and `|c|`.
    fn channel(&self) -> (&[f64], &[f64]) {
        match self {
            Params::Channel { scale, shift } => (scale, shift),
            _ => unreachable!("a batch normalisation is linearised to a per-channel map"),
        }
    }
}

/// The network of a model with every parameter replaced as the module documentation says.
struct Linearised<'m> {
    model: &'m Model,
    graph: Graph,
    /// One entry per layer (and node) of the spec.
    layers: Vec<Params>,
}

impl<'m> Linearised<'m> {
    fn new(model: &'m Model, keep: &[bool]) -> Result<Linearised<'m>, SynFlowError> {
        let spec = model.spec();
        let expected = model.prunable_count();
        if keep.len() != expected {
            return Err(SynFlowError::MaskLength { arch: spec.name.clone(), expected, found: keep.len() });
        }
        let graph = spec.graph()?;
        let abs = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| f64::from(x).abs()).collect() };
        let mut layers = vec![Params::None; spec.layers.len()];
        // Batch norm tensors by layer: scale, shift, running mean, running variance.
        let mut norms: Vec<[Option<&[f32]>; 4]> = vec![[None; 4]; spec.layers.len()];
        let mut offset = 0;
        for (p, v) in model.params().iter().zip(model.values()) {
            match p.role {
                ParamRole::Weight => {
                    let mask = &keep[offset..offset + v.len()];
                    offset += v.len();
                    let weight = v.iter().zip(mask).map(|(&w, &k)| if k { f64::from(w).abs() } else { 0.0 }).collect();
                    layers[p.layer] = Params::Affine { weight, bias: None };
                }
                ParamRole::Bias => {
                    if let Params::Affine { bias, .. } = &mut layers[p.layer] {
                        *bias = Some(abs(v));
                    }
                }
                ParamRole::Scale => norms[p.layer][0] = Some(v),
                ParamRole::Shift => norms[p.layer][1] = Some(v),
                ParamRole::RunningMean => norms[p.layer][2] = Some(v),
                ParamRole::RunningVar => norms[p.layer][3] = Some(v),
            }
        }
        for (l, layer) in spec.layers.iter().enumerate() {
            if let (LayerSpec::BatchNorm2d { eps, .. }, [Some(gamma), Some(beta), Some(mean), Some(var)]) =
                (layer, norms[l])
            {
                let a: Vec<f64> =
                    gamma.iter().zip(var).map(|(&g, &v)| f64::from(g) / (f64::from(v) + eps).sqrt()).collect();
                let shift = (0..a.len()).map(|c| (f64::from(beta[c]) - a[c] * f64::from(mean[c])).abs()).collect();
                layers[l] = Params::Channel { scale: a.iter().map(|x| x.abs()).collect(), shift };
            }
        }
        Ok(Linearised { model, graph, layers })
    }

    /// The all-ones image.
    fn input(&self) -> Vec<f64> {
        vec![1.0; self.model.spec().input.iter().product()]
    }

    /// Every node's output for the all-ones image, in node order.
    fn forward(&self) -> Vec<Vec<f64>> {
        let input = self.input();
        let spec = self.model.spec();
        let mut outputs: Vec<Vec<f64>> = Vec::with_capacity(self.graph.nodes.len());
        for node in &self.graph.nodes {
            let read = |k: usize| -> &[f64] {
                match node.inputs[k] {
                    Source::Network => &input,
                    Source::Node(j) => &outputs[j],
                }
            };
            let params = &self.layers[node.layer];
            let y = match &spec.layers[node.layer] {
                LayerSpec::Conv2d { kernel, stride, padding, .. } => {
                    let (weight, bias) = params.affine();
                    let conv = Conv::new(node.input, node.output, *kernel, *stride, *padding);
                    conv.forward(read(0), weight, bias)
                }
                LayerSpec::Linear { .. } => {
                    let (weight, bias) = params.affine();
                    linear_forward(read(0), weight, bias)
                }
                LayerSpec::BatchNorm2d { .. } => {
                    let ((scale, shift), hw) = (params.channel(), plane(node.input));
                    read(0).iter().enumerate().map(|(i, x)| scale[i / hw] * x + shift[i / hw]).collect()
                }
                LayerSpec::MaxPool { kernel, stride } => {
                    let pool = Pool::new(node.input, node.output, *kernel, stride.unwrap_or(*kernel));
                    pool.max_forward(read(0))
                }
                LayerSpec::AvgPool { kernel, stride } => {
                    let pool = Pool::new(node.input, node.output, *kernel, stride.unwrap_or(*kernel));
                    pool.avg_forward(read(0))
                }
                LayerSpec::GlobalAvgPool => {
                    let hw = plane(node.input);
                    read(0).chunks(hw).map(|c| c.iter().sum::<f64>() / hw as f64).collect()
                }
                LayerSpec::Add => {
                    let mut sum = read(0).to_vec();
                    for k in 1..node.inputs.len() {
                        sum.iter_mut().zip(read(k)).for_each(|(s, x)| *s += x);
                    }
                    sum
                }
                // Flatten, dropout and the activations (linearised) pass the flow on.
                LayerSpec::Flatten
                | LayerSpec::Dropout { .. }
                | LayerSpec::Relu
                | LayerSpec::Tanh
                | LayerSpec::Gelu
                | LayerSpec::Sigmoid => read(0).to_vec(),
            };
            outputs.push(y);
        }
        outputs
    }

    /// `∂R/∂W` of every conv and linear weight (indexed by layer; `None` for the others),
    /// from the node outputs of [`Linearised::forward`].
    fn backward(&self, outputs: &[Vec<f64>]) -> Vec<Option<Vec<f64>>> {
        let input = self.input();
        let spec = self.model.spec();
        let mut grads: Vec<Vec<f64>> = outputs.iter().map(|o| vec![0.0; o.len()]).collect();
        if let Some(logits) = grads.last_mut() {
            logits.fill(1.0); // R sums the logits.
        }
        let mut weight_grads = vec![None; self.layers.len()];
        for node in self.graph.nodes.iter().rev() {
            let gy = std::mem::take(&mut grads[node.layer]);
            let source = node.inputs[0];
            let x: &[f64] = match source {
                Source::Network => &input,
                Source::Node(j) => &outputs[j],
            };
            // The network's input needs no gradient.
            let wants_input = source != Source::Network;
            let params = &self.layers[node.layer];
            let gx: Option<Vec<f64>> = match &spec.layers[node.layer] {
                LayerSpec::Conv2d { kernel, stride, padding, .. } => {
                    let weight = params.affine().0;
                    let conv = Conv::new(node.input, node.output, *kernel, *stride, *padding);
                    let (gw, gx) = conv.backward(x, weight, &gy, wants_input);
                    weight_grads[node.layer] = Some(gw);
                    gx
                }
                LayerSpec::Linear { .. } => {
                    let (gw, gx) = linear_backward(x, params.affine().0, &gy);
                    weight_grads[node.layer] = Some(gw);
                    Some(gx)
                }
                LayerSpec::BatchNorm2d { .. } => {
                    let (scale, hw) = (params.channel().0, plane(node.input));
                    Some(gy.iter().enumerate().map(|(i, g)| scale[i / hw] * g).collect())
                }
                LayerSpec::MaxPool { kernel, stride } => {
                    Some(Pool::new(node.input, node.output, *kernel, stride.unwrap_or(*kernel)).max_backward(x, &gy))
                }
                LayerSpec::AvgPool { kernel, stride } => {
                    Some(Pool::new(node.input, node.output, *kernel, stride.unwrap_or(*kernel)).avg_backward(&gy))
                }
                LayerSpec::GlobalAvgPool => {
                    let hw = plane(node.input);
                    Some(gy.iter().flat_map(|&g| std::iter::repeat_n(g / hw as f64, hw)).collect())
                }
                LayerSpec::Add => {
                    for &other in &node.inputs[1..] {
                        accumulate(&mut grads, other, &gy);
                    }
                    Some(gy)
                }
                LayerSpec::Flatten
                | LayerSpec::Dropout { .. }
                | LayerSpec::Relu
                | LayerSpec::Tanh
                | LayerSpec::Gelu
                | LayerSpec::Sigmoid => Some(gy),
            };
            if let (Some(gx), true) = (gx, wants_input) {
                accumulate(&mut grads, source, &gx);
            }
        }
        weight_grads
    }
}

/// Adds `g` to the gradient of what `source` names (nothing for the network's input).
fn accumulate(grads: &mut [Vec<f64>], source: Source, g: &[f64]) {
    if let Source::Node(j) = source {
        grads[j].iter_mut().zip(g).for_each(|(a, b)| *a += b);
    }
}

/// Positions per channel of a feature map (1 for flat features).
fn plane(shape: FeatureShape) -> usize {
    match shape {
        FeatureShape::Map { h, w, .. } => h * w,
        FeatureShape::Flat(_) => 1,
    }
}

/// `[C, H, W]` of a map (a flat vector as `[n, 1, 1]`).
fn dims(shape: FeatureShape) -> [usize; 3] {
    match shape {
        FeatureShape::Map { c, h, w } => [c, h, w],
        FeatureShape::Flat(n) => [n, 1, 1],
    }
}

/// `y = W x + b`, `W` of shape `[out, in]`.
fn linear_forward(x: &[f64], weight: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
    weight
        .chunks(x.len())
        .enumerate()
        .map(|(o, row)| row.iter().zip(x).map(|(w, v)| w * v).sum::<f64>() + bias.map_or(0.0, |b| b[o]))
        .collect()
}

/// `(∂/∂W, ∂/∂x)` of a linear layer for the output gradient `gy`.
fn linear_backward(x: &[f64], weight: &[f64], gy: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut gw = Vec::with_capacity(weight.len());
    let mut gx = vec![0.0; x.len()];
    for (row, &g) in weight.chunks(x.len()).zip(gy) {
        gw.extend(x.iter().map(|v| g * v));
        gx.iter_mut().zip(row).for_each(|(a, w)| *a += w * g);
    }
    (gw, gx)
}

/// The output positions `o` whose input position `o·stride + offset − padding` lies in
/// `0..input`, for one kernel offset.
fn valid(offset: usize, padding: usize, stride: usize, input: usize, output: usize) -> std::ops::Range<usize> {
    let lo = padding.saturating_sub(offset).div_ceil(stride);
    let hi = match (input + padding).checked_sub(offset + 1) {
        Some(last) => (last / stride + 1).min(output),
        None => 0,
    };
    lo..hi.max(lo)
}

/// The geometry of one convolution.
#[derive(Debug, Clone, Copy)]
struct Conv {
    input: [usize; 3],
    output: [usize; 3],
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Conv {
    fn new(input: FeatureShape, output: FeatureShape, kernel: usize, stride: usize, padding: usize) -> Conv {
        Conv { input: dims(input), output: dims(output), kernel, stride, padding }
    }

    /// Calls `f(o, c, ki, kj, weight index, output position, input position)` for every
    /// weight and every output position it reaches.
    fn each(&self, mut f: impl FnMut(usize, usize, usize)) {
        let ([cin, h, w], [cout, ho, wo], k) = (self.input, self.output, self.kernel);
        for o in 0..cout {
            for c in 0..cin {
                for ki in 0..k {
                    let rows = valid(ki, self.padding, self.stride, h, ho);
                    for kj in 0..k {
                        let index = ((o * cin + c) * k + ki) * k + kj;
                        let cols = valid(kj, self.padding, self.stride, w, wo);
                        for oy in rows.clone() {
                            let iy = oy * self.stride + ki - self.padding;
                            for ox in cols.clone() {
                                let ix = ox * self.stride + kj - self.padding;
                                f(index, (o * ho + oy) * wo + ox, (c * h + iy) * w + ix);
                            }
                        }
                    }
                }
            }
        }
    }

    fn forward(&self, x: &[f64], weight: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
        let [cout, ho, wo] = self.output;
        let mut y: Vec<f64> = match bias {
            Some(b) => (0..cout * ho * wo).map(|i| b[i / (ho * wo)]).collect(),
            None => vec![0.0; cout * ho * wo],
        };
        self.each(|wi, yi, xi| y[yi] += weight[wi] * x[xi]);
        y
    }

    /// `(∂/∂W, ∂/∂x)` for the output gradient `gy`; `∂/∂x` only when asked for.
    fn backward(&self, x: &[f64], weight: &[f64], gy: &[f64], wants_input: bool) -> (Vec<f64>, Option<Vec<f64>>) {
        let mut gw = vec![0.0; weight.len()];
        let mut gx = vec![0.0; if wants_input { x.len() } else { 0 }];
        self.each(|wi, yi, xi| {
            gw[wi] += gy[yi] * x[xi];
            if wants_input {
                gx[xi] += weight[wi] * gy[yi];
            }
        });
        (gw, wants_input.then_some(gx))
    }
}

/// The geometry of one pooling layer (square windows, no padding).
#[derive(Debug, Clone, Copy)]
struct Pool {
    input: [usize; 3],
    output: [usize; 3],
    kernel: usize,
    stride: usize,
}

impl Pool {
    fn new(input: FeatureShape, output: FeatureShape, kernel: usize, stride: usize) -> Pool {
        Pool { input: dims(input), output: dims(output), kernel, stride }
    }

    /// The input positions of output position `i`'s window, row by row.
    fn window(&self, i: usize) -> impl Iterator<Item = usize> + use<> {
        let ([_, h, w], [_, ho, wo], k, s) = (self.input, self.output, self.kernel, self.stride);
        let (c, oy, ox) = (i / (ho * wo), i / wo % ho, i % wo);
        (0..k * k).map(move |t| (c * h + oy * s + t / k) * w + ox * s + t % k)
    }

    fn outputs(&self) -> usize {
        self.output.iter().product()
    }

    /// The first maximal position of output `i`'s window (PyTorch's choice on ties).
    fn argmax(&self, x: &[f64], i: usize) -> usize {
        self.window(i).reduce(|best, p| if x[p] > x[best] { p } else { best }).expect("a window is not empty")
    }

    fn max_forward(&self, x: &[f64]) -> Vec<f64> {
        (0..self.outputs()).map(|i| x[self.argmax(x, i)]).collect()
    }

    fn max_backward(&self, x: &[f64], gy: &[f64]) -> Vec<f64> {
        let mut gx = vec![0.0; x.len()];
        for (i, g) in gy.iter().enumerate() {
            gx[self.argmax(x, i)] += g;
        }
        gx
    }

    fn avg_forward(&self, x: &[f64]) -> Vec<f64> {
        let area = (self.kernel * self.kernel) as f64;
        (0..self.outputs()).map(|i| self.window(i).map(|p| x[p]).sum::<f64>() / area).collect()
    }

    fn avg_backward(&self, gy: &[f64]) -> Vec<f64> {
        let area = (self.kernel * self.kernel) as f64;
        let mut gx = vec![0.0; self.input.iter().product()];
        for (i, g) in gy.iter().enumerate() {
            self.window(i).for_each(|p| gx[p] += g / area);
        }
        gx
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::ArchSpec;
    use crate::engine::{Init, init_model};

    /// A model of `json` (the spec's layers) with its tensors set to `values`, in
    /// [`ArchSpec::params`] order.
    fn model(input: [usize; 3], layers: &str, values: Vec<Vec<f32>>) -> Model {
        let json = format!(r#"{{"name": "t", "input": {input:?}, "classes": 2, "layers": [{layers}]}}"#);
        Model::new(ArchSpec::from_json(&json).unwrap(), values).unwrap()
    }

    fn all(model: &Model) -> Vec<bool> {
        vec![true; model.prunable_count()]
    }

    /// Equal up to f64 rounding: every value here is a short sum of products of small
    /// numbers, exact or within a few ulps.
    fn assert_close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-12 * w.abs().max(1.0), "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn a_two_layer_linear_net_scores_each_weight_by_the_paths_through_it() {
        // W1 = [[1, -2, 3], [-1, 0, 2]], W2 = [[2, -1], [-3, 1]]; R = 1ᵀ|W2||W1|1.
        let layers = r#"{"type": "flatten"}, {"type": "linear", "out_features": 2, "bias": false},
            {"type": "relu"}, {"type": "linear", "out_features": 2, "bias": false}"#;
        let w1 = vec![1.0, -2.0, 3.0, -1.0, 0.0, 2.0];
        let w2 = vec![2.0, -1.0, -3.0, 1.0];
        let net = model([1, 1, 3], layers, vec![w1.clone(), w2.clone()]);
        // Unit j's flow in: row sums of |W1| = (6, 3); flow out: column sums of |W2| = (5, 2).
        // S(W1[j, k]) = out_j · |W1[j, k]|; S(W2[i, j]) = |W2[i, j]| · in_j.
        let want = [5.0, 10.0, 15.0, 2.0, 0.0, 4.0, 12.0, 3.0, 18.0, 3.0];
        assert_close(&synaptic_flow(&net, &all(&net)).unwrap(), &want);
        // Conservation: each layer's scores sum to R = 5·6 + 2·3 = 36.
        assert_eq!(want[..6].iter().sum::<f64>(), 36.0);
        assert_eq!(want[6..].iter().sum::<f64>(), 36.0);
        // A tanh network is scored as its linearised (identity-activation) network.
        let tanh = model([1, 1, 3], &layers.replace("relu", "tanh"), vec![w1.clone(), w2.clone()]);
        assert_close(&synaptic_flow(&tanh, &all(&tanh)).unwrap(), &want);
        // Pruning W1[0, 2] (|3|) lowers unit 0's flow in to 3: W2's column 0 scores halve,
        // and the pruned weight scores 0.
        let mut keep = all(&net);
        keep[2] = false;
        let want = [5.0, 10.0, 0.0, 2.0, 0.0, 4.0, 6.0, 3.0, 9.0, 3.0];
        assert_close(&synaptic_flow(&net, &keep).unwrap(), &want);
    }

    #[test]
    fn a_padded_conv_with_a_bias_counts_the_positions_each_kernel_weight_reaches() {
        // A 3×3 kernel over a 3×3 image of ones with padding 1: the centre weight reaches
        // all 9 outputs, an edge weight 6, a corner weight 4. The head sums every output
        // into both logits (weights ±1), so each output's gradient is 2.
        let layers = r#"{"type": "conv2d", "out_channels": 1, "kernel": 3, "padding": 1},
            {"type": "flatten"}, {"type": "linear", "out_features": 2, "bias": false}"#;
        let kernel: Vec<f32> = vec![1.0, -2.0, 3.0, -4.0, 5.0, -6.0, 7.0, -8.0, 9.0];
        let head: Vec<f32> = (0..18).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
        let net = model([1, 3, 3], layers, vec![kernel.clone(), vec![-0.5], head]);
        let scores = synaptic_flow(&net, &all(&net)).unwrap();
        let reach = [4.0, 6.0, 4.0, 6.0, 9.0, 6.0, 4.0, 6.0, 4.0];
        let want: Vec<f64> = kernel.iter().zip(reach).map(|(w, n)| 2.0 * n * f64::from(w.abs())).collect();
        assert_close(&scores[..9], &want);
        // Each output is the sum of the |w| it reads plus |b|; the head scores |±1| · output.
        let out = |y: usize, x: usize| -> f64 {
            let mut sum = 0.5;
            for ki in 0..3 {
                for kj in 0..3 {
                    let (iy, ix) = (y as isize + ki as isize - 1, x as isize + kj as isize - 1);
                    if (0..3).contains(&iy) && (0..3).contains(&ix) {
                        sum += f64::from(kernel[ki * 3 + kj].abs());
                    }
                }
            }
            sum
        };
        // Head weight `o·9 + p` links output `p` (row-major) to logit `o`.
        let head_want: Vec<f64> = (0..18).map(|i| out(i % 9 / 3, i % 3)).collect();
        assert_close(&scores[9..], &head_want);
    }

    #[test]
    fn a_residual_add_sums_the_flow_of_both_branches() {
        // a = |A|1, b = |B|a, s = a + b, R = 1ᵀ|F|s.
        let layers = r#"{"type": "flatten", "name": "flat"},
            {"type": "linear", "name": "a", "out_features": 2, "bias": false},
            {"type": "linear", "name": "b", "out_features": 2, "bias": false},
            {"type": "add", "name": "sum", "inputs": ["b", "a"]},
            {"type": "linear", "name": "f", "out_features": 2, "bias": false}"#;
        let (a, b, f) = (vec![1.0, 2.0, -1.0, 1.0], vec![1.0, -1.0, 2.0, 0.0], vec![1.0, 1.0, -2.0, 1.0]);
        let net = model([1, 1, 2], layers, vec![a, b, f]);
        // a = (3, 2); b = (5, 6); s = (8, 8); 1ᵀ|F| = (3, 2).
        // S(F[i, j]) = |F[i, j]| s_j; S(B[j, k]) = (1ᵀ|F|)_j |B[j, k]| a_k;
        // S(A[k, l]) = ((1ᵀ|F|)(I + |B|))_k |A[k, l]| = (3 + 3 + 4, 2 + 3)_k |A[k, l]| = (10, 5)_k.
        let want = [10.0, 20.0, 5.0, 5.0, 9.0, 6.0, 12.0, 0.0, 8.0, 8.0, 16.0, 8.0];
        assert_close(&synaptic_flow(&net, &all(&net)).unwrap(), &want);
    }

    #[test]
    fn batch_norm_is_folded_to_its_affine_map_and_then_linearised() {
        // A 1×1 conv to two channels over a 2×2 image, batch norm with ε = 1, global average
        // pooling and a linear head.
        let layers = r#"{"type": "conv2d", "out_channels": 2, "kernel": 1, "bias": false},
            {"type": "batchnorm2d", "eps": 1.0}, {"type": "global_avgpool"}, {"type": "flatten"},
            {"type": "linear", "out_features": 2, "bias": false}"#;
        // Channel 0: γ = −2, var = 3: a = −1; μ = 2, β = 0.5: c = 0.5 + 2 = 2.5.
        // Channel 1: γ = 1, var = 0: a = 1; μ = 3, β = 1: c = 1 − 3 = −2 (the authors' form,
        // |γ|(x − |μ|)/√(var + ε) + |β|, would go negative here for x < 2).
        let values = vec![
            vec![-3.0, 0.5],
            vec![-2.0, 1.0],
            vec![0.5, 1.0],
            vec![2.0, 3.0],
            vec![3.0, 0.0],
            vec![1.0, -2.0, 3.0, 4.0],
        ];
        let net = model([1, 2, 2], layers, values);
        // Channel flows: |a|·|w| + |c| = 1·3 + 2.5 = 5.5 and 1·0.5 + 2 = 2.5.
        // S(w_o) = (Σ_i |F[i, o]|)·|a_o|·|w_o| = 4·3 and 6·0.5; S(F[i, o]) = |F[i, o]|·flow_o.
        let want = [12.0, 3.0, 5.5, 5.0, 16.5, 10.0];
        assert_close(&synaptic_flow(&net, &all(&net)).unwrap(), &want);
    }

    #[test]
    fn max_pooling_passes_the_flow_of_its_largest_position() {
        // A 2×2 kernel with padding 1 over a 2×2 image: a 3×3 map whose centre reads all
        // four weights and is the largest; a 3×3 max pool keeps it.
        let layers = r#"{"type": "conv2d", "out_channels": 1, "kernel": 2, "padding": 1, "bias": false},
            {"type": "maxpool", "kernel": 3}, {"type": "flatten"},
            {"type": "linear", "out_features": 2, "bias": false}"#;
        let net = model([1, 2, 2], layers, vec![vec![1.0, -2.0, 3.0, 0.5], vec![2.0, -1.0]]);
        // R = 3 · 6.5: each weight scores 3|w|; the head |F_i| · 6.5.
        let want = [3.0, 6.0, 9.0, 1.5, 13.0, 6.5];
        assert_close(&synaptic_flow(&net, &all(&net)).unwrap(), &want);
    }

    #[test]
    fn a_mask_of_the_wrong_length_is_refused_naming_both_counts() {
        let net = model(
            [1, 1, 2],
            r#"{"type": "flatten"}, {"type": "linear", "out_features": 2}"#,
            vec![vec![1.0; 4], vec![0.0; 2]],
        );
        let e = synaptic_flow(&net, &[true; 3]).unwrap_err().to_string();
        assert!(e.contains("3 entries") && e.contains("4 prunable weights"), "{e}");
    }

    /// The gradient against central differences of R on a random ResNet with random batch
    /// norm statistics and a random mask. R is affine in any one weight (no weight is on a
    /// path twice, and the ResNet has no max pooling), so a central difference has no
    /// truncation error at any step: only rounding, about 1e-16 · R / h. A step of 0.5 keeps
    /// that far below the 1e-9 relative tolerance.
    #[test]
    fn the_gradient_matches_finite_differences_on_a_random_resnet() {
        let spec = crate::preset("resnet:depth=8,width=8,input=1x8x8").unwrap();
        let mut net = init_model(&spec, Init::KaimingNormal, 7).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let roles: Vec<ParamRole> = net.params().iter().map(|p| p.role).collect();
        for (role, values) in roles.iter().zip(net.values_mut()) {
            for v in values.iter_mut() {
                *v = match role {
                    ParamRole::Scale | ParamRole::Shift | ParamRole::RunningMean => rng.random_range(-1.5..1.5),
                    ParamRole::RunningVar => rng.random_range(0.1..2.0),
                    _ => *v,
                };
            }
        }
        let keep: Vec<bool> = (0..net.prunable_count()).map(|_| rng.random_bool(0.7)).collect();
        let scores = synaptic_flow(&net, &keep).unwrap();
        let linear = Linearised::new(&net, &keep).unwrap();
        let flow = |l: &Linearised<'_>| -> f64 { l.forward().last().unwrap().iter().sum() };
        let grads = linear.backward(&linear.forward());
        let prunable: Vec<usize> = (0..linear.layers.len()).filter(|&l| grads[l].is_some()).collect();
        let mut offsets = vec![0];
        let mut checked = 0;
        for &l in &prunable {
            let Params::Affine { weight, .. } = &linear.layers[l] else { unreachable!("a prunable layer") };
            let start = *offsets.last().unwrap();
            offsets.push(start + weight.len());
            for _ in 0..12 {
                let i = rng.random_range(0..weight.len());
                let h = 0.5;
                let shifted = |delta: f64| {
                    let mut moved =
                        Linearised { model: &net, graph: linear.graph.clone(), layers: linear.layers.clone() };
                    if let Params::Affine { weight, .. } = &mut moved.layers[l] {
                        weight[i] += delta;
                    }
                    flow(&moved)
                };
                let numeric = (shifted(h) - shifted(-h)) / (2.0 * h);
                let analytic = grads[l].as_ref().unwrap()[i];
                assert!(
                    (numeric - analytic).abs() <= 1e-9 * analytic.abs().max(1.0),
                    "layer {l} weight {i}: {numeric} vs {analytic}"
                );
                assert_eq!(scores[start + i], analytic * weight[i]);
                checked += 1;
            }
        }
        assert_eq!(checked, 12 * prunable.len());
        assert_eq!(*offsets.last().unwrap(), scores.len());
        // Pruned weights score zero, kept ones are positive (every path of a ResNet reaches
        // the logits through positive maps).
        assert!(scores.iter().zip(&keep).all(|(s, &k)| if k { *s > 0.0 } else { *s == 0.0 }));
    }
}

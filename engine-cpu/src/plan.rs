//! The compiled form of an [`ArchSpec`]: every layer with its geometry and the offsets of
//! its parameters in one flat vector, so that the kernels never look at the JSON-level types.
//!
//! Activations between layers are stored "channel-major, samples inside": a map of `c`
//! channels and `s = h·w` positions for `n` images is `[c, n, s]`, a flat vector is
//! `[f, n]` (the same with `s = 1`). With that layout a convolution over a whole chunk of
//! images is one matrix product `W[cout, cin·k·k] × unfold(x)[cin·k·k, n·s]`, whose result
//! is again `[cout, n, s]`, and a linear layer is the `1×1` convolution on a `1×1` map: the
//! two share every kernel.
//!
//! A network is a graph of layers in topological order (a chain being the common case).
//! Every layer's output has its own buffer, and a layer names the buffers it reads
//! ([`Layer::inputs`]): a residual fan-out is several readers of one buffer, never a copy,
//! and a chain reads exactly what it read before graphs existed. In the backward pass a
//! layer's output gradient is handed down in a pair of swapped buffers when its one reader
//! is the next layer (every layer of a chain), and summed in a buffer of its own otherwise
//! ([`Plan::accumulates`]).

use std::ops::Range;

use hyperprune_core::arch::{Activation, ArchSpec, FeatureShape, LayerSpec, ParamRole, Source};
use hyperprune_core::engine::EngineError;

/// Geometry of a convolution; a linear layer is the `1×1` case on a `1×1` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    /// Input channels (input features for a linear layer).
    pub cin: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels (output features).
    pub cout: usize,
    /// Square kernel size.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl ConvGeom {
    /// Length of one weight row, `cin·k·k`: the rows of the unfolded input.
    pub fn unfolded(&self) -> usize {
        self.cin * self.k * self.k
    }

    /// Input positions per channel, `h·w`.
    pub fn in_plane(&self) -> usize {
        self.h * self.w
    }

    /// Output positions per channel, `oh·ow`.
    pub fn out_plane(&self) -> usize {
        self.oh * self.ow
    }

    /// Whether unfolding is the identity (`1×1` kernel, stride 1, no padding), so that the
    /// input itself is the right operand of the product and no copy is made.
    pub fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }
}

/// Geometry of a pooling layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolGeom {
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window size.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

/// A batch normalisation layer's tensors (offsets into the flat parameters, `c` values
/// each) and settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BatchNormGeom {
    /// Channels.
    pub c: usize,
    /// Offset of the scale `γ`.
    pub scale: usize,
    /// Offset of the shift `β`.
    pub shift: usize,
    /// Offset of the running mean.
    pub mean: usize,
    /// Offset of the running (unbiased) variance.
    pub var: usize,
    /// Added to the variance.
    pub eps: f64,
    /// Weight of the batch in the running statistics.
    pub momentum: f64,
}

/// What one layer computes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// Convolution or linear layer: `y = W × unfold(x) + b`.
    Dense {
        /// Geometry.
        geom: ConvGeom,
        /// Offset of the weight `[cout, cin, k, k]` in the flat parameters.
        weight: usize,
        /// Offset of the bias `[cout]`, when the layer has one.
        bias: Option<usize>,
        /// Index among prunable layers.
        prunable: usize,
    },
    /// Max pooling; the input position of every maximum is kept for the backward pass.
    MaxPool(PoolGeom),
    /// Average pooling.
    AvgPool(PoolGeom),
    /// Elementwise activation.
    Act(Activation),
    /// Inverted dropout (training only).
    Dropout {
        /// Drop probability.
        p: f32,
    },
    /// `[c, n, s]` to `[c·s, n]`, features in C, H, W order.
    Flatten,
    /// Batch normalisation over the channels of `[c, n, s]`: batch statistics in train mode,
    /// running statistics otherwise (see `batch_norm.rs`).
    BatchNorm(BatchNormGeom),
    /// The elementwise sum of every input.
    Add,
    /// `[c, n, s]` to `[c, n, 1]`, the mean of each plane.
    GlobalAvgPool,
}

/// A layer and the shapes around it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layer {
    /// What it computes.
    pub op: Op,
    /// The activation buffers it reads, in order: `0` is the network's input, `j + 1` the
    /// output of layer `j` (so layer `l` of a chain reads buffer `l`).
    pub inputs: Vec<usize>,
    /// Input `(channels, positions per channel)` (of every input, for an add).
    pub input: (usize, usize),
    /// Output `(channels, positions per channel)`.
    pub output: (usize, usize),
}

impl Layer {
    /// Scalars per image at the input.
    pub fn in_len(&self) -> usize {
        self.input.0 * self.input.1
    }

    /// Scalars per image at the output.
    pub fn out_len(&self) -> usize {
        self.output.0 * self.output.1
    }
}

/// A prunable layer's place in the flat parameters and in the prunable-only vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PrunableLayer {
    /// Index in [`Plan::layers`].
    pub layer: usize,
    /// Offset of the weight in the flat parameters.
    pub offset: usize,
    /// Offset of the weight among all prunable weights (layer order).
    pub prunable_offset: usize,
    /// Number of weights.
    pub len: usize,
}

/// A spec compiled for the CPU kernels.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// The spec it was built from.
    pub spec: ArchSpec,
    /// The layers, in order.
    pub layers: Vec<Layer>,
    /// Offset of every parameter tensor ([`ArchSpec::params`] order) in the flat vector.
    pub offsets: Vec<usize>,
    /// Length of the flat parameter vector.
    pub param_len: usize,
    /// The prunable layers, in order.
    pub prunable: Vec<PrunableLayer>,
    /// Number of prunable weights.
    pub prunable_len: usize,
    /// Index of the first layer with parameters: no gradient flows below it, and the layers
    /// before it depend on the images alone.
    pub first_dense: usize,
    /// Per layer: whether its output depends on parameters, i.e. needs a gradient.
    pub needs_grad: Vec<bool>,
    /// Per layer: whether its output gradient is summed in a buffer of its own (it has
    /// several readers, or its reader is not the next layer, or is an add) rather than
    /// handed down by the next layer in the swapped pair.
    pub accumulates: Vec<bool>,
    /// Per layer: whether it is a batch norm or an add whose one reader is the next layer, a
    /// ReLU. The forward pass then writes the ReLU's output in the same pass and skips the
    /// ReLU, leaving this layer's own output buffer unwritten: nothing else reads it, and
    /// the ReLU's backward pass needs only its output.
    pub relu_after: Vec<bool>,
    /// The batch normalisation layers, in order.
    pub batch_norms: Vec<usize>,
    /// The ranges of the flat parameters the optimiser trains: all but the batch norm
    /// buffers (running statistics).
    pub trained: Vec<Range<usize>>,
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
        let mut offsets = Vec::with_capacity(params.len());
        let mut param_len = 0;
        for p in &params {
            offsets.push(param_len);
            param_len += p.numel();
        }
        let dims = |s: FeatureShape| match s {
            FeatureShape::Map { c, h, w } => (c, h, w),
            FeatureShape::Flat(f) => (f, 1, 1),
        };
        let mut layers = Vec::with_capacity(spec.layers.len());
        let mut prunable = Vec::new();
        let mut prunable_len = 0;
        for (i, (layer, node)) in spec.layers.iter().zip(&graph.nodes).enumerate() {
            let (c, h, w) = dims(node.input);
            let (oc, oh, ow) = dims(node.output);
            let op = match layer {
                LayerSpec::Conv2d { kernel, stride, padding, .. } => dense(
                    i,
                    &params,
                    &offsets,
                    ConvGeom { cin: c, h, w, cout: oc, k: *kernel, stride: *stride, pad: *padding, oh, ow },
                    &mut prunable,
                    &mut prunable_len,
                ),
                LayerSpec::Linear { .. } => dense(
                    i,
                    &params,
                    &offsets,
                    ConvGeom { cin: c * h * w, h: 1, w: 1, cout: oc, k: 1, stride: 1, pad: 0, oh: 1, ow: 1 },
                    &mut prunable,
                    &mut prunable_len,
                ),
                LayerSpec::BatchNorm2d { eps, momentum, .. } => {
                    let find = |role: ParamRole| {
                        let at = params.iter().position(|p| p.layer == i && p.role == role);
                        at.map(|t| offsets[t]).expect("a batch norm layer owns its four tensors")
                    };
                    Op::BatchNorm(BatchNormGeom {
                        c,
                        scale: find(ParamRole::Scale),
                        shift: find(ParamRole::Shift),
                        mean: find(ParamRole::RunningMean),
                        var: find(ParamRole::RunningVar),
                        eps: *eps,
                        momentum: *momentum,
                    })
                }
                LayerSpec::Add => Op::Add,
                LayerSpec::GlobalAvgPool => Op::GlobalAvgPool,
                LayerSpec::MaxPool { kernel, stride } => {
                    Op::MaxPool(PoolGeom { h, w, k: *kernel, stride: stride.unwrap_or(*kernel), oh, ow })
                }
                LayerSpec::AvgPool { kernel, stride } => {
                    Op::AvgPool(PoolGeom { h, w, k: *kernel, stride: stride.unwrap_or(*kernel), oh, ow })
                }
                LayerSpec::Flatten => Op::Flatten,
                LayerSpec::Dropout { p } => Op::Dropout { p: *p },
                LayerSpec::Relu | LayerSpec::Tanh | LayerSpec::Gelu | LayerSpec::Sigmoid => {
                    Op::Act(layer.activation().expect("an activation layer"))
                }
                other => return Err(EngineError::unsupported_layer("cpu", &node.name, other)),
            };
            let inputs = node
                .inputs
                .iter()
                .map(|s| match s {
                    Source::Network => 0,
                    Source::Node(j) => j + 1,
                })
                .collect();
            layers.push(Layer { op, inputs, input: (c, h * w), output: (oc, oh * ow) });
        }
        let owns_params: Vec<bool> = (0..layers.len()).map(|i| params.iter().any(|p| p.layer == i)).collect();
        let first_dense = owns_params.iter().position(|&o| o).unwrap_or(layers.len());
        let mut needs_grad = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            let reads_gradient = layer.inputs.iter().any(|&b| b > 0 && needs_grad[b - 1]);
            needs_grad.push(owns_params[i] || reads_gradient);
        }
        let accumulates = (0..layers.len())
            .map(|j| {
                let mut readers = layers.iter().enumerate().filter(|(_, l)| l.inputs.contains(&(j + 1)));
                let handed_down = match (readers.next(), readers.next()) {
                    (Some((r, reader)), None) => r == j + 1 && reader.inputs.len() == 1,
                    (None, _) => true, // the output layer: the loss seeds the pair
                    _ => false,
                };
                !handed_down
            })
            .collect::<Vec<bool>>();
        let relu_after = (0..layers.len())
            .map(|j| {
                matches!(layers[j].op, Op::BatchNorm(_) | Op::Add)
                    && layers.get(j + 1).is_some_and(|next| matches!(next.op, Op::Act(Activation::Relu)))
                    && !accumulates[j]
            })
            .collect();
        let batch_norms = (0..layers.len()).filter(|&i| matches!(layers[i].op, Op::BatchNorm(_))).collect();
        let mut trained: Vec<Range<usize>> = Vec::new();
        for (p, &offset) in params.iter().zip(&offsets) {
            let range = offset..offset + p.numel();
            match trained.last_mut() {
                _ if p.role.is_buffer() => {}
                Some(last) if last.end == range.start => last.end = range.end,
                _ => trained.push(range),
            }
        }
        Ok(Plan {
            spec: spec.clone(),
            layers,
            offsets,
            param_len,
            prunable,
            prunable_len,
            first_dense,
            needs_grad,
            accumulates,
            relu_after,
            batch_norms,
            trained,
        })
    }

    /// Number of classes (rows of the logits).
    pub fn classes(&self) -> usize {
        self.spec.classes
    }

    /// Scalars per input image.
    pub fn image_len(&self) -> usize {
        self.spec.input.iter().product()
    }

    /// The largest activation (input, output of any layer, unfolded input of any convolution)
    /// of one image, in scalars: sizes the scratch buffers.
    pub fn max_act_len(&self) -> usize {
        self.layers
            .iter()
            .map(|l| match &l.op {
                Op::Dense { geom, .. } => l.in_len().max(l.out_len()).max(geom.unfolded() * geom.out_plane()),
                _ => l.in_len().max(l.out_len()),
            })
            .max()
            .unwrap_or(0)
            .max(self.image_len())
    }

    /// The model's parameters as one flat vector, in [`ArchSpec::params`] order.
    pub fn flatten(&self, values: &[Vec<f32>]) -> Vec<f32> {
        let mut flat = Vec::with_capacity(self.param_len);
        for v in values {
            flat.extend_from_slice(v);
        }
        flat
    }

    /// The flat vector split back into tensors.
    pub fn unflatten(&self, flat: &[f32]) -> Vec<Vec<f32>> {
        let ends = self.offsets.iter().skip(1).copied().chain(std::iter::once(self.param_len));
        self.offsets.iter().zip(ends).map(|(&a, b)| flat[a..b].to_vec()).collect()
    }

    /// Checks that `samples` can be fed to the network.
    ///
    /// # Errors
    /// [`EngineError::Mismatch`] naming the network, when the image shape, the number of
    /// pixels or a label does not fit.
    pub fn check_samples(&self, samples: &hyperprune_core::dataset::Samples) -> Result<(), EngineError> {
        hyperprune_core::engine::check_samples(&self.spec, samples)
    }
}

/// The [`Op::Dense`] of layer `i`, registering it as the next prunable layer.
fn dense(
    i: usize,
    params: &[hyperprune_core::arch::ParamSpec],
    offsets: &[usize],
    geom: ConvGeom,
    prunable: &mut Vec<PrunableLayer>,
    prunable_len: &mut usize,
) -> Op {
    let weight = params.iter().position(|p| p.layer == i && p.prunable).expect("a dense layer owns a weight");
    let bias = params.iter().position(|p| p.layer == i && !p.prunable).map(|b| offsets[b]);
    let len = params[weight].numel();
    prunable.push(PrunableLayer { layer: i, offset: offsets[weight], prunable_offset: *prunable_len, len });
    *prunable_len += len;
    Op::Dense { geom, weight: offsets[weight], bias, prunable: prunable.len() - 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cnn_s_plan_has_three_convs_two_linears_and_flat_offsets() {
        let spec = hyperprune_core::preset("cnn-s").unwrap();
        let plan = Plan::new(&spec).unwrap();
        assert_eq!(plan.param_len, 2464);
        assert_eq!(plan.prunable.len(), 5);
        assert_eq!(plan.prunable_len, spec.prunable_count().unwrap());
        let Op::Dense { geom, weight, bias, .. } = &plan.layers[0].op else { panic!("conv first") };
        assert_eq!((geom.cin, geom.cout, geom.k, geom.oh, geom.ow), (1, 8, 5, 24, 24));
        assert_eq!((*weight, *bias), (0, Some(200)));
        let Op::Dense { geom, .. } = &plan.layers[9].op else { panic!("linear") };
        assert_eq!((geom.cin, geom.cout, geom.is_pointwise()), (36, 20, true));
        assert_eq!(plan.first_dense, 0);
        let values: Vec<Vec<f32>> = spec.params().unwrap().iter().map(|p| vec![p.layer as f32; p.numel()]).collect();
        assert_eq!(plan.unflatten(&plan.flatten(&values)), values);
    }

    #[test]
    fn a_residual_block_reads_by_buffer_and_sums_the_gradient_of_its_fan_out() {
        // conv1 → bn1 → relu (read by conv2 and the add) → conv2 → bn2 → add → relu → pool
        // → flatten → linear.
        let spec = hyperprune_core::ArchSpec::from_json(
            r#"{"name": "block", "input": [1, 4, 4], "classes": 2, "layers": [
                {"type": "conv2d", "name": "conv1", "out_channels": 2, "kernel": 3, "padding": 1, "bias": false},
                {"type": "batchnorm2d", "name": "bn1"}, {"type": "relu", "name": "relu"},
                {"type": "conv2d", "name": "conv2", "out_channels": 2, "kernel": 3, "padding": 1, "bias": false},
                {"type": "batchnorm2d", "name": "bn2"},
                {"type": "add", "name": "sum", "inputs": ["bn2", "relu"]},
                {"type": "relu"}, {"type": "global_avgpool"}, {"type": "flatten"},
                {"type": "linear", "out_features": 2}]}"#,
        )
        .unwrap();
        let plan = Plan::new(&spec).unwrap();
        let inputs: Vec<&[usize]> = plan.layers.iter().map(|l| l.inputs.as_slice()).collect();
        assert_eq!(inputs, [&[0][..], &[1], &[2], &[3], &[4], &[5, 3], &[6], &[7], &[8], &[9]]);
        // relu (read twice) and bn2 (read by the add) sum their gradients; the rest hand
        // theirs down.
        let summed: Vec<usize> = (0..10).filter(|&l| plan.accumulates[l]).collect();
        assert_eq!(summed, [2, 4]);
        // bn1 and the add write the following ReLU's output themselves; bn2 feeds the add.
        let fused: Vec<usize> = (0..10).filter(|&l| plan.relu_after[l]).collect();
        assert_eq!(fused, [1, 5]);
        assert!(plan.needs_grad.iter().all(|&g| g) && plan.first_dense == 0);
        assert_eq!(plan.batch_norms, [1, 4]);
        let Op::BatchNorm(bn) = plan.layers[1].op else { panic!("bn1") };
        assert_eq!((bn.c, bn.scale, bn.shift, bn.mean, bn.var), (2, 18, 20, 22, 24));
        assert_eq!(plan.layers[7].output, (2, 1));
        // Everything but the running statistics of both batch norms is trained.
        assert_eq!(plan.trained, [0..22, 26..66, 70..plan.param_len]);
    }

    #[test]
    fn mlpnet_starts_with_a_gradient_free_flatten() {
        let plan = Plan::new(&hyperprune_core::preset("mlpnet").unwrap()).unwrap();
        assert_eq!(plan.first_dense, 1);
        assert_eq!(plan.layers[0].output, (784, 1));
        assert!(matches!(plan.layers[1].op, Op::Dense { bias: None, .. }));
    }
}

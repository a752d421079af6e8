//! The compiled form of an [`ArchSpec`]: every layer with its geometry and the offsets of
//! its parameters in one flat vector, so that the kernels never look at the JSON-level types.
//!
//! Activations between layers are stored "channel-major, samples inside": a map of `c`
//! channels and `s = h·w` positions for `n` images is `[c, n, s]`, a flat vector is
//! `[f, n]` (the same with `s = 1`). With that layout a convolution over a whole chunk of
//! images is one matrix product `W[cout, cin·k·k] × unfold(x)[cin·k·k, n·s]`, whose result
//! is again `[cout, n, s]`, and a linear layer is the `1×1` convolution on a `1×1` map: the
//! two share every kernel.

use crate::arch::{Activation, ArchSpec, FeatureShape, LayerSpec};
use crate::engine::EngineError;

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
}

/// A layer and the shapes around it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layer {
    /// What it computes.
    pub op: Op,
    /// Input `(channels, positions per channel)`.
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
    /// Index of the first layer with parameters: no gradient flows below it.
    pub first_dense: usize,
}

impl Plan {
    /// Compiles `spec`.
    ///
    /// # Errors
    /// [`EngineError::Mismatch`] when the spec is invalid.
    pub fn new(spec: &ArchSpec) -> Result<Plan, EngineError> {
        spec.check_sequential("cpu").map_err(EngineError::Mismatch)?;
        let invalid = |e: crate::arch::ArchError| EngineError::Mismatch(e.to_string());
        let inputs = spec.input_shapes().map_err(invalid)?;
        let outputs = spec.shapes().map_err(invalid)?;
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
        for (i, layer) in spec.layers.iter().enumerate() {
            let (c, h, w) = dims(inputs[i]);
            let (oc, oh, ow) = dims(outputs[i]);
            let op = match layer {
                LayerSpec::BatchNorm2d { .. } | LayerSpec::Add | LayerSpec::GlobalAvgPool => {
                    return Err(EngineError::Mismatch(format!("engine 'cpu' cannot run layer {i} of '{}'", spec.name)));
                }
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
            };
            layers.push(Layer { op, input: (c, h * w), output: (oc, oh * ow) });
        }
        let first_dense = prunable.first().map_or(layers.len(), |p| p.layer);
        Ok(Plan { spec: spec.clone(), layers, offsets, param_len, prunable, prunable_len, first_dense })
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
    pub fn check_samples(&self, samples: &crate::dataset::Samples) -> Result<(), EngineError> {
        crate::engine::base::check_samples(&self.spec, samples)
    }
}

/// The [`Op::Dense`] of layer `i`, registering it as the next prunable layer.
fn dense(
    i: usize,
    params: &[crate::arch::ParamSpec],
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
        let spec = crate::preset("cnn-s").unwrap();
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
    fn mlpnet_starts_with_a_gradient_free_flatten() {
        let plan = Plan::new(&crate::preset("mlpnet").unwrap()).unwrap();
        assert_eq!(plan.first_dense, 1);
        assert_eq!(plan.layers[0].output, (784, 1));
        assert!(matches!(plan.layers[1].op, Op::Dense { bias: None, .. }));
    }
}

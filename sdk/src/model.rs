//! Borrowed, zero-copy views of a model as the host hands it to a plugin.

use abi_stable::StableAbi;
use abi_stable::std_types::{RSlice, RStr};

/// Which kind of layer a prunable weight belongs to.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// Convolution weight, shape `[out, in, kh, kw]`.
    Conv2d,
    /// Fully connected weight, shape `[out, in]`.
    Linear,
}

/// One prunable weight tensor, borrowed from the host (no copy is made).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct LayerRef<'a> {
    /// Tensor name, e.g. `"0.weight"` (PyTorch `nn.Sequential` naming).
    pub name: RStr<'a>,
    /// Layer kind.
    pub kind: LayerKind,
    /// Shape in PyTorch layout; its product is `weights.len()`.
    pub shape: RSlice<'a, u64>,
    /// The weights, row-major in `shape`.
    pub weights: RSlice<'a, f32>,
}

impl<'a> LayerRef<'a> {
    /// The tensor name.
    pub fn name(&self) -> &'a str {
        self.name.as_str()
    }

    /// The weights.
    pub fn weights(&self) -> &'a [f32] {
        self.weights.as_slice()
    }

    /// The shape.
    pub fn shape(&self) -> Vec<usize> {
        self.shape.iter().map(|&d| d as usize).collect()
    }

    /// Number of output units (rows): the first dimension.
    pub fn rows(&self) -> usize {
        self.shape.first().map_or(0, |&d| d as usize)
    }

    /// Length of one row: `in` for linear, `in·kh·kw` for conv (the im2col order of a row).
    pub fn row_len(&self) -> usize {
        self.weights.len().checked_div(self.rows()).unwrap_or(0)
    }
}

/// An unprunable parameter tensor (a bias), borrowed from the host.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    /// Tensor name, e.g. `"0.bias"`.
    pub name: RStr<'a>,
    /// Shape.
    pub shape: RSlice<'a, u64>,
    /// Values, row-major.
    pub values: RSlice<'a, f32>,
}

/// A model as a plugin sees it: the architecture JSON, its prunable layers in order, and
/// the unprunable parameters (biases), so that a `ModelRef` alone describes a network the
/// host can run.
///
/// Everything is borrowed from the host for the duration of one call; nothing is copied.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct ModelRef<'a> {
    /// The architecture as JSON (hyperprune's `ArchSpec`).
    pub arch_json: RStr<'a>,
    /// The prunable layers in network order.
    pub layers: RSlice<'a, LayerRef<'a>>,
    /// Biases and any other parameters that are never pruned.
    pub others: RSlice<'a, TensorRef<'a>>,
}

impl<'a> ModelRef<'a> {
    /// The prunable layers.
    pub fn layers(&self) -> &'a [LayerRef<'a>] {
        self.layers.as_slice()
    }

    /// Total number of prunable weights.
    pub fn prunable_count(&self) -> usize {
        self.layers.iter().map(|l| l.weights.len()).sum()
    }

    /// The weights of every layer, as slices.
    pub fn weights(&self) -> Vec<&'a [f32]> {
        self.layers.iter().map(|l| l.weights.as_slice()).collect()
    }

    /// All prunable weights concatenated in layer order (a copy).
    pub fn flat_weights(&self) -> Vec<f32> {
        self.layers.iter().flat_map(|l| l.weights.iter().copied()).collect()
    }
}

/// Owned storage for a modified copy of a model, to pass back to host services
/// (e.g. "evaluate these updated weights"). Build it with [`ModelBuf::new`], change
/// [`ModelBuf::weights_mut`], then call [`ModelBuf::with_view`].
#[derive(Debug, Clone)]
pub struct ModelBuf {
    arch_json: String,
    names: Vec<String>,
    kinds: Vec<LayerKind>,
    shapes: Vec<Vec<u64>>,
    weights: Vec<Vec<f32>>,
    other_names: Vec<String>,
    other_shapes: Vec<Vec<u64>>,
    other_values: Vec<Vec<f32>>,
}

impl ModelBuf {
    /// Copies the model's weights.
    pub fn new(model: &ModelRef<'_>) -> ModelBuf {
        ModelBuf {
            arch_json: model.arch_json.to_string(),
            names: model.layers.iter().map(|l| l.name.to_string()).collect(),
            kinds: model.layers.iter().map(|l| l.kind).collect(),
            shapes: model.layers.iter().map(|l| l.shape.to_vec()).collect(),
            weights: model.layers.iter().map(|l| l.weights.to_vec()).collect(),
            other_names: model.others.iter().map(|t| t.name.to_string()).collect(),
            other_shapes: model.others.iter().map(|t| t.shape.to_vec()).collect(),
            other_values: model.others.iter().map(|t| t.values.to_vec()).collect(),
        }
    }

    /// The weights of every layer.
    pub fn weights_mut(&mut self) -> &mut [Vec<f32>] {
        &mut self.weights
    }

    /// The weights of every layer.
    pub fn weights(&self) -> &[Vec<f32>] {
        &self.weights
    }

    /// Layer views borrowing this buffer.
    pub fn layer_refs(&self) -> Vec<LayerRef<'_>> {
        (0..self.names.len())
            .map(|i| LayerRef {
                name: RStr::from_str(&self.names[i]),
                kind: self.kinds[i],
                shape: RSlice::from_slice(&self.shapes[i]),
                weights: RSlice::from_slice(&self.weights[i]),
            })
            .collect()
    }

    /// Views of the unprunable tensors.
    pub fn other_refs(&self) -> Vec<TensorRef<'_>> {
        (0..self.other_names.len())
            .map(|i| TensorRef {
                name: RStr::from_str(&self.other_names[i]),
                shape: RSlice::from_slice(&self.other_shapes[i]),
                values: RSlice::from_slice(&self.other_values[i]),
            })
            .collect()
    }

    /// Runs `f` on a view of the buffer.
    pub fn with_view<R>(&self, f: impl FnOnce(ModelRef<'_>) -> R) -> R {
        let layers = self.layer_refs();
        let others = self.other_refs();
        f(ModelRef {
            arch_json: RStr::from_str(&self.arch_json),
            layers: RSlice::from_slice(&layers),
            others: RSlice::from_slice(&others),
        })
    }
}

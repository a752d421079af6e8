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

/// What an unprunable tensor is to its layer.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorRole {
    /// A conv or linear bias.
    Bias,
    /// A batch normalisation's scale (`.weight` in PyTorch).
    Scale,
    /// A batch normalisation's shift (`.bias` in PyTorch).
    Shift,
    /// A running statistic (`running_mean`, `running_var`), set by training, not gradients.
    Buffer,
}

/// An unprunable parameter tensor (a bias, a batch normalisation's tensors), borrowed from
/// the host.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    /// Tensor name, e.g. `"0.bias"`, `"layer1.0.bn1.running_var"`.
    pub name: RStr<'a>,
    /// What the tensor is to its layer.
    pub role: TensorRole,
    /// Shape.
    pub shape: RSlice<'a, u64>,
    /// Values, row-major.
    pub values: RSlice<'a, f32>,
}

/// What a node of the network computes.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// Convolution; its weight is a prunable layer.
    Conv2d,
    /// Fully connected layer; its weight is a prunable layer.
    Linear,
    /// Batch normalisation over channels (never pruned).
    BatchNorm2d,
    /// Elementwise sum of two or more inputs of one shape (a residual connection).
    Add,
    /// Max pooling.
    MaxPool,
    /// Average pooling.
    AvgPool,
    /// Mean over each channel's positions, `[C, H, W]` to `[C, 1, 1]`.
    GlobalAvgPool,
    /// `[C, H, W]` to `C·H·W` features.
    Flatten,
    /// Rectified linear unit.
    Relu,
    /// Hyperbolic tangent.
    Tanh,
    /// Gaussian error linear unit.
    Gelu,
    /// Logistic sigmoid.
    Sigmoid,
    /// Dropout (the identity outside training).
    Dropout,
}

/// One node of the network's graph. Nodes are in topological order (each after its
/// inputs); the last is the network's output.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct NodeRef<'a> {
    /// Node name (a layer's tensor prefix for conv, linear and batch normalisation).
    pub name: RStr<'a>,
    /// What it computes.
    pub kind: NodeKind,
    /// What it reads: indices into [`ModelRef::nodes`], or [`NETWORK_INPUT`] for the
    /// network's input.
    pub inputs: RSlice<'a, u32>,
    /// The shape it produces: `[C, H, W]` for a feature map, `[F]` for flat features.
    pub output: RSlice<'a, u64>,
    /// Index into [`ModelRef::layers`] of its prunable weight, or [`NO_LAYER`].
    pub layer: u32,
    /// Indices into [`ModelRef::others`] of its other tensors (bias; scale, shift, buffers).
    pub tensors: RSlice<'a, u32>,
}

/// [`NodeRef::inputs`] entry for the network's input.
pub const NETWORK_INPUT: u32 = u32::MAX;

/// [`NodeRef::layer`] of a node without a prunable weight.
pub const NO_LAYER: u32 = u32::MAX;

impl<'a> NodeRef<'a> {
    /// The node's name.
    pub fn name(&self) -> &'a str {
        self.name.as_str()
    }

    /// What it reads: `None` for the network's input, else a node index.
    pub fn inputs(&self) -> impl Iterator<Item = Option<usize>> + 'a {
        self.inputs.as_slice().iter().map(|&i| (i != NETWORK_INPUT).then_some(i as usize))
    }

    /// The output shape.
    pub fn output(&self) -> Vec<usize> {
        self.output.iter().map(|&d| d as usize).collect()
    }

    /// The index of its prunable weight in [`ModelRef::layers`], if it has one.
    pub fn layer(&self) -> Option<usize> {
        (self.layer != NO_LAYER).then_some(self.layer as usize)
    }

    /// Indices of its other tensors in [`ModelRef::others`].
    pub fn tensors(&self) -> impl Iterator<Item = usize> + 'a {
        self.tensors.as_slice().iter().map(|&i| i as usize)
    }
}

/// A model as a plugin sees it: the architecture JSON, its prunable layers in order, the
/// unprunable parameters (biases, batch normalisation), and the network's graph, so that a
/// `ModelRef` alone describes a network the host can run and a plugin can reason about its
/// structure (which layer feeds which, which channels an `add` joins) without parsing JSON.
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
    /// The network's nodes, in topological order; the last is the output. Empty in a view
    /// built without a graph (a plugin's own test views), where the layers form a chain.
    pub nodes: RSlice<'a, NodeRef<'a>>,
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

    /// The network's nodes (topological order; the last is the output).
    pub fn nodes(&self) -> &'a [NodeRef<'a>] {
        self.nodes.as_slice()
    }

    /// The node that owns prunable layer `layer`, if the view has a graph.
    pub fn node_of_layer(&self, layer: usize) -> Option<usize> {
        self.nodes.iter().position(|n| n.layer() == Some(layer))
    }

    /// The nodes that read node `node`'s output.
    pub fn readers(&self, node: usize) -> impl Iterator<Item = usize> + 'a {
        let nodes = self.nodes.as_slice();
        (0..nodes.len()).filter(move |&r| nodes[r].inputs().any(|i| i == Some(node)))
    }
}

/// Owned copy of one node of a view, for [`ModelBuf`].
#[derive(Debug, Clone)]
struct NodeBuf {
    name: String,
    kind: NodeKind,
    inputs: Vec<u32>,
    output: Vec<u64>,
    layer: u32,
    tensors: Vec<u32>,
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
    other_roles: Vec<TensorRole>,
    other_shapes: Vec<Vec<u64>>,
    other_values: Vec<Vec<f32>>,
    nodes: Vec<NodeBuf>,
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
            other_roles: model.others.iter().map(|t| t.role).collect(),
            other_shapes: model.others.iter().map(|t| t.shape.to_vec()).collect(),
            other_values: model.others.iter().map(|t| t.values.to_vec()).collect(),
            nodes: model
                .nodes
                .iter()
                .map(|n| NodeBuf {
                    name: n.name.to_string(),
                    kind: n.kind,
                    inputs: n.inputs.to_vec(),
                    output: n.output.to_vec(),
                    layer: n.layer,
                    tensors: n.tensors.to_vec(),
                })
                .collect(),
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
                role: self.other_roles[i],
                shape: RSlice::from_slice(&self.other_shapes[i]),
                values: RSlice::from_slice(&self.other_values[i]),
            })
            .collect()
    }

    /// Views of the graph's nodes.
    pub fn node_refs(&self) -> Vec<NodeRef<'_>> {
        self.nodes
            .iter()
            .map(|n| NodeRef {
                name: RStr::from_str(&n.name),
                kind: n.kind,
                inputs: RSlice::from_slice(&n.inputs),
                output: RSlice::from_slice(&n.output),
                layer: n.layer,
                tensors: RSlice::from_slice(&n.tensors),
            })
            .collect()
    }

    /// Runs `f` on a view of the buffer.
    pub fn with_view<R>(&self, f: impl FnOnce(ModelRef<'_>) -> R) -> R {
        let layers = self.layer_refs();
        let others = self.other_refs();
        let nodes = self.node_refs();
        f(ModelRef {
            arch_json: RStr::from_str(&self.arch_json),
            layers: RSlice::from_slice(&layers),
            others: RSlice::from_slice(&others),
            nodes: RSlice::from_slice(&nodes),
        })
    }
}

//! The architecture description as JSON: a list of layers, run in order (a sequential
//! network), or wired by name with `inputs` (a graph such as a ResNet; see [`super::graph`]).

use std::path::Path;

use hyperprune_sdk::NodeKind;
use serde::{Deserialize, Serialize};

use super::ArchError;

/// The most scalars one feature map or parameter tensor may hold (2^40, 4 TiB of f32): far
/// beyond any machine, and small enough that sizes, their products and their sums never
/// overflow a `usize`. A spec that exceeds it is refused rather than wrapped around.
pub const MAX_ELEMENTS: usize = 1 << 40;

/// A sequential image classifier, as JSON.
///
/// The layer list mirrors a PyTorch `nn.Sequential`: layer `i` owns the tensors
/// `"{i}.weight"` and `"{i}.bias"` (or `"{name}.weight"` when the layer has a `name`), so a
/// `state_dict` saved from such a module loads without renaming.
///
/// ```
/// use hyperprune_core::ArchSpec;
/// let spec: ArchSpec = serde_json::from_str(r#"{
///   "name": "tiny", "input": [1, 8, 8], "classes": 10,
///   "layers": [
///     {"type": "conv2d", "out_channels": 4, "kernel": 3},
///     {"type": "relu"},
///     {"type": "flatten"},
///     {"type": "linear", "out_features": 10}
///   ]}"#).unwrap();
/// assert_eq!(spec.param_count().unwrap(), 4 * 9 + 4 + 144 * 10 + 10);
/// ```
///
/// A graph spec gives layers a `name` and lists what they read in `inputs` (node names, or
/// `"input"` for the network's input); a layer without `inputs` reads the layer before it:
///
/// ```
/// use hyperprune_core::ArchSpec;
/// let spec = ArchSpec::from_json(r#"{
///   "name": "one-block", "input": [1, 8, 8], "classes": 10,
///   "layers": [
///     {"type": "conv2d", "name": "conv1", "out_channels": 4, "kernel": 3, "padding": 1, "bias": false},
///     {"type": "batchnorm2d", "name": "bn1"},
///     {"type": "relu", "name": "relu"},
///     {"type": "conv2d", "name": "conv2", "out_channels": 4, "kernel": 3, "padding": 1, "bias": false},
///     {"type": "batchnorm2d", "name": "bn2"},
///     {"type": "add", "name": "sum", "inputs": ["bn2", "relu"]},
///     {"type": "relu"},
///     {"type": "global_avgpool"},
///     {"type": "flatten"},
///     {"type": "linear", "name": "fc", "out_features": 10}
///   ]}"#).unwrap();
/// assert!(!spec.graph().unwrap().is_chain());
/// assert_eq!(spec.prunable_count().unwrap(), 4 * 9 + 4 * 4 * 9 + 4 * 10);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawSpec", into = "RawSpec")]
pub struct ArchSpec {
    /// A short name, e.g. `cnn-s`.
    pub name: String,
    /// Input shape `[channels, height, width]`.
    pub input: [usize; 3],
    /// Number of output classes; the last layer must produce exactly this many features.
    pub classes: usize,
    /// The layers, in an order where each comes after what it reads.
    pub layers: Vec<LayerSpec>,
    /// How each layer is wired: empty for a sequential network, else one [`Link`] per layer.
    pub links: Vec<Link>,
}

/// The wiring of one layer of a graph spec: the `name` of a layer kind that has no name of
/// its own (activations, pooling, `add`, ...) and the names it reads (`inputs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    /// Node name, for kinds whose [`LayerSpec`] has no `name` field.
    pub name: Option<String>,
    /// Names of the nodes read (`"input"`: the network's input); `None`: the layer before.
    pub inputs: Option<Vec<String>>,
}

/// The JSON form of an [`ArchSpec`]: the layers as objects, from which the wiring fields are
/// taken before each is read as a [`LayerSpec`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    input: [usize; 3],
    classes: usize,
    layers: Vec<serde_json::Value>,
}

impl TryFrom<RawSpec> for ArchSpec {
    type Error = String;

    fn try_from(raw: RawSpec) -> Result<ArchSpec, String> {
        let mut layers = Vec::with_capacity(raw.layers.len());
        let mut links = Vec::with_capacity(raw.layers.len());
        for (i, value) in raw.layers.into_iter().enumerate() {
            let serde_json::Value::Object(mut map) = value else {
                return Err(format!("layer {i}: expected an object with a \"type\", got {value}"));
            };
            let inputs = match map.remove("inputs") {
                None => None,
                Some(serde_json::Value::Array(items)) => Some(
                    items
                        .into_iter()
                        .map(|v| match v {
                            serde_json::Value::String(s) => Ok(s),
                            other => Err(format!("layer {i}: field 'inputs' holds {other}, expected node names")),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                Some(other) => return Err(format!("layer {i}: field 'inputs' is {other}, expected a list of names")),
            };
            let named_kind = matches!(
                map.get("type").and_then(serde_json::Value::as_str),
                Some("conv2d" | "linear" | "batchnorm2d")
            );
            let name = match (named_kind, map.get("name")) {
                (false, Some(serde_json::Value::String(_))) => {
                    map.remove("name").and_then(|n| n.as_str().map(String::from))
                }
                (false, Some(other)) => return Err(format!("layer {i}: field 'name' is {other}, expected a string")),
                _ => None,
            };
            let layer: LayerSpec =
                serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| format!("layer {i}: {e}"))?;
            layers.push(layer);
            links.push(Link { name, inputs });
        }
        if links.iter().all(|l| *l == Link::default()) {
            links.clear();
        }
        Ok(ArchSpec { name: raw.name, input: raw.input, classes: raw.classes, layers, links })
    }
}

impl From<ArchSpec> for RawSpec {
    fn from(spec: ArchSpec) -> RawSpec {
        let layers = spec
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let mut value = serde_json::to_value(layer).expect("a layer serialises");
                if let (Some(link), serde_json::Value::Object(map)) = (spec.links.get(i), &mut value) {
                    if let Some(name) = &link.name {
                        map.insert("name".into(), name.clone().into());
                    }
                    if let Some(inputs) = &link.inputs {
                        map.insert("inputs".into(), inputs.clone().into());
                    }
                }
                value
            })
            .collect();
        RawSpec { name: spec.name, input: spec.input, classes: spec.classes, layers }
    }
}

/// One layer of an [`ArchSpec`].
///
/// Non-exhaustive: code outside `core` that matches on it (the engines) keeps an arm for
/// kinds it has no op for, so a new kind compiles everywhere before every engine runs it
/// (see `docs/ARCHITECTURE.md`, "Adding a layer kind").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum LayerSpec {
    /// 2-D convolution, weight layout `[out, in, kh, kw]` (PyTorch's).
    Conv2d {
        /// Output channels.
        out_channels: usize,
        /// Square kernel size.
        kernel: usize,
        /// Stride (default 1).
        #[serde(default = "one")]
        stride: usize,
        /// Zero padding on every side (default 0).
        #[serde(default)]
        padding: usize,
        /// Whether the layer has a bias (default true).
        #[serde(default = "yes")]
        bias: bool,
        /// Tensor name prefix; defaults to the layer index.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Fully connected layer, weight layout `[out, in]`.
    Linear {
        /// Output features.
        out_features: usize,
        /// Whether the layer has a bias (default true).
        #[serde(default = "yes")]
        bias: bool,
        /// Tensor name prefix; defaults to the layer index.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Max pooling over square windows.
    MaxPool {
        /// Window size.
        kernel: usize,
        /// Stride (default: the window size).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<usize>,
    },
    /// Average pooling over square windows.
    AvgPool {
        /// Window size.
        kernel: usize,
        /// Stride (default: the window size).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<usize>,
    },
    /// Flattens `[C, H, W]` to `C·H·W` features in C, H, W order (PyTorch's).
    Flatten,
    /// Rectified linear unit.
    Relu,
    /// Hyperbolic tangent.
    Tanh,
    /// Gaussian error linear unit (erf form, as PyTorch's default).
    Gelu,
    /// Logistic sigmoid.
    Sigmoid,
    /// Dropout with drop probability `p`, active in training only.
    Dropout {
        /// Probability of zeroing an activation.
        p: f32,
    },
    /// Batch normalisation over the channels of a `[C, H, W]` map, as PyTorch's
    /// `BatchNorm2d`: tensors `{name}.weight` and `{name}.bias` (scale and shift, `[C]`) and
    /// the buffers `{name}.running_mean`, `{name}.running_var` (`[C]`). Never pruned.
    #[serde(rename = "batchnorm2d")]
    BatchNorm2d {
        /// Added to the variance (default 1e-5).
        #[serde(default = "bn_eps")]
        eps: f64,
        /// Weight of the newest batch in the running statistics (default 0.1).
        #[serde(default = "bn_momentum")]
        momentum: f64,
        /// Tensor name prefix; defaults to the layer index.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// The elementwise sum of two or more inputs of one shape (a residual connection).
    Add,
    /// The mean over each channel's `H × W` positions: `[C, H, W]` to `[C, 1, 1]` (PyTorch's
    /// `AdaptiveAvgPool2d(1)`).
    #[serde(rename = "global_avgpool")]
    GlobalAvgPool,
}

fn bn_eps() -> f64 {
    1e-5
}

fn bn_momentum() -> f64 {
    0.1
}

fn one() -> usize {
    1
}

fn yes() -> bool {
    true
}

/// An elementwise activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// Rectified linear unit.
    Relu,
    /// Hyperbolic tangent.
    Tanh,
    /// Gaussian error linear unit.
    Gelu,
    /// Logistic sigmoid.
    Sigmoid,
}

impl Activation {
    /// All activations, in a fixed order.
    pub const ALL: [Activation; 4] = [Activation::Relu, Activation::Tanh, Activation::Gelu, Activation::Sigmoid];

    /// The lowercase name used in JSON and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Tanh => "tanh",
            Activation::Gelu => "gelu",
            Activation::Sigmoid => "sigmoid",
        }
    }

    /// The layer that applies this activation.
    pub fn layer(self) -> LayerSpec {
        match self {
            Activation::Relu => LayerSpec::Relu,
            Activation::Tanh => LayerSpec::Tanh,
            Activation::Gelu => LayerSpec::Gelu,
            Activation::Sigmoid => LayerSpec::Sigmoid,
        }
    }
}

impl std::str::FromStr for Activation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Activation::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| format!("unknown activation '{s}', expected one of relu, tanh, gelu, sigmoid"))
    }
}

impl LayerSpec {
    /// What the node computes, as the SDK's model view names it.
    pub fn kind(&self) -> NodeKind {
        match self {
            LayerSpec::Conv2d { .. } => NodeKind::Conv2d,
            LayerSpec::Linear { .. } => NodeKind::Linear,
            LayerSpec::BatchNorm2d { .. } => NodeKind::BatchNorm2d,
            LayerSpec::Add => NodeKind::Add,
            LayerSpec::MaxPool { .. } => NodeKind::MaxPool,
            LayerSpec::AvgPool { .. } => NodeKind::AvgPool,
            LayerSpec::GlobalAvgPool => NodeKind::GlobalAvgPool,
            LayerSpec::Flatten => NodeKind::Flatten,
            LayerSpec::Relu => NodeKind::Relu,
            LayerSpec::Tanh => NodeKind::Tanh,
            LayerSpec::Gelu => NodeKind::Gelu,
            LayerSpec::Sigmoid => NodeKind::Sigmoid,
            LayerSpec::Dropout { .. } => NodeKind::Dropout,
        }
    }

    /// The layer's `type` as the spec JSON spells it (`conv2d`, `batchnorm2d`, ...), for
    /// messages.
    pub fn type_name(&self) -> String {
        let json = serde_json::to_value(self).expect("a layer serialises");
        json["type"].as_str().expect("every layer has a type").to_string()
    }

    /// The activation this layer applies, if it is an activation layer.
    pub fn activation(&self) -> Option<Activation> {
        match self {
            LayerSpec::Relu => Some(Activation::Relu),
            LayerSpec::Tanh => Some(Activation::Tanh),
            LayerSpec::Gelu => Some(Activation::Gelu),
            LayerSpec::Sigmoid => Some(Activation::Sigmoid),
            _ => None,
        }
    }

    /// Whether the layer owns a prunable weight (conv or linear).
    pub fn is_prunable(&self) -> bool {
        matches!(self, LayerSpec::Conv2d { .. } | LayerSpec::Linear { .. })
    }
}

/// The shape of the activations between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureShape {
    /// A `[channels, height, width]` feature map.
    Map {
        /// Channels.
        c: usize,
        /// Height.
        h: usize,
        /// Width.
        w: usize,
    },
    /// A flat feature vector.
    Flat(usize),
}

impl FeatureShape {
    /// Number of scalars.
    ///
    /// # Panics
    /// When it overflows a `usize`, which no shape of a validated [`ArchSpec`] does (see
    /// [`MAX_ELEMENTS`]).
    pub fn numel(self) -> usize {
        self.checked_numel().expect("feature shapes of a validated spec fit in a usize")
    }

    /// Number of scalars, or `None` when it overflows a `usize`.
    pub fn checked_numel(self) -> Option<usize> {
        match self {
            FeatureShape::Map { c, h, w } => c.checked_mul(h)?.checked_mul(w),
            FeatureShape::Flat(n) => Some(n),
        }
    }
}

/// Which kind of prunable layer a weight belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamLayerKind {
    /// A conv2d weight `[out, in, kh, kw]`.
    Conv2d,
    /// A linear weight `[out, in]`.
    Linear,
    /// A batch normalisation's scale, shift or running statistics, `[C]`.
    #[serde(rename = "batchnorm2d")]
    BatchNorm2d,
}

/// What a parameter tensor is to its layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamRole {
    /// A conv or linear weight: the prunable tensors.
    Weight,
    /// A conv or linear bias.
    Bias,
    /// A batch normalisation's scale (`.weight` in PyTorch).
    Scale,
    /// A batch normalisation's shift (`.bias` in PyTorch).
    Shift,
    /// A batch normalisation's running mean: set by training, not by gradients.
    RunningMean,
    /// A batch normalisation's running variance: set by training, not by gradients.
    RunningVar,
}

impl ParamRole {
    /// Whether the tensor is a running statistic (not trained by gradients).
    pub fn is_buffer(self) -> bool {
        matches!(self, ParamRole::RunningMean | ParamRole::RunningVar)
    }
}

/// One parameter tensor that the spec implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// Tensor name, e.g. `"0.weight"`.
    pub name: String,
    /// Tensor shape (PyTorch layout).
    pub shape: Vec<usize>,
    /// Index of the owning layer in [`ArchSpec::layers`].
    pub layer: usize,
    /// The owning layer's kind.
    pub kind: ParamLayerKind,
    /// What the tensor is to its layer.
    pub role: ParamRole,
    /// Whether this is a conv or linear weight (prunable); biases, batch normalisation
    /// tensors and buffers are not.
    pub prunable: bool,
}

impl ParamSpec {
    /// Number of scalars.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

impl ArchSpec {
    /// Checks the spec and returns the feature shape after every layer
    /// (`result[i]` is the output of `layers[i]`).
    ///
    /// # Errors
    /// [`ArchError::Invalid`] naming the layer, when a layer does not fit its input (a kernel
    /// larger than the map, a conv after flatten, a zero size, a final size that is not
    /// `classes`, ...) or the wiring is wrong (see [`ArchSpec::graph`]).
    pub fn shapes(&self) -> Result<Vec<FeatureShape>, ArchError> {
        Ok(self.graph()?.nodes.iter().map(|n| n.output).collect())
    }

    pub(super) fn layer_output(
        &self,
        i: usize,
        layer: &LayerSpec,
        input: FeatureShape,
    ) -> Result<FeatureShape, ArchError> {
        let window = |kernel: usize, stride: usize, padding: usize, what: &str| {
            let FeatureShape::Map { c, h, w } = input else {
                return Err(self.invalid(Some(i), &format!("{what} needs a [C,H,W] input, got flat features")));
            };
            if kernel == 0 || stride == 0 {
                return Err(self.invalid(Some(i), "kernel and stride must be positive"));
            }
            let padded = |side: usize| padding.checked_mul(2).and_then(|p| side.checked_add(p));
            let (Some(hp), Some(wp)) = (padded(h), padded(w)) else {
                return Err(self.invalid(Some(i), &format!("{what} padding {padding} is too large")));
            };
            if hp < kernel || wp < kernel {
                return Err(self.invalid(
                    Some(i),
                    &format!("{what} kernel {kernel} is larger than its {h}x{w} input (padding {padding})"),
                ));
            }
            Ok((c, (hp - kernel) / stride + 1, (wp - kernel) / stride + 1))
        };
        Ok(match layer {
            LayerSpec::Conv2d { out_channels, kernel, stride, padding, .. } => {
                if *out_channels == 0 {
                    return Err(self.invalid(Some(i), "out_channels must be positive"));
                }
                let (_, h, w) = window(*kernel, *stride, *padding, "conv2d")?;
                FeatureShape::Map { c: *out_channels, h, w }
            }
            LayerSpec::MaxPool { kernel, stride } | LayerSpec::AvgPool { kernel, stride } => {
                let (c, h, w) = window(*kernel, stride.unwrap_or(*kernel), 0, "pooling")?;
                FeatureShape::Map { c, h, w }
            }
            LayerSpec::Linear { out_features, .. } => {
                if let FeatureShape::Map { .. } = input {
                    return Err(self.invalid(Some(i), "linear needs flat features: add a flatten layer before it"));
                }
                if *out_features == 0 {
                    return Err(self.invalid(Some(i), "out_features must be positive"));
                }
                FeatureShape::Flat(*out_features)
            }
            LayerSpec::Flatten => FeatureShape::Flat(input.numel()),
            LayerSpec::Dropout { p } => {
                if !(0.0..1.0).contains(p) {
                    return Err(self.invalid(Some(i), &format!("dropout p must be in [0, 1), got {p}")));
                }
                input
            }
            LayerSpec::Relu | LayerSpec::Tanh | LayerSpec::Gelu | LayerSpec::Sigmoid | LayerSpec::Add => input,
            LayerSpec::BatchNorm2d { eps, momentum, .. } => {
                if !matches!(input, FeatureShape::Map { .. }) {
                    return Err(self.node_invalid(i, "batchnorm2d needs a [C,H,W] input, got flat features"));
                }
                if !(eps.is_finite() && *eps > 0.0) {
                    return Err(
                        self.node_invalid(i, &format!("field 'eps' is {eps}, expected a finite number above 0"))
                    );
                }
                if !(0.0..=1.0).contains(momentum) {
                    return Err(
                        self.node_invalid(i, &format!("field 'momentum' is {momentum}, expected a fraction in [0, 1]"))
                    );
                }
                input
            }
            LayerSpec::GlobalAvgPool => {
                let FeatureShape::Map { c, .. } = input else {
                    return Err(self.node_invalid(i, "global_avgpool needs a [C,H,W] input, got flat features"));
                };
                FeatureShape::Map { c, h: 1, w: 1 }
            }
        })
    }

    pub(super) fn invalid(&self, layer: Option<usize>, message: &str) -> ArchError {
        ArchError::Invalid { arch: self.name.clone(), layer, message: message.to_string() }
    }

    /// The input shape of every layer (`result[i]` feeds `layers[i]`).
    ///
    /// # Errors
    /// As [`ArchSpec::shapes`].
    pub fn input_shapes(&self) -> Result<Vec<FeatureShape>, ArchError> {
        Ok(self.graph()?.nodes.iter().map(|n| n.input).collect())
    }

    /// Every parameter tensor, in layer order: weight before bias; a batch normalisation's
    /// scale, shift, running mean and running variance (PyTorch's `state_dict` order).
    ///
    /// # Errors
    /// As [`ArchSpec::shapes`].
    pub fn params(&self) -> Result<Vec<ParamSpec>, ArchError> {
        let ins = self.input_shapes()?;
        let mut params = Vec::new();
        for (i, (layer, input)) in self.layers.iter().zip(ins).enumerate() {
            if let LayerSpec::BatchNorm2d { name, .. } = layer {
                let FeatureShape::Map { c, .. } = input else { unreachable!("checked by shapes") };
                let prefix = name.clone().unwrap_or_else(|| i.to_string());
                for (suffix, role) in [
                    ("weight", ParamRole::Scale),
                    ("bias", ParamRole::Shift),
                    ("running_mean", ParamRole::RunningMean),
                    ("running_var", ParamRole::RunningVar),
                ] {
                    params.push(ParamSpec {
                        name: format!("{prefix}.{suffix}"),
                        shape: vec![c],
                        layer: i,
                        kind: ParamLayerKind::BatchNorm2d,
                        role,
                        prunable: false,
                    });
                }
                continue;
            }
            let (weight_shape, bias, out, kind, name) = match layer {
                LayerSpec::Conv2d { out_channels, kernel, bias, name, .. } => {
                    let FeatureShape::Map { c, .. } = input else { unreachable!("checked by shapes") };
                    (vec![*out_channels, c, *kernel, *kernel], *bias, *out_channels, ParamLayerKind::Conv2d, name)
                }
                LayerSpec::Linear { out_features, bias, name } => {
                    (vec![*out_features, input.numel()], *bias, *out_features, ParamLayerKind::Linear, name)
                }
                _ => continue,
            };
            if weight_shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).is_none_or(|n| n > MAX_ELEMENTS) {
                return Err(self.invalid(
                    Some(i),
                    &format!("weight shape {weight_shape:?} is too large (at most {MAX_ELEMENTS} scalars)"),
                ));
            }
            let prefix = name.clone().unwrap_or_else(|| i.to_string());
            params.push(ParamSpec {
                name: format!("{prefix}.weight"),
                shape: weight_shape,
                layer: i,
                kind,
                role: ParamRole::Weight,
                prunable: true,
            });
            if bias {
                params.push(ParamSpec {
                    name: format!("{prefix}.bias"),
                    shape: vec![out],
                    layer: i,
                    kind,
                    role: ParamRole::Bias,
                    prunable: false,
                });
            }
        }
        let mut seen = std::collections::HashSet::new();
        for p in &params {
            if !seen.insert(p.name.as_str()) {
                return Err(self.invalid(Some(p.layer), &format!("tensor name '{}' is used twice", p.name)));
            }
        }
        Ok(params)
    }

    /// Total number of parameters.
    ///
    /// # Errors
    /// As [`ArchSpec::shapes`].
    pub fn param_count(&self) -> Result<usize, ArchError> {
        Ok(self.params()?.iter().map(ParamSpec::numel).fold(0, usize::saturating_add))
    }

    /// Number of prunable weights (conv and linear weights).
    ///
    /// # Errors
    /// As [`ArchSpec::shapes`].
    pub fn prunable_count(&self) -> Result<usize, ArchError> {
        Ok(self.params()?.iter().filter(|p| p.prunable).map(ParamSpec::numel).fold(0, usize::saturating_add))
    }

    /// The same network with every activation layer replaced by `activation`.
    pub fn with_activation(&self, activation: Activation) -> ArchSpec {
        let mut spec = self.clone();
        for layer in &mut spec.layers {
            if layer.activation().is_some() {
                *layer = activation.layer();
            }
        }
        spec
    }

    /// The same network with a dropout layer of probability `p` in front of every linear layer
    /// whose input is a hidden activation (the Model Zoos placement). `p == 0` removes all
    /// dropout layers. Layer indices, and so default tensor names, shift accordingly.
    pub fn with_dropout(&self, p: f32) -> ArchSpec {
        let mut spec = self.clone();
        let linked = !spec.links.is_empty();
        let mut links = spec.links.clone().into_iter();
        let (mut layers, mut kept_links) = (Vec::with_capacity(spec.layers.len() + 4), Vec::new());
        let mut previous_activation = false;
        for layer in std::mem::take(&mut spec.layers) {
            let mut link = links.next().unwrap_or_default();
            if matches!(layer, LayerSpec::Dropout { .. }) {
                continue;
            }
            // Dropout on the input of a linear layer that follows an activation: the hidden
            // fully connected layers, as in the Model Zoos CNNs. The dropout takes over the
            // linear layer's inputs, and the linear layer reads the dropout.
            if p > 0.0 && matches!(layer, LayerSpec::Linear { .. }) && previous_activation {
                layers.push(LayerSpec::Dropout { p });
                kept_links.push(Link { name: None, inputs: link.inputs.take() });
            }
            previous_activation = layer.activation().is_some();
            layers.push(layer);
            kept_links.push(link);
        }
        spec.layers = layers;
        spec.links = if linked { kept_links } else { Vec::new() };
        spec
    }

    /// Parses a spec from JSON and validates it: its shapes and its parameter tensors.
    ///
    /// # Errors
    /// [`ArchError::Json`] when the text is not a spec, [`ArchError::Invalid`] when it is
    /// inconsistent.
    pub fn from_json(text: &str) -> Result<ArchSpec, ArchError> {
        let spec: ArchSpec = serde_json::from_str(text).map_err(|e| ArchError::Json(e.to_string()))?;
        // `params` checks the shapes and also what only the tensors show (a name used twice,
        // a weight too large), so a spec that parses never fails later, far from its file.
        spec.params()?;
        Ok(spec)
    }

    /// Reads and validates a spec JSON file.
    ///
    /// # Errors
    /// [`ArchError::Io`] when the file cannot be read, [`ArchError::InFile`] wrapping what
    /// [`ArchSpec::from_json`] found wrong; both name the file.
    pub fn read(path: &Path) -> Result<ArchSpec, ArchError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ArchError::Io { path: path.to_path_buf(), source })?;
        ArchSpec::from_json(&text).map_err(|e| ArchError::InFile { path: path.to_path_buf(), source: Box::new(e) })
    }

    /// The spec as compact JSON (a sequential spec as before graphs existed: no wiring fields).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an ArchSpec always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::preset;

    #[test]
    fn cnn_s_has_the_model_zoo_parameter_count() {
        let spec = preset("cnn-s").unwrap();
        assert_eq!(spec.param_count().unwrap(), 2464);
        let params = spec.params().unwrap();
        assert_eq!(params[0].shape, vec![8, 1, 5, 5]);
        assert_eq!(params.last().unwrap().shape, vec![10]);
    }

    #[test]
    fn mlpnet_has_no_bias() {
        let spec = preset("mlpnet").unwrap();
        assert_eq!(spec.param_count().unwrap(), 784 * 40 + 40 * 20 + 20 * 10);
        assert_eq!(spec.param_count().unwrap(), spec.prunable_count().unwrap());
    }

    #[test]
    fn lenet5_parameter_count() {
        let spec = preset("lenet5").unwrap();
        assert_eq!(spec.param_count().unwrap(), 61_706);
    }

    #[test]
    fn every_preset_is_valid() {
        for p in crate::arch::presets() {
            let spec = (p.build)();
            spec.shapes().unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert_eq!(spec.name, p.name);
        }
    }

    #[test]
    fn linear_after_conv_without_flatten_is_rejected_naming_the_layer() {
        let mut spec = preset("cnn-digits").unwrap();
        spec.layers.retain(|l| !matches!(l, LayerSpec::Flatten));
        let err = spec.shapes().unwrap_err().to_string();
        assert!(err.contains("flatten"), "{err}");
        assert!(err.contains("layer"), "{err}");
    }

    #[test]
    fn json_round_trip_and_unknown_fields_rejected() {
        let spec = preset("cnn-s").unwrap();
        assert_eq!(ArchSpec::from_json(&spec.to_json()).unwrap(), spec);
        let bad = r#"{"name":"x","input":[1,8,8],"classes":10,"layers":[{"type":"flatten","oops":1}]}"#;
        assert!(ArchSpec::from_json(bad).is_err());
    }

    #[test]
    fn sizes_that_overflow_are_refused_not_wrapped() {
        let spec = |layers: &str| format!(r#"{{"name":"x","input":[1,8,8],"classes":10,"layers":[{layers}]}}"#);
        let cases = [
            (spec(r#"{"type":"conv2d","out_channels":4,"kernel":3,"padding":18446744073709551615}"#), "padding"),
            (
                spec(concat!(
                    r#"{"type":"conv2d","out_channels":4294967296,"kernel":1},"#,
                    r#"{"type":"conv2d","out_channels":4294967296,"kernel":1},"#,
                    r#"{"type":"flatten"},{"type":"linear","out_features":10}"#
                )),
                "weight shape [4294967296, 4294967296, 1, 1] is too large",
            ),
            (
                spec(
                    r#"{"type":"flatten"},{"type":"linear","out_features":1099511627776},{"type":"linear","out_features":10}"#,
                ),
                "too large",
            ),
        ];
        for (json, want) in cases {
            let err = ArchSpec::from_json(&json).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(want), "{json}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn a_tensor_name_used_twice_is_refused_when_parsed_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("twice.json");
        let json = r#"{"name":"x","input":[1,8,8],"classes":10,"layers":[{"type":"flatten"},
            {"type":"linear","out_features":16,"name":"fc"},{"type":"linear","out_features":10,"name":"fc"}]}"#;
        std::fs::write(&path, json).unwrap();
        let err = ArchSpec::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("twice.json") && err.contains("node 'fc': field 'name': 'fc' is also the name of layer 1"),
            "{err}"
        );
    }

    #[test]
    fn read_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.json");
        let err = ArchSpec::read(&path).unwrap_err().to_string();
        assert!(err.contains("spec.json"), "{err}");
        std::fs::write(&path, r#"{"name":"x","input":[1,8,8],"classes":10,"layers":[{"type":"relu"}]}"#).unwrap();
        let err = ArchSpec::read(&path).unwrap_err().to_string();
        assert!(err.contains("spec.json") && err.contains("one per class"), "{err}");
        std::fs::write(&path, preset("cnn-s").unwrap().to_json()).unwrap();
        assert_eq!(ArchSpec::read(&path).unwrap(), preset("cnn-s").unwrap());
    }

    /// Bad input, everywhere: a few thousand mutants of a spec file never panic, and every
    /// refusal names the file.
    #[test]
    fn property_mutated_spec_files_never_panic_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let valid = preset("lenet5").unwrap().to_json();
        // A spec that reads never fails later, far from its file.
        let read = |path: &std::path::Path| ArchSpec::read(path).map(|s| s.params().expect("read checks the tensors"));
        let tally =
            crate::mutation::check_reader("arch spec", valid.as_bytes(), &dir.path().join("spec.json"), 3000, 1, read);
        assert!(tally.refused > 1000, "{tally:?}");
    }

    #[test]
    fn activation_and_dropout_rewrites() {
        let spec = preset("cnn-s").unwrap().with_activation(Activation::Relu);
        assert!(spec.layers.iter().all(|l| l.activation().is_none_or(|a| a == Activation::Relu)));
        let d = spec.with_dropout(0.5);
        assert_eq!(d.layers.iter().filter(|l| matches!(l, LayerSpec::Dropout { .. })).count(), 1);
        assert_eq!(d.param_count().unwrap(), 2464);
        assert_eq!(d.with_dropout(0.0).layers, spec.layers);
    }
}

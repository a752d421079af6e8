//! The architecture description: a sequential network as JSON.

use std::path::Path;

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchSpec {
    /// A short name, e.g. `cnn-s`.
    pub name: String,
    /// Input shape `[channels, height, width]`.
    pub input: [usize; 3],
    /// Number of output classes; the last layer must produce exactly this many features.
    pub classes: usize,
    /// The layers, applied in order.
    pub layers: Vec<LayerSpec>,
}

/// One layer of an [`ArchSpec`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
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
    /// Whether this is a weight (prunable) rather than a bias.
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
    /// `classes`, ...).
    pub fn shapes(&self) -> Result<Vec<FeatureShape>, ArchError> {
        let [c, h, w] = self.input;
        if c == 0 || h == 0 || w == 0 {
            return Err(self.invalid(None, "input dimensions must all be positive"));
        }
        if self.classes < 2 {
            return Err(self.invalid(None, "classes must be at least 2"));
        }
        let mut shape = FeatureShape::Map { c, h, w };
        if shape.checked_numel().is_none_or(|n| n > MAX_ELEMENTS) {
            return Err(
                self.invalid(None, &format!("input {:?} is too large (at most {MAX_ELEMENTS} scalars)", self.input))
            );
        }
        let mut out = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            shape = self.layer_output(i, layer, shape)?;
            if shape.checked_numel().is_none_or(|n| n > MAX_ELEMENTS) {
                return Err(self.invalid(
                    Some(i),
                    &format!("the layer's output {shape:?} is too large (at most {MAX_ELEMENTS} scalars)"),
                ));
            }
            out.push(shape);
        }
        match shape {
            FeatureShape::Flat(n) if n == self.classes => Ok(out),
            other => Err(self.invalid(
                None,
                &format!(
                    "the network must end in {} flat features (one per class), it ends in {:?}",
                    self.classes, other
                ),
            )),
        }
    }

    fn layer_output(&self, i: usize, layer: &LayerSpec, input: FeatureShape) -> Result<FeatureShape, ArchError> {
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
            LayerSpec::Relu | LayerSpec::Tanh | LayerSpec::Gelu | LayerSpec::Sigmoid => input,
        })
    }

    fn invalid(&self, layer: Option<usize>, message: &str) -> ArchError {
        ArchError::Invalid { arch: self.name.clone(), layer, message: message.to_string() }
    }

    /// The input shape of every layer (`result[i]` feeds `layers[i]`).
    ///
    /// # Errors
    /// As [`ArchSpec::shapes`].
    pub fn input_shapes(&self) -> Result<Vec<FeatureShape>, ArchError> {
        let [c, h, w] = self.input;
        let outs = self.shapes()?;
        let mut ins = Vec::with_capacity(outs.len());
        ins.push(FeatureShape::Map { c, h, w });
        ins.extend(outs.iter().take(outs.len().saturating_sub(1)).copied());
        Ok(ins)
    }

    /// Every parameter tensor, in layer order (weight before bias).
    ///
    /// # Errors
    /// As [`ArchSpec::shapes`].
    pub fn params(&self) -> Result<Vec<ParamSpec>, ArchError> {
        let ins = self.input_shapes()?;
        let mut params = Vec::new();
        for (i, (layer, input)) in self.layers.iter().zip(ins).enumerate() {
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
                prunable: true,
            });
            if bias {
                params.push(ParamSpec {
                    name: format!("{prefix}.bias"),
                    shape: vec![out],
                    layer: i,
                    kind,
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
        spec.layers.retain(|l| !matches!(l, LayerSpec::Dropout { .. }));
        if p > 0.0 {
            let mut layers = Vec::with_capacity(spec.layers.len() + 4);
            for (i, layer) in spec.layers.iter().enumerate() {
                // Dropout on the input of a linear layer that follows an activation: the hidden
                // fully connected layers, as in the Model Zoos CNNs.
                let after_activation = i > 0 && spec.layers[i - 1].activation().is_some();
                if matches!(layer, LayerSpec::Linear { .. }) && after_activation {
                    layers.push(LayerSpec::Dropout { p });
                }
                layers.push(layer.clone());
            }
            spec.layers = layers;
        }
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

    /// The spec as compact JSON.
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
        assert!(err.contains("twice.json") && err.contains("'fc.weight' is used twice"), "{err}");
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

//! The fitted state on disk: safetensors holding the network's parameters, with a JSON
//! description in the metadata (format and plugin version, the network's configuration,
//! the sparsity range and the zoo it was fitted on, fit metrics). A checkpoint of a running
//! fit is the same file with the optimiser's moments, the best parameters so far and the
//! step reached.

use std::collections::HashMap;

use hyperprune_sdk::{ErrorKind, PluginError};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::base::Base;
use crate::network::{NetConfig, Param, Params};
use crate::refinement::Inputs;
use crate::units::{InputStats, UnitStage};

/// The metadata key holding [`Meta`] as JSON.
pub const META_KEY: &str = "hyperprune.hypernet";

/// What a state file says of itself.
pub const FORMAT: &str = "hyperprune-hypernet";

/// The tensors of the unit stage's input statistics.
const INPUT_MEAN: &str = "inputs.mean";
const INPUT_COV: &str = "inputs.cov";
/// The tensor of `refine`'s inputs.
const REFINE_INPUTS: &str = "refine.inputs";

/// Bumped when the meaning of a state changes; older states are refused.
pub const FORMAT_VERSION: u32 = 1;

/// Everything about a state except its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// The plugin version that wrote it.
    pub plugin_version: String,
    /// The SDK version of that plugin.
    pub sdk_version: String,
    /// The network.
    pub net: NetConfig,
    /// `full` or `magnitude`.
    pub features: String,
    /// The sparsity range fitted on.
    pub s_min: f64,
    /// The sparsity range fitted on.
    pub s_max: f64,
    /// Where and how it was fitted.
    pub fit: FitInfo,
    /// Present in checkpoints of an unfinished fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// The unit stage the fit chose (absent: none was chosen, or the state predates it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<UnitStage>,
    /// The base score's layer normalisation by compression (absent: global magnitude
    /// ranks, as every state before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Base>,
    /// `[images, values per image]` of the inputs `refine` distils on (absent: the fit had
    /// no input moments, or the state predates them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refine_inputs: Option<[usize; 2]>,
    /// The size of the default refinement's single step, chosen by the fit on the val
    /// members (absent: [`crate::refinement::STEP`]; the fit had no val members or no
    /// inputs, or the state predates the choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refine_step: Option<f64>,
}

impl Meta {
    /// The base score this state prunes on.
    pub fn base(&self) -> Base {
        self.base.unwrap_or(Base::GLOBAL)
    }
}

/// Where and how a state was fitted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FitInfo {
    /// Zoo name.
    pub zoo: String,
    /// Dataset of the zoo.
    pub dataset: String,
    /// Architecture names of the train members.
    pub archs: Vec<String>,
    /// Train members fitted on.
    pub train_members: usize,
    /// Val members used for selection.
    pub val_members: usize,
    /// Optimisation steps.
    pub steps: usize,
    /// The step whose parameters were kept (best val retention).
    pub best_step: usize,
    /// Mean val retention of the kept parameters (NaN serialises as null: no val members).
    pub val_retention: Option<f64>,
    /// Wall time of the fit, seconds.
    pub seconds: f64,
    /// The fit options, as given.
    pub options: serde_json::Value,
}

/// Where an unfinished fit stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Steps done.
    pub step: usize,
    /// Best val retention so far, and its step.
    pub best: Option<(f64, usize)>,
    /// Wall time spent so far.
    pub seconds: f64,
}

/// A state: metadata, parameters, and for a checkpoint the optimiser's moments and the best
/// parameters so far.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// Metadata.
    pub meta: Meta,
    /// The network's parameters.
    pub params: Params,
    /// Checkpoints only: Adam's first and second moments, and the best parameters.
    pub resume: Option<Resume>,
    /// The input statistics of the unit stage, when it gives up units (`units.q_max > 0`).
    pub inputs: Option<InputStats>,
    /// The inputs `refine` distils on (see [`Meta::refine_inputs`]).
    pub refine: Option<Inputs>,
}

/// What a checkpoint adds.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    /// Adam's first moments.
    pub first: Params,
    /// Adam's second moments.
    pub second: Params,
    /// Best parameters so far.
    pub best: Params,
}

impl State {
    /// Serialises to safetensors bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut groups: Vec<(&str, &Params)> = vec![("net", &self.params)];
        if let Some(r) = &self.resume {
            groups.extend([("adam_m", &r.first), ("adam_v", &r.second), ("best", &r.best)]);
        }
        let le = |values: &[f32]| -> Vec<u8> { values.iter().flat_map(|v| v.to_le_bytes()).collect() };
        let mut bytes: Vec<(String, [usize; 2], Vec<u8>)> = groups
            .iter()
            .flat_map(|(group, params)| {
                params.list.iter().map(move |p| (format!("{group}.{}", p.name), p.shape, le(&p.values)))
            })
            .collect();
        if let Some(inputs) = &self.inputs {
            let d = inputs.dim();
            bytes.push((INPUT_MEAN.into(), [1, d], le(&inputs.mean)));
            bytes.push((INPUT_COV.into(), [d, d], le(&inputs.cov)));
        }
        if let Some(refine) = &self.refine {
            bytes.push((REFINE_INPUTS.into(), [refine.len(), refine.dim], le(&refine.values)));
        }
        let views: Vec<(String, TensorView<'_>)> = bytes
            .iter()
            .map(|(name, shape, b)| {
                (name.clone(), TensorView::new(Dtype::F32, shape.to_vec(), b).expect("shape matches the values"))
            })
            .collect();
        let meta = HashMap::from([(META_KEY.to_string(), serde_json::to_string(&self.meta).expect("serialisable"))]);
        safetensors::tensor::serialize(views, Some(meta)).expect("in-memory serialisation cannot fail")
    }

    /// Parses a state written by [`State::to_bytes`].
    ///
    /// # Errors
    /// Kind [`ErrorKind::InvalidState`] saying what is wrong: not safetensors, not a
    /// hypernet state, another format version, missing or misshapen tensors.
    pub fn from_bytes(bytes: &[u8]) -> Result<State, PluginError> {
        let invalid = |m: String| PluginError::new(ErrorKind::InvalidState, m);
        let (_, metadata) = SafeTensors::read_metadata(bytes)
            .map_err(|e| invalid(format!("not a hypernet state (expected safetensors): {e}")))?;
        let json = metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY).cloned())
            .ok_or_else(|| invalid(format!("not a hypernet state: no '{META_KEY}' metadata")))?;
        let meta: Meta = serde_json::from_str(&json).map_err(|e| invalid(format!("hypernet state metadata: {e}")))?;
        if meta.format != FORMAT || meta.format_version != FORMAT_VERSION {
            return Err(invalid(format!(
                "state format '{}' v{} (plugin {}), expected '{FORMAT}' v{FORMAT_VERSION}: refit with this version",
                meta.format, meta.format_version, meta.plugin_version
            )));
        }
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| invalid(format!("hypernet state tensors: {e}")))?;
        let layout = Params::init(&meta.net, 0);
        let read = |group: &str| -> Result<Params, PluginError> {
            let list = layout
                .list
                .iter()
                .map(|p| {
                    let name = format!("{group}.{}", p.name);
                    let t = tensors.tensor(&name).map_err(|_| invalid(format!("state lacks tensor '{name}'")))?;
                    if t.dtype() != Dtype::F32 || t.shape() != p.shape {
                        return Err(invalid(format!(
                            "tensor '{name}' is {:?} {:?}, expected F32 {:?}",
                            t.dtype(),
                            t.shape(),
                            p.shape
                        )));
                    }
                    let values = finite_values(&name, t.data())?;
                    Ok(Param { name: p.name.clone(), shape: p.shape, values })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Params { list })
        };
        let params = read("net")?;
        let resume = if meta.progress.is_some() {
            Some(Resume { first: read("adam_m")?, second: read("adam_v")?, best: read("best")? })
        } else {
            None
        };
        let tensor = |name: &str, shape: [usize; 2]| -> Result<Vec<f32>, PluginError> {
            let t = tensors.tensor(name).map_err(|_| invalid(format!("state lacks tensor '{name}'")))?;
            if t.dtype() != Dtype::F32 || t.shape() != shape {
                return Err(invalid(format!(
                    "tensor '{name}' is {:?} {:?}, expected F32 {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            finite_values(name, t.data())
        };
        let inputs = match &meta.units {
            Some(units) if units.q_max > 0.0 || units.p_dead > 0.0 => {
                let d = units.dim;
                Some(InputStats { mean: tensor(INPUT_MEAN, [1, d])?, cov: tensor(INPUT_COV, [d, d])? })
            }
            _ => None,
        };
        let refine = match meta.refine_inputs {
            Some([n, d]) if n == 0 || d == 0 => {
                return Err(invalid(format!("refine_inputs is [{n}, {d}]: expected at least one input of one value")));
            }
            Some([n, d]) => Some(Inputs { dim: d, values: tensor(REFINE_INPUTS, [n, d])? }),
            None => None,
        };
        Ok(State { meta, params, resume, inputs, refine })
    }
}

/// The little-endian f32 values of tensor `name`, every one finite: a NaN or an infinity (a
/// corrupt or hand-edited state, `0xFF` bytes) would make every mask it predicts arbitrary.
///
/// # Errors
/// Kind [`ErrorKind::InvalidState`] naming the tensor, the index and the value.
fn finite_values(name: &str, bytes: &[u8]) -> Result<Vec<f32>, PluginError> {
    let values: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    match values.iter().position(|v| !v.is_finite()) {
        Some(at) => Err(PluginError::new(
            ErrorKind::InvalidState,
            format!(
                "tensor '{name}' holds {} at index {at}, expected finite numbers: the state is corrupt; refit it",
                values[at]
            ),
        )),
        None => Ok(values),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{Allocation, Arch};

    fn state() -> State {
        let net = NetConfig {
            arch: Arch::Equivariant,
            hidden: 4,
            depth: 1,
            film: true,
            allocation: Allocation::Learned,
            rescale: false,
        };
        State {
            meta: Meta {
                format: FORMAT.into(),
                format_version: FORMAT_VERSION,
                plugin_version: "0.1.0".into(),
                sdk_version: "0.2.0".into(),
                net,
                features: "full".into(),
                s_min: 0.3,
                s_max: 0.97,
                fit: FitInfo::default(),
                progress: None,
                units: None,
                base: None,
                refine_inputs: None,
                refine_step: None,
            },
            params: Params::init(&net, 3),
            resume: None,
            inputs: None,
            refine: None,
        }
    }

    #[test]
    fn a_state_round_trips_and_garbage_is_refused_with_invalid_state() {
        let s = state();
        assert_eq!(State::from_bytes(&s.to_bytes()).unwrap(), s);
        let e = State::from_bytes(b"not a state at all").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidState);
        let mut bytes = s.to_bytes();
        let n = bytes.len();
        bytes.truncate(n - 10);
        assert_eq!(State::from_bytes(&bytes).unwrap_err().kind, ErrorKind::InvalidState);
        let mut other = state();
        other.meta.format_version = 99;
        let e = State::from_bytes(&other.to_bytes()).unwrap_err();
        assert!(e.message.contains("v99"), "{e}");
    }

    #[test]
    fn the_unit_stage_and_its_input_statistics_round_trip() {
        let mut s = state();
        s.meta.units = Some(UnitStage { q_max: 0.2, p_dead: 0.01, dim: 2, samples: 10, val_retention: (0.5, 0.6) });
        s.inputs = Some(InputStats { mean: vec![0.5, -1.0], cov: vec![1.0, 0.25, 0.25, 2.0] });
        assert_eq!(State::from_bytes(&s.to_bytes()).unwrap(), s);
        // A stage that claims statistics the file lacks is refused, naming the tensor.
        s.inputs = None;
        let e = State::from_bytes(&s.to_bytes()).unwrap_err();
        assert!(e.kind == ErrorKind::InvalidState && e.message.contains("inputs.mean"), "{e}");
    }

    #[test]
    fn the_refine_inputs_round_trip_and_a_missing_tensor_is_named() {
        let mut s = state();
        s.meta.refine_inputs = Some([3, 2]);
        s.refine = Some(Inputs { dim: 2, values: vec![0.5, -1.0, 2.0, 0.0, 1.0, 3.0] });
        assert_eq!(State::from_bytes(&s.to_bytes()).unwrap(), s);
        s.refine = None;
        let e = State::from_bytes(&s.to_bytes()).unwrap_err();
        assert!(e.kind == ErrorKind::InvalidState && e.message.contains("refine.inputs"), "{e}");
    }

    #[test]
    fn a_state_with_nan_or_0xff_weights_is_refused_naming_the_tensor() {
        let good = state();
        let name = format!("net.{}", good.params.list[0].name);
        for poison in [f32::NAN, f32::INFINITY, f32::from_le_bytes([0xFF; 4])] {
            let mut bad = good.clone();
            bad.params.list[0].values[1] = poison;
            let e = State::from_bytes(&bad.to_bytes()).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidState);
            assert!(
                e.message.contains(&format!("tensor '{name}' holds")) && e.message.contains("at index 1"),
                "{}",
                e.message
            );
        }
    }
}

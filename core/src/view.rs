//! Zero-copy conversion between core's [`Model`] and the SDK's borrowed `ModelRef`.

use hyperprune_sdk::abi_stable::std_types::{RSlice, RStr};
use hyperprune_sdk::{
    LayerKind, LayerRef, ModelRef, NETWORK_INPUT, NO_LAYER, NodeKind, NodeRef, TensorRef, TensorRole,
};

use crate::arch::{ArchSpec, FeatureShape, ParamLayerKind, ParamRole, Source};
use crate::model::Model;

/// The storage a `ModelRef` borrows besides the weights themselves: the architecture JSON,
/// the shapes as `u64` and the graph's nodes. Build once per model, then call
/// [`LayerViews::with_ref`].
pub struct LayerViews<'m> {
    model: &'m Model,
    arch_json: String,
    shapes: Vec<Vec<u64>>,
    nodes: Vec<NodeData>,
}

/// One node's owned data, borrowed by its `NodeRef`.
struct NodeData {
    name: String,
    kind: NodeKind,
    inputs: Vec<u32>,
    output: Vec<u64>,
    layer: u32,
    tensors: Vec<u32>,
}

impl<'m> LayerViews<'m> {
    /// Prepares views of `model`.
    pub fn new(model: &'m Model) -> LayerViews<'m> {
        LayerViews {
            model,
            arch_json: model.spec().to_json(),
            shapes: model.params().iter().map(|p| p.shape.iter().map(|&d| d as u64).collect()).collect(),
            nodes: nodes(model),
        }
    }

    /// Runs `f` with a `ModelRef` whose weight slices point into the model's own buffers.
    pub fn with_ref<R>(&self, f: impl FnOnce(ModelRef<'_>) -> R) -> R {
        let (layers, others, nodes) = self.parts();
        f(self.view(&layers, &others, &nodes))
    }

    /// A `ModelRef` over parts from [`LayerViews::parts`]; for holding several views at once.
    pub fn view<'a>(
        &'a self,
        layers: &'a [LayerRef<'a>],
        others: &'a [TensorRef<'a>],
        nodes: &'a [NodeRef<'a>],
    ) -> ModelRef<'a> {
        ModelRef {
            arch_json: RStr::from_str(&self.arch_json),
            layers: RSlice::from_slice(layers),
            others: RSlice::from_slice(others),
            nodes: RSlice::from_slice(nodes),
        }
    }

    /// The borrowed views of the graph's nodes.
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

    /// The borrowed layer, tensor and node views of the model.
    pub fn parts(&self) -> (Vec<LayerRef<'_>>, Vec<TensorRef<'_>>, Vec<NodeRef<'_>>) {
        let mut layers = Vec::new();
        let mut others = Vec::new();
        for ((p, v), shape) in self.model.params().iter().zip(self.model.values()).zip(&self.shapes) {
            if p.prunable {
                layers.push(LayerRef {
                    name: RStr::from_str(&p.name),
                    kind: match p.kind {
                        ParamLayerKind::Conv2d => LayerKind::Conv2d,
                        ParamLayerKind::Linear => LayerKind::Linear,
                        ParamLayerKind::BatchNorm2d => unreachable!("batch normalisation tensors are never prunable"),
                    },
                    shape: RSlice::from_slice(shape),
                    weights: RSlice::from_slice(v),
                });
            } else {
                others.push(TensorRef {
                    name: RStr::from_str(&p.name),
                    role: match p.role {
                        ParamRole::Scale => TensorRole::Scale,
                        ParamRole::Shift => TensorRole::Shift,
                        ParamRole::RunningMean | ParamRole::RunningVar => TensorRole::Buffer,
                        ParamRole::Bias | ParamRole::Weight => TensorRole::Bias,
                    },
                    shape: RSlice::from_slice(shape),
                    values: RSlice::from_slice(v),
                });
            }
        }
        (layers, others, self.node_refs())
    }
}

/// The graph of `model` as the SDK's nodes: indices into the view's layers (prunable
/// weights, in parameter order) and others (every other tensor, in parameter order).
fn nodes(model: &Model) -> Vec<NodeData> {
    let spec = model.spec();
    let Ok(graph) = spec.graph() else {
        return Vec::new(); // a model always holds a valid spec; an empty graph is the fallback
    };
    let (mut layer_of, mut tensors_of) = (vec![NO_LAYER; graph.nodes.len()], vec![Vec::new(); graph.nodes.len()]);
    let (mut layers, mut others) = (0u32, 0u32);
    for p in model.params() {
        if p.prunable {
            layer_of[p.layer] = layers;
            layers += 1;
        } else {
            tensors_of[p.layer].push(others);
            others += 1;
        }
    }
    graph
        .nodes
        .iter()
        .zip(layer_of)
        .zip(tensors_of)
        .map(|((n, layer), tensors)| NodeData {
            name: n.name.clone(),
            kind: spec.layers[n.layer].kind(),
            inputs: n
                .inputs
                .iter()
                .map(|s| match s {
                    Source::Network => NETWORK_INPUT,
                    Source::Node(j) => *j as u32,
                })
                .collect(),
            output: match n.output {
                FeatureShape::Map { c, h, w } => vec![c as u64, h as u64, w as u64],
                FeatureShape::Flat(f) => vec![f as u64],
            },
            layer,
            tensors,
        })
        .collect()
}

/// Runs `f` with a zero-copy `ModelRef` of `model`.
pub fn model_ref<R>(model: &Model, f: impl FnOnce(ModelRef<'_>) -> R) -> R {
    LayerViews::new(model).with_ref(f)
}

/// What is wrong with a `ModelRef` a plugin handed back.
#[derive(Debug, thiserror::Error)]
#[error("model passed by the plugin is not usable: {0}")]
pub struct ViewError(pub String);

impl Model {
    /// Builds an owned model from a plugin's `ModelRef` (architecture JSON, prunable layers
    /// and other tensors), checking every name and length against the architecture.
    ///
    /// # Errors
    /// [`ViewError`] naming the tensor that is missing or of the wrong length.
    pub fn from_ref(view: &ModelRef<'_>) -> Result<Model, ViewError> {
        let spec = ArchSpec::from_json(view.arch_json.as_str()).map_err(|e| ViewError(e.to_string()))?;
        let params = spec.params().map_err(|e| ViewError(e.to_string()))?;
        let mut values = Vec::with_capacity(params.len());
        for p in &params {
            let found = if p.prunable {
                view.layers.iter().find(|l| l.name.as_str() == p.name).map(|l| l.weights.as_slice())
            } else {
                view.others.iter().find(|t| t.name.as_str() == p.name).map(|t| t.values.as_slice())
            };
            let v = found.ok_or_else(|| ViewError(format!("tensor '{}' is missing", p.name)))?;
            if v.len() != p.numel() {
                return Err(ViewError(format!("tensor '{}' has {} values, {} expected", p.name, v.len(), p.numel())));
            }
            values.push(v.to_vec());
        }
        Model::new(spec, values).map_err(|e| ViewError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resnet_view_carries_its_graph_layers_and_batch_norm_roles() {
        let spec = crate::preset("resnet-s").unwrap();
        let model = Model::zeros(spec).unwrap();
        model_ref(&model, |view| {
            let nodes = view.nodes();
            assert_eq!(nodes.len(), model.spec().layers.len());
            assert_eq!(nodes[0].name(), "conv1");
            assert_eq!(nodes[0].inputs().collect::<Vec<_>>(), [None], "the stem reads the network's input");
            assert_eq!(nodes[0].layer(), Some(0));
            assert_eq!(view.layers()[0].name(), "conv1.weight");
            // bn1 owns scale, shift and two buffers, in that order.
            let bn1 = &nodes[1];
            assert_eq!((bn1.kind, bn1.layer()), (NodeKind::BatchNorm2d, None));
            let roles: Vec<TensorRole> = bn1.tensors().map(|t| view.others[t].role).collect();
            assert_eq!(roles, [TensorRole::Scale, TensorRole::Shift, TensorRole::Buffer, TensorRole::Buffer]);
            assert_eq!(view.others[bn1.tensors().nth(3).unwrap()].name.as_str(), "bn1.running_var");
            // The first block's add joins its bn2 and the stem's relu (an identity shortcut).
            let add = nodes.iter().position(|n| n.name() == "layer1.0.add").unwrap();
            let read: Vec<&str> = nodes[add].inputs().map(|i| nodes[i.unwrap()].name()).collect();
            assert_eq!(read, ["layer1.0.bn2", "relu"]);
            assert_eq!(view.readers(add).map(|r| nodes[r].name()).collect::<Vec<_>>(), ["layer1.0.relu"]);
            let fc = view.node_of_layer(view.layers().len() - 1).unwrap();
            assert_eq!((nodes[fc].kind, nodes[fc].output()), (NodeKind::Linear, vec![10]));
            assert_eq!(Model::from_ref(&view).unwrap(), model);
        });
    }

    #[test]
    fn model_ref_borrows_and_round_trips() {
        let spec = crate::preset("cnn-digits").unwrap();
        let values = spec.params().unwrap().iter().map(|p| (0..p.numel()).map(|i| i as f32).collect()).collect();
        let model = Model::new(spec, values).unwrap();
        let first_ptr = model.values()[0].as_ptr();
        model_ref(&model, |view| {
            assert_eq!(view.layers.len(), 4);
            assert_eq!(view.others.len(), 4);
            assert_eq!(view.layers[0].weights.as_ptr(), first_ptr, "the view must borrow, not copy");
            assert_eq!(Model::from_ref(&view).unwrap(), model);
        });
    }
}

//! Which prunable layers feed which, through the network's graph.
//!
//! A plugin that weighs a weight by its neighbours (LAP's lookahead, path flows, message
//! passing between layers) needs, for each prunable layer, the layers whose output channels
//! are its input channels and the layers that read its output channels. Between two prunable
//! layers a value keeps its channel through every other node kind: batch normalisation,
//! activations, dropout, pooling, global average pooling and flatten (behind a flatten a
//! channel is `h·w` consecutive features, which a plugin's own shape check resolves). An
//! `add` joins channels: each channel of its output is the sum of that channel of every
//! input, so every layer that reaches an input of the `add` produces the channels that the
//! `add`'s readers read. In a ResNet, `layer1.0.conv1` has two producers when its block
//! input is the sum of the stem and an earlier block.
//!
//! A view without a graph (a plugin's own test view) is a chain: each layer's producer is
//! the layer before it.

use crate::model::{ModelRef, NodeKind, TensorRole};

/// How the prunable layers of a model connect.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Links {
    /// For each prunable layer, the prunable layers whose outputs make up its input
    /// channels, in layer order.
    pub producers: Vec<Vec<usize>>,
    /// For each prunable layer, the prunable layers that read its output channels, in
    /// layer order.
    pub consumers: Vec<Vec<usize>>,
    /// For each prunable layer, whether its input also carries the network's input unchanged
    /// (the first layer, or a layer behind an identity shortcut from the input).
    pub reads_network_input: Vec<bool>,
}

impl Links {
    /// Links of a chain of `n` layers: each reads the one before it.
    pub fn chain(n: usize) -> Links {
        Links {
            producers: (0..n).map(|l| l.checked_sub(1).into_iter().collect()).collect(),
            consumers: (0..n).map(|l| if l + 1 < n { vec![l + 1] } else { vec![] }).collect(),
            reads_network_input: (0..n).map(|l| l == 0).collect(),
        }
    }

    /// Whether every layer has at most one producer and one consumer, each its neighbour in
    /// layer order: the links of a chain.
    pub fn is_chain(&self) -> bool {
        *self == Links::chain(self.producers.len())
    }
}

/// What reaches one node's output: the prunable layers whose outputs arrive there with
/// their channels kept, and whether the network's input does.
#[derive(Debug, Clone, Default)]
struct Reach {
    layers: Vec<usize>,
    network: bool,
}

impl ModelRef<'_> {
    /// How the prunable layers connect through the graph (see the module documentation);
    /// a chain when the view has no graph.
    pub fn links(&self) -> Links {
        let n = self.layers().len();
        let nodes = self.nodes();
        if nodes.is_empty() {
            return Links::chain(n);
        }
        let mut reach: Vec<Reach> = Vec::with_capacity(nodes.len());
        let mut links = Links {
            producers: vec![Vec::new(); n],
            consumers: vec![Vec::new(); n],
            reads_network_input: vec![false; n],
        };
        for node in nodes {
            let mut input = Reach::default();
            for source in node.inputs() {
                match source.and_then(|i| reach.get(i)) {
                    Some(r) => {
                        input.layers.extend(&r.layers);
                        input.network |= r.network;
                    }
                    None => input.network = true,
                }
            }
            input.layers.sort_unstable();
            input.layers.dedup();
            let here = match (node.kind, node.layer()) {
                (NodeKind::Conv2d | NodeKind::Linear, Some(layer)) if layer < n => {
                    links.producers[layer] = input.layers.clone();
                    links.reads_network_input[layer] = input.network;
                    Reach { layers: vec![layer], network: false }
                }
                _ => input,
            };
            reach.push(here);
        }
        for (layer, producers) in links.producers.iter().enumerate() {
            for &p in producers {
                links.consumers[p].push(layer);
            }
        }
        links
    }
}

/// The `ε` a factor of [`ModelRef::batchnorm_factors`] adds to the variance: PyTorch's
/// default (the view does not carry a norm's own `eps`; at running variances of order
/// 1e-2 and above the difference is below 0.1 %).
pub const BATCHNORM_EPS: f64 = 1e-5;

impl ModelRef<'_> {
    /// For each prunable layer, the per-output-channel factor `γ / √(running_var + ε)` of the
    /// batch normalisation that reads its output directly (a conv followed by its norm, as in
    /// a ResNet), or `None` when no norm reads it or the norm's tensors are missing or of the
    /// wrong length. Multiplying a layer's output rows by it gives the weights the network
    /// effectively applies in eval mode (up to a per-channel shift).
    pub fn batchnorm_factors(&self) -> Vec<Option<Vec<f64>>> {
        let nodes = self.nodes();
        let others = self.others.as_slice();
        (0..self.layers().len())
            .map(|layer| {
                let node = self.node_of_layer(layer)?;
                let out = self.layers()[layer].shape.first().copied()? as usize;
                let norm = self.readers(node).find(|&r| nodes[r].kind == NodeKind::BatchNorm2d)?;
                let tensors: Vec<_> = nodes[norm].tensors().filter_map(|t| others.get(t)).collect();
                let scale = tensors.iter().find(|t| t.role == TensorRole::Scale)?;
                let var = tensors.iter().find(|t| t.name.as_str().ends_with("running_var"))?;
                (scale.values.len() == out && var.values.len() == out).then(|| {
                    scale
                        .values
                        .iter()
                        .zip(var.values.iter())
                        .map(|(&g, &v)| f64::from(g) / (f64::from(v).max(0.0) + BATCHNORM_EPS).sqrt())
                        .collect()
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use abi_stable::std_types::{RSlice, RStr};

    use super::*;
    use crate::model::{LayerKind, LayerRef, NETWORK_INPUT, NO_LAYER, NodeRef};

    fn node<'a>(name: &'a str, kind: NodeKind, inputs: &'a [u32], layer: u32) -> NodeRef<'a> {
        NodeRef {
            name: RStr::from_str(name),
            kind,
            inputs: RSlice::from_slice(inputs),
            output: RSlice::from_slice(&[]),
            layer,
            tensors: RSlice::from_slice(&[]),
        }
    }

    fn layer(name: &str) -> LayerRef<'_> {
        LayerRef {
            name: RStr::from_str(name),
            kind: LayerKind::Conv2d,
            shape: RSlice::from_slice(&[]),
            weights: RSlice::from_slice(&[]),
        }
    }

    /// stem → bn → relu → [conv a → bn → relu → conv b → bn] + relu-output → relu → fc,
    /// and a projection block: [conv c → conv d] + conv e (1×1 of the block input) → fc.
    #[test]
    fn adds_join_channels_and_identity_shortcuts_carry_producers_forward() {
        let inputs: Vec<Vec<u32>> = vec![
            vec![NETWORK_INPUT], // 0 stem (layer 0)
            vec![0],             // 1 bn
            vec![1],             // 2 relu
            vec![2],             // 3 conv a (layer 1)
            vec![3],             // 4 relu
            vec![4],             // 5 conv b (layer 2)
            vec![5],             // 6 bn
            vec![6, 2],          // 7 add (identity shortcut from relu 2)
            vec![7],             // 8 relu
            vec![8],             // 9 conv c (layer 3)
            vec![9],             // 10 conv d (layer 4)
            vec![8],             // 11 conv e (layer 5, projection of the block input)
            vec![10, 11],        // 12 add
            vec![12],            // 13 global avgpool
            vec![13],            // 14 flatten
            vec![14],            // 15 fc (layer 6)
        ];
        use NodeKind::*;
        let kinds = [
            Conv2d,
            BatchNorm2d,
            Relu,
            Conv2d,
            Relu,
            Conv2d,
            BatchNorm2d,
            Add,
            Relu,
            Conv2d,
            Conv2d,
            Conv2d,
            Add,
            GlobalAvgPool,
            Flatten,
            Linear,
        ];
        let layer_of = [
            0, NO_LAYER, NO_LAYER, 1, NO_LAYER, 2, NO_LAYER, NO_LAYER, NO_LAYER, 3, 4, 5, NO_LAYER, NO_LAYER, NO_LAYER,
            6,
        ];
        let nodes: Vec<NodeRef<'_>> = (0..kinds.len()).map(|i| node("n", kinds[i], &inputs[i], layer_of[i])).collect();
        let layers: Vec<LayerRef<'_>> = (0..7).map(|_| layer("w")).collect();
        let model = ModelRef {
            arch_json: RStr::from_str("{}"),
            layers: RSlice::from_slice(&layers),
            others: RSlice::from_slice(&[]),
            nodes: RSlice::from_slice(&nodes),
        };
        let links = model.links();
        assert_eq!(links.producers, vec![vec![], vec![0], vec![1], vec![0, 2], vec![3], vec![0, 2], vec![4, 5]]);
        assert_eq!(links.consumers, vec![vec![1, 3, 5], vec![2], vec![3, 5], vec![4], vec![6], vec![6], vec![]]);
        assert_eq!(links.reads_network_input, vec![true, false, false, false, false, false, false]);
        assert!(!links.is_chain());
    }

    #[test]
    fn a_view_without_a_graph_is_a_chain() {
        let layers: Vec<LayerRef<'_>> = (0..3).map(|_| layer("w")).collect();
        let model = ModelRef {
            arch_json: RStr::from_str("{}"),
            layers: RSlice::from_slice(&layers),
            others: RSlice::from_slice(&[]),
            nodes: RSlice::from_slice(&[]),
        };
        let links = model.links();
        assert!(links.is_chain());
        assert_eq!(links.producers, vec![vec![], vec![0], vec![1]]);
        assert_eq!(links.consumers, vec![vec![1], vec![2], vec![]]);
    }
}

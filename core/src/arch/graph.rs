//! A spec lowered to a typed graph: named nodes with explicit inputs and inferred shapes.
//!
//! Every spec is lowered here, once: a sequential spec (no `inputs` anywhere) is a chain,
//! each node reading the one before it and the first reading the network's input; a graph
//! spec names its nodes and lists each node's `inputs` by name (`"input"` is the network's
//! input). Nodes come after their inputs, so the list order is a topological order, and the
//! last node is the network's output. Shapes, parameters and the checks a reader applies
//! ([`ArchSpec::graph`]) all come from this one walk, so every consumer (engines, metrics,
//! the SDK's model view) sees the same structure.
//!
//! What is refused, each naming the node and the field: an input that names no node, a cycle
//! (or a node listed before one of its inputs), an `add` of shapes that differ or of fewer
//! than two inputs, a second input to a one-input node, a node name used twice, a node no
//! later node reads (only the last node is the output), and every size check of
//! [`ArchSpec::shapes`].

use std::collections::HashMap;

use super::ArchError;
use super::spec::{ArchSpec, FeatureShape, LayerSpec, MAX_ELEMENTS};

/// The name that stands for the network's input in a node's `inputs`.
pub const NETWORK_INPUT: &str = "input";

/// Where a node reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The network's input.
    Network,
    /// The output of node `i` (an index into [`Graph::nodes`], always before the reader).
    Node(usize),
}

/// One node: a layer of the spec, where it reads from and what it produces.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The node's name: its `name` in the spec, else its index.
    pub name: String,
    /// Index of its layer in [`ArchSpec::layers`] (equal to its own index).
    pub layer: usize,
    /// What it reads, in order.
    pub inputs: Vec<Source>,
    /// The shape of what it reads (for an `add`, the shape all its inputs share).
    pub input: FeatureShape,
    /// The shape it produces.
    pub output: FeatureShape,
}

/// A spec's network as a graph. Nodes are in topological order; the last is the output.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// The nodes, one per layer of the spec, in the spec's order.
    pub nodes: Vec<Node>,
}

impl Graph {
    /// Whether every node reads exactly the node before it (the first the network's input):
    /// a sequential network.
    pub fn is_chain(&self) -> bool {
        self.nodes.iter().enumerate().all(|(i, n)| {
            let previous = if i == 0 { Source::Network } else { Source::Node(i - 1) };
            n.inputs == [previous]
        })
    }

    /// The nodes that read node `i`'s output.
    pub fn readers(&self, i: usize) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(move |n| n.inputs.contains(&Source::Node(i)))
    }
}

impl ArchSpec {
    /// Lowers the spec to its graph, checking wiring and shapes.
    ///
    /// # Errors
    /// [`ArchError::Invalid`] naming the node (its layer index and name) and the field: see
    /// the module documentation for what is refused.
    pub fn graph(&self) -> Result<Graph, ArchError> {
        let [c, h, w] = self.input;
        if c == 0 || h == 0 || w == 0 {
            return Err(self.invalid(None, "field 'input': dimensions must all be positive"));
        }
        if self.classes < 2 {
            return Err(self.invalid(None, "field 'classes' must be at least 2"));
        }
        let network = FeatureShape::Map { c, h, w };
        if network.checked_numel().is_none_or(|n| n > MAX_ELEMENTS) {
            return Err(self.invalid(
                None,
                &format!("field 'input': {:?} is too large (at most {MAX_ELEMENTS} scalars)", self.input),
            ));
        }
        if self.layers.is_empty() {
            return Err(self.invalid(None, "field 'layers' is empty; a network needs at least one layer"));
        }
        let names: Vec<String> = (0..self.layers.len()).map(|i| self.node_name(i)).collect();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            if name == NETWORK_INPUT {
                return Err(self.node_invalid(i, &format!("field 'name': '{NETWORK_INPUT}' names the network's input")));
            }
            if let Some(first) = index.insert(name, i) {
                return Err(self.node_invalid(i, &format!("field 'name': '{name}' is also the name of layer {first}")));
            }
        }
        let mut nodes: Vec<Node> = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let inputs = self.sources(i, &names, &index)?;
            let shape = |s: Source| match s {
                Source::Network => network,
                Source::Node(j) => nodes[j].output,
            };
            let input = match layer {
                LayerSpec::Add => {
                    if inputs.len() < 2 {
                        return Err(self.node_invalid(
                            i,
                            &format!("field 'inputs': add sums two or more inputs, got {}", inputs.len()),
                        ));
                    }
                    let first = shape(inputs[0]);
                    if let Some(&other) = inputs.iter().find(|s| shape(**s) != first) {
                        return Err(self.node_invalid(
                            i,
                            &format!(
                                "field 'inputs': cannot add {:?} ('{}') and {:?} ('{}'); the shapes must match",
                                first,
                                self.source_name(inputs[0], &names),
                                shape(other),
                                self.source_name(other, &names)
                            ),
                        ));
                    }
                    first
                }
                _ if inputs.len() != 1 => {
                    return Err(self.node_invalid(
                        i,
                        &format!("field 'inputs': this layer reads one input, got {}", inputs.len()),
                    ));
                }
                _ => shape(inputs[0]),
            };
            let output = self.layer_output(i, layer, input)?;
            if output.checked_numel().is_none_or(|n| n > MAX_ELEMENTS) {
                return Err(self
                    .node_invalid(i, &format!("the output {output:?} is too large (at most {MAX_ELEMENTS} scalars)")));
            }
            nodes.push(Node { name: names[i].clone(), layer: i, inputs, input, output });
        }
        let graph = Graph { nodes };
        let last = graph.nodes.len() - 1;
        if let Some(unused) = (0..last).find(|&i| graph.readers(i).next().is_none()) {
            return Err(self
                .node_invalid(unused, "no later layer reads its output; only the last layer is the network's output"));
        }
        match graph.nodes[last].output {
            FeatureShape::Flat(n) if n == self.classes => Ok(graph),
            other => Err(self.invalid(
                None,
                &format!(
                    "the network must end in {} flat features (one per class), it ends in {:?}",
                    self.classes, other
                ),
            )),
        }
    }

    /// Node `i`'s name: its `name` (of the layer, or of its link), else its index.
    pub fn node_name(&self, i: usize) -> String {
        let own = match &self.layers[i] {
            LayerSpec::Conv2d { name, .. } | LayerSpec::Linear { name, .. } | LayerSpec::BatchNorm2d { name, .. } => {
                name.clone()
            }
            _ => None,
        };
        own.or_else(|| self.links.get(i).and_then(|l| l.name.clone())).unwrap_or_else(|| i.to_string())
    }

    /// Resolves node `i`'s inputs: its link's `inputs`, else the node before it.
    fn sources(&self, i: usize, names: &[String], index: &HashMap<&str, usize>) -> Result<Vec<Source>, ArchError> {
        let Some(listed) = self.links.get(i).and_then(|l| l.inputs.as_ref()) else {
            return Ok(vec![if i == 0 { Source::Network } else { Source::Node(i - 1) }]);
        };
        listed
            .iter()
            .map(|name| {
                if name == NETWORK_INPUT {
                    return Ok(Source::Network);
                }
                match index.get(name.as_str()) {
                    Some(&j) if j < i => Ok(Source::Node(j)),
                    Some(&j) => Err(self.node_invalid(i, &self.forward_reference(i, j, names))),
                    None => Err(self.node_invalid(
                        i,
                        &format!(
                            "field 'inputs' names '{name}', which is no layer of the network (the network's input is \
                             '{NETWORK_INPUT}')"
                        ),
                    )),
                }
            })
            .collect()
    }

    /// Why node `i` may not read node `j >= i`: a cycle, when `j` reads `i` back (directly
    /// or through other nodes), else an order the lowering does not take.
    fn forward_reference(&self, i: usize, j: usize, names: &[String]) -> String {
        // Follow the explicit inputs back from `j`; reaching `i` closes a cycle.
        let inputs_of = |k: usize| -> Vec<usize> {
            match self.links.get(k).and_then(|l| l.inputs.as_ref()) {
                Some(listed) => listed.iter().filter_map(|n| names.iter().position(|m| m == n)).collect::<Vec<usize>>(),
                None if k > 0 => vec![k - 1],
                None => vec![],
            }
        };
        let mut path = vec![j];
        let mut seen = vec![false; self.layers.len()];
        if let Some(cycle) = find_path(j, i, &inputs_of, &mut seen, &mut path) {
            let mut names_on: Vec<&str> = cycle.iter().map(|&k| names[k].as_str()).collect();
            names_on.insert(0, names[i].as_str());
            return format!("field 'inputs' makes a cycle: {}", names_on.join(" <- "));
        }
        format!("field 'inputs' names '{}', which comes later in the list; list every layer after its inputs", names[j])
    }

    fn source_name<'a>(&self, source: Source, names: &'a [String]) -> &'a str {
        match source {
            Source::Network => NETWORK_INPUT,
            Source::Node(j) => &names[j],
        }
    }

    pub(super) fn node_invalid(&self, i: usize, message: &str) -> ArchError {
        let name = self.node_name(i);
        let message = if name == i.to_string() { message.to_string() } else { format!("node '{name}': {message}") };
        self.invalid(Some(i), &message)
    }
}

/// A path of inputs from `from` back to `to`, if there is one (depth first).
fn find_path(
    from: usize,
    to: usize,
    inputs_of: &dyn Fn(usize) -> Vec<usize>,
    seen: &mut [bool],
    path: &mut Vec<usize>,
) -> Option<Vec<usize>> {
    if from == to {
        return Some(path.clone());
    }
    if std::mem::replace(&mut seen[from], true) {
        return None;
    }
    for next in inputs_of(from) {
        path.push(next);
        if let Some(found) = find_path(next, to, inputs_of, seen, path) {
            return Some(found);
        }
        path.pop();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-block residual network as JSON, with `extra` spliced into the layer list's end
    /// before the head, and the fields of layer `at` replaced by `patch`.
    fn block(patch: Option<(usize, &str)>) -> String {
        let mut layers = vec![
            r#"{"type": "conv2d", "name": "conv1", "out_channels": 4, "kernel": 3, "padding": 1, "bias": false}"#,
            r#"{"type": "batchnorm2d", "name": "bn1"}"#,
            r#"{"type": "relu", "name": "relu"}"#,
            r#"{"type": "conv2d", "name": "conv2", "out_channels": 4, "kernel": 3, "padding": 1, "bias": false}"#,
            r#"{"type": "batchnorm2d", "name": "bn2"}"#,
            r#"{"type": "add", "name": "sum", "inputs": ["bn2", "relu"]}"#,
            r#"{"type": "relu", "name": "out"}"#,
            r#"{"type": "global_avgpool", "name": "pool"}"#,
            r#"{"type": "flatten"}"#,
            r#"{"type": "linear", "name": "fc", "out_features": 10}"#,
        ];
        if let Some((at, layer)) = patch {
            layers[at] = layer;
        }
        format!(r#"{{"name": "block", "input": [1, 8, 8], "classes": 10, "layers": [{}]}}"#, layers.join(",\n"))
    }

    fn refused(json: &str) -> String {
        ArchSpec::from_json(json).expect_err("refused").to_string()
    }

    #[test]
    fn a_residual_block_lowers_to_its_graph_with_shapes_and_roles() {
        let spec = ArchSpec::from_json(&block(None)).unwrap();
        let graph = spec.graph().unwrap();
        let sum = &graph.nodes[5];
        assert_eq!((sum.name.as_str(), &sum.inputs), ("sum", &vec![Source::Node(4), Source::Node(2)]));
        assert_eq!(graph.nodes[7].output, FeatureShape::Map { c: 4, h: 1, w: 1 });
        assert_eq!(graph.readers(2).map(|n| n.name.as_str()).collect::<Vec<_>>(), ["conv2", "sum"]);
        assert!(!graph.is_chain());
        let roles: Vec<(String, crate::arch::ParamRole)> =
            spec.params().unwrap().into_iter().filter(|p| p.layer == 1).map(|p| (p.name, p.role)).collect();
        use crate::arch::ParamRole::*;
        assert_eq!(
            roles,
            [
                ("bn1.weight".into(), Scale),
                ("bn1.bias".into(), Shift),
                ("bn1.running_mean".into(), RunningMean),
                ("bn1.running_var".into(), RunningVar)
            ]
        );
        // A sequential preset is a chain, and its JSON has no wiring fields.
        let cnn = crate::preset("cnn-s").unwrap();
        assert!(cnn.graph().unwrap().is_chain() && cnn.links.is_empty());
    }

    #[test]
    fn every_malformed_graph_is_refused_naming_the_node_and_the_field() {
        let cases = [
            // A dangling input.
            (
                5,
                r#"{"type": "add", "name": "sum", "inputs": ["bn2", "nowhere"]}"#,
                "node 'sum': field 'inputs' names 'nowhere', which is no layer",
            ),
            // A cycle: conv1 reads the block's output.
            (
                0,
                r#"{"type": "conv2d", "name": "conv1", "out_channels": 4, "kernel": 3, "padding": 1, "inputs": ["out"]}"#,
                "node 'conv1': field 'inputs' makes a cycle: conv1 <- out <- sum",
            ),
            // An add of mismatched shapes (4 channels and the 1-channel input).
            (
                5,
                r#"{"type": "add", "name": "sum", "inputs": ["bn2", "input"]}"#,
                "node 'sum': field 'inputs': cannot add",
            ),
            // An add of one input.
            (5, r#"{"type": "add", "name": "sum", "inputs": ["bn2"]}"#, "add sums two or more inputs, got 1"),
            // Two inputs to a one-input layer.
            (
                6,
                r#"{"type": "relu", "name": "out", "inputs": ["sum", "relu"]}"#,
                "node 'out': field 'inputs': this layer reads one input, got 2",
            ),
            // An unknown kind.
            (6, r#"{"type": "swish", "name": "out"}"#, "layer 6: unknown variant `swish`"),
            // A name used twice.
            (4, r#"{"type": "batchnorm2d", "name": "bn1"}"#, "field 'name': 'bn1' is also the name of layer 1"),
            // The network's input's name taken.
            (2, r#"{"type": "relu", "name": "input"}"#, "field 'name': 'input' names the network's input"),
            // A node nobody reads (bn2 is skipped by the add).
            (
                5,
                r#"{"type": "add", "name": "sum", "inputs": ["conv2", "relu"]}"#,
                "node 'bn2': no later layer reads its output",
            ),
            // A size that cannot fit in memory.
            (
                3,
                r#"{"type": "conv2d", "name": "conv2", "out_channels": 1099511627776, "kernel": 3, "padding": 1}"#,
                "too large",
            ),
            // Batch normalisation's fields, and of flat features.
            (1, r#"{"type": "batchnorm2d", "name": "bn1", "eps": -1}"#, "node 'bn1': field 'eps' is -1"),
            (1, r#"{"type": "batchnorm2d", "name": "bn1", "momentum": 2}"#, "node 'bn1': field 'momentum' is 2"),
            (9, r#"{"type": "batchnorm2d", "name": "fc"}"#, "batchnorm2d needs a [C,H,W] input"),
            // Wiring fields of the wrong type.
            (
                5,
                r#"{"type": "add", "name": "sum", "inputs": "bn2"}"#,
                "layer 5: field 'inputs' is \"bn2\", expected a list of names",
            ),
            (6, r#"{"type": "relu", "name": 7}"#, "layer 6: field 'name' is 7, expected a string"),
        ];
        for (at, layer, expected) in cases {
            let e = refused(&block(Some((at, layer))));
            assert!(e.contains(expected), "{layer}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        // A layer listed before its input, without a cycle: conv1 reads conv2, which reads
        // the network's input.
        let json = block(Some((
            0,
            r#"{"type": "conv2d", "name": "conv1", "out_channels": 4, "kernel": 3, "padding": 1, "inputs": ["conv2"]}"#,
        )));
        let json = json.replace(
            r#"{"type": "conv2d", "name": "conv2", "out_channels": 4, "kernel": 3, "padding": 1, "bias": false}"#,
            r#"{"type": "conv2d", "name": "conv2", "out_channels": 4, "kernel": 3, "padding": 1, "inputs": ["input"]}"#,
        );
        assert!(
            refused(&json).contains("node 'conv1': field 'inputs' names 'conv2', which comes later in the list"),
            "{}",
            refused(&json)
        );
    }

    #[test]
    fn property_mutated_graph_specs_never_panic_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resnet-s.json");
        let valid = crate::preset("resnet-s").unwrap().to_json();
        let tally = crate::mutation::check_reader("graph spec", valid.as_bytes(), &path, 2000, 25, ArchSpec::read);
        assert!(tally.refused > 1000 && tally.accepted > 0, "{tally:?}");
    }
}

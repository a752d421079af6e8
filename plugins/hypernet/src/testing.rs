//! Networks for the unit tests: layer shapes of the presets, seeded weights, and the views
//! a host would hand over.

use hyperprune_sdk::abi_stable::std_types::{RSlice, RStr};
use hyperprune_sdk::rng::SplitMix64;
use hyperprune_sdk::{LayerKind, LayerRef, ModelRef, NETWORK_INPUT, NO_LAYER, NodeKind, NodeRef, TensorRef};

/// A network owned by a test.
#[derive(Debug, Clone)]
pub struct TestNet {
    pub arch: String,
    pub names: Vec<String>,
    pub kinds: Vec<LayerKind>,
    pub shapes: Vec<Vec<u64>>,
    pub weights: Vec<Vec<f32>>,
    pub bias_names: Vec<String>,
    pub bias_shapes: Vec<Vec<u64>>,
    pub biases: Vec<Vec<f32>>,
    /// The graph, as (kind, inputs, prunable layer or `NO_LAYER`) per node; empty for a chain.
    pub nodes: Vec<(NodeKind, Vec<u32>, u32)>,
}

impl TestNet {
    /// Layers given as shapes (4-d = conv, 2-d = linear), Gaussian-ish weights and biases.
    pub fn new(arch: &str, shapes: &[&[u64]], seed: u64) -> TestNet {
        let mut rng = SplitMix64::new(seed);
        let mut gauss = move || (0..4).map(|_| rng.next_f32()).sum::<f32>() - 2.0;
        let mut net = TestNet {
            arch: format!("{{\"name\":\"{arch}\"}}"),
            names: vec![],
            kinds: vec![],
            shapes: vec![],
            weights: vec![],
            bias_names: vec![],
            bias_shapes: vec![],
            biases: vec![],
            nodes: vec![],
        };
        for (l, shape) in shapes.iter().enumerate() {
            let n: u64 = shape.iter().product();
            net.names.push(format!("{l}.weight"));
            net.kinds.push(if shape.len() == 4 { LayerKind::Conv2d } else { LayerKind::Linear });
            net.shapes.push(shape.to_vec());
            net.weights.push((0..n).map(|_| gauss() * 0.3).collect());
            net.bias_names.push(format!("{l}.bias"));
            net.bias_shapes.push(vec![shape[0]]);
            net.biases.push((0..shape[0]).map(|_| gauss() * 0.1).collect());
        }
        net
    }

    /// `cnn-s`: 28×28 input, three convs, two linear layers.
    pub fn cnn_s(width: u64, seed: u64) -> TestNet {
        let (a, b, c) = (8 * width, 6 * width, 4 * width);
        TestNet::new("cnn-s", &[&[a, 1, 5, 5], &[b, a, 5, 5], &[c, b, 2, 2], &[20, c * 9], &[10, 20]], seed)
    }

    /// `lenet5`: two convs and three linear layers.
    pub fn lenet5(seed: u64) -> TestNet {
        TestNet::new("lenet5", &[&[6, 1, 5, 5], &[16, 6, 5, 5], &[120, 256], &[84, 120], &[10, 84]], seed)
    }

    /// A residual network: a stem conv, one block of two convs whose output is added to the
    /// stem's (an identity shortcut), global average pooling and a linear head. The stem's
    /// and the block's output channels are joined by the `add`.
    pub fn residual(seed: u64) -> TestNet {
        let mut net = TestNet::new("resnet-test", &[&[4, 1, 3, 3], &[6, 4, 3, 3], &[4, 6, 3, 3], &[10, 4]], seed);
        let none = NO_LAYER;
        net.nodes = vec![
            (NodeKind::Conv2d, vec![NETWORK_INPUT], 0),
            (NodeKind::Relu, vec![0], none),
            (NodeKind::Conv2d, vec![1], 1),
            (NodeKind::Relu, vec![2], none),
            (NodeKind::Conv2d, vec![3], 2),
            (NodeKind::Add, vec![4, 1], none),
            (NodeKind::Relu, vec![5], none),
            (NodeKind::GlobalAvgPool, vec![6], none),
            (NodeKind::Flatten, vec![7], none),
            (NodeKind::Linear, vec![8], 3),
        ];
        net
    }

    /// Permutes the output units (rows, and biases) of layer `l` by `perm`: new unit `j` is
    /// old unit `perm[j]`.
    pub fn permute_rows(&mut self, l: usize, perm: &[usize]) {
        let row = self.weights[l].len() / perm.len();
        let (old, old_b) = (self.weights[l].clone(), self.biases[l].clone());
        for (j, &src) in perm.iter().enumerate() {
            self.weights[l][j * row..(j + 1) * row].copy_from_slice(&old[src * row..(src + 1) * row]);
            self.biases[l][j] = old_b[src];
        }
    }

    /// Permutes the input units (columns; every kernel position of one) of layer `l`.
    pub fn permute_cols(&mut self, l: usize, perm: &[usize]) {
        let (rows, inputs) = (self.shapes[l][0] as usize, self.shapes[l][1] as usize);
        assert_eq!(inputs, perm.len());
        let block = self.weights[l].len() / (rows * inputs);
        let old = self.weights[l].clone();
        for r in 0..rows {
            let base = r * inputs * block;
            for (j, &src) in perm.iter().enumerate() {
                self.weights[l][base + j * block..base + (j + 1) * block]
                    .copy_from_slice(&old[base + src * block..base + (src + 1) * block]);
            }
        }
    }

    /// Permutes the output units of layer `l` by `perm` (new unit `j` is old unit
    /// `perm[j]`), and the matching inputs of layer `l + 1` (channels, also through a flatten).
    pub fn permute_units(&mut self, l: usize, perm: &[usize]) {
        let out = self.shapes[l][0] as usize;
        assert_eq!(perm.len(), out);
        let row = self.weights[l].len() / out;
        let old = self.weights[l].clone();
        for (j, &src) in perm.iter().enumerate() {
            self.weights[l][j * row..(j + 1) * row].copy_from_slice(&old[src * row..(src + 1) * row]);
        }
        let old_b = self.biases[l].clone();
        for (j, &src) in perm.iter().enumerate() {
            self.biases[l][j] = old_b[src];
        }
        let next = &self.shapes[l + 1];
        let (rows, inputs) = (next[0] as usize, next[1] as usize);
        assert!(inputs.is_multiple_of(out), "layer {} does not read layer {l}'s units", l + 1);
        let block = self.weights[l + 1].len() / (rows * out);
        let old = self.weights[l + 1].clone();
        for r in 0..rows {
            for (j, &src) in perm.iter().enumerate() {
                let base = r * out * block;
                self.weights[l + 1][base + j * block..base + (j + 1) * block]
                    .copy_from_slice(&old[base + src * block..base + (src + 1) * block]);
            }
        }
    }

    /// Runs `f` on a view of the network.
    pub fn with_view<R>(&self, f: impl FnOnce(ModelRef<'_>) -> R) -> R {
        let (layers, others) = self.parts();
        let nodes: Vec<NodeRef<'_>> = self
            .nodes
            .iter()
            .map(|(kind, inputs, layer)| NodeRef {
                name: RStr::from_str("n"),
                kind: *kind,
                inputs: RSlice::from_slice(inputs),
                output: RSlice::from_slice(&[]),
                layer: *layer,
                tensors: RSlice::from_slice(&[]),
            })
            .collect();
        f(ModelRef { nodes: RSlice::from_slice(&nodes), ..model(&self.arch, &layers, &others) })
    }

    /// The borrowed parts of a view.
    pub fn parts(&self) -> (Vec<LayerRef<'_>>, Vec<TensorRef<'_>>) {
        let layers: Vec<LayerRef<'_>> = (0..self.names.len())
            .map(|i| LayerRef {
                name: RStr::from_str(&self.names[i]),
                kind: self.kinds[i],
                shape: RSlice::from_slice(&self.shapes[i]),
                weights: RSlice::from_slice(&self.weights[i]),
            })
            .collect();
        let others: Vec<TensorRef<'_>> = (0..self.bias_names.len())
            .map(|i| TensorRef {
                name: RStr::from_str(&self.bias_names[i]),
                role: hyperprune_sdk::TensorRole::Bias,
                shape: RSlice::from_slice(&self.bias_shapes[i]),
                values: RSlice::from_slice(&self.biases[i]),
            })
            .collect();
        (layers, others)
    }
}

/// A view over borrowed parts.
pub fn model<'a>(arch: &'a str, layers: &'a [LayerRef<'a>], others: &'a [TensorRef<'a>]) -> ModelRef<'a> {
    ModelRef {
        arch_json: RStr::from_str(arch),
        layers: RSlice::from_slice(layers),
        others: RSlice::from_slice(others),
        nodes: RSlice::from_slice(&[]),
    }
}

/// A seeded permutation of `0..n`.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

//! The hypernetwork: per-weight features and a sparsity in, one score per weight out.
//!
//! Two architectures share one parameter store and one sparsity conditioning:
//!
//! - **pointwise**: an MLP applied to every weight's feature row on its own. In the
//!   neural-functional literature a pointwise model predicted lottery-ticket masks as well
//!   as the full equivariant network, so it is the strong baseline.
//! - **equivariant** (NFN-style): hidden vectors live on the weights; every layer mixes a
//!   weight's vector with the means over its row (output unit), its column (input unit),
//!   its layer, and the neighbouring layers' matching units, broadcast back. A layer is
//!   viewed as `[out, in, k]` (see [`crate::geometry`]): kernel positions are a separate
//!   axis with shared weights, so no map ever has `(k²c)²` entries.
//!
//! Both condition on the requested sparsity with FiLM on every hidden layer, from an
//! embedding of `s` and `u = log(1/(1−s)) / log 32` (0 dense, 1 at 32×). The score is a
//! residual on magnitude pruning: `skip · base + head(h)`, the base being the model-wide
//! rank of `|w|` or of layer-normalised `|w|` (see [`crate::base`]), with the head
//! starting at zero, so an untrained network prunes by magnitude. A separate small head
//! predicts, from `s` alone, the threshold that keeps `1 − s` of the weights on the
//! model's *standardised* scores (`(score − mean) / std` over its weights; raw scores may
//! drift by any constant, which top-k ignores), which is what `mask=threshold` prunes at.
//!
//! Parameters are plain `Vec<f32>`s (the optimiser and the state file work on them); each
//! forward builds burn tensors from them, so the same code runs with autodiff (fitting) and
//! without (pruning).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, activation};
use hyperprune_sdk::rng::SplitMix64;

use crate::features::{Encoded, FEATURES, MODEL_RANK};

/// Size of the sparsity embedding.
pub const EMBED: usize = 6;

/// Hidden width of the conditioning and threshold heads.
const COND: usize = 16;

/// Features per output unit of the `rescale=true` head (see [`crate::rescale`]): five of the
/// unit under its mask, then the sparsity embedding.
pub const SCALE_ROW_FEATURES: usize = 5 + EMBED;

/// Hidden width of the `rescale=true` head.
pub const SCALE_HIDDEN: usize = 16;

/// The `rescale=true` head's parameter names, in [`Params::init`] order.
pub const SCALE_NAMES: [&str; 4] = ["scale.w1", "scale.b1", "scale.w2", "scale.b2"];

/// The two architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// A per-weight MLP.
    Pointwise,
    /// NFN-style permutation-equivariant layers.
    Equivariant,
}

/// How the kept budget is split between layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Allocation {
    /// The network's scores compete across layers: it chooses the split too.
    #[default]
    Learned,
    /// Global magnitude pruning's split (with the floors): the network only chooses which
    /// weights of each layer to keep (an ablation).
    Magnitude,
}

/// The shape of a hypernetwork.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetConfig {
    /// Architecture.
    pub arch: Arch,
    /// Hidden channels.
    pub hidden: usize,
    /// Hidden layers after the input projection.
    pub depth: usize,
    /// FiLM conditioning on the sparsity (off: one ranking for every sparsity).
    pub film: bool,
    /// How the budget is split between layers.
    #[serde(default)]
    pub allocation: Allocation,
    /// A head that scales each output unit's kept weights (`rescale=true`; see
    /// [`crate::rescale`]).
    #[serde(default)]
    pub rescale: bool,
}

/// One named parameter tensor, `[rows, cols]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Name, e.g. `"in.w"`.
    pub name: String,
    /// `[rows, cols]`.
    pub shape: [usize; 2],
    /// Values.
    pub values: Vec<f32>,
}

/// Every parameter of a hypernetwork, in a fixed order.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// The tensors.
    pub list: Vec<Param>,
}

impl Params {
    /// Seeded initialisation: weights `U(−a, a)`, `a = 1/√fan_in` (PyTorch's default),
    /// biases zero; the score head, the FiLM maps and the threshold output start at zero
    /// and the skip at one, so an untrained network is magnitude pruning with an identity
    /// conditioning.
    pub fn init(config: &NetConfig, seed: u64) -> Params {
        let mut rng = SplitMix64::new(seed ^ 0x4859_5045_524E_4554);
        let h = config.hidden;
        let mut list = Vec::new();
        let mut dense = |name: &str, rows: usize, cols: usize, zero: bool| {
            let a = 1.0 / (rows as f32).sqrt();
            let values = (0..rows * cols).map(|_| if zero { 0.0 } else { (2.0 * rng.next_f32() - 1.0) * a }).collect();
            list.push(Param { name: name.into(), shape: [rows, cols], values });
        };
        dense("in.w", FEATURES, h, false);
        dense("in.b", 1, h, true);
        for d in 0..config.depth {
            match config.arch {
                Arch::Pointwise => dense(&format!("h{d}.w"), h, h, false),
                Arch::Equivariant => {
                    for part in ["self", "row", "col", "layer", "prev", "next"] {
                        dense(&format!("h{d}.{part}"), h, h, false);
                    }
                }
            }
            dense(&format!("h{d}.b"), 1, h, true);
        }
        dense("film.w", EMBED, COND, false);
        dense("film.b", 1, COND, true);
        for d in 0..=config.depth {
            dense(&format!("film{d}.gamma"), COND, h, true);
            dense(&format!("film{d}.beta"), COND, h, true);
        }
        dense("out.w", h, 1, true);
        dense("out.b", 1, 1, true);
        dense("thr.w1", EMBED, COND, false);
        dense("thr.b1", 1, COND, true);
        dense("thr.w2", COND, 1, true);
        dense("thr.b2", 1, 1, true);
        if config.rescale {
            dense(SCALE_NAMES[0], SCALE_ROW_FEATURES, SCALE_HIDDEN, false);
            dense(SCALE_NAMES[1], 1, SCALE_HIDDEN, true);
            dense(SCALE_NAMES[2], SCALE_HIDDEN, 1, true);
            dense(SCALE_NAMES[3], 1, 1, true);
        }
        list.push(Param { name: "skip".into(), shape: [1, 1], values: vec![1.0] });
        Params { list }
    }

    /// Number of scalars.
    pub fn count(&self) -> usize {
        self.list.iter().map(|p| p.values.len()).sum()
    }

    /// Whether `other` has the same names and shapes.
    pub fn same_layout(&self, other: &Params) -> bool {
        self.list.len() == other.list.len()
            && self.list.iter().zip(&other.list).all(|(a, b)| a.name == b.name && a.shape == b.shape)
    }

    /// The parameters as tensors on `device`.
    pub fn tensors<B: Backend>(&self, device: &B::Device) -> Vec<Tensor<B, 2>> {
        self.list.iter().map(|p| Tensor::from_data(TensorData::new(p.values.clone(), p.shape), device)).collect()
    }
}

/// The sparsity embedding: `[s, u, u², sin πu, cos πu, 1]`, `u = log(1/(1−s)) / log 32`.
pub fn embed(sparsity: f64) -> [f32; EMBED] {
    let u = ((1.0 / (1.0 - sparsity.clamp(0.0, 0.9999))).ln() / 32f64.ln()) as f32;
    let pi = std::f32::consts::PI;
    [sparsity as f32, u, u * u, (pi * u).sin(), (pi * u).cos(), 1.0]
}

/// What a forward pass returns.
pub struct Output<B: Backend> {
    /// One score per prunable weight, layer order: `[p]`.
    pub scores: Tensor<B, 1>,
    /// The predicted threshold for this sparsity, on standardised scores: `[1]`.
    pub threshold: Tensor<B, 1>,
}

/// Looks parameters up by name in the order of [`Params::init`].
struct Lookup<'a, B: Backend> {
    names: Vec<&'a str>,
    tensors: &'a [Tensor<B, 2>],
}

impl<B: Backend> Lookup<'_, B> {
    fn get(&self, name: &str) -> Tensor<B, 2> {
        let i = self.names.iter().position(|n| *n == name).unwrap_or_else(|| panic!("no parameter '{name}'"));
        self.tensors[i].clone()
    }
}

/// Scores for one encoded model at one sparsity.
///
/// # Shapes
/// - `tensors`: as [`Params::tensors`]; `features.data`: `[p, FEATURES]`; `base` (the
///   score's residual base, default the model-wide magnitude rank): `[p]`
/// - returns scores `[p]` and a threshold `[1]`
pub fn forward<B: Backend>(
    config: &NetConfig,
    params: &Params,
    tensors: &[Tensor<B, 2>],
    features: &Encoded,
    x: Tensor<B, 2>,
    base: Option<&[f32]>,
    sparsity: f64,
) -> Output<B> {
    let net = Lookup { names: params.list.iter().map(|p| p.name.as_str()).collect(), tensors };
    let device = x.device();
    let e = Tensor::<B, 2>::from_data(TensorData::new(embed(sparsity).to_vec(), [1, EMBED]), &device);
    let cond = activation::tanh(e.clone().matmul(net.get("film.w")) + net.get("film.b"));
    let film = |h: Tensor<B, 2>, d: usize| -> Tensor<B, 2> {
        if !config.film {
            return h;
        }
        let gamma = cond.clone().matmul(net.get(&format!("film{d}.gamma")));
        let beta = cond.clone().matmul(net.get(&format!("film{d}.beta")));
        h * (gamma + 1.0) + beta
    };
    let p = features.len();
    let rank = match base {
        Some(base) => Tensor::<B, 2>::from_data(TensorData::new(base.to_vec(), [p, 1]), &device),
        None => x.clone().slice([0..p, MODEL_RANK..MODEL_RANK + 1]),
    };
    let mut h = activation::relu(film(x.matmul(net.get("in.w")) + net.get("in.b"), 0));
    for d in 0..config.depth {
        let mixed = match config.arch {
            Arch::Pointwise => h.matmul(net.get(&format!("h{d}.w"))),
            Arch::Equivariant => equivariant_mix(&net, d, features, h),
        };
        h = activation::relu(film(mixed + net.get(&format!("h{d}.b")), d + 1));
    }
    let scores = (h.matmul(net.get("out.w")) + net.get("out.b") + rank * net.get("skip")).reshape([p]);
    let t = activation::tanh(e.matmul(net.get("thr.w1")) + net.get("thr.b1"));
    let threshold = (t.matmul(net.get("thr.w2")) + net.get("thr.b2")).reshape([1]);
    Output { scores, threshold }
}

/// One NFN layer's linear part: `h·W_self + row·W_row + col·W_col + layer·W_layer +
/// prev·W_prev + next·W_next`, every pooled term broadcast back over the weights it pools.
///
/// # Shapes
/// - `h`: `[p, C]` in layer order; returns `[p, C]`
fn equivariant_mix<B: Backend>(net: &Lookup<'_, B>, d: usize, features: &Encoded, h: Tensor<B, 2>) -> Tensor<B, 2> {
    let c = h.dims()[1];
    let w = |part: &str| net.get(&format!("h{d}.{part}"));
    let offsets = features.offsets();
    let views = &features.views;
    let blocks: Vec<Tensor<B, 4>> = views
        .iter()
        .zip(&offsets)
        .map(|(v, &o)| h.clone().slice([o..o + v.len(), 0..c]).reshape([v.out, v.inp, v.k, c]))
        .collect();
    // Means over each layer's rows (output units) and columns (input units).
    let rows: Vec<Tensor<B, 2>> =
        blocks.iter().zip(views).map(|(b, v)| b.clone().mean_dims(&[1, 2]).reshape([v.out, c])).collect();
    let cols: Vec<Tensor<B, 2>> =
        blocks.iter().zip(views).map(|(b, v)| b.clone().mean_dims(&[0, 2]).reshape([v.inp, c])).collect();
    let mut out = Vec::with_capacity(views.len());
    for (l, (block, v)) in blocks.into_iter().zip(views).enumerate() {
        let flat = block.clone().reshape([v.len(), c]);
        let own = flat.clone().matmul(w("self")).reshape([v.out, v.inp, v.k, c]);
        let row = rows[l].clone().matmul(w("row")).reshape([v.out, 1, 1, c]);
        let col = cols[l].clone().matmul(w("col")).reshape([1, v.inp, 1, c]);
        let layer = flat.mean_dim(0).matmul(w("layer")).reshape([1, 1, 1, c]);
        let mut mixed = own + row + col + layer;
        // A producer's output unit j is this layer's input unit j (behind an `add`, several
        // producers share unit j: their mean, so a permutation of the joined channels
        // permutes every one of them alike).
        if let Some(prev) = mean_of(features.producers[l].iter().map(|&q| rows[q].clone())) {
            mixed = mixed + prev.matmul(w("prev")).reshape([1, v.inp, 1, c]);
        }
        // This layer's output unit j is every reader's input unit j.
        if let Some(next) = mean_of(features.consumers[l].iter().map(|&q| cols[q].clone())) {
            mixed = mixed + next.matmul(w("next")).reshape([v.out, 1, 1, c]);
        }
        out.push(mixed.reshape([v.len(), c]));
    }
    Tensor::cat(out, 0)
}

/// The mean of equally shaped tensors, `None` for none.
fn mean_of<B: Backend>(tensors: impl Iterator<Item = Tensor<B, 2>>) -> Option<Tensor<B, 2>> {
    let (sum, n) = tensors.fold((None, 0), |(sum, n): (Option<Tensor<B, 2>>, usize), t| {
        (
            Some(match sum {
                Some(s) => s + t,
                None => t,
            }),
            n + 1,
        )
    });
    sum.map(|s| if n == 1 { s } else { s.div_scalar(n as f32) })
}

/// The features of `encoded` as a `[p, FEATURES]` tensor.
pub fn feature_tensor<B: Backend>(encoded: &Encoded, device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(encoded.data.clone(), [encoded.len(), FEATURES]), device)
}

/// A tensor's values.
pub fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().expect("converted to f32 just before")
}

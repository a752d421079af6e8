//! `rescale=true`: beyond the mask, one scale per output unit, a data-free stand-in for the
//! weight updates of the OBS family (which move the kept weights to make up for the pruned
//! ones).
//!
//! Once the mask is chosen, a small head reads each output unit's situation and predicts
//! `log c` for it; the unit's kept weights are multiplied by `c` (its bias is left alone).
//! Its features: the share of the row's squared norm that is kept (and its log), the share of
//! its weights that is kept, the layer's depth, whether it is the last layer, and the
//! sparsity embedding. The output starts at zero, so an untrained head scales nothing.
//!
//! Fitting needs no new host service: a scaled mask `m_i · c_o` is still a mask to the
//! distillation service (`w ⊙ m`), and its gradient gives both `∂L/∂m_i = g_i c_o` (for the
//! scores) and `∂L/∂log c_o = c_o Σ_i g_i m_i` (for the head).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, activation};

use crate::geometry::LayerView;
// The head's layout (its parameter names and shapes) is the network's, which allocates it
// with every other parameter in `Params::init`.
use crate::network::{Params, SCALE_HIDDEN, SCALE_NAMES, SCALE_ROW_FEATURES, embed};

/// The output units of one model under one mask.
pub struct Rows {
    /// `[units, SCALE_ROW_FEATURES]`, row-major, layer order.
    pub features: Vec<f32>,
    /// For every prunable weight (layer order), the index of its output unit.
    pub unit_of: Vec<usize>,
    /// Number of output units.
    pub units: usize,
}

/// The output units of the layers `views` (weights `weights`, layer order) under `keep`, at
/// sparsity `s`. A layer's weight `[o, …]` belongs to output unit `o` (row-major storage).
pub fn rows(views: &[LayerView], weights: &[&[f32]], keep: &[Vec<bool>], s: f64) -> Rows {
    let e = embed(s);
    let depth_scale = 1.0 / views.len().saturating_sub(1).max(1) as f32;
    let mut features = Vec::new();
    let mut unit_of = Vec::with_capacity(weights.iter().map(|w| w.len()).sum());
    let mut units = 0;
    for (l, ((v, w), k)) in views.iter().zip(weights).zip(keep).enumerate() {
        let per = v.len() / v.out.max(1);
        for (row, kept) in w.chunks_exact(per.max(1)).zip(k.chunks_exact(per.max(1))) {
            let total: f32 = row.iter().map(|x| x * x).sum();
            let on: f32 = row.iter().zip(kept).filter(|(_, k)| **k).map(|(x, _)| x * x).sum();
            let share = if total > 0.0 { on / total } else { 0.0 };
            let count = kept.iter().filter(|&&k| k).count() as f32 / per.max(1) as f32;
            let last = if l + 1 == views.len() { 1.0 } else { 0.0 };
            features.extend([share, share.max(1e-4).ln() / 4.0, count, l as f32 * depth_scale, last]);
            features.extend(e);
            unit_of.extend(std::iter::repeat_n(units, per));
            units += 1;
        }
    }
    Rows { features, unit_of, units }
}

/// `log c` per output unit, with autodiff when `B` has it.
///
/// # Shapes
/// - `head`: the four tensors of [`SCALE_NAMES`]; returns `[units]`
pub fn log_scales<B: Backend>(head: &[Tensor<B, 2>], rows: &Rows, device: &B::Device) -> Tensor<B, 1> {
    let x = Tensor::<B, 2>::from_data(TensorData::new(rows.features.clone(), [rows.units, SCALE_ROW_FEATURES]), device);
    let h = activation::tanh(x.matmul(head[0].clone()) + head[1].clone());
    (h.matmul(head[2].clone()) + head[3].clone()).reshape([rows.units])
}

/// The head's tensors out of `tensors` (as [`Params::tensors`]), by name.
pub fn head<B: Backend>(params: &Params, tensors: &[Tensor<B, 2>]) -> Vec<Tensor<B, 2>> {
    SCALE_NAMES
        .iter()
        .map(|n| {
            let i = params.list.iter().position(|p| p.name == *n).unwrap_or_else(|| panic!("no parameter '{n}'"));
            tensors[i].clone()
        })
        .collect()
}

/// The scale of each output unit, plain Rust (pruning and validation).
pub fn scales(params: &Params, rows: &Rows) -> Vec<f32> {
    let get =
        |n: &str| &params.list.iter().find(|p| p.name == n).unwrap_or_else(|| panic!("no parameter '{n}'")).values;
    let (w1, b1, w2, b2) = (get(SCALE_NAMES[0]), get(SCALE_NAMES[1]), get(SCALE_NAMES[2]), get(SCALE_NAMES[3]));
    rows.features
        .chunks_exact(SCALE_ROW_FEATURES)
        .map(|x| {
            let mut out = b2[0];
            for j in 0..SCALE_HIDDEN {
                let a: f32 = b1[j] + x.iter().enumerate().map(|(i, xi)| xi * w1[i * SCALE_HIDDEN + j]).sum::<f32>();
                out += a.tanh() * w2[j];
            }
            out.exp()
        })
        .collect()
}

/// The weights after pruning with `keep` and scaling each kept weight by its unit's scale.
pub fn rescaled(views: &[LayerView], weights: &[&[f32]], keep: &[Vec<bool>], s: f64, params: &Params) -> Vec<Vec<f32>> {
    let rows = rows(views, weights, keep, s);
    let c = scales(params, &rows);
    let mut unit = rows.unit_of.iter();
    weights
        .iter()
        .zip(keep)
        .map(|(w, k)| {
            w.iter()
                .zip(k)
                .map(|(&x, &k)| {
                    let u = *unit.next().expect("one unit per weight");
                    if k { x * c[u] } else { 0.0 }
                })
                .collect()
        })
        .collect()
}

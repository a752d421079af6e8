//! One optimisation step's pieces: the members encoded for the network, the sparsity
//! draw, one (member, sparsity) pair's straight-through gradient through the host's
//! distillation service, and Adam.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData, activation};
use hyperprune_sdk::rng::SplitMix64;
use hyperprune_sdk::{CalibRequest, Ctx, MemberRef, ModelRef, PluginError, masking};

use super::settings::{FitSettings, Relaxation};
use crate::base::Base;
use crate::features::{Encoded, FeatureSet, encode};
use crate::network::{self, Allocation, NetConfig, Params, feature_tensor, forward};
use crate::rescale::{self, Rows};
use crate::selection::{Selection, mean, select, std_dev};

/// The autodiff backend the fit differentiates on.
pub(super) type Train = Autodiff<Flex>;

/// A member encoded for the network.
pub(super) struct Prepared<'a> {
    pub(super) id: String,
    pub(super) model: ModelRef<'a>,
    pub(super) encoded: Encoded,
    pub(super) x: Tensor<Train, 2>,
}

pub(super) fn prepare<'a>(members: &[MemberRef<'a>], set: FeatureSet) -> Result<Vec<Prepared<'a>>, PluginError> {
    members
        .iter()
        .map(|m| {
            let encoded = encode(&m.model, set).map_err(|e| PluginError::failed(format!("member {}: {e}", m.id)))?;
            let x = feature_tensor::<Train>(&encoded, &Default::default());
            Ok(Prepared { id: m.id.to_string(), model: m.model, encoded, x })
        })
        .collect()
}

pub(super) fn draw_sparsity(rng: &mut SplitMix64, settings: &FitSettings) -> f64 {
    let r = rng.next_f64();
    if settings.log_uniform {
        let (a, b) = (-(1.0 - settings.s_min).ln(), -(1.0 - settings.s_max).ln());
        1.0 - (-(a + r * (b - a))).exp()
    } else {
        settings.s_min + r * (settings.s_max - settings.s_min)
    }
}

/// One (member, sparsity) pair: forward, hard mask, the host's distillation gradient,
/// straight-through backward; adds the parameter gradients into `grads` and returns the
/// distillation loss.
#[allow(clippy::too_many_arguments)]
pub(super) fn member_step(
    net: &NetConfig,
    params: &Params,
    member: &Prepared<'_>,
    base: &Base,
    s: f64,
    temperature: f64,
    settings: &FitSettings,
    calib: CalibRequest,
    ctx: &Ctx<'_>,
    grads: &mut [Vec<f32>],
) -> Result<f64, PluginError> {
    let device = Default::default();
    let leaves: Vec<Tensor<Train, 2>> =
        params.tensors::<Train>(&device).into_iter().map(|t| t.require_grad()).collect();
    let ranks = base.ranks(&member.model.weights(), s);
    let out = forward(net, params, &leaves, &member.encoded, member.x.clone(), ranks.as_deref(), s);
    let scores = network::values(out.scores.clone());
    let hard = select(net.allocation, &member.encoded, &scores, s, settings.floor);
    let spread = std_dev(&scores).max(1e-6);
    let width = (temperature * spread as f64) as f32;
    let thresholds = hard.per_weight();
    let evaluated = evaluated(settings.relaxation, &hard, &scores, &thresholds, width);
    // rescale=true: the host evaluates the mask times each output unit's predicted scale.
    let scaling = net.rescale.then(|| {
        let rows = rescale::rows(&member.encoded.views, &member.model.weights(), &hard.keep, s);
        let log_c = rescale::log_scales::<Train>(&rescale::head(params, &leaves), &rows, &device);
        let c: Vec<f32> = network::values(log_c.clone()).iter().map(|v| v.exp()).collect();
        (rows, log_c, c)
    });
    let scaled: Option<Vec<f32>> =
        scaling.as_ref().map(|(rows, _, c)| evaluated.iter().zip(&rows.unit_of).map(|(m, &u)| m * c[u]).collect());
    let mask = scaled.as_deref().unwrap_or(&evaluated);
    let distill = ctx.masked_distill_loss_and_grad(&member.model, mask, calib, settings.kd_temperature)?;
    // The service's gradient is with respect to the scaled mask: ∂L/∂m_i = g_i · c_o.
    let scaled_grad: Option<Vec<f32>> =
        scaling.as_ref().map(|(rows, _, c)| distill.grad.iter().zip(&rows.unit_of).map(|(g, &u)| g * c[u]).collect());
    let grad = scaled_grad.as_deref().unwrap_or(&distill.grad);
    let surrogate = straight_through(net.allocation, out.scores, &hard, &scores, thresholds, grad, width);
    // The threshold head learns the global boundary (what `mask=threshold` prunes at).
    let total = match net.allocation {
        Allocation::Learned => {
            let target = (hard.thresholds[0] - mean(&scores)) / spread;
            surrogate + (out.threshold - target).powf_scalar(2.0).sum()
        }
        Allocation::Magnitude => surrogate,
    };
    // ∂L/∂log c_o = c_o · Σ_{i in o} g_i m_i.
    let total = match scaling {
        Some(scaling) => total + scale_loss(scaling, &distill.grad, &evaluated),
        None => total,
    };
    let backward = total.backward();
    for (acc, leaf) in grads.iter_mut().zip(&leaves) {
        if let Some(g) = leaf.grad(&backward) {
            let values = network::values(g);
            acc.iter_mut().zip(values).for_each(|(a, v)| *a += v);
        }
    }
    Ok(distill.loss)
}

/// The mask the host evaluates: the hard one, or under [`Relaxation::Sigmoid`] the sigmoid
/// of each score around its layer's threshold.
fn evaluated(relaxation: Relaxation, hard: &Selection, scores: &[f32], thresholds: &[f32], width: f32) -> Vec<f32> {
    match relaxation {
        Relaxation::StraightThrough => hard.as_f32(),
        Relaxation::Sigmoid => {
            scores.iter().zip(thresholds).map(|(&x, &t)| 1.0 / (1.0 + (-(x - t) / width).exp())).collect()
        }
    }
}

/// The surrogate whose gradient with respect to the network's scores `scores_t` (values
/// `scores`) is the distillation gradient `grad` made fit for the top-k mask `hard`,
/// through the sigmoid of width `width` around each weight's layer threshold.
fn straight_through(
    allocation: Allocation,
    scores_t: Tensor<Train, 1>,
    hard: &Selection,
    scores: &[f32],
    thresholds: Vec<f32>,
    grad: &[f32],
    width: f32,
) -> Tensor<Train, 1> {
    let device = Default::default();
    let p = scores.len();
    // Under a magnitude allocation each layer has its own budget, so its own multiplier.
    let groups: Vec<usize> = match allocation {
        Allocation::Learned => vec![0; p],
        Allocation::Magnitude => {
            hard.keep.iter().enumerate().flat_map(|(l, k)| std::iter::repeat_n(l, k.len())).collect()
        }
    };
    // The distillation gradient made fit for a top-k mask (see `masking::budget_gradient`).
    let unit: Vec<f32> =
        masking::budget_gradient(grad, scores, &thresholds, &groups, width).centred.iter().map(|&g| g as f32).collect();
    let g = Tensor::<Train, 1>::from_data(TensorData::new(unit, [p]), &device);
    let boundary = Tensor::<Train, 1>::from_data(TensorData::new(thresholds, [p]), &device);
    let soft = activation::sigmoid((scores_t - boundary).div_scalar(width));
    (soft * g).sum()
}

/// The term that carries `∂L/∂log c_o = c_o · Σ_{i in o} g_i m_i` to the scale head:
/// `Σ_o log c_o · (c_o Σ_{i in o} g_i m_i)`, with `grad` the service's gradient and
/// `evaluated` the unscaled mask.
fn scale_loss(scaling: (Rows, Tensor<Train, 1>, Vec<f32>), grad: &[f32], evaluated: &[f32]) -> Tensor<Train, 1> {
    let (rows, log_c, c) = scaling;
    let device = Default::default();
    let mut by_unit = vec![0f32; rows.units];
    for ((g, &u), m) in grad.iter().zip(&rows.unit_of).zip(evaluated) {
        by_unit[u] += g * m;
    }
    by_unit.iter_mut().zip(&c).for_each(|(g, c)| *g *= c);
    let by_unit = Tensor::<Train, 1>::from_data(TensorData::new(by_unit, [rows.units]), &device);
    (log_c * by_unit).sum()
}

/// Adam (Kingma & Ba), betas (0.9, 0.999), eps 1e-8, on every parameter.
pub(super) struct Adam {
    pub(super) first: Params,
    pub(super) second: Params,
    pub(super) t: usize,
}

impl Adam {
    pub(super) fn new(like: &Params) -> Adam {
        let mut zero = like.clone();
        zero.list.iter_mut().for_each(|p| p.values.iter_mut().for_each(|v| *v = 0.0));
        Adam { first: zero.clone(), second: zero, t: 0 }
    }

    pub(super) fn step(&mut self, params: &mut Params, grads: &[Vec<f32>], lr: f64) {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        self.t += 1;
        let c1 = 1.0 - B1.powi(self.t as i32);
        let c2 = 1.0 - B2.powi(self.t as i32);
        for (((p, m), v), g) in params.list.iter_mut().zip(&mut self.first.list).zip(&mut self.second.list).zip(grads) {
            for (((w, m), v), &g) in p.values.iter_mut().zip(&mut m.values).zip(&mut v.values).zip(g) {
                let g = g as f64;
                *m = (B1 * *m as f64 + (1.0 - B1) * g) as f32;
                *v = (B2 * *v as f64 + (1.0 - B2) * g * g) as f32;
                let update = lr * (*m as f64 / c1) / ((*v as f64 / c2).sqrt() + 1e-8);
                *w -= update as f32;
            }
        }
    }
}

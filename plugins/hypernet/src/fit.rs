//! Fitting the hypernetwork over a zoo's train members, as a documented top-level procedure.
//!
//! Each step samples members and sparsities; for each, the network scores the member's
//! weights, the hard top-k mask (with the per-layer floor) is what the host evaluates, and
//! the gradient reaches the scores through a straight-through sigmoid around the detached
//! boundary score, `σ((score − τ) / (T · spread))`, with `T` annealed geometrically from
//! `t_start` to `t_end`. The loss is the host's distillation of the dense member into the
//! masked one (`T_kd² · KL`, on calibration samples of the train split); the plugin never
//! sees an image. The threshold head regresses the boundary score `τ`, so that
//! `mask=threshold` keeps about `1 − s` of the weights. Adam updates the parameters; every
//! `val_every` steps the masks of the val members are evaluated on the host's val slice
//! and the parameters with the best mean retention are kept; the same moments are
//! checkpointed, so an interrupted fit resumes.

use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData, activation};
use hyperprune_sdk::rng::SplitMix64;
use hyperprune_sdk::{
    CalibRequest, Ctx, DataSplit, ErrorKind, LogLevel, MemberRef, ModelBuf, ModelRef, PluginError, PruneRequest,
    masking,
};

use crate::features::{Encoded, FEATURES, FeatureSet, MODEL_RANK, encode};
use crate::mask::{self, MaskMode};
use crate::network::{self, Allocation, NetConfig, Params, feature_tensor, forward};
use crate::rescale;
use crate::state::{FitInfo, Meta, Progress, Resume, State};

type Train = Autodiff<Flex>;

/// How to fit.
#[derive(Debug, Clone, PartialEq)]
pub struct FitSettings {
    /// Optimisation steps.
    pub steps: usize,
    /// Adam's learning rate (cosine-decayed to a tenth).
    pub lr: f64,
    /// (member, sparsity) pairs per step.
    pub members_per_step: usize,
    /// Calibration samples per distillation call.
    pub calib_samples: u64,
    /// Distillation temperature `T_kd`.
    pub kd_temperature: f64,
    /// Straight-through temperature at the first step.
    pub t_start: f64,
    /// Straight-through temperature at the last step.
    pub t_end: f64,
    /// Sparsity range.
    pub s_min: f64,
    /// Sparsity range.
    pub s_max: f64,
    /// Draw `log(1/(1−s))` uniformly (every compression ratio equally often) instead of `s`.
    pub log_uniform: bool,
    /// Steps between validations (and checkpoints).
    pub val_every: usize,
    /// Val-slice samples per evaluation.
    pub val_samples: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Per-layer floor of kept weights.
    pub floor: f64,
    /// What the host's distillation evaluates.
    pub relaxation: Relaxation,
}

/// The relaxation the fit's gradient goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relaxation {
    /// The host evaluates the hard top-k mask; the gradient goes back through the sigmoid
    /// around its boundary (straight-through).
    StraightThrough,
    /// The host evaluates the soft mask `σ((score − τ)/width)` itself, so forward and
    /// backward agree but the model evaluated is not the one that will be pruned (ablation).
    Sigmoid,
}

/// A member encoded for the network.
struct Prepared<'a> {
    id: String,
    model: ModelRef<'a>,
    encoded: Encoded,
    x: Tensor<Train, 2>,
}

fn prepare<'a>(members: &[MemberRef<'a>], set: FeatureSet) -> Result<Vec<Prepared<'a>>, PluginError> {
    members
        .iter()
        .map(|m| {
            let encoded = encode(&m.model, set).map_err(|e| PluginError::failed(format!("member {}: {e}", m.id)))?;
            let x = feature_tensor::<Train>(&encoded, &Default::default());
            Ok(Prepared { id: m.id.to_string(), model: m.model, encoded, x })
        })
        .collect()
}

/// Fits a network of shape `net` on `zoo`, from scratch or from `resume` (a checkpoint of
/// the same configuration).
///
/// # Errors
/// No train members; a member the encoder cannot read; a host service failing; the user
/// cancelling ([`ErrorKind::Cancelled`]).
pub fn fit(
    net: NetConfig,
    set: FeatureSet,
    settings: &FitSettings,
    zoo: &hyperprune_sdk::ZooRef<'_>,
    resume: Option<State>,
    ctx: &Ctx<'_>,
    info: FitInfo,
) -> Result<State, PluginError> {
    let started = Instant::now();
    if zoo.members.is_empty() {
        return Err(PluginError::failed(format!("zoo '{}' has no train members to fit on", zoo.name)));
    }
    let train = prepare(zoo.members.as_slice(), set)?;
    let val = prepare(zoo.val.as_slice(), set)?;
    let fresh = Params::init(&net, settings.seed);
    let (mut params, mut adam, mut best, start, mut spent) = match resume {
        Some(State { params, resume: Some(r), meta: Meta { progress: Some(p), .. } }) if params.same_layout(&fresh) => {
            ctx.info(&format!("resuming the fit at step {} of {}", p.step, settings.steps));
            let best = p.best.map(|(v, s)| (v, s, r.best.clone()));
            (params, Adam { first: r.first, second: r.second, t: p.step }, best, p.step, p.seconds)
        }
        _ => (fresh.clone(), Adam::new(&fresh), None, 0, 0.0),
    };
    let grid = val_grid(settings.s_min, settings.s_max);
    let mut dense_val: Vec<Option<f64>> = vec![None; val.len()];
    let mut val_available = !val.is_empty();
    if val.is_empty() {
        ctx.log(LogLevel::Warn, "the zoo has no val members: keeping the last parameters, no selection");
    }
    // Step 0 is validated too: the untrained network is magnitude pruning (with floors), so
    // the kept parameters are never worse than that on the val members.
    let mut select = |step: usize, params: &Params, best: &mut Option<(f64, usize, Params)>| {
        if !val_available {
            return Ok(());
        }
        match validate(&net, params, &val, &grid, settings, &mut dense_val, ctx) {
            Ok(by_sparsity) => {
                let retention = by_sparsity.iter().sum::<f64>() / by_sparsity.len() as f64;
                let compressions: Vec<f64> = grid.iter().map(|s| 1.0 / (1.0 - s)).collect();
                ctx.record(&serde_json::json!({
                    "step": step, "val_retention": retention,
                    "val_compressions": compressions, "val_retention_by_compression": by_sparsity,
                }));
                ctx.info(&format!("step {step}: val retention {retention:.4}"));
                if best.as_ref().is_none_or(|(b, _, _)| retention > *b) {
                    *best = Some((retention, step, params.clone()));
                }
                Ok(())
            }
            Err(e) if e.is_unavailable() => {
                ctx.log(LogLevel::Warn, &format!("no validation in this run: {}", e.message));
                val_available = false;
                Ok(())
            }
            Err(e) => Err(e.context("validation")),
        }
    };
    if start == 0 && settings.val_every > 0 {
        select(0, &params, &mut best)?;
    }
    let mut checkpoints = true;
    let mut loss_sum = 0.0;
    let mut loss_n = 0usize;
    for step in start..settings.steps {
        if ctx.cancelled() {
            return Err(PluginError::new(ErrorKind::Cancelled, format!("fit cancelled at step {step}")));
        }
        let progress = step as f64 / settings.steps.max(1) as f64;
        let temperature = settings.t_start * (settings.t_end / settings.t_start).powf(progress);
        let lr = settings.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
        let mut rng = SplitMix64::new(settings.seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut grads: Vec<Vec<f32>> = params.list.iter().map(|p| vec![0.0; p.values.len()]).collect();
        for j in 0..settings.members_per_step {
            let member = &train[(rng.next_u64() % train.len() as u64) as usize];
            let s = draw_sparsity(&mut rng, settings);
            let calib = CalibRequest { samples: settings.calib_samples, minibatch: 1, seed: rng.next_u64() };
            let loss = member_step(&net, &params, member, s, temperature, settings, calib, ctx, &mut grads)
                .map_err(|e| e.context(format!("step {step}, member {} (pair {j})", member.id)))?;
            loss_sum += loss;
            loss_n += 1;
        }
        let scale = 1.0 / settings.members_per_step as f32;
        grads.iter_mut().flatten().for_each(|g| *g *= scale);
        adam.step(&mut params, &grads, lr);
        ctx.progress(step + 1, settings.steps);
        if (step + 1) % 10 == 0 || step + 1 == settings.steps {
            ctx.record(&serde_json::json!({
                "step": step + 1, "loss": loss_sum / loss_n.max(1) as f64, "temperature": temperature, "lr": lr,
                "seconds": spent + started.elapsed().as_secs_f64(),
            }));
            loss_sum = 0.0;
            loss_n = 0;
        }
        let last = step + 1 == settings.steps;
        if settings.val_every > 0 && ((step + 1) % settings.val_every == 0 || last) {
            select(step + 1, &params, &mut best)?;
            if checkpoints && !last {
                let seconds = spent + started.elapsed().as_secs_f64();
                let progress = Progress { step: step + 1, best: best.as_ref().map(|(v, s, _)| (*v, *s)), seconds };
                let resume = Resume {
                    first: adam.first.clone(),
                    second: adam.second.clone(),
                    best: best.as_ref().map_or_else(|| params.clone(), |b| b.2.clone()),
                };
                let state = State {
                    meta: meta(&net, set, settings, info.clone(), Some(progress)),
                    params: params.clone(),
                    resume: Some(resume),
                };
                if let Err(e) = ctx.checkpoint(&state.to_bytes()) {
                    ctx.log(LogLevel::Debug, &format!("checkpoints off: {}", e.message));
                    checkpoints = false;
                }
            }
        }
    }
    spent += started.elapsed().as_secs_f64();
    let mut info = info;
    info.steps = settings.steps.max(start);
    info.seconds = spent;
    info.train_members = train.len();
    info.val_members = val.len();
    match best {
        Some((retention, step, kept)) => {
            info.best_step = step;
            info.val_retention = Some(retention);
            params = kept;
            if step == 0 {
                ctx.log(
                    LogLevel::Warn,
                    &format!(
                        "validation kept step 0, the untrained network: no later check beat its val retention \
                         {retention:.4} on the {} val members, so this state prunes like global magnitude pruning \
                         with the per-layer floor (the val curve is in the .fit.jsonl beside the state)",
                        val.len()
                    ),
                );
            }
        }
        None => info.best_step = info.steps,
    }
    if net.allocation == Allocation::Learned {
        calibrate_threshold(&net, &mut params, &train, settings);
    }
    Ok(State { meta: meta(&net, set, settings, info, None), params, resume: None })
}

/// Refits the threshold head to the kept scoring network: on a grid of 64 sparsities over
/// the fitted range, the target is the mean over the train members of the standardised
/// score at the top-k boundary (the threshold that keeps `1 − s` of each member's weights).
/// During the fit the head chased a network that kept changing; this makes `mask=threshold`
/// track the request for the parameters actually kept.
fn calibrate_threshold(net: &NetConfig, params: &mut Params, train: &[Prepared<'_>], settings: &FitSettings) {
    const GRID: usize = 64;
    let grid: Vec<f64> =
        (0..GRID).map(|i| settings.s_min + (settings.s_max - settings.s_min) * i as f64 / (GRID - 1) as f64).collect();
    let mut targets = vec![0f64; GRID];
    for member in train {
        for (t, &s) in targets.iter_mut().zip(&grid) {
            let (mut scores, _) = crate::infer::forward(net, params, &member.encoded, s);
            standardise(&mut scores);
            *t += select(Allocation::Learned, &member.encoded, &scores, s, settings.floor).thresholds[0] as f64;
        }
    }
    targets.iter_mut().for_each(|t| *t /= train.len().max(1) as f64);
    let names = ["thr.w1", "thr.b1", "thr.w2", "thr.b2"];
    let index: Vec<usize> =
        names.iter().map(|n| params.list.iter().position(|p| p.name == *n).expect("threshold head")).collect();
    let mut head = Params { list: index.iter().map(|&i| params.list[i].clone()).collect() };
    let mut adam = Adam::new(&head);
    let device = Default::default();
    let e: Vec<f32> = grid.iter().flat_map(|&s| network::embed(s)).collect();
    let e = Tensor::<Train, 2>::from_data(TensorData::new(e, [GRID, network::EMBED]), &device);
    let y =
        Tensor::<Train, 2>::from_data(TensorData::new(targets.iter().map(|&t| t as f32).collect(), [GRID, 1]), &device);
    for _ in 0..1500 {
        let t: Vec<Tensor<Train, 2>> = head.tensors::<Train>(&device).into_iter().map(|t| t.require_grad()).collect();
        let h = activation::tanh(e.clone().matmul(t[0].clone()) + t[1].clone());
        let loss = (h.matmul(t[2].clone()) + t[3].clone() - y.clone()).powf_scalar(2.0).mean();
        let g = loss.backward();
        let grads: Vec<Vec<f32>> = t
            .iter()
            .zip(&head.list)
            .map(|(t, p)| t.grad(&g).map_or_else(|| vec![0.0; p.values.len()], network::values))
            .collect();
        adam.step(&mut head, &grads, 1e-2);
    }
    for (&i, p) in index.iter().zip(head.list) {
        params.list[i] = p;
    }
}

pub(crate) fn meta(
    net: &NetConfig,
    set: FeatureSet,
    settings: &FitSettings,
    fit: FitInfo,
    progress: Option<Progress>,
) -> Meta {
    Meta {
        format: crate::state::FORMAT.into(),
        format_version: crate::state::FORMAT_VERSION,
        plugin_version: env!("CARGO_PKG_VERSION").into(),
        sdk_version: hyperprune_sdk::SDK_VERSION.into(),
        net: *net,
        features: match set {
            FeatureSet::Full => "full".into(),
            FeatureSet::Magnitude => "magnitude".into(),
        },
        s_min: settings.s_min,
        s_max: settings.s_max,
        fit,
        progress,
    }
}

fn draw_sparsity(rng: &mut SplitMix64, settings: &FitSettings) -> f64 {
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
fn member_step(
    net: &NetConfig,
    params: &Params,
    member: &Prepared<'_>,
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
    let out = forward(net, params, &leaves, &member.encoded, member.x.clone(), s);
    let scores = network::values(out.scores.clone());
    let hard = select(net.allocation, &member.encoded, &scores, s, settings.floor);
    let spread = std_dev(&scores).max(1e-6);
    let p = scores.len();
    let width = (temperature * spread as f64) as f32;
    let thresholds = hard.per_weight();
    let evaluated: Vec<f32> = match settings.relaxation {
        Relaxation::StraightThrough => hard.as_f32(),
        Relaxation::Sigmoid => {
            scores.iter().zip(&thresholds).map(|(&x, &t)| 1.0 / (1.0 + (-(x - t) / width).exp())).collect()
        }
    };
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
    // Under a magnitude allocation each layer has its own budget, so its own multiplier.
    let groups: Vec<usize> = match net.allocation {
        Allocation::Learned => vec![0; p],
        Allocation::Magnitude => {
            hard.keep.iter().enumerate().flat_map(|(l, k)| std::iter::repeat_n(l, k.len())).collect()
        }
    };
    // The distillation gradient made fit for a top-k mask (see `masking::budget_gradient`).
    let unit: Vec<f32> = masking::budget_gradient(grad, &scores, &thresholds, &groups, width)
        .centred
        .iter()
        .map(|&g| g as f32)
        .collect();
    let g = Tensor::<Train, 1>::from_data(TensorData::new(unit, [p]), &device);
    let boundary = Tensor::<Train, 1>::from_data(TensorData::new(thresholds, [p]), &device);
    let soft = activation::sigmoid((out.scores - boundary).div_scalar(width));
    let surrogate = (soft * g).sum();
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
        Some((rows, log_c, c)) => {
            let mut by_unit = vec![0f32; rows.units];
            for ((g, &u), m) in distill.grad.iter().zip(&rows.unit_of).zip(&evaluated) {
                by_unit[u] += g * m;
            }
            by_unit.iter_mut().zip(&c).for_each(|(g, c)| *g *= c);
            let by_unit = Tensor::<Train, 1>::from_data(TensorData::new(by_unit, [rows.units]), &device);
            total + (log_c * by_unit).sum()
        }
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

/// A hard mask and its boundary, one threshold per layer.
pub struct Selection {
    /// Keep masks, one per layer.
    pub keep: Vec<Vec<bool>>,
    /// Per layer: the score between its lowest kept and highest pruned weight (the same for
    /// every layer under a learned allocation: the global boundary).
    pub thresholds: Vec<f32>,
}

/// The exact top-k mask of `scores` for a global request at `s`: across layers when the
/// allocation is learned; within each layer, at global magnitude pruning's split (floors
/// included), when it is magnitude's.
pub fn select(allocation: Allocation, encoded: &Encoded, scores: &[f32], s: f64, floor: f64) -> Selection {
    let layers = split_layers(encoded, scores);
    let request = PruneRequest::global(s, 0);
    match allocation {
        Allocation::Learned => {
            let m = mask::build(&layers, &request, floor, MaskMode::TopK);
            Selection { thresholds: vec![m.threshold; m.keep.len()], keep: m.keep }
        }
        Allocation::Magnitude => {
            let ranks: Vec<f32> = encoded.data.chunks_exact(FEATURES).map(|r| r[MODEL_RANK]).collect();
            let by_magnitude = mask::build(&split_layers(encoded, &ranks), &request, floor, MaskMode::TopK);
            let budgets: Vec<usize> = by_magnitude.keep.iter().map(|k| k.iter().filter(|&&x| x).count()).collect();
            let (keep, thresholds) = mask::with_budgets(&layers, &budgets);
            Selection { keep, thresholds }
        }
    }
}

impl Selection {
    /// The mask as 0/1 floats, layer order.
    pub fn as_f32(&self) -> Vec<f32> {
        self.keep.iter().flatten().map(|&k| if k { 1.0 } else { 0.0 }).collect()
    }

    /// Each weight's layer threshold, layer order.
    fn per_weight(&self) -> Vec<f32> {
        self.keep.iter().zip(&self.thresholds).flat_map(|(k, &t)| std::iter::repeat_n(t, k.len())).collect()
    }
}

/// `scores` cut into the layers of `encoded`.
pub fn split_layers<'s>(encoded: &Encoded, scores: &'s [f32]) -> Vec<&'s [f32]> {
    let mut rest = scores;
    encoded
        .views
        .iter()
        .map(|v| {
            let (head, tail) = rest.split_at(v.len());
            rest = tail;
            head
        })
        .collect()
}

fn mean(v: &[f32]) -> f32 {
    (v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64) as f32
}

/// Scores standardised over the model's weights: what the threshold head predicts on.
pub fn standardise(scores: &mut [f32]) {
    let (m, sd) = (mean(scores), std_dev(scores).max(1e-6));
    scores.iter_mut().for_each(|s| *s = (*s - m) / sd);
}

fn std_dev(v: &[f32]) -> f32 {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt() as f32
}

/// The compressions validated on: 2×, 4×, … within the fitted range, or its midpoint.
fn val_grid(s_min: f64, s_max: f64) -> Vec<f64> {
    let grid: Vec<f64> =
        [2.0f64, 4.0, 8.0, 16.0, 32.0].iter().map(|c| 1.0 - 1.0 / c).filter(|s| (s_min..=s_max).contains(s)).collect();
    if grid.is_empty() { vec![0.5 * (s_min + s_max)] } else { grid }
}

/// Mean retention of the val members' masks at each sparsity of `grid`, on the host's val
/// slice.
fn validate(
    net: &NetConfig,
    params: &Params,
    val: &[Prepared<'_>],
    grid: &[f64],
    settings: &FitSettings,
    dense: &mut [Option<f64>],
    ctx: &Ctx<'_>,
) -> Result<Vec<f64>, PluginError> {
    let n = settings.val_samples as usize;
    let mut sums = vec![0.0; grid.len()];
    for (member, dense) in val.iter().zip(dense.iter_mut()) {
        let base = match dense {
            Some(d) => *d,
            None => *dense.insert(ctx.evaluate(&member.model, DataSplit::Val, n)?.accuracy.max(1e-9)),
        };
        for (&s, sum) in grid.iter().zip(&mut sums) {
            let (scores, _) = crate::infer::forward(net, params, &member.encoded, s);
            let keep = select(net.allocation, &member.encoded, &scores, s, settings.floor).keep;
            let mut buf = ModelBuf::new(&member.model);
            if net.rescale {
                let new = rescale::rescaled(&member.encoded.views, &member.model.weights(), &keep, s, params);
                buf.weights_mut().iter_mut().zip(new).for_each(|(w, n)| *w = n);
            } else {
                for (w, k) in buf.weights_mut().iter_mut().zip(&keep) {
                    w.iter_mut().zip(k).filter(|(_, k)| !**k).for_each(|(w, _)| *w = 0.0);
                }
            }
            let e = buf.with_view(|view| ctx.evaluate(&view, DataSplit::Val, n))?;
            *sum += e.accuracy / base;
        }
    }
    Ok(sums.iter().map(|s| s / val.len().max(1) as f64).collect())
}

/// Adam (Kingma & Ba), betas (0.9, 0.999), eps 1e-8, on every parameter.
struct Adam {
    first: Params,
    second: Params,
    t: usize,
}

impl Adam {
    fn new(like: &Params) -> Adam {
        let mut zero = like.clone();
        zero.list.iter_mut().for_each(|p| p.values.iter_mut().for_each(|v| *v = 0.0));
        Adam { first: zero.clone(), second: zero, t: 0 }
    }

    fn step(&mut self, params: &mut Params, grads: &[Vec<f32>], lr: f64) {
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

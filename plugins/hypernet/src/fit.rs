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
//! and the best check by the fit's [`Criterion`] is kept; the same moments are
//! checkpointed, so an interrupted fit resumes. Before the first step the val members choose
//! the base score's layer normalisation per compression, and after the last the trained
//! network's weight in the mask per compression (see [`crate::base`]).

use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData, activation};
use hyperprune_sdk::rng::SplitMix64;
use hyperprune_sdk::{
    CalibRequest, Ctx, DataSplit, ErrorKind, LogLevel, MemberRef, ModelBuf, ModelRef, PluginError, PruneRequest,
    masking,
};

use crate::base::{self, ALPHA_GRID, Base, GAIN_GRID};
use crate::features::{Encoded, FeatureSet, encode};
use crate::mask::{self, MaskMode};
use crate::network::{self, Allocation, NetConfig, Params, feature_tensor, forward};
use crate::rescale;
use crate::state::{FitInfo, Meta, Progress, Resume, State};
use crate::units::{self, InputStats, Stage, UnitStage};

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
    /// Choose the unit stage's `q_max` on the val members (`units=auto`); off, it stays 0.
    pub units: bool,
    /// A `q_max` fixed by the user (`units_q`) instead of the one the val members choose.
    pub units_q: Option<f64>,
    /// How a validation check is scored when choosing the step (and `q_max`) to keep.
    pub criterion: Criterion,
    /// The base score's layer normalisation: chosen on the val members, or fixed.
    pub base: BaseChoice,
    /// Choose the base on the train members too, not only the val members.
    pub base_on_train: bool,
}

/// Where the base score's layer normalisation comes from (see [`crate::base`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BaseChoice {
    /// Each knot's `α` from [`ALPHA_GRID`], the best for the untrained network on the val
    /// members at that compression.
    Auto,
    /// These knots.
    Fixed(Base),
}

/// How the fit scores a validation check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criterion {
    /// The mean over the val compressions of the better of the check and the untrained
    /// network at each: what the state will keep once the network's weight is chosen per
    /// compression (see [`crate::base`]), which falls back to the base where the network
    /// loses.
    Blended,
    /// The mean val retention over the val compressions, among the checks that are at most
    /// [`GUARD`] below the untrained network (the base with the floor) at
    /// every one of them; a check further below anywhere loses to every check that is not.
    Guarded,
    /// The worst margin over the val compressions against the untrained network: a check
    /// wins only by being above it at every compression; ties keep the earlier step.
    Margin,
    /// The mean val retention over the val compressions.
    Mean,
}

/// How far below the untrained network, at any val compression, a check may be and still
/// be kept under [`Criterion::Guarded`]: one point of retention, about what the val slice
/// (512 images, 8 members) moves between two validations of the same network.
pub const GUARD: f64 = 0.01;

impl Criterion {
    /// The score of `by_sparsity` (higher is better) against `reference`, the untrained
    /// network's retention at the same sparsities (without one, every criterion is the mean).
    fn score(self, by_sparsity: &[f64], reference: Option<&[f64]>) -> f64 {
        let mean = average(by_sparsity);
        match (self, reference) {
            (Criterion::Margin, Some(r)) => worst_margin(by_sparsity, r),
            (Criterion::Blended, Some(r)) => {
                average(&by_sparsity.iter().zip(r).map(|(a, b)| a.max(*b)).collect::<Vec<f64>>())
            }
            // Retention is at most a little over 1, so a guarded-out check scores below
            // every check that is not.
            (Criterion::Guarded, Some(r)) if worst_margin(by_sparsity, r) < -GUARD => mean - 2.0,
            _ => mean,
        }
    }
}

/// The smallest `by_sparsity − reference` over the val compressions.
fn worst_margin(by_sparsity: &[f64], reference: &[f64]) -> f64 {
    by_sparsity.iter().zip(reference).map(|(a, b)| a - b).fold(f64::INFINITY, f64::min)
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
    let (mut params, mut adam, mut best, start, mut spent, resumed_base) = match resume {
        Some(State { params, resume: Some(r), meta: Meta { progress: Some(p), base, .. }, .. })
            if params.same_layout(&fresh) =>
        {
            ctx.info(&format!("resuming the fit at step {} of {}", p.step, settings.steps));
            // The check behind the best so far is not in the checkpoint: redone at the end.
            let best = p.best.map(|(v, s)| (v, s, r.best.clone(), None));
            (params, Adam { first: r.first, second: r.second, t: p.step }, best, p.step, p.seconds, base)
        }
        _ => (fresh.clone(), Adam::new(&fresh), None, 0, 0.0, None),
    };
    let mut checks = Checks::new(&net, val.iter().collect(), settings);
    let mut val_available = !val.is_empty();
    if val.is_empty() {
        ctx.log(LogLevel::Warn, "the zoo has no val members: keeping the last parameters, no selection");
    }
    // The base score comes first: the network learns a residual on it, and the untrained
    // network (the reference of the guarded and margin criteria) prunes by it. The untrained
    // network has seen no member, so the train members may choose it too.
    let mut reference: Option<Vec<f64>> = None;
    let mut pool = settings.base_on_train.then(|| Checks::new(&net, train.iter().chain(&val).collect(), settings));
    let mut base = match settings.base {
        BaseChoice::Fixed(base) => base,
        // A resumed fit keeps the base its checkpoint was trained on (choosing it again would
        // record its curve rows twice); the reference is computed below.
        BaseChoice::Auto if resumed_base.is_some() => resumed_base.unwrap_or(Base::GLOBAL),
        BaseChoice::Auto if val_available => match choose_base(pool.as_mut().unwrap_or(&mut checks), &fresh, ctx) {
            Ok((base, untrained)) => {
                // Untrained retention on the val members alone is the reference.
                if pool.is_none() {
                    reference = Some(untrained);
                }
                base
            }
            Err(e) if e.is_unavailable() => {
                ctx.log(LogLevel::Warn, &format!("no validation in this run: {}", e.message));
                val_available = false;
                Base::GLOBAL
            }
            Err(e) => return Err(e.context("validation")),
        },
        BaseChoice::Auto => Base::GLOBAL,
    };
    drop(pool);
    checks.base = base;
    // Step 0 is validated too: the untrained network is magnitude pruning (with floors), so
    // the kept parameters are never worse than that on the val members.
    // With the unit stage, each check scores the network at its best `q_max`, so that the
    // step kept is the best one with the stage, not without it.
    let inputs = if settings.units && val_available { unit_inputs(&val, settings, ctx)? } else { None };
    let stats = inputs.as_ref().map(|(stats, _)| stats);
    // The criteria but the mean compare every check with the untrained network, the step-0
    // parameters (also on a resumed fit), as the fit would keep it: with the unit stage at
    // its best `q_max` where there is one.
    if (reference.is_none() || stats.is_some()) && settings.criterion != Criterion::Mean && val_available {
        let untrained = match stats {
            Some(stats) => checks.check(&fresh, Some(stats), None, ctx).map(|c| c.1),
            None => checks.retention(&fresh, None, ctx),
        };
        match untrained {
            Ok(r) => reference = Some(r),
            Err(e) if e.is_unavailable() => {
                ctx.log(LogLevel::Warn, &format!("no validation in this run: {}", e.message));
                val_available = false;
            }
            Err(e) => return Err(e.context("validation")),
        }
    }
    let criterion = settings.criterion;
    let mut select = |step: usize, params: &Params, best: &mut Option<Kept>| {
        if !val_available {
            return Ok(());
        }
        let reference = reference.as_deref();
        match checks.check(params, stats, reference, ctx) {
            Ok(checked) => {
                let (q_max, by_sparsity, without) = &checked;
                let (q_max, without) = (*q_max, *without);
                let retention = average(by_sparsity);
                let score = criterion.score(by_sparsity, reference);
                let compressions: Vec<f64> = checks.grid.iter().map(|s| 1.0 / (1.0 - s)).collect();
                let mut row = serde_json::json!({
                    "step": step, "val_retention": retention,
                    "val_compressions": compressions, "val_retention_by_compression": by_sparsity,
                });
                if let Some(without) = without {
                    row["unit_stage_q_max"] = q_max.into();
                    row["val_retention_without_units"] = without.into();
                }
                if let Some(r) = reference {
                    row["val_margin"] = worst_margin(by_sparsity, r).into();
                }
                ctx.record(&row);
                // The host's progress bar shows the latest val retention; the lines are for -v.
                ctx.log(LogLevel::Debug, &format!("step {step}: val retention {retention:.4}"));
                if best.as_ref().is_none_or(|(b, ..)| score > *b) {
                    *best = Some((score, step, params.clone(), Some(checked)));
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
            let loss = member_step(&net, &params, member, &base, s, temperature, settings, calib, ctx, &mut grads)
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
                let progress = Progress { step: step + 1, best: best.as_ref().map(|(v, s, ..)| (*v, *s)), seconds };
                let resume = Resume {
                    first: adam.first.clone(),
                    second: adam.second.clone(),
                    best: best.as_ref().map_or_else(|| params.clone(), |b| b.2.clone()),
                };
                let state = State {
                    meta: meta(&net, set, settings, info.clone(), Some(progress), base),
                    params: params.clone(),
                    resume: Some(resume),
                    inputs: None,
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
    let (mut kept_check, kept_step_0) = match best {
        Some((_, step, kept, checked)) => {
            info.best_step = step;
            params = kept;
            let checked = match checked {
                Some(c) => c,
                None => checks.check(&params, stats, reference.as_deref(), ctx)?,
            };
            // The kept parameters' mean val retention without the stage (the score may be a
            // margin).
            let retention = checked.2.unwrap_or_else(|| average(&checked.1));
            info.val_retention = Some(retention);
            (Some(checked), (step == 0).then_some(retention))
        }
        None => {
            info.best_step = info.steps;
            (None, None)
        }
    };
    // How far each compression follows the trained network rather than its base (the
    // untrained network is the base).
    if let (Some(checked), None, true) = (kept_check.as_mut(), kept_step_0, val_available) {
        let stage = inputs.as_ref().map(|(stats, _)| (stats, Stage { q_max: checked.0, p_dead: 0.0 }));
        let by_sparsity;
        (base, by_sparsity) = choose_gain(&mut checks, &params, base, stage, &checked.1, ctx)?;
        if checked.2.is_none() {
            info.val_retention = Some(average(&by_sparsity));
        }
        checked.1 = by_sparsity;
    }
    checks.base = base;
    if net.allocation == Allocation::Learned {
        calibrate_threshold(&net, &mut params, &train, &base, settings);
    }
    let (stage, inputs) = match (inputs, kept_check) {
        (Some((stats, samples)), Some((q_max, by_sparsity, without))) if val_available => {
            let reference = reference.as_deref();
            let without = without.unwrap_or_else(|| average(&by_sparsity));
            // Then the units that are almost never active, given up at every sparsity (not
            // when the user fixed the stage with `units_q`).
            let mut best = (0.0, settings.criterion.score(&by_sparsity, reference), average(&by_sparsity));
            let dead_grid: &[f64] = if settings.units_q.is_some() { &[] } else { &units::P_DEAD_GRID[1..] };
            for &p_dead in dead_grid {
                let by_sparsity = checks.retention(&params, Some((&stats, Stage { q_max, p_dead })), ctx)?;
                let score = settings.criterion.score(&by_sparsity, reference);
                ctx.record(&serde_json::json!({
                    "unit_stage_q_max": q_max, "unit_stage_p_dead": p_dead,
                    "unit_stage_val_retention": average(&by_sparsity), "val_retention_by_compression": by_sparsity,
                }));
                if score > best.1 + 1e-9 {
                    best = (p_dead, score, average(&by_sparsity));
                }
            }
            let (p_dead, _, with) = best;
            ctx.info(&format!(
                "unit stage: q_max {q_max}, p_dead {p_dead} (val retention {without:.4} without it, {with:.4} with it; \
                 input moments of {} values over {samples} train images)",
                stats.dim()
            ));
            let stage = UnitStage { q_max, p_dead, dim: stats.dim(), samples, val_retention: (without, with) };
            // What the state keeps: the network with its stage.
            info.val_retention = Some(with);
            (Some(stage), (q_max > 0.0 || p_dead > 0.0).then_some(stats))
        }
        _ => (None, None),
    };
    if let Some(retention) = kept_step_0 {
        let stage = match &stage {
            Some(u) if u.q_max > 0.0 || u.p_dead > 0.0 => format!(
                ", except that its unit stage gives up the first layer's least active units (up to {:.0} % at high \
                 compression)",
                100.0 * u.q_max
            ),
            _ => String::new(),
        };
        ctx.log(
            LogLevel::Warn,
            &format!(
                "validation kept step 0, the untrained network: no later check beat its val retention \
                 {retention:.4} on the {} val members, so this state prunes by magnitude ({}) with the \
                 per-layer floor{stage} (the val curve is in the .fit.jsonl beside the state)",
                val.len(),
                if base.alpha == [0.0; 5] {
                    "global".to_string()
                } else {
                    format!("layer-normalised by ||W_l||^alpha, alpha {:?} at 2x-32x", base.alpha)
                }
            ),
        );
    }
    let mut meta = meta(&net, set, settings, info, None, base);
    meta.units = stage;
    Ok(State { meta, params, resume: None, inputs })
}

/// The input statistics of the unit stage and the number of images behind them, when it
/// applies to every val member and the host serves `input_moments`; otherwise `None`, said
/// in the log.
fn unit_inputs(
    val: &[Prepared<'_>],
    settings: &FitSettings,
    ctx: &Ctx<'_>,
) -> Result<Option<(InputStats, u64)>, PluginError> {
    let structural = |m: &Prepared<'_>| {
        !m.encoded.views.is_empty() && units::applies(&m.model, &m.encoded.views, m.encoded.views[0].inp)
    };
    if val.is_empty() || !val.iter().all(structural) {
        ctx.log(
            LogLevel::Debug,
            "unit stage: off (the first prunable layer is not a linear layer on the flattened image with a ReLU)",
        );
        return Ok(None);
    }
    let calib = CalibRequest { samples: UNIT_SAMPLES, minibatch: 1, seed: settings.seed ^ 0x5eed_0f1a_7e00 };
    let moments = match ctx.input_moments(calib) {
        Ok(m) => m,
        Err(e) if e.is_unavailable() => {
            ctx.log(LogLevel::Warn, &format!("unit stage: off ({})", e.message));
            return Ok(None);
        }
        Err(e) => return Err(e.context("input moments")),
    };
    let stats = InputStats::from_moments(moments.mean.as_slice(), moments.second.data.as_slice());
    if !val.iter().all(|m| units::applies(&m.model, &m.encoded.views, stats.dim())) {
        ctx.log(
            LogLevel::Debug,
            &format!("unit stage: off (the first layer does not read the {} input values)", stats.dim()),
        );
        return Ok(None);
    }
    Ok(Some((stats, moments.samples)))
}

/// Chooses the base's knots on the members of `checks` with the untrained network `fresh`:
/// at each val compression the `α` of [`ALPHA_GRID`] with the best mean retention (ties keep
/// the smaller). Returns the base and the untrained network's retention with it at each val
/// compression.
fn choose_base(checks: &mut Checks<'_, '_>, fresh: &Params, ctx: &Ctx<'_>) -> Result<(Base, Vec<f64>), PluginError> {
    let grid = checks.grid.clone();
    let (alpha, untrained) = choose_knots(&grid, &ALPHA_GRID, |alpha| {
        checks.base = Base::uniform(alpha);
        let by_sparsity = checks.retention(fresh, None, ctx)?;
        ctx.record(&serde_json::json!({ "base_alpha": alpha, "val_retention_by_compression": by_sparsity }));
        Ok(by_sparsity)
    })?;
    let base = Base { alpha, gain: [1.0; 5] };
    ctx.info(&format!(
        "base score: layer normalisation alpha {:?} at 2x, 4x, 8x, 16x, 32x (untrained retention {:.4} on the {} \
         members it was chosen on)",
        base.alpha,
        average(&untrained),
        checks.val.len()
    ));
    Ok((base, untrained))
}

/// Chooses, on the val members, the trained network's weight in the score at each knot: the
/// `γ` of [`GAIN_GRID`] with the best mean retention at each val compression (ties keep the
/// larger), with the unit stage `stage` where there is one. `fitted` is the retention at
/// `γ = 1` (the kept check). Returns the base with those weights and its retention.
fn choose_gain(
    checks: &mut Checks<'_, '_>,
    params: &Params,
    base: Base,
    stage: Option<(&InputStats, Stage)>,
    fitted: &[f64],
    ctx: &Ctx<'_>,
) -> Result<(Base, Vec<f64>), PluginError> {
    let grid = checks.grid.clone();
    let (gain, by_sparsity) = choose_knots(&grid, &GAIN_GRID, |gain| {
        if gain == 1.0 {
            return Ok(fitted.to_vec());
        }
        checks.base = Base { gain: [gain; 5], ..base };
        let by_sparsity = checks.retention(params, stage, ctx)?;
        ctx.record(&serde_json::json!({ "network_weight": gain, "val_retention_by_compression": by_sparsity }));
        Ok(by_sparsity)
    })?;
    ctx.info(&format!(
        "network weight: {gain:?} at 2x, 4x, 8x, 16x, 32x (val retention {:.4} with the network alone, {:.4} with these)",
        average(fitted),
        average(&by_sparsity)
    ));
    Ok((Base { gain, ..base }, by_sparsity))
}

/// For each sparsity of `grid` (the val compressions), the candidate whose retention
/// (`retention(candidate)`, one value per sparsity of `grid`) is best there, the first on
/// ties; the knots (2×, …, 32×) take the choice of the nearest val compression. Returns the
/// knots and the best retention at each val compression.
fn choose_knots(
    grid: &[f64],
    candidates: &[f64],
    mut retention: impl FnMut(f64) -> Result<Vec<f64>, PluginError>,
) -> Result<([f64; 5], Vec<f64>), PluginError> {
    let mut best: Vec<(f64, f64)> = vec![(candidates[0], f64::NEG_INFINITY); grid.len()];
    for &candidate in candidates {
        let by_sparsity = retention(candidate)?;
        for (b, r) in best.iter_mut().zip(by_sparsity) {
            if r > b.1 + 1e-9 {
                *b = (candidate, r);
            }
        }
    }
    let chosen: Vec<(usize, f64)> = grid.iter().zip(&best).map(|(&s, &(c, _))| (Base::knot(s), c)).collect();
    let mut knots = [0.0; 5];
    for (k, v) in knots.iter_mut().enumerate() {
        *v = chosen.iter().min_by_key(|(knot, _)| knot.abs_diff(k)).expect("the val grid is not empty").1;
    }
    Ok((knots, best.iter().map(|&(_, r)| r).collect()))
}

/// Train images the unit stage's input moments are taken over.
const UNIT_SAMPLES: u64 = 4096;

/// Refits the threshold head to the kept scoring network: on a grid of 64 sparsities over
/// the fitted range, the target is the mean over the train members of the standardised
/// score at the top-k boundary (the threshold that keeps `1 − s` of each member's weights).
/// During the fit the head chased a network that kept changing; this makes `mask=threshold`
/// track the request for the parameters actually kept.
fn calibrate_threshold(
    net: &NetConfig,
    params: &mut Params,
    train: &[Prepared<'_>],
    base: &Base,
    settings: &FitSettings,
) {
    const GRID: usize = 64;
    let grid: Vec<f64> =
        (0..GRID).map(|i| settings.s_min + (settings.s_max - settings.s_min) * i as f64 / (GRID - 1) as f64).collect();
    let mut targets = vec![0f64; GRID];
    for member in train {
        for (t, &s) in targets.iter_mut().zip(&grid) {
            let (mut scores, _) = base::scores(net, params, base, &member.encoded, &member.model.weights(), s);
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
    base: Base,
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
        units: None,
        base: Some(base),
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
            let ranks = encoded.model_ranks();
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

/// The mean of val retentions.
fn average(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
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

/// A validation check: the unit stage's best `q_max` (0 without the stage), the mean val
/// retention at each val sparsity with it, and the mean without the stage (with a stage).
type Checked = (f64, Vec<f64>, Option<f64>);

/// The best check so far: its score, step, parameters and the check itself (`None` when it
/// came from a checkpoint).
type Kept = (f64, usize, Params, Option<Checked>);

/// The val side of a fit: the val members, the sparsities they are checked at, and their
/// dense accuracies once measured.
struct Checks<'v, 'a> {
    net: &'v NetConfig,
    val: Vec<&'v Prepared<'a>>,
    settings: &'v FitSettings,
    grid: Vec<f64>,
    /// The base score the network is a residual on.
    base: Base,
    dense: Vec<Option<f64>>,
    /// Each val member's first-layer unit activity, once the unit stage has needed it (the
    /// input statistics are the same for the whole fit).
    activity: Vec<Option<(Vec<f64>, Vec<f64>)>>,
}

impl<'v, 'a> Checks<'v, 'a> {
    fn new(net: &'v NetConfig, val: Vec<&'v Prepared<'a>>, settings: &'v FitSettings) -> Checks<'v, 'a> {
        let grid = val_grid(settings.s_min, settings.s_max);
        let n = val.len();
        Checks { net, val, settings, grid, base: Base::GLOBAL, dense: vec![None; n], activity: vec![None; n] }
    }

    /// Mean retention of the val members' masks at each sparsity of the grid, on the host's
    /// val slice; with `units`, the unit stage at that `q_max` applies first.
    fn retention(
        &mut self,
        params: &Params,
        units: Option<(&InputStats, Stage)>,
        ctx: &Ctx<'_>,
    ) -> Result<Vec<f64>, PluginError> {
        let (net, settings) = (self.net, self.settings);
        let n = settings.val_samples as usize;
        let mut sums = vec![0.0; self.grid.len()];
        for ((member, dense), activity) in self.val.iter().zip(self.dense.iter_mut()).zip(self.activity.iter_mut()) {
            let base = match dense {
                Some(d) => *d,
                None => *dense.insert(ctx.evaluate(&member.model, DataSplit::Val, n)?.accuracy.max(1e-9)),
            };
            for (&s, sum) in self.grid.iter().zip(&mut sums) {
                let weights = member.model.weights();
                let (mut scores, _) = base::scores(net, params, &self.base, &member.encoded, &weights, s);
                let views = &member.encoded.views;
                if let Some((stats, stage)) = units
                    && units::applies(&member.model, views, stats.dim())
                    && units::acts(stage, views[0].out, s)
                {
                    let activity = activity.get_or_insert_with(|| units::importance(&member.model, views, stats));
                    units::give_up(&mut scores, views, activity, stage, s);
                }
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
        Ok(sums.iter().map(|s| s / self.val.len().max(1) as f64).collect())
    }

    /// One validation check of `params`: with the unit stage at its best `q_max` when there
    /// are input statistics, without it otherwise.
    fn check(
        &mut self,
        params: &Params,
        stats: Option<&InputStats>,
        reference: Option<&[f64]>,
        ctx: &Ctx<'_>,
    ) -> Result<Checked, PluginError> {
        match stats {
            Some(stats) => self.best_q(params, stats, reference, ctx),
            None => self.retention(params, None, ctx).map(|v| (0.0, v, None)),
        }
    }

    /// The `q_max` of [`units::Q_GRID`] (or the user's) with the best score by the fit's
    /// criterion (ties keep the smaller), its retention per sparsity, and the mean retention
    /// without the stage.
    fn best_q(
        &mut self,
        params: &Params,
        stats: &InputStats,
        reference: Option<&[f64]>,
        ctx: &Ctx<'_>,
    ) -> Result<Checked, PluginError> {
        let settings = self.settings;
        let mut best: Option<(f64, f64, Vec<f64>)> = None;
        let mut without = None;
        let candidates: Vec<f64> = match settings.units_q {
            Some(q) => vec![0.0, q],
            None => units::Q_GRID.to_vec(),
        };
        for q in candidates {
            let by_sparsity = self.retention(params, Some((stats, Stage { q_max: q, p_dead: 0.0 })), ctx)?;
            if q == 0.0 {
                without = Some(average(&by_sparsity));
            }
            // A fixed q_max is the only candidate; 0 is validated for the "without" figure.
            if settings.units_q.is_some_and(|fixed| fixed != q) {
                continue;
            }
            let score = settings.criterion.score(&by_sparsity, reference);
            if best.as_ref().is_none_or(|(_, b, _)| score > *b + 1e-9) {
                best = Some((q, score, by_sparsity));
            }
        }
        let (q, _, by_sparsity) = best.expect("the candidates are not empty");
        Ok((q, by_sparsity, without))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_knot_takes_the_best_candidate_at_its_val_compression_and_the_first_on_ties() {
        // Val compressions 4x, 8x and 16x only (a narrower sparsity range): 2x takes 4x's
        // choice and 32x takes 16x's.
        let grid = [0.75, 0.875, 0.9375];
        let table = |c: f64| -> Vec<f64> {
            match c {
                0.0 => vec![0.90, 0.50, 0.30],
                0.5 => vec![0.95, 0.50, 0.20],
                _ => vec![0.80, 0.60, 0.30],
            }
        };
        let mut asked = Vec::new();
        let (knots, best) = choose_knots(&grid, &[0.0, 0.5, 1.0], |c| {
            asked.push(c);
            Ok(table(c))
        })
        .unwrap();
        assert_eq!(asked, [0.0, 0.5, 1.0]);
        // 4x: 0.5 is best; 8x: 1.0; 16x: 0.0 and 1.0 tie, the first (0.0) stays.
        assert_eq!(knots, [0.5, 0.5, 1.0, 0.0, 0.0]);
        assert_eq!(best, [0.95, 0.60, 0.30]);
        // A failing evaluation is the caller's error, not a choice.
        let e = choose_knots(&grid, &[0.0], |_| Err(PluginError::failed("host gone"))).unwrap_err();
        assert!(e.message.contains("host gone"));
    }

    #[test]
    fn the_criteria_rank_checks_as_documented() {
        let reference = [0.99, 0.90, 0.80];
        // a: better on average but 1.5 points below the start at the last compression;
        // b: above it everywhere, by little; c: 0.5 below at one, well above elsewhere.
        let (a, b, c) = ([1.0, 0.98, 0.785], [0.995, 0.905, 0.801], [0.985, 0.93, 0.83]);
        let score = |k: Criterion, v: &[f64]| k.score(v, Some(&reference));
        // The mean prefers a; the guard drops it (below every admissible check) and keeps
        // c, the best mean among the rest; the margin wants b, the only one never below.
        assert!(score(Criterion::Mean, &a) > score(Criterion::Mean, &c));
        assert!(score(Criterion::Guarded, &c) > score(Criterion::Guarded, &b));
        assert!(score(Criterion::Guarded, &b) > score(Criterion::Guarded, &a));
        assert!(score(Criterion::Margin, &b) > score(Criterion::Margin, &c));
        assert!(score(Criterion::Margin, &c) > score(Criterion::Margin, &a));
        // The untrained network itself is admissible with its own mean.
        let start = score(Criterion::Guarded, &reference);
        assert!((start - (0.99 + 0.90 + 0.80) / 3.0).abs() < 1e-12);
        // Blended counts each compression at the better of the check and the start: a is
        // credited its gains at 2x and 4x and loses nothing at 8x, so it beats c there.
        assert!((score(Criterion::Blended, &a) - (1.0 + 0.98 + 0.80) / 3.0).abs() < 1e-12);
        assert!(score(Criterion::Blended, &a) > score(Criterion::Blended, &c));
        assert!(score(Criterion::Blended, &b) > score(Criterion::Blended, &reference));
        // Without a reference every criterion is the mean.
        assert_eq!(Criterion::Margin.score(&a, None), Criterion::Mean.score(&a, None));
        assert_eq!(Criterion::Blended.score(&a, None), Criterion::Mean.score(&a, None));
    }
}

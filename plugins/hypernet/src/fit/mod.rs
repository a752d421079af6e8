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
//!
//! The procedure is [`fit`], in phases: the members encoded ([`step`]) and the fit started
//! or resumed; validation set up ([`validation`], [`checks`], the [`settings`]' [`criterion`]);
//! the optimisation steps ([`step`]); then the kept check finished into a state: the
//! network's weight, the threshold head refitted ([`threshold`]), the unit stage
//! ([`unit_stage`]).

mod checks;
mod criterion;
mod settings;
mod step;
mod threshold;
mod unit_stage;
mod validation;

use std::time::Instant;

use hyperprune_sdk::rng::SplitMix64;
use hyperprune_sdk::{CalibRequest, Ctx, ErrorKind, LogLevel, PluginError};

pub use self::criterion::Criterion;
pub use self::settings::{BaseChoice, FitSettings, Relaxation};

use self::checks::{Checked, choose_gain, choose_step};
use self::criterion::average;
use self::step::{Adam, Prepared, draw_sparsity, member_step, prepare};
use self::threshold::calibrate_threshold;
use self::unit_stage::choose_stage;
use self::validation::{Kept, Validation};
use crate::base::Base;
use crate::features::FeatureSet;
use crate::network::{Allocation, NetConfig, Params};
use crate::state::{FitInfo, Meta, Progress, Resume, State};
use crate::units::{Stage, UnitStage};

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
    let (mut training, resumed_base) = Training::resume_or_start(resume, &fresh, settings, ctx);
    let (mut validation, base) = Validation::begin(&net, &train, &val, &fresh, settings, resumed_base, ctx)?;
    // Step 0 is validated too: the untrained network is magnitude pruning (with floors), so
    // the kept parameters are never worse than that on the val members.
    if training.start == 0 && settings.val_every > 0 {
        validation.check(0, &training.params, &mut training.best, ctx)?;
    }
    let run = Run { net: &net, set, settings, train: &train, base, started };
    run.optimise(&mut training, &mut validation, &info, ctx)?;
    run.finish(training, validation, info, val.len(), ctx)
}

/// Where the optimisation stands: the parameters, Adam's moments, the best check so far,
/// and the step and seconds it started from (not zero when resumed).
struct Training {
    params: Params,
    adam: Adam,
    best: Option<Kept>,
    start: usize,
    spent: f64,
}

impl Training {
    /// From the checkpoint `resume` when it has the layout of `fresh`, otherwise from
    /// `fresh`; with the base the checkpoint was trained on.
    fn resume_or_start(
        resume: Option<State>,
        fresh: &Params,
        settings: &FitSettings,
        ctx: &Ctx<'_>,
    ) -> (Training, Option<Base>) {
        match resume {
            Some(State { params, resume: Some(r), meta: Meta { progress: Some(p), base, .. }, .. })
                if params.same_layout(fresh) =>
            {
                ctx.info(&format!("resuming the fit at step {} of {}", p.step, settings.steps));
                // The check behind the best so far is not in the checkpoint: redone at the end.
                let best = p.best.map(|(v, s)| (v, s, r.best.clone(), None));
                let adam = Adam { first: r.first, second: r.second, t: p.step };
                (Training { params, adam, best, start: p.step, spent: p.seconds }, base)
            }
            _ => (Training { params: fresh.clone(), adam: Adam::new(fresh), best: None, start: 0, spent: 0.0 }, None),
        }
    }
}

/// The distillation losses since the last curve row.
#[derive(Default)]
struct Losses {
    sum: f64,
    n: usize,
}

/// What one fit holds fixed from the first step to the last.
struct Run<'r, 'a> {
    net: &'r NetConfig,
    set: FeatureSet,
    settings: &'r FitSettings,
    train: &'r [Prepared<'a>],
    /// The base score the network is a residual on during the steps.
    base: Base,
    started: Instant,
}

impl Run<'_, '_> {
    /// The steps from `training.start` to the last: each averages the gradients of its
    /// (member, sparsity) pairs and takes an Adam step; every `val_every` steps the
    /// parameters are validated and checkpointed.
    fn optimise(
        &self,
        training: &mut Training,
        validation: &mut Validation<'_, '_>,
        info: &FitInfo,
        ctx: &Ctx<'_>,
    ) -> Result<(), PluginError> {
        let settings = self.settings;
        let mut checkpoints = true;
        let mut losses = Losses::default();
        for step in training.start..settings.steps {
            if ctx.cancelled() {
                return Err(PluginError::new(ErrorKind::Cancelled, format!("fit cancelled at step {step}")));
            }
            let progress = step as f64 / settings.steps.max(1) as f64;
            let temperature = settings.t_start * (settings.t_end / settings.t_start).powf(progress);
            let lr = settings.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
            let grads = self.gradients(&training.params, step, temperature, &mut losses, ctx)?;
            training.adam.step(&mut training.params, &grads, lr);
            ctx.progress(step + 1, settings.steps);
            if (step + 1) % 10 == 0 || step + 1 == settings.steps {
                ctx.record(&serde_json::json!({
                    "step": step + 1, "loss": losses.sum / losses.n.max(1) as f64, "temperature": temperature, "lr": lr,
                    "seconds": training.spent + self.started.elapsed().as_secs_f64(),
                }));
                losses = Losses::default();
            }
            let last = step + 1 == settings.steps;
            if settings.val_every > 0 && ((step + 1) % settings.val_every == 0 || last) {
                validation.check(step + 1, &training.params, &mut training.best, ctx)?;
                if checkpoints && !last {
                    checkpoints = self.checkpoint(step + 1, training, info, ctx);
                }
            }
        }
        Ok(())
    }

    /// The mean parameter gradient of step `step`'s (member, sparsity) pairs at the
    /// straight-through `temperature`; their distillation losses go into `losses`.
    fn gradients(
        &self,
        params: &Params,
        step: usize,
        temperature: f64,
        losses: &mut Losses,
        ctx: &Ctx<'_>,
    ) -> Result<Vec<Vec<f32>>, PluginError> {
        let (settings, train) = (self.settings, self.train);
        let mut rng = SplitMix64::new(settings.seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut grads: Vec<Vec<f32>> = params.list.iter().map(|p| vec![0.0; p.values.len()]).collect();
        for j in 0..settings.members_per_step {
            let member = &train[(rng.next_u64() % train.len() as u64) as usize];
            let s = draw_sparsity(&mut rng, settings);
            let calib = CalibRequest { samples: settings.calib_samples, minibatch: 1, seed: rng.next_u64() };
            let loss =
                member_step(self.net, params, member, &self.base, s, temperature, settings, calib, ctx, &mut grads)
                    .map_err(|e| e.context(format!("step {step}, member {} (pair {j})", member.id)))?;
            losses.sum += loss;
            losses.n += 1;
        }
        let scale = 1.0 / settings.members_per_step as f32;
        grads.iter_mut().flatten().for_each(|g| *g *= scale);
        Ok(grads)
    }

    /// Hands the host a checkpoint after `step`; returns whether to go on checkpointing (not
    /// once the host has refused one).
    fn checkpoint(&self, step: usize, training: &Training, info: &FitInfo, ctx: &Ctx<'_>) -> bool {
        let (params, best) = (&training.params, &training.best);
        let seconds = training.spent + self.started.elapsed().as_secs_f64();
        let progress = Progress { step, best: best.as_ref().map(|(v, s, ..)| (*v, *s)), seconds };
        let resume = Resume {
            first: training.adam.first.clone(),
            second: training.adam.second.clone(),
            best: best.as_ref().map_or_else(|| params.clone(), |b| b.2.clone()),
        };
        let state = State {
            meta: meta(self.net, self.set, self.settings, info.clone(), Some(progress), self.base),
            params: params.clone(),
            resume: Some(resume),
            inputs: None,
            refine: None,
        };
        if let Err(e) = ctx.checkpoint(&state.to_bytes()) {
            ctx.log(LogLevel::Debug, &format!("checkpoints off: {}", e.message));
            return false;
        }
        true
    }

    /// After the last step: the best check's parameters, the network's weight in the mask
    /// per compression, the threshold head refitted to them, and the unit stage, as the
    /// state.
    fn finish(
        &self,
        mut training: Training,
        mut validation: Validation<'_, '_>,
        mut info: FitInfo,
        val_members: usize,
        ctx: &Ctx<'_>,
    ) -> Result<State, PluginError> {
        let settings = self.settings;
        training.spent += self.started.elapsed().as_secs_f64();
        info.steps = settings.steps.max(training.start);
        info.seconds = training.spent;
        info.train_members = self.train.len();
        info.val_members = val_members;
        let (mut kept_check, kept_step_0) = keep_best(&mut training, &mut validation, &mut info, ctx)?;
        let (mut params, mut base) = (training.params, self.base);
        // How far each compression follows the trained network rather than its base, or
        // LAMP instead of both (when step 0 is kept, the network is its base, and only LAMP
        // can differ).
        if let (Some(checked), true) = (kept_check.as_mut(), validation.available) {
            let stage = validation.inputs.as_ref().map(|(stats, _)| (stats, Stage { q_max: checked.0, p_dead: 0.0 }));
            let by_sparsity;
            (base, by_sparsity) = choose_gain(&mut validation.checks, &params, base, stage, &checked.1, ctx)?;
            if checked.2.is_none() {
                info.val_retention = Some(average(&by_sparsity));
            }
            checked.1 = by_sparsity;
        }
        validation.checks.base = base;
        if self.net.allocation == Allocation::Learned {
            calibrate_threshold(self.net, &mut params, self.train, &base, settings);
        }
        let (stage, inputs) = match (validation.inputs.take(), kept_check) {
            (Some(inputs), Some(checked)) if validation.available => {
                let reference = validation.reference.as_deref();
                let (stage, inputs) =
                    choose_stage(&mut validation.checks, &params, inputs, checked, reference, &mut info, ctx)?;
                (Some(stage), inputs)
            }
            _ => (None, None),
        };
        if let Some(retention) = kept_step_0 {
            warn_untrained_kept(retention, stage.as_ref(), val_members, &base, ctx);
        }
        let refine = crate::refinement::pool_from_host(ctx, settings.seed);
        let mut refine_step = None;
        if let (Some(pool), true) = (&refine, validation.available) {
            let units =
                inputs.as_ref().zip(stage.as_ref()).map(|(s, u)| (s, Stage { q_max: u.q_max, p_dead: u.p_dead }));
            // A failure here costs the choice, not the fit: the state refines with the default size.
            match choose_step(&mut validation.checks, &params, units, pool, ctx) {
                Ok((step, _)) => refine_step = Some(step),
                Err(e) => ctx.log(
                    LogLevel::Warn,
                    &format!(
                        "refine: no step size chosen ({}); the state refines with {}",
                        e.message,
                        crate::refinement::STEP
                    ),
                ),
            }
        }
        let mut meta = meta(self.net, self.set, settings, info, None, base);
        meta.units = stage;
        meta.refine_inputs = refine.as_ref().map(|r| [r.len(), r.dim]);
        meta.refine_step = refine_step;
        Ok(State { meta, params, resume: None, inputs, refine })
    }
}

/// The best check's parameters into `training.params`, and its step and val retention into
/// `info` (the check redone when it came from a checkpoint). Returns the check, and its val
/// retention when it is the untrained network's (step 0).
fn keep_best(
    training: &mut Training,
    validation: &mut Validation<'_, '_>,
    info: &mut FitInfo,
    ctx: &Ctx<'_>,
) -> Result<(Option<Checked>, Option<f64>), PluginError> {
    match training.best.take() {
        Some((_, step, kept, checked)) => {
            info.best_step = step;
            training.params = kept;
            let checked = match checked {
                Some(c) => c,
                None => {
                    let stats = validation.inputs.as_ref().map(|(stats, _)| stats);
                    validation.checks.check(&training.params, stats, validation.reference.as_deref(), ctx)?
                }
            };
            // The kept parameters' mean val retention without the stage (the score may be a
            // margin).
            let retention = checked.2.unwrap_or_else(|| average(&checked.1));
            info.val_retention = Some(retention);
            Ok((Some(checked), (step == 0).then_some(retention)))
        }
        None => {
            info.best_step = info.steps;
            Ok((None, None))
        }
    }
}

/// Says that validation kept step 0, the untrained network (val retention `retention`), so
/// that the state prunes by its base (and `stage`).
fn warn_untrained_kept(retention: f64, stage: Option<&UnitStage>, val_members: usize, base: &Base, ctx: &Ctx<'_>) {
    let stage = match stage {
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
            val_members,
            match (base.alpha == [0.0; 5], base.lamp == [0.0; 5]) {
                (true, true) => "global".to_string(),
                (false, true) => format!("layer-normalised by ||W_l||^alpha, alpha {:?} at 2x-32x", base.alpha),
                _ => format!(
                    "layer-normalised by ||W_l||^alpha, alpha {:?}, and LAMP, weight {:?}, at 2x-32x",
                    base.alpha, base.lamp
                ),
            }
        ),
    );
}

/// The metadata of a state (or, with `progress`, a checkpoint) of this fit.
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
        refine_inputs: None,
        refine_step: None,
    }
}

//! Validation during a fit: before the first step the base score and the untrained
//! network's retention every check is compared with; then each check of the parameters on
//! the val members, its curve row, and the best check so far. The host may not serve
//! validation; the fit then goes on without it.

use hyperprune_sdk::{Ctx, LogLevel, PluginError};

use super::checks::{Checked, Checks, choose_base};
use super::criterion::{Criterion, average, worst_margin};
use super::settings::{BaseChoice, FitSettings};
use super::step::Prepared;
use super::unit_stage::unit_inputs;
use crate::base::Base;
use crate::network::{NetConfig, Params};
use crate::units::InputStats;

/// The best check so far: its score, step, parameters and the check itself (`None` when it
/// came from a checkpoint).
pub(super) type Kept = (f64, usize, Params, Option<Checked>);

/// The val side of a running fit: the checks, what they are compared with, and whether
/// the host still serves validation.
pub(super) struct Validation<'v, 'a> {
    pub(super) checks: Checks<'v, 'a>,
    /// The untrained network's retention at each val compression (the reference of every
    /// criterion but the mean), once measured.
    pub(super) reference: Option<Vec<f64>>,
    /// The unit stage's input statistics and the number of images behind them, when the
    /// stage applies.
    pub(super) inputs: Option<(InputStats, u64)>,
    /// Off once the host has said it does not serve validation in this run.
    pub(super) available: bool,
}

impl<'v, 'a> Validation<'v, 'a> {
    /// Validation before the first step: the base score (chosen on the members unless fixed
    /// or resumed), the unit stage's input statistics, and the untrained network's
    /// retention. Returns it and the base.
    ///
    /// # Errors
    /// A host service failing other than by not serving validation.
    pub(super) fn begin(
        net: &'v NetConfig,
        train: &'v [Prepared<'a>],
        val: &'v [Prepared<'a>],
        fresh: &Params,
        settings: &'v FitSettings,
        resumed_base: Option<Base>,
        ctx: &Ctx<'_>,
    ) -> Result<(Validation<'v, 'a>, Base), PluginError> {
        let checks = Checks::new(net, val.iter().collect(), settings);
        let mut validation = Validation { checks, reference: None, inputs: None, available: !val.is_empty() };
        if val.is_empty() {
            ctx.log(LogLevel::Warn, "the zoo has no val members: keeping the last parameters, no selection");
        }
        let base = validation.base(net, train, val, fresh, resumed_base, ctx)?;
        validation.checks.base = base;
        // With the unit stage, each check scores the network at its best `q_max`, so that the
        // step kept is the best one with the stage, not without it.
        validation.inputs =
            if settings.units && validation.available { unit_inputs(val, settings, ctx)? } else { None };
        validation.untrained(fresh, ctx)?;
        Ok((validation, base))
    }

    /// The base score the fit starts from.
    fn base(
        &mut self,
        net: &'v NetConfig,
        train: &'v [Prepared<'a>],
        val: &'v [Prepared<'a>],
        fresh: &Params,
        resumed_base: Option<Base>,
        ctx: &Ctx<'_>,
    ) -> Result<Base, PluginError> {
        let settings = self.checks.settings;
        // The base score comes first: the network learns a residual on it, and the untrained
        // network (the reference of the guarded and margin criteria) prunes by it. The untrained
        // network has seen no member, so the train members may choose it too.
        let mut pool = settings.base_on_train.then(|| Checks::new(net, train.iter().chain(val).collect(), settings));
        let base = match settings.base {
            BaseChoice::Fixed(base) => base,
            // A resumed fit keeps the base its checkpoint was trained on (choosing it again would
            // record its curve rows twice); the reference is computed below.
            BaseChoice::Auto if resumed_base.is_some() => resumed_base.unwrap_or(Base::GLOBAL),
            BaseChoice::Auto if self.available => {
                match choose_base(pool.as_mut().unwrap_or(&mut self.checks), fresh, ctx) {
                    Ok((base, untrained)) => {
                        // Untrained retention on the val members alone is the reference.
                        if pool.is_none() {
                            self.reference = Some(untrained);
                        }
                        base
                    }
                    Err(e) => {
                        self.unavailable(e, ctx)?;
                        Base::GLOBAL
                    }
                }
            }
            BaseChoice::Auto => Base::GLOBAL,
        };
        Ok(base)
    }

    /// The criteria but the mean compare every check with the untrained network, the step-0
    /// parameters `fresh` (also on a resumed fit), as the fit would keep it: with the unit
    /// stage at its best `q_max` where there is one.
    fn untrained(&mut self, fresh: &Params, ctx: &Ctx<'_>) -> Result<(), PluginError> {
        let stats = self.inputs.as_ref().map(|(stats, _)| stats);
        let criterion = self.checks.settings.criterion;
        if (self.reference.is_none() || stats.is_some()) && criterion != Criterion::Mean && self.available {
            let untrained = match stats {
                Some(stats) => self.checks.check(fresh, Some(stats), None, ctx).map(|c| c.1),
                None => self.checks.retention(fresh, None, ctx),
            };
            match untrained {
                Ok(r) => self.reference = Some(r),
                Err(e) => self.unavailable(e, ctx)?,
            }
        }
        Ok(())
    }

    /// Validates `params` at `step` (when the host serves validation): records the check and
    /// keeps it in `best` when it scores higher by the fit's criterion.
    ///
    /// # Errors
    /// A host service failing other than by not serving validation.
    pub(super) fn check(
        &mut self,
        step: usize,
        params: &Params,
        best: &mut Option<Kept>,
        ctx: &Ctx<'_>,
    ) -> Result<(), PluginError> {
        if !self.available {
            return Ok(());
        }
        let reference = self.reference.as_deref();
        let stats = self.inputs.as_ref().map(|(stats, _)| stats);
        match self.checks.check(params, stats, reference, ctx) {
            Ok(checked) => {
                self.keep(step, params, checked, best, ctx);
                Ok(())
            }
            Err(e) => self.unavailable(e, ctx),
        }
    }

    /// Records the check `checked` of `params` at `step` and keeps it in `best` when it
    /// scores higher.
    fn keep(&self, step: usize, params: &Params, checked: Checked, best: &mut Option<Kept>, ctx: &Ctx<'_>) {
        let reference = self.reference.as_deref();
        let (q_max, by_sparsity, without) = &checked;
        let (q_max, without) = (*q_max, *without);
        let retention = average(by_sparsity);
        let score = self.checks.settings.criterion.score(by_sparsity, reference);
        let compressions: Vec<f64> = self.checks.grid.iter().map(|s| 1.0 / (1.0 - s)).collect();
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
    }

    /// A validation error `e`: when the host does not serve validation in this run, said
    /// in the log and validation off; otherwise the error, with its context.
    fn unavailable(&mut self, e: PluginError, ctx: &Ctx<'_>) -> Result<(), PluginError> {
        if !e.is_unavailable() {
            return Err(e.context("validation"));
        }
        ctx.log(LogLevel::Warn, &format!("no validation in this run: {}", e.message));
        self.available = false;
        Ok(())
    }
}

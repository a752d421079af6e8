//! The val side of a fit: the [`Checks`] that measure a network's mean val retention at the
//! val compressions, and what they choose on the val members (the base's layer
//! normalisation before the first step, the network's weight in the mask after the last).

use hyperprune_sdk::{Ctx, DataSplit, ModelBuf, PluginError, PruneRequest};

use super::criterion::average;
use super::settings::FitSettings;
use super::step::Prepared;
use crate::base::{self, ALPHA_GRID, Base, GAIN_GRID, LAMP_ALONE};
use crate::network::{NetConfig, Params};
use crate::refinement::{Inputs, STEP_GRID, Schedule, refine_mask};
use crate::rescale;
use crate::selection::select;
use crate::units::{self, InputStats, Stage};

/// The compressions validated on: 2×, 4×, … within the fitted range, or its midpoint.
fn val_grid(s_min: f64, s_max: f64) -> Vec<f64> {
    let grid: Vec<f64> =
        [2.0f64, 4.0, 8.0, 16.0, 32.0].iter().map(|c| 1.0 - 1.0 / c).filter(|s| (s_min..=s_max).contains(s)).collect();
    if grid.is_empty() { vec![0.5 * (s_min + s_max)] } else { grid }
}

/// A validation check: the unit stage's best `q_max` (0 without the stage), the mean val
/// retention at each val sparsity with it, and the mean without the stage (with a stage).
pub(super) type Checked = (f64, Vec<f64>, Option<f64>);

/// The val side of a fit: the val members, the sparsities they are checked at, and their
/// dense accuracies once measured.
pub(super) struct Checks<'v, 'a> {
    net: &'v NetConfig,
    val: Vec<&'v Prepared<'a>>,
    pub(super) settings: &'v FitSettings,
    pub(super) grid: Vec<f64>,
    /// The base score the network is a residual on.
    pub(super) base: Base,
    dense: Vec<Option<f64>>,
    /// Each val member's first-layer unit activity, once the unit stage has needed it (the
    /// input statistics are the same for the whole fit).
    activity: Vec<Option<(Vec<f64>, Vec<f64>)>>,
}

impl<'v, 'a> Checks<'v, 'a> {
    pub(super) fn new(net: &'v NetConfig, val: Vec<&'v Prepared<'a>>, settings: &'v FitSettings) -> Checks<'v, 'a> {
        let grid = val_grid(settings.s_min, settings.s_max);
        let n = val.len();
        Checks { net, val, settings, grid, base: Base::GLOBAL, dense: vec![None; n], activity: vec![None; n] }
    }

    /// Mean retention of the val members' masks at each sparsity of the grid, on the host's
    /// val slice; with `units`, the unit stage at that `q_max` applies first.
    pub(super) fn retention(
        &mut self,
        params: &Params,
        units: Option<(&InputStats, Stage)>,
        ctx: &Ctx<'_>,
    ) -> Result<Vec<f64>, PluginError> {
        self.retention_refined(params, units, None, ctx)
    }

    /// [`Checks::retention`] of the masks refined as a prune refines them by default: one
    /// step of size `lr` on `inputs` (when given).
    pub(super) fn retention_refined(
        &mut self,
        params: &Params,
        units: Option<(&InputStats, Stage)>,
        refine: Option<(&Inputs, f64)>,
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
                let selection = select(net.allocation, &member.encoded, &scores, s, settings.floor);
                let keep = match refine {
                    None => selection.keep,
                    Some((inputs, lr)) => {
                        // As a prune refines them: scores from their layer's threshold, one step.
                        selection.measure_from_thresholds(&mut scores);
                        let request = PruneRequest::global(s, 0);
                        let schedule = Schedule::new(1, Some(lr), settings.floor);
                        refine_mask(&member.model, &request, &selection.keep, &scores, inputs, schedule, ctx)?.keep
                    }
                };
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

    /// The mean val retention of a mask that leaves the network guessing (accuracy
    /// `1/classes`), plus three standard errors of an accuracy at that rate on the val
    /// images: a val compression where no candidate keeps more cannot tell candidates apart.
    /// `None` before the dense accuracies are measured.
    pub(super) fn chance(&self) -> Option<f64> {
        let classes = self.val.first()?.model.layers().last()?.rows().max(2) as f64;
        let dense: Vec<f64> = self.dense.iter().copied().collect::<Option<_>>()?;
        let p = 1.0 / classes;
        let images = (self.settings.val_samples as f64 * dense.len() as f64).max(1.0);
        let guess = average(&dense.iter().map(|d| p / d).collect::<Vec<_>>());
        let spread = (p * (1.0 - p) / images).sqrt() / average(&dense);
        Some(guess + 3.0 * spread)
    }

    /// One validation check of `params`: with the unit stage at its best `q_max` when there
    /// are input statistics, without it otherwise.
    pub(super) fn check(
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

/// Chooses the base's knots on the members of `checks` with the untrained network `fresh`:
/// at each val compression the `α` of [`ALPHA_GRID`] with the best mean retention (ties keep
/// the smaller). Returns the base and the untrained network's retention with it at each val
/// compression.
pub(super) fn choose_base(
    checks: &mut Checks<'_, '_>,
    fresh: &Params,
    ctx: &Ctx<'_>,
) -> Result<(Base, Vec<f64>), PluginError> {
    let grid = checks.grid.clone();
    let (alpha, untrained) = choose_knots(&grid, &ALPHA_GRID, |alpha| {
        checks.base = Base::uniform(alpha);
        let by_sparsity = checks.retention(fresh, None, ctx)?;
        ctx.record(&serde_json::json!({ "base_alpha": alpha, "val_retention_by_compression": by_sparsity }));
        Ok(by_sparsity)
    })?;
    let base = Base { alpha, ..Base::GLOBAL };
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
/// `γ` of [`GAIN_GRID`], or LAMP alone ([`LAMP_ALONE`]), with the best mean retention at each
/// val compression (ties keep the earlier candidate), with the unit stage `stage` where
/// there is one. `fitted` is the retention at `γ = 1` (the kept check). Returns the base
/// with those weights and its retention.
pub(super) fn choose_gain(
    checks: &mut Checks<'_, '_>,
    params: &Params,
    base: Base,
    stage: Option<(&InputStats, Stage)>,
    fitted: &[f64],
    ctx: &Ctx<'_>,
) -> Result<(Base, Vec<f64>), PluginError> {
    let grid = checks.grid.clone();
    let candidates: Vec<f64> = GAIN_GRID.iter().copied().chain([LAMP_ALONE]).collect();
    let mut lamp_retention = None;
    let (mut chosen, mut by_sparsity) = choose_knots(&grid, &candidates, |gain| {
        if gain == 1.0 {
            return Ok(fitted.to_vec());
        }
        checks.base = if gain == LAMP_ALONE {
            Base { gain: [0.0; 5], lamp: [1.0; 5], ..base }
        } else {
            Base { gain: [gain; 5], ..base }
        };
        let by_sparsity = checks.retention(params, stage, ctx)?;
        if gain == LAMP_ALONE {
            lamp_retention = Some(by_sparsity.clone());
        }
        let key = if gain == LAMP_ALONE { "lamp_alone" } else { "network_weight" };
        ctx.record(&serde_json::json!({ key: gain, "val_retention_by_compression": by_sparsity }));
        Ok(by_sparsity)
    })?;
    if let (Some(chance), Some(lamp)) = (checks.chance(), lamp_retention) {
        unjudged_to_lamp(&grid, &mut by_sparsity, &lamp, chance, &mut chosen);
    }
    let lamp: [f64; 5] = std::array::from_fn(|k| if chosen[k] == LAMP_ALONE { 1.0 } else { base.lamp[k] });
    let gain = chosen.map(|c| c.max(0.0));
    ctx.info(&format!(
        "network weight: {gain:?}, LAMP alone: {lamp:?} at 2x, 4x, 8x, 16x, 32x (val retention {:.4} with the \
         network alone, {:.4} with these)",
        average(fitted),
        average(&by_sparsity)
    ));
    Ok((Base { gain, lamp, ..base }, by_sparsity))
}

/// Chooses, on the val members, the size of the default refinement's single step: the one
/// of [`STEP_GRID`] whose refined masks keep the most mean val retention over the val
/// compressions (ties keep the earlier, [`crate::refinement::STEP`] first), with the unit
/// stage `stage` where there is one. One size for the zoo rather than one a knot: a choice at
/// each compression on 8 val members follows their noise. Returns the size and the mean val
/// retention of each candidate, in [`STEP_GRID`]'s order.
pub(super) fn choose_step(
    checks: &mut Checks<'_, '_>,
    params: &Params,
    stage: Option<(&InputStats, Stage)>,
    inputs: &Inputs,
    ctx: &Ctx<'_>,
) -> Result<(f64, Vec<f64>), PluginError> {
    let mut means = Vec::with_capacity(STEP_GRID.len());
    let mut best = (STEP_GRID[0], f64::NEG_INFINITY);
    for lr in STEP_GRID {
        let by_sparsity = checks.retention_refined(params, stage, Some((inputs, lr)), ctx)?;
        ctx.record(&serde_json::json!({ "refine_step": lr, "val_retention_by_compression": by_sparsity }));
        let mean = average(&by_sparsity);
        if mean > best.1 + 1e-9 {
            best = (lr, mean);
        }
        means.push(mean);
    }
    ctx.info(&format!(
        "refine: step size {} for the default's single step (mean val retention {:.4}; {:.4} with the step of {})",
        best.0, best.1, means[0], STEP_GRID[0]
    ));
    Ok((best.0, means))
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
    let knots = std::array::from_fn(|k| best[nearest(grid, k)].0);
    Ok((knots, best.iter().map(|&(_, r)| r).collect()))
}

/// The index of the val compression of `grid` nearest knot `k` (the first on ties).
fn nearest(grid: &[f64], k: usize) -> usize {
    (0..grid.len()).min_by_key(|&g| Base::knot(grid[g]).abs_diff(k)).expect("the val grid is not empty")
}

/// Where even the best candidate keeps no more than `chance` on the val members (see
/// [`Checks::chance`]), the val members cannot choose: the knots of that val compression
/// take LAMP alone, whose per-layer budgets keep every layer's best weights, and
/// `by_sparsity` takes LAMP's retention there (`lamp`, per val compression).
fn unjudged_to_lamp(grid: &[f64], by_sparsity: &mut [f64], lamp: &[f64], chance: f64, knots: &mut [f64; 5]) {
    for (k, knot) in knots.iter_mut().enumerate() {
        let g = nearest(grid, k);
        if by_sparsity[g] <= chance {
            *knot = LAMP_ALONE;
        }
    }
    for (b, &l) in by_sparsity.iter_mut().zip(lamp) {
        if *b <= chance {
            *b = l;
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
    fn a_val_compression_where_every_candidate_is_at_chance_takes_lamp() {
        // Val compressions 2x..32x; the best candidate keeps 0.95, 0.60, 0.30 at 2x-8x and
        // only 0.12 and 0.11 at 16x and 32x, at or below chance (0.14): those knots take LAMP
        // and its retention, the others keep their choice.
        let grid = [0.5, 0.75, 0.875, 0.9375, 0.96875];
        let mut best = vec![0.95, 0.60, 0.30, 0.12, 0.11];
        let lamp = [0.90, 0.55, 0.31, 0.20, 0.13];
        let mut knots = [1.0, 0.5, LAMP_ALONE, 1.0, 0.0];
        unjudged_to_lamp(&grid, &mut best, &lamp, 0.14, &mut knots);
        assert_eq!(knots, [1.0, 0.5, LAMP_ALONE, LAMP_ALONE, LAMP_ALONE]);
        assert_eq!(best, [0.95, 0.60, 0.30, 0.20, 0.13]);
        // Nothing at chance: nothing changes.
        let mut knots = [1.0, 0.5, 0.0, 1.0, 0.0];
        let mut best = vec![0.95, 0.60, 0.30, 0.25, 0.20];
        unjudged_to_lamp(&grid, &mut best, &lamp, 0.14, &mut knots);
        assert_eq!(knots, [1.0, 0.5, 0.0, 1.0, 0.0]);
        assert_eq!(best, [0.95, 0.60, 0.30, 0.25, 0.20]);
    }
}

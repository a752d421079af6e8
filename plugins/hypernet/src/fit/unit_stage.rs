//! The unit stage of a fit: the input statistics it needs from the host, and after the fit
//! the stage the val members choose for the kept check (see [`crate::units`]).

use hyperprune_sdk::{CalibRequest, Ctx, LogLevel, PluginError};

use super::checks::{Checked, Checks};
use super::criterion::average;
use super::settings::FitSettings;
use super::step::Prepared;
use crate::network::Params;
use crate::state::FitInfo;
use crate::units::{self, InputStats, Stage, UnitStage};

/// Train images the unit stage's input moments are taken over.
const UNIT_SAMPLES: u64 = 4096;

/// The input statistics of the unit stage and the number of images behind them, when it
/// applies to every val member and the host serves `input_moments`; otherwise `None`, said
/// in the log.
pub(super) fn unit_inputs(
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

/// The unit stage of the kept check (`kept`, with its `q_max`): then the units that are
/// almost never active, their `p_dead` chosen on the val members by the fit's criterion
/// against `reference`. Returns the stage and the input statistics the state keeps (when
/// the stage gives up units); the kept check's val retention in `info` becomes the one
/// with the stage.
///
/// # Errors
/// The host failing to evaluate a val member.
pub(super) fn choose_stage(
    checks: &mut Checks<'_, '_>,
    params: &Params,
    (stats, samples): (InputStats, u64),
    (q_max, by_sparsity, without): Checked,
    reference: Option<&[f64]>,
    info: &mut FitInfo,
    ctx: &Ctx<'_>,
) -> Result<(UnitStage, Option<InputStats>), PluginError> {
    let settings = checks.settings;
    let without = without.unwrap_or_else(|| average(&by_sparsity));
    // Then the units that are almost never active, given up at every sparsity (not
    // when the user fixed the stage with `units_q`).
    let mut best = (0.0, settings.criterion.score(&by_sparsity, reference), average(&by_sparsity));
    let dead_grid: &[f64] = if settings.units_q.is_some() { &[] } else { &units::P_DEAD_GRID[1..] };
    for &p_dead in dead_grid {
        let by_sparsity = checks.retention(params, Some((&stats, Stage { q_max, p_dead })), ctx)?;
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
    Ok((stage, (q_max > 0.0 || p_dead > 0.0).then_some(stats)))
}

//! The optimisation: scores start at the model-wide percentile rank of |w| (so step 0 is
//! magnitude pruning) and the SDK's [`refine`] moves them by distillation on the host's
//! calibration images (`masked_distill_loss_and_grad`), a fresh batch every step.

use hyperprune_sdk::refine::{self, percentile_ranks, refine};
use hyperprune_sdk::{CalibRequest, Ctx, ModelRef, PluginError, PruneRequest};

/// How to optimise.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Adam steps, learning rate and straight-through temperatures.
    pub refine: refine::Settings,
    /// Calibration samples per distillation call (0: the host's default).
    pub calib_samples: u64,
    /// Distillation temperature.
    pub kd_temperature: f64,
    /// Seed of the calibration batches.
    pub seed: u64,
}

/// Optimises the mask of `model` for `request`.
///
/// # Errors
/// N:M patterns ([`hyperprune_sdk::ErrorKind::NotSupported`]); the host's distillation
/// service failing or unavailable; the user cancelling.
pub fn optimise(
    model: &ModelRef<'_>,
    request: &PruneRequest,
    settings: &Settings,
    ctx: &Ctx<'_>,
) -> Result<refine::Refined, PluginError> {
    let weights = model.weights();
    let sizes: Vec<usize> = weights.iter().map(|w| w.len()).collect();
    let abs: Vec<f32> = weights.iter().flat_map(|w| w.iter().map(|v| v.abs())).collect();
    let distill = |mask: &[f32], step: usize| {
        let calib = CalibRequest {
            samples: settings.calib_samples,
            minibatch: 1,
            seed: settings.seed.wrapping_add(step as u64),
        };
        ctx.masked_distill_loss_and_grad(model, mask, calib, settings.kd_temperature)
    };
    refine(percentile_ranks(&abs), &sizes, request, &settings.refine, distill, ctx)
}

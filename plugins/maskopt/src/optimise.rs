//! The optimisation, as plain Rust over a [`Ctx`]: scores start at the model-wide
//! percentile rank of |w| (so step 0 is magnitude pruning), the hard top-k mask of the
//! scores is what the host's distillation service evaluates, and its gradient with respect
//! to the mask reaches the scores through a straight-through sigmoid around the boundary,
//! `σ((score − τ)/(T · spread))`, with `T` annealed geometrically.
//!
//! Under an exact budget only swaps matter, so the gradient's mean over the boundary window
//! (the Lagrange multiplier of `Σ m = k`; one per layer for `scope=layer`) is taken out
//! before Adam sees it ([`masking::budget_gradient`], shared with the hypernetwork's fit):
//! otherwise "keep more of everything", which almost every weight's gradient says, would
//! drown the signal.

use hyperprune_sdk::{CalibRequest, Ctx, ErrorKind, ModelRef, Pattern, PluginError, PruneRequest, Scope, masking};

/// How to optimise.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Adam steps.
    pub steps: usize,
    /// Adam's learning rate, in units of percentile rank.
    pub lr: f64,
    /// Straight-through temperature at the first step.
    pub t_start: f64,
    /// Straight-through temperature at the last step.
    pub t_end: f64,
    /// Calibration samples per distillation call (0: the host's default).
    pub calib_samples: u64,
    /// Distillation temperature.
    pub kd_temperature: f64,
    /// Seed of the calibration batches.
    pub seed: u64,
}

/// The optimised keep masks, one per layer, and the distillation loss of the first and
/// the last step.
pub struct Optimised {
    /// Keep masks.
    pub keep: Vec<Vec<bool>>,
    /// Loss at step 0 (the magnitude mask) and at the last step.
    pub losses: (f64, f64),
}

/// Optimises the mask of `model` for `request`.
///
/// # Errors
/// N:M patterns ([`ErrorKind::NotSupported`]); the host's distillation service failing or
/// unavailable; the user cancelling.
pub fn optimise(
    model: &ModelRef<'_>,
    request: &PruneRequest,
    settings: &Settings,
    ctx: &Ctx<'_>,
) -> Result<Optimised, PluginError> {
    if let Pattern::NM { .. } = request.pattern {
        return Err(PluginError::not_supported("maskopt optimises unstructured masks; N:M is not supported"));
    }
    let weights = model.weights();
    let sizes: Vec<usize> = weights.iter().map(|w| w.len()).collect();
    let abs: Vec<f32> = weights.iter().flat_map(|w| w.iter().map(|v| v.abs())).collect();
    let mut scores = percentile_ranks(&abs);
    let groups: Vec<usize> = match request.scope {
        Scope::PerLayer => sizes.iter().enumerate().flat_map(|(l, &n)| std::iter::repeat_n(l, n)).collect(),
        _ => vec![0; scores.len()],
    };
    let spread = std_dev(&scores).max(1e-6) as f64;
    let (mut first, mut second) = (vec![0f64; scores.len()], vec![0f64; scores.len()]);
    let mut losses = (f64::NAN, f64::NAN);
    for step in 0..settings.steps {
        if ctx.cancelled() {
            return Err(PluginError::new(ErrorKind::Cancelled, format!("maskopt cancelled at step {step}")));
        }
        let progress = step as f64 / settings.steps.max(1) as f64;
        let width = (settings.t_start * (settings.t_end / settings.t_start).powf(progress) * spread) as f32;
        let keep = hard_mask(&scores, &sizes, request);
        let flat: Vec<bool> = keep.concat();
        let mask: Vec<f32> = flat.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
        let calib = CalibRequest {
            samples: settings.calib_samples,
            minibatch: 1,
            seed: settings.seed.wrapping_add(step as u64),
        };
        let d = ctx.masked_distill_loss_and_grad(model, &mask, calib, settings.kd_temperature)?;
        if step == 0 {
            losses.0 = d.loss;
        }
        losses.1 = d.loss;
        let boundary = boundaries(&scores, &flat, &groups);
        let thresholds: Vec<f32> = groups.iter().map(|&g| boundary[g]).collect();
        let b = masking::budget_gradient(&d.grad, &scores, &thresholds, &groups, width);
        // Through the straight-through sigmoid: ∂σ((s − τ)/width)/∂s = σ'/width.
        let g = b.centred.iter().zip(&b.window).map(|(g, w)| g * w / width as f64);
        let t = (step + 1) as i32;
        let (c1, c2) = (1.0 - 0.9f64.powi(t), 1.0 - 0.999f64.powi(t));
        for (((s, m), v), g) in scores.iter_mut().zip(&mut first).zip(&mut second).zip(g) {
            *m = 0.9 * *m + 0.1 * g;
            *v = 0.999 * *v + 0.001 * g * g;
            *s -= (settings.lr * (*m / c1) / ((*v / c2).sqrt() + 1e-8)) as f32;
        }
        ctx.progress(step + 1, settings.steps);
    }
    Ok(Optimised { keep: hard_mask(&scores, &sizes, request), losses })
}

/// The exact top-k masks of flat `scores` for `request` (global or per layer).
fn hard_mask(scores: &[f32], sizes: &[usize], request: &PruneRequest) -> Vec<Vec<bool>> {
    let mut rest = scores;
    let layers: Vec<&[f32]> = sizes
        .iter()
        .map(|&n| {
            let (head, tail) = rest.split_at(n);
            rest = tail;
            head
        })
        .collect();
    match request.scope {
        Scope::PerLayer => masking::per_layer_keep(&layers, request.sparsity),
        _ => masking::global_keep(&layers, request.sparsity),
    }
}

/// Per group: the score midway between its lowest kept and its highest pruned weight.
fn boundaries(scores: &[f32], keep: &[bool], groups: &[usize]) -> Vec<f32> {
    let n = groups.iter().max().map_or(0, |g| g + 1);
    let (mut low, mut high) = (vec![f32::INFINITY; n], vec![f32::NEG_INFINITY; n]);
    for ((&s, &k), &g) in scores.iter().zip(keep).zip(groups) {
        if k {
            low[g] = low[g].min(s);
        } else {
            high[g] = high[g].max(s);
        }
    }
    low.iter()
        .zip(&high)
        .map(|(&l, &h)| match (l.is_finite(), h.is_finite()) {
            (true, true) => 0.5 * (l + h),
            (true, false) => l,
            (false, true) => h,
            (false, false) => 0.0,
        })
        .collect()
}

/// Rank of each value among all, scaled to `[0, 1]`; ties broken by position.
fn percentile_ranks(values: &[f32]) -> Vec<f32> {
    let mut order: Vec<u32> = (0..values.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| values[a as usize].total_cmp(&values[b as usize]).then(a.cmp(&b)));
    let scale = 1.0 / (values.len().max(2) - 1) as f32;
    let mut ranks = vec![0f32; values.len()];
    for (r, &i) in order.iter().enumerate() {
        ranks[i as usize] = r as f32 * scale;
    }
    ranks
}

fn std_dev(v: &[f32]) -> f32 {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt() as f32
}

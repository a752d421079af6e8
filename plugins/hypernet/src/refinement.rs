//! `refine=N`: a prune-time refinement of the network's mask by `N` distillation steps on
//! inputs that carry the train images' first two moments and no image.
//!
//! A fit asks the host for the input mean `μ` and second moment of its train images and
//! stores [`POOL`] Gaussian draws `x = μ + L z` (`L L ᵀ = Σ`, the covariance, by Cholesky)
//! in the state. At prune time the mask the network predicts is the starting point of the
//! SDK's [`refine_from_mask`] (the straight-through top-k that `maskopt` runs), whose loss is the
//! distillation of the dense model into the masked one on [`PER_STEP`] of those inputs a step,
//! or [`ONE_STEP`] for the default's single step (the host's `masked_distill_on_inputs`,
//! which reads no data). The budget stays exact; no
//! image is read at prune time.
//!
//! Why: masks computed from weights plus the input moments keep far more than any formula
//! from the weights alone (the research log, *The mask ceiling from input moments alone*),
//! and a few steps from a good starting mask carry most of that gain.

use hyperprune_sdk::gaussian::covariance_factor;
use hyperprune_sdk::refine::{self, Refined, refine_from_mask};
use hyperprune_sdk::rng::SplitMix64;
use hyperprune_sdk::{CalibRequest, Ctx, LogLevel, ModelRef, PluginError, PruneRequest};

/// Inputs a state stores for the refinement.
pub const POOL: usize = 1024;
/// Inputs per distillation step (a window moving through the pool). Few inputs a step and
/// more steps refine better in the same time: on the val members, at an equal number of
/// image passes, 32 a step was within half a point of the best on lenet5 and mlpnet and 9
/// points above 256 a step on cnn-s (the research log, *Fewer inputs a step*).
pub const PER_STEP: usize = 32;
/// Inputs of a refinement of one step, the default's. On the val members one step of 16
/// kept what one of 32 kept (within 0.3 points over 2×–16× on cnn-s, lenet5 and mlpnet) and
/// stays near cnn-s's 1 ms mask budget, where 32 take 1.2 ms; 25 steps of 16 kept 4–5 points
/// less than 25 of 32 at 16× (the research log, *One step by default*).
pub const ONE_STEP: usize = 16;

/// Inputs a step for a refinement of `steps` steps.
pub fn inputs_a_step(steps: usize) -> usize {
    if steps == 1 { ONE_STEP } else { PER_STEP }
}
/// Adam's step size, in units of percentile rank: half `maskopt`'s. At 25 steps of
/// [`PER_STEP`] inputs the val members kept the most with it on cnn-s, lenet5 and mlpnet
/// (steps of 0.002–0.02 tried; the research log, *Fewer inputs a step*). It is also the
/// single step's size for a state whose fit did not choose one.
pub const STEP: f64 = 0.005;
/// The single step's sizes a fit chooses from on its val members ([`STEP`] first: ties keep
/// it). Adam's first step moves every rank by its size, toward the gradient's sign, so it
/// sets how many weights near the boundary one step can swap; the best size depends on the
/// zoo (on the val members 0.01 kept 0.2 to 1.4 points more than 0.005 over 2×–16× on cnn-s
/// and mlpnet, 3 points less on lenet5: the research log, *A sharper distillation*; what the
/// fits chose: *A step size chosen on val, and the floor kept*).
pub const STEP_GRID: [f64; 5] = [STEP, 0.0025, 0.0075, 0.01, 0.02];

/// How a refinement runs: its steps, their size, and the per-layer floor its mask keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Distillation steps.
    pub steps: usize,
    /// Adam's step size, in units of percentile rank.
    pub lr: f64,
    /// The per-layer floor of a global request (`floor`, as in [`crate::mask::build`]).
    pub floor: f64,
}

impl Schedule {
    /// `steps` steps: of size `chosen` (the fit's, [`STEP`] when it chose none) for the
    /// default's single step, of [`STEP`] for longer refinements; every layer keeps `floor`.
    pub fn new(steps: usize, chosen: Option<f64>, floor: f64) -> Schedule {
        let lr = if steps == 1 { chosen.unwrap_or(STEP) } else { STEP };
        Schedule { steps, lr, floor }
    }

    /// The log line of this refinement, whose losses (as [`refine_mask`] returns them) are
    /// `losses`.
    pub fn describe(&self, losses: (f64, f64)) -> String {
        let (steps, lr, per_step) = (self.steps, self.lr, inputs_a_step(self.steps));
        // Each step's loss is taken before its update: one step has a single loss.
        match steps {
            1 => format!(
                "refine: one step of size {lr} on {per_step} stored inputs, distillation loss {:.4} before it",
                losses.0
            ),
            _ => format!(
                "refine: {steps} steps of size {lr} on {per_step} stored inputs, distillation loss {:.4} at the \
                 first, {:.4} at the last",
                losses.0, losses.1
            ),
        }
    }
}

/// The distillation's softmax temperature. Below 1 it sharpens the dense and the masked
/// model's outputs toward their top class, which is what retention counts: on the val members
/// 0.5 kept more than 1 on lenet5 and mlpnet (mean over 2×–16×, one step: 90.7 against 89.5
/// and 91.8 against 91.5; 25 steps: 96.0 against 94.7 and 97.1 against 96.1) and as much on
/// cnn-s (60.1 against 60.2; 77.2 against 76.8); 2 and 4 kept less everywhere, 0.25 less on
/// cnn-s (the research log, *A sharper distillation*).
const TEMPERATURE: f64 = 0.5;
/// Train images the moments are taken over.
const MOMENT_SAMPLES: u64 = 4096;

/// The stored inputs: `values.len() / dim` flattened images.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    /// Values per image (`c·h·w`).
    pub dim: usize,
    /// The images, row-major.
    pub values: Vec<f32>,
}

impl Inputs {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.values.len() / self.dim.max(1)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Step `step`'s `per_step` images (fewer when the pool is smaller), cycling.
    fn window(&self, step: usize, per_step: usize) -> Vec<f32> {
        let n = self.len();
        let take = per_step.min(n);
        let first = (step * take) % n;
        (0..take).flat_map(|k| self.values[((first + k) % n) * self.dim..][..self.dim].iter().copied()).collect()
    }
}

/// The fit's pool: [`POOL`] draws from the moments of the train images, or `None` (said in
/// the log: the state then cannot `refine`) when the host serves no input moments or fails
/// to compute them. Taken when the fit ends, so a failure here never costs the fit.
pub fn pool_from_host(ctx: &Ctx<'_>, seed: u64) -> Option<Inputs> {
    let calib = CalibRequest { samples: MOMENT_SAMPLES, minibatch: 1, seed: seed ^ 0x7e_f1_7e };
    let moments = match ctx.input_moments(calib) {
        Ok(m) if !m.mean.is_empty() => m,
        Ok(_) => {
            ctx.log(LogLevel::Warn, "refine inputs: none stored (the host's input moments are empty)");
            return None;
        }
        Err(e) => {
            ctx.log(LogLevel::Warn, &format!("refine inputs: none stored, so the state cannot refine ({})", e.message));
            return None;
        }
    };
    let started = std::time::Instant::now();
    let values = gaussian_draws(moments.mean.as_slice(), moments.second.data.as_slice(), POOL, seed);
    ctx.log(
        LogLevel::Debug,
        &format!(
            "refine inputs: {POOL} draws from the moments of {} train images in {:.2} s",
            moments.samples,
            started.elapsed().as_secs_f64()
        ),
    );
    Some(Inputs { dim: moments.mean.len(), values })
}

/// `n` draws from the Gaussian with mean `mean` and uncentred second moment `second`
/// (`d × d`, row-major), as f32 rows.
pub fn gaussian_draws(mean: &[f64], second: &[f64], n: usize, seed: u64) -> Vec<f32> {
    let d = mean.len();
    let mut cov: Vec<f64> = (0..d * d).map(|k| second[k] - mean[k / d] * mean[k % d]).collect();
    let factor = covariance_factor(&mut cov, d);
    let mut rng = SplitMix64::new(seed ^ 0x4741_5553_5349_414E);
    let mut out = Vec::with_capacity(n * d);
    let mut z = vec![0f64; d];
    for _ in 0..n {
        z.iter_mut().for_each(|v| *v = rng.next_normal());
        // x_i = μ_i + Σ_{j ≤ i} L_ij z_j.
        out.extend((0..d).map(|i| (mean[i] + (0..=i).map(|j| factor[i * d + j] * z[j]).sum::<f64>()) as f32));
    }
    out
}

/// The mask `keep` (one per layer, the network's scores `scores` flat in layer order)
/// refined on `inputs` as `schedule` says, with every layer at its floor ([`with_floors`]),
/// and the distillation loss at the first and the last step (before its update).
///
/// # Errors
/// The host's distillation failing (e.g. inputs of another shape than the model's).
pub fn refine_mask(
    model: &ModelRef<'_>,
    request: &PruneRequest,
    keep: &[Vec<bool>],
    scores: &[f32],
    inputs: &Inputs,
    schedule: Schedule,
    ctx: &Ctx<'_>,
) -> Result<Refined, PluginError> {
    if inputs.is_empty() {
        return Err(PluginError::failed("refine: the state stores no inputs"));
    }
    // `maskopt`'s temperatures, with the schedule's step size.
    let settings = refine::Settings { lr: schedule.lr, ..refine::Settings::defaults(schedule.steps) };
    let per_step = inputs_a_step(schedule.steps);
    let distill = |mask: &[f32], step: usize| {
        let window = inputs.window(step, per_step);
        ctx.masked_distill_on_inputs(model, mask, &window, window.len() / inputs.dim, TEMPERATURE)
    };
    let refined = refine_from_mask(keep, scores, request, &settings, distill, ctx)
        .map_err(|e| e.context("refine (distillation on the stored inputs)"))?;
    Ok(Refined { keep: with_floors(refined.keep, keep, scores, request, schedule.floor), ..refined })
}

/// The refined mask `keep` with the per-layer floor (`floor`, as in [`crate::mask::build`])
/// that the network's mask `start` kept: the refinement's top-k has none, and took layers
/// below it (the default step at 32× left the first linear layer of 14 of 16 lenet5 test
/// members with 386–467 of its floor's 480 weights). A per-layer request keeps every layer's
/// share and has no floor.
fn with_floors(
    mut keep: Vec<Vec<bool>>,
    start: &[Vec<bool>],
    scores: &[f32],
    request: &PruneRequest,
    floor: f64,
) -> Vec<Vec<bool>> {
    if request.scope == hyperprune_sdk::Scope::PerLayer {
        return keep;
    }
    let sizes: Vec<usize> = keep.iter().map(Vec::len).collect();
    let budget = start.iter().flatten().filter(|&&k| k).count();
    let floors = crate::mask::floors(&sizes, floor, budget);
    crate::mask::restore_floors(&mut keep, start, scores, &floors);
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chosen_size_is_the_single_steps_only() {
        assert_eq!(Schedule::new(1, None, 0.01).lr, STEP);
        assert_eq!(Schedule::new(1, Some(0.02), 0.01), Schedule { steps: 1, lr: 0.02, floor: 0.01 });
        assert_eq!(Schedule::new(25, Some(0.02), 0.01), Schedule { steps: 25, lr: STEP, floor: 0.01 });
        assert_eq!(STEP_GRID[0], STEP, "ties keep the default size");
    }

    #[test]
    fn draws_have_the_requested_mean_and_covariance() {
        // Mean (1, −2), covariance [[4, 1.2], [1.2, 1]]: second = cov + μμᵀ.
        let mean = [1.0, -2.0];
        let second = [4.0 + 1.0, 1.2 - 2.0, 1.2 - 2.0, 1.0 + 4.0];
        let n = 20_000;
        let x = gaussian_draws(&mean, &second, n, 7);
        let m = |i: usize| x.iter().skip(i).step_by(2).map(|&v| v as f64).sum::<f64>() / n as f64;
        let (m0, m1) = (m(0), m(1));
        let c = |i: usize, j: usize| {
            x.chunks_exact(2).map(|r| (r[i] as f64 - [m0, m1][i]) * (r[j] as f64 - [m0, m1][j])).sum::<f64>() / n as f64
        };
        assert!((m0 - 1.0).abs() < 0.05 && (m1 + 2.0).abs() < 0.03, "{m0} {m1}");
        assert!((c(0, 0) - 4.0).abs() < 0.15 && (c(1, 1) - 1.0).abs() < 0.05 && (c(0, 1) - 1.2).abs() < 0.06);
        assert_eq!(x, gaussian_draws(&mean, &second, n, 7), "seeded");
    }

    #[test]
    fn a_fit_stores_draws_of_the_hosts_moments_and_none_when_the_host_fails() {
        use hyperprune_sdk::abi_stable::std_types::RResult;
        use hyperprune_sdk::{InputMoments, Matrix, TestHost};
        let host = TestHost::new().with_moments(|request| {
            RResult::ROk(InputMoments {
                mean: vec![0.5, 0.25].into(),
                second: Matrix { rows: 2, cols: 2, data: vec![0.5, 0.125, 0.125, 0.25].into() },
                samples: request.samples,
            })
        });
        let pool = pool_from_host(&Ctx::from_impl(&host), 3).unwrap();
        assert_eq!((pool.dim, pool.len()), (2, POOL));
        let failing = TestHost::new()
            .with_moments(|_| RResult::RErr(PluginError::failed("the calibration part of this split is empty")));
        assert!(pool_from_host(&Ctx::from_impl(&failing), 3).is_none(), "a warning, not a lost fit");
        assert!(pool_from_host(&Ctx::from_impl(&TestHost::new()), 3).is_none());
    }

    #[test]
    fn windows_cycle_through_the_pool() {
        let inputs = Inputs { dim: 2, values: (0..2 * 300).map(|v| v as f32).collect() };
        assert_eq!(inputs.len(), 300);
        let w0 = inputs.window(0, 32);
        assert_eq!(w0.len(), 2 * 32);
        assert_eq!(&w0[..2], &[0.0, 1.0]);
        // Step 1 starts at image 32; step 9 at image 288, and wraps after image 299.
        let w1 = inputs.window(1, 32);
        assert_eq!(&w1[..2], &[64.0, 65.0]);
        let w9 = inputs.window(9, 32);
        assert_eq!(&w9[..2], &[576.0, 577.0]);
        assert_eq!(&w9[2 * 12..2 * 12 + 2], &[0.0, 1.0]);
        // A single step takes the first 16.
        assert_eq!(inputs.window(0, inputs_a_step(1)), w0[..2 * 16].to_vec());
        assert_eq!(inputs_a_step(2), PER_STEP);
        // A pool smaller than a step is used whole each step.
        let small = Inputs { dim: 1, values: vec![1.0, 2.0, 3.0] };
        assert_eq!(small.window(5, 32), vec![1.0, 2.0, 3.0]);
    }
}

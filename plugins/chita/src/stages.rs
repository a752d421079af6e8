//! CHITA (one stage) and CHITA++ (several): the procedure that talks to the host.
//!
//! CHITA++ (Benbaki et al. 2023, the multi-stage procedure) follows a sparsity schedule from dense to the target.
//! The local quadratic model is only trusted near the point it was built at, so at each
//! stage the per-sample gradients are recomputed at the current (already pruned and
//! updated) weights, and the ℓ0 problem is solved with `w̄` = those weights and the stage's
//! budget. The schedule is geometric in density: stage `t` of `T` keeps a fraction
//! `(1 − s)^{t/T}` of the weights, so every stage removes the same fraction of what is left
//! (the last stage lands exactly on `s`). One stage is plain CHITA.

use hyperprune_sdk::{CalibRequest, Ctx, DataSplit, LogLevel, ModelBuf, ModelRef, PluginError, PruneRequest};

use crate::budget::plan;
use crate::grads::Gradients;
use crate::solver::{L0Problem, SolverConfig, solve};

/// Everything the options set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChitaConfig {
    /// Calibration samples (0 = the host's default).
    pub samples: u64,
    /// The ridge, relative to the mean of the empirical Fisher's diagonal (see the crate doc);
    /// 0 chooses it per model and stage from [`LAMBDA_GRID`] on the host's val slice.
    pub lambda: f64,
    /// Val-slice images per candidate when `lambda` is chosen.
    pub val_samples: u64,
    /// Maximum IHT iterations per solve.
    pub iterations: usize,
    /// Weights per block (0 = the whole model in one problem).
    pub block_size: usize,
    /// Stages of the sparsity schedule (1 = CHITA, more = CHITA++).
    pub stages: usize,
}

impl Default for ChitaConfig {
    fn default() -> ChitaConfig {
        ChitaConfig { samples: 0, lambda: 0.0, val_samples: 1024, iterations: 25, block_size: 0, stages: 1 }
    }
}

/// The relative ridge when it cannot be chosen (no val slice): the best single value on the
/// `mlpnet` zoos; see the crate doc.
pub const DEFAULT_LAMBDA: f64 = 1.0;

/// The relative ridges `lambda=0` chooses from, largest (most conservative) first; a later one
/// is taken only when it is strictly better on the val slice.
pub const LAMBDA_GRID: [f64; 4] = [DEFAULT_LAMBDA, 0.1, 0.01, 0.001];

/// The sparsity of each stage: `1 − (1 − s)^{t/T}` for `t = 1..=T`, the last exactly `s`.
pub fn stage_sparsities(sparsity: f64, stages: usize) -> Vec<f64> {
    let stages = stages.max(1);
    (1..=stages)
        .map(|t| if t == stages { sparsity } else { 1.0 - (1.0 - sparsity).powf(t as f64 / stages as f64) })
        .collect()
}

/// What [`prune`] returns, one vector per layer in model order.
#[derive(Debug, Clone, PartialEq)]
pub struct Pruned {
    /// Keep masks (`true` = kept).
    pub keep: Vec<Vec<bool>>,
    /// The new weights, zero where pruned.
    pub weights: Vec<Vec<f32>>,
}

/// Prunes `model`: the keep masks and the new weights.
///
/// # Errors
/// When the host cannot give gradients, returns a matrix of the wrong shape or with
/// non-finite values, when the user cancels, or when a solve fails.
pub fn prune(
    model: &ModelRef<'_>,
    request: &PruneRequest,
    ctx: &Ctx<'_>,
    config: &ChitaConfig,
) -> Result<Pruned, PluginError> {
    let sizes: Vec<usize> = model.layers().iter().map(|l| l.weights().len()).collect();
    let p: usize = sizes.iter().sum();
    if request.pruned_count(p) == 0 {
        // Nothing to prune (also an empty model): the dense model is the optimum, and no
        // gradients are needed.
        return Ok(Pruned {
            keep: sizes.iter().map(|&n| vec![true; n]).collect(),
            weights: model.layers().iter().map(|l| l.weights().to_vec()).collect(),
        });
    }
    // 1.5× the accuracy of guessing, with the classes from the last layer's outputs.
    let chance = 1.5 / model.layers().last().map_or(1, |l| l.rows()).max(1) as f64;
    let mut buf = ModelBuf::new(model);
    let mut keep = vec![true; p];
    let schedule = stage_sparsities(request.sparsity, config.stages);
    let calib = CalibRequest { samples: config.samples, minibatch: 1, seed: request.seed };
    let cancelled = || ctx.cancelled();
    for (stage, &sparsity) in schedule.iter().enumerate() {
        ctx.progress(stage, schedule.len());
        let grads = buf.with_view(|view| ctx.per_sample_gradients(&view, calib))?;
        let (n, cols) = (grads.rows as usize, grads.cols as usize);
        if cols != p || n == 0 {
            return Err(format!("expected per-sample gradients of shape n × {p} with n > 0, got {n} × {cols}").into());
        }
        if grads.data.iter().any(|v| !v.is_finite()) {
            return Err("the per-sample gradients hold a non-finite value; check the model and the data".into());
        }
        let g = Gradients::new(&grads.data, n, p)?;
        let wbar: Vec<f64> = buf.weights().iter().flatten().map(|&w| w as f64).collect();
        let norms = g.column_sq_norms();
        // One solve per candidate ridge on the same gradients; with more than one, the
        // candidate whose pruned model is most accurate on the val slice is kept. Candidates
        // go from the largest ridge down and stop at the first that is less accurate than the
        // one before it (val accuracy is taken to be unimodal in the ridge), which saves the
        // slower small-ridge solves where a large ridge is best.
        // An accuracy at chance level says nothing about the ridge (a collapsed network is
        // at chance whatever the neighbouring ridges give), so the search never stops on one.
        let mut previous = f64::NEG_INFINITY;
        let candidates: &[f64] = if config.lambda > 0.0 { std::slice::from_ref(&config.lambda) } else { &LAMBDA_GRID };
        let mut best: Option<(f64, Candidate)> = None;
        let started = std::time::Instant::now();
        for &lambda in candidates {
            let c = solve_all(&g, &wbar, &norms, &sizes, request, sparsity, lambda, config, &cancelled)?;
            if !c.w.iter().all(|v| v.is_finite() && v.abs() <= f32::MAX as f64) {
                if candidates.len() == 1 {
                    return Err("the updated weights are not finite in f32; raise lambda".into());
                }
                continue;
            }
            if candidates.len() == 1 {
                best = Some((f64::NAN, c));
                break;
            }
            let mut trial = buf.clone();
            write(&mut trial, &c.w, &c.keep);
            match trial.with_view(|view| ctx.evaluate(&view, DataSplit::Val, config.val_samples as usize)) {
                Ok(e) => {
                    let accuracy = e.accuracy;
                    if best.as_ref().is_none_or(|(acc, _)| accuracy > *acc) {
                        best = Some((accuracy, c));
                    }
                    if accuracy < previous && previous > chance {
                        break;
                    }
                    previous = accuracy;
                }
                Err(e) if e.is_unavailable() => {
                    // The largest ridge whose weights are finite: DEFAULT_LAMBDA unless it overflowed.
                    ctx.log(LogLevel::Warn, &format!("lambda={lambda}: no val slice to choose it on ({})", e.message));
                    best = Some((f64::NAN, c));
                    break;
                }
                Err(e) => return Err(e.context("choosing lambda on the val slice")),
            }
        }
        let (val, chosen) = best.ok_or_else(|| {
            PluginError::failed("every candidate lambda gave non-finite weights; give a larger lambda")
        })?;
        drop(grads);
        keep.copy_from_slice(&chosen.keep);
        write(&mut buf, &chosen.w, &chosen.keep);
        let (mu, objective, iterations, swaps) = (chosen.mu, chosen.objective, chosen.iterations, chosen.swaps);
        let seconds = started.elapsed().as_secs_f64();
        if val.is_finite() {
            ctx.info(&format!("stage {}: lambda {} chosen, val accuracy {val:.4}", stage + 1, chosen.lambda));
        }
        ctx.info(&format!(
            "stage {}/{}: sparsity {sparsity:.4}, {n} samples, ridge μ = {mu:.3e}, objective {objective:.4e}, \
             {iterations} IHT iterations, {swaps} swaps; {seconds:.3} s in the solver{}",
            stage + 1,
            schedule.len(),
            if candidates.len() > 1 { " and choosing lambda" } else { "" }
        ));
    }
    ctx.progress(schedule.len(), schedule.len());
    let mut masks = Vec::with_capacity(sizes.len());
    let mut offset = 0;
    for &n in &sizes {
        masks.push(keep[offset..offset + n].to_vec());
        offset += n;
    }
    Ok(Pruned { keep: masks, weights: buf.weights().to_vec() })
}

/// One candidate ridge's solution of a stage: all blocks solved.
struct Candidate {
    lambda: f64,
    mu: f64,
    w: Vec<f64>,
    keep: Vec<bool>,
    objective: f64,
    iterations: usize,
    swaps: usize,
}

/// Solves every block of one stage with the relative ridge `lambda`.
#[allow(clippy::too_many_arguments)]
fn solve_all(
    g: &Gradients<'_>,
    wbar: &[f64],
    norms: &[f64],
    sizes: &[usize],
    request: &PruneRequest,
    sparsity: f64,
    lambda: f64,
    config: &ChitaConfig,
    cancelled: &dyn Fn() -> bool,
) -> Result<Candidate, PluginError> {
    let p = wbar.len();
    let mu = ridge(lambda, norms);
    let saliency: Vec<f64> = wbar.iter().zip(norms).map(|(w, c)| w * w * (c + mu)).collect();
    let mut c =
        Candidate { lambda, mu, w: vec![0.0; p], keep: vec![false; p], objective: 0.0, iterations: 0, swaps: 0 };
    for block in plan(sizes, request.scope, sparsity, config.block_size, &saliency) {
        let problem = L0Problem {
            g: g.columns(block.start, block.end - block.start),
            wbar: &wbar[block.start..block.end],
            mu,
            groups: block.groups,
        };
        let sol = solve(&problem, SolverConfig { iterations: config.iterations }, cancelled)?;
        c.w[block.start..block.end].copy_from_slice(&sol.w);
        c.keep[block.start..block.end].copy_from_slice(&sol.keep);
        c.objective += sol.objective;
        c.iterations = c.iterations.max(sol.iht_iterations);
        c.swaps += sol.swaps;
    }
    Ok(c)
}

/// Writes `w` (zero where not kept) into `buf`'s prunable weights, layer order.
fn write(buf: &mut ModelBuf, w: &[f64], keep: &[bool]) {
    let mut offset = 0;
    for layer in buf.weights_mut() {
        for (dst, (&v, &k)) in layer.iter_mut().zip(w[offset..].iter().zip(&keep[offset..])) {
            *dst = if k { v as f32 } else { 0.0 };
        }
        offset += layer.len();
    }
}

/// `μ = nλ_paper` from the relative `lambda`: `λ_paper = lambda · tr(F)/p` with
/// `F = GᵀG/n`, so `μ = lambda · mean_j ‖Gⱼ‖²`. A model whose gradients all vanish gets
/// `μ = lambda`, which keeps the back-solve well posed (it then returns `w̄_S`).
pub fn ridge(lambda: f64, column_sq_norms: &[f64]) -> f64 {
    let mean = column_sq_norms.iter().sum::<f64>() / column_sq_norms.len().max(1) as f64;
    if mean > 0.0 { lambda * mean } else { lambda }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::{RResult, RSlice, RStr};
    use hyperprune_sdk::rng::SplitMix64;
    use hyperprune_sdk::{Evaluation, LayerKind, LayerRef, Matrix, Scope, TensorRef, TestHost};

    /// A host stand-in: synthetic per-sample gradients (a fixed random matrix plus a term
    /// depending on the weights it is asked at, so stages see different gradients), and a
    /// record of the weights of every gradient call.
    struct SyntheticHost {
        n: usize,
        weights_seen: std::sync::Mutex<Vec<Vec<f32>>>,
    }

    impl SyntheticHost {
        fn gradients(&self, model: ModelRef<'_>) -> RResult<Matrix<f32>, PluginError> {
            let w = model.flat_weights();
            self.weights_seen.lock().unwrap().push(w.clone());
            let p = w.len();
            let mut rng = SplitMix64::new(17);
            let data: Vec<f32> = (0..self.n * p).map(|t| (rng.next_f32() - 0.5) + 0.3 * w[t % p]).collect();
            RResult::ROk(Matrix { rows: self.n as u64, cols: p as u64, data: data.into() })
        }

        fn calls(&self) -> usize {
            self.weights_seen.lock().unwrap().len()
        }
    }

    /// Owned storage for a two-layer model (a 5×8 and a 3×5 linear layer).
    struct TestModel {
        shapes: Vec<Vec<u64>>,
        weights: Vec<Vec<f32>>,
    }

    impl TestModel {
        fn new(seed: u64) -> TestModel {
            let mut rng = SplitMix64::new(seed);
            let shapes = vec![vec![5u64, 8], vec![3, 5]];
            let weights =
                shapes.iter().map(|s| (0..s[0] * s[1]).map(|_| rng.next_f32() * 2.0 - 1.0).collect()).collect();
            TestModel { shapes, weights }
        }

        fn with_view<R>(&self, f: impl FnOnce(ModelRef<'_>) -> R) -> R {
            let layers: Vec<LayerRef<'_>> = (0..2)
                .map(|i| LayerRef {
                    name: RStr::from_str(["0.weight", "2.weight"][i]),
                    kind: LayerKind::Linear,
                    shape: RSlice::from_slice(&self.shapes[i]),
                    weights: RSlice::from_slice(&self.weights[i]),
                })
                .collect();
            let others: Vec<TensorRef<'_>> = Vec::new();
            f(ModelRef {
                arch_json: RStr::from_str("{}"),
                layers: RSlice::from_slice(&layers),
                others: RSlice::from_slice(&others),
                nodes: RSlice::from_slice(&[]),
            })
        }
    }

    fn host(n: usize) -> SyntheticHost {
        SyntheticHost { n, weights_seen: Default::default() }
    }

    #[test]
    fn schedule_is_geometric_in_density_and_ends_on_target() {
        let s = stage_sparsities(0.96875, 5);
        assert_eq!(s.len(), 5);
        assert_eq!(s[4], 0.96875);
        // Density 1/32 over 5 stages: each stage halves the density.
        for (t, &st) in s.iter().enumerate() {
            assert!(((1.0 - st) - 0.5f64.powi(t as i32 + 1)).abs() < 1e-12, "stage {t}: {st}");
        }
        assert_eq!(stage_sparsities(0.5, 1), vec![0.5]);
    }

    #[test]
    fn multi_stage_calls_the_gradient_service_once_per_stage_at_the_current_weights() {
        let model = TestModel::new(3);
        for stages in [1usize, 3, 5] {
            let h = host(6);
            let test_host = TestHost::new().with_gradients(|m, _| h.gradients(m));
            let ctx = Ctx::from_impl(&test_host);
            let config = ChitaConfig { stages, ..ChitaConfig::default() };
            let Pruned { keep: masks, weights } =
                model.with_view(|m| prune(&m, &PruneRequest::global(0.75, 1), &ctx, &config)).unwrap();
            assert_eq!(h.calls(), stages, "stages={stages}");
            let seen = h.weights_seen.lock().unwrap();
            // Stage 1 sees the dense model; each later stage sees the previous stage's
            // output, with exactly that stage's pruned count at zero... or fewer, if a
            // kept weight was solved to exactly 0.
            let schedule = stage_sparsities(0.75, stages);
            assert_eq!(seen[0], model.weights.concat());
            for t in 1..stages {
                let zeros = seen[t].iter().filter(|&&w| w == 0.0).count();
                assert!(zeros >= (schedule[t - 1] * 55.0).round() as usize, "stage {t}: {zeros} zeros");
            }
            let pruned: usize = masks.iter().flatten().filter(|&&k| !k).count();
            assert_eq!(pruned, (0.75f64 * 55.0).round() as usize);
            assert_eq!(weights.iter().map(Vec::len).collect::<Vec<_>>(), vec![40, 15]);
        }
    }

    #[test]
    fn exact_sparsity_for_every_scope_and_block_size() {
        let model = TestModel::new(4);
        for scope in [Scope::Global, Scope::PerLayer] {
            for block_size in [0usize, 7, 1000] {
                for s in [0.5, 0.75, 0.875, 0.9375] {
                    let h = host(9);
                    let test_host = TestHost::new().with_gradients(|m, _| h.gradients(m));
                    let ctx = Ctx::from_impl(&test_host);
                    let request = PruneRequest { scope, ..PruneRequest::global(s, 2) };
                    let config = ChitaConfig { block_size, stages: 2, ..ChitaConfig::default() };
                    let Pruned { keep: masks, weights } =
                        model.with_view(|m| prune(&m, &request, &ctx, &config)).unwrap();
                    let pruned: Vec<usize> = masks.iter().map(|m| m.iter().filter(|&&k| !k).count()).collect();
                    let what = format!("{scope:?} block {block_size} s={s}");
                    assert_eq!(pruned.iter().sum::<usize>(), (s * 55.0).round() as usize, "{what}");
                    if scope == Scope::PerLayer {
                        assert_eq!(pruned, hyperprune_sdk::masking::per_layer_counts(&[40, 15], s), "{what}");
                    }
                    for (m, w) in masks.iter().zip(&weights) {
                        assert!(m.iter().zip(w).all(|(&k, &v)| k || v == 0.0), "{what}: pruned weights are zero");
                        assert!(w.iter().all(|v| v.is_finite()), "{what}");
                    }
                }
            }
        }
    }

    #[test]
    fn lambda_zero_keeps_the_candidate_most_accurate_on_the_val_slice() {
        let model = TestModel::new(6);
        let request = PruneRequest::global(0.75, 3);
        let h = host(12);
        type Score<'s> = &'s (dyn Fn(&[f32]) -> f64 + Sync);
        let run = |lambda: f64, evaluate: Option<Score<'_>>| {
            let asked = std::sync::Mutex::new(Vec::new());
            let mut test_host = TestHost::new().with_gradients(|m, _| h.gradients(m));
            if let Some(score) = evaluate {
                test_host = test_host.with_evaluate(|m, split, samples| {
                    asked.lock().unwrap().push((split, samples));
                    RResult::ROk(Evaluation { accuracy: score(&m.flat_weights()), loss: 0.0, samples })
                });
            }
            let config = ChitaConfig { lambda, ..ChitaConfig::default() };
            let out = model.with_view(|m| prune(&m, &request, &Ctx::from_impl(&test_host), &config)).unwrap();
            drop(test_host);
            (out, asked.into_inner().unwrap())
        };
        let dense = model.weights.concat();
        let moved =
            |w: &[f32]| w.iter().zip(&dense).filter(|(w, _)| **w != 0.0).map(|(w, d)| (w - d).powi(2) as f64).sum();
        let fixed: Vec<Pruned> = LAMBDA_GRID.iter().map(|&l| run(l, None).0).collect();
        assert!(fixed.windows(2).any(|f| f[0] != f[1]), "the candidates differ");
        // A val slice that rewards moving the kept weights picks the smallest ridge (every
        // candidate evaluated once, on the val split); one that punishes it, the largest.
        let (out, asked) = run(0.0, Some(&|w: &[f32]| moved(w)));
        assert_eq!(out, fixed[LAMBDA_GRID.len() - 1]);
        assert_eq!(asked, vec![(DataSplit::Val, 1024); LAMBDA_GRID.len()]);
        // (Accuracies in (0.5, 1]: above 1.5× chance for the 3 classes of the test model.)
        let (out, asked) = run(0.0, Some(&|w: &[f32]| 0.5 + 0.5 / (1.0 + moved(w))));
        assert_eq!(out, fixed[0]);
        assert_eq!(asked.len(), 2, "the second candidate is worse: the search stops there");
        // Falling accuracies at chance level (≤ 0.5 here) do not stop it: a collapsed
        // network at the large ridges, a working one at the smallest.
        let last = fixed[LAMBDA_GRID.len() - 1].weights.concat();
        let (out, asked) = run(0.0, Some(&|w: &[f32]| if w == last.as_slice() { 0.9 } else { 0.4 - moved(w) / 1e3 }));
        assert_eq!(out, fixed[LAMBDA_GRID.len() - 1]);
        assert_eq!(asked.len(), LAMBDA_GRID.len());
        // No val slice: the default ridge, one solve.
        let (out, asked) = run(0.0, None);
        assert_eq!((out, asked.len()), (fixed[0].clone(), 0));
        assert_eq!(LAMBDA_GRID[0], DEFAULT_LAMBDA);
    }

    #[test]
    fn a_gradient_matrix_of_the_wrong_shape_is_an_error() {
        let wrong =
            TestHost::new().with_gradients(|_, _| RResult::ROk(Matrix { rows: 2, cols: 3, data: vec![0.0; 6].into() }));
        let model = TestModel::new(5);
        let ctx = Ctx::from_impl(&wrong);
        let err =
            model.with_view(|m| prune(&m, &PruneRequest::global(0.5, 1), &ctx, &ChitaConfig::default())).unwrap_err();
        assert!(err.message.contains("n × 55") && err.message.contains("2 × 3"), "{err}");
    }
}

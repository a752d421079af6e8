//! # hyperprune-plugin-obs
//!
//! Layerwise Optimal Brain Surgeon: ExactOBS (Frantar & Alistarh 2022, "Optimal Brain
//! Compression") with the layerwise loss of L-OBS (Dong et al. 2017). Every prunable layer
//! is pruned against its own reconstruction loss `(1/n)‖XW − XŴ‖²` on calibration inputs
//! `X`, whose Hessian `XᵀX/n` the host provides; rows of `W` are independent. Each row is
//! pruned greedily by the OBS rule, one weight at a time, and the kept weights are updated
//! to compensate, so the plugin returns masks **and** new weights.
//!
//! What it is not: a whole-network second-order method (that is WoodFisher) or a sequential
//! one (the Hessians are all taken at the dense model; pruned earlier layers do not change
//! the inputs of later ones).
//!
//! Modules: [`hessian`] (damping, inverse, re-solve on a support; the loss convention),
//! [`surgeon`] (the greedy pass of one row), [`allocate`] (merging the rows' loss curves),
//! [`layerwise`] (the procedure over a model). Options:
//!
//! - `samples` (int, 0): calibration samples for the Hessians; 0 = the host's default
//!   (`--calib-samples`).
//! - `damp` (float, 0.01): `λ`; `λ·mean(diag XᵀX/n)` is added to the Hessian's diagonal.
//! - `allocation` (`global` | `uniform`, `global`): `global` merges the recorded per-step
//!   loss increases of all rows of all layers and prunes the cheapest `round(s·n)`;
//!   `uniform` prunes every layer to the requested sparsity (exact total through
//!   `masking::per_layer_counts`) and merges the rows within each layer. A per-layer request
//!   (`--scope per-layer`) always means `uniform`. `global` compares the layers' losses as
//!   they are, unnormalised: `(1/n)‖XW − XŴ‖²` with `n` the rows of the unfolded input, so a
//!   conv layer's loss is per output position and a linear layer's per sample.
//!
//! N:M requests are supported (each row's pass only removes from groups that have not met
//! their quota). The algorithm makes no random choice: the request's seed only chooses the
//! calibration samples.

pub mod allocate;
pub mod hessian;
pub mod layerwise;
pub mod surgeon;

use hyperprune_sdk::{
    CalibRequest, Capabilities, Ctx, Example, LogLevel, ModelRef, OptionSpec, Options, Pattern, PluginError,
    PruneOutcome, PruneRequest, Pruner, PrunerInfo, Scope, export_pruner, masking,
};

use crate::hessian::DampedHessian;
use crate::layerwise::{LayerProblem, Monitor, Target, prune_layers};

/// How removals are spread over layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Allocation {
    /// One greedy merge of every row's loss curve over the whole model.
    #[default]
    Global,
    /// Every layer to the requested sparsity.
    Uniform,
}

impl std::str::FromStr for Allocation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "global" => Ok(Allocation::Global),
            "uniform" => Ok(Allocation::Uniform),
            other => Err(format!("allocation must be global or uniform, got '{other}'")),
        }
    }
}

/// The OBS pruner and its options.
#[derive(Debug, Clone, PartialEq)]
pub struct Obs {
    samples: u64,
    damp: f64,
    allocation: Allocation,
}

impl Default for Obs {
    fn default() -> Obs {
        Obs { samples: 0, damp: 0.01, allocation: Allocation::Global }
    }
}

impl Pruner for Obs {
    fn info(&self) -> PrunerInfo {
        PrunerInfo {
            name: "obs".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "layerwise optimal brain surgeon (ExactOBS): greedy per-row removal with weight updates"
                .into(),
            options: vec![
                OptionSpec::int(
                    "samples",
                    0,
                    "calibration samples for the layer input hessians; 0 uses the host's --calib-samples",
                ),
                OptionSpec::float(
                    "damp",
                    0.01,
                    "damping: damp·mean(diag XᵀX/n) is added to each hessian's diagonal; raise it when inputs are \
                     rank-deficient (few samples, dead units)",
                ),
                OptionSpec::choice(
                    "allocation",
                    &["global", "uniform"],
                    "global",
                    "global: prune the cheapest recorded OBS steps over all layers; uniform: every layer to the \
                     requested sparsity",
                ),
            ],
            capabilities: Capabilities { needs_data: true, updates_weights: true, ..Capabilities::default() },
            examples: vec![
                Example { description: "global ExactOBS at 75%".into(), options: vec![], sparsity: 0.75 },
                Example {
                    description: "every layer at 50%, 256 calibration samples".into(),
                    options: vec!["allocation=uniform".into(), "samples=256".into()],
                    sparsity: 0.5,
                },
            ],
        }
    }

    fn configure(&mut self, options: &Options) -> Result<(), PluginError> {
        let samples = options.int("samples");
        let damp = options.float("damp");
        if samples < 0 {
            return Err(PluginError::invalid_options(format!(
                "samples must be 0 (host default) or positive, got {samples}"
            )));
        }
        if !(damp.is_finite() && damp >= 0.0) {
            return Err(PluginError::invalid_options(format!("damp must be a finite number >= 0, got {damp}")));
        }
        self.samples = samples as u64;
        self.damp = damp;
        self.allocation = options.str("allocation").parse()?;
        Ok(())
    }

    fn prune(&self, model: &ModelRef<'_>, request: &PruneRequest, ctx: &Ctx<'_>) -> Result<PruneOutcome, PluginError> {
        let target = self.target(model, request)?;
        let start = std::time::Instant::now();
        let calib = CalibRequest { samples: self.samples, minibatch: 1, seed: request.seed };
        let mut problems = Vec::with_capacity(model.layers().len());
        for (l, layer) in model.layers().iter().enumerate() {
            let d = layer.row_len();
            let xtx = if layer.weights().is_empty() {
                Vec::new()
            } else {
                let m = ctx.layer_input_hessian(model, l, calib)?;
                if m.rows as usize != d || m.cols as usize != d {
                    return Err(PluginError::failed(format!(
                        "the host's input hessian of layer '{}' is {}×{}, expected {d}×{d} (the row length)",
                        layer.name(),
                        m.rows,
                        m.cols
                    )));
                }
                m.data.to_vec()
            };
            let hessian =
                DampedHessian::new(d, &xtx, self.damp).map_err(|e| format!("layer '{}': {e}", layer.name()))?;
            problems.push(LayerProblem { rows: layer.rows(), weights: layer.weights(), hessian });
        }
        let hessians_done = start.elapsed();
        let pruned = prune_layers(&problems, &target, &CtxMonitor(ctx))?;
        ctx.log(
            LogLevel::Debug,
            &format!(
                "input hessians in {:.2} s, passes and re-solves in {:.2} s",
                hessians_done.as_secs_f64(),
                (start.elapsed() - hessians_done).as_secs_f64()
            ),
        );
        for (layer, p) in model.layers().iter().zip(&pruned) {
            let removed = p.keep.iter().filter(|&&k| !k).count();
            ctx.log(
                LogLevel::Debug,
                &format!("{}: pruned {removed} of {}, layer loss {:.4e}", layer.name(), p.keep.len(), p.loss),
            );
        }
        let keep: Vec<Vec<bool>> = pruned.iter().map(|p| p.keep.clone()).collect();
        let weights = pruned.into_iter().map(|p| p.weights).collect();
        Ok(PruneOutcome::from_keep(model, &keep).with_new_weights(weights))
    }
}

impl Obs {
    /// The removal target of a request under this pruner's allocation.
    fn target(&self, model: &ModelRef<'_>, request: &PruneRequest) -> Result<Target, String> {
        match request.pattern {
            Pattern::NM { n, m } => {
                if m == 0 || n > m {
                    return Err(format!("an n:m pattern needs 0 < m and n <= m, got {n}:{m}"));
                }
                Ok(Target::NOfM { n: n as usize, m: m as usize })
            }
            Pattern::Unstructured => {
                let s = request.sparsity;
                if !(0.0..=1.0).contains(&s) {
                    return Err(format!("sparsity must be in [0, 1], got {s}"));
                }
                if request.scope == Scope::PerLayer || self.allocation == Allocation::Uniform {
                    let sizes: Vec<usize> = model.layers().iter().map(|l| l.weights().len()).collect();
                    Ok(Target::PerLayer { counts: masking::per_layer_counts(&sizes, s) })
                } else {
                    Ok(Target::Global { total: request.pruned_count(model.prunable_count()) })
                }
            }
        }
    }
}

/// The host's progress and cancellation, seen by [`prune_layers`].
struct CtxMonitor<'c, 'a>(&'c Ctx<'a>);

impl Monitor for CtxMonitor<'_, '_> {
    fn progress(&self, done: usize, total: usize) {
        self.0.progress(done, total);
    }

    fn cancelled(&self) -> bool {
        self.0.cancelled()
    }
}

export_pruner!(Obs);

#[cfg(test)]
mod tests {
    use super::*;
    use hyperprune_sdk::abi_stable::std_types::{RResult, RSlice, RStr};
    use hyperprune_sdk::rng::SplitMix64;
    use hyperprune_sdk::{LayerKind, LayerRef, Matrix, TestHost};

    /// A host that answers `layer_input_hessian` from fixed random inputs, one `XᵀX/n` per
    /// row length; `wrong_size` makes it answer with a 1×1 matrix.
    fn fake_host(wrong_size: bool) -> TestHost<'static> {
        TestHost::new().with_hessian(move |model, layer, _| {
            let d = if wrong_size { 1 } else { model.layers()[layer as usize].row_len() };
            let n = 3 * d;
            let mut r = SplitMix64::new(u64::from(layer));
            let x: Vec<f64> = (0..n * d).map(|_| 2.0 * r.next_f64() - 1.0).collect();
            let data = (0..d * d)
                .map(|k| (0..n).map(|s| x[s * d + k / d] * x[s * d + k % d]).sum::<f64>() / n as f64)
                .collect::<Vec<_>>();
            RResult::ROk(Matrix { rows: d as u64, cols: d as u64, data: data.into() })
        })
    }

    /// A conv `[4, 2, 2, 2]` and a linear `[3, 16]`, random weights.
    fn with_model<R>(f: impl FnOnce(&ModelRef<'_>) -> R) -> R {
        let shapes: [Vec<u64>; 2] = [vec![4, 2, 2, 2], vec![3, 16]];
        let mut r = SplitMix64::new(11);
        let weights: Vec<Vec<f32>> =
            shapes.iter().map(|s| (0..s.iter().product::<u64>()).map(|_| r.next_f32() - 0.5).collect()).collect();
        let layers = [
            LayerRef {
                name: RStr::from_str("0.weight"),
                kind: LayerKind::Conv2d,
                shape: RSlice::from_slice(&shapes[0]),
                weights: RSlice::from_slice(&weights[0]),
            },
            LayerRef {
                name: RStr::from_str("3.weight"),
                kind: LayerKind::Linear,
                shape: RSlice::from_slice(&shapes[1]),
                weights: RSlice::from_slice(&weights[1]),
            },
        ];
        let model = ModelRef {
            arch_json: RStr::from_str("{}"),
            layers: RSlice::from_slice(&layers),
            others: RSlice::from_slice(&[]),
            nodes: RSlice::from_slice(&[]),
        };
        f(&model)
    }

    fn kept(outcome: &PruneOutcome) -> Vec<usize> {
        outcome.layers.iter().map(|l| l.kept_count()).collect()
    }

    #[test]
    fn prunes_exact_totals_through_the_host_interface() {
        let host = fake_host(false);
        let ctx = Ctx::from_impl(&host);
        with_model(|model| {
            for s in [0.25, 0.5, 0.9] {
                let total = (s * 80.0_f64).round() as usize;
                let out = Obs::default().prune(model, &PruneRequest::global(s, 0), &ctx).unwrap();
                assert_eq!(out.pruned_count(), total, "global s={s}");
                assert!(out.layers.iter().all(|l| l.new_weights.is_some()));
                let per_layer = PruneRequest { scope: Scope::PerLayer, ..PruneRequest::global(s, 0) };
                let out = Obs::default().prune(model, &per_layer, &ctx).unwrap();
                let counts = masking::per_layer_counts(&[32, 48], s);
                assert_eq!(kept(&out), vec![32 - counts[0], 48 - counts[1]], "per-layer s={s}");
                let uniform = Obs { allocation: Allocation::Uniform, ..Obs::default() };
                assert_eq!(kept(&uniform.prune(model, &PruneRequest::global(s, 0), &ctx).unwrap()), kept(&out));
            }
            let nm = PruneRequest { pattern: Pattern::NM { n: 2, m: 4 }, ..PruneRequest::global(0.0, 0) };
            assert_eq!(kept(&Obs::default().prune(model, &nm, &ctx).unwrap()), vec![16, 24]);
        });
    }

    #[test]
    fn a_hessian_of_the_wrong_size_is_a_clear_error() {
        let host = fake_host(true);
        let ctx = Ctx::from_impl(&host);
        let err = with_model(|model| Obs::default().prune(model, &PruneRequest::global(0.5, 0), &ctx).unwrap_err());
        assert!(err.message.contains("'0.weight' is 1×1, expected 8×8"), "{err}");
    }

    #[test]
    fn options_are_validated() {
        let schema = Obs::default().info().options;
        let mut obs = Obs::default();
        let parse = |a: &[&str]| Options::from_json(&schema, &Options::from_assignments(&schema, a).unwrap()).unwrap();
        obs.configure(&parse(&["damp=0.1", "allocation=uniform", "samples=64"])).unwrap();
        assert_eq!(obs, Obs { samples: 64, damp: 0.1, allocation: Allocation::Uniform });
        assert!(obs.configure(&parse(&["damp=-1"])).unwrap_err().message.contains("damp must be"));
        assert!(obs.configure(&parse(&["samples=-3"])).unwrap_err().message.contains("samples must be"));
    }
}

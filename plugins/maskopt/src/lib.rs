//! # hyperprune-plugin-maskopt
//!
//! The ceiling of mask-only pruning: optimises one model's mask directly (continuous
//! sparsification / learned supermasks). Scores start from magnitude, the exact top-k mask
//! of the scores is distilled from the dense model through the host's
//! `masked_distill_loss_and_grad` service on calibration images, and a few hundred Adam
//! steps move the scores through a straight-through relaxation (the SDK's `refine`). No weight
//! is updated, so it bounds what a data-free mask predictor such as the hypernetwork can
//! reach on the same model; it is a data-aware method in its own right.

mod optimise;

use hyperprune_sdk::{
    Capabilities, Ctx, Example, LogLevel, ModelRef, OptionSpec, Options, PluginError, PruneOutcome, PruneRequest,
    Pruner, PrunerInfo, export_pruner,
};

pub use optimise::{Settings, optimise};

/// The step size and temperatures of the options' defaults (the steps come from `steps`).
const DEFAULTS: hyperprune_sdk::refine::Settings = hyperprune_sdk::refine::Settings::defaults(0);

/// Direct mask optimisation.
#[derive(Debug)]
pub struct MaskOpt {
    settings: Settings,
}

impl Default for MaskOpt {
    fn default() -> Self {
        let mut m = MaskOpt { settings: Settings { refine: DEFAULTS, calib_samples: 0, kd_temperature: 1.0, seed: 0 } };
        let defaults = Options::parse(&m.info().options, "").expect("the defaults fit the schema");
        m.configure(&defaults).expect("the defaults are valid");
        m
    }
}

impl Pruner for MaskOpt {
    fn info(&self) -> PrunerInfo {
        PrunerInfo {
            name: "maskopt".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "optimises the mask of each model by distillation through a straight-through top-k (data-aware; no weight update)".into(),
            options: vec![
                OptionSpec::int("steps", 300, "Adam steps on the scores"),
                OptionSpec::float("lr", DEFAULTS.lr, "Adam learning rate, in units of percentile rank"),
                OptionSpec::float("t_start", DEFAULTS.t_start, "straight-through sigmoid temperature at the first step (x the scores' spread)"),
                OptionSpec::float("t_end", DEFAULTS.t_end, "straight-through sigmoid temperature at the last step"),
                OptionSpec::int("calib_samples", 256, "calibration images per distillation call (0 = the host's default)"),
                OptionSpec::float("kd_temperature", 1.0, "distillation temperature"),
                OptionSpec::int("seed", 0, "seed of the calibration batches"),
            ],
            capabilities: Capabilities { needs_data: true, ..Capabilities::default() },
            examples: vec![
                Example { description: "the optimised mask at 4x".into(), options: vec![], sparsity: 0.75 },
                Example {
                    description: "a quick run: 40 steps".into(),
                    options: vec!["steps=40".into(), "lr=0.03".into()],
                    sparsity: 0.9,
                },
            ],
        }
    }

    fn configure(&mut self, options: &Options) -> Result<(), PluginError> {
        let steps = options.int("steps");
        if steps < 1 {
            return Err(PluginError::invalid_options(format!("option 'steps' must be at least 1, got {steps}")));
        }
        let (lr, t_start, t_end, kd) =
            (options.float("lr"), options.float("t_start"), options.float("t_end"), options.float("kd_temperature"));
        if !(lr > 0.0 && t_start > 0.0 && t_end > 0.0 && kd > 0.0) {
            return Err(PluginError::invalid_options("lr, t_start, t_end and kd_temperature must be positive"));
        }
        self.settings = Settings {
            refine: hyperprune_sdk::refine::Settings { steps: steps as usize, lr, t_start, t_end },
            calib_samples: options.int("calib_samples").max(0) as u64,
            kd_temperature: kd,
            seed: options.int("seed") as u64,
        };
        Ok(())
    }

    fn prune(&self, model: &ModelRef<'_>, request: &PruneRequest, ctx: &Ctx<'_>) -> Result<PruneOutcome, PluginError> {
        let out = optimise(model, request, &self.settings, ctx)?;
        ctx.log(
            LogLevel::Debug,
            &format!("distillation loss {:.4} (magnitude mask) -> {:.4}", out.losses.0, out.losses.1),
        );
        Ok(PruneOutcome::from_keep(model, &out.keep))
    }
}

export_pruner!(MaskOpt);

#[cfg(test)]
mod tests {
    use hyperprune_sdk::abi_stable::std_types::{RResult, RSlice, RStr};
    use hyperprune_sdk::rng::SplitMix64;
    use hyperprune_sdk::{LayerKind, LayerRef, LossAndGrad, Scope, TestHost};

    use super::*;

    /// Two layers of random weights; `important` lists flat indices of small weights that
    /// the objective nevertheless needs.
    fn weights() -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut rng = SplitMix64::new(3);
        let mut w: Vec<Vec<f32>> =
            [300usize, 200].iter().map(|&n| (0..n).map(|_| rng.next_f32() - 0.5).collect()).collect();
        let important: Vec<usize> = (0..500).step_by(10).collect();
        for &i in &important {
            let (l, j) = if i < 300 { (0, i) } else { (1, i - 300) };
            w[l][j] = 0.001 * (1.0 + j as f32 / 300.0);
        }
        (w, important)
    }

    fn with_model<R>(w: &[Vec<f32>], f: impl FnOnce(&ModelRef<'_>) -> R) -> R {
        let shapes = [[300u64, 1], [200u64, 1]];
        let layers: Vec<LayerRef<'_>> = w
            .iter()
            .zip(&shapes)
            .zip(["0.weight", "1.weight"])
            .map(|((w, s), name)| LayerRef {
                name: RStr::from_str(name),
                kind: LayerKind::Linear,
                shape: RSlice::from_slice(s),
                weights: RSlice::from_slice(w),
            })
            .collect();
        let model = ModelRef {
            arch_json: RStr::from_str("{}"),
            layers: RSlice::from_slice(&layers),
            others: RSlice::from_slice(&[]),
            nodes: RSlice::from_slice(&[]),
        };
        f(&model)
    }

    /// Loss `Σ c_i (1 − m_i)`: every weight costs |w| when pruned, the important ones 1.
    fn host<'a>(important: &'a [usize]) -> TestHost<'a> {
        TestHost::new().with_distill(move |model, mask, _calib, _t| {
            let w = model.flat_weights();
            let cost: Vec<f32> = (0..w.len()).map(|i| if important.contains(&i) { 1.0 } else { w[i].abs() }).collect();
            let loss = cost.iter().zip(mask).map(|(c, m)| (c * (1.0 - m)) as f64).sum();
            RResult::ROk(LossAndGrad { loss, grad: cost.iter().map(|c| -c).collect::<Vec<f32>>().into() })
        })
    }

    #[test]
    fn it_keeps_the_weights_the_objective_needs_that_magnitude_prunes_at_the_exact_sparsity() {
        let (w, important) = weights();
        let host = host(&important);
        let m = MaskOpt::default();
        for scope in [Scope::Global, Scope::PerLayer] {
            let request = PruneRequest { scope, ..PruneRequest::global(0.5, 0) };
            let out = with_model(&w, |model| optimise(model, &request, &m.settings, &Ctx::from_impl(&host))).unwrap();
            let flat = out.keep.concat();
            assert_eq!(flat.iter().filter(|&&k| !k).count(), 250, "{scope:?}: exact sparsity");
            if scope == Scope::PerLayer {
                assert_eq!(out.keep.iter().map(|k| k.iter().filter(|&&x| !x).count()).collect::<Vec<_>>(), [150, 100]);
            }
            let kept = important.iter().filter(|&&i| flat[i]).count();
            assert!(kept >= 45, "{scope:?}: kept {kept} of the 50 needed weights");
            // Keeping the 50 needed weights (cost 1 each) saves 50 and costs the |w| < 0.5 of
            // the weights pruned instead.
            assert!(out.losses.1 < out.losses.0 - 30.0, "{scope:?}: loss {:?}", out.losses);
        }
        // Magnitude (the starting point) keeps none of them.
        let start = Settings {
            refine: hyperprune_sdk::refine::Settings { steps: 1, ..m.settings.refine.clone() },
            ..m.settings.clone()
        };
        let out =
            with_model(&w, |model| optimise(model, &PruneRequest::global(0.5, 0), &start, &Ctx::from_impl(&host)))
                .unwrap();
        assert_eq!(important.iter().filter(|&&i| out.keep.concat()[i]).count(), 0);
    }

    #[test]
    fn without_data_it_fails_clearly() {
        let (w, _) = weights();
        let host = TestHost::new();
        let err = with_model(&w, |model| {
            MaskOpt::default().prune(model, &PruneRequest::global(0.5, 0), &Ctx::from_impl(&host))
        })
        .unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
    }
}

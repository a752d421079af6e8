//! # hyperprune-plugin-chita
//!
//! CHITA and CHITA++ (Benbaki, Chen, Meng, Hazimeh, Ponomareva, Zhao & Mazumder, "Fast as
//! CHITA: Neural Network Pruning with Combinatorial Optimization", ICML 2023), written anew
//! from the paper and its reference code (mazumder-lab/CHITA).
//!
//! CHITA prunes all layers at once by solving an ℓ0-constrained quadratic: the loss around
//! the current weights `w̄` modelled with the empirical Fisher built from `n` per-sample
//! gradients `G` (`n × p`), plus a ridge,
//!
//! ```text
//! min_w ½‖G(w − w̄)‖² + (nλ/2)‖w − w̄‖²   s.t. ‖w‖₀ ≤ k
//! ```
//!
//! (the paper's sparse-regression scaling: `n` times `½(w − w̄)ᵀF(w − w̄) + λ/2‖w − w̄‖²`,
//! `F = GᵀG/n`). Its key decision, kept here, is to never form the `p × p` Fisher: every
//! step multiplies by `G` or `Gᵀ` (`O(n·p)`), and the exact re-solve of the kept weights and
//! the scoring of swaps go through an `n × n` system (Woodbury) or, when fewer weights are
//! kept than there are samples (`k < n`), the `k × k` normal equations of the kept weights;
//! never `p × p`. It returns the masks and the updated kept weights.
//!
//! What is solved exactly and what approximately: the support is found heuristically
//! (IHT with line search, then active-set swaps; the problem is NP-hard), and on that
//! support the weights are the exact ridge optimum. See [`solver`] for the steps,
//! [`backsolve`] for the back-solve, [`budget`] for how budgets are split, and [`stages`]
//! for CHITA++.
//!
//! ## Options
//!
//! - `samples` (0 = the host's `--calib-samples`): per-sample gradients `n`.
//! - `lambda` (0 = chosen): the ridge, relative to the mean of the Fisher's diagonal:
//!   `λ = lambda · tr(F)/p`, so the ridge term is `(μ/2)‖w − w̄‖²` with
//!   `μ = nλ = lambda · mean_j ‖Gⱼ‖²`. Relative, so that one value works across models and
//!   sample counts (the paper tunes an absolute `λ` per network). Small values trust the
//!   quadratic model far from `w̄` and move the kept weights more; large values pull CHITA
//!   towards diagonal (OBD-like) pruning with small weight updates. No single value serves
//!   every network: 1 (the ridge equals the average curvature) was the best of 0.001–100 on
//!   Fashion-MNIST `mlpnet` zoos at 8× and 16×, while `cnn-s` members kept 56.8 % at 4× and
//!   16.1 % at 8× with it against 77.7 % (0.001) and 36.0 % (0.003). So the default `0`
//!   solves with 1, 0.1, 0.01, 0.001 in turn on the same gradients, stopping at the first
//!   that is less accurate than the one before (unless that one was at chance level, at most
//!   1.5× the accuracy of guessing: a collapsed network says nothing about the ridge; on a
//!   PyTorch-trained cnn-s at 8× the ridges 1 and 0.1 both collapse to chance and 0.001 keeps
//!   37.7 %), and keeps the pruned model most accurate on
//!   the host's val slice (`val_samples` images; a held-out part of the train split, never
//!   the test split), per model and per stage; without a val slice it uses 1. A positive
//!   value fixes it (one solve).
//! - `iterations` (25): maximum IHT iterations per solve (fewer are run once the support
//!   settles). On the Fashion-MNIST zoos of `docs/BENCHMARKS.md` 10, 25, 50 and 100 gave the
//!   same mean retention within member noise (the swaps and back-solve finish the job), while
//!   on a 266k-weight MLP each IHT iteration is several passes over a 1 GB gradient matrix:
//!   25 iterations took 21.6 s against 55.7 s for 100, at 99.10 vs 99.15 % retention (4×).
//! - `block_size` (0 = whole model): solve blocks of at most this many weights separately
//!   (block-diagonal Fisher), each with its share of the budget from a global ranking of the
//!   separable saliency `w̄ⱼ²(‖Gⱼ‖² + μ)`; for models too large for one problem. Each block
//!   factorises its own `min(n, k) × min(n, k)` system, so blocks should hold many more
//!   weights than `n`.
//! - `stages` (1): CHITA++ with this many stages on a schedule geometric in density,
//!   recomputing the gradients at the current weights before each stage.
//!
//! Per-layer scope is honoured by projecting every IHT step per layer; N:M patterns are
//! rejected.

pub mod backsolve;
pub mod budget;
pub mod grads;
pub mod solver;
pub mod stages;

use hyperprune_sdk::{
    Capabilities, Ctx, Example, ModelRef, OptionSpec, Options, Pattern, PluginError, PruneOutcome, PruneRequest,
    Pruner, PrunerInfo, export_pruner,
};

pub use stages::{ChitaConfig, DEFAULT_LAMBDA};

/// The CHITA / CHITA++ pruner.
#[derive(Debug, Default)]
pub struct Chita {
    config: ChitaConfig,
}

impl Pruner for Chita {
    fn info(&self) -> PrunerInfo {
        let d = ChitaConfig::default();
        PrunerInfo {
            name: "chita".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "CHITA / CHITA++ (Benbaki et al. 2023): l0-constrained Fisher quadratic solved by IHT with \
                          line search and swaps from per-sample gradients, with a ridge back-solve of the kept weights"
                .into(),
            options: vec![
                OptionSpec::int(
                    "samples",
                    d.samples as i64,
                    "calibration samples for the per-sample gradients; 0 uses the host's default (--calib-samples)",
                ),
                OptionSpec::float(
                    "lambda",
                    d.lambda,
                    "ridge relative to the mean empirical-Fisher diagonal; 0 (the default) solves with 1, 0.1, \
                     0.01 and 0.001 and keeps the pruned model most accurate on the host's val slice; a positive \
                     value fixes it (smaller lets the kept weights move more)",
                ),
                OptionSpec::int(
                    "val_samples",
                    d.val_samples as i64,
                    "val-slice images each candidate lambda is evaluated on (lambda=0)",
                ),
                OptionSpec::int(
                    "iterations",
                    d.iterations as i64,
                    "maximum IHT iterations per solve; IHT stops earlier once the support settles",
                ),
                OptionSpec::int(
                    "block_size",
                    d.block_size as i64,
                    "0 solves the whole model as one problem; otherwise blocks of at most this many weights are \
                     solved separately, budgets split by a global saliency ranking",
                ),
                OptionSpec::int(
                    "stages",
                    d.stages as i64,
                    "1 is CHITA; more is CHITA++: a schedule geometric in density, gradients recomputed per stage",
                ),
            ],
            capabilities: Capabilities {
                needs_data: true,
                needs_gradients: true,
                updates_weights: true,
                ..Capabilities::default()
            },
            examples: vec![
                Example { description: "one-shot CHITA to 75%".into(), options: vec![], sparsity: 0.75 },
                Example {
                    description: "CHITA++ with 5 stages to 93.75%".into(),
                    options: vec!["stages=5".into()],
                    sparsity: 0.9375,
                },
            ],
        }
    }

    fn configure(&mut self, options: &Options) -> Result<(), PluginError> {
        self.config = config_from(options).map_err(PluginError::invalid_options)?;
        Ok(())
    }

    fn prune(&self, model: &ModelRef<'_>, request: &PruneRequest, ctx: &Ctx<'_>) -> Result<PruneOutcome, PluginError> {
        if let Pattern::NM { n, m } = request.pattern {
            return Err(PluginError::not_supported(format!(
                "chita prunes unstructured sparsity only; N:M patterns ({n}:{m}) are not supported, drop --pattern"
            )));
        }
        if !(0.0..1.0).contains(&request.sparsity) {
            return Err(format!("sparsity must be in [0, 1), got {}", request.sparsity).into());
        }
        let pruned = stages::prune(model, request, ctx, &self.config)?;
        Ok(PruneOutcome::from_keep(model, &pruned.keep).with_new_weights(pruned.weights))
    }
}

/// Reads and checks the options.
///
/// # Errors
/// A negative or non-finite `lambda`, negative counts, or `stages < 1`.
pub fn config_from(options: &Options) -> Result<ChitaConfig, String> {
    let count = |name: &str, min: i64| -> Result<usize, String> {
        let v = options.int(name);
        if v < min { Err(format!("option '{name}' must be at least {min}, got {v}")) } else { Ok(v as usize) }
    };
    let lambda = options.float("lambda");
    if !(lambda >= 0.0 && lambda.is_finite()) {
        return Err(format!(
            "option 'lambda' must be 0 (chosen on the val slice) or a positive number (the ridge keeps the \
             back-solve well posed), got {lambda}"
        ));
    }
    Ok(ChitaConfig {
        samples: count("samples", 0)? as u64,
        lambda,
        val_samples: count("val_samples", 1)? as u64,
        iterations: count("iterations", 0)?,
        block_size: count("block_size", 0)?,
        stages: count("stages", 1)?,
    })
}

export_pruner!(Chita);

#[cfg(test)]
mod tests {
    use super::*;

    fn options(assignments: &[&str]) -> Result<Options, String> {
        let schema = Chita::default().info().options;
        let map = Options::from_assignments(&schema, assignments)?;
        Options::from_json(&schema, &map)
    }

    #[test]
    fn defaults_and_assignments_parse() {
        assert_eq!(config_from(&options(&[]).unwrap()).unwrap(), ChitaConfig::default());
        let c = config_from(&options(&["stages=5", "lambda=0.5", "block_size=4096"]).unwrap()).unwrap();
        assert_eq!((c.stages, c.lambda, c.block_size), (5, 0.5, 4096));
    }

    #[test]
    fn bad_values_are_rejected_with_the_option_named() {
        for (opt, word) in [("lambda=-1", "'lambda'"), ("stages=0", "'stages'"), ("iterations=-1", "'iterations'")] {
            let err = config_from(&options(&[opt]).unwrap()).unwrap_err();
            assert!(err.contains(word), "{opt}: {err}");
        }
    }

    #[test]
    fn nm_patterns_are_rejected() {
        let model = ModelRef {
            arch_json: "{}".into(),
            layers: abi_stable::std_types::RSlice::from_slice(&[]),
            others: abi_stable::std_types::RSlice::from_slice(&[]),
            nodes: abi_stable::std_types::RSlice::from_slice(&[]),
        };
        let request = PruneRequest { pattern: Pattern::NM { n: 2, m: 4 }, ..PruneRequest::global(0.5, 0) };
        let err = Chita::default().prune(&model, &request, &Ctx::from_impl(&hyperprune_sdk::NoData)).unwrap_err();
        assert!(err.message.contains("N:M"), "{err}");
    }
}

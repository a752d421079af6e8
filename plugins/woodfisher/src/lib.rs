//! # hyperprune-plugin-woodfisher
//!
//! WoodFisher (Singh & Alistarh, NeurIPS 2020): Optimal Brain Surgeon with the inverse
//! Hessian replaced by the inverse of the damped empirical Fisher
//! `F = λI + (1/n) Σᵢ gᵢgᵢᵀ`, built from `n` per-sample (or mini-batch-averaged) gradients
//! the host computes on calibration data.
//!
//! What it does, in order:
//!
//! 1. asks the host for the `n × p` gradient matrix (`samples`, `minibatch`);
//! 2. cuts the `p` flattened prunable weights into blocks of `block_size` and inverts each
//!    block's Fisher exactly with the Woodbury recursion ([`fisher`]);
//! 3. scores every weight by the OBS statistic `ρ_q = w_q² / (2[F⁻¹]_qq)`, the predicted
//!    loss increase of removing it alone, and prunes the lowest `round(s·p)` (global,
//!    per-layer or N:M, as requested);
//! 4. unless `update=false`, moves the kept weights of each block by the joint OBS update
//!    for all of that block's pruned weights ([`update`]).
//!
//! What is exact and what is not: each block's inverse and each block's joint update are
//! exact for the block-diagonal Fisher. Blocks are independent, so the result ignores the
//! curvature between blocks; `block_size=0` (one block) removes that approximation. The
//! pruning statistic ranks weights one at a time, as in the paper's one-shot pruning, so
//! the mask is not the jointly optimal set (that is combinatorial).
//!
//! Key decision: a block wider than the number of gradients is never formed as a `b × b`
//! matrix; it is kept as the one-shot Woodbury form (`n × b` gradients and an `n × n`
//! Cholesky factor), which makes `block_size=0` practical on models of tens of thousands
//! of weights.

mod fisher;
mod procedure;
mod update;

use hyperprune_sdk::{
    CalibRequest, Capabilities, Ctx, Example, ModelRef, OptionSpec, Options, PluginError, PruneOutcome, PruneRequest,
    Pruner, PrunerInfo, export_pruner, masking,
};

pub use fisher::{LowRankInverse, RECURSION_CHUNK, woodbury_inverse};
pub use procedure::{DENSE_LIMIT, Gradients, Monitor, Pruned, Settings, Silent, block_width, woodfisher};
pub use update::{BlockUpdate, obs_update_dense, obs_update_low_rank};

/// The default damping `λ`: the paper's `1e-5`, which also did best here up to 8×. On the
/// 8-member Fashion-MNIST zoos of `docs/BENCHMARKS.md` (1,024 gradients, blocks of 128; mean
/// retention of the first 4 members for λ = 1e-5 / 1e-4 / 1e-3 / 1e-2): mlpnet at 8×
/// **95.3** / 92.9 / 86.6 / 78.0 %, lenet5 at 8× **97.8** / 96.8 / 95.2 / 92.7 %. At 16× and
/// beyond the one-shot update overshoots and more damping or none helps (lenet5 at 16×:
/// 20.1 / 59.8 / **72.2** / 58.6 %; at 32× `update=false` is best), and cnn-s at 4× prefers
/// 1e-4 (78.0 vs 68.8 %). The Fisher's scale depends on the model's loss, so a model far from
/// these may want its own value.
pub const DEFAULT_DAMP: f64 = 1e-5;

/// WoodFisher pruning.
#[derive(Debug, Clone)]
pub struct WoodFisher {
    settings: Settings,
    samples: u64,
    minibatch: u64,
}

impl Default for WoodFisher {
    fn default() -> WoodFisher {
        WoodFisher { settings: Settings { damp: DEFAULT_DAMP, ..Settings::default() }, samples: 0, minibatch: 1 }
    }
}

impl Pruner for WoodFisher {
    fn info(&self) -> PrunerInfo {
        PrunerInfo {
            name: "woodfisher".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "optimal brain surgeon with a block-diagonal empirical-fisher inverse built by the \
                          woodbury recursion (singh & alistarh 2020); needs per-sample gradients"
                .into(),
            options: vec![
                OptionSpec::int(
                    "samples",
                    0,
                    "calibration samples for the gradients; 0 uses the host's --calib-samples (1024 unless set)",
                ),
                OptionSpec::int(
                    "minibatch",
                    1,
                    "samples averaged into each gradient (1 = true per-sample gradients); the fisher then has \
                     samples/minibatch rank-one terms",
                ),
                OptionSpec::float(
                    "damp",
                    DEFAULT_DAMP,
                    "dampening lambda added to the fisher's diagonal; larger values trust the gradients less and \
                     move the method toward magnitude pruning (at 16x and beyond try 1e-3, or update=false)",
                ),
                OptionSpec::int(
                    "block_size",
                    128,
                    "weights per diagonal fisher block over the flattened prunable weights; 0 = one block for the \
                     whole model (needs allow_dense above 50,000 weights)",
                ),
                OptionSpec::bool(
                    "update",
                    true,
                    "apply the optimal-brain-surgeon update to the kept weights; false only masks by the \
                     woodfisher statistic",
                ),
                OptionSpec::bool(
                    "allow_dense",
                    false,
                    "permit fisher blocks wider than 50,000 weights (block_size=0 on a large model)",
                ),
            ],
            capabilities: Capabilities {
                needs_data: true,
                needs_gradients: true,
                updates_weights: true,
                ..Capabilities::default()
            },
            examples: vec![
                Example {
                    description: "woodfisher with the obs update at 75%".into(),
                    options: vec![],
                    sparsity: 0.75,
                },
                Example {
                    description: "statistic only (no weight update), blocks of 64, 256 gradients".into(),
                    options: vec!["update=false".into(), "block_size=64".into(), "samples=256".into()],
                    sparsity: 0.5,
                },
            ],
        }
    }

    fn configure(&mut self, options: &Options) -> Result<(), PluginError> {
        self.apply(options).map_err(PluginError::invalid_options)
    }

    fn prune(&self, model: &ModelRef<'_>, request: &PruneRequest, ctx: &Ctx<'_>) -> Result<PruneOutcome, PluginError> {
        // Check the block width before the (costly) gradients are computed.
        block_width(model.prunable_count(), &self.settings)?;
        let started = std::time::Instant::now();
        let calib = CalibRequest { samples: self.samples, minibatch: self.minibatch, seed: request.seed };
        let grads = ctx
            .per_sample_gradients(model, calib)
            .map_err(|e| e.context("woodfisher needs per-sample gradients (run with a dataset)"))?;
        let gradient_secs = started.elapsed().as_secs_f64();
        let rows: Vec<usize> = model.layers().iter().map(|l| l.row_len()).collect();
        let view = Gradients { rows: grads.rows as usize, cols: grads.cols as usize, data: &grads.data };
        let out = woodfisher(
            &model.weights(),
            view,
            &self.settings,
            |scores| masking::keep_for_request(scores, &rows, request),
            &HostMonitor(ctx),
        )?;
        let predicted = out.loss_increase.map_or_else(|| "n/a (update=false)".into(), |d| format!("{d:.4e}"));
        ctx.info(&format!(
            "woodfisher: {} gradients, blocks of {}, damp {:e}; gradients {gradient_secs:.2}s, total {:.2}s; \
             predicted loss increase {predicted}",
            grads.rows,
            out.block,
            self.settings.damp,
            started.elapsed().as_secs_f64()
        ));
        let outcome = PruneOutcome::from_keep(model, &out.keep);
        Ok(match out.new_weights {
            Some(w) => outcome.with_new_weights(w),
            None => outcome,
        })
    }
}

impl WoodFisher {
    /// Reads and checks the options.
    fn apply(&mut self, options: &Options) -> Result<(), String> {
        let samples = options.int("samples");
        let minibatch = options.int("minibatch");
        let block_size = options.int("block_size");
        let damp = options.float("damp");
        if samples < 0 {
            return Err(format!("samples must be 0 (host default) or positive, got {samples}"));
        }
        if minibatch < 1 {
            return Err(format!("minibatch must be at least 1, got {minibatch}"));
        }
        if block_size < 0 {
            return Err(format!("block_size must be 0 (whole model) or positive, got {block_size}"));
        }
        if !(damp.is_finite() && damp > 0.0) {
            return Err(format!("damp must be a positive number, got {damp}"));
        }
        self.samples = samples as u64;
        self.minibatch = minibatch as u64;
        self.settings = Settings {
            damp,
            block_size: block_size as usize,
            update: options.bool("update"),
            allow_dense: options.bool("allow_dense"),
        };
        Ok(())
    }
}

/// The host's progress and cancellation, seen through [`Monitor`].
struct HostMonitor<'a, 'c>(&'a Ctx<'c>);

impl Monitor for HostMonitor<'_, '_> {
    fn cancelled(&self) -> bool {
        self.0.cancelled()
    }

    fn progress(&self, done: usize, total: usize) {
        self.0.progress(done, total);
    }
}

export_pruner!(WoodFisher);

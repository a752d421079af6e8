//! # hyperprune-plugin-hypernet
//!
//! Pruning as learning in weight space: a hypernetwork reads a trained network's weights
//! and a requested sparsity `s` and outputs a mask, for any `s`, for networks it has never
//! seen, in one forward pass, with no data at pruning time. It is fitted once over a model
//! zoo's train members (`hyperprune fit --pruner hypernet --zoo DIR --out hypernet.state`)
//! by distilling every dense member into its masked copy through the host's distillation
//! service, and selected on the zoo's val members.
//!
//! What it is not: it does not move the kept weights (no OBS-style update), so at high
//! sparsity it starts behind the methods that do; and it needs a fitted state to prune.
//!
//! Layout: `features.rs` encodes each weight (permutation-equivariant statistics),
//! `geometry.rs` views layers as `[out, in, k]`, `network.rs` holds the two architectures
//! (pointwise MLP, NFN-style equivariant) with FiLM sparsity conditioning, `mask.rs` turns
//! scores into exact top-k masks with a per-layer floor, `selection.rs` the exact top-k
//! selection of a model's scores that fitting and pruning share, `base.rs` holds what the
//! score is a residual on (magnitude ranks, layer-normalised per compression) and how far
//! the mask follows the network, `units.rs` the data-free unit stage, `refinement.rs` the
//! optional prune-time refinement on inputs drawn from stored moments, `fit/` is the training
//! procedure (its phases in `fit/mod.rs`) and `state.rs` the state file; `infer.rs` and
//! `kernel.rs` are the fast forward pass used at prune time. The network runs on burn's
//! pure-Rust CPU backend.

mod base;
mod features;
mod fit;
mod geometry;
mod infer;
mod kernel;
mod mask;
mod network;
mod refinement;
mod rescale;
mod selection;
mod state;
#[cfg(test)]
mod testing;
mod units;

use hyperprune_sdk::{
    Capabilities, Ctx, ErrorKind, Example, LogLevel, ModelRef, NodeKind, OptionSpec, Options, Pattern, PluginError,
    PruneOutcome, PruneRequest, Pruner, PrunerInfo, Scope, ZooRef, export_pruner,
};

pub use base::Base;
pub use features::{FEATURES, FeatureSet, NAMES as FEATURE_NAMES, encode, percentile_ranks};
use features::{encode_base_only, encode_beside};
pub use fit::{BaseChoice, Criterion, FitSettings, Relaxation};
pub use geometry::{LayerView, views};
pub use mask::{Mask, MaskMode};
pub use network::{Allocation, Arch, NetConfig, Params};
pub use state::State;

/// The hypernetwork pruner: options, and the fitted state once there is one.
#[derive(Debug)]
pub struct Hypernet {
    net: NetConfig,
    features: FeatureSet,
    settings: FitSettings,
    mode: MaskMode,
    /// `refine`: distillation steps after the network's mask (0: none; `None`: the default,
    /// [`Hypernet::prune_steps`]).
    refine: Option<usize>,
    options: serde_json::Value,
    state: Option<State>,
}

impl Hypernet {
    /// The network's shape where no option sets it. Hidden width and depth are fixed: 32
    /// channels and 3 layers fitted no better than 16 and 2, and an unconditioned network
    /// (`film: false`, one ranking for every `s`) was within the noise of FiLM (the research
    /// log, *Retired options*); states that recorded other values still load.
    pub const NET: NetConfig = NetConfig {
        arch: Arch::Pointwise,
        hidden: 16,
        depth: 2,
        film: true,
        allocation: Allocation::Learned,
        rescale: false,
    };

    /// The fit's settings where no option sets them. Those with no option (pairs per step,
    /// temperatures, the sparsity range, the criterion, the members the base is chosen on)
    /// were measured within the noise of these values or below them (the research log,
    /// *Retired options*); a library caller may still set them in [`FitSettings`].
    pub const SETTINGS: FitSettings = FitSettings {
        steps: 600,
        lr: 3e-3,
        members_per_step: 4,
        calib_samples: 256,
        kd_temperature: 1.0,
        t_start: 1.0,
        t_end: 0.05,
        s_min: 0.3,
        s_max: 0.97,
        log_uniform: true,
        val_every: 50,
        val_samples: 512,
        seed: 0,
        floor: 0.01,
        relaxation: Relaxation::StraightThrough,
        units: true,
        units_q: None,
        criterion: Criterion::Guarded,
        base: BaseChoice::Auto,
        base_on_train: true,
    };

    /// Refinement steps a prune of `model` takes: the option's where it is set; by default,
    /// where `state` stores refine inputs and the mask is an exact top-k, one, or
    /// [`BATCH_NORM_STEPS`] on a network with batch normalisation; none otherwise. One step
    /// keeps a mask near 1 ms on cnn-s and under 10 ms on lenet5, and on the val members kept
    /// more than none at every compression (the research log, *One step by default*).
    fn prune_steps(&self, state: &State, model: &ModelRef<'_>) -> usize {
        match self.refine {
            Some(steps) => steps,
            None if state.refine.is_none() || self.mode != MaskMode::TopK => 0,
            None if model.nodes().iter().any(|n| n.kind == NodeKind::BatchNorm2d) => BATCH_NORM_STEPS,
            None => 1,
        }
    }
}

/// Default refinement steps on a network with batch normalisation. With the statistics as
/// trained, one step left the Fashion-MNIST `resnet-s` zoo level with the best formula at 2×
/// and 16×; on its val members three steps kept more than one at every compression, and five
/// less than three at 8× and 16× (the research log, *Three steps on batch-norm networks*).
/// They cost 30 ms a `resnet-s` mask against one step's 7.5.
const BATCH_NORM_STEPS: usize = 3;

impl Default for Hypernet {
    fn default() -> Self {
        let mut h = Hypernet {
            net: Hypernet::NET,
            features: FeatureSet::Full,
            settings: Hypernet::SETTINGS,
            mode: MaskMode::TopK,
            refine: None,
            options: serde_json::Value::Null,
            state: None,
        };
        let defaults = Options::parse(&h.info().options, "").expect("the defaults fit the schema");
        h.configure(&defaults).expect("the defaults are valid");
        h
    }
}

/// The options, each told in one line; what they do in full is in `docs/HYPERNET.md`, and the
/// measurements behind their defaults (and behind the options retired) in the research log.
fn options() -> Vec<OptionSpec> {
    vec![
        OptionSpec::choice(
            "arch",
            &["pointwise", "equivariant"],
            "pointwise",
            "fit: an MLP on each weight's features, or NFN-style layers that also mix rows and units",
        ),
        OptionSpec::choice(
            "allocation",
            &["learned", "magnitude"],
            "learned",
            "fit: magnitude = keep global magnitude's per-layer budgets (ablation)",
        ),
        OptionSpec::bool("rescale", false, "fit: also predict one scale per output unit (the outcome updates weights)"),
        OptionSpec::choice(
            "features",
            &["full", "magnitude"],
            "full",
            "fit: magnitude = |w| and its ranks only (ablation)",
        ),
        OptionSpec::int("steps", 600, "fit: optimisation steps"),
        OptionSpec::float("lr", 3e-3, "fit: Adam learning rate (cosine-decayed to a tenth)"),
        OptionSpec::int("calib_samples", 256, "fit: calibration images per distillation call (train split)"),
        OptionSpec::choice(
            "s_sampling",
            &["log-compression", "uniform"],
            "log-compression",
            "fit: draw log(1/(1-s)) uniformly, or s",
        ),
        OptionSpec::int("val_every", 50, "fit: steps between validations (best kept) and checkpoints"),
        OptionSpec::int("val_samples", 512, "fit: images of the val slice per validation"),
        OptionSpec::int("seed", 0, "fit: seed of initialisation, draws and calibration batches"),
        OptionSpec::float(
            "floor",
            0.01,
            "fit and prune: each layer keeps at least max(1, floor x size) weights (0 = off)",
        ),
        OptionSpec::choice(
            "base",
            &["auto", "global", "layer-l2", "lamp"],
            "auto",
            "fit: the formula the network corrects; auto = chosen per compression",
        ),
        OptionSpec::choice(
            "units",
            &["auto", "off"],
            "auto",
            "fit and prune: give up a ReLU first layer's least active units whole",
        ),
        OptionSpec::float("units_q", -1.0, "fit: the unit stage's q_max below 0.9 (negative: chosen on val)"),
        OptionSpec::choice(
            "mask",
            &["topk", "threshold"],
            "topk",
            "prune: exact top-k, or a predicted threshold (the sparsity emerges, within 0.015)",
        )
        .at_prune(),
        OptionSpec::int(
            "refine",
            -1,
            "prune: distillation steps on draws stored at fit (-1: one where the state stores them, three on \
             batch-norm nets; 0: off; 25: ahead of every formula, 20-200 ms)",
        )
        .at_prune(),
    ]
}

impl Pruner for Hypernet {
    fn info(&self) -> PrunerInfo {
        PrunerInfo {
            name: "hypernet".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "a hypernetwork fitted over a zoo: reads the weights and s, outputs the mask; no data at prune time"
                    .into(),
            options: options(),
            capabilities: Capabilities {
                needs_data: false,
                fit_needs_data: true,
                needs_gradients: false,
                learnable: true,
                updates_weights: false,
                fits_any_arch: true,
            },
            examples: vec![
                Example {
                    description: "exact global top-k at 8x, with a state from `hyperprune fit --pruner hypernet`"
                        .into(),
                    options: vec!["state=hypernet.state".into()],
                    sparsity: 0.875,
                },
                Example {
                    description: "sparsity emerging from the predicted threshold".into(),
                    options: vec!["state=hypernet.state".into(), "mask=threshold".into()],
                    sparsity: 0.75,
                },
            ],
        }
    }

    fn configure(&mut self, options: &Options) -> Result<(), PluginError> {
        let positive = |name: &str| -> Result<usize, PluginError> {
            match options.int(name) {
                v if v >= 1 => Ok(v as usize),
                v => Err(PluginError::invalid_options(format!("option '{name}' must be at least 1, got {v}"))),
            }
        };
        if options.float("lr") <= 0.0 {
            return Err(PluginError::invalid_options("option 'lr' must be positive"));
        }
        let units_q = options.float("units_q");
        if units_q >= 0.9 {
            return Err(PluginError::invalid_options(format!(
                "option 'units_q' must be below 0.9 (negative: chosen on the val members), got {units_q}"
            )));
        }
        let floor = options.float("floor");
        if !(0.0..0.5).contains(&floor) {
            return Err(PluginError::invalid_options(format!("option 'floor' must be in [0, 0.5), got {floor}")));
        }
        self.net = NetConfig {
            arch: if options.str("arch") == "equivariant" { Arch::Equivariant } else { Arch::Pointwise },
            allocation: if options.str("allocation") == "magnitude" {
                Allocation::Magnitude
            } else {
                Allocation::Learned
            },
            rescale: options.bool("rescale"),
            ..Hypernet::NET
        };
        self.features = if options.str("features") == "magnitude" { FeatureSet::Magnitude } else { FeatureSet::Full };
        self.settings = FitSettings {
            steps: positive("steps")?,
            lr: options.float("lr"),
            calib_samples: positive("calib_samples")? as u64,
            log_uniform: options.str("s_sampling") == "log-compression",
            val_every: options.int("val_every").max(0) as usize,
            val_samples: options.int("val_samples").max(0) as u64,
            seed: options.int("seed") as u64,
            floor,
            units: options.str("units") == "auto",
            units_q: (units_q >= 0.0).then_some(units_q),
            base: match options.str("base") {
                "global" => BaseChoice::Fixed(base::Base::GLOBAL),
                "layer-l2" => BaseChoice::Fixed(base::Base::LAYER_L2),
                "lamp" => BaseChoice::Fixed(base::Base::LAMP),
                _ => BaseChoice::Auto,
            },
            ..Hypernet::SETTINGS
        };
        self.mode = if options.str("mask") == "threshold" { MaskMode::Threshold } else { MaskMode::TopK };
        let refine = options.int("refine");
        if !(-1..=10_000).contains(&refine) {
            return Err(PluginError::invalid_options(format!(
                "option 'refine' must be in 0..=10000, or -1 for the default, got {refine}"
            )));
        }
        if refine > 0 && self.mode == MaskMode::Threshold {
            return Err(PluginError::invalid_options(
                "option 'refine' keeps the budget exact: use it with mask=topk, not mask=threshold",
            ));
        }
        self.refine = usize::try_from(refine).ok();
        self.options = options.to_json();
        Ok(())
    }

    fn prune(&self, model: &ModelRef<'_>, request: &PruneRequest, ctx: &Ctx<'_>) -> Result<PruneOutcome, PluginError> {
        let state = self.state.as_ref().ok_or_else(|| {
            PluginError::failed(
                "the hypernetwork is not fitted: fit it with `hyperprune fit --pruner hypernet` and pass its state",
            )
        })?;
        if let Pattern::NM { .. } = request.pattern {
            return Err(PluginError::not_supported("N:M patterns are not supported by the hypernetwork"));
        }
        let meta = &state.meta;
        if !(meta.s_min - 1e-9..=meta.s_max + 1e-9).contains(&request.sparsity) {
            ctx.log(
                LogLevel::Warn,
                &format!(
                    "sparsity {} is outside the fitted range [{}, {}]: the mask is an extrapolation",
                    request.sparsity, meta.s_min, meta.s_max
                ),
            );
        }
        let (mut outcome, scores) = masks(state, model, request, self.settings.floor, self.mode, self.settings.units)?;
        let steps = self.prune_steps(state, model);
        if steps > 0 {
            let inputs = state.refine.as_ref().ok_or_else(|| {
                PluginError::invalid_options(
                    "option 'refine' needs a state that stores refine inputs (fitted with input moments from the \
                     host, by this version or later): refit it",
                )
            })?;
            let schedule = refinement::Schedule::new(steps, state.meta.refine_step, self.settings.floor);
            let refined = refinement::refine_mask(model, request, &outcome.keep, &scores, inputs, schedule, ctx)?;
            ctx.info(&schedule.describe(refined.losses));
            outcome.keep = refined.keep;
        }
        if !state.meta.net.rescale {
            return Ok(PruneOutcome::from_keep(model, &outcome.keep));
        }
        let views = geometry::views(model).map_err(PluginError::failed)?;
        let new = rescale::rescaled(&views, &model.weights(), &outcome.keep, request.sparsity, &state.params);
        Ok(PruneOutcome::from_keep(model, &outcome.keep).with_new_weights(new))
    }

    fn fit(&mut self, zoo: &ZooRef<'_>, ctx: &Ctx<'_>) -> Result<(), PluginError> {
        let archs: std::collections::BTreeSet<String> =
            zoo.members.iter().map(|m| arch_name(m.model.arch_json.as_str())).collect();
        let info = state::FitInfo {
            zoo: zoo.name.to_string(),
            dataset: zoo.dataset.to_string(),
            archs: archs.into_iter().collect(),
            options: self.options.clone(),
            ..Default::default()
        };
        // A checkpoint loaded before `fit` (an interrupted fit) resumes when it matches.
        let resume = self.state.take().filter(|s| s.meta.progress.is_some() && s.meta.net == self.net);
        let fitted = fit::fit(self.net, self.features, &self.settings, zoo, resume, ctx, info)?;
        ctx.info(&format!(
            "fitted in {:.1} s: {} steps, best val retention {}",
            fitted.meta.fit.seconds,
            fitted.meta.fit.steps,
            fitted
                .meta
                .fit
                .val_retention
                .map_or("n/a".into(), |r| format!("{r:.4} at step {}", fitted.meta.fit.best_step))
        ));
        self.state = Some(fitted);
        Ok(())
    }

    fn save_state(&self) -> Result<Vec<u8>, PluginError> {
        self.state.as_ref().map(State::to_bytes).ok_or_else(|| PluginError::failed("nothing to save: not fitted"))
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<(), PluginError> {
        let state = State::from_bytes(bytes)?;
        if state.meta.progress.is_none() {
            // A finished state brings its own network; fit options no longer apply.
            self.net = state.meta.net;
            self.features = feature_set(&state.meta.features)?;
        }
        self.state = Some(state);
        Ok(())
    }
}

fn feature_set(name: &str) -> Result<FeatureSet, PluginError> {
    match name {
        "full" => Ok(FeatureSet::Full),
        "magnitude" => Ok(FeatureSet::Magnitude),
        other => Err(PluginError::new(ErrorKind::InvalidState, format!("unknown feature set '{other}' in the state"))),
    }
}

/// The `name` of an architecture JSON, or `"unknown"`.
fn arch_name(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// Prunable weights from which a mask without the network's features computes its base's
/// ranks on a second thread.
const PARALLEL_BASE: usize = 8192;

/// The mask a fitted state gives `model` for `request`: one forward pass on the CPU, then
/// the state's unit stage when it has one and `units` is true; and the scores it selected by
/// (flat, layer order; under a top-k, measured from their layer's boundary).
///
/// # Errors
/// A model the encoder cannot read, or a finished state's unknown feature set.
pub fn masks(
    state: &State,
    model: &ModelRef<'_>,
    request: &PruneRequest,
    floor: f64,
    mode: MaskMode,
    units: bool,
) -> Result<(Mask, Vec<f32>), PluginError> {
    let set = feature_set(&state.meta.features)?;
    let (base, s, weights) = (state.meta.base(), request.sparsity, model.weights());
    let base_ranks = || base.ranks(&weights, s);
    let large = weights.iter().map(|w| w.len()).sum::<usize>() >= PARALLEL_BASE;
    // The base's ranks (of the weights alone) where the encoding leaves a thread free. Where
    // the network's weight is 0 the mask is the base's alone and needs no features.
    let (encoded, ranks) = if base.gain(s) > 0.0 {
        encode_beside(model, set, base_ranks)
    } else if large {
        std::thread::scope(|scope| {
            let ranks = scope.spawn(base_ranks);
            (encode_base_only(model), ranks.join().expect("the base's ranks do not panic"))
        })
    } else {
        (encode_base_only(model), base_ranks())
    };
    let encoded = encoded.map_err(PluginError::failed)?;
    let (mut scores, threshold) = base::scores_on(&state.meta.net, &state.params, &base, &encoded, ranks, s);
    let mask = match (mode, request.scope, state.meta.net.allocation) {
        (MaskMode::Threshold, _, Allocation::Magnitude) => {
            return Err(PluginError::not_supported(
                "mask=threshold needs a state fitted with allocation=learned (this one splits the budget by magnitude)",
            ));
        }
        (MaskMode::Threshold, _, Allocation::Learned) => {
            selection::standardise(&mut scores);
            scores.iter_mut().for_each(|s| *s -= threshold);
            mask::build(&selection::split_layers(&encoded, &scores), request, floor, mode)
        }
        (MaskMode::TopK, Scope::PerLayer, _) => {
            mask::build(&selection::split_layers(&encoded, &scores), request, floor, mode)
        }
        (MaskMode::TopK, _, allocation) => {
            if let (true, Some(stage), Some(stats)) = (units, &state.meta.units, &state.inputs) {
                let settings = units::Stage { q_max: stage.q_max, p_dead: stage.p_dead };
                units::apply(&mut scores, model, &encoded.views, stats, settings, request.sparsity);
            }
            let selection = selection::select(allocation, &encoded, &scores, request.sparsity, floor);
            selection.measure_from_thresholds(&mut scores);
            Mask { keep: selection.keep, boundary: None, threshold: selection.thresholds[0] }
        }
    };
    Ok((mask, scores))
}

export_pruner!(Hypernet);

#[cfg(test)]
mod tests {
    use hyperprune_sdk::abi_stable::std_types::{RResult, RSlice, RStr};
    use hyperprune_sdk::rng::SplitMix64;
    use hyperprune_sdk::{LossAndGrad, MemberRef, NoData, TestHost};

    use super::testing::{TestNet, model, permutation};
    use super::*;

    /// A fitted-looking state: random parameters everywhere, so that no part of the network
    /// is trivially zero, on a base that moves from layer-normalised to global ranks.
    fn random_state(arch: Arch, seed: u64) -> State {
        let net = NetConfig { arch, hidden: 8, depth: 2, film: true, allocation: Allocation::Learned, rescale: false };
        let mut params = Params::init(&net, seed);
        let mut rng = SplitMix64::new(seed);
        for p in &mut params.list {
            p.values.iter_mut().for_each(|v| *v += 0.3 * (rng.next_f32() - 0.5));
        }
        let settings = Hypernet::default().settings;
        State {
            meta: fit::meta(
                &net,
                FeatureSet::Full,
                &settings,
                Default::default(),
                None,
                Base { alpha: [1.0, 0.75, 0.5, 0.0, 0.0], gain: [1.0, 0.5, 1.0, 1.0, 0.25], lamp: [0.0; 5] },
            ),
            params,
            resume: None,
            inputs: None,
            refine: None,
        }
    }

    /// A cnn-s test network and a random state that stores 300 refine inputs of 28×28 (their
    /// values do not matter to the stand-in distillations of the tests).
    fn refinable() -> (TestNet, State) {
        let mut state = random_state(Arch::Pointwise, 5);
        state.refine = Some(refinement::Inputs { dim: 784, values: vec![0.5; 784 * 300] });
        (TestNet::cnn_s(4, 11), state)
    }

    #[test]
    fn refine_moves_the_networks_mask_toward_what_the_distillation_needs_at_the_same_budget() {
        let (net, mut state) = refinable();
        let request = PruneRequest::global(0.75, 0);
        let plain = net.with_view(|m| masks(&state, &m, &request, 0.01, MaskMode::TopK, true).unwrap().0.keep);
        // The stand-in distillation needs the first 20 weights the network pruned.
        let needed: Vec<usize> =
            plain.concat().iter().enumerate().filter(|(_, k)| !**k).map(|(i, _)| i).take(20).collect();
        let windows = std::sync::Mutex::new(Vec::new());
        let host = TestHost::new().with_inputs_distill(|_, mask, inputs, _| {
            windows.lock().unwrap().push(inputs.len());
            let loss = needed.iter().map(|&i| f64::from(1.0 - mask[i])).sum();
            let grad = (0..mask.len()).map(|i| if needed.contains(&i) { -1.0 } else { 0.0 }).collect::<Vec<f32>>();
            RResult::ROk(LossAndGrad { loss, grad: grad.into() })
        });
        let hypernet = Hypernet { state: Some(state.clone()), refine: Some(80), ..Hypernet::default() };
        let outcome = net.with_view(|m| hypernet.prune(&m, &request, &Ctx::from_impl(&host))).unwrap();
        let refined: Vec<bool> = outcome.layers.iter().flat_map(|l| l.keep()).collect();
        assert_eq!(refined.iter().filter(|&&k| !k).count(), plain.concat().iter().filter(|&&k| !k).count());
        let kept = needed.iter().filter(|&&i| refined[i]).count();
        assert!(kept >= 18, "kept {kept} of the 20 weights the loss needs");
        assert_eq!(*windows.lock().unwrap(), vec![784 * refinement::PER_STEP; 80], "PER_STEP stored inputs a step");
        // By default: one step, of ONE_STEP inputs.
        windows.lock().unwrap().clear();
        let default = Hypernet { state: Some(state.clone()), ..Hypernet::default() };
        net.with_view(|m| default.prune(&m, &request, &Ctx::from_impl(&host))).unwrap();
        assert_eq!(*windows.lock().unwrap(), vec![784 * refinement::ONE_STEP], "one step by default");
        // ... and three, of PER_STEP inputs, on a network with batch normalisation: the
        // residual test network, once without and once with a batch norm after its stem.
        let steps = std::sync::Mutex::new(Vec::new());
        let flat = TestHost::new().with_inputs_distill(|_, mask, inputs, _| {
            steps.lock().unwrap().push(inputs.len());
            RResult::ROk(LossAndGrad { loss: 0.0, grad: vec![0.0; mask.len()].into() })
        });
        let mut residual = TestNet::residual(3);
        for (batch_norm, want) in
            [(false, vec![784 * refinement::ONE_STEP]), (true, vec![784 * refinement::PER_STEP; 3])]
        {
            residual.nodes[1].0 = if batch_norm { NodeKind::BatchNorm2d } else { NodeKind::Relu };
            steps.lock().unwrap().clear();
            residual.with_view(|m| default.prune(&m, &request, &Ctx::from_impl(&flat))).unwrap();
            assert_eq!(*steps.lock().unwrap(), want, "batch norm: {batch_norm}");
        }
        // ... but none with a predicted threshold (whose budget is not exact), and none, without
        // an error, from a state that stores no inputs.
        windows.lock().unwrap().clear();
        let mut threshold = Hypernet { state: Some(state.clone()), ..Hypernet::default() };
        threshold.configure(&Options::parse(&threshold.info().options, r#"{"mask": "threshold"}"#).unwrap()).unwrap();
        net.with_view(|m| threshold.prune(&m, &request, &Ctx::from_impl(&host))).unwrap();
        state.refine = None;
        let stateless = Hypernet { state: Some(state.clone()), ..Hypernet::default() };
        let unrefined = net.with_view(|m| stateless.prune(&m, &request, &Ctx::from_impl(&host))).unwrap();
        assert_eq!(unrefined.layers.iter().map(|l| l.keep()).collect::<Vec<_>>(), plain);
        assert!(windows.lock().unwrap().is_empty(), "no refinement without exact top-k or stored inputs");
        // Asked for explicitly, a state without stored inputs cannot refine: one clear error.
        let old = Hypernet { state: Some(state), refine: Some(3), ..Hypernet::default() };
        let e = net.with_view(|m| old.prune(&m, &request, &Ctx::from_impl(&host))).unwrap_err();
        assert!(e.message.contains("refit"), "{e}");
    }

    #[test]
    fn the_default_step_takes_the_size_the_fit_chose_and_longer_refinements_keep_theirs() {
        let (net, state) = refinable();
        let request = PruneRequest::global(0.75, 0);
        let plain = net.with_view(|m| masks(&state, &m, &request, 0.01, MaskMode::TopK, true).unwrap().0.keep).concat();
        // A stand-in distillation that wants every pruned weight back and every kept one out:
        // one step swaps the weights within its size of the boundary, more for a larger step.
        let host = TestHost::new().with_inputs_distill(|_, mask, _, _| {
            let grad: Vec<f32> = plain.iter().map(|&k| if k { 1.0 } else { -1.0 }).collect();
            RResult::ROk(LossAndGrad { loss: f64::from(mask.iter().sum::<f32>()), grad: grad.into() })
        });
        let swapped = |step: Option<f64>, refine: Option<usize>| {
            let mut state = state.clone();
            state.meta.refine_step = step;
            let hypernet = Hypernet { state: Some(state), refine, ..Hypernet::default() };
            let outcome = net.with_view(|m| hypernet.prune(&m, &request, &Ctx::from_impl(&host))).unwrap();
            let keep: Vec<bool> = outcome.layers.iter().flat_map(|l| l.keep()).collect();
            keep.iter().zip(&plain).filter(|(a, b)| a != b).count()
        };
        let (default, chosen) = (swapped(None, None), swapped(Some(0.02), None));
        assert!(default > 0 && chosen > 2 * default, "{default} swapped at {}, {chosen} at 0.02", refinement::STEP);
        assert_eq!(swapped(Some(0.02), Some(1)), chosen, "refine=1 is the default's step");
        // Two steps or more keep the size chosen for them, whatever the state's.
        assert_eq!(swapped(Some(0.02), Some(2)), swapped(None, Some(2)));
    }

    #[test]
    fn a_refinement_that_empties_a_layer_leaves_it_its_floor() {
        let (net, state) = refinable();
        let request = PruneRequest::global(0.9, 0);
        let sizes: Vec<usize> = net
            .with_view(|m| masks(&state, &m, &request, 0.01, MaskMode::TopK, true).unwrap().0.keep)
            .iter()
            .map(Vec::len)
            .collect();
        // A stand-in distillation that wants the first layer gone and everything else kept.
        let host = TestHost::new().with_inputs_distill(|_, mask, _, _| {
            let grad: Vec<f32> = (0..mask.len()).map(|i| if i < sizes[0] { 1.0 } else { -1.0 }).collect();
            RResult::ROk(LossAndGrad { loss: f64::from(mask[..sizes[0]].iter().sum::<f32>()), grad: grad.into() })
        });
        let hypernet = Hypernet { state: Some(state), refine: Some(200), ..Hypernet::default() };
        let outcome = net.with_view(|m| hypernet.prune(&m, &request, &Ctx::from_impl(&host))).unwrap();
        let keep: Vec<Vec<bool>> = outcome.layers.iter().map(|l| l.keep()).collect();
        let kept = |l: usize| keep[l].iter().filter(|&&k| k).count();
        let total: usize = sizes.iter().sum();
        assert_eq!((0..keep.len()).map(kept).sum::<usize>(), total - request.pruned_count(total), "exact budget");
        assert_eq!(kept(0), sizes[0].div_ceil(100), "the first layer keeps its floor, no more");
    }

    /// A zoo of train members only.
    fn train_only<'a>(members: &'a [MemberRef<'a>]) -> ZooRef<'a> {
        ZooRef {
            name: RStr::from_str("test"),
            dataset: RStr::from_str("none"),
            members: RSlice::from_slice(members),
            val: RSlice::from_slice(&[]),
        }
    }

    fn prune(state: &State, net: &TestNet, s: f64) -> Vec<Vec<bool>> {
        net.with_view(|m| masks(state, &m, &PruneRequest::global(s, 0), 0.01, MaskMode::TopK, true).unwrap().0.keep)
    }

    #[test]
    fn permuting_hidden_units_permutes_the_mask_the_same_way() {
        for arch in [Arch::Pointwise, Arch::Equivariant] {
            let state = random_state(arch, 5);
            let net = TestNet::cnn_s(1, 11);
            // Conv channels (conv → conv), channels before the flatten (conv → linear), and
            // hidden units of a linear layer (linear → linear).
            for (layer, seed) in [(1usize, 1u64), (2, 2), (3, 3)] {
                let perm = permutation(net.shapes[layer][0] as usize, seed);
                let mut moved = net.clone();
                moved.permute_units(layer, &perm);
                for s in [0.5, 0.875, 0.96875] {
                    let (a, b) = (prune(&state, &net, s), prune(&state, &moved, s));
                    // The permuted network's masks, permuted back, are the original's.
                    let mut back = moved.clone();
                    back.weights = b.iter().map(|k| k.iter().map(|&x| f32::from(u8::from(x))).collect()).collect();
                    let inverse: Vec<usize> = {
                        let mut inv = vec![0; perm.len()];
                        perm.iter().enumerate().for_each(|(j, &src)| inv[src] = j);
                        inv
                    };
                    back.permute_units(layer, &inverse);
                    let restored: Vec<Vec<bool>> =
                        back.weights.iter().map(|w| w.iter().map(|&x| x > 0.5).collect()).collect();
                    assert_eq!(restored, a, "{arch:?}, layer {layer}, s = {s}");
                    assert_ne!(b, a, "the permutation must move something ({arch:?}, layer {layer})");
                }
            }
        }
    }

    #[test]
    fn channels_joined_by_a_residual_add_share_one_permutation() {
        let net = TestNet::residual(7);
        let encoded = net.with_view(|m| features::encode(&m, features::FeatureSet::Full).unwrap());
        assert_eq!(
            encoded.producers,
            vec![vec![], vec![0], vec![1], vec![0, 2]],
            "the head reads the stem and the block"
        );
        assert_eq!(encoded.consumers, vec![vec![1, 3], vec![2], vec![3], vec![]]);
        let perm = permutation(4, 3);
        let joined = |n: &mut TestNet, p: &[usize]| {
            // The stem's and the block's outputs are one set of channels: the shortcut reads
            // the stem, the head reads their sum, the block's first conv reads the stem.
            n.permute_rows(0, p);
            n.permute_rows(2, p);
            n.permute_cols(1, p);
            n.permute_cols(3, p);
        };
        let mut moved = net.clone();
        joined(&mut moved, &perm);
        let mut inverse = vec![0; perm.len()];
        perm.iter().enumerate().for_each(|(j, &src)| inverse[src] = j);
        for arch in [Arch::Pointwise, Arch::Equivariant] {
            let state = random_state(arch, 5);
            for s in [0.5, 0.875] {
                let (a, b) = (prune(&state, &net, s), prune(&state, &moved, s));
                let mut back = moved.clone();
                back.weights = b.iter().map(|k| k.iter().map(|&x| f32::from(u8::from(x))).collect()).collect();
                joined(&mut back, &inverse);
                let restored: Vec<Vec<bool>> =
                    back.weights.iter().map(|w| w.iter().map(|&x| x > 0.5).collect()).collect();
                assert_eq!(restored, a, "{arch:?}, s = {s}");
                assert_ne!(b, a, "the permutation must move something ({arch:?})");
            }
        }
    }

    #[test]
    fn one_state_prunes_cnn_s_lenet5_and_a_wider_cnn_s_to_the_exact_sparsity() {
        let mut rng = SplitMix64::new(9);
        for arch in [Arch::Pointwise, Arch::Equivariant] {
            let state = random_state(arch, 8);
            for net in [TestNet::cnn_s(1, 1), TestNet::lenet5(2), TestNet::cnn_s(2, 3)] {
                let p: usize = net.weights.iter().map(Vec::len).sum();
                for _ in 0..50 {
                    let s = 0.3 + 0.67 * rng.next_f64();
                    let keep = prune(&state, &net, s);
                    let pruned = keep.iter().flatten().filter(|&&k| !k).count();
                    assert_eq!(pruned, PruneRequest::global(s, 0).pruned_count(p), "{} s = {s}", net.arch);
                    assert!(keep.iter().all(|k| k.iter().any(|&x| x)), "a layer was emptied");
                }
            }
        }
    }

    #[test]
    fn pruning_needs_no_data_and_an_unfitted_pruner_says_how_to_fit() {
        let net = TestNet::cnn_s(1, 4);
        let mut h = Hypernet::default();
        let request = PruneRequest::global(0.75, 0);
        let err = net.with_view(|m| h.prune(&m, &request, &Ctx::from_impl(&NoData)).unwrap_err());
        assert!(err.message.contains("hyperprune fit --pruner hypernet"), "{err}");
        h.state = Some(random_state(Arch::Pointwise, 1));
        // NoData refuses every data service: pruning never asks for one.
        let outcome = net.with_view(|m| h.prune(&m, &request, &Ctx::from_impl(&NoData)).unwrap());
        assert_eq!(outcome.layers.len(), 5);
        assert_eq!(outcome.pruned_count(), request.pruned_count(net.weights.iter().map(Vec::len).sum()));
    }

    /// A stand-in distillation: pruning weight `i` costs `w_i²`, so the best mask keeps the
    /// largest weights and the gradient with respect to the mask is `−w²` (zero mask = all
    /// pruned).
    fn quadratic_host<'a>() -> TestHost<'a> {
        TestHost::new().with_distill(|model, mask, _calib, _t| quadratic(model, mask))
    }

    /// The stand-in distillation of [`quadratic_host`].
    fn quadratic(model: ModelRef<'_>, mask: &[f32]) -> RResult<LossAndGrad, PluginError> {
        let w = model.flat_weights();
        let loss = w.iter().zip(mask).map(|(w, m)| ((1.0 - m) * w * w) as f64).sum();
        RResult::ROk(LossAndGrad { loss, grad: w.iter().map(|w| -w * w).collect::<Vec<f32>>().into() })
    }

    fn fitted(arch: &str, seed: u64, nets: &[TestNet]) -> Hypernet {
        let given = [format!("arch={arch}"), "steps=12".into(), format!("seed={seed}")];
        fitted_with(&given, nets, &quadratic_host())
    }

    fn fitted_with(given: &[String], nets: &[TestNet], host: &TestHost<'_>) -> Hypernet {
        fitted_with_val(given, nets, 0, host)
    }

    /// Fitted on `nets`, the last `val` of them as val members.
    fn fitted_with_val(given: &[String], nets: &[TestNet], val: usize, host: &TestHost<'_>) -> Hypernet {
        let mut h = Hypernet::default();
        let schema = h.info().options;
        let map = Options::from_assignments(&schema, given).unwrap();
        h.configure(&Options::from_json(&schema, &map).unwrap()).unwrap();
        fit_on(h, nets, val, host)
    }

    /// `h` fitted on `nets`, the last `val` of them val members.
    fn fit_on(mut h: Hypernet, nets: &[TestNet], val: usize, host: &TestHost<'_>) -> Hypernet {
        let parts: Vec<_> = nets.iter().map(TestNet::parts).collect();
        let members: Vec<MemberRef<'_>> = nets
            .iter()
            .zip(&parts)
            .map(|(n, (l, o))| MemberRef {
                id: RStr::from_str("m"),
                model: model(&n.arch, l, o),
                dense_accuracy: 0.9,
                hyperparams_json: RStr::from_str("{}"),
            })
            .collect();
        let split = members.len() - val;
        let zoo = ZooRef { val: RSlice::from_slice(&members[split..]), ..train_only(&members[..split]) };
        h.fit(&zoo, &Ctx::from_impl(host)).unwrap();
        h
    }

    #[test]
    fn rescale_scales_each_output_unit_of_the_kept_weights_by_one_learned_factor() {
        let nets = [TestNet::cnn_s(1, 61), TestNet::cnn_s(1, 62)];
        let given = ["rescale=true".to_string(), "steps=12".into()];
        // The stand-in objective rewards a larger mask value everywhere, so the scales grow.
        let h = fitted_with(&given, &nets, &quadratic_host());
        let test = TestNet::cnn_s(1, 63);
        let request = PruneRequest::global(0.75, 0);
        let outcome = test.with_view(|m| h.prune(&m, &request, &Ctx::from_impl(&NoData)).unwrap());
        assert_eq!(outcome.pruned_count(), request.pruned_count(test.weights.iter().map(Vec::len).sum()));
        let mut grew = 0;
        for ((layer, w), shape) in outcome.layers.iter().zip(&test.weights).zip(&test.shapes) {
            let new = layer.new_weights.as_ref().into_option().expect("rescale=true carries new weights");
            let keep = layer.keep();
            let per = w.len() / shape[0] as usize;
            for ((row, new_row), keep_row) in w.chunks(per).zip(new.chunks(per)).zip(keep.chunks(per)) {
                let ratios: Vec<f32> =
                    row.iter().zip(new_row).zip(keep_row).filter(|(_, k)| **k).map(|((w, n), _)| n / w).collect();
                assert!(ratios.windows(2).all(|r| (r[0] - r[1]).abs() < 1e-4 * r[0].abs()), "one scale a unit");
                assert!(new_row.iter().zip(keep_row).all(|(n, k)| *k || *n == 0.0), "pruned weights are zero");
                grew += ratios.first().is_some_and(|&r| r > 1.0) as usize;
            }
        }
        assert!(grew > 0, "the fitted scales moved");
        // Without the option, no new weights.
        let plain = fitted("pointwise", 3, &nets);
        let outcome = test.with_view(|m| plain.prune(&m, &request, &Ctx::from_impl(&NoData)).unwrap());
        assert!(outcome.layers.iter().all(|l| l.new_weights.is_none()));
    }

    #[test]
    fn the_relaxation_decides_whether_the_host_evaluates_the_hard_or_the_soft_mask() {
        let nets = [TestNet::cnn_s(1, 51)];
        for (relaxation, soft_expected) in [(Relaxation::StraightThrough, false), (Relaxation::Sigmoid, true)] {
            let soft_seen = std::sync::Mutex::new(Vec::new());
            let host = TestHost::new().with_distill(|model, mask, _calib, _t| {
                soft_seen.lock().unwrap().push(mask.iter().any(|&m| m > 0.0 && m < 1.0));
                quadratic(model, mask)
            });
            let mut h = Hypernet::default();
            h.settings = FitSettings { steps: 4, members_per_step: 1, relaxation, ..h.settings };
            let h = fit_on(h, &nets, 0, &host);
            drop(host);
            let seen = soft_seen.into_inner().unwrap();
            assert_eq!(seen.len(), 4, "{relaxation:?}: one distillation per pair");
            assert!(seen.iter().all(|&soft| soft == soft_expected), "{relaxation:?}: {seen:?}");
            // Either way the state prunes with the exact hard top-k.
            let request = PruneRequest::global(0.75, 0);
            let outcome = nets[0].with_view(|m| h.prune(&m, &request, &Ctx::from_impl(&NoData)).unwrap());
            assert_eq!(outcome.pruned_count(), request.pruned_count(nets[0].weights.iter().map(Vec::len).sum()));
        }
    }

    #[test]
    fn fitting_is_deterministic_and_a_reloaded_state_gives_the_same_masks() {
        let nets = [TestNet::cnn_s(1, 21), TestNet::cnn_s(1, 22)];
        for arch in ["pointwise", "equivariant"] {
            let a = fitted(arch, 3, &nets);
            let b = fitted(arch, 3, &nets);
            let c = fitted(arch, 4, &nets);
            let params = |h: &Hypernet| h.state.as_ref().unwrap().params.clone();
            assert_eq!(params(&a), params(&b), "{arch}: equal seeds, equal fits");
            assert_ne!(params(&a), params(&c), "{arch}: the seed must matter");
            assert_ne!(params(&a), Params::init(&a.net, 3), "{arch}: fitting must move the parameters");
            let mut reloaded = Hypernet::default();
            reloaded.load_state(&a.save_state().unwrap()).unwrap();
            let test = TestNet::lenet5(30);
            for s in [0.5, 0.9] {
                let request = PruneRequest::global(s, 0);
                let one = test.with_view(|m| a.prune(&m, &request, &Ctx::from_impl(&NoData)).unwrap());
                let two = test.with_view(|m| reloaded.prune(&m, &request, &Ctx::from_impl(&NoData)).unwrap());
                assert_eq!(one, two, "{arch}: s = {s}");
            }
        }
    }

    #[test]
    fn a_checkpoint_resumes_where_the_fit_stopped() {
        // A fit of 12 steps equals one of 6 steps checkpointed and resumed for 6 more.
        let nets = [TestNet::cnn_s(1, 41)];
        let whole = fitted("pointwise", 7, &nets);
        let mut h = Hypernet::default();
        let schema = h.info().options;
        let opts = |steps: usize| {
            let given = [format!("steps={steps}"), "seed=7".into(), "val_every=6".into()];
            Options::from_json(&schema, &Options::from_assignments(&schema, &given).unwrap()).unwrap()
        };
        h.configure(&opts(12)).unwrap();
        let parts = nets[0].parts();
        let members = [MemberRef {
            id: RStr::from_str("m"),
            model: model(&nets[0].arch, &parts.0, &parts.1),
            dense_accuracy: 0.9,
            hyperparams_json: RStr::from_str("{}"),
        }];
        let zoo = train_only(&members);
        let host = quadratic_host();
        h.fit(&zoo, &Ctx::from_impl(&host)).unwrap();
        assert_eq!(h.state.as_ref().unwrap().params, whole.state.as_ref().unwrap().params);
        let checkpoints = host.checkpoints();
        assert_eq!(checkpoints.len(), 1, "one checkpoint, at step 6 (none at the end)");
        let mut resumed = Hypernet::default();
        resumed.configure(&opts(12)).unwrap();
        resumed.load_state(&checkpoints[0]).unwrap();
        resumed.fit(&zoo, &Ctx::from_impl(&quadratic_host())).unwrap();
        assert_eq!(resumed.state.unwrap().params, whole.state.unwrap().params);
    }

    #[test]
    fn an_untrained_network_prunes_by_its_base_global_or_layer_normalised_magnitude() {
        let net = TestNet::lenet5(21);
        let mut state = random_state(Arch::Pointwise, 1);
        state.params = Params::init(&state.meta.net, 1); // head at zero, skip at one
        for (base, alpha) in [(Base::GLOBAL, 0.0f32), (Base::LAYER_L2, 1.0)] {
            state.meta.base = Some(base);
            let state = State::from_bytes(&state.to_bytes()).unwrap();
            for s in [0.5, 0.9] {
                let request = PruneRequest::global(s, 0);
                let keep = net.with_view(|m| masks(&state, &m, &request, 0.0, MaskMode::TopK, true).unwrap().0.keep);
                // The kept weights are the largest |w| / ||W_l||^alpha, whatever their layer.
                let scored: Vec<f32> = net
                    .weights
                    .iter()
                    .flat_map(|w| {
                        let norm = w.iter().map(|v| v * v).sum::<f32>().sqrt();
                        w.iter().map(move |v| v.abs() / norm.powf(alpha))
                    })
                    .collect();
                let mut sorted = scored.clone();
                sorted.sort_by(|a, b| b.total_cmp(a));
                let kept = scored.len() - request.pruned_count(scored.len());
                let cut = sorted[kept - 1];
                let want: Vec<bool> = scored.iter().map(|&v| v >= cut).collect();
                assert_eq!(keep.concat(), want, "alpha {alpha}, s = {s}");
            }
        }
        // The two differ: layer normalisation moves the budget between layers.
        let mut at = |base: Base| {
            state.meta.base = Some(base);
            net.with_view(|m| {
                masks(&state, &m, &PruneRequest::global(0.9, 0), 0.0, MaskMode::TopK, true).unwrap().0.keep
            })
        };
        assert_ne!(at(Base::GLOBAL), at(Base::LAYER_L2));
    }

    #[test]
    fn the_base_only_encoding_has_the_full_encodings_layers_and_magnitude_rank() {
        for net in [TestNet::cnn_s(1, 3), TestNet::lenet5(4)] {
            net.with_view(|m| {
                let (full, light) = (encode(&m, FeatureSet::Full).unwrap(), encode_base_only(&m).unwrap());
                assert_eq!(
                    (&light.views, &light.producers, &light.consumers),
                    (&full.views, &full.producers, &full.consumers)
                );
                assert_eq!((light.len(), light.model_ranks()), (full.len(), full.model_ranks()));
            });
        }
    }

    #[test]
    fn every_weight_has_its_own_row_where_a_large_layer_is_encoded_on_two_threads() {
        // lenet5's first linear layer (48,000 weights) is encoded half on another thread.
        let net = TestNet::lenet5(6);
        net.with_view(|m| {
            let encoded = encode(&m, FeatureSet::Full).unwrap();
            let mut offset = 0;
            for (w, view) in net.weights.iter().zip(&encoded.views) {
                let rms =
                    ((w.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / w.len() as f64).sqrt() as f32).max(1e-12);
                let row_len = view.inp * view.k;
                let norms: Vec<f32> = w.chunks(row_len).map(|r| r.iter().map(|x| x * x).sum::<f32>()).collect();
                for (j, &v) in w.iter().enumerate() {
                    let row = &encoded.data[(offset + j) * FEATURES..][..FEATURES];
                    assert_eq!(row[0], v / rms, "weight {j} of a layer of {}", w.len());
                    // The row's unit: its output unit's norm feature ranks as that unit's norm.
                    let o = j / row_len;
                    if o > 0 && norms[o] != norms[o - 1] {
                        let prev = &encoded.data[(offset + (o - 1) * row_len) * FEATURES..][..FEATURES];
                        assert_eq!(row[6] > prev[6], norms[o] > norms[o - 1], "weight {j}");
                    }
                }
                offset += w.len();
            }
        });
    }

    #[test]
    fn the_network_weight_moves_the_mask_from_the_fitted_network_to_its_base() {
        let net = TestNet::cnn_s(1, 7);
        let mut fitted = random_state(Arch::Equivariant, 2);
        let base = Base { alpha: [1.0, 0.5, 0.5, 0.0, 0.0], ..Base::GLOBAL };
        fitted.meta.base = Some(base);
        let mut untrained = fitted.clone();
        untrained.params = Params::init(&fitted.meta.net, 2);
        let with_weight = |gain: f64| {
            let mut state = fitted.clone();
            state.meta.base = Some(Base { gain: [gain; 5], ..base });
            State::from_bytes(&state.to_bytes()).unwrap()
        };
        let (none, half) = (with_weight(0.0), with_weight(0.5));
        for s in [0.5, 0.8, 0.9, 0.96] {
            let (by_network, by_base) = (prune(&fitted, &net, s), prune(&untrained, &net, s));
            assert_ne!(by_network, by_base, "s = {s}");
            assert_eq!(prune(&none, &net, s), by_base, "s = {s}");
            let between = prune(&half, &net, s);
            assert!(between != by_network && between != by_base, "s = {s}");
        }
    }

    #[test]
    fn a_state_on_lamp_with_network_weight_zero_prunes_as_lamp() {
        let net = TestNet::cnn_s(1, 9);
        let mut state = random_state(Arch::Pointwise, 4);
        state.meta.base = Some(Base { gain: [0.0; 5], ..Base::LAMP });
        let state = State::from_bytes(&state.to_bytes()).unwrap();
        let views: Vec<&[f32]> = net.weights.iter().map(Vec::as_slice).collect();
        let scores = hyperprune_sdk::scores::lamp(&views);
        let scores: Vec<&[f32]> = scores.iter().map(Vec::as_slice).collect();
        for s in [0.5, 0.75, 0.875] {
            assert_eq!(prune(&state, &net, s), hyperprune_sdk::masking::global_keep(&scores, s), "s = {s}");
        }
        // With the network's weight back at 1 the mask is the network's own.
        let mut fitted = state.clone();
        fitted.meta.base = Some(Base::LAMP);
        assert_ne!(prune(&fitted, &net, 0.75), prune(&state, &net, 0.75));
    }

    #[test]
    fn a_knot_where_lamp_keeps_more_on_the_val_members_prunes_as_lamp() {
        // The host scores a masked model 0.9 when its zeros are exactly LAMP's global mask
        // at that sparsity, 0.5 otherwise: LAMP alone wins every knot the val members check
        // (2x-8x here; at 16x-32x the per-layer floor may keep more than LAMP does).
        let nets = [TestNet::cnn_s(1, 71), TestNet::cnn_s(1, 72)];
        let dense: Vec<Vec<Vec<f32>>> = nets.iter().map(|n| n.weights.clone()).collect();
        let lamp_keep = |w: &[Vec<f32>], s: f64| {
            let views: Vec<&[f32]> = w.iter().map(Vec::as_slice).collect();
            let scores = hyperprune_sdk::scores::lamp(&views);
            let scores: Vec<&[f32]> = scores.iter().map(Vec::as_slice).collect();
            hyperprune_sdk::masking::global_keep(&scores, s)
        };
        let host = quadratic_host().with_evaluate(move |model, _split, _n| {
            let w: Vec<Vec<f32>> = model.weights().iter().map(|l| l.to_vec()).collect();
            let kept: Vec<Vec<bool>> = w.iter().map(|l| l.iter().map(|&v| v != 0.0).collect()).collect();
            let total: usize = kept.iter().map(Vec::len).sum();
            let s = kept.iter().flatten().filter(|&&k| !k).count() as f64 / total as f64;
            let same_net =
                |d: &Vec<Vec<f32>>| w.iter().flatten().zip(d.iter().flatten()).all(|(a, b)| *a == 0.0 || a == b);
            let is_lamp = dense.iter().filter(|d| same_net(d)).any(|d| lamp_keep(d, s) == kept);
            let accuracy = if is_lamp { 0.9 } else { 0.5 };
            RResult::ROk(hyperprune_sdk::Evaluation { loss: 0.0, accuracy, samples: 1 })
        });
        let mut h = Hypernet::default();
        h.settings = FitSettings { steps: 2, val_every: 1, ..h.settings };
        let h = fit_on(h, &nets, 1, &host);
        let state = h.state.as_ref().expect("fitted");
        let base = state.meta.base.expect("a base");
        assert_eq!(&base.lamp[..3], &[1.0; 3], "{base:?}");
        assert_eq!(&base.gain[..3], &[0.0; 3], "{base:?}");
        let test = TestNet::cnn_s(1, 73);
        for s in [0.5, 0.75, 0.875] {
            assert_eq!(prune(state, &test, s), lamp_keep(&test.weights, s), "s = {s}");
        }
    }

    #[test]
    fn a_knot_the_val_members_see_at_chance_prunes_as_lamp() {
        // Every mask at 16x and beyond leaves the network at chance (9 % of a dense 90 %,
        // with 10 classes); below, every candidate keeps the same: those knots keep the
        // network (the first candidate on ties), the unjudged ones take LAMP.
        let nets = [TestNet::cnn_s(1, 81), TestNet::cnn_s(1, 82)];
        let host = quadratic_host().with_evaluate(move |model, _split, _n| {
            let (zeros, total) = model
                .weights()
                .iter()
                .fold((0, 0), |(z, t), l| (z + l.iter().filter(|&&v| v == 0.0).count(), t + l.len()));
            let s = zeros as f64 / total as f64;
            let accuracy = if s == 0.0 {
                0.9
            } else if s > 0.9 {
                0.09
            } else {
                0.5
            };
            RResult::ROk(hyperprune_sdk::Evaluation { loss: 0.0, accuracy, samples: 512 })
        });
        let mut h = Hypernet::default();
        h.settings = FitSettings { steps: 2, val_every: 1, ..h.settings };
        let h = fit_on(h, &nets, 1, &host);
        let base = h.state.as_ref().expect("fitted").meta.base.expect("a base");
        assert_eq!(base.lamp, [0.0, 0.0, 0.0, 1.0, 1.0], "{base:?}");
        assert_eq!(&base.gain[3..], &[0.0; 2], "{base:?}");
        assert_eq!(&base.gain[..3], &[1.0; 3], "{base:?}");
    }

    #[test]
    fn the_base_is_chosen_on_the_train_members_too_unless_asked_not_to() {
        let nets = [TestNet::cnn_s(1, 41), TestNet::cnn_s(1, 42)];
        let train_first = nets[0].weights[0][0].to_bits();
        for on_train in [true, false] {
            // The first weight of every model the host evaluates (dense members keep it).
            let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let log = seen.clone();
            let host = quadratic_host().with_evaluate(move |model, _split, _n| {
                log.lock().unwrap().push(model.weights()[0][0].to_bits());
                RResult::ROk(hyperprune_sdk::Evaluation { loss: 0.0, accuracy: 0.5, samples: 1 })
            });
            let mut h = Hypernet::default();
            h.settings = FitSettings { steps: 2, base_on_train: on_train, ..h.settings };
            fit_on(h, &nets, 1, &host);
            assert_eq!(seen.lock().unwrap().contains(&train_first), on_train, "base_on_train={on_train}");
        }
    }

    #[test]
    fn the_fit_chooses_the_base_on_its_members_train_and_val() {
        // A host whose "accuracy" grows with the kept share of one layer: the one with the
        // smallest L2 norm (which layer normalisation keeps more of), or the largest. It
        // stays above chance, so that every val compression can choose.
        let nets = [TestNet::cnn_s(1, 31), TestNet::cnn_s(1, 32)];
        let norms: Vec<f32> = nets[0].weights.iter().map(|w| w.iter().map(|v| v * v).sum::<f32>().sqrt()).collect();
        let smallest = (0..norms.len()).min_by(|&a, &b| norms[a].total_cmp(&norms[b])).unwrap();
        let largest = (0..norms.len()).max_by(|&a, &b| norms[a].total_cmp(&norms[b])).unwrap();
        assert_ne!(smallest, largest);
        let fit_for = |layer: usize| {
            let host = quadratic_host().with_evaluate(move |model, _split, _n| {
                let w = model.weights()[layer];
                let kept = w.iter().filter(|&&v| v != 0.0).count() as f64 / w.len() as f64;
                RResult::ROk(hyperprune_sdk::Evaluation { loss: 0.0, accuracy: 0.5 + 0.5 * kept, samples: 1 })
            });
            let h = fitted_with_val(&["steps=2".to_string()], &nets, 1, &host);
            (h.state.unwrap().meta.base(), host.records())
        };
        let (favoured, records) = fit_for(smallest);
        assert!(favoured.alpha.iter().all(|&a| a > 0.0), "{favoured:?}");
        assert_eq!(records.iter().filter(|r| r.contains("base_alpha")).count(), base::ALPHA_GRID.len());
        let (penalised, _) = fit_for(largest);
        assert_eq!(penalised, Base::GLOBAL);
    }

    #[test]
    fn the_unit_stage_gives_up_the_least_active_first_layer_units_whole_at_the_exact_sparsity() {
        // A 16-input MLP (flatten, linear, relu, ...) whose first-layer units 3, 7 and 9 are
        // never active: large negative weights on inputs whose mean is positive. By magnitude
        // they are the most important units of the layer.
        let mut net = TestNet::new("mlp", &[&[12, 16], &[6, 12], &[3, 6]], 5);
        net.arch = r#"{"name":"mlp","layers":[{"type":"flatten"},{"type":"linear","out_features":12},
            {"type":"relu"},{"type":"linear","out_features":6},{"type":"relu"},{"type":"linear","out_features":3}]}"#
            .into();
        let silent = [3usize, 7, 9];
        for &o in &silent {
            net.weights[0][o * 16..(o + 1) * 16].iter_mut().for_each(|w| *w = -2.0);
        }
        let plain = random_state(Arch::Pointwise, 3);
        let mut staged = plain.clone();
        staged.meta.units =
            Some(units::UnitStage { q_max: 0.3, p_dead: 0.0, dim: 16, samples: 1, val_retention: (0.0, 0.0) });
        let cov: Vec<f32> = (0..256).map(|k| if k / 16 == k % 16 { 0.01 } else { 0.0 }).collect();
        staged.inputs = Some(units::InputStats { mean: vec![0.2; 16], cov });
        let staged = State::from_bytes(&staged.to_bytes()).unwrap();
        let p: usize = net.weights.iter().map(Vec::len).sum();
        // 2×: the stage gives up nothing, the mask is the network's; so does `units=off`.
        assert_eq!(prune(&staged, &net, 0.5), prune(&plain, &net, 0.5));
        let off = |s: f64| {
            let request = PruneRequest::global(s, 0);
            net.with_view(|m| masks(&staged, &m, &request, 0.01, MaskMode::TopK, false).unwrap().0.keep)
        };
        assert_eq!(off(0.97), prune(&plain, &net, 0.97));
        assert_ne!(prune(&staged, &net, 0.97), prune(&plain, &net, 0.97));
        for s in [0.9, 0.95, 0.97] {
            let keep = prune(&staged, &net, s);
            let pruned = keep.iter().flatten().filter(|&&k| !k).count();
            assert_eq!(pruned, PruneRequest::global(s, 0).pruned_count(p), "s = {s}");
            let gone: Vec<usize> = (0..12).filter(|&o| keep[0][o * 16..(o + 1) * 16].iter().all(|&k| !k)).collect();
            let expected = (units::fraction(0.3, s) * 12.0).floor() as usize;
            assert!(expected >= 1, "s = {s}");
            // The silent units go first (as many as the stage gives up, or all three), every
            // weight into them and out of them.
            let first: Vec<usize> = silent.iter().copied().filter(|o| gone.contains(o)).collect();
            assert_eq!(first.len(), expected.min(3), "s = {s}: {gone:?}");
            for &o in &first {
                assert!((0..6).all(|r| !keep[1][r * 12 + o]), "s = {s}: unit {o} still read");
            }
            // Without the stage, the network keeps them (their weights are the largest).
            let keep = prune(&plain, &net, s);
            assert!(silent.iter().all(|&o| keep[0][o * 16..(o + 1) * 16].iter().any(|&k| k)), "s = {s}");
        }
    }
}

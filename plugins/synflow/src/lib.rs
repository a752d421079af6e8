//! # hyperprune-plugin-synflow
//!
//! SynFlow, iterative synaptic flow pruning (Tanaka, Kunin, Yamins and Ganguli, "Pruning
//! neural networks without any data by iteratively conserving synaptic flow", NeurIPS 2020).
//! A weight's score is the synaptic flow through it: make the network linear (every
//! parameter replaced by its absolute value), feed it one image of ones, and take
//!
//! ```text
//! R = 1ᵀ f(1; |θ ⊙ m|)            (the sum of the logits; eq. 2, R_SF = 1ᵀ (Π_l |θ^[l]|) 1)
//! S(θ) = ∂R/∂θ ⊙ θ                (eq. 1)
//! ```
//!
//! Pruning by `S` once would still empty a layer at high sparsity; the paper's remedy
//! (Algorithm 1) is to prune a little at a time and score again: over `n` rounds, round `k`
//! keeps the fraction `(1 − s)^{k/n}` of the weights (the exponential schedule), the weights
//! it prunes stay at zero, and every round's scores come from the masked network. Within a
//! layer the scores sum to `R` (the flow is conserved layer by layer), so a small layer's
//! weights score high and one global ranking keeps every layer connected until the
//! network's largest possible compression (the paper's Theorem 3).
//!
//! The score is the host's `synaptic_flow` service: the host runs the network's graph
//! forward and backward in f64 (products of `|W|` overflow f32 in a deep network) and
//! decides how each layer kind is linearised (batch normalisation is folded to the affine
//! map it computes in eval mode, then linearised; activations are the identity; see
//! `hyperprune_core::synflow`). Needs no data: the capabilities say `data: none`, and it
//! prunes in `hyperprune prune` without `--dataset`.
//!
//! Scope and pattern, as for every pruner: `--scope global` is the paper's setting (one
//! ranking over all weights every round); `--scope layer` ranks within each layer every
//! round, each layer following the schedule to the requested sparsity; `--pattern N:M` ranks
//! within each group of `M` consecutive weights of a row every round, a group keeping
//! `round(M · (N/M)^{k/n})` weights after round `k`, so the last round keeps exactly `N`.
//! Scores and rankings stay in f64 throughout.
//!
//! What it is not: the paper prunes at initialisation and then trains; here, as for every
//! pruner in hyperprune, it prunes a trained network once, with no fine-tuning. It never
//! updates the kept weights.

mod rounds;

use hyperprune_sdk::{
    Capabilities, Ctx, Example, ModelRef, OptionSpec, Options, PluginError, PruneOutcome, PruneRequest, Pruner,
    PrunerInfo, export_pruner,
};

pub use rounds::{kept_per_group, prune_iteratively};

/// Rounds of scoring and pruning: the paper's default.
pub const DEFAULT_ROUNDS: usize = 100;

/// Iterative synaptic flow pruning.
#[derive(Debug)]
pub struct SynFlow {
    rounds: usize,
}

impl Default for SynFlow {
    fn default() -> SynFlow {
        SynFlow { rounds: DEFAULT_ROUNDS }
    }
}

impl Pruner for SynFlow {
    fn info(&self) -> PrunerInfo {
        PrunerInfo {
            name: "synflow".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "SynFlow (Tanaka et al., NeurIPS 2020, \"Pruning neural networks without any data by \
                          iteratively conserving synaptic flow\"): scores each weight by the synaptic flow through it \
                          in the linearised network fed one image of ones, and prunes over many rounds on an \
                          exponential schedule, re-scoring the masked network each round; no data needed"
                .into(),
            options: vec![OptionSpec::int(
                "rounds",
                DEFAULT_ROUNDS as i64,
                "rounds of scoring and pruning (the paper's 100); 1 scores the dense network once",
            )],
            capabilities: Capabilities::default(),
            examples: vec![
                Example { description: "SynFlow to 90%, 100 rounds".into(), options: vec![], sparsity: 0.9 },
                Example {
                    description: "a quick run: 10 rounds to 75%".into(),
                    options: vec!["rounds=10".into()],
                    sparsity: 0.75,
                },
            ],
        }
    }

    fn configure(&mut self, options: &Options) -> Result<(), PluginError> {
        let rounds = options.int("rounds");
        if rounds < 1 {
            return Err(PluginError::invalid_options(format!("option 'rounds' must be at least 1, got {rounds}")));
        }
        self.rounds = rounds as usize;
        Ok(())
    }

    fn prune(&self, model: &ModelRef<'_>, request: &PruneRequest, ctx: &Ctx<'_>) -> Result<PruneOutcome, PluginError> {
        let keep = prune_iteratively(model, request, self.rounds, ctx)?;
        Ok(PruneOutcome::from_keep(model, &keep))
    }
}

export_pruner!(SynFlow);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_papers_and_rounds_below_one_are_refused() {
        let mut synflow = SynFlow::default();
        let info = synflow.info();
        assert_eq!(info.capabilities, Capabilities::default(), "data: none");
        let defaults = Options::parse(&info.options, "").unwrap();
        synflow.configure(&defaults).unwrap();
        assert_eq!(synflow.rounds, 100);
        let zero = Options::parse(&info.options, r#"{"rounds": 0}"#).unwrap();
        let e = synflow.configure(&zero).unwrap_err();
        assert!(e.message.contains("'rounds' must be at least 1, got 0"), "{e}");
    }
}

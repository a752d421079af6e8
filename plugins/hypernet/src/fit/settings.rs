//! How to fit: the settings the plugin's fit options become, with the base's source and the
//! relaxation the gradient goes through.

use super::criterion::Criterion;
use crate::base::Base;

/// How to fit.
#[derive(Debug, Clone, PartialEq)]
pub struct FitSettings {
    /// Optimisation steps.
    pub steps: usize,
    /// Adam's learning rate (cosine-decayed to a tenth).
    pub lr: f64,
    /// (member, sparsity) pairs per step.
    pub members_per_step: usize,
    /// Calibration samples per distillation call.
    pub calib_samples: u64,
    /// Distillation temperature `T_kd`.
    pub kd_temperature: f64,
    /// Straight-through temperature at the first step.
    pub t_start: f64,
    /// Straight-through temperature at the last step.
    pub t_end: f64,
    /// Sparsity range.
    pub s_min: f64,
    /// Sparsity range.
    pub s_max: f64,
    /// Draw `log(1/(1−s))` uniformly (every compression ratio equally often) instead of `s`.
    pub log_uniform: bool,
    /// Steps between validations (and checkpoints).
    pub val_every: usize,
    /// Val-slice samples per evaluation.
    pub val_samples: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Per-layer floor of kept weights.
    pub floor: f64,
    /// What the host's distillation evaluates.
    pub relaxation: Relaxation,
    /// Choose the unit stage's `q_max` on the val members (`units=auto`); off, it stays 0.
    pub units: bool,
    /// A `q_max` fixed by the user (`units_q`) instead of the one the val members choose.
    pub units_q: Option<f64>,
    /// How a validation check is scored when choosing the step (and `q_max`) to keep.
    pub criterion: Criterion,
    /// The base score's layer normalisation: chosen on the val members, or fixed.
    pub base: BaseChoice,
    /// Choose the base on the train members too, not only the val members.
    pub base_on_train: bool,
}

/// Where the base score's layer normalisation comes from (see [`crate::base`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BaseChoice {
    /// Each knot's `α` from [`ALPHA_GRID`](crate::base::ALPHA_GRID), the best for the
    /// untrained network on the val members at that compression.
    Auto,
    /// These knots.
    Fixed(Base),
}

/// The relaxation the fit's gradient goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relaxation {
    /// The host evaluates the hard top-k mask; the gradient goes back through the sigmoid
    /// around its boundary (straight-through).
    StraightThrough,
    /// The host evaluates the soft mask `σ((score − τ)/width)` itself, so forward and
    /// backward agree but the model evaluated is not the one that will be pruned (ablation).
    Sigmoid,
}

//! A borrowed view of a model zoo, for learned pruners' `fit`.

use abi_stable::StableAbi;
use abi_stable::std_types::{RSlice, RStr};

use crate::model::ModelRef;

/// One trained member of a zoo.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct MemberRef<'a> {
    /// Member id, e.g. `"0007"`.
    pub id: RStr<'a>,
    /// The member's weights.
    pub model: ModelRef<'a>,
    /// Dense test accuracy recorded when the zoo was trained.
    pub dense_accuracy: f64,
    /// The member's hyperparameters as JSON (activation, lr, seed, ...).
    pub hyperparams_json: RStr<'a>,
}

/// The members a learned pruner may fit on (a zoo's train split) and choose settings on
/// (its val split); never its test split, whose members are the host's alone.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct ZooRef<'a> {
    /// Zoo name.
    pub name: RStr<'a>,
    /// Dataset the members were trained on.
    pub dataset: RStr<'a>,
    /// The train members: what the pruner learns from.
    pub members: RSlice<'a, MemberRef<'a>>,
    /// The val members: for choosing settings and checkpoints (may be empty).
    pub val: RSlice<'a, MemberRef<'a>>,
}

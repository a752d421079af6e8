//! # hyperprune-sdk
//!
//! The only crate a pruner author needs. A pruner is a `cdylib` that implements
//! [`Pruner`] and calls [`export_pruner!`]; the `hyperprune` host loads it at run time,
//! checks it was built against a compatible SDK, and calls it through a stable ABI
//! ([abi_stable]), so plugins and host can be built by different people with different
//! compilers.
//!
//! A complete plugin (a `cdylib` crate depending on `hyperprune-sdk` and `abi_stable`):
//!
//! ```no_run
//! use hyperprune_sdk::{Ctx, ModelRef, PluginError, PruneOutcome, PruneRequest, Pruner, PrunerInfo};
//! use hyperprune_sdk::{export_pruner, masking};
//!
//! /// Prunes the weights with the largest magnitude: a bad idea, a short example.
//! #[derive(Default)]
//! struct Largest;
//!
//! impl Pruner for Largest {
//!     fn info(&self) -> PrunerInfo {
//!         PrunerInfo {
//!             name: "largest".into(),
//!             version: env!("CARGO_PKG_VERSION").into(),
//!             description: "prunes the largest weights (a counter-example)".into(),
//!             options: vec![],
//!             capabilities: Default::default(),
//!             examples: vec![],
//!         }
//!     }
//!
//!     fn prune(&self, model: &ModelRef<'_>, request: &PruneRequest, _ctx: &Ctx<'_>) -> Result<PruneOutcome, PluginError> {
//!         let scores: Vec<Vec<f32>> = model.layers().iter().map(|l| l.weights().iter().map(|w| -w.abs()).collect()).collect();
//!         let views: Vec<&[f32]> = scores.iter().map(Vec::as_slice).collect();
//!         let rows: Vec<usize> = model.layers().iter().map(|l| l.row_len()).collect();
//!         Ok(PruneOutcome::from_keep(model, &masking::keep_for_request(&views, &rows, request)))
//!     }
//! }
//!
//! export_pruner!(Largest);
//! ```
//!
//! ## What crosses the ABI
//!
//! Only the `repr(C)` types of this crate: borrowed [`ModelRef`] views (the host's own
//! buffers, never copied), [`PruneRequest`], bit-packed [`PruneOutcome`] masks, and the
//! [`Context`] of host services (logging, progress, cancellation, calibration statistics,
//! gradients, evaluation). Plugin metadata ([`PrunerInfo`]) and options travel as JSON so
//! they can grow without breaking the layout.
//!
//! ## What it is not
//!
//! Not an execution engine: no tensors, no burn, no datasets. A pruner that needs data asks
//! the host through [`Ctx`]. Not a place for host logic either: the host's own crates
//! (`hyperprune-core`, `hyperprune`) are never linked into a plugin.
//!
//! ## Key decision
//!
//! Every entry point is wrapped in `catch_unwind` by [`export_pruner!`], and errors cross
//! as a typed [`PluginError`]: a panicking or failing plugin becomes an error row in a
//! benchmark, never a crashed host.
#![deny(missing_docs)]

mod context;
mod error;
pub mod ffi;
pub mod gaussian;
mod info;
pub mod masking;
mod model;
mod options;
mod outcome;
mod pruner;
pub mod refine;
mod request;
pub mod rng;
pub mod scores;
mod topology;
mod zoo;

pub use context::{
    CalibRequest, Context, ContextRef, Ctx, DataSplit, DistillFn, EvaluateFn, Evaluation, GradientsFn, HessianFn,
    InputMoments, LogLevel, LossAndGrad, Matrix, MomentsFn, NoData, SynFlowFn, TestHost, context_ref,
};
pub use error::{ErrorKind, PluginError};
pub use ffi::{PrunerBox, PrunerModRef, SDK_VERSION};
pub use info::{Capabilities, Example, OptionKind, OptionSpec, PrunerInfo};
pub use model::{
    LayerKind, LayerRef, ModelBuf, ModelRef, NETWORK_INPUT, NO_LAYER, NodeKind, NodeRef, TensorRef, TensorRole,
};
pub use options::Options;
pub use outcome::{LayerMask, PruneOutcome, pack, unpack};
pub use pruner::Pruner;
pub use request::{Pattern, PruneRequest, Scope};
pub use topology::{BATCHNORM_EPS, Links};
pub use zoo::{MemberRef, ZooRef};

/// Re-exported so the export macro's users and the host agree on one version.
pub use abi_stable;

/// The number of threads the machine offers (1 when unknown), asked once a process: the
/// standard library's `available_parallelism` reads the cgroup files on every call, which
/// cost 7 % of a small network's mask when asked per call.
pub fn available_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
/// Re-exported for [`Ctx::record`] and plugin options, so plugins need not list it.
pub use serde_json;

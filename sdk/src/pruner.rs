//! The trait a plugin author implements, in plain Rust.

use crate::context::Ctx;
use crate::error::PluginError;
use crate::info::PrunerInfo;
use crate::model::ModelRef;
use crate::options::Options;
use crate::outcome::PruneOutcome;
use crate::request::PruneRequest;
use crate::zoo::ZooRef;

/// A pruning method. Implement it, add `Default`, and call [`crate::export_pruner!`].
///
/// Errors are [`PluginError`]s (a kind and a lowercase message saying what was expected);
/// a `String` converts into one of kind `Failed`, so `?` on `Result<_, String>` works.
/// Panics are caught at the ABI boundary and reported by the host as
/// `plugin 'name' panicked: ...`.
pub trait Pruner: Send + Sync + 'static {
    /// Name, version, description, options, capabilities, examples.
    fn info(&self) -> PrunerInfo;

    /// Applies options, already validated against [`PrunerInfo::options`] with defaults
    /// filled in. Called once before any `prune`, also when no option was given.
    ///
    /// # Errors
    /// When a combination of values is invalid.
    fn configure(&mut self, options: &Options) -> Result<(), PluginError> {
        let _ = options;
        Ok(())
    }

    /// Prunes `model` as `request` asks: one keep mask per layer of `model`, in order.
    ///
    /// # Errors
    /// When the request cannot be met (say why).
    fn prune(&self, model: &ModelRef<'_>, request: &PruneRequest, ctx: &Ctx<'_>) -> Result<PruneOutcome, PluginError>;

    /// Learns from the members of a zoo's train split (learned pruners only). The zoo's
    /// val members, when it has any, come separately for choosing settings.
    ///
    /// # Errors
    /// By default: not supported.
    fn fit(&mut self, zoo: &ZooRef<'_>, ctx: &Ctx<'_>) -> Result<(), PluginError> {
        let _ = (zoo, ctx);
        Err(PluginError::not_supported(NOT_SUPPORTED))
    }

    /// The learned state, to store beside a zoo.
    ///
    /// # Errors
    /// By default: not supported.
    fn save_state(&self) -> Result<Vec<u8>, PluginError> {
        Err(PluginError::not_supported(NOT_SUPPORTED))
    }

    /// Restores a state written by [`Pruner::save_state`].
    ///
    /// # Errors
    /// By default: not supported.
    fn load_state(&mut self, state: &[u8]) -> Result<(), PluginError> {
        let _ = state;
        Err(PluginError::not_supported(NOT_SUPPORTED))
    }
}

/// The message of the default `fit`/`save_state`/`load_state` (kind `NotSupported`).
const NOT_SUPPORTED: &str = "not supported by this pruner: it learns nothing";

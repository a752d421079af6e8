//! Running one pruner on one model through the ABI: pick the plugin, parse and apply its
//! options, call `prune` on a zero-copy view, check the outcome. Shared by `prune` and
//! `bench`.

use abi_stable::std_types::RStr;
use anyhow::Context as _;
use hyperprune_core::{Model, model_ref};
use hyperprune_sdk::{ErrorKind, Options, Pattern, PluginError, PruneRequest, PrunerBox, Scope};

use crate::cli::{RequestArgs, ScopeArg};
use crate::context::HostContext;
use crate::failure::bad_input;
use crate::outcome::{CheckedOutcome, check};
use crate::plugins::{Plugin, Registry};

/// A plugin instance with its options applied.
pub struct ConfiguredPruner {
    /// The plugin it came from.
    pub plugin: Plugin,
    /// The options as a JSON object, defaults filled in.
    pub options: serde_json::Value,
    pruner: PrunerBox,
}

/// Formats a plugin error the way the host reports it: `plugin 'x' panicked: ...`.
pub fn plugin_error(name: &str, e: &PluginError) -> String {
    match e.kind {
        ErrorKind::Panicked => format!("plugin '{name}' panicked: {}", e.message),
        _ => format!("plugin '{name}' failed: {}", e.message),
    }
}

impl ConfiguredPruner {
    /// Finds `name` in `registry`, validates `options` (`name=value`) against its schema,
    /// and configures a fresh instance.
    ///
    /// # Errors
    /// Bad input for an unknown pruner, unknown option or option of the wrong type; the
    /// plugin's own error when it rejects the combination.
    pub fn new(registry: &Registry, name: &str, options: &[String]) -> anyhow::Result<ConfiguredPruner> {
        let plugin = registry
            .get(name)
            .ok_or_else(|| bad_input(format!("unknown pruner '{name}' (installed: {})", registry.names())))?
            .clone();
        let map = Options::from_assignments(&plugin.info.options, options)
            .map_err(|e| bad_input(format!("pruner '{name}': {e}")))?;
        let full =
            Options::from_json(&plugin.info.options, &map).map_err(|e| bad_input(format!("pruner '{name}': {e}")))?;
        let mut pruner = plugin.instantiate().map_err(|e| anyhow::anyhow!(plugin_error(name, &e)))?;
        let json = serde_json::Value::Object(map).to_string();
        pruner.configure(RStr::from_str(&json)).into_result().map_err(|e| match e.kind {
            ErrorKind::InvalidOptions => bad_input(format!("pruner '{name}': {}", e.message)),
            _ => anyhow::anyhow!(plugin_error(name, &e)),
        })?;
        Ok(ConfiguredPruner { plugin, options: full.to_json(), pruner })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.plugin.name()
    }

    /// Whether the pruner must be fitted on a zoo before it prunes.
    pub fn learnable(&self) -> bool {
        self.plugin.info.capabilities.learnable
    }

    /// Fits the pruner on `zoo` (the train members).
    ///
    /// # Errors
    /// The plugin's error or panic, as one message.
    pub fn fit(&mut self, zoo: hyperprune_sdk::ZooRef<'_>, ctx: &HostContext<'_>) -> Result<(), String> {
        let name = self.plugin.info.name.clone();
        self.pruner.fit(zoo, hyperprune_sdk::context_ref(ctx)).into_result().map_err(|e| plugin_error(&name, &e))
    }

    /// The learned state.
    ///
    /// # Errors
    /// The plugin's error, as one message.
    pub fn save_state(&self) -> Result<Vec<u8>, String> {
        self.pruner.save_state().into_result().map(|v| v.to_vec()).map_err(|e| plugin_error(self.name(), &e))
    }

    /// Restores a learned state.
    ///
    /// # Errors
    /// The plugin's error, as one message.
    pub fn load_state(&mut self, state: &[u8]) -> Result<(), String> {
        let name = self.plugin.info.name.clone();
        self.pruner.load_state(state.into()).into_result().map_err(|e| plugin_error(&name, &e))
    }

    /// Prunes `model` and checks the outcome.
    ///
    /// # Errors
    /// The plugin's error or panic, or what is wrong with its outcome, as one message.
    pub fn prune(
        &self,
        model: &Model,
        request: &PruneRequest,
        ctx: &HostContext<'_>,
    ) -> Result<CheckedOutcome, String> {
        let handle = hyperprune_sdk::context_ref(ctx);
        let outcome = model_ref(model, |view| self.pruner.prune(view, request, handle).into_result())
            .map_err(|e| plugin_error(self.name(), &e))?;
        check(model, &outcome).map_err(|e| format!("plugin '{}' returned an invalid outcome: {e}", self.name()))
    }
}

/// Builds a request from the CLI's request options and a sparsity.
///
/// # Errors
/// Bad input for a sparsity outside [0, 1) or a malformed pattern.
pub fn request_from(args: &RequestArgs, sparsity: f64) -> anyhow::Result<PruneRequest> {
    if !(0.0..1.0).contains(&sparsity) {
        return Err(bad_input(format!("sparsity must be in [0, 1), got {sparsity}")));
    }
    let pattern = parse_pattern(&args.pattern).with_context(|| format!("--pattern '{}'", args.pattern))?;
    let scope = match args.scope {
        ScopeArg::Global => Scope::Global,
        ScopeArg::Layer => Scope::PerLayer,
    };
    Ok(PruneRequest { sparsity, scope, pattern, seed: args.seed })
}

fn parse_pattern(text: &str) -> anyhow::Result<Pattern> {
    if text == "unstructured" {
        return Ok(Pattern::Unstructured);
    }
    let parsed = text.split_once(':').and_then(|(n, m)| Some((n.parse::<u32>().ok()?, m.parse::<u32>().ok()?)));
    match parsed {
        Some((n, m)) if m > 0 && n <= m => Ok(Pattern::NM { n, m }),
        _ => Err(bad_input("expected 'unstructured' or N:M with 0 <= N <= M, M > 0 (e.g. 2:4)")),
    }
}

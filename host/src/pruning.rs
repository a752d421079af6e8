//! Running one pruner on one model through the ABI: pick the plugin, parse and apply its
//! options, call `prune` on a zero-copy view, check the outcome. Shared by `prune` and
//! `bench`.
//!
//! The host, not the pruner, decides what a `prune` call may use: a pruner that declared
//! no data needs ([`ConfiguredPruner::prunes_with_data`]) gets a context that refuses every
//! data service.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use abi_stable::std_types::RStr;
use anyhow::Context as _;
use hyperprune_core::{Model, model_ref};
use hyperprune_sdk::{ErrorKind, Options, Pattern, PluginError, PruneOutcome, PruneRequest, PrunerBox, Scope};

use crate::calibration::TrainSplit;
use crate::cli::{RequestArgs, ScopeArg};
use crate::context::{DataServices, HostContext};
use crate::failure::bad_input;
use crate::outcome::{CheckedOutcome, check, verify_sparsity};
use crate::plugins::{Plugin, Registry};
use crate::results::DataUse;

/// A plugin instance with its options applied.
pub struct ConfiguredPruner {
    /// The plugin it came from.
    pub plugin: Plugin,
    /// The options as a JSON object, defaults filled in.
    pub options: serde_json::Value,
    /// The host-level option `state=FILE` of a learnable pruner: the fitted state to load
    /// (see `fitting::load_state_file`). Never sent to the plugin.
    pub state_file: Option<PathBuf>,
    /// The host-level option `sparsity_check=exact|report`: whether an outcome whose
    /// sparsity differs from the request is an error (`exact`, the default) or only recorded
    /// (`report`, for pruners whose sparsity is meant to emerge, e.g. `hypernet
    /// mask=threshold`). Never sent to the plugin; `report` shows in the row's options.
    pub sparsity_check: SparsityCheck,
    /// The host-level option `fit_data=real|synthetic` of a learnable pruner: whether its
    /// fit's data services serve the zoo's images or synthetic inputs (see
    /// [`crate::calibration::synthetic`]). Never sent to the plugin; `synthetic` shows in the
    /// row's options and the state's header.
    pub fit_data: FitData,
    /// The host-level option `calib_data=real|moments` of a pruner that prunes with data:
    /// whether its `prune` calls' data services serve calibration images or Gaussian inputs
    /// with their pixel mean and covariance ([`crate::calibration::moment_matched`]). Never
    /// sent to the plugin; `moments` shows in the row's options and its `data` column.
    pub calib_data: CalibData,
    /// The moment-matched inputs of `calib_data=moments`, drawn at the first call.
    moment_split: std::sync::OnceLock<TrainSplit<'static>>,
    /// The zoo the loaded or fitted state was fitted on (`unknown` for a bare plugin state);
    /// None until then, and for pruners that learn nothing.
    pub fit_zoo: Option<String>,
    /// How the state was fitted, for result rows and report labels: the fit zoo, its train
    /// members, and the fit options that differ from the plugin's defaults.
    pub fit: Option<String>,
    /// The state file this instance holds (loaded or fitted), for a worker to load too.
    pub state_path: Option<PathBuf>,
    /// The plugin's own options as given (`name=value`, host-level ones taken out), for a
    /// worker to configure its instance alike.
    pub assignments: Vec<String>,
    pruner: PrunerBox,
}

/// The host-level option of learnable pruners: `state=FILE`.
pub const STATE_OPTION: &str = "state";

/// The host-level option of every pruner: `sparsity_check=exact|report`.
pub const SPARSITY_CHECK_OPTION: &str = "sparsity_check";

/// The host-level option of learnable pruners: `fit_data=real|synthetic`.
pub const FIT_DATA_OPTION: &str = "fit_data";

/// The host-level option of pruners that prune with data: `calib_data=real|moments`.
pub const CALIB_DATA_OPTION: &str = "calib_data";

/// What a `prune` call's data services serve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CalibData {
    /// Samples of the dataset's train split.
    #[default]
    Real,
    /// Gaussian inputs with the calibration samples' pixel mean and covariance; no image
    /// reaches a service, and the services that read labels are unavailable.
    Moments,
}

/// What a fit's data services serve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FitData {
    /// Samples of the dataset's train split (calibration part and val slice).
    #[default]
    Real,
    /// Synthetic inputs matching the train images' per-channel mean and standard deviation;
    /// no image reaches a service, and there is no val slice (evaluation is unavailable).
    Synthetic,
}

/// What the host does with an outcome whose sparsity is not what the request asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SparsityCheck {
    /// An error (row): the outcome must prune exactly what was asked (see
    /// [`crate::outcome::verify_sparsity`]).
    #[default]
    Exact,
    /// Recorded in the row's `achieved_sparsity`, not enforced.
    Report,
}

/// The options the host takes out of a pruner's `name=value` list before the plugin sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostOptions {
    /// `state=FILE`.
    pub state: Option<PathBuf>,
    /// `sparsity_check=exact|report`.
    pub sparsity_check: SparsityCheck,
    /// `fit_data=real|synthetic`.
    pub fit_data: FitData,
    /// `calib_data=real|moments`.
    pub calib_data: CalibData,
}

/// A state's identity in result rows: 16 hex digits of the FNV-1a hash of its bytes.
pub fn state_fingerprint(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

/// Formats a plugin error the way the host reports it: `plugin 'x' panicked: ...`.
pub fn plugin_error(name: &str, e: &PluginError) -> String {
    match e.kind {
        ErrorKind::Panicked => format!("plugin '{name}' panicked: {}", e.message),
        _ => format!("plugin '{name}' failed: {}", e.message),
    }
}

impl ConfiguredPruner {
    /// Finds `name` in `registry`, takes the host-level `state=FILE` out of `options`,
    /// validates the rest (`name=value`) against its schema, and configures a fresh instance.
    ///
    /// # Errors
    /// Bad input for an unknown pruner, unknown option or option of the wrong type, or a
    /// `state=` for a pruner that learns nothing; the plugin's own error when it rejects the
    /// combination.
    pub fn new(registry: &Registry, name: &str, options: &[String]) -> anyhow::Result<ConfiguredPruner> {
        let plugin = registry.get(name).ok_or_else(|| bad_input(registry.unknown(name)))?.clone();
        let (host, options) = take_host_options(options).map_err(|e| bad_input(format!("pruner '{name}': {e}")))?;
        let state_file = host.state;
        if state_file.is_some() && !plugin.info.capabilities.learnable {
            return Err(bad_input(format!(
                "pruner '{name}' learns nothing, so it takes no fitted state: drop the option {STATE_OPTION}=FILE"
            )));
        }
        if host.fit_data == FitData::Synthetic && !plugin.info.capabilities.fit_needs_data {
            return Err(bad_input(format!(
                "pruner '{name}' fits without data, so {FIT_DATA_OPTION}=synthetic changes nothing: drop it"
            )));
        }
        let caps = &plugin.info.capabilities;
        if host.calib_data == CalibData::Moments && !(caps.needs_data || caps.needs_gradients) {
            return Err(bad_input(format!(
                "pruner '{name}' prunes without data, so {CALIB_DATA_OPTION}=moments changes nothing: drop it"
            )));
        }
        if host.calib_data == CalibData::Moments && caps.needs_gradients {
            return Err(bad_input(format!(
                "pruner '{name}' reads gradients of its loss on labelled samples (capabilities.needs_gradients), \
                 which moment-matched inputs do not have: drop {CALIB_DATA_OPTION}=moments"
            )));
        }
        let assignments = options;
        let map = Options::from_assignments(&plugin.info.options, &assignments)
            .map_err(|e| bad_input(format!("pruner '{name}': {e}")))?;
        let full =
            Options::from_json(&plugin.info.options, &map).map_err(|e| bad_input(format!("pruner '{name}': {e}")))?;
        let mut pruner = plugin.instantiate().map_err(|e| anyhow::anyhow!(plugin_error(name, &e)))?;
        let json = serde_json::Value::Object(map).to_string();
        pruner.configure(RStr::from_str(&json)).into_result().map_err(|e| match e.kind {
            ErrorKind::InvalidOptions => bad_input(format!("pruner '{name}': {}", e.message)),
            _ => anyhow::anyhow!(plugin_error(name, &e)),
        })?;
        let mut options = full.to_json();
        if let (SparsityCheck::Report, serde_json::Value::Object(map)) = (host.sparsity_check, &mut options) {
            map.insert(SPARSITY_CHECK_OPTION.into(), "report".into());
        }
        if let (FitData::Synthetic, serde_json::Value::Object(map)) = (host.fit_data, &mut options) {
            map.insert(FIT_DATA_OPTION.into(), "synthetic".into());
        }
        if let (CalibData::Moments, serde_json::Value::Object(map)) = (host.calib_data, &mut options) {
            map.insert(CALIB_DATA_OPTION.into(), "moments".into());
        }
        Ok(ConfiguredPruner {
            plugin,
            options,
            state_file,
            sparsity_check: host.sparsity_check,
            fit_data: host.fit_data,
            calib_data: host.calib_data,
            moment_split: std::sync::OnceLock::new(),
            fit_zoo: None,
            fit: None,
            state_path: None,
            assignments,
            pruner,
        })
    }

    /// Records which fitted state this instance holds: `options.state` becomes the
    /// fingerprint of the plugin's state bytes, so result rows of two different states
    /// (fitted on other zoos or with other settings) never share a row key, and a rerun with
    /// the same state resumes; `fit_zoo` names the zoo it was fitted on (`unknown` if None).
    pub fn mark_state(&mut self, bytes: &[u8], fit: Option<(&str, usize, &serde_json::Value)>) {
        if let serde_json::Value::Object(map) = &mut self.options {
            map.insert(STATE_OPTION.into(), serde_json::Value::String(state_fingerprint(bytes)));
        }
        let Some((zoo, train, options)) = fit else {
            self.fit_zoo = Some("unknown".into());
            self.fit = Some("unknown".into());
            return;
        };
        let defaults = Options::from_json(&self.plugin.info.options, &serde_json::Map::new()).map(|o| o.to_json());
        let mut label = format!("{zoo}, {train} train");
        if let (Some(given), Ok(serde_json::Value::Object(defaults))) = (options.as_object(), defaults) {
            for (name, value) in given {
                if defaults.get(name).is_some_and(|d| d != value) || name == FIT_DATA_OPTION {
                    let value = value.as_str().map_or_else(|| value.to_string(), str::to_string);
                    label.push_str(&format!(", {name}={value}"));
                }
            }
        }
        self.fit_zoo = Some(zoo.to_string());
        self.fit = Some(label);
    }

    /// The options a fitted state is keyed and compared by: those the plugin was configured
    /// with, defaults filled in, without the host-level ones (`state`, `sparsity_check`) and
    /// the plugin's prune-only ones (`OptionSpec::prune_only`), but with `fit_data=synthetic`,
    /// which says how a state was fitted.
    pub fn fit_options(&self) -> serde_json::Value {
        let mut options = self.options.clone();
        if let serde_json::Value::Object(map) = &mut options {
            map.remove(STATE_OPTION);
            map.remove(SPARSITY_CHECK_OPTION);
            for spec in self.plugin.info.options.iter().filter(|o| o.prune_only) {
                map.remove(&spec.name);
            }
        }
        options
    }

    /// The options a worker configures its instance with: the plugin's own as given, and
    /// the host-level `fit_data` (a worker's fit serves the data).
    pub fn worker_assignments(&self) -> Vec<String> {
        let mut options = self.assignments.clone();
        if self.fit_data == FitData::Synthetic {
            options.push(format!("{FIT_DATA_OPTION}=synthetic"));
        }
        if self.calib_data == CalibData::Moments {
            options.push(format!("{CALIB_DATA_OPTION}=moments"));
        }
        options
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.plugin.name()
    }

    /// Whether the pruner must be fitted on a zoo before it prunes.
    pub fn learnable(&self) -> bool {
        self.plugin.info.capabilities.learnable
    }

    /// Whether its `prune` calls get data services: it declared `needs_data` (or
    /// `needs_gradients`, which needs data too).
    pub fn prunes_with_data(&self) -> bool {
        let caps = &self.plugin.info.capabilities;
        caps.needs_data || caps.needs_gradients
    }

    /// What a result row says about the pruner's data.
    pub fn data_use(&self) -> DataUse {
        match (self.prunes_with_data(), self.calib_data) {
            (false, _) => DataUse::None,
            (true, CalibData::Real) => DataUse::Train,
            (true, CalibData::Moments) => DataUse::Moments,
        }
    }

    /// The context of a `prune` call: `data` when the pruner declared it needs data (with
    /// `calib_data=moments`, its moment-matched inputs in place of the images), else a
    /// context whose data services all answer `Unavailable`.
    pub fn prune_context<'a>(&'a self, data: Option<DataServices<'a>>, cancel: &'a AtomicBool) -> HostContext<'a> {
        if !self.prunes_with_data() {
            return HostContext::new(self.name(), data, cancel).declining_data("capabilities.needs_data is false");
        }
        let data = match (data, self.calib_data) {
            (Some(d), CalibData::Moments) => Some(DataServices {
                engine: d.engine,
                split: self.moment_split.get_or_init(|| d.split.moment_matched()),
            }),
            (data, _) => data,
        };
        HostContext::new(self.name(), data, cancel)
    }

    /// The context of a `fit` call: `data` when the pruner declared `fit_needs_data`, else a
    /// context whose data services all answer `Unavailable`.
    pub fn fit_context<'a>(&self, data: Option<DataServices<'a>>, cancel: &'a AtomicBool) -> HostContext<'a> {
        let ctx = HostContext::new(self.name(), data, cancel);
        if self.plugin.info.capabilities.fit_needs_data {
            ctx
        } else {
            ctx.declining_data("capabilities.fit_needs_data is false")
        }
    }

    /// Fits the pruner on `zoo` (the train members).
    ///
    /// # Errors
    /// The plugin's error or panic.
    pub fn fit(&mut self, zoo: hyperprune_sdk::ZooRef<'_>, ctx: &HostContext<'_>) -> Result<(), PluginCallError> {
        let name = self.plugin.info.name.clone();
        self.pruner
            .fit(zoo, hyperprune_sdk::context_ref(ctx))
            .into_result()
            .map_err(|error| PluginCallError { plugin: name, error })
    }

    /// The learned state.
    ///
    /// # Errors
    /// The plugin's error.
    pub fn save_state(&self) -> Result<Vec<u8>, PluginCallError> {
        self.pruner
            .save_state()
            .into_result()
            .map(|v| v.to_vec())
            .map_err(|error| PluginCallError { plugin: self.name().to_string(), error })
    }

    /// Restores a learned state.
    ///
    /// # Errors
    /// The plugin's error, with its kind (`InvalidState` for a corrupt or foreign state).
    pub fn load_state(&mut self, state: &[u8]) -> Result<(), PluginError> {
        self.pruner.load_state(state.into()).into_result()
    }

    /// Prunes `model` and checks the outcome ([`Self::accept`]).
    ///
    /// # Errors
    /// The plugin's error or panic, or what is wrong with its outcome, as one message.
    pub fn prune(
        &self,
        model: &Model,
        request: &PruneRequest,
        ctx: &HostContext<'_>,
    ) -> Result<CheckedOutcome, PruneFailure> {
        let outcome = self.prune_unchecked(model, request, ctx)?;
        self.accept(model, &outcome, request)
    }

    /// Calls the plugin's `prune` on a zero-copy view of `model`; the outcome is unchecked.
    ///
    /// # Errors
    /// The plugin's error or panic, as one message.
    pub fn prune_unchecked(
        &self,
        model: &Model,
        request: &PruneRequest,
        ctx: &HostContext<'_>,
    ) -> Result<PruneOutcome, PruneFailure> {
        let handle = hyperprune_sdk::context_ref(ctx);
        model_ref(model, |view| self.pruner.prune(view, request, handle).into_result())
            .map_err(|e| PruneFailure { kind: Some(e.kind), message: plugin_error(self.name(), &e) })
    }

    /// Checks an outcome against `model` and the request before anything counts it: the
    /// layers, lengths and values of its masks, finite new weights, and (unless this
    /// pruner's `sparsity_check` is `report`) the sparsity the request asked for.
    ///
    /// # Errors
    /// What is wrong, naming the pruner and both numbers.
    pub fn accept(
        &self,
        model: &Model,
        outcome: &PruneOutcome,
        request: &PruneRequest,
    ) -> Result<CheckedOutcome, PruneFailure> {
        let invalid = |e: &dyn std::fmt::Display| PruneFailure {
            kind: None,
            message: format!("plugin '{}' returned an invalid outcome: {e}", self.name()),
        };
        let checked = check(model, outcome).map_err(|e| invalid(&e))?;
        if self.sparsity_check == SparsityCheck::Exact {
            let row_lens: Vec<usize> =
                model.prunable().map(|(p, w)| w.len() / p.shape.first().copied().unwrap_or(1).max(1)).collect();
            verify_sparsity(&checked, request, &row_lens).map_err(|e| {
                invalid(&format!(
                    "{e} (a pruner whose sparsity is meant to emerge needs the option {SPARSITY_CHECK_OPTION}=report)"
                ))
            })?;
        }
        Ok(checked)
    }
}

/// Why a `prune` call failed: the plugin's error kind (none when the host rejected the
/// outcome) and the host's one-line message.
#[derive(Debug)]
pub struct PruneFailure {
    /// The plugin's error kind, if the plugin returned an error.
    pub kind: Option<ErrorKind>,
    /// `plugin 'x' failed: ...` and the like.
    pub message: String,
}

impl PruneFailure {
    /// Whether the user's input caused it: options, or a state that does not fit the model
    /// (kinds `InvalidOptions`, `InvalidState`).
    pub fn is_bad_input(&self) -> bool {
        matches!(self.kind, Some(ErrorKind::InvalidOptions | ErrorKind::InvalidState))
    }
}

impl std::fmt::Display for PruneFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PruneFailure {}

/// A bench row keeps the message.
impl From<PruneFailure> for String {
    fn from(failure: PruneFailure) -> String {
        failure.message
    }
}

/// A plugin call other than `prune` (`fit`, `save_state`) failed: the plugin's error, reported
/// as `plugin 'x' failed: ...` or `plugin 'x' panicked: ...` (see [`plugin_error`]).
#[derive(Debug, thiserror::Error)]
#[error("{}", plugin_error(.plugin, .error))]
pub struct PluginCallError {
    /// The plugin's name.
    pub plugin: String,
    /// Its error, with its kind.
    pub error: PluginError,
}

/// What is wrong with the host-level options of a pruner (see [`take_host_options`]); the
/// user's input, always.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostOptionError {
    /// An option given twice (which one was meant is a guess).
    #[error("option '{0}' is given twice; give each option once")]
    GivenTwice(String),
    /// `fit_data` other than `real` or `synthetic` (the value given).
    #[error("option {FIT_DATA_OPTION}: expected real or synthetic, got '{0}'")]
    FitData(String),
    /// `calib_data` other than `real` or `moments` (the value given).
    #[error("option {CALIB_DATA_OPTION}: expected real or moments, got '{0}'")]
    CalibData(String),
    /// `sparsity_check` other than `exact` or `report` (the value given).
    #[error("option {SPARSITY_CHECK_OPTION}: expected exact or report, got '{0}'")]
    SparsityCheck(String),
}

/// Takes the host-level options (`state=FILE`, `sparsity_check=exact|report`,
/// `fit_data=real|synthetic`, `calib_data=real|moments`) out of `options` (`name=value`
/// strings).
///
/// # Errors
/// An option given twice (which one was meant is a guess), or a `sparsity_check` value other
/// than `exact` or `report`.
pub fn take_host_options(options: &[String]) -> Result<(HostOptions, Vec<String>), HostOptionError> {
    if let Some(key) = crate::values::repeated_key(options) {
        return Err(HostOptionError::GivenTwice(key));
    }
    let mut host = HostOptions::default();
    let mut rest = Vec::with_capacity(options.len());
    for option in options {
        match option.split_once('=') {
            Some((name, file)) if name.trim() == STATE_OPTION => host.state = Some(PathBuf::from(file)),
            Some((name, value)) if name.trim() == FIT_DATA_OPTION => {
                let choices = [("real", FitData::Real), ("synthetic", FitData::Synthetic)];
                host.fit_data = choose(value, &choices, HostOptionError::FitData)?;
            }
            Some((name, value)) if name.trim() == CALIB_DATA_OPTION => {
                let choices = [("real", CalibData::Real), ("moments", CalibData::Moments)];
                host.calib_data = choose(value, &choices, HostOptionError::CalibData)?;
            }
            Some((name, value)) if name.trim() == SPARSITY_CHECK_OPTION => {
                let choices = [("exact", SparsityCheck::Exact), ("report", SparsityCheck::Report)];
                host.sparsity_check = choose(value, &choices, HostOptionError::SparsityCheck)?;
            }
            _ => rest.push(option.clone()),
        }
    }
    Ok((host, rest))
}

/// The choice of `choices` that `value` (trimmed) names, or `error` with the value given.
fn choose<T: Copy>(
    value: &str,
    choices: &[(&str, T)],
    error: fn(String) -> HostOptionError,
) -> Result<T, HostOptionError> {
    let value = value.trim();
    choices.iter().find(|(name, _)| *name == value).map(|&(_, c)| c).ok_or_else(|| error(value.to_string()))
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
        Some((n, m)) if n >= 1 && n < m => Ok(Pattern::NM { n, m }),
        _ => Err(bad_input("expected 'unstructured' or N:M with 1 <= N < M (keep N of every M weights, e.g. 2:4)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_options_are_taken_out_and_an_option_given_twice_is_refused() {
        let options: Vec<String> =
            ["steps=3", "state=b.bin", "lr=0.1", "sparsity_check=report", "fit_data=synthetic", "calib_data=moments"]
                .map(String::from)
                .into();
        let (host, rest) = take_host_options(&options).unwrap();
        assert_eq!(host.state, Some(PathBuf::from("b.bin")));
        assert_eq!(host.sparsity_check, SparsityCheck::Report);
        assert_eq!(host.fit_data, FitData::Synthetic);
        assert_eq!(host.calib_data, CalibData::Moments);
        assert_eq!(rest, ["steps=3", "lr=0.1"]);
        assert_eq!(take_host_options(&["statefulness=1".to_string()]).unwrap().0, HostOptions::default());
        let e = take_host_options(&["sparsity_check=loose".to_string()]).unwrap_err();
        assert_eq!(e.to_string(), "option sparsity_check: expected exact or report, got 'loose'");
        let e = take_host_options(&["fit_data=fake".to_string()]).unwrap_err();
        assert_eq!(e.to_string(), "option fit_data: expected real or synthetic, got 'fake'");
        let e = take_host_options(&["calib_data=images".to_string()]).unwrap_err();
        assert_eq!(e.to_string(), "option calib_data: expected real or moments, got 'images'");
        for twice in [["state=a.bin", " state =b.bin"], ["lr=0.1", "lr=0.2"]] {
            let e = take_host_options(&twice.map(String::from)).unwrap_err().to_string();
            assert!(e.contains("is given twice"), "{e}");
        }
    }
}

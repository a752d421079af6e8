//! How a plugin describes itself: name, version, options with defaults and docs,
//! capabilities and runnable examples. Crosses the ABI as JSON, so it can grow freely.

use serde::{Deserialize, Serialize};

/// What a pruner needs from the host and can do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Calls data services (Hessians, gradients, evaluation) at prune time: the host must
    /// provide a dataset. A pruner that leaves it `false` gets a context whose data services
    /// all answer `Unavailable` (the host enforces it), and its bench rows say `data: none`.
    #[serde(default)]
    pub needs_data: bool,
    /// Calls data services while fitting (`fit`), e.g. a distillation loss; says nothing
    /// about prune time.
    #[serde(default)]
    pub fit_needs_data: bool,
    /// Calls gradient services (per-sample gradients, masked loss).
    #[serde(default)]
    pub needs_gradients: bool,
    /// Must be fitted on a zoo (`fit`) before it prunes; supports save/load state.
    #[serde(default)]
    pub learnable: bool,
    /// May return new values for the kept weights.
    #[serde(default)]
    pub updates_weights: bool,
    /// Fits on members of different architectures at once (a mixed zoo); without it the
    /// host refuses to fit on a zoo whose train and val members differ in architecture.
    #[serde(default)]
    pub fits_any_arch: bool,
}

/// The type of an option value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum OptionKind {
    /// A signed integer.
    Int,
    /// A floating-point number.
    Float,
    /// `true` or `false`.
    Bool,
    /// Free text.
    String,
    /// One of a fixed set of strings.
    Choice {
        /// The allowed values.
        values: Vec<String>,
    },
}

/// One option a pruner accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptionSpec {
    /// Name, as in `--opt name=value`.
    pub name: String,
    /// Value type.
    pub kind: OptionKind,
    /// Default value.
    pub default: serde_json::Value,
    /// One or two sentences: what it does, and when to change it.
    pub doc: String,
    /// Acts at prune time only (a learnable pruner's `mask` or `refine`): the host leaves it
    /// out of the options a fitted state is keyed and compared by, so changing it reuses the
    /// state, without a warning. Set with [`OptionSpec::at_prune`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prune_only: bool,
}

impl OptionSpec {
    /// An integer option.
    pub fn int(name: &str, default: i64, doc: &str) -> OptionSpec {
        OptionSpec {
            name: name.into(),
            kind: OptionKind::Int,
            default: default.into(),
            doc: doc.into(),
            prune_only: false,
        }
    }

    /// A float option.
    pub fn float(name: &str, default: f64, doc: &str) -> OptionSpec {
        OptionSpec {
            name: name.into(),
            kind: OptionKind::Float,
            default: default.into(),
            doc: doc.into(),
            prune_only: false,
        }
    }

    /// A boolean option.
    pub fn bool(name: &str, default: bool, doc: &str) -> OptionSpec {
        OptionSpec {
            name: name.into(),
            kind: OptionKind::Bool,
            default: default.into(),
            doc: doc.into(),
            prune_only: false,
        }
    }

    /// A choice among fixed strings.
    pub fn choice(name: &str, values: &[&str], default: &str, doc: &str) -> OptionSpec {
        OptionSpec {
            name: name.into(),
            kind: OptionKind::Choice { values: values.iter().map(|v| v.to_string()).collect() },
            default: default.into(),
            doc: doc.into(),
            prune_only: false,
        }
    }

    /// This option, marked as acting at prune time only (see [`OptionSpec::prune_only`]).
    pub fn at_prune(mut self) -> OptionSpec {
        self.prune_only = true;
        self
    }
}

/// A runnable example the host's tests execute for every plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// What the example shows.
    pub description: String,
    /// Options as `--opt` takes them: `name=value` strings.
    #[serde(default)]
    pub options: Vec<String>,
    /// Requested sparsity.
    pub sparsity: f64,
}

/// Everything the host lists about a pruner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrunerInfo {
    /// Short unique name, e.g. `magnitude`.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// One line.
    pub description: String,
    /// Accepted options.
    #[serde(default)]
    pub options: Vec<OptionSpec>,
    /// What it needs and can do.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Examples, run by the host's tests.
    #[serde(default)]
    pub examples: Vec<Example>,
}

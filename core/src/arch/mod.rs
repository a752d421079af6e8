//! Architectures: the JSON spec, shape inference and the built-in presets.

use std::path::PathBuf;

mod graph;
mod presets;
pub mod resnet;
mod spec;

pub use graph::{Graph, NETWORK_INPUT, Node, Source};
pub use presets::{Preset, preset, presets};
pub use spec::{
    Activation, ArchSpec, FeatureShape, LayerSpec, Link, MAX_ELEMENTS, ParamLayerKind, ParamRole, ParamSpec,
};

/// What can be wrong with an architecture.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// The text is not a valid spec.
    #[error("invalid architecture JSON: {0}")]
    Json(String),
    /// The spec is inconsistent.
    #[error("architecture '{arch}'{}: {message}", layer.map(|l| format!(", layer {l}")).unwrap_or_default())]
    Invalid {
        /// The spec's name.
        arch: String,
        /// The offending layer, when one is at fault.
        layer: Option<usize>,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A spec file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// What is wrong with the spec read from a file.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with its spec.
        source: Box<ArchError>,
    },
    /// No preset has that name.
    #[error("unknown architecture preset '{name}' (known: {known}); pass a preset name or a spec JSON file")]
    UnknownPreset {
        /// The name asked for.
        name: String,
        /// The known names, comma separated.
        known: String,
    },
}

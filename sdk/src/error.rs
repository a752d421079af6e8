//! The error that crosses the ABI.

use abi_stable::StableAbi;
use abi_stable::std_types::RString;

/// Why a plugin call failed.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The method returned an error.
    Failed,
    /// The method panicked; the panic was caught at the ABI boundary.
    Panicked,
    /// The method is not implemented by this plugin (e.g. `fit` on a data-free pruner).
    NotSupported,
    /// A host service is not available in this run.
    Unavailable,
    /// The options were rejected.
    InvalidOptions,
    /// The call was cancelled.
    Cancelled,
}

/// An error returned across the ABI: a kind and a message.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// Lowercase, human-readable, says what was expected.
    pub message: RString,
}

impl PluginError {
    /// A new error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> PluginError {
        PluginError { kind, message: RString::from(message.into()) }
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            ErrorKind::Panicked => write!(f, "panicked: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for PluginError {}

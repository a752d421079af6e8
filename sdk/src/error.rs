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
    /// A saved state is corrupt, or was written by another plugin, version or architecture.
    InvalidState,
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

    /// The method failed ([`ErrorKind::Failed`]).
    pub fn failed(message: impl Into<String>) -> PluginError {
        PluginError::new(ErrorKind::Failed, message)
    }

    /// The method is not implemented by this plugin ([`ErrorKind::NotSupported`]).
    pub fn not_supported(message: impl Into<String>) -> PluginError {
        PluginError::new(ErrorKind::NotSupported, message)
    }

    /// A host service is not available in this run ([`ErrorKind::Unavailable`]).
    pub fn unavailable(message: impl Into<String>) -> PluginError {
        PluginError::new(ErrorKind::Unavailable, message)
    }

    /// The options (or a state written under other options) were rejected
    /// ([`ErrorKind::InvalidOptions`]).
    pub fn invalid_options(message: impl Into<String>) -> PluginError {
        PluginError::new(ErrorKind::InvalidOptions, message)
    }

    /// Whether a host service answered that it is not available in this run.
    pub fn is_unavailable(&self) -> bool {
        self.kind == ErrorKind::Unavailable
    }

    /// The same error with `context: ` put before its message.
    pub fn context(self, context: impl std::fmt::Display) -> PluginError {
        PluginError { kind: self.kind, message: format!("{context}: {}", self.message).into() }
    }
}

/// A plain message is a [`ErrorKind::Failed`] error, so `?` works on `Result<_, String>`.
impl From<String> for PluginError {
    fn from(message: String) -> PluginError {
        PluginError::failed(message)
    }
}

impl From<&str> for PluginError {
    fn from(message: &str) -> PluginError {
        PluginError::failed(message)
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

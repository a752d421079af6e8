//! One loaded plugin: probe, load, instantiate.

use std::ffi::{CStr, c_char};
use std::path::{Path, PathBuf};

use abi_stable::library::lib_header_from_path;
use abi_stable::std_types::RResult;
use hyperprune_sdk::ffi::{SDK_VERSION_SYMBOL, versions_compatible};
use hyperprune_sdk::{PluginError, PrunerBox, PrunerInfo, PrunerModRef, SDK_VERSION};

/// How a [`LoadError`] for a file that is not a hyperprune plugin at all begins.
pub const NOT_A_PLUGIN: &str = "not a hyperprune plugin";

/// How a [`LoadError`] for a file that is not a loadable library begins.
pub const NOT_A_LIBRARY: &str = "not a loadable shared library";

/// Why a file could not be loaded as a plugin. Always one line, naming the file.
#[derive(Debug)]
pub struct LoadError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

/// A plugin whose root module is loaded and whose `info` was read.
#[derive(Clone)]
pub struct Plugin {
    /// The file it came from.
    pub path: PathBuf,
    /// The SDK version it was built against.
    pub sdk_version: String,
    /// What it says about itself.
    pub info: PrunerInfo,
    module: PrunerModRef,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("path", &self.path).field("name", &self.info.name).finish()
    }
}

impl Plugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// A fresh pruner instance with default options.
    ///
    /// # Errors
    /// The plugin's own error (a panic in its constructor included).
    pub fn instantiate(&self) -> Result<PrunerBox, PluginError> {
        (self.module.new())().into_result()
    }
}

/// Probes and loads the plugin at `path`.
///
/// # Errors
/// One-line [`LoadError`]s: not a loadable library, not a hyperprune plugin, built against
/// an incompatible SDK, layout mismatch, or a broken `info`.
pub fn load(path: &Path) -> Result<Plugin, LoadError> {
    let err = |message: String| LoadError { path: path.to_path_buf(), message };
    if !path.is_file() {
        return Err(err("plugin file not found".into()));
    }
    // dlopen searches the system library path for a name without a slash: always pass an
    // absolute path so the file the user named is the file that loads.
    let path = &path.canonicalize().map_err(|e| err(e.to_string()))?;
    let sdk_version = probe_sdk_version(path).map_err(|e| err(e.to_string()))?;
    if !versions_compatible(SDK_VERSION, &sdk_version) {
        return Err(err(format!(
            "plugin was built against hyperprune-sdk {sdk_version}, but this host uses hyperprune-sdk {SDK_VERSION}; rebuild the plugin against {SDK_VERSION}"
        )));
    }
    let header = lib_header_from_path(path).map_err(|e| err(first_line(&e.to_string())))?;
    let module = header.init_root_module::<PrunerModRef>().map_err(|e| err(first_line(&e.to_string())))?;
    let probe = Plugin { path: path.to_path_buf(), sdk_version, info: placeholder_info(), module };
    let pruner = probe.instantiate().map_err(|e| err(format!("could not create the pruner: {e}")))?;
    let info = match pruner.info() {
        RResult::ROk(json) => serde_json::from_str::<PrunerInfo>(json.as_str())
            .map_err(|e| err(format!("plugin info is not valid JSON: {e}")))?,
        RResult::RErr(e) => return Err(err(format!("plugin info failed: {e}"))),
    };
    Ok(Plugin { info, ..probe })
}

fn placeholder_info() -> PrunerInfo {
    PrunerInfo {
        name: String::new(),
        version: String::new(),
        description: String::new(),
        options: vec![],
        capabilities: Default::default(),
        examples: vec![],
    }
}

/// Why a file's SDK version could not be read (the start of its [`LoadError`] message).
#[derive(Debug, thiserror::Error)]
enum SdkVersionError {
    /// The dynamic loader refused the file (its first line).
    #[error("{NOT_A_LIBRARY} ({0})")]
    NotALibrary(String),
    /// A library without the SDK's version symbol.
    #[error("{NOT_A_PLUGIN}: it does not export `hyperprune_sdk_version` (was it built with `export_pruner!`?)")]
    NoVersionSymbol,
    /// The version symbol returned null.
    #[error("{NOT_A_PLUGIN}: `hyperprune_sdk_version` returned null")]
    NullVersion,
}

/// Opens the file with libloading and reads the SDK version symbol.
fn probe_sdk_version(path: &Path) -> Result<String, SdkVersionError> {
    // SAFETY: opening a library runs its initialisers. We only open files the user put in a
    // plugin folder or named with --plugin, i.e. code they chose to run.
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| SdkVersionError::NotALibrary(first_line(&e.to_string())))?;
    // SAFETY: the symbol, when present, is `extern "C" fn() -> *const c_char` as exported by
    // `hyperprune_sdk::export_pruner!`; a file that merely has a symbol of that name with
    // another type is not something we can detect, and is not a plugin anyone would ship.
    let version = unsafe {
        let f = lib
            .get::<unsafe extern "C" fn() -> *const c_char>(SDK_VERSION_SYMBOL)
            .map_err(|_| SdkVersionError::NoVersionSymbol)?;
        let ptr = f();
        if ptr.is_null() {
            return Err(SdkVersionError::NullVersion);
        }
        CStr::from_ptr(ptr).to_string_lossy().into_owned()
    };
    // abi_stable opens the file again by itself; ours can close.
    drop(lib);
    Ok(version)
}

fn first_line(text: &str) -> String {
    text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("unknown error").to_string()
}

impl std::error::Error for LoadError {}

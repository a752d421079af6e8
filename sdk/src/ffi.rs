//! The ABI itself: the FFI trait object, the root module, and the adapter that turns a
//! [`Pruner`] into both, catching every panic at the boundary.
//!
//! Growth points (`last_prefix_field`): new methods go after `load_state` in
//! [`PrunerFfi`], after `checkpoint` in [`crate::Context`], and new fields after `new` in
//! [`PrunerMod`]. Anything else changes the layout and older plugins stop loading (safely:
//! abi_stable refuses them). Growth is one-way: abi_stable loads a plugin whose prefix types
//! have more fields than the host's, never fewer, so a host whose `Context` gained a method
//! (`synaptic_flow`, SDK 0.4; `masked_distill_on_inputs`, SDK 0.5) refuses every plugin built
//! before it. Such an addition is
//! therefore a minor version (0.x), which the version probe refuses in one line.

// `sabi_trait` expands to impls that trip this lint on current compilers.
#![allow(non_local_definitions)]

use std::ffi::CStr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

use abi_stable::library::RootModule;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::prelude::TD_Opaque;
use abi_stable::std_types::{RBox, RResult, RSlice, RStr, RString, RVec};
use abi_stable::{StableAbi, declare_root_module_statics, package_version_strings, sabi_trait};

use crate::context::{ContextRef, Ctx};
use crate::error::{ErrorKind, PluginError};
use crate::model::ModelRef;
use crate::options::Options;
use crate::outcome::PruneOutcome;
use crate::pruner::Pruner;
use crate::request::PruneRequest;
use crate::zoo::ZooRef;

/// The SDK version this crate was built as; plugins export it as a C symbol.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// [`SDK_VERSION`] as a C string, for the probe symbol.
pub const SDK_VERSION_CSTR: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes())
{
    Ok(s) => s,
    Err(_) => panic!("the crate version has no interior nul"),
};

/// Name of the plain C symbol (`extern "C" fn() -> *const c_char`) every plugin exports
/// with the SDK version it was built against. The host reads it with libloading before it
/// lets abi_stable near the file.
pub const SDK_VERSION_SYMBOL: &[u8] = b"hyperprune_sdk_version\0";

/// Whether a plugin built against SDK `plugin` can be loaded by a host on SDK `host`:
/// the same major version, and for 0.x the same minor version too.
pub fn versions_compatible(host: &str, plugin: &str) -> bool {
    let parts =
        |v: &str| -> Vec<u64> { v.split(['.', '-', '+']).take(2).map(|p| p.parse().unwrap_or(u64::MAX)).collect() };
    let (h, p) = (parts(host), parts(plugin));
    match (h.first(), p.first()) {
        (Some(0), Some(0)) => h.get(1).is_some() && h.get(1) == p.get(1),
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The pruner as the host calls it across the ABI.
#[sabi_trait]
pub trait PrunerFfi: Send + Sync {
    /// [`crate::PrunerInfo`] as JSON.
    fn info(&self) -> RResult<RString, PluginError>;

    /// Options as a JSON object.
    fn configure(&mut self, options_json: RStr<'_>) -> RResult<(), PluginError>;

    /// See [`Pruner::prune`].
    fn prune(
        &self,
        model: ModelRef<'_>,
        request: &PruneRequest,
        ctx: ContextRef<'_>,
    ) -> RResult<PruneOutcome, PluginError>;

    /// See [`Pruner::fit`].
    fn fit(&mut self, zoo: ZooRef<'_>, ctx: ContextRef<'_>) -> RResult<(), PluginError>;

    /// See [`Pruner::save_state`].
    fn save_state(&self) -> RResult<RVec<u8>, PluginError>;

    /// See [`Pruner::load_state`].
    #[sabi(last_prefix_field)]
    fn load_state(&mut self, state: RSlice<'_, u8>) -> RResult<(), PluginError>;
}

/// An owned pruner trait object.
pub type PrunerBox = PrunerFfi_TO<'static, RBox<()>>;

/// The root module every plugin exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PrunerModRef)))]
#[sabi(missing_field(panic))]
pub struct PrunerMod {
    /// The SDK version the plugin was built against.
    pub sdk_version: extern "C" fn() -> RStr<'static>,
    /// Creates a fresh pruner with default options.
    #[sabi(last_prefix_field)]
    pub new: extern "C" fn() -> RResult<PrunerBox, PluginError>,
}

impl RootModule for PrunerModRef {
    declare_root_module_statics! {PrunerModRef}
    const BASE_NAME: &'static str = "hyperprune_plugin";
    const NAME: &'static str = "hyperprune_plugin";
    const VERSION_STRINGS: abi_stable::sabi_types::VersionStrings = package_version_strings!();
}

extern "C" fn sdk_version() -> RStr<'static> {
    RStr::from_str(SDK_VERSION)
}

extern "C" fn new_pruner<P: Pruner + Default>() -> RResult<PrunerBox, PluginError> {
    guard(|| Ok(PrunerFfi_TO::from_value(Adapter { inner: P::default() }, TD_Opaque)))
}

/// The root module for pruner type `P`; used by [`crate::export_pruner!`].
pub fn root_module<P: Pruner + Default>() -> PrunerModRef {
    PrunerMod { sdk_version, new: new_pruner::<P> }.leak_into_prefix()
}

/// Guards running now, in any thread: while one runs, the quiet hook swallows panics.
static GUARDS_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Where the last panic swallowed by the quiet hook happened: `file:line`.
static LAST_PANIC_AT: Mutex<Option<String>> = Mutex::new(None);

/// Installs, once, a panic hook that records a panic's location instead of printing it
/// while any [`guard`] runs (the guard reports the panic as one error with that location),
/// and defers to the hook it replaced otherwise. A plugin links its own copy of `std`, so
/// this hook is the plugin's alone: the host's panics print as before.
fn install_quiet_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDS_RUNNING.load(Ordering::SeqCst) == 0 {
                return previous(info);
            }
            let at = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
            *LAST_PANIC_AT.lock().unwrap_or_else(|e| e.into_inner()) = at;
        }));
    });
}

/// Runs `f`, passing its error through and turning a panic into [`ErrorKind::Panicked`]
/// with the panic message and where it happened: one line, no hook output or backtrace.
fn guard<T>(f: impl FnOnce() -> Result<T, PluginError>) -> RResult<T, PluginError> {
    install_quiet_hook();
    GUARDS_RUNNING.fetch_add(1, Ordering::SeqCst);
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDS_RUNNING.fetch_sub(1, Ordering::SeqCst);
    match result {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) => RResult::RErr(e),
        Err(payload) => {
            let mut message = panic_message(payload.as_ref());
            if let Some(at) = LAST_PANIC_AT.lock().unwrap_or_else(|e| e.into_inner()).take() {
                message = format!("{message} (at {at})");
            }
            RResult::RErr(PluginError::new(ErrorKind::Panicked, message))
        }
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

struct Adapter<P> {
    inner: P,
}

impl<P: Pruner> PrunerFfi for Adapter<P> {
    fn info(&self) -> RResult<RString, PluginError> {
        guard(|| serde_json::to_string(&self.inner.info()).map(RString::from).map_err(|e| e.to_string().into()))
    }

    fn configure(&mut self, options_json: RStr<'_>) -> RResult<(), PluginError> {
        let schema = match guard(|| Ok(self.inner.info().options)) {
            RResult::ROk(s) => s,
            RResult::RErr(e) => return RResult::RErr(e),
        };
        let options = match Options::parse(&schema, options_json.as_str()) {
            Ok(o) => o,
            Err(message) => return RResult::RErr(PluginError::new(ErrorKind::InvalidOptions, message)),
        };
        guard(|| self.inner.configure(&options))
    }

    fn prune(
        &self,
        model: ModelRef<'_>,
        request: &PruneRequest,
        ctx: ContextRef<'_>,
    ) -> RResult<PruneOutcome, PluginError> {
        guard(|| self.inner.prune(&model, request, &Ctx::new(ctx)))
    }

    fn fit(&mut self, zoo: ZooRef<'_>, ctx: ContextRef<'_>) -> RResult<(), PluginError> {
        guard(|| self.inner.fit(&zoo, &Ctx::new(ctx)))
    }

    fn save_state(&self) -> RResult<RVec<u8>, PluginError> {
        guard(|| self.inner.save_state().map(RVec::from))
    }

    fn load_state(&mut self, state: RSlice<'_, u8>) -> RResult<(), PluginError> {
        guard(|| self.inner.load_state(state.as_slice()))
    }
}

/// Exports a [`Pruner`] (which must implement `Default`) from a cdylib: the root module
/// and the plain C symbol `hyperprune_sdk_version`. The plugin crate must list
/// `abi_stable` as a direct dependency (the root-module attribute names it).
#[macro_export]
macro_rules! export_pruner {
    ($pruner:ty) => {
        /// The SDK version this plugin was built against (probed by the host).
        #[unsafe(no_mangle)]
        pub extern "C" fn hyperprune_sdk_version() -> *const ::std::ffi::c_char {
            $crate::ffi::SDK_VERSION_CSTR.as_ptr()
        }

        /// The abi_stable root module of this plugin.
        #[::abi_stable::export_root_module]
        pub fn hyperprune_root_module() -> $crate::ffi::PrunerModRef {
            $crate::ffi::root_module::<$pruner>()
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_compatibility_rules() {
        assert!(versions_compatible("0.1.0", "0.1.7"));
        assert!(!versions_compatible("0.1.0", "0.2.0"));
        assert!(!versions_compatible("0.2.0", "0.1.0"));
        assert!(!versions_compatible("0.1.0", "0.0.1"));
        assert!(versions_compatible("1.2.0", "1.0.0"));
        assert!(!versions_compatible("1.2.0", "2.0.0"));
        assert!(!versions_compatible("0.1.0", "garbage"));
    }

    #[test]
    fn guard_maps_errors_and_panics() {
        let e = guard::<()>(|| Err("bad".into())).unwrap_err();
        assert_eq!((e.kind, e.message.as_str()), (ErrorKind::Failed, "bad"));
        let e = guard::<()>(|| panic!("boom {}", 42)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Panicked);
        assert!(e.message.starts_with("boom 42 (at ") && e.message.contains("ffi.rs:"), "{}", e.message);
        let e = guard::<()>(|| Err(PluginError::not_supported("no"))).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotSupported);
    }
}

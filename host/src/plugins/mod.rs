//! Plugin discovery and loading.
//!
//! Every candidate file is first opened with libloading and probed for the plain C symbol
//! `hyperprune_sdk_version`: a file that is not a library, not a plugin, or built against
//! an incompatible SDK is refused with one line. Only then does abi_stable load it, with
//! `lib_header_from_path(..).init_root_module()` (never `load_from_file`, which keeps one
//! module per type and would hand back the first plugin for every path).

mod discovery;
mod loaded;

pub use discovery::{Registry, discover, discover_checked};
pub use loaded::{Plugin, load};

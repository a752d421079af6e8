//! A fitted state file: the host's header (`state_file::decode_state`, compiled here from the
//! host's source file) and then the hypernetwork plugin's `load_state` on the payload, as
//! `prune --opt state=FILE` reads it. The plugin's errors carry no path (the host adds it),
//! so for the payload the property is: no panic.
#![no_main]
#![allow(dead_code)]

mod common;

#[path = "../../host/src/state_file.rs"]
mod state_file;

use hyperprune_plugin_hypernet::Hypernet;
use hyperprune_sdk::Pruner;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::write("hypernet.state", data);
    let decoded = state_file::decode_state(&path, data);
    if let Ok(file) = &decoded {
        let _ = Hypernet::default().load_state(&file.payload);
    }
    common::assert_names_file(decoded, &path);
});

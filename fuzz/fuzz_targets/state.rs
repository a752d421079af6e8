//! A fitted state file: the host's header (the host library's `state_file::decode_state`)
//! and then the hypernetwork plugin's `load_state` on the payload, as `prune --opt
//! state=FILE` reads it. The plugin's errors carry no path (the host adds it), so for the
//! payload the property is: no panic.
#![no_main]

mod common;

use hyperprune_host::state_file::decode_state;
use hyperprune_plugin_hypernet::Hypernet;
use hyperprune_sdk::Pruner;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::write("hypernet.state", data);
    let decoded = decode_state(&path, data);
    if let Ok(file) = &decoded {
        let _ = Hypernet::default().load_state(&file.payload);
    }
    common::assert_names_file(decoded, &path);
});

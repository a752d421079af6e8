//! `ArchSpec::read` on arbitrary bytes; an accepted spec must also give its tensors.
#![no_main]

mod common;

use hyperprune_core::ArchSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::write("spec.json", data);
    let read = ArchSpec::read(&path);
    if let Ok(spec) = &read {
        spec.params().expect("a spec that reads has valid tensors");
    }
    common::assert_names_file(read, &path);
});

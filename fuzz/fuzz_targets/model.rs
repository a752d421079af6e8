//! `Model::load` on arbitrary bytes: the architecture from the file's metadata.
#![no_main]

mod common;

use hyperprune_core::Model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::write("model.safetensors", data);
    common::assert_names_file(Model::load(&path, None), &path);
});

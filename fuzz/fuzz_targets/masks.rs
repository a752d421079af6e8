//! `masks::read_masks` on arbitrary bytes, for a `cnn-digits` model.
#![no_main]

mod common;

use std::sync::OnceLock;

use hyperprune_core::masks::read_masks;
use hyperprune_core::{Model, preset};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static MODEL: OnceLock<Model> = OnceLock::new();
    let model = MODEL.get_or_init(|| Model::zeros(preset("cnn-digits").expect("a preset")).expect("a valid preset"));
    let path = common::write("m.masks.safetensors", data);
    common::assert_names_file(read_masks(&path, model), &path);
});

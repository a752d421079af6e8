//! `Zoo::open` on an arbitrary `zoo.json`.
#![no_main]

mod common;

use hyperprune_core::zoo::{ZOO_FILE, Zoo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::write(ZOO_FILE, data);
    common::assert_names_file(Zoo::open(common::scratch()), &path);
});

//! `results::read_rows` (which cuts a torn last line, then `read_results`) on an arbitrary
//! `results.jsonl`: the host library's own reader.
#![no_main]

mod common;

use hyperprune_host::results::{RESULTS_FILE, read_rows};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::write(RESULTS_FILE, data);
    common::assert_names_file(read_rows(&path).map_err(|e| format!("{e:#}")), &path);
});

//! `results::read_rows` (which cuts a torn last line, then `read_results`) on an arbitrary
//! `results.jsonl`: the host's own reader, compiled here from its source files (the host is a
//! binary crate), with the module layout it expects.
#![no_main]
#![allow(dead_code)]

mod common;

#[path = "../../host/src/failure.rs"]
mod failure;
#[path = "../../host/src/results/reader.rs"]
mod reader;
#[path = "../../host/src/results/row.rs"]
mod row;

use libfuzzer_sys::fuzz_target;
// What `reader` takes from its parent module in the host (`host/src/results/mod.rs`).
use row::ResultRow;
const RESULTS_FILE: &str = "results.jsonl";

fuzz_target!(|data: &[u8]| {
    let path = common::write(RESULTS_FILE, data);
    common::assert_names_file(reader::read_rows(&path).map_err(|e| format!("{e:#}")), &path);
});

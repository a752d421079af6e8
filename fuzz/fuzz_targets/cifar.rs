//! The `cifar10` source on a folder of six batch files, one of them arbitrary: the first
//! input byte picks which, the rest is its content.
#![no_main]

mod common;

use hyperprune_core::dataset::{DataOptions, load};
use libfuzzer_sys::fuzz_target;

const BATCHES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];

/// Bytes of one record: a label byte, then a 3 × 32 × 32 image.
const RECORD_LEN: usize = 1 + 3 * 32 * 32;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, content)) = data.split_first() else {
        return;
    };
    let which = usize::from(choice) % BATCHES.len();
    let mut record = vec![3u8; RECORD_LEN];
    record[0] = 1;
    for (i, name) in BATCHES.iter().enumerate() {
        common::write(name, if i == which { content } else { &record });
    }
    let options = DataOptions { data_dir: Some(common::scratch().to_path_buf()) };
    common::assert_names_file(load("cifar10", &options), &common::scratch().join(BATCHES[which]));
});

//! The IDX sources (`idx` and `mnist`) on a folder of four files, one of them arbitrary: the
//! first input byte picks which file and which source, the rest is its content.
#![no_main]

mod common;

use hyperprune_core::dataset::{DataOptions, load};
use libfuzzer_sys::fuzz_target;

const FILE_NAMES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// An IDX file: the magic number, the dimensions, then `data`.
fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    dims.iter().for_each(|d| out.extend_from_slice(&d.to_be_bytes()));
    out.extend_from_slice(data);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, content)) = data.split_first() else {
        return;
    };
    let valid = [
        idx(0x803, &[2, 28, 28], &[7; 2 * 784]),
        idx(0x801, &[2], &[0, 1]),
        idx(0x803, &[1, 28, 28], &[9; 784]),
        idx(0x801, &[1], &[2]),
    ];
    let which = usize::from(choice % 4);
    for (i, (name, bytes)) in FILE_NAMES.iter().zip(&valid).enumerate() {
        common::write(name, if i == which { content } else { bytes });
    }
    let source = if choice & 4 == 0 { "idx" } else { "mnist" };
    let options = DataOptions { data_dir: Some(common::scratch().to_path_buf()) };
    common::assert_names_file(load(source, &options), &common::scratch().join(FILE_NAMES[which]));
});

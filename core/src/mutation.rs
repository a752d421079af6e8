//! Seeded mutations of valid files, for the readers' property tests (test builds only).
//!
//! Every reader in this crate takes a path and must, for any bytes at that path, either
//! return a value or an error whose message names the path; it must never panic. The
//! property tests build a small valid file, apply a few random mutations per case (bit
//! flips, byte overwrites, truncation, insertion, duplication and deletion of chunks), and
//! run the reader on each mutant. A fuzzer (`fuzz/`) explores further; these run in every
//! `cargo test`, deterministically.

use std::fmt::Display;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Byte strings that make parsers take unusual paths: huge and negative numbers, JSON
/// punctuation, nulls, all-ones words.
const TOKENS: [&[u8]; 14] = [
    b"0",
    b"-1",
    b"18446744073709551615",
    b"4294967296",
    b"1e308",
    b"null",
    b"\"",
    b"{",
    b"]",
    b",",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x00",
    b"\x7f\xff\xff\xff",
    b"\xef\xbb\xbf",
];

/// Numbers that sizes overflow or wrap on: zero, one, 2^31, 2^32, 2^40, 2^63 and 2^64 − 1.
const NUMBERS: [&[u8]; 7] =
    [b"0", b"1", b"2147483648", b"4294967296", b"1099511627776", b"9223372036854775808", b"18446744073709551615"];

/// Mutations are aimed at the first this many bytes half of the time: headers live there,
/// and a flip in the middle of pixel data tests little.
const HEADER_BYTES: usize = 256;

/// A mutant of `valid`: one to three random mutations.
pub(crate) fn mutate(valid: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    for _ in 0..rng.random_range(1..=3) {
        let at = position(&bytes, rng);
        match rng.random_range(0..8) {
            0 => {
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= 1 << rng.random_range(0..8);
                }
            }
            1 => {
                if let Some(b) = bytes.get_mut(at) {
                    *b = rng.random();
                }
            }
            2 => bytes.truncate(at),
            3 => {
                let extra: Vec<u8> = (0..rng.random_range(1..=8)).map(|_| rng.random()).collect();
                bytes.splice(at..at, extra);
            }
            4 => {
                let token = TOKENS[rng.random_range(0..TOKENS.len())];
                let end = (at + rng.random_range(0..=token.len())).min(bytes.len());
                bytes.splice(at..end, token.iter().copied());
            }
            5 => {
                let chunk = chunk(&bytes, rng);
                let copy = bytes[chunk].to_vec();
                let to = position(&bytes, rng);
                bytes.splice(to..to, copy);
            }
            6 => {
                let chunk = chunk(&bytes, rng);
                bytes.drain(chunk);
            }
            _ => {
                // A number in a text format (a size, a count, a padding) becomes a huge one.
                if let Some(run) = digit_run(&bytes, rng) {
                    bytes.splice(run, NUMBERS[rng.random_range(0..NUMBERS.len())].iter().copied());
                }
            }
        }
    }
    bytes
}

/// A position in `0..=bytes.len()`, in the header half of the time.
fn position(bytes: &[u8], rng: &mut ChaCha8Rng) -> usize {
    let end = if rng.random_bool(0.5) { bytes.len().min(HEADER_BYTES) } else { bytes.len() };
    rng.random_range(0..=end)
}

/// A random maximal run of ASCII digits in `bytes`, if there is one.
fn digit_run(bytes: &[u8], rng: &mut ChaCha8Rng) -> Option<std::ops::Range<usize>> {
    let starts: Vec<usize> =
        (0..bytes.len()).filter(|&i| bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_digit())).collect();
    let start = *starts.get(rng.random_range(0..starts.len().max(1)))?;
    let len = bytes[start..].iter().take_while(|b| b.is_ascii_digit()).count();
    Some(start..start + len)
}

/// A range of up to 64 bytes inside `bytes`.
fn chunk(bytes: &[u8], rng: &mut ChaCha8Rng) -> std::ops::Range<usize> {
    let start = position(bytes, rng);
    let len = rng.random_range(0..=64).min(bytes.len() - start);
    start..start + len
}

/// What a property run saw: how many mutants the reader accepted and refused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Mutants read successfully (a mutation can leave a file valid).
    pub accepted: usize,
    /// Mutants refused with an error naming the file.
    pub refused: usize,
}

/// Runs `read(path)` on `cases` mutants of `valid` written to `path`, and checks that it
/// never panics and that every error names `path`. `seed` makes the run repeatable: a
/// failure names the seed and the case, and shows the mutant when it is small.
///
/// # Panics
/// On the first case that panics or whose error does not name `path`.
pub(crate) fn check_reader<T, E: Display>(
    name: &str,
    valid: &[u8],
    path: &Path,
    cases: usize,
    seed: u64,
    read: impl Fn(&Path) -> Result<T, E>,
) -> Tally {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let shown = path.display().to_string();
    let mut tally = Tally::default();
    let shown_bytes = |bytes: &[u8]| {
        if bytes.len() <= 1024 { format!("\nmutant: {bytes:?}") } else { format!(" ({} bytes)", bytes.len()) }
    };
    for case in 0..cases {
        let bytes = mutate(valid, &mut rng);
        std::fs::write(path, &bytes).expect("write the mutant");
        match catch_unwind(AssertUnwindSafe(|| read(path).map_err(|e| e.to_string()))) {
            Ok(Ok(_)) => tally.accepted += 1,
            Ok(Err(message)) if message.contains(&shown) => tally.refused += 1,
            Ok(Err(message)) => {
                panic!(
                    "{name}, seed {seed}, case {case}: the error does not name {shown}: {message}{}",
                    shown_bytes(&bytes)
                )
            }
            Err(_) => panic!("{name}, seed {seed}, case {case}: the reader panicked{}", shown_bytes(&bytes)),
        }
    }
    println!(
        "{name}: {cases} mutants, {} accepted, {} refused naming the file, 0 panics",
        tally.accepted, tally.refused
    );
    tally
}

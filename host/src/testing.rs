//! Seeded mutations of valid files for the host's reader property tests (test builds only;
//! core's `mutation` module does the same for its readers).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `cases` mutants of `valid`, one to three mutations each (bit flip, byte overwrite,
/// truncation, insertion of a token, deletion or duplication of a chunk), deterministic in
/// `seed`.
pub fn mutants(valid: &[u8], cases: usize, seed: u64) -> Vec<Vec<u8>> {
    const TOKENS: [&[u8]; 9] =
        [b"0", b"-1", b"18446744073709551615", b"1e308", b"null", b"\"", b"{", b"\n", b"\xff\xfe"];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..cases)
        .map(|_| {
            let mut bytes = valid.to_vec();
            for _ in 0..rng.random_range(1..=3) {
                let at = if bytes.is_empty() { 0 } else { rng.random_range(0..bytes.len()) };
                match rng.random_range(0..6) {
                    0 if !bytes.is_empty() => bytes[at] ^= 1 << rng.random_range(0..8),
                    1 if !bytes.is_empty() => bytes[at] = rng.random(),
                    2 => bytes.truncate(at),
                    3 => {
                        let token = TOKENS[rng.random_range(0..TOKENS.len())];
                        bytes.splice(at..at, token.iter().copied());
                    }
                    4 => {
                        let end = (at + rng.random_range(1..64)).min(bytes.len());
                        bytes.drain(at..end);
                    }
                    _ => {
                        let end = (at + rng.random_range(1..64)).min(bytes.len());
                        let chunk = bytes[at..end].to_vec();
                        bytes.splice(at..at, chunk);
                    }
                }
            }
            bytes
        })
        .collect()
}

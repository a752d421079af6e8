//! Synthetic samples for the CPU engine's tests: random images and labels, deterministic in
//! a seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use hyperprune_core::dataset::Samples;

/// `n` images of `shape` with pixels uniform in `[-1, 1)` and labels uniform in
/// `0..classes`, deterministic in `seed`: enough to time a network without a dataset.
pub fn random_samples(shape: [usize; 3], n: usize, classes: usize, seed: u64) -> Samples {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let images = (0..n * shape.iter().product::<usize>()).map(|_| rng.random_range(-1.0..1.0)).collect();
    let labels = (0..n).map(|_| rng.random_range(0..classes as u32)).collect();
    Samples { shape, images, labels }
}

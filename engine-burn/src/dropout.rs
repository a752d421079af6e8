//! Dropout masks drawn from the member's seed on the host.
//!
//! burn's own dropout draws from one process-wide backend RNG, which cannot give each zoo
//! member its own reproducible stream; drawing here makes equal seeds give equal masks on
//! every backend.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The ChaCha stream reserved for dropout (stream 0 shuffles the samples).
const DROPOUT_STREAM: u64 = 1;

/// A seeded source of inverted-dropout masks.
#[derive(Debug, Clone)]
pub(super) struct DropoutMasks {
    rng: ChaCha8Rng,
}

impl DropoutMasks {
    /// Masks for the member trained with `seed`.
    pub fn new(seed: u64) -> DropoutMasks {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(DROPOUT_STREAM);
        DropoutMasks { rng }
    }

    /// `len` factors: `0` with probability `p`, else `1 / (1 - p)`, so activations keep
    /// their expected value.
    pub fn draw(&mut self, len: usize, p: f32) -> Vec<f32> {
        let keep = 1.0 / (1.0 - p);
        (0..len).map(|_| if self.rng.random::<f32>() < p { 0.0 } else { keep }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_rate_and_scale_follow_p_and_the_seed() {
        let a = DropoutMasks::new(4).draw(20_000, 0.25);
        assert_eq!(a, DropoutMasks::new(4).draw(20_000, 0.25));
        assert_ne!(a, DropoutMasks::new(5).draw(20_000, 0.25));
        let dropped = a.iter().filter(|&&x| x == 0.0).count() as f64 / a.len() as f64;
        // Binomial std at n = 20k, p = .25 is 0.003; 0.015 is five of them.
        assert!((dropped - 0.25).abs() < 0.015, "{dropped}");
        assert!(a.iter().all(|&x| x == 0.0 || (x - 4.0 / 3.0).abs() < 1e-6));
    }
}

//! Where the data services' samples come from: the dataset's train split, cut once into
//! calibration samples and a held-out val slice.
//!
//! The cut is a seeded shuffle with a fixed seed ([`VAL_SLICE_SEED`]), so every run on the
//! same dataset sees the same val slice, whatever the bench or request seed: a learned
//! pruner that chooses settings on `evaluate(Val, ..)` never chooses them on samples it
//! calibrated on. The dataset's test split is not part of it; it is the host's alone.

use hyperprune_core::dataset::Samples;
use hyperprune_sdk::rng::SplitMix64;

/// Seed of the shuffle that cuts the val slice off the train split. Fixed: changing it
/// changes every calibration subset and every val number.
pub const VAL_SLICE_SEED: u64 = 0x5641_4C5F_534C_4943;

/// The train split as the data services see it: calibration samples (90%) and the val
/// slice (10%, at least 1), as indices into the train split.
#[derive(Debug, Clone)]
pub struct TrainSplit<'a> {
    train: &'a Samples,
    calibration: Vec<usize>,
    val: Vec<usize>,
}

impl<'a> TrainSplit<'a> {
    /// Cuts `train`: a shuffle seeded with [`VAL_SLICE_SEED`]; its first `max(1, n / 10)`
    /// indices are the val slice, the rest the calibration samples. A split of one sample
    /// (or none) has no val slice.
    pub fn new(train: &'a Samples) -> TrainSplit<'a> {
        let n = train.len();
        let mut order = shuffled(n, VAL_SLICE_SEED);
        let val_len = (n / 10).max(1).min(n.saturating_sub(1));
        let calibration = order.split_off(val_len);
        TrainSplit { train, calibration, val: order }
    }

    /// Number of calibration samples.
    pub fn calibration_len(&self) -> usize {
        self.calibration.len()
    }

    /// Number of samples in the val slice.
    pub fn val_len(&self) -> usize {
        self.val.len()
    }

    /// `n` calibration samples drawn without replacement by a shuffle seeded with `seed`
    /// (all when `n` is 0 or larger than the calibration part). Equal seeds give equal
    /// subsets; no val sample is ever drawn.
    pub fn calibration(&self, n: usize, seed: u64) -> Samples {
        let total = self.calibration.len();
        let n = if n == 0 { total } else { n.min(total) };
        let order = partial_shuffle(total, n, seed ^ 0xC0FF_EE00_D1CE_5EED);
        let picked: Vec<usize> = order.iter().map(|&i| self.calibration[i]).collect();
        self.train.subset(&picked)
    }

    /// The first `n` samples of the val slice (0 = all of it).
    pub fn val(&self, n: usize) -> Samples {
        let n = if n == 0 { self.val.len() } else { n.min(self.val.len()) };
        self.train.subset(&self.val[..n])
    }
}

/// `0..n` in a seeded random order.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    partial_shuffle(n, n, seed)
}

/// The first `k` entries of a seeded Fisher–Yates shuffle of `0..n`.
fn partial_shuffle(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed);
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..k.min(n) {
        let j = i + (rng.next_u64() % (n - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(k);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` one-pixel samples whose pixel is their index, so a subset names its indices.
    fn numbered(n: usize) -> Samples {
        Samples { shape: [1, 1, 1], images: (0..n).map(|i| i as f32).collect(), labels: vec![0; n] }
    }

    fn ids(s: &Samples) -> Vec<usize> {
        s.images.iter().map(|&x| x as usize).collect()
    }

    #[test]
    fn the_val_slice_is_a_tenth_fixed_and_disjoint_from_every_calibration_draw() {
        let train = numbered(1347);
        let split = TrainSplit::new(&train);
        assert_eq!((split.val_len(), split.calibration_len()), (134, 1213));
        let val = ids(&split.val(0));
        assert_eq!(val, ids(&TrainSplit::new(&train).val(0)), "the cut does not depend on any run seed");
        assert_eq!(ids(&split.val(10)), val[..10]);
        for seed in [0, 1, 99] {
            let calib = ids(&split.calibration(0, seed));
            assert_eq!(calib.len(), 1213);
            assert!(calib.iter().all(|i| !val.contains(i)), "seed {seed}: a val sample was drawn");
        }
        assert_eq!(ids(&split.calibration(64, 3)), ids(&split.calibration(64, 3)));
        assert_ne!(ids(&split.calibration(64, 3)), ids(&split.calibration(64, 4)));
    }

    #[test]
    fn tiny_splits_keep_at_least_one_val_sample_when_they_can() {
        let (two, one, none) = (numbered(2), numbered(1), numbered(0));
        assert_eq!((TrainSplit::new(&two).val_len(), TrainSplit::new(&two).calibration_len()), (1, 1));
        assert_eq!((TrainSplit::new(&one).val_len(), TrainSplit::new(&one).calibration_len()), (0, 1));
        assert_eq!(TrainSplit::new(&none).calibration(5, 0).len(), 0);
    }
}

//! Where the data services' samples come from: the dataset's train split, cut once into
//! calibration samples and a held-out val slice.
//!
//! The cut is a seeded shuffle with a fixed seed ([`VAL_SLICE_SEED`]), so every run on the
//! same dataset sees the same val slice, whatever the bench or request seed: a learned
//! pruner that chooses settings on `evaluate(Val, ..)` never chooses them on samples it
//! calibrated on. The dataset's test split is not part of it; it is the host's alone.

use std::sync::Arc;

use hyperprune_core::dataset::Samples;
use hyperprune_sdk::gaussian::covariance_factor;
use hyperprune_sdk::rng::SplitMix64;

/// Seed of the shuffle that cuts the val slice off the train split. Fixed: changing it
/// changes every calibration subset and every val number.
pub const VAL_SLICE_SEED: u64 = 0x5641_4C5F_534C_4943;

/// Calibration samples whose moments [`TrainSplit::moment_matched`] takes.
pub const MOMENT_SAMPLES: usize = 10_000;

/// Gaussian inputs [`TrainSplit::moment_matched`] draws.
pub const MOMENT_INPUTS: usize = 8_192;

/// The train split as the data services see it: calibration samples (90%) and the val
/// slice (10%, at least 1), as indices into the train split.
#[derive(Debug, Clone)]
pub struct TrainSplit<'a> {
    train: Source<'a>,
    calibration: Vec<usize>,
    val: Vec<usize>,
    synthetic: bool,
}

/// The samples a split indexes: borrowed from the dataset, or its own (moment-matched
/// inputs a pruner keeps for its calls).
#[derive(Debug, Clone)]
enum Source<'a> {
    Borrowed(&'a Samples),
    Owned(Arc<Samples>),
}

impl Source<'_> {
    fn samples(&self) -> &Samples {
        match self {
            Source::Borrowed(s) => s,
            Source::Owned(s) => s,
        }
    }
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
        TrainSplit { train: Source::Borrowed(train), calibration, val: order, synthetic: false }
    }

    /// A split of synthetic inputs (see [`synthetic`]): all of them calibration samples, no
    /// val slice, and evaluation unavailable (their labels mean nothing).
    pub fn synthetic(inputs: &'a Samples) -> TrainSplit<'a> {
        TrainSplit {
            train: Source::Borrowed(inputs),
            calibration: (0..inputs.len()).collect(),
            val: Vec::new(),
            synthetic: true,
        }
    }

    /// A synthetic split of [`MOMENT_INPUTS`] Gaussian inputs with the pixel mean and
    /// covariance of [`MOMENT_SAMPLES`] of this split's calibration samples (see
    /// [`moment_matched`]); like [`TrainSplit::synthetic`], no val slice and no labels.
    pub fn moment_matched(&self) -> TrainSplit<'static> {
        let like = self.calibration(MOMENT_SAMPLES, MOMENT_SEED);
        let inputs = moment_matched(&like, MOMENT_INPUTS, MOMENT_SEED);
        let calibration = (0..inputs.len()).collect();
        TrainSplit { train: Source::Owned(Arc::new(inputs)), calibration, val: Vec::new(), synthetic: true }
    }

    /// Whether this split serves synthetic inputs (`fit_data=synthetic`).
    pub fn is_synthetic(&self) -> bool {
        self.synthetic
    }

    /// `n` synthetic inputs shaped like this split's images (see [`synthetic`]).
    pub fn synthetic_inputs(&self, n: usize, seed: u64) -> Samples {
        synthetic(self.train.samples(), n, seed)
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
        self.train.samples().subset(&picked)
    }

    /// The first `n` samples of the val slice (0 = all of it).
    pub fn val(&self, n: usize) -> Samples {
        let n = if n == 0 { self.val.len() } else { n.min(self.val.len()) };
        self.train.samples().subset(&self.val[..n])
    }
}

/// `n` inputs with no image in them, for `fit_data=synthetic`: per image and channel, a
/// field of standard Gaussian noise smoothed by a 3×3 box filter (neighbouring pixels
/// correlate, as in strokes), then standardised and scaled to that channel's pixel mean and
/// standard deviation over `like`'s images. Those two numbers per channel (what a
/// normalisation layer holds) are all that is taken from the data. Labels are 0.
pub fn synthetic(like: &Samples, n: usize, seed: u64) -> Samples {
    let [c, h, w] = like.shape;
    let plane = h * w;
    let stats: Vec<(f64, f64)> = (0..c)
        .map(|ch| {
            let values = like.images.chunks_exact(c * plane).flat_map(|img| &img[ch * plane..(ch + 1) * plane]);
            let (mut sum, mut sq, mut count) = (0.0f64, 0.0f64, 0usize);
            for &v in values {
                sum += v as f64;
                sq += (v as f64) * (v as f64);
                count += 1;
            }
            let mean = sum / count.max(1) as f64;
            (mean, (sq / count.max(1) as f64 - mean * mean).max(0.0).sqrt())
        })
        .collect();
    let mut rng = SplitMix64::new(seed ^ 0x5359_4E54_4845_5449);
    let mut gaussian = || {
        // Box–Muller.
        let (u, v) = (rng.next_f64().max(f64::MIN_POSITIVE), rng.next_f64());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    };
    let mut images = Vec::with_capacity(n * c * plane);
    let mut noise = vec![0f64; plane];
    let mut field = vec![0f64; plane];
    for _ in 0..n {
        for &(mean, sd) in &stats {
            noise.iter_mut().for_each(|x| *x = gaussian());
            for y in 0..h {
                for x in 0..w {
                    let (mut sum, mut count) = (0.0, 0.0);
                    for yy in y.saturating_sub(1)..(y + 2).min(h) {
                        for xx in x.saturating_sub(1)..(x + 2).min(w) {
                            sum += noise[yy * w + xx];
                            count += 1.0;
                        }
                    }
                    field[y * w + x] = sum / count;
                }
            }
            let m = field.iter().sum::<f64>() / plane as f64;
            let s = (field.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / plane as f64).sqrt().max(1e-12);
            images.extend(field.iter().map(|v| (mean + sd * (v - m) / s) as f32));
        }
    }
    Samples { shape: like.shape, images, labels: vec![0; n] }
}

/// Seed of the calibration draw and of the Gaussian inputs of [`TrainSplit::moment_matched`].
const MOMENT_SEED: u64 = 0x4D4F_4D45_4E54_5321;

/// `n` Gaussian inputs with the mean and covariance of `like`'s flattened images (over all
/// their pixels and channels together), clipped to the range of `like`'s values; labels 0.
/// The covariance is factored with a jitter of 1e-6 of its mean variance on the diagonal (a
/// pixel that never changes, such as a border, stays at its mean). The products run in
/// blocks of [`BLOCK`] images on the `gemm` crate over the available cores: 10,000 images in
/// and 8,192 out take about 0.5 s for 28×28 images and 8 s for 3×32×32 ones on two cores.
pub fn moment_matched(like: &Samples, n: usize, seed: u64) -> Samples {
    let d = like.image_len();
    let m = like.len();
    let mut mean = vec![0f64; d];
    let mut cov = vec![0f64; d * d];
    for (b, block) in like.images[..m * d].chunks(BLOCK * d).enumerate() {
        let x: Vec<f64> = block.iter().map(|&v| v as f64).collect();
        for image in x.chunks_exact(d) {
            mean.iter_mut().zip(image).for_each(|(s, &v)| *s += v);
        }
        // XᵀX, summed block by block.
        product(x.len() / d, d, (&x, 1, d), (&x, d, 1), &mut cov, b > 0);
    }
    let scale = 1.0 / m.max(1) as f64;
    mean.iter_mut().for_each(|s| *s *= scale);
    for i in 0..d {
        for j in 0..d {
            cov[i * d + j] = cov[i * d + j] * scale - mean[i] * mean[j];
        }
    }
    let factor = covariance_factor(&mut cov, d);
    let (lo, hi) = like.images.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let mut rng = SplitMix64::new(seed ^ 0x4741_5553_5349_414E);
    let mut images = Vec::with_capacity(n * d);
    let mut draws = vec![0f64; BLOCK * d];
    for first in (0..n).step_by(BLOCK) {
        let rows = BLOCK.min(n - first);
        let z: Vec<f64> = (0..rows * d).map(|_| rng.next_normal()).collect();
        // Each input is mean + L·z: the rows of Z·Lᵀ.
        let draws = &mut draws[..rows * d];
        product(d, d, (&z, d, 1), (factor, 1, d), draws, false);
        for row in draws.chunks_exact(d) {
            images.extend(row.iter().zip(&mean).map(|(x, m)| ((x + m) as f32).clamp(lo, hi)));
        }
    }
    Samples { shape: like.shape, images, labels: vec![0; n] }
}

/// Images a block of [`moment_matched`]'s products holds.
const BLOCK: usize = 512;

/// `out (+)= A·B` (added to `out` when `accumulate`) for `A` (`out.len() / cols × inner`) and
/// `B` (`inner × cols`), each given as a slice with its row and column strides, `out`
/// row-major; on the `gemm` crate over the available cores.
///
/// # Panics
/// When a stride addresses past its slice.
fn product(
    inner: usize,
    cols: usize,
    (a, a_rs, a_cs): (&[f64], usize, usize),
    (b, b_rs, b_cs): (&[f64], usize, usize),
    out: &mut [f64],
    accumulate: bool,
) {
    let rows = out.len() / cols.max(1);
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows.max(1) - 1) * rs + (cols.max(1) - 1) * cs;
    assert!(
        rows * cols == out.len() && last(rows, inner, a_rs, a_cs) < a.len() && last(inner, cols, b_rs, b_cs) < b.len()
    );
    let threads = hyperprune_sdk::available_threads();
    // SAFETY: every element the strides address lies inside its slice (asserted above), and
    // `out` is rows × cols row-major.
    unsafe {
        gemm::gemm(
            rows,
            cols,
            inner,
            out.as_mut_ptr(),
            1,
            cols as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None },
        )
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
    fn synthetic_inputs_match_the_channel_statistics_and_contain_no_image() {
        let like = Samples {
            shape: [2, 4, 4],
            images: (0..3 * 32).map(|i| if i % 32 < 16 { (i % 5) as f32 } else { -1.0 + (i % 3) as f32 }).collect(),
            labels: vec![1, 2, 3],
        };
        let fake = synthetic(&like, 200, 9);
        assert_eq!((fake.shape, fake.len(), fake.images.len()), ([2, 4, 4], 200, 200 * 32));
        assert!(fake.labels.iter().all(|&l| l == 0));
        let stats = |s: &Samples, ch: usize| {
            let v: Vec<f64> =
                s.images.chunks_exact(32).flat_map(|img| &img[ch * 16..(ch + 1) * 16]).map(|&x| x as f64).collect();
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            (mean, (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt())
        };
        for ch in 0..2 {
            let ((want_mean, want_sd), (mean, sd)) = (stats(&like, ch), stats(&fake, ch));
            assert!(want_sd > 0.5 && (want_mean - [2.0, 0.0][ch]).abs() < 0.2, "channel {ch}: {want_mean} {want_sd}");
            assert!((mean - want_mean).abs() < 1e-3 && (sd - want_sd).abs() < 1e-3, "channel {ch}: {mean} {sd}");
        }
        // Neighbouring pixels correlate (the smoothing), and no input is one of `like`'s.
        let (mut xy, mut xx) = (0.0f64, 0.0f64);
        for plane in fake.images.chunks_exact(16) {
            let m = plane.iter().map(|&v| v as f64).sum::<f64>() / 16.0;
            for row in plane.chunks_exact(4) {
                for x in 0..3 {
                    xy += (row[x] as f64 - m) * (row[x + 1] as f64 - m);
                }
                xx += row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() * 0.75;
            }
        }
        assert!(xy / xx > 0.3, "horizontal neighbours correlate: {}", xy / xx);
        let img = &fake.images[..16];
        assert!(fake.images.chunks_exact(32).all(|f| like.images.chunks_exact(32).all(|l| f != l)));
        assert_ne!(img, &synthetic(&like, 1, 10).images[..16], "the seed matters");
        assert_eq!(fake.images, synthetic(&like, 200, 9).images, "and decides");
        let split = TrainSplit::synthetic(&fake);
        assert!(split.is_synthetic());
        assert_eq!((split.val_len(), split.calibration_len()), (0, 200));
    }

    #[test]
    fn moment_matched_inputs_have_the_mean_and_covariance_and_contain_no_image() {
        // Four pixels: a = u, b = 0.6·u + 0.8·v, c = 2 (never changes), d = −u, with u, v
        // uniform in [−1, 1] (variance 1/3): cov(a, b) = 0.2, cov(a, d) = −1/3.
        let mut rng = SplitMix64::new(4);
        let mut images = Vec::new();
        for _ in 0..4000 {
            let (u, v) = (2.0 * rng.next_f32() - 1.0, 2.0 * rng.next_f32() - 1.0);
            images.extend([u, 0.6 * u + 0.8 * v, 2.0, -u]);
        }
        let like = Samples { shape: [1, 2, 2], images, labels: vec![3; 4000] };
        let fake = moment_matched(&like, 20_000, 7);
        assert_eq!((fake.shape, fake.len()), ([1, 2, 2], 20_000));
        assert!(fake.labels.iter().all(|&l| l == 0));
        let (want_mean, want_second) = like.moments();
        let (mean, second) = fake.moments();
        let cov = |m: &[f64], s: &[f64], i: usize, j: usize| s[i * 4 + j] - m[i] * m[j];
        for i in 0..4 {
            assert!((mean[i] - want_mean[i]).abs() < 0.02, "mean {i}: {} against {}", mean[i], want_mean[i]);
            for j in 0..4 {
                let (got, want) = (cov(&mean, &second, i, j), cov(&want_mean, &want_second, i, j));
                assert!((got - want).abs() < 0.02, "cov ({i}, {j}): {got} against {want}");
            }
        }
        assert!((cov(&mean, &second, 0, 3) + 1.0 / 3.0).abs() < 0.02, "a and d anti-correlate");
        // The constant pixel stays put, every value within the source's range, no source image.
        assert!(fake.images.chunks_exact(4).all(|x| (x[2] - 2.0).abs() < 1e-2));
        let (lo, hi) = like.images.iter().fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(fake.images.iter().all(|&x| (lo..=hi).contains(&x)) && lo < -1.2 && hi == 2.0);
        assert!(fake.images.chunks_exact(4).all(|f| like.images.chunks_exact(4).all(|l| f != l)));
        assert_eq!(fake.images, moment_matched(&like, 20_000, 7).images, "the seed decides");
        assert_ne!(fake.images[..8], moment_matched(&like, 2, 8).images[..8]);
        // As a split: every input a calibration sample, no val slice, synthetic.
        let split = TrainSplit::new(&like).moment_matched();
        assert!(split.is_synthetic());
        assert_eq!((split.val_len(), split.calibration_len()), (0, MOMENT_INPUTS));
    }

    #[test]
    fn tiny_splits_keep_at_least_one_val_sample_when_they_can() {
        let (two, one, none) = (numbered(2), numbered(1), numbered(0));
        assert_eq!((TrainSplit::new(&two).val_len(), TrainSplit::new(&two).calibration_len()), (1, 1));
        assert_eq!((TrainSplit::new(&one).val_len(), TrainSplit::new(&one).calibration_len()), (0, 1));
        assert_eq!(TrainSplit::new(&none).calibration(5, 0).len(), 0);
    }
}

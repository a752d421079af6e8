//! The unit stage: before the top-k, a mask gives up the first layer's least active hidden
//! units whole (every weight into them and every weight reading them).
//!
//! How active a unit is comes from no image: the fit stores the train split's input mean
//! `μ` and covariance `Σ` (from the host's `input_moments` service), and a unit `o` of a
//! ReLU first layer has the pre-activation `z = w_o·x + b_o`, taken as Gaussian with mean
//! `w_o·μ + b_o` and variance `w_oᵀ Σ w_o`, so `E[relu(z)]` has a closed form. A unit's
//! importance is that times the L2 norm of the next layer's weights reading it. The mask
//! gives up the units active with probability `P(z > 0)` below `p_dead`, and at least the
//! `⌊q(s) · units⌋` least important, with `q(s) = q_max · clamp(log₂ c − 1, 0, 4) / 4` at
//! compression `c = 1/(1 − s)`: nothing at 2×, `q_max` from 32× on. The fit chooses `q_max`,
//! then `p_dead`, on the val members (zeros turn the stage off).
//!
//! It applies where the first prunable layer is a linear layer reading the flattened image
//! through a ReLU (`mlpnet`); a convolutional first layer or another activation leaves the
//! mask as the network scored it.

use hyperprune_sdk::ModelRef;
use serde::{Deserialize, Serialize};

use crate::geometry::LayerView;

/// The values of `q_max` the fit chooses from on the val members.
pub const Q_GRID: [f64; 7] = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3];

/// The values of `p_dead` the fit chooses from on the val members, once `q_max` is chosen.
pub const P_DEAD_GRID: [f64; 4] = [0.0, 0.005, 0.01, 0.02];

/// What a state stores for the unit stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitStage {
    /// The fraction of first-layer units given up from 32× on.
    pub q_max: f64,
    /// Units whose estimated probability of being active is below this are given up at
    /// every sparsity (0: none).
    #[serde(default)]
    pub p_dead: f64,
    /// Input values per image (`c·h·w`) the moments describe.
    pub dim: usize,
    /// Train images the moments were taken over.
    pub samples: u64,
    /// Mean val retention over the fit's val compressions without the stage, and with it.
    pub val_retention: (f64, f64),
}

/// The input statistics the stage reads: mean `dim` and covariance `dim × dim` (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct InputStats {
    /// `E[x]`.
    pub mean: Vec<f32>,
    /// `E[(x − μ)(x − μ)ᵀ]`.
    pub cov: Vec<f32>,
}

impl InputStats {
    /// From the host's mean and uncentred second moment.
    pub fn from_moments(mean: &[f64], second: &[f64]) -> InputStats {
        let d = mean.len();
        let cov = (0..d * d).map(|k| (second[k] - mean[k / d] * mean[k % d]) as f32).collect();
        InputStats { mean: mean.iter().map(|&m| m as f32).collect(), cov }
    }

    /// Input values per image.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }
}

/// The fraction of first-layer units given up at sparsity `s`.
pub fn fraction(q_max: f64, s: f64) -> f64 {
    let c = 1.0 / (1.0 - s).max(1e-9);
    q_max * ((c.log2() - 1.0).clamp(0.0, 4.0) / 4.0)
}

/// Whether the stage applies to `model`: its first prunable layer is linear, reads the
/// flattened image of `dim` values (only a flatten before it) and is followed by a ReLU,
/// and a second prunable layer reads its units.
pub fn applies(model: &ModelRef<'_>, views: &[LayerView], dim: usize) -> bool {
    let Ok(arch) = serde_json::from_str::<serde_json::Value>(model.arch_json.as_str()) else { return false };
    let Some(layers) = arch.get("layers").and_then(|l| l.as_array()) else { return false };
    let kinds: Vec<&str> = layers.iter().filter_map(|l| l.get("type").and_then(|t| t.as_str())).collect();
    let Some(first) = kinds.iter().position(|&k| k != "flatten") else { return false };
    kinds[first] == "linear"
        && kinds.get(first + 1) == Some(&"relu")
        && views.len() >= 2
        && !views[0].conv
        && views[0].k == 1
        && views[0].inp == dim
        && views[1].inp == views[0].out
}

/// `E[max(z, 0)]` for `z ~ N(m, σ²)`.
fn relu_mean(m: f64, sigma: f64) -> f64 {
    if sigma <= 1e-12 {
        return m.max(0.0);
    }
    let t = m / sigma;
    let pdf = (-0.5 * t * t).exp() / (2.0 * std::f64::consts::PI).sqrt();
    m * normal_cdf(t) + sigma * pdf
}

/// `Φ(t)` from `erfc` (Abramowitz & Stegun 7.1.26; absolute error below 1.5e-7).
fn normal_cdf(t: f64) -> f64 {
    let x = t.abs() / std::f64::consts::SQRT_2;
    let k = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly =
        k * (0.254_829_592 + k * (-0.284_496_736 + k * (1.421_413_741 + k * (-1.453_152_027 + k * 1.061_405_429))));
    let erfc = poly * (-x * x).exp();
    if t >= 0.0 { 1.0 - 0.5 * erfc } else { 0.5 * erfc }
}

/// Each first-layer unit's importance `E[relu(z_o)] · ‖W₂[:, o]‖`, and the probability that it
/// is active, `P(z_o > 0)`.
pub fn importance(model: &ModelRef<'_>, views: &[LayerView], stats: &InputStats) -> (Vec<f64>, Vec<f64>) {
    let (first, next) = (&model.layers()[0], &model.layers()[1]);
    let (d, units) = (stats.dim(), views[0].out);
    let bias = crate::features::bias_of(model, first.name()).filter(|b| b.len() == units);
    let w = first.weights();
    let outgoing = outgoing_norms(next.weights(), &views[1]);
    // `Σ w_o` for a block of units at a time: each row of the covariance (d × d, far larger
    // than the units' rows) is read once a block instead of once a unit.
    const BLOCK: usize = 8;
    let mut sigma_w = vec![0.0f32; BLOCK * d];
    let (mut importance, mut active) = (Vec::with_capacity(units), Vec::with_capacity(units));
    for first in (0..units).step_by(BLOCK) {
        let block = first..(first + BLOCK).min(units);
        let rows: Vec<&[f32]> = block.clone().map(|o| &w[o * d..(o + 1) * d]).collect();
        cov_times(&stats.cov, &rows, &mut sigma_w);
        for (o, sigma_w) in block.zip(sigma_w.chunks_exact(d)) {
            let row = &w[o * d..(o + 1) * d];
            let mean = row.iter().zip(&stats.mean).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
                + bias.map_or(0.0, |b| b[o] as f64);
            let var = row.iter().zip(sigma_w).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>();
            let sigma = var.max(0.0).sqrt();
            active.push(if sigma > 1e-12 { normal_cdf(mean / sigma) } else { f64::from(u8::from(mean > 0.0)) });
            importance.push(relu_mean(mean, sigma) * outgoing[o]);
        }
    }
    (importance, active)
}

/// `a · b` with eight running sums: the sum [`cov_times`] takes for each pair, the reference
/// its tests compare with.
#[cfg(test)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        let (x, y): (&[f32; 8], &[f32; 8]) = (x.try_into().expect("exact chunks"), y.try_into().expect("exact chunks"));
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Row `j` of `out` (`[rows.len(), d]`): `Σ w_j` for each unit row `w_j` of `rows`, `Σ` being
/// `cov` (`d × d`); each row of `cov` is read once for all of `rows`.
///
/// On x86-64 with AVX2 the products run with subnormal inputs and results taken as zero
/// (MXCSR's DAZ and FTZ): weights that weight decay drove towards zero reach subnormal values (one
/// `mlpnet` member held 1,324 weights below 1e-26), and each product with one cost a
/// microcode assist, six times the whole product's time. What is flushed is below 1.2e-38,
/// far under a rounding step of any sum these feed.
fn cov_times(cov: &[f32], rows: &[&[f32]], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        let _flush = FlushSubnormals::new();
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { cov_times_avx2(cov, rows, out) };
    }
    cov_times_with(cov, rows, out)
}

/// Sets MXCSR's flush-to-zero and denormals-are-zero bits for this thread until dropped,
/// then restores the register as it was (also when unwinding).
#[cfg(target_arch = "x86_64")]
struct FlushSubnormals(u32);

#[cfg(target_arch = "x86_64")]
impl FlushSubnormals {
    /// FTZ is bit 15, DAZ bit 6.
    const BITS: u32 = 0x8040;

    fn new() -> FlushSubnormals {
        let mut old = 0u32;
        // SAFETY: `stmxcsr` stores the 32-bit register to the valid, aligned `old`; `ldmxcsr`
        // loads a value that differs from it only in the FTZ and DAZ bits, which every CPU
        // with SSE2 (every x86-64) accepts.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut old, options(nostack, preserves_flags));
            let set = old | Self::BITS;
            std::arch::asm!("ldmxcsr [{}]", in(reg) &set, options(nostack, preserves_flags));
        }
        FlushSubnormals(old)
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for FlushSubnormals {
    fn drop(&mut self) {
        // SAFETY: restores the value `stmxcsr` stored.
        unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &self.0, options(nostack, preserves_flags)) };
    }
}

/// [`cov_times`] with explicit AVX2 vectors: each row's eight running sums in one vector,
/// products then sums (no FMA contraction), four rows at once, so the same values bit for bit.
/// [`cov_times_with`] compiled with AVX2 instead took 1.1–1.3 ms more a mask on mlpnet members
/// (6.5–7.0 against 5.2–5.7 ms).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn cov_times_avx2(cov: &[f32], rows: &[&[f32]], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let d = rows.first().map_or(0, |r| r.len());
    let body = d - d % 8;
    assert!(rows.iter().all(|r| r.len() == d) && cov.len() >= d * d && out.len() >= rows.len() * d);
    for (i, cov) in cov.chunks_exact(d.max(1)).enumerate() {
        for (g, group) in rows.chunks(4).enumerate() {
            let four: [&[f32]; 4] = std::array::from_fn(|j| group.get(j).copied().unwrap_or(group[0]));
            let mut acc = [_mm256_setzero_ps(); 4];
            for c in (0..body).step_by(8) {
                // SAFETY: `c + 8 ≤ body ≤ d`, the length of `cov` (a row) and of every row
                // (asserted above); unaligned loads.
                unsafe {
                    let x = _mm256_loadu_ps(cov.as_ptr().add(c));
                    for (acc, row) in acc.iter_mut().zip(&four) {
                        *acc = _mm256_add_ps(*acc, _mm256_mul_ps(x, _mm256_loadu_ps(row.as_ptr().add(c))));
                    }
                }
            }
            for (j, (acc, row)) in acc.iter().zip(group).enumerate() {
                let mut lanes = [0.0f32; 8];
                // SAFETY: `lanes` holds eight f32.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *acc) };
                let tail: f32 = cov[body..].iter().zip(&row[body..]).map(|(&x, &y)| x * y).sum();
                out[(g * 4 + j) * d + i] = lanes.iter().sum::<f32>() + tail;
            }
        }
    }
}

/// [`cov_times`] without explicit vectors (and without flushing subnormals): four rows' dots
/// at a time, four independent chains of sums, each row's eight running sums in the same lanes
/// and order as the AVX2 path's.
fn cov_times_with(cov: &[f32], rows: &[&[f32]], out: &mut [f32]) {
    const AT_ONCE: usize = 4;
    let d = rows.first().map_or(0, |r| r.len());
    let body = d - d % 8;
    for (i, cov) in cov.chunks_exact(d.max(1)).enumerate() {
        for (g, group) in rows.chunks(AT_ONCE).enumerate() {
            // A short last group repeats its first row; those sums are dropped.
            let four: [&[f32]; AT_ONCE] = std::array::from_fn(|j| group.get(j).copied().unwrap_or(group[0]));
            let mut acc = [[0.0f32; 8]; AT_ONCE];
            for c in (0..body).step_by(8) {
                let x: &[f32; 8] = cov[c..c + 8].try_into().expect("8 values");
                for (acc, row) in acc.iter_mut().zip(&four) {
                    let y: &[f32; 8] = row[c..c + 8].try_into().expect("8 values");
                    for k in 0..8 {
                        acc[k] += x[k] * y[k];
                    }
                }
            }
            for (j, (acc, row)) in acc.iter().zip(group).enumerate() {
                let tail: f32 = cov[body..].iter().zip(&row[body..]).map(|(&x, &y)| x * y).sum();
                out[(g * AT_ONCE + j) * d + i] = acc.iter().sum::<f32>() + tail;
            }
        }
    }
}

/// The L2 norm of the weights of a layer viewed as `[out, inp, k]` that read each input unit.
fn outgoing_norms(w: &[f32], view: &LayerView) -> Vec<f64> {
    let mut sums = vec![0.0f64; view.inp];
    for (chunk, (_, i)) in w.chunks_exact(view.k).zip((0..view.out).flat_map(|o| (0..view.inp).map(move |i| (o, i)))) {
        sums[i] += chunk.iter().map(|&x| x as f64 * x as f64).sum::<f64>();
    }
    sums.iter().map(|s| s.sqrt()).collect()
}

/// The first-layer units a mask at sparsity `s` gives up: every unit active with probability
/// below `p_dead`, and at least the `⌊fraction · units⌋` least important (never all of them);
/// the inactive ones first, then in increasing order of importance.
pub fn dropped(importance: &[f64], active: &[f64], q_max: f64, p_dead: f64, s: f64) -> Vec<usize> {
    let dead = |u: usize| active[u] < p_dead;
    let by_fraction = (fraction(q_max, s) * importance.len() as f64).floor() as usize;
    let n = by_fraction.max((0..importance.len()).filter(|&u| dead(u)).count()).min(importance.len().saturating_sub(1));
    let mut order: Vec<usize> = (0..importance.len()).collect();
    order.sort_by(|&a, &b| dead(b).cmp(&dead(a)).then(importance[a].total_cmp(&importance[b])).then(a.cmp(&b)));
    order.truncate(n);
    order
}

/// Lowers the scores (flat, layer order) of every weight into or out of the `dropped`
/// first-layer units below every other score, so that the top-k gives them up.
pub fn lower(scores: &mut [f32], views: &[LayerView], dropped: &[usize]) {
    if dropped.is_empty() {
        return;
    }
    let lowest = scores.iter().copied().filter(|v| v.is_finite()).fold(f32::INFINITY, f32::min);
    let below = if lowest.is_finite() { lowest - 1.0 - lowest.abs() } else { -1.0 };
    let (first, next) = (views[0], views[1]);
    let row = first.inp * first.k;
    for &o in dropped {
        scores[o * row..(o + 1) * row].iter_mut().for_each(|s| *s = below);
    }
    let (start, per_in) = (first.len(), next.k);
    for out in 0..next.out {
        for &o in dropped {
            let at = start + (out * next.inp + o) * per_in;
            scores[at..at + per_in].iter_mut().for_each(|s| *s = below);
        }
    }
}

/// The unit stage with `stage`'s settings on `scores` (flat, layer order) for sparsity `s`:
/// lowers the dropped units' weights when the stage applies to `model` and gives up any
/// unit at `s`.
pub fn apply(scores: &mut [f32], model: &ModelRef<'_>, views: &[LayerView], stats: &InputStats, stage: Stage, s: f64) {
    if applies(model, views, stats.dim()) && acts(stage, views[0].out, s) {
        give_up(scores, views, &importance(model, views, stats), stage, s);
    }
}

/// Whether `stage` may give up any of `units` first-layer units at `s`.
pub fn acts(stage: Stage, units: usize, s: f64) -> bool {
    fraction(stage.q_max, s) * units as f64 >= 1.0 || stage.p_dead > 0.0
}

/// [`apply`] once [`importance`] is known (`activity`: importance and probability active).
pub fn give_up(scores: &mut [f32], views: &[LayerView], activity: &(Vec<f64>, Vec<f64>), stage: Stage, s: f64) {
    lower(scores, views, &dropped(&activity.0, &activity.1, stage.q_max, stage.p_dead, s));
}

/// The two settings of the stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    /// See [`UnitStage::q_max`].
    pub q_max: f64,
    /// See [`UnitStage::p_dead`].
    pub p_dead: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covariance_products_are_the_plain_dots_bit_for_bit() {
        // d = 37 (four chunks of 8 and a tail of 5) and 7 rows (a short group of 3), values
        // of mixed sign and size, so that any other order of the sums shows in the last bits.
        let d = 37;
        let value = |k: usize| ((k * 7919 % 1013) as f32 / 101.3 - 5.0) * if k.is_multiple_of(3) { 1e-3 } else { 1.0 };
        let cov: Vec<f32> = (0..d * d).map(value).collect();
        let rows: Vec<Vec<f32>> = (0..7).map(|j| (0..d).map(|i| value(5000 + 37 * j + i)).collect()).collect();
        let rows: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        let mut want = vec![0.0f32; 7 * d];
        for (j, row) in rows.iter().enumerate() {
            for i in 0..d {
                want[j * d + i] = dot(&cov[i * d..(i + 1) * d], row);
            }
        }
        let (mut got, mut portable) = (vec![f32::NAN; 7 * d], vec![f32::NAN; 7 * d]);
        cov_times(&cov, &rows, &mut got);
        cov_times_with(&cov, &rows, &mut portable);
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(portable, want);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn subnormal_weights_count_as_zero_and_the_register_is_restored() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let d = 16;
        let cov: Vec<f32> = (0..d * d).map(|k| (k % 7) as f32 * 0.25 - 0.5).collect();
        let mut row: Vec<f32> = (0..d).map(|i| i as f32 * 0.1 - 0.7).collect();
        row[3] = 1.5e-43;
        row[9] = -f32::MIN_POSITIVE / 8.0;
        assert!(row[3].is_subnormal() && row[9].is_subnormal());
        let flushed: Vec<f32> = row.iter().map(|&w| if w.is_subnormal() { 0.0 } else { w }).collect();
        // A row of subnormal weights only: its plain dots are subnormal, not zero, so this row
        // shows whether the products were flushed (beside normal ones they would round away).
        let tiny_row = vec![1e-40f32; d];
        assert!(cov.chunks_exact(d).any(|c| dot(c, &tiny_row) != 0.0));
        let mut got = vec![f32::NAN; 2 * d];
        cov_times(&cov, &[&row[..], &tiny_row[..]], &mut got);
        let want: Vec<f32> = cov.chunks_exact(d).map(|c| dot(c, &flushed)).collect();
        assert_eq!(got[..d], want[..]);
        assert!(got[d..].iter().all(|&v| v == 0.0), "{:?}", &got[d..]);
        // Subnormal arithmetic is back once the products are done.
        let tiny = std::hint::black_box(f32::MIN_POSITIVE) / std::hint::black_box(8.0f32);
        assert!(tiny.is_subnormal());
    }

    #[test]
    fn the_fraction_is_zero_at_2x_and_q_max_from_32x() {
        assert_eq!(fraction(0.2, 0.5), 0.0);
        assert!((fraction(0.2, 0.75) - 0.05).abs() < 1e-12);
        assert!((fraction(0.2, 0.875) - 0.1).abs() < 1e-12);
        assert!((fraction(0.2, 1.0 - 1.0 / 32.0) - 0.2).abs() < 1e-12);
        assert!((fraction(0.2, 0.99) - 0.2).abs() < 1e-12);
        assert_eq!(fraction(0.2, 0.3), 0.0);
    }

    #[test]
    fn the_relu_mean_matches_its_limits_and_a_quadrature() {
        assert!((relu_mean(0.0, 1.0) - 1.0 / (2.0 * std::f64::consts::PI).sqrt()).abs() < 1e-6);
        assert!((relu_mean(5.0, 0.1) - 5.0).abs() < 1e-6);
        assert!(relu_mean(-5.0, 0.1).abs() < 1e-6);
        assert_eq!(relu_mean(-1.0, 0.0), 0.0);
        // Midpoint rule over ±10σ.
        let (m, s) = (0.3, 0.7);
        let n = 20_000;
        let h = 20.0 * s / n as f64;
        let q: f64 = (0..n)
            .map(|i| {
                let z = m - 10.0 * s + (i as f64 + 0.5) * h;
                z.max(0.0) * (-0.5 * ((z - m) / s).powi(2)).exp() / (s * (2.0 * std::f64::consts::PI).sqrt()) * h
            })
            .sum();
        assert!((relu_mean(m, s) - q).abs() < 1e-6, "{} vs {q}", relu_mean(m, s));
    }

    #[test]
    fn covariance_is_the_second_moment_less_the_mean_product() {
        let stats = InputStats::from_moments(&[2.0, -1.0], &[5.0, -5.0, -5.0, 10.0]);
        assert_eq!(stats.cov, vec![1.0, -3.0, -3.0, 9.0]);
        assert_eq!(stats.dim(), 2);
    }

    #[test]
    fn the_least_important_units_go_first_and_never_all_of_them() {
        let imp = [0.5, 0.1, 0.9, 0.3];
        let active = [0.5, 0.4, 0.003, 0.6];
        assert_eq!(dropped(&imp, &active, 0.5, 0.0, 1.0 - 1.0 / 32.0), vec![1, 3]);
        assert_eq!(dropped(&imp, &active, 0.5, 0.0, 0.5), Vec::<usize>::new());
        assert_eq!(dropped(&imp, &active, 1.0, 0.0, 0.99).len(), 3);
        // A unit that is almost never active goes at every sparsity, before the others.
        assert_eq!(dropped(&imp, &active, 0.5, 0.01, 0.5), vec![2]);
        assert_eq!(dropped(&imp, &active, 0.5, 0.01, 1.0 - 1.0 / 32.0), vec![2, 1]);
    }

    #[test]
    fn lowering_reaches_the_rows_of_the_first_layer_and_the_columns_of_the_next() {
        let first = LayerView { out: 3, inp: 2, k: 1, kh: 1, kw: 1, conv: false };
        let next = LayerView { out: 2, inp: 3, k: 1, kh: 1, kw: 1, conv: false };
        let mut scores: Vec<f32> = (1..=12).map(|v| v as f32).collect();
        lower(&mut scores, &[first, next], &[1]);
        let low: Vec<usize> = (0..12).filter(|&i| scores[i] < 1.0).collect();
        // Row 1 of the first layer (weights 2, 3) and column 1 of the next (6 + 1, 6 + 4).
        assert_eq!(low, vec![2, 3, 7, 10]);
    }
}

//! Batch normalisation over the channels of `[c, n, s]` activations, as PyTorch's
//! `nn.BatchNorm2d` (and the burn engine's `batch_norm.rs`).
//!
//! Train mode normalises with the statistics of the pass's images over `n·s` values per
//! channel (mean and biased variance) and keeps them for the backward pass and for the
//! running statistics; eval mode is the per-channel affine map of the running statistics.
//! The channel-major layout makes a channel's `n·s` values one contiguous run, so every
//! statistic is one sum over a slice; sums are taken in f64.

use super::activation;
use super::activation::relu_gate;
use super::parallel;
use super::plan::BatchNormGeom;

/// The statistics of a train-mode pass, per channel.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct BatchStats {
    /// Values per channel the statistics were taken over (`n·s`).
    pub count: usize,
    /// Batch mean.
    pub mean: Vec<f32>,
    /// Biased batch variance.
    pub var: Vec<f32>,
    /// `1 / √(var + ε)`.
    pub inv_std: Vec<f32>,
}

impl BatchStats {
    /// The running mean and variance after this batch, PyTorch's update:
    /// `(1 − m) · running + m · batch`, the batch variance made unbiased (`count/(count − 1)`),
    /// arranged as the burn engine does so that both round alike. `count` must exceed 1.
    ///
    /// # Shapes
    /// - `mean`, `var`: `[c]`, the running statistics, updated in place
    pub fn update_running(&self, momentum: f64, mean: &mut [f32], var: &mut [f32]) {
        let keep = (1.0 - momentum) as f32;
        let m = momentum as f32;
        let unbias = (self.count as f64 / (self.count as f64 - 1.0)) as f32;
        for c in 0..mean.len() {
            mean[c] = mean[c] * keep + self.mean[c] * m;
            var[c] = var[c] * keep + (self.var[c] * unbias) * m;
        }
    }
}

/// The two sums `Σ term(a[i], b[i], c[i])` in f64 over equal-length slices, in one pass:
/// each as eight interleaved partial sums (lane `k` takes `i ≡ k mod 8`) added in a fixed
/// order, then the tail. The lanes are independent, so the loop can vectorise (a select in
/// `term` may still compile to branches: see [`Channel::sums_avx2`]), and the order is the
/// same on every run.
#[inline(always)]
fn lane_sums(a: &[f32], b: &[f32], c: &[f32], term: impl Fn(f32, f32, f32) -> (f64, f64)) -> (f64, f64) {
    const LANES: usize = 8;
    let (mut p, mut q) = ([0f64; LANES], [0f64; LANES]);
    let (b, c) = (&b[..a.len()], &c[..a.len()]);
    let body = a.len() - a.len() % LANES;
    for ((a, b), c) in a[..body].chunks_exact(LANES).zip(b.chunks_exact(LANES)).zip(c.chunks_exact(LANES)) {
        // Arrays of known length: no bounds checks in the loop, which keeps it vectorised.
        let lanes = |s: &[f32]| -> [f32; LANES] { s.try_into().expect("chunks are exact") };
        let (a, b, c) = (lanes(a), lanes(b), lanes(c));
        for k in 0..LANES {
            let (u, v) = term(a[k], b[k], c[k]);
            p[k] += u;
            q[k] += v;
        }
    }
    let fold = |acc: [f64; LANES]| ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    (body..a.len()).fold((fold(p), fold(q)), |(p, q), i| {
        let (u, v) = term(a[i], b[i], c[i]);
        (p + u, q + v)
    })
}

/// The per-channel `(factor, offset)` of eval mode: `γ / √(running_var + ε)` and
/// `β − running_mean · factor` (the burn engine's arrangement).
fn eval_affine(g: &BatchNormGeom, params: &[f32], c: usize) -> (f32, f32) {
    let (scale, shift) = (params[g.scale + c], params[g.shift + c]);
    let (mean, var) = (params[g.mean + c], params[g.var + c]);
    let factor = scale / (var + g.eps as f32).sqrt();
    (factor, shift - mean * factor)
}

/// Eval mode: `y = γ · (x − running_mean) / √(running_var + ε) + β`, or its ReLU when
/// `relu` (a following ReLU fused into the same pass).
///
/// # Shapes
/// - `params`: the flat parameters; `x`, `y`: `[c, m]` with `m = n·s`
pub(crate) fn forward_eval(g: &BatchNormGeom, params: &[f32], m: usize, x: &[f32], y: &mut [f32], relu: bool) {
    for c in 0..g.c {
        let (factor, offset) = eval_affine(g, params, c);
        let (x, y) = (&x[c * m..(c + 1) * m], &mut y[c * m..(c + 1) * m]);
        if relu {
            y.iter_mut().zip(x).for_each(|(y, &x)| *y = activation::relu(x * factor + offset));
        } else {
            y.iter_mut().zip(x).for_each(|(y, &x)| *y = x * factor + offset);
        }
    }
}

/// Train mode: `y = γ · (x − μ_B) / √(σ²_B + ε) + β` with the mean `μ_B` and biased variance
/// `σ²_B` of each channel's `m` values, which are left in `stats`; its ReLU when `relu` (a
/// following ReLU fused into the same pass).
///
/// # Shapes
/// - `params`: the flat parameters; `x`, `y`: `[c, m]` with `m = n·s`
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_train(
    g: &BatchNormGeom,
    params: &[f32],
    m: usize,
    x: &[f32],
    y: &mut [f32],
    stats: &mut BatchStats,
    relu: bool,
    threads: usize,
) {
    stats.count = m;
    let per_channel = parallel::per_channel(threads, g.c, y, m, |c, y| {
        let x = &x[c * m..(c + 1) * m];
        let (scale, shift) = (params[g.scale + c], params[g.shift + c]);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { train_channel_avx2(g.eps, (scale, shift), x, y, relu) };
        }
        train_channel(g.eps, (scale, shift), None, x, y, relu)
    });
    stats.mean = per_channel.iter().map(|s| s.0).collect();
    stats.var = per_channel.iter().map(|s| s.1).collect();
    stats.inv_std = per_channel.iter().map(|s| s.2).collect();
}

/// One channel of [`forward_train`]: returns its `(mean, var, inv_std)` and writes `y`.
/// `moments`, when given, are `(Σ x, Σ x²)` already taken.
#[inline(always)]
fn train_channel(
    eps: f64,
    (scale, shift): (f32, f32),
    moments: Option<(f64, f64)>,
    x: &[f32],
    y: &mut [f32],
    relu: bool,
) -> (f32, f32, f32) {
    let m = x.len();
    // One pass: the mean and the mean square, in f64. The cancellation in `E[x²] − E[x]²`
    // costs f32 precision only when |mean| exceeds the standard deviation some 30,000-fold.
    let (sum, squares) = moments.unwrap_or_else(|| lane_sums(x, x, x, |v, _, _| (v as f64, v as f64 * v as f64)));
    let mean = sum / m as f64;
    let var = (squares / m as f64 - mean * mean).max(0.0);
    let inv_std = 1.0 / (var + eps).sqrt();
    let (mean, inv_std) = (mean as f32, inv_std as f32);
    if relu {
        y.iter_mut().zip(x).for_each(|(y, &x)| *y = activation::relu((x - mean) * inv_std * scale + shift));
    } else {
        y.iter_mut().zip(x).for_each(|(y, &x)| *y = (x - mean) * inv_std * scale + shift);
    }
    (mean, var as f32, inv_std)
}

/// [`train_channel`] compiled with AVX2, its two sums taken with explicit vectors: the same
/// terms in the same eight lanes and the same order as [`lane_sums`], so the same values bit
/// for bit (the portable build converts to f64 one value at a time). No FMA contraction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn train_channel_avx2(eps: f64, affine: (f32, f32), x: &[f32], y: &mut [f32], relu: bool) -> (f32, f32, f32) {
    use std::arch::x86_64::*;
    let body = x.len() - x.len() % 8;
    let (mut p_lo, mut p_hi, mut q_lo, mut q_hi) =
        (_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd());
    for i in (0..body).step_by(8) {
        // SAFETY: `i + 8 ≤ body ≤ x.len()`; an unaligned load.
        let v = unsafe { _mm256_loadu_ps(x.as_ptr().add(i)) };
        let (lo, hi) = (_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)));
        p_lo = _mm256_add_pd(p_lo, lo);
        p_hi = _mm256_add_pd(p_hi, hi);
        q_lo = _mm256_add_pd(q_lo, _mm256_mul_pd(lo, lo));
        q_hi = _mm256_add_pd(q_hi, _mm256_mul_pd(hi, hi));
    }
    let moments = (body..x.len()).fold((fold_lanes(p_lo, p_hi), fold_lanes(q_lo, q_hi)), |(p, q), i| {
        let v = x[i] as f64;
        (p + v, q + v * v)
    });
    train_channel(eps, affine, Some(moments), x, y, relu)
}

/// Eight f64 lanes, `lo` = lanes 0–3 and `hi` = lanes 4–7, added as [`lane_sums`] folds
/// them: `((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7))`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fold_lanes(lo: std::arch::x86_64::__m256d, hi: std::arch::x86_64::__m256d) -> f64 {
    use std::arch::x86_64::*;
    let mut s = [0f64; 4];
    // SAFETY: `s` holds four f64.
    unsafe { _mm256_storeu_pd(s.as_mut_ptr(), _mm256_add_pd(lo, hi)) };
    (s[0] + s[1]) + (s[2] + s[3])
}

/// The backward pass of either mode: adds `∂L/∂γ = Σ dy · x̂` and `∂L/∂β = Σ dy` into `grad`
/// (the flat gradient, when given) and writes `dx` (when given).
///
/// Eval mode is an affine map: `dx = dy · γ / √(running_var + ε)`, `x̂` normalised with the
/// running statistics. Train mode also differentiates through the batch statistics:
/// `dx = γ · inv_std / m · (m · dy − Σ dy − x̂ · Σ dy · x̂)`.
///
/// With `relu_out`, the output of a ReLU that the forward pass fused after this batch norm
/// ([`forward_train`]'s `relu`), `dy` is that ReLU's output gradient, and the ReLU's
/// backward rule is applied on the way in: the ReLU's own backward pass is skipped.
///
/// # Shapes
/// - `params`, `grad`: the flat parameters and gradient; `x`, `dy`, `relu_out`, `dx`: `[c, m]`
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    g: &BatchNormGeom,
    params: &[f32],
    m: usize,
    x: &[f32],
    stats: Option<&BatchStats>,
    dy: &[f32],
    relu_out: Option<&[f32]>,
    dx: Option<(&mut [f32], Layout)>,
    grad: Option<&mut [f32]>,
    threads: usize,
) {
    let (dx, len, layout) = match dx {
        None => (&mut [][..], 0, Layout::Flat),
        Some((dx, layout)) => (dx, layout.len(m), layout),
    };
    let train = stats.is_some();
    let sums = parallel::per_channel(threads, g.c, dx, len, |c, dx| {
        let (x, dy) = (&x[c * m..(c + 1) * m], &dy[c * m..(c + 1) * m]);
        let (mean, inv_std) = match stats {
            Some(s) => (s.mean[c], s.inv_std[c]),
            None => (params[g.mean + c], 1.0 / (params[g.var + c] + g.eps as f32).sqrt()),
        };
        let relu_out = relu_out.map(|r| &r[c * m..(c + 1) * m]);
        let channel = Channel { g, params, c, train, mean, inv_std, x, dy, relu_out, layout };
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { channel.backward_avx2(dx) };
        }
        channel.backward(dx)
    });
    if let Some(grad) = grad {
        for (c, (sum_dy, sum_dy_xhat)) in sums.into_iter().enumerate() {
            grad[g.scale + c] += sum_dy_xhat as f32;
            grad[g.shift + c] += sum_dy as f32;
        }
    }
}

/// One channel of [`backward`].
struct Channel<'a> {
    g: &'a BatchNormGeom,
    params: &'a [f32],
    c: usize,
    train: bool,
    mean: f32,
    inv_std: f32,
    x: &'a [f32],
    dy: &'a [f32],
    relu_out: Option<&'a [f32]>,
    layout: Layout,
}

/// How [`backward`] lays out the input gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `[c, m]`, as the input.
    Flat,
    /// The interiors of zero-bordered planes `[c, n, (h + 2q)·(w + 2q)]`, `m = n·h·w`: the
    /// layout a direct convolution's input gradient reads ([`crate::direct::pad`]'s, whose
    /// borders and slack are left as they are), so the padding pass is skipped.
    Padded { h: usize, w: usize, q: usize },
}

impl Layout {
    /// Values one channel of `m` takes.
    fn len(self, m: usize) -> usize {
        match self {
            Layout::Flat => m,
            Layout::Padded { h, w, q } => m / (h * w) * (h + 2 * q) * (w + 2 * q),
        }
    }
}

/// `dx[i] = f(dy[i], x[i], r[i])` for every value of one channel, `dx` laid out as `to`.
#[inline(always)]
fn write_dx(to: Layout, dx: &mut [f32], dy: &[f32], x: &[f32], r: &[f32], f: impl Fn(f32, f32, f32) -> f32) {
    match to {
        Layout::Flat => {
            for (((dx, &d), &x), &r) in dx.iter_mut().zip(dy).zip(x).zip(r) {
                *dx = f(d, x, r);
            }
        }
        Layout::Padded { h, w, q } => {
            let (hp, wp) = (h + 2 * q, w + 2 * q);
            let rows = dy.chunks_exact(w).zip(x.chunks_exact(w)).zip(r.chunks_exact(w));
            for (row, ((dy, x), r)) in rows.enumerate() {
                let (image, y) = (row / h, row % h);
                let dx = &mut dx[(image * hp + y + q) * wp + q..][..w];
                for (((dx, &d), &x), &r) in dx.iter_mut().zip(dy).zip(x).zip(r) {
                    *dx = f(d, x, r);
                }
            }
        }
    }
}

impl Channel<'_> {
    /// Returns `(Σ dy, Σ dy · x̂)` and writes `dx` unless it is empty (`dy` gated by a fused
    /// ReLU's output, when there is one).
    fn backward(&self, dx: &mut [f32]) -> (f64, f64) {
        self.backward_with(None, dx)
    }

    /// [`Channel::backward`] compiled with AVX2, whose blend keeps the ReLU's gate in vector
    /// registers (with SSE2 alone the compiler branches per lane). No FMA contraction: the
    /// results are the same, bit for bit.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn backward_avx2(&self, dx: &mut [f32]) -> (f64, f64) {
        self.backward_with(Some(self.sums_avx2()), dx)
    }

    /// [`Channel::backward`] with the two sums, when given, already taken.
    #[inline(always)]
    fn backward_with(&self, sums: Option<(f64, f64)>, dx: &mut [f32]) -> (f64, f64) {
        // Two builds of one loop, so that each inlines its gate. Without a ReLU, `dy` stands
        // in for its output: read from the same addresses, it costs no memory traffic.
        match self.relu_out {
            Some(r) => self.backward_gated(r, relu_gate, sums, dx),
            None => self.backward_gated(self.dy, |d, _| d, sums, dx),
        }
    }

    /// The two sums of [`Channel::backward_gated`] with explicit AVX2 vectors: the same
    /// terms in the same eight lanes and the same order, so the same values bit for bit. The
    /// compiler's own version branches per lane on the ReLU's gate.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn sums_avx2(&self) -> (f64, f64) {
        use std::arch::x86_64::*;
        let (x, dy, (mean, inv_std)) = (self.x, self.dy, (self.mean, self.inv_std));
        let r = self.relu_out.unwrap_or(dy);
        let gated = self.relu_out.is_some();
        let body = x.len() - x.len() % 8;
        let (dy, r) = (&dy[..x.len()], &r[..x.len()]);
        let (mut p_lo, mut p_hi, mut q_lo, mut q_hi) =
            (_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd());
        let (mean_v, inv_std_v, zero) = (_mm256_set1_ps(mean), _mm256_set1_ps(inv_std), _mm256_setzero_ps());
        for i in (0..body).step_by(8) {
            // SAFETY: `i + 8 ≤ body ≤ len` of all three slices; unaligned loads.
            let (xv, mut d) = unsafe { (_mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(dy.as_ptr().add(i))) };
            if gated {
                // SAFETY: as above.
                let rv = unsafe { _mm256_loadu_ps(r.as_ptr().add(i)) };
                d = _mm256_and_ps(d, _mm256_cmp_ps::<_CMP_GT_OQ>(rv, zero));
            }
            let t = _mm256_mul_ps(d, _mm256_mul_ps(_mm256_sub_ps(xv, mean_v), inv_std_v));
            p_lo = _mm256_add_pd(p_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(d)));
            p_hi = _mm256_add_pd(p_hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(d)));
            q_lo = _mm256_add_pd(q_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(t)));
            q_hi = _mm256_add_pd(q_hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(t)));
        }
        let gate = |d: f32, r: f32| if gated { relu_gate(d, r) } else { d };
        (body..x.len()).fold((fold_lanes(p_lo, p_hi), fold_lanes(q_lo, q_hi)), |(p, q), i| {
            let d = gate(dy[i], r[i]);
            (p + d as f64, q + (d * ((x[i] - mean) * inv_std)) as f64)
        })
    }

    /// `sums`, when given, are the two sums already taken.
    #[inline(always)]
    fn backward_gated(
        &self,
        r: &[f32],
        gate: impl Fn(f32, f32) -> f32,
        sums: Option<(f64, f64)>,
        dx: &mut [f32],
    ) -> (f64, f64) {
        let Channel { g, params, c, train, mean, inv_std, x, dy, layout, .. } = *self;
        let m = x.len();
        let (sum_dy, sum_dy_xhat) = sums.unwrap_or_else(|| {
            lane_sums(x, dy, r, |x, d, r| {
                let d = gate(d, r);
                (d as f64, (d * ((x - mean) * inv_std)) as f64)
            })
        });
        if dx.is_empty() {
            return (sum_dy, sum_dy_xhat);
        }
        if train {
            let k = params[g.scale + c] * inv_std;
            let (mean_dy, mean_dy_xhat) = ((sum_dy / m as f64) as f32, (sum_dy_xhat / m as f64) as f32);
            write_dx(layout, dx, dy, x, r, |d, x, r| {
                let xhat = (x - mean) * inv_std;
                k * (gate(d, r) - mean_dy - xhat * mean_dy_xhat)
            });
        } else {
            let (factor, _) = eval_affine(g, params, c);
            write_dx(layout, dx, dy, x, r, |d, _, r| gate(d, r) * factor);
        }
        (sum_dy, sum_dy_xhat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The burn engine's hand-computed case: `[c, n, s]` with c = 2, n = 2, s = 4; channel 0
    /// holds 1..8, channel 1 holds 0, 2, 4, 6 | 8, 10, 12, 30.
    fn input() -> Vec<f32> {
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 30.0]
    }

    /// γ = (2, 0.5), β = (1, −1), running mean (0.5, −2), running var (4, 0.25), in one flat
    /// vector as a spec lays them out.
    fn layer() -> (BatchNormGeom, Vec<f32>) {
        let g = BatchNormGeom { c: 2, scale: 0, shift: 2, mean: 4, var: 6, eps: 1e-5, momentum: 0.1 };
        (g, vec![2.0, 0.5, 1.0, -1.0, 0.5, -2.0, 4.0, 0.25])
    }

    /// f32 arithmetic on values below 100: relative error ~1e-6; 1e-5 of the larger of the
    /// value and 1 leaves margin while any wrong statistic is off by O(0.1) or more.
    fn assert_close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= 1e-5 * w.abs().max(1.0), "{what}[{i}]: {g} vs {w}; {got:?}");
        }
    }

    #[test]
    fn train_mode_uses_batch_statistics_and_updates_running_stats_as_pytorch() {
        let (g, params) = layer();
        let x = input();
        let mut y = vec![0.0; 16];
        let mut stats = BatchStats::default();
        forward_train(&g, &params, 8, &x, &mut y, &mut stats, false, 1);
        // Channel 0: mean 4.5, biased var 5.25 (unbiased 6); channel 1: mean 9, biased var
        // 616/8 = 77 (unbiased 88).
        assert_close(&stats.mean, &[4.5, 9.0], "mean");
        assert_close(&stats.var, &[5.25, 77.0], "var");
        let want: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let (m, var, gamma, beta) = if i < 8 { (4.5, 5.25, 2.0, 1.0) } else { (9.0, 77.0, 0.5, -1.0) };
                gamma * (v as f64 - m) / (var + 1e-5f64).sqrt() + beta
            })
            .collect();
        assert_close(&y, &want, "y");
        // running = 0.9 · old + 0.1 · batch: mean (0.9, −0.9), var (0.9·4 + 0.6, 0.9·0.25 + 8.8).
        let (mut mean, mut var) = (params[4..6].to_vec(), params[6..8].to_vec());
        stats.update_running(g.momentum, &mut mean, &mut var);
        assert_close(&mean, &[0.9, -0.9], "running_mean");
        assert_close(&var, &[4.2, 9.025], "running_var");
        // A fused ReLU: the same values with the negative ones zeroed, the same statistics.
        let mut fused = vec![f32::NAN; 16];
        let mut fused_stats = BatchStats::default();
        forward_train(&g, &params, 8, &x, &mut fused, &mut fused_stats, true, 1);
        assert_eq!(fused, y.iter().map(|&v| v.max(0.0)).collect::<Vec<_>>());
        assert!(fused.contains(&0.0) && y.iter().any(|&v| v < 0.0));
        assert_eq!(fused_stats, stats);
    }

    #[test]
    fn eval_mode_uses_running_statistics() {
        let (g, params) = layer();
        let mut y = vec![0.0; 16];
        forward_eval(&g, &params, 8, &input(), &mut y, false);
        // x = 1 in channel 0: 2 · (1 − 0.5) / 2 + 1 = 1.5; x = 30 in channel 1:
        // 0.5 · 32 / 0.5 − 1 = 31 (eps aside).
        assert!((y[0] - 1.5).abs() < 1e-5 && (y[15] - 31.0).abs() < 1e-3, "{y:?}");
        // A fused ReLU, on inputs shifted so that some outputs are negative.
        let shifted: Vec<f32> = input().iter().map(|&v| v - 6.0).collect();
        forward_eval(&g, &params, 8, &shifted, &mut y, false);
        let mut fused = vec![f32::NAN; 16];
        forward_eval(&g, &params, 8, &shifted, &mut fused, true);
        assert_eq!(fused, y.iter().map(|&v| v.max(0.0)).collect::<Vec<_>>());
        assert!(y.iter().any(|&v| v < 0.0) && y.iter().any(|&v| v > 0.0), "{y:?}");
    }

    /// `Σ dy · y(x)` by a naive f64 batch norm straight from the definition (flat
    /// parameters as [`layer`] lays them out, 2 channels of 8 values).
    fn objective(params: &[f64], x: &[f64], dy: &[f32], train: bool) -> f64 {
        let mut total = 0.0;
        for c in 0..2 {
            let xs = &x[c * 8..(c + 1) * 8];
            let (mean, var) = if train {
                let mean = xs.iter().sum::<f64>() / 8.0;
                (mean, xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 8.0)
            } else {
                (params[4 + c], params[6 + c])
            };
            for (j, &v) in xs.iter().enumerate() {
                let y = params[c] * (v - mean) / (var + 1e-5).sqrt() + params[2 + c];
                total += y * dy[c * 8 + j] as f64;
            }
        }
        total
    }

    #[test]
    fn the_avx2_backward_sums_and_writes_as_the_portable_one_bit_for_bit() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            let (g, params) = layer();
            // 37 values: four vectors and a tail of five.
            let x: Vec<f32> = (0..37).map(|i| ((i * 13) % 11) as f32 * 0.37 - 1.5).collect();
            let dy: Vec<f32> = (0..37).map(|i| ((i * 7) % 5) as f32 * 0.25 - 0.5).collect();
            let relu: Vec<f32> = (0..37).map(|i| ((i * 5) % 3) as f32 - 1.0).collect();
            for (train, relu_out) in [(true, None), (true, Some(&relu[..])), (false, Some(&relu[..]))] {
                let channel = Channel {
                    g: &g,
                    params: &params,
                    c: 1,
                    train,
                    mean: 0.3,
                    inv_std: 1.7,
                    x: &x,
                    dy: &dy,
                    relu_out,
                    layout: Layout::Flat,
                };
                let (mut portable, mut avx2) = (vec![0.0; 37], vec![0.0; 37]);
                let sums = channel.backward(&mut portable);
                // SAFETY: the CPU supports AVX2, checked above.
                assert_eq!(unsafe { channel.backward_avx2(&mut avx2) }, sums, "train {train}");
                assert_eq!(avx2, portable, "train {train}");
                assert!(portable.iter().any(|&v| v != 0.0));
            }
        }
    }

    #[test]
    fn the_avx2_train_statistics_and_outputs_are_the_portable_ones_bit_for_bit() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // 37 values (four vectors and a tail of five) with a large offset, so that the
            // f64 sums' order shows in the variance's last bits.
            let x: Vec<f32> = (0..37).map(|i| ((i * 13) % 11) as f32 * 0.37 + 1000.0 / 3.0).collect();
            for relu in [false, true] {
                let (mut portable, mut avx2) = (vec![0.0; 37], vec![0.0; 37]);
                let stats = train_channel(1e-5, (2.0, -0.5), None, &x, &mut portable, relu);
                // SAFETY: the CPU supports AVX2, checked above.
                assert_eq!(unsafe { train_channel_avx2(1e-5, (2.0, -0.5), &x, &mut avx2, relu) }, stats);
                assert_eq!(avx2, portable, "relu {relu}");
                assert!(stats.1 > 0.0 && portable.iter().any(|&v| v != 0.0));
            }
        }
    }

    #[test]
    fn channels_split_over_threads_give_bit_identical_results() {
        let (g, params) = layer();
        let x: Vec<f32> = input().iter().map(|v| v / 8.0).collect();
        let dy: Vec<f32> = (0..16).map(|i| ((i * 7) % 5) as f32 * 0.25 - 0.5).collect();
        let run = |threads: usize| {
            let (mut y, mut stats) = (vec![0.0; 16], BatchStats::default());
            forward_train(&g, &params, 8, &x, &mut y, &mut stats, false, threads);
            let (mut dx, mut grad) = (vec![0.0; 16], vec![0.0; params.len()]);
            backward(
                &g,
                &params,
                8,
                &x,
                Some(&stats),
                &dy,
                None,
                Some((&mut dx, Layout::Flat)),
                Some(&mut grad),
                threads,
            );
            let mut grad_only = vec![0.0; params.len()];
            backward(&g, &params, 8, &x, Some(&stats), &dy, None, None, Some(&mut grad_only), threads);
            assert_eq!(grad_only, grad);
            (y, stats.mean, stats.var, stats.inv_std, dx, grad)
        };
        assert_eq!(run(2), run(1));
        assert_eq!(run(5), run(1));
    }

    #[test]
    fn a_padded_input_gradient_is_the_flat_one_inside_untouched_borders() {
        // Two channels of two 2 × 2 images (m = 8 a channel), gated by a ReLU, both modes;
        // written with one zero on every side into planes of 4 × 4 whose borders and slack
        // hold a marker.
        let (g, params) = layer();
        let x: Vec<f32> = input().iter().map(|v| v / 8.0).collect();
        let dy: Vec<f32> = (0..16).map(|i| ((i * 7) % 5) as f32 * 0.25 - 0.5).collect();
        let relu: Vec<f32> = (0..16).map(|i| ((i * 5) % 3) as f32 - 1.0).collect();
        let mut stats = BatchStats::default();
        forward_train(&g, &params, 8, &x, &mut [0.0; 16], &mut stats, false, 1);
        for (train, threads) in [(true, 1), (true, 2), (false, 2)] {
            let stats = train.then_some(&stats);
            let mut flat = vec![0.0; 16];
            backward(&g, &params, 8, &x, stats, &dy, Some(&relu), Some((&mut flat, Layout::Flat)), None, threads);
            let mut padded = vec![-7.0; 2 * 2 * 4 * 4 + 3];
            let out = Some((&mut padded[..], Layout::Padded { h: 2, w: 2, q: 1 }));
            backward(&g, &params, 8, &x, stats, &dy, Some(&relu), out, None, threads);
            let mut want = vec![-7.0; padded.len()];
            for (row, values) in flat.chunks_exact(2).enumerate() {
                let (plane, y) = (row / 2, row % 2);
                want[plane * 16 + (y + 1) * 4 + 1..][..2].copy_from_slice(values);
            }
            assert_eq!(padded, want, "train {train}, {threads} threads");
            assert!(flat.iter().any(|&v| v != 0.0));
        }
    }

    #[test]
    fn backward_of_both_modes_matches_central_differences() {
        let (g, params) = layer();
        let x: Vec<f32> = input().iter().map(|v| v / 8.0).collect();
        let dy: Vec<f32> = (0..16).map(|i| ((i * 7) % 5) as f32 * 0.25 - 0.5).collect();
        let (x64, p64): (Vec<f64>, Vec<f64>) =
            (x.iter().map(|&v| v as f64).collect(), params.iter().map(|&v| v as f64).collect());
        for train in [false, true] {
            let mut stats = BatchStats::default();
            if train {
                forward_train(&g, &params, 8, &x, &mut [0.0; 16], &mut stats, false, 1);
            }
            let (mut dx, mut grad) = (vec![0.0; 16], vec![0.0; params.len()]);
            backward(
                &g,
                &params,
                8,
                &x,
                train.then_some(&stats),
                &dy,
                None,
                Some((&mut dx, Layout::Flat)),
                Some(&mut grad),
                1,
            );
            // f64 central differences with h = 1e-6: truncation ~1e-12, rounding ~1e-10. The
            // engine's f32 gradients of O(1) err by ~1e-6; a wrong term is off by O(0.1).
            let h = 1e-6;
            let fd = |i: usize, of_params: bool| {
                let at = |d: f64| {
                    let (mut x, mut p) = (x64.clone(), p64.clone());
                    if of_params {
                        p[i] += d
                    } else {
                        x[i] += d
                    }
                    objective(&p, &x, &dy, train)
                };
                (at(h) - at(-h)) / (2.0 * h)
            };
            for (i, &got) in dx.iter().enumerate() {
                let want = fd(i, false);
                assert!(
                    (got as f64 - want).abs() < 1e-4 * want.abs().max(1.0),
                    "train {train}: dx[{i}] {got} vs {want}"
                );
            }
            for (i, &got) in grad[..4].iter().enumerate() {
                let want = fd(i, true);
                assert!(
                    (got as f64 - want).abs() < 1e-4 * want.abs().max(1.0),
                    "train {train}: dγ, dβ[{i}] {got} vs {want}"
                );
            }
        }
    }
}

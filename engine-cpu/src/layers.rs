//! The data-movement kernels around the matrix products: unfolding (im2col) and its
//! adjoint, pooling, flattening, residual sums, biases, dropout and the softmax
//! cross-entropy.
//!
//! All of them work on the `[c, n, s]` layout of [`super::plan`]: channel `c` of image `i`
//! is the contiguous plane `x[(c·n + i)·s ..][..s]`.

use super::activation;
use super::parallel;
use super::plan::{ConvGeom, PoolGeom};

/// Unfolds the input of a convolution: row `(ci, ky, kx)` (a weight row's order), column
/// `(i, oy, ox)` holds `x[ci, i, oy·stride + ky − pad, ox·stride + kx − pad]`, zero in the
/// padding.
///
/// # Shapes
/// - `x`: `[cin, n, h·w]`
/// - `cols`: `[cin·k·k, n·oh·ow]`
pub(crate) fn unfold(g: &ConvGeom, n: usize, x: &[f32], cols: &mut [f32], threads: usize) {
    let (plane, out_plane) = (g.in_plane(), g.out_plane());
    let width = n * out_plane;
    assert!(x.len() >= g.cin * n * plane && cols.len() >= g.unfolded() * width);
    // Rows are independent: threads take runs of them.
    parallel::per_channel(threads, g.unfolded(), cols, width, |row, dst_row| {
        let (ci, ky, kx) = (row / (g.k * g.k), row / g.k % g.k, row % g.k);
        for i in 0..n {
            let src = &x[(ci * n + i) * plane..][..plane];
            let dst = &mut dst_row[i * out_plane..][..out_plane];
            unfold_plane(g, ky, kx, src, dst);
        }
    });
}

/// The output columns `[ox_lo, ox_hi)` whose input column `ox·stride + kx − pad` lies inside
/// the image.
fn valid_columns(g: &ConvGeom, kx: usize) -> (usize, usize) {
    // ix = ox·s + kx − pad ≥ 0  ⇔  ox ≥ ceil((pad − kx) / s)
    let lo = if g.pad > kx { (g.pad - kx).div_ceil(g.stride) } else { 0 };
    // ix ≤ w − 1  ⇔  ox ≤ (w − 1 + pad − kx) / s
    let hi = if g.w + g.pad > kx { ((g.w - 1 + g.pad - kx) / g.stride + 1).min(g.ow) } else { 0 };
    (lo.min(hi), hi)
}

/// One kernel offset `(ky, kx)` of one image plane.
fn unfold_plane(g: &ConvGeom, ky: usize, kx: usize, src: &[f32], dst: &mut [f32]) {
    let (lo, hi) = valid_columns(g, kx);
    for oy in 0..g.oh {
        let out = &mut dst[oy * g.ow..(oy + 1) * g.ow];
        let iy = (oy * g.stride + ky) as isize - g.pad as isize;
        if iy < 0 || iy >= g.h as isize || lo == hi {
            out.fill(0.0);
            continue;
        }
        let row = &src[iy as usize * g.w..(iy as usize + 1) * g.w];
        out[..lo].fill(0.0);
        out[hi..].fill(0.0);
        let first = lo * g.stride + kx - g.pad;
        if g.stride == 1 {
            copy_short(&mut out[lo..hi], &row[first..first + (hi - lo)]);
        } else {
            for (o, ix) in out[lo..hi].iter_mut().zip((first..).step_by(g.stride)) {
                *o = row[ix];
            }
        }
    }
}

/// The adjoint of [`unfold`]: every column value is added back to the input position it
/// came from (padding positions are dropped).
///
/// # Shapes
/// - `cols`: `[cin·k·k, n·oh·ow]`
/// - `dx`: `[cin, n, h·w]`, overwritten
pub(crate) fn fold(g: &ConvGeom, n: usize, cols: &[f32], dx: &mut [f32], threads: usize) {
    let (plane, out_plane) = (g.in_plane(), g.out_plane());
    let width = n * out_plane;
    assert!(dx.len() >= g.cin * n * plane && cols.len() >= g.unfolded() * width);
    // Input channels over threads: each channel's planes are summed by one thread, in the
    // same order whatever the split.
    parallel::per_channel(threads, g.cin, dx, n * plane, |ci, dx| {
        dx.fill(0.0);
        for (i, dst) in dx.chunks_exact_mut(plane).enumerate() {
            for ky in 0..g.k {
                for kx in 0..g.k {
                    let row = (ci * g.k + ky) * g.k + kx;
                    let src = &cols[row * width + i * out_plane..][..out_plane];
                    fold_plane(g, ky, kx, src, dst);
                }
            }
        }
    });
}

/// One kernel offset `(ky, kx)` of one image plane, added into `dst`.
fn fold_plane(g: &ConvGeom, ky: usize, kx: usize, src: &[f32], dst: &mut [f32]) {
    let (lo, hi) = valid_columns(g, kx);
    if lo == hi {
        return;
    }
    for oy in 0..g.oh {
        let iy = (oy * g.stride + ky) as isize - g.pad as isize;
        if iy < 0 || iy >= g.h as isize {
            continue;
        }
        let row = &mut dst[iy as usize * g.w..(iy as usize + 1) * g.w];
        let first = lo * g.stride + kx - g.pad;
        let values = &src[oy * g.ow + lo..oy * g.ow + hi];
        if g.stride == 1 {
            add_short(&mut row[first..first + values.len()], values);
        } else {
            for (&v, ix) in values.iter().zip((first..).step_by(g.stride)) {
                row[ix] += v;
            }
        }
    }
}

/// `dst = src` for the short rows of small feature maps: fixed-size pieces that compile to
/// vector moves, where `copy_from_slice` would call `memcpy` (~15 ns) for every 8 floats.
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    let mut j = 0;
    while j + 8 <= n {
        dst[j..j + 8].copy_from_slice(&src[j..j + 8]);
        j += 8;
    }
    if j + 4 <= n {
        dst[j..j + 4].copy_from_slice(&src[j..j + 4]);
        j += 4;
    }
    if j + 2 <= n {
        dst[j..j + 2].copy_from_slice(&src[j..j + 2]);
        j += 2;
    }
    if j < n {
        dst[j] = src[j];
    }
}

/// `dst += src`, in the fixed-size pieces of [`copy_short`].
#[inline(always)]
fn add_short(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    let mut j = 0;
    while j + 8 <= n {
        let (d, s) = (&mut dst[j..j + 8], &src[j..j + 8]);
        for k in 0..8 {
            d[k] += s[k];
        }
        j += 8;
    }
    while j < n {
        dst[j] += src[j];
        j += 1;
    }
}

/// Adds `bias[c]` to every value of channel `c`.
///
/// # Shapes
/// - `y`: `[c, width]`, `bias`: `[c]`
pub(crate) fn add_bias(y: &mut [f32], bias: &[f32], width: usize) {
    for (row, &b) in y.chunks_exact_mut(width).zip(bias) {
        row.iter_mut().for_each(|v| *v += b);
    }
}

/// Adds the row sums of `dy` to `db`: the bias gradient.
///
/// # Shapes
/// - `dy`: `[c, width]`, `db`: `[c]`
pub(crate) fn add_row_sums(db: &mut [f32], dy: &[f32], width: usize) {
    for (d, row) in db.iter_mut().zip(dy.chunks_exact(width)) {
        *d += sum(row);
    }
}

/// The sum of `values` in eight interleaved partial sums: a fixed order that vectorises,
/// where a single running sum would wait on every addition.
fn sum(values: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l += v;
        }
    }
    let pairs = [lanes[0] + lanes[4], lanes[1] + lanes[5], lanes[2] + lanes[6], lanes[3] + lanes[7]];
    (pairs[0] + pairs[2]) + (pairs[1] + pairs[3]) + rest.iter().sum::<f32>()
}

/// Max pooling of every plane; `argmax` records, per output, the input offset (within its
/// plane) of the first maximum of the window, as PyTorch picks it.
///
/// # Shapes
/// - `x`: `[planes, h·w]`, `y` and `argmax`: `[planes, oh·ow]`
pub(crate) fn max_pool(g: &PoolGeom, planes: usize, x: &[f32], y: &mut [f32], argmax: &mut [u32]) {
    let (ip, op) = (g.h * g.w, g.oh * g.ow);
    #[cfg(target_arch = "x86_64")]
    let avx2 = std::arch::is_x86_feature_detected!("avx2");
    for p in 0..planes {
        let src = &x[p * ip..(p + 1) * ip];
        let (dst, arg) = (&mut y[p * op..(p + 1) * op], &mut argmax[p * op..(p + 1) * op]);
        if g.k == 2 && g.stride == 2 {
            for oy in 0..g.oh {
                let (top, bottom) = (&src[2 * oy * g.w..][..g.w], &src[(2 * oy + 1) * g.w..][..g.w]);
                let (row, row_arg) = (&mut dst[oy * g.ow..][..g.ow], &mut arg[oy * g.ow..][..g.ow]);
                let at = (2 * oy * g.w) as u32;
                #[allow(unused_mut)]
                let mut done = 0;
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    // SAFETY: the CPU supports AVX2, checked above.
                    done = unsafe { pool2_row_avx2(top, bottom, at, row, row_arg) };
                }
                pool2_row(top, bottom, at, done, row, row_arg);
            }
            continue;
        }
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let first = oy * g.stride * g.w + ox * g.stride;
                let mut best = (src[first], first);
                for ky in 0..g.k {
                    for kx in 0..g.k {
                        let at = first + ky * g.w + kx;
                        if src[at] > best.0 {
                            best = (src[at], at);
                        }
                    }
                }
                dst[oy * g.ow + ox] = best.0;
                arg[oy * g.ow + ox] = best.1 as u32;
            }
        }
    }
}

/// One output row of the 2×2, stride-2 window from output `from` on: a tournament of
/// selects (no data-dependent branches, which would mispredict on every other window); ties
/// (and NaNs) keep the earlier input. `at` is the row's first input offset in its plane,
/// `top.len()` the plane's width.
fn pool2_row(top: &[f32], bottom: &[f32], at: u32, from: usize, dst: &mut [f32], arg: &mut [u32]) {
    let w = top.len() as u32;
    for ox in from..dst.len() {
        let at = at + 2 * ox as u32;
        let (a, b, c, d) = (top[2 * ox], top[2 * ox + 1], bottom[2 * ox], bottom[2 * ox + 1]);
        let (m1, i1) = if b > a { (b, at + 1) } else { (a, at) };
        let (m2, i2) = if d > c { (d, at + w + 1) } else { (c, at + w) };
        let (m, i) = if m2 > m1 { (m2, i2) } else { (m1, i1) };
        dst[ox] = m;
        arg[ox] = i;
    }
}

/// [`pool2_row`] eight outputs at a time, the same comparisons lane by lane (ordered
/// greater-than, false for NaN, so the same winner); returns how many outputs it wrote
/// (the rest, fewer than eight, are left to [`pool2_row`]).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pool2_row_avx2(top: &[f32], bottom: &[f32], at: u32, dst: &mut [f32], arg: &mut [u32]) -> usize {
    use std::arch::x86_64::*;
    let w = top.len();
    let n = dst.len() / 8 * 8;
    assert!(2 * n <= w && bottom.len() == w && arg.len() == dst.len());
    // Even and odd columns of 16 inputs, in order: the in-lane shuffle interleaves the two
    // loads' halves, the cross-lane permute puts them back in order.
    // SAFETY (of the loads): each caller passes a pointer with 16 values behind it.
    let split = |p: *const f32| {
        let (lo, hi) = unsafe { (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) };
        let order = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
        (order(_mm256_shuffle_ps::<0b10_00_10_00>(lo, hi)), order(_mm256_shuffle_ps::<0b11_01_11_01>(lo, hi)))
    };
    let steps = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    let below = _mm256_set1_epi32(w as i32);
    let mut ox = 0;
    while ox < n {
        // SAFETY: 2·ox + 16 ≤ 2n ≤ w for both rows (asserted above).
        let ((a, b), (c, d)) = unsafe { (split(top.as_ptr().add(2 * ox)), split(bottom.as_ptr().add(2 * ox))) };
        let first = _mm256_add_epi32(_mm256_set1_epi32((at as usize + 2 * ox) as i32), steps);
        let right1 = _mm256_cmp_ps::<_CMP_GT_OQ>(b, a);
        let (m1, i1) = (_mm256_blendv_ps(a, b, right1), _mm256_sub_epi32(first, _mm256_castps_si256(right1)));
        let right2 = _mm256_cmp_ps::<_CMP_GT_OQ>(d, c);
        let second = _mm256_add_epi32(first, below);
        let (m2, i2) = (_mm256_blendv_ps(c, d, right2), _mm256_sub_epi32(second, _mm256_castps_si256(right2)));
        let lower = _mm256_cmp_ps::<_CMP_GT_OQ>(m2, m1);
        let m = _mm256_blendv_ps(m1, m2, lower);
        let i = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(i1), _mm256_castsi256_ps(i2), lower));
        // SAFETY: ox + 8 ≤ n ≤ dst.len() = arg.len().
        unsafe {
            _mm256_storeu_ps(dst.as_mut_ptr().add(ox), m);
            _mm256_storeu_si256(arg.as_mut_ptr().add(ox).cast(), i);
        }
        ox += 8;
    }
    n
}

/// Routes each output gradient to the input that won its window (added, since windows may
/// overlap).
///
/// # Shapes
/// - `dy`, `argmax`: `[planes, oh·ow]`, `dx`: `[planes, h·w]`, overwritten
pub(crate) fn max_pool_backward(g: &PoolGeom, planes: usize, dy: &[f32], argmax: &[u32], dx: &mut [f32]) {
    let (ip, op) = (g.h * g.w, g.oh * g.ow);
    dx[..planes * ip].fill(0.0);
    for p in 0..planes {
        let dst = &mut dx[p * ip..(p + 1) * ip];
        for (&d, &a) in dy[p * op..(p + 1) * op].iter().zip(&argmax[p * op..(p + 1) * op]) {
            dst[a as usize] += d;
        }
    }
}

/// Average pooling of every plane (no padding, so every window has `k²` inputs).
///
/// # Shapes
/// - `x`: `[planes, h·w]`, `y`: `[planes, oh·ow]`
pub(crate) fn avg_pool(g: &PoolGeom, planes: usize, x: &[f32], y: &mut [f32]) {
    let (ip, op) = (g.h * g.w, g.oh * g.ow);
    let scale = 1.0 / (g.k * g.k) as f32;
    for p in 0..planes {
        let src = &x[p * ip..(p + 1) * ip];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let first = oy * g.stride * g.w + ox * g.stride;
                let mut sum = 0.0;
                for ky in 0..g.k {
                    sum += src[first + ky * g.w..][..g.k].iter().sum::<f32>();
                }
                y[p * op + oy * g.ow + ox] = sum * scale;
            }
        }
    }
}

/// Spreads each output gradient evenly over its window.
///
/// # Shapes
/// - `dy`: `[planes, oh·ow]`, `dx`: `[planes, h·w]`, overwritten
pub(crate) fn avg_pool_backward(g: &PoolGeom, planes: usize, dy: &[f32], dx: &mut [f32]) {
    let (ip, op) = (g.h * g.w, g.oh * g.ow);
    let scale = 1.0 / (g.k * g.k) as f32;
    dx[..planes * ip].fill(0.0);
    for p in 0..planes {
        let dst = &mut dx[p * ip..(p + 1) * ip];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let d = dy[p * op + oy * g.ow + ox] * scale;
                let first = oy * g.stride * g.w + ox * g.stride;
                for ky in 0..g.k {
                    dst[first + ky * g.w..][..g.k].iter_mut().for_each(|v| *v += d);
                }
            }
        }
    }
}

/// The mean of every plane (global average pooling).
///
/// # Shapes
/// - `x`: `[planes, s]`, `y`: `[planes]`
pub(crate) fn global_avg_pool(s: usize, x: &[f32], y: &mut [f32]) {
    let scale = 1.0 / s as f32;
    for (y, plane) in y.iter_mut().zip(x.chunks_exact(s)) {
        *y = plane.iter().sum::<f32>() * scale;
    }
}

/// Spreads each plane's gradient evenly over the plane.
///
/// # Shapes
/// - `dy`: `[planes]`, `dx`: `[planes, s]`, overwritten
pub(crate) fn global_avg_pool_backward(s: usize, dy: &[f32], dx: &mut [f32]) {
    let scale = 1.0 / s as f32;
    for (&d, plane) in dy.iter().zip(dx.chunks_exact_mut(s)) {
        plane.fill(d * scale);
    }
}

/// The elementwise sum of the inputs (a residual add), `((a + b) + c) + …`, or its ReLU
/// when `relu` (a following ReLU fused into the last pass). The first two inputs are summed
/// in one pass.
///
/// # Shapes
/// - each input and `y`: the same length
pub(crate) fn sum_into<'a>(inputs: &[&'a [f32]], y: &mut [f32], relu: bool, threads: usize) {
    let finish = |v: f32, last: bool| if relu && last { activation::relu(v) } else { v };
    parallel::in_parts(threads, y, |start, y| {
        let len = y.len();
        let at = |x: &'a [f32]| -> &'a [f32] { &x[start..][..len] };
        activation::with_avx2(
            #[inline(always)]
            || match inputs {
                [] => unreachable!("an add has inputs"),
                [a] => y.iter_mut().zip(at(a)).for_each(|(y, &a)| *y = finish(a, true)),
                [a, b, rest @ ..] => {
                    let last = rest.is_empty();
                    y.iter_mut().zip(at(a)).zip(at(b)).for_each(|((y, &a), &b)| *y = finish(a + b, last));
                    for (i, x) in rest.iter().enumerate() {
                        let last = i + 1 == rest.len();
                        y.iter_mut().zip(at(x)).for_each(|(y, &x)| *y = finish(*y + x, last));
                    }
                }
            },
        )
    });
}

/// `[c, n, s]` to `[c·s, n]`: feature `c·s + j` of image `i` is `x[c, i, j]` (C, H, W order).
///
/// # Shapes
/// - `x`: `[c, n, s]`, `y`: `[c·s, n]`
pub(crate) fn flatten(c: usize, n: usize, s: usize, x: &[f32], y: &mut [f32]) {
    for ci in 0..c {
        for i in 0..n {
            let src = &x[(ci * n + i) * s..][..s];
            for (j, &v) in src.iter().enumerate() {
                y[(ci * s + j) * n + i] = v;
            }
        }
    }
}

/// The inverse of [`flatten`].
///
/// # Shapes
/// - `dy`: `[c·s, n]`, `dx`: `[c, n, s]`
pub(crate) fn unflatten(c: usize, n: usize, s: usize, dy: &[f32], dx: &mut [f32]) {
    for ci in 0..c {
        for i in 0..n {
            let dst = &mut dx[(ci * n + i) * s..][..s];
            for (j, v) in dst.iter_mut().enumerate() {
                *v = dy[(ci * s + j) * n + i];
            }
        }
    }
}

/// Copies images into the `[c, n, h·w]` layout.
///
/// # Shapes
/// - each image: `[c, h·w]`; `x`: `[c, n, h·w]`
pub(crate) fn gather<'a>(c: usize, plane: usize, images: impl ExactSizeIterator<Item = &'a [f32]>, x: &mut [f32]) {
    let n = images.len();
    for (i, image) in images.enumerate() {
        for ci in 0..c {
            x[(ci * n + i) * plane..][..plane].copy_from_slice(&image[ci * plane..(ci + 1) * plane]);
        }
    }
}

/// Multiplies by the dropout factors of the chunk's images: `mask` holds, for every image of
/// the whole batch, its factors in C, H, W order (`0` or `1/(1 − p)`); the chunk starts at
/// batch image `first`. The same call is the backward pass.
///
/// # Shapes
/// - `x`, `y`: `[c, n, s]`; `mask`: `[batch, c·s]`
pub(crate) fn dropout(c: usize, n: usize, s: usize, first: usize, mask: &[f32], x: &[f32], y: &mut [f32]) {
    let features = c * s;
    for ci in 0..c {
        for i in 0..n {
            let at = (ci * n + i) * s;
            let m = &mask[(first + i) * features + ci * s..][..s];
            for ((y, &x), &m) in y[at..at + s].iter_mut().zip(&x[at..at + s]).zip(m) {
                *y = x * m;
            }
        }
    }
}

/// Cross-entropy of each image's logits against its label: returns the summed loss (f64)
/// and the number of correct argmax predictions, and writes `scale · (softmax − onehot)`,
/// the gradient of `scale ·` the summed loss, into `dlogits`.
///
/// # Shapes
/// - `logits`, `dlogits`: `[classes, n]`; `labels`: `[n]`
pub(crate) fn softmax_cross_entropy(
    classes: usize,
    logits: &[f32],
    labels: &[u32],
    scale: f32,
    dlogits: Option<&mut [f32]>,
) -> (f64, usize) {
    let n = labels.len();
    let mut loss = 0.0f64;
    let mut correct = 0;
    let mut probs = vec![0f32; classes];
    let mut dlogits = dlogits;
    for (i, &label) in labels.iter().enumerate() {
        let z = |c: usize| logits[c * n + i];
        let (mut max, mut arg) = (z(0), 0);
        for c in 1..classes {
            if z(c) > max {
                (max, arg) = (z(c), c);
            }
        }
        correct += usize::from(arg == label as usize);
        let mut sum = 0.0f64;
        for (c, p) in probs.iter_mut().enumerate() {
            *p = (z(c) - max).exp();
            sum += *p as f64;
        }
        loss += sum.ln() - (z(label as usize) - max) as f64;
        if let Some(d) = dlogits.as_deref_mut() {
            let inv = (1.0 / sum) as f32;
            for (c, &p) in probs.iter().enumerate() {
                let target = if c == label as usize { 1.0 } else { 0.0 };
                d[c * n + i] = scale * (p * inv - target);
            }
        }
    }
    (loss, correct)
}

/// Distillation of teacher logits `z` into student logits `z_m` at temperature `T`: returns
/// the summed loss `Σ_i T² · KL(softmax(z_i/T) ‖ softmax(z_m,i/T))` (f64), and writes
/// `scale · T · (q − p)`, the gradient of `scale ·` the summed loss with respect to the
/// student logits, into `dlogits`.
///
/// Both log-softmaxes are taken in f64 and the KL summed as `Σ p · (log p − log q)`: equal
/// logits give exactly zero, and a student close to its teacher loses no digits to a
/// difference of entropies.
///
/// # Shapes
/// - `student`, `teacher`, `dlogits`: `[classes, n]`
pub(crate) fn softmax_distillation(
    classes: usize,
    student: &[f32],
    teacher: &[f32],
    temperature: f64,
    scale: f32,
    dlogits: &mut [f32],
) -> f64 {
    let n = student.len() / classes;
    assert!(student.len() == classes * n && teacher.len() == student.len() && dlogits.len() >= student.len());
    let log_sum_exp = |z: &[f32], i: usize| {
        let max = (0..classes).map(|c| z[c * n + i] as f64 / temperature).fold(f64::NEG_INFINITY, f64::max);
        max + (0..classes).map(|c| (z[c * n + i] as f64 / temperature - max).exp()).sum::<f64>().ln()
    };
    let mut loss = 0.0f64;
    for i in 0..n {
        let (lse_p, lse_q) = (log_sum_exp(teacher, i), log_sum_exp(student, i));
        let mut kl = 0.0f64;
        for c in 0..classes {
            let log_p = teacher[c * n + i] as f64 / temperature - lse_p;
            let log_q = student[c * n + i] as f64 / temperature - lse_q;
            let (p, q) = (log_p.exp(), log_q.exp());
            // A teacher probability that underflows to 0 contributes 0 (p · log p → 0).
            if p > 0.0 {
                kl += p * (log_p - log_q);
            }
            dlogits[c * n + i] = scale * (temperature * (q - p)) as f32;
        }
        loss += temperature * temperature * kl;
    }
    loss
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    fn geometry(cin: usize, h: usize, w: usize, k: usize, stride: usize, pad: usize) -> ConvGeom {
        let (oh, ow) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
        ConvGeom { cin, h, w, cout: 1, k, stride, pad, oh, ow }
    }

    /// The value unfold must put at `(row, col)`, read straight from the definition.
    fn naive_unfold(g: &ConvGeom, n: usize, x: &[f32]) -> Vec<f32> {
        let width = n * g.oh * g.ow;
        let mut cols = vec![0.0; g.unfolded() * width];
        for ci in 0..g.cin {
            for ky in 0..g.k {
                for kx in 0..g.k {
                    for i in 0..n {
                        for oy in 0..g.oh {
                            for ox in 0..g.ow {
                                let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                                let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                                let inside = iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w;
                                let v = if inside {
                                    x[(ci * n + i) * g.h * g.w + iy as usize * g.w + ix as usize]
                                } else {
                                    0.0
                                };
                                cols[((ci * g.k + ky) * g.k + kx) * width + i * g.oh * g.ow + oy * g.ow + ox] = v;
                            }
                        }
                    }
                }
            }
        }
        cols
    }

    #[test]
    fn unfold_and_fold_match_the_definition_for_every_stride_and_padding() {
        for (cin, h, w, k, stride, pad) in
            [(1, 6, 6, 3, 1, 0), (2, 7, 5, 3, 2, 1), (3, 5, 5, 2, 1, 2), (2, 9, 8, 4, 3, 1), (1, 4, 4, 5, 1, 2)]
        {
            let g = geometry(cin, h, w, k, stride, pad);
            let n = 3;
            let x = random(cin * n * h * w, 1);
            let mut cols = vec![f32::NAN; g.unfolded() * n * g.out_plane()];
            unfold(&g, n, &x, &mut cols, 1);
            assert_eq!(cols, naive_unfold(&g, n, &x), "{g:?}");
            let mut on_three = vec![f32::NAN; cols.len()];
            unfold(&g, n, &x, &mut on_three, 3);
            assert_eq!(on_three, cols, "{g:?}, 3 threads");
            // fold is the adjoint: <unfold(x), c> = <x, fold(c)> for any c.
            let c = random(cols.len(), 2);
            let mut folded = vec![f32::NAN; x.len()];
            fold(&g, n, &c, &mut folded, 1);
            let lhs: f64 = cols.iter().zip(&c).map(|(a, b)| (a * b) as f64).sum();
            let rhs: f64 = x.iter().zip(&folded).map(|(a, b)| (a * b) as f64).sum();
            assert!((lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0), "{g:?}: {lhs} {rhs}");
            let mut folded_on_three = vec![f32::NAN; x.len()];
            fold(&g, n, &c, &mut folded_on_three, 3);
            assert_eq!(folded_on_three, folded, "{g:?}, 3 threads");
        }
    }

    #[test]
    fn sums_of_one_to_four_inputs_add_in_order_and_take_a_fused_relu_at_the_end() {
        // Long enough to split over threads (parts of at least 8,192 values).
        let len = 20_011;
        let inputs: Vec<Vec<f32>> = (0..4).map(|i| random(len, 10 + i)).collect();
        for (count, threads) in (1..=4).flat_map(|count| [(count, 1), (count, 3)]) {
            let xs: Vec<&[f32]> = inputs[..count].iter().map(|v| v.as_slice()).collect();
            // ((a + b) + c) + d, as a chain of adds would round it.
            let want: Vec<f32> = (0..len).map(|j| xs[1..].iter().fold(xs[0][j], |s, x| s + x[j])).collect();
            let mut y = vec![f32::NAN; len];
            sum_into(&xs, &mut y, false, threads);
            assert_eq!(y, want, "{count} inputs, {threads} threads");
            sum_into(&xs, &mut y, true, threads);
            let relu: Vec<f32> = want.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect();
            assert_eq!(y, relu, "{count} inputs, {threads} threads, ReLU");
            assert!(y.contains(&0.0) && y.iter().any(|&v| v > 0.0), "both signs occur");
        }
    }

    #[test]
    fn two_by_two_pooling_picks_the_scalar_tournaments_winner_with_ties_and_nans() {
        // Widths with and without a tail past the eight-wide blocks, odd ones with a column
        // no window reads; values from five levels, so ties are everywhere, and some NaNs.
        for (h, w) in [(6, 24), (4, 37), (2, 16), (8, 8)] {
            let g = PoolGeom { h, w, k: 2, stride: 2, oh: h / 2, ow: w / 2 };
            let planes = 3;
            let mut x: Vec<f32> = random(planes * h * w, 5).iter().map(|v| (v * 2.5).round()).collect();
            x.iter_mut().step_by(13).for_each(|v| *v = f32::NAN);
            let (mut y, mut arg) = (vec![0.0; planes * g.oh * g.ow], vec![0u32; planes * g.oh * g.ow]);
            max_pool(&g, planes, &x, &mut y, &mut arg);
            for p in 0..planes {
                for oy in 0..g.oh {
                    let src = &x[p * h * w..][..h * w];
                    let (top, bottom) = (&src[2 * oy * w..][..w], &src[(2 * oy + 1) * w..][..w]);
                    let (mut want, mut want_arg) = (vec![0.0; g.ow], vec![0u32; g.ow]);
                    pool2_row(top, bottom, (2 * oy * w) as u32, 0, &mut want, &mut want_arg);
                    let o = p * g.oh * g.ow + oy * g.ow;
                    let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&y[o..][..g.ow]), bits(&want), "{h}x{w}, plane {p}, row {oy}");
                    assert_eq!(arg[o..][..g.ow], want_arg[..], "{h}x{w}, plane {p}, row {oy}");
                }
            }
            assert!(
                y.iter().any(|v| v.is_nan()) && arg.iter().any(|&i| i % 2 == 1),
                "NaNs and right-hand winners occur"
            );
        }
    }

    #[test]
    fn pooling_matches_window_loops_and_backward_is_the_adjoint() {
        for (h, w, k, stride) in [(6, 6, 2, 2), (7, 5, 3, 2), (5, 5, 2, 1), (8, 8, 3, 3)] {
            let g = PoolGeom { h, w, k, stride, oh: (h - k) / stride + 1, ow: (w - k) / stride + 1 };
            let planes = 4;
            let x = random(planes * h * w, 3);
            let (mut y, mut arg) = (vec![0.0; planes * g.oh * g.ow], vec![0u32; planes * g.oh * g.ow]);
            max_pool(&g, planes, &x, &mut y, &mut arg);
            let mut avg = vec![0.0; y.len()];
            avg_pool(&g, planes, &x, &mut avg);
            for p in 0..planes {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let window: Vec<f32> = (0..k * k)
                            .map(|j| x[p * h * w + (oy * stride + j / k) * w + ox * stride + j % k])
                            .collect();
                        let o = p * g.oh * g.ow + oy * g.ow + ox;
                        assert_eq!(y[o], window.iter().copied().fold(f32::MIN, f32::max));
                        assert_eq!(x[p * h * w + arg[o] as usize], y[o]);
                        let mean = window.iter().sum::<f32>() / (k * k) as f32;
                        assert!((avg[o] - mean).abs() < 1e-6);
                    }
                }
            }
            let dy = random(y.len(), 4);
            let mut dx = vec![f32::NAN; x.len()];
            avg_pool_backward(&g, planes, &dy, &mut dx);
            let lhs: f64 = avg.iter().zip(&dy).map(|(a, b)| (a * b) as f64).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| (a * b) as f64).sum();
            assert!((lhs - rhs).abs() < 1e-5);
            max_pool_backward(&g, planes, &dy, &arg, &mut dx);
            let lhs: f64 = y.iter().zip(&dy).map(|(a, b)| (a * b) as f64).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| (a * b) as f64).sum();
            assert!((lhs - rhs).abs() < 1e-5);
        }
    }

    #[test]
    fn flatten_orders_features_c_h_w_and_unflatten_inverts_it() {
        let (c, n, s) = (3, 2, 4);
        let x: Vec<f32> = (0..c * n * s).map(|v| v as f32).collect();
        let mut y = vec![0.0; x.len()];
        flatten(c, n, s, &x, &mut y);
        // Image 1, feature c·s + j = x[c, 1, j].
        for ci in 0..c {
            for j in 0..s {
                assert_eq!(y[(ci * s + j) * n + 1], x[(ci * n + 1) * s + j]);
            }
        }
        let mut back = vec![0.0; x.len()];
        unflatten(c, n, s, &y, &mut back);
        assert_eq!(back, x);
    }

    #[test]
    fn dropout_multiplies_by_the_batch_mask_of_each_image() {
        let (c, n, s, first) = (2, 3, 2, 1);
        let mask: Vec<f32> = (0..5 * c * s).map(|v| v as f32).collect();
        let x = vec![1.0; c * n * s];
        let mut y = vec![0.0; x.len()];
        dropout(c, n, s, first, &mask, &x, &mut y);
        // Chunk image 2 is batch image 3; its channel 1, position 0 is feature 2.
        assert_eq!(y[(n + 2) * s], mask[3 * c * s + 2]);
    }

    #[test]
    fn cross_entropy_and_gradient_by_hand() {
        // Two classes, two images: logits (0, ln 3) and (2, 2).
        let logits = [0.0, 2.0, 3f32.ln(), 2.0];
        let mut d = [0.0; 4];
        let (loss, correct) = softmax_cross_entropy(2, &logits, &[1, 0], 0.5, Some(&mut d));
        let want = -(0.75f64).ln() - (0.5f64).ln();
        assert!((loss - want).abs() < 1e-6, "{loss} {want}");
        assert_eq!(correct, 2); // ties go to the first class
        let expect = [0.5 * 0.25, 0.5 * (0.5 - 1.0), 0.5 * (0.75 - 1.0), 0.5 * 0.5];
        for (a, b) in d.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn distillation_and_gradient_by_hand() {
        // Two classes, two images at T = 2: teacher logits (0, 2 ln 3) and (2, 2), student
        // logits (0, 0) and (2, 2 + 2 ln 3); p = (1/4, 3/4), (1/2, 1/2); q = (1/2, 1/2), (1/4, 3/4).
        let (l3, t) = (3f32.ln(), 2.0);
        let teacher = [0.0, 2.0, 2.0 * l3, 2.0];
        let student = [0.0, 2.0, 0.0, 2.0 + 2.0 * l3];
        let mut d = [f32::NAN; 4];
        let loss = softmax_distillation(2, &student, &teacher, t, 0.5, &mut d);
        let kl = |p: [f64; 2], q: [f64; 2]| p[0] * (p[0] / q[0]).ln() + p[1] * (p[1] / q[1]).ln();
        let want = t * t * (kl([0.25, 0.75], [0.5, 0.5]) + kl([0.5, 0.5], [0.25, 0.75]));
        assert!((loss - want).abs() < 1e-6, "{loss} {want}");
        let expect = [0.5 * 2.0 * 0.25, 0.5 * 2.0 * -0.25, 0.5 * 2.0 * -0.25, 0.5 * 2.0 * 0.25];
        for (a, b) in d.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{d:?}");
        }
        // A student equal to its teacher: no loss, no gradient, exactly.
        assert_eq!(softmax_distillation(2, &teacher, &teacher, t, 0.5, &mut d), 0.0);
        assert!(d.iter().all(|&g| g == 0.0), "{d:?}");
    }
}

//! Stride-1 convolutions computed straight from zero-padded input planes by AVX2/FMA
//! kernels (AVX-512 ones where the CPU has them), without an unfolded copy of the input.
//!
//! With a handful of channels (`cnn-s`: 1→8→6), unfolding costs more than the products:
//! every input value is copied `k²` times into rows too short for a matrix kernel to
//! amortise its packing. Here the accumulators stay in registers instead: a block of up to
//! 12 vectors (output channels × one or two 8-wide vectors of one output row, or one vector
//! of two rows) gathers all `cin·k²` taps, reading each input vector once per tap for all
//! channels of the block.
//!
//! - forward: `y[co, i, oy, ox] = b[co] + Σ w[co, ci, ky, kx] · xp[ci, i, oy+ky, ox+kx]`;
//! - input gradient: the same kernel on the output gradient padded by `k − 1 − pad`, with
//!   the weights flipped and transposed ([`flip`]);
//! - weight gradient: `dw[co, ci, ky, kx] = Σ dy[co, i, oy, ox] · xp[ci, i, oy+ky, ox+kx]`,
//!   vectorised along `ox` and reduced across lanes once per weight.
//!
//! On a CPU with AVX-512 (F, DQ, VL), the forward kernel runs 16-lane vectors over an
//! image's padded rows, and the weight gradient holds two weights' 8-lane sums in one
//! 16-lane vector (or, for wider kernels and unpadded gradients, uses the 32 registers for
//! blocks of twice as many channels). Every sum is the same, in the same order, as the AVX2
//! kernels': the results do not depend on which kernel ran (tested).
//!
//! Every sum runs in a fixed order, so results are deterministic; they differ from the
//! unfolded path only by rounding. Used when the CPU has AVX2 and FMA, the stride is 1 and
//! the padding is below the kernel size; everything else takes the unfolding path.

use super::parallel::share;
use super::plan::ConvGeom;

/// Values readable past the last plane: vector loads may run up to 15 values beyond a row.
pub(crate) const SLACK: usize = 16;

/// Lanes of an AVX2 vector.
const LANES: usize = 8;

/// Geometry of a direct convolution over padded planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Direct {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel size.
    pub k: usize,
    /// Images.
    pub n: usize,
    /// Padded input height and width.
    pub hp: usize,
    /// Padded input width.
    pub wp: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Padded input rows `[lo, hi)` that may be non-zero (the rest is padding): taps that
    /// only read padding rows are skipped.
    pub rows: (usize, usize),
}

impl Direct {
    /// The forward convolution of `g` over `n` images.
    pub fn forward(g: &ConvGeom, n: usize) -> Direct {
        let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
        Direct { cin: g.cin, cout: g.cout, k: g.k, n, hp, wp, oh: g.oh, ow: g.ow, rows: (g.pad, g.pad + g.h) }
    }

    /// The convolution that computes `g`'s input gradient from its output gradient padded by
    /// `k − 1 − pad`.
    pub fn input_gradient(g: &ConvGeom, n: usize) -> Direct {
        let q = g.k - 1 - g.pad;
        let (hp, wp) = (g.oh + 2 * q, g.ow + 2 * q);
        Direct { cin: g.cout, cout: g.cin, k: g.k, n, hp, wp, oh: g.h, ow: g.w, rows: (q, q + g.oh) }
    }

    /// Scalars of the padded input, slack included.
    pub fn padded_len(&self) -> usize {
        self.cin * self.n * self.hp * self.wp + SLACK
    }
}

/// Whether `g` takes the direct path on this CPU.
pub(crate) fn supports(g: &ConvGeom) -> bool {
    g.stride == 1 && g.pad < g.k && !g.is_pointwise() && available()
}

/// Whether the CPU has AVX2 and FMA (checked once; the answer is cached by std).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU also has AVX-512F, DQ and VL, for the 16-lane kernels and 32 vector
/// registers (checked once; the answer is cached by std).
fn wide() -> bool {
    #[cfg(test)]
    if tests::NARROW.get() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Copies `planes` planes of `h × w` into `xp` with `pad` zeros on every side, plus
/// [`SLACK`] zeros at the end; the planes split over `threads`.
///
/// When `xp` already has the padded length it is taken to hold an earlier padding of the
/// same geometry, whose zero borders are kept: only the interiors are rewritten.
///
/// # Shapes
/// - `x`: `[planes, h·w]`; `xp`: `[planes, (h+2·pad)·(w+2·pad)] + SLACK`
pub(crate) fn pad(planes: usize, h: usize, w: usize, pad: usize, x: &[f32], xp: &mut Vec<f32>, threads: usize) {
    let (hp, wp) = (h + 2 * pad, w + 2 * pad);
    let len = planes * hp * wp;
    if pad == 0 {
        // Unpadded planes are the input itself: one copy.
        xp.clear();
        xp.extend_from_slice(&x[..len]);
        xp.resize(len + SLACK, 0.0);
        return;
    }
    padded_buffer(planes, h, w, pad, xp);
    let copy = move |src: &[f32], dst: &mut [f32]| {
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { copy_rows_avx2(src, (h, w), dst, (hp, wp), pad) };
        }
        copy_rows(src, (h, w), dst, (hp, wp), pad);
    };
    // Runs of whole planes, one a thread.
    let per_part = planes.div_ceil(threads.clamp(1, planes.max(1)));
    let (src, dst) = (&x[..planes * h * w], &mut xp[..len]);
    if per_part >= planes {
        return copy(src, dst);
    }
    rayon::scope(|scope| {
        for (src, dst) in src.chunks(per_part * h * w).zip(dst.chunks_mut(per_part * hp * wp)) {
            scope.spawn(move |_| copy(src, dst));
        }
    });
}

/// Sizes `xp` for [`pad`]'s layout of `planes` planes of `h × w` with `pad ≥ 1` zeros on
/// every side. A buffer of that length is taken to hold such planes already, whose zero
/// borders are kept; any other is replaced by zeroed memory (first touched by whatever fills
/// its interiors, on every thread).
pub(crate) fn padded_buffer(planes: usize, h: usize, w: usize, pad: usize, xp: &mut Vec<f32>) {
    let len = planes * (h + 2 * pad) * (w + 2 * pad) + SLACK;
    if xp.len() != len {
        *xp = vec![0.0; len];
    }
}

/// Copies each plane of `h × w` in `src` into `dst`'s planes of `hp × wp`, `pad` rows and
/// columns in.
fn copy_rows(src: &[f32], (h, w): (usize, usize), dst: &mut [f32], (hp, wp): (usize, usize), pad: usize) {
    for (src, dst) in src.chunks_exact(h * w).zip(dst.chunks_exact_mut(hp * wp)) {
        for (y, row) in src.chunks_exact(w).enumerate() {
            dst[(y + pad) * wp + pad..][..w].copy_from_slice(row);
        }
    }
}

/// [`copy_rows`] with 8-value vectors and a masked tail: the rows are short (7 to 32
/// values), and a call to `memcpy` per row cost more than its copy.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn copy_rows_avx2(src: &[f32], (h, w): (usize, usize), dst: &mut [f32], (hp, wp): (usize, usize), pad: usize) {
    use std::arch::x86_64::*;
    let (whole, tail) = (w / LANES * LANES, w % LANES);
    let lanes: [i32; LANES] = std::array::from_fn(|i| if i < tail { -1 } else { 0 });
    // SAFETY: `lanes` holds 8 i32.
    let mask = unsafe { _mm256_loadu_si256(lanes.as_ptr() as *const __m256i) };
    for (src, dst) in src.chunks_exact(h * w).zip(dst.chunks_exact_mut(hp * wp)) {
        for (y, row) in src.chunks_exact(w).enumerate() {
            let to = dst[(y + pad) * wp + pad..][..w].as_mut_ptr();
            // SAFETY: `row` and `to` hold `w` values each (sliced just above); the vectors
            // cover `whole ≤ w` of them and the masked tail the rest.
            unsafe {
                for i in (0..whole).step_by(LANES) {
                    _mm256_storeu_ps(to.add(i), _mm256_loadu_ps(row.as_ptr().add(i)));
                }
                if tail > 0 {
                    _mm256_maskstore_ps(to.add(whole), mask, _mm256_maskload_ps(row.as_ptr().add(whole), mask));
                }
            }
        }
    }
}

/// The weights of the input-gradient convolution: `out[ci, co, ky, kx] =
/// w[co, ci, k−1−ky, k−1−kx]`.
///
/// # Shapes
/// - `w`: `[cout, cin, k, k]`; `out`: `[cin, cout, k, k]`
pub(crate) fn flip(cout: usize, cin: usize, k: usize, w: &[f32], out: &mut Vec<f32>) {
    out.clear();
    out.resize(cout * cin * k * k, 0.0);
    for co in 0..cout {
        for ci in 0..cin {
            for ky in 0..k {
                for kx in 0..k {
                    out[((ci * cout + co) * k + ky) * k + kx] =
                        w[((co * cin + ci) * k + (k - 1 - ky)) * k + (k - 1 - kx)];
                }
            }
        }
    }
}

/// `y = conv(xp, w) + bias`.
///
/// # Shapes
/// - `xp`: [`Direct::padded_len`]; `w`: `[cout, cin, k, k]`; `bias`: `[cout]`;
///   `y`: `[cout, n, oh·ow]`
///
/// # Panics
/// When a slice is too short, or the CPU lacks AVX2/FMA.
pub(crate) fn forward(g: &Direct, xp: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32], threads: usize) {
    assert!(available(), "direct convolutions need AVX2 and FMA");
    assert!(g.hp >= g.oh + g.k - 1 && g.wp >= g.ow + g.k - 1, "padded input too small for {g:?}");
    assert!(xp.len() >= g.padded_len() && w.len() >= g.cout * g.cin * g.k * g.k);
    assert!(y.len() >= g.cout * g.n * g.oh * g.ow && bias.is_none_or(|b| b.len() >= g.cout));
    let out = Out(y.as_mut_ptr());
    // Four runs of images a thread: the pool's threads steal what a stalled one has not
    // started. Every image is computed alone, so the split does not change any value.
    let parts = if threads > 1 { (4 * threads).min(g.n.max(1)) } else { 1 };
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX2 and FMA are present (asserted above) and the slices are long enough for
    // every access the kernels make (asserted above; see `avx2::forward`). The parts' image
    // ranges are disjoint, so no two threads write one output value, and `y` stays borrowed
    // until every thread has joined.
    unsafe {
        let kernel = if wide() { avx512::forward } else { avx2::forward };
        let job = ForwardJob { g, xp, w, bias, out };
        if parts == 1 {
            return kernel(job, 0..g.n);
        }
        rayon::scope(move |scope| {
            for part in 1..parts {
                let images = share(g.n, parts, part);
                scope.spawn(move |_| kernel(job, images));
            }
            kernel(job, share(g.n, parts, 0))
        });
    }
}

/// What every part of one [`forward`] reads, and the output it writes.
#[derive(Clone, Copy)]
struct ForwardJob<'a> {
    g: &'a Direct,
    xp: &'a [f32],
    w: &'a [f32],
    bias: Option<&'a [f32]>,
    out: Out,
}

impl ForwardJob<'_> {
    /// The first input value, weight, bias and output value.
    fn pointers(&self) -> (*const f32, *const f32, Option<*const f32>, *mut f32) {
        (self.xp.as_ptr(), self.w.as_ptr(), self.bias.map(|b| b.as_ptr()), self.out.0)
    }
}

/// The kernel rows `[from, to)` that output rows `oy..oy + rows` need: rows `oy..oy+rows`
/// read input rows `oy + ky..oy + rows − 1 + ky`, and the other kernel rows read only
/// padding.
fn taps(g: &Direct, oy: usize, rows: usize) -> (usize, usize) {
    let (lo, hi) = g.rows;
    (lo.saturating_sub(oy + rows - 1).min(g.k), hi.saturating_sub(oy).min(g.k))
}

/// The output of a kernel that threads fill in disjoint parts.
#[derive(Clone, Copy)]
struct Out(*mut f32);

// SAFETY: threads given one `Out` write disjoint elements (see the callers), and the slice
// it points into outlives them (scoped threads).
unsafe impl Send for Out {}

/// How [`weight_grad`] finds the output gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GradLayout {
    /// `[cout, n, oh·ow]`, as the layer produced it.
    Rows,
    /// Padded by `q ≥ 1` zeros on every side to rows as wide as the padded input's
    /// (`ow + 2q = wp`, a "same" convolution), as [`pad`] leaves it for the input gradient.
    /// Then an image's products are one contiguous run (the zero columns cancel the reads
    /// that wrap into the next row): no ragged row ends and no per-row loop.
    Padded { q: usize },
}

impl GradLayout {
    /// [`GradLayout::Padded`] when `g`'s padded output gradient has the input's row width.
    pub fn padded(g: &ConvGeom) -> Option<GradLayout> {
        let q = g.k - 1 - g.pad;
        (q >= 1 && g.ow + 2 * q == g.w + 2 * g.pad && g.w + 2 * g.pad >= LANES).then_some(GradLayout::Padded { q })
    }
}

/// `dw += scale · Σ_{i ∈ images} dy_i ⋆ xp_i`: the weight gradient of the images `images`.
///
/// # Shapes
/// - `xp`: [`Direct::padded_len`]; `dy`: `[cout, n, oh·ow]` ([`GradLayout::Rows`]) or the
///   input-gradient convolution's padded input ([`GradLayout::Padded`]); `dw`:
///   `[cout, cin, k, k]`
///
/// # Panics
/// When a slice is too short, the range exceeds `n`, a padded layout does not match `g`,
/// or the CPU lacks AVX2/FMA.
#[allow(clippy::too_many_arguments)]
pub(crate) fn weight_grad(
    g: &Direct,
    images: std::ops::Range<usize>,
    xp: &[f32],
    dy: &[f32],
    layout: GradLayout,
    scale: f32,
    dw: &mut [f32],
    threads: usize,
) {
    assert!(available(), "direct convolutions need AVX2 and FMA");
    assert!(g.hp >= g.oh + g.k - 1 && g.wp >= g.ow + g.k - 1, "padded input too small for {g:?}");
    assert!(images.start <= images.end && images.end <= g.n);
    let dy_len = match layout {
        GradLayout::Rows => g.cout * g.n * g.oh * g.ow,
        GradLayout::Padded { q } => {
            assert!(q >= 1 && g.ow + 2 * q == g.wp && g.wp >= LANES, "{layout:?} does not fit {g:?}");
            g.cout * g.n * (g.oh + 2 * q) * g.wp + SLACK
        }
    };
    assert!(xp.len() >= g.padded_len() && dy.len() >= dy_len);
    assert!(dw.len() >= g.cout * g.cin * g.k * g.k);
    // Threads take consecutive pairs of output channels (the kernel splits its share into
    // blocks), each its own slice of `dw`: every weight is summed by one thread in the same
    // order, whatever the thread count.
    let pairs = g.cout.div_ceil(2);
    let flat = matches!(layout, GradLayout::Padded { .. }) && wide() && g.k <= 3;
    // The 16-lane kernel's blocks are 8 channels: up to four of them a thread, so that the
    // pool's threads share out what a stalled one has not started.
    let parts = if flat && threads > 1 { (g.cout / 8).clamp(threads, 4 * threads) } else { threads };
    let parts = parts.clamp(1, pairs.max(1));
    let per_channel = g.cin * g.k * g.k;
    #[cfg(target_arch = "x86_64")]
    let kernel = match () {
        () if flat => avx512::weight_grad_flat,
        () if wide() => avx2::weight_grad_wide,
        () => avx2::weight_grad,
    };
    let job = &GradJob { g, images, xp, dy, layout, scale };
    #[cfg(target_arch = "x86_64")]
    if parts == 1 {
        // SAFETY: as in `forward`; `dw` holds the weights of every channel.
        return unsafe { kernel(job, 0..g.cout, dw) };
    }
    #[cfg(target_arch = "x86_64")]
    rayon::scope(|scope| {
        let mut rest = &mut dw[..g.cout * per_channel];
        for part in 0..parts {
            let pairs = share(pairs, parts, part);
            let channels = 2 * pairs.start..(2 * pairs.end).min(g.cout);
            let (mine, next) = std::mem::take(&mut rest).split_at_mut(channels.len() * per_channel);
            rest = next;
            // SAFETY: as in `forward`; `mine` holds exactly the weights of `channels`.
            let run = move || unsafe { kernel(job, channels, mine) };
            if part + 1 == parts {
                run();
            } else {
                scope.spawn(move |_| run());
            }
        }
    });
}

/// What every part of one [`weight_grad`] reads: its arguments but the output channels and
/// the weights a part writes.
struct GradJob<'a> {
    g: &'a Direct,
    images: std::ops::Range<usize>,
    xp: &'a [f32],
    dy: &'a [f32],
    layout: GradLayout,
    scale: f32,
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The kernels. Every raw access stays inside the slices checked by the callers:
    //! input reads reach at most `(cin·n − 1)·hp·wp + (hp − 1)·wp + ⌈ow/8⌉·8 + k − 2`,
    //! which is below `cin·n·hp·wp + SLACK` because `ow + k − 1 ≤ wp`; output and
    //! gradient accesses beyond a row's `ow` valid columns are masked.

    use std::arch::x86_64::*;

    use super::{Direct, GradJob, GradLayout};

    /// Lane masks: `MASKS[8 − v..][..8]` enables the first `v` lanes.
    static MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

    #[inline(always)]
    unsafe fn mask(valid: usize) -> __m256i {
        // SAFETY: 8 − valid ≤ 8 (valid ≥ 1... ≤ 8), so the 8 read values lie in MASKS.
        unsafe { _mm256_loadu_si256(MASKS.as_ptr().add(8 - valid) as *const __m256i) }
    }

    /// Geometry of one register block: where it reads, where it writes.
    #[derive(Clone, Copy)]
    pub(super) struct Block {
        /// Distance between consecutive input channels' planes (`n·hp·wp`).
        pub in_channel: usize,
        /// Distance between consecutive output channels' planes (`n·oh·ow`).
        pub out_channel: usize,
        /// Distance between consecutive output channels' weights (`cin·k·k`).
        pub w_channel: usize,
        pub wp: usize,
        pub ow: usize,
        pub k: usize,
        pub cin: usize,
        /// Valid lanes of the last vector of the run.
        pub last: usize,
        /// Kernel rows to visit (the others only read padding).
        pub ky: (usize, usize),
        /// Output positions of an image over padded rows, `(oh − 1)·wp + ow` (read by the
        /// 16-lane kernel only).
        pub positions: usize,
    }

    impl Block {
        /// The blocks of `g`, over all kernel rows, whole last vectors.
        pub fn of(g: &Direct) -> Block {
            Block {
                in_channel: g.n * g.hp * g.wp,
                out_channel: g.n * g.oh * g.ow,
                w_channel: g.cin * g.k * g.k,
                wp: g.wp,
                ow: g.ow,
                k: g.k,
                cin: g.cin,
                last: 8,
                ky: (0, g.k),
                positions: (g.oh - 1) * g.wp + g.ow,
            }
        }
    }

    /// Where one register block reads and writes: its first input value, weight, bias and
    /// output value.
    #[derive(Clone, Copy)]
    pub(super) struct At {
        pub x: *const f32,
        pub w: *const f32,
        pub bias: Option<*const f32>,
        pub y: *mut f32,
    }

    /// `CB` output channels × `R` rows × `V` vectors of 8 columns.
    #[inline(always)]
    unsafe fn block<const CB: usize, const V: usize, const R: usize>(b: &Block, at: At) {
        let At { x, w, bias, y } = at;
        // SAFETY (whole body): offsets stay within the bounds documented for the module.
        unsafe {
            let mut acc = [[[_mm256_setzero_ps(); V]; R]; CB];
            if let Some(bias) = bias {
                for (c, a) in acc.iter_mut().enumerate() {
                    let v = _mm256_broadcast_ss(&*bias.add(c));
                    *a = [[v; V]; R];
                }
            }
            for ci in 0..b.cin {
                for ky in b.ky.0..b.ky.1 {
                    let row = x.add(ci * b.in_channel + ky * b.wp);
                    let wrow = w.add((ci * b.k + ky) * b.k);
                    for kx in 0..b.k {
                        let mut xv = [[_mm256_setzero_ps(); V]; R];
                        for (r, xr) in xv.iter_mut().enumerate() {
                            for (v, xv) in xr.iter_mut().enumerate() {
                                *xv = _mm256_loadu_ps(row.add(r * b.wp + kx + 8 * v));
                            }
                        }
                        for (c, a) in acc.iter_mut().enumerate() {
                            let wv = _mm256_broadcast_ss(&*wrow.add(c * b.w_channel + kx));
                            for r in 0..R {
                                for v in 0..V {
                                    a[r][v] = _mm256_fmadd_ps(wv, xv[r][v], a[r][v]);
                                }
                            }
                        }
                    }
                }
            }
            let m = mask(b.last);
            for (c, a) in acc.iter().enumerate() {
                for (r, ar) in a.iter().enumerate() {
                    let out = y.add(c * b.out_channel + r * b.ow);
                    for (v, &value) in ar.iter().enumerate() {
                        if v + 1 < V || b.last == 8 {
                            _mm256_storeu_ps(out.add(8 * v), value);
                        } else {
                            _mm256_maskstore_ps(out.add(8 * v), m, value);
                        }
                    }
                }
            }
        }
    }

    /// Runs the block shape `(cb, v, r)` (`cb ≤ 12 / (v·r)`).
    #[inline(always)]
    unsafe fn dispatch(cb: usize, v: usize, r: usize, b: &Block, at: At) {
        macro_rules! arms {
            ($(($c:literal, $v:literal, $r:literal)),*) => {
                match (cb, v, r) {
                    // SAFETY: forwarded from the caller.
                    $(($c, $v, $r) => unsafe { block::<$c, $v, $r>(b, at) },)*
                    _ => unreachable!("block shape ({cb}, {v}, {r}) is never chosen"),
                }
            };
        }
        arms!(
            (1, 1, 2),
            (2, 1, 2),
            (3, 1, 2),
            (4, 1, 2),
            (5, 1, 2),
            (6, 1, 2),
            (1, 1, 1),
            (2, 1, 1),
            (3, 1, 1),
            (4, 1, 1),
            (5, 1, 1),
            (6, 1, 1),
            (1, 2, 1),
            (2, 2, 1),
            (3, 2, 1),
            (4, 2, 1),
            (5, 2, 1),
            (6, 2, 1)
        )
    }

    /// See [`super::forward`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn forward(job: super::ForwardJob<'_>, images: std::ops::Range<usize>) {
        let g = job.g;
        let (x, wt, bias, out) = job.pointers();
        // Runs of at most two vectors: a block of three (4 channels × 3 vectors, plus the 3
        // input vectors and a broadcast weight) needs all 16 vector registers and spilled,
        // at half the rate of the two-vector blocks on 28-wide rows.
        for ox0 in (0..g.ow).step_by(16) {
            let cols = (g.ow - ox0).min(16);
            let v = cols.div_ceil(8);
            let last = cols - 8 * (v - 1);
            let max_cb = 12 / (v * if v == 1 { 2 } else { 1 });
            let mut b = Block { last, ..Block::of(g) };
            for i in images.clone() {
                for co in (0..g.cout).step_by(max_cb) {
                    let cb = (g.cout - co).min(max_cb);
                    let mut oy = 0;
                    while oy < g.oh {
                        let r = if v == 1 && oy + 1 < g.oh { 2 } else { 1 };
                        b.ky = super::taps(g, oy, r);
                        // SAFETY: the offsets address image i, channel co, row oy, column
                        // ox0 inside the checked slices.
                        unsafe {
                            let xi = x.add(i * g.hp * g.wp + oy * g.wp + ox0);
                            let yi = out.add((co * g.n + i) * g.oh * g.ow + oy * g.ow + ox0);
                            let at = At { x: xi, w: wt.add(co * b.w_channel), bias: bias.map(|b| b.add(co)), y: yi };
                            dispatch(cb, v, r, &b, at);
                        }
                        oy += r;
                    }
                }
            }
        }
    }

    /// `CB` output channels × `KX` kernel columns of one kernel row `ky`, summed over the
    /// images' rows.
    #[inline(always)]
    unsafe fn dw_block<const CB: usize, const KX: usize>(
        g: &Direct,
        images: std::ops::Range<usize>,
        x: *const f32,
        dy: *const f32,
    ) -> [[f32; KX]; CB] {
        // SAFETY (whole body): offsets stay within the bounds documented for the module;
        // gradient reads past a row's valid columns are masked (and read as zeros).
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); KX]; CB];
            let vectors = g.ow.div_ceil(8);
            let last = g.ow - 8 * (vectors - 1);
            let m = mask(last);
            let out_channel = g.n * g.oh * g.ow;
            for i in images {
                for oy in 0..g.oh {
                    let xrow = x.add(i * g.hp * g.wp + oy * g.wp);
                    let drow = dy.add(i * g.oh * g.ow + oy * g.ow);
                    // Whole vectors, then the ragged end of the row with masked gradient
                    // loads (masked loads are slow, microcoded on some CPUs).
                    let whole = if last == 8 { vectors } else { vectors - 1 };
                    for v in 0..whole {
                        step::<CB, KX>(&mut acc, xrow.add(8 * v), drow.add(8 * v), out_channel, None);
                    }
                    if whole < vectors {
                        step::<CB, KX>(&mut acc, xrow.add(8 * whole), drow.add(8 * whole), out_channel, Some(m));
                    }
                }
            }
            lane_sums(&acc)
        }
    }

    /// [`dw_block`] on a [`GradLayout::Padded`] gradient: `dy` points at the first interior
    /// value of channel `co`'s first image, `plane` apart from image to image. An image's
    /// run covers `(oh − 1)·wp + ow` positions; its last vector reads up to 7 past it, into
    /// the zero padding after the last interior row (`q ≥ 1` rows of `wp ≥ 8`).
    #[inline(always)]
    unsafe fn dw_block_flat<const CB: usize, const KX: usize>(
        g: &Direct,
        images: std::ops::Range<usize>,
        x: *const f32,
        dy: *const f32,
        plane: usize,
    ) -> [[f32; KX]; CB] {
        // SAFETY (whole body): offsets stay within the bounds documented for the module and
        // checked by `super::weight_grad` for the padded gradient.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); KX]; CB];
            let vectors = ((g.oh - 1) * g.wp + g.ow).div_ceil(8);
            let out_channel = g.n * plane;
            for i in images {
                let (xi, di) = (x.add(i * g.hp * g.wp), dy.add(i * plane));
                for v in 0..vectors {
                    step::<CB, KX>(&mut acc, xi.add(8 * v), di.add(8 * v), out_channel, None);
                }
            }
            lane_sums(&acc)
        }
    }

    /// `acc[c][kx] += dy[c] · x[kx..kx + 8]` for one vector of 8 output columns.
    #[inline(always)]
    unsafe fn step<const CB: usize, const KX: usize>(
        acc: &mut [[__m256; KX]; CB],
        x: *const f32,
        dy: *const f32,
        out_channel: usize,
        mask: Option<__m256i>,
    ) {
        // SAFETY: the caller's offsets lie inside the checked slices (module bounds).
        unsafe {
            let load = |c: usize| {
                let at = dy.add(c * out_channel);
                match mask {
                    None => _mm256_loadu_ps(at),
                    Some(m) => _mm256_maskload_ps(at, m),
                }
            };
            if KX <= 3 {
                // Each input vector loaded once for all channels (12 + 4 registers at most).
                let xv: [__m256; KX] = std::array::from_fn(|kx| _mm256_loadu_ps(x.add(kx)));
                for (c, acc) in acc.iter_mut().enumerate() {
                    let d = load(c);
                    for (a, &x) in acc.iter_mut().zip(&xv) {
                        *a = _mm256_fmadd_ps(d, x, *a);
                    }
                }
            } else {
                // Wider kernels: the channels' gradients stay, input vectors stream (holding
                // all `KX` would spill the accumulators).
                let d: [__m256; CB] = std::array::from_fn(load);
                // `kx` is a column offset as well as an index.
                #[allow(clippy::needless_range_loop)]
                for kx in 0..KX {
                    let xv = _mm256_loadu_ps(x.add(kx));
                    for c in 0..CB {
                        acc[c][kx] = _mm256_fmadd_ps(d[c], xv, acc[c][kx]);
                    }
                }
            }
        }
    }

    /// Each accumulator's [`hsum`].
    #[inline(always)]
    unsafe fn lane_sums<const CB: usize, const KX: usize>(acc: &[[__m256; KX]; CB]) -> [[f32; KX]; CB] {
        // SAFETY: register-only intrinsics; the callers run with AVX2 enabled.
        std::array::from_fn(|c| std::array::from_fn(|kx| unsafe { hsum(acc[c][kx]) }))
    }

    /// The sum of the 8 lanes, in a fixed order.
    #[inline(always)]
    pub(super) unsafe fn hsum(v: __m256) -> f32 {
        // SAFETY: register-only intrinsics; the callers run with AVX2 enabled.
        unsafe {
            let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let pair = _mm_add_ps(half, _mm_movehl_ps(half, half));
            _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1)))
        }
    }

    /// A weight-gradient kernel: [`weight_grad_blocks`] compiled for `$features` with blocks
    /// of up to `$widest` output channels. `channels` starts at an even channel; `dw` holds
    /// the weights of `channels` only.
    macro_rules! weight_grad_kernel {
        ($(#[$doc:meta])* $name:ident, $features:literal, $widest:literal) => {
            $(#[$doc])*
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(job: &GradJob<'_>, channels: std::ops::Range<usize>, dw: &mut [f32]) {
                // SAFETY: forwarded from the caller.
                unsafe { weight_grad_blocks(job, channels, dw, $widest) }
            }
        };
    }

    weight_grad_kernel!(
        /// See [`super::weight_grad`]: blocks of up to 3 output channels × 3 kernel columns
        /// (9 accumulators, 3 input vectors and a gradient vector in the 16 vector registers).
        weight_grad,
        "avx2,fma",
        3
    );

    weight_grad_kernel!(
        /// [`weight_grad`] on a CPU with AVX-512VL, whose 32 vector registers hold blocks of
        /// up to 6 output channels × 3 kernel columns (18 accumulators): each input vector,
        /// loaded once for the block, serves twice as many channels. The sums are the same,
        /// in the same order.
        weight_grad_wide,
        "avx2,fma,avx512f,avx512dq,avx512vl",
        6
    );

    /// The weight gradient in blocks of up to `widest` output channels (for kernels of up to
    /// 3 columns; 2 channels × 5 columns for wider kernels).
    #[inline(always)]
    unsafe fn weight_grad_blocks(job: &GradJob<'_>, channels: std::ops::Range<usize>, dw: &mut [f32], widest: usize) {
        let GradJob { g, ref images, xp, dy, layout, scale } = *job;
        let (x, d) = (xp.as_ptr(), dy.as_ptr());
        // A weight's sum runs in the same order whatever block it falls in.
        let widest = if g.k <= 3 { widest } else { 2 };
        // The fewest blocks of at most `widest` channels, as even as they go (8 channels: 4 + 4
        // rather than 6 + 2).
        let blocks = channels.len().div_ceil(widest);
        for block in 0..blocks {
            let own = super::share(channels.len(), blocks, block);
            let (co, cb) = (channels.start + own.start, own.len());
            for ci in 0..g.cin {
                for ky in 0..g.k {
                    for kx0 in (0..g.k).step_by(5) {
                        let at = WeightGroup { co, first: channels.start, ci, ky, kx0 };
                        macro_rules! arms {
                            ($(($c:literal, $k:literal)),*) => {
                                match (cb, (g.k - kx0).min(5)) {
                                    // SAFETY: forwarded from the caller.
                                    $(($c, $k) => unsafe {
                                        group::<$c, $k>(g, &at, images.clone(), x, d, layout, scale, dw)
                                    },)*
                                    _ => unreachable!("1 to 6 channels of up to 3 columns, or 2 of up to 5"),
                                }
                            };
                        }
                        arms!(
                            (1, 1),
                            (1, 2),
                            (1, 3),
                            (1, 4),
                            (1, 5),
                            (2, 1),
                            (2, 2),
                            (2, 3),
                            (2, 4),
                            (2, 5),
                            (3, 1),
                            (3, 2),
                            (3, 3),
                            (4, 1),
                            (4, 2),
                            (4, 3),
                            (5, 1),
                            (5, 2),
                            (5, 3),
                            (6, 1),
                            (6, 2),
                            (6, 3)
                        )
                    }
                }
            }
        }
    }

    /// The first weight of a group: output channel, input channel, kernel row and column.
    struct WeightGroup {
        co: usize,
        /// The first output channel whose weights `dw` holds.
        first: usize,
        ci: usize,
        ky: usize,
        kx0: usize,
    }

    /// Adds `scale ·` the gradient of weights `[co..co+CB, ci, ky, kx0..kx0+KX]` into `dw`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn group<const CB: usize, const KX: usize>(
        g: &Direct,
        at: &WeightGroup,
        images: std::ops::Range<usize>,
        x: *const f32,
        dy: *const f32,
        layout: GradLayout,
        scale: f32,
        dw: &mut [f32],
    ) {
        // SAFETY: channel, row and column offsets inside the checked slices (see the module
        // bounds).
        let sums = unsafe {
            let x = x.add(at.ci * g.n * g.hp * g.wp + at.ky * g.wp + at.kx0);
            match layout {
                GradLayout::Rows => dw_block::<CB, KX>(g, images, x, dy.add(at.co * g.n * g.oh * g.ow)),
                GradLayout::Padded { q } => {
                    let plane = (g.oh + 2 * q) * g.wp;
                    dw_block_flat::<CB, KX>(g, images, x, dy.add(at.co * g.n * plane + q * g.wp + q), plane)
                }
            }
        };
        for (c, s) in sums.iter().enumerate() {
            let first = (((at.co - at.first + c) * g.cin + at.ci) * g.k + at.ky) * g.k + at.kx0;
            for (w, &v) in dw[first..first + KX].iter_mut().zip(s) {
                *w += scale * v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! The 16-lane kernels, for CPUs with AVX-512 F, DQ and VL: [`forward`] (see
    //! [`super::forward`]) and [`weight_grad_flat`] (see [`super::weight_grad`]).
    //!
    //! An image's output is computed over its padded row width: position `p = oy·wp + ox`
    //! reads input `p + ky·wp + kx` for tap `(ky, kx)`, so 16 consecutive positions are one
    //! contiguous load per tap, whatever the row width, and a 7-wide row wastes only its
    //! `wp − ow` padding columns rather than half a vector. Stores write each row's valid
    //! columns under a lane mask.
    //!
    //! Every output value is the same sum as the AVX2 kernel's, in the same order (bias,
    //! then input channels, kernel rows and columns), so the two agree value for value;
    //! taps that read only padding are skipped by both. Input reads reach at most 15 values
    //! past an image's last padded row (covered by [`super::SLACK`]); stores touch only
    //! valid outputs.

    use std::arch::x86_64::*;

    use super::avx2::{At, Block};
    use super::{Direct, GradJob, GradLayout};

    /// `CB` output channels × `U` vectors of 16 positions from `p0`.
    #[inline(always)]
    unsafe fn block<const CB: usize, const U: usize>(b: &Block, at: At, p0: usize) {
        let At { x, w, bias, y } = at;
        // SAFETY (whole body): loads stay within the bounds documented for the module;
        // stores are masked to the positions of valid outputs.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); U]; CB];
            if let Some(bias) = bias {
                for (c, a) in acc.iter_mut().enumerate() {
                    *a = [_mm512_set1_ps(*bias.add(c)); U];
                }
            }
            for ci in 0..b.cin {
                for ky in b.ky.0..b.ky.1 {
                    let row = x.add(ci * b.in_channel + ky * b.wp);
                    let wrow = w.add((ci * b.k + ky) * b.k);
                    for kx in 0..b.k {
                        let xv: [__m512; U] = std::array::from_fn(|u| _mm512_loadu_ps(row.add(kx + 16 * u)));
                        for (c, a) in acc.iter_mut().enumerate() {
                            let wv = _mm512_set1_ps(*wrow.add(c * b.w_channel + kx));
                            for (a, &xv) in a.iter_mut().zip(&xv) {
                                *a = _mm512_fmadd_ps(wv, xv, *a);
                            }
                        }
                    }
                }
            }
            // Where each vector's lanes go: row r's valid columns are positions
            // r·wp..r·wp + ow, stored at r·ow + (position − r·wp). A vector of 16 positions
            // touches at most 9 rows (wp ≥ k ≥ 2).
            let mut stores = [[(0usize, 0u16); 9]; U];
            let mut count = [0; U];
            for (u, (stores, count)) in stores.iter_mut().zip(&mut count).enumerate() {
                let p = p0 + 16 * u;
                let end = (p + 16).min(b.positions);
                if p >= end {
                    continue;
                }
                for r in p / b.wp..=(end - 1) / b.wp {
                    let (lo, hi) = ((r * b.wp).max(p), (r * b.wp + b.ow).min(end));
                    if lo < hi {
                        let m = (((1u32 << (hi - p)) - 1) & !((1u32 << (lo - p)) - 1)) as u16;
                        // Lane j lands at r·ow + p + j − r·wp (before the plane's start for
                        // early rows; only lanes lo − p..hi − p, row r's outputs, are written).
                        stores[*count] = ((r * b.ow + p).wrapping_sub(r * b.wp), m);
                        *count += 1;
                    }
                }
            }
            for (c, a) in acc.iter().enumerate() {
                let out = y.add(c * b.out_channel);
                for ((&value, stores), &count) in a.iter().zip(&stores).zip(&count) {
                    for &(at, m) in &stores[..count] {
                        _mm512_mask_storeu_ps(out.wrapping_add(at), m, value);
                    }
                }
            }
        }
    }

    /// [`super::weight_grad`] on a [`GradLayout::Padded`] gradient for kernels of up to 3
    /// columns, in 16-lane vectors that hold two weights' 8-lane sums: the weights of two
    /// input rows `(ci, ky)` — the low half reads one row, the high half the other — for the
    /// same output channel and kernel column. Each half takes the same terms in the same
    /// lanes and order as the AVX2 kernel's vector, so the weights are the same bit for bit.
    /// Blocks of up to 8 output channels × 3 kernel columns (24 accumulators, 3 input
    /// vectors and a gradient vector in the 32 registers): each input pair, loaded once,
    /// serves every channel of the block.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512dq")]
    pub(super) unsafe fn weight_grad_flat(job: &GradJob<'_>, channels: std::ops::Range<usize>, dw: &mut [f32]) {
        let GradJob { g, ref images, xp, dy, layout, scale } = *job;
        let GradLayout::Padded { q } = layout else { unreachable!("chosen for padded gradients only") };
        let plane = (g.oh + 2 * q) * g.wp;
        // Input rows (ci, ky), flattened and taken in pairs; an odd last row pairs with
        // itself (its high half is dropped).
        let rows = g.cin * g.k;
        let pairs = rows.div_ceil(2);
        let rows_of = |pair: usize| (2 * pair, (2 * pair + 1).min(rows - 1));
        // Runs of images whose gradient (8 channels) and input (every channel) stay in L2,
        // about 512 KiB, while every pair of rows reads them; the accumulators wait in
        // memory between runs and continue in the same order.
        let per_image = 4 * (8 * plane + g.cin * g.hp * g.wp);
        let run = (512 * 1024 / per_image).max(1);
        #[cfg(test)]
        let run = super::tests::RUN.get().unwrap_or(run);
        let blocks = channels.len().div_ceil(8);
        let mut acc = vec![[[_mm512_setzero_ps(); 3]; 8]; pairs];
        for block in 0..blocks {
            let own = super::share(channels.len(), blocks, block);
            let co = channels.start + own.start;
            acc.fill([[_mm512_setzero_ps(); 3]; 8]);
            for first in images.clone().step_by(run) {
                let part = first..(first + run).min(images.end);
                for (pair, acc) in acc.iter_mut().enumerate() {
                    let (a, b) = rows_of(pair);
                    let row = |r: usize| (r / g.k) * g.n * g.hp * g.wp + (r % g.k) * g.wp;
                    // SAFETY: channel, row and image offsets inside the checked slices (see
                    // the module bounds and `super::weight_grad`'s checks).
                    unsafe {
                        let (xa, xb) = (xp.as_ptr().add(row(a)), xp.as_ptr().add(row(b)));
                        let d = dy.as_ptr().add(co * g.n * plane + q * g.wp + q);
                        macro_rules! arms {
                            ($(($c:literal, $k:literal)),*) => {
                                match (own.len(), g.k) {
                                    $(($c, $k) => pair_sums::<$c, $k>(g, part.clone(), (xa, xb), d, plane, acc),)*
                                    _ => unreachable!("1 to 8 channels of up to 3 columns"),
                                }
                            };
                        }
                        #[rustfmt::skip]
                        let () = arms!(
                            (1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1), (7, 1), (8, 1),
                            (1, 2), (2, 2), (3, 2), (4, 2), (5, 2), (6, 2), (7, 2), (8, 2),
                            (1, 3), (2, 3), (3, 3), (4, 3), (5, 3), (6, 3), (7, 3), (8, 3)
                        );
                    }
                }
            }
            for (pair, acc) in acc.iter().enumerate() {
                let (a, b) = rows_of(pair);
                for (c, acc) in acc[..own.len()].iter().enumerate() {
                    let first = |r: usize| (co - channels.start + c) * rows * g.k + r * g.k;
                    for (kx, &v) in acc[..g.k].iter().enumerate() {
                        let (lo, hi) = (_mm512_castps512_ps256(v), _mm512_extractf32x8_ps::<1>(v));
                        // SAFETY: as above (AVX2).
                        dw[first(a) + kx] += scale * unsafe { super::avx2::hsum(lo) };
                        if b != a {
                            dw[first(b) + kx] += scale * unsafe { super::avx2::hsum(hi) };
                        }
                    }
                }
            }
        }
    }

    /// Adds into `acc[c][kx]` (8-lane sums of two input rows: `xa` in the low half, `xb` in
    /// the high half) the products of `CB` output channels × `KX` kernel columns over the
    /// images' padded runs, as `super::avx2::dw_block_flat` sums one row.
    #[inline(always)]
    unsafe fn pair_sums<const CB: usize, const KX: usize>(
        g: &Direct,
        images: std::ops::Range<usize>,
        (xa, xb): (*const f32, *const f32),
        dy: *const f32,
        plane: usize,
        acc_mem: &mut [[__m512; 3]; 8],
    ) {
        // SAFETY (whole body): offsets stay within the bounds of `dw_block_flat`, whose
        // reads these are.
        unsafe {
            let mut acc: [[__m512; KX]; CB] = std::array::from_fn(|c| std::array::from_fn(|kx| acc_mem[c][kx]));
            let vectors = ((g.oh - 1) * g.wp + g.ow).div_ceil(8);
            let out_channel = g.n * plane;
            for i in images {
                let (xa, xb, d) = (xa.add(i * g.hp * g.wp), xb.add(i * g.hp * g.wp), dy.add(i * plane));
                for v in 0..vectors {
                    let at = 8 * v;
                    let xv: [__m512; KX] = std::array::from_fn(|kx| {
                        let low = _mm512_castps256_ps512(_mm256_loadu_ps(xa.add(at + kx)));
                        _mm512_insertf32x8::<1>(low, _mm256_loadu_ps(xb.add(at + kx)))
                    });
                    for (c, acc) in acc.iter_mut().enumerate() {
                        let dv = _mm512_broadcast_f32x8(_mm256_loadu_ps(d.add(c * out_channel + at)));
                        for (a, &x) in acc.iter_mut().zip(&xv) {
                            *a = _mm512_fmadd_ps(dv, x, *a);
                        }
                    }
                }
            }
            for (acc, mem) in acc.iter().zip(acc_mem.iter_mut()) {
                mem[..KX].copy_from_slice(acc);
            }
        }
    }

    /// See [`super::forward`]: blocks of up to 6 output channels × 4 vectors or 12 × 2 (24
    /// accumulators, the input vectors and a broadcast weight in the 32 vector registers),
    /// channels split evenly.
    #[target_feature(enable = "avx2,fma,avx512f,avx512dq,avx512vl")]
    pub(super) unsafe fn forward(job: super::ForwardJob<'_>, images: std::ops::Range<usize>) {
        let g = job.g;
        let (x, wt, bias, out) = job.pointers();
        let mut b = Block::of(g);
        let positions = b.positions;
        // Blocks of up to 4 vectors × 6 channels: fewer weight broadcasts per product than 2
        // vectors × 12 channels, and the stores once per 64 positions. Taken for a small
        // image (up to 4 vectors, a 7×7 plane: one block) and wherever 12 channels would not
        // hold them all; up to 12 channels of a larger image keep 2 × 12 (one block), as do
        // tiny planes (up to 2 vectors). On one `resnet20` step the wider blocks saved about
        // 4 %; on `cnn-s` (8 channels) they cost 5-9 %.
        let wide_blocks = positions > 32 && (positions <= 64 || g.cout > 12);
        let (most, widest) = if wide_blocks { (4, 6) } else { (2, 12) };
        let blocks = g.cout.div_ceil(widest);
        for i in images {
            for part in 0..blocks {
                let own = super::share(g.cout, blocks, part);
                for p0 in (0..positions).step_by(16 * most) {
                    let u = (positions - p0).div_ceil(16).min(most);
                    let (first, last) = (p0 / g.wp, ((p0 + 16 * u).min(positions) - 1) / g.wp);
                    b.ky = super::taps(g, first, last - first + 1);
                    // SAFETY: the offsets address image i's position p0 and channel
                    // own.start inside the checked slices.
                    unsafe {
                        let at = At {
                            x: x.add(i * g.hp * g.wp + p0),
                            w: wt.add(own.start * b.w_channel),
                            bias: bias.map(|b| b.add(own.start)),
                            y: out.add((own.start * g.n + i) * g.oh * g.ow),
                        };
                        macro_rules! arms {
                            ($(($c:literal, $u:literal)),*) => {
                                match (own.len(), u) {
                                    $(($c, $u) => block::<$c, $u>(&b, at, p0),)*
                                    _ => unreachable!("blocks of 1 to 12 channels × 1 or 2 vectors, or up to 6 × 4"),
                                }
                            };
                        }
                        #[rustfmt::skip]
                        let () = arms!(
                            (1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1), (7, 1), (8, 1), (9, 1), (10, 1), (11, 1), (12, 1),
                            (1, 2), (2, 2), (3, 2), (4, 2), (5, 2), (6, 2), (7, 2), (8, 2), (9, 2), (10, 2), (11, 2), (12, 2),
                            (1, 3), (2, 3), (3, 3), (4, 3), (5, 3), (6, 3),
                            (1, 4), (2, 4), (3, 4), (4, 4), (5, 4), (6, 4)
                        );
                    }
                }
            }
        }
    }
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

    /// Direct convolution straight from the definition, in f64.
    fn naive(g: &ConvGeom, n: usize, x: &[f32], w: &[f32]) -> Vec<f64> {
        let mut y = vec![0.0; g.cout * n * g.oh * g.ow];
        for co in 0..g.cout {
            for i in 0..n {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut s = 0.0;
                        for ci in 0..g.cin {
                            for ky in 0..g.k {
                                for kx in 0..g.k {
                                    let (iy, ix) =
                                        ((oy + ky) as isize - g.pad as isize, (ox + kx) as isize - g.pad as isize);
                                    if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                        s += w[((co * g.cin + ci) * g.k + ky) * g.k + kx] as f64
                                            * x[(ci * n + i) * g.h * g.w + iy as usize * g.w + ix as usize] as f64;
                                    }
                                }
                            }
                        }
                        y[(co * n + i) * g.oh * g.ow + oy * g.ow + ox] = s;
                    }
                }
            }
        }
        y
    }

    thread_local! {
        /// Makes [`wide`] answer no on this thread: the AVX2 kernels run on any CPU.
        pub(super) static NARROW: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        /// Overrides the images a run of the AVX-512 weight gradient takes on this thread.
        pub(super) static RUN: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    }

    #[test]
    fn the_avx512_kernels_compute_what_the_avx2_ones_do_value_for_value() {
        if !available() || !wide() {
            return;
        }
        // Compares only where the CPU has AVX-512: elsewhere those kernels are never chosen
        // (`wide()` is false) and there is nothing to compare. Rows of 5 to 40 columns (one
        // 16-lane vector spanning up to three rows), 1 to 25 output channels (forward blocks
        // of up to 12 channels × 2 vectors, split evenly; up to 6 × 3 or 4 for small
        // planes), an odd number of input rows `cin·k` (the weight gradient's last row pairs
        // with itself), a 5-wide kernel (the 6-channel AVX2 blocks of the wide weight
        // gradient), an unpadded gradient, and threads that split images or channel pairs.
        for (cin, cout, h, w, k, pad) in [
            (3, 16, 9, 13, 3, 1),
            (5, 13, 12, 12, 3, 1),
            (2, 25, 7, 7, 3, 1),
            (3, 9, 5, 5, 3, 1),
            (1, 1, 5, 40, 3, 1),
            (2, 7, 11, 30, 5, 2),
            (6, 4, 4, 4, 2, 0),
        ] {
            let g = stride_one(cin, cout, h, w, k, pad);
            let n = 3;
            let d = Direct::forward(&g, n);
            let mut xp = Vec::new();
            pad_planes(&g, n, &random(cin * n * h * w, 1), &mut xp);
            let (wt, bias) = (random(cout * cin * k * k, 2), random(cout, 5));
            let dy = random(cout * n * g.oh * g.ow, 3);
            let (mut dyp, mut flipped) = (Vec::new(), Vec::new());
            super::pad(cout * n, g.oh, g.ow, k - 1 - pad, &dy, &mut dyp, 1);
            flip(cout, cin, k, &wt, &mut flipped);
            let gi = Direct::input_gradient(&g, n);
            let mut layouts = vec![(GradLayout::Rows, &dy)];
            layouts.extend(GradLayout::padded(&g).map(|l| (l, &dyp)));
            for threads in [1, 2, 3] {
                let run = |narrow: bool| {
                    NARROW.set(narrow);
                    let mut y = vec![f32::NAN; cout * n * g.oh * g.ow];
                    forward(&d, &xp, &wt, Some(&bias), &mut y, threads);
                    let mut dx = vec![f32::NAN; cin * n * h * w];
                    forward(&gi, &dyp, &flipped, None, &mut dx, threads);
                    let dws: Vec<Vec<f32>> = (layouts.iter())
                        .map(|&(layout, grad)| {
                            let mut dw = vec![0.5; wt.len()];
                            weight_grad(&d, 0..n, &xp, grad, layout, 2.0, &mut dw, threads);
                            dw
                        })
                        .collect();
                    NARROW.set(false);
                    (y, dx, dws)
                };
                let narrow = run(true);
                // The weight gradient's runs of images: all at once, one and two at a time.
                for images in [None, Some(1), Some(2)] {
                    RUN.set(images);
                    let wide = run(false);
                    RUN.set(None);
                    assert!(wide.0.iter().chain(&wide.1).all(|v| v.is_finite()), "{g:?}: every output written");
                    assert_eq!(wide, narrow, "{g:?}, {threads} threads, runs of {images:?} images");
                }
            }
        }
    }

    #[test]
    fn padding_by_vectors_copies_as_padding_by_rows() {
        #[cfg(target_arch = "x86_64")]
        if available() {
            // Widths below, at and across the 8-value vector, three planes.
            for (w, pad) in [(1, 1), (7, 1), (8, 2), (13, 1), (16, 3), (30, 2)] {
                let (h, planes) = (3, 3);
                let (hp, wp) = (h + 2 * pad, w + 2 * pad);
                let src = random(planes * h * w, 4);
                let (mut rows, mut vectors) = (vec![0.0; planes * hp * wp], vec![0.0; planes * hp * wp]);
                copy_rows(&src, (h, w), &mut rows, (hp, wp), pad);
                // SAFETY: the CPU has AVX2, checked above.
                unsafe { copy_rows_avx2(&src, (h, w), &mut vectors, (hp, wp), pad) };
                assert_eq!(vectors, rows, "w {w}, pad {pad}");
                assert_eq!(rows.iter().filter(|&&v| v != 0.0).count(), src.len());
                // Split over threads, into a buffer that held another padding of the same
                // geometry, the planes come out the same, with the slack after them.
                for threads in [1, 2, 3, 5] {
                    let mut xp = vec![0.0; planes * hp * wp + SLACK];
                    super::pad(planes, h, w, pad, &random(planes * h * w, 9), &mut xp, threads);
                    super::pad(planes, h, w, pad, &src, &mut xp, threads);
                    assert_eq!(xp[..rows.len()], rows[..], "w {w}, pad {pad}, {threads} threads");
                    assert_eq!(xp.len(), rows.len() + SLACK);
                }
            }
        }
    }

    #[test]
    fn forward_input_and_weight_gradients_match_the_definition() {
        if !available() {
            return;
        }
        // Widths of 1 to 3 vectors with ragged ends, odd heights, 1 to 7 channels, padding.
        for (cin, cout, h, w, k, pad) in [
            (1, 8, 28, 28, 5, 0),
            (8, 6, 12, 12, 5, 0),
            (6, 4, 4, 4, 2, 0),
            (3, 7, 9, 13, 3, 1),
            (2, 5, 11, 30, 7, 3),
            (4, 3, 6, 20, 3, 2),
        ] {
            let g = stride_one(cin, cout, h, w, k, pad);
            let n = 3;
            let x = random(cin * n * h * w, 1);
            let wt = random(cout * cin * k * k, 2);
            let d = Direct::forward(&g, n);
            let mut xp = Vec::new();
            pad_planes(&g, n, &x, &mut xp);
            let mut y = vec![f32::NAN; cout * n * g.oh * g.ow];
            forward(&d, &xp, &wt, None, &mut y, 1);
            let want = naive(&g, n, &x, &wt);
            for (a, b) in y.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < 1e-4, "{g:?}: {a} {b}");
            }
            // Adjoint identities: <conv(x), dy> = <x, dx> = Σ w · dw.
            let dy = random(y.len(), 3);
            let lhs: f64 = want.iter().zip(&dy).map(|(a, b)| a * *b as f64).sum();
            let gi = Direct::input_gradient(&g, n);
            let (mut dyp, mut flipped) = (Vec::new(), Vec::new());
            super::pad(cout * n, g.oh, g.ow, k - 1 - pad, &dy, &mut dyp, 1);
            flip(cout, cin, k, &wt, &mut flipped);
            let mut dx = vec![f32::NAN; x.len()];
            forward(&gi, &dyp, &flipped, None, &mut dx, 1);
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| (a * b) as f64).sum();
            assert!((lhs - rhs).abs() < 1e-3, "{g:?}: {lhs} {rhs}");
            let mut dw = vec![0.0; wt.len()];
            weight_grad(&d, 0..n, &xp, &dy, GradLayout::Rows, 1.0, &mut dw, 1);
            let rhs: f64 = wt.iter().zip(&dw).map(|(a, b)| (a * b) as f64).sum();
            assert!((lhs - rhs).abs() < 1e-3, "{g:?}: {lhs} {rhs}");
            // Image ranges add up, and the scale applies.
            let mut parts = vec![0.0; wt.len()];
            weight_grad(&d, 0..1, &xp, &dy, GradLayout::Rows, 2.0, &mut parts, 1);
            weight_grad(&d, 1..n, &xp, &dy, GradLayout::Rows, 2.0, &mut parts, 1);
            for (a, b) in parts.iter().zip(&dw) {
                assert!((a - 2.0 * b).abs() < 1e-4);
            }
            // "Same" convolutions read the padded gradient as one run per image: the same
            // sums, in another order; image ranges and threads as with rows.
            let padded = GradLayout::padded(&g);
            assert_eq!(padded.is_some(), pad >= 1 && 2 * pad == k - 1, "{g:?}");
            if let Some(layout) = padded {
                let mut flat = vec![0.0; wt.len()];
                weight_grad(&d, 0..n, &xp, &dyp, layout, 1.0, &mut flat, 1);
                for (a, b) in flat.iter().zip(&dw) {
                    assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "{g:?}: {a} {b}");
                }
                let mut halves = vec![0.0; wt.len()];
                weight_grad(&d, 0..1, &xp, &dyp, layout, 2.0, &mut halves, 1);
                weight_grad(&d, 1..n, &xp, &dyp, layout, 2.0, &mut halves, 1);
                for (a, b) in halves.iter().zip(&flat) {
                    assert!((a - 2.0 * b).abs() < 1e-4 * b.abs().max(1.0));
                }
                for threads in [2, 3, 8] {
                    let mut flat_t = vec![0.0; wt.len()];
                    weight_grad(&d, 0..n, &xp, &dyp, layout, 1.0, &mut flat_t, threads);
                    assert_eq!(flat_t, flat, "{g:?}, {threads} threads");
                }
            }
            // Split over threads (images for the convolutions, channel pairs for the weight
            // gradient), every result is bit-identical to one thread's.
            for threads in [2, 3, 8] {
                let mut y_t = vec![f32::NAN; y.len()];
                forward(&d, &xp, &wt, None, &mut y_t, threads);
                assert_eq!(y_t, y, "{g:?}, {threads} threads");
                let mut dx_t = vec![f32::NAN; dx.len()];
                forward(&gi, &dyp, &flipped, None, &mut dx_t, threads);
                assert_eq!(dx_t, dx, "{g:?}, {threads} threads");
                let mut dw_t = vec![0.0; wt.len()];
                weight_grad(&d, 0..n, &xp, &dy, GradLayout::Rows, 1.0, &mut dw_t, threads);
                assert_eq!(dw_t, dw, "{g:?}, {threads} threads");
            }
        }
    }

    /// A stride-1 convolution of `cin` → `cout` channels of `h × w` planes.
    fn stride_one(cin: usize, cout: usize, h: usize, w: usize, k: usize, pad: usize) -> ConvGeom {
        ConvGeom { cin, h, w, cout, k, stride: 1, pad, oh: h + 2 * pad - k + 1, ow: w + 2 * pad - k + 1 }
    }

    fn pad_planes(g: &ConvGeom, n: usize, x: &[f32], xp: &mut Vec<f32>) {
        pad(g.cin * n, g.h, g.w, g.pad, x, xp, 1);
    }
}

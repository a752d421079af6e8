//! The pointwise network's 16-wide hidden layer on AVX2 + FMA, for pruning.
//!
//! `out[r] = act(x[r] · W + b)` with `act(v) = max(v·(γ+1) + β, 0)` (FiLM, then ReLU) or
//! `max(v, 0)`, for a block of rows. The portable loop in [`crate::infer`] keeps one row's
//! sixteen sums in flight, a chain of dependent additions per input; here four rows go
//! through together (eight independent 8-wide accumulators), so the multiply-adds pipeline
//! instead of waiting on each other, and the activation is applied before the row is
//! stored. Fused multiply-adds round once where the portable loop rounds twice, so the
//! scores differ from it in the last bits (the tests bound it); on one machine they are the
//! same from call to call and for any thread count.

/// Whether this CPU runs [`layer16`].
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[r] = act(x[r] · W + b)` for the rows of `x` (`[n, k]`), `W` `[k, 16]`, `b` and the
/// FiLM pair `(γ + 1, β)` of length 16, `out` `[n, 16]`.
///
/// # Panics
/// If [`available`] is false or a length does not match.
pub fn layer16(x: &[f32], k: usize, w: &[f32], b: &[f32], film: Option<(&[f32], &[f32])>, out: &mut [f32]) {
    let n = out.len() / 16;
    assert!(available(), "layer16 needs AVX2 and FMA");
    assert!(out.len() == n * 16 && x.len() == n * k && w.len() == k * 16 && b.len() == 16, "layer16 shapes");
    if let Some((g, beta)) = film {
        assert!(g.len() == 16 && beta.len() == 16, "layer16 FiLM shapes");
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AVX2 and FMA (asserted above) and every length was checked above,
    // which is all `avx::layer16` reads and writes.
    unsafe {
        avx::layer16(x, k, w, b, film, out)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    /// See [`super::layer16`]; the caller checked the CPU and the lengths.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn layer16(
        x: &[f32],
        k: usize,
        w: &[f32],
        b: &[f32],
        film: Option<(&[f32], &[f32])>,
        out: &mut [f32],
    ) {
        let n = out.len() / 16;
        let mut r = 0;
        while r + 4 <= n {
            // SAFETY: rows r..r+4 exist in x and out; the caller checked the other lengths.
            unsafe { rows::<4>(x.as_ptr().add(r * k), k, w.as_ptr(), b.as_ptr(), film, out.as_mut_ptr().add(r * 16)) };
            r += 4;
        }
        while r < n {
            // SAFETY: as above, for row r.
            unsafe { rows::<1>(x.as_ptr().add(r * k), k, w.as_ptr(), b.as_ptr(), film, out.as_mut_ptr().add(r * 16)) };
            r += 1;
        }
    }

    /// `R` consecutive rows: `x` at `[R, k]`, `out` at `[R, 16]`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows<const R: usize>(
        x: *const f32,
        k: usize,
        w: *const f32,
        b: *const f32,
        film: Option<(&[f32], &[f32])>,
        out: *mut f32,
    ) {
        // SAFETY (whole body): the pointers cover `R·k`, `k·16`, 16 and `R·16` floats.
        unsafe {
            let (b0, b1) = (_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8)));
            let mut lo = [b0; R];
            let mut hi = [b1; R];
            for j in 0..k {
                let (w0, w1) = (_mm256_loadu_ps(w.add(j * 16)), _mm256_loadu_ps(w.add(j * 16 + 8)));
                for q in 0..R {
                    let xv = _mm256_broadcast_ss(&*x.add(q * k + j));
                    lo[q] = _mm256_fmadd_ps(xv, w0, lo[q]);
                    hi[q] = _mm256_fmadd_ps(xv, w1, hi[q]);
                }
            }
            let zero = _mm256_setzero_ps();
            for q in 0..R {
                let (mut a, mut c) = (lo[q], hi[q]);
                if let Some((g, beta)) = film {
                    a = _mm256_fmadd_ps(a, _mm256_loadu_ps(g.as_ptr()), _mm256_loadu_ps(beta.as_ptr()));
                    c = _mm256_fmadd_ps(c, _mm256_loadu_ps(g.as_ptr().add(8)), _mm256_loadu_ps(beta.as_ptr().add(8)));
                }
                _mm256_storeu_ps(out.add(q * 16), _mm256_max_ps(a, zero));
                _mm256_storeu_ps(out.add(q * 16 + 8), _mm256_max_ps(c, zero));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use hyperprune_sdk::rng::SplitMix64;

    use super::*;

    /// The same layer in f64, activation included.
    fn reference(x: &[f32], k: usize, w: &[f32], b: &[f32], film: Option<(&[f32], &[f32])>) -> Vec<f64> {
        let mut out = Vec::new();
        for xr in x.chunks_exact(k) {
            for q in 0..16 {
                let mut v = b[q] as f64 + (0..k).map(|j| xr[j] as f64 * w[j * 16 + q] as f64).sum::<f64>();
                if let Some((g, beta)) = film {
                    v = v * g[q] as f64 + beta[q] as f64;
                }
                out.push(v.max(0.0));
            }
        }
        out
    }

    #[test]
    fn four_row_blocks_and_the_remainder_equal_the_layer_in_f64() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX2/FMA, and layer16 is never called on it");
            return;
        }
        let mut rng = SplitMix64::new(9);
        let mut v = |n: usize| (0..n).map(|_| 2.0 * rng.next_f32() - 1.0).collect::<Vec<f32>>();
        // 7 rows: one block of four and three single rows; k = 23 (the features) and 16.
        for k in [23, 16] {
            let (x, w, b, g, beta) = (v(7 * k), v(k * 16), v(16), v(16), v(16));
            for film in [None, Some((g.as_slice(), beta.as_slice()))] {
                let mut out = vec![f32::NAN; 7 * 16];
                layer16(&x, k, &w, &b, film, &mut out);
                let want = reference(&x, k, &w, &b, film);
                // Sums of k ≤ 23 products of magnitude ≤ 1 in f32: rounding is below 1e-5.
                for (i, (o, r)) in out.iter().zip(&want).enumerate() {
                    assert!((*o as f64 - r).abs() <= 1e-5, "k={k} film={} element {i}: {o} vs {r}", film.is_some());
                }
                assert!(out.contains(&0.0) && out.iter().any(|&o| o > 0.0), "ReLU applied");
            }
        }
    }
}

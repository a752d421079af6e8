//! The matrix `G` of per-sample gradients and the only products CHITA needs with it.
//!
//! `G` is `n × p` (one row per calibration sample, one column per prunable weight), f32,
//! row-major, exactly as the host's `per_sample_gradients` returns it; it is borrowed, never
//! copied or widened (for LeNet-5 and 1,024 samples it is already 250 MB). Products
//! accumulate in f64. The empirical Fisher `GᵀG/n` (`p × p`) is never formed: every product
//! costs `O(n·p)`, or `O(n·|S|)` when restricted to a support `S`.
//!
//! Products split the rows over a few threads (`std::thread::scope`); they are bound by
//! memory bandwidth, so more than a handful of threads does not help.

use std::ops::Range;

/// Below this many multiply-adds a product runs on the calling thread: spawning costs tens
/// of microseconds, more than a small product.
const PARALLEL_MIN_WORK: usize = 1 << 18;

/// At most this many threads per product (bandwidth-bound beyond).
const MAX_THREADS: usize = 8;

/// A borrowed view of `G`, or of a contiguous range of its columns (a block).
#[derive(Debug, Clone, Copy)]
pub struct Gradients<'a> {
    data: &'a [f32],
    rows: usize,
    stride: usize,
    offset: usize,
    cols: usize,
}

impl<'a> Gradients<'a> {
    /// Views `data` as a row-major `rows × cols` matrix.
    ///
    /// # Errors
    /// When `data` does not hold `rows · cols` values.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Result<Gradients<'a>, String> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(format!(
                "expected a {rows} × {cols} per-sample gradient matrix ({} values), got {} values",
                rows.saturating_mul(cols),
                data.len()
            ));
        }
        Ok(Gradients { data, rows, stride: cols, offset: 0, cols })
    }

    /// The columns `start..start + len` of this view.
    ///
    /// # Panics
    /// When the range runs past the view's columns.
    pub fn columns(&self, start: usize, len: usize) -> Gradients<'a> {
        assert!(start + len <= self.cols, "columns {start}..{} outside a view of {} columns", start + len, self.cols);
        Gradients { data: self.data, rows: self.rows, stride: self.stride, offset: self.offset + start, cols: len }
    }

    /// `n`, the number of samples.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `p`, the number of weights in this view.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i` of the view.
    pub fn row(&self, i: usize) -> &'a [f32] {
        let start = i * self.stride + self.offset;
        &self.data[start..start + self.cols]
    }

    /// `G·v` (length `n`), `v` of length `p`.
    pub fn mul(&self, v: &[f64]) -> Vec<f64> {
        debug_assert_eq!(v.len(), self.cols);
        self.by_rows(self.cols, |rows| rows.map(|i| dot(self.row(i), v)).collect::<Vec<f64>>()).concat()
    }

    /// `G_S·v` (length `n`) for the columns `support` and values `v` (one per column).
    pub fn mul_support(&self, support: &[usize], v: &[f64]) -> Vec<f64> {
        self.mul_supports(&[(support, v)]).pop().expect("one product per pair")
    }

    /// `G_{S_t}·v_t` for several pairs `(S_t, v_t)` in one pass over the rows: each row of
    /// `G` is read from memory once for all of them (the line search tries several steps
    /// this way). Each product equals [`Gradients::mul_support`] of its pair bit for bit.
    pub fn mul_supports(&self, pairs: &[(&[usize], &[f64])]) -> Vec<Vec<f64>> {
        debug_assert!(pairs.iter().all(|(s, v)| s.len() == v.len()));
        let touched = pairs.iter().map(|(s, _)| s.len()).sum();
        let parts = self.by_rows(touched, |rows| {
            let mut out = vec![Vec::with_capacity(rows.len()); pairs.len()];
            for i in rows {
                let row = self.row(i);
                for (o, (support, v)) in out.iter_mut().zip(pairs) {
                    o.push(gather_dot(row, support, v));
                }
            }
            out
        });
        (0..pairs.len()).map(|t| parts.iter().flat_map(|part| part[t].iter().copied()).collect()).collect()
    }

    /// `Gᵀ·r` (length `p`), `r` of length `n`.
    ///
    /// Rows are added four at a time (each entry still sums them in row order, so the
    /// result is that of adding one row at a time, bit for bit): the f64 accumulator, twice
    /// the size of an f32 row, then crosses the memory bus once per four rows.
    pub fn tmul(&self, r: &[f64]) -> Vec<f64> {
        debug_assert_eq!(r.len(), self.rows);
        let parts = self.by_rows(self.cols, |rows| {
            let mut acc = vec![0.0f64; self.cols];
            let active: Vec<usize> = rows.filter(|&i| r[i] != 0.0).collect();
            let mut quads = active.chunks_exact(4);
            for q in &mut quads {
                let (r0, r1, r2, r3) = (r[q[0]], r[q[1]], r[q[2]], r[q[3]]);
                let rows =
                    acc.iter_mut().zip(self.row(q[0])).zip(self.row(q[1])).zip(self.row(q[2])).zip(self.row(q[3]));
                for ((((a, &g0), &g1), &g2), &g3) in rows {
                    *a = *a + r0 * g0 as f64 + r1 * g1 as f64 + r2 * g2 as f64 + r3 * g3 as f64;
                }
            }
            for &i in quads.remainder() {
                let ri = r[i];
                for (a, &g) in acc.iter_mut().zip(self.row(i)) {
                    *a += ri * g as f64;
                }
            }
            acc
        });
        sum_parts(parts, self.cols)
    }

    /// `G_Sᵀ·r` (one value per column of `support`).
    pub fn tmul_support(&self, support: &[usize], r: &[f64]) -> Vec<f64> {
        let parts = self.by_rows(support.len(), |rows| {
            let mut acc = vec![0.0f64; support.len()];
            for i in rows {
                let (ri, row) = (r[i], self.row(i));
                if ri != 0.0 {
                    for (a, &j) in acc.iter_mut().zip(support) {
                        *a += ri * row[j] as f64;
                    }
                }
            }
            acc
        });
        sum_parts(parts, support.len())
    }

    /// `‖G_j‖²` for every column `j` (`n` times the empirical Fisher's diagonal).
    pub fn column_sq_norms(&self) -> Vec<f64> {
        let parts = self.by_rows(self.cols, |rows| {
            let mut acc = vec![0.0f64; self.cols];
            for i in rows {
                for (a, &g) in acc.iter_mut().zip(self.row(i)) {
                    *a += g as f64 * g as f64;
                }
            }
            acc
        });
        sum_parts(parts, self.cols)
    }

    /// Runs `f` on disjoint row ranges covering `0..n`, in order, on up to
    /// [`MAX_THREADS`] threads when the product is large enough to pay for them.
    fn by_rows<T: Send>(&self, cols_touched: usize, f: impl Fn(Range<usize>) -> T + Sync) -> Vec<T> {
        let work = self.rows.saturating_mul(cols_touched);
        let threads = if work < PARALLEL_MIN_WORK {
            1
        } else {
            hyperprune_sdk::available_threads().clamp(1, MAX_THREADS).min(self.rows)
        };
        if threads <= 1 {
            return vec![f(0..self.rows)];
        }
        let chunk = self.rows.div_ceil(threads);
        let f = &f;
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let range = (t * chunk).min(self.rows)..((t + 1) * chunk).min(self.rows);
                    scope.spawn(move || f(range))
                })
                .collect();
            // A worker panics only on a bug; re-raise it so the export macro reports it.
            handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
        })
    }
}

/// `Σ a_i b_i` with four independent accumulators, so the compiler can vectorise it
/// (a single running f64 sum has to stay in order).
fn dot(a: &[f32], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] as f64 * y[l];
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(&x, &y)| x as f64 * y).sum();
    acc[0] + acc[1] + acc[2] + acc[3] + tail
}

/// `Σ_t row[support[t]]·v[t]`, with four accumulators as in [`dot`].
fn gather_dot(row: &[f32], support: &[usize], v: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (cs, cv) = (support.chunks_exact(4), v.chunks_exact(4));
    let (rs, rv) = (cs.remainder(), cv.remainder());
    for (s, x) in cs.zip(cv) {
        for l in 0..4 {
            acc[l] += row[s[l]] as f64 * x[l];
        }
    }
    let tail: f64 = rs.iter().zip(rv).map(|(&j, &x)| row[j] as f64 * x).sum();
    acc[0] + acc[1] + acc[2] + acc[3] + tail
}

fn sum_parts(parts: Vec<Vec<f64>>, len: usize) -> Vec<f64> {
    let mut parts = parts.into_iter();
    let mut total = parts.next().unwrap_or_else(|| vec![0.0; len]);
    for part in parts {
        for (t, x) in total.iter_mut().zip(part) {
            *t += x;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyperprune_sdk::rng::SplitMix64;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..len).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
    }

    // Sizes chosen to cross PARALLEL_MIN_WORK, so the threaded split is exercised too.
    #[test]
    fn products_match_naive_loops_on_a_column_block() {
        let (n, p) = (300, 1000);
        let data = random(n * p, 1);
        let full = Gradients::new(&data, n, p).unwrap();
        let g = full.columns(100, 800);
        let at = |i: usize, j: usize| data[i * p + 100 + j] as f64;
        let v: Vec<f64> = (0..800).map(|j| (j as f64 * 0.37).sin()).collect();
        let r: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos()).collect();
        let support: Vec<usize> = (0..800).step_by(3).collect();
        let vs: Vec<f64> = support.iter().map(|&j| v[j]).collect();

        // Sums of ≤ 1000 terms of size ≤ 1 in f64: differences in summation order stay
        // far below 1e-10.
        let gv = g.mul(&v);
        let gsv = g.mul_support(&support, &vs);
        for i in 0..n {
            let want: f64 = (0..800).map(|j| at(i, j) * v[j]).sum();
            assert!((gv[i] - want).abs() < 1e-10, "row {i}");
            let want_s: f64 = support.iter().map(|&j| at(i, j) * v[j]).sum();
            assert!((gsv[i] - want_s).abs() < 1e-10, "row {i}");
        }
        let gtr = g.tmul(&r);
        let gstr = g.tmul_support(&support, &r);
        let norms = g.column_sq_norms();
        for j in 0..800 {
            let want: f64 = (0..n).map(|i| at(i, j) * r[i]).sum();
            assert!((gtr[j] - want).abs() < 1e-10, "column {j}");
            let want_norm: f64 = (0..n).map(|i| at(i, j) * at(i, j)).sum();
            assert!((norms[j] - want_norm).abs() < 1e-10, "column {j}");
        }
        for (t, &j) in support.iter().enumerate() {
            assert!((gstr[t] - gtr[j]).abs() < 1e-10);
        }
    }

    #[test]
    fn several_supports_in_one_pass_equal_one_at_a_time() {
        // Small products stay on one thread and large ones split the rows: both sizes.
        for (n, p) in [(20, 50), (300, 1000)] {
            let data = random(n * p, 2);
            let g = Gradients::new(&data, n, p).unwrap();
            let supports: Vec<Vec<usize>> = (1..5).map(|step| (0..p).step_by(step).collect()).collect();
            let values: Vec<Vec<f64>> =
                supports.iter().map(|s| s.iter().map(|&j| (j as f64 * 0.13).cos()).collect()).collect();
            let pairs: Vec<(&[usize], &[f64])> =
                supports.iter().zip(&values).map(|(s, v)| (s.as_slice(), v.as_slice())).collect();
            let batched = g.mul_supports(&pairs);
            assert_eq!(batched.len(), pairs.len());
            for ((s, v), got) in pairs.iter().zip(&batched) {
                // Same per-row sums in the same order: bit for bit.
                assert_eq!(got, &g.mul_support(s, v), "n={n} |S|={}", s.len());
            }
        }
    }

    #[test]
    fn wrong_length_is_an_error_naming_the_shape() {
        let err = Gradients::new(&[0.0; 5], 2, 3).unwrap_err();
        assert!(err.contains("2 × 3") && err.contains("got 5"), "{err}");
    }
}

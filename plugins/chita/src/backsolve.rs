//! The ridge back-solve: the exact optimum of CHITA's quadratic on a fixed support.
//!
//! With the support `S` fixed and `w = 0` outside it, the objective
//! `f(w) = ½‖G(w − w̄)‖² + (μ/2)‖w − w̄‖²` (see [`crate::solver`]) is a ridge least-squares
//! problem in `δ = w_S − w̄_S`. Writing `c = G_{S̄}·w̄_{S̄}` (what the pruned weights
//! contributed), `G(w − w̄) = G_S·δ − c`, and the normal equations are
//!
//! ```text
//! (G_SᵀG_S + μI_k)·δ = G_Sᵀ·c                       (k × k)
//! ```
//!
//! When `k ≤ n` they are formed and solved directly (Cholesky, `O(n·k² + k³)`). When
//! `n < k` the push-through form of the Woodbury identity,
//! `(G_SᵀG_S + μI_k)⁻¹G_Sᵀ = G_Sᵀ(G_SG_Sᵀ + μI_n)⁻¹`, gives
//!
//! ```text
//! δ = G_Sᵀ·z,   (G_SG_Sᵀ + μI_n)·z = c               (n × n)
//! ```
//!
//! at `O(n²·k + n³)`. Neither path forms anything `p × p`: the largest matrix is
//! `min(n, k)²` (`n²` for [`SampleSystem`]), and `G_S` is read in chunks converted to f64 on
//! the fly.
//!
//! # Swaps on the `n × n` system
//!
//! [`SampleSystem`] keeps `K = G_SG_Sᵀ + μI` factorised, which makes the optimal objective
//! on `S` a closed form, `F(S) = (μ/2)·(cᵀK⁻¹c + Σ_{j∉S} w̄ⱼ²)` (the minimum of a ridge
//! problem `½‖Aδ − c‖² + (μ/2)‖δ‖²` is `(μ/2)cᵀ(AAᵀ + μI)⁻¹c`), and scores the exact
//! `F(S − i + j)` of a swap by a rank-2 Woodbury update of `K⁻¹` in `O(n)` per pair once
//! `K⁻¹Gᵢ` and `K⁻¹Gⱼ` are known. The active-set updates of [`crate::solver`] use it.

use faer::linalg::matmul::triangular::{BlockStructure, matmul};
use faer::linalg::solvers::Llt;
use faer::linalg::solvers::Solve;
use faer::{Accum, Mat, Par, Side};

use crate::grads::Gradients;

/// Columns (Woodbury path) or rows (direct path) of `G_S` converted to f64 at a time:
/// bounds the scratch to `CHUNK · max(n, k) · 8` bytes (4 MB for `n = 1024`).
const CHUNK: usize = 512;

/// The values `w_S` (one per entry of `support`, in its order) minimising
/// `½‖G(w − w̄)‖² + (μ/2)‖w − w̄‖²` over `w` with `w_j = 0` for `j ∉ S`.
///
/// `support` lists distinct columns of `g`; `wbar` has one value per column.
///
/// # Errors
/// When the ridge system is not positive definite (only possible with `μ = 0`) or the
/// solution is not finite.
pub fn ridge_on_support(g: &Gradients<'_>, wbar: &[f64], support: &[usize], mu: f64) -> Result<Vec<f64>, String> {
    let (n, k) = (g.rows(), support.len());
    let w = if k == 0 {
        Vec::new()
    } else if k <= n {
        direct(g, wbar, support, mu)?
    } else {
        SampleSystem::new(g, wbar, support, mu)?.values()
    };
    if w.iter().any(|v| !v.is_finite()) {
        return Err("the ridge back-solve produced a non-finite weight; raise lambda".into());
    }
    Ok(w)
}

/// `k ≤ n`: solve `(G_SᵀG_S + μI)·δ = G_Sᵀc`. `H` accumulates `RᵀR` over chunks `R` of rows
/// of `G_S` (lower triangle only, which is all the Cholesky reads).
fn direct(g: &Gradients<'_>, wbar: &[f64], support: &[usize], mu: f64) -> Result<Vec<f64>, String> {
    let (n, k) = (g.rows(), support.len());
    // c = G_{S̄}·w̄_{S̄}: zero the kept entries of w̄ and multiply.
    let mut pruned = wbar.to_vec();
    for &j in support {
        pruned[j] = 0.0;
    }
    let c = g.mul(&pruned);
    let mut h = Mat::<f64>::zeros(k, k);
    for t in 0..k {
        h[(t, t)] = mu;
    }
    for start in (0..n).step_by(CHUNK) {
        let rows = CHUNK.min(n - start);
        // Rᵀ (k × rows), column-major: column i is row start + i of G gathered on S,
        // so the gather reads each row of G in order.
        let rt = Mat::<f64>::from_fn(k, rows, |t, i| g.row(start + i)[support[t]] as f64);
        matmul(
            h.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Add,
            rt.as_ref(),
            BlockStructure::Rectangular,
            rt.transpose(),
            BlockStructure::Rectangular,
            1.0,
            Par::Seq,
        );
    }
    let rhs = g.tmul_support(support, &c);
    let delta = solve_vec(&factor(&h)?, &rhs);
    Ok(support.iter().zip(delta).map(|(&j, d)| wbar[j] + d).collect())
}

/// The `n × n` (Woodbury) form of the back-solve for one support, kept factorised so swaps
/// can be scored and applied without rebuilding it.
#[derive(Debug, Clone)]
pub struct SampleSystem<'g, 'a> {
    g: &'g Gradients<'a>,
    wbar: &'g [f64],
    mu: f64,
    support: Vec<usize>,
    /// Lower triangle of `K = G_SG_Sᵀ + μI`.
    kmat: Mat<f64>,
    llt: Llt<f64>,
    /// `c = G_{S̄}·w̄_{S̄}`.
    c: Vec<f64>,
    /// `z = K⁻¹c`.
    z: Vec<f64>,
    /// `Σ_{j∉S} w̄ⱼ²`.
    pruned_sq: f64,
}

impl<'g, 'a> SampleSystem<'g, 'a> {
    /// Builds and factorises `K` for `support` (distinct columns): `O(n²·k + n³)`.
    ///
    /// # Errors
    /// When `K` is not positive definite (only possible with `μ = 0`).
    pub fn new(g: &'g Gradients<'a>, wbar: &'g [f64], support: &[usize], mu: f64) -> Result<Self, String> {
        let n = g.rows();
        let mut kmat = gram_of_columns(g, support);
        for i in 0..n {
            kmat[(i, i)] += mu;
        }
        let mut pruned = wbar.to_vec();
        for &j in support {
            pruned[j] = 0.0;
        }
        let pruned_sq = pruned.iter().map(|w| w * w).sum();
        let c = g.mul(&pruned);
        let llt = factor(&kmat)?;
        let z = solve_vec(&llt, &c);
        Ok(SampleSystem { g, wbar, mu, support: support.to_vec(), kmat, llt, c, z, pruned_sq })
    }

    /// The support, in the order [`SampleSystem::values`] follows.
    pub fn support(&self) -> &[usize] {
        &self.support
    }

    /// `F(S)`: the objective at the optimum on the support.
    pub fn objective(&self) -> f64 {
        let czk: f64 = self.c.iter().zip(&self.z).map(|(a, b)| a * b).sum();
        0.5 * self.mu * (czk + self.pruned_sq)
    }

    /// The optimal `w_S = w̄_S + G_Sᵀz`, one value per support entry.
    pub fn values(&self) -> Vec<f64> {
        let delta = self.g.tmul_support(&self.support, &self.z);
        self.support.iter().zip(delta).map(|(&j, d)| self.wbar[j] + d).collect()
    }

    /// The residual `G(w − w̄) = G_Sδ − c = −μz` at the optimum.
    pub fn residual(&self) -> Vec<f64> {
        self.z.iter().map(|z| -self.mu * z).collect()
    }

    /// Prepares swap scoring between `outs` (in the support) and `ins` (not in it):
    /// `K⁻¹` times their columns and all their inner products under `K⁻¹`,
    /// `O(n²·m + n·m²)` for `m = |outs| + |ins|` candidates.
    pub fn candidates(&self, outs: &[usize], ins: &[usize]) -> SwapCandidates {
        let n = self.g.rows();
        let cols: Vec<usize> = outs.iter().chain(ins).copied().collect();
        // Columns of G for the candidates (n × m), read row by row through their transpose.
        let gct = Mat::<f64>::from_fn(cols.len(), n, |t, i| self.g.row(i)[cols[t]] as f64);
        let gc = gct.transpose().to_owned();
        let mut u = gc.clone();
        self.llt.solve_in_place(u.as_mut());
        let z = Mat::<f64>::from_fn(n, 1, |i, _| self.z[i]);
        let uz = gct.as_ref() * z.as_ref();
        let q = gct.as_ref() * u.as_ref();
        SwapCandidates { outs: outs.to_vec(), ins: ins.to_vec(), uz: (0..cols.len()).map(|t| uz[(t, 0)]).collect(), q }
    }

    /// `F(S − outs[x] + ins[y]) − F(S)` of the single swap `(x, y)` (indices into the
    /// candidate lists): the 2 × 2 case of [`SampleSystem::batch_delta`] in closed form.
    pub fn pair_delta(&self, cand: &SwapCandidates, x: usize, y: usize) -> f64 {
        let a = cand.outs.len();
        let (i, j) = (cand.outs[x], cand.ins[y]);
        let (wi, wj) = (self.wbar[i], self.wbar[j]);
        let (az, ez) = (cand.uz[x], cand.uz[a + y]);
        let (aa, ee, ae) = (cand.q[(x, x)], cand.q[(a + y, a + y)], cand.q[(x, a + y)]);
        // c'ᵀK⁻¹c' with c' = c + w̄ᵢa − w̄ⱼe.
        let ckc = 2.0 * wi * az - 2.0 * wj * ez + wi * wi * aa - 2.0 * wi * wj * ae + wj * wj * ee;
        let (v1, v2) = (az + wi * aa - wj * ae, ez + wi * ae - wj * ee);
        let (m00, m11) = (aa - 1.0, 1.0 + ee);
        let det = m00 * m11 - ae * ae;
        if !det.is_finite() || det.abs() <= 1e-12 * (m00.abs() * m11.abs() + ae * ae) {
            return f64::INFINITY;
        }
        let quad = (m11 * v1 * v1 - 2.0 * ae * v1 * v2 + m00 * v2 * v2) / det;
        0.5 * self.mu * (ckc - quad + wi * wi - wj * wj)
    }

    /// `F(S') − F(S)` for the support after all the swaps `(x, y)` (indices into the
    /// candidate lists; each used once), without refactorising: with `U` the swapped
    /// columns, `D = diag(−1 for removals, +1 for additions)`, `K' = K + UDUᵀ` and
    /// `c' = c + Ut` (`t` = `w̄ᵢ` for removals, `−w̄ⱼ` for additions), Woodbury gives
    /// `c'ᵀK'⁻¹c' = c'ᵀK⁻¹c' − vᵀ(D + UᵀK⁻¹U)⁻¹v`, `v = UᵀK⁻¹c'`: `O(m³)` for `m` swaps.
    pub fn batch_delta(&self, cand: &SwapCandidates, pairs: &[(usize, usize)]) -> f64 {
        let a = cand.outs.len();
        let idx: Vec<usize> = pairs.iter().map(|&(x, _)| x).chain(pairs.iter().map(|&(_, y)| a + y)).collect();
        let m = pairs.len();
        let col = |t: usize| if t < a { cand.outs[t] } else { cand.ins[t - a] };
        let t: Vec<f64> =
            idx.iter().enumerate().map(|(r, &c)| if r < m { self.wbar[col(c)] } else { -self.wbar[col(c)] }).collect();
        let qu = Mat::<f64>::from_fn(2 * m, 2 * m, |r, c| cand.q[(idx[r], idx[c])]);
        let qt: Vec<f64> = (0..2 * m).map(|r| (0..2 * m).map(|c| qu[(r, c)] * t[c]).sum()).collect();
        let uz: Vec<f64> = idx.iter().map(|&c| cand.uz[c]).collect();
        let ckc: f64 = (0..2 * m).map(|r| 2.0 * t[r] * uz[r] + t[r] * qt[r]).sum();
        let mut v = Mat::<f64>::from_fn(2 * m, 1, |r, _| uz[r] + qt[r]);
        let v0: Vec<f64> = (0..2 * m).map(|r| v[(r, 0)]).collect();
        let mmat = Mat::<f64>::from_fn(2 * m, 2 * m, |r, c| {
            qu[(r, c)]
                + if r != c {
                    0.0
                } else if r < m {
                    -1.0
                } else {
                    1.0
                }
        });
        mmat.partial_piv_lu().solve_in_place(v.as_mut());
        let quad: f64 = (0..2 * m).map(|r| v0[r] * v[(r, 0)]).sum();
        let ridge: f64 = (0..m).map(|r| t[r] * t[r] - t[m + r] * t[m + r]).sum();
        let delta = 0.5 * self.mu * (ckc - quad + ridge);
        if delta.is_finite() { delta } else { f64::INFINITY }
    }

    /// The system after the swaps `(out column, in column)`: `K` updated by rank-1 terms
    /// (`O(n²)` each) and refactorised (`O(n³)`).
    ///
    /// # Errors
    /// When the updated `K` is not positive definite (rounding with a tiny ridge).
    pub fn with_swaps(&self, pairs: &[(usize, usize)]) -> Result<Self, String> {
        let n = self.g.rows();
        let mut next = self.clone();
        let mut in_support = vec![false; self.wbar.len()];
        for &j in &self.support {
            in_support[j] = true;
        }
        // Columns leaving (A) and entering (E), read row by row through their transposes.
        let at = Mat::<f64>::from_fn(pairs.len(), n, |t, i| self.g.row(i)[pairs[t].0] as f64);
        let et = Mat::<f64>::from_fn(pairs.len(), n, |t, i| self.g.row(i)[pairs[t].1] as f64);
        for (mat, sign) in [(&et, 1.0), (&at, -1.0)] {
            matmul(
                next.kmat.as_mut(),
                BlockStructure::TriangularLower,
                Accum::Add,
                mat.transpose(),
                BlockStructure::Rectangular,
                mat.as_ref(),
                BlockStructure::Rectangular,
                sign,
                Par::Seq,
            );
        }
        for (t, &(out, inn)) in pairs.iter().enumerate() {
            let (wo, wi) = (self.wbar[out], self.wbar[inn]);
            for (i, c) in next.c.iter_mut().enumerate() {
                *c += wo * at[(t, i)] - wi * et[(t, i)];
            }
            next.pruned_sq += wo * wo - wi * wi;
            in_support[out] = false;
            in_support[inn] = true;
        }
        next.support = (0..self.wbar.len()).filter(|&j| in_support[j]).collect();
        next.llt = factor(&next.kmat)?;
        next.z = solve_vec(&next.llt, &next.c);
        Ok(next)
    }
}

/// Swap candidates prepared by [`SampleSystem::candidates`].
#[derive(Debug, Clone)]
pub struct SwapCandidates {
    /// Columns that may leave the support.
    pub outs: Vec<usize>,
    /// Columns that may enter it.
    pub ins: Vec<usize>,
    /// `[a; e]ᵀz` for the candidate columns (outs first).
    uz: Vec<f64>,
    /// `[a; e]ᵀK⁻¹[a; e]`.
    q: Mat<f64>,
}

/// Lower triangle of `G_SG_Sᵀ` (`n × n`), accumulated over chunks of columns of `G_S`,
/// split over a few threads (each with its own accumulator) when large.
fn gram_of_columns(g: &Gradients<'_>, support: &[usize]) -> Mat<f64> {
    let n = g.rows();
    let chunks: Vec<&[usize]> = support.chunks(CHUNK).collect();
    let threads = if n * n * support.len() < 1 << 24 {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |t| t.get()).clamp(1, 4).min(chunks.len())
    };
    let accumulate = |mine: &mut Mat<f64>, t: usize| {
        for cols in chunks.iter().skip(t).step_by(threads) {
            // Cᵀ (chunk × n), column-major: column i is row i of G gathered on the chunk.
            let ct = Mat::<f64>::from_fn(cols.len(), n, |t, i| g.row(i)[cols[t]] as f64);
            matmul(
                mine.as_mut(),
                BlockStructure::TriangularLower,
                Accum::Add,
                ct.transpose(),
                BlockStructure::Rectangular,
                ct.as_ref(),
                BlockStructure::Rectangular,
                1.0,
                Par::Seq,
            );
        }
    };
    if threads <= 1 {
        let mut k = Mat::<f64>::zeros(n, n);
        accumulate(&mut k, 0);
        return k;
    }
    let parts: Vec<Mat<f64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let accumulate = &accumulate;
                scope.spawn(move || {
                    let mut k = Mat::<f64>::zeros(n, n);
                    accumulate(&mut k, t);
                    k
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    let mut parts = parts.into_iter();
    let mut total = parts.next().unwrap_or_else(|| Mat::zeros(n, n));
    for part in parts {
        total += part;
    }
    total
}

fn factor(a: &Mat<f64>) -> Result<Llt<f64>, String> {
    a.llt(Side::Lower)
        .map_err(|e| format!("the ridge back-solve's system is not positive definite ({e:?}); use lambda > 0"))
}

fn solve_vec(llt: &Llt<f64>, b: &[f64]) -> Vec<f64> {
    let mut rhs = Mat::<f64>::from_fn(b.len(), 1, |i, _| b[i]);
    llt.solve_in_place(rhs.as_mut());
    (0..b.len()).map(|i| rhs[(i, 0)]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyperprune_sdk::rng::SplitMix64;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..len).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
    }

    /// Gaussian elimination with partial pivoting: an independent solver for the check,
    /// written with indices as in the textbook.
    #[allow(clippy::needless_range_loop)]
    fn gauss(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
        let m = b.len();
        for col in 0..m {
            let piv = (col..m).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs())).unwrap();
            a.swap(col, piv);
            b.swap(col, piv);
            for row in col + 1..m {
                let f = a[row][col] / a[col][col];
                for c in col..m {
                    a[row][c] -= f * a[col][c];
                }
                b[row] -= f * b[col];
            }
        }
        let mut x = vec![0.0; m];
        for row in (0..m).rev() {
            let s: f64 = (row + 1..m).map(|c| a[row][c] * x[c]).sum();
            x[row] = (b[row] - s) / a[row][row];
        }
        x
    }

    /// The k × k normal equations `(G_SᵀG_S + μI)w_S = G_Sᵀ(G w̄) + μ w̄_S`, formed
    /// element by element and solved by elimination.
    fn reference(data: &[f32], n: usize, p: usize, wbar: &[f64], support: &[usize], mu: f64) -> Vec<f64> {
        let at = |i: usize, j: usize| data[i * p + j] as f64;
        let b: Vec<f64> = (0..n).map(|i| (0..p).map(|j| at(i, j) * wbar[j]).sum()).collect();
        let a: Vec<Vec<f64>> = support
            .iter()
            .map(|&s| {
                support
                    .iter()
                    .map(|&t| (0..n).map(|i| at(i, s) * at(i, t)).sum::<f64>() + if s == t { mu } else { 0.0 })
                    .collect()
            })
            .collect();
        let rhs: Vec<f64> =
            support.iter().map(|&s| (0..n).map(|i| at(i, s) * b[i]).sum::<f64>() + mu * wbar[s]).collect();
        gauss(a, rhs)
    }

    fn check(n: usize, p: usize, k: usize, seed: u64) {
        let data = random(n * p, seed);
        let g = Gradients::new(&data, n, p).unwrap();
        let wbar: Vec<f64> = random(p, seed + 100).into_iter().map(f64::from).collect();
        let mut rng = SplitMix64::new(seed + 7);
        let mut idx: Vec<usize> = (0..p).collect();
        for i in 0..k {
            let j = i + (rng.next_u64() % (p - i) as u64) as usize;
            idx.swap(i, j);
        }
        let mut support = idx[..k].to_vec();
        support.sort_unstable();
        let mu = 0.3;
        let got = ridge_on_support(&g, &wbar, &support, mu).unwrap();
        let want = reference(&data, n, p, &wbar, &support, mu);
        // Both are f64 solves of systems of size ≤ 60 with condition number below ~10⁴
        // (μ = 0.3 against entries of G in [-1, 1]): agreement to 1e-9 leaves a margin of
        // 10⁴ over the expected ~1e-13.
        for (t, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-9 * (1.0 + b.abs()), "n={n} k={k} entry {t}: {a} vs {b}");
        }
    }

    #[test]
    fn direct_path_matches_the_normal_equations_when_k_le_n() {
        for seed in 0..3 {
            check(40, 70, 25, seed);
            check(30, 50, 30, seed + 10);
        }
    }

    #[test]
    fn woodbury_path_matches_the_normal_equations_when_n_lt_k() {
        for seed in 0..3 {
            check(12, 70, 50, seed);
            check(5, 40, 6, seed + 10);
        }
    }

    #[test]
    fn swap_scores_equal_the_objective_change_of_a_rebuilt_system() {
        for (n, p, k, seed) in [(6, 20, 8, 1u64), (15, 30, 10, 2), (4, 12, 3, 3)] {
            let data = random(n * p, seed);
            let g = Gradients::new(&data, n, p).unwrap();
            let wbar: Vec<f64> = random(p, seed + 50).into_iter().map(f64::from).collect();
            let support: Vec<usize> = (0..p).filter(|j| j % 3 != 1).take(k).collect();
            let mu = 0.2;
            let sys = SampleSystem::new(&g, &wbar, &support, mu).unwrap();
            // F(S) in closed form equals f at the optimal values.
            let mut w = vec![0.0; p];
            for (&j, v) in support.iter().zip(sys.values()) {
                w[j] = v;
            }
            let r: Vec<f64> = g.mul(&w.iter().zip(&wbar).map(|(a, b)| a - b).collect::<Vec<_>>());
            let f = 0.5 * r.iter().map(|x| x * x).sum::<f64>()
                + 0.5 * mu * w.iter().zip(&wbar).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
            // Two f64 evaluations of a value of order 1: 1e-10 relative covers rounding.
            assert!((sys.objective() - f).abs() <= 1e-10 * f.abs().max(1.0), "{} vs {f}", sys.objective());
            let outs: Vec<usize> = support.iter().copied().step_by(2).collect();
            let ins: Vec<usize> = (0..p).filter(|j| !support.contains(j)).collect();
            let cand = sys.candidates(&outs, &ins);
            // Woodbury updates of a system with condition number < 10⁴: 1e-8 relative to F
            // is a wide margin over the ~1e-12 expected.
            let tol = 1e-8 * sys.objective().abs().max(1.0);
            for (x, &i) in outs.iter().enumerate() {
                for (y, &j) in ins.iter().enumerate() {
                    let rebuilt = sys.with_swaps(&[(i, j)]).unwrap();
                    let mut swapped: Vec<usize> = support.iter().copied().filter(|&s| s != i).chain([j]).collect();
                    swapped.sort_unstable();
                    assert_eq!(rebuilt.support(), swapped.as_slice());
                    let fresh = SampleSystem::new(&g, &wbar, &swapped, mu).unwrap().objective();
                    let want = fresh - sys.objective();
                    let (pair, batch) = (sys.pair_delta(&cand, x, y), sys.batch_delta(&cand, &[(x, y)]));
                    assert!((pair - want).abs() <= tol, "swap {i}->{j}: {pair} vs {want}");
                    assert!((batch - want).abs() <= tol, "batch of one {i}->{j}: {batch} vs {want}");
                    assert!((rebuilt.objective() - fresh).abs() <= tol, "updated system {i}->{j}");
                }
            }
            // A batch of disjoint swaps against a system rebuilt on the final support.
            let pairs: Vec<(usize, usize)> =
                (0..outs.len().min(ins.len()).min(3)).map(|t| (t, ins.len() - 1 - t)).collect();
            let cols: Vec<(usize, usize)> = pairs.iter().map(|&(x, y)| (outs[x], ins[y])).collect();
            let after = sys.with_swaps(&cols).unwrap();
            let fresh = SampleSystem::new(&g, &wbar, after.support(), mu).unwrap().objective();
            let batch = sys.batch_delta(&cand, &pairs);
            assert!((batch - (fresh - sys.objective())).abs() <= tol, "batch: {batch} vs {}", fresh - sys.objective());
            assert!((after.objective() - fresh).abs() <= tol, "batch-updated system");
        }
    }

    #[test]
    fn woodbury_crosses_chunk_boundaries() {
        // k > CHUNK exercises the accumulation over column chunks. The element-wise reference
        // would be slow at this size, so check optimality instead: the gradient on S,
        // G_Sᵀ(G_S δ − c) + μ δ, vanishes.
        let (n, p, k) = (20, 1200, 600);
        let data = random(n * p, 3);
        let g = Gradients::new(&data, n, p).unwrap();
        let wbar: Vec<f64> = random(p, 4).into_iter().map(f64::from).collect();
        let support: Vec<usize> = (0..p).step_by(2).take(k).collect();
        let got = ridge_on_support(&g, &wbar, &support, 0.5).unwrap();
        let c = g.mul(&(0..p).map(|j| if j % 2 == 0 { 0.0 } else { wbar[j] }).collect::<Vec<_>>());
        let delta: Vec<f64> = support.iter().zip(&got).map(|(&j, w)| w - wbar[j]).collect();
        let mut r = g.mul_support(&support, &delta);
        for (ri, ci) in r.iter_mut().zip(&c) {
            *ri -= ci;
        }
        let grad = g.tmul_support(&support, &r);
        let scale: f64 = delta.iter().map(|d| d.abs()).fold(0.0, f64::max).max(1.0);
        for (t, (gr, d)) in grad.iter().zip(&delta).enumerate() {
            // The gradient sums n·k = 1.2·10⁴ products of size ≤ max|δ|, so f64 rounding is
            // ~1e-12·max|δ|; 1e-10 relative to n·k·max|δ| leaves a margin of 10⁶.
            assert!((gr + 0.5 * d).abs() < 1e-10 * scale * (n * k) as f64, "entry {t}");
        }
    }
}

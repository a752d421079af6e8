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
//! `min(n, k)²`, and `G_S` is read in chunks converted to f64 on the fly.

use faer::linalg::matmul::triangular::{BlockStructure, matmul};
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
    if k == 0 {
        return Ok(Vec::new());
    }
    // c = G_{S̄}·w̄_{S̄}: zero the kept entries of w̄ and multiply.
    let mut pruned_part = wbar.to_vec();
    for &j in support {
        pruned_part[j] = 0.0;
    }
    let c = g.mul(&pruned_part);
    let delta = if k <= n { direct(g, support, &c, mu)? } else { woodbury(g, support, &c, mu)? };
    let w: Vec<f64> = support.iter().zip(&delta).map(|(&j, d)| wbar[j] + d).collect();
    if w.iter().any(|v| !v.is_finite()) {
        return Err("the ridge back-solve produced a non-finite weight; raise lambda".into());
    }
    Ok(w)
}

/// `k ≤ n`: solve `(G_SᵀG_S + μI)·δ = G_Sᵀc`. `H` accumulates `RᵀR` over chunks `R` of rows
/// of `G_S` (lower triangle only, which is all the Cholesky reads).
fn direct(g: &Gradients<'_>, support: &[usize], c: &[f64], mu: f64) -> Result<Vec<f64>, String> {
    let (n, k) = (g.rows(), support.len());
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
    let rhs = g.tmul_support(support, c);
    cholesky_solve(h, &rhs)
}

/// `n < k`: solve `(G_SG_Sᵀ + μI)·z = c`, then `δ = G_Sᵀz`. `K` accumulates `CCᵀ` over
/// chunks `C` of columns of `G_S`.
fn woodbury(g: &Gradients<'_>, support: &[usize], c: &[f64], mu: f64) -> Result<Vec<f64>, String> {
    let n = g.rows();
    let mut kmat = Mat::<f64>::zeros(n, n);
    for i in 0..n {
        kmat[(i, i)] = mu;
    }
    for cols in support.chunks(CHUNK) {
        // Cᵀ (chunk × n), column-major: column i is row i of G gathered on the chunk.
        let ct = Mat::<f64>::from_fn(cols.len(), n, |t, i| g.row(i)[cols[t]] as f64);
        matmul(
            kmat.as_mut(),
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
    let z = cholesky_solve(kmat, c)?;
    Ok(g.tmul_support(support, &z))
}

/// Solves `A·x = b` for symmetric positive definite `A` given by its lower triangle.
fn cholesky_solve(a: Mat<f64>, b: &[f64]) -> Result<Vec<f64>, String> {
    let llt = a
        .llt(Side::Lower)
        .map_err(|e| format!("the ridge back-solve's system is not positive definite ({e:?}); use lambda > 0"))?;
    let mut rhs = Mat::<f64>::from_fn(b.len(), 1, |i, _| b[i]);
    llt.solve_in_place(rhs.as_mut());
    Ok((0..b.len()).map(|i| rhs[(i, 0)]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyperprune_sdk::rng::SplitMix64;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..len).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
    }

    /// Gaussian elimination with partial pivoting: an independent solver for the check.
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
    fn woodbury_crosses_chunk_boundaries() {
        // k > CHUNK exercises the accumulation over column chunks; the reference would be
        // slow at this size, so compare against the direct path with n ≥ k instead.
        let (n, p, k) = (20, 1200, 600);
        let data = random(n * p, 3);
        let g = Gradients::new(&data, n, p).unwrap();
        let wbar: Vec<f64> = random(p, 4).into_iter().map(f64::from).collect();
        let support: Vec<usize> = (0..p).step_by(2).take(k).collect();
        let got = ridge_on_support(&g, &wbar, &support, 0.5).unwrap();
        let c = g.mul(&(0..p).map(|j| if j % 2 == 0 { 0.0 } else { wbar[j] }).collect::<Vec<_>>());
        // Check optimality instead: the gradient on S, G_Sᵀ(G_S δ − c) + μ δ, vanishes.
        let delta: Vec<f64> = support.iter().zip(&got).map(|(&j, w)| w - wbar[j]).collect();
        let mut r = g.mul_support(&support, &delta);
        for (ri, ci) in r.iter_mut().zip(&c) {
            *ri -= ci;
        }
        let grad = g.tmul_support(&support, &r);
        let scale: f64 = delta.iter().map(|d| d.abs()).fold(0.0, f64::max).max(1.0);
        for (t, (gr, d)) in grad.iter().zip(&delta).enumerate() {
            // Residual of an f64 solve with entries of size ~n·k = 10⁴: 1e-8 is generous.
            assert!((gr + 0.5 * d).abs() < 1e-8 * scale * (n * k) as f64, "entry {t}");
        }
    }
}

//! The Optimal Brain Surgeon update for one Fisher block: remove every pruned weight of the
//! block at once and move the kept ones to minimise the quadratic model of the loss.
//!
//! For a block with Fisher `F`, weights `w` and pruned indices `Q` (kept `K`), OBS solves
//!
//! ```text
//! minimise ½ δwᵀ F δw   subject to  (w + δw)_Q = 0
//! ```
//!
//! whose solution (Hassibi & Stork 1993, the multi-weight form WoodFisher uses) is
//!
//! ```text
//! δw = −F⁻¹[:,Q] (F⁻¹[Q,Q])⁻¹ w_Q,      ΔL = ½ w_Qᵀ (F⁻¹[Q,Q])⁻¹ w_Q.
//! ```
//!
//! For one weight (`Q = {q}`) this is `δw = −w_q F⁻¹e_q / [F⁻¹]_qq` and
//! `ΔL = w_q² / (2[F⁻¹]_qq)`, the pruning statistic `ρ_q`.
//!
//! Blocks are treated independently: the plugin's Fisher is block-diagonal, so the joint
//! problem over all weights separates into one such problem per block, and solving each
//! block exactly is exact for the block-diagonal Fisher (not for the full one).

use faer::linalg::matmul::matmul;
use faer::prelude::*;
use faer::{Accum, Side};

use crate::fisher::{LowRankInverse, damped_gram_factor};

/// The weights of a block after its OBS update, pruned entries exactly zero, and the
/// predicted loss increase `ΔL` under the quadratic model.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockUpdate {
    /// New weights of the block; `0.0` at every pruned index.
    pub weights: Vec<f64>,
    /// `½ δwᵀ F δw` for the update.
    pub loss_increase: f64,
}

/// The joint OBS update from an explicit block inverse `inv = F⁻¹`:
/// `δw = −F⁻¹[:,Q] (F⁻¹[Q,Q])⁻¹ w_Q`, solved by a Cholesky factorisation of `F⁻¹[Q,Q]`.
///
/// # Shapes
/// `inv`: `b × b`; `w`: `b`; `pruned`: indices into the block, any order, no repeats.
///
/// # Errors
/// When `F⁻¹[Q,Q]` is not numerically positive definite (raise the damping).
pub fn obs_update_dense(inv: MatRef<'_, f64>, w: &[f64], pruned: &[usize]) -> Result<BlockUpdate, String> {
    let mut weights = w.to_vec();
    if pruned.is_empty() {
        return Ok(BlockUpdate { weights, loss_increase: 0.0 });
    }
    let m = pruned.len();
    let inv_qq = Mat::<f64>::from_fn(m, m, |i, j| inv[(pruned[i], pruned[j])]);
    let mut z = Mat::<f64>::from_fn(m, 1, |i, _| w[pruned[i]]);
    let llt = inv_qq
        .llt(Side::Lower)
        .map_err(|_| "the pruned block of the inverse Fisher is not positive definite; raise damp".to_string())?;
    llt.solve_in_place(z.as_mut());
    let loss_increase = 0.5 * pruned.iter().enumerate().map(|(i, &q)| w[q] * z[(i, 0)]).sum::<f64>();
    let inv_bq = Mat::<f64>::from_fn(w.len(), m, |r, j| inv[(r, pruned[j])]);
    let mut delta = Mat::<f64>::zeros(w.len(), 1);
    matmul(delta.as_mut(), Accum::Replace, inv_bq.as_ref(), z.as_ref(), -1.0, Par::Seq);
    for (r, x) in weights.iter_mut().enumerate() {
        *x += delta[(r, 0)];
    }
    for &q in pruned {
        weights[q] = 0.0;
    }
    Ok(BlockUpdate { weights, loss_increase })
}

/// The same update from the implicit one-shot inverse, for blocks wider than the number of
/// gradients. Solving the equivalent kept-side system `F_KK δw_K = F_KQ w_Q` and pushing
/// `F_KK⁻¹ = (λI + G_KᵀG_K/n)⁻¹` through `G_Kᵀ` gives
///
/// ```text
/// δw_K = G_Kᵀ (nλI + G_K G_Kᵀ)⁻¹ G_Q w_Q,     δw_Q = −w_Q,
/// ```
///
/// an `n × n` solve instead of a `|Q| × |Q|` one; `ΔL = ½(λ‖δw‖² + ‖G δw‖²/n)`.
///
/// # Errors
/// When `nλI + G_K G_Kᵀ` is not numerically positive definite (raise the damping).
pub fn obs_update_low_rank(inv: &LowRankInverse, w: &[f64], pruned: &[usize]) -> Result<BlockUpdate, String> {
    let g = inv.grads();
    let (n, b) = g.shape();
    let mut is_pruned = vec![false; b];
    for &q in pruned {
        is_pruned[q] = true;
    }
    let kept: Vec<usize> = (0..b).filter(|&i| !is_pruned[i]).collect();
    let mut delta = vec![0.0; b];
    for &q in pruned {
        delta[q] = -w[q];
    }
    if !pruned.is_empty() && !kept.is_empty() {
        let g_k = Mat::<f64>::from_fn(n, kept.len(), |r, j| g[(r, kept[j])]);
        let mut y = Mat::<f64>::from_fn(n, 1, |r, _| pruned.iter().map(|&q| g[(r, q)] * w[q]).sum());
        damped_gram_factor(g_k.as_ref(), inv.damp())?.solve_in_place(y.as_mut());
        let mut dk = Mat::<f64>::zeros(kept.len(), 1);
        matmul(dk.as_mut(), Accum::Replace, g_k.transpose(), y.as_ref(), 1.0, Par::Seq);
        for (j, &k) in kept.iter().enumerate() {
            delta[k] = dk[(j, 0)];
        }
    }
    let g_delta: f64 = (0..n).map(|r| (0..b).map(|c| g[(r, c)] * delta[c]).sum::<f64>().powi(2)).sum();
    let loss_increase = 0.5 * (inv.damp() * delta.iter().map(|d| d * d).sum::<f64>() + g_delta / n as f64);
    let mut weights: Vec<f64> = w.iter().zip(&delta).map(|(a, d)| a + d).collect();
    for &q in pruned {
        weights[q] = 0.0;
    }
    Ok(BlockUpdate { weights, loss_increase })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fisher::tests::{Rng, fisher};
    use crate::fisher::woodbury_inverse;
    use faer::linalg::solvers::DenseSolveCore;

    /// Minimises ½δwᵀFδw subject to (w + δw)_Q = 0 by solving the KKT system
    /// `[F E; Eᵀ 0][δw; μ] = [0; −w_Q]` with a pivoted LU: no inverse, no Schur complement,
    /// so it shares nothing with the code under test. Returns `(δw, ½δwᵀFδw)`.
    fn constrained_solve(f: MatRef<'_, f64>, w: &[f64], pruned: &[usize]) -> (Vec<f64>, f64) {
        let (b, m) = (w.len(), pruned.len());
        let kkt = Mat::<f64>::from_fn(b + m, b + m, |i, j| match (i < b, j < b) {
            (true, true) => f[(i, j)],
            (true, false) => f64::from(u8::from(pruned[j - b] == i)),
            (false, true) => f64::from(u8::from(pruned[i - b] == j)),
            (false, false) => 0.0,
        });
        let mut rhs = Mat::<f64>::from_fn(b + m, 1, |i, _| if i < b { 0.0 } else { -w[pruned[i - b]] });
        kkt.partial_piv_lu().solve_in_place(rhs.as_mut());
        let delta: Vec<f64> = (0..b).map(|i| rhs[(i, 0)]).collect();
        let mut quad = 0.0;
        for i in 0..b {
            for j in 0..b {
                quad += delta[i] * f[(i, j)] * delta[j];
            }
        }
        (delta, 0.5 * quad)
    }

    fn problem(seed: u64, n: usize, b: usize) -> (Mat<f64>, Vec<f64>) {
        let mut rng = Rng::new(seed);
        (rng.mat(n, b), (0..b).map(|_| rng.next()).collect())
    }

    fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
        let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * scale, "{what}[{i}]: {x} vs {y}");
        }
    }

    // Tolerances: F here has condition number ≲ 10⁴ (damp 1e-2, unit-scale gradients), so
    // the KKT LU, the Cholesky of F⁻¹[Q,Q] and the Woodbury build each lose at most ~4 of
    // f64's 16 digits; 1e-8 relative leaves a wide margin.

    #[test]
    fn single_weight_update_matches_the_closed_form_and_the_constrained_solve() {
        let (g, w) = problem(3, 30, 10);
        let damp = 1e-2;
        let f = fisher(g.as_ref(), damp);
        let inv = woodbury_inverse(g.as_ref(), damp, 1).unwrap();
        for q in [0, 4, 9] {
            let upd = obs_update_dense(inv.as_ref(), &w, &[q]).unwrap();
            let closed: Vec<f64> = (0..w.len()).map(|i| w[i] - w[q] * inv[(i, q)] / inv[(q, q)]).collect();
            let rho = w[q] * w[q] / (2.0 * inv[(q, q)]);
            let (delta, quad) = constrained_solve(f.as_ref(), &w, &[q]);
            let solved: Vec<f64> = w.iter().zip(&delta).map(|(a, d)| a + d).collect();
            assert_eq!(upd.weights[q], 0.0, "pruned weight is exactly zero");
            assert!(closed[q].abs() < 1e-12, "closed form zeroes w_q");
            assert_close(&upd.weights, &closed, 1e-8, "update vs closed form");
            assert_close(&upd.weights, &solved, 1e-8, "update vs constrained solve");
            assert!((upd.loss_increase - rho).abs() <= 1e-8 * rho, "ΔL {} vs ρ {rho}", upd.loss_increase);
            assert!((quad - rho).abs() <= 1e-8 * rho, "½δwᵀFδw {quad} vs ρ {rho}");
        }
    }

    #[test]
    fn joint_block_update_matches_the_constrained_solve() {
        let damp = 1e-2;
        // b < n: explicit inverse; b > n: low rank. Both against the same direct solve.
        for (n, b) in [(40, 16), (6, 16)] {
            let (g, w) = problem(5, n, b);
            let f = fisher(g.as_ref(), damp);
            let pruned = [1, 2, 7, 11, 15];
            let (delta, quad) = constrained_solve(f.as_ref(), &w, &pruned);
            let mut solved: Vec<f64> = w.iter().zip(&delta).map(|(a, d)| a + d).collect();
            for &q in &pruned {
                solved[q] = 0.0;
            }
            let dense = obs_update_dense(woodbury_inverse(g.as_ref(), damp, 4).unwrap().as_ref(), &w, &pruned).unwrap();
            let low = obs_update_low_rank(&LowRankInverse::new(g.clone(), damp).unwrap(), &w, &pruned).unwrap();
            for (upd, what) in [(&dense, "dense"), (&low, "low rank")] {
                assert_close(&upd.weights, &solved, 1e-8, what);
                assert!((upd.loss_increase - quad).abs() <= 1e-8 * quad, "{what}: {} vs {quad}", upd.loss_increase);
                assert!(pruned.iter().all(|&q| upd.weights[q] == 0.0), "{what}: pruned not zero");
            }
        }
    }

    #[test]
    fn empty_and_full_pruned_sets() {
        let (g, w) = problem(9, 8, 5);
        let damp = 1e-2;
        let inv = fisher(g.as_ref(), damp).llt(Side::Lower).unwrap().inverse();
        let none = obs_update_dense(inv.as_ref(), &w, &[]).unwrap();
        assert_eq!(none.weights, w);
        assert_eq!(none.loss_increase, 0.0);
        let all: Vec<usize> = (0..5).collect();
        let low = obs_update_low_rank(&LowRankInverse::new(g.clone(), damp).unwrap(), &w, &all).unwrap();
        let dense = obs_update_dense(inv.as_ref(), &w, &all).unwrap();
        assert!(low.weights.iter().chain(&dense.weights).all(|&x| x == 0.0));
        // Removing everything costs ½wᵀFw.
        let f = fisher(g.as_ref(), damp);
        let mut full = 0.0;
        for i in 0..5 {
            for j in 0..5 {
                full += 0.5 * w[i] * f[(i, j)] * w[j];
            }
        }
        assert!((low.loss_increase - full).abs() <= 1e-10 * full);
        assert!((dense.loss_increase - full).abs() <= 1e-8 * full);
    }
}

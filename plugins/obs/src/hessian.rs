//! The damped layer Hessian `G = XᵀX/n + λ·mean(diag XᵀX/n)·I` and the solves OBS needs
//! on it: its inverse (the start of every row's greedy pass) and the least-squares
//! re-solve of a row's kept weights on a given support.
//!
//! # Convention
//!
//! The host's `layer_input_hessian` returns `XᵀX/n`. We work with `G = XᵀX/n` itself, not
//! with the `H = 2XᵀX/n` of the OBS papers: the loss of a row `w` replaced by `ŵ` is
//! `L(ŵ) = (1/n)‖Xw − Xŵ‖² = (w − ŵ)ᵀ G (w − ŵ) = ½ (w − ŵ)ᵀ H (w − ŵ)`, so removing weight
//! `q` costs `½ w_q² / [H⁻¹]_qq = w_q² / [G⁻¹]_qq` (Hassibi & Stork 1993; Frantar & Alistarh
//! 2022, eq. 2), and the update `δ = −(w_q / [G⁻¹]_qq) G⁻¹[:, q]` is the same in
//! both conventions (the factor 2 cancels). With damping the loss is the damped one,
//! `(1/n)‖X(w − ŵ)‖² + λ'‖w − ŵ‖²` with `λ' = λ·mean(diag XᵀX/n)`.

use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};

/// `G = XᵀX/n + λ'·I` of one layer, `d × d`, row-major.
#[derive(Debug, Clone)]
pub struct DampedHessian {
    d: usize,
    g: Vec<f64>,
}

impl DampedHessian {
    /// Damps `xtx` (`XᵀX/n`, `d × d` row-major) by `damp · mean(diag)` on the diagonal.
    ///
    /// A layer whose inputs are all zero has a zero diagonal; it is damped by `damp` itself
    /// so that its (meaningless) weights can still be removed at no cost.
    ///
    /// # Errors
    /// When `xtx` is not `d × d` or holds a non-finite value.
    pub fn new(d: usize, xtx: &[f64], damp: f64) -> Result<DampedHessian, String> {
        if xtx.len() != d * d {
            return Err(format!("expected a {d}×{d} input hessian ({} values), got {} values", d * d, xtx.len()));
        }
        if xtx.iter().any(|v| !v.is_finite()) {
            return Err("the input hessian holds a non-finite value; check the calibration data".into());
        }
        let mean_diag = if d == 0 { 0.0 } else { (0..d).map(|i| xtx[i * d + i]).sum::<f64>() / d as f64 };
        let shift = damp * if mean_diag > 0.0 { mean_diag } else { 1.0 };
        let mut g = xtx.to_vec();
        for i in 0..d {
            g[i * d + i] += shift;
        }
        Ok(DampedHessian { d, g })
    }

    /// The dimension `d` (the layer's row length).
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Entry `(i, j)` of `G`.
    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.g[i * self.d + j]
    }

    /// `G⁻¹`, row-major, by Cholesky.
    ///
    /// # Errors
    /// When `G` is not positive definite (a rank-deficient `X` with `damp = 0`).
    pub fn inverse(&self) -> Result<Vec<f64>, String> {
        let d = self.d;
        let g = Mat::<f64>::from_fn(d, d, |i, j| self.get(i, j));
        let llt = g.llt(Side::Lower).map_err(|e| not_positive_definite(&e))?;
        let inv = llt.inverse();
        // Symmetrise: the two triangles of a computed inverse differ by rounding, and the
        // greedy pass reads rows where the formula has columns.
        Ok((0..d * d).map(|k| 0.5 * (inv[(k / d, k % d)] + inv[(k % d, k / d)])).collect())
    }

    /// The optimal row on a support: `ŵ` minimising `(w − ŵ)ᵀ G (w − ŵ)` subject to
    /// `ŵ_j = 0` where `keep[j]` is false. Setting the gradient over the kept set `S` to
    /// zero gives `G_SS ŵ_S = (G w)_S`, solved by Cholesky.
    ///
    /// # Errors
    /// When `G_SS` is not positive definite.
    pub fn solve_on_support(&self, w: &[f64], keep: &[bool]) -> Result<Vec<f64>, String> {
        let d = self.d;
        let kept: Vec<usize> = (0..d).filter(|&j| keep[j]).collect();
        let mut out = vec![0.0; d];
        if kept.is_empty() {
            return Ok(out);
        }
        let a = Mat::<f64>::from_fn(kept.len(), kept.len(), |i, j| self.get(kept[i], kept[j]));
        let mut rhs = Mat::<f64>::from_fn(kept.len(), 1, |i, _| {
            let row = &self.g[kept[i] * d..(kept[i] + 1) * d];
            row.iter().zip(w).map(|(g, w)| g * w).sum()
        });
        let llt = a.llt(Side::Lower).map_err(|e| not_positive_definite(&e))?;
        faer::linalg::solvers::Solve::solve_in_place(&llt, rhs.as_mut());
        for (i, &j) in kept.iter().enumerate() {
            out[j] = rhs[(i, 0)];
        }
        Ok(out)
    }

    /// The (damped) loss `(w − ŵ)ᵀ G (w − ŵ)` of replacing `w` by `w_hat`.
    pub fn loss(&self, w: &[f64], w_hat: &[f64]) -> f64 {
        let d = self.d;
        let delta: Vec<f64> = w.iter().zip(w_hat).map(|(a, b)| a - b).collect();
        (0..d).map(|i| delta[i] * self.g[i * d..(i + 1) * d].iter().zip(&delta).map(|(g, x)| g * x).sum::<f64>()).sum()
    }
}

fn not_positive_definite(e: &impl std::fmt::Debug) -> String {
    format!(
        "the damped input hessian is not positive definite ({e:?}): the layer's inputs are rank-deficient; use damp > 0"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_times_hessian_is_identity() {
        let xtx = [4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0];
        let h = DampedHessian::new(3, &xtx, 0.01).unwrap();
        let inv = h.inverse().unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let p: f64 = (0..3).map(|k| h.get(i, k) * inv[k * 3 + j]).sum();
                // A 3×3 well-conditioned (κ ≈ 3) system: rounding stays near 1e-16.
                assert!((p - f64::from(u8::from(i == j))).abs() < 1e-12, "({i},{j}) = {p}");
            }
        }
    }

    #[test]
    fn singular_hessian_without_damping_is_an_error_naming_damp() {
        let xtx = [1.0, 1.0, 1.0, 1.0];
        let err = DampedHessian::new(2, &xtx, 0.0).unwrap().inverse().unwrap_err();
        assert!(err.contains("damp > 0"), "{err}");
        assert!(DampedHessian::new(2, &xtx, 0.01).unwrap().inverse().is_ok());
    }

    #[test]
    fn all_zero_inputs_are_damped_too() {
        let h = DampedHessian::new(2, &[0.0; 4], 0.5).unwrap();
        assert_eq!(h.get(0, 0), 0.5);
        assert!(h.inverse().is_ok());
    }
}

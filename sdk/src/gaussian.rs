//! Gaussian inputs with a given covariance: the factor both the host's moment-matched
//! calibration inputs (`calib_data=moments`) and the hypernetwork's stored `refine` inputs
//! draw with, `x = μ + L z` for `L Lᵀ = Σ` and standard normal `z`
//! ([`crate::rng::SplitMix64::next_normal`]).

/// The lower Cholesky factor of the covariance `cov` (`d × d`, row-major), overwritten: a
/// jitter of 1e-6 of its mean variance (plus 1e-12) is added to the diagonal first, so a
/// value that never varies (an image border) keeps its mean, then [`cholesky`].
pub fn covariance_factor(cov: &mut [f64], d: usize) -> &[f64] {
    let jitter = 1e-6 * (0..d).map(|i| cov[i * d + i]).sum::<f64>() / d.max(1) as f64 + 1e-12;
    (0..d).for_each(|i| cov[i * d + i] += jitter);
    cholesky(cov, d)
}

/// The lower Cholesky factor `L` (`L·Lᵀ = a`, row-major, upper part zero) of the symmetric
/// positive semi-definite `d × d` matrix `a`, overwritten. A pivot that rounding leaves at or
/// below zero is taken as zero (that direction has no variance).
pub fn cholesky(a: &mut [f64], d: usize) -> &[f64] {
    for j in 0..d {
        let s = a[j * d + j] - (0..j).map(|k| a[j * d + k] * a[j * d + k]).sum::<f64>();
        let pivot = if s > 0.0 { s.sqrt() } else { 0.0 };
        a[j * d + j] = pivot;
        for i in j + 1..d {
            let s = a[i * d + j] - (0..j).map(|k| a[i * d + k] * a[j * d + k]).sum::<f64>();
            a[i * d + j] = if pivot > 0.0 { s / pivot } else { 0.0 };
        }
        (j + 1..d).for_each(|k| a[j * d + k] = 0.0);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cholesky_factor_reproduces_its_matrix_and_zeroes_directions_without_variance() {
        // A = B·Bᵀ for a 4 × 3 B: rank 3, so one pivot is zero.
        let b = [1.0, 0.5, -0.2, 0.3, 2.0, 0.1, -1.0, 0.4, 1.5, 0.0, 0.0, 0.0];
        let mut a = vec![0.0; 16];
        for i in 0..4 {
            for j in 0..4 {
                a[i * 4 + j] = (0..3).map(|k| b[i * 3 + k] * b[j * 3 + k]).sum();
            }
        }
        let want = a.clone();
        let l = cholesky(&mut a, 4).to_vec();
        for i in 0..4 {
            for j in 0..4 {
                let got: f64 = (0..4).map(|k| l[i * 4 + k] * l[j * 4 + k]).sum();
                assert!((got - want[i * 4 + j]).abs() < 1e-9, "({i}, {j}): {got} against {}", want[i * 4 + j]);
                if j > i {
                    assert_eq!(l[i * 4 + j], 0.0);
                }
            }
        }
        assert_eq!(l[15], 0.0, "the fourth row of B is zero");
    }
}

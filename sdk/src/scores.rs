//! Data-free importance formulas that more than one pruner builds on: pure functions of the
//! weights, free of any FFI. Higher is kept longer, as in [`crate::masking`].
//!
//! The `lamp` plugin prunes by [`lamp`]; the hypernetwork can take LAMP's ranking as the
//! base score its network corrects.

use crate::masking::Score;

/// The LAMP score of every weight (Lee, Park, Mo, Ahn and Shin, "Layer-adaptive sparsity
/// for the magnitude-based pruning", ICLR 2021): `w² / Σ_{v in layer, |v| ≥ |w|} v²`, one
/// vector per layer of `layers`.
///
/// Scores lie in `[0, 1]` and the largest weight of every layer scores 1, so a global
/// ranking never empties a layer. Weights of equal `|w|` score alike (the sum runs over
/// every `|v| ≥ |w|`, ties included), so a score never depends on the order a sort left
/// them in. Sums run in f64 (squares of f32 values are exact there); a weight of zero whose
/// suffix sums to zero (an all-zero tail) scores 0 rather than 0/0.
pub fn lamp(layers: &[&[f32]]) -> Vec<Vec<f32>> {
    layers.iter().map(|w| lamp_layer(w)).collect()
}

fn lamp_layer(w: &[f32]) -> Vec<f32> {
    let squares: Vec<f64> = w.iter().map(|&x| f64::from(x) * f64::from(x)).collect();
    // The squares' order (as `total_cmp` orders them) from a sort of integer keys.
    let mut keyed: Vec<(u64, u32)> = squares.iter().zip(0u32..).map(|(s, i)| (s.key(), i)).collect();
    keyed.sort_unstable();
    let order: Vec<usize> = keyed.into_iter().map(|(_, i)| i as usize).collect();
    let mut scores = vec![0f32; w.len()];
    // Tie groups from the largest down: the suffix sum grows from the top, so the largest
    // group's score is exact (1 for a unique maximum) and small terms join large ones late.
    let mut suffix = 0f64;
    for group in order.chunk_by(|&a, &b| squares[a] == squares[b]).rev() {
        let value = squares[group[0]];
        suffix += group.iter().map(|&i| squares[i]).sum::<f64>();
        let score = if suffix > 0.0 { (value / suffix) as f32 } else { 0.0 };
        for &i in group {
            scores[i] = score;
        }
    }
    scores
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores are ratios of sums of at most four small squares: 1e-6 is many ulps of f32.
    fn assert_close(got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn a_weight_scores_its_square_over_the_suffix_sum_of_larger_squares() {
        // Squares 1, 4, 9, 0.25; sorted 0.25, 1, 4, 9; suffix sums 14.25, 14, 13, 9.
        // 0.5 → 0.25/14.25, 1 → 1/14, -2 → 4/13, 3 → 9/9 = 1 (the layer's largest).
        let scores = lamp(&[&[1.0, -2.0, 3.0, 0.5]]);
        assert_close(&scores[0], &[1.0 / 14.0, 4.0 / 13.0, 1.0, 0.25 / 14.25]);
    }

    #[test]
    fn equal_magnitudes_score_alike_whatever_the_sign() {
        // Squares 4, 1, 1, 4, 9. |w| = 1: every square counts, 1/19. |w| = 2: 4/(4+4+9) = 4/17.
        // |w| = 3: 9/9 = 1.
        let scores = lamp(&[&[2.0, -1.0, 1.0, -2.0, 3.0]]);
        assert_close(&scores[0], &[4.0 / 17.0, 1.0 / 19.0, 1.0 / 19.0, 4.0 / 17.0, 1.0]);
        // An all-zero layer scores 0 everywhere instead of 0/0.
        assert_eq!(lamp(&[&[0.0, -0.0, 0.0]])[0], vec![0.0; 3]);
    }

    #[test]
    fn scores_do_not_depend_on_a_layers_scale() {
        // Squares 100, 400, 900, 1600: suffix sums 3000, 2900, 2500, 1600. The same layer
        // divided by 100 scores alike, up to f32 rounding of 0.1 etc.
        let want = [1.0 / 30.0, 4.0 / 29.0, 9.0 / 25.0, 1.0];
        let scores = lamp(&[&[10.0, 20.0, 30.0, 40.0], &[0.1, 0.2, 0.3, 0.4]]);
        assert_close(&scores[0], &want);
        assert_close(&scores[1], &want);
    }
}

//! How a validation check is scored: the fit's [`Criterion`], against the untrained
//! network's retention at the same val compressions.

/// How the fit scores a validation check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criterion {
    /// The mean over the val compressions of the better of the check and the untrained
    /// network at each: what the state will keep once the network's weight is chosen per
    /// compression (see [`crate::base`]), which falls back to the base where the network
    /// loses.
    Blended,
    /// The mean val retention over the val compressions, among the checks that are at most
    /// [`GUARD`] below the untrained network (the base with the floor) at
    /// every one of them; a check further below anywhere loses to every check that is not.
    Guarded,
    /// The worst margin over the val compressions against the untrained network: a check
    /// wins only by being above it at every compression; ties keep the earlier step.
    Margin,
    /// The mean val retention over the val compressions.
    Mean,
}

/// How far below the untrained network, at any val compression, a check may be and still
/// be kept under [`Criterion::Guarded`]: one point of retention, about what the val slice
/// (512 images, 8 members) moves between two validations of the same network.
pub const GUARD: f64 = 0.01;

impl Criterion {
    /// The score of `by_sparsity` (higher is better) against `reference`, the untrained
    /// network's retention at the same sparsities (without one, every criterion is the mean).
    pub(super) fn score(self, by_sparsity: &[f64], reference: Option<&[f64]>) -> f64 {
        let mean = average(by_sparsity);
        match (self, reference) {
            (Criterion::Margin, Some(r)) => worst_margin(by_sparsity, r),
            (Criterion::Blended, Some(r)) => {
                average(&by_sparsity.iter().zip(r).map(|(a, b)| a.max(*b)).collect::<Vec<f64>>())
            }
            // Retention is at most a little over 1, so a guarded-out check scores below
            // every check that is not.
            (Criterion::Guarded, Some(r)) if worst_margin(by_sparsity, r) < -GUARD => mean - 2.0,
            _ => mean,
        }
    }
}

/// The smallest `by_sparsity − reference` over the val compressions.
pub(super) fn worst_margin(by_sparsity: &[f64], reference: &[f64]) -> f64 {
    by_sparsity.iter().zip(reference).map(|(a, b)| a - b).fold(f64::INFINITY, f64::min)
}

/// The mean of val retentions.
pub(super) fn average(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_criteria_rank_checks_as_documented() {
        let reference = [0.99, 0.90, 0.80];
        // a: better on average but 1.5 points below the start at the last compression;
        // b: above it everywhere, by little; c: 0.5 below at one, well above elsewhere.
        let (a, b, c) = ([1.0, 0.98, 0.785], [0.995, 0.905, 0.801], [0.985, 0.93, 0.83]);
        let score = |k: Criterion, v: &[f64]| k.score(v, Some(&reference));
        // The mean prefers a; the guard drops it (below every admissible check) and keeps
        // c, the best mean among the rest; the margin wants b, the only one never below.
        assert!(score(Criterion::Mean, &a) > score(Criterion::Mean, &c));
        assert!(score(Criterion::Guarded, &c) > score(Criterion::Guarded, &b));
        assert!(score(Criterion::Guarded, &b) > score(Criterion::Guarded, &a));
        assert!(score(Criterion::Margin, &b) > score(Criterion::Margin, &c));
        assert!(score(Criterion::Margin, &c) > score(Criterion::Margin, &a));
        // The untrained network itself is admissible with its own mean.
        let start = score(Criterion::Guarded, &reference);
        assert!((start - (0.99 + 0.90 + 0.80) / 3.0).abs() < 1e-12);
        // Blended counts each compression at the better of the check and the start: a is
        // credited its gains at 2x and 4x and loses nothing at 8x, so it beats c there.
        assert!((score(Criterion::Blended, &a) - (1.0 + 0.98 + 0.80) / 3.0).abs() < 1e-12);
        assert!(score(Criterion::Blended, &a) > score(Criterion::Blended, &c));
        assert!(score(Criterion::Blended, &b) > score(Criterion::Blended, &reference));
        // Without a reference every criterion is the mean.
        assert_eq!(Criterion::Margin.score(&a, None), Criterion::Mean.score(&a, None));
        assert_eq!(Criterion::Blended.score(&a, None), Criterion::Mean.score(&a, None));
    }
}

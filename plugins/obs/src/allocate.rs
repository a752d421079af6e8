//! How many weights each row loses: a greedy merge of the rows' recorded loss curves.
//!
//! Row `r`'s pass records step losses `Δ_r1, Δ_r2, …`; pruning `c_r` weights of it costs
//! `Σ_{k≤c_r} Δ_rk`. Rows are independent (the layer loss is a sum over rows, and the
//! layerwise problems are independent of each other), so the allocation minimising the
//! total loss for a total count `T` is a knapsack over these curves. We solve it greedily
//! by marginal loss: repeatedly take the cheapest next step among all rows. When every
//! curve is convex (non-decreasing steps) this is exact; OBS curves are not always convex
//! (a removal can make the next one cheaper), and a row whose next step is expensive then
//! hides cheaper steps behind it. We accept that: the steps are mostly increasing, the
//! merge is simple and deterministic, and the count is exact by construction. (OBC's reference
//! code also allocates a layer's removals over its rows from these recorded step losses.)

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// The number of steps to take from each curve so that exactly `min(total, Σ len)` steps
/// are taken, cheapest next step first (ties: the lower row index).
pub fn merge_by_marginal_loss(curves: &[&[f64]], total: usize) -> Vec<usize> {
    let mut counts = vec![0usize; curves.len()];
    let mut heap: BinaryHeap<Reverse<Step>> = curves
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.is_empty())
        .map(|(r, c)| Reverse(Step { loss: c[0], row: r }))
        .collect();
    for _ in 0..total {
        let Some(Reverse(Step { row, .. })) = heap.pop() else { break };
        counts[row] += 1;
        if let Some(&next) = curves[row].get(counts[row]) {
            heap.push(Reverse(Step { loss: next, row }));
        }
    }
    counts
}

/// The next step of a row, ordered by loss then row.
#[derive(Debug, Clone, Copy)]
struct Step {
    loss: f64,
    row: usize,
}

impl PartialEq for Step {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Step {}

impl PartialOrd for Step {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Step {
    fn cmp(&self, other: &Self) -> Ordering {
        self.loss.total_cmp(&other.loss).then(self.row.cmp(&other.row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_cheapest_steps_and_exactly_the_total() {
        let a = [1.0, 2.0, 10.0];
        let b = [0.5, 3.0];
        let c: [f64; 0] = [];
        assert_eq!(merge_by_marginal_loss(&[&a, &b, &c], 0), vec![0, 0, 0]);
        assert_eq!(merge_by_marginal_loss(&[&a, &b, &c], 3), vec![2, 1, 0]);
        assert_eq!(merge_by_marginal_loss(&[&a, &b, &c], 4), vec![2, 2, 0]);
        assert_eq!(merge_by_marginal_loss(&[&a, &b, &c], 99), vec![3, 2, 0]);
    }

    #[test]
    fn convex_curves_give_the_brute_force_optimum() {
        let a = [0.1, 0.4, 0.9, 1.6];
        let b = [0.2, 0.3, 0.35, 5.0];
        for total in 0..=8 {
            let counts = merge_by_marginal_loss(&[&a, &b], total);
            let cost = |ca: usize, cb: usize| a[..ca].iter().sum::<f64>() + b[..cb].iter().sum::<f64>();
            let best = (0..=4)
                .filter(|&ca| total >= ca && total - ca <= 4)
                .map(|ca| cost(ca, total - ca))
                .fold(f64::INFINITY, f64::min);
            assert_eq!(counts[0] + counts[1], total);
            // Sums of at most eight short decimals: 1e-12 is rounding only.
            assert!((cost(counts[0], counts[1]) - best).abs() < 1e-12, "total {total}");
        }
    }

    #[test]
    fn ties_go_to_the_lower_row() {
        let a = [1.0];
        let b = [1.0];
        assert_eq!(merge_by_marginal_loss(&[&a, &b], 1), vec![1, 0]);
    }
}

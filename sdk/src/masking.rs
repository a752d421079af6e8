//! Mask construction from scores: exact-count global and per-layer top-k, and N:M.
//!
//! Convention everywhere: a **higher score means more important**; the lowest-scored
//! weights are pruned. Ties are broken deterministically by position (the weight that
//! comes first in layer order is pruned first), so equal scores give equal masks.

use std::cmp::Ordering;

use crate::request::{Pattern, PruneRequest, Scope};

/// Keep masks pruning exactly `round(sparsity · n)` of all `n` weights, lowest scores first,
/// ranked across all layers together.
pub fn global_keep(scores: &[&[f32]], sparsity: f64) -> Vec<Vec<bool>> {
    let n: usize = scores.iter().map(|s| s.len()).sum();
    let prune = pruned(sparsity, n);
    let mut order: Vec<(f32, u32, u32)> = Vec::with_capacity(n);
    for (l, s) in scores.iter().enumerate() {
        order.extend(s.iter().enumerate().map(|(i, &v)| (v, l as u32, i as u32)));
    }
    let mut keep: Vec<Vec<bool>> = scores.iter().map(|s| vec![true; s.len()]).collect();
    if prune == 0 {
        return keep;
    }
    let cmp = |a: &(f32, u32, u32), b: &(f32, u32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2));
    if prune < n {
        order.select_nth_unstable_by(prune - 1, cmp);
    }
    for &(_, l, i) in &order[..prune] {
        keep[l as usize][i as usize] = false;
    }
    keep
}

/// Keep mask pruning exactly `count` of `scores`, lowest first (ties by position).
pub fn layer_keep_count(scores: &[f32], count: usize) -> Vec<bool> {
    let count = count.min(scores.len());
    let mut keep = vec![true; scores.len()];
    if count == 0 {
        return keep;
    }
    let mut order: Vec<u32> = (0..scores.len() as u32).collect();
    let cmp = |&a: &u32, &b: &u32| scores[a as usize].total_cmp(&scores[b as usize]).then(a.cmp(&b));
    if count < scores.len() {
        order.select_nth_unstable_by(count - 1, cmp);
    }
    for &i in &order[..count] {
        keep[i as usize] = false;
    }
    keep
}

/// Indices of the `count` highest scores, best first (ties: the earlier position first).
pub fn top_indices(scores: &[f32], count: usize) -> Vec<usize> {
    let count = count.min(scores.len());
    let mut order: Vec<u32> = (0..scores.len() as u32).collect();
    let cmp = |&a: &u32, &b: &u32| scores[b as usize].total_cmp(&scores[a as usize]).then(a.cmp(&b));
    if count > 0 && count < scores.len() {
        order.select_nth_unstable_by(count - 1, cmp);
    }
    order.truncate(count);
    order.sort_unstable_by(cmp);
    order.into_iter().map(|i| i as usize).collect()
}

/// How many weights each layer prunes so that every layer is within one weight of
/// `sparsity · n_l` and the total is exactly `round(sparsity · n)` (largest remainders).
pub fn per_layer_counts(sizes: &[usize], sparsity: f64) -> Vec<usize> {
    let total = pruned(sparsity, sizes.iter().sum());
    let ideal: Vec<f64> = sizes.iter().map(|&n| sparsity * n as f64).collect();
    let mut counts: Vec<usize> = ideal.iter().map(|x| x.floor() as usize).collect();
    let mut short = total.saturating_sub(counts.iter().sum());
    let mut by_remainder: Vec<usize> = (0..sizes.len()).collect();
    by_remainder.sort_by(|&a, &b| {
        let (ra, rb) = (ideal[a] - ideal[a].floor(), ideal[b] - ideal[b].floor());
        rb.partial_cmp(&ra).unwrap_or(Ordering::Equal).then(a.cmp(&b))
    });
    for &l in by_remainder.iter().cycle().take(sizes.len() * 2) {
        if short == 0 {
            break;
        }
        if counts[l] < sizes[l] {
            counts[l] += 1;
            short -= 1;
        }
    }
    counts
}

/// Per-layer keep masks with the counts of [`per_layer_counts`].
pub fn per_layer_keep(scores: &[&[f32]], sparsity: f64) -> Vec<Vec<bool>> {
    let sizes: Vec<usize> = scores.iter().map(|s| s.len()).collect();
    per_layer_counts(&sizes, sparsity).into_iter().zip(scores).map(|(c, s)| layer_keep_count(s, c)).collect()
}

/// N:M keep mask for one layer: in every group of `m` consecutive weights of a row (rows of
/// length `row_len`), keep the `n` highest scores. A row whose length is not a multiple of
/// `m` ends in a shorter group that keeps `round(n/m · len)` of its weights.
///
/// # Panics
/// When `n > m`, `m == 0` or `row_len` does not divide `scores.len()`.
pub fn nm_keep(scores: &[f32], row_len: usize, n: usize, m: usize) -> Vec<bool> {
    assert!(m > 0 && n <= m, "N:M needs 0 < m and n <= m, got {n}:{m}");
    assert!(row_len > 0 && scores.len().is_multiple_of(row_len), "row length must divide the layer size");
    let mut keep = vec![false; scores.len()];
    for row in 0..scores.len() / row_len {
        let start = row * row_len;
        let mut g = 0;
        while g < row_len {
            let len = m.min(row_len - g);
            let kept = if len == m { n } else { ((n as f64 / m as f64) * len as f64).round() as usize };
            let group = &scores[start + g..start + g + len];
            let group_keep = layer_keep_count(group, len - kept);
            keep[start + g..start + g + len].copy_from_slice(&group_keep);
            g += len;
        }
    }
    keep
}

/// Masks for a request from per-layer scores (`row_lens[l]` is layer `l`'s row length, used
/// by N:M): dispatches on the request's scope and pattern.
pub fn keep_for_request(scores: &[&[f32]], row_lens: &[usize], request: &PruneRequest) -> Vec<Vec<bool>> {
    match request.pattern {
        Pattern::NM { n, m } => {
            scores.iter().zip(row_lens).map(|(s, &r)| nm_keep(s, r, n as usize, m as usize)).collect()
        }
        Pattern::Unstructured => match request.scope {
            Scope::Global => global_keep(scores, request.sparsity),
            Scope::PerLayer => per_layer_keep(scores, request.sparsity),
        },
    }
}

fn pruned(sparsity: f64, n: usize) -> usize {
    ((sparsity * n as f64).round() as usize).min(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_pruned(keep: &[Vec<bool>]) -> usize {
        keep.iter().flatten().filter(|&&k| !k).count()
    }

    #[test]
    fn global_prunes_exact_count_lowest_first() {
        let a = [0.5f32, -3.0, 2.0];
        let b = [0.1f32, 1.0];
        let keep = global_keep(&[&a, &b], 0.4);
        assert_eq!(count_pruned(&keep), 2);
        assert_eq!(keep, vec![vec![true, false, true], vec![false, true]]);
    }

    #[test]
    fn top_indices_are_the_best_in_order() {
        assert_eq!(top_indices(&[0.1, 3.0, 2.0, 3.0], 3), vec![1, 3, 2]);
        assert_eq!(top_indices(&[1.0, 2.0], 0), Vec::<usize>::new());
        assert_eq!(top_indices(&[1.0, 2.0], 5), vec![1, 0]);
    }

    #[test]
    fn ties_broken_by_position() {
        let a = [1.0f32; 5];
        let keep = global_keep(&[&a], 0.4);
        assert_eq!(keep[0], vec![false, false, true, true, true]);
    }

    #[test]
    fn per_layer_totals_are_exact_and_layers_balanced() {
        let sizes = [7, 13, 29, 3];
        for s in [0.0, 0.1, 0.5, 0.77, 0.9375, 0.99] {
            let counts = per_layer_counts(&sizes, s);
            let total: usize = sizes.iter().sum();
            assert_eq!(counts.iter().sum::<usize>(), (s * total as f64).round() as usize, "s={s}");
            for (c, n) in counts.iter().zip(sizes) {
                assert!((*c as f64 - s * n as f64).abs() <= 1.0, "s={s} c={c} n={n}");
            }
        }
    }

    #[test]
    fn two_four_keeps_two_largest_per_group() {
        let scores = [1.0f32, 4.0, 3.0, 2.0, 0.0, 0.0, 5.0, 6.0];
        let keep = nm_keep(&scores, 8, 2, 4);
        assert_eq!(keep, vec![false, true, true, false, false, false, true, true]);
    }
}

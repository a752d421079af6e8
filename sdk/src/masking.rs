//! Mask construction from scores: exact-count global and per-layer top-k, and N:M; and the
//! gradient that moves scores behind a hard top-k mask ([`budget_gradient`]).
//!
//! Convention everywhere: a **higher score means more important**; the lowest-scored
//! weights are pruned. Ties are broken deterministically by position (the weight that
//! comes first in layer order is pruned first), so equal scores give equal masks.
//!
//! Scores are `f32` or `f64` ([`Score`]): a score whose range overflows `f32` (SynFlow's
//! products of weights over a deep network) is ranked as it was computed.

use std::cmp::Ordering;

use crate::request::{Pattern, PruneRequest, Scope};

/// A score type the mask builders rank: `f32` or `f64`, ordered by `total_cmp` (so a NaN
/// ranks above every number, and `-inf` below).
pub trait Score: Copy + sealed::Sealed {
    /// The total order of the type.
    fn rank(&self, other: &Self) -> Ordering;

    /// An unsigned key in the same order as [`Score::rank`]: the mask builders select on
    /// integers instead of calling `total_cmp`.
    fn key(&self) -> u64;
}

impl Score for f32 {
    fn rank(&self, other: &f32) -> Ordering {
        self.total_cmp(other)
    }

    fn key(&self) -> u64 {
        // `total_cmp`'s order as unsigned bits: negatives (sign set) reversed below the
        // positives.
        let b = self.to_bits();
        u64::from(if b >> 31 == 1 { !b } else { b | 1 << 31 })
    }
}

impl Score for f64 {
    fn rank(&self, other: &f64) -> Ordering {
        self.total_cmp(other)
    }

    fn key(&self) -> u64 {
        let b = self.to_bits();
        if b >> 63 == 1 { !b } else { b | 1 << 63 }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// Keep masks pruning exactly `round(sparsity · n)` of all `n` weights, lowest scores first,
/// ranked across all layers together.
pub fn global_keep<S: Score>(scores: &[&[S]], sparsity: f64) -> Vec<Vec<bool>> {
    let n: usize = scores.iter().map(|s| s.len()).sum();
    let prune = pruned(sparsity, n);
    let mut keep: Vec<Vec<bool>> = scores.iter().map(|s| vec![true; s.len()]).collect();
    if prune == 0 {
        return keep;
    }
    // (key, position in layer order): position order is (layer, index) order.
    let mut order: Vec<(u64, u32)> = Vec::with_capacity(n);
    for s in scores {
        let first = order.len() as u32;
        order.extend(s.iter().zip(first..).map(|(v, i)| (v.key(), i)));
    }
    if prune < n {
        order.select_nth_unstable(prune - 1);
    }
    let starts: Vec<u32> = scores
        .iter()
        .scan(0u32, |at, s| {
            let start = *at;
            *at += s.len() as u32;
            Some(start)
        })
        .collect();
    for &(_, i) in &order[..prune] {
        let l = starts.partition_point(|&start| start <= i) - 1;
        keep[l][(i - starts[l]) as usize] = false;
    }
    keep
}

/// The score that separates a kept set from a pruned one: midway between the lowest kept
/// score and the highest pruned one, or the one of the two that exists when the other side is
/// empty (passed as ±infinity), or 0 when both are.
pub fn boundary(low_kept: f32, high_pruned: f32) -> f32 {
    match (low_kept.is_finite(), high_pruned.is_finite()) {
        (true, true) => 0.5 * (low_kept + high_pruned),
        (true, false) => low_kept,
        (false, true) => high_pruned,
        (false, false) => 0.0,
    }
}

/// Keep mask pruning exactly `count` of `scores`, lowest first (ties by position).
pub fn layer_keep_count<S: Score>(scores: &[S], count: usize) -> Vec<bool> {
    let count = count.min(scores.len());
    let mut keep = vec![true; scores.len()];
    if count == 0 {
        return keep;
    }
    let mut order: Vec<(u64, u32)> = scores.iter().zip(0u32..).map(|(v, i)| (v.key(), i)).collect();
    if count < scores.len() {
        order.select_nth_unstable(count - 1);
    }
    for &(_, i) in &order[..count] {
        keep[i as usize] = false;
    }
    keep
}

/// Indices of the `count` highest scores, best first (ties: the earlier position first).
pub fn top_indices<S: Score>(scores: &[S], count: usize) -> Vec<usize> {
    let count = count.min(scores.len());
    if count == 0 {
        return Vec::new();
    }
    // (reversed key, position): ascending is best first, ties by the earlier position, and
    // the selection compares integers only.
    let mut order: Vec<(u64, u32)> = scores.iter().zip(0u32..).map(|(v, i)| (!v.key(), i)).collect();
    if count < scores.len() {
        order.select_nth_unstable(count - 1);
    }
    order.truncate(count);
    order.sort_unstable();
    order.into_iter().map(|(_, i)| i as usize).collect()
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
pub fn per_layer_keep<S: Score>(scores: &[&[S]], sparsity: f64) -> Vec<Vec<bool>> {
    let sizes: Vec<usize> = scores.iter().map(|s| s.len()).collect();
    per_layer_counts(&sizes, sparsity).into_iter().zip(scores).map(|(c, s)| layer_keep_count(s, c)).collect()
}

/// N:M keep mask for one layer: in every group of `m` consecutive weights of a row (rows of
/// length `row_len`), keep the `n` highest scores. A row whose length is not a multiple of
/// `m` ends in a shorter group that keeps `round(n/m · len)` of its weights.
///
/// # Panics
/// When `n > m`, `m == 0` or `row_len` does not divide `scores.len()`.
pub fn nm_keep<S: Score>(scores: &[S], row_len: usize, n: usize, m: usize) -> Vec<bool> {
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
pub fn keep_for_request<S: Score>(scores: &[&[S]], row_lens: &[usize], request: &PruneRequest) -> Vec<Vec<bool>> {
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

/// A mask gradient made fit for the scores behind an exact top-k mask (see
/// [`budget_gradient`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetGradient {
    /// Per weight: the gradient minus its budget's multiplier, in units of its RMS over the
    /// window.
    pub centred: Vec<f64>,
    /// Per weight: the straight-through window `σ'((score − τ) / width)`.
    pub window: Vec<f64>,
}

/// The gradient of a loss with respect to a hard top-k mask, made fit for moving the scores
/// behind it through a straight-through sigmoid `σ((score − τ) / width)`.
///
/// Almost every weight has a negative gradient (keeping more is always closer to the dense
/// model), so the raw gradient mostly says "raise every score": meaningless under a fixed
/// budget, and harmful to anything that moves many scores together. Under the constraint
/// `Σ m = k` the useful part is the gradient minus its window-weighted mean over the
/// boundary (the Lagrange multiplier; one per budget, `groups[i]` naming weight `i`'s), which
/// says which weights to swap in and which out. It is scaled to unit RMS over the window,
/// so that losses of different size (e.g. at different sparsities) weigh alike.
/// `thresholds[i]` is the boundary score of weight `i`'s budget.
pub fn budget_gradient(
    grad: &[f32],
    scores: &[f32],
    thresholds: &[f32],
    groups: &[usize],
    width: f32,
) -> BudgetGradient {
    let window = windows(scores, thresholds, width);
    let n = groups.iter().max().map_or(0, |g| g + 1);
    let (mut weight, mut sum) = (vec![0f64; n], vec![0f64; n]);
    for ((&g, &w), &d) in grad.iter().zip(&window).zip(groups) {
        weight[d] += w;
        sum[d] += g as f64 * w;
    }
    let multiplier: Vec<f64> = sum.iter().zip(&weight).map(|(s, w)| s / w.max(1e-30)).collect();
    let mut centred: Vec<f64> = grad.iter().zip(groups).map(|(&g, &d)| g as f64 - multiplier[d]).collect();
    let total: f64 = window.iter().sum::<f64>().max(1e-30);
    let rms = (centred.iter().zip(&window).map(|(g, w)| g * g * w).sum::<f64>() / total).sqrt().max(1e-12);
    centred.iter_mut().for_each(|g| *g /= rms);
    BudgetGradient { centred, window }
}

/// `items` sorted stably by `key(item)`, a key of at most 33 bits (an f32 score's
/// [`Score::key`], and one bit above it), with an LSD radix sort of three 11-bit digits whose
/// histograms are counted in one pass; a digit that every key shares is skipped. Items of
/// equal keys keep their order, so items listed by position come out by (key, position).
///
/// # Panics
/// With more than `u32::MAX` items.
pub fn radix_sorted<T: Copy>(mut items: Vec<T>, key: impl Fn(&T) -> u64) -> Vec<T> {
    const DIGIT: u32 = 11;
    let n = items.len();
    assert!(u32::try_from(n).is_ok(), "radix_sorted sorts at most u32::MAX items");
    let digit = |k: u64, d: u32| ((k >> (DIGIT * d)) & ((1 << DIGIT) - 1)) as usize;
    let mut counts = vec![[0u32; 1 << DIGIT]; 3];
    for item in &items {
        let k = key(item);
        debug_assert!(k >> (3 * DIGIT) == 0, "a key of more than 33 bits");
        for (d, c) in (0..).zip(counts.iter_mut()) {
            c[digit(k, d)] += 1;
        }
    }
    let Some(&first) = items.first() else { return items };
    let mut spare = vec![first; n];
    for (d, counts) in (0..).zip(counts.iter_mut()) {
        if counts.iter().any(|&c| c as usize == n) {
            continue; // every key has this digit: the pass would move nothing
        }
        let mut at = 0u32;
        for c in counts.iter_mut() {
            (*c, at) = (at, at + *c);
        }
        for item in &items {
            let slot = &mut counts[digit(key(item), d)];
            spare[*slot as usize] = *item;
            *slot += 1;
        }
        std::mem::swap(&mut items, &mut spare);
    }
    items
}

/// Weights from which [`budget_gradient`]'s window is computed on more than one thread.
const PARALLEL_WINDOW: usize = 16384;

/// `σ'((s − t)/width)` of every score `s` and its threshold `t`: each value on its own, so
/// the values do not depend on how many threads compute them.
fn windows(scores: &[f32], thresholds: &[f32], width: f32) -> Vec<f64> {
    let one = |scores: &[f32], thresholds: &[f32], out: &mut [f64]| {
        for ((o, &s), &t) in out.iter_mut().zip(scores).zip(thresholds) {
            let sig = 1.0 / (1.0 + (-((s - t) / width) as f64).exp());
            *o = sig * (1.0 - sig);
        }
    };
    let n = scores.len();
    let mut window = vec![0f64; n];
    let threads = crate::available_threads().min(n / PARALLEL_WINDOW).max(1);
    if threads == 1 {
        one(scores, thresholds, &mut window);
        return window;
    }
    let per = n.div_ceil(threads);
    std::thread::scope(|scope| {
        for ((s, t), out) in scores.chunks(per).zip(thresholds.chunks(per)).zip(window.chunks_mut(per)) {
            scope.spawn(move || one(s, t, out));
        }
    });
    window
}

pub(crate) fn pruned(sparsity: f64, n: usize) -> usize {
    ((sparsity * n as f64).round() as usize).min(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_pruned(keep: &[Vec<bool>]) -> usize {
        keep.iter().flatten().filter(|&&k| !k).count()
    }

    #[test]
    fn the_boundary_is_midway_or_the_side_that_exists() {
        assert_eq!(boundary(0.5, 0.25), 0.375);
        assert_eq!(boundary(0.5, f32::NEG_INFINITY), 0.5);
        assert_eq!(boundary(f32::INFINITY, 0.25), 0.25);
        assert_eq!(boundary(f32::INFINITY, f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn score_keys_order_as_total_cmp() {
        let f = [
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1e-45,
            -1e-45,
            1.5,
            -1.5,
            f32::MAX,
            f32::MIN,
        ];
        for a in f {
            for b in f {
                assert_eq!(a.key().cmp(&b.key()), a.total_cmp(&b), "{a} {b}");
                let (a, b) = (f64::from(a), f64::from(b));
                assert_eq!(a.key().cmp(&b.key()), a.total_cmp(&b), "{a} {b}");
            }
        }
    }

    #[test]
    fn keys_select_what_total_cmp_and_position_select() {
        // The selection by `total_cmp`, then layer, then index, written out.
        fn by_comparison(scores: &[&[f32]], prune: usize) -> Vec<Vec<bool>> {
            let mut order: Vec<(f32, usize, usize)> = scores
                .iter()
                .enumerate()
                .flat_map(|(l, s)| s.iter().enumerate().map(move |(i, &v)| (v, l, i)))
                .collect();
            order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            let mut keep: Vec<Vec<bool>> = scores.iter().map(|s| vec![true; s.len()]).collect();
            order[..prune].iter().for_each(|&(_, l, i)| keep[l][i] = false);
            keep
        }
        let mut rng = crate::rng::SplitMix64::new(5);
        for round in 0..40 {
            // Few distinct values (many ties), signed zeros, an empty layer among others.
            let sizes = [7usize, 0, 13, 1, 29];
            let layers: Vec<Vec<f32>> = sizes
                .iter()
                .map(|&n| {
                    (0..n)
                        .map(|_| match rng.next_u64() % 6 {
                            0 => 0.0,
                            1 => -0.0,
                            k => (k as f32 - 3.5) * if round % 2 == 0 { 1.0 } else { rng.next_f64() as f32 },
                        })
                        .collect()
                })
                .collect();
            let refs: Vec<&[f32]> = layers.iter().map(Vec::as_slice).collect();
            let sparsity = (round % 10) as f64 / 10.0;
            let n: usize = sizes.iter().sum();
            assert_eq!(global_keep(&refs, sparsity), by_comparison(&refs, pruned(sparsity, n)), "round {round}");
            for s in &refs {
                let count = (round * 7) % (s.len() + 1);
                assert_eq!(layer_keep_count(s, count), by_comparison(&[s], count)[0], "round {round}");
                // The best `count`, best first, ties by the earlier index.
                let mut best: Vec<usize> = (0..s.len()).collect();
                best.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
                best.truncate(count);
                assert_eq!(top_indices(s, count), best, "round {round}");
            }
        }
    }

    #[test]
    fn radix_sorted_is_the_stable_comparison_sort_by_key() {
        let mut rng = crate::rng::SplitMix64::new(3);
        for n in [0usize, 1, 7, 5000] {
            // Keys over all 33 bits, few distinct ones among them (ties), and one digit shared.
            let items: Vec<(u64, usize)> = (0..n)
                .map(|i| {
                    let k = match rng.next_u64() % 3 {
                        0 => rng.next_u64() >> 31,
                        1 => rng.next_u64() % 4,
                        _ => (rng.next_u64() % 8) << 22,
                    };
                    (k, i)
                })
                .collect();
            let mut want = items.clone();
            want.sort_by_key(|&(k, _)| k);
            assert_eq!(radix_sorted(items, |&(k, _)| k), want, "{n} items");
        }
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
    fn f64_scores_beyond_the_range_of_f32_rank_as_computed() {
        // As f32 these would be inf, inf, 0, 0: two ties broken by position.
        let a = [1e300f64, 1e299, 1e-300, 1e-301];
        assert_eq!(global_keep(&[&a], 0.5), vec![vec![true, true, false, false]]);
        let b = [1e299f64, 1e300, 1e-301, 1e-300];
        assert_eq!(nm_keep(&b, 4, 1, 2), vec![false, true, false, true]);
        assert_eq!(top_indices(&b, 2), vec![1, 0]);
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

    #[test]
    fn the_budget_gradient_ignores_a_uniform_push_and_centres_each_budget() {
        let scores = [0.1f32, 0.4, 0.5, 0.6, 0.9, 0.45, 0.55];
        let grad = [-1.0f32, -2.0, -0.5, -3.0, -1.0, -2.0, -0.2];
        let thresholds = [0.5f32; 7];
        let one = [0usize; 7];
        let two = [0usize, 0, 0, 0, 0, 1, 1];
        for groups in [&one[..], &two[..]] {
            let g = budget_gradient(&grad, &scores, &thresholds, groups, 0.1);
            // Adding the same amount to every weight's gradient (keep more of everything)
            // changes nothing once the multiplier is taken out.
            let shifted: Vec<f32> = grad.iter().map(|v| v - 5.0).collect();
            let h = budget_gradient(&shifted, &scores, &thresholds, groups, 0.1);
            assert!(g.centred.iter().zip(&h.centred).all(|(a, b)| (a - b).abs() < 1e-4), "{g:?} vs {h:?}");
            // Within each budget, the window-weighted mean is zero and the weighted RMS one.
            let window: Vec<f64> = scores
                .iter()
                .map(|&s| {
                    let sig = 1.0 / (1.0 + (-((s - 0.5) / 0.1) as f64).exp());
                    sig * (1.0 - sig)
                })
                .collect();
            assert!(g.window.iter().zip(&window).all(|(a, b)| (a - b).abs() < 1e-12));
            for d in 0..=*groups.iter().max().unwrap() {
                let mean: f64 = (0..7).filter(|&i| groups[i] == d).map(|i| g.centred[i] * window[i]).sum::<f64>();
                assert!(mean.abs() < 1e-6, "group {d}: {mean}");
            }
            let rms = (0..7).map(|i| g.centred[i].powi(2) * window[i]).sum::<f64>() / window.iter().sum::<f64>();
            assert!((rms - 1.0).abs() < 1e-5, "{rms}");
        }
        // The weight that most wants in (most negative gradient) is pushed up the most.
        let g = budget_gradient(&grad, &scores, &thresholds, &one, 0.1);
        let most = (0..7).min_by(|&a, &b| g.centred[a].total_cmp(&g.centred[b])).unwrap();
        assert_eq!(most, 3);
    }
}

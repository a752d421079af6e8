//! Mask refinement by distillation, shared by `maskopt` (from magnitude's ranks, on
//! calibration images) and the hypernetwork's `refine` option (from its own mask, on inputs
//! drawn from stored input moments).
//!
//! Scores start at given values (step 0's mask is their exact top-k), the hard top-k mask of
//! the scores is what a distillation loss evaluates, and its gradient with respect to the
//! mask reaches the scores through a straight-through sigmoid around the boundary,
//! `σ((score − τ)/(T · spread))`, with `T` annealed geometrically.
//!
//! Under an exact budget only swaps matter, so the gradient's mean over the boundary window
//! (the Lagrange multiplier of `Σ m = k`; one per layer for `scope=layer`) is taken out
//! before Adam sees it ([`masking::budget_gradient`]): otherwise "keep more of everything",
//! which almost every weight's gradient says, would drown the signal.

use crate::context::{Ctx, LossAndGrad};
use crate::error::{ErrorKind, PluginError};
use crate::masking::{self, Score};
use crate::request::{Pattern, PruneRequest, Scope};

/// How to refine.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Adam steps.
    pub steps: usize,
    /// Adam's learning rate, in units of percentile rank.
    pub lr: f64,
    /// Straight-through temperature at the first step.
    pub t_start: f64,
    /// Straight-through temperature at the last step.
    pub t_end: f64,
}

impl Settings {
    /// `steps` steps at `maskopt`'s defaults: learning rate 0.01, temperatures 1 → 0.05.
    pub const fn defaults(steps: usize) -> Settings {
        Settings { steps, lr: 0.01, t_start: 1.0, t_end: 0.05 }
    }
}

/// The refined keep masks, one per layer, and the distillation loss of the first and the
/// last step.
#[derive(Debug, Clone, PartialEq)]
pub struct Refined {
    /// Keep masks.
    pub keep: Vec<Vec<bool>>,
    /// Loss at step 0 (the starting mask) and at the last step.
    pub losses: (f64, f64),
}

/// Refines the top-k mask of `scores` (one per prunable weight, layer order; layer sizes
/// `sizes`) for `request` by `settings.steps` Adam steps on `distill(mask, step)`, the loss
/// of a hard 0/1 mask and its gradient with respect to the mask.
///
/// # Errors
/// N:M patterns ([`ErrorKind::NotSupported`]); `distill` failing; the user cancelling.
pub fn refine(
    scores: Vec<f32>,
    sizes: &[usize],
    request: &PruneRequest,
    settings: &Settings,
    distill: impl FnMut(&[f32], usize) -> Result<LossAndGrad, PluginError>,
    ctx: &Ctx<'_>,
) -> Result<Refined, PluginError> {
    unstructured(request)?;
    refine_scores(scores, None, sizes, request, settings, distill, ctx)
}

/// As [`refine`], from the mask `keep` (one per layer): the scores start at its
/// [`mask_ranks`] by `scores` (one per prunable weight, layer order), so that step 0
/// evaluates `keep` itself where it prunes what `request` asks (every mask of the request's
/// exact top-k does; step 0 then skips its top-k), and the steps reorder the kept and the
/// pruned weights as `scores` do.
///
/// # Errors
/// As [`refine`].
pub fn refine_from_mask(
    keep: &[Vec<bool>],
    scores: &[f32],
    request: &PruneRequest,
    settings: &Settings,
    mut distill: impl FnMut(&[f32], usize) -> Result<LossAndGrad, PluginError>,
    ctx: &Ctx<'_>,
) -> Result<Refined, PluginError> {
    unstructured(request)?;
    let sizes: Vec<usize> = keep.iter().map(Vec::len).collect();
    let flat = keep.concat();
    // The ranks' top-k at the mask's own counts is the mask (kept weights rank above every
    // pruned one): where those counts are the request's, step 0's mask is known.
    let pruned = |k: &[bool]| k.iter().filter(|&&k| !k).count();
    let request_counts = match request.scope {
        Scope::PerLayer => keep.iter().map(|k| pruned(k)).eq(masking::per_layer_counts(&sizes, request.sparsity)),
        _ => pruned(&flat) == masking::pruned(request.sparsity, flat.len()),
    };
    if !request_counts || settings.steps == 0 || flat.len() < PARALLEL_RANKS || ctx.cancelled() {
        let start = mask_ranks(&flat, scores);
        let first = request_counts.then_some(First { mask: flat, distilled: None });
        return refine_scores(start, first, &sizes, request, settings, distill, ctx);
    }
    // Step 0 evaluates the mask itself, so its distillation runs while another thread ranks.
    let mask: Vec<f32> = flat.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
    let (start, distilled) = std::thread::scope(|scope| {
        let ranks = scope.spawn(|| mask_ranks(&flat, scores));
        let distilled = distill(&mask, 0);
        (ranks.join().expect("ranking does not panic"), distilled)
    });
    let first = First { mask: flat, distilled: Some(distilled?) };
    refine_scores(start, Some(first), &sizes, request, settings, distill, ctx)
}

/// Weights from which [`refine_from_mask`] ranks them while step 0's distillation runs.
const PARALLEL_RANKS: usize = 16384;

/// Step 0's mask where it is known, and its distillation where already taken.
struct First {
    mask: Vec<bool>,
    distilled: Option<LossAndGrad>,
}

/// N:M patterns are refused: refinement is for unstructured masks.
fn unstructured(request: &PruneRequest) -> Result<(), PluginError> {
    match request.pattern {
        Pattern::NM { .. } => {
            Err(PluginError::not_supported("mask refinement is for unstructured masks; N:M is not supported"))
        }
        _ => Ok(()),
    }
}

/// [`refine`] from `scores`, whose exact top-k for `request` is `first` where given, for an
/// unstructured `request` (checked by the callers).
fn refine_scores(
    mut scores: Vec<f32>,
    mut first: Option<First>,
    sizes: &[usize],
    request: &PruneRequest,
    settings: &Settings,
    mut distill: impl FnMut(&[f32], usize) -> Result<LossAndGrad, PluginError>,
    ctx: &Ctx<'_>,
) -> Result<Refined, PluginError> {
    let groups: Vec<usize> = match request.scope {
        Scope::PerLayer => sizes.iter().enumerate().flat_map(|(l, &n)| std::iter::repeat_n(l, n)).collect(),
        _ => vec![0; scores.len()],
    };
    let spread = std_dev(&scores).max(1e-6) as f64;
    let (mut moment1, mut moment2) = (vec![0f64; scores.len()], vec![0f64; scores.len()]);
    let mut losses = (f64::NAN, f64::NAN);
    for step in 0..settings.steps {
        if ctx.cancelled() {
            return Err(PluginError::new(ErrorKind::Cancelled, format!("mask refinement cancelled at step {step}")));
        }
        let progress = step as f64 / settings.steps.max(1) as f64;
        let width = (settings.t_start * (settings.t_end / settings.t_start).powf(progress) * spread) as f32;
        let (flat, distilled) = match first.take() {
            Some(First { mask, distilled }) => (mask, distilled),
            None => (hard_mask(&scores, sizes, request).concat(), None),
        };
        let d = match distilled {
            Some(d) => d,
            None => distill(&flat.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect::<Vec<f32>>(), step)?,
        };
        if d.grad.len() != scores.len() {
            return Err(PluginError::failed(format!(
                "the distillation gradient has {} values for {} weights",
                d.grad.len(),
                scores.len()
            )));
        }
        if step == 0 {
            losses.0 = d.loss;
        }
        losses.1 = d.loss;
        let boundary = boundaries(&scores, &flat, &groups);
        let thresholds: Vec<f32> = groups.iter().map(|&g| boundary[g]).collect();
        let b = masking::budget_gradient(&d.grad, &scores, &thresholds, &groups, width);
        // Through the straight-through sigmoid: ∂σ((s − τ)/width)/∂s = σ'/width.
        let g = b.centred.iter().zip(&b.window).map(|(g, w)| g * w / width as f64);
        let t = (step + 1) as i32;
        let (c1, c2) = (1.0 - 0.9f64.powi(t), 1.0 - 0.999f64.powi(t));
        for (((s, m), v), g) in scores.iter_mut().zip(&mut moment1).zip(&mut moment2).zip(g) {
            *m = 0.9 * *m + 0.1 * g;
            *v = 0.999 * *v + 0.001 * g * g;
            *s -= (settings.lr * (*m / c1) / ((*v / c2).sqrt() + 1e-8)) as f32;
        }
        ctx.progress(step + 1, settings.steps);
    }
    Ok(Refined { keep: hard_mask(&scores, sizes, request), losses })
}

/// The exact top-k masks of flat `scores` for `request` (global or per layer).
pub fn hard_mask(scores: &[f32], sizes: &[usize], request: &PruneRequest) -> Vec<Vec<bool>> {
    let mut rest = scores;
    let layers: Vec<&[f32]> = sizes
        .iter()
        .map(|&n| {
            let (head, tail) = rest.split_at(n);
            rest = tail;
            head
        })
        .collect();
    match request.scope {
        Scope::PerLayer => masking::per_layer_keep(&layers, request.sparsity),
        _ => masking::global_keep(&layers, request.sparsity),
    }
}

/// Per group: the score midway between its lowest kept and its highest pruned weight.
fn boundaries(scores: &[f32], keep: &[bool], groups: &[usize]) -> Vec<f32> {
    let n = groups.iter().max().map_or(0, |g| g + 1);
    let (mut low, mut high) = (vec![f32::INFINITY; n], vec![f32::NEG_INFINITY; n]);
    // Branch-free: which side a weight is on is as good as random to the predictor.
    let side = |s: f32, k: bool| if k { (s, f32::NEG_INFINITY) } else { (f32::INFINITY, s) };
    let lower = |a: f32, b: f32| if b < a { b } else { a };
    let higher = |a: f32, b: f32| if b > a { b } else { a };
    if n == 1 {
        // Eight running extremes, so that the loop runs in vector lanes (a minimum does not
        // depend on the order it is taken in).
        let (mut lo, mut hi) = ([f32::INFINITY; 8], [f32::NEG_INFINITY; 8]);
        let (sc, kc) = (scores.chunks_exact(8), keep.chunks_exact(8));
        let rest = sc.remainder().iter().zip(kc.remainder());
        for (s8, k8) in sc.zip(kc) {
            for j in 0..8 {
                let (l, h) = side(s8[j], k8[j]);
                lo[j] = lower(lo[j], l);
                hi[j] = higher(hi[j], h);
            }
        }
        for (&s, &k) in rest {
            let (l, h) = side(s, k);
            lo[0] = lower(lo[0], l);
            hi[0] = higher(hi[0], h);
        }
        low[0] = lo.into_iter().fold(f32::INFINITY, lower);
        high[0] = hi.into_iter().fold(f32::NEG_INFINITY, higher);
    } else {
        for ((&s, &k), &g) in scores.iter().zip(keep).zip(groups) {
            let (l, h) = side(s, k);
            low[g] = lower(low[g], l);
            high[g] = higher(high[g], h);
        }
    }
    low.iter().zip(&high).map(|(&l, &h)| masking::boundary(l, h)).collect()
}

/// Rank of each value among all, scaled to `[0, 1]`; ties broken by position.
pub fn percentile_ranks(values: &[f32]) -> Vec<f32> {
    ranks_of_keys(values.iter().map(|v| v.key()))
}

/// Percentile ranks in `[0, 1]` of a mask's weights ordered first by whether they are kept,
/// then by `scores` (ties by position): the top-k of these ranks at the mask's own count is
/// the mask itself, and within the kept and the pruned weights the order is the scores'.
/// The starting scores for refining a mask that is not a plain global top-k.
pub fn mask_ranks(keep: &[bool], scores: &[f32]) -> Vec<f32> {
    ranks_of_keys(keep.iter().zip(scores).map(|(&k, s)| u64::from(k) << 32 | s.key()))
}

/// Percentile ranks of `keys` (at most 33 bits each: a score's 32 and `mask_ranks`' kept bit),
/// ties broken by position: each key is one integer with its position in the low 31 bits,
/// sorted stably by the key ([`masking::radix_sorted`]), so the order is the comparison
/// sort's (key, then position).
fn ranks_of_keys(keys: impl ExactSizeIterator<Item = u64>) -> Vec<f32> {
    let n = keys.len();
    assert!(n <= 1 << 31, "percentile ranks of at most 2^31 values");
    let packed: Vec<u64> = keys.enumerate().map(|(i, k)| k << 31 | i as u64).collect();
    let order = masking::radix_sorted(packed, |&p| p >> 31);
    let scale = 1.0 / (n.max(2) - 1) as f32;
    let mut ranks = vec![0f32; n];
    for (r, &packed) in order.iter().enumerate() {
        ranks[(packed & ((1 << 31) - 1)) as usize] = r as f32 * scale;
    }
    ranks
}

fn std_dev(v: &[f32]) -> f32 {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::NoData;

    #[test]
    fn boundaries_lie_midway_between_the_lowest_kept_and_the_highest_pruned_score() {
        let mut rng = crate::rng::SplitMix64::new(9);
        for n in [1usize, 7, 8, 29, 1000] {
            let scores: Vec<f32> = (0..n).map(|_| rng.next_f64() as f32).collect();
            let keep: Vec<bool> = scores.iter().map(|&s| s > 0.4).collect();
            let low = scores.iter().zip(&keep).filter(|(_, k)| **k).map(|(s, _)| *s).fold(f32::INFINITY, f32::min);
            let high =
                scores.iter().zip(&keep).filter(|(_, k)| !**k).map(|(s, _)| *s).fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(boundaries(&scores, &keep, &vec![0; n]), vec![masking::boundary(low, high)], "n = {n}");
            // Two groups, the second all kept: its boundary is its lowest score.
            let groups: Vec<usize> = (0..n).map(|i| usize::from(i % 2 == 1)).collect();
            let keep2: Vec<bool> = keep.iter().zip(&groups).map(|(&k, &g)| k || g == 1).collect();
            let b = boundaries(&scores, &keep2, &groups);
            if n > 1 {
                let second = scores.iter().skip(1).step_by(2).copied().fold(f32::INFINITY, f32::min);
                assert_eq!(b[1], second, "n = {n}");
            }
        }
    }

    #[test]
    fn ranks_order_as_the_comparison_sort_with_ties_by_position() {
        // Ties, signed zeros, NaNs and infinities, kept and pruned mixed: the packed integer
        // sort must give the comparison sort's order exactly.
        let special = [0.0, -0.0, f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.5, -1.5, 1e-45];
        let mut rng = crate::rng::SplitMix64::new(11);
        for round in 0..20 {
            let n = 1 + round * 37;
            let scores: Vec<f32> = (0..n)
                .map(|_| match rng.next_u64() % 4 {
                    0 => special[(rng.next_u64() % special.len() as u64) as usize],
                    1 => (rng.next_u64() % 5) as f32,
                    _ => rng.next_normal() as f32,
                })
                .collect();
            let keep: Vec<bool> = (0..n).map(|_| rng.next_u64().is_multiple_of(3)).collect();
            let by_comparison = |cmp: &dyn Fn(usize, usize) -> std::cmp::Ordering| {
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by(|&a, &b| cmp(a, b).then(a.cmp(&b)));
                let mut ranks = vec![0f32; n];
                for (r, &i) in order.iter().enumerate() {
                    ranks[i] = r as f32 * (1.0 / (n.max(2) - 1) as f32);
                }
                ranks
            };
            let plain = by_comparison(&|a, b| scores[a].total_cmp(&scores[b]));
            let masked = by_comparison(&|a, b| keep[a].cmp(&keep[b]).then(scores[a].total_cmp(&scores[b])));
            assert_eq!(percentile_ranks(&scores), plain, "round {round}");
            assert_eq!(mask_ranks(&keep, &scores), masked, "round {round}");
        }
    }

    #[test]
    fn mask_ranks_put_the_kept_weights_on_top_in_score_order() {
        let keep = [false, true, true, false];
        let scores = [0.9f32, 0.1, 0.5, 0.2];
        let r = mask_ranks(&keep, &scores);
        // Pruned by score (0.2 < 0.9), then kept by score (0.1 < 0.5).
        assert_eq!(r, vec![1.0 / 3.0, 2.0 / 3.0, 1.0, 0.0]);
        let top = masking::global_keep(&[r.as_slice()], 0.5);
        assert_eq!(top[0], keep.to_vec());
    }

    #[test]
    fn refining_swaps_in_the_weights_the_loss_needs_at_the_exact_budget() {
        // Eight weights in two layers; the loss wants weights 0 and 5 kept, whose starting
        // scores are lowest.
        let sizes = [4, 4];
        let scores = percentile_ranks(&[0.1, 0.8, 0.7, 0.6, 0.5, 0.2, 0.9, 0.4]);
        let request = PruneRequest::global(0.5, 0);
        let want = [0usize, 5];
        let settings = Settings { steps: 60, lr: 0.05, t_start: 1.0, t_end: 0.05 };
        let ctx = Ctx::from_impl(&NoData);
        let mut calls = 0;
        let out = refine(
            scores,
            &sizes,
            &request,
            &settings,
            |mask, _| {
                calls += 1;
                let loss = want.iter().map(|&i| f64::from(1.0 - mask[i])).sum();
                let grad = (0..8).map(|i| if want.contains(&i) { -1.0 } else { -0.1 }).collect::<Vec<f32>>();
                Ok(LossAndGrad { loss, grad: grad.into() })
            },
            &ctx,
        )
        .unwrap();
        assert_eq!(calls, 60);
        let flat: Vec<bool> = out.keep.concat();
        assert_eq!(flat.iter().filter(|&&k| k).count(), 4, "the budget is exact");
        assert!(want.iter().all(|&i| flat[i]), "{flat:?}");
        assert_eq!(out.losses, (2.0, 0.0));
    }

    #[test]
    fn refining_from_a_mask_starts_at_it_and_steps_as_from_its_ranks() {
        // 100 weights, and enough for step 0's distillation to run beside the ranking.
        for scale in [1usize, 200] {
            let mut rng = crate::rng::SplitMix64::new(5);
            let sizes = [30 * scale, 50 * scale, 20 * scale];
            let n = 100 * scale;
            let scores: Vec<f32> = (0..n).map(|_| rng.next_normal() as f32).collect();
            let grad: Vec<f32> = (0..n).map(|_| rng.next_normal() as f32).collect();
            let ctx = Ctx::from_impl(&NoData);
            let settings = Settings { steps: 3, lr: 0.05, t_start: 1.0, t_end: 0.05 };
            let split = |flat: &[bool]| -> Vec<Vec<bool>> {
                let mut rest = flat;
                sizes
                    .iter()
                    .map(|&n| {
                        let (head, tail) = rest.split_at(n);
                        rest = tail;
                        head.to_vec()
                    })
                    .collect()
            };
            // What each step evaluates (its number and mask), and the outcome, from the mask
            // and from its ranks.
            let run = |keep: &[Vec<bool>], request: &PruneRequest| {
                let mut seen: Vec<(usize, Vec<f32>)> = Vec::new();
                let distill = |mask: &[f32], step: usize| {
                    seen.push((step, mask.to_vec()));
                    Ok(LossAndGrad { loss: 1.0, grad: grad.clone().into() })
                };
                let out = refine_from_mask(keep, &scores, request, &settings, distill, &ctx).unwrap();
                (seen, out.keep)
            };
            let by_ranks = |keep: &[Vec<bool>], request: &PruneRequest| {
                let mut seen: Vec<(usize, Vec<f32>)> = Vec::new();
                let distill = |mask: &[f32], step: usize| {
                    seen.push((step, mask.to_vec()));
                    Ok(LossAndGrad { loss: 1.0, grad: grad.clone().into() })
                };
                let out =
                    refine(mask_ranks(&keep.concat(), &scores), &sizes, request, &settings, distill, &ctx).unwrap();
                (seen, out.keep)
            };
            // A mask of a random order (not the scores' top-k) at the request's exact budget,
            // global and per layer: step 0 evaluates the mask itself, every step as from its ranks.
            let noise: Vec<f32> = (0..n).map(|_| rng.next_normal() as f32).collect();
            for request in
                [PruneRequest::global(0.6, 0), PruneRequest { scope: Scope::PerLayer, ..PruneRequest::global(0.6, 0) }]
            {
                let keep = hard_mask(&noise, &sizes, &request);
                let (seen, out) = run(&keep, &request);
                let as_f32: Vec<f32> = keep.concat().iter().map(|&k| f32::from(u8::from(k))).collect();
                assert_eq!(seen[0], (0, as_f32), "{:?}, {n} weights", request.scope);
                assert_eq!(seen.len(), 3, "one distillation a step");
                assert_eq!((seen, out), by_ranks(&keep, &request), "{:?}, {n} weights", request.scope);
            }
            // A mask of another budget: step 0 takes the request's top-k of its ranks, as before.
            let request = PruneRequest::global(0.6, 0);
            let keep = split(&noise.iter().map(|&v| v > 0.0).collect::<Vec<bool>>());
            let (seen, out) = run(&keep, &request);
            assert_eq!(seen[0].1.iter().filter(|&&m| m == 0.0).count(), 60 * scale, "the request's budget");
            assert_eq!((seen, out), by_ranks(&keep, &request), "{n} weights");
        }
    }

    #[test]
    fn a_wrong_length_gradient_is_an_error_not_a_panic() {
        let ctx = Ctx::from_impl(&NoData);
        let settings = Settings { steps: 3, lr: 0.01, t_start: 1.0, t_end: 0.05 };
        let e = refine(
            vec![0.0, 1.0],
            &[2],
            &PruneRequest::global(0.5, 0),
            &settings,
            |_, _| Ok(LossAndGrad { loss: 0.0, grad: vec![0.0].into() }),
            &ctx,
        )
        .unwrap_err();
        assert!(e.message.contains("1 values for 2 weights"), "{e}");
    }
}

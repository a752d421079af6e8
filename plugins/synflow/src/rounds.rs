//! The iterative procedure (the paper's Algorithm 1): score the masked network, prune to the
//! round's sparsity, repeat. A weight pruned in one round scores `-inf` in every later one,
//! and the number kept only ever shrinks (per model, per layer or per group), so no round
//! brings a pruned weight back.

use hyperprune_sdk::masking::{global_keep, layer_keep_count, nm_keep, per_layer_counts};
use hyperprune_sdk::{Ctx, ErrorKind, ModelRef, Pattern, PluginError, PruneRequest, Scope};

/// Keep masks for `request` after `rounds` rounds of SynFlow, one per layer of `model`. The
/// scores come from the host's `synaptic_flow` service, once per round; a request that
/// prunes nothing asks for none.
///
/// # Errors
/// The host's error (the service is unavailable, the flow overflowed), scores of the wrong
/// length or not finite, or kind `Cancelled` when the user stops the run.
pub fn prune_iteratively(
    model: &ModelRef<'_>,
    request: &PruneRequest,
    rounds: usize,
    ctx: &Ctx<'_>,
) -> Result<Vec<Vec<bool>>, PluginError> {
    let layers = model.layers();
    let sizes: Vec<usize> = layers.iter().map(|l| l.weights().len()).collect();
    let total: usize = sizes.iter().sum();
    let mut keep: Vec<Vec<bool>> = sizes.iter().map(|&n| vec![true; n]).collect();
    let prunes_nothing = match request.pattern {
        Pattern::NM { n, m } => n >= m,
        Pattern::Unstructured => request.pruned_count(total) == 0,
    };
    if prunes_nothing {
        return Ok(keep);
    }
    let rounds = rounds.max(1);
    let final_counts = per_layer_counts(&sizes, request.sparsity);
    for round in 1..=rounds {
        if ctx.cancelled() {
            return Err(PluginError::new(ErrorKind::Cancelled, format!("synflow cancelled at round {round}")));
        }
        let flat: Vec<bool> = keep.concat();
        let flow = ctx.synaptic_flow(model, &flat)?;
        if flow.len() != total {
            return Err(format!("the host's synaptic flow has {} scores for {total} weights", flow.len()).into());
        }
        if let Some(bad) = flow.iter().find(|s| !s.is_finite()) {
            return Err(format!("the host's synaptic flow holds {bad} (round {round}); expected finite scores").into());
        }
        // Pruned weights rank below every kept one, so they stay pruned.
        let mut scores: Vec<f64> =
            flow.iter().zip(&flat).map(|(&s, &k)| if k { s } else { f64::NEG_INFINITY }).collect();
        let mut by_layer: Vec<&[f64]> = Vec::with_capacity(sizes.len());
        let mut rest = scores.as_mut_slice();
        for &n in &sizes {
            let (layer, tail) = std::mem::take(&mut rest).split_at_mut(n);
            by_layer.push(layer);
            rest = tail;
        }
        let last = round == rounds;
        // The exponential schedule: the kept fraction after this round, (1 − s)^{k/n}.
        let sparsity =
            if last { request.sparsity } else { 1.0 - (1.0 - request.sparsity).powf(round as f64 / rounds as f64) };
        keep = match (request.pattern, request.scope) {
            (Pattern::NM { n, m }, _) => {
                let kept = kept_per_group(n as usize, m as usize, round, rounds);
                by_layer.iter().zip(layers).map(|(s, l)| nm_keep(s, l.row_len(), kept, m as usize)).collect()
            }
            (Pattern::Unstructured, Scope::Global) => global_keep(&by_layer, sparsity),
            (Pattern::Unstructured, Scope::PerLayer) => by_layer
                .iter()
                .zip(&sizes)
                .zip(&final_counts)
                .map(|((s, &n), &at_end)| {
                    // Rounded down before the last round, and never past the final count, so
                    // that each layer's count only grows.
                    let count = if last { at_end } else { ((sparsity * n as f64).floor() as usize).min(at_end) };
                    layer_keep_count(s, count)
                })
                .collect(),
        };
        ctx.progress(round, rounds);
    }
    Ok(keep)
}

/// Weights an `n:m` group keeps after round `round` of `rounds`: the exponential schedule on
/// the group, `round(m · (n/m)^{round/rounds})`, exactly `n` after the last round.
pub fn kept_per_group(n: usize, m: usize, round: usize, rounds: usize) -> usize {
    if round >= rounds {
        return n;
    }
    let density = (n as f64 / m as f64).powf(round as f64 / rounds as f64);
    ((m as f64 * density).round() as usize).clamp(n, m)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use hyperprune_sdk::abi_stable::std_types::{RResult, RSlice, RStr, RVec};
    use hyperprune_sdk::masking::per_layer_counts;
    use hyperprune_sdk::{LayerKind, LayerRef, PluginError, TestHost};

    use super::*;

    /// A chain of bias-free linear layers `[out, in]`, in order.
    struct Chain {
        names: Vec<String>,
        shapes: Vec<[u64; 2]>,
        weights: Vec<Vec<f32>>,
    }

    impl Chain {
        fn new(layers: Vec<(usize, usize, Vec<f32>)>) -> Chain {
            Chain {
                names: (0..layers.len()).map(|l| format!("{l}.weight")).collect(),
                shapes: layers.iter().map(|(o, i, _)| [*o as u64, *i as u64]).collect(),
                weights: layers
                    .into_iter()
                    .map(|(o, i, w)| {
                        assert_eq!(w.len(), o * i);
                        w
                    })
                    .collect(),
            }
        }

        fn with_view<R>(&self, f: impl FnOnce(ModelRef<'_>) -> R) -> R {
            let layers: Vec<LayerRef<'_>> = (0..self.names.len())
                .map(|l| LayerRef {
                    name: RStr::from_str(&self.names[l]),
                    kind: LayerKind::Linear,
                    shape: RSlice::from_slice(&self.shapes[l]),
                    weights: RSlice::from_slice(&self.weights[l]),
                })
                .collect();
            f(ModelRef {
                arch_json: RStr::from_str("{}"),
                layers: RSlice::from_slice(&layers),
                others: RSlice::from_slice(&[]),
                nodes: RSlice::from_slice(&[]),
            })
        }
    }

    /// `R` and the synaptic flow of a chain of linear layers, as the host computes it for
    /// such a network: `R = 1ᵀ |W_L| ⋯ |W_1| 1` with pruned weights zero, and
    /// `S(W_l[j, k]) = back_j · |W_l[j, k]| · forward_k`.
    fn chain_flow(model: &ModelRef<'_>, keep: &[bool]) -> (f64, Vec<f64>) {
        let mut at = 0;
        let layers: Vec<(usize, usize, Vec<f64>)> = model
            .layers()
            .iter()
            .map(|l| {
                let w: Vec<f64> = l
                    .weights()
                    .iter()
                    .zip(&keep[at..])
                    .map(|(w, &k)| if k { f64::from(w.abs()) } else { 0.0 })
                    .collect();
                at += w.len();
                (l.shape()[0], l.shape()[1], w)
            })
            .collect();
        let mut forward = vec![vec![1.0; layers[0].1]];
        for (out, inputs, w) in &layers {
            let x = forward.last().unwrap();
            forward.push((0..*out).map(|j| (0..*inputs).map(|k| w[j * inputs + k] * x[k]).sum()).collect());
        }
        let mut back = vec![vec![1.0; layers.last().unwrap().0]];
        for (out, inputs, w) in layers.iter().rev() {
            let g = back.last().unwrap();
            back.push((0..*inputs).map(|k| (0..*out).map(|j| w[j * inputs + k] * g[j]).sum()).collect());
        }
        back.reverse(); // back[l + 1] is the gradient at layer l's output.
        let mut scores = Vec::with_capacity(keep.len());
        for (l, (out, inputs, w)) in layers.iter().enumerate() {
            for j in 0..*out {
                for k in 0..*inputs {
                    scores.push(back[l + 1][j] * w[j * inputs + k] * forward[l][k]);
                }
            }
        }
        (forward.last().unwrap().iter().sum(), scores)
    }

    fn flow_host<'a>(calls: &'a Mutex<Vec<Vec<bool>>>) -> TestHost<'a> {
        TestHost::new().with_synaptic_flow(move |model, keep| {
            calls.lock().unwrap().push(keep.to_vec());
            RResult::ROk(RVec::from(chain_flow(&model, keep).1))
        })
    }

    fn prune(chain: &Chain, request: &PruneRequest, rounds: usize) -> (Vec<Vec<bool>>, Vec<Vec<bool>>) {
        let calls = Mutex::new(Vec::new());
        let host = flow_host(&calls);
        let keep = chain.with_view(|view| prune_iteratively(&view, request, rounds, &Ctx::from_impl(&host))).unwrap();
        drop(host);
        (keep, calls.into_inner().unwrap())
    }

    fn pruned(keep: &[Vec<bool>]) -> usize {
        keep.iter().flatten().filter(|&&k| !k).count()
    }

    /// A seeded chain 12 → 16 → 8 → 4 with weights of mixed sign and size.
    fn random_chain() -> Chain {
        let mut rng = hyperprune_sdk::rng::SplitMix64::new(5);
        let mut layer = |o: usize, i: usize| (o, i, (0..o * i).map(|_| (rng.next_f64() * 2.0 - 1.0) as f32).collect());
        Chain::new(vec![layer(16, 12), layer(8, 16), layer(4, 8)])
    }

    #[test]
    fn one_round_prunes_the_lowest_hand_computed_flows() {
        // W1 = [[1, -2, 3], [-1, 0, 2]], W2 = [[2, -1], [-3, 1]]: flows in (6, 3), out (5, 2);
        // S(W1) = (5, 10, 15, 2, 0, 4), S(W2) = (12, 3, 18, 3). Pruning 5 of 10 takes 0, 2, 3,
        // 3 (the first of the tie first) and 4.
        let chain = Chain::new(vec![(2, 3, vec![1.0, -2.0, 3.0, -1.0, 0.0, 2.0]), (2, 2, vec![2.0, -1.0, -3.0, 1.0])]);
        let (keep, calls) = prune(&chain, &PruneRequest::global(0.5, 0), 1);
        assert_eq!(keep, vec![vec![true, true, true, false, false, false], vec![true, false, true, false]]);
        assert_eq!(calls, vec![vec![true; 10]], "one round scores the dense network");
    }

    #[test]
    fn two_rounds_rescore_the_masked_network() {
        // Round 1 keeps (1/2)^(1/2) of 10: prunes 3 (the flows 0, 2 and the first 3, W2[0, 1]).
        // Round 2 on the masked network: flows in (6, 2), out (5, 1); S(W1) = (5, 10, 15, -, -,
        // 2), S(W2) = (12, -, 18, 2); two more go: W1[1, 2] and W2[1, 1] (both 2, layer order).
        let chain = Chain::new(vec![(2, 3, vec![1.0, -2.0, 3.0, -1.0, 0.0, 2.0]), (2, 2, vec![2.0, -1.0, -3.0, 1.0])]);
        let (keep, calls) = prune(&chain, &PruneRequest::global(0.5, 0), 2);
        assert_eq!(calls[1], vec![true, true, true, false, false, true, true, false, true, true]);
        assert_eq!(keep, vec![vec![true, true, true, false, false, false], vec![true, false, true, false]]);
    }

    #[test]
    fn every_scope_and_pattern_prunes_exactly_and_never_brings_a_weight_back() {
        let chain = random_chain();
        let sizes = [192, 128, 32];
        for s in [0.1, 0.5, 0.77, 0.9, 0.97] {
            for scope in [Scope::Global, Scope::PerLayer] {
                let request = PruneRequest { sparsity: s, scope, pattern: Pattern::Unstructured, seed: 0 };
                let (keep, calls) = prune(&chain, &request, 20);
                assert_eq!(calls.len(), 20);
                assert_eq!(pruned(&keep), request.pruned_count(352), "{scope:?} at {s}");
                if scope == Scope::PerLayer {
                    let counts: Vec<usize> = keep.iter().map(|k| k.iter().filter(|&&x| !x).count()).collect();
                    assert_eq!(counts, per_layer_counts(&sizes, s), "at {s}");
                }
                // Each round's mask keeps a subset of the one before.
                let mut masks = calls.clone();
                masks.push(keep.concat());
                for pair in masks.windows(2) {
                    assert!(
                        pair[0].iter().zip(&pair[1]).all(|(a, b)| *a || !*b),
                        "{scope:?} at {s}: a weight came back"
                    );
                }
            }
        }
        // 2:4 keeps exactly two in every group of four, after groups of 4, 3 and 2.
        let request =
            PruneRequest { sparsity: 0.0, scope: Scope::Global, pattern: Pattern::NM { n: 2, m: 4 }, seed: 0 };
        let (keep, calls) = prune(&chain, &request, 10);
        assert!(keep.iter().flatten().collect::<Vec<_>>().chunks(4).all(|g| g.iter().filter(|&&&k| k).count() == 2));
        // The mask each round is scored on: every group keeps what the round before left it.
        for (call, want) in calls.iter().zip([4, 4, 3, 3, 3, 3, 3, 2, 2, 2]) {
            assert!(call.chunks(4).all(|g| g.iter().filter(|&&k| k).count() == want), "{call:?} vs {want}");
        }
    }

    #[test]
    fn the_group_schedule_shrinks_from_m_to_n() {
        let kept: Vec<usize> = (1..=10).map(|k| kept_per_group(2, 4, k, 10)).collect();
        // 4 · (1/2)^(k/10): 3.73, 3.48, 3.25, 3.03, 2.83, 2.64, 2.46, 2.30, 2.14, then 2.
        assert_eq!(kept, [4, 3, 3, 3, 3, 3, 2, 2, 2, 2]);
        assert_eq!(kept_per_group(1, 8, 1, 1), 1);
    }

    /// The paper's motivating property: a layer of small weights between two of large ones.
    /// Global magnitude pruning removes the small layer whole and disconnects the network;
    /// iterative SynFlow keeps a path through every layer.
    #[test]
    fn synflow_keeps_every_layer_connected_where_global_magnitude_cuts_one() {
        let big = |n: usize, seed: f32| (0..n).map(|i| 1.0 + 0.1 * ((i as f32 * seed).sin())).collect::<Vec<f32>>();
        let small: Vec<f32> = (0..16).map(|i| 0.01 + 0.001 * i as f32).collect();
        let chain = Chain::new(vec![(4, 8, big(32, 1.3)), (4, 4, small), (2, 4, big(8, 2.1))]);
        for s in [0.5, 0.75, 0.9] {
            let request = PruneRequest::global(s, 0);
            let magnitudes: Vec<Vec<f32>> = chain.weights.iter().map(|w| w.iter().map(|x| x.abs()).collect()).collect();
            let views: Vec<&[f32]> = magnitudes.iter().map(Vec::as_slice).collect();
            let by_magnitude = global_keep(&views, s);
            assert!(by_magnitude[1].iter().all(|&k| !k), "at {s} magnitude empties the middle layer");
            let (keep, _) = prune(&chain, &request, 100);
            assert_eq!(pruned(&keep), request.pruned_count(56));
            let flow = chain.with_view(|view| chain_flow(&view, &keep.concat()).0);
            assert!(flow > 0.0, "at {s} SynFlow keeps a path from input to output: {keep:?}");
        }
    }

    #[test]
    fn a_request_that_prunes_nothing_asks_the_host_nothing_and_errors_pass_through() {
        let chain = random_chain();
        let (keep, calls) = prune(&chain, &PruneRequest::global(0.0, 0), 100);
        assert!(calls.is_empty() && pruned(&keep) == 0);
        let host = TestHost::new();
        let e = chain
            .with_view(|view| prune_iteratively(&view, &PruneRequest::global(0.5, 0), 3, &Ctx::from_impl(&host)))
            .unwrap_err();
        assert!(e.is_unavailable() && e.message.contains("synaptic_flow"), "{e}");
        let short = TestHost::new().with_synaptic_flow(|_, _| RResult::ROk(RVec::from(vec![1.0; 3])));
        let e: PluginError = chain
            .with_view(|view| prune_iteratively(&view, &PruneRequest::global(0.5, 0), 3, &Ctx::from_impl(&short)))
            .unwrap_err();
        assert!(e.message.contains("3 scores for 352 weights"), "{e}");
    }
}

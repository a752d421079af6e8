//! LAP scores: the algorithm, free of any FFI.

use hyperprune_sdk::{LayerKind, Links};

/// A prunable layer as LAP sees it: `out` output units or channels, `inputs` input units or
/// channels, weights row-major in `[out, inputs, kernel positions]` (PyTorch layout; a linear
/// layer has one kernel position).
#[derive(Debug, Clone, Copy)]
pub struct LapLayer<'a> {
    /// Linear or convolution: a flatten may sit only between a convolution and a linear.
    pub kind: LayerKind,
    /// Output units (linear) or channels (conv): the shape's first dimension.
    pub out: usize,
    /// Input units (linear) or channels (conv): the shape's second dimension.
    pub inputs: usize,
    /// The weights.
    pub weights: &'a [f32],
}

impl LapLayer<'_> {
    /// Kernel positions per (output, input) pair, or `None` when the weights do not fill
    /// `[out, inputs, k]` (such a layer is scored by magnitude alone and links to nothing).
    fn kernel(&self) -> Option<usize> {
        let pairs = self.out.checked_mul(self.inputs).filter(|&p| p > 0)?;
        (self.weights.len().is_multiple_of(pairs) && !self.weights.is_empty()).then(|| self.weights.len() / pairs)
    }

    /// `‖W[j, :]‖²` for every output `j`: everything this layer feeds into unit/channel `j`
    /// (`out` values when [`LapLayer::kernel`] is `Some`, as every caller checks first).
    fn output_norms(&self) -> Vec<f64> {
        self.weights.chunks(self.weights.len() / self.out).map(sum_of_squares).collect()
    }

    /// `‖W[:, k]‖²` for every input `k`: everything this layer reads from unit/channel `k`
    /// (`inputs` values when [`LapLayer::kernel`] is `Some`).
    fn input_norms(&self) -> Vec<f64> {
        let kernel = self.weights.len() / (self.out * self.inputs);
        let mut norms = vec![0f64; self.inputs];
        for row in self.weights.chunks(self.inputs * kernel) {
            for (norm, slice) in norms.iter_mut().zip(row.chunks(kernel)) {
                *norm += sum_of_squares(slice);
            }
        }
        norms
    }
}

fn sum_of_squares(w: &[f32]) -> f64 {
    w.iter().map(|&x| f64::from(x) * f64::from(x)).sum()
}

/// How many of `next`'s inputs read each output of `prev`: 1 when they match one to one
/// (through pooling and activations, which keep channels), `h·w` across a conv→linear
/// flatten (`next.inputs = channels · h·w`, channel-major as PyTorch flattens), `None` when
/// the shapes do not agree.
pub fn fan_out(prev: &LapLayer<'_>, next: &LapLayer<'_>) -> Option<usize> {
    prev.kernel()?;
    next.kernel()?;
    if next.inputs == prev.out {
        Some(1)
    } else if prev.kind == LayerKind::Conv2d && next.kind == LayerKind::Linear && next.inputs.is_multiple_of(prev.out) {
        Some(next.inputs / prev.out)
    } else {
        None
    }
}

/// LAP scores, and where a link broke.
#[derive(Debug, Clone, PartialEq)]
pub struct LapScores {
    /// One score per weight, per layer; higher is kept longer.
    pub scores: Vec<Vec<f32>>,
    /// Every `(p, c)` where layer `p` produces layer `c`'s inputs by the graph but their
    /// shapes disagree ([`fan_out`] is `None`): that link contributes to neither side.
    pub unlinked: Vec<(usize, usize)>,
}

/// The lookahead score of every weight (Park et al. 2020):
/// `W_l[j,k]² · Σ_p ‖W_p[k,:]‖² · Σ_c ‖W_c[:,j]‖²`, summed over the layers `p` that produce
/// layer `l`'s input channel `k` and the layers `c` that read its output channel `j`
/// (`links`: in a chain, the layer before and the layer after; behind a residual `add`,
/// every layer the `add` joins). Across a flatten the next factor takes all `h·w` columns of
/// channel `j`. A layer with no producer has previous factor 1, one with no consumer next
/// factor 1, and a link whose shapes disagree is left out of both sums (a side left with no
/// link gets factor 1). Products run in f64 and are rounded to f32 once.
pub fn lap_scores(layers: &[LapLayer<'_>], links: &Links) -> LapScores {
    let mut unlinked = Vec::new();
    let mut fans = vec![Vec::new(); layers.len()];
    for (c, producers) in links.producers.iter().enumerate() {
        for &p in producers {
            match fan_out(&layers[p], &layers[c]) {
                Some(fan) => fans[c].push((p, fan)),
                None => unlinked.push((p, c)),
            }
        }
    }
    let output_norms: Vec<Option<Vec<f64>>> = layers.iter().map(|l| l.kernel().map(|_| l.output_norms())).collect();
    let input_norms: Vec<Option<Vec<f64>>> = layers.iter().map(|l| l.kernel().map(|_| l.input_norms())).collect();
    let scores = layers
        .iter()
        .enumerate()
        .map(|(l, layer)| {
            let Some(kernel) = layer.kernel() else {
                return layer.weights.iter().map(|&x| x * x).collect();
            };
            // A checked fan means both layers' shapes fill `[out, inputs, k]` and
            // `fan · out_p = inputs_c`: the indexing below stays in bounds.
            let mut prev = vec![0.0; layer.inputs];
            for &(p, fan) in &fans[l] {
                let norms = output_norms[p].as_ref().expect("a checked fan has a kernel");
                prev.iter_mut().enumerate().for_each(|(k, v)| *v += norms[k / fan]);
            }
            if fans[l].is_empty() {
                prev.fill(1.0);
            }
            let mut next = vec![0.0; layer.out];
            let consumers: Vec<(usize, usize)> = fans
                .iter()
                .enumerate()
                .flat_map(|(c, f)| f.iter().filter(|(p, _)| *p == l).map(move |&(_, fan)| (c, fan)))
                .collect();
            for &(c, fan) in &consumers {
                let norms = input_norms[c].as_ref().expect("a checked fan has a kernel");
                for (v, chunk) in next.iter_mut().zip(norms.chunks(fan)) {
                    *v += chunk.iter().sum::<f64>();
                }
            }
            if consumers.is_empty() {
                next.fill(1.0);
            }
            layer_scores(layer.weights, kernel, layer.inputs, &prev, &next)
        })
        .collect();
    LapScores { scores, unlinked }
}

/// `w² · prev[k] · next[j]` over `[out, inputs, kernel]`, in f64 then rounded once.
fn layer_scores(weights: &[f32], kernel: usize, inputs: usize, prev: &[f64], next: &[f64]) -> Vec<f32> {
    let mut scores = Vec::with_capacity(weights.len());
    for (row, &after) in weights.chunks(inputs * kernel).zip(next) {
        for (slice, &before) in row.chunks(kernel).zip(prev) {
            scores.extend(slice.iter().map(|&x| (f64::from(x) * f64::from(x) * before * after) as f32));
        }
    }
    scores
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyperprune_sdk::masking::keep_for_request;
    use hyperprune_sdk::rng::SplitMix64;
    use hyperprune_sdk::{Pattern, PruneRequest, Scope};

    fn linear(out: usize, inputs: usize, weights: &[f32]) -> LapLayer<'_> {
        LapLayer { kind: LayerKind::Linear, out, inputs, weights }
    }

    fn conv(out: usize, inputs: usize, weights: &[f32]) -> LapLayer<'_> {
        LapLayer { kind: LayerKind::Conv2d, out, inputs, weights }
    }

    #[test]
    fn a_two_layer_chain_weighs_by_the_previous_row_and_the_next_column() {
        // W0 = [[1, 2, 0], [0, 1, -1]] (2 outputs, 3 inputs), W1 = [[3, -1], [1, 2]].
        // W0 is first (no previous factor); its next factors are W1's column norms:
        // col 0: 9 + 1 = 10, col 1: 1 + 4 = 5 → row 0: [1·10, 4·10, 0], row 1: [0, 1·5, 1·5].
        // W1 is last (no next factor); its previous factors are W0's row norms:
        // row 0: 1 + 4 + 0 = 5, row 1: 0 + 1 + 1 = 2 → row 0: [9·5, 1·2], row 1: [1·5, 4·2].
        let (w0, w1) = ([1.0, 2.0, 0.0, 0.0, 1.0, -1.0], [3.0, -1.0, 1.0, 2.0]);
        let lap = lap_scores(&[linear(2, 3, &w0), linear(2, 2, &w1)], &Links::chain(2));
        assert_eq!(lap.scores, vec![vec![10.0, 40.0, 0.0, 0.0, 5.0, 5.0], vec![45.0, 2.0, 5.0, 8.0]]);
        assert!(lap.unlinked.is_empty());
    }

    #[test]
    fn a_conv_chain_looks_across_kernels_and_a_flatten() {
        // L0: conv 2 out, 1 in, 1×1 kernel: [1, -2]; output norms [1, 4].
        // L1: conv 2 out, 2 in, 1×2 kernel, [j][k][p]:
        //   j0: k0 [1, 0], k1 [2, -1];  j1: k0 [0, 3], k1 [1, 1]
        //   output norms: j0 1+0+4+1 = 6, j1 0+9+1+1 = 11; input norms: k0 1+0+0+9 = 10, k1 4+1+1+1 = 7.
        // L2: linear 2 out, 4 in = 2 channels × 2 positions after a flatten (fan 2):
        //   [[1, 0, 2, 1], [-1, 1, 0, 3]]; column norms 2, 1, 4, 10 → channel 0: 3, channel 1: 14.
        // L0 (first): w² · L1 input norm of its channel: [1·10, 4·7] = [10, 28].
        // L1: w² · L0 output norm of k · L2 columns of j:
        //   j0 (·3): k0 (·1) [3, 0], k1 (·4) [48, 12];  j1 (·14): k0 [0, 126], k1 [56, 56].
        // L2 (last): w² · L1 output norm of the column's channel (cols 0, 1 → 6; 2, 3 → 11):
        //   row 0: [6, 0, 44, 11], row 1: [6, 6, 0, 99].
        let (w0, w1) = ([1.0, -2.0], [1.0, 0.0, 2.0, -1.0, 0.0, 3.0, 1.0, 1.0]);
        let w2 = [1.0, 0.0, 2.0, 1.0, -1.0, 1.0, 0.0, 3.0];
        let lap = lap_scores(&[conv(2, 1, &w0), conv(2, 2, &w1), linear(2, 4, &w2)], &Links::chain(3));
        assert_eq!(lap.scores[0], vec![10.0, 28.0]);
        assert_eq!(lap.scores[1], vec![3.0, 0.0, 48.0, 12.0, 0.0, 126.0, 56.0, 56.0]);
        assert_eq!(lap.scores[2], vec![6.0, 0.0, 44.0, 11.0, 6.0, 6.0, 0.0, 99.0]);
        assert!(lap.unlinked.is_empty());
    }

    #[test]
    fn shapes_that_disagree_break_the_chain_at_that_boundary_only() {
        // L0 (2×2) feeds 2 outputs but L1 (3×3) reads 3: factor 1 on both sides of boundary 0.
        // L0: w² = [1, 1, 1, 1]. L1: previous 1, next = L2's column norms [1, 4, 9]:
        //   diag(1, 2, 1) → [1·1, 0, 0, 0, 4·4, 0, 0, 0, 1·9]. L2 (1×3, last): previous = L1's
        //   row norms [1, 4, 1] → [1·1, 4·4, 9·1].
        let (w0, w1, w2) = ([1.0; 4], [1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 1.0], [1.0, 2.0, 3.0]);
        let lap = lap_scores(&[linear(2, 2, &w0), linear(3, 3, &w1), linear(1, 3, &w2)], &Links::chain(3));
        assert_eq!(lap.unlinked, vec![(0, 1)]);
        assert_eq!(
            lap.scores,
            vec![vec![1.0; 4], vec![1.0, 0.0, 0.0, 0.0, 16.0, 0.0, 0.0, 0.0, 9.0], vec![1.0, 16.0, 9.0]]
        );
        // A flatten needs a convolution before it and a whole number of positions per channel.
        let four = [0.5; 4 * 3];
        assert_eq!(fan_out(&linear(2, 2, &[1.0; 4]), &linear(3, 4, &four)), None);
        assert_eq!(fan_out(&conv(3, 1, &[1.0; 3]), &linear(3, 4, &four)), None);
        assert_eq!(fan_out(&conv(2, 1, &[1.0; 2]), &linear(3, 4, &four)), Some(2));
        // Weights that do not fill [out, inputs, k] link to nothing and score by w².
        let odd = [3.0, 1.0, 2.0];
        assert_eq!(lap_scores(&[linear(2, 2, &odd)], &Links::chain(1)).scores, vec![vec![9.0, 1.0, 4.0]]);
    }

    #[test]
    fn a_residual_add_sums_over_every_producer_and_every_consumer() {
        // L0: linear 1 → 2, [1, 2]: output norms [1, 4]. L1: linear 2 → 2, the identity.
        // L2 reads add(L0, L1): producers {0, 1}; L0 is read by L1 and L2.
        // L0: next = L1 columns [1, 1] + L2 columns [9, 1] = [10, 2] → [1·10, 4·2].
        // L1: prev = L0 rows [1, 4]; next = L2 columns [9, 1] → [1·1·9, 0, 0, 1·4·1].
        // L2 (last): prev = L0 rows + L1 rows = [1 + 1, 4 + 1] → [9·2, 1·5].
        let (w0, w1, w2) = ([1.0, 2.0], [1.0, 0.0, 0.0, 1.0], [3.0, 1.0]);
        let links = Links {
            producers: vec![vec![], vec![0], vec![0, 1]],
            consumers: vec![vec![1, 2], vec![2], vec![]],
            reads_network_input: vec![true, false, false],
        };
        let lap = lap_scores(&[linear(2, 1, &w0), linear(2, 2, &w1), linear(1, 2, &w2)], &links);
        assert_eq!(lap.scores, vec![vec![10.0, 8.0], vec![9.0, 0.0, 0.0, 4.0], vec![18.0, 5.0]]);
        assert!(lap.unlinked.is_empty());
    }

    /// conv [4, 1, 2×2] → conv [6, 4, 2×2] → flatten (6 × 2×2) → linear [8, 24] → linear [4, 8].
    fn small_chain(seed: u64) -> Vec<Vec<f32>> {
        let mut rng = SplitMix64::new(seed);
        [16, 96, 192, 32].iter().map(|&n| (0..n).map(|_| 2.0 * rng.next_f32() - 1.0).collect()).collect()
    }

    fn chain_scores(w: &[Vec<f32>]) -> LapScores {
        lap_scores(&[conv(4, 1, &w[0]), conv(6, 4, &w[1]), linear(8, 24, &w[2]), linear(4, 8, &w[3])], &Links::chain(4))
    }

    const ROW_LENS: [usize; 4] = [4, 16, 24, 8];

    fn pruned(keep: &[bool]) -> usize {
        keep.iter().filter(|&&k| !k).count()
    }

    #[test]
    fn masks_hit_the_requested_sparsity_globally_and_per_layer() {
        let lap = chain_scores(&small_chain(11));
        assert!(lap.unlinked.is_empty());
        let scores: Vec<&[f32]> = lap.scores.iter().map(Vec::as_slice).collect();
        let sizes: Vec<usize> = scores.iter().map(|s| s.len()).collect();
        let n: usize = sizes.iter().sum();
        for s in [0.5, 0.75, 0.9] {
            let global = keep_for_request(&scores, &ROW_LENS, &PruneRequest::global(s, 0));
            assert_eq!(global.iter().map(|k| pruned(k)).sum::<usize>(), (s * n as f64).round() as usize, "s={s}");
            let request = PruneRequest { scope: Scope::PerLayer, ..PruneRequest::global(s, 0) };
            let per_layer = keep_for_request(&scores, &ROW_LENS, &request);
            assert_eq!(per_layer.iter().map(|k| pruned(k)).sum::<usize>(), (s * n as f64).round() as usize);
            for (k, &size) in per_layer.iter().zip(&sizes) {
                assert!((pruned(k) as f64 - s * size as f64).abs() <= 1.0, "s={s}: {} of {size}", pruned(k));
            }
        }
    }

    #[test]
    fn two_four_keeps_the_two_highest_lap_scores_of_every_group() {
        let lap = chain_scores(&small_chain(5));
        let scores: Vec<&[f32]> = lap.scores.iter().map(Vec::as_slice).collect();
        let request = PruneRequest { pattern: Pattern::NM { n: 2, m: 4 }, ..PruneRequest::global(0.5, 0) };
        let keep = keep_for_request(&scores, &ROW_LENS, &request);
        for (s, k) in scores.iter().zip(&keep) {
            for (group, kept) in s.chunks(4).zip(k.chunks(4)) {
                assert_eq!(kept.iter().filter(|&&k| k).count(), 2);
                let lowest_kept = group.iter().zip(kept).filter(|(_, k)| **k).map(|(x, _)| *x);
                let highest_pruned = group.iter().zip(kept).filter(|(_, k)| !**k).map(|(x, _)| *x);
                assert!(lowest_kept.fold(f32::MAX, f32::min) >= highest_pruned.fold(0.0, f32::max), "{group:?}");
            }
        }
    }
}

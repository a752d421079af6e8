//! The per-weight input encoding: what the hypernetwork knows about each weight.
//!
//! Every feature is a function of the weight's value and of statistics over sets that a
//! permutation of hidden units maps onto themselves (its row, its column, its layer, the
//! model), so permuting the hidden units of a network permutes the feature rows the same
//! way: the encoding is permutation-equivariant. Ties in ranks share their mean rank for the
//! same reason.

use hyperprune_sdk::ModelRef;
use hyperprune_sdk::masking::{Score, radix_sorted};

use crate::geometry::{LayerView, chained, square_side, views};

/// Names of the features, in column order.
pub const NAMES: [&str; FEATURES] = [
    "w/rms_layer",
    "|w|/rms_layer",
    "|w| standardised in layer",
    "|w| standardised in row",
    "rank of |w| in layer",
    "rank of |w| in model",
    "row norm / layer mean",
    "column norm / layer mean",
    "depth",
    "is conv",
    "position y (kernel; map after a flatten; input pixel)",
    "position x (kernel; map after a flatten; input pixel)",
    "log fan-in",
    "log fan-out",
    "share of weights",
    "bias of output unit",
    "bias of input unit",
    "|w|/rms_model",
    "distance of the position from the centre",
    "incoming norm of the input unit / layer mean",
    "rank of the path saliency in layer",
    "rank of the path saliency in model",
    "outgoing norm of the output unit / layer mean",
];

/// Number of features per weight.
pub const FEATURES: usize = 23;

/// Column of the model-wide magnitude rank: the hypernetwork's score starts from it (a
/// residual on global magnitude pruning).
pub const MODEL_RANK: usize = 5;

/// Weights from which the encoder ranks on two threads.
const PARALLEL_ENCODE: usize = 8192;

/// The columns kept by the `features=magnitude` ablation: magnitude and its ranks only.
pub const MAGNITUDE_ONLY: [usize; 4] = [1, 4, 5, 17];

/// Which features the hypernetwork reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureSet {
    /// All of [`NAMES`].
    Full,
    /// Only the columns of [`MAGNITUDE_ONLY`]; the others are zero.
    Magnitude,
}

/// The encoded model: one row of [`FEATURES`] values per prunable weight, layer order.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// The layers' views.
    pub views: Vec<LayerView>,
    /// `[p, FEATURES]`, row-major.
    pub data: Vec<f32>,
    /// For each layer, the layers whose output units are its input units, by the network's
    /// graph ([`ModelRef::links`]) and with matching views: the layer before it in a chain;
    /// behind a residual `add`, every layer the `add` joins.
    pub producers: Vec<Vec<usize>>,
    /// For each layer, the layers that read its output units (the inverse of `producers`).
    pub consumers: Vec<Vec<usize>>,
}

impl Encoded {
    /// Number of prunable weights.
    pub fn len(&self) -> usize {
        self.data.len() / FEATURES
    }

    /// Whether the model has no prunable weights.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Each weight's model-wide magnitude rank (the [`MODEL_RANK`] column).
    pub fn model_ranks(&self) -> Vec<f32> {
        self.data.chunks_exact(FEATURES).map(|r| r[MODEL_RANK]).collect()
    }

    /// Offsets of each layer's first weight.
    pub fn offsets(&self) -> Vec<usize> {
        let mut at = 0;
        self.views
            .iter()
            .map(|v| {
                let o = at;
                at += v.len();
                o
            })
            .collect()
    }
}

/// Encodes `model`.
///
/// # Errors
/// When a layer's shape does not fit its kind (see [`views`]).
pub fn encode(model: &ModelRef<'_>, set: FeatureSet) -> Result<Encoded, String> {
    encode_beside(model, set, || ()).0
}

/// [`encode`], and `beside()` (work that needs no features, e.g. the base's ranks) where the
/// encoder leaves a thread free: for a large model the saliency's ranks run on a second
/// thread while this one ranks the magnitudes, then runs `beside`. Returns both results;
/// `beside` runs whether or not the encoding succeeds.
///
/// # Errors
/// As [`encode`], in the first of the pair.
pub fn encode_beside<R>(
    model: &ModelRef<'_>,
    set: FeatureSet,
    beside: impl FnOnce() -> R,
) -> (Result<Encoded, String>, R) {
    let views = match views(model) {
        Ok(views) => views,
        Err(e) => return (Err(e), beside()),
    };
    let weights = model.weights();
    let (producers, consumers) = unit_links(model, &views);
    let p: usize = views.iter().map(LayerView::len).sum();
    let mut data = vec![0f32; p * FEATURES];
    let abs_all: Vec<f32> = weights.iter().flat_map(|w| w.iter().map(|v| v.abs())).collect();
    // Each layer's |w|, as a slice of `abs_all`.
    let mut rest = abs_all.as_slice();
    let abs_layers: Vec<&[f32]> = views
        .iter()
        .map(|v| {
            let (head, tail) = rest.split_at(v.len());
            rest = tail;
            head
        })
        .collect();
    let model_rms = rms(&abs_all).max(1e-12);
    let depth_den = (views.len().max(2) - 1) as f32;
    let biases: Vec<Option<&[f32]>> = model.layers().iter().map(|l| bias_of(model, l.name())).collect();
    // The ranks (magnitude, path saliency; in the model and in each layer) are the costly
    // part: the magnitude ones (then `beside`) on this thread, the saliency ones on another.
    let magnitude_ranks = || {
        let sizes: Vec<usize> = abs_layers.iter().map(|a| a.len()).collect();
        grouped_percentile_ranks(&abs_all, &sizes)
    };
    let saliency_ranks = || {
        let (forward_flow, backward_flow) = path_flows(&views, &weights, &producers, &consumers);
        let saliency: Vec<Vec<f32>> = views
            .iter()
            .zip(&weights)
            .enumerate()
            .map(|(l, (view, w))| {
                let mut values = Vec::with_capacity(w.len());
                view.each(w, |o, i, v| values.push(v.abs() * forward_flow[l][i] * backward_flow[l][o]));
                values
            })
            .collect();
        let sizes: Vec<usize> = saliency.iter().map(Vec::len).collect();
        grouped_percentile_ranks(&saliency.concat(), &sizes)
    };
    let ((model_rank, layer_ranks), (saliency_model_rank, saliency_ranks), beside) = if p >= PARALLEL_ENCODE {
        std::thread::scope(|scope| {
            let other = scope.spawn(saliency_ranks);
            let mine = magnitude_ranks();
            let beside = beside();
            (mine, other.join().expect("the rank thread does not panic"), beside)
        })
    } else {
        (magnitude_ranks(), saliency_ranks(), beside())
    };
    let mut offset = 0;
    for (l, (view, w)) in views.iter().zip(&weights).enumerate() {
        let (layer_rank, saliency_rank) = (&layer_ranks[l], &saliency_ranks[l]);
        // How much each output unit is read downstream: its columns in every reader.
        let outgoing: Option<Vec<f32>> = (!consumers[l].is_empty()).then(|| {
            let mut sq = vec![0f32; view.out];
            for &c in &consumers[l] {
                views[c].each(weights[c], |_, i, v| sq[i] += v * v);
            }
            let norms: Vec<f32> = sq.iter().map(|s| s.sqrt()).collect();
            let m = mean(&norms).max(1e-12);
            norms.iter().map(|x| x / m).collect()
        });
        let abs = abs_layers[l];
        let layer_rms = rms(w).max(1e-12);
        let (abs_mean, abs_std) = mean_std(abs);
        let row_len = view.inp * view.k;
        let row_norms: Vec<f32> = w.chunks(row_len.max(1)).map(norm).collect();
        let mut col_sq = vec![0f32; view.inp];
        view.each(w, |_, i, v| col_sq[i] += v * v);
        let col_norms: Vec<f32> = col_sq.iter().map(|s| s.sqrt()).collect();
        let row_mean = mean(&row_norms).max(1e-12);
        let col_mean = mean(&col_norms).max(1e-12);
        let out_bias = biases[l].filter(|b| b.len() == view.out);
        let in_bias = match producers[l].as_slice() {
            [q] => biases[*q].filter(|b| b.len() == view.inp),
            _ => None,
        };
        // How strongly each input unit is driven: the norm of its incoming weights (the rows
        // of every layer producing it), relative to their mean; a data-free activity proxy.
        let incoming: Option<Vec<f32>> = (!producers[l].is_empty()).then(|| {
            let mut sq = vec![0f32; view.inp];
            for &q in &producers[l] {
                for (s, row) in sq.iter_mut().zip(weights[q].chunks(views[q].fan_in().max(1))) {
                    *s += row.iter().map(|x| x * x).sum::<f32>();
                }
            }
            let rows: Vec<f32> = sq.iter().map(|s| s.sqrt()).collect();
            let m = mean(&rows).max(1e-12);
            rows.iter().map(|r| r / m).collect()
        });
        // The first layer of an MLP on square images reads pixels: their position matters.
        let pixel_side = (l == 0 && !view.conv && view.k == 1).then(|| square_side(view.inp)).flatten();
        let row_stats: Vec<(f32, f32)> = abs.chunks(row_len.max(1)).map(mean_std).collect();
        let constant = [
            l as f32 / depth_den,
            if view.conv { 1.0 } else { 0.0 },
            (view.fan_in() as f32).ln() / 1000f32.ln(),
            ((view.out * view.k) as f32).ln() / 1000f32.ln(),
            view.len() as f32 / p.max(1) as f32,
        ];
        // Per output unit, per input unit and per position: everything that does not
        // depend on the weight itself, computed once (not once per weight).
        let scaled = |b: Option<&[f32]>, n: usize| -> Vec<f32> {
            match b {
                Some(b) => {
                    let scale = rms(b).max(1e-6);
                    b.iter().map(|v| clamp(v / scale)).collect()
                }
                None => vec![0.0; n],
            }
        };
        let (out_bias, in_bias) = (scaled(out_bias, view.out), scaled(in_bias, view.inp));
        let positions: Vec<(f32, f32)> = if view.k > 1 && view.kh * view.kw == view.k {
            (0..view.k).map(|k| (centred(k / view.kw, view.kh), centred(k % view.kw, view.kw))).collect()
        } else {
            vec![(0.0, 0.0); view.k]
        };
        let pixels: Option<Vec<(f32, f32)>> =
            pixel_side.map(|side| (0..view.inp).map(|i| (centred(i / side, side), centred(i % side, side))).collect());
        // The rows of output units `outs` into `rows` (theirs, in order).
        let fill = |outs: std::ops::Range<usize>, rows: &mut [f32]| {
            let mut rows = rows.chunks_exact_mut(FEATURES);
            let mut j = outs.start * row_len;
            for o in outs {
                let (r_mean, r_std) = row_stats[o];
                let r_std = r_std.max(1e-12);
                for i in 0..view.inp {
                    for &position in &positions {
                        let (ky, kx) = pixels.as_ref().map_or(position, |px| px[i]);
                        let (v, a) = (w[j], abs[j]);
                        let row = rows.next().expect("a row for every weight");
                        row[0] = v / layer_rms;
                        row[1] = a / layer_rms;
                        row[2] = clamp((a - abs_mean) / abs_std.max(1e-12));
                        row[3] = clamp((a - r_mean) / r_std);
                        row[4] = layer_rank[j];
                        row[5] = model_rank[offset + j];
                        row[6] = row_norms[o] / row_mean;
                        row[7] = col_norms[i] / col_mean;
                        row[8] = constant[0];
                        row[9] = constant[1];
                        row[10] = ky;
                        row[11] = kx;
                        row[12] = constant[2];
                        row[13] = constant[3];
                        row[14] = constant[4];
                        row[15] = out_bias[o];
                        row[16] = in_bias[i];
                        row[17] = a / model_rms;
                        row[18] = (0.5 * (ky * ky + kx * kx)).sqrt();
                        row[19] = incoming.as_ref().map_or(0.0, |n| clamp(n[i]));
                        row[20] = saliency_rank[j];
                        row[21] = saliency_model_rank[offset + j];
                        row[22] = outgoing.as_ref().map_or(1.0, |n| clamp(n[o]));
                        j += 1;
                    }
                }
            }
        };
        // A large layer's rows on two threads, half its output units each (each row is its
        // weight's alone, so the values do not depend on the split).
        let rows = &mut data[offset * FEATURES..][..view.len() * FEATURES];
        if view.len() >= PARALLEL_ENCODE && view.out >= 2 {
            let half = view.out / 2;
            let (first, second) = rows.split_at_mut(half * row_len * FEATURES);
            std::thread::scope(|scope| {
                scope.spawn(|| fill(half..view.out, second));
                fill(0..half, first);
            });
        } else {
            fill(0..view.out, rows);
        }
        offset += view.len();
    }
    if set == FeatureSet::Magnitude {
        for row in data.chunks_mut(FEATURES) {
            for (c, v) in row.iter_mut().enumerate() {
                if !MAGNITUDE_ONLY.contains(&c) {
                    *v = 0.0;
                }
            }
        }
    }
    (Ok(Encoded { views, data, producers, consumers }), beside)
}

/// `model`'s layers and its model-wide magnitude rank ([`MODEL_RANK`]), every other feature
/// zero: all that a mask needs where the network does not run (the base alone, or LAMP's
/// ranks), without the cost of the rest (the saliency's flows and ranks, the per-weight rows).
///
/// # Errors
/// As [`encode`].
pub fn encode_base_only(model: &ModelRef<'_>) -> Result<Encoded, String> {
    let views = views(model)?;
    let (producers, consumers) = unit_links(model, &views);
    let abs_all: Vec<f32> = model.weights().iter().flat_map(|w| w.iter().map(|v| v.abs())).collect();
    let mut data = vec![0f32; abs_all.len() * FEATURES];
    for (row, rank) in data.chunks_exact_mut(FEATURES).zip(percentile_ranks(&abs_all)) {
        row[MODEL_RANK] = rank;
    }
    Ok(Encoded { views, data, producers, consumers })
}

/// For each layer, its producers and its consumers by the graph ([`ModelRef::links`]), kept
/// where the views agree (the producer's outputs are the reader's input units).
fn unit_links(model: &ModelRef<'_>, views: &[LayerView]) -> (Vec<Vec<usize>>, Vec<Vec<usize>>) {
    let links = model.links();
    let producers: Vec<Vec<usize>> = links
        .producers
        .iter()
        .enumerate()
        .map(|(l, ps)| ps.iter().copied().filter(|&p| chained(&views[p], &views[l])).collect())
        .collect();
    let mut consumers = vec![Vec::new(); views.len()];
    for (l, ps) in producers.iter().enumerate() {
        for &p in ps {
            consumers[p].push(l);
        }
    }
    (producers, consumers)
}

/// Data-free path flows (as in SynFlow, on the unit graph): with `A_l[o][i] = Σ_k |W_l[o,i,k]|`,
/// the forward flow into each input unit of layer `l` (all-ones input, `f ← A f`, summed over
/// the layers producing it) and the backward flow out of each output unit (`b ← Aᵀ b` from
/// ones at the logits, summed over the layers reading it), each scaled to mean 1 per layer so
/// that depth does not overflow them. A weight's path saliency is `|w| · f_in · b_out`: how
/// much signal flows through it.
fn path_flows(
    views: &[LayerView],
    weights: &[&[f32]],
    producers: &[Vec<usize>],
    consumers: &[Vec<usize>],
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let normalise = |mut v: Vec<f32>| {
        let m = mean(&v).max(1e-30);
        v.iter_mut().for_each(|x| *x /= m);
        v
    };
    // Producers come before their readers and readers after what they read (layer order is
    // a topological order), so one pass each way sees every flow it sums.
    let mut forward: Vec<Vec<f32>> = Vec::with_capacity(views.len());
    let mut out_flow: Vec<Vec<f32>> = Vec::with_capacity(views.len());
    for (l, (view, w)) in views.iter().zip(weights).enumerate() {
        let input = if let [p] = producers[l][..] {
            out_flow[p].clone()
        } else if producers[l].is_empty() {
            vec![1f32; view.inp]
        } else {
            let mut sum = vec![0f32; view.inp];
            for &p in &producers[l] {
                sum.iter_mut().zip(&out_flow[p]).for_each(|(s, f)| *s += f);
            }
            normalise(sum)
        };
        let mut out = vec![0f32; view.out];
        view.each(w, |o, i, v| out[o] += v.abs() * input[i]);
        forward.push(input);
        out_flow.push(normalise(out));
    }
    let mut backward = vec![Vec::new(); views.len()];
    let mut in_flow = vec![Vec::new(); views.len()];
    for (l, (view, w)) in views.iter().zip(weights).enumerate().rev() {
        let output = if let [c] = consumers[l][..] {
            in_flow[c].clone()
        } else if consumers[l].is_empty() {
            vec![1f32; view.out]
        } else {
            let mut sum = vec![0f32; view.out];
            for &c in &consumers[l] {
                sum.iter_mut().zip(&in_flow[c]).for_each(|(s, f): (&mut f32, &f32)| *s += f);
            }
            normalise(sum)
        };
        let mut inp = vec![0f32; view.inp];
        view.each(w, |o, i, v| inp[i] += v.abs() * output[o]);
        backward[l] = output;
        in_flow[l] = normalise(inp);
    }
    (forward, backward)
}

/// The bias belonging to weight tensor `name` (`"3.weight"` → `"3.bias"`).
pub(crate) fn bias_of<'a>(model: &ModelRef<'a>, name: &str) -> Option<&'a [f32]> {
    let prefix = name.strip_suffix("weight")?;
    model.others.iter().find(|t| t.name.as_str().strip_prefix(prefix) == Some("bias")).map(|t| t.values.as_slice())
}

/// Position `i` of `n`, mapped to `[-1, 1]`.
fn centred(i: usize, n: usize) -> f32 {
    if n <= 1 { 0.0 } else { 2.0 * i as f32 / (n - 1) as f32 - 1.0 }
}

fn clamp(v: f32) -> f32 {
    v.clamp(-5.0, 5.0)
}

fn mean(v: &[f32]) -> f32 {
    if v.is_empty() { 0.0 } else { (v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64) as f32 }
}

fn mean_std(v: &[f32]) -> (f32, f32) {
    let m = mean(v) as f64;
    let var = if v.is_empty() { 0.0 } else { v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / v.len() as f64 };
    (m as f32, var.sqrt() as f32)
}

fn rms(v: &[f32]) -> f32 {
    if v.is_empty() { 0.0 } else { (v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt() as f32 }
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt() as f32
}

/// Rank of each value among all, scaled to `[0, 1]` (0 = smallest); equal values share
/// their mean rank.
pub fn percentile_ranks(values: &[f32]) -> Vec<f32> {
    let n = values.len();
    let order = sorted_keys(values);
    let scale = if n > 1 { 1.0 / (n - 1) as f64 } else { 0.0 };
    let mut ranks = vec![0f32; n];
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && order[end].0 == order[start].0 {
            end += 1;
        }
        // A run of equal values shares its mean position (a value alone keeps its own).
        let rank = ((start + end - 1) as f64 / 2.0 * scale) as f32;
        for &(_, i) in &order[start..end] {
            ranks[i as usize] = rank;
        }
        start = end;
    }
    ranks
}

/// Percentile ranks of `values` among all of them, and within each of the consecutive
/// groups of sizes `groups` (one per layer), as [`percentile_ranks`] gives them, from one
/// sort: the model-wide order, read group by group, is each group's order.
fn grouped_percentile_ranks(values: &[f32], groups: &[usize]) -> (Vec<f32>, Vec<Vec<f32>>) {
    let n = values.len();
    let order = sorted_keys(values);
    let scale = |n: usize| if n > 1 { 1.0 / (n - 1) as f64 } else { 0.0 };
    let mut group_of = Vec::with_capacity(n);
    for (g, &size) in groups.iter().enumerate() {
        group_of.extend(std::iter::repeat_n(g as u32, size));
    }
    // Each value's rank over all and in its group, side by side: one scattered write a value.
    let mut ranks = vec![[0f32; 2]; n];
    let mut seen = vec![0usize; groups.len()];
    let mut run_count = vec![0usize; groups.len()];
    let (all_scale, group_scales) = (scale(n), groups.iter().map(|&g| scale(g)).collect::<Vec<f64>>());
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && order[end].0 == order[start].0 {
            end += 1;
        }
        if end == start + 1 {
            // No tie (the common case): the rank is the position, over all and in the group.
            let i = order[start].1 as usize;
            let g = group_of[i] as usize;
            ranks[i] = [(start as f64 * all_scale) as f32, (seen[g] as f64 * group_scales[g]) as f32];
            seen[g] += 1;
            start = end;
            continue;
        }
        // Ties share their mean rank: over all values, and over each group's.
        let rank = ((start + end - 1) as f64 / 2.0 * all_scale) as f32;
        for &(_, i) in &order[start..end] {
            ranks[i as usize][0] = rank;
            run_count[group_of[i as usize] as usize] += 1;
        }
        for &(_, i) in &order[start..end] {
            let g = group_of[i as usize] as usize;
            if run_count[g] > 0 {
                let (first, m) = (seen[g], run_count[g]);
                let rank = ((first + first + m - 1) as f64 / 2.0 * group_scales[g]) as f32;
                for &(_, j) in &order[start..end] {
                    if group_of[j as usize] as usize == g {
                        ranks[j as usize][1] = rank;
                    }
                }
                seen[g] += m;
                run_count[g] = 0;
            }
        }
        start = end;
    }
    let all = ranks.iter().map(|r| r[0]).collect();
    let mut rest = ranks.as_slice();
    let within = groups
        .iter()
        .map(|&size| {
            let (head, tail) = rest.split_at(size);
            rest = tail;
            head.iter().map(|r| r[1]).collect()
        })
        .collect();
    (all, within)
}

/// `(key, index)` of every value, sorted by key (as `total_cmp` orders the values; ties by
/// index).
fn sorted_keys(values: &[f32]) -> Vec<(u32, u32)> {
    // An f32's key fits 32 bits.
    let items: Vec<(u32, u32)> = values.iter().zip(0u32..).map(|(v, i)| (v.key() as u32, i)).collect();
    radix_sorted(items, |&(k, _)| u64::from(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_scaled_and_ties_share_their_mean_rank() {
        assert_eq!(percentile_ranks(&[3.0, 1.0, 2.0]), vec![1.0, 0.0, 0.5]);
        assert_eq!(percentile_ranks(&[1.0, 1.0, 0.0]), vec![0.75, 0.75, 0.0]);
        assert_eq!(percentile_ranks(&[5.0]), vec![0.0]);
        assert_eq!(percentile_ranks(&[-1.0, 0.0, -3.0, 2.0]), vec![1.0 / 3.0, 2.0 / 3.0, 0.0, 1.0]);
        // Against counting: rank = (#smaller + (#equal − 1) / 2) / (n − 1), with many ties,
        // negatives and values spanning every byte of the key.
        let mut rng = hyperprune_sdk::rng::SplitMix64::new(9);
        let v: Vec<f32> = (0..3000)
            .map(|_| ((rng.next_f32() - 0.5) * 400.0).round() * 1e-3f32.powi(rng.next_u64() as i32 % 3))
            .collect();
        let got = percentile_ranks(&v);
        let counted = |v: &[f32], x: f32| {
            let smaller = v.iter().filter(|&&y| y.total_cmp(&x).is_lt()).count() as f64;
            let equal = v.iter().filter(|&&y| y.total_cmp(&x).is_eq()).count() as f64;
            ((smaller + (equal - 1.0) / 2.0) / (v.len() - 1) as f64) as f32
        };
        for (i, &x) in v.iter().enumerate().step_by(37) {
            assert_eq!(got[i], counted(&v, x), "value {x}");
        }
        // Within groups, from the same sort: each group's ranks are its own percentile ranks,
        // ties across groups included.
        let sizes = [1000, 1, 1500, 499];
        let (all, within) = grouped_percentile_ranks(&v, &sizes);
        assert_eq!(all, got);
        let mut offset = 0;
        for (&size, ranks) in sizes.iter().zip(&within) {
            let part = &v[offset..offset + size];
            assert_eq!(*ranks, percentile_ranks(part), "group of {size}");
            for (i, &x) in part.iter().enumerate().step_by(41) {
                assert_eq!(ranks[i], if size > 1 { counted(part, x) } else { 0.0 }, "group of {size}, value {x}");
            }
            offset += size;
        }
    }

    #[test]
    fn names_match_the_feature_count_and_the_special_columns() {
        assert_eq!(NAMES[MODEL_RANK], "rank of |w| in model");
        assert!(MAGNITUDE_ONLY.iter().all(|&c| NAMES[c].contains("|w|")));
    }
}

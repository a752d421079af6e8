//! The forward pass of [`crate::network`] in plain Rust, for pruning: no graph, no tensor
//! allocation per operation, rows split over threads. Fitting uses the burn version (it
//! needs gradients); the two are held equal by the tests below.
//!
//! Every row's result depends on that row (and on pooled means computed in a fixed order)
//! alone, so the scores do not depend on the thread count.

use crate::features::{Encoded, FEATURES, MODEL_RANK};
use crate::kernel;
use crate::network::{Arch, EMBED, NetConfig, Params, embed};

/// Rows per thread below which one thread does the work.
const PARALLEL_ROWS: usize = 8192;

/// A parameter by name, with its shape.
fn get<'p>(params: &'p Params, name: &str) -> (&'p [f32], [usize; 2]) {
    let p = params.list.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no parameter '{name}'"));
    (&p.values, p.shape)
}

/// `out[r] = x[r] · W (+ b)` for the `n` rows of `x` (`[n, k]`, `W`: `[k, m]`).
fn affine(x: &[f32], k: usize, w: &[f32], m: usize, b: Option<&[f32]>, out: &mut [f32]) {
    let n = x.len() / k.max(1);
    let threads = hyperprune_sdk::available_threads().min(n / PARALLEL_ROWS).max(1);
    if threads == 1 {
        return rows(x, k, w, m, b, out);
    }
    let per = n.div_ceil(threads);
    std::thread::scope(|scope| {
        for (xc, oc) in x.chunks(per * k).zip(out.chunks_mut(per * m)) {
            scope.spawn(move || rows(xc, k, w, m, b, oc));
        }
    });
}

/// `out[r] = x[r] · W (+ b)`, one thread; a width of 16 (the default hidden size) gets a
/// fixed-size loop the compiler unrolls into vector operations.
fn rows(x: &[f32], k: usize, w: &[f32], m: usize, b: Option<&[f32]>, out: &mut [f32]) {
    if m == 16 {
        for (xr, or) in x.chunks_exact(k).zip(out.chunks_exact_mut(16)) {
            let mut acc = [0f32; 16];
            if let Some(b) = b {
                acc.copy_from_slice(b);
            }
            for (&xv, wr) in xr.iter().zip(w.chunks_exact(16)) {
                let wr: &[f32; 16] = wr.try_into().expect("chunks of 16");
                for q in 0..16 {
                    acc[q] += xv * wr[q];
                }
            }
            or.copy_from_slice(&acc);
        }
        return;
    }
    for (xr, or) in x.chunks_exact(k).zip(out.chunks_exact_mut(m)) {
        match b {
            Some(b) => or.copy_from_slice(b),
            None => or.fill(0.0),
        }
        for (&xv, wr) in xr.iter().zip(w.chunks_exact(m)) {
            or.iter_mut().zip(wr).for_each(|(o, &wv)| *o += xv * wv);
        }
    }
}

/// `v · W + b` for one vector.
fn vec_affine(v: &[f32], w: &[f32], m: usize, b: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; m];
    affine(v, v.len(), w, m, Some(b), &mut out);
    out
}

/// Scores and the predicted threshold for one encoded model at sparsity `s`, as
/// [`crate::network::forward`] computes them.
/// `base` replaces the encoding's model-wide magnitude rank as what the score is a residual
/// on (see [`crate::base`]).
pub fn forward(
    config: &NetConfig,
    params: &Params,
    encoded: &Encoded,
    base: Option<&[f32]>,
    s: f64,
) -> (Vec<f32>, f32) {
    let h_dim = config.hidden;
    let p = encoded.len();
    let e = embed(s);
    let (fw, fshape) = get(params, "film.w");
    let cond: Vec<f32> = vec_affine(&e, fw, fshape[1], get(params, "film.b").0).iter().map(|v| v.tanh()).collect();
    let film = |d: usize| -> Option<(Vec<f32>, Vec<f32>)> {
        if !config.film {
            return None;
        }
        let zero = vec![0.0; h_dim];
        let gamma = vec_affine(&cond, get(params, &format!("film{d}.gamma")).0, h_dim, &zero);
        let beta = vec_affine(&cond, get(params, &format!("film{d}.beta")).0, h_dim, &zero);
        Some((gamma, beta))
    };
    let activate = |h: &mut [f32], d: usize| {
        let f = film(d);
        for row in h.chunks_exact_mut(h_dim) {
            if let Some((g, b)) = &f {
                row.iter_mut().zip(g.iter().zip(b)).for_each(|(v, (g, b))| *v = *v * (g + 1.0) + b);
            }
            row.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    };
    if config.arch == Arch::Pointwise {
        let films: Vec<Option<(Vec<f32>, Vec<f32>)>> = (0..=config.depth).map(film).collect();
        let mut scores = pointwise_scores(config, params, encoded, &films);
        add_base(&mut scores, params, encoded, base);
        return (scores, threshold(params, &e));
    }
    let mut h = vec![0f32; p * h_dim];
    affine(&encoded.data, FEATURES, get(params, "in.w").0, h_dim, Some(get(params, "in.b").0), &mut h);
    activate(&mut h, 0);
    let mut next = vec![0f32; p * h_dim];
    for d in 0..config.depth {
        let bias = get(params, &format!("h{d}.b")).0;
        equivariant_mix(params, d, encoded, h_dim, &h, bias, &mut next);
        std::mem::swap(&mut h, &mut next);
        activate(&mut h, d + 1);
    }
    let mut scores = vec![0f32; p];
    affine(&h, h_dim, get(params, "out.w").0, 1, Some(get(params, "out.b").0), &mut scores);
    add_base(&mut scores, params, encoded, base);
    (scores, threshold(params, &e))
}

/// `scores += skip · base`, the base being the encoding's model-wide magnitude rank unless
/// one is given.
fn add_base(scores: &mut [f32], params: &Params, encoded: &Encoded, base: Option<&[f32]>) {
    let skip = get(params, "skip").0[0];
    match base {
        Some(base) => scores.iter_mut().zip(base).for_each(|(s, b)| *s += skip * b),
        None => {
            scores.iter_mut().zip(encoded.data.chunks_exact(FEATURES)).for_each(|(s, x)| *s += skip * x[MODEL_RANK])
        }
    }
}

/// The threshold the network predicts for sparsity `s` (what [`forward`] returns with the
/// scores).
pub fn threshold_at(params: &Params, s: f64) -> f32 {
    threshold(params, &embed(s))
}

/// The threshold head on the sparsity embedding `e`.
fn threshold(params: &Params, e: &[f32; EMBED]) -> f32 {
    let (tw, tshape) = get(params, "thr.w1");
    let t: Vec<f32> = vec_affine(e, tw, tshape[1], get(params, "thr.b1").0).iter().map(|v| v.tanh()).collect();
    vec_affine(&t, get(params, "thr.w2").0, 1, get(params, "thr.b2").0)[0]
}

/// Rows per block of the fused pointwise pass: a block's hidden vectors stay in L1.
const BLOCK: usize = 64;

/// The pointwise network's head scores (before the base), fused: each block of rows goes through every layer
/// before the next block starts (no `[p, hidden]` buffer per layer), and the blocks are
/// split over threads for large models. Without AVX2/FMA every row's arithmetic is that of
/// [`affine`], in the same order, so the scores are those of the layer-by-layer pass, bit
/// for bit; with them the hidden layers run in [`kernel::layer16`] (fused multiply-adds).
fn pointwise_scores(
    config: &NetConfig,
    params: &Params,
    encoded: &Encoded,
    films: &[Option<(Vec<f32>, Vec<f32>)>],
) -> Vec<f32> {
    let h_dim = config.hidden;
    let p = encoded.len();
    let (in_w, in_b) = (get(params, "in.w").0, get(params, "in.b").0);
    let hidden: Vec<(&[f32], &[f32])> =
        (0..config.depth).map(|d| (get(params, &format!("h{d}.w")).0, get(params, &format!("h{d}.b")).0)).collect();
    let (out_w, out_b) = (get(params, "out.w").0, get(params, "out.b").0);
    // FiLM as `h·(γ + 1) + β` with `γ + 1` formed once (the same f32 operations), then ReLU,
    // in one pass.
    let films: Vec<Option<(Vec<f32>, Vec<f32>)>> =
        films.iter().map(|f| f.as_ref().map(|(g, b)| (g.iter().map(|g| g + 1.0).collect(), b.clone()))).collect();
    let activate = |h: &mut [f32], film: &Option<(Vec<f32>, Vec<f32>)>| match film {
        Some((g1, b)) => {
            for row in h.chunks_exact_mut(h_dim) {
                row.iter_mut().zip(g1.iter().zip(b)).for_each(|(v, (g1, b))| *v = (*v * g1 + b).max(0.0));
            }
        }
        None => h.iter_mut().for_each(|v| *v = v.max(0.0)),
    };
    // The 16-wide layers with their activation on AVX2 + FMA where the CPU has them.
    let fused = h_dim == 16 && kernel::available();
    let layer = |x: &[f32], k: usize, w: &[f32], b: &[f32], d: usize, out: &mut [f32]| {
        if fused {
            kernel::layer16(x, k, w, b, films[d].as_ref().map(|(g1, b)| (g1.as_slice(), b.as_slice())), out);
        } else {
            rows(x, k, w, h_dim, Some(b), out);
            activate(out, &films[d]);
        }
    };
    let run = |x: &[f32], scores: &mut [f32]| {
        let (mut h, mut next) = (vec![0f32; BLOCK * h_dim], vec![0f32; BLOCK * h_dim]);
        for (xb, sb) in x.chunks(BLOCK * FEATURES).zip(scores.chunks_mut(BLOCK)) {
            let n = sb.len();
            let (mut h, mut next) = (&mut h[..n * h_dim], &mut next[..n * h_dim]);
            layer(xb, FEATURES, in_w, in_b, 0, h);
            for (d, (w, b)) in hidden.iter().enumerate() {
                layer(h, h_dim, w, b, d + 1, next);
                std::mem::swap(&mut h, &mut next);
            }
            rows(h, h_dim, out_w, 1, Some(out_b), sb);
        }
    };
    let mut scores = vec![0f32; p];
    let threads = hyperprune_sdk::available_threads().min(p / PARALLEL_POINTWISE).max(1);
    if threads == 1 {
        run(&encoded.data, &mut scores);
        return scores;
    }
    let per = p.div_ceil(threads);
    std::thread::scope(|scope| {
        for (x, out) in encoded.data.chunks(per * FEATURES).zip(scores.chunks_mut(per)) {
            scope.spawn(move || run(x, out));
        }
    });
    scores
}

/// The mean of `pooled[l]` over the layers `which` (one layer's as it is), `None` for none:
/// the units that a residual `add` joins share one message.
fn mean_of(which: &[usize], pooled: &[Vec<f32>]) -> Option<Vec<f32>> {
    match which {
        [] => None,
        [l] => Some(pooled[*l].clone()),
        _ => {
            let mut sum = vec![0f32; pooled[which[0]].len()];
            for &l in which {
                sum.iter_mut().zip(&pooled[l]).for_each(|(a, b)| *a += b);
            }
            let n = which.len() as f32;
            sum.iter_mut().for_each(|a| *a /= n);
            Some(sum)
        }
    }
}

/// Rows per thread below which the fused pointwise pass stays on one thread.
const PARALLEL_POINTWISE: usize = 4096;

/// The NFN layer's linear part (see `network::equivariant_mix`), with `bias` added.
fn equivariant_mix(params: &Params, d: usize, encoded: &Encoded, c: usize, h: &[f32], bias: &[f32], out: &mut [f32]) {
    let w = |part: &str| get(params, &format!("h{d}.{part}")).0;
    let views = &encoded.views;
    let offsets = encoded.offsets();
    let mut rows: Vec<Vec<f32>> = Vec::with_capacity(views.len());
    let mut cols: Vec<Vec<f32>> = Vec::with_capacity(views.len());
    for (v, &o) in views.iter().zip(&offsets) {
        let block = &h[o * c..(o + v.len()) * c];
        let mut row = vec![0f32; v.out * c];
        let mut col = vec![0f32; v.inp * c];
        for (j, hv) in block.chunks_exact(c).enumerate() {
            let (r, i) = (j / (v.inp * v.k), (j / v.k) % v.inp);
            row[r * c..(r + 1) * c].iter_mut().zip(hv).for_each(|(a, b)| *a += b);
            col[i * c..(i + 1) * c].iter_mut().zip(hv).for_each(|(a, b)| *a += b);
        }
        let (rn, cn) = ((v.inp * v.k) as f32, (v.out * v.k) as f32);
        row.iter_mut().for_each(|a| *a /= rn);
        col.iter_mut().for_each(|a| *a /= cn);
        rows.push(row);
        cols.push(col);
    }
    for (l, (v, &o)) in views.iter().zip(&offsets).enumerate() {
        let block = &h[o * c..(o + v.len()) * c];
        // Per output unit and per input unit: the pooled terms, already mapped by their weights.
        let mut unit_out = vec![0f32; v.out * c];
        affine(&rows[l], c, w("row"), c, None, &mut unit_out);
        if let Some(next) = mean_of(&encoded.consumers[l], &cols) {
            let mut nx = vec![0f32; v.out * c];
            affine(&next, c, w("next"), c, None, &mut nx);
            unit_out.iter_mut().zip(&nx).for_each(|(a, b)| *a += b);
        }
        let mut unit_in = vec![0f32; v.inp * c];
        affine(&cols[l], c, w("col"), c, None, &mut unit_in);
        if let Some(prev) = mean_of(&encoded.producers[l], &rows) {
            let mut pv = vec![0f32; v.inp * c];
            affine(&prev, c, w("prev"), c, None, &mut pv);
            unit_in.iter_mut().zip(&pv).for_each(|(a, b)| *a += b);
        }
        let mut mean = vec![0f32; c];
        for hv in block.chunks_exact(c) {
            mean.iter_mut().zip(hv).for_each(|(a, b)| *a += b);
        }
        mean.iter_mut().for_each(|a| *a /= v.len() as f32);
        let layer = vec_affine(&mean, w("layer"), c, bias);
        let dst = &mut out[o * c..(o + v.len()) * c];
        affine(block, c, w("self"), c, None, dst);
        for (j, row) in dst.chunks_exact_mut(c).enumerate() {
            let (r, i) = (j / (v.inp * v.k), (j / v.k) % v.inp);
            let (a, b) = (&unit_out[r * c..(r + 1) * c], &unit_in[i * c..(i + 1) * c]);
            for q in 0..c {
                row[q] += a[q] + b[q] + layer[q];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use hyperprune_sdk::rng::SplitMix64;

    use super::*;
    use crate::features::{FeatureSet, encode};
    use crate::network::{self, Allocation, feature_tensor};
    use crate::testing::TestNet;

    #[test]
    fn the_plain_forward_equals_the_burn_forward() {
        for arch in [Arch::Pointwise, Arch::Equivariant] {
            for film in [true, false] {
                // Hidden 16 takes the fixed-width kernel; lenet5's 44k rows take the threaded path.
                let hidden = if arch == Arch::Pointwise { 16 } else { 8 };
                let config =
                    NetConfig { arch, hidden, depth: 2, film, allocation: Allocation::Learned, rescale: false };
                let mut params = Params::init(&config, 3);
                let mut rng = SplitMix64::new(4);
                for p in &mut params.list {
                    p.values.iter_mut().for_each(|v| *v += 0.5 * (rng.next_f32() - 0.5));
                }
                for net in [TestNet::cnn_s(1, 5), TestNet::lenet5(6)] {
                    let encoded = net.with_view(|m| encode(&m, FeatureSet::Full).unwrap());
                    let device = Default::default();
                    let tensors = params.tensors::<Flex>(&device);
                    let x = feature_tensor::<Flex>(&encoded, &device);
                    let out = network::forward(&config, &params, &tensors, &encoded, x, None, 0.8);
                    let want = network::values(out.scores);
                    let (got, threshold) = forward(&config, &params, &encoded, None, 0.8);
                    // Both are f32 sums of a few hundred products in different orders: the
                    // differences are rounding, ~1e-6 of the scale; a wrong term is O(scale).
                    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-4 * scale,
                            "{arch:?} film={film} {}: score {i}: {g} vs {w}",
                            net.arch
                        );
                    }
                    let t = network::values(out.threshold)[0];
                    assert!((threshold - t).abs() <= 1e-5 * (1.0 + t.abs()), "threshold {threshold} vs {t}");
                }
            }
        }
    }
}

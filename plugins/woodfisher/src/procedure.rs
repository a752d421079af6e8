//! The WoodFisher procedure over a whole model, free of any FFI: block-diagonal inverse
//! Fisher from gradients, the pruning statistic, the mask, the per-block OBS update.

use faer::prelude::*;

use crate::fisher::{LowRankInverse, RECURSION_CHUNK, woodbury_inverse};
use crate::update::{BlockUpdate, obs_update_dense, obs_update_low_rank};

/// The widest block (in weights) built without `allow_dense`.
pub const DENSE_LIMIT: usize = 50_000;

/// How the procedure runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Damping `λ` added to the empirical Fisher's diagonal.
    pub damp: f64,
    /// Weights per Fisher block over the flattened prunable weights; 0 = one block.
    pub block_size: usize,
    /// Apply the OBS update to the kept weights.
    pub update: bool,
    /// Permit blocks wider than [`DENSE_LIMIT`].
    pub allow_dense: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { damp: 1e-5, block_size: 128, update: true, allow_dense: false }
    }
}

/// Per-sample gradients, borrowed: `rows × cols` f32, row-major, columns in layer order.
#[derive(Debug, Clone, Copy)]
pub struct Gradients<'a> {
    /// Number of gradients `n`.
    pub rows: usize,
    /// Number of prunable weights `p`.
    pub cols: usize,
    /// `rows · cols` values.
    pub data: &'a [f32],
}

/// Progress and cancellation, so the procedure runs the same under the host and in tests.
pub trait Monitor {
    /// Whether to stop.
    fn cancelled(&self) -> bool;
    /// `done` of `total` steps finished.
    fn progress(&self, done: usize, total: usize);
}

/// A monitor that never cancels and reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Monitor for Silent {
    fn cancelled(&self) -> bool {
        false
    }

    fn progress(&self, _: usize, _: usize) {}
}

/// What the procedure returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Pruned {
    /// Keep masks, one per layer.
    pub keep: Vec<Vec<bool>>,
    /// Updated weights (pruned ones exactly 0), one vector per layer, when `update` is on.
    pub new_weights: Option<Vec<Vec<f32>>>,
    /// Sum over blocks of the quadratic model's loss increase, when `update` is on.
    pub loss_increase: Option<f64>,
    /// The block width used.
    pub block: usize,
}

/// The block width for `p` weights: `block_size`, or `p` for 0, capped at `p`.
///
/// # Errors
/// When the width exceeds [`DENSE_LIMIT`] without `allow_dense`.
pub fn block_width(p: usize, settings: &Settings) -> Result<usize, String> {
    let b = if settings.block_size == 0 { p } else { settings.block_size.min(p) };
    if b > DENSE_LIMIT && !settings.allow_dense {
        return Err(format!(
            "a fisher block of {b} weights is over the limit of {DENSE_LIMIT}: use block_size <= {DENSE_LIMIT} \
             (default 128), or set allow_dense=true to build it anyway"
        ));
    }
    Ok(b.max(1))
}

/// One block's inverse Fisher, in whichever exact form is cheaper.
enum BlockInverse {
    /// `b ≤ n`: the explicit `b × b` inverse from the Woodbury recursion.
    Dense(Mat<f64>),
    /// `b > n`: the implicit one-shot form (`n × b` gradients, `n × n` factor).
    LowRank(LowRankInverse),
}

impl BlockInverse {
    fn build(grads: Mat<f64>, damp: f64) -> Result<BlockInverse, String> {
        if grads.ncols() <= grads.nrows() {
            Ok(BlockInverse::Dense(woodbury_inverse(grads.as_ref(), damp, RECURSION_CHUNK)?))
        } else {
            Ok(BlockInverse::LowRank(LowRankInverse::new(grads, damp)?))
        }
    }

    fn diag(&self) -> Vec<f64> {
        match self {
            BlockInverse::Dense(inv) => (0..inv.nrows()).map(|i| inv[(i, i)]).collect(),
            BlockInverse::LowRank(inv) => inv.diag(),
        }
    }

    fn update(&self, w: &[f64], pruned: &[usize]) -> Result<BlockUpdate, String> {
        match self {
            BlockInverse::Dense(inv) => obs_update_dense(inv.as_ref(), w, pruned),
            BlockInverse::LowRank(inv) => obs_update_low_rank(inv, w, pruned),
        }
    }
}

/// WoodFisher on a model given as per-layer weights and its per-sample gradients:
///
/// 1. cut the flattened weights into blocks of [`block_width`] (the last may be shorter;
///    blocks may span layers) and build each block's inverse Fisher `F⁻¹`;
/// 2. score every weight by the OBS statistic `ρ_q = w_q² / (2[F⁻¹]_qq)`;
/// 3. let `select` turn the per-layer scores into keep masks (global or per-layer ranking,
///    N:M; lowest score pruned first);
/// 4. with `update`, apply each block's joint OBS update for its pruned weights.
///
/// # Errors
/// Gradients of the wrong shape, a block over the dense limit, bad damping, a failed
/// factorisation, non-finite updated weights, or cancellation.
pub fn woodfisher(
    layers: &[&[f32]],
    grads: Gradients<'_>,
    settings: &Settings,
    select: impl FnOnce(&[&[f32]]) -> Vec<Vec<bool>>,
    monitor: &dyn Monitor,
) -> Result<Pruned, String> {
    let p: usize = layers.iter().map(|l| l.len()).sum();
    if grads.cols != p || grads.rows == 0 || grads.data.len() != grads.rows * grads.cols {
        return Err(format!(
            "expected per-sample gradients of shape n x {p} with n >= 1, got {} x {} ({} values)",
            grads.rows,
            grads.cols,
            grads.data.len()
        ));
    }
    let b = block_width(p, settings)?;
    let blocks = p.div_ceil(b);
    let steps = if settings.update { 2 * blocks } else { blocks };
    let w: Vec<f64> = layers.iter().flat_map(|l| l.iter().map(|&x| f64::from(x))).collect();

    let mut inverses = Vec::with_capacity(blocks);
    let mut scores = Vec::with_capacity(p);
    for k in 0..blocks {
        if monitor.cancelled() {
            return Err("cancelled".into());
        }
        let (start, len) = (k * b, b.min(p - k * b));
        let g = Mat::<f64>::from_fn(grads.rows, len, |r, c| f64::from(grads.data[r * p + start + c]));
        let inv = BlockInverse::build(g, settings.damp)?;
        scores.extend(inv.diag().iter().zip(&w[start..start + len]).map(|(d, x)| (x * x / (2.0 * d)) as f32));
        // The inverse is needed again only for the update.
        if settings.update {
            inverses.push(inv);
        }
        monitor.progress(k + 1, steps);
    }

    let per_layer = split(&scores, layers);
    let keep = select(&per_layer);
    if !settings.update {
        return Ok(Pruned { keep, new_weights: None, loss_increase: None, block: b });
    }

    let pruned: Vec<bool> = keep.iter().flatten().map(|&k| !k).collect();
    let mut new_w = vec![0.0f32; p];
    let mut loss_increase = 0.0;
    for (k, inv) in inverses.iter().enumerate() {
        if monitor.cancelled() {
            return Err("cancelled".into());
        }
        let (start, len) = (k * b, b.min(p - k * b));
        let q: Vec<usize> = (0..len).filter(|&i| pruned[start + i]).collect();
        let upd = inv.update(&w[start..start + len], &q)?;
        loss_increase += upd.loss_increase;
        for (dst, &x) in new_w[start..start + len].iter_mut().zip(&upd.weights) {
            *dst = x as f32;
        }
        monitor.progress(blocks + k + 1, steps);
    }
    if let Some(i) = new_w.iter().position(|x| !x.is_finite()) {
        return Err(format!("the obs update gave a non-finite weight (flat index {i}); raise damp"));
    }
    let new_weights = split(&new_w, layers).into_iter().map(<[f32]>::to_vec).collect();
    Ok(Pruned { keep, new_weights: Some(new_weights), loss_increase: Some(loss_increase), block: b })
}

/// Cuts a flat vector into per-layer slices of the layers' lengths.
fn split<'a>(flat: &'a [f32], layers: &[&[f32]]) -> Vec<&'a [f32]> {
    let mut rest = flat;
    layers
        .iter()
        .map(|l| {
            let (head, tail) = rest.split_at(l.len());
            rest = tail;
            head
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fisher::tests::{Rng, fisher};
    use faer::Side;
    use faer::linalg::solvers::DenseSolveCore;
    use hyperprune_sdk::masking::{global_keep, per_layer_counts, per_layer_keep};

    struct Model {
        layers: Vec<Vec<f32>>,
        grads: Vec<f32>,
        n: usize,
    }

    fn model(seed: u64, sizes: &[usize], n: usize) -> Model {
        let mut rng = Rng::new(seed);
        let layers: Vec<Vec<f32>> = sizes.iter().map(|&s| (0..s).map(|_| rng.next() as f32).collect()).collect();
        let p: usize = sizes.iter().sum();
        // Gradients with a few dominant directions, as real per-sample gradients have.
        let grads = (0..n * p).map(|i| (rng.next() * if i % 7 == 0 { 3.0 } else { 0.3 }) as f32).collect();
        Model { layers, grads, n }
    }

    impl Model {
        fn run(&self, settings: &Settings, s: f64, per_layer: bool) -> Pruned {
            let layers: Vec<&[f32]> = self.layers.iter().map(Vec::as_slice).collect();
            let p = layers.iter().map(|l| l.len()).sum();
            let grads = Gradients { rows: self.n, cols: p, data: &self.grads };
            let select = |sc: &[&[f32]]| if per_layer { per_layer_keep(sc, s) } else { global_keep(sc, s) };
            woodfisher(&layers, grads, settings, select, &Silent).unwrap()
        }
    }

    fn settings(block_size: usize) -> Settings {
        Settings { damp: 1e-2, block_size, update: true, allow_dense: false }
    }

    #[test]
    fn sparsity_counts_are_exact_global_and_per_layer() {
        let m = model(11, &[37, 50, 13], 20);
        let sizes = [37, 50, 13];
        for s in [0.0, 0.3, 0.5, 0.77, 0.9375, 0.99] {
            for block in [8, 30, 0] {
                let g = m.run(&settings(block), s, false);
                let pruned = g.keep.iter().flatten().filter(|&&k| !k).count();
                assert_eq!(pruned, (s * 100.0_f64).round() as usize, "global s={s} block={block}");
                let l = m.run(&settings(block), s, true);
                let counts: Vec<usize> = l.keep.iter().map(|k| k.iter().filter(|&&x| !x).count()).collect();
                assert_eq!(counts, per_layer_counts(&sizes, s), "per layer s={s} block={block}");
                for (keep, w) in g.keep.iter().flatten().zip(g.new_weights.as_ref().unwrap().iter().flatten()) {
                    assert!(*keep || *w == 0.0, "pruned weights are exactly zero");
                }
            }
        }
    }

    #[test]
    fn one_block_of_width_p_equals_the_full_fisher() {
        // Blocks of width p, asked for as p, as more than p, and as 0, are all the full
        // Fisher; b ≤ n takes the explicit path and b > n the low-rank one, so both are
        // compared against the full inverse formed and inverted directly.
        for n in [120, 30] {
            let m = model(21, &[40, 24, 16], n);
            let p = 80;
            let layers: Vec<&[f32]> = m.layers.iter().map(Vec::as_slice).collect();
            let w: Vec<f64> = layers.iter().flat_map(|l| l.iter().map(|&x| f64::from(x))).collect();
            let g = Mat::<f64>::from_fn(n, p, |r, c| f64::from(m.grads[r * p + c]));
            let inv = fisher(g.as_ref(), 1e-2).llt(Side::Lower).unwrap().inverse();
            let rho: Vec<f32> = (0..p).map(|q| (w[q] * w[q] / (2.0 * inv[(q, q)])) as f32).collect();
            let expected_keep = global_keep(&[&rho], 0.6)[0].clone();
            let q: Vec<usize> = (0..p).filter(|&i| !expected_keep[i]).collect();
            let expected = obs_update_dense(inv.as_ref(), &w, &q).unwrap();
            for block in [p, p + 5, 0] {
                let got = m.run(&settings(block), 0.6, false);
                assert_eq!(got.block, p);
                assert_eq!(got.keep.concat(), expected_keep, "n={n} block={block}");
                let new: Vec<f32> = got.new_weights.unwrap().concat();
                for (a, e) in new.iter().zip(&expected.weights) {
                    // f32 output of f64 values computed two exact ways (cond(F) ≲ 10⁴): the
                    // f32 rounding (~6e-8 relative) dominates.
                    assert!((f64::from(*a) - e).abs() <= 1e-5 * (1.0 + e.abs()), "n={n} block={block}: {a} vs {e}");
                }
                let dl = got.loss_increase.unwrap();
                assert!((dl - expected.loss_increase).abs() <= 1e-8 * expected.loss_increase);
            }
        }
    }

    #[test]
    fn update_off_only_masks_and_blocks_change_the_fisher() {
        let m = model(5, &[30, 30], 40);
        let off = m.run(&Settings { update: false, ..settings(16) }, 0.5, false);
        let on = m.run(&settings(16), 0.5, false);
        assert_eq!(off.keep, on.keep, "the mask does not depend on the update");
        assert!(off.new_weights.is_none() && off.loss_increase.is_none());
        // Blocks of one weight make the Fisher diagonal; on these coupled gradients its
        // mask must differ from the full Fisher's, or the option would not reach the statistic.
        let full = m.run(&settings(0), 0.5, false);
        let tiny = m.run(&settings(1), 0.5, false);
        assert_ne!(full.keep, tiny.keep);
    }

    #[test]
    fn oversized_blocks_need_allow_dense_and_bad_gradients_are_named() {
        let s = Settings { block_size: 0, ..Settings::default() };
        let err = block_width(DENSE_LIMIT + 1, &s).unwrap_err();
        assert!(err.contains("over the limit of 50000") && err.contains("allow_dense=true"), "{err}");
        assert_eq!(block_width(DENSE_LIMIT + 1, &Settings { allow_dense: true, ..s }).unwrap(), DENSE_LIMIT + 1);
        assert_eq!(block_width(DENSE_LIMIT, &s).unwrap(), DENSE_LIMIT);
        let layers: [&[f32]; 1] = [&[1.0, 2.0]];
        let bad = Gradients { rows: 1, cols: 3, data: &[0.0; 3] };
        let err = woodfisher(&layers, bad, &Settings::default(), |_| vec![], &Silent).unwrap_err();
        assert!(err.contains("expected per-sample gradients of shape n x 2"), "{err}");
    }
}

//! The whole procedure over a model's layers, free of any FFI: one greedy pass per output
//! row, an allocation of the removals over rows, and the kept weights re-solved on the
//! chosen support.
//!
//! # Getting the weights at a chosen count
//!
//! A pass records the removal order and the per-step losses; ExactOBS replays the first
//! `c` removals to recover the row after `c` steps. We re-solve instead: the OBS row after
//! `c` greedy steps is the exact minimiser of the (damped) layer loss on the remaining
//! support (each OBS step is the closed-form Lagrangian solution, and the downdated
//! inverse is exactly `(G_SS)⁻¹`), so one Cholesky solve of `G_SS ŵ_S = (G w)_S` gives the
//! same row in exact arithmetic, costs `|S|³/3` instead of a replay's `c·d²`, and carries
//! none of the rounding accumulated over the downdates. Nothing per step is stored beyond
//! the order and the losses (`d` indices and `d` floats per row).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::allocate::merge_by_marginal_loss;
use crate::hessian::DampedHessian;
use crate::surgeon::{Quota, RowPass, prune_row};

/// One prunable layer as the procedure sees it.
#[derive(Debug, Clone)]
pub struct LayerProblem<'a> {
    /// Number of output rows.
    pub rows: usize,
    /// The weights, `rows × d` row-major (`d = hessian.dim()`).
    pub weights: &'a [f32],
    /// The damped Hessian of the layer's inputs.
    pub hessian: DampedHessian,
}

/// How many weights to remove, and where.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Exactly `total` weights over all layers, allocated by merging every row's curve.
    Global {
        /// Weights to remove in the whole model.
        total: usize,
    },
    /// Exactly `counts[l]` weights in layer `l`, allocated over its rows by merging their
    /// curves.
    PerLayer {
        /// Weights to remove per layer.
        counts: Vec<usize>,
    },
    /// N:M in every row (each group of `m` keeps `n`).
    NOfM {
        /// Weights kept per group.
        n: usize,
        /// Group size.
        m: usize,
    },
}

/// Progress and cancellation, as the host offers them.
pub trait Monitor {
    /// `done` of `total` rows processed.
    fn progress(&self, done: usize, total: usize);
    /// Whether to stop.
    fn cancelled(&self) -> bool;
}

/// A monitor that reports nothing and never stops (tests, library use).
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Monitor for Silent {
    fn progress(&self, _: usize, _: usize) {}
    fn cancelled(&self) -> bool {
        false
    }
}

/// The result for one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerPruned {
    /// Keep mask, one entry per weight.
    pub keep: Vec<bool>,
    /// The updated weights (zero where pruned).
    pub weights: Vec<f32>,
    /// The layer's recorded loss increase: the sum over rows of the (damped)
    /// `(1/n)‖X w − X ŵ‖²`, in the `G = XᵀX/n` convention of [`crate::hessian`].
    pub loss: f64,
}

/// Prunes every layer to `target`.
///
/// # Errors
/// When a Hessian cannot be factored (see [`DampedHessian::inverse`]), a weight is not
/// finite, or the monitor asks to stop.
pub fn prune_layers(
    layers: &[LayerProblem<'_>],
    target: &Target,
    monitor: &dyn Monitor,
) -> Result<Vec<LayerPruned>, String> {
    let total_rows: usize = layers.iter().map(|l| l.rows).sum();
    let steps = 2 * total_rows;
    let mut done = 0;

    // 1. One greedy pass per row records every sparsity of that row.
    let mut passes: Vec<Vec<RowPass>> = Vec::with_capacity(layers.len());
    for layer in layers {
        let d = layer.hessian.dim();
        if layer.weights.iter().any(|w| !w.is_finite()) {
            return Err("a layer holds non-finite weights; obs needs a finite model".into());
        }
        let hinv = if layer.rows > 0 && d > 0 { layer.hessian.inverse()? } else { Vec::new() };
        let quota = match target {
            Target::NOfM { n, m } => Quota::n_of_m(d, *n, *m),
            _ => Quota::Free { steps: d },
        };
        let rows = parallel_rows(layer.rows, monitor, &mut done, steps, |r| {
            let w: Vec<f64> = layer.weights[r * d..(r + 1) * d].iter().map(|&v| f64::from(v)).collect();
            Ok(prune_row(&hinv, &w, &quota))
        })?;
        passes.push(rows);
    }

    // 2. How many removals each row gets.
    let counts: Vec<Vec<usize>> = match target {
        Target::Global { total } => {
            let curves: Vec<&[f64]> = passes.iter().flatten().map(|p| p.step_loss.as_slice()).collect();
            let mut flat = merge_by_marginal_loss(&curves, *total).into_iter();
            passes.iter().map(|rows| flat.by_ref().take(rows.len()).collect()).collect()
        }
        Target::PerLayer { counts } => passes
            .iter()
            .zip(counts)
            .map(|(rows, &c)| {
                let curves: Vec<&[f64]> = rows.iter().map(|p| p.step_loss.as_slice()).collect();
                merge_by_marginal_loss(&curves, c)
            })
            .collect(),
        Target::NOfM { .. } => passes.iter().map(|rows| rows.iter().map(|p| p.order.len()).collect()).collect(),
    };

    // 3. The kept weights, re-solved on each row's support (see the module doc).
    let mut out = Vec::with_capacity(layers.len());
    for ((layer, rows), counts) in layers.iter().zip(&passes).zip(&counts) {
        let d = layer.hessian.dim();
        let solved = parallel_rows(layer.rows, monitor, &mut done, steps, |r| {
            let w: Vec<f64> = layer.weights[r * d..(r + 1) * d].iter().map(|&v| f64::from(v)).collect();
            let mut keep = vec![true; d];
            for &c in &rows[r].order[..counts[r]] {
                keep[c as usize] = false;
            }
            let w_hat = if counts[r] == 0 { w } else { layer.hessian.solve_on_support(&w, &keep)? };
            Ok((keep, w_hat))
        })?;
        let loss = rows.iter().zip(counts).map(|(p, &c)| p.step_loss[..c].iter().sum::<f64>()).sum();
        let mut keep = Vec::with_capacity(layer.weights.len());
        let mut weights = Vec::with_capacity(layer.weights.len());
        for (k, w) in solved {
            weights.extend(w.iter().zip(&k).map(|(&v, &kept)| if kept { v as f32 } else { 0.0 }));
            keep.extend(k);
        }
        out.push(LayerPruned { keep, weights, loss });
    }
    Ok(out)
}

/// Runs `f` on rows `0..rows` over the available cores and returns the results in row
/// order. The calling thread works too and is the only one that talks to the monitor
/// (host callbacks need not be thread-safe); it stops everyone once cancelled.
fn parallel_rows<T: Send>(
    rows: usize,
    monitor: &dyn Monitor,
    done: &mut usize,
    steps: usize,
    f: impl Fn(usize) -> Result<T, String> + Sync,
) -> Result<Vec<T>, String> {
    let threads = hyperprune_sdk::available_threads().min(rows).max(1);
    let next = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Vec<Mutex<Option<Result<T, String>>>> = (0..rows).map(|_| Mutex::new(None)).collect();
    // Processes the next row; false once there is none left or someone stopped.
    let take_one = || {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let r = next.fetch_add(1, Ordering::Relaxed);
        if r >= rows {
            return false;
        }
        let result = f(r);
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        *results[r].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        finished.fetch_add(1, Ordering::Relaxed);
        true
    };
    let base = *done;
    let mut cancelled = false;
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(|| while take_one() {});
        }
        while take_one() {
            monitor.progress(base + finished.load(Ordering::Relaxed), steps);
            if monitor.cancelled() {
                cancelled = true;
                stop.store(true, Ordering::Relaxed);
            }
        }
    });
    *done = base + rows;
    // Other threads may have taken every row before the calling thread asked.
    if cancelled || monitor.cancelled() {
        return Err("cancelled".into());
    }
    monitor.progress(*done, steps);
    let mut out = Vec::with_capacity(rows);
    for cell in results {
        match cell.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(Ok(v)) => out.push(v),
            Some(Err(e)) => return Err(e),
            None => return Err("a worker stopped before finishing its row".into()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyperprune_sdk::masking::per_layer_counts;
    use hyperprune_sdk::rng::SplitMix64;

    /// A layer of `rows × d` random weights and a damped `XᵀX/n` from `n` random inputs.
    fn layer(rows: usize, d: usize, n: usize, seed: u64) -> (Vec<f32>, DampedHessian) {
        let mut r = SplitMix64::new(seed);
        let x: Vec<f64> = (0..n * d).map(|_| 2.0 * r.next_f64() - 1.0).collect();
        let mut g = vec![0.0; d * d];
        for s in 0..n {
            for i in 0..d {
                for j in 0..d {
                    g[i * d + j] += x[s * d + i] * x[s * d + j] / n as f64;
                }
            }
        }
        let w = (0..rows * d).map(|_| 2.0 * r.next_f32() - 1.0).collect();
        (w, DampedHessian::new(d, &g, 0.01).unwrap())
    }

    fn problems(data: &[(Vec<f32>, DampedHessian)]) -> Vec<LayerProblem<'_>> {
        data.iter().map(|(w, h)| LayerProblem { rows: w.len() / h.dim(), weights: w, hessian: h.clone() }).collect()
    }

    fn pruned(p: &LayerPruned) -> usize {
        p.keep.iter().filter(|&&k| !k).count()
    }

    #[test]
    fn global_and_per_layer_counts_are_exact() {
        // n = 6 < d = 9 for the second layer: rank-deficient, only the damping saves it.
        let data = vec![layer(5, 7, 40, 1), layer(3, 9, 6, 2), layer(4, 3, 20, 3)];
        let sizes: Vec<usize> = data.iter().map(|(w, _)| w.len()).collect();
        let n: usize = sizes.iter().sum();
        for s in [0.0, 0.1, 0.5, 0.77, 0.9375, 1.0] {
            let total = (s * n as f64).round() as usize;
            let out = prune_layers(&problems(&data), &Target::Global { total }, &Silent).unwrap();
            assert_eq!(out.iter().map(pruned).sum::<usize>(), total, "global s={s}");
            let counts = per_layer_counts(&sizes, s);
            let out = prune_layers(&problems(&data), &Target::PerLayer { counts: counts.clone() }, &Silent).unwrap();
            assert_eq!(out.iter().map(pruned).collect::<Vec<_>>(), counts, "uniform s={s}");
            for p in &out {
                assert!(p.weights.iter().zip(&p.keep).all(|(w, k)| w.is_finite() && (*k || *w == 0.0)));
            }
        }
    }

    #[test]
    fn global_allocation_costs_no_more_than_uniform() {
        // The merge over all rows may only do better than a fixed split on these (nearly
        // convex) curves; equality is allowed.
        let data = vec![layer(6, 10, 50, 4), layer(4, 5, 30, 5)];
        let sizes: Vec<usize> = data.iter().map(|(w, _)| w.len()).collect();
        let total = sizes.iter().sum::<usize>() / 2;
        let global: f64 =
            prune_layers(&problems(&data), &Target::Global { total }, &Silent).unwrap().iter().map(|p| p.loss).sum();
        let counts = per_layer_counts(&sizes, 0.5);
        let uniform: f64 =
            prune_layers(&problems(&data), &Target::PerLayer { counts }, &Silent).unwrap().iter().map(|p| p.loss).sum();
        assert!(global <= uniform * (1.0 + 1e-12), "global {global} > uniform {uniform}");
    }

    #[test]
    fn reported_layer_loss_is_the_loss_of_the_returned_weights() {
        let data = vec![layer(4, 8, 60, 6)];
        let out = prune_layers(&problems(&data), &Target::Global { total: 13 }, &Silent).unwrap();
        let (w, h) = &data[0];
        let d = h.dim();
        let recomputed: f64 = (0..4)
            .map(|r| {
                let w: Vec<f64> = w[r * d..(r + 1) * d].iter().map(|&v| f64::from(v)).collect();
                let w_hat: Vec<f64> = out[0].weights[r * d..(r + 1) * d].iter().map(|&v| f64::from(v)).collect();
                h.loss(&w, &w_hat)
            })
            .sum();
        // The returned weights are rounded to f32 (relative 6e-8), which moves the loss by a
        // relative ~1e-7 at most; 1e-5 leaves room.
        assert!((recomputed - out[0].loss).abs() < 1e-5 * out[0].loss.max(1e-3), "{recomputed} vs {}", out[0].loss);
    }

    #[test]
    fn two_four_keeps_two_of_every_four() {
        let data = vec![layer(3, 8, 30, 7)];
        let out = prune_layers(&problems(&data), &Target::NOfM { n: 2, m: 4 }, &Silent).unwrap();
        for group in out[0].keep.chunks(4) {
            assert_eq!(group.iter().filter(|&&k| k).count(), 2);
        }
    }

    #[test]
    fn cancellation_stops_with_an_error() {
        struct Stop;
        impl Monitor for Stop {
            fn progress(&self, _: usize, _: usize) {}
            fn cancelled(&self) -> bool {
                true
            }
        }
        let data = vec![layer(4, 5, 30, 8)];
        let err = prune_layers(&problems(&data), &Target::Global { total: 3 }, &Stop).unwrap_err();
        assert_eq!(err, "cancelled");
    }
}

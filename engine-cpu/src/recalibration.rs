//! Re-estimating the running statistics of every batch normalisation from training images,
//! with the burn engine's semantics (`burn/recalibration.rs`): each batch norm's statistics
//! are the exact mean and unbiased variance of its input over all samples, as train-mode
//! passes of up to [`RECALIBRATION_BATCH`] samples produce it, pooled over the passes in f64
//! (Chan, Golub & LeVeque's update).
//!
//! A train-mode pass couples the images of a batch: a batch norm normalises with the
//! statistics of all of them, so no chunk can pass it before every chunk has reached it.
//! This engine instead runs, per batch and per batch norm in layer order, eval-mode passes
//! up to that batch norm's input, chunk by chunk: the earlier batch norms hold the batch's
//! own statistics (its mean and biased variance, which is what train mode normalises with),
//! so eval mode computes exactly what train mode would, and memory stays that of one chunk.
//! It costs a partial forward pass per batch norm (about half a forward pass each), which a
//! recalibration on a few hundred images affords.

use super::parallel;
use super::pass::{self, Workspace};
use super::plan::{Op, Plan};
use hyperprune_core::dataset::Samples;
use hyperprune_core::engine::EngineError;
use hyperprune_core::model::Model;

/// The most samples in one train-mode pass, as in the burn engine: up to this many samples
/// are one batch, and the statistics are exactly those of one full-batch pass.
const RECALIBRATION_BATCH: usize = 1024;

/// Most images per eval-mode pass.
const MAX_CHUNK: usize = 64;

/// `model` with its batch norms' running statistics re-estimated from `samples`.
///
/// # Errors
/// As [`hyperprune_core::engine::Engine::recalibrate_batchnorm`]: a shape mismatch, or a batch norm
/// that would see fewer than two values per channel.
pub(crate) fn recalibrate_batchnorm(threads: usize, model: &Model, samples: &Samples) -> Result<Model, EngineError> {
    recalibrate_in_batches(threads, model, samples, RECALIBRATION_BATCH)
}

/// [`recalibrate_batchnorm`] in batches of at most `most` samples (at least 4, so that no
/// batch of a split set holds a single sample).
pub(super) fn recalibrate_in_batches(
    threads: usize,
    model: &Model,
    samples: &Samples,
    most: usize,
) -> Result<Model, EngineError> {
    debug_assert!(most >= 4, "batches of {most} samples could leave one sample alone");
    let plan = Plan::new(model.spec())?;
    plan.check_samples(samples)?;
    if plan.batch_norms.is_empty() {
        return Ok(model.clone());
    }
    check_values_per_channel(&plan, samples.len())?;
    let mut params = plan.flatten(model.values());
    let mut pooled: Vec<Moments> = plan.batch_norms.iter().map(|&l| Moments::new(plan.layers[l].input.0)).collect();
    let mut workspaces: Vec<Workspace> = (0..threads.max(1)).map(|_| Workspace::default()).collect();
    for batch in balanced_chunks(samples.len(), most) {
        for (k, &l) in plan.batch_norms.iter().enumerate() {
            let moments = input_moments(&plan, &params, samples, batch.clone(), l, &mut workspaces);
            // Later batch norms of this batch see this one normalise with the batch's mean and
            // biased variance, as in a train-mode pass.
            let Op::BatchNorm(g) = &plan.layers[l].op else { unreachable!("a batch norm layer") };
            for c in 0..g.c {
                params[g.mean + c] = moments.mean[c] as f32;
                params[g.var + c] = (moments.m2[c] / moments.count) as f32;
            }
            pooled[k].add(&moments);
        }
    }
    let mut values = model.values().to_vec();
    for (&l, moments) in plan.batch_norms.iter().zip(pooled) {
        let Op::BatchNorm(g) = &plan.layers[l].op else { unreachable!("a batch norm layer") };
        let tensor = plan.offsets.iter().position(|&o| o == g.mean).expect("the running mean is a tensor");
        values[tensor] = moments.mean.iter().map(|&m| m as f32).collect();
        values[tensor + 1] = moments.m2.iter().map(|&s| (s / (moments.count - 1.0)) as f32).collect();
    }
    Model::new(plan.spec, values).map_err(|e| EngineError::Mismatch(e.to_string()))
}

/// Refuses samples that give a batch norm fewer than two values per channel (no unbiased
/// variance), with the burn engine's message.
fn check_values_per_channel(plan: &Plan, n: usize) -> Result<(), EngineError> {
    let graph = plan.spec.graph().map_err(|e| EngineError::Mismatch(e.to_string()))?;
    for &l in &plan.batch_norms {
        let hyperprune_core::arch::FeatureShape::Map { h, w, .. } = graph.nodes[l].input else {
            unreachable!("a batch norm reads a map")
        };
        if n * h * w < 2 {
            let name = &graph.nodes[l].name;
            return Err(EngineError::Mismatch(format!(
                "recalibrating batch norm '{name}' (layer {l}) of '{}' needs at least two values per channel, \
                 {n} sample(s) of {h}×{w} give {}; recalibrate on more samples",
                plan.spec.name,
                n * h * w
            )));
        }
    }
    Ok(())
}

/// The per-channel moments of the input of batch norm `l` over `samples[batch]`, from
/// eval-mode passes of at most [`MAX_CHUNK`] images, pooled in chunk order.
fn input_moments(
    plan: &Plan,
    params: &[f32],
    samples: &Samples,
    batch: std::ops::Range<usize>,
    l: usize,
    workspaces: &mut [Workspace],
) -> Moments {
    let (c, s) = plan.layers[l].input;
    let chunk = pass::chunk_images(plan, MAX_CHUNK);
    let mut partials: Vec<Moments> = vec![Moments::new(c); batch.len().div_ceil(chunk)];
    parallel::for_each(&mut partials, workspaces, |i, out, ws| {
        let range = batch.start + i * chunk..(batch.start + (i + 1) * chunk).min(batch.end);
        let m = range.len() * s;
        pass::forward(plan, params, range.map(|j| samples.image(j)), l, false, None, ws);
        let x = ws.input_of(plan, l);
        // Each channel's values are one contiguous run of the `[c, n, s]` layout.
        for (ch, values) in x.chunks_exact(m).enumerate() {
            let mean = values.iter().map(|&v| v as f64).sum::<f64>() / m as f64;
            out.mean[ch] = mean;
            out.m2[ch] = values.iter().map(|&v| (v as f64 - mean).powi(2)).sum();
        }
        out.count = m as f64;
    });
    let mut total = Moments::new(c);
    for p in &partials {
        total.add(p);
    }
    total
}

/// `0..n` cut into `⌈n / most⌉` consecutive ranges whose lengths differ by at most one (the
/// burn engine's batches).
fn balanced_chunks(n: usize, most: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let k = n.div_ceil(most).max(1);
    (0..k).map(move |i| i * n / k..(i + 1) * n / k)
}

/// Per-channel count, mean and sum of squared deviations of a set of values.
#[derive(Debug, Clone)]
struct Moments {
    count: f64,
    mean: Vec<f64>,
    /// `Σ (x − mean)²`.
    m2: Vec<f64>,
}

impl Moments {
    fn new(channels: usize) -> Self {
        Moments { count: 0.0, mean: vec![0.0; channels], m2: vec![0.0; channels] }
    }

    /// Pools `other` in (Chan et al.: the squared difference of the means, weighted, joins
    /// the sums of squares).
    fn add(&mut self, other: &Moments) {
        let (na, nb) = (self.count, other.count);
        let n = na + nb;
        if nb == 0.0 {
            return;
        }
        for c in 0..self.mean.len() {
            let delta = other.mean[c] - self.mean[c];
            self.mean[c] += delta * nb / n;
            self.m2[c] += other.m2[c] + delta * delta * na * nb / n;
        }
        self.count = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::random_model;
    use crate::synthetic::random_samples;

    /// Splitting the samples into batches changes only what the earlier batch norms
    /// normalise with: the first batch norm's statistics are those of all its inputs,
    /// whatever the batches, and the thread count changes nothing.
    #[test]
    fn the_first_batch_norm_does_not_depend_on_the_batches_nor_any_result_on_threads() {
        let spec = hyperprune_core::preset("resnet:depth=8,width=4,input=1x8x8").unwrap();
        let model = random_model(&spec, 3);
        let samples = random_samples(spec.input, 23, spec.classes, 4);
        let one = recalibrate_in_batches(2, &model, &samples, 1024).unwrap();
        let split = recalibrate_in_batches(2, &model, &samples, 8).unwrap();
        assert_eq!(recalibrate_in_batches(1, &model, &samples, 8).unwrap(), split);
        assert_eq!(recalibrate_in_batches(3, &model, &samples, 8).unwrap(), split);
        let (a, b) = (one.tensor("bn1.running_var").unwrap(), split.tensor("bn1.running_var").unwrap());
        // Pooled in f64 from f32 inputs: equal to ~1e-7 relative.
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "{a:?} vs {b:?}");
        }
        // Deeper batch norms see other normalisations per batch: other statistics.
        assert_ne!(one.tensor("layer3.0.bn2.running_var").unwrap(), split.tensor("layer3.0.bn2.running_var").unwrap());
    }

    #[test]
    fn moments_pool_to_those_of_all_values() {
        let values: Vec<f64> = (0..30).map(|i| ((i * 37) % 11) as f64 * 0.5 - 2.0).collect();
        let of = |v: &[f64]| {
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            Moments { count: v.len() as f64, mean: vec![mean], m2: vec![v.iter().map(|x| (x - mean).powi(2)).sum()] }
        };
        let mut pooled = Moments::new(1);
        for part in [&values[..7], &values[7..8], &values[8..]] {
            pooled.add(&of(part));
        }
        let all = of(&values);
        assert!((pooled.mean[0] - all.mean[0]).abs() < 1e-12 && (pooled.m2[0] - all.m2[0]).abs() < 1e-10);
        assert_eq!(balanced_chunks(15, 4).map(|r| r.len()).collect::<Vec<_>>(), vec![3, 4, 4, 4]);
    }
}

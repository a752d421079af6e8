//! Timed runs of the CPU engine, the entry points of `hyperprune bench-engine`.
//!
//! Each function builds what it needs from a spec (members initialised from seeds 0, 1, …),
//! runs one engine call and reports the work done and the wall-clock time it took.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::CpuEngine;
use crate::arch::ArchSpec;
use crate::dataset::Samples;
use crate::engine::{Engine, EngineError, Init, Optimizer, TrainConfig, TrainJob, init_model};
use crate::model::Model;

/// Work done in a timed run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Units of work: member-images for training, images for inference, gradient rows for
    /// per-sample gradients.
    pub work: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl Throughput {
    /// Units of work per second.
    pub fn per_second(&self) -> f64 {
        self.work as f64 / self.seconds
    }
}

/// `n` images of `shape` with pixels uniform in `[-1, 1)` and labels uniform in
/// `0..classes`, deterministic in `seed`: enough to time a network without a dataset.
pub fn random_samples(shape: [usize; 3], n: usize, classes: usize, seed: u64) -> Samples {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let images = (0..n * shape.iter().product::<usize>()).map(|_| rng.random_range(-1.0..1.0)).collect();
    let labels = (0..n).map(|_| rng.random_range(0..classes as u32)).collect();
    Samples { shape, images, labels }
}

/// `count` members of `spec`, Kaiming-uniform initialised from seeds `0..count`.
///
/// # Errors
/// [`EngineError::Mismatch`] when the spec is invalid.
pub fn members(spec: &ArchSpec, count: usize) -> Result<Vec<Model>, EngineError> {
    (0..count as u64)
        .map(|seed| init_model(spec, Init::KaimingUniform, seed).map_err(|e| EngineError::Mismatch(e.to_string())))
        .collect()
}

/// Trains `members` members of `spec` for one epoch of `samples` (Adam, lr 1e-3) in one
/// [`Engine::train`] call on `threads` threads, and times it. With `shared_seed` every
/// member gets seed 0 and so the same batches (the fast path); otherwise member `i` gets
/// seed `i` and its own shuffle.
///
/// # Errors
/// As [`Engine::train`].
pub fn train_throughput(
    spec: &ArchSpec,
    members: usize,
    batch_size: usize,
    threads: usize,
    samples: &Samples,
    shared_seed: bool,
) -> Result<Throughput, EngineError> {
    let jobs: Vec<TrainJob> = self::members(spec, members)?
        .into_iter()
        .enumerate()
        .map(|(i, model)| TrainJob {
            model,
            config: TrainConfig {
                epochs: 1,
                batch_size,
                lr: 1e-3,
                weight_decay: 0.0,
                optimizer: Optimizer::Adam,
                seed: if shared_seed { 0 } else { i as u64 },
            },
        })
        .collect();
    let engine = CpuEngine::with_threads(threads);
    let start = Instant::now();
    engine.train(jobs, samples, &mut |_| {})?;
    Ok(Throughput { work: members * samples.len(), seconds: start.elapsed().as_secs_f64() })
}

/// Evaluates `models` members of `spec` on `samples` in one [`Engine::evaluate`] call and
/// times it; the work is model-images.
///
/// # Errors
/// As [`Engine::evaluate`].
pub fn inference_throughput(
    spec: &ArchSpec,
    models: usize,
    threads: usize,
    samples: &Samples,
) -> Result<Throughput, EngineError> {
    let models = members(spec, models)?;
    let refs: Vec<&Model> = models.iter().collect();
    let engine = CpuEngine::with_threads(threads);
    let start = Instant::now();
    engine.evaluate(&refs, samples)?;
    Ok(Throughput { work: models.len() * samples.len(), seconds: start.elapsed().as_secs_f64() })
}

/// Computes the per-sample gradients (`minibatch` samples per row) of one member of `spec`
/// on `samples` and times it; the work is gradient rows.
///
/// # Errors
/// As [`Engine::per_sample_gradients`].
pub fn per_sample_gradient_throughput(
    spec: &ArchSpec,
    threads: usize,
    samples: &Samples,
    minibatch: usize,
) -> Result<Throughput, EngineError> {
    let model = members(spec, 1)?.remove(0);
    let engine = CpuEngine::with_threads(threads);
    let start = Instant::now();
    let g = engine.per_sample_gradients(&model, samples, minibatch)?;
    Ok(Throughput { work: g.rows, seconds: start.elapsed().as_secs_f64() })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers of the engine's report; run with
    /// `cargo test --release -p hyperprune-core engine::cpu::bench -- --ignored --nocapture`.
    #[test]
    #[ignore = "a benchmark: minutes of CPU"]
    fn measure_throughput() {
        let threads = std::env::var("BENCH_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
        let images: usize = std::env::var("BENCH_IMAGES").ok().and_then(|t| t.parse().ok()).unwrap_or(4096);
        let cnn_s = crate::preset("cnn-s").unwrap();
        let data = random_samples([1, 28, 28], images, 10, 1);
        for batch in [64, 256] {
            for members in [1, 8, 64] {
                let data = data.head(if members == 64 { images / 4 } else { images });
                for shared in [true, false] {
                    if members == 1 && !shared {
                        continue;
                    }
                    let t = train_throughput(&cnn_s, members, batch, threads, &data, shared).unwrap();
                    println!(
                        "train cnn-s members {members:2} batch {batch:3} threads {threads} seeds {}: {:8.0} member-img/s ({:.2} s)",
                        if shared { "shared  " } else { "distinct" },
                        t.per_second(),
                        t.seconds
                    );
                }
            }
        }
        for name in ["lenet5", "mlpnet"] {
            let spec = crate::preset(name).unwrap();
            let t = train_throughput(&spec, 1, 64, threads, &data, true).unwrap();
            println!("train {name} members 1 batch 64 threads {threads}: {:8.0} img/s", t.per_second());
        }
        for name in ["cnn-s", "lenet5", "mlpnet"] {
            let spec = crate::preset(name).unwrap();
            for models in [1, 8] {
                let t = inference_throughput(&spec, models, threads, &data).unwrap();
                println!("inference {name} models {models} threads {threads}: {:8.0} model-img/s", t.per_second());
            }
        }
        for name in ["cnn-s", "mlpnet"] {
            let spec = crate::preset(name).unwrap();
            let t = per_sample_gradient_throughput(&spec, threads, &data.head(1000), 1).unwrap();
            println!("per-sample gradients {name} 1000 rows threads {threads}: {:.3} s", t.seconds);
        }
    }

    fn env(name: &str, default: usize) -> usize {
        std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
    }

    /// One training run set by the environment (BENCH_SPEC, BENCH_MEMBERS, BENCH_BATCH,
    /// BENCH_THREADS, BENCH_IMAGES, BENCH_DISTINCT_SEEDS), for profiling and quick checks.
    #[test]
    #[ignore = "a benchmark"]
    fn one_training_run() {
        let spec = crate::preset(&std::env::var("BENCH_SPEC").unwrap_or_else(|_| "cnn-s".into())).unwrap();
        let data = random_samples(spec.input, env("BENCH_IMAGES", 2048), spec.classes, 1);
        let (members, batch, threads) = (env("BENCH_MEMBERS", 8), env("BENCH_BATCH", 64), env("BENCH_THREADS", 2));
        let shared = std::env::var("BENCH_DISTINCT_SEEDS").is_err();
        let t = train_throughput(&spec, members, batch, threads, &data, shared).unwrap();
        println!(
            "train {} members {members} batch {batch} threads {threads} seeds {}: {:.0} member-img/s ({:.2} s)",
            spec.name,
            if shared { "shared" } else { "distinct" },
            t.per_second(),
            t.seconds
        );
    }

    /// The goal: a 64-member cnn-s zoo, one epoch of Fashion-MNIST, in under 3
    /// minutes on 2 cores. Run with
    /// `cargo test --release -p hyperprune-core fashion_zoo -- --ignored --nocapture`.
    #[test]
    #[ignore = "needs Fashion-MNIST (apt-get install -y dataset-fashion-mnist) and ~2 minutes"]
    fn fashion_zoo_of_64_in_one_epoch() {
        let data = crate::dataset::load("fashion-mnist", &Default::default()).unwrap();
        let spec = crate::preset("cnn-s").unwrap();
        let threads = std::env::var("BENCH_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
        let shared = std::env::var("BENCH_DISTINCT_SEEDS").is_err();
        let jobs: Vec<TrainJob> = (0..64u64)
            .map(|i| TrainJob {
                model: init_model(&spec, Init::Uniform, i).unwrap(),
                config: TrainConfig {
                    epochs: 1,
                    batch_size: 64,
                    lr: 1e-3,
                    weight_decay: 0.0,
                    optimizer: Optimizer::Adam,
                    seed: if shared { 0 } else { i },
                },
            })
            .collect();
        let engine = CpuEngine::with_threads(threads);
        let start = Instant::now();
        let trained = engine.train(jobs, &data.train, &mut |_| {}).unwrap();
        let seconds = start.elapsed().as_secs_f64();
        let refs: Vec<&Model> = trained.iter().collect();
        let start = Instant::now();
        let evals = engine.evaluate(&refs, &data.test).unwrap();
        let eval_seconds = start.elapsed().as_secs_f64();
        let mut acc: Vec<f64> = evals.iter().map(|e| e.accuracy).collect();
        acc.sort_by(f64::total_cmp);
        println!(
            "64 x cnn-s, 1 epoch of {} images, threads {threads}, seeds {}: {seconds:.1} s ({:.0} member-img/s); \
             evaluation of 64 x {} test images {eval_seconds:.1} s; test accuracy min {:.3} median {:.3} max {:.3}",
            data.train.len(),
            if shared { "shared" } else { "distinct" },
            64.0 * data.train.len() as f64 / seconds,
            data.test.len(),
            acc[0],
            acc[32],
            acc[63]
        );
    }
}

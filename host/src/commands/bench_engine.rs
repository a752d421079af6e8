//! `hyperprune bench-engine throughput|agree`: engine speed, and agreement of an engine or
//! device with the CPU engine. Timings are for `docs/BENCHMARKS.md`, never for tests.

use std::time::{Duration, Instant};

use hyperprune_core::ArchSpec;
use hyperprune_core::dataset::Samples;
use hyperprune_core::engine::{Engine, Init, Optimizer, TrainConfig, TrainEvent, TrainJob, init_model};
use hyperprune_core::zoo::{Split, Zoo, available_memory, chunk_memory};
use hyperprune_engine_cpu::CpuEngine;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cli::{AgreeArgs, BenchEngineCommand, DataArgs, ThroughputArgs};
use crate::engines::EngineKind;
use crate::failure::bad_input;

/// Runs `bench-engine`.
///
/// # Errors
/// Bad input, engine failures, or (for `agree`) a difference above the tolerance.
pub fn run(cmd: BenchEngineCommand) -> anyhow::Result<()> {
    match cmd {
        BenchEngineCommand::Throughput(args) => throughput(&args),
        BenchEngineCommand::Agree(args) => agree(&args),
    }
}

fn random_samples(shape: [usize; 3], n: usize, classes: usize, seed: u64) -> Samples {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let images = (0..n * shape.iter().product::<usize>()).map(|_| rng.random_range(0.0..1.0)).collect();
    Samples { shape, images, labels: (0..n).map(|_| rng.random_range(0..classes as u32)).collect() }
}

fn throughput(args: &ThroughputArgs) -> anyhow::Result<()> {
    println!("machine: {}", crate::machine::describe());
    println!(
        "{:<10} {:<10} {:>7} {:>7} {:>6} {:>14} {:>14} {:>12} {:>12} {:>14}",
        "ARCH",
        "ENGINE",
        "THREADS",
        "MEMBERS",
        "BATCH",
        "TRAIN img/s",
        "STEADY img/s",
        "INFER img/s",
        "EVAL 10k s",
        "1k GRADS s"
    );
    for arch_name in &args.arch {
        let spec = crate::inputs::arch(arch_name)?;
        check_memory(&spec, args)?;
        let (train, test) = if args.dataset == "random" {
            (
                random_samples(spec.input, args.images, spec.classes, 1),
                random_samples(spec.input, 10_000, spec.classes, 2),
            )
        } else {
            let data =
                crate::inputs::dataset(&DataArgs { dataset: args.dataset.clone(), data_dir: args.data_dir.clone() })?;
            (data.train.head(args.images), data.test.head(10_000))
        };
        let threads: Vec<usize> = if args.exec.engine == EngineKind::Cpu && args.exec.device == "cpu" {
            args.threads.clone()
        } else {
            vec![0]
        };
        for &t in &threads {
            let engine: Box<dyn Engine> = if t > 0 {
                Box::new(CpuEngine::with_threads(t))
            } else {
                crate::engines::engine(args.exec.engine, &args.exec.device)?
            };
            for &members in &args.members {
                for &batch in &args.batch {
                    let jobs: Vec<TrainJob> = (0..members as u64)
                        .map(|seed| {
                            let model = init_model(&spec, Init::KaimingUniform, seed).map_err(bad_input)?;
                            let config = TrainConfig {
                                epochs: 1,
                                batch_size: batch,
                                lr: 1e-3,
                                weight_decay: 0.0,
                                optimizer: Optimizer::Adam,
                                seed: 0,
                            };
                            Ok(TrainJob { model, config })
                        })
                        .collect::<anyhow::Result<_>>()?;
                    let start = Instant::now();
                    // When the first step ended: the steady rate leaves it out.
                    let mut first_step = None;
                    let trained = engine.train(jobs, &train, &mut |event| {
                        if let TrainEvent::Step { done: 1, .. } = event {
                            first_step.get_or_insert_with(|| start.elapsed());
                        }
                    })?;
                    let elapsed = start.elapsed();
                    let train_rate = (members * train.len()) as f64 / elapsed.as_secs_f64();
                    let steady = steady_rate(members, train.len(), batch, first_step, elapsed);
                    let model = &trained[0];
                    let start = Instant::now();
                    engine.evaluate(&[model], &test)?;
                    let eval_s = start.elapsed().as_secs_f64();
                    let infer_rate = test.len() as f64 / eval_s;
                    let grads = train.head(args.gradients);
                    let start = Instant::now();
                    engine.per_sample_gradients(model, &grads, 1)?;
                    let grads_s = start.elapsed().as_secs_f64() * 1000.0 / grads.len().max(1) as f64;
                    println!(
                        "{:<10} {:<10} {:>7} {:>7} {:>6} {:>14.0} {:>14} {:>12.0} {:>12.3} {:>14.3}",
                        spec.name,
                        engine.name(),
                        if t == 0 { "-".to_string() } else { t.to_string() },
                        members,
                        batch,
                        train_rate,
                        steady.map_or("-".to_string(), |r| format!("{r:.0}")),
                        infer_rate,
                        eval_s * 10_000.0 / test.len() as f64,
                        grads_s
                    );
                }
            }
        }
    }
    Ok(())
}

/// Member-images/s of the steps after the first (which ended `first_step` into a call that
/// took `elapsed` to train `members` members one epoch of `images` in batches of `batch`);
/// `None` for a single step or when no step was reported.
fn steady_rate(
    members: usize,
    images: usize,
    batch: usize,
    first_step: Option<Duration>,
    elapsed: Duration,
) -> Option<f64> {
    let rest = images.saturating_sub(batch);
    let seconds = elapsed.checked_sub(first_step?)?.as_secs_f64();
    (rest > 0 && seconds > 0.0).then(|| (members * rest) as f64 / seconds)
}

/// Refuses a run of `spec` whose largest setting would not fit in the memory available:
/// training the most members at the largest batch ([`chunk_memory`]), the training and test
/// images, and the per-sample gradients (one row of parameters each), 4 bytes a scalar.
///
/// # Errors
/// Bad input naming the architecture, the estimate and the memory available.
fn check_memory(spec: &ArchSpec, args: &ThroughputArgs) -> anyhow::Result<()> {
    let Some(available) = available_memory() else { return Ok(()) };
    let members = args.members.iter().copied().max().unwrap_or(1);
    let batch = args.batch.iter().copied().max().unwrap_or(1);
    let training = chunk_memory(spec, members, batch).map_err(bad_input)?;
    let input = spec.input.iter().fold(1u64, |n, d| n.saturating_mul(*d as u64));
    let images = (args.images as u64).saturating_add(10_000).saturating_mul(input).saturating_mul(4);
    let params = spec.param_count().map_err(bad_input)? as u64;
    let gradients = (args.gradients.min(args.images) as u64).saturating_mul(params).saturating_mul(4);
    let needed = training.saturating_add(images).saturating_add(gradients);
    if needed > available {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        return Err(bad_input(format!(
            "architecture '{}' at {members} members, batch {batch}, {} images and {} per-sample gradients needs \
             about {:.1} GiB, but {:.1} GiB is available; lower --members, --batch, --images or --gradients, or use \
             a smaller architecture",
            spec.name,
            args.images,
            args.gradients,
            gib(needed),
            gib(available)
        )));
    }
    Ok(())
}

/// Largest absolute difference relative to the largest magnitude of the reference.
fn relative_difference(reference: &[f32], other: &[f32]) -> f64 {
    let scale = reference.iter().fold(0f64, |m, x| m.max(x.abs() as f64)).max(f64::MIN_POSITIVE);
    let diff = reference.iter().zip(other).fold(0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs()));
    diff / scale
}

fn agree(args: &AgreeArgs) -> anyhow::Result<()> {
    let zoo = Zoo::open(&args.zoo).map_err(bad_input)?;
    let data =
        crate::inputs::dataset(&DataArgs { dataset: zoo.meta().dataset.clone(), data_dir: args.data_dir.clone() })?;
    crate::inputs::check_zoo_fits(&zoo, &data)?;
    let samples = data.test.head(args.samples);
    let reference = CpuEngine::new();
    let other = crate::engines::engine(args.exec.engine, &args.exec.device)?;
    let mut worst = 0f64;
    println!(
        "{:<8} {:>16} {:>22}   ({} vs {} on {} samples)",
        "MEMBER",
        "LOGITS rel.diff",
        "PER-SAMPLE GRAD rel.diff",
        other.name(),
        reference.name(),
        samples.len()
    );
    for member in zoo.members(Split::All).into_iter().take(args.members) {
        let model = zoo.load(member).map_err(bad_input)?;
        let a = reference.logits(&model, &samples)?;
        let b = other.logits(&model, &samples)?;
        let ga = reference.per_sample_gradients(&model, &samples, 1)?;
        let gb = other.per_sample_gradients(&model, &samples, 1)?;
        let (dl, dg) = (relative_difference(&a, &b), relative_difference(&ga.data, &gb.data));
        worst = worst.max(dl).max(dg);
        println!("{:<8} {:>16.2e} {:>22.2e}", member.id, dl, dg);
    }
    if worst > args.tolerance {
        anyhow::bail!("largest relative difference {worst:.2e} exceeds the tolerance {:.0e}", args.tolerance);
    }
    println!("agreement within {:.0e} (largest {worst:.2e})", args.tolerance);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steady_rate_leaves_out_the_first_step() {
        let s = Duration::from_secs_f64;
        // 2 members, 1,024 images in batches of 128: the 7 later steps (896 images each
        // member) took 3 of the 4 seconds.
        let rate = steady_rate(2, 1024, 128, Some(s(1.0)), s(4.0)).unwrap();
        assert!((rate - 2.0 * 896.0 / 3.0).abs() < 1e-9, "{rate}");
        // One step, no step reported, or a clock that did not move: no rate.
        assert_eq!(steady_rate(1, 128, 128, Some(s(1.0)), s(1.0)), None);
        assert_eq!(steady_rate(1, 1024, 128, None, s(4.0)), None);
        assert_eq!(steady_rate(1, 1024, 128, Some(s(4.0)), s(4.0)), None);
    }
}

//! Training one zoo member: seeded shuffling, mini-batches, autodiff, the optimiser step,
//! and a divergence check after every epoch.

use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::batch::{images_at, one_hot};
use super::network::{Op, Plan, Training, cross_entropy_sum, download, upload};
use super::optimizer::OptimizerState;
use hyperprune_core::dataset::Samples;
use hyperprune_core::engine::{EngineError, TrainEvent, TrainJob};
use hyperprune_core::model::Model;

/// The ChaCha stream that shuffles the samples (dropout uses stream 1).
const SHUFFLE_STREAM: u64 = 0;

/// Trains job number `index` (for events and messages) on `samples`.
///
/// Every epoch visits the samples in a fresh order drawn from the job's seed; the last
/// mini-batch of an epoch may be shorter. The reported epoch loss is the mean over samples
/// of the training loss (train mode: dropout active, batch norm on batch statistics). The
/// optimiser updates every tensor but the batch norm buffers, which take the running
/// statistics of each step's forward pass.
///
/// # Errors
/// [`EngineError::Mismatch`] for a zero batch size or a mini-batch that leaves a batch norm
/// layer one value per channel, [`EngineError::Diverged`] when a weight or the epoch loss is
/// not finite.
pub(super) fn train_job<B: AutodiffBackend>(
    index: usize,
    job: &TrainJob,
    samples: &Samples,
    device: &B::Device,
    observer: &mut dyn FnMut(TrainEvent),
) -> Result<Model, EngineError> {
    let config = &job.config;
    if config.batch_size == 0 {
        return Err(EngineError::Mismatch(format!("job {index}: batch size must be positive")));
    }
    let plan = Plan::new(job.model.spec())?;
    let n = samples.len();
    check_batch_norm_batches(index, &plan, n, config.batch_size)?;
    let classes = plan.spec.classes;
    let mut params = upload::<B::InnerBackend>(job.model.values(), device);
    let trained: Vec<bool> = (0..params.len()).map(|i| plan.is_trained(i)).collect();
    let mut optimizer = OptimizerState::new(config.optimizer, config.lr, config.weight_decay, params.len());
    let mut shuffle = ChaCha8Rng::seed_from_u64(config.seed);
    shuffle.set_stream(SHUFFLE_STREAM);
    let mut training = Training::<B>::new(config.seed);

    let total = config.epochs * n.div_ceil(config.batch_size);
    let mut done = 0;
    let mut order: Vec<usize> = (0..n).collect();
    let mut values = job.model.values().to_vec();
    for epoch in 1..=config.epochs {
        order.shuffle(&mut shuffle);
        let mut loss_sum: Option<Tensor<B::InnerBackend, 1>> = None;
        for batch in order.chunks(config.batch_size) {
            let leaves: Vec<Tensor<B, 1>> = params
                .iter()
                .zip(&trained)
                .map(|(p, &trained)| {
                    let p = Tensor::from_inner(p.clone());
                    if trained { p.require_grad() } else { p }
                })
                .collect();
            let x = images_at::<B>(samples, batch, device);
            let targets = one_hot::<B>(batch.iter().map(|&i| samples.labels[i]), classes, device);
            let loss = cross_entropy_sum(plan.logits(&leaves, x, Some(&mut training)), targets);
            let grads = loss.clone().div_scalar(batch.len() as f64).backward();
            let grads = leaves
                .iter()
                .zip(&trained)
                .map(|(leaf, &trained)| {
                    trained.then(|| leaf.grad(&grads).unwrap_or_else(|| leaf.clone().inner().zeros_like()))
                })
                .collect();
            optimizer.step(&mut params, grads);
            for (i, value) in training.running.drain(..) {
                params[i] = value.inner();
            }
            let loss = loss.inner();
            loss_sum = Some(match loss_sum {
                Some(sum) => sum + loss,
                None => loss,
            });
            done += 1;
            observer(TrainEvent::Step { job: index, done, total });
        }
        let loss = loss_sum.map_or(0.0, |s| download(s)[0] as f64 / n as f64);
        values = check_finite(index, epoch, &plan, &params, loss)?;
        observer(TrainEvent::Epoch { job: index, epoch, loss });
    }
    Model::new(plan.spec, values).map_err(|e| EngineError::Mismatch(e.to_string()))
}

/// Refuses a batch size that would hand a batch norm layer a single value per channel
/// (a 1×1 map and a mini-batch of one sample), whose unbiased variance is undefined;
/// PyTorch refuses the same batch.
fn check_batch_norm_batches(index: usize, plan: &Plan, n: usize, batch_size: usize) -> Result<(), EngineError> {
    let smallest = if n.is_multiple_of(batch_size) { batch_size.min(n) } else { n % batch_size };
    if smallest != 1 {
        return Ok(());
    }
    let inputs = plan.spec.input_shapes().map_err(|e| EngineError::Mismatch(e.to_string()))?;
    let single = plan.ops.iter().zip(&inputs).position(|(op, shape)| {
        matches!(op, Op::BatchNorm { .. })
            && matches!(shape, hyperprune_core::arch::FeatureShape::Map { h: 1, w: 1, .. })
    });
    match single {
        None => Ok(()),
        Some(layer) => Err(EngineError::Mismatch(format!(
            "job {index}: a mini-batch of 1 sample gives batch norm layer {layer} of '{}' one value per channel; \
             choose a batch size that does not leave a single sample ({n} samples)",
            plan.spec.name
        ))),
    }
}

/// Reads the parameters back, failing on the first non-finite one.
fn check_finite<Bk: burn::tensor::backend::Backend>(
    index: usize,
    epoch: usize,
    plan: &Plan,
    params: &[Tensor<Bk, 1>],
    loss: f64,
) -> Result<Vec<Vec<f32>>, EngineError> {
    let values: Vec<Vec<f32>> = params.iter().map(|p| download(p.clone())).collect();
    if let Some((p, _)) = plan.params.iter().zip(&values).find(|(_, v)| v.iter().any(|x| !x.is_finite())) {
        return Err(EngineError::Diverged(format!(
            "job {index}, epoch {epoch}: tensor '{}' holds non-finite values; lower the learning rate",
            p.name
        )));
    }
    if !loss.is_finite() {
        return Err(EngineError::Diverged(format!(
            "job {index}, epoch {epoch}: the train loss is {loss}; lower the learning rate"
        )));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use crate::FlexEngine;
    use crate::network::tests::random_images;
    use hyperprune_core::arch::{ArchSpec, preset};
    use hyperprune_core::dataset::Samples;
    use hyperprune_core::engine::{
        Engine, EngineError, Init, Optimizer, TrainConfig, TrainEvent, TrainJob, init_model,
    };

    fn job(spec: &ArchSpec, optimizer: Optimizer, lr: f32, epochs: usize, seed: u64) -> TrainJob {
        TrainJob {
            model: init_model(spec, Init::Uniform, seed).unwrap(),
            config: TrainConfig { epochs, batch_size: 32, lr, weight_decay: 1e-4, optimizer, seed },
        }
    }

    fn digits() -> hyperprune_core::dataset::Dataset {
        hyperprune_core::dataset::load("digits", &Default::default()).expect("the embedded digits load")
    }

    #[test]
    fn cnn_digits_reaches_90_percent_test_accuracy_on_digits() {
        let data = digits();
        let engine = FlexEngine::new();
        let start = Instant::now();
        let mut epochs = Vec::new();
        let trained = engine
            .train(vec![job(&preset("cnn-digits").unwrap(), Optimizer::Adam, 3e-3, 8, 1)], &data.train, &mut |e| {
                if let TrainEvent::Epoch { loss, .. } = e {
                    epochs.push(loss);
                }
            })
            .unwrap();
        let eval = engine.evaluate(&[&trained[0]], &data.test).unwrap()[0];
        eprintln!("digits: {eval:?} after {:.1?}, epoch losses {epochs:?}", start.elapsed());
        assert!(eval.accuracy >= 0.9, "{eval:?}");
        assert!(epochs.last() < epochs.first(), "{epochs:?}");
    }

    /// `resnet-s` on 8×8 digits: its graph (projection shortcuts, batch norm, global
    /// pooling) trains, the running statistics follow the batches, and only training moves
    /// them.
    #[test]
    fn resnet_s_trains_moves_running_stats_and_evaluation_uses_them() {
        let mut spec = preset("resnet-s").unwrap();
        spec.input = [1, 8, 8];
        let data = digits();
        let train = data.train.head(256);
        let engine = FlexEngine::new();
        let start = Instant::now();
        let init = init_model(&spec, Init::KaimingNormal, 3).unwrap();
        let config = TrainConfig {
            epochs: 3,
            batch_size: 32,
            lr: 3e-3,
            weight_decay: 1e-4,
            optimizer: Optimizer::Adam,
            seed: 3,
        };
        let mut losses = Vec::new();
        let trained = engine
            .train(vec![TrainJob { model: init.clone(), config }], &train, &mut |e| {
                if let TrainEvent::Epoch { loss, .. } = e {
                    losses.push(loss);
                }
            })
            .unwrap()
            .remove(0);
        eprintln!("resnet-s 8x8: 3 epochs of 256 in {:.1?}, losses {losses:?}", start.elapsed());
        assert!(losses[2] < losses[0], "{losses:?}");
        let before = engine.evaluate(&[&init], &train).unwrap()[0];
        let after = engine.evaluate(&[&trained], &train).unwrap()[0];
        assert!(after.loss < before.loss, "{before:?} -> {after:?}");

        let mean = trained.tensor("layer1.0.bn1.running_mean").unwrap();
        let var = trained.tensor("layer1.0.bn1.running_var").unwrap();
        // 24 steps at momentum 0.1 leave 0.9^24 ≈ 8% of the start: the statistics are the
        // batches' now, and a conv of random weights has neither zero mean nor unit variance.
        assert!(mean.iter().any(|&m| m.abs() > 1e-3), "{mean:?}");
        assert!(var.iter().any(|&v| (v - 1.0).abs() > 1e-2), "{var:?}");

        // Eval mode normalises with the running statistics: a sample's logits do not depend
        // on the batch around it (with batch statistics, a batch of one would give other
        // logits). Same f32 ops on the same values: equal up to summation order, ~1e-6.
        let alone = engine.logits(&trained, &train.head(1)).unwrap();
        let batched = engine.logits(&trained, &train).unwrap();
        for (a, b) in alone.iter().zip(&batched) {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{alone:?} vs {:?}", &batched[..10]);
        }
        // Evaluation and the calibration services borrow the model; its buffers stay put.
        let copy = trained.clone();
        engine.evaluate(&[&trained], &train).unwrap();
        engine.per_sample_gradients(&trained, &train.head(4), 2).unwrap();
        assert_eq!(trained, copy);
    }

    /// With a zero learning rate and no weight decay, a step changes the batch norm
    /// buffers only: the optimiser skips them and they take the forward's running stats.
    #[test]
    fn buffers_follow_the_forward_and_the_optimiser_leaves_them_alone() {
        let mut spec = preset("resnet-s").unwrap();
        spec.input = [1, 8, 8];
        let train = digits().train.head(64);
        let init = init_model(&spec, Init::KaimingNormal, 4).unwrap();
        let config =
            TrainConfig { epochs: 1, batch_size: 64, lr: 0.0, weight_decay: 0.0, optimizer: Optimizer::Adam, seed: 4 };
        let trained =
            FlexEngine::new().train(vec![TrainJob { model: init.clone(), config }], &train, &mut |_| {}).unwrap();
        for (i, p) in init.params().iter().enumerate() {
            let (a, b) = (&init.values()[i], &trained[0].values()[i]);
            if p.role.is_buffer() {
                assert_ne!(a, b, "{} should take the batch statistics", p.name);
            } else {
                assert_eq!(a, b, "{} should not move at lr 0", p.name);
            }
        }
        // One step from mean 0: running_mean = 0.1 · batch mean of bn1's input, conv1 of the
        // images (no bias). Checked for channel 0 against a direct f64 computation.
        let w = init.tensor("conv1.weight").unwrap();
        let mut sum = 0f64;
        for s in 0..train.len() {
            let image = train.image(s);
            for y in 0..8isize {
                for x in 0..8isize {
                    for ky in 0..3isize {
                        for kx in 0..3isize {
                            let (iy, ix) = (y + ky - 1, x + kx - 1);
                            if (0..8).contains(&iy) && (0..8).contains(&ix) {
                                sum += w[(ky * 3 + kx) as usize] as f64 * image[(iy * 8 + ix) as usize] as f64;
                            }
                        }
                    }
                }
            }
        }
        let want = 0.1 * sum / (train.len() * 64) as f64;
        let got = trained[0].tensor("bn1.running_mean").unwrap()[0] as f64;
        // burn sums 4096 f32 conv outputs of O(1) (pixels in [0, 1], |w| < 1.5): rounding
        // ~1e-7 of the mean magnitude, so 1e-6 absolute plus 1e-5 relative; a wrong momentum
        // or a missing update is off by 10% or more.
        assert!((got - want).abs() <= 1e-6 + 1e-5 * want.abs(), "{got} vs {want}");
    }

    #[test]
    fn a_single_value_per_batch_norm_channel_is_refused_before_training() {
        // On 4×4 inputs the last stage runs batch norm on 1×1 maps; 65 samples in batches
        // of 32 leave a last mini-batch of one sample: one value per channel.
        let spec = preset("resnet:depth=8,width=2,input=1x4x4").unwrap();
        let samples = Samples { shape: [1, 4, 4], images: random_images(65, 16, 1), labels: vec![1; 65] };
        let err = FlexEngine::new()
            .train(vec![job(&spec, Optimizer::Adam, 1e-3, 1, 1)], &samples, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("job 0") && err.contains("one value per channel"), "{err}");
        let fine = Samples { images: random_images(66, 16, 1), labels: vec![1; 66], ..samples };
        FlexEngine::new().train(vec![job(&spec, Optimizer::Adam, 1e-3, 1, 1)], &fine, &mut |_| {}).unwrap();
    }

    #[test]
    fn identical_jobs_give_bit_identical_models() {
        let data = digits();
        let train = data.train.head(400);
        let spec = preset("cnn-digits").unwrap().with_dropout(0.3);
        let jobs = || {
            vec![
                job(&spec, Optimizer::Adam, 3e-3, 2, 7),
                job(&spec, Optimizer::Sgd { momentum: 0.9 }, 3e-2, 2, 8),
                job(&spec, Optimizer::Adam, 3e-3, 2, 9),
            ]
        };
        let engine = FlexEngine::new();
        let first = engine.train(jobs(), &train, &mut |_| {}).unwrap();
        let second = engine.train(jobs(), &train, &mut |_| {}).unwrap();
        assert_eq!(first, second);
        // Same initial weights, other shuffling and dropout seed: another model.
        let mut reseeded = jobs().remove(0);
        reseeded.config.seed = 70;
        assert_ne!(engine.train(vec![reseeded], &train, &mut |_| {}).unwrap()[0], first[0]);
    }

    #[test]
    fn events_count_steps_and_epochs_and_divergence_is_reported() {
        let spec = preset("cnn-digits").unwrap();
        let samples = Samples { shape: [1, 8, 8], images: random_images(70, 64, 3), labels: vec![3; 70] };
        let mut events = Vec::new();
        FlexEngine::new()
            .train(vec![job(&spec, Optimizer::Sgd { momentum: 0.0 }, 0.01, 2, 1)], &samples, &mut |e| events.push(e))
            .unwrap();
        // 70 samples in batches of 32: 3 steps per epoch, the last one of 6 samples.
        let steps = events.iter().filter(|e| matches!(e, TrainEvent::Step { total: 6, .. })).count();
        let epochs: Vec<usize> = events
            .iter()
            .filter_map(|e| if let TrainEvent::Epoch { epoch, .. } = e { Some(*epoch) } else { None })
            .collect();
        assert_eq!((steps, epochs), (6, vec![1, 2]));
        assert!(matches!(events[3], TrainEvent::Epoch { job: 0, epoch: 1, loss } if loss.is_finite() && loss > 0.0));
        let err = FlexEngine::new()
            .train(vec![job(&spec, Optimizer::Sgd { momentum: 0.0 }, 1e38, 1, 1)], &samples, &mut |_| {})
            .unwrap_err();
        assert!(matches!(&err, EngineError::Diverged(m) if m.contains("job 0, epoch 1")), "{err}");
    }
}

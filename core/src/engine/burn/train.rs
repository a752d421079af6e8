//! Training one zoo member: seeded shuffling, mini-batches, autodiff, the optimiser step,
//! and a divergence check after every epoch.

use ::burn::tensor::Tensor;
use ::burn::tensor::backend::AutodiffBackend;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::batch::{images_at, one_hot};
use super::dropout::DropoutMasks;
use super::network::{Plan, cross_entropy_sum, download, upload};
use super::optimizer::OptimizerState;
use crate::dataset::Samples;
use crate::engine::{EngineError, TrainEvent, TrainJob};
use crate::model::Model;

/// The ChaCha stream that shuffles the samples (dropout uses stream 1).
const SHUFFLE_STREAM: u64 = 0;

/// Trains job number `index` (for events and messages) on `samples`.
///
/// Every epoch visits the samples in a fresh order drawn from the job's seed; the last
/// mini-batch of an epoch may be shorter. The reported epoch loss is the mean over samples
/// of the training loss (dropout active).
///
/// # Errors
/// [`EngineError::Mismatch`] for a zero batch size, [`EngineError::Diverged`] when a weight
/// or the epoch loss is not finite.
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
    let classes = plan.spec.classes;
    let mut params = upload::<B::InnerBackend>(job.model.values(), device);
    let mut optimizer = OptimizerState::new(config.optimizer, config.lr, config.weight_decay, params.len());
    let mut shuffle = ChaCha8Rng::seed_from_u64(config.seed);
    shuffle.set_stream(SHUFFLE_STREAM);
    let mut dropout = DropoutMasks::new(config.seed);

    let n = samples.len();
    let total = config.epochs * n.div_ceil(config.batch_size);
    let mut done = 0;
    let mut order: Vec<usize> = (0..n).collect();
    let mut values = job.model.values().to_vec();
    for epoch in 1..=config.epochs {
        order.shuffle(&mut shuffle);
        let mut loss_sum: Option<Tensor<B::InnerBackend, 1>> = None;
        for batch in order.chunks(config.batch_size) {
            let leaves: Vec<Tensor<B, 1>> =
                params.iter().map(|p| Tensor::from_inner(p.clone()).require_grad()).collect();
            let x = images_at::<B>(samples, batch, device);
            let targets = one_hot::<B>(batch.iter().map(|&i| samples.labels[i]), classes, device);
            let loss = cross_entropy_sum(plan.logits(&leaves, x, Some(&mut dropout)), targets);
            let grads = loss.clone().div_scalar(batch.len() as f64).backward();
            let grads = leaves
                .iter()
                .map(|leaf| leaf.grad(&grads).unwrap_or_else(|| leaf.clone().inner().zeros_like()))
                .collect();
            optimizer.step(&mut params, grads);
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

/// Reads the parameters back, failing on the first non-finite one.
fn check_finite<Bk: ::burn::tensor::backend::Backend>(
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

    use super::super::FlexEngine;
    use super::super::network::tests::random_images;
    use crate::arch::{ArchSpec, preset};
    use crate::dataset::Samples;
    use crate::engine::{Engine, EngineError, Init, Optimizer, TrainConfig, TrainEvent, TrainJob, init_model};

    fn job(spec: &ArchSpec, optimizer: Optimizer, lr: f32, epochs: usize, seed: u64) -> TrainJob {
        TrainJob {
            model: init_model(spec, Init::Uniform, seed).unwrap(),
            config: TrainConfig { epochs, batch_size: 32, lr, weight_decay: 1e-4, optimizer, seed },
        }
    }

    fn digits() -> crate::dataset::Dataset {
        crate::dataset::load("digits", &Default::default()).expect("the embedded digits load")
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

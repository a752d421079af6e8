//! Training many members at once.
//!
//! Jobs with the same spec, batch size and epoch count form a group that advances in
//! lock-step, one optimisation step of every member at a time. Each step fans out over
//! work items `(team, run of images)`, a team being up to eight members that see the same
//! batches; an item runs the forward and backward pass of every member of its team on its
//! images, one cache-sized chunk at a time, and keeps each member's partial gradient;
//! members then sum their partials in item order and take their optimiser step.
//!
//! **Batches.** A member's shuffle order and dropout masks come from its own seed
//! (`ChaCha8Rng` streams 0 and 1, the burn engine's scheme), so a member trains exactly as it
//! would alone, whatever other jobs share the call. Members whose seeds are equal see the
//! same batches (and draw the same dropout masks): they form one *source*, and the work that
//! depends on the images alone (gathering them, unfolding or padding them for the first
//! convolution) is done once per chunk for each team of them. Zoos that want that speed-up give members one
//! seed and vary their initialisation and hyper-parameters instead.
//!
//! **Batch normalisation.** A train-mode batch norm normalises with the statistics of the
//! whole mini-batch, so a network with batch norm runs each member's mini-batch as one pass
//! (one work item per member and step, teams of one: members, not runs of images, spread
//! over the threads); the pass's batch statistics become the member's running statistics
//! after its optimiser step, which skips them. When a step has fewer items than threads
//! (one such member training alone), the spare threads work inside the item: its direct
//! convolutions, batch norms, unfoldings and matrix products split themselves so that each
//! value is still computed by one thread in one order (`Workspace::op_threads`).
//!
//! **Determinism.** Item boundaries depend on the batch size and the network only, every
//! item writes its own slot, and sums run in item order: results are bit-identical for
//! any thread count, and a member's weights are bit-identical whether it trains alone or
//! with others.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::batch_norm::BatchStats;
use super::optim::OptimizerState;
use super::parallel;
use super::pass::{self, GradSink, Training, Workspace};
use super::plan::{Op, Plan};
use hyperprune_core::dataset::Samples;
use hyperprune_core::engine::{EngineError, TrainConfig, TrainEvent, TrainJob};
use hyperprune_core::model::Model;

/// The ChaCha stream that shuffles the samples.
const SHUFFLE_STREAM: u64 = 0;
/// The ChaCha stream of dropout masks.
const DROPOUT_STREAM: u64 = 1;
/// At most this many work items per team and step: enough to keep every thread busy
/// with one member, few enough that partial gradients stay cheap to sum.
const ITEMS_PER_BATCH: usize = 8;
/// Members of one source that one work item runs, one after the other, on each chunk:
/// enough to share the chunk's image-only work, few enough to keep work items small and
/// threads evenly loaded at the end of a step.
const TEAM: usize = 8;

/// Trains every job, returning the models in job order.
///
/// # Errors
/// [`EngineError::Mismatch`] for a job that does not fit the samples or has a zero batch
/// size; [`EngineError::Diverged`] naming the job when a weight stops being finite.
pub(crate) fn train(
    threads: usize,
    jobs: Vec<TrainJob>,
    samples: &Samples,
    observer: &mut dyn FnMut(TrainEvent),
) -> Result<Vec<Model>, EngineError> {
    let mut groups: Vec<(Plan, TrainConfig, Vec<usize>)> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        if job.config.batch_size == 0 {
            return Err(EngineError::Mismatch(format!("job {i}: batch size must be positive")));
        }
        let (spec, c) = (job.model.spec(), &job.config);
        match groups
            .iter_mut()
            .find(|(p, g, _)| &p.spec == spec && g.batch_size == c.batch_size && g.epochs == c.epochs)
        {
            Some((_, _, members)) => members.push(i),
            None => {
                let plan = Plan::new(spec)?;
                plan.check_samples(samples)?;
                check_batch_norm_batches(i, &plan, samples.len(), c.batch_size)?;
                groups.push((plan, c.clone(), vec![i]));
            }
        }
    }
    let mut models: Vec<Option<Model>> = vec![None; jobs.len()];
    for (plan, shape, members) in &groups {
        let trained = Group::new(plan, shape, members, &jobs, samples).run(threads, observer)?;
        for (&job, params) in members.iter().zip(trained) {
            let model = Model::new(plan.spec.clone(), plan.unflatten(&params))
                .map_err(|e| EngineError::Mismatch(e.to_string()))?;
            models[job] = Some(model);
        }
    }
    Ok(models.into_iter().map(|m| m.expect("every job belongs to one group")).collect())
}

/// One member being trained.
struct Member {
    /// Index of its job.
    job: usize,
    /// Flat parameters.
    params: Vec<f32>,
    optimizer: OptimizerState,
    dropout: ChaCha8Rng,
    /// This step's dropout factors, per layer (empty for layers that are not dropout).
    masks: Vec<Vec<f32>>,
    /// Index of its team, and its place in the team.
    team: usize,
    slot: usize,
    /// Summed train loss of the epoch so far.
    loss: f64,
    /// Set when a weight stopped being finite.
    diverged: Option<String>,
}

/// The batch order of members whose seeds are equal.
struct Source {
    rng: ChaCha8Rng,
    order: Vec<usize>,
}

/// Up to [`TEAM`] members of one source, run together by each work item.
struct Team {
    source: usize,
    members: Vec<usize>,
}

/// The result of one work item: every member's partial gradient and loss, and the batch
/// statistics of its batch norms (`[slot · batch norms + k]`; the item is the whole batch).
#[derive(Default)]
struct ItemOut {
    grads: Vec<f32>,
    losses: Vec<f64>,
    labels: Vec<u32>,
    stats: Vec<BatchStats>,
}

/// Jobs that train in lock-step.
struct Group<'a> {
    plan: &'a Plan,
    batch_size: usize,
    epochs: usize,
    samples: &'a Samples,
    members: Vec<Member>,
    sources: Vec<Source>,
    teams: Vec<Team>,
    /// Images per pass, and per work item (a multiple of it).
    chunk: usize,
    per_item: usize,
    shared_prefix: bool,
}

impl<'a> Group<'a> {
    fn new(plan: &'a Plan, shape: &TrainConfig, jobs_in: &[usize], jobs: &[TrainJob], samples: &'a Samples) -> Self {
        let mut sources: Vec<(u64, Source)> = Vec::new();
        let mut teams: Vec<Team> = Vec::new();
        let mut members = Vec::with_capacity(jobs_in.len());
        let whole_batches = !plan.batch_norms.is_empty();
        let team_size = if whole_batches { 1 } else { TEAM };
        for (m, &j) in jobs_in.iter().enumerate() {
            let c = &jobs[j].config;
            let source = match sources.iter().position(|(seed, _)| *seed == c.seed) {
                Some(s) => s,
                None => {
                    let mut rng = ChaCha8Rng::seed_from_u64(c.seed);
                    rng.set_stream(SHUFFLE_STREAM);
                    sources.push((c.seed, Source { rng, order: (0..samples.len()).collect() }));
                    sources.len() - 1
                }
            };
            let team = match teams.iter().rposition(|t| t.source == source) {
                Some(t) if teams[t].members.len() < team_size => t,
                _ => {
                    teams.push(Team { source, members: Vec::new() });
                    teams.len() - 1
                }
            };
            let slot = teams[team].members.len();
            teams[team].members.push(m);
            let mut dropout = ChaCha8Rng::seed_from_u64(c.seed);
            dropout.set_stream(DROPOUT_STREAM);
            members.push(Member {
                job: j,
                params: plan.flatten(jobs[j].model.values()),
                optimizer: OptimizerState::new(c.optimizer, c.lr, c.weight_decay, plan.param_len, plan.trained.clone()),
                dropout,
                masks: vec![Vec::new(); plan.layers.len()],
                team,
                slot,
                loss: 0.0,
                diverged: None,
            });
        }
        let batch_size = shape.batch_size;
        let (chunk, per_item) = if whole_batches {
            (batch_size, batch_size)
        } else {
            let chunk = pass::chunk_images(plan, batch_size);
            (chunk, chunk * batch_size.div_ceil(chunk).div_ceil(ITEMS_PER_BATCH))
        };
        Group {
            plan,
            batch_size,
            epochs: shape.epochs,
            samples,
            members,
            sources: sources.into_iter().map(|(_, s)| s).collect(),
            teams,
            chunk,
            per_item,
            shared_prefix: pass::prefix_is_shared(plan),
        }
    }

    /// Runs every epoch; returns the members' flat parameters.
    fn run(mut self, threads: usize, observer: &mut dyn FnMut(TrainEvent)) -> Result<Vec<Vec<f32>>, EngineError> {
        let n = self.samples.len();
        let steps = n.div_ceil(self.batch_size);
        let total = self.epochs * steps;
        let mut workspaces: Vec<Workspace> = (0..threads.max(1)).map(|_| Workspace::default()).collect();
        let mut sums: Vec<Vec<f32>> = vec![Vec::new(); threads.max(1)];
        let mut items: Vec<ItemOut> = Vec::new();
        let plan = self.plan;
        let has_dropout = plan.layers.iter().any(|l| matches!(l.op, Op::Dropout { p } if p > 0.0));
        for epoch in 1..=self.epochs {
            for s in &mut self.sources {
                s.order.shuffle(&mut s.rng);
            }
            for step in 0..steps {
                let range = step * self.batch_size..((step + 1) * self.batch_size).min(n);
                let nb = range.len();
                if has_dropout {
                    parallel::for_each(&mut self.members, &mut vec![(); threads.max(1)], |_, m, _| {
                        draw_masks(plan, nb, m)
                    });
                }
                let per_team = nb.div_ceil(self.per_item);
                let count = per_team * self.teams.len();
                items.resize_with(count.max(items.len()), ItemOut::default);
                let this = &self;
                // Fewer items than threads (a batch-norm member training alone): the spare
                // threads split the item's convolutions.
                let op_threads = threads.max(1) / count.max(1);
                workspaces.iter_mut().for_each(|ws| ws.op_threads = op_threads);
                if count == 1 && op_threads > 1 {
                    // The lone item runs on a pool thread, so that its operations' splits
                    // queue on that thread's own deque instead of waking this thread per
                    // operation.
                    let (out, ws) = (&mut items[0], &mut workspaces[0]);
                    rayon::scope(|_| this.run_item(0, 0, range.clone(), out, ws));
                } else {
                    parallel::for_each(&mut items[..count], &mut workspaces, |i, out, ws| {
                        this.run_item(i / per_team, i % per_team, range.clone(), out, ws)
                    });
                }
                let items = &items[..count];
                parallel::for_each(&mut self.members, &mut sums, |_, m, sum| {
                    update(plan, m, &items[m.team * per_team..][..per_team], sum)
                });
                for m in &self.members {
                    if let Some(tensor) = &m.diverged {
                        return Err(EngineError::Diverged(format!(
                            "job {}, epoch {epoch}: tensor '{tensor}' holds non-finite values; lower the learning rate",
                            m.job
                        )));
                    }
                    observer(TrainEvent::Step { job: m.job, done: (epoch - 1) * steps + step + 1, total });
                }
            }
            for m in &mut self.members {
                let loss = if n == 0 { 0.0 } else { m.loss / n as f64 };
                if !loss.is_finite() {
                    return Err(EngineError::Diverged(format!(
                        "job {}, epoch {epoch}: the train loss is {loss}; lower the learning rate",
                        m.job
                    )));
                }
                observer(TrainEvent::Epoch { job: m.job, epoch, loss });
                m.loss = 0.0;
            }
        }
        Ok(self.members.into_iter().map(|m| m.params).collect())
    }

    /// Work item `item` of team `team`: the forward and backward passes of the team's
    /// members over the item's images of batch `range`.
    fn run_item(&self, team: usize, item: usize, range: std::ops::Range<usize>, out: &mut ItemOut, ws: &mut Workspace) {
        let (plan, samples) = (self.plan, self.samples);
        let team = &self.teams[team];
        let batch = &self.sources[team.source].order[range];
        let scale = 1.0 / batch.len() as f32;
        let first = item * self.per_item;
        let images = &batch[first..(first + self.per_item).min(batch.len())];
        let p = plan.param_len;
        out.grads.clear();
        out.grads.resize(team.members.len() * p, 0.0);
        out.losses.clear();
        out.losses.resize(team.members.len(), 0.0);
        out.stats.resize_with(team.members.len() * plan.batch_norms.len(), BatchStats::default);
        for (c, chunk) in images.chunks(self.chunk).enumerate() {
            out.labels.clear();
            out.labels.extend(chunk.iter().map(|&i| samples.labels[i]));
            for (slot, &m) in team.members.iter().enumerate() {
                let member = &self.members[m];
                let training = Training { masks: &member.masks, first: first + c * self.chunk };
                let reuse = slot > 0 && self.shared_prefix;
                let pixels = chunk.iter().map(|&i| samples.image(i));
                pass::forward(plan, &member.params, pixels, plan.layers.len(), reuse, Some(training), ws);
                let (loss, _) = ws.cross_entropy(plan, &out.labels, Some(scale));
                out.losses[slot] += loss;
                let bns = plan.batch_norms.len();
                for (k, &l) in plan.batch_norms.iter().enumerate() {
                    out.stats[slot * bns + k].clone_from(ws.batch_stats(l));
                }
                let grad = &mut out.grads[slot * p..(slot + 1) * p];
                pass::backward(plan, &member.params, Some(training), ws, &mut GradSink::Sum(grad));
            }
        }
    }
}

/// Refuses a batch size that would hand a batch norm layer a single value per channel (a
/// 1×1 map and a mini-batch of one sample), whose unbiased variance is undefined; PyTorch
/// and the burn engine refuse the same batch.
fn check_batch_norm_batches(job: usize, plan: &Plan, n: usize, batch_size: usize) -> Result<(), EngineError> {
    let smallest = if n.is_multiple_of(batch_size) { batch_size.min(n) } else { n % batch_size };
    if smallest != 1 {
        return Ok(());
    }
    let single = plan.batch_norms.iter().find(|&&l| plan.layers[l].input.1 == 1);
    match single {
        None => Ok(()),
        Some(layer) => Err(EngineError::Mismatch(format!(
            "job {job}: a mini-batch of 1 sample gives batch norm layer {layer} of '{}' one value per channel; \
             choose a batch size that does not leave a single sample ({n} samples)",
            plan.spec.name
        ))),
    }
}

/// Draws this step's dropout factors (`0` with probability `p`, else `1/(1 − p)`), for each
/// dropout layer in order, image by image, features in C, H, W order: the burn engine's
/// order, so equal seeds give equal masks on both engines.
fn draw_masks(plan: &Plan, batch: usize, m: &mut Member) {
    for (l, layer) in plan.layers.iter().enumerate() {
        let mask = &mut m.masks[l];
        mask.clear();
        if let Op::Dropout { p } = layer.op
            && p > 0.0
        {
            let keep = 1.0 / (1.0 - p);
            let rng = &mut m.dropout;
            mask.extend((0..batch * layer.in_len()).map(|_| if rng.random::<f32>() < p { 0.0 } else { keep }));
        }
    }
}

/// Sums the member's partial gradients in item order, takes its optimiser step and checks
/// that its weights are still finite.
fn update(plan: &Plan, m: &mut Member, items: &[ItemOut], sum: &mut Vec<f32>) {
    let p = plan.param_len;
    sum.clear();
    sum.extend_from_slice(&items[0].grads[m.slot * p..(m.slot + 1) * p]);
    for item in &items[1..] {
        sum.iter_mut().zip(&item.grads[m.slot * p..(m.slot + 1) * p]).for_each(|(s, g)| *s += g);
    }
    m.loss += items.iter().map(|i| i.losses[m.slot]).sum::<f64>();
    m.optimizer.step(&mut m.params, sum);
    // A network with batch norm ran the batch as one item (see the module documentation).
    let bns = plan.batch_norms.len();
    for (k, &l) in plan.batch_norms.iter().enumerate() {
        let Op::BatchNorm(g) = &plan.layers[l].op else { unreachable!("a batch norm layer") };
        debug_assert!(g.mean + g.c <= g.var, "ArchSpec::params lists the running mean before the variance");
        let (head, var) = m.params.split_at_mut(g.var);
        items[0].stats[m.slot * bns + k].update_running(g.momentum, &mut head[g.mean..][..g.c], &mut var[..g.c]);
    }
    if m.diverged.is_none()
        && let Some(at) = m.params.iter().position(|w| !w.is_finite())
    {
        let tensor = plan.offsets.partition_point(|&o| o <= at) - 1;
        m.diverged = Some(plan.spec.params().map(|p| p[tensor].name.clone()).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::random_model;
    use crate::synthetic::random_samples;
    use hyperprune_core::engine::Optimizer;

    fn job(spec: &hyperprune_core::ArchSpec, init: u64, seed: u64, optimizer: Optimizer, lr: f32) -> TrainJob {
        TrainJob {
            model: random_model(spec, init),
            config: TrainConfig { epochs: 2, batch_size: 16, lr, weight_decay: 1e-3, optimizer, seed },
        }
    }

    /// Five members of cnn-digits with dropout: two pairs sharing a seed, mixed optimisers.
    fn jobs() -> Vec<TrainJob> {
        let spec = hyperprune_core::preset("cnn-digits").unwrap().with_dropout(0.25);
        vec![
            job(&spec, 1, 100, Optimizer::Adam, 1e-2),
            job(&spec, 2, 100, Optimizer::Sgd { momentum: 0.9 }, 5e-2),
            job(&spec, 3, 200, Optimizer::Adam, 3e-3),
            job(&spec, 4, 100, Optimizer::Sgd { momentum: 0.0 }, 1e-1),
            job(&spec, 5, 300, Optimizer::Adam, 1e-2),
        ]
    }

    #[test]
    fn a_member_trains_bit_identically_alone_or_batched_with_others() {
        // 70 samples and batch 16: the last batch of each epoch is short.
        let samples = random_samples([1, 8, 8], 70, 10, 9);
        let together = train(2, jobs(), &samples, &mut |_| {}).unwrap();
        for (i, j) in jobs().into_iter().enumerate() {
            let alone = train(1, vec![j], &samples, &mut |_| {}).unwrap();
            assert_eq!(alone[0], together[i], "job {i}");
        }
        // Training moved the weights.
        assert_ne!(together[0], jobs()[0].model);
    }

    #[test]
    fn training_is_deterministic_and_independent_of_the_thread_count() {
        let samples = random_samples([1, 8, 8], 70, 10, 9);
        let one = train(1, jobs(), &samples, &mut |_| {}).unwrap();
        assert_eq!(one, train(1, jobs(), &samples, &mut |_| {}).unwrap());
        for threads in [2, 3] {
            assert_eq!(one, train(threads, jobs(), &samples, &mut |_| {}).unwrap(), "{threads} threads");
        }
    }

    #[test]
    fn a_batch_norm_member_alone_trains_bit_identically_on_any_thread_count() {
        // One member of a ResNet: one work item a step, so the spare threads split its
        // convolutions and batch norms; the weights must not depend on how many there are.
        let spec = hyperprune_core::preset("resnet:depth=8,width=8,input=1x8x8").unwrap();
        let samples = random_samples([1, 8, 8], 64, 10, 9);
        let jobs = || vec![job(&spec, 1, 100, Optimizer::Adam, 3e-3)];
        let one = train(1, jobs(), &samples, &mut |_| {}).unwrap();
        for threads in [2, 3, 5] {
            assert_eq!(one, train(threads, jobs(), &samples, &mut |_| {}).unwrap(), "{threads} threads");
        }
        assert_ne!(one[0], jobs()[0].model);
    }

    #[test]
    fn events_count_steps_and_epochs_of_every_job() {
        let samples = random_samples([1, 8, 8], 70, 10, 9);
        let mut steps = vec![0; 5];
        let mut epochs = vec![Vec::new(); 5];
        train(2, jobs(), &samples, &mut |e| match e {
            TrainEvent::Step { job, done, total } => {
                steps[job] += 1;
                assert_eq!((done, total), (steps[job], 10));
            }
            TrainEvent::Epoch { job, epoch, loss } => {
                assert!(loss.is_finite() && loss > 0.0);
                epochs[job].push(epoch);
            }
        })
        .unwrap();
        assert_eq!(steps, vec![10; 5]);
        assert!(epochs.iter().all(|e| e == &[1, 2]));
    }

    #[test]
    fn cnn_digits_learns_the_digits() {
        let data = hyperprune_core::dataset::load("digits", &Default::default()).unwrap();
        let spec = hyperprune_core::preset("cnn-digits").unwrap();
        let model =
            hyperprune_core::engine::init_model(&spec, hyperprune_core::engine::Init::KaimingUniform, 3).unwrap();
        let config =
            TrainConfig { epochs: 8, batch_size: 32, lr: 3e-3, weight_decay: 0.0, optimizer: Optimizer::Adam, seed: 3 };
        let mut losses = Vec::new();
        let trained = train(2, vec![TrainJob { model, config }], &data.train, &mut |e| {
            if let TrainEvent::Epoch { loss, .. } = e {
                losses.push(loss)
            }
        })
        .unwrap();
        let e = crate::inference::evaluate(2, &[&trained[0]], &data.test).unwrap()[0];
        assert!(e.accuracy > 0.9, "test accuracy {} (epoch losses {losses:?})", e.accuracy);
        assert!(losses[7] < losses[0] / 3.0, "{losses:?}");
    }

    #[test]
    fn divergence_names_the_job_and_a_tensor() {
        let samples = random_samples([1, 8, 8], 40, 10, 9);
        let spec = hyperprune_core::preset("cnn-digits").unwrap();
        let jobs =
            vec![job(&spec, 1, 1, Optimizer::Adam, 1e-3), job(&spec, 2, 1, Optimizer::Sgd { momentum: 0.9 }, 1e30)];
        let err = train(2, jobs, &samples, &mut |_| {}).unwrap_err();
        assert!(matches!(err, EngineError::Diverged(_)), "{err}");
        let err = err.to_string();
        assert!(err.contains("job 1") && (err.contains(".weight") || err.contains(".bias")), "{err}");
    }

    #[test]
    fn a_resnet_trains_the_same_alone_batched_and_on_any_thread_count() {
        // Batch norm runs whole batches: 30 samples in batches of 8 (the last holds 6).
        let spec = hyperprune_core::preset("resnet:depth=8,width=4,input=1x8x8").unwrap();
        let samples = random_samples(spec.input, 30, 10, 9);
        let jobs = || {
            let mut jobs = vec![
                job(&spec, 1, 100, Optimizer::Adam, 1e-2),
                job(&spec, 2, 100, Optimizer::Sgd { momentum: 0.9 }, 5e-2),
                job(&spec, 3, 200, Optimizer::Adam, 3e-3),
            ];
            jobs.iter_mut().for_each(|j| j.config.batch_size = 8);
            jobs
        };
        let together = train(2, jobs(), &samples, &mut |_| {}).unwrap();
        assert_eq!(train(1, jobs(), &samples, &mut |_| {}).unwrap(), together);
        assert_eq!(train(3, jobs(), &samples, &mut |_| {}).unwrap(), together);
        for (i, j) in jobs().into_iter().enumerate() {
            assert_eq!(train(1, vec![j], &samples, &mut |_| {}).unwrap()[0], together[i], "job {i}");
        }
        let moved = together[0].tensor("layer2.0.bn1.running_var").unwrap();
        assert_ne!(moved, jobs()[0].model.tensor("layer2.0.bn1.running_var").unwrap());
    }

    #[test]
    fn a_single_value_per_batch_norm_channel_is_refused_before_training() {
        // On 4×4 inputs the last stage runs batch norm on 1×1 maps; 17 samples in batches
        // of 8 leave a last mini-batch of one sample.
        let spec = hyperprune_core::preset("resnet:depth=8,width=2,input=1x4x4").unwrap();
        let mut j = job(&spec, 1, 1, Optimizer::Adam, 1e-3);
        j.config.batch_size = 8;
        let err = train(1, vec![j.clone()], &random_samples(spec.input, 17, 10, 9), &mut |_| {}).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("job 0") && err.contains("one value per channel"), "{err}");
        train(1, vec![j], &random_samples(spec.input, 18, 10, 9), &mut |_| {}).unwrap();
    }

    #[test]
    fn bad_jobs_are_mismatches() {
        let samples = random_samples([1, 8, 8], 10, 10, 9);
        let mut j = jobs();
        j[2].config.batch_size = 0;
        assert!(train(1, j, &samples, &mut |_| {}).unwrap_err().to_string().contains("job 2"));
        let other = random_samples([1, 28, 28], 10, 10, 9);
        assert!(train(1, jobs(), &other, &mut |_| {}).is_err());
    }
}

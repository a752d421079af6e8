//! Executing a bench: every task pruned through the plugin ABI, checked, evaluated on the
//! test split, and appended to `results.jsonl` in task order as soon as it is done. A
//! failing plugin yields an error row and the run goes on.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use hyperprune_core::Model;
use hyperprune_core::dataset::Dataset;
use hyperprune_core::engine::{Engine, Evaluation};
use hyperprune_core::metrics::compression;
use hyperprune_core::zoo::MemberInfo;
use hyperprune_sdk::PruneRequest;
use hyperprune_sdk::ffi::panic_message;

use super::plan::Task;
use crate::calibration::TrainSplit;
use crate::context::DataServices;
use crate::isolation::{CallError, Isolation, Setup, Task as IsolatedTask, Worker, interrupted};
use crate::outcome::CheckedOutcome;
use crate::pruning::ConfiguredPruner;
use crate::results::ResultsWriter;
use crate::results::{ResultRow, Status};

/// A member under test: its record, weights and dense evaluation.
pub struct BenchMember {
    /// Zoo record.
    pub info: MemberInfo,
    /// Dense weights.
    pub model: Model,
    /// Dense test evaluation.
    pub dense: Evaluation,
}

/// Everything a bench needs besides the task list.
pub struct Bench<'a> {
    /// Zoo name.
    pub zoo: String,
    /// Dataset (evaluation on test).
    pub dataset: &'a Dataset,
    /// Its train split cut into calibration samples and the val slice: what data-aware
    /// pruners get.
    pub split: &'a TrainSplit<'a>,
    /// Engine.
    pub engine: &'a dyn Engine,
    /// Members under test.
    pub members: Vec<BenchMember>,
    /// Configured pruners.
    pub pruners: Vec<ConfiguredPruner>,
    /// Request template (scope, pattern, seed); the sparsity comes from each task.
    pub request: PruneRequest,
    /// Calibration samples a data service uses when the pruner asks for "the default".
    pub calib_samples: u64,
    /// Worker threads.
    pub jobs: usize,
    /// Where `prune` calls run: None in this process, else in supervised workers.
    pub isolation: Option<IsolatedRun>,
    /// What happens to the pruned networks' batch normalisation statistics.
    pub bn_stats: crate::bn_stats::BnStats,
}

/// What a bench's workers need besides each pruner's own setup.
#[derive(Debug, Clone)]
pub struct IsolatedRun {
    /// Timeout and memory limit.
    pub isolation: Isolation,
    /// The zoo folder (workers load members from it).
    pub zoo_dir: PathBuf,
    /// Dataset name and folder (for pruners that prune with data).
    pub data: (String, Option<PathBuf>),
    /// Engine name and device of the data services.
    pub engine: (String, String),
}

/// One bench thread's workers, one per pruner, started on first use and replaced after a
/// crash.
pub type Workers = Vec<Option<Worker>>;

/// Counts of what a run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Rows written as ok.
    pub ok: usize,
    /// Error rows written.
    pub errors: usize,
    /// Tasks skipped because their row already existed.
    pub skipped: usize,
}

impl Bench<'_> {
    /// The row key a task would get, to skip tasks already in the results.
    pub fn key(&self, task: &Task) -> String {
        self.skeleton(task).key()
    }

    fn skeleton(&self, task: &Task) -> ResultRow {
        let member = &self.members[task.member];
        let pruner = &self.pruners[task.pruner];
        let mut options = pruner.options.clone();
        if let (Some(bn), serde_json::Value::Object(map)) = (self.bn_stats.option(), &mut options) {
            map.insert("bn_stats".into(), bn.into());
        }
        let data = if self.bn_stats.uses_data() { crate::results::DataUse::Train } else { pruner.data_use() };
        ResultRow {
            zoo: self.zoo.clone(),
            member: member.info.id.clone(),
            arch: member.model.spec().name.clone(),
            dataset: self.dataset.name.clone(),
            pruner: pruner.name().to_string(),
            pruner_version: pruner.plugin.info.version.clone(),
            options,
            fit_zoo: pruner.fit_zoo.clone(),
            fit: pruner.fit.clone(),
            seed: self.request.seed,
            requested_sparsity: task.sparsity,
            compression: 1.0 / (1.0 - task.sparsity),
            achieved_sparsity: None,
            achieved_compression: None,
            model_compression: None,
            flops_speedup: None,
            dense_accuracy: member.dense.accuracy,
            dense_loss: member.dense.loss,
            pruned_accuracy: None,
            pruned_loss: None,
            retention: None,
            prune_seconds: None,
            calib_samples: 0,
            data,
            status: Status::Error,
            error: None,
        }
    }

    /// Runs one task; never panics (a host-side panic becomes an error row too). None when
    /// Ctrl-C cancelled it: no row, the task reruns on resume.
    pub fn run_task(&self, task: &Task, cancel: &AtomicBool, workers: &mut Workers) -> Option<ResultRow> {
        let mut row = self.skeleton(task);
        let result = catch_unwind(AssertUnwindSafe(|| self.prune_and_evaluate(task, cancel, workers, &mut row)));
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(TaskError::Interrupted)) => return None,
            Ok(Err(TaskError::Row(message))) => Some(message),
            Err(payload) => Some(format!("the host panicked: {}", panic_message(payload.as_ref()))),
        };
        if let Some(message) = error {
            row.status = Status::Error;
            row.error = Some(message);
        }
        Some(row)
    }

    /// The plugin's checked outcome, from this process or from the pruner's worker.
    fn outcome(
        &self,
        task: &Task,
        cancel: &AtomicBool,
        workers: &mut Workers,
        row: &mut ResultRow,
    ) -> Result<CheckedOutcome, TaskError> {
        let member = &self.members[task.member];
        let pruner = &self.pruners[task.pruner];
        let request = PruneRequest { sparsity: task.sparsity, ..self.request };
        let Some(run) = &self.isolation else {
            let data = DataServices { engine: self.engine, split: self.split };
            let ctx = pruner.prune_context(Some(data), cancel).with_default_samples(self.calib_samples);
            let start = Instant::now();
            let outcome = pruner.prune(&member.model, &request, &ctx);
            row.prune_seconds = Some(start.elapsed().as_secs_f64());
            row.calib_samples = ctx.calibration_samples_used();
            return outcome.map_err(|e| TaskError::Row(e.message));
        };
        if workers.len() < self.pruners.len() {
            workers.resize_with(self.pruners.len(), || None);
        }
        let slot = &mut workers[task.pruner];
        if slot.is_none() {
            *slot = Some(
                Worker::start(&self.setup(run, pruner), &run.isolation).map_err(|e| call_error(pruner.name(), e))?,
            );
        }
        let worker = slot.as_mut().expect("started above");
        let call = worker.prune(&IsolatedTask::new(&member.info.id, &request), run.isolation.timeout, cancel);
        let (outcome, seconds, calib) = call.map_err(|e| {
            if !matches!(e, CallError::Failed { .. }) {
                *slot = None; // dead: the next task starts a fresh worker
            }
            call_error(pruner.name(), e)
        })?;
        row.prune_seconds = Some(seconds);
        row.calib_samples = calib;
        pruner.accept(&member.model, &outcome, &request).map_err(|e| TaskError::Row(e.message))
    }

    /// A worker's setup for `pruner`.
    fn setup(&self, run: &IsolatedRun, pruner: &ConfiguredPruner) -> Setup {
        Setup {
            zoo: Some(run.zoo_dir.clone()),
            data: pruner.prunes_with_data().then(|| run.data.clone()),
            ..Setup::of(pruner, run.engine.clone(), self.calib_samples, run.isolation.memory_limit)
        }
    }

    fn prune_and_evaluate(
        &self,
        task: &Task,
        cancel: &AtomicBool,
        workers: &mut Workers,
        row: &mut ResultRow,
    ) -> Result<(), TaskError> {
        let member = &self.members[task.member];
        let outcome = self.outcome(task, cancel, workers, row)?;
        let pruned = outcome.apply(&member.model).map_err(|e| TaskError::Row(e.to_string()))?;
        let pruned = self
            .bn_stats
            .apply(self.engine, &member.model, pruned, Some(self.split))
            .map_err(|e| TaskError::Row(e.to_string()))?;
        let c = compression(&pruned);
        row.achieved_sparsity = Some(outcome.achieved_sparsity());
        row.achieved_compression = Some(c.compression);
        row.model_compression = Some(c.model_compression);
        row.flops_speedup = Some(c.speedup());
        let eval =
            self.engine.evaluate(&[&pruned], &self.dataset.test).map_err(|e| format!("evaluation failed: {e}"))?;
        let eval = eval.first().ok_or_else(|| "the engine returned no evaluation".to_string())?;
        row.pruned_accuracy = Some(eval.accuracy);
        row.pruned_loss = Some(eval.loss);
        row.retention = Some(if member.dense.accuracy > 0.0 { eval.accuracy / member.dense.accuracy } else { 0.0 });
        row.status = Status::Ok;
        Ok(())
    }

    /// Runs `tasks` on `self.jobs` threads and appends each row in task order as soon as
    /// every earlier row is written. `on_row` sees each written row (for progress).
    /// `stop_after` ends the run after that many new rows (used to test resuming).
    ///
    /// # Errors
    /// Only I/O errors writing the results.
    pub fn run(
        &self,
        tasks: &[Task],
        writer: &mut ResultsWriter,
        stop_after: Option<usize>,
        on_row: &(dyn Fn(&ResultRow) + Sync),
    ) -> anyhow::Result<Counts> {
        let todo: Vec<&Task> = tasks.iter().filter(|t| !writer.has(&self.key(t))).collect();
        let limit = stop_after.unwrap_or(usize::MAX).min(todo.len());
        let mut counts = Counts { skipped: tasks.len() - todo.len(), ..Counts::default() };
        let cancel = AtomicBool::new(false);
        let next = AtomicUsize::new(0);
        let pending: Mutex<(BTreeMap<usize, ResultRow>, usize, Option<anyhow::Error>)> =
            Mutex::new((BTreeMap::new(), 0, None));
        let writer = Mutex::new(writer);
        let counts_cell = Mutex::new(&mut counts);
        std::thread::scope(|scope| {
            for _ in 0..self.jobs.max(1) {
                scope.spawn(|| {
                    let mut workers = Workers::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= limit || cancel.load(Ordering::Relaxed) || interrupted() {
                            break;
                        }
                        let Some(row) = self.run_task(todo[i], &cancel, &mut workers) else {
                            cancel.store(true, Ordering::Relaxed);
                            break;
                        };
                        let mut state = pending.lock().expect("no thread panics while holding it");
                        state.0.insert(i, row);
                        // Write every row whose predecessors are all written.
                        loop {
                            let position = state.1;
                            let Some(row) = state.0.remove(&position) else { break };
                            state.1 += 1;
                            let mut w = writer.lock().expect("no thread panics while holding it");
                            if let Err(e) = w.append(&row) {
                                state.2 = Some(e);
                                cancel.store(true, Ordering::Relaxed);
                                break;
                            }
                            let mut c = counts_cell.lock().expect("no thread panics while holding it");
                            match row.status {
                                Status::Ok => c.ok += 1,
                                Status::Error => c.errors += 1,
                            }
                            on_row(&row);
                        }
                    }
                });
            }
        });
        if let Some(e) = pending.into_inner().expect("threads joined").2 {
            return Err(e);
        }
        if interrupted() {
            return Err(anyhow::anyhow!(
                "interrupted: {} new rows written (rows finished after an unfinished one are rerun); run the same \
                 command again to resume",
                counts.ok + counts.errors
            ));
        }
        Ok(counts)
    }
}

/// Why a task has no ok row.
enum TaskError {
    /// An error row with this message.
    Row(String),
    /// Ctrl-C: no row at all.
    Interrupted,
}

impl From<String> for TaskError {
    fn from(message: String) -> TaskError {
        TaskError::Row(message)
    }
}

/// The error row of a call through a worker.
fn call_error(pruner: &str, e: CallError) -> TaskError {
    match e {
        CallError::Failed { message, .. } => TaskError::Row(message),
        CallError::Crashed(how) => TaskError::Row(format!("plugin '{pruner}': {how}; the worker was replaced")),
        CallError::Interrupted => TaskError::Interrupted,
    }
}

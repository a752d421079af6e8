//! Executing a bench: every task pruned through the plugin ABI, checked, evaluated on the
//! test split, and appended to `results.jsonl` in task order as soon as it is done. A
//! failing plugin yields an error row and the run goes on.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
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
use super::results::ResultsWriter;
use super::row::{ResultRow, Status};
use crate::calibration::TrainSplit;
use crate::context::DataServices;
use crate::pruning::ConfiguredPruner;

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
}

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
        ResultRow {
            zoo: self.zoo.clone(),
            member: member.info.id.clone(),
            arch: member.model.spec().name.clone(),
            dataset: self.dataset.name.clone(),
            pruner: pruner.name().to_string(),
            pruner_version: pruner.plugin.info.version.clone(),
            options: pruner.options.clone(),
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
            data: pruner.data_use(),
            status: Status::Error,
            error: None,
        }
    }

    /// Runs one task; never panics (a host-side panic becomes an error row too).
    pub fn run_task(&self, task: &Task, cancel: &AtomicBool) -> ResultRow {
        let mut row = self.skeleton(task);
        let result = catch_unwind(AssertUnwindSafe(|| self.prune_and_evaluate(task, cancel, &mut row)));
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(message)) => Some(message),
            Err(payload) => Some(format!("the host panicked: {}", panic_message(payload.as_ref()))),
        };
        if let Some(message) = error {
            row.status = Status::Error;
            row.error = Some(message);
        }
        row
    }

    fn prune_and_evaluate(&self, task: &Task, cancel: &AtomicBool, row: &mut ResultRow) -> Result<(), String> {
        let member = &self.members[task.member];
        let pruner = &self.pruners[task.pruner];
        let data = DataServices { engine: self.engine, split: self.split };
        let ctx = pruner.prune_context(Some(data), cancel).with_default_samples(self.calib_samples);
        let request = PruneRequest { sparsity: task.sparsity, ..self.request };
        let start = Instant::now();
        let outcome = pruner.prune(&member.model, &request, &ctx);
        row.prune_seconds = Some(start.elapsed().as_secs_f64());
        row.calib_samples = ctx.calibration_samples_used();
        let outcome = outcome?;
        let pruned = outcome.apply(&member.model)?;
        let c = compression(&pruned);
        row.achieved_sparsity = Some(outcome.achieved_sparsity());
        row.achieved_compression = Some(c.compression);
        row.model_compression = Some(c.model_compression);
        row.flops_speedup = Some(c.speedup());
        let eval =
            self.engine.evaluate(&[&pruned], &self.dataset.test).map_err(|e| format!("evaluation failed: {e}"))?;
        let eval = eval.first().ok_or("the engine returned no evaluation")?;
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
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= limit || cancel.load(Ordering::Relaxed) {
                            break;
                        }
                        let row = self.run_task(todo[i], &cancel);
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
        Ok(counts)
    }
}

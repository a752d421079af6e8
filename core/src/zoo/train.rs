//! Training a planned zoo, resumably: members are trained in chunks, each member file is
//! written atomically, and `zoo.json` is rewritten after every chunk, so an interrupted
//! run restarts where it stopped and never sees a half-written member.

use std::path::Path;

use super::ZooError;
use super::memory::{available_memory, chunk_memory};
use super::meta::ZooMeta;
use super::store::{ZOO_FILE, Zoo};
use crate::dataset::Dataset;
use crate::engine::{Engine, TrainConfig, TrainEvent, TrainJob, init_model};

/// Progress of a zoo run.
#[derive(Debug, Clone, PartialEq)]
pub enum ZooEvent {
    /// Training starts: `remaining` of `total` members still need training.
    Start {
        /// Members in the zoo.
        total: usize,
        /// Members to train in this run.
        remaining: usize,
        /// Optimisation steps in this run.
        steps: usize,
    },
    /// Some optimisation steps finished.
    Steps {
        /// Steps finished in this run so far.
        done: usize,
    },
    /// A member is trained and written.
    MemberDone {
        /// Member id.
        id: String,
        /// Its dense test accuracy.
        test_accuracy: f64,
    },
}

/// Trains every untrained member of `meta` into `dir`, `chunk` members per engine call.
///
/// If `dir` already holds a zoo, it must have been planned with the same settings; its
/// trained members are kept and only the rest are trained.
///
/// Invalid settings (a zero batch size) and a chunk estimated not to fit in the available
/// memory (see [`chunk_memory`]) are refused before anything is written.
///
/// # Errors
/// A different zoo already in `dir`, [`ZooError::Settings`], [`ZooError::Memory`], engine
/// failures, I/O errors (all naming the file).
pub fn train_zoo(
    dir: &Path,
    meta: ZooMeta,
    engine: &dyn Engine,
    dataset: &Dataset,
    chunk: usize,
    observer: &mut dyn FnMut(ZooEvent),
) -> Result<Zoo, ZooError> {
    // Everything that can be refused is checked before the first file is written, so a
    // refused run leaves no folder behind.
    meta.settings.check().map_err(ZooError::Settings)?;
    let mut zoo = match Zoo::open(dir) {
        Ok(existing) => resume(existing, &meta, dir)?,
        Err(ZooError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Zoo::new(dir, meta),
        Err(e) => return Err(e),
    };
    let todo: Vec<usize> = (0..zoo.meta().members.len())
        .filter(|&i| {
            let m = &zoo.meta().members[i];
            !m.is_trained() || !dir.join(&m.file).is_file()
        })
        .collect();
    let settings = zoo.meta().settings.clone();
    check_memory(zoo.meta(), &todo, chunk.max(1), available_memory())?;
    zoo.save_meta()?;
    let steps_per_member = settings.epochs * dataset.train.len().div_ceil(settings.batch_size.max(1));
    observer(ZooEvent::Start {
        total: zoo.meta().members.len(),
        remaining: todo.len(),
        steps: steps_per_member * todo.len(),
    });
    let mut steps_before = 0usize;
    for group in todo.chunks(chunk.max(1)) {
        let mut jobs = Vec::with_capacity(group.len());
        for &i in group {
            let m = &zoo.meta().members[i];
            let model = init_model(&m.arch, m.hyperparams.init, m.hyperparams.seed)
                .map_err(|e| ZooError::Settings(e.to_string()))?;
            let config = TrainConfig {
                epochs: settings.epochs,
                batch_size: settings.batch_size,
                lr: m.hyperparams.lr,
                weight_decay: m.hyperparams.weight_decay,
                optimizer: settings.optimizer,
                seed: m.hyperparams.data_seed,
            };
            jobs.push(TrainJob { model, config });
        }
        let mut done_per_job = vec![0usize; group.len()];
        let trained = engine
            .train(jobs, &dataset.train, &mut |event| {
                if let TrainEvent::Step { job, done, .. } = event {
                    if let Some(d) = done_per_job.get_mut(job) {
                        *d = done;
                    }
                    observer(ZooEvent::Steps { done: steps_before + done_per_job.iter().sum::<usize>() });
                }
            })
            .map_err(ZooError::Engine)?;
        steps_before += steps_per_member * group.len();
        let refs: Vec<&crate::Model> = trained.iter().collect();
        let train_eval = engine.evaluate(&refs, &dataset.train).map_err(ZooError::Engine)?;
        let test_eval = engine.evaluate(&refs, &dataset.test).map_err(ZooError::Engine)?;
        for (k, &i) in group.iter().enumerate() {
            let member = zoo.meta().members[i].clone();
            zoo.save_member(&member, &trained[k])?;
            let m = &mut zoo.meta_mut().members[i];
            m.train_accuracy = Some(train_eval[k].accuracy);
            m.test_accuracy = Some(test_eval[k].accuracy);
            m.test_loss = Some(test_eval[k].loss);
            observer(ZooEvent::MemberDone { id: m.id.clone(), test_accuracy: test_eval[k].accuracy });
        }
        zoo.save_meta()?;
    }
    Ok(zoo)
}

/// Refuses a run whose largest chunk would not fit in `available` bytes (no check when that
/// is unknown).
///
/// # Errors
/// [`ZooError::Memory`] with the estimate, the memory available and what to change.
fn check_memory(meta: &ZooMeta, todo: &[usize], chunk: usize, available: Option<u64>) -> Result<(), ZooError> {
    let Some(available) = available else {
        return Ok(());
    };
    let members = chunk.min(todo.len());
    let batch_size = meta.settings.batch_size;
    let mut needed = 0;
    for &i in todo {
        let arch = &meta.members[i].arch;
        let estimate = chunk_memory(arch, members, batch_size).map_err(|e| ZooError::Settings(e.to_string()))?;
        needed = needed.max(estimate);
    }
    if needed > available {
        return Err(ZooError::Memory { arch: meta.arch.name.clone(), members, batch_size, needed, available });
    }
    Ok(())
}

/// Checks that the zoo in `dir` was planned like `meta`, and keeps its trained members.
fn resume(existing: Zoo, meta: &ZooMeta, dir: &Path) -> Result<Zoo, ZooError> {
    let old = existing.meta();
    let differs = |field: &str| {
        ZooError::Settings(format!(
            "{} holds a zoo with a different {field}; use another --out folder, or delete it to start over",
            dir.join(ZOO_FILE).display()
        ))
    };
    if old.arch != meta.arch {
        return Err(differs("architecture"));
    }
    if old.dataset != meta.dataset {
        return Err(differs("dataset"));
    }
    if old.settings != meta.settings {
        return Err(differs("training settings (epochs, batch size, lr, vary, seed or split)"));
    }
    if old.members.len() != meta.members.len() {
        return Err(differs("member count"));
    }
    Ok(existing)
}

#[cfg(test)]
mod tests {
    //! Zoo training itself needs an engine, and core names none: the tests that train live with
    //! the burn engine (`engine-burn/tests/zoo_training.rs`).

    use super::*;
    use crate::engine::Optimizer;
    use crate::zoo::{ZooSettings, plan};

    fn digits_plan(members: usize) -> ZooMeta {
        let settings = ZooSettings {
            epochs: 4,
            batch_size: 32,
            optimizer: Optimizer::Adam,
            lr: 3e-3,
            vary: vec!["seed".into(), "init".into()],
            seed: 11,
            split: [0.5, 0.0, 0.5],
            shared_data_order: false,
        };
        plan("t", &crate::preset("cnn-digits").unwrap(), "digits", "burn-flex", settings, members).unwrap()
    }

    /// An architecture of about 0.6 trillion parameters: its chunk estimate exceeds any
    /// machine's memory, and allocating it would abort the process.
    fn huge_plan() -> ZooMeta {
        let arch = crate::ArchSpec::from_json(
            r#"{"name":"huge","input":[1,8,8],"classes":10,"layers":[{"type":"flatten"},
                {"type":"linear","out_features":8589934592},{"type":"relu"},{"type":"linear","out_features":10}]}"#,
        )
        .unwrap();
        let settings = ZooSettings { batch_size: 32, ..digits_plan(1).settings };
        plan("huge", &arch, "digits", "burn-flex", settings, 2).unwrap()
    }

    #[test]
    fn the_memory_check_uses_the_largest_chunk_and_skips_when_memory_is_unknown() {
        let meta = digits_plan(4);
        let todo: Vec<usize> = (0..4).collect();
        let two = chunk_memory(&meta.arch, 2, 32).unwrap();
        check_memory(&meta, &todo, 2, Some(two)).unwrap();
        let err = check_memory(&meta, &todo, 3, Some(two)).unwrap_err().to_string();
        assert!(err.contains("training 3 'cnn-digits' members"), "{err}");
        // Only the members left to train count: a chunk of 3 with one member left is one member.
        check_memory(&meta, &todo[3..], 3, Some(two)).unwrap();
        check_memory(&huge_plan(), &[0, 1], 2, None).unwrap();
    }
}

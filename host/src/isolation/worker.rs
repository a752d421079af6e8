//! The worker side: `hyperprune worker` (hidden) loads one plugin, configures it, loads its
//! state, and prunes the members the supervisor names, one task at a time, on its main
//! thread; a second thread reads the supervisor's frames so a `Cancel` reaches the running
//! call. Whatever the plugin does to this process (abort, segfault, loop, exhaust memory)
//! ends here; the supervisor sees a closed pipe or a timeout.

use std::io::{BufReader, BufWriter};
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use clap::ValueEnum;
use hyperprune_core::Model;
use hyperprune_core::dataset::Dataset;
use hyperprune_core::engine::Engine;
use hyperprune_core::zoo::Zoo;

use super::protocol::{Message, Setup, Task, read_message, write_message};
use crate::calibration::TrainSplit;
use crate::context::DataServices;
use crate::engines::EngineKind;
use crate::failure::is_bad_input;
use crate::fitting::load_state_file;
use crate::plugins::Registry;
use crate::pruning::ConfiguredPruner;

/// Runs the worker until its stdin closes.
///
/// # Errors
/// Only when the protocol itself breaks (stdout closed, a frame that does not decode);
/// everything a plugin does wrong is a `Failed` frame or the end of this process.
pub fn serve() -> anyhow::Result<()> {
    let mut out = BufWriter::new(protocol_stdout()?);
    let (frames, inbox) = mpsc::channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let cancel_reader = Arc::clone(&cancel);
    std::thread::spawn(move || {
        let mut input = BufReader::new(std::io::stdin().lock());
        while let Ok(Some(message)) = read_message(&mut input) {
            if message == Message::Cancel {
                cancel_reader.store(true, Ordering::SeqCst);
            } else if frames.send(message).is_err() {
                break;
            }
        }
    });
    let setup = match inbox.recv() {
        Ok(Message::Setup(setup)) => setup,
        Ok(Message::Probe) => {
            die_with_supervisor();
            return serve_probes(&inbox, &mut out);
        }
        _ => return Ok(()), // The supervisor went away before saying anything.
    };
    die_with_supervisor();
    super::tune_allocator();
    if let Some(limit) = setup.memory_limit {
        limit_memory(limit);
    }
    let mut served = match Served::new(&setup) {
        Ok(s) => {
            write_message(&mut out, &Message::Ready)?;
            s
        }
        Err(e) => {
            let failed = Message::Failed { message: format!("{e:#}"), bad_input: is_bad_input(&e) };
            write_message(&mut out, &failed)?;
            return Ok(());
        }
    };
    while let Ok(message) = inbox.recv() {
        cancel.store(false, Ordering::SeqCst);
        let reply = match message {
            Message::Task(task) => served.prune(&task, &cancel),
            Message::Fit { state, train_members } => served.fit(&state, train_members),
            _ => continue,
        };
        write_message(&mut out, &reply)?;
    }
    Ok(())
}

/// Probe mode (see [`Message::Probe`]): answers each setup `Ready` when its plugin loads
/// (and, given a pruner name, configures and loads its state), `Failed` with the reason when
/// it returns an error; a crash ends this process, which is what the supervisor watches for.
fn serve_probes(inbox: &mpsc::Receiver<Message>, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let mut limited = false;
    while let Ok(message) = inbox.recv() {
        let Message::Setup(setup) = message else { continue };
        if let (Some(limit), false) = (setup.memory_limit, limited) {
            limit_memory(limit);
            limited = true;
        }
        let reply = match probe(&setup) {
            Ok(()) => Message::Ready,
            Err(e) => Message::Failed { message: format!("{e:#}"), bad_input: is_bad_input(&e) },
        };
        write_message(out, &reply)?;
    }
    Ok(())
}

/// Loads the plugin of `setup` (its `info` included) and, when the setup names a pruner,
/// instantiates, configures and loads its state, as the supervisor is about to do.
fn probe(setup: &Setup) -> anyhow::Result<()> {
    let plugin = crate::plugins::load(&setup.plugin).map_err(anyhow::Error::msg)?;
    if setup.pruner.is_empty() {
        return Ok(());
    }
    let registry = Registry { plugins: vec![plugin], ..Registry::default() };
    let mut pruner = ConfiguredPruner::new(&registry, &setup.pruner, &setup.options)?;
    if let Some(state) = &setup.state {
        load_state_file(&mut pruner, state, None)?;
    }
    Ok(())
}

/// What a worker holds between tasks.
struct Served {
    pruner: ConfiguredPruner,
    zoo: Option<Zoo>,
    data: Option<(Dataset, Box<dyn Engine>)>,
    calib_samples: u64,
    /// The last model pruned and its key (tasks come member by member: one is kept).
    model: Option<(String, Model)>,
}

impl Served {
    fn new(setup: &Setup) -> anyhow::Result<Served> {
        let plugin = crate::plugins::load(&setup.plugin).map_err(anyhow::Error::msg)?;
        let registry = Registry { plugins: vec![plugin], ..Registry::default() };
        let mut pruner = ConfiguredPruner::new(&registry, &setup.pruner, &setup.options)?;
        if let Some(state) = &setup.state {
            load_state_file(&mut pruner, state, None)?;
        }
        let zoo = setup.zoo.as_deref().map(Zoo::open).transpose().map_err(crate::failure::bad_input)?;
        let data = match &setup.data {
            Some((name, dir)) => {
                let args = crate::cli::DataArgs { dataset: name.clone(), data_dir: dir.clone() };
                let dataset = crate::inputs::dataset(&args)?;
                let kind = <EngineKind as ValueEnum>::from_str(&setup.engine.0, true).map_err(anyhow::Error::msg)?;
                Some((dataset, crate::engines::engine(kind, &setup.engine.1)?))
            }
            None => None,
        };
        Ok(Served { pruner, zoo, data, calib_samples: setup.calib_samples, model: None })
    }

    fn fit(&mut self, state: &std::path::Path, train_members: Option<usize>) -> Message {
        let Some(zoo) = &self.zoo else {
            return Message::Failed { message: "a fit for a worker without a zoo".into(), bad_input: false };
        };
        let split = self.data.as_ref().map(|(d, _)| TrainSplit::new(&d.train));
        let services = services(&self.data, split.as_ref());
        let files = crate::fit_sink::FitFiles::for_state(state);
        match crate::fitting::fit(&mut self.pruner, zoo, &files, services, self.calib_samples, train_members) {
            Ok(summary) => Message::Fitted(serde_json::to_value(summary).unwrap_or_default()),
            Err(e) => Message::Failed { message: format!("{e:#}"), bad_input: is_bad_input(&e) },
        }
    }

    fn prune(&mut self, task: &Task, cancel: &AtomicBool) -> Message {
        match self.try_prune(task, cancel) {
            Ok(m) => m,
            Err(e) => Message::Failed { message: format!("{e:#}"), bad_input: is_bad_input(&e) },
        }
    }

    fn try_prune(&mut self, task: &Task, cancel: &AtomicBool) -> anyhow::Result<Message> {
        let key = match &task.model {
            Some((path, _)) => path.display().to_string(),
            None => task.member.clone(),
        };
        if self.model.as_ref().is_none_or(|(k, _)| *k != key) {
            let model = match (&task.model, &self.zoo) {
                (Some((path, arch)), _) => crate::inputs::model(path, arch.as_deref())?,
                (None, Some(zoo)) => {
                    let info = zoo
                        .meta()
                        .members
                        .iter()
                        .find(|m| m.id == task.member)
                        .ok_or_else(|| anyhow::anyhow!("{}: no member {}", zoo.dir().display(), task.member))?;
                    zoo.load(info).map_err(anyhow::Error::msg)?
                }
                (None, None) => anyhow::bail!("a task without a model for a worker without a zoo"),
            };
            self.model = Some((key, model));
        }
        let (_, model) = self.model.as_ref().expect("loaded above");
        let split = self.data.as_ref().map(|(d, _)| TrainSplit::new(&d.train));
        let services = services(&self.data, split.as_ref());
        let ctx = self.pruner.prune_context(services, cancel).with_default_samples(self.calib_samples);
        let start = std::time::Instant::now();
        let outcome = self.pruner.prune_unchecked(model, &task.request(), &ctx);
        let seconds = start.elapsed().as_secs_f64();
        match outcome {
            Ok(outcome) => Ok(Message::Outcome { outcome, seconds, calib_samples: ctx.calibration_samples_used() }),
            Err(e) => Ok(Message::Failed { bad_input: e.is_bad_input(), message: e.message }),
        }
    }
}

/// The data services of a worker that holds a dataset and engine, over `split` of it.
fn services<'a>(
    data: &'a Option<(Dataset, Box<dyn Engine>)>,
    split: Option<&'a TrainSplit<'a>>,
) -> Option<DataServices<'a>> {
    data.as_ref().zip(split).map(|((_, engine), split)| DataServices { engine: engine.as_ref(), split })
}

/// The protocol's stdout: a copy of file descriptor 1, after which 1 points at stderr, so a
/// plugin that prints cannot corrupt the frames.
fn protocol_stdout() -> anyhow::Result<std::fs::File> {
    // SAFETY: dup and dup2 on the process's own standard descriptors; the new descriptor is
    // owned by the returned File alone.
    unsafe {
        let fd = libc::dup(1);
        if fd < 0 || libc::dup2(2, 1) < 0 {
            anyhow::bail!("worker: cannot set up its protocol pipe: {}", std::io::Error::last_os_error());
        }
        Ok(std::fs::File::from_raw_fd(fd))
    }
}

/// Caps the data segment (heap and anonymous mappings) at `bytes`, so that a plugin that
/// allocates without bound fails an allocation (and aborts) instead of waking the machine's
/// OOM killer.
fn limit_memory(bytes: u64) {
    let limit = libc::rlimit { rlim_cur: bytes as libc::rlim_t, rlim_max: bytes as libc::rlim_t };
    // SAFETY: a plain system call on this process with a valid argument.
    if unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) } != 0 {
        tracing::warn!("worker: cannot limit memory: {}", std::io::Error::last_os_error());
    }
}

/// Asks the kernel to kill this worker when the supervisor dies (a killed bench must not
/// leave a looping plugin behind).
fn die_with_supervisor() {
    #[cfg(target_os = "linux")]
    // SAFETY: a plain system call on this process with valid arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}

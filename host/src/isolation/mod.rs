//! Plugin calls in a worker process. A plugin is third-party native code: a panic is caught
//! in-process, but an `abort()`, a segfault, an endless loop or unbounded allocation would
//! take the whole bench with it. Isolated, each `prune` call runs in a worker (this binary's
//! hidden `worker` subcommand, or that of the binary [`set_worker_executable`] names) that
//! loads the plugin, the member and the dataset and serves the data services itself; the
//! supervisor hands it tasks, reads outcomes, checks and evaluates them. A worker that dies
//! or passes the timeout is killed and replaced, and the task becomes an error row saying
//! which. Zero-copy views never leave the worker.
//!
//! Ctrl-C: workers run in their own process group, so the terminal's SIGINT reaches only
//! the supervisor, which sets `cancelled()` for every running call, waits
//! [`CANCEL_GRACE`], then kills what still runs. Rows already written stay. An embedding
//! that catches Ctrl-C itself says so with [`interrupt`].

mod protocol;
mod worker;

use std::collections::VecDeque;
use std::io::{BufReader, BufWriter};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub use protocol::{DecodeError, Message, Setup, Task};
pub use worker::serve;

use protocol::{read_message, write_message};

/// How long a cancelled call may take to return before its worker is killed.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// How often a waiting supervisor looks at the worker's reply and at Ctrl-C.
const POLL: Duration = Duration::from_millis(50);

/// The most one poll adds to a call's time (see `Worker::exchange`).
const MAX_POLL_GAP: Duration = Duration::from_secs(1);

/// How plugin calls run: the settings of `--isolate worker`.
#[derive(Debug, Clone)]
pub struct Isolation {
    /// Longest a `prune` call (or a worker's setup) may take.
    pub timeout: Duration,
    /// Each worker's memory limit, bytes.
    pub memory_limit: Option<u64>,
}

impl Isolation {
    /// From `--timeout SECONDS` and `--worker-memory MIB` (default: half the machine's
    /// memory).
    ///
    /// # Errors
    /// Bad input for a timeout that is not a positive number or a zero memory limit.
    pub fn from_args(timeout: f64, worker_memory: Option<u64>) -> anyhow::Result<Isolation> {
        if !(timeout.is_finite() && timeout > 0.0) {
            return Err(crate::failure::bad_input(format!(
                "--timeout must be a positive number of seconds, got {timeout}"
            )));
        }
        if worker_memory == Some(0) {
            return Err(crate::failure::bad_input("--worker-memory must be at least 1 MiB"));
        }
        Ok(Isolation {
            timeout: Duration::from_secs_f64(timeout),
            memory_limit: worker_memory.map(|mib| mib << 20).or_else(default_memory_limit),
        })
    }
}

impl Setup {
    /// A worker's setup for `pruner` as configured here (its plugin file, options and loaded
    /// state), with no zoo and no dataset: callers add those.
    pub fn of(
        pruner: &crate::pruning::ConfiguredPruner,
        engine: (String, String),
        calib_samples: u64,
        memory_limit: Option<u64>,
    ) -> Setup {
        Setup {
            plugin: pruner.plugin.path.clone(),
            pruner: pruner.name().to_string(),
            options: pruner.worker_assignments(),
            state: pruner.state_path.clone(),
            zoo: None,
            data: None,
            engine,
            calib_samples,
            memory_limit,
        }
    }
}

/// Fits the pruner of `setup` (which names the zoo) in a worker, which writes `state`, its
/// curve and checkpoint; `fit --isolate worker` and a bench's in-run fit. A fit has no
/// timeout (`--timeout` is per prune call); a worker that dies is one error line.
///
/// # Errors
/// The fit's failure (bad input when the worker says so), or how the worker ended.
pub fn fit_in_worker(
    setup: &Setup,
    state: &std::path::Path,
    train_members: Option<usize>,
) -> anyhow::Result<crate::fitting::FitSummary> {
    let as_error = |e: CallError| match e {
        CallError::Failed { message, bad_input: true } => crate::failure::bad_input(message),
        CallError::Failed { message, .. } => anyhow::Error::msg(message),
        CallError::Crashed(how) => anyhow::anyhow!("plugin '{}' while fitting: {how}", setup.pruner),
        CallError::Interrupted => anyhow::anyhow!("interrupted while fitting"),
    };
    let isolation = Isolation { timeout: Duration::from_secs(365 * 86_400), memory_limit: setup.memory_limit };
    let cancel = AtomicBool::new(false);
    let mut worker = Worker::start(setup, &isolation).map_err(as_error)?;
    worker.fit(state, train_members, &cancel).map_err(as_error)
}

/// Tries each setup in a worker in probe mode ([`Message::Probe`]) before the supervisor
/// does the same in-process: loading a plugin file (a setup without a pruner name), or
/// loading, configuring and loading the state of a pruner. One worker serves them in turn
/// and is replaced after a crash. Per setup: `Ok` unless the worker died or hung on it
/// (`Err` says how: [`CallError::Crashed`], or [`CallError::Interrupted`] on Ctrl-C); the
/// plugin's own errors are `Ok` here, for the in-process call to report as usual.
pub fn probe(setups: &[Setup], isolation: &Isolation) -> Vec<Result<(), CallError>> {
    let mut results = Vec::with_capacity(setups.len());
    let mut worker: Option<Worker> = None;
    for setup in setups {
        if worker.is_none() {
            match Worker::spawn(isolation) {
                Ok(mut w) => {
                    if write_message(&mut w.stdin, &Message::Probe).is_err() {
                        results.push(Err(w.died()));
                        continue;
                    }
                    worker = Some(w);
                }
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            }
        }
        let w = worker.as_mut().expect("started above");
        match w.exchange(&Message::Setup(setup.clone()), isolation.timeout, None) {
            Ok(Message::Ready | Message::Failed { .. }) => results.push(Ok(())),
            Ok(other) => {
                results.push(Err(w.broken(&format!("answered a probe with {other:?}"))));
                worker = None;
            }
            Err(e) => {
                results.push(Err(e));
                worker = None;
            }
        }
    }
    results
}

/// [`probe`]s configuring each `(pruner name, options)` as [`ConfiguredPruner::new`] and
/// the state loading after it would (the `state=FILE` host option included), in one worker.
/// A name the registry does not know is `Ok` (the in-process call reports it).
///
/// [`ConfiguredPruner::new`]: crate::pruning::ConfiguredPruner::new
pub fn probe_configure(
    registry: &crate::plugins::Registry,
    pruners: &[(String, Vec<String>)],
    isolation: &Isolation,
) -> Vec<Result<(), CallError>> {
    let setups: Vec<Option<Setup>> = pruners
        .iter()
        .map(|(name, options)| {
            let plugin = registry.get(name)?;
            let state = crate::pruning::take_host_options(options).ok().and_then(|(host, _)| host.state);
            Some(Setup {
                pruner: name.clone(),
                options: options.clone(),
                state,
                ..Setup::load_only(&plugin.path, isolation.memory_limit)
            })
        })
        .collect();
    let mut probed = probe(&setups.iter().flatten().cloned().collect::<Vec<_>>(), isolation).into_iter();
    setups.iter().map(|s| if s.is_some() { probed.next().unwrap_or(Ok(())) } else { Ok(()) }).collect()
}

impl Setup {
    /// A probe setup that only loads `plugin` (see [`probe`]).
    pub fn load_only(plugin: &std::path::Path, memory_limit: Option<u64>) -> Setup {
        Setup {
            plugin: plugin.to_path_buf(),
            pruner: String::new(),
            options: Vec::new(),
            state: None,
            zoo: None,
            data: None,
            engine: ("cpu".into(), "cpu".into()),
            calib_samples: 0,
            memory_limit,
        }
    }
}

/// The engine name (`cpu`, `burn`) and device a worker builds its engine from.
pub fn engine_of(exec: &crate::cli::ExecArgs) -> (String, String) {
    let name = clap::ValueEnum::to_possible_value(&exec.engine).map_or("cpu".into(), |v| v.get_name().to_string());
    (name, exec.device.clone())
}

pub use crate::interrupt::{catch_interrupt, clear_interrupt, interrupt, interrupted, leave_sigint_to_embedding};

/// The executable that serves workers, when it is not this one (see
/// [`set_worker_executable`]).
static WORKER_EXECUTABLE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Names the executable that workers run (with its hidden `worker` subcommand) instead of
/// this process's own. An embedding (the Python module) is not the `hyperprune` binary, so
/// it names the binary that serves workers. A later call replaces the path.
pub fn set_worker_executable(path: PathBuf) {
    *WORKER_EXECUTABLE.lock().unwrap_or_else(|e| e.into_inner()) = Some(path);
}

/// The executable a worker runs: the one [`set_worker_executable`] named, else this one.
fn worker_executable() -> Result<PathBuf, CallError> {
    if let Some(path) = WORKER_EXECUTABLE.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        return Ok(path);
    }
    std::env::current_exe().map_err(|e| CallError::Crashed(format!("cannot find this executable: {e}")))
}

/// Why a call through a worker produced no outcome. Its message is the worker's one line
/// (`Failed`), how the worker ended (`Crashed`), or `interrupted`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The worker answered with a failure (the plugin's error, or its setup's).
    #[error("{message}")]
    Failed {
        /// One line.
        message: String,
        /// Whether the user's input caused it.
        bad_input: bool,
    },
    /// The worker died, hung or broke the protocol; it was killed and will be replaced.
    #[error("{0}")]
    Crashed(String),
    /// Ctrl-C: the call was cancelled (and its worker killed if it did not return).
    #[error("interrupted")]
    Interrupted,
}

/// A supervised worker serving one pruner.
pub struct Worker {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    replies: mpsc::Receiver<std::io::Result<Option<Message>>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// The thread that fills `stderr`; it ends when the pipe does.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    memory_limit: Option<u64>,
}

/// Lines of a worker's stderr kept for the error row.
const STDERR_LINES: usize = 32;

impl Worker {
    /// Starts a worker and sets it up; waits for it to be ready.
    ///
    /// # Errors
    /// The setup failed (bad options or state, a plugin that cannot load) or the worker
    /// died or hung while setting up.
    pub fn start(setup: &Setup, isolation: &Isolation) -> Result<Worker, CallError> {
        let mut worker = Worker::spawn(isolation)?;
        match worker.exchange(&Message::Setup(setup.clone()), isolation.timeout, None)? {
            Message::Ready => Ok(worker),
            Message::Failed { message, bad_input } => Err(CallError::Failed { message, bad_input }),
            other => Err(worker.broken(&format!("answered its setup with {other:?}"))),
        }
    }

    /// Starts a worker process (not yet set up): [`set_worker_executable`]'s, else this
    /// executable, with its `worker` subcommand.
    fn spawn(isolation: &Isolation) -> Result<Worker, CallError> {
        let exe = worker_executable()?;
        let mut child = Command::new(exe)
            .args(["--quiet", "worker"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_BACKTRACE")
            .process_group(0)
            .spawn()
            .map_err(|e| CallError::Crashed(format!("cannot start a worker process: {e}")))?;
        let stdin = BufWriter::new(child.stdin.take().expect("piped"));
        let stdout = child.stdout.take().expect("piped");
        let stderr_pipe = child.stderr.take().expect("piped");
        let (send, replies) = mpsc::channel();
        std::thread::spawn(move || {
            let mut input = BufReader::new(stdout);
            loop {
                let frame = read_message(&mut input);
                let end = !matches!(frame, Ok(Some(_)));
                if send.send(frame).is_err() || end {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr);
        let stderr_reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() == STDERR_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        Ok(Worker {
            child,
            stdin,
            replies,
            stderr,
            stderr_reader: Some(stderr_reader),
            memory_limit: isolation.memory_limit,
        })
    }

    /// Runs one task. On `Crashed` and `Interrupted` the worker is dead: drop it.
    ///
    /// # Errors
    /// See [`CallError`].
    pub fn prune(
        &mut self,
        task: &Task,
        timeout: Duration,
        cancel: &AtomicBool,
    ) -> Result<(hyperprune_sdk::PruneOutcome, f64, u64), CallError> {
        match self.exchange(&Message::Task(task.clone()), timeout, Some(cancel))? {
            Message::Outcome { outcome, seconds, calib_samples } => Ok((outcome, seconds, calib_samples)),
            Message::Failed { message, bad_input } => Err(CallError::Failed { message, bad_input }),
            other => Err(self.broken(&format!("answered a task with {other:?}"))),
        }
    }

    /// Fits the worker's pruner on its zoo and writes the state to `state`. A fit has no
    /// timeout; Ctrl-C cancels it like a prune call.
    ///
    /// # Errors
    /// See [`CallError`].
    pub fn fit(
        &mut self,
        state: &std::path::Path,
        train_members: Option<usize>,
        cancel: &AtomicBool,
    ) -> Result<crate::fitting::FitSummary, CallError> {
        let message = Message::Fit { state: state.to_path_buf(), train_members };
        match self.exchange(&message, Duration::MAX, Some(cancel))? {
            Message::Fitted(summary) => serde_json::from_value(summary)
                .map_err(|e| self.broken(&format!("sent a fit summary that does not parse ({e})"))),
            Message::Failed { message, bad_input } => Err(CallError::Failed { message, bad_input }),
            other => Err(self.broken(&format!("answered a fit with {other:?}"))),
        }
    }

    /// Sends `message` and waits for the reply, at most `timeout`; watches Ctrl-C and
    /// `cancel` (the bench stopping) while it waits.
    fn exchange(
        &mut self,
        message: &Message,
        timeout: Duration,
        cancel: Option<&AtomicBool>,
    ) -> Result<Message, CallError> {
        if write_message(&mut self.stdin, message).is_err() {
            return Err(self.died());
        }
        // The call's time: the time this process waited while it ran. A poll that took far
        // longer than its 50 ms means this process was stopped (Ctrl-Z, SIGSTOP) or the
        // machine slept, and its worker with it: that gap counts as one poll, so a bench
        // suspended and resumed does not time out the call it was in.
        let (mut waited, mut last) = (Duration::ZERO, Instant::now());
        let mut cancelled_at: Option<Instant> = None;
        loop {
            let reply = self.replies.recv_timeout(POLL);
            let now = Instant::now();
            waited += (now - last).min(MAX_POLL_GAP);
            last = now;
            match reply {
                Ok(Ok(Some(reply))) => {
                    return if cancelled_at.is_some() { Err(CallError::Interrupted) } else { Ok(reply) };
                }
                Ok(Ok(None)) | Err(mpsc::RecvTimeoutError::Disconnected) => return Err(self.died()),
                Ok(Err(e)) => return Err(self.broken(&format!("sent a frame that does not decode ({e})"))),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            let stop = interrupted() || cancel.is_some_and(|c| c.load(Ordering::SeqCst));
            match cancelled_at {
                None if stop => {
                    let _ = write_message(&mut self.stdin, &Message::Cancel);
                    cancelled_at = Some(Instant::now());
                }
                Some(at) if at.elapsed() > CANCEL_GRACE => {
                    self.kill();
                    return Err(CallError::Interrupted);
                }
                _ => {}
            }
            if cancelled_at.is_none() && waited > timeout {
                self.kill();
                return Err(CallError::Crashed(format!(
                    "timed out after {} s (the worker was killed; raise --timeout for slower pruners)",
                    timeout.as_secs_f64()
                )));
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The worker broke the protocol: kill it and say so.
    fn broken(&mut self, what: &str) -> CallError {
        self.kill();
        CallError::Crashed(format!("the worker {what}; it was killed"))
    }

    /// The worker's pipe closed: wait for it and say how it ended.
    fn died(&mut self) -> CallError {
        let status = self.child.wait();
        // The worker's last lines (an allocation failure's message, a panic) may still be in
        // the pipe: the reader ends at the pipe's end, which follows the worker's exit unless
        // another process holds the pipe, so wait for it, but not for long.
        if let Some(reader) = self.stderr_reader.take() {
            let start = std::time::Instant::now();
            while !reader.is_finished() && start.elapsed() < std::time::Duration::from_secs(2) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        let tail: Vec<String> = self.stderr.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        CallError::Crashed(describe_death(status.ok(), &tail, self.memory_limit))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// One line on how a worker ended: the signal or exit code, what it means, and the last
/// thing it printed.
fn describe_death(status: Option<std::process::ExitStatus>, stderr: &[String], memory_limit: Option<u64>) -> String {
    let last =
        stderr.iter().map(|l| l.trim()).rev().find(|l| !l.is_empty() && !l.starts_with("note:")).map(str::to_string);
    let out_of_memory = stderr.iter().any(|l| l.trim_start().starts_with("memory allocation of"));
    let how = match status {
        _ if out_of_memory => format!(
            "ran out of memory{}",
            memory_limit.map_or(String::new(), |b| format!(
                " (the worker's limit is {} MiB; raise it with --worker-memory)",
                b >> 20
            ))
        ),
        Some(s) => match s.signal() {
            Some(libc::SIGABRT) => "aborted (SIGABRT)".to_string(),
            Some(libc::SIGSEGV) => "crashed with a segmentation fault (SIGSEGV)".to_string(),
            Some(libc::SIGBUS) => "crashed with a bus error (SIGBUS)".to_string(),
            Some(libc::SIGILL) => "crashed on an illegal instruction (SIGILL)".to_string(),
            Some(libc::SIGFPE) => "crashed on an arithmetic fault (SIGFPE)".to_string(),
            Some(libc::SIGKILL) => "was killed (SIGKILL; by the OOM killer?)".to_string(),
            Some(signal) => format!("was killed by signal {signal}"),
            None => format!("exited with code {}", s.code().unwrap_or(-1)),
        },
        None => "vanished".to_string(),
    };
    match last {
        Some(line) if !out_of_memory => format!("the worker {how}; its last words: {line}"),
        _ => format!("the worker {how}"),
    }
}

/// Keeps freed memory for reuse instead of handing it back to the kernel after every call:
/// glibc serves allocations of 128 KiB and more with fresh `mmap`s and trims the heap as
/// soon as 128 KiB are free at its top, so a pruner that allocates and frees its buffers call
/// after call page-faults them in every time. Raising both thresholds (to 32 MiB, glibc's
/// maximum for `mmap`, and 1 GiB) took a digits bench of maskopt and chita from 4.6 s to
/// 0.5 s of system time. Called by a bench (both `--isolate` modes) and by its workers.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; valid values for both.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// The default memory limit of a worker: half the machine's memory (None where unknown).
pub fn default_memory_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024 / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deaths_are_told_apart() {
        let signal = |s: i32| Some(std::process::ExitStatus::from_raw(s));
        let code = |c: i32| Some(std::process::ExitStatus::from_raw(c << 8));
        assert_eq!(
            describe_death(signal(libc::SIGSEGV), &[], None),
            "the worker crashed with a segmentation fault (SIGSEGV)"
        );
        assert_eq!(
            describe_death(
                signal(libc::SIGABRT),
                &["".into(), "fatal runtime error: x".into(), "note: y".into()],
                None
            ),
            "the worker aborted (SIGABRT); its last words: fatal runtime error: x"
        );
        let tail = ["memory allocation of 67108864 bytes failed".into(), "stack backtrace:".into(), "note: z".into()];
        let oom = describe_death(signal(libc::SIGABRT), &tail, Some(512 << 20));
        assert!(oom.contains("ran out of memory (the worker's limit is 512 MiB"), "{oom}");
        assert_eq!(describe_death(code(3), &[], None), "the worker exited with code 3");
    }

    #[test]
    fn interrupt_sets_the_flag_and_clear_interrupt_resets_it() {
        // No other unit test reads the flag (none runs a worker or a bench), so setting it
        // here races nothing.
        interrupt();
        assert!(interrupted());
        clear_interrupt();
        assert!(!interrupted());
    }

    #[test]
    fn call_errors_read_as_their_message() {
        assert_eq!(
            CallError::Failed { message: "plugin 'x' failed: y".into(), bad_input: true }.to_string(),
            "plugin 'x' failed: y"
        );
        assert_eq!(
            CallError::Crashed("the worker exited with code 3".into()).to_string(),
            "the worker exited with code 3"
        );
        assert_eq!(CallError::Interrupted.to_string(), "interrupted");
    }
}

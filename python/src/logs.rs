//! The host's log events, handed to Python's `logging` (and progress to a tqdm bar) by the
//! Python half of the module.
//!
//! A `tracing` layer installed once when the module is imported queues every event at debug
//! level or above, and the progress events (target `hyperprune::progress`, fields `done`,
//! `total`, `unit`); the thread that waits for a long call drains the queue into the sink set
//! by `set_log_sink` whenever it holds the GIL. Without a sink the queue is dropped.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// One event: `(python logging level, target, message, done, total, unit)`; `done`/`total`
/// are -1 for a plain log line.
type Record = (u8, String, String, i64, i64, String);

/// Events waiting for the next flush; bounded so that a caller that never flushes does not
/// grow without limit.
static QUEUE: Mutex<VecDeque<Record>> = Mutex::new(VecDeque::new());
const QUEUE_LIMIT: usize = 10_000;

/// The Python callable `sink(records)` that receives the events.
static SINK: Mutex<Option<Py<PyAny>>> = Mutex::new(None);

use hyperprune_host::logging::PROGRESS;

/// Sets the callable that receives the host's events: `sink(records)`, each record
/// `(level, target, message, done, total, unit)` with a `logging` level (10 debug .. 40
/// error); `done`/`total` are -1 except on progress events. `None` drops events.
#[pyfunction]
#[pyo3(signature = (sink))]
pub fn set_log_sink(sink: Option<Py<PyAny>>) {
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = sink;
}

/// Hands the queued events to the sink (the caller holds the GIL). A sink that raises an
/// `Exception` is reported with Python's `sys.unraisablehook` and the events are not retried.
/// Anything else it raises (a `KeyboardInterrupt`: Python runs its signal handlers inside
/// whatever Python code runs next, which is often the sink) is returned for the caller to
/// act on.
pub fn flush(py: Python<'_>) -> Result<(), PyErr> {
    let records: Vec<Record> = QUEUE.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
    if records.is_empty() {
        return Ok(());
    }
    let sink = SINK.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|s| s.clone_ref(py));
    if let Some(sink) = sink
        && let Err(err) = sink.call1(py, (records,))
    {
        if !err.is_instance_of::<PyException>(py) {
            return Err(err);
        }
        err.write_unraisable(py, None);
    }
    Ok(())
}

/// Installs the capturing layer as the global `tracing` subscriber (once; a no-op when the
/// embedding process already set one).
pub fn install() {
    hyperprune_host::logging::set_bars(false);
    let subscriber = tracing_subscriber::registry().with(Capture);
    let _ = tracing::subscriber::set_global_default(subscriber);
}

struct Capture;

impl<S: Subscriber> Layer<S> for Capture {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        *metadata.level() <= Level::DEBUG || metadata.target() == PROGRESS
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = match *meta.level() {
            Level::ERROR => 40,
            Level::WARN => 30,
            Level::INFO => 20,
            Level::DEBUG => 10,
            Level::TRACE => 5,
        };
        let record = (level, meta.target().to_string(), fields.message, fields.done, fields.total, fields.unit);
        let mut queue = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() >= QUEUE_LIMIT {
            queue.pop_front();
        }
        queue.push_back(record);
    }
}

/// The fields of an event: its message (other fields appended as `name=value`) and the
/// progress fields.
struct Fields {
    message: String,
    done: i64,
    total: i64,
    unit: String,
}

impl Default for Fields {
    fn default() -> Fields {
        Fields { message: String::new(), done: -1, total: -1, unit: String::new() }
    }
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "done" => self.done = value as i64,
            "total" => self.total = value as i64,
            name => {
                let _ = write!(self.message, " {name}={value}");
            }
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "unit" => self.unit = value.to_string(),
            "message" => self.message.insert_str(0, value),
            name => {
                let _ = write!(self.message, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message.insert_str(0, &format!("{value:?}"));
        } else {
            let _ = write!(self.message, " {}={value:?}", field.name());
        }
    }
}

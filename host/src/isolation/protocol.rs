//! What the supervisor and a worker say to each other over the worker's stdin and stdout:
//! length-prefixed frames (`u64` little-endian length, then the payload), each payload a tag
//! byte and its body. Setup, tasks and errors are JSON; an outcome is packed binary (the
//! masks' words and new weights as they are, so nothing is rounded on the way).

use std::io::{Read, Write};
use std::path::PathBuf;

use abi_stable::std_types::{ROption, RVec};
use hyperprune_sdk::{LayerMask, Pattern, PruneOutcome, PruneRequest, Scope};
use serde::{Deserialize, Serialize};

/// Supervisor → worker, once: which pruner to serve and what it may use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    /// The plugin file (the one the supervisor loaded).
    pub plugin: PathBuf,
    /// Pruner name.
    pub pruner: String,
    /// The pruner's options as `name=value`, host-level ones (`sparsity_check`) included.
    pub options: Vec<String>,
    /// The state file to load, for a learnable pruner.
    pub state: Option<PathBuf>,
    /// The zoo whose members the tasks name (None when the tasks name model files).
    pub zoo: Option<PathBuf>,
    /// The dataset, for a pruner that prunes with data: name and folder.
    pub data: Option<(String, Option<PathBuf>)>,
    /// Engine name (`cpu`, `burn`) and device of the data services.
    pub engine: (String, String),
    /// Calibration samples a data service uses for "the default".
    pub calib_samples: u64,
    /// The worker's memory limit (`RLIMIT_DATA`), bytes.
    pub memory_limit: Option<u64>,
}

/// Supervisor → worker: prune one member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Member id in the zoo (empty when `model` is given).
    pub member: String,
    /// A model file and its optional architecture override, instead of a zoo member.
    #[serde(default)]
    pub model: Option<(PathBuf, Option<String>)>,
    /// Requested sparsity.
    pub sparsity: f64,
    /// `global` or `layer`.
    pub scope: String,
    /// N:M pattern, if any.
    pub nm: Option<(u32, u32)>,
    /// Seed.
    pub seed: u64,
}

impl Task {
    /// The task for `request` on member `member`.
    pub fn new(member: &str, request: &PruneRequest) -> Task {
        Task {
            member: member.to_string(),
            model: None,
            sparsity: request.sparsity,
            scope: match request.scope {
                Scope::Global => "global".into(),
                Scope::PerLayer => "layer".into(),
            },
            nm: match request.pattern {
                Pattern::Unstructured => None,
                Pattern::NM { n, m } => Some((n, m)),
            },
            seed: request.seed,
        }
    }

    /// The request it carries.
    pub fn request(&self) -> PruneRequest {
        PruneRequest {
            sparsity: self.sparsity,
            scope: if self.scope == "layer" { Scope::PerLayer } else { Scope::Global },
            pattern: self.nm.map_or(Pattern::Unstructured, |(n, m)| Pattern::NM { n, m }),
            seed: self.seed,
        }
    }
}

/// One frame's meaning.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Supervisor → worker: set up (first frame).
    Setup(Setup),
    /// Supervisor → worker: run a task.
    Task(Task),
    /// Supervisor → worker: set `cancelled()` for the running call.
    Cancel,
    /// Supervisor → worker, as the first frame instead of a setup: probe mode. Each setup
    /// that follows is only tried (load the plugin, call `info`; with a pruner name, also
    /// instantiate, configure and load the state) and answered `Ready` or `Failed`, so the
    /// supervisor learns which plugin file or pruner crashes before it calls one in-process.
    Probe,
    /// Supervisor → worker: fit the pruner on the setup's zoo and write the state to this
    /// file (curve and checkpoint beside it), on the first `train_members` train members.
    Fit {
        /// The state file.
        state: PathBuf,
        /// `fit --train-members`.
        train_members: Option<usize>,
    },
    /// Worker → supervisor: the fit finished (a `FitSummary` as JSON).
    Fitted(serde_json::Value),
    /// Worker → supervisor: set up and waiting for tasks.
    Ready,
    /// Worker → supervisor: the setup or the task failed (one line; `bad_input` when the
    /// user's input caused it).
    Failed {
        /// The message.
        message: String,
        /// Whether it is the user's input (options, state) rather than the plugin.
        bad_input: bool,
    },
    /// Worker → supervisor: the plugin's outcome, unchecked.
    Outcome {
        /// The outcome as the plugin returned it.
        outcome: PruneOutcome,
        /// Wall time of the `prune` call, seconds.
        seconds: f64,
        /// Calibration samples it used.
        calib_samples: u64,
    },
}

/// Writes one frame and flushes.
///
/// # Errors
/// I/O errors (a worker that died closes its pipes).
pub fn write_message(out: &mut impl Write, message: &Message) -> std::io::Result<()> {
    let payload = encode(message);
    out.write_all(&(payload.len() as u64).to_le_bytes())?;
    out.write_all(&payload)?;
    out.flush()
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
///
/// # Errors
/// I/O errors, or a frame that does not decode.
pub fn read_message(input: &mut impl Read) -> std::io::Result<Option<Message>> {
    let mut len = [0u8; 8];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u64::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(invalid(DecodeError::TooLarge(len)));
    }
    // Read what arrives rather than allocate what the length claims.
    let mut payload = Vec::new();
    input.take(len).read_to_end(&mut payload)?;
    if payload.len() as u64 != len {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, DecodeError::CutShort));
    }
    decode(&payload).map(Some).map_err(invalid)
}

/// The largest frame either side accepts: 4 GiB (a model of a billion weights with new
/// weights would not fit, and is not what this harness runs).
const MAX_FRAME: u64 = 4 << 30;

/// Why a frame does not decode. [`read_message`] returns it inside an [`std::io::Error`]
/// (kind `InvalidData`, or `UnexpectedEof` for [`DecodeError::CutShort`]), whose message is
/// this one.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The length prefix claims more than [`MAX_FRAME`] bytes.
    #[error("a frame of {0} bytes (at most {MAX_FRAME})")]
    TooLarge(u64),
    /// The stream ended inside a frame.
    #[error("a frame cut short")]
    CutShort,
    /// A frame with no tag byte.
    #[error("an empty frame")]
    Empty,
    /// A tag byte that names no message.
    #[error("a frame with the unknown tag {0}")]
    UnknownTag(u8),
    /// The body of a JSON frame (setup, task, fit, fitted, failure) is not JSON.
    #[error("a {what} frame that is not JSON: {error}")]
    NotJson {
        /// Which frame.
        what: &'static str,
        /// The parser's error.
        error: serde_json::Error,
    },
    /// A setup or task frame whose JSON does not have the message's fields.
    #[error("{0}")]
    Fields(serde_json::Error),
    /// A fit frame without its `state` path.
    #[error("a fit frame without a state path")]
    FitWithoutState,
    /// An outcome frame that ends before its last field.
    #[error("a truncated outcome frame")]
    Truncated,
    /// A length in an outcome frame larger than what is left of the frame.
    #[error("a count of {count} in a frame with {left} bytes left")]
    CountTooLarge {
        /// The count the frame claims.
        count: u64,
        /// Bytes left in the frame.
        left: usize,
    },
    /// A layer name in an outcome frame that is not UTF-8.
    #[error("a layer name: {0}")]
    LayerName(std::string::FromUtf8Error),
    /// Bytes left over after an outcome.
    #[error("{0} bytes after the outcome")]
    TrailingBytes(usize),
}

fn invalid(error: DecodeError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, error)
}

fn encode(message: &Message) -> Vec<u8> {
    let json = |tag: u8, value: serde_json::Value| {
        let mut v = vec![tag];
        v.extend_from_slice(value.to_string().as_bytes());
        v
    };
    match message {
        Message::Setup(s) => json(b'S', serde_json::to_value(s).expect("a setup serialises")),
        Message::Task(t) => json(b'T', serde_json::to_value(t).expect("a task serialises")),
        Message::Cancel => vec![b'C'],
        Message::Probe => vec![b'P'],
        Message::Fit { state, train_members } => {
            json(b'F', serde_json::json!({ "state": state, "train_members": train_members }))
        }
        Message::Fitted(summary) => json(b'D', summary.clone()),
        Message::Ready => vec![b'R'],
        Message::Failed { message, bad_input } => {
            json(b'E', serde_json::json!({ "message": message, "bad_input": bad_input }))
        }
        Message::Outcome { outcome, seconds, calib_samples } => {
            let mut v = vec![b'O'];
            v.extend_from_slice(&seconds.to_le_bytes());
            v.extend_from_slice(&calib_samples.to_le_bytes());
            v.extend_from_slice(&(outcome.layers.len() as u64).to_le_bytes());
            for layer in outcome.layers.iter() {
                v.extend_from_slice(&(layer.name.len() as u64).to_le_bytes());
                v.extend_from_slice(layer.name.as_bytes());
                v.extend_from_slice(&layer.len.to_le_bytes());
                v.extend_from_slice(&(layer.keep_bits.len() as u64).to_le_bytes());
                for word in layer.keep_bits.iter() {
                    v.extend_from_slice(&word.to_le_bytes());
                }
                match layer.new_weights.as_ref().into_option() {
                    None => v.push(0),
                    Some(w) => {
                        v.push(1);
                        v.extend_from_slice(&(w.len() as u64).to_le_bytes());
                        for x in w.iter() {
                            v.extend_from_slice(&x.to_le_bytes());
                        }
                    }
                }
            }
            v
        }
    }
}

fn decode(payload: &[u8]) -> Result<Message, DecodeError> {
    let (&tag, body) = payload.split_first().ok_or(DecodeError::Empty)?;
    let json = |what: &'static str| -> Result<serde_json::Value, DecodeError> {
        serde_json::from_slice(body).map_err(|error| DecodeError::NotJson { what, error })
    };
    match tag {
        b'S' => serde_json::from_value(json("setup")?).map(Message::Setup).map_err(DecodeError::Fields),
        b'T' => serde_json::from_value(json("task")?).map(Message::Task).map_err(DecodeError::Fields),
        b'C' => Ok(Message::Cancel),
        b'P' => Ok(Message::Probe),
        b'F' => {
            let v = json("fit")?;
            Ok(Message::Fit {
                state: v["state"].as_str().map(PathBuf::from).ok_or(DecodeError::FitWithoutState)?,
                train_members: v["train_members"].as_u64().map(|k| k as usize),
            })
        }
        b'D' => json("fitted").map(Message::Fitted),
        b'R' => Ok(Message::Ready),
        b'E' => {
            let v = json("failure")?;
            Ok(Message::Failed {
                message: v["message"].as_str().unwrap_or("(no message)").to_string(),
                bad_input: v["bad_input"].as_bool().unwrap_or(false),
            })
        }
        b'O' => decode_outcome(body),
        other => Err(DecodeError::UnknownTag(other)),
    }
}

fn decode_outcome(body: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { bytes: body, at: 0 };
    let seconds = f64::from_le_bytes(r.take::<8>()?);
    let calib_samples = r.u64()?;
    let layers = r.u64()?;
    let mut out = RVec::new();
    for _ in 0..layers {
        let name_len = r.len()?;
        let name = String::from_utf8(r.slice(name_len)?.to_vec()).map_err(DecodeError::LayerName)?;
        let len = r.u64()?;
        let words = r.len()?;
        let keep_bits: RVec<u64> = (0..words).map(|_| r.u64()).collect::<Result<_, _>>()?;
        let new_weights = match r.take::<1>()?[0] {
            0 => ROption::RNone,
            _ => {
                let n = r.len()?;
                let w: RVec<f32> = (0..n).map(|_| r.take::<4>().map(f32::from_le_bytes)).collect::<Result<_, _>>()?;
                ROption::RSome(w)
            }
        };
        out.push(LayerMask { name: name.into(), len, keep_bits, new_weights });
    }
    if r.at != body.len() {
        return Err(DecodeError::TrailingBytes(body.len() - r.at));
    }
    Ok(Message::Outcome { outcome: PruneOutcome { layers: out }, seconds, calib_samples })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn slice(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or(DecodeError::Truncated)?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.slice(N)?.try_into().expect("N bytes"))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.take::<8>().map(u64::from_le_bytes)
    }

    /// A count that must fit in what is left of the frame (at one byte per item).
    fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        let left = self.bytes.len() - self.at;
        if n > left as u64 {
            return Err(DecodeError::CountTooLarge { count: n, left });
        }
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(message: &Message) -> Message {
        let mut buf = Vec::new();
        write_message(&mut buf, message).unwrap();
        let mut input = buf.as_slice();
        let back = read_message(&mut input).unwrap().unwrap();
        assert!(read_message(&mut input).unwrap().is_none(), "one frame, then a clean end");
        back
    }

    #[test]
    fn every_message_survives_the_pipe_bit_for_bit() {
        let mut layer = LayerMask::from_keep("conv1.weight", &[true, false, true]);
        layer.new_weights = ROption::RSome(vec![0.1f32, f32::MIN_POSITIVE, -3.5e-38].into());
        let outcome = PruneOutcome { layers: vec![layer, LayerMask::from_keep("fc.weight", &[true; 130])].into() };
        let messages = [
            Message::Outcome { outcome, seconds: 0.1 + 0.2, calib_samples: 7 },
            Message::Ready,
            Message::Cancel,
            Message::Probe,
            Message::Fit { state: "/s/h.state".into(), train_members: Some(4) },
            Message::Fitted(serde_json::json!({ "train": 4, "seconds": 0.5 })),
            Message::Failed { message: "plugin 'x' failed: ünïcode".into(), bad_input: true },
            Message::Task(Task::new(
                "0007",
                &PruneRequest {
                    sparsity: 1.0 - 1.0 / 3.0,
                    scope: Scope::PerLayer,
                    pattern: Pattern::NM { n: 2, m: 4 },
                    seed: 9,
                },
            )),
        ];
        for m in &messages {
            assert_eq!(&round_trip(m), m);
        }
        let Some(Message::Task(t)) = messages.last() else { unreachable!("the task is last") };
        assert_eq!(t.request().sparsity.to_bits(), (1.0f64 - 1.0 / 3.0).to_bits());
    }

    #[test]
    fn truncated_or_lying_frames_are_errors_not_panics() {
        let mut buf = Vec::new();
        let outcome = PruneOutcome { layers: vec![LayerMask::from_keep("w", &[true; 70])].into() };
        write_message(&mut buf, &Message::Outcome { outcome, seconds: 1.0, calib_samples: 0 }).unwrap();
        for cut in 1..buf.len() {
            let mut short = &buf[..cut];
            if cut >= 8 {
                assert!(read_message(&mut short).is_err(), "cut at {cut}");
            }
        }
        // A count far beyond the frame.
        let mut lying = buf.clone();
        lying[8 + 1 + 16..8 + 1 + 24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(read_message(&mut lying.as_slice()).is_err());
        assert!(read_message(&mut [9u8, 0, 0, 0, 0, 0, 0, 0, b'Z'].as_slice()).is_err());
    }

    #[test]
    fn a_frame_that_does_not_decode_says_why_in_a_typed_error() {
        let decode_error = |bytes: &[u8]| {
            let e = read_message(&mut &bytes[..]).unwrap_err();
            let message = e.to_string();
            let inner = e.into_inner().expect("a decode error inside");
            assert!(inner.is::<DecodeError>(), "{message}");
            message
        };
        assert_eq!(decode_error(&[1, 0, 0, 0, 0, 0, 0, 0, b'Z']), "a frame with the unknown tag 90");
        assert_eq!(decode_error(&[0; 8]), "an empty frame");
        assert_eq!(
            decode_error(&[3, 0, 0, 0, 0, 0, 0, 0, b'F', b'{', b'x']).split(':').next(),
            Some("a fit frame that is not JSON")
        );
        assert_eq!(decode_error(&[3, 0, 0, 0, 0, 0, 0, 0, b'F', b'{', b'}']), "a fit frame without a state path");
        assert_eq!(decode_error(&[2, 0, 0, 0, 0, 0, 0, 0, b'O', 1]), "a truncated outcome frame");
        let mut huge = (MAX_FRAME + 1).to_le_bytes().to_vec();
        huge.push(b'R');
        assert_eq!(decode_error(&huge), format!("a frame of {} bytes (at most {MAX_FRAME})", MAX_FRAME + 1));
        let cut = read_message(&mut &[4u8, 0, 0, 0, 0, 0, 0, 0, b'R'][..]).unwrap_err();
        assert_eq!((cut.kind(), cut.to_string()), (std::io::ErrorKind::UnexpectedEof, "a frame cut short".into()));
    }

    #[test]
    fn property_mutated_frames_never_panic() {
        let mut valid = Vec::new();
        let mut layer = LayerMask::from_keep("w", &[true; 70]);
        layer.new_weights = ROption::RSome(vec![0.5f32; 70].into());
        let outcome = PruneOutcome { layers: vec![layer].into() };
        write_message(&mut valid, &Message::Outcome { outcome, seconds: 1.0, calib_samples: 3 }).unwrap();
        write_message(&mut valid, &Message::Failed { message: "x".into(), bad_input: false }).unwrap();
        for (case, bytes) in crate::testing::mutants(&valid, 3000, 13).into_iter().enumerate() {
            let result = std::panic::catch_unwind(|| {
                let mut input = bytes.as_slice();
                while let Ok(Some(_)) = read_message(&mut input) {}
            });
            assert!(result.is_ok(), "case {case} panicked");
        }
    }
}

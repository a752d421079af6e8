//! The state file's format: [`STATE_MAGIC`], one line of JSON ([`StateHeader`]), then the
//! plugin's bytes, and the fit checkpoint's alike ([`CHECKPOINT_MAGIC`]). Free of the rest of
//! the host (serde only); the `state` fuzz target in `fuzz/` calls [`decode_state`]. What fits
//! and keys states is in [`crate::fitting`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The first line of a state file the host wrote: [`STATE_MAGIC`], then one line of JSON
/// ([`StateHeader`]), then the plugin's bytes. A file without it is a bare plugin state
/// (written before states were keyed): it loads, with a warning that its fit zoo is unknown.
pub const STATE_MAGIC: &[u8] = b"hyperprune-state/1\n";

/// What the host knows about a fitted state: enough to key it and to warn when it meets a
/// zoo it was not fitted for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateHeader {
    /// Pruner name.
    pub pruner: String,
    /// Plugin version that fitted it.
    pub pruner_version: String,
    /// The plugin's options at fit time, defaults filled in (host options left out).
    pub options: serde_json::Value,
    /// The zoo it was fitted on.
    pub fit_zoo: FitZoo,
}

/// A fit zoo's identity: its name, dataset and architectures, and a hash of its train split
/// as `zoo.json` records it (member ids, files, hyperparameters, accuracies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FitZoo {
    /// Zoo name.
    pub name: String,
    /// Dataset its members were trained on.
    pub dataset: String,
    /// Architecture names of its train members, sorted, without repeats.
    pub archs: Vec<String>,
    /// Train members fitted on.
    pub train_members: usize,
    /// 16 hex digits: the FNV-1a hash of the train members' `zoo.json` records.
    pub train_hash: String,
}

/// A state file's contents: the host's header, if it has one, and the plugin's bytes.
#[derive(Debug)]
pub struct StateFile {
    /// None for a bare plugin state.
    pub header: Option<StateHeader>,
    /// What the plugin's `load_state` gets.
    pub payload: Vec<u8>,
}

/// Why a state or checkpoint file does not decode. Every message starts with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// A state file whose header line after the magic has no end.
    #[error("{}: corrupt state file: the header line after 'hyperprune-state/1' is cut off", .path.display())]
    StateHeaderCut {
        /// The state file.
        path: PathBuf,
    },
    /// A state file whose header line is not a [`StateHeader`].
    #[error(
        "{}: corrupt state file: the header is not {{pruner, pruner_version, options, fit_zoo}} ({error})",
        .path.display()
    )]
    StateHeaderInvalid {
        /// The state file.
        path: PathBuf,
        /// The parser's error.
        error: serde_json::Error,
    },
    /// A file that does not start with [`CHECKPOINT_MAGIC`].
    #[error(
        "{}: not a fit checkpoint (it does not start with 'hyperprune-checkpoint/1'); delete it to fit from scratch",
        .path.display()
    )]
    NotACheckpoint {
        /// The checkpoint file.
        path: PathBuf,
    },
    /// A checkpoint whose header line has no end.
    #[error("{}: corrupt checkpoint: the header line is cut off; delete it to fit from scratch", .path.display())]
    CheckpointHeaderCut {
        /// The checkpoint file.
        path: PathBuf,
    },
    /// A checkpoint whose header line is not a [`CheckpointHeader`].
    #[error(
        "{}: corrupt checkpoint: the header is not {{fit, curve_rows}} ({error}); delete it to fit from scratch",
        .path.display()
    )]
    CheckpointHeaderInvalid {
        /// The checkpoint file.
        path: PathBuf,
        /// The parser's error.
        error: serde_json::Error,
    },
}

/// The bytes of a state file: magic, header line, payload.
pub fn encode_state(header: &StateHeader, payload: &[u8]) -> Vec<u8> {
    let mut bytes = STATE_MAGIC.to_vec();
    bytes.extend_from_slice(serde_json::to_string(header).expect("a header serialises").as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(payload);
    bytes
}

/// Splits a state file's bytes; `path` is only for the message.
///
/// # Errors
/// A file that starts like a host state but whose header line is missing or not a header.
pub fn decode_state(path: &Path, bytes: &[u8]) -> Result<StateFile, StateFileError> {
    let Some(rest) = bytes.strip_prefix(STATE_MAGIC) else {
        return Ok(StateFile { header: None, payload: bytes.to_vec() });
    };
    let end = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| StateFileError::StateHeaderCut { path: path.to_path_buf() })?;
    let header: StateHeader = serde_json::from_slice(&rest[..end])
        .map_err(|error| StateFileError::StateHeaderInvalid { path: path.to_path_buf(), error })?;
    Ok(StateFile { header: Some(header), payload: rest[end + 1..].to_vec() })
}

/// The first line of a fit checkpoint the host wrote: [`CHECKPOINT_MAGIC`], one line of JSON
/// ([`CheckpointHeader`]), then the plugin's checkpoint bytes.
pub const CHECKPOINT_MAGIC: &[u8] = b"hyperprune-checkpoint/1\n";

/// What the host records with a checkpoint: which fit wrote it (a checkpoint is resumed only
/// by the same fit) and how many curve rows that fit had recorded when it was written (a
/// resumed fit cuts the rows recorded after it, which it records again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointHeader {
    /// The pruner, version, options and fit zoo of the fit.
    pub fit: StateHeader,
    /// Curve rows recorded before the checkpoint.
    pub curve_rows: u64,
}

/// The bytes of a checkpoint file: magic, header line, the plugin's checkpoint.
pub fn encode_checkpoint(header: &CheckpointHeader, payload: &[u8]) -> Vec<u8> {
    let mut bytes = CHECKPOINT_MAGIC.to_vec();
    bytes.extend_from_slice(serde_json::to_string(header).expect("a header serialises").as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(payload);
    bytes
}

/// Splits a checkpoint file's bytes; `path` is only for the message.
///
/// # Errors
/// A file that is not a checkpoint the host wrote, or whose header line is cut or corrupt.
pub fn decode_checkpoint(path: &Path, bytes: &[u8]) -> Result<(CheckpointHeader, Vec<u8>), StateFileError> {
    let rest = bytes
        .strip_prefix(CHECKPOINT_MAGIC)
        .ok_or_else(|| StateFileError::NotACheckpoint { path: path.to_path_buf() })?;
    let end = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| StateFileError::CheckpointHeaderCut { path: path.to_path_buf() })?;
    let header: CheckpointHeader = serde_json::from_slice(&rest[..end])
        .map_err(|error| StateFileError::CheckpointHeaderInvalid { path: path.to_path_buf(), error })?;
    Ok((header, rest[end + 1..].to_vec()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn header() -> StateHeader {
        StateHeader {
            pruner: "hypernet".into(),
            pruner_version: "0.2.0".into(),
            options: serde_json::json!({"steps": 600, "mask": "topk"}),
            fit_zoo: FitZoo {
                name: "fmnist-cnn-s".into(),
                dataset: "fashion-mnist".into(),
                archs: vec!["cnn-s".into()],
                train_members: 48,
                train_hash: "0123456789abcdef".into(),
            },
        }
    }

    #[test]
    fn a_state_file_is_magic_header_payload_and_a_bare_state_still_reads() {
        let path = Path::new("s.state");
        let payload = b"\x00\n{not json}\n\xff".to_vec();
        let file = decode_state(path, &encode_state(&header(), &payload)).unwrap();
        assert_eq!((file.header, file.payload), (Some(header()), payload.clone()));
        let bare = decode_state(path, &payload).unwrap();
        assert_eq!((bare.header, bare.payload), (None, payload));
        let mut cut = STATE_MAGIC.to_vec();
        cut.extend_from_slice(b"{\"pruner\":");
        assert_eq!(
            decode_state(path, &cut).unwrap_err().to_string(),
            "s.state: corrupt state file: the header line after 'hyperprune-state/1' is cut off"
        );
        let mut wrong = STATE_MAGIC.to_vec();
        wrong.extend_from_slice(b"[1,2]\npayload");
        let e = decode_state(path, &wrong).unwrap_err().to_string();
        assert!(e.starts_with("s.state: corrupt state file: the header is not {pruner, pruner_version"), "{e}");
    }

    #[test]
    fn property_mutated_state_files_never_panic_and_errors_name_the_file() {
        let path = Path::new("/runs/x/state/hypernet.state");
        let valid = encode_state(&header(), b"payload bytes");
        let mut refused = 0;
        for (case, bytes) in crate::testing::mutants(&valid, 3000, 12).into_iter().enumerate() {
            let result = std::panic::catch_unwind(|| decode_state(path, &bytes));
            if let Err(e) = result.unwrap_or_else(|_| panic!("case {case} panicked")) {
                assert!(
                    e.to_string().starts_with("/runs/x/state/hypernet.state: corrupt state file"),
                    "case {case}: {e}"
                );
                refused += 1;
            }
        }
        assert!(refused > 500, "refused {refused}");
    }

    #[test]
    fn a_checkpoint_is_magic_header_payload_and_anything_else_is_refused_naming_the_file() {
        let path = Path::new("p.state.checkpoint");
        let header = CheckpointHeader { fit: header(), curve_rows: 7 };
        let payload = b"\x00\n\xffbytes".to_vec();
        let (read, bytes) = decode_checkpoint(path, &encode_checkpoint(&header, &payload)).unwrap();
        assert_eq!((read, bytes), (header, payload));
        for bad in [&b"plain plugin bytes"[..], b"hyperprune-checkpoint/1\n{\"fit\"", b"hyperprune-checkpoint/1\n{}\n"]
        {
            let e = decode_checkpoint(path, bad).unwrap_err().to_string();
            assert!(e.starts_with("p.state.checkpoint: "), "{e}");
        }
    }
}

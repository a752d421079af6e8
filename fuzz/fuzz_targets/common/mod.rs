//! What every target shares: a scratch folder that lives as long as the fuzzing process, and
//! the property every reader must have.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A folder for this process's inputs (libFuzzer runs one input at a time per process).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary folder")).path()
}

/// Writes `bytes` to `name` in the scratch folder and returns its path.
pub fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, bytes).expect("write the input");
    path
}

/// The readers' contract: a panic fails by itself; an error must name the file it is about.
pub fn assert_names_file<T, E: Display>(result: Result<T, E>, path: &Path) {
    if let Err(e) = result {
        let message = e.to_string();
        assert!(message.contains(&path.display().to_string()), "the error does not name {}: {message}", path.display());
    }
}

//! One writer per run folder: an exclusive, advisory lock on `RUN/.lock`.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

/// File name of a run folder's lock: it holds the pid of the process writing the folder.
pub const LOCK_FILE: &str = ".lock";

/// An exclusive lock on a run folder, held by the one process that writes it (a bench or a
/// merge) until dropped. The operating system releases it when the process dies, so a
/// killed bench never leaves a folder locked.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    /// Locks `dir` (which must exist), writing this process's pid into its lock file.
    ///
    /// # Errors
    /// Bad input when another process holds the lock (naming its pid); I/O errors naming
    /// the file.
    pub fn acquire(dir: &Path) -> anyhow::Result<RunLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                return Err(crate::failure::bad_input(format!(
                    "{} is being written by another process (pid {}); wait for it to finish or choose another --out",
                    dir.display(),
                    if holder.is_empty() { "unknown" } else { holder }
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())
            .and_then(|()| file.flush())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(RunLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_holds_a_run_folder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap(), std::process::id().to_string());
        // flock locks belong to an open file: a second open, even in this process, is refused.
        let e = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("another process (pid {})", std::process::id())), "{e}");
        drop(lock);
        RunLock::acquire(dir.path()).expect("free again once dropped");
    }
}

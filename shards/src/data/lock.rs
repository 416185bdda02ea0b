//! One server per data directory: an exclusive `flock` on `DATA_DIR/LOCK`.
//!
//! Two servers on one data directory would append to the same logs and overwrite each
//! other's compactions, losing acknowledged messages. The first server takes the lock at
//! start and writes its PID into the file; a second one finds the lock held and refuses to
//! start, naming that PID. The kernel drops the lock when the holder exits, however it
//! exits (SIGKILL included), so a restart never finds a stale lock; the PID in the file is
//! only informative. This module owns `LOCK` only.

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The lock file, inside the data directory.
pub const LOCK_FILE: &str = "LOCK";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "data directory {dir} is in use by another switchboard (pid {holder}); \
         two servers on one data directory would lose messages"
    )]
    Held {
        /// The data directory.
        dir: PathBuf,
        /// The PID the holder wrote (`unknown` if unreadable).
        holder: String,
    },
    /// The lock file could not be opened or locked.
    #[error("{path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The held lock; released when dropped (or when the process exits).
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Takes the lock on `data_dir`, or says who holds it.
pub fn lock(data_dir: &Path) -> Result<DataDirLock, LockError> {
    let path = data_dir.join(LOCK_FILE);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    // SAFETY: `file` is an open descriptor for the duration of the call; flock has no
    // memory arguments.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io(err));
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        let holder = text.trim();
        return Err(LockError::Held {
            dir: data_dir.to_path_buf(),
            holder: if holder.is_empty() {
                "unknown".into()
            } else {
                holder.into()
            },
        });
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(io)?;
    Ok(DataDirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let d = std::env::temp_dir().join(format!("sb-lock-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let first = lock(&d).expect("free directory locks");
        let err = lock(&d).unwrap_err();
        match &err {
            LockError::Held { holder, .. } => {
                assert_eq!(holder, &std::process::id().to_string())
            }
            other => panic!("expected Held, got {other}"),
        }
        assert!(err.to_string().contains("in use by another switchboard"));
        drop(first);
        lock(&d).expect("free again once the holder is gone");
    }
}

//! The shard logs' check before any shard starts: damage mid-file stops the server.
//!
//! A crash mid-write can only tear the end of a log, and each shard truncates such a tail
//! itself when it replays ([`messaging::durable::record::Tail::Torn`]). A bad record with
//! valid ones after it is something else (a flipped bit, a bad sector, a stray write): those
//! later records were synced and acknowledged, and truncating would drop them silently. So:
//! - without `--salvage` the server refuses to start with one line naming the file and the
//!   offset, and changes nothing;
//! - with `--salvage` the damaged log is set aside as `shard-N.log.damaged-<unix time>`
//!   (linked under that name, never truncated), a new log holding every record that still
//!   passes its checksum takes its place (written, synced, renamed, directory synced), and
//!   what was skipped is reported.
//!
//! Runs once at start-up, before the engine, with blocking I/O. This module owns that
//! decision only; replay itself is the messaging core's ([`messaging::durable::record`]),
//! and the shard's log is its journal's.

use std::path::{Path, PathBuf};

use engine::log_file::{self, LogError};

use crate::data::journal_reader::{open_window, JournalReader};
use messaging::durable::record::{self, LogBytes, Tail};
use messaging::durable::replay::Window;

/// Bytes a salvage gathers before each write of the new log.
const SALVAGE_WRITE_BYTES: usize = 1024 * 1024;

/// Why the logs cannot be used as they are.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogCheckError {
    /// A shard log is damaged before its end.
    #[error(
        "shard log {path} is damaged at byte {at} of {len} and a valid record follows at byte \
         {next_valid_at}: truncating would lose acknowledged messages, so the server will \
         not start; restore the file, or start with --salvage to set it aside and keep \
         every readable record"
    )]
    Corrupt {
        /// The log.
        path: PathBuf,
        /// Offset of the first bad frame.
        at: u64,
        /// Offset of the first valid record after it.
        next_valid_at: u64,
        /// The file's length.
        len: u64,
    },
    /// Reading, writing or renaming failed.
    #[error("{0}")]
    Io(#[from] LogError),
    /// Setting the damaged log aside failed.
    #[error("setting {path} aside: {source}")]
    SetAside {
        /// The log.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// What salvaging one log did.
#[derive(Debug)]
pub struct Salvaged {
    /// The log that now holds the readable records.
    pub path: PathBuf,
    /// Where the damaged original went.
    pub set_aside: PathBuf,
    /// Records kept.
    pub records: usize,
    /// Damaged regions skipped: (offset, bytes).
    pub skipped: Vec<(u64, u64)>,
}

/// The log file of shard `shard` in `data_dir`.
pub fn log_path(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join(format!("shard-{shard}.log"))
}

/// Checks every shard's log; salvages damaged ones when `salvage` is set.
pub fn check_logs(
    data_dir: &Path,
    shards: usize,
    salvage: bool,
) -> Result<Vec<Salvaged>, LogCheckError> {
    let mut done = Vec::new();
    for shard in 0..shards {
        let path = log_path(data_dir, shard);
        let mut window = open_window(&path)?;
        let scan = record::replay_with(&mut window, |_| {})?;
        let Tail::Corrupt { at, next_valid_at } = scan.tail else {
            continue;
        };
        if !salvage {
            return Err(LogCheckError::Corrupt {
                path,
                at,
                next_valid_at,
                len: window.len(),
            });
        }
        let s = salvage_log(&path, &mut window)?;
        tracing::warn!(
            path = %s.path.display(),
            set_aside = %s.set_aside.display(),
            records_kept = s.records,
            damaged_regions = ?s.skipped,
            bytes_skipped = s.skipped.iter().map(|r| r.1).sum::<u64>(),
            "salvaged a damaged shard log: records inside the damaged regions are lost"
        );
        done.push(s);
    }
    Ok(done)
}

fn salvage_log(path: &Path, window: &mut Window<JournalReader>) -> Result<Salvaged, LogCheckError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let aside = path.with_extension(format!("log.damaged-{now}"));
    let tmp = path.with_extension("salvage");
    let set_aside = |source| LogCheckError::SetAside {
        path: tmp.clone(),
        source,
    };
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .mode(0o600)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(set_aside)?
    };
    // The kept records stream from the window to the new file: neither holds the log.
    let mut out = std::io::BufWriter::with_capacity(SALVAGE_WRITE_BYTES, &mut f);
    let mut write_error = None;
    let (records, skipped) = record::salvage_with(window, |framed| {
        out.write_all(framed).map_err(|e| {
            let e = LogError {
                op: log_file::LogOp::WriteSnapshot,
                path: tmp.clone(),
                source: e,
            };
            write_error = Some(());
            e
        })
    })
    .map_err(|e| match write_error {
        Some(()) => set_aside(e.source),
        None => LogCheckError::Io(e),
    })?;
    out.flush().map_err(set_aside)?;
    drop(out);
    f.sync_all().map_err(set_aside)?;
    // A second name for the damaged log, then one atomic rename over the first: at no
    // moment (crash or power loss included) is there no log at `path`, which a restart
    // would replay as an empty shard. A crash before the rename leaves the damaged log in
    // place, refused or salvaged again at the next start.
    std::fs::hard_link(path, &aside).map_err(|source| LogCheckError::SetAside {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| LogCheckError::SetAside {
        path: path.to_path_buf(),
        source,
    })?;
    log_file::sync_dir_blocking(dir)?;
    Ok(Salvaged {
        path: path.to_path_buf(),
        set_aside: aside,
        records,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use messaging::durable::record::{encode, record::Kind, AccountRec, Record};

    fn account(id: u64) -> Record {
        Record {
            kind: Some(Kind::Account(AccountRec {
                phone: format!("+1555000{id:04}"),
                user_id: id,
                key_hash: vec![1; 32],
            })),
        }
    }

    #[test]
    fn salvage_keeps_the_damaged_log_aside_and_never_leaves_the_log_missing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("sb-logcheck-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = log_path(&dir, 0);
        let mut log = Vec::new();
        let mut starts = Vec::new();
        for id in 1..=3 {
            starts.push(log.len());
            encode(&account(id), &mut log);
        }
        log[starts[1] + 10] ^= 0x10;
        std::fs::write(&path, &log).unwrap();
        assert!(matches!(
            check_logs(&dir, 1, false),
            Err(LogCheckError::Corrupt { .. })
        ));
        let done = check_logs(&dir, 1, true).unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(
            std::fs::read(&done[0].set_aside).unwrap(),
            log,
            "kept as it was"
        );
        let kept = std::fs::read(&path).unwrap();
        let r = messaging::durable::record::replay(&kept);
        assert_eq!(r.records, vec![account(1), account(3)]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the salvaged log is private like any log");
        assert!(check_logs(&dir, 1, false).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! How many shards a data directory belongs to, recorded in `DATA_DIR/layout.toml`.
//!
//! A user's home shard is `hash(phone) % shards` ([`messaging::state::home`]) and each shard
//! replays only its own log, so a server started on existing data with a different shard
//! count would look for every user on the wrong shard: their queued messages and
//! registrations would seem gone. Re-homing logs is not implemented, so the count is pinned instead:
//! - the first start on a directory records its count;
//! - a later start without an explicit count (`--shards` or `shards =` in the config file)
//!   adopts the recorded one, whatever the machine's CPU count is now;
//! - a later start with a different explicit count is refused with one clear line.
//!
//! A directory written before this file existed is recognised by its `shard-N.log` files.
//! This module owns the directory's creation and `layout.toml` only; it must not read or
//! change the logs themselves.
//!
//! The directory holds message bodies and PINs, so [`create_data_dir`] makes it 0700 (and
//! says so if an existing one is open to others); `layout.toml` is 0600.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Permissions of a data directory the server creates: its own user only.
pub const DATA_DIR_MODE: u32 = 0o700;
/// Permissions of the files this module writes.
const FILE_MODE: u32 = 0o600;

/// Creates `data_dir` (and missing parents) with mode [`DATA_DIR_MODE`], whatever the
/// umask. An existing directory is left as it is (the operator chose its mode), with a
/// warning when group or others may enter it.
pub fn create_data_dir(data_dir: &Path) -> std::io::Result<()> {
    match std::fs::metadata(data_dir) {
        Ok(meta) if meta.is_dir() => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    dir = %data_dir.display(),
                    mode = format!("{mode:o}"),
                    "data directory is open to other users (it holds messages and PINs);                      chmod 700 it"
                );
            }
            return Ok(());
        }
        _ => {}
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DATA_DIR_MODE)
        .create(data_dir)?;
    // The umask can only have removed bits; set exactly 0700 on the directory itself.
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(DATA_DIR_MODE))
}

/// The file, inside the data directory.
pub const LAYOUT_FILE: &str = "layout.toml";

/// Why the shard count cannot be settled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The configured count differs from the one the data was written with.
    #[error(
        "data directory {dir} belongs to {recorded} shards but {configured} were asked for; \
         start with --shards {recorded} (moving users to a different shard count is not \
         supported)"
    )]
    ShardCountChanged {
        /// The data directory.
        dir: PathBuf,
        /// What the directory records.
        recorded: usize,
        /// What the configuration asked for.
        configured: usize,
    },
    /// `layout.toml` exists but is not what this server writes.
    #[error("{path}: unreadable layout ({why}); it should hold one line `shards = N`")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The shard count to run on `data_dir`: the recorded one, or `configured` (then recorded).
/// `explicit` says whether `configured` was asked for (flag or config file) rather than
/// defaulted from the CPU count.
pub fn settle_shard_count(
    data_dir: &Path,
    configured: usize,
    explicit: bool,
) -> Result<usize, LayoutError> {
    let recorded = match read_layout(data_dir)? {
        Some(n) => Some(n),
        None => shards_from_logs(data_dir)?,
    };
    match recorded {
        Some(n) if n == configured => {}
        Some(n) if !explicit => {
            tracing::info!(
                shards = n,
                cpus = configured,
                "running the shard count this data directory was written with"
            );
        }
        Some(n) => {
            return Err(LayoutError::ShardCountChanged {
                dir: data_dir.to_path_buf(),
                recorded: n,
                configured,
            })
        }
        None => {}
    }
    let shards = recorded.unwrap_or(configured);
    if read_layout(data_dir)? != Some(shards) {
        write_layout(data_dir, shards)?;
    }
    Ok(shards)
}

fn layout_path(data_dir: &Path) -> PathBuf {
    data_dir.join(LAYOUT_FILE)
}

/// The shard count a data directory was written with (its layout file, else its shard
/// logs); `None` for a directory no server has used.
pub fn recorded_shard_count(data_dir: &Path) -> Result<Option<usize>, LayoutError> {
    match read_layout(data_dir)? {
        Some(n) => Ok(Some(n)),
        None => shards_from_logs(data_dir),
    }
}

fn read_layout(data_dir: &Path) -> Result<Option<usize>, LayoutError> {
    let path = layout_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LayoutError::Io { path, source }),
    };
    let malformed = |why: &str| LayoutError::Malformed {
        path: path.clone(),
        why: why.into(),
    };
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| malformed("empty"))?;
    let value = line
        .strip_prefix("shards")
        .map(str::trim_start)
        .and_then(|l| l.strip_prefix('='))
        .ok_or_else(|| malformed("no `shards =` line"))?;
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(malformed("shards is not a positive number")),
    }
}

/// For a directory from before `layout.toml`: one more than the highest `shard-N.log`.
fn shards_from_logs(data_dir: &Path) -> Result<Option<usize>, LayoutError> {
    let entries = match std::fs::read_dir(data_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LayoutError::Io {
                path: data_dir.to_path_buf(),
                source,
            })
        }
    };
    let highest = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("shard-")?
                .strip_suffix(".log")?
                .parse::<usize>()
                .ok()
        })
        .max();
    Ok(highest.map(|n| n + 1))
}

/// Writes the file through a temporary file, fsync and rename, so it is whole or absent.
fn write_layout(data_dir: &Path, shards: usize) -> Result<(), LayoutError> {
    let path = layout_path(data_dir);
    let tmp = data_dir.join(format!("{LAYOUT_FILE}.tmp.{}", std::process::id()));
    let io = |source| LayoutError::Io {
        path: path.clone(),
        source,
    };
    let text = format!(
        "# Written by switchboard on first start; users are homed by phone % shards.\n\
         # Do not change: the logs in this directory belong to this many shards.\n\
         shards = {shards}\n"
    );
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .and_then(|()| std::fs::File::open(data_dir)?.sync_all())
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "sb-layout-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_first_start_records_and_later_starts_keep_the_count() {
        let d = dir("first");
        assert_eq!(settle_shard_count(&d, 3, false).unwrap(), 3);
        assert_eq!(read_layout(&d).unwrap(), Some(3));
        // A box with more CPUs, no explicit count: the data's count wins.
        assert_eq!(settle_shard_count(&d, 16, false).unwrap(), 3);
        assert_eq!(settle_shard_count(&d, 3, true).unwrap(), 3);
        let err = settle_shard_count(&d, 4, true).unwrap_err();
        assert!(
            matches!(
                err,
                LayoutError::ShardCountChanged {
                    recorded: 3,
                    configured: 4,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("--shards 3"), "{err}");
        assert_eq!(
            read_layout(&d).unwrap(),
            Some(3),
            "unchanged by a refused start"
        );
    }

    #[test]
    fn a_directory_from_before_the_file_is_read_from_its_logs() {
        let d = dir("logs");
        for i in [0, 1] {
            std::fs::write(d.join(format!("shard-{i}.log")), b"").unwrap();
        }
        std::fs::write(d.join("sms-outbox.txt"), b"").unwrap();
        assert!(settle_shard_count(&d, 4, true).is_err());
        assert_eq!(settle_shard_count(&d, 4, false).unwrap(), 2);
        assert_eq!(read_layout(&d).unwrap(), Some(2), "recorded from now on");
    }

    #[test]
    fn a_new_data_dir_is_private_and_an_existing_one_is_left_alone() {
        let parent = dir("mode");
        let d = parent.join("a").join("data");
        create_data_dir(&d).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d), DATA_DIR_MODE);
        assert_eq!(
            mode(&parent.join("a")),
            DATA_DIR_MODE,
            "parents it creates too"
        );
        settle_shard_count(&d, 2, false).unwrap();
        assert_eq!(mode(&d.join(LAYOUT_FILE)), 0o600);
        // An operator's choice stands (a warning says it is open).
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
        create_data_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o750);
        std::fs::remove_dir_all(&parent).unwrap();
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_guess() {
        let d = dir("bad");
        std::fs::write(d.join(LAYOUT_FILE), "shards = many\n").unwrap();
        let err = settle_shard_count(&d, 2, false).unwrap_err();
        assert!(matches!(err, LayoutError::Malformed { .. }), "{err}");
        std::fs::write(d.join(LAYOUT_FILE), "# comment\n shards=5 \n").unwrap();
        assert_eq!(settle_shard_count(&d, 2, false).unwrap(), 5);
    }
}

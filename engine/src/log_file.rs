//! An append-only file written through io_uring: the shard's durable log.
//!
//! `append_sync` writes a batch at the end of the file and `fdatasync`s it before it
//! returns, so a caller that acknowledges after it returns never acknowledges what a crash
//! could lose. Group commit is the caller's: while one `append_sync` is in flight, the
//! caller gathers the next batch. `replace_with` swaps the whole file for new contents
//! (compaction), in these steps:
//!
//! 1. write the snapshot to `<log>.compact` and `fdatasync` it; a short write is an error,
//!    and any error here leaves the log untouched ([`ReplaceError::NotReplaced`]);
//! 2. rename it over the log (atomic), then **switch to the new file's handle at once**:
//!    from here on nothing is ever written through the old handle, whose file is now
//!    deleted (appends there would be acknowledged and then lost);
//! 3. `fsync` the directory so the rename survives a crash. If that fails the snapshot is in
//!    place but not yet durable ([`ReplaceError::NotDurable`]): the directory sync is
//!    retried first by every later `append_sync`, so nothing is acknowledged on top of a
//!    rename a crash could undo.
//!
//! A failed or short append leaves the file's known length unchanged; the next append first
//! cuts anything a partial write left past it, so a retry never leaves garbage mid-file.
//!
//! Preallocation: appends overwrite zeros written ahead of them in `LOG_PREALLOC_BYTES`
//! chunks, so the file's size and block map change once per chunk and most `fdatasync`s
//! write data only, no metadata (with `fallocate` alone, ext4 would still convert unwritten
//! extents and grow the size on every sync). The zeros after the last record read as a
//! torn tail at start and are cut (`record.rs` refuses zero-length frames).
//! Opening the log (and creating its directory) syncs the parent directory, so a new log's
//! name is as durable as its contents. Every error keeps its operation, path and `io::ErrorKind`
//! ([`LogError`]), so a full disk stays `StorageFull`.
//!
//! Reading happens at shard start, with plain blocking reads: positioned reads of a caller's
//! buffer ([`LogReader`], so replay holds a bounded window whatever the log's size), or
//! the whole file (`read_all`, for tools and tests). Faults can
//! be injected for tests ([`LogFaults`]); production passes none. This module owns the
//! file; it must not know what the bytes mean.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::ring::ops;

/// The step of a log operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogOp {
    /// Creating the data directory.
    CreateDir,
    /// Opening (or creating) the log.
    Open,
    /// Reading the log's size.
    Size,
    /// Reading the whole log at start.
    Read,
    /// Cutting the log (torn tail, or a partial write before a retry).
    Truncate,
    /// Writing a batch at the end.
    Append,
    /// `fdatasync` of the log.
    Sync,
    /// Creating the compaction file.
    CreateSnapshot,
    /// Writing the snapshot.
    WriteSnapshot,
    /// `fdatasync` of the snapshot.
    SyncSnapshot,
    /// Renaming the snapshot over the log.
    Rename,
    /// `fsync` of the directory after a rename or a create.
    SyncDir,
}

impl std::fmt::Display for LogOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            LogOp::CreateDir => "creating directory",
            LogOp::Open => "opening",
            LogOp::Size => "sizing",
            LogOp::Read => "reading",
            LogOp::Truncate => "truncating",
            LogOp::Append => "appending to",
            LogOp::Sync => "syncing",
            LogOp::CreateSnapshot => "creating",
            LogOp::WriteSnapshot => "writing",
            LogOp::SyncSnapshot => "syncing",
            LogOp::Rename => "renaming over",
            LogOp::SyncDir => "syncing the directory of",
        };
        f.write_str(s)
    }
}

/// A log operation that failed: which step, on which path, and the OS error (its kind kept).
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct LogError {
    /// The step.
    pub op: LogOp,
    /// The file (or directory) it was done on.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl LogError {
    fn new(op: LogOp, path: &Path, source: impl Into<io::Error>) -> Self {
        LogError {
            op,
            path: path.to_path_buf(),
            source: source.into(),
        }
    }

    /// The OS error's kind (`StorageFull` for a full disk, ...).
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

/// How a compaction failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplaceError {
    /// Nothing changed: the log is as it was, and still the file in use.
    #[error("compaction not done: {0}")]
    NotReplaced(LogError),
    /// The snapshot replaced the log and is the file in use, but the rename may not survive
    /// a crash until a directory sync succeeds (every later append retries it first).
    #[error("compaction done but not yet durable: {0}")]
    NotDurable(LogError),
}

/// A fault that tests can inject into the log-file layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Fault {
    /// An append's write fails with EIO.
    AppendWrite,
    /// An append's write takes only half the bytes.
    AppendShort,
    /// The log's `fdatasync` fails with EIO.
    Sync,
    /// The snapshot's write takes only part of the bytes (as a full disk does).
    SnapshotShort,
    /// The rename over the log fails.
    Rename,
    /// A directory sync fails with EIO.
    SyncDir,
}

const FAULTS: usize = 6;
const _: () = assert!(Fault::SyncDir as usize + 1 == FAULTS, "one slot per fault");

/// Faults armed by a test: each counts how many of the next operations of its kind fail.
/// Shared (`Arc`) between the test and the shards' log files, hence atomics. Production
/// passes `None`, so the only cost on the normal path is one `Option` check per log
/// operation (per batch, not per frame).
#[derive(Debug, Default)]
pub struct LogFaults {
    armed: [AtomicU32; FAULTS],
    hit: [AtomicU32; FAULTS],
}

impl LogFaults {
    /// Makes the next `times` operations of kind `fault` fail.
    pub fn arm(&self, fault: Fault, times: u32) {
        self.armed[fault as usize].store(times, Ordering::SeqCst);
    }

    /// How many operations of kind `fault` were made to fail so far.
    pub fn hits(&self, fault: Fault) -> u32 {
        self.hit[fault as usize].load(Ordering::SeqCst)
    }

    /// Whether any fault is armed and has not fired yet.
    fn any_armed(&self) -> bool {
        self.armed.iter().any(|a| a.load(Ordering::SeqCst) > 0)
    }

    /// Whether the operation about to run should fail (and counts it).
    fn fire(&self, fault: Fault) -> bool {
        let slot = &self.armed[fault as usize];
        let fired = slot
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fired {
            // A failpoint armed by a test; production logs carry no `LogFaults` at all.
            #[allow(clippy::disallowed_methods)]
            self.hit[fault as usize].fetch_add(1, Ordering::SeqCst);
        }
        fired
    }
}

/// Zeros written ahead of the log's end at a time.
pub const LOG_PREALLOC_BYTES: u64 = 1 << 20;

fn injected() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

/// One shard's append-only log file.
pub struct LogFile {
    file: OwnedFd,
    path: PathBuf,
    /// Bytes known to be written (and synced, once `append_sync` returned).
    len: u64,
    /// A partial write may have left bytes past `len`: cut them before the next write.
    dirty_tail: bool,
    /// Zeros are written up to here (≥ `len`): appends below it change no metadata.
    prepared_to: u64,
    /// A rename happened whose directory entry is not yet known durable.
    dir_sync_pending: bool,
    faults: Option<Arc<LogFaults>>,
}

impl std::fmt::Debug for LogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFile")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("dir_sync_pending", &self.dir_sync_pending)
            .finish()
    }
}

/// A snapshot is written in pieces of this size, one ring operation each (a piece's copy
/// into the page cache is what one loop turn may wait for: about 0.1–0.3 ms).
pub const SNAPSHOT_WRITE_PIECE_BYTES: usize = 1 << 20;

/// A log opened for reading at start-up: positioned, blocking reads into the caller's
/// buffer, so the caller decides how much it holds. A log that does not exist yet reads as
/// empty.
#[derive(Debug)]
pub struct LogReader {
    /// None when the file does not exist.
    file: Option<std::fs::File>,
    path: PathBuf,
    len: u64,
}

impl LogReader {
    /// Opens `path` for reading (blocking).
    pub fn open(path: &Path) -> Result<LogReader, LogError> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(LogReader {
                    file: None,
                    path: path.to_path_buf(),
                    len: 0,
                })
            }
            Err(e) => return Err(LogError::new(LogOp::Open, path, e)),
        };
        let len = file
            .metadata()
            .map_err(|e| LogError::new(LogOp::Size, path, e))?
            .len();
        Ok(LogReader {
            file: Some(file),
            path: path.to_path_buf(),
            len,
        })
    }

    /// The file's length when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty (or absent).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fills `buf` with the bytes at `at` (blocking); they must lie within the length.
    pub fn read_at(&self, buf: &mut [u8], at: u64) -> Result<(), LogError> {
        use std::os::unix::fs::FileExt;
        if buf.is_empty() {
            return Ok(());
        }
        let Some(file) = &self.file else {
            let e = io::Error::new(io::ErrorKind::UnexpectedEof, "reading past the end");
            return Err(LogError::new(LogOp::Read, &self.path, e));
        };
        file.read_exact_at(buf, at)
            .map_err(|e| LogError::new(LogOp::Read, &self.path, e))
    }
}

/// The whole file, or nothing if it does not exist yet (blocking; tools and tests).
pub fn read_all(path: &Path) -> Result<Vec<u8>, LogError> {
    match std::fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(LogError::new(LogOp::Read, path, e)),
    }
}

/// Cuts a file to `len` bytes and syncs it (blocking; start-up only, to drop a torn tail).
pub fn truncate(path: &Path, len: u64) -> Result<(), LogError> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| LogError::new(LogOp::Truncate, path, e))?;
    f.set_len(len)
        .and_then(|()| f.sync_all())
        .map_err(|e| LogError::new(LogOp::Truncate, path, e))
}

/// `fsync`s a directory (blocking; start-up and tools only).
pub fn sync_dir_blocking(dir: &Path) -> Result<(), LogError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::new(LogOp::SyncDir, dir, e))
}

/// Creates `dir` and any missing parents with mode 0700, syncing each new entry's parent so
/// the directory survives a crash (blocking; start-up only).
pub fn create_dir_durable(dir: &Path) -> Result<(), LogError> {
    use std::os::unix::fs::DirBuilderExt;
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        missing.push(d);
        at = d.parent();
    }
    for d in missing.iter().rev() {
        match std::fs::DirBuilder::new().mode(0o700).create(d) {
            // The umask can only have removed bits: set exactly 0700.
            Ok(()) => {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| LogError::new(LogOp::CreateDir, d, e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(LogError::new(LogOp::CreateDir, d, e)),
        }
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir_blocking(parent)?;
        }
    }
    Ok(())
}

impl LogFile {
    /// Opens (creating if needed, mode 0600) the log at `path` for appending; it must hold
    /// whole records only (a torn tail is cut before, see `truncate`). The directory
    /// is synced before this returns, so a new log's name (or one created by an earlier
    /// open that failed before its sync) is durable before anything is acknowledged.
    pub async fn open(path: &Path) -> Result<LogFile, LogError> {
        Self::open_with(path, None).await
    }

    /// `open`, with faults a test armed.
    pub async fn open_with(
        path: &Path,
        faults: Option<Arc<LogFaults>>,
    ) -> Result<LogFile, LogError> {
        // Absolute, so that the directory (and a compaction's temporary file) are found
        // whatever the working directory.
        let path = &std::path::absolute(path).map_err(|e| LogError::new(LogOp::Open, path, e))?;
        let dir = parent_of(path);
        create_dir_durable(&dir)?;
        let file = ops::open(path, libc::O_RDWR | libc::O_CREAT, 0o600)
            .await
            .map_err(|e| LogError::new(LogOp::Open, path, e))?;
        // SAFETY: a descriptor the open just returned, owned by nobody else.
        let file = unsafe { OwnedFd::from_raw_fd(file) };
        let len = file_len(&file).map_err(|e| LogError::new(LogOp::Size, path, e))?;
        let mut log = LogFile {
            file,
            path: path.to_path_buf(),
            len,
            dirty_tail: false,
            prepared_to: len,
            dir_sync_pending: true,
            faults,
        };
        log.sync_dir_if_pending().await?;
        Ok(log)
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether a directory sync is still owed (after a compaction whose sync failed).
    pub fn dir_sync_pending(&self) -> bool {
        self.dir_sync_pending
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fire(&self, fault: Fault) -> bool {
        self.faults.as_ref().is_some_and(|f| f.fire(fault))
    }

    /// Whether a test armed any fault still to fire (the durable fast path has no failpoints
    /// between its write and its sync, so it steps aside).
    fn faults_armed(&self) -> bool {
        self.faults.as_ref().is_some_and(|f| f.any_armed())
    }

    /// Appends `bytes` (possibly none: then only the syncs owed) and makes them durable
    /// before returning. On error nothing of `bytes` counts as written.
    pub async fn append_sync(&mut self, bytes: Vec<u8>) -> Result<(), LogError> {
        self.sync_dir_if_pending().await?;
        if self.dirty_tail {
            ops::truncate(self.file.as_raw_fd(), self.len)
                .await
                .map_err(|e| LogError::new(LogOp::Truncate, &self.path, e))?;
            self.dirty_tail = false;
            self.prepared_to = self.len;
        }
        let n = bytes.len();
        if n > 0 {
            // From here until the sync succeeds, part of the batch may be on disk.
            self.dirty_tail = true;
            if self.fire(Fault::AppendWrite) {
                return Err(LogError::new(LogOp::Append, &self.path, injected()));
            }
            let short = self.fire(Fault::AppendShort);
            let end = self.len + n as u64;
            // The common case: the batch lands in prepared space, so the write and its sync
            // go to the kernel as one `RWF_DSYNC` write (one completion). A sync's failure
            // comes back as the write's, so it is reported as the append's.
            if !short && end <= self.prepared_to && !self.faults_armed() {
                return match ops::write_durable(self.file.as_raw_fd(), bytes, self.len).await {
                    Ok(()) => {
                        self.len = end;
                        self.dirty_tail = false;
                        Ok(())
                    }
                    Err(ops::DurableError::Write(e)) => {
                        Err(LogError::new(LogOp::Append, &self.path, e))
                    }
                    Err(ops::DurableError::Short { written }) => {
                        Err(short_write(LogOp::Append, &self.path, written, n))
                    }
                };
            }
            let written = if short {
                let half = bytes[..n / 2].to_vec();
                self.write(half, self.len).await?
            } else {
                self.write(bytes, self.len).await?
            };
            if written != n {
                return Err(short_write(LogOp::Append, &self.path, written, n));
            }
            if end > self.prepared_to {
                self.prepare_from(end).await;
            }
        }
        if self.fire(Fault::Sync) {
            return Err(LogError::new(LogOp::Sync, &self.path, injected()));
        }
        ops::sync(self.file.as_raw_fd(), false)
            .await
            .map_err(|e| LogError::new(LogOp::Sync, &self.path, e))?;
        self.len += n as u64;
        self.dirty_tail = false;
        Ok(())
    }

    /// Writes zeros from `end` up to the next chunk boundary past it (synced with the batch
    /// by the caller's `fdatasync`). Best effort: a full disk leaves the rest unprepared
    /// and the batch's own bytes are written all the same.
    async fn prepare_from(&mut self, end: u64) {
        let to = (end / LOG_PREALLOC_BYTES + 1) * LOG_PREALLOC_BYTES;
        let zeros = vec![0u8; (to - end) as usize];
        let written = ops::write_at(self.file.as_raw_fd(), zeros, end)
            .await
            .0
            .unwrap_or(0);
        self.prepared_to = end + written as u64;
    }

    async fn write(&self, bytes: Vec<u8>, at: u64) -> Result<usize, LogError> {
        ops::write_at(self.file.as_raw_fd(), bytes, at)
            .await
            .0
            .map_err(|e| LogError::new(LogOp::Append, &self.path, e))
    }

    /// Replaces the whole file with `bytes` (see the module doc for the steps and what
    /// each error means).
    pub async fn replace_with(&mut self, bytes: Vec<u8>) -> Result<(), ReplaceError> {
        let tmp = self.path.with_extension("compact");
        let new = self
            .write_snapshot(&tmp, bytes)
            .await
            .map_err(ReplaceError::NotReplaced)?;
        let (new_file, n) = new;
        let renamed = if self.fire(Fault::Rename) {
            Err(LogError::new(LogOp::Rename, &self.path, injected()))
        } else {
            ops::rename(&tmp, &self.path)
                .await
                .map_err(|e| LogError::new(LogOp::Rename, &self.path, e))
        };
        if let Err(e) = renamed {
            let _ = ops::close(new_file.into_raw_fd()).await;
            let _ = std::fs::remove_file(&tmp);
            return Err(ReplaceError::NotReplaced(e));
        }
        // The path now names the snapshot: switch before anything else can fail.
        let old = std::mem::replace(&mut self.file, new_file);
        self.len = n;
        self.prepared_to = n;
        self.dirty_tail = false;
        self.dir_sync_pending = true;
        let _ = ops::close(old.into_raw_fd()).await;
        self.sync_dir_if_pending()
            .await
            .map_err(ReplaceError::NotDurable)
    }

    /// Writes and syncs the snapshot file; returns it open, with its length.
    async fn write_snapshot(&self, tmp: &Path, bytes: Vec<u8>) -> Result<(OwnedFd, u64), LogError> {
        let n = bytes.len();
        let f = ops::open(tmp, libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC, 0o600)
            .await
            .map_err(|e| LogError::new(LogOp::CreateSnapshot, tmp, e))?;
        // SAFETY: a descriptor the open just returned, owned by nobody else.
        let f = unsafe { OwnedFd::from_raw_fd(f) };
        let result = async {
            let bytes = if self.fire(Fault::SnapshotShort) {
                bytes[..n / 3].to_vec()
            } else {
                bytes
            };
            // In pieces: a buffered write's copy into the page cache runs inside the
            // shard's io_uring_enter, so one piece is all a turn ever waits for.
            let mut bytes = bytes;
            let mut at = 0;
            while at < bytes.len() {
                let end = (at + SNAPSHOT_WRITE_PIECE_BYTES).min(bytes.len());
                let (written, back) =
                    ops::write_part_at(f.as_raw_fd(), bytes, at..end, at as u64).await;
                bytes = back;
                let written = written.map_err(|e| LogError::new(LogOp::WriteSnapshot, tmp, e))?;
                if written != end - at {
                    return Err(short_write(LogOp::WriteSnapshot, tmp, at + written, n));
                }
                at = end;
            }
            if at != n {
                return Err(short_write(LogOp::WriteSnapshot, tmp, at, n));
            }
            ops::sync(f.as_raw_fd(), false)
                .await
                .map_err(|e| LogError::new(LogOp::SyncSnapshot, tmp, e))
        }
        .await;
        match result {
            Ok(()) => Ok((f, n as u64)),
            Err(e) => {
                let _ = ops::close(f.into_raw_fd()).await;
                let _ = std::fs::remove_file(tmp);
                Err(e)
            }
        }
    }

    async fn sync_dir_if_pending(&mut self) -> Result<(), LogError> {
        if !self.dir_sync_pending {
            return Ok(());
        }
        let dir = parent_of(&self.path);
        if self.fire(Fault::SyncDir) {
            return Err(LogError::new(LogOp::SyncDir, &dir, injected()));
        }
        let d = ops::open(&dir, libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .await
            .map_err(|e| LogError::new(LogOp::SyncDir, &dir, e))?;
        let synced = ops::sync(d, true).await;
        let _ = ops::close(d).await;
        synced.map_err(|e| LogError::new(LogOp::SyncDir, &dir, e))?;
        self.dir_sync_pending = false;
        Ok(())
    }
}

/// The file's size (`fstat`: metadata already in memory, it does not wait on the disk).
fn file_len(f: &OwnedFd) -> io::Result<u64> {
    // SAFETY: fstat into a zeroed stat struct on a descriptor we own.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(f.as_raw_fd(), &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st.st_size as u64)
    }
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn short_write(op: LogOp, path: &Path, written: usize, wanted: usize) -> LogError {
    LogError::new(
        op,
        path,
        io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write ({written} of {wanted} bytes; disk full?)"),
        ),
    )
}

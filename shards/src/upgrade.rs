//! Live upgrade, the process side (`kill -USR2 <pid>`, or `switchboard upgrade --data-dir
//! DIR`): the running server starts the binary at its own path as a new process and hands
//! it the listeners and every live connection; the new process answers `ready` or one line
//! saying why not, and only then does the old one exit.
//!
//! The steps, each logged:
//! 1. old: the shards stop at a turn boundary; the log is flushed and closed, which lets go
//!    of the data directory's lock; connections detach (`engine::upgrade::depart`);
//! 2. old: starts the new process with one end of a unix socket pair (its descriptor in
//!    [`HANDOVER_FD_ENV`]) and sends the blob and the descriptors over it
//!    (`engine::upgrade::fds`);
//! 3. new: takes the lock, checks the data directory, reads the blob (version, checksum,
//!    shard count) and starts its shards on the inherited listeners and connections, each
//!    shard replaying its log first; then answers `ready` (or `refused: <why>`, having let
//!    go of the lock and every descriptor);
//! 4. old: on `ready`, closes its copies and exits 0. On a refusal, on the new process's
//!    death before answering, or on no answer within [`UPGRADE_READY_TIMEOUT_MS`], it
//!    takes everything back: its shards start again on the same listeners and connections,
//!    replaying the log (which nothing has written meanwhile), and serve on.
//!
//! Why nothing is lost or sent twice: no two processes ever read one socket (the old one
//! reaped its receives before step 2; the new one arms its own in step 3); bytes read but
//! not yet a frame travel in the blob; the log is complete on disk before the lock is
//! released; each session says which queued items it had already sent.
//!
//! This module owns the process steps; it must not touch shard state.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use engine::upgrade::depart::Departure;
use engine::upgrade::fds::{self, Reply};

/// The environment variable naming the hand-over socket's descriptor in a new process.
pub const HANDOVER_FD_ENV: &str = "SWITCHBOARD_HANDOVER_FD";

/// Test hook: a new process started with this set reads the blob as if it were built for
/// this layout version (a way to see a new binary refuse). Never set in production.
pub const TEST_HANDOVER_VERSION_ENV: &str = "SWITCHBOARD_TEST_HANDOVER_VERSION";

/// Test hook: a new process started with this set exits (status 3) right after reading
/// the hand-over, without answering: the old process must take everything back. Never
/// set in production.
pub const TEST_HANDOVER_DIE_ENV: &str = "SWITCHBOARD_TEST_HANDOVER_DIE";

/// How long the old process waits for `ready` (the new one replays every shard's log
/// first), after which it takes everything back.
pub const UPGRADE_READY_TIMEOUT_MS: u64 = 120_000;

/// Most bytes of a blob a new process reads.
pub const HANDOVER_BLOB_BYTES_MAX: usize = 1 << 32;

/// Most descriptors a new process takes.
pub const HANDOVER_FDS_MAX: usize = 1 << 23;

/// Old process, steps 2 and 4: starts `exe` with `args` and hands `departure` over.
/// `Ok(pid)` once the new process answered `ready`; otherwise why not, in one line (the
/// caller takes the departure back).
pub fn hand_over(exe: &Path, args: &[OsString], departure: &Departure) -> Result<u32, String> {
    let (mut ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    // A copy without close-on-exec, for the child only.
    // SAFETY: F_DUPFD on a descriptor we own; closed below once the child has its own.
    let inherited = unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_DUPFD, 3) };
    if inherited < 0 {
        return Err(format!("dup: {}", std::io::Error::last_os_error()));
    }
    let spawned = std::process::Command::new(exe)
        .args(args)
        .env(HANDOVER_FD_ENV, inherited.to_string())
        .spawn();
    // SAFETY: our copy of the child's end; the child has its own (or was never started).
    unsafe { libc::close(inherited) };
    drop(theirs);
    let mut child = spawned.map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let pid = child.id();
    tracing::info!(pid, exe = %exe.display(), conns = departure.conns(), "upgrade: new process started; handing over");
    let (blob, descriptors) = departure.to_hand_over();
    let answer = fds::send(&mut ours, &blob, &descriptors).and_then(|()| {
        ours.set_read_timeout(Some(Duration::from_millis(UPGRADE_READY_TIMEOUT_MS)))?;
        Reply::read_from(&mut ours)
    });
    match answer {
        Ok(Reply::Ready) => {
            // Reaped by init once we exit; the new process is not our child to wait for.
            std::mem::forget(child);
            Ok(pid)
        }
        Ok(Reply::Refused(why)) => {
            let _ = child.wait();
            Err(format!("the new process refused: {why}"))
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("the new process did not take over: {e}"))
        }
    }
}

/// New process: the hand-over socket, when this process was started by an upgrade (the
/// variable is removed, so a process this one starts does not see it).
pub fn handover_socket() -> Option<UnixStream> {
    let fd: i32 = std::env::var(HANDOVER_FD_ENV).ok()?.parse().ok()?;
    std::env::remove_var(HANDOVER_FD_ENV);
    // SAFETY: the old process left this descriptor open for us; nothing else owns it.
    let sock = unsafe { UnixStream::from_raw_fd(fd) };
    // Not inherited by anything this process starts later.
    // SAFETY: FD_CLOEXEC on our own descriptor.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(sock)
}

/// New process, step 3: the departure on `sock`, for `shards` shards.
pub fn receive(sock: &mut UnixStream, shards: usize) -> Result<Departure, String> {
    let (mut blob, descriptors) = fds::recv(sock, HANDOVER_BLOB_BYTES_MAX, HANDOVER_FDS_MAX)
        .map_err(|e| format!("reading the hand-over: {e}"))?;
    if std::env::var_os(TEST_HANDOVER_DIE_ENV).is_some() {
        tracing::error!("upgrade: test hook: dying before answering");
        std::process::exit(3);
    }
    if let Some(v) = std::env::var(TEST_HANDOVER_VERSION_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        if blob.len() >= 12 {
            blob[8..12].copy_from_slice(&v.to_be_bytes());
        }
    }
    Departure::from_hand_over(&blob, descriptors, shards as u32).map_err(|e| e.to_string())
}

/// New process: the answer, best effort (the old process treats silence as a refusal).
pub fn answer(sock: &mut UnixStream, reply: &Reply) {
    let _ = sock.write_all(reply.to_line().as_bytes());
}

//! File operations on the shard's ring, as futures: open, write at an offset, `fdatasync`,
//! `fsync`, rename, truncate, close. The log file is built from these, so an append and its
//! sync never block the shard thread.
//!
//! An operation's buffers and paths move into the op's slot when it is submitted and stay
//! there until its completion is reaped, even if the awaiting future is dropped first (the
//! kernel may still be reading them); the future gets them back with the result.
//!
//! This module must not touch sockets, connections or the service.

use std::cell::RefCell;
use std::ffi::CString;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use io_uring::{opcode, squeue, types};

use super::{user_data, Tag};

/// What an operation keeps alive while the kernel works on it.
#[derive(Debug, Default)]
pub(crate) struct Keep {
    pub(crate) buf: Vec<u8>,
    /// Held, never read here: the kernel reads them.
    #[allow(dead_code)]
    pub(crate) paths: Vec<CString>,
}

enum Slot {
    Free,
    Waiting {
        waker: Option<Waker>,
        keep: Keep,
    },
    Done {
        result: i32,
        keep: Keep,
    },
    /// Its future was dropped: free the slot (and what it kept) when the completion comes.
    Orphan {
        _keep: Keep,
    },
}

thread_local! {
    static SLOTS: RefCell<(Vec<Slot>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// An operation in flight; resolves to its result (`-errno` on failure) and what it kept.
pub(crate) struct Op {
    index: u32,
    done: bool,
}

impl Future for Op {
    type Output = (i32, Keep);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<(i32, Keep)> {
        let index = self.index as usize;
        let ready = SLOTS.with(|s| {
            let slots = &mut s.borrow_mut().0;
            match std::mem::replace(&mut slots[index], Slot::Free) {
                Slot::Done { result, keep } => Some((result, keep)),
                Slot::Waiting { keep, .. } => {
                    slots[index] = Slot::Waiting {
                        waker: Some(cx.waker().clone()),
                        keep,
                    };
                    None
                }
                Slot::Free | Slot::Orphan { .. } => unreachable!("an op polled after it finished"),
            }
        });
        match ready {
            Some(out) => {
                self.done = true;
                SLOTS.with(|s| s.borrow_mut().1.push(self.index));
                Poll::Ready(out)
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // At thread exit the slots may already be gone (and the ring with them).
        let _ = SLOTS.try_with(|s| {
            let mut s = s.borrow_mut();
            let index = self.index as usize;
            match std::mem::replace(&mut s.0[index], Slot::Free) {
                // Completed but never polled again: free it now.
                Slot::Done { .. } => s.1.push(self.index),
                // Still in the kernel: its buffers stay until the completion.
                Slot::Waiting { keep, .. } => s.0[index] = Slot::Orphan { _keep: keep },
                other => s.0[index] = other,
            }
        });
    }
}

/// Forgets every op slot and what it keeps: for a shard exit whose ring could not be
/// drained (the kernel may still use those buffers).
pub(crate) fn leak_slots() {
    SLOTS.with(|s| std::mem::forget(std::mem::take(&mut s.borrow_mut().0)));
}

/// Records the completion of op `index` and wakes its future.
pub(crate) fn complete(index: u64, result: i32) {
    let index = index as u32;
    let waker = SLOTS.with(|s| {
        let mut s = s.borrow_mut();
        match std::mem::replace(&mut s.0[index as usize], Slot::Free) {
            Slot::Waiting { waker, keep } => {
                s.0[index as usize] = Slot::Done { result, keep };
                waker
            }
            Slot::Orphan { .. } => {
                s.1.push(index);
                None
            }
            other => {
                s.0[index as usize] = other;
                None
            }
        }
    });
    if let Some(w) = waker {
        w.wake();
    }
}

/// Takes a free op slot and fills it with `keep` (nothing submitted yet).
fn take_slot(keep: Keep) -> u32 {
    SLOTS.with(|s| {
        let mut s = s.borrow_mut();
        let index = match s.1.pop() {
            Some(i) => i,
            None => {
                s.0.push(Slot::Free);
                (s.0.len() - 1) as u32
            }
        };
        s.0[index as usize] = Slot::Waiting { waker: None, keep };
        index
    })
}

/// Submits `sqe` (built with the slot's `user_data`), keeping `keep` alive for the kernel.
fn submit(sqe: impl FnOnce() -> squeue::Entry, keep: Keep) -> Op {
    let index = take_slot(keep);
    let sqe = sqe().user_data(user_data(Tag::Op, u64::from(index)));
    // SAFETY: the buffers and paths `sqe` points into were moved into slot `index` (their heap
    // storage does not move) and stay there until `complete` sees this op's completion.
    super::with(|r| unsafe { r.push(&sqe) });
    Op { index, done: false }
}

fn result(res: i32) -> io::Result<u32> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res as u32)
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

/// `openat(AT_FDCWD, path, flags | O_CLOEXEC, mode)`.
pub(crate) async fn open(path: &Path, flags: i32, mode: u32) -> io::Result<RawFd> {
    let p = c_path(path)?;
    let ptr = p.as_ptr();
    let keep = Keep {
        buf: Vec::new(),
        paths: vec![p],
    };
    let (res, _) = submit(
        || {
            opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), ptr)
                .flags(flags | libc::O_CLOEXEC)
                .mode(mode)
                .build()
        },
        keep,
    )
    .await;
    result(res).map(|fd| fd as RawFd)
}

/// Writes `buf` at `offset`; returns the bytes written and the buffer.
pub(crate) async fn write_at(fd: RawFd, buf: Vec<u8>, offset: u64) -> (io::Result<usize>, Vec<u8>) {
    let len = buf.len();
    write_part_at(fd, buf, 0..len, offset).await
}

/// Writes `buf[part]` at `offset`; returns the bytes written and the whole buffer.
pub(crate) async fn write_part_at(
    fd: RawFd,
    buf: Vec<u8>,
    part: std::ops::Range<usize>,
    offset: u64,
) -> (io::Result<usize>, Vec<u8>) {
    let bytes = &buf[part];
    let (ptr, len) = (bytes.as_ptr(), bytes.len() as u32);
    let keep = Keep {
        buf,
        paths: Vec::new(),
    };
    let (res, keep) = submit(
        || {
            opcode::Write::new(types::Fd(fd), ptr, len)
                .offset(offset)
                .build()
        },
        keep,
    )
    .await;
    (result(res).map(|n| n as usize), keep.buf)
}

/// How a durable write failed.
#[derive(Debug)]
pub(crate) enum DurableError {
    /// The write or its sync failed (`ENOSPC`, `EIO`...): with `RWF_DSYNC` the kernel
    /// reports both as the write's result.
    Write(io::Error),
    /// The write wrote less than asked.
    Short {
        /// Bytes the write took.
        written: usize,
    },
}

/// Writes `buf` at `offset` with `RWF_DSYNC`: one submission and one completion that come
/// back once the bytes are written and `fdatasync`ed (the kernel's `generic_write_sync`
/// after the write, the same path as `fdatasync` on the written range).
///
/// It replaced a linked write and `fdatasync` pair: two entries and two completions per log
/// commit, and a chain that must never be split across submissions. One completion fewer
/// per commit (at 2,000 msgs/s a commit per ~9 messages: most items are acked before they
/// are written); per-message CPU moved within the bench's noise
/// (docs/decisions/coalescing.md, "The log's write and sync in one"). (`IOSQE_CQE_SKIP_SUCCESS`
/// on the linked write would have saved a completion, but on Linux 6.18 a failed write so
/// marked left its cancelled sync without a completion at all.)
pub(crate) async fn write_durable(
    fd: RawFd,
    buf: Vec<u8>,
    offset: u64,
) -> Result<(), DurableError> {
    let (ptr, len) = (buf.as_ptr(), buf.len() as u32);
    let keep = Keep {
        buf,
        paths: Vec::new(),
    };
    let (res, _) = submit(
        || {
            opcode::Write::new(types::Fd(fd), ptr, len)
                .offset(offset)
                .rw_flags(libc::RWF_DSYNC)
                .build()
        },
        keep,
    )
    .await;
    match res {
        w if w < 0 => Err(DurableError::Write(io::Error::from_raw_os_error(-w))),
        w if w as u32 != len => Err(DurableError::Short {
            written: w as usize,
        }),
        _ => Ok(()),
    }
}

/// `fdatasync(fd)`, or `fsync(fd)` when `all` (directories).
pub(crate) async fn sync(fd: RawFd, all: bool) -> io::Result<()> {
    let flags = if all {
        types::FsyncFlags::empty()
    } else {
        types::FsyncFlags::DATASYNC
    };
    let (res, _) = submit(
        || opcode::Fsync::new(types::Fd(fd)).flags(flags).build(),
        Keep::default(),
    )
    .await;
    result(res).map(drop)
}

/// `rename(from, to)`.
pub(crate) async fn rename(from: &Path, to: &Path) -> io::Result<()> {
    let (f, t) = (c_path(from)?, c_path(to)?);
    let (fp, tp) = (f.as_ptr(), t.as_ptr());
    let keep = Keep {
        buf: Vec::new(),
        paths: vec![f, t],
    };
    let (res, _) = submit(
        || {
            opcode::RenameAt::new(types::Fd(libc::AT_FDCWD), fp, types::Fd(libc::AT_FDCWD), tp)
                .build()
        },
        keep,
    )
    .await;
    result(res).map(drop)
}

/// `ftruncate(fd, len)` on the ring (Linux 6.9+), or a plain call on older kernels.
pub(crate) async fn truncate(fd: RawFd, len: u64) -> io::Result<()> {
    let (res, _) = submit(
        || opcode::Ftruncate::new(types::Fd(fd), len).build(),
        Keep::default(),
    )
    .await;
    if res == -libc::EINVAL || res == -libc::EOPNOTSUPP {
        // SAFETY: ftruncate on a descriptor the caller owns.
        let rc = unsafe { libc::ftruncate(fd, len as libc::off_t) };
        return if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        };
    }
    result(res).map(drop)
}

/// Closes `fd` on the ring.
pub(crate) async fn close(fd: RawFd) -> io::Result<()> {
    let (res, _) = submit(
        || opcode::Close::new(types::Fd(fd)).build(),
        Keep::default(),
    )
    .await;
    result(res).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn temp_file(tag: &str) -> std::path::PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        std::env::temp_dir().join(format!("sb-ops-{tag}-{}-{nanos}", std::process::id()))
    }

    #[test]
    fn a_durable_write_lands_whole() {
        let path = temp_file("durable");
        let f = std::fs::File::create(&path).unwrap();
        let fd = f.as_raw_fd();
        let done = std::thread::spawn(move || {
            crate::block_on(async move { write_durable(fd, b"hello".to_vec(), 3).await }).unwrap()
        })
        .join()
        .unwrap();
        assert!(done.is_ok(), "{done:?}");
        assert_eq!(std::fs::read(&path).unwrap(), b"\0\0\0hello");
        drop(f);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_failed_durable_write_says_so() {
        let path = temp_file("durable-ro");
        std::fs::write(&path, b"x").unwrap();
        // Read-only: the write fails.
        let f = std::fs::File::open(&path).unwrap();
        let fd = f.as_raw_fd();
        let done = std::thread::spawn(move || {
            crate::block_on(async move { write_durable(fd, b"hello".to_vec(), 0).await }).unwrap()
        })
        .join()
        .unwrap();
        match done {
            Err(DurableError::Write(e)) => assert_eq!(e.raw_os_error(), Some(libc::EBADF)),
            other => panic!("the write's own error must come back, got {other:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
        drop(f);
        std::fs::remove_file(&path).unwrap();
    }
}

//! The shard's own io_uring: one ring per shard thread, set up once, through which every
//! socket, file and wake-up of the shard goes.
//!
//! What lives here: the ring and the features the kernel offered ([`Features`], logged once
//! at start), the `user_data` tags that tell a completion's owner (`Tag`), and the one
//! place the shard thread blocks (`Ring::enter`). Submodules: [`exec`] (the few futures a
//! shard runs: log jobs and short sleeps), `ops` (file operations as futures), `buf_ring`
//! (the provided-buffer ring multishot receives read into).
//!
//! The ring is thread-local: only the thread that made it touches it (`SINGLE_ISSUER`), and a
//! borrow of it never spans a callback. This module must not know about connections or the
//! service; it moves submissions in and completions out.

pub(crate) mod buf_ring;
pub mod exec;
pub(crate) mod ops;

use std::cell::RefCell;
use std::io;
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// Submission queue entries per ring (completions get twice as many).
pub const RING_ENTRIES: u32 = 4096;
/// How long a shard's exit waits for the kernel to give back everything still in flight on
/// its ring (cancelled first). Past it, what is still out is leaked on purpose (the ring
/// fd, the buffers the kernel may still use), never freed under the kernel.
pub const RING_DRAIN_MS: u64 = 1_000;
/// With a batching wait, how many completions make a batch worth returning for early.
pub const COALESCE_BATCH: usize = 32;

/// An `io_uring_enter` error that means "try again": interrupted, or the kernel is short of
/// completion room (`EBUSY`) or of memory for the submission (`EAGAIN`). The next turn
/// reaps what completed and submits again.
fn submit_retryable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
    )
}

/// Whose completion this is: the top byte of `user_data`; the low 56 bits are the owner's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Tag {
    /// A file operation a future awaits ([`ops`]); low bits: its slot.
    Op = 1,
    /// The listener's multishot accept.
    Accept = 2,
    /// A connection's multishot receive; low bits: its table index.
    Recv = 3,
    /// A connection's send; low bits: its table index.
    Send = 4,
    /// The shard's wake-up eventfd read (mesh batches, stop).
    Wake = 5,
    /// Nothing to do on completion (cancels, closes).
    Ignore = 6,
}

const LOW_BITS: u64 = (1 << 56) - 1;

/// Packs a tag and its owner's number into `user_data`.
pub(crate) fn user_data(tag: Tag, low: u64) -> u64 {
    debug_assert!(low <= LOW_BITS);
    ((tag as u64) << 56) | (low & LOW_BITS)
}

/// Splits `user_data` back into its tag (if known) and the owner's number.
pub(crate) fn split(user_data: u64) -> (Option<Tag>, u64) {
    let tag = match user_data >> 56 {
        1 => Some(Tag::Op),
        2 => Some(Tag::Accept),
        3 => Some(Tag::Recv),
        4 => Some(Tag::Send),
        5 => Some(Tag::Wake),
        6 => Some(Tag::Ignore),
        _ => None,
    };
    (tag, user_data & LOW_BITS)
}

/// What the kernel offered when the ring was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// `IORING_SETUP_SINGLE_ISSUER` (6.0): the kernel may skip submission locking.
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN` (6.1): completion work runs only when the shard waits,
    /// never interrupting it.
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN` (5.19): no inter-processor interrupt per completion.
    pub coop_taskrun: bool,
    /// `IORING_FEAT_MIN_TIMEOUT` (6.12): a wait may ask for a batch for up to N µs.
    pub min_timeout: bool,
    /// The ring fd is registered, so each `io_uring_enter` skips the fd lookup.
    pub registered_ring: bool,
}

impl std::fmt::Display for Features {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "single_issuer={} defer_taskrun={} coop_taskrun={} min_timeout={} registered_ring={}",
            yes(self.single_issuer),
            yes(self.defer_taskrun),
            yes(self.coop_taskrun),
            yes(self.min_timeout),
            yes(self.registered_ring)
        )
    }
}

/// One completion, copied out of the ring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completion {
    pub(crate) user_data: u64,
    pub(crate) result: i32,
    pub(crate) flags: u32,
}

impl Completion {
    /// More completions will follow for this (multishot) request.
    pub(crate) fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer this completion filled, if any.
    pub(crate) fn buffer(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

/// The shard's ring.
pub(crate) struct Ring {
    uring: IoUring,
    features: Features,
    /// `io_uring_enter` calls made (counted for the shard's statistics).
    pub(crate) enters: u64,
    /// Requests queued or in the kernel whose last completion has not been reaped: +1 per
    /// entry pushed, -1 per completion that ends its request (no `MORE` flag).
    in_flight: u64,
    /// An error the next `enter` answers instead of the kernel's (tests).
    #[cfg(test)]
    fail_next_enter: Option<i32>,
}

thread_local! {
    static RING: RefCell<Option<Ring>> = const { RefCell::new(None) };
}

/// Makes this thread's ring (once); returns the features found.
pub(crate) fn install() -> io::Result<Features> {
    if let Some(f) = RING.with(|r| r.borrow().as_ref().map(|r| r.features)) {
        return Ok(f);
    }
    let ring = Ring::new()?;
    let f = ring.features;
    RING.with(|r| *r.borrow_mut() = Some(ring));
    Ok(f)
}

/// Makes this thread's ring with a submission queue of `entries` (tests that need a queue
/// they can fill).
#[cfg(test)]
pub(crate) fn install_sized(entries: u32) -> io::Result<Features> {
    let ring = Ring::with_entries(entries)?;
    let f = ring.features;
    RING.with(|r| *r.borrow_mut() = Some(ring));
    Ok(f)
}

/// Whether this thread has a ring.
pub(crate) fn installed() -> bool {
    RING.with(|r| r.borrow().is_some())
}

/// Runs `f` with this thread's ring. Panics when none is installed (an engine bug: every
/// shard thread installs one before anything can submit).
pub(crate) fn with<R>(f: impl FnOnce(&mut Ring) -> R) -> R {
    RING.with(|r| {
        let mut r = r.borrow_mut();
        f(r.as_mut().expect("this thread's ring is installed"))
    })
}

/// Drops this thread's ring (shard exit).
pub(crate) fn uninstall() {
    RING.with(|r| drop(r.borrow_mut().take()));
}

/// Forgets this thread's ring without closing it: the kernel keeps every request (and the
/// memory they point at stays mapped) until the process exits. For a drain that timed out.
pub(crate) fn leak() {
    RING.with(|r| std::mem::forget(r.borrow_mut().take()));
}

impl Ring {
    fn new() -> io::Result<Ring> {
        Ring::with_entries(RING_ENTRIES)
    }

    fn with_entries(entries: u32) -> io::Result<Ring> {
        // Newest first; each step drops what an older kernel refuses.
        let tries: [(bool, bool, bool); 4] = [
            (true, true, true),
            (true, false, true),
            (false, false, true),
            (false, false, false),
        ];
        let mut last = None;
        for (single, defer, coop) in tries {
            let mut b = IoUring::builder();
            b.setup_cqsize(entries * 2).setup_submit_all();
            if single {
                b.setup_single_issuer();
            }
            if defer {
                b.setup_defer_taskrun();
            }
            if coop {
                b.setup_coop_taskrun().setup_taskrun_flag();
            }
            match b.build(entries) {
                Ok(uring) => {
                    let min_timeout = uring.params().is_feature_min_timeout();
                    let registered_ring = uring.submitter().register_ring_fd().is_ok();
                    return Ok(Ring {
                        uring,
                        features: Features {
                            single_issuer: single,
                            defer_taskrun: defer,
                            coop_taskrun: coop,
                            min_timeout,
                            registered_ring,
                        },
                        enters: 0,
                        in_flight: 0,
                        #[cfg(test)]
                        fail_next_enter: None,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one try"))
    }

    /// Queues `sqe`, submitting first if the submission queue is full.
    ///
    /// # Safety
    /// Every buffer, path or descriptor `sqe` points to must stay valid until its completion
    /// is reaped.
    pub(crate) unsafe fn push(&mut self, sqe: &squeue::Entry) {
        // SAFETY: passed on from the caller.
        unsafe { self.push_chain(std::slice::from_ref(sqe)) }
    }

    /// Queues `sqes` together, all or nothing: when the submission queue has no room for
    /// every one, what is queued goes to the kernel first. A chain of linked entries
    /// (`IO_LINK`) must go this way: links never span two submissions, so a chain split at
    /// a full queue would run its tail unlinked (a sync before its write).
    ///
    /// # Safety
    /// As [`Ring::push`], for every entry.
    pub(crate) unsafe fn push_chain(&mut self, sqes: &[squeue::Entry]) {
        assert!(
            sqes.len() <= self.uring.params().sq_entries() as usize,
            "a chain longer than the submission queue"
        );
        loop {
            // SAFETY: the caller keeps what the entries point to alive until their
            // completions; `push_multiple` queues all of them or none.
            if unsafe { self.uring.submission().push_multiple(sqes) }.is_ok() {
                self.in_flight += sqes.len() as u64;
                return;
            }
            self.enters += 1;
            // No room for the whole chain: hand the queue to the kernel (no wait) and retry.
            if let Err(e) = self.uring.submit() {
                if !submit_retryable(&e) {
                    panic!("io_uring submit failed: {e}");
                }
                // Short of completion room or memory: the kernel works off what it holds
                // meanwhile; let it run, then try again.
                std::thread::yield_now();
            }
        }
    }

    /// Submits what is queued and waits up to `timeout` for at least one completion (no
    /// wait when `timeout` is zero), asking the kernel to batch for up to `min_wait` first
    /// when it can. Then copies every completion into `out`.
    pub(crate) fn enter(
        &mut self,
        timeout: Duration,
        min_wait: Duration,
        out: &mut Vec<Completion>,
    ) -> io::Result<()> {
        let ts = types::Timespec::from(timeout);
        let mut args = types::SubmitArgs::new().timespec(&ts);
        let mut want = 1;
        if self.features.min_timeout && !min_wait.is_zero() && !timeout.is_zero() {
            // Wait for a batch until `min_wait` has passed, then for any one completion.
            args = args.min_wait_usec(min_wait.as_micros().min(u128::from(u32::MAX)) as u32);
            want = COALESCE_BATCH;
        }
        self.enters += 1;
        let entered = self.uring.submitter().submit_with_args(want, &args);
        #[cfg(test)]
        let entered = match self.fail_next_enter.take() {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => entered,
        };
        match entered {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) || submit_retryable(&e) => {}
            Err(e) => return Err(e),
        }
        self.reap(out);
        Ok(())
    }

    /// Copies every completion waiting in the queue into `out` (no syscall).
    pub(crate) fn reap(&mut self, out: &mut Vec<Completion>) {
        for cqe in self.uring.completion() {
            if !cqueue::more(cqe.flags()) {
                self.in_flight = self.in_flight.saturating_sub(1);
            }
            out.push(Completion {
                user_data: cqe.user_data(),
                result: cqe.result(),
                flags: cqe.flags(),
            });
        }
    }

    /// Requests whose last completion has not been reaped yet.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Cancels everything in flight and reaps until the kernel has given every request back
    /// or `bound` has passed. Completions are handed to `each` (ops' futures may want
    /// theirs). True when nothing is left in flight.
    pub(crate) fn drain(&mut self, bound: Duration, mut each: impl FnMut(Completion)) -> bool {
        let deadline = std::time::Instant::now() + bound;
        if self.in_flight > 0 {
            let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
                .build()
                .user_data(user_data(Tag::Ignore, 0));
            // SAFETY: a cancel points at no memory.
            unsafe { self.push(&cancel) };
        }
        let mut out = Vec::new();
        while self.in_flight > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            if self.enter(left, Duration::ZERO, &mut out).is_err() {
                return false;
            }
            out.drain(..).for_each(&mut each);
        }
        true
    }

    /// The submitter, for registrations (buffer rings).
    pub(crate) fn submitter(&self) -> io_uring::Submitter<'_> {
        self.uring.submitter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Room for one entry left, and a chain of two: the queue goes to the kernel first and
    /// the chain is queued whole behind it, never split across two submissions.
    #[test]
    fn a_chain_is_queued_whole_or_after_a_submit() {
        std::thread::spawn(|| {
            install_sized(4).unwrap();
            let nop = |n| {
                io_uring::opcode::Nop::new()
                    .build()
                    .user_data(user_data(Tag::Ignore, n))
            };
            with(|r| {
                for n in 0..3 {
                    // SAFETY: a no-op points at no memory.
                    unsafe { r.push(&nop(n)) };
                }
                assert_eq!(r.uring.submission().len(), 3);
                let chain = [nop(10).flags(squeue::Flags::IO_LINK), nop(11)];
                // SAFETY: no-ops point at no memory.
                unsafe { r.push_chain(&chain) };
                assert_eq!(
                    r.uring.submission().len(),
                    2,
                    "the three no-ops left first; both links wait for the same submission"
                );
            });
            uninstall();
        })
        .join()
        .unwrap();
    }

    /// Item 7: a read still waiting in the kernel (an empty pipe) is cancelled and reaped
    /// before the ring goes, so its buffer is never freed under the kernel.
    #[test]
    fn a_drain_cancels_and_reaps_everything_in_flight() {
        std::thread::spawn(|| {
            install().unwrap();
            let (rx, _tx) = std::os::unix::net::UnixStream::pair().unwrap();
            let mut buf = vec![0u8; 64];
            let read = io_uring::opcode::Read::new(
                types::Fd(std::os::fd::AsRawFd::as_raw_fd(&rx)),
                buf.as_mut_ptr(),
                64,
            )
            .build()
            .user_data(user_data(Tag::Op, 3));
            let mut seen = Vec::new();
            with(|r| {
                // SAFETY: `buf` outlives the drain below, which reaps the read.
                unsafe { r.push(&read) };
                let mut out = Vec::new();
                r.enter(Duration::ZERO, Duration::ZERO, &mut out).unwrap();
                assert!(out.is_empty(), "nothing to read yet");
                assert_eq!(r.in_flight(), 1);
                assert!(r.drain(Duration::from_secs(10), |c| seen.push(c)));
                assert_eq!(r.in_flight(), 0);
            });
            let read_done = seen
                .iter()
                .find(|c| split(c.user_data) == (Some(Tag::Op), 3));
            assert_eq!(read_done.map(|c| c.result), Some(-libc::ECANCELED));
            drop(buf);
            uninstall();
        })
        .join()
        .unwrap();
    }

    /// Item 9: `EAGAIN` from `io_uring_enter` (the kernel short of memory for a submission)
    /// used to come back as an error, and the shard loop panics on one. Now the wait returns
    /// as after `EBUSY`, and the next turn reaps and submits again.
    #[test]
    fn eagain_and_ebusy_from_the_kernel_are_retried_not_fatal() {
        for errno in [libc::EAGAIN, libc::EBUSY, libc::EINTR] {
            assert!(submit_retryable(&io::Error::from_raw_os_error(errno)));
        }
        assert!(!submit_retryable(&io::Error::from_raw_os_error(
            libc::EBADF
        )));
        std::thread::spawn(|| {
            install().unwrap();
            let mut out = Vec::new();
            for errno in [libc::EAGAIN, libc::EBUSY] {
                with(|r| {
                    r.fail_next_enter = Some(errno);
                    r.enter(Duration::ZERO, Duration::ZERO, &mut out)
                })
                .unwrap_or_else(|e| panic!("errno {errno} is fatal: {e}"));
            }
            let bad = with(|r| {
                r.fail_next_enter = Some(libc::EBADF);
                r.enter(Duration::ZERO, Duration::ZERO, &mut out)
            });
            assert!(bad.is_err(), "other errors still come back");
            uninstall();
        })
        .join()
        .unwrap();
    }

    /// With a batching wait, one completion ends the wait once `min_wait` has passed: the
    /// kernel does not hold it until the timeout for a full batch. (A 10 s timeout against a
    /// 1 ms batching wait: returning at all before the timeout is the point, not speed.)
    #[test]
    fn a_batching_wait_returns_with_one_completion_long_before_the_timeout() {
        std::thread::spawn(|| {
            let features = install().unwrap();
            if !features.min_timeout {
                eprintln!("SKIPPED: this kernel has no min-wait (6.12+)");
                return;
            }
            let nop = io_uring::opcode::Nop::new()
                .build()
                .user_data(user_data(Tag::Ignore, 7));
            // SAFETY: a no-op points at no memory.
            with(|r| unsafe { r.push(&nop) });
            let mut out = Vec::new();
            let started = std::time::Instant::now();
            with(|r| r.enter(Duration::from_secs(10), Duration::from_millis(1), &mut out)).unwrap();
            assert_eq!(out.len(), 1, "the no-op's completion");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "waited for the timeout instead of returning with one completion"
            );
            uninstall();
        })
        .join()
        .unwrap();
    }
}

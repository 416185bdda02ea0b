//! The gateway's linger (`--cluster-linger-us`, `direct.rs` step 5): once a direct batch
//! holds something, the gateway waits this long for more before it sends. A one-shot
//! timerfd watched by the gateway's runtime, so that the wait is microseconds (tokio's
//! timers count whole milliseconds: 1 ms would wait 1-2 ms).
//!
//! This module owns the timer; it must not touch NATS or a shard.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

/// The timer and whether it runs.
pub(super) struct Linger {
    fd: AsyncFd<OwnedFd>,
    wait: Duration,
    armed: bool,
}

impl Linger {
    /// A timer of `wait`, not running; fails only if no timerfd can be made.
    pub(super) fn new(wait: Duration) -> std::io::Result<Linger> {
        let flags = libc::TFD_NONBLOCK | libc::TFD_CLOEXEC;
        // SAFETY: timerfd_create(2) with constant flags; the result is checked, then owned.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, flags) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the AsyncFd owns `fd`, an open descriptor that stays open (and the same)
        // until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
        Ok(Linger {
            fd,
            wait,
            armed: false,
        })
    }

    /// True while the wait runs.
    pub(super) fn armed(&self) -> bool {
        self.armed
    }

    /// Starts the wait unless it runs. If the timer cannot be set it stays off (the batch
    /// leaves at once, as without a linger).
    pub(super) fn arm(&mut self) {
        if self.armed {
            return;
        }
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let spec = libc::itimerspec {
            it_interval: zero,
            it_value: libc::timespec {
                tv_sec: self.wait.as_secs() as libc::time_t,
                tv_nsec: self.wait.subsec_nanos().into(),
            },
        };
        let fd = self.fd.get_ref().as_raw_fd();
        // SAFETY: a valid itimerspec for our own timerfd; the old value is not asked for.
        let set = unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) };
        self.armed = set == 0;
    }

    /// Ready once the wait is over (its expiry read, so the next one starts clean).
    pub(super) async fn over(&self) {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return std::future::pending().await;
            };
            let mut n: u64 = 0;
            let fd = self.fd.get_ref().as_raw_fd();
            // SAFETY: an 8-byte read into a live u64 from our non-blocking timerfd.
            let read = unsafe { libc::read(fd, (&mut n as *mut u64).cast(), 8) };
            if read == 8 {
                return;
            }
            guard.clear_ready();
        }
    }

    /// The wait is over (after [`Linger::over`]).
    pub(super) fn ended(&mut self) {
        self.armed = false;
    }
}

/// [`Linger::over`] of the gateway's linger; never ready without one.
pub(super) async fn over(linger: &Option<Linger>) {
    match linger {
        Some(l) => l.over().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linger_waits_about_its_time_once_per_arming() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let wait = Duration::from_micros(300);
            let mut g = Some(Linger::new(wait).unwrap());
            for _ in 0..3 {
                let l = g.as_mut().unwrap();
                assert!(!l.armed());
                let start = std::time::Instant::now();
                l.arm();
                l.arm(); // a second arming while it runs changes nothing
                assert!(l.armed());
                over(&g).await;
                assert!(start.elapsed() >= wait);
                g.as_mut().unwrap().ended();
            }
            // Not armed: never over.
            let idle = Some(Linger::new(Duration::from_micros(100)).unwrap());
            let waited = tokio::time::timeout(Duration::from_millis(20), over(&idle)).await;
            assert!(waited.is_err());
        });
    }
}

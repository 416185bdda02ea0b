//! A minimal level-triggered epoll wrapper: one per farm thread.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Readiness reported for one registered fd.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    /// The token given at registration.
    pub token: u64,
    /// Readable (or hung up / error: a read will tell).
    pub readable: bool,
    /// Writable (or error: a write or `take_error` will tell).
    pub writable: bool,
}

/// An epoll instance and its event buffer (capacity fixed at creation).
pub struct Poller {
    epfd: RawFd,
    events: Vec<libc::epoll_event>,
    /// epoll_pwait2 (µs timeouts, Linux ≥ 5.11) works here; cleared on the first ENOSYS.
    precise: bool,
}

impl Poller {
    /// A poller returning at most `batch` events per wait.
    pub fn new(batch: usize) -> io::Result<Poller> {
        // SAFETY: plain epoll_create1 call; result checked.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poller {
            epfd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; batch.max(1)],
            precise: true,
        })
    }

    /// Waits at most `timeout`, to the microsecond where the kernel has epoll_pwait2 (the
    /// send schedule needs better than epoll_wait's milliseconds), else rounded up to 1 ms.
    fn epoll_wait(&mut self, timeout: Duration) -> i32 {
        let len = self.events.len() as i32;
        if self.precise {
            let ts = libc::timespec {
                tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
                tv_nsec: timeout.subsec_nanos() as libc::c_long,
            };
            // SAFETY: events points at `len` initialised epoll_event slots we own; `ts` is a
            // valid timespec for the call's duration; a null sigmask means none.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    self.epfd,
                    self.events.as_mut_ptr(),
                    len,
                    &ts as *const libc::timespec,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            } as i32;
            if n >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS) {
                return n;
            }
            self.precise = false;
        }
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: events points at `len` initialised epoll_event slots we own.
        unsafe { libc::epoll_wait(self.epfd, self.events.as_mut_ptr(), len, ms) }
    }

    fn ctl(&self, op: i32, fd: RawFd, token: u64, write: bool) -> io::Result<()> {
        let mut flags = libc::EPOLLIN | libc::EPOLLRDHUP;
        if write {
            flags |= libc::EPOLLOUT;
        }
        let mut ev = libc::epoll_event {
            events: flags as u32,
            u64: token,
        };
        // SAFETY: ev is a valid epoll_event; fd validity is the kernel's to check.
        let rc = unsafe { libc::epoll_ctl(self.epfd, op, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches `fd` for reads, and writes if `write`.
    pub fn add(&self, fd: RawFd, token: u64, write: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, write)
    }

    /// Changes what `fd` is watched for.
    pub fn modify(&self, fd: RawFd, token: u64, write: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, write)
    }

    /// Stops watching `fd` (before it is closed).
    pub fn delete(&self, fd: RawFd) {
        // SAFETY: a null event is allowed for EPOLL_CTL_DEL since Linux 2.6.9.
        unsafe { libc::epoll_ctl(self.epfd, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
    }

    /// Waits up to `timeout` and appends ready events to `out` (cleared first).
    pub fn wait(&mut self, timeout: Duration, out: &mut Vec<Event>) -> io::Result<()> {
        out.clear();
        let n = self.epoll_wait(timeout);
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(e);
        }
        for ev in &self.events[..n as usize] {
            let bits = ev.events as i32;
            let err = bits & (libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) != 0;
            out.push(Event {
                token: ev.u64,
                readable: bits & libc::EPOLLIN != 0 || err,
                writable: bits & libc::EPOLLOUT != 0 || err,
            });
        }
        Ok(())
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        // SAFETY: epfd is ours and closed once.
        unsafe { libc::close(self.epfd) };
    }
}

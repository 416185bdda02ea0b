//! Per-shard listening sockets with SO_REUSEPORT, bound on the main thread before any shard
//! starts, so that a taken port is one clear error at start and every shard listens on the
//! same port (also when the configured port is 0). The kernel spreads incoming connections
//! over the shards' sockets: no shared accept queue, no lock.
//!
//! On the shard, its socket has one multishot accept armed on the shard's ring
//! (`Acceptor`): re-armed when the kernel ends it, held back [`ACCEPT_BACKOFF_MS`] after
//! an error (EMFILE, ENFILE, ENOMEM...), re-armed when the open-file limit changed (a
//! `prlimit` on the live process applies from the next accept on), cancelled when the shard
//! drains. Each accepted descriptor goes to `open` (`ShardCell::accept`).
//!
//! This module owns binding and the accept; it must not touch a connection once accepted.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use io_uring::{opcode, types};

use crate::ring::{self, user_data, Completion, Tag};
use crate::service::Service;
use crate::shard_io::ShardCell;

/// Pending connections the kernel queues per shard socket (capped by net.core.somaxconn).
pub const LISTEN_BACKLOG: i32 = 4096;

/// After an accept error (EMFILE, ENFILE, ENOMEM...), wait this long before accepting again.
pub const ACCEPT_BACKOFF_MS: u64 = 50;

/// A shard's listening socket and the accept armed on its ring.
pub(crate) struct Acceptor {
    /// Dropped after the ring (the loop uninstalls the ring first).
    listener: OwnedFd,
    armed: bool,
    /// After an error, no accept is armed before this (the shard's monotonic clock, ms).
    retry_at_ms: u64,
    /// The shard is draining: a connection accepted before the cancel landed is closed.
    draining: bool,
    /// RLIMIT_NOFILE when the accept was armed: the kernel takes the limit then, so a
    /// `prlimit` on the live process applies only once the accept is re-armed.
    nofile: u64,
}

impl Acceptor {
    /// The shard's listening socket, with nothing armed yet.
    pub(crate) fn new(listener: OwnedFd) -> Self {
        Acceptor {
            listener,
            armed: false,
            retry_at_ms: 0,
            draining: false,
            nofile: 0,
        }
    }

    /// Arms the multishot accept.
    pub(crate) fn arm(&mut self) {
        self.nofile = nofile_limit();
        let sqe = opcode::AcceptMulti::new(types::Fd(self.listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data(Tag::Accept, 0));
        // SAFETY: points at no memory; the listener outlives the ring (dropped after it).
        ring::with(|r| unsafe { r.push(&sqe) });
        self.armed = true;
    }

    fn cancel(&mut self) {
        let sqe = opcode::AsyncCancel2::new(
            types::CancelBuilder::fd(types::Fd(self.listener.as_raw_fd())).all(),
        )
        .build()
        .user_data(user_data(Tag::Ignore, 0));
        // SAFETY: a cancel points at no memory.
        ring::with(|r| unsafe { r.push(&sqe) });
    }

    /// The shard drains: cancel the accept, close whatever it still brings.
    /// A second descriptor of the listening socket, for the next process of a live upgrade
    /// (the socket stays open, and queues connections, when this one closes).
    pub(crate) fn listener_dup(&self) -> std::io::Result<OwnedFd> {
        self.listener.try_clone()
    }

    pub(crate) fn stop(&mut self) {
        self.draining = true;
        self.cancel();
    }

    /// Whether no accept is armed and one will be (after the back-off): the loop must not
    /// sleep past [`ACCEPT_BACKOFF_MS`].
    pub(crate) fn waiting_to_rearm(&self) -> bool {
        !self.armed && !self.draining
    }

    /// Re-arms the accept if it ended and its back-off is over (`now_ms`: the shard's
    /// monotonic clock).
    pub(crate) fn rearm_if_due(&mut self, now_ms: u64) {
        if self.waiting_to_rearm() && now_ms >= self.retry_at_ms {
            self.arm();
        }
    }

    /// An accept completion: a new connection for `c`, or an error to back off from.
    pub(crate) fn on_completion<S: Service>(&mut self, c: &mut ShardCell<S>, cqe: Completion) {
        if !cqe.more() {
            self.armed = false;
        }
        if cqe.result >= 0 && self.draining {
            // SAFETY: a descriptor the accept just gave us, referenced nowhere else.
            unsafe { libc::close(cqe.result) };
        } else if cqe.result >= 0 {
            c.accept(cqe.result as RawFd);
            // An operator's `prlimit` on the live process (raising the limit, say) takes
            // effect from the next accept on: re-arm under the new limit.
            if self.armed && nofile_limit() != self.nofile {
                self.cancel();
            }
        } else if cqe.result != -libc::ECANCELED {
            c.io.counters.accept_errors += 1;
            let errors = c.io.counters.accept_errors;
            if errors.is_power_of_two() {
                let e = std::io::Error::from_raw_os_error(-cqe.result);
                tracing::warn!(error = %e, errors, "accept failed; backing off");
            }
            self.retry_at_ms = c.io.mono_now() + ACCEPT_BACKOFF_MS;
        }
    }
}

/// The process's open-file limit now.
fn nofile_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a local struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    r.rlim_cur
}

/// Binds `count` SO_REUSEPORT sockets to `addr`. Returns them and the bound address.
pub fn bind_shards(addr: SocketAddr, count: usize) -> io::Result<(Vec<OwnedFd>, SocketAddr)> {
    assert!(count > 0, "at least one shard");
    // A socket without SO_REUSEPORT first: if anything holds the port, this fails, so we
    // never silently share a port with another server.
    let probe = StdListener::bind(addr)?;
    let bound = probe.local_addr()?;
    drop(probe);
    let mut fds = Vec::with_capacity(count);
    for _ in 0..count {
        fds.push(bind_one(bound)?);
    }
    Ok((fds, bound))
}

fn bind_one(addr: SocketAddr) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the result is checked before use and owned below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: valid fd, pointer to a live c_int of the stated size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    if unsafe { libc::bind(fd, &storage as *const _ as *const libc::sockaddr, len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: valid, bound socket.
    if unsafe { libc::listen(fd, LISTEN_BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    debug_assert!(owned.as_raw_fd() == fd);
    Ok(owned)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_every_shard_to_one_port_and_refuses_a_taken_one() {
        let (fds, addr) = bind_shards("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_eq!(fds.len(), 3);
        assert_ne!(addr.port(), 0);
        let err = bind_shards(addr, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}

//! A live connection in transit between shards.
//!
//! The old shard flushes the connection's queued output, duplicates its socket descriptor
//! (so closing its own glommio socket does not close the connection), and packs the
//! descriptor with the TLS session (including a partial record it held back) and any
//! plaintext read but not yet framed. The new shard builds its own glommio socket on that
//! descriptor and carries on mid-session: the peer sees nothing.
//!
//! Why it is safe: only the old shard's task touches the socket until it detaches, and only
//! the new shard's task after it attaches; the TLS session is plain data (`Send`) and moves
//! by value; it never buffers decrypted plaintext, so `unread` is all the plaintext there
//! is. This module owns the packing; it must not touch the mesh or the tables.

use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

use crate::tls_session::TlsSession;
use crate::transport::Transport;

/// A connection detached from its shard, ready to be adopted by another.
#[derive(Debug)]
pub struct Detached {
    pub(crate) fd: OwnedFd,
    /// The TLS session, with any partial record it held back.
    pub(crate) tls: Option<Box<TlsSession>>,
    /// Plaintext of a frame not yet complete.
    pub(crate) unread: Vec<u8>,
}

impl Detached {
    /// Detaches `t`: duplicates its descriptor, then drops the old socket object.
    pub(crate) fn from_transport(t: Transport) -> std::io::Result<Detached> {
        let (stream, tls, unread) = t.into_parts();
        // SAFETY: dup of a descriptor we own; the result is a new descriptor we own.
        let fd = unsafe { libc::dup(stream.as_raw_fd()) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        drop(stream);
        // SAFETY: `fd` was just returned by dup and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Detached { fd, tls, unread })
    }

    /// Attaches this connection to the calling shard's reactor.
    pub(crate) fn into_transport(self) -> Transport {
        // SAFETY: we own the descriptor; the new TcpStream takes ownership of it.
        let stream = unsafe { glommio::net::TcpStream::from_raw_fd(self.fd.into_raw_fd()) };
        Transport::from_parts(stream, self.tls, self.unread)
    }
}

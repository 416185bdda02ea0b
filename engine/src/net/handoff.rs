//! A live connection in transit between shards.
//!
//! The old shard flushes the connection's queued output, cancels the receive armed on its
//! ring and waits for that receive's last completion (bytes it delivered meanwhile are
//! decrypted and kept as unread plaintext, never dispatched), then packs the descriptor with
//! the TLS session (including a partial record it held back) and that plaintext. The new
//! shard arms its own receive on the descriptor and carries on mid-session: the peer sees
//! nothing, and no byte is lost or reordered, because at no time are two receives armed.
//!
//! Why it is safe: only the old shard's ring references the socket until it detaches, and
//! only the new shard's after it adopts; the TLS session is plain data (`Send`) and moves
//! by value; it never buffers decrypted plaintext, so `unread` is all the plaintext there
//! is. This module owns the packing; it must not touch the mesh or the tables.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use crate::net::wire::Wire;
use crate::tls::session::TlsSession;

/// A connection detached from its shard, ready to be adopted by another.
#[derive(Debug)]
pub struct Detached {
    pub(crate) fd: OwnedFd,
    /// The TLS session, with any partial record it held back.
    pub(crate) tls: Option<Box<TlsSession>>,
    /// Plaintext of a frame not yet complete (or read after the handoff began).
    pub(crate) unread: Vec<u8>,
}

impl Detached {
    /// Detaches `w`, whose output is flushed and on which nothing is in flight.
    pub(crate) fn from_wire(w: Wire) -> Detached {
        assert!(
            !w.in_flight() && w.unsent() == 0,
            "handoff only after a full flush and the receive's last completion"
        );
        // SAFETY: the wire owned this descriptor; ownership moves here.
        let fd = unsafe { OwnedFd::from_raw_fd(w.fd) };
        Detached {
            fd,
            tls: w.tls,
            unread: w.unread,
        }
    }

    /// Attaches this connection to the calling shard (its receive is armed by the caller).
    pub(crate) fn into_wire(self) -> Wire {
        Wire::new(self.fd.into_raw_fd(), self.tls, self.unread)
    }
}

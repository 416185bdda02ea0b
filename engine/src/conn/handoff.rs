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
//! is.
//!
//! This module owns the packing and the adoption on the new shard; it must not touch the
//! mesh rings (the old shard's side of the move is `io`'s flush).

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use crate::conn::wire::Wire;
use crate::service::Service;
use crate::shard_io::ShardCell;
use crate::tls::session::TlsSession;
use proto::ids::ShardId;

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

impl<S: Service> ShardCell<S> {
    /// Frames that were read before a move (between shards, or between processes) are
    /// dispatched now, in order; a frame begun before the move keeps its deadline running.
    pub(crate) fn dispatch_unread(&mut self, id: proto::ids::ConnId) {
        let Some(slot) = self.io.conns.get_mut(id) else {
            return;
        };
        let mut unread = std::mem::take(&mut slot.wire.unread);
        self.dispatch_frames(id, &mut unread, &[]);
        if let Some(slot) = self.io.conns.get_mut(id) {
            slot.wire.unread = unread;
            let partial = slot.wire.has_partial();
            self.note_partial(id, partial);
        }
    }

    /// A connection handed over by shard `from` arrives: register it, tell the service, and
    /// dispatch the frames read before the move. A full table closes it (counted).
    pub(crate) fn adopt(&mut self, from: ShardId, detached: Detached, adopt: S::Adopt) {
        self.io.tick_clock();
        match self.register(detached.into_wire(), false, false) {
            Ok(id) if !self.prelogin_admit(id) => {}
            Ok(id) => {
                self.io.counters.handoffs_in += 1;
                self.io.conns.get_mut(id).expect("just registered").opened = true;
                self.service.on_adopt(&mut self.io, from, id, adopt);
                self.dispatch_unread(id);
            }
            Err(wire) => {
                // Only when this shard's whole table (its share twice over) is taken.
                self.io.counters.handoff_failures += 1;
                let failures = self.io.counters.handoff_failures;
                if failures.is_power_of_two() {
                    tracing::warn!(
                        shard = self.io.shard.0,
                        failures,
                        "connection table full: an adopted connection is closed"
                    );
                }
                // SAFETY: the table refused it; nothing else references the descriptor.
                unsafe { libc::close(wire.fd) };
            }
        }
    }
}

//! A connection's arrival and departure: a socket accepted from the listener (or adopted
//! from another shard) is registered in the table with its first deadline and its receive
//! armed; a TLS handshake that completes opens it to the service; [`ShardCell::finish`]
//! removes it for good and tells the service.
//!
//! Admission: accepts stop at this shard's share of the connection cap; the table's room
//! beyond it (`ADOPT_TABLE_FACTOR`) is kept for adoptions.
//!
//! This module owns those transitions; it must not touch the mesh rings or flush output
//! (that is `io`'s, at the end of the turn).

use std::os::fd::RawFd;

use crate::conn::slot::{ConnSlot, SlotState};
use crate::conn::wire::{peer_ip, set_nodelay, Wire};
use crate::service::{CloseReason, Service};
use crate::shard_io::{ShardCell, TimerEntry};
use crate::tls::session::TlsSession;
use proto::ids::ConnId;

impl<S: Service> ShardCell<S> {
    /// The TLS handshake of `id` completed (`resumed`: from a session ticket): swap its
    /// handshake timer for the idle timer.
    pub(crate) fn handshake_done(&mut self, id: ConnId, resumed: bool) {
        let Some(slot) = self.io.conns.get_mut(id) else {
            return;
        };
        // Peer bytes decide when a handshake finishes: one that finishes after its slot was
        // told to close (timeout, shutdown) is not an engine bug, and the slot goes on
        // closing.
        if slot.state != SlotState::Handshaking {
            return;
        }
        self.io.counters.handshakes += 1;
        self.io.counters.handshakes_resumed += u64::from(resumed);
        // `register` set the handshake deadline `handshake_timeout_ms` after the accept.
        let accepted_ms = slot.timer_at_ms.saturating_sub(self.handshake_timeout_ms);
        let took_ms = self.io.mono_ms.saturating_sub(accepted_ms);
        self.io.latency.tls_handshake.record_ns(took_ms * 1_000_000);
        slot.state = SlotState::Open;
        if let Some(t) = slot.timer.take() {
            self.io.timers.cancel(t);
        }
        slot.opened = true;
        self.arm_idle(id);
        self.service.on_open(&mut self.io, id);
    }

    /// Removes `id` for good and tells the service.
    pub(crate) fn finish(&mut self, id: ConnId, reason: CloseReason) {
        let mut slot = self.io.conns.remove(id).expect("finishing a live slot");
        self.io.prelogin.release(&mut slot, &mut self.io.counters);
        if let Some(t) = slot.timer {
            self.io.timers.cancel(t);
        }
        self.io.counters.conns_open -= 1;
        self.io.counters.closes += 1;
        if reason == CloseReason::IdleTimeout {
            self.io.counters.idle_timeouts += 1;
        }
        if reason == CloseReason::HandshakeTimeout {
            self.io.counters.handshake_failures += 1;
        }
        if slot.opened {
            self.service.on_close(&mut self.io, id, reason);
        }
    }

    /// Puts a new socket in the table and arms its receive. `Err` (the wire back) when the
    /// table is full, or, for an `accepted` socket, when this shard's share of the
    /// connection cap is taken (the caller closes the socket).
    pub(crate) fn register(
        &mut self,
        wire: Wire,
        handshaking: bool,
        accepted: bool,
    ) -> Result<ConnId, Wire> {
        let now = self.io.mono_ms;
        let state = if handshaking {
            SlotState::Handshaking
        } else {
            SlotState::Open
        };
        // Accepts stop at the shard's share of the connection cap; the table's room beyond
        // it is kept for adoptions, so a handoff is not refused by a shard whose share is
        // taken (see `ADOPT_TABLE_FACTOR`).
        if self.io.conns.is_full() || (accepted && self.io.conns.len() >= self.accept_max) {
            if accepted {
                self.io.counters.accepts_rejected_full += 1;
            }
            return Err(wire);
        }
        let peer = peer_ip(wire.fd);
        let mut slot = ConnSlot::new(state, now, peer, wire);
        slot.logged_in = !S::LOGIN;
        let id = self
            .io
            .conns
            .insert(slot)
            .expect("checked: the table has room");
        self.io.counters.conns_open += 1;
        if handshaking {
            let deadline = now + self.handshake_timeout_ms;
            let timer = self
                .io
                .timers
                .insert(deadline, TimerEntry::Handshake(id))
                .expect("the wheel keeps room for every connection's deadline");
            let slot = self.io.conns.get_mut(id).expect("just inserted");
            slot.timer = Some(timer);
            slot.timer_at_ms = deadline;
        } else {
            self.arm_idle(id);
        }
        let slot = self.io.conns.get_mut(id).expect("just inserted");
        slot.wire.arm_recv(id.index());
        Ok(id)
    }

    /// A connection the listener accepted: descriptor `fd`, owned from here.
    pub(crate) fn accept(&mut self, fd: RawFd) {
        self.io.counters.accepts += 1;
        self.io.tick_clock();
        let tls = match &self.tls {
            Some(cfg) => match TlsSession::new(cfg.clone()) {
                Ok(c) => Some(Box::new(c)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start TLS session");
                    // SAFETY: closing the descriptor we were just given.
                    unsafe { libc::close(fd) };
                    return;
                }
            },
            None => None,
        };
        set_nodelay(fd);
        let handshaking = tls.is_some();
        match self.register(Wire::new(fd, tls, Vec::new()), handshaking, true) {
            Ok(id) if !self.prelogin_admit(id) => {}
            Ok(id) if !handshaking => {
                self.io.conns.get_mut(id).expect("just registered").opened = true;
                self.service.on_open(&mut self.io, id);
            }
            Ok(_) => {}
            // SAFETY: the table refused it; nothing else references the descriptor.
            Err(wire) => unsafe {
                libc::close(wire.fd);
            },
        }
    }
}

//! A connection leaving `Open` (closing, or being handed off): its linger deadline, what
//! happens when that passes, and calling a handoff off.
//!
//! A slot that leaves `Open` gets one deadline, [`CONN_LINGER_MS`] after it left, in place
//! of its idle or frame timer: flush what it owes and let go of its socket by then. Past
//! it, the slot aborts: its output is dropped, everything in flight on the socket is
//! cancelled, and the socket closes once the kernel lets go (`conn_io`). A handoff that
//! cannot finish is called off: the parked message is dropped and the service hears the
//! close's reason instead of `HandedOff`.
//!
//! This module owns those transitions and the linger timer; it must not touch sockets or
//! the mesh rings.

use crate::conn::slot::{mark_dirty, SlotState, CONN_LINGER_MS};
use crate::service::{CloseReason, Service};
use crate::shard_io::{ShardCell, TimerEntry};
use proto::ids::ConnId;

impl<S: Service> ShardCell<S> {
    /// `id` left `Open`: arm its linger deadline, once, in place of its idle or frame timer.
    pub(crate) fn start_linger(&mut self, id: ConnId) {
        let due = self.io.mono_ms + CONN_LINGER_MS;
        let Some(slot) = self.io.conns.get_mut(id) else {
            return;
        };
        if slot.lingering {
            return;
        }
        slot.lingering = true;
        if let Some(t) = slot.timer.take() {
            self.io.timers.cancel(t);
        }
        // The wheel keeps room for one engine timer per table slot (`SERVICE_TIMERS_MAX`).
        let timer = self.io.timers.insert(due, TimerEntry::Linger(id));
        slot.timer = Some(timer.expect("the wheel keeps room for every connection's deadline"));
        slot.timer_at_ms = due;
    }

    /// `id`'s linger deadline passed: drop what it still owes, cancel what is in flight on
    /// its socket, and close it as soon as the kernel lets go.
    pub(crate) fn linger_expired(&mut self, id: ConnId) {
        let Some(slot) = self.io.conns.get_mut(id) else {
            return;
        };
        slot.timer = None;
        if matches!(slot.state, SlotState::Open | SlotState::Handshaking) {
            return;
        }
        self.io.counters.linger_aborts += 1;
        // A handoff that could not flush: the peer is not reading.
        self.set_closing(id, CloseReason::OutputOverflow);
        let Some(slot) = self.io.conns.get_mut(id) else {
            return;
        };
        slot.outbox = Vec::new();
        slot.wire.abort_output();
        mark_dirty(slot, &mut self.io.dirty, id);
    }

    /// Moves `id` to `Closing(reason)` from any state but `Closing`; a handoff it was making
    /// is called off (its parked message dropped; the service hears `on_close(reason)`
    /// instead of `HandedOff`).
    pub(crate) fn set_closing(&mut self, id: ConnId, reason: CloseReason) {
        let Some(slot) = self.io.conns.get_mut(id) else {
            return;
        };
        match slot.state {
            SlotState::Closing(_) => return,
            SlotState::HandingOff(_) => {
                self.io.counters.handoff_failures += 1;
                drop(self.io.mesh.take_handoff(id));
            }
            SlotState::Departing => self.io.counters.upgrade_closed += 1,
            SlotState::Open | SlotState::Handshaking => {}
        }
        slot.state = SlotState::Closing(reason);
        mark_dirty(slot, &mut self.io.dirty, id);
    }
}

//! A connection's deadlines while it is `Handshaking` or `Open`: the handshake must finish
//! within `handshake_timeout_ms`, something must arrive within the idle timeout, and a frame
//! once begun must finish within the frame timeout (so a client trickling bytes cannot hold
//! its slot). Each slot has one timer in the wheel at a time; it fires into
//! [`ShardCell::idle_check`] or [`ShardCell::handshake_expired`], which close the slot or
//! re-arm it for the next due time.
//!
//! This module owns those timers; it must not touch sockets, the ring or the mesh. (The
//! deadline of a slot that left `Open` is `linger`'s.)

use crate::conn::slot::{mark_dirty, SlotState};
use crate::service::{CloseReason, Service};
use crate::shard_io::{ShardCell, TimerEntry};
use proto::ids::ConnId;

impl<S: Service> ShardCell<S> {
    /// Bytes arrived on `id`: its idle deadline runs from now.
    pub(crate) fn note_rx(&mut self, id: ConnId) {
        let now = self.io.mono_ms;
        if let Some(slot) = self.io.conns.get_mut(id) {
            // Before login, what a connection sends does not keep it alive (`conn::prelogin`).
            if slot.logged_in {
                slot.last_rx_ms = now;
            }
        }
    }

    /// Arms `id`'s idle deadline from now.
    pub(super) fn arm_idle(&mut self, id: ConnId) {
        self.arm_at(id, self.io.mono_ms + self.io.idle_timeout_ms);
    }

    /// Sets `id`'s deadline timer (idle or frame) to fire at `deadline`.
    pub(super) fn arm_at(&mut self, id: ConnId, deadline: u64) {
        // The wheel holds one engine timer per table slot beside the service's capped share.
        let timer = self
            .io
            .timers
            .insert(deadline, TimerEntry::Idle(id))
            .expect("the wheel keeps room for every connection's deadline");
        if let Some(slot) = self.io.conns.get_mut(id) {
            slot.timer = Some(timer);
            slot.timer_at_ms = deadline;
        }
    }

    /// Part of a frame is (or is no longer) waiting: a started frame must finish within the
    /// frame timeout, so a client trickling bytes cannot hold its connection forever.
    pub(crate) fn note_partial(&mut self, id: ConnId, partial: bool) {
        let now = self.io.mono_ms;
        let due = now + self.io.frame_timeout_ms;
        let Some(slot) = self.io.conns.get_mut(id) else {
            return;
        };
        if !partial {
            slot.partial_since_ms = 0;
            return;
        }
        if slot.partial_since_ms != 0 || slot.state != SlotState::Open {
            return;
        }
        slot.partial_since_ms = now;
        if slot.timer.is_some() && slot.timer_at_ms <= due {
            return;
        }
        if let Some(t) = slot.timer.take() {
            self.io.timers.cancel(t);
        }
        self.arm_at(id, due);
    }

    /// `id`'s handshake deadline passed: close it if it is still handshaking.
    pub(crate) fn handshake_expired(&mut self, id: ConnId) {
        if let Some(slot) = self.io.conns.get_mut(id) {
            slot.timer = None;
            if slot.state == SlotState::Handshaking {
                slot.state = SlotState::Closing(CloseReason::HandshakeTimeout);
                mark_dirty(slot, &mut self.io.dirty, id);
            }
        }
    }

    /// `id`'s idle or frame timer fired: close it if either deadline passed, else re-arm
    /// for the nearer one.
    pub(crate) fn idle_check(&mut self, id: ConnId) {
        let now = self.io.mono_ms;
        let idle = self.io.idle_timeout_ms;
        let Some(slot) = self.io.conns.get_mut(id) else {
            return;
        };
        slot.timer = None;
        if slot.state != SlotState::Open {
            return;
        }
        let idle_due = slot.last_rx_ms + idle;
        let frame_due = match slot.partial_since_ms {
            0 => u64::MAX,
            since => since + self.io.frame_timeout_ms,
        };
        if now >= frame_due {
            self.io.counters.slow_frames += 1;
            let _ = self.io.close_with(id, CloseReason::SlowFrame);
        } else if now >= idle_due {
            let _ = self.io.close_with(id, CloseReason::IdleTimeout);
        } else {
            self.arm_at(id, idle_due.min(frame_due));
        }
    }
}

//! A connection's I/O on the shard's ring: what each receive and send completion does, and
//! what the end of a loop turn does for each connection the service touched.
//!
//! Receive completion: the bytes are in one of the shard's provided buffers. Plaintext is
//! framed in place; TLS records are decrypted in place (or, behind a held-back partial
//! record, in the shard's scratch), and the plaintext is framed. Each whole frame goes to
//! the service at once; a partial one stays in the slot. The buffer goes back to the ring
//! before the next completion. A receive the kernel ended (out of buffers, say) is re-armed.
//!
//! End of turn ([`ShardCell::flush_dirty`]): every dirty slot's queued frames are staged
//! (encrypted) and one send submitted per connection, so the turn's sends all leave in the
//! next `io_uring_enter`. A closing slot is flushed, then everything in flight on its socket
//! is cancelled, and once the last completion is in, its descriptor is closed and the slot
//! removed. A slot being handed off does the same but detaches its socket instead. Either
//! has `CONN_LINGER_MS` to finish, then aborts; a closing slot reads nothing more, a
//! departing one at most one frame.
//!
//! This module must not touch the listener, the mesh rings or the timer wheel directly.

use crate::conn::handoff::Detached;
use crate::conn::slot::{mark_dirty, SlotState, CONN_OUTPUT_BYTES_MAX, HANDOFF_UNREAD_BYTES_MAX};
use crate::ring::buf_ring::BufRing;
use crate::ring::Completion;
use crate::service::{CloseReason, Service};
use crate::shard_io::ShardCell;
use proto::ids::ConnId;

/// The shard's reusable byte buffers for connection I/O.
pub(crate) struct Scratch {
    /// Held-back TLS bytes followed by fresh ones, when a record straddles two receives.
    pub(crate) incoming: Vec<u8>,
    /// Plaintext decrypted from one receive.
    pub(crate) plain: Vec<u8>,
    /// The dirty list being worked through (the shard's own list keeps filling meanwhile).
    pub(crate) dirty: Vec<ConnId>,
}

impl<S: Service> ShardCell<S> {
    /// A receive completion for the connection in table slot `index`.
    pub(crate) fn on_recv(
        &mut self,
        index: u32,
        c: Completion,
        bufs: &mut BufRing,
        scratch: &mut Scratch,
    ) {
        let id = self.io.conns.id_at(index);
        if let Some(bid) = c.buffer() {
            if let (Some(id), true) = (id, c.result > 0) {
                let data = bufs.data_mut(bid, c.result as usize);
                self.received(id, data, scratch);
            }
            bufs.give_back(bid);
        }
        let Some(id) = id else { return };
        let Some(slot) = self.io.conns.get_mut(id) else {
            return;
        };
        if !c.more() {
            slot.wire.recv_armed = false;
        }
        match c.result {
            n if n > 0 => {}
            0 => self.close_now(id, CloseReason::PeerClosed),
            e if e == -libc::ENOBUFS => self.io.counters.recv_no_buffers += 1,
            e if e == -libc::ECANCELED => {}
            _ => self.close_now(id, CloseReason::IoError),
        }
        self.after_completion(id);
    }

    /// A send completion for the connection in table slot `index`.
    pub(crate) fn on_send(&mut self, index: u32, c: Completion) {
        let Some(id) = self.io.conns.id_at(index) else {
            return;
        };
        let Some(slot) = self.io.conns.get_mut(id) else {
            return;
        };
        match slot.wire.sent(index, c.result, &mut self.io.spare_bufs) {
            Ok(n) => {
                self.io.counters.bytes_out += n as u64;
                // More may have been queued while this send was out.
                let slot = self.io.conns.get_mut(id).expect("slot checked above");
                mark_dirty(slot, &mut self.io.dirty, id);
            }
            Err(_) if c.result == -libc::ECANCELED => {}
            Err(_) => self.close_now(id, CloseReason::IoError),
        }
        self.after_completion(id);
    }

    /// Re-arms an open connection's receive the kernel ended, and lets a closing or
    /// departing one make progress.
    fn after_completion(&mut self, id: ConnId) {
        let Some(slot) = self.io.conns.get_mut(id) else {
            return;
        };
        match slot.state {
            SlotState::Open | SlotState::Handshaking => {
                if !slot.wire.recv_armed && !slot.wire.cancel_sent {
                    slot.wire.arm_recv(id.index());
                }
            }
            SlotState::Closing(_) | SlotState::HandingOff(_) | SlotState::Departing => {
                mark_dirty(slot, &mut self.io.dirty, id);
            }
        }
    }

    /// Closes `id` without flushing: the peer is gone or the socket failed. A handoff in
    /// progress is called off.
    pub(crate) fn close_now(&mut self, id: ConnId, reason: CloseReason) {
        self.set_closing(id, reason);
        let Some(slot) = self.io.conns.get_mut(id) else {
            return;
        };
        slot.wire.abort = true;
        mark_dirty(slot, &mut self.io.dirty, id);
    }

    /// `n` bytes arrived on `id`, in `data` (a provided buffer this call may scribble on).
    /// The clock is the loop's, set once after the wait that brought this completion.
    pub(crate) fn received(&mut self, id: ConnId, data: &mut [u8], scratch: &mut Scratch) {
        self.io.counters.bytes_in += data.len() as u64;
        self.note_rx(id);
        let slot = self.io.conns.get_mut(id).expect("caller checked the id");
        match slot.state {
            // Nothing more is read from a closing connection: its bytes are dropped here.
            SlotState::Closing(_) => return,
            // Kept for the new shard (or process), but no more than one frame's worth.
            SlotState::HandingOff(_) | SlotState::Departing
                if slot.wire.unread.len() + data.len() > HANDOFF_UNREAD_BYTES_MAX =>
            {
                self.io.counters.frames_too_large += 1;
                self.close_now(id, CloseReason::FrameTooLarge);
                return;
            }
            _ => {}
        }
        let mut unread = std::mem::take(&mut slot.wire.unread);
        let wire = &mut slot.wire;
        let mut handshake_done = false;
        let mut resumed = false;
        let mut peer_closed = false;
        let fresh: &[u8] = if wire.tls.is_none() {
            data
        } else {
            scratch.plain.clear();
            let handshaking = wire.is_handshaking();
            let before = wire.unsent();
            match wire.decrypt(data, &mut scratch.incoming, &mut scratch.plain) {
                Ok(p) => {
                    handshake_done = p.handshake_done;
                    resumed = p.resumed;
                    peer_closed = p.peer_closed;
                }
                Err(_) => {
                    self.io.counters.handshake_failures += u64::from(handshaking);
                    slot.wire.unread = unread;
                    // Send the alert (best effort), then close.
                    if matches!(slot.state, SlotState::Open | SlotState::Handshaking) {
                        slot.state = SlotState::Closing(CloseReason::TlsError);
                    }
                    mark_dirty(slot, &mut self.io.dirty, id);
                    return;
                }
            }
            if slot.wire.unsent() > before {
                mark_dirty(slot, &mut self.io.dirty, id);
            }
            &scratch.plain
        };
        if handshake_done {
            self.handshake_done(id, resumed);
        }
        self.dispatch_frames(id, &mut unread, fresh);
        let Some(slot) = self.io.conns.get_mut(id) else {
            return;
        };
        slot.wire.unread = unread;
        let partial = slot.wire.has_partial();
        if !self.prelogin_hold(id) {
            return;
        }
        self.note_partial(id, partial);
        if peer_closed {
            self.close_now(id, CloseReason::PeerClosed);
        }
    }

    /// Splits whole frames out of `unread` + `fresh` and hands them to the service. Keeps an
    /// incomplete tail (or everything after the point where the slot left `Open`, which
    /// travels with a handoff) in `unread`.
    pub(crate) fn dispatch_frames(&mut self, id: ConnId, unread: &mut Vec<u8>, fresh: &[u8]) {
        let owned;
        let src: &[u8] = if unread.is_empty() {
            fresh
        } else {
            unread.extend_from_slice(fresh);
            owned = std::mem::take(unread);
            &owned
        };
        let mut at = 0;
        while self
            .io
            .conns
            .get(id)
            .is_some_and(|s| s.state == SlotState::Open)
        {
            if self.prelogin_oversized(id, &src[at..]) {
                return;
            }
            match proto::codec::split_frame(&src[at..]) {
                Ok(Some((payload, used))) => {
                    at += used;
                    self.io.counters.frames_in += 1;
                    self.service.on_frame(&mut self.io, id, payload);
                }
                Ok(None) => break,
                Err(e) => {
                    self.io.counters.frames_too_large += 1;
                    self.service.on_frame_error(&mut self.io, id, e);
                    let _ = self.io.close_with(id, CloseReason::FrameTooLarge);
                    return;
                }
            }
        }
        if at < src.len() {
            *unread = src[at..].to_vec();
        }
    }

    /// End of turn: flushes every dirty connection and moves closing and departing ones
    /// along.
    pub(crate) fn flush_dirty(&mut self, scratch: &mut Scratch) {
        // Progress may dirty more (a handoff's finish, a close's service callback).
        while !self.io.dirty.is_empty() {
            // Swapped with the scratch list, not taken: both keep their capacity, so a busy
            // turn allocates nothing here.
            let mut dirty = std::mem::take(&mut scratch.dirty);
            std::mem::swap(&mut dirty, &mut self.io.dirty);
            for id in dirty.drain(..) {
                self.progress(id);
            }
            scratch.dirty = dirty;
        }
    }

    fn progress(&mut self, id: ConnId) {
        let Some(slot) = self.io.conns.get_mut(id) else {
            return;
        };
        if !slot.lingering && !matches!(slot.state, SlotState::Open | SlotState::Handshaking) {
            // Closing or departing from here on, within the linger deadline.
            self.start_linger(id);
            return self.progress(id);
        }
        slot.dirty = false;
        let flush = match slot.state {
            SlotState::Open => !slot.output_held,
            SlotState::Closing(CloseReason::OutputOverflow) => false,
            // Held output is never sent early, not even by a close: it is dropped.
            SlotState::Closing(_) => !slot.wire.abort && !slot.output_held,
            _ => true,
        };
        if flush {
            let mut outbox = std::mem::take(&mut slot.outbox);
            if slot
                .wire
                .stage(&mut outbox, &mut self.io.spare_bufs)
                .is_err()
            {
                self.close_now(id, CloseReason::TlsError);
                return self.progress(id);
            }
            slot.wire.start_send(id.index());
            if slot.wire.unsent() > CONN_OUTPUT_BYTES_MAX {
                self.set_closing(id, CloseReason::OutputOverflow);
                return self.progress(id);
            }
        }
        match slot.state {
            SlotState::Open | SlotState::Handshaking => {}
            SlotState::Closing(reason) => {
                if flush && slot.wire.unsent() > 0 {
                    return; // the send's completion brings us back
                }
                // Not behind a send still in flight (an overflowing peer): the alert would
                // land in the middle of a record.
                if !slot.wire.abort && !slot.wire.cancel_sent && !slot.wire.send_armed {
                    slot.wire.send_close_notify();
                }
                if slot.wire.in_flight() {
                    slot.wire.cancel(id.index());
                    return; // the last completion brings us back
                }
                // SAFETY: nothing in flight references the descriptor; closing our own.
                unsafe { libc::close(slot.wire.fd) };
                self.finish(id, reason);
            }
            SlotState::HandingOff(to) => {
                if slot.wire.unsent() > 0 {
                    return;
                }
                if slot.wire.in_flight() {
                    slot.wire.cancel(id.index());
                    return;
                }
                self.hand_off_now(id, to);
            }
            SlotState::Departing => {
                if slot.wire.unsent() > 0 || self.io.depart_hold {
                    return;
                }
                if slot.wire.in_flight() {
                    slot.wire.cancel(id.index());
                    return;
                }
                self.depart_now(id);
            }
        }
    }

    fn hand_off_now(&mut self, id: ConnId, to: proto::ids::ShardId) {
        let adopt = self.io.mesh.take_handoff(id);
        // A HandingOff slot always parked what travels with it first (ShardIo::hand_off).
        let adopt = adopt.expect("handoff payload parked");
        let slot = self.io.conns.get_mut(id).expect("caller checked the slot");
        let wire = std::mem::replace(
            &mut slot.wire,
            crate::conn::wire::Wire::new(-1, None, Vec::new()),
        );
        let detached = Detached::from_wire(wire);
        self.io.counters.handoffs_out += 1;
        self.io.mesh.push_adopt(to, detached, adopt);
        self.finish(id, CloseReason::HandedOff);
    }
}

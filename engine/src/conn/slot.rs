//! One connection's slot in the shard's table: what state it is in, the frames queued for
//! it, its socket (`Wire`), its deadline, and the limits every connection lives under.
//!
//! Lifecycle of a slot: inserted at accept (or adoption) → `Open` after the TLS handshake →
//! `Closing`/`HandingOff` when someone asks → removed by the shard loop once its output is
//! flushed and nothing is in flight on its socket, or aborted at its linger deadline
//! ([`CONN_LINGER_MS`]) if that takes too long. Removal bumps the slot's generation, so a
//! stale [`ConnId`] never reaches the next connection in that slot.
//!
//! There is no task per connection: a slot the service touched goes on the shard's dirty
//! list (`mark_dirty`) and the loop flushes every dirty slot once per turn.
//!
//! This module owns the slot's data; it must not touch the ring, the timer wheel or the
//! service (the transitions live beside it in `conn`).

use crate::conn::wire::Wire;
use crate::service::CloseReason;
use crate::timer_wheel::TimerId;
use proto::ids::ConnId;
use proto::ids::ShardId;

#[cfg(doc)]
use crate::conn::table::ConnTable;
/// Most bytes queued for one connection that it has not yet taken off the socket. A client
/// that stops reading is closed ([`CloseReason::OutputOverflow`]) rather than let grow.
pub const CONN_OUTPUT_BYTES_MAX: usize = 256 * 1024;

/// How long a connection that left `Open` (closing, or being handed off) may take to flush
/// what it owes and let go of its socket. Past it the slot aborts: its output is dropped,
/// everything in flight on the socket is cancelled, and the socket closes. A peer that stops
/// reading cannot hold a slot beyond it.
pub const CONN_LINGER_MS: u64 = 5_000;

/// Most plaintext a connection being handed off may buffer while its socket detaches: one
/// whole frame. A peer that sends more in that window is closed.
pub const HANDOFF_UNREAD_BYTES_MAX: usize =
    proto::limits::FRAME_HEADER_BYTES + proto::limits::FRAME_BYTES_MAX;

/// What a connection slot is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// TLS handshake in progress; the service has not seen this connection yet.
    Handshaking,
    /// Open: frames flow.
    Open,
    /// Flush the outbox, then close for this reason.
    Closing(CloseReason),
    /// Flush the outbox, then detach the socket and send it to this shard.
    HandingOff(ShardId),
    /// Flush the outbox, then detach the socket for the next process (a live upgrade).
    Departing,
}

/// One connection's engine-side state, kept in the shard's [`ConnTable`].
#[derive(Debug)]
pub(crate) struct ConnSlot {
    /// Encoded frames waiting to go out (plaintext; TLS encrypts on flush). Empty and
    /// capacity-free while the connection is idle.
    pub(crate) outbox: Vec<u8>,
    /// The socket, TLS session and bytes in transit.
    pub(crate) wire: Wire,
    /// On the shard's dirty list (flushed at the end of this turn).
    pub(crate) dirty: bool,
    pub(crate) state: SlotState,
    /// Cached clock at the last bytes received; the idle timer re-arms from it.
    pub(crate) last_rx_ms: u64,
    /// The handshake or idle timer of this connection in the wheel.
    pub(crate) timer: Option<TimerId>,
    /// When that timer is due (the shard's monotonic clock, ms).
    pub(crate) timer_at_ms: u64,
    /// Since when part of a frame has been waiting for the rest (0: none).
    pub(crate) partial_since_ms: u64,
    /// The service has heard `on_open`/`on_adopt` for it (so it must hear `on_close`).
    pub(crate) opened: bool,
    /// It left `Open` and its linger deadline ([`CONN_LINGER_MS`]) is armed.
    pub(crate) lingering: bool,
    /// The peer's address (IPv4 mapped into IPv6; `::` when the socket could not say), read
    /// once at accept or adoption: services budget sign-ups per source address.
    pub(crate) peer: std::net::Ipv6Addr,
    /// The service said it logged in (or it has no login): the pre-login limits are off.
    pub(crate) logged_in: bool,
    /// The service holds its output ([`ShardIo::hold_output`]): the outbox fills but is not
    /// sent (a close drops it). A bool in the slot's padding: no idle bytes.
    ///
    /// [`ShardIo::hold_output`]: crate::shard_io::ShardIo::hold_output
    pub(crate) output_held: bool,
    /// Counted against its prefix's pre-login connections (`conn::prelogin`).
    pub(crate) prefix_counted: bool,
    /// Bytes of its partial frame counted against the shard's pre-login budget.
    /// (u32: at most `PRELOGIN_PARTIAL_BYTES_SHARD_MAX`; it sits in the slot's padding.)
    pub(crate) partial_counted: u32,
}

impl ConnSlot {
    pub(crate) fn new(state: SlotState, now_ms: u64, peer: std::net::Ipv6Addr, wire: Wire) -> Self {
        ConnSlot {
            outbox: Vec::new(),
            wire,
            dirty: false,
            state,
            last_rx_ms: now_ms,
            timer: None,
            timer_at_ms: 0,
            partial_since_ms: 0,
            opened: false,
            lingering: false,
            peer,
            logged_in: false,
            output_held: false,
            prefix_counted: false,
            partial_counted: 0,
        }
    }
}

/// Puts `id` on the dirty list once: the shard loop flushes it at the end of the turn.
pub(crate) fn mark_dirty(slot: &mut ConnSlot, dirty: &mut Vec<ConnId>, id: ConnId) {
    if !slot.dirty {
        slot.dirty = true;
        dirty.push(id);
    }
}

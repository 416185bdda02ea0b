//! The per-shard engine state a service acts through ([`ShardIo`]): the connection table,
//! the timer wheel, the mesh outbox, the cached clocks and the shard's counters; and
//! `ShardCell`, the service beside that state, which the loop and the connection code act
//! on.
//!
//! Everything here is owned by one shard thread and touched only from it: plain integers,
//! no locks, no atomics. A connection is its slot (`conn::slot`); a slot the service touched
//! goes on the `dirty` list, and the shard loop flushes every dirty slot once per turn, so
//! all of a turn's sends leave in one `io_uring_enter`.
//!
//! This module owns the service's API onto the shard; it must not touch the ring or sockets
//! (a connection's I/O is `conn`'s, the loop is `shard`'s).

use std::rc::Weak;
use std::time::Instant;

use crate::conn::slot::{mark_dirty, ConnSlot, SlotState, CONN_OUTPUT_BYTES_MAX};
use crate::conn::table::ConnTable;
use crate::mesh::MeshOutbox;
use crate::observe::counters::ShardCounters;
use crate::service::{CloseReason, Service};
use crate::timer_wheel::{TimerId, TimerWheel};
use proto::ids::ConnId;
use proto::ids::ShardId;

/// Service timers a shard may hold at once. The wheel has room for these beside one engine
/// timer per connection slot, so a service that sets many timers never leaves a connection
/// without its deadline; past it `set_timer` answers [`TimersFull`].
pub const SERVICE_TIMERS_MAX: usize = 65_536;

/// What the wheel holds: the engine's own connection deadlines, or a service timer.
pub(crate) enum TimerEntry<T> {
    /// The TLS handshake of this connection must be done by now.
    Handshake(ConnId),
    /// This connection must have received something since `last_rx_ms + idle`.
    Idle(ConnId),
    /// This connection left `Open` and must be gone by now
    /// ([`CONN_LINGER_MS`](crate::conn::slot::CONN_LINGER_MS)).
    Linger(ConnId),
    /// A timer the service set.
    Service(T),
}

/// The connection a service named is gone (its id is stale), or it is already closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection {0:?} is closed or closing")]
pub struct ConnGone(pub ConnId);

/// The shard's timer wheel is at capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timer wheel full")]
pub struct TimersFull;

/// The per-shard engine state handed to every [`Service`] callback.
pub struct ShardIo<S: Service> {
    pub(crate) shard: ShardId,
    pub(crate) shard_count: usize,
    /// Wall-clock ms since the Unix epoch, for the service (timestamps that leave the box,
    /// and the deadlines it gives `set_timer`): `mono_ms` plus `wall_offset_ms`.
    pub(crate) now_ms: u64,
    /// The engine's clock: monotonic ms since the shard started (plus one, so 0 is never a
    /// time). Every deadline in the wheel and every connection's timestamps are on it, so a
    /// step of the wall clock (NTP, an operator) neither stalls nor fires them.
    pub(crate) mono_ms: u64,
    /// The origin of `mono_ms`.
    pub(crate) clock_base: Instant,
    /// Wall clock minus monotonic clock, read once per loop turn ([`ShardIo::sync_wall`]).
    pub(crate) wall_offset_ms: i64,
    /// Added to the wall clock when it is read: a step, for tests. Always 0 in production.
    pub(crate) wall_step_ms: i64,
    pub(crate) idle_timeout_ms: u64,
    pub(crate) frame_timeout_ms: u64,
    pub(crate) conns: ConnTable<ConnSlot>,
    pub(crate) timers: TimerWheel<TimerEntry<S::Timer>>,
    pub(crate) mesh: MeshOutbox<S::Msg, S::Adopt>,
    pub(crate) counters: ShardCounters,
    /// Handshake and mesh-hop latencies (recorded per handshake and per batch, not per frame).
    pub(crate) latency: crate::observe::histogram::EngineLatency,
    /// The cell this struct lives in, for handles given to tasks the service spawns.
    pub(crate) cell: Weak<std::cell::RefCell<ShardCell<S>>>,
    /// Connections with output to flush or a state change to act on, this turn.
    pub(crate) dirty: Vec<ConnId>,
    /// Emptied send buffers kept for the next sends (`conn::wire::keep_spare`): a
    /// connection's outbox starts as one, so a frame written to an idle connection
    /// allocates nothing.
    pub(crate) spare_bufs: Vec<Vec<u8>>,
    /// Service timers in the wheel (at most [`SERVICE_TIMERS_MAX`]).
    pub(crate) service_timers: usize,
    /// Time the loop spent working (not waiting in the kernel) since the last statistics
    /// period; read and reset by the statistics keeper.
    pub(crate) busy_ns: u64,
    /// The longest loop turn since the last period: its work, and its `io_uring_enter` when
    /// it did not wait there (the kernel's inline work on its submissions).
    pub(crate) turn_max_ns: u64,
    /// Turns of the loop since the shard started.
    pub(crate) turns: u64,
    /// Counts of the connections not logged in yet (`conn::prelogin`).
    pub(crate) prelogin: crate::conn::prelogin::PreLogin,
    /// A live upgrade: `Departing` connections flush but do not detach yet, because this
    /// shard's service or another shard is not quiet (a log write or a mesh message could
    /// still owe them a frame). Set by the loop while it drains for an upgrade.
    pub(crate) depart_hold: bool,
    /// A live upgrade: the connections detached for the next process, collected until the
    /// shard exits.
    pub(crate) departures: Vec<crate::upgrade::depart::Departed>,
}

impl<S: Service> ShardIo<S> {
    /// This shard's id.
    pub fn shard_id(&self) -> ShardId {
        self.shard
    }

    /// How many shards the runtime runs.
    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// Wall-clock milliseconds since the Unix epoch, read once per event batch.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The monotonic clock now (ms; see `mono_ms`), without storing it.
    pub(crate) fn mono_now(&self) -> u64 {
        self.clock_base.elapsed().as_millis() as u64 + 1
    }

    /// Reads the monotonic clock (once per event batch) and moves both clocks to it.
    pub(crate) fn tick_clock(&mut self) {
        self.set_clock(Instant::now());
    }

    /// Moves both clocks to `now`, a monotonic instant the loop has read (once after each
    /// wait, so completions need no clock read of their own).
    pub(crate) fn set_clock(&mut self, now: Instant) {
        self.mono_ms = now.saturating_duration_since(self.clock_base).as_millis() as u64 + 1;
        self.now_ms = self.mono_ms.saturating_add_signed(self.wall_offset_ms);
    }

    /// Reads both clocks (once per loop turn): the wall clock may have stepped since.
    #[cfg(test)]
    pub(crate) fn sync_wall(&mut self) {
        self.sync_wall_at(Instant::now());
    }

    /// Moves the monotonic clock to `now` (the turn's start) and reads the wall clock, which
    /// may have stepped since the last turn.
    pub(crate) fn sync_wall_at(&mut self, now: Instant) {
        self.set_clock(now);
        let wall = now_ms().saturating_add_signed(self.wall_step_ms);
        self.wall_offset_ms = wall as i64 - self.mono_ms as i64;
        self.now_ms = wall;
    }

    /// The shard's counters (read-only for the service; the engine keeps them).
    pub fn counters(&self) -> &ShardCounters {
        &self.counters
    }

    /// Messages this shard has queued on the mesh and not yet flushed to the peers' rings
    /// (at most `mesh::MESH_OUTBOX_MSGS_MAX`): an overload signal for the service.
    pub fn mesh_queued(&self) -> usize {
        self.mesh.queued()
    }

    /// Whether `conn` is a live, open connection on this shard.
    pub fn is_open(&self, conn: ConnId) -> bool {
        matches!(self.conns.get(conn), Some(s) if s.state == SlotState::Open)
    }

    /// The peer address of `conn` (IPv4 as itself, not mapped); `None` when `conn` is gone
    /// or the socket could not say.
    pub fn peer_ip(&self, conn: ConnId) -> Option<std::net::IpAddr> {
        let peer = self.conns.get(conn)?.peer;
        (!peer.is_unspecified()).then(|| peer.to_canonical())
    }

    /// Number of connections in this shard's table (any state).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Appends bytes to `conn`'s outbox through `write` and marks it dirty: the loop sends
    /// them at the end of this turn, with everything else queued for it. The bytes must be
    /// whole frames. A connection whose outbox passes [`CONN_OUTPUT_BYTES_MAX`] is closed.
    pub fn send_with<R>(
        &mut self,
        conn: ConnId,
        write: impl FnOnce(&mut Vec<u8>) -> R,
    ) -> Result<R, ConnGone> {
        let slot = match self.conns.get_mut(conn) {
            // A departing connection still takes frames until it detaches: a log write or
            // a peer shard may owe it one.
            Some(s) if matches!(s.state, SlotState::Open | SlotState::Departing) => s,
            _ => return Err(ConnGone(conn)),
        };
        if slot.outbox.capacity() == 0 {
            if let Some(buf) = self.spare_bufs.pop() {
                slot.outbox = buf;
            }
        }
        let r = write(&mut slot.outbox);
        if slot.outbox.len() + slot.wire.unsent() > CONN_OUTPUT_BYTES_MAX {
            slot.state = SlotState::Closing(CloseReason::OutputOverflow);
        }
        self.counters.frames_out += 1;
        mark_dirty(slot, &mut self.dirty, conn);
        Ok(r)
    }

    /// Holds `conn`'s output: what is queued for it (before and after this call) stays in its
    /// outbox, under the same cap, until [`ShardIo::release_output`]. For an answer given
    /// before what it names is durable: the client sees nothing a crash could take back.
    /// A close drops what is held; a hand-off or a live upgrade's departure flushes it.
    pub fn hold_output(&mut self, conn: ConnId) {
        if let Some(slot) = self.conns.get_mut(conn) {
            slot.output_held = true;
        }
    }

    /// Sends what [`ShardIo::hold_output`] held, at the end of this turn (a connection gone
    /// meanwhile is ignored: ids carry a generation).
    pub fn release_output(&mut self, conn: ConnId) {
        if let Some(slot) = self.conns.get_mut(conn) {
            if slot.output_held {
                slot.output_held = false;
                mark_dirty(slot, &mut self.dirty, conn);
            }
        }
    }

    /// Flushes what is queued for `conn`, then closes it; the service hears `on_close` with
    /// [`CloseReason::Service`].
    pub fn close(&mut self, conn: ConnId) -> Result<(), ConnGone> {
        self.close_with(conn, CloseReason::Service)
    }

    pub(crate) fn close_with(&mut self, conn: ConnId, reason: CloseReason) -> Result<(), ConnGone> {
        let slot = match self.conns.get_mut(conn) {
            Some(s) if matches!(s.state, SlotState::Open | SlotState::Handshaking) => s,
            _ => return Err(ConnGone(conn)),
        };
        slot.state = SlotState::Closing(reason);
        mark_dirty(slot, &mut self.dirty, conn);
        Ok(())
    }

    /// Sends `msg` to shard `to` (this shard included) on the mesh. Messages to one shard
    /// arrive in the order sent. On a full outbox the message is handed back.
    pub fn mesh_send(&mut self, to: ShardId, msg: S::Msg) -> Result<(), S::Msg> {
        match self.mesh.push(to, msg) {
            Ok(()) => {
                self.counters.mesh_msgs_sent += 1;
                Ok(())
            }
            Err(m) => {
                self.counters.mesh_send_full += 1;
                Err(m)
            }
        }
    }

    /// Moves live connection `conn` to shard `to`: its queued output is flushed here, then
    /// its socket, TLS state and unread bytes travel with `adopt`, and `to` hears
    /// `on_adopt(adopt)`. This shard hears `on_close(conn, HandedOff)` — or `on_close` with
    /// another reason if the move is called off (a send fails, the output overflows, the
    /// linger deadline or the one-frame input cap is passed meanwhile); then `adopt` is
    /// dropped.
    ///
    /// Ordering: the adoption leaves once the socket has detached, a turn or more later, so
    /// a `mesh_send` to `to` made after this call may reach `to` before `on_adopt`. Send what
    /// `to` needs about the connection in `adopt` itself.
    pub fn hand_off(&mut self, conn: ConnId, to: ShardId, adopt: S::Adopt) -> Result<(), ConnGone> {
        assert!(
            to.0 < self.shard_count,
            "hand_off to shard {to:?} of {}",
            self.shard_count
        );
        let slot = match self.conns.get_mut(conn) {
            Some(s) if s.state == SlotState::Open => s,
            _ => return Err(ConnGone(conn)),
        };
        slot.state = SlotState::HandingOff(to);
        mark_dirty(slot, &mut self.dirty, conn);
        self.mesh.park_handoff(conn, adopt);
        Ok(())
    }

    /// Sets a service timer that fires at `deadline_ms` (wall clock, ms, as [`ShardIo::now_ms`]
    /// gives it) or within one wheel tick after it. The wheel keeps the time left until it
    /// on the monotonic clock: a later step of the wall clock does not move the timer.
    /// At most [`SERVICE_TIMERS_MAX`] service timers are held at once.
    pub fn set_timer(&mut self, deadline_ms: u64, timer: S::Timer) -> Result<TimerId, TimersFull> {
        if self.service_timers >= SERVICE_TIMERS_MAX {
            self.counters.service_timers_refused += 1;
            return Err(TimersFull);
        }
        let due = self.mono_ms + deadline_ms.saturating_sub(self.now_ms);
        let id = self
            .timers
            .insert(due, TimerEntry::Service(timer))
            .map_err(|_| TimersFull)?;
        self.service_timers += 1;
        Ok(id)
    }

    /// Cancels a service timer; `None` when it already fired or was cancelled.
    pub fn cancel_timer(&mut self, id: TimerId) -> Option<S::Timer> {
        match self.timers.cancel(id)? {
            TimerEntry::Service(t) => {
                self.service_timers -= 1;
                Some(t)
            }
            // Engine timers never leak their ids to the service.
            _ => unreachable!("service cancelled an engine timer"),
        }
    }
}

/// A shard's service and engine state (one thread only).
/// A shard's service and its engine state, owned by the shard's thread: what the loop, the
/// connection code, the statistics keeper and handles all act on. Here, beside `ShardIo`,
/// so that none of them needs another's module.
pub(crate) struct ShardCell<S: Service> {
    pub(crate) service: S,
    pub(crate) io: ShardIo<S>,
    pub(crate) tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    pub(crate) handshake_timeout_ms: u64,
    /// This shard's share of the connection cap: accepts stop here (the table has room
    /// beyond it for adoptions).
    pub(crate) accept_max: usize,
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    d.map(|d| d.as_millis() as u64).unwrap_or(0)
}

//! The contract between the engine and the service a shard runs.
//!
//! The engine owns sockets, TLS, timers, the mesh and cores; the service owns the meaning of
//! frames. Every callback is synchronous and gets the shard's [`ShardIo`] to act through:
//! queue bytes to a connection, close it, set a timer, send a mesh message, or hand a live
//! connection to another shard. Callbacks never block and never await, so a service is a
//! state machine that can be tested without sockets.
//!
//! This module must not touch the ring or sockets: it is the whole surface the service sees.

use crate::shard_io::ShardIo;
use proto::ids::ConnId;
use proto::ids::ShardId;

/// Why the engine closed (or is closing) a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed its side (EOF).
    PeerClosed,
    /// Reading or writing the socket failed.
    IoError,
    /// The TLS layer rejected the peer's bytes.
    TlsError,
    /// The TLS handshake did not finish within the handshake timeout.
    HandshakeTimeout,
    /// Nothing arrived within the idle timeout.
    IdleTimeout,
    /// A frame was started but not finished within the frame timeout (slowloris).
    SlowFrame,
    /// A frame's header announced more than the frame size limit.
    FrameTooLarge,
    /// The peer did not read and its pending output passed the limit.
    OutputOverflow,
    /// The service asked for the close (bad input, session replaced, ...).
    Service,
    /// The server is shutting down.
    Shutdown,
    /// A pre-login limit closed it: its source prefix held its share of pre-login
    /// connections, or its partial frame would pass the shard's budget (`conn::prelogin`).
    PreLoginLimit,
    /// The connection was handed to another shard (not a close of the socket).
    HandedOff,
    /// The connection moved to the next process in a live upgrade (not a close of the
    /// socket; `crate::upgrade`).
    Upgrade,
}

/// What a shard runs. One instance per shard, created on that shard's thread.
pub trait Service: Sized + 'static {
    /// Messages this service sends between shards. They cross threads, so they are `Send`.
    type Msg: Send + 'static;
    /// What a service timer carries back when it fires.
    type Timer: 'static;
    /// What travels with a live connection handed to another shard
    /// ([`ShardIo::hand_off`]), given to [`Service::on_adopt`] there. It crosses threads
    /// with the connection, so it is `Send`.
    type Adopt: Send + 'static;

    /// Connections must log in: until the service calls [`ShardIo::set_logged_in`] for one,
    /// the engine applies its pre-login limits to it (a cap per source prefix, a small frame
    /// cap, a shard budget for partial frames, and no idle refresh from what it sends; see
    /// `conn::prelogin`). Off for services without a login.
    const LOGIN: bool = false;

    /// The shard is up (mesh connected, listener attached); called once, before any other.
    fn on_start(&mut self, _io: &mut ShardIo<Self>) {}

    /// A connection finished its handshake (or was accepted, in plaintext) on this shard.
    fn on_open(&mut self, io: &mut ShardIo<Self>, conn: ConnId);

    /// One whole frame payload arrived on `conn` (the length header is already stripped).
    fn on_frame(&mut self, io: &mut ShardIo<Self>, conn: ConnId, payload: &[u8]);

    /// A frame on `conn` could not be split (its header announced more than the frame size
    /// limit). The engine closes `conn` after this; the service may queue an error frame.
    fn on_frame_error(
        &mut self,
        _io: &mut ShardIo<Self>,
        _conn: ConnId,
        _error: proto::codec::FrameError,
    ) {
    }

    /// `conn` is gone; its id is already stale.
    fn on_close(&mut self, io: &mut ShardIo<Self>, conn: ConnId, reason: CloseReason);

    /// A message from shard `from` (possibly this shard itself).
    fn on_mesh(&mut self, io: &mut ShardIo<Self>, from: ShardId, msg: Self::Msg);

    /// A live connection handed over by shard `from` now lives here as `conn`, with what the
    /// old shard sent along with it. Frames already read but not yet processed follow as
    /// ordinary [`Service::on_frame`] calls.
    fn on_adopt(&mut self, io: &mut ShardIo<Self>, from: ShardId, conn: ConnId, adopt: Self::Adopt);

    /// A thread outside the shards woke this shard (`mesh::OutsideWake::notify`, from
    /// `Runtime::outside_wakes`): the service drains whatever queue that thread fills.
    /// Called at most once per loop turn, after the peers' batches.
    fn on_outside(&mut self, io: &mut ShardIo<Self>) {
        let _ = io;
    }

    /// A live upgrade is taking the shard's connections to the next process: what `conn`
    /// needs there (its session, in the service's own bytes, at most
    /// [`crate::upgrade::blob::HANDOVER_FIELD_BYTES_MAX`]), or `None` to close it instead.
    /// Asked once per departing connection, when it is about to detach: its output is
    /// flushed, no frame of its has been dispatched since the upgrade began, and every shard
    /// is quiet, so the answer accounts for everything sent on it. A connection that moves
    /// then hears `on_close(conn, Upgrade)`. The default closes every connection.
    fn depart(&mut self, _io: &mut ShardIo<Self>, _conn: ConnId) -> Option<Vec<u8>> {
        None
    }

    /// In the next process of a live upgrade: a connection [`Service::depart`] described
    /// arrives as `conn`, with the bytes it returned. Frames read before the move follow as
    /// ordinary [`Service::on_frame`] calls. The default treats it as newly opened.
    fn on_arrive(&mut self, io: &mut ShardIo<Self>, conn: ConnId, _session: &[u8]) {
        self.on_open(io, conn);
    }

    /// A timer set through [`ShardIo::set_timer`] fired.
    fn on_timer(&mut self, io: &mut ShardIo<Self>, timer: Self::Timer);

    /// The shard is stopping: flush what must be flushed. Connections close after this.
    fn on_shutdown(&mut self, _io: &mut ShardIo<Self>) {}

    /// Whether a flush started by `on_shutdown` is still running: the shard's drain waits
    /// for it (within its bound) as it waits for connections to close.
    fn flushing(&self) -> bool {
        false
    }

    /// Named statistics for this shard's published snapshot, asked once a second from the
    /// housekeeping loop (never per frame). Names are `snake_case`, unique, and stable: they
    /// become Prometheus metric names (`switchboard_<name>`) and alarm rule names.
    fn stats(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// Help text for the statistics [`Service::stats`] reports, by name, for `/metrics`'
    /// `# HELP` lines. A statistic whose name ends in `_total` only grows (a Prometheus
    /// counter); any other is a gauge. Units are base units at the end of the name.
    fn stat_help(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// Latency histograms the service keeps, copied into the snapshot once a second from the
    /// housekeeping loop. Names end in `_seconds` and are unique.
    fn histograms(&self) -> Vec<crate::observe::histogram::NamedHistogram> {
        Vec::new()
    }

    /// Who is responsible for statistic `stat` being high (the user with the longest queue,
    /// say), for an alarm's warning and `/stats`. Asked only when an alarm is logged, so it
    /// may scan. It is shown to operators: name no phone number or other personal data
    /// (a shard-local id or a hash).
    fn stat_offender(&self, _stat: &str) -> Option<String> {
        None
    }
}

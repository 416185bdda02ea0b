//! Per-shard counters: plain `u64`s owned by one shard thread. No atomics, no sharing;
//! readers on other threads get copies sent over the mesh or through the service.

/// What one shard has done since it started. Every field only grows, except `conns_open`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardCounters {
    /// Connections accepted from the listener.
    pub accepts: u64,
    /// `accept` calls that failed (EMFILE, ENFILE, ENOMEM, ...).
    pub accept_errors: u64,
    /// Connections refused because the shard's connection table was full.
    pub accepts_rejected_full: u64,
    /// TLS handshakes completed.
    pub handshakes: u64,
    /// TLS handshakes that failed or timed out.
    pub handshake_failures: u64,
    /// TLS handshakes completed that resumed a session from a ticket (also in `handshakes`).
    pub handshakes_resumed: u64,
    /// Connections in the table now (any state).
    pub conns_open: u64,
    /// Connections closed, all reasons.
    pub closes: u64,
    /// Connections closed by the idle timeout.
    pub idle_timeouts: u64,
    /// Connections closed because a frame took longer than the frame timeout to arrive.
    pub slow_frames: u64,
    /// Frames handed to the service.
    pub frames_in: u64,
    /// Frame writes queued by the service.
    pub frames_out: u64,
    /// Bytes read from sockets (TLS records included).
    pub bytes_in: u64,
    /// Bytes written to sockets (TLS records included).
    pub bytes_out: u64,
    /// Frames whose header announced more than the frame size limit.
    pub frames_too_large: u64,
    /// Service messages queued on the mesh.
    pub mesh_msgs_sent: u64,
    /// Service messages received from the mesh.
    pub mesh_msgs_received: u64,
    /// Batches pushed into peer rings (each costs at most one wake of the peer).
    pub mesh_batches_sent: u64,
    /// Mesh sends refused because this shard's outbox was full.
    pub mesh_send_full: u64,
    /// Connections handed to another shard.
    pub handoffs_out: u64,
    /// Connections adopted from another shard.
    pub handoffs_in: u64,
    /// Handoffs that failed (descriptor duplication failed, or the target's table was full).
    pub handoff_failures: u64,
    /// Connections handed to the next process in a live upgrade.
    pub upgrade_departed: u64,
    /// Connections taken over from the previous process in a live upgrade.
    pub upgrade_arrived: u64,
    /// Connections a live upgrade closed instead of moving them: the service had nothing
    /// to move (no session), TLS was still on rustls (handshaking, or nothing sent yet), or
    /// the output did not flush within the linger deadline.
    pub upgrade_closed: u64,
    /// Closing or departing connections aborted because they did not finish within
    /// `CONN_LINGER_MS` (their peer stopped reading, say).
    pub linger_aborts: u64,
    /// Service timers refused because the service held `SERVICE_TIMERS_MAX` already.
    pub service_timers_refused: u64,
    /// Engine and service timers that fired.
    pub timers_fired: u64,
    /// Receives the kernel ended because every provided buffer was out (re-armed at once;
    /// a steady rise means the shard's buffer ring is too small for its load).
    pub recv_no_buffers: u64,
    /// `io_uring_enter` calls: one wait per loop turn, plus any submit a full submission
    /// queue forced mid-turn.
    pub ring_enters: u64,
    /// Completions reaped from the shard's ring.
    pub completions: u64,
    /// Waits that asked the kernel to batch completions (`--coalesce-us`; with
    /// `--coalesce adaptive`, only while completions arrive densely: `crate::coalesce`).
    pub ring_waits_batched: u64,
    /// Connections closed at accept: their source prefix held its share of pre-login
    /// connections (`conn::prelogin`).
    pub prelogin_prefix_refused: u64,
    /// Pre-login frames whose header announced more than the pre-login frame cap.
    pub prelogin_frames_too_large: u64,
    /// Pre-login connections closed: their partial frame would pass the shard's budget.
    pub prelogin_partial_closed: u64,
    /// Bytes of unfinished frames held by pre-login connections now (a gauge).
    pub prelogin_partial_bytes: u64,
}

//! # engine — Switchboard's thread-per-core runtime
//!
//! A generic runtime that knows nothing about chat. It runs one loop per shard on its own
//! io_uring, each on a thread pinned to its own CPU, and gives the service on top a small API ([`Service`] and
//! [`ShardIo`]): accept connections (TLS or plaintext), receive whole frames, queue frames
//! to a connection, set timers, send typed messages or whole live connections to another
//! shard.
//!
//! ## Promises
//! - Nothing mutable is shared between shards: each shard owns its connection table, timer
//!   wheel, buffers and counters. Cross-shard work travels as messages on the mesh.
//! - No `Mutex`, `RwLock` or atomic read-modify-write on the per-frame path (checked by
//!   `tests/engine_no_locks.rs`, which scans the hot-path modules, and by `clippy.toml`).
//! - The service crate sees no ring and no futures executor: everything it needs is here.
//! - Per event, few syscalls: a shard's sends, receives, accepts, log writes and waits all go
//!   through its one ring, one `io_uring_enter` per loop turn (ARCHITECTURE.md, "The shard
//!   loop").
//!
//! ## Layout
//! - [`config`]: runtime settings (shard count, pinning, huge pages, real-time priority).
//! - [`runtime`]: checks, binds and starts the shards; stops and joins them.
//! - [`service`]: the callbacks a service implements.
//! - [`shard_io`]: the per-shard state a service acts through.
//! - `shard`: one shard's loop (completions, timers, mesh, flushes, drain).
//! - [`ring`]: the shard's io_uring, its provided-buffer ring, file operations as futures,
//!   and the small executor for the service's background futures.
//! - `net`: a connection on the ring: its socket state (`net::wire`) and what each
//!   completion and each end of turn does for it (`net::conn_io`).
//! - [`mesh`]: batched SPSC rings between every ordered pair of shards.
//! - [`listener`]: SO_REUSEPORT listeners, one per shard, bound before the shards start.
//! - [`handle`]: a way back into the shard from a task the service spawned.
//! - [`log_file`]: the append-only, fdatasync'd file for a shard's durable log.
//! - [`handoff`]: a live connection detached from one shard and adopted by another.
//! - [`conn_table`]: the per-shard slab of connections with generation-tagged ids.
//! - [`timer_wheel`]: the per-shard hashed timer wheel (O(1) insert and cancel).
//! - [`buffer_pool`]: fixed-size buffers from one arena, optionally huge-page backed.
//! - [`tls`]: rustls configuration and the dev certificate.
//! - [`tls_session`]: one server TLS session: rustls' unbuffered API for the handshake, then
//!   [`tls_records`] with the keys rustls hands over; caller-owned buffers.
//! - [`tls_records`]: TLS 1.3 record protection after the handshake (keys, IVs, sequences).
//! - [`counters`]: per-shard counters.
//! - [`stats`]: per-shard snapshots published once a second, decayed rates, utilisation.
//! - [`alarm`]: thresholds on those statistics, logged once per period.
//! - [`admin`]: the admin thread serving `/metrics`, `/stats`, `/healthz` and `/readyz`.
//! - [`health`]: readiness (every shard started, not stopping).
//! - [`histogram`]: fixed-bucket latency histograms (TLS handshake, mesh hop, and the
//!   service's own).
//! - [`stats_text`]: Prometheus and JSON rendering of snapshots.
//! - [`sync`]: the one sanctioned lock, counting acquisitions per thread.
//! - [`realtime`]: SCHED_FIFO for shard threads.
//! - [`shutdown`]: SIGINT/SIGTERM to an orderly stop.
#![warn(missing_docs)]

pub mod admin;
pub mod alarm;
pub mod buffer_pool;
pub mod config;
pub mod conn_table;
pub mod counters;
#[doc(hidden)]
pub mod fuzzing;
pub mod handle;
pub mod handoff;
pub mod health;
pub mod histogram;
pub mod listener;
pub mod log_file;
pub mod mesh;
mod net;
pub mod realtime;
pub mod ring;
pub mod runtime;
pub mod service;
mod shard;
pub mod shard_io;
pub mod shutdown;
pub mod stats;
pub mod stats_text;
pub mod sync;
pub mod timer_wheel;
pub mod tls;
pub mod tls_records;
pub mod tls_session;

/// Sleeps on the current shard's loop for `d`: finer than the timer wheel's tick, for
/// short and rare waits (the log's commit window), never one per connection.
pub async fn sleep(d: std::time::Duration) {
    ring::exec::sleep(d).await;
}

pub use ring::exec::block_on;

pub use config::EngineConfig;
pub use conn_table::ConnId;
pub use counters::ShardCounters;
pub use handle::ShardHandle;
pub use log_file::LogFile;
pub use runtime::{start, EngineError, Runtime};
pub use service::{CloseReason, Service};
pub use shard_io::ShardIo;
pub use stats::ShardStats;

/// A shard's index, `0..shard_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

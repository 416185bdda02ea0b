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
//!   `tests/engine_no_locks.rs`, which scans every source file but a named few cold ones, and by
//!   `clippy.toml`).
//! - The service crate sees no ring and no futures executor: everything it needs is here.
//! - Per event, few syscalls: a shard's sends, receives, accepts, log writes and waits all go
//!   through its one ring, one `io_uring_enter` per loop turn (`docs/decisions/shard-loop-own-ring.md`).
//!
//! ## Layout (folders group what one concern owns)
//! - The runtime: [`config`] (settings), [`coalesce`] (when a wait batches completions), [`runtime`] (checks, binds, starts and joins the
//!   shards), `shard` (one shard's loop, one function per step of a turn), [`service`] (the
//!   callbacks a service implements), [`shard_io`] (the per-shard state a service acts
//!   through), [`handle`] (a way back into the shard from a spawned future), [`shutdown`],
//!   [`realtime`], [`sync`] (the one sanctioned lock, counted).
//! - [`conn`]: a connection's whole life on its shard: [`conn::listener`] (SO_REUSEPORT
//!   listeners bound before the shards start), [`conn::table`] (slab with generation-tagged
//!   ids), [`conn::slot`] (one slot's state and the per-connection limits), `conn::wire` (one
//!   socket's state on the ring), `conn::open` (register, handshake done, finish),
//!   `conn::deadline` (handshake, idle and frame timers), `conn::io` (what each completion
//!   and each end of turn does for a connection), `conn::linger` (leaving `Open`),
//!   [`conn::handoff`] (a live connection moving to another shard).
//! - [`ring`]: the shard's io_uring, its provided-buffer ring, file operations as futures,
//!   and the small executor for the service's background futures.
//! - [`tls`]: rustls configuration and the dev certificate; [`tls::session`] (one server
//!   session: rustls' unbuffered API for the handshake, then [`tls::records`], TLS 1.3
//!   record protection with the keys rustls hands over).
//! - [`upgrade`]: what a live upgrade hands the next process: [`upgrade::blob`] (the
//!   versioned, checked description of listeners and connections) and [`upgrade::fds`]
//!   (descriptors over `SCM_RIGHTS`, and the new process's one-line answer).
//! - Per-shard data structures: [`timer_wheel`] (hashed, O(1) insert and cancel),
//!   [`buffer_pool`] (fixed-size buffers from one arena, optionally huge-page backed),
//!   [`mesh`] (batched SPSC rings between every ordered pair of shards), [`log_file`] (the
//!   append-only, fdatasync'd log).
//! - [`observe`]: what operators see: [`observe::counters`], [`observe::stats`] (per-shard
//!   snapshots once a second, rates, utilisation), [`observe::alarm`], [`observe::histogram`],
//!   [`observe::stats_text`] (Prometheus and JSON), [`observe::admin`] (the thread serving
//!   `/metrics`, `/stats`, `/healthz`, `/readyz`), [`observe::health`].
//!
//! Every module has one path: nothing is re-exported under a second module path (the root
//! re-exports a few types a service names often: [`ShardIo`], [`Service`], ...). The ids a
//! service and the engine share, `ShardId` and `ConnId`, are `proto::ids`' (one definition).
#![warn(missing_docs)]

pub mod buffer_pool;
pub mod coalesce;
pub mod config;

pub mod conn;
#[doc(hidden)]
pub mod fuzzing;
pub mod handle;
pub mod log_file;
pub mod mesh;
pub mod observe;
pub mod realtime;
pub mod ring;
pub mod runtime;
pub mod service;
mod shard;
pub mod shard_io;
pub mod shutdown;
pub mod sync;
pub mod timer_wheel;
pub mod tls;
pub mod upgrade;

/// Sleeps on the current shard's loop for `d`: finer than the timer wheel's tick, for
/// short and rare waits (the log's commit window), never one per connection.
pub async fn sleep(d: std::time::Duration) {
    ring::exec::sleep(d).await;
}

/// Gives the rest of this loop turn back: resolves at the next turn, after the loop has
/// been to the kernel once, so a long job done in slices never holds up I/O.
pub async fn yield_turn() {
    ring::exec::yield_turn().await;
}

pub use ring::exec::block_on;

pub use config::EngineConfig;
pub use handle::ShardHandle;
pub use log_file::LogFile;
pub use observe::counters::ShardCounters;
pub use observe::stats::ShardStats;
pub use runtime::{start, start_from, EngineError, Runtime};
pub use service::{CloseReason, Service};
pub use shard_io::ShardIo;

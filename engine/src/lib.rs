//! # engine — Switchboard's thread-per-core runtime
//!
//! A generic runtime that knows nothing about chat. It runs one glommio executor per shard,
//! each pinned to its own CPU, and gives the service on top a small API: accept connections
//! (TLS or plaintext), read and write frames, set timers, append to files, and send typed
//! messages or whole live connections to another shard.
//!
//! ## Promises
//! - Nothing mutable is shared between shards: each shard owns its connection table, timer
//!   wheel, buffer pool and counters. Cross-shard work travels as messages on the mesh.
//! - No `Mutex`, `RwLock` or atomic read-modify-write on the per-frame path (see
//!   `tests/engine_no_locks.rs`, which scans the hot-path modules, and `clippy.toml`).
//! - The service crate never imports glommio: everything it needs is re-exported here.
//!
//! ## Layout
//! - [`config`]: runtime settings (shard count, pinning, huge pages, real-time priority).
//! - [`runtime`]: starts the shards, builds the mesh, waits for shutdown.
//! - [`shard`]: the per-shard context handed to the service.
//! - [`mesh`]: batched SPSC rings between every ordered pair of shards.
//! - [`listener`]: SO_REUSEPORT listeners, one per shard, bound before the shards start.
//! - [`transport`]: a connection's bytes: plaintext or rustls TLS over a glommio socket.
//! - [`handoff`]: a live connection detached from one shard and attached on another.
//! - [`conn_table`]: the per-shard slab of connections with generation-tagged ids.
//! - [`timer_wheel`]: the per-shard hashed timer wheel (O(1) insert and cancel).
//! - [`buffer_pool`]: the per-shard frame buffers, optionally huge-page backed.
//! - [`tls`]: rustls configuration and the dev certificate.
//! - [`realtime`]: SCHED_FIFO for shard threads.
//! - [`shutdown`]: SIGINT/SIGTERM to an orderly stop.
#![warn(missing_docs)]

pub mod buffer_pool;
pub mod conn_table;
pub mod timer_wheel;
pub mod tls;

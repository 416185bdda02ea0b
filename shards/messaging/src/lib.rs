//! # messaging — the Switchboard messaging core
//!
//! Each shard's service as state machines: an event (a client frame, a mesh message, a
//! close, a commit made durable) and `now` go in; what to do comes out in an `Out` (frames,
//! mesh messages, records to append, effects that wait for the disk). The server (the
//! `shards` crate) runs these on the engine and carries out what they ask for.
//!
//! ## Promises
//! - **No I/O, no runtime, no clock, no locks.** Nothing here opens a file or a socket or
//!   reads the time; the only thread it starts (`tables/table_thread.rs`) allocates and frees
//!   memory. The engine and io_uring are not in this crate's dependency tree, so the compiler
//!   keeps it that way. Randomness comes in
//!   as a [`state::RandomSource`]; files come in through traits ([`durable::record::LogBytes`],
//!   [`durable::replay::ReadAt`], the journal's file type parameter).
//! - **Peer input never panics**: a bad frame becomes an error frame for that connection.
//! - **Bounded**: every table has a named limit (`state/limits.rs`), answered and counted.
//!
//! ## Layout
//! - [`state`]: one shard's [`state::ShardState`] and the types every part shares: `effect`
//!   (what events ask for), `mesh_msg`, `home` (homes and ids), `limits`, `counters`.
//! - [`handlers`]: the rules, one `impl ShardState` per family: `dispatch` (where each event
//!   enters), `login`, `route`, `receipt`, `group`, `group_consent`, `presence`, `mesh_back`.
//!   Handlers depend on the state and the tables; neither depends on a handler.
//! - [`tables`]: what a shard keeps: `registry`, `sessions`, `queues`, `dedupe`,
//!   `pin_codes`, `budgets`, `admission`, `groups`, `consent`, `presence`, `recent_acked`,
//!   and the `steady_map` they live in (its big tables made and freed by `table_thread`).
//! - [`durable`]: `record` (what the journal holds), `journal` (group commit as
//!   bookkeeping), `snapshot` (compaction in slices), `replay` (start-up, streamed).
//! - [`media`]: media tokens and settings (issue 25): what shards sign for the HTTP media
//!   service; the bytes never come here.
//! - `sim`: the simulated cluster: unit tests, and fuzz targets with the `sim` feature.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod durable;
pub mod handlers;
pub mod media;
// The simulated cluster: for unit tests, and for fuzz targets and property tests outside the
// crate with the `sim` feature. Not part of the service's API.
#[cfg(any(test, feature = "sim"))]
#[doc(hidden)]
#[allow(missing_docs)]
pub mod sim;
pub mod state;
pub mod tables;

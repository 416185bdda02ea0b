//! # shards — the messaging service each shard runs
//!
//! The service logic of Switchboard and the `switchboard` binary that runs it on the engine.
//! Service rules are state machines without I/O ([`state`], [`handlers`], [`tables`],
//! [`durable`]); [`adapter`] connects them to the engine, the journal files and the
//! notifiers. This crate never touches the ring or sockets and takes no locks on a shard's
//! path.
//!
//! ## Layout
//! - [`state`]: one shard's service state, what events ask for (`effect`), mesh messages,
//!   homes and ids, limits, counters.
//! - [`handlers`]: the rules, one `impl ShardState` per family: `dispatch` (where each event
//!   enters), `login`, `route`, `receipt`, `group`, `group_consent`, `presence`, `mesh_back`.
//! - [`tables`]: what a shard keeps: `registry`, `sessions`, `queues`, `dedupe`, `pin_codes`,
//!   `budgets`, `admission`, `groups`, `consent`, `presence`, `recent_acked`, and the
//!   `steady_map` they live in (grown off the shard threads by `table_thread`).
//! - [`durable`]: `record` (what the journal holds), `journal` (group commit), `snapshot`,
//!   `replay`.
//! - `sim`: the simulated cluster (tests, and fuzz targets with the `sim` feature).
//! - [`adapter`]: the `engine::Service` each shard runs, with `overload` (fast `Busy`),
//!   `stats` (what a shard reports once a second) and `login_deadline`.
//! - [`notify`]: SMS gateway and push provider, their HTTP(S) `webhook` client, and
//!   `pin_replies` (`PinSent` once the PIN is out).
//! - [`config`]: flags, TOML file, defaults; `show` prints `--check-config`'s settings.
//! - [`data`]: the data directory's layout and lock, and the journals' check at start.
//! - [`server`]: wiring it all together. [`log_lines`]: the JSON log lines.
#![warn(missing_docs)]

pub mod adapter;
pub mod config;
pub mod data;
pub mod durable;
pub mod handlers;
pub mod log_lines;
pub mod notify;
pub mod server;
// The simulated cluster: for unit tests, and for fuzz targets and property tests outside the
// crate with the `sim` feature. Not part of the service's API.
#[cfg(any(test, feature = "sim"))]
#[doc(hidden)]
#[allow(missing_docs)]
pub mod sim;
pub mod state;
pub mod tables;

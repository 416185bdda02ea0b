//! # shards — the Switchboard server
//!
//! Runs the messaging core (the `messaging` crate: each shard's state machines, tables,
//! journal bookkeeping, snapshot and replay, without I/O) on the engine, and holds the
//! `switchboard` binary. This crate owns what the core must not: the engine's `Service`
//! glue, the journal files and when their jobs run, the notifiers' threads and HTTP
//! clients, the configuration, the data directory. It never touches the ring or sockets
//! (the engine does) and takes no locks on a shard's path.
//!
//! ## Layout
//! - [`adapter`]: the `engine::Service` each shard runs: decodes frames, runs the core,
//!   carries out its `Out`; `commit` (the commit driver: the journal's jobs on the engine),
//!   `overload` (fast `Busy`), `stats` (what a shard reports once a second),
//!   `login_deadline`, `random` (the OS's randomness for the core).
//! - [`notify`]: SMS gateway and push provider, their HTTP(S) `webhook` client, and
//!   `pin_replies` (`PinSent` once the PIN is out).
//! - [`cluster`]: a cluster of boxes over NATS: the gateway thread (the one NATS client),
//!   membership, placement (a phone's home box) and each shard's `port` to the gateway.
//! - [`config`]: flags, TOML file, defaults; `show` prints `--check-config`'s settings.
//! - [`data`]: the data directory's `layout` and `lock`, the journals' check at start
//!   (`journal_check`, `--salvage`), and the journal file as replay reads it
//!   (`journal_reader`).
//! - [`media`]: the media service (issue 25): HTTP(S) uploads and downloads on its own
//!   thread (hyper, tokio, tokio-rustls), content-addressed files, budgets, retention.
//! - [`server`]: wiring it all together. [`log_lines`]: the JSON log lines.
//! - [`sd_notify`]: systemd's `Type=notify` protocol (`READY=1`, a successor's `MAINPID=`).
//! - [`upgrade`]: a live upgrade's process steps (start the new binary, hand over, take
//!   back on a refusal).
#![warn(missing_docs)]

pub mod adapter;
pub mod cluster;
pub mod config;
pub mod data;
pub mod log_lines;
pub mod media;
pub mod notify;
pub mod sd_notify;
pub mod server;
pub mod upgrade;

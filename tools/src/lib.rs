//! # tools — the Switchboard connection farm and CLI client
//!
//! Two binaries built on one small library:
//! - `farm`: drives many synthetic phones at a server: spread over source addresses
//!   ([`source_ips`]) and worker processes ([`farm::fanout`]), ramped at a connect rate, then
//!   idle, a steady message mix, or a reconnect storm ([`workload`]), measuring latencies and
//!   verifying exactly-once delivery ([`stats`], [`ledger`]), with a terminal [`progress`] line
//!   and a JSON [`report`].
//! - `chat`: a person's client: register, verify, send, listen, groups ([`client`],
//!   [`chat_config`]).
//!
//! ## Promises
//! - Only the server address given is contacted, from the source addresses given (and, by
//!   `chat send-file` and `listen --save-dir`, the media URLs that server hands out); the
//!   brokers [`brokers`] starts listen on loopback only.
//! - Every loop is bounded by a count or a deadline; every queue by a limit
//!   (`inflight_per_conn_max`, [`farm::driver::CONNECTS_INFLIGHT_MAX`]).
//! - No async runtime: the farm is threads with epoll and non-blocking sockets; the CLI is
//!   blocking I/O with timeouts.
//! - `anyhow` at the edges (binaries, process fan-out, the CLI's [`media`] transfers); typed
//!   errors inside.
//!
//! ## Layout
//! - [`net`]: TCP connect from a source address; client TLS.
//! - [`source_ips`]: `--source-ips` ranges.
//! - [`peers`]: uniform and Zipf peer choice, the PRNG.
//! - [`workload`]: the run's [`workload::Spec`], modes, pacing, message stamps.
//! - [`stats`], [`ledger`], [`report`], [`progress`]: measuring and telling.
//! - [`farm`]: processes, threads, users, transport.
//! - [`client`]: a blocking protocol client; [`chat_config`]: the CLI's key file; [`media`]:
//!   the CLI's uploads and downloads;
//!   [`terminal`]: network text made safe to print.
//! - [`brokers`]: mosquitto and nats-server as children, for the farm's tests and the bench.
#![warn(missing_docs)]

pub mod brokers;
pub mod chat_config;
pub mod client;
pub mod farm;
pub mod ledger;
pub mod media;
pub mod net;
pub mod peers;
pub mod progress;
pub mod report;
pub mod shown;
pub mod source_ips;
pub mod stats;
pub mod terminal;
pub mod workload;

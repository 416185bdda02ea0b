//! # shards — the messaging service each shard runs
//!
//! The service logic of Switchboard and the `switchboard` binary that runs it on the engine.
//! Service rules are state machines without I/O; [`adapter`] connects them to the engine.
//! This crate never imports glommio.
//!
//! ## Layout
//! - [`config`]: flags, TOML file, defaults.
//! - [`server`]: wiring settings, TLS and the engine together.
//! - [`adapter`]: the `engine::Service` each shard runs.
#![warn(missing_docs)]

pub mod adapter;
pub mod config;
pub mod server;

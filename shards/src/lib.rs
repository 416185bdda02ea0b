//! # shards — the messaging service each shard runs
//!
//! The service logic of Switchboard and the `switchboard` binary that runs it on the engine.
//! Service rules are state machines without I/O ([`state`] and the modules it dispatches
//! to); [`adapter`] connects them to the engine, the durable log and the notifiers. This
//! crate never touches the ring or sockets and takes no locks on a shard's path.
//!
//! ## Layout
//! - [`config`]: flags, TOML file, defaults. [`server`]: wiring it all together.
//! - [`config_show`]: `--check-config`'s effective settings. [`log_format`]: JSON log lines.
//! - [`data_layout`]: the shard count a data directory belongs to. [`data_lock`]: one
//!   server per data directory. [`log_check`]: damaged logs stop the start (or `--salvage`).
//! - [`adapter`]: the `engine::Service` each shard runs; [`journal`]: group commit.
//! - [`service_stats`]: what a shard reports once a second (queues, log, fsync latency).
//! - [`state`]: one shard's service state and event entry points.
//! - [`login`]: register → verify → login, at the phone's home shard.
//! - [`route`]: 1:1 sends; [`dedupe`]: retries, per sender. [`receipt`]: acks, reads, receipts.
//! - [`offline`]: per-user queues. [`session`]: who is online where.
//! - [`group`]: groups and fan-out; [`group_consent`]: who may add whom to a group.
//!   [`presence`]: subscriptions and last seen.
//! - [`registry`]: accounts, PINs, keys. [`notify`]: SMS gateway and push provider;
//!   [`webhook`]: their HTTP(S) client; [`pin_replies`]: `PinSent` once the PIN is out.
//! - [`record`]: what the log holds. [`replay`]: start-up replay, streamed through a
//!   bounded window. [`effect`]: what state machines ask for.
//! - [`snapshot`]: what compaction writes, built in slices between events.
//! - [`mesh_msg`]: messages between shards. [`home`]: homes and ids. [`limits`].
//! - [`steady_map`]: the hash map the per-user state lives in: it grows in slices.
//!   [`table_thread`]: makes and frees its big tables off the shard threads.
//! - [`overload`]: fast reject (`Busy`) when the shard's log or mesh is behind;
//!   [`mesh_back`]: what a mesh message the full outbox handed back becomes.
//! - [`admission`]: per-user budgets for presence fan-out and new recipients.
//! - [`budget`]: sign-up budgets per source, prefix, number range and box; [`pins`]:
//!   outstanding PINs and per-phone back-off.
#![warn(missing_docs)]

pub mod adapter;
pub mod admission;
pub mod budget;
pub mod config;
pub mod config_show;
pub mod data_layout;
pub mod data_lock;
pub mod dedupe;
pub mod effect;
pub mod group;
pub mod group_consent;
pub mod home;
pub mod journal;
pub mod limits;
pub mod log_check;
pub mod log_format;
pub mod login;
pub mod login_deadline;
pub mod mesh_back;
pub mod mesh_msg;
pub mod notify;
pub mod offline;
pub mod overload;
pub mod pin_replies;
pub mod pins;
pub mod presence;
pub mod receipt;
pub mod record;
pub mod registry;
pub mod replay;
pub mod route;
pub mod server;
pub mod service_stats;
pub mod session;
// The simulated cluster: for unit tests, and for fuzz targets and property tests outside the
// crate with the `sim` feature. Not part of the service's API.
#[cfg(any(test, feature = "sim"))]
#[doc(hidden)]
#[allow(missing_docs)]
pub mod sim;
#[cfg(test)]
mod sim_abuse;
#[cfg(test)]
mod sim_admission;
#[cfg(test)]
mod sim_dedupe;
#[cfg(any(test, feature = "sim"))]
#[doc(hidden)]
#[allow(missing_docs)]
pub mod sim_fuzz;
#[cfg(test)]
mod sim_groups;
pub mod snapshot;
pub mod state;
pub mod steady_map;
pub mod table_thread;
pub mod webhook;

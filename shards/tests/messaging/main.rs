//! Messaging over the real server: 1:1 and group flows, errors, tombstones, compaction, a crash
//! and restart. One test binary, a module per topic (`cargo test -p shards --test messaging`).

#[path = "../support/mod.rs"]
mod support;

mod compaction;
mod crash;
mod errors;
mod flow;
mod groups;
mod reconnect;
mod tombstones;

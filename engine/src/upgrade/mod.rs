//! Live upgrade: what one process hands the next so that every listener and live
//! connection carries on in a new binary (issue 26; the design, and what is not built yet,
//! in `docs/decisions/live-upgrade.md`).
//!
//! - [`blob`]: the versioned, checksummed description of the listeners and connections
//!   (per connection: its shard, TLS record state and held-back record, unread plaintext,
//!   unsent bytes, the service's session bytes);
//! - [`depart`]: a shard's connections leaving for the next process, and arriving there;
//!   [`depart::Departure`], what the whole process hands over;
//! - [`fds`]: the descriptors over a unix socket with `SCM_RIGHTS`, the blob after them,
//!   and the new process's one-line answer, `ready` or `refused: <why>`.
//!
//! This module owns the format and the transport; it must not touch a running shard (the
//! shards detach and adopt connections through `conn::handoff`).

pub mod blob;
pub mod depart;
pub mod fds;

//! The data directory: which shard count it belongs to ([`layout`]), one server at a time
//! ([`lock`]), and the journals' check before any shard starts ([`journal_check`]). Blocking
//! file I/O at start-up, before the engine runs.

pub mod journal_check;
pub mod layout;
pub mod lock;

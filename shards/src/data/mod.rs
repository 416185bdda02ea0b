//! The data directory: which shard count it belongs to ([`layout`]), one server at a time
//! ([`lock`]), the journals' check before any shard starts ([`journal_check`]), and the
//! journal file as replay reads it ([`journal_reader`]). Blocking
//! file I/O at start-up, before the engine runs.

pub mod journal_check;
pub mod journal_reader;
pub mod layout;
pub mod lock;

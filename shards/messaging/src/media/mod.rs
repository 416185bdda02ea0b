//! Media (issue 25): what the messaging core knows about the HTTP media service. The bytes
//! never pass through a shard; a shard only signs tokens:
//! - `token`: the signed, expiring capabilities (upload: bound to the user, the object's
//!   SHA-256 and size; download: bound to one recipient and the object). Pure: the key and
//!   `now` come in.
//! - `settings`: the media service's settings as shards see them (key, public URL, limits).
//!
//! The service itself (HTTP, files, limits on bytes) lives in the server crate
//! (`shards/src/media/`); it verifies what is signed here with the same key.

pub mod settings;
pub mod token;

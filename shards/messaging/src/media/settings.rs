//! The media service's settings as the shards see them: the key to sign with, the public
//! URL clients reach the service at, and the limits a shard answers itself (object size,
//! how long a slot or a download token lives).

use super::token::MediaKey;

/// Largest object, by default (64 MiB).
pub const MEDIA_OBJECT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;
/// How long an upload slot's URL is good for.
pub const MEDIA_SLOT_MS: u64 = 15 * 60 * 1000;
/// How long objects are kept, by default (30 days); a download token lives as long.
pub const MEDIA_RETENTION_MS_DEFAULT: u64 = 30 * 24 * 3600 * 1000;

/// Media settings (present only when the media service is on).
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// Signs upload and download tokens.
    pub key: MediaKey,
    /// Where clients reach the service, without a trailing slash (`https://host:port`).
    pub base_url: String,
    /// Largest object a slot is granted for.
    pub object_bytes_max: u64,
    /// Objects older than this are deleted; a download token expires this long after the
    /// message was sent.
    pub retention_ms: u64,
}

impl MediaSettings {
    /// The URL of object `sha256` with `token`: `{base}/m/{sha hex}?t={token}`.
    pub fn url(&self, sha256: &[u8; 32], token: &str) -> String {
        format!(
            "{}/m/{}?t={token}",
            self.base_url,
            super::token::hex(sha256)
        )
    }
}

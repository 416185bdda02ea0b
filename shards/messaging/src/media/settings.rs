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

/// Longest media base URL (a box's `--media-url`, or one a peer box names).
pub const MEDIA_BASE_URL_BYTES_MAX: usize = 1024;

/// Whether `base` is a media service URL a download URL may be built on:
/// `http(s)://host[:port][/path]`, at most [`MEDIA_BASE_URL_BYTES_MAX`] bytes, printable
/// ASCII, no query, fragment, user info or trailing slash. Empty (none named) is fine.
/// Checks a box's own `--media-url` and, in a cluster, the one a peer box names.
pub fn base_url_ok(base: &str) -> bool {
    if base.is_empty() {
        return true;
    }
    let Some(rest) = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"))
    else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or_default();
    base.len() <= MEDIA_BASE_URL_BYTES_MAX
        && !host.is_empty()
        && !base.ends_with('/')
        && base.bytes().all(|b| b.is_ascii_graphic())
        && !base.contains(['?', '#', '@', '\\'])
}

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
        url_at(&self.base_url, sha256, token)
    }
}

/// The URL of object `sha256` with `token` at the media service `base`.
pub fn url_at(base: &str, sha256: &[u8; 32], token: &str) -> String {
    format!("{base}/m/{}?t={token}", super::token::hex(sha256))
}

//! What the media service did since start: atomics the media thread bumps and shard 0
//! reports in its statistics once a second (so /stats and /metrics carry them once, as
//! `switchboard_media_*`). The media thread is the only writer, so a count is a plain load
//! and store (no read-modify-write); relaxed ordering: each is an independent count.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The media service's counters and gauges.
#[derive(Debug, Default)]
pub struct MediaCounters {
    /// Objects stored.
    pub uploads: AtomicU64,
    /// Bytes stored.
    pub upload_bytes: AtomicU64,
    /// Uploads of an object already stored (answered 200, nothing written).
    pub uploads_duplicate: AtomicU64,
    /// GETs answered with bytes (200 or 206).
    pub downloads: AtomicU64,
    /// Bytes sent to downloaders.
    pub download_bytes: AtomicU64,
    /// Refused: object larger than its slot or the object limit.
    pub refused_too_large: AtomicU64,
    /// Refused: the user's bytes for the day.
    pub refused_daily_bytes: AtomicU64,
    /// Refused: the user's uploads in progress.
    pub refused_concurrent: AtomicU64,
    /// Refused: the disk budget.
    pub refused_disk: AtomicU64,
    /// Refused: wrong SHA-256 or size.
    pub refused_bad_hash: AtomicU64,
    /// Refused: bad, forged, expired or mismatched token.
    pub refused_token: AtomicU64,
    /// Uploads cut at the slow-upload deadline.
    pub refused_slow: AtomicU64,
    /// GETs of an object not stored.
    pub not_found: AtomicU64,
    /// Objects deleted by retention.
    pub expired: AtomicU64,
    /// Connections refused: the service's connection cap.
    pub connections_refused: AtomicU64,
    /// Connections ended: a write waited `MEDIA_WRITE_STALL_MS` without progress.
    pub write_stalls: AtomicU64,
    /// Objects stored now (gauge).
    pub objects: AtomicU64,
    /// Bytes stored now (gauge).
    pub stored_bytes: AtomicU64,
}

/// Help text for every name [`report`] gives.
pub const HELP: &[(&str, &str)] = &[
    ("media_uploads_total", "Media objects stored."),
    ("media_upload_bytes_total", "Media bytes stored."),
    (
        "media_uploads_duplicate_total",
        "Uploads of a media object already stored.",
    ),
    ("media_downloads_total", "Media GETs answered with bytes."),
    (
        "media_download_bytes_total",
        "Media bytes sent to downloaders.",
    ),
    (
        "media_refused_too_large_total",
        "Media uploads refused: larger than the slot or object limit.",
    ),
    (
        "media_refused_daily_bytes_total",
        "Media uploads refused: the user's bytes for the day.",
    ),
    (
        "media_refused_concurrent_total",
        "Media uploads refused: the user's uploads in progress.",
    ),
    (
        "media_refused_disk_total",
        "Media uploads refused: the disk budget.",
    ),
    (
        "media_refused_bad_hash_total",
        "Media uploads refused: wrong SHA-256 or size.",
    ),
    (
        "media_refused_token_total",
        "Media requests refused: bad, expired or mismatched token.",
    ),
    (
        "media_refused_slow_total",
        "Media uploads cut at the slow-upload deadline.",
    ),
    (
        "media_not_found_total",
        "Media GETs of an object not stored.",
    ),
    ("media_expired_total", "Media objects deleted by retention."),
    (
        "media_connections_refused_total",
        "Media connections refused at the connection cap.",
    ),
    (
        "media_write_stalls_total",
        "Media connections ended: the peer stopped reading.",
    ),
    ("media_objects", "Media objects stored now."),
    ("media_stored_bytes", "Media bytes stored now."),
];

/// The counters by name, in [`HELP`]'s order.
pub fn report(c: &MediaCounters) -> Vec<(&'static str, u64)> {
    let values = [
        &c.uploads,
        &c.upload_bytes,
        &c.uploads_duplicate,
        &c.downloads,
        &c.download_bytes,
        &c.refused_too_large,
        &c.refused_daily_bytes,
        &c.refused_concurrent,
        &c.refused_disk,
        &c.refused_bad_hash,
        &c.refused_token,
        &c.refused_slow,
        &c.not_found,
        &c.expired,
        &c.connections_refused,
        &c.write_stalls,
        &c.objects,
        &c.stored_bytes,
    ];
    HELP.iter()
        .zip(values)
        .map(|((name, _), v)| (*name, v.load(Relaxed)))
        .collect()
}

/// Adds one (the media thread, the only writer).
pub fn bump(c: &AtomicU64) {
    add(c, 1);
}

/// Adds `n` (the media thread, the only writer).
pub fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_reported_under_its_name() {
        let c = MediaCounters::default();
        bump(&c.refused_slow);
        let r = report(&c);
        assert_eq!(r.len(), HELP.len());
        assert!(r.contains(&("media_refused_slow_total", 1)));
    }
}

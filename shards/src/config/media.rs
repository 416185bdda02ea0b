//! The media service's settings (issue 25): flags (`--media-*`) over the config file's
//! `[media]` table (the same names without `media-`) over defaults, validated here and wired
//! into [`super::Cli`] (flattened), [`super::FileConfig`] and [`super::ServerConfig`].
//! Starts nothing.
//!
//! **Off by default.** The service opens a second listener and writes user files under the
//! data directory; a box that was never asked to hold media should not expose either (the
//! README's two commands keep meaning exactly what they did). `--media-listen ADDR` turns it
//! on, with TLS when the server has TLS.

use std::net::SocketAddr;

use clap::Args;
use serde::Deserialize;

use super::ConfigError;

/// Per-user upload bytes per day, by default (1 GiB).
pub const MEDIA_USER_BYTES_PER_DAY_DEFAULT: u64 = 1024 * 1024 * 1024;
/// Concurrent uploads per user, by default.
pub const MEDIA_UPLOADS_PER_USER_MAX_DEFAULT: u32 = 4;
/// Total bytes of stored media, by default (10 GiB): new uploads are refused past it.
pub const MEDIA_DISK_BYTES_MAX_DEFAULT: u64 = 10 * 1024 * 1024 * 1024;
/// Slowest upload accepted, by default: 16 KiB/s averaged over the upload (plus
/// [`MEDIA_UPLOAD_GRACE_MS`]).
pub const MEDIA_UPLOAD_BYTES_PER_S_MIN_DEFAULT: u64 = 16 * 1024;

/// Time an upload gets on top of its size at the slowest rate (TLS, headers, a slow start).
pub const MEDIA_UPLOAD_GRACE_MS: u64 = 10_000;

/// A write to a media peer that waits this long without progress (the peer stopped reading)
/// ends its connection.
pub const MEDIA_WRITE_STALL_MS: u64 = 30_000;

/// Longest `--media-url`: with `/m/`, the object's 64 hex digits, `?t=` and a token (178)
/// it still fits `Media.url` (`proto::limits::MEDIA_URL_BYTES_MAX`).
pub use messaging::media::settings::MEDIA_BASE_URL_BYTES_MAX;
const _: () = assert!(
    MEDIA_BASE_URL_BYTES_MAX + 3 + 64 + 3 + 2 * messaging::media::token::TOKEN_BYTES
        <= proto::limits::MEDIA_URL_BYTES_MAX
);

/// Media flags.
#[derive(Debug, Args, Default, Clone)]
pub struct MediaArgs {
    /// Serve media uploads and downloads over HTTP(S) on this address (off when absent).
    #[arg(long)]
    pub media_listen: Option<SocketAddr>,
    /// The URL clients reach the media service at (default: https://ADDR, or http:// with
    /// --no-tls), e.g. behind a load balancer.
    #[arg(long)]
    pub media_url: Option<String>,
    /// Largest object, bytes (default 64 MiB).
    #[arg(long)]
    pub media_object_bytes_max: Option<u64>,
    /// Upload bytes per user per day (UTC), default 1 GiB.
    #[arg(long)]
    pub media_user_bytes_per_day: Option<u64>,
    /// Uploads in progress per user, default 4.
    #[arg(long)]
    pub media_uploads_per_user_max: Option<u32>,
    /// Total stored media bytes; new uploads are refused past it (default 10 GiB).
    #[arg(long)]
    pub media_disk_bytes_max: Option<u64>,
    /// Delete objects this many days after upload (default 30).
    #[arg(long)]
    pub media_retention_days: Option<u64>,
    /// Slowest upload accepted, bytes per second (default 16384).
    #[arg(long)]
    pub media_upload_bytes_per_s_min: Option<u64>,
    /// Pin the media thread to this CPU (default: not pinned; give it one no shard runs on,
    /// e.g. with --shards one less than the CPUs, when media traffic is heavy).
    #[arg(long)]
    pub media_cpu: Option<usize>,
}

/// The config file's `[media]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaFile {
    listen: Option<SocketAddr>,
    url: Option<String>,
    object_bytes_max: Option<u64>,
    user_bytes_per_day: Option<u64>,
    uploads_per_user_max: Option<u32>,
    disk_bytes_max: Option<u64>,
    retention_days: Option<u64>,
    upload_bytes_per_s_min: Option<u64>,
    cpu: Option<usize>,
}

/// The media service's settings, validated.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Public URL base (no trailing slash); `None`: `https://` (or `http://` without TLS)
    /// and the address the listener bound (its real port when `listen` names port 0).
    pub base_url: Option<String>,
    /// Largest object.
    pub object_bytes_max: u64,
    /// Per-user upload bytes per day.
    pub user_bytes_per_day: u64,
    /// Uploads in progress per user.
    pub uploads_per_user_max: u32,
    /// Total stored bytes.
    pub disk_bytes_max: u64,
    /// Object age at which it is deleted (ms).
    pub retention_ms: u64,
    /// Slowest upload accepted.
    pub upload_bytes_per_s_min: u64,
    /// Time an upload gets on top of its size at the slowest rate (no flag: tests shorten it).
    pub upload_grace_ms: u64,
    /// A write to a peer waiting this long without progress ends the connection (no flag).
    pub write_stall_ms: u64,
    /// The CPU the media thread is pinned to, if any.
    pub cpu: Option<usize>,
}

impl MediaArgs {
    /// The validated settings (flags over `file`), or `None` when the service is off.
    pub fn resolve(&self, file: Option<&MediaFile>) -> Result<Option<MediaConfig>, ConfigError> {
        let empty = MediaFile::default();
        let f = file.unwrap_or(&empty);
        let merged = MediaArgs {
            media_listen: self.media_listen.or(f.listen),
            media_url: self.media_url.clone().or_else(|| f.url.clone()),
            media_object_bytes_max: self.media_object_bytes_max.or(f.object_bytes_max),
            media_user_bytes_per_day: self.media_user_bytes_per_day.or(f.user_bytes_per_day),
            media_uploads_per_user_max: self.media_uploads_per_user_max.or(f.uploads_per_user_max),
            media_disk_bytes_max: self.media_disk_bytes_max.or(f.disk_bytes_max),
            media_retention_days: self.media_retention_days.or(f.retention_days),
            media_upload_bytes_per_s_min: self
                .media_upload_bytes_per_s_min
                .or(f.upload_bytes_per_s_min),
            media_cpu: self.media_cpu.or(f.cpu),
        };
        merged.resolve_merged()
    }

    fn resolve_merged(&self) -> Result<Option<MediaConfig>, ConfigError> {
        let Some(listen) = self.media_listen else {
            let any = self.media_url.is_some()
                || self.media_object_bytes_max.is_some()
                || self.media_user_bytes_per_day.is_some()
                || self.media_uploads_per_user_max.is_some()
                || self.media_disk_bytes_max.is_some()
                || self.media_retention_days.is_some()
                || self.media_upload_bytes_per_s_min.is_some()
                || self.media_cpu.is_some();
            if any {
                let detail = "media settings need media-listen (the service is off without it)";
                return Err(ConfigError::Invalid(detail.into()));
            }
            return Ok(None);
        };
        let base_url = self
            .media_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned());
        if let Some(u) = &base_url {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return Err(ConfigError::Invalid(format!(
                    "media-url must start with http:// or https://, got {u:?}"
                )));
            }
            if u.len() > MEDIA_BASE_URL_BYTES_MAX {
                return Err(ConfigError::Invalid(format!(
                    "media-url is {} bytes; at most {MEDIA_BASE_URL_BYTES_MAX}",
                    u.len()
                )));
            }
            if !messaging::media::settings::base_url_ok(u) {
                return Err(ConfigError::Invalid(format!(
                    "media-url must be http(s)://host[:port][/path] (printable ASCII; no \
                     query, fragment or user), got {u:?}"
                )));
            }
        }
        let positive = |name: &str, v: u64| {
            if v == 0 {
                Err(ConfigError::Invalid(format!("{name} must be above 0")))
            } else {
                Ok(v)
            }
        };
        let days = positive(
            "media-retention-days",
            self.media_retention_days.unwrap_or(30),
        )?;
        Ok(Some(MediaConfig {
            listen,
            base_url,
            object_bytes_max: positive(
                "media-object-bytes-max",
                self.media_object_bytes_max
                    .unwrap_or(messaging::media::settings::MEDIA_OBJECT_BYTES_MAX_DEFAULT),
            )?,
            user_bytes_per_day: self
                .media_user_bytes_per_day
                .unwrap_or(MEDIA_USER_BYTES_PER_DAY_DEFAULT),
            uploads_per_user_max: self
                .media_uploads_per_user_max
                .unwrap_or(MEDIA_UPLOADS_PER_USER_MAX_DEFAULT),
            disk_bytes_max: self
                .media_disk_bytes_max
                .unwrap_or(MEDIA_DISK_BYTES_MAX_DEFAULT),
            retention_ms: days.saturating_mul(24 * 3600 * 1000),
            upload_bytes_per_s_min: positive(
                "media-upload-bytes-per-s-min",
                self.media_upload_bytes_per_s_min
                    .unwrap_or(MEDIA_UPLOAD_BYTES_PER_S_MIN_DEFAULT),
            )?,
            upload_grace_ms: MEDIA_UPLOAD_GRACE_MS,
            write_stall_ms: MEDIA_WRITE_STALL_MS,
            cpu: self.media_cpu,
        }))
    }
}

/// The `[media]` table for `--check-config` (a table: it goes after every top-level key).
pub fn toml_section(m: &MediaConfig) -> String {
    let mut o = String::from("\n[media]\n");
    let mut kv = |k: &str, v: toml::Value| o.push_str(&format!("{k} = {v}\n"));
    kv("listen", m.listen.to_string().into());
    if let Some(u) = &m.base_url {
        kv("url", u.clone().into());
    }
    let int = |v: u64| toml::Value::Integer(i64::try_from(v).unwrap_or(i64::MAX));
    kv("object_bytes_max", int(m.object_bytes_max));
    kv("user_bytes_per_day", int(m.user_bytes_per_day));
    kv(
        "uploads_per_user_max",
        int(u64::from(m.uploads_per_user_max)),
    );
    kv("disk_bytes_max", int(m.disk_bytes_max));
    kv("retention_days", int(m.retention_ms / (24 * 3600 * 1000)));
    kv("upload_bytes_per_s_min", int(m.upload_bytes_per_s_min));
    if let Some(cpu) = m.cpu {
        kv("cpu", int(cpu as u64));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_defaults_when_on() {
        assert!(MediaArgs::default().resolve(None).unwrap().is_none());
        let on = MediaArgs {
            media_listen: Some("127.0.0.1:8443".parse().unwrap()),
            ..Default::default()
        };
        let c = on.resolve(None).unwrap().unwrap();
        assert_eq!(c.base_url, None, "the bound address");
        assert_eq!(c.object_bytes_max, 64 * 1024 * 1024);
        assert_eq!(c.retention_ms, 30 * 24 * 3600 * 1000);
        let url = |u: &str| MediaArgs {
            media_url: Some(u.into()),
            ..on.clone()
        };
        let given = url("https://media.example/")
            .resolve(None)
            .unwrap()
            .unwrap();
        assert_eq!(given.base_url.as_deref(), Some("https://media.example"));
        assert!(url("ftp://x").resolve(None).is_err());
        // Other boxes of a cluster build their users' URLs on it: a plain service URL only.
        assert!(url("https://media.example/x?a=1").resolve(None).is_err());
        assert!(url("https://user@media.example").resolve(None).is_err());
        let long = format!("https://{}", "a".repeat(MEDIA_BASE_URL_BYTES_MAX));
        assert!(url(&long).resolve(None).is_err());
        let zero = MediaArgs {
            media_retention_days: Some(0),
            ..on
        };
        assert!(zero.resolve(None).is_err());
    }

    #[test]
    fn flags_override_the_files_media_table_and_settings_need_a_listener() {
        let file: MediaFile =
            toml::from_str("listen = \"127.0.0.1:9443\"\nretention_days = 7\n").unwrap();
        let flags = MediaArgs {
            media_retention_days: Some(3),
            ..Default::default()
        };
        let c = flags.resolve(Some(&file)).unwrap().unwrap();
        assert_eq!(c.listen, "127.0.0.1:9443".parse().unwrap());
        assert_eq!(c.retention_ms, 3 * 24 * 3600 * 1000);
        assert!(
            flags.resolve(None).is_err(),
            "a media setting without a listener"
        );
        assert!(
            toml::from_str::<MediaFile>("lisen = 1").is_err(),
            "unknown keys"
        );
    }
}

//! The media service's flags (issue 25): parsed and validated here, wired into
//! [`super::Cli`] (flattened) and [`super::ServerConfig`]. Starts nothing.
//!
//! **Off by default.** The service opens a second listener and writes user files under the
//! data directory; a box that was never asked to hold media should not expose either (the
//! README's two commands keep meaning exactly what they did). `--media-listen ADDR` turns it
//! on, with TLS when the server has TLS.

use std::net::SocketAddr;

use clap::Args;

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

/// Media flags.
#[derive(Debug, Args, Default, Clone)]
pub struct MediaArgs {
    /// Serve media uploads and downloads over HTTP(S) on this address (off when absent).
    #[arg(long)]
    pub media_listen: Option<SocketAddr>,
    /// The URL clients reach the media service at (default: https://ADDR, or http:// with
    /// --no-tls), e.g. behind a load balancer.
    #[arg(long, requires = "media_listen")]
    pub media_url: Option<String>,
    /// Largest object, bytes (default 64 MiB).
    #[arg(long, requires = "media_listen")]
    pub media_object_bytes_max: Option<u64>,
    /// Upload bytes per user per day (UTC), default 1 GiB.
    #[arg(long, requires = "media_listen")]
    pub media_user_bytes_per_day: Option<u64>,
    /// Uploads in progress per user, default 4.
    #[arg(long, requires = "media_listen")]
    pub media_uploads_per_user_max: Option<u32>,
    /// Total stored media bytes; new uploads are refused past it (default 10 GiB).
    #[arg(long, requires = "media_listen")]
    pub media_disk_bytes_max: Option<u64>,
    /// Delete objects this many days after upload (default 30).
    #[arg(long, requires = "media_listen")]
    pub media_retention_days: Option<u64>,
    /// Slowest upload accepted, bytes per second (default 16384).
    #[arg(long, requires = "media_listen")]
    pub media_upload_bytes_per_s_min: Option<u64>,
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
}

impl MediaArgs {
    /// The validated settings, or `None` when the service is off.
    pub fn resolve(&self) -> Result<Option<MediaConfig>, ConfigError> {
        let Some(listen) = self.media_listen else {
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
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_defaults_when_on() {
        assert!(MediaArgs::default().resolve().unwrap().is_none());
        let on = MediaArgs {
            media_listen: Some("127.0.0.1:8443".parse().unwrap()),
            ..Default::default()
        };
        let c = on.resolve().unwrap().unwrap();
        assert_eq!(c.base_url, None, "the bound address");
        assert_eq!(c.object_bytes_max, 64 * 1024 * 1024);
        assert_eq!(c.retention_ms, 30 * 24 * 3600 * 1000);
        let url = |u: &str| MediaArgs {
            media_url: Some(u.into()),
            ..on.clone()
        };
        let given = url("https://media.example/").resolve().unwrap().unwrap();
        assert_eq!(given.base_url.as_deref(), Some("https://media.example"));
        assert!(url("ftp://x").resolve().is_err());
        let zero = MediaArgs {
            media_retention_days: Some(0),
            ..on
        };
        assert!(zero.resolve().is_err());
    }
}

//! Starting the server: settings → TLS → engine → one `Switchboard` per shard.
//! This module wires things together; it must not hold service state.

use std::path::PathBuf;

use engine::{EngineConfig, Runtime};

use std::sync::Arc;

use crate::adapter::{ServiceEnv, Switchboard};
use crate::config::ServerConfig;
use crate::notify::webhook::Webhook;
use messaging::media::token::MediaKey;

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TLS could not be set up (bad certificate or key, unwritable dev cert).
    #[error("TLS: {0}")]
    Tls(#[from] engine::tls::TlsError),
    /// A webhook URL is unusable.
    #[error("webhook: {0}")]
    Webhook(String),
    /// Another server holds the data directory.
    #[error("{0}")]
    Lock(#[from] crate::data::lock::LockError),
    /// A shard log is damaged mid-file (and `--salvage` was not given), or unreadable.
    #[error("{0}")]
    LogCheck(#[from] crate::data::journal_check::LogCheckError),
    /// The data directory belongs to a different shard count, or its layout file is bad.
    #[error("{0}")]
    Layout(#[from] crate::data::layout::LayoutError),
    /// The media service could not start (its directory, key or listener).
    #[error("media: {0}")]
    Media(std::io::Error),
    /// The engine refused to start (port taken, fd limit, no io_uring...).
    #[error("{0}")]
    Engine(#[from] engine::EngineError),
    /// The box could not join its cluster (`--cluster` without `--cluster-optional`).
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::gateway::ClusterStartError),
    /// A live upgrade's hand-over could not be taken (its one-line reason).
    #[error("hand-over: {0}")]
    HandOver(String),
}

/// Where the dev certificate lives for a data directory.
pub fn tls_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("tls")
}

/// The message of the log line the binary prints once it listens, with an `addr=` field.
/// Scripts and tests that start it on port 0 read the real address from this line.
pub const LISTENING: &str = "switchboard listening";

/// The message of the log line the media service prints once it listens (`addr=`).
pub const MEDIA_LISTENING: &str = "media listening";

/// The address in a [`MEDIA_LISTENING`] log line.
pub fn media_listening_addr(log_line: &str) -> Option<std::net::SocketAddr> {
    if !log_line.contains(MEDIA_LISTENING) {
        return None;
    }
    log_line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("addr="))
        .and_then(|a| a.parse().ok())
}

/// The address in a [`LISTENING`] log line (plain, not ANSI-coloured: set `NO_COLOR=1`).
pub fn listening_addr(log_line: &str) -> Option<std::net::SocketAddr> {
    if !log_line.contains(LISTENING) {
        return None;
    }
    log_line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("addr="))
        .and_then(|a| a.parse().ok())
}

/// Starts the shards; returns once they are listening. The media service, if configured,
/// runs until the process exits (see [`start_all`] to hold it).
pub fn start(cfg: &ServerConfig) -> Result<Runtime, StartError> {
    let (rt, media) = start_all(cfg)?;
    if let Some(m) = media {
        // Runs as long as the process does.
        std::mem::forget(m);
    }
    Ok(rt)
}

/// The shards and the media service when it is on.
pub type Started = (Runtime, Option<crate::media::MediaService>);

/// [`start`], handing back the media service (stopped when dropped) when it is on.
pub fn start_all(cfg: &ServerConfig) -> Result<Started, StartError> {
    start_with(cfg, |_| Ok(None))
}

/// [`start_all`], on the listeners and connections `take(shards)` returns, if any (a live
/// upgrade's departure), once the data directory is locked and checked and the shard count
/// is settled. An error from `take` stops the start, everything let go.
pub fn start_with(
    cfg: &ServerConfig,
    take: impl FnOnce(usize) -> Result<Option<engine::upgrade::depart::Departure>, String>,
) -> Result<Started, StartError> {
    engine::log_file::create_dir_durable(&cfg.data_dir).map_err(|e| StartError::DataDir {
        path: cfg.data_dir.clone(),
        source: e.source,
    })?;
    // Warns when an existing directory is open to other users.
    crate::data::layout::create_data_dir(&cfg.data_dir).map_err(|source| StartError::DataDir {
        path: cfg.data_dir.clone(),
        source,
    })?;
    // Held by every shard's service; released when the last one is dropped.
    let lock = Arc::new(crate::data::lock::lock(&cfg.data_dir)?);
    let shards =
        crate::data::layout::settle_shard_count(&cfg.data_dir, cfg.shards, cfg.shards_explicit)?;
    crate::data::journal_check::check_logs(&cfg.data_dir, shards, cfg.salvage)?;
    let departure = take(shards).map_err(StartError::HandOver)?;
    let tls = if cfg.tls {
        let source = match &cfg.cert_key {
            Some((cert, key)) => engine::tls::CertSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            None => engine::tls::CertSource::DevInDir(tls_dir(&cfg.data_dir)),
        };
        Some(engine::tls::server_config(&source)?)
    } else {
        None
    };
    let engine_cfg = EngineConfig {
        listen: cfg.listen,
        shards,
        pin_cpus: cfg.pin_cpus,
        realtime: cfg.realtime,
        huge_pages: cfg.huge_pages,
        tls,
        connections_max: cfg.max_connections,
        idle_timeout_ms: cfg.idle_timeout_ms,
        handshake_timeout_ms: cfg.handshake_timeout_ms,
        frame_timeout_ms: cfg.frame_timeout_ms,
        prelogin_conns_per_prefix_max: cfg.prelogin_conns_per_prefix_max,
        coalesce_us: cfg.coalesce_us,
        coalesce: cfg.coalesce,
        admin: cfg.admin,
        stats: cfg.stats,
        alarms: cfg.alarms.to_engine(),
    };
    let mut env = service_env(cfg)?;
    env.data_dir_lock = Some(lock);
    let mut media = None;
    if let Some(m) = &cfg.media {
        let (key, earlier_key) = media_key(cfg)?;
        let tls = engine_cfg.tls.clone();
        let service = crate::media::start(m, &cfg.data_dir, tls, key.clone(), earlier_key)
            .map_err(StartError::Media)?;
        let scheme = if cfg.tls { "https" } else { "http" };
        let base_url =
            (m.base_url.clone()).unwrap_or_else(|| format!("{scheme}://{}", service.addr));
        tracing::info!(addr = %service.addr, url = %base_url, "{MEDIA_LISTENING}");
        env.settings.media = Some(messaging::media::settings::MediaSettings {
            key,
            base_url,
            object_bytes_max: m.object_bytes_max,
            retention_ms: m.retention_ms,
        });
        env.media_counters = Some(service.counters.clone());
        media = Some(service);
    }
    if let Some(cluster) = &cfg.cluster {
        use crate::cluster::box_number::{self, BoxNumberError};
        use crate::cluster::gateway::ClusterStartError;
        // Named in every id the shards issue: before they start.
        env.settings.box_number = match box_number::claim(cluster, &cfg.data_dir) {
            Ok(n) => n,
            Err(BoxNumberError::Unreachable(detail)) => {
                let servers = cluster.servers.join(",");
                return Err(ClusterStartError::Unreachable { servers, detail }.into());
            }
            Err(e @ BoxNumberError::Refused(_)) => {
                return Err(ClusterStartError::BoxNumber(e.to_string()).into())
            }
        };
        // Before any socket is bound: a box that cannot join does not serve (unless alone
        // is allowed); the link's last holder gone is the gateway's signal to leave.
        let link = crate::cluster::ClusterLink::new(cluster.box_id.clone(), shards)
            .map_err(|e| crate::cluster::gateway::ClusterStartError::Thread(e.to_string()))?;
        if let Some(m) = &env.settings.media {
            // Named in the envelopes of messages whose media this box holds.
            let _ = link.media_base.set(m.base_url.clone());
        }
        let link = Arc::new(link);
        crate::cluster::gateway::start(cluster, link.clone())?;
        env.cluster = Some(link);
    }
    let link = env.cluster.as_ref().map(Arc::downgrade);
    let make = move |shard: proto::ids::ShardId| {
        let mut env = env.clone();
        if shard.0 != 0 {
            // Shard 0 alone reports the media service's counters (they are box-wide).
            env.media_counters = None;
        }
        Switchboard::new(env)
    };
    let rt = engine::start_from(engine_cfg, make, departure)?;
    if let Some(l) = link.as_ref().and_then(std::sync::Weak::upgrade) {
        let _ = l.wakes.set(rt.outside_wakes());
        if let Some(board) = rt.stats_board() {
            let _ = l.stats.set(board);
        }
    }
    if let Some(link) = link {
        // A weak reference: the shards' ends going is what tells the gateway to leave.
        rt.health()
            .set_note(engine::observe::health::ReadyNote(Box::new(move || {
                let alone = link.upgrade().is_some_and(|l| l.alone());
                alone.then(|| "alone: this box cannot reach its cluster (NATS)".to_string())
            })));
    }
    Ok((rt, media))
}

/// The media signing key: the data directory's own, or in a cluster the cluster's one
/// (`cluster/media_key.rs`), so that a box's download URLs open at every box's service;
/// then also the directory's own when it differs, which the media service still accepts
/// (links this box handed out before it joined keep opening).
fn media_key(cfg: &ServerConfig) -> Result<(MediaKey, Option<MediaKey>), StartError> {
    let own = crate::media::load_key_bytes(&cfg.data_dir).map_err(StartError::Media)?;
    let Some(cluster) = &cfg.cluster else {
        return Ok((MediaKey::new(&own), None));
    };
    match crate::cluster::media_key::shared(cluster, own) {
        Ok(shared) if shared == own => Ok((MediaKey::new(&own), None)),
        Ok(shared) => Ok((MediaKey::new(&shared), Some(MediaKey::new(&own)))),
        Err(e) if cluster.optional => {
            tracing::warn!(
                "media: cannot read the cluster's media key ({e}): signing with this box's \
                 own key; its download links open on this box's media service only"
            );
            Ok((MediaKey::new(&own), None))
        }
        Err(detail) => Err(crate::cluster::gateway::ClusterStartError::Unreachable {
            servers: cluster.servers.join(","),
            detail,
        }
        .into()),
    }
}

/// The service's shared settings and notifiers for this configuration.
pub fn service_env(cfg: &ServerConfig) -> Result<ServiceEnv, StartError> {
    let mut env = ServiceEnv::dev(cfg.data_dir.clone());
    env.compact_min_bytes = cfg.compact_min_bytes;
    env.log_faults = cfg.log_faults.clone();
    env.commit_window = std::time::Duration::from_micros(cfg.commit_window_us);
    env.overload = cfg.overload;
    env.settings.signup = cfg.signup;
    env.settings.users = cfg.users;
    env.login_timeout_ms = cfg.login_timeout_ms;
    if let Some(secret) = &cfg.load_test_secret {
        tracing::warn!(
            "load-test logins are ENABLED: anyone with the secret can log in as any number"
        );
        env.settings.load_test_secret = Some(secret.as_bytes().to_vec());
    }
    if let Some(url) = &cfg.sms_webhook {
        env.sms = Arc::new(Webhook::start(url).map_err(StartError::Webhook)?);
    }
    if let Some(url) = &cfg.push_webhook {
        env.push = Arc::new(Webhook::start(url).map_err(StartError::Webhook)?);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_its_address() {
        let line = "2026-11-24T16:30:00.1Z  INFO switchboard: switchboard listening \
                    addr=127.0.0.1:41234 admin=None shards=2 tls=true";
        assert_eq!(
            listening_addr(line),
            Some("127.0.0.1:41234".parse().unwrap())
        );
        assert_eq!(listening_addr("INFO other line addr=127.0.0.1:1"), None);
        assert_eq!(listening_addr("switchboard listening addr=nonsense"), None);
    }
}

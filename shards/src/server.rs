//! Starting the server: settings → TLS → engine → one `Switchboard` per shard.
//! This module wires things together; it must not hold service state.

use std::path::PathBuf;

use engine::{EngineConfig, Runtime};

use crate::adapter::Switchboard;
use crate::config::ServerConfig;

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
    /// The engine refused to start (port taken, fd limit, no io_uring...).
    #[error("{0}")]
    Engine(#[from] engine::EngineError),
}

/// Where the dev certificate lives for a data directory.
pub fn tls_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("tls")
}

/// Starts the shards; returns once they are listening.
pub fn start(cfg: &ServerConfig) -> Result<Runtime, StartError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| StartError::DataDir {
        path: cfg.data_dir.clone(),
        source,
    })?;
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
        shards: cfg.shards,
        pin_cpus: cfg.pin_cpus,
        realtime: cfg.realtime,
        huge_pages: cfg.huge_pages,
        tls,
        connections_max: cfg.max_connections,
        idle_timeout_ms: cfg.idle_timeout_ms,
        ..EngineConfig::default()
    };
    Ok(engine::start(engine_cfg, |_shard| Switchboard::default())?)
}

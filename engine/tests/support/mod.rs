//! Shared helpers for the engine's integration tests: a dev TLS config, an engine config for
//! loopback, and a small `Service` whose behaviour each test steers with text commands. The
//! loopback client of frames and temp directories are `testkit`'s (shared by every crate).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

/// TLS config backed by a dev certificate in a fresh directory; returns it and the cert path.
pub fn dev_tls() -> (Arc<rustls::ServerConfig>, PathBuf) {
    let dir = testkit::temp_dir("tls");
    let cfg = engine::tls::server_config(&engine::tls::CertSource::DevInDir(dir.clone()))
        .expect("dev tls");
    (cfg, engine::tls::dev_cert_path(&dir))
}

pub fn config(shards: usize) -> engine::EngineConfig {
    engine::EngineConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards,
        pin_cpus: false,
        connections_max: Some(1000),
        ..Default::default()
    }
}

//! Shared helpers for the engine's integration tests: a blocking loopback client (plaintext
//! or TLS) that speaks the engine's length-prefixed frames, and a small `Service` whose
//! behaviour each test steers with text commands.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Reads and writes frames: 4-byte big-endian length, then the payload.
pub struct Client {
    io: Box<dyn ReadWrite>,
}

pub trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

impl Client {
    pub fn plain(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Client { io: Box::new(s) }
    }

    pub fn tls(addr: SocketAddr, cert: &std::path::Path) -> Client {
        let cfg = engine::tls::client_config_trusting(cert).expect("client config");
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(cfg, name).expect("client conn");
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Client {
            io: Box::new(rustls::StreamOwned::new(conn, s)),
        }
    }

    pub fn send(&mut self, payload: &[u8]) {
        self.io.write_all(&frame(payload)).expect("send");
        self.io.flush().unwrap();
    }

    /// Writes several frames in one write, so they arrive together.
    pub fn send_many(&mut self, payloads: &[&[u8]]) {
        let bytes: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
        self.io.write_all(&bytes).expect("send");
        self.io.flush().unwrap();
    }

    pub fn recv(&mut self) -> Vec<u8> {
        let mut len = [0u8; 4];
        self.io.read_exact(&mut len).expect("frame header");
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        self.io.read_exact(&mut buf).expect("frame body");
        buf
    }

    pub fn recv_text(&mut self) -> String {
        String::from_utf8(self.recv()).unwrap()
    }

    /// True when the server closed the connection (EOF or reset) within the read timeout;
    /// bytes before the close (a TLS alert, an error frame) are skipped.
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 4096];
        for _ in 0..64 {
            match self.io.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return false
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
        false
    }

    pub fn try_write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.write_all(bytes)?;
        self.io.flush()
    }

    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).expect("write");
        self.io.flush().unwrap();
    }
}

pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "switchboard-engine-{tag}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// TLS config backed by a dev certificate in a fresh directory; returns it and the cert path.
pub fn dev_tls() -> (Arc<rustls::ServerConfig>, PathBuf) {
    let dir = temp_dir("tls");
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

//! Shared helpers for the server's integration tests: start a real server on loopback (TLS
//! with a dev certificate in a fresh data directory, or plaintext) and talk to it with
//! blocking clients over real sockets, in protobuf frames.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use proto::codec::{decode_server, encode_frame};
use proto::v1::{client_frame, server_frame, ClientFrame, ServerFrame};
use shards::config::ServerConfig;

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("switchboard-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A server running in this process, stopped on drop.
pub struct TestServer {
    pub rt: Option<engine::Runtime>,
    pub addr: SocketAddr,
    pub cfg: ServerConfig,
}

impl TestServer {
    pub fn start(shards: usize, tls: bool) -> TestServer {
        Self::start_with(shards, tls, temp_dir("server"))
    }

    pub fn start_with(shards: usize, tls: bool, data_dir: PathBuf) -> TestServer {
        let cfg = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            shards,
            data_dir,
            tls,
            cert_key: None,
            huge_pages: false,
            realtime: false,
            pin_cpus: false,
            max_connections: Some(2000),
            idle_timeout_ms: 60_000,
        };
        let rt = shards::server::start(&cfg).expect("server starts");
        TestServer {
            addr: rt.local_addr(),
            rt: Some(rt),
            cfg,
        }
    }

    pub fn client(&self) -> Client {
        if self.cfg.tls {
            let cert = engine::tls::dev_cert_path(&shards::server::tls_dir(&self.cfg.data_dir));
            Client::tls(self.addr, &cert)
        } else {
            Client::plain(self.addr)
        }
    }

    pub fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.stop();
            rt.join().expect("clean shutdown");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// A blocking client speaking protobuf frames.
pub struct Client {
    io: Box<dyn ReadWrite>,
}

impl Client {
    pub fn plain(addr: SocketAddr) -> Client {
        Client {
            io: Box::new(connect(addr)),
        }
    }

    pub fn tls(addr: SocketAddr, cert: &std::path::Path) -> Client {
        let cfg = engine::tls::client_config_trusting(cert).expect("client config");
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(cfg, name).unwrap();
        Client {
            io: Box::new(rustls::StreamOwned::new(conn, connect(addr))),
        }
    }

    pub fn send(&mut self, kind: client_frame::Kind) {
        let mut out = Vec::new();
        encode_frame(&ClientFrame { kind: Some(kind) }, &mut out).unwrap();
        self.write_raw(&out);
    }

    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).expect("write");
        self.io.flush().unwrap();
    }

    pub fn recv(&mut self) -> server_frame::Kind {
        let mut len = [0u8; 4];
        self.io.read_exact(&mut len).expect("frame header");
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.io.read_exact(&mut body).expect("frame body");
        let frame: ServerFrame = decode_server(&body).expect("server frame decodes");
        frame.kind.expect("server frames are never empty")
    }

    /// True when the server closed the connection within the read timeout (bytes before the
    /// close are skipped).
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
                Err(_) => return true,
            }
        }
        false
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

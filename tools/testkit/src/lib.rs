//! # testkit — what the integration tests share
//!
//! One definition of the helpers the engine's, the server's and the tools' integration
//! tests all need, so they cannot drift apart:
//! - [`temp_dir`]: a fresh directory under the system temp dir, named for the test.
//! - [`exit_and_stderr`]: waits (bounded) for a child process that must exit by itself, and
//!   returns its status and what it wrote to stderr.
//! - [`FrameClient`]: a blocking loopback client of the wire's length-prefixed frames (a
//!   4-byte big-endian length, then the payload), plaintext or TLS (trusting a dev
//!   certificate), optionally from a chosen source address. It knows nothing of protobuf:
//!   the server's tests wrap it with the codec, the engine's send raw payloads.
//! - [`nats::NatsCluster`]: nats-server children with JetStream, one node or a cluster, whose
//!   nodes a test can kill and start again (the cluster tests).
//!
//! Test code: it panics on any unexpected I/O error, with the operation named. Reads time
//! out after [`READ_TIMEOUT_MS`], so a test waiting for a frame that never comes fails
//! instead of hanging.
#![warn(missing_docs)]

pub mod nats;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a read waits before a test fails (or [`FrameClient::is_closed`] says no).
pub const READ_TIMEOUT_MS: u64 = 10_000;

/// Waits for `child` (spawned with `stderr(Stdio::piped())`) to exit by itself within
/// `within`, polling; returns its status and its stderr. Past `within` the child is killed
/// and the test fails, naming `what` was expected.
pub fn exit_and_stderr(
    child: &mut std::process::Child,
    within: Duration,
    what: &str,
) -> (std::process::ExitStatus, String) {
    let deadline = std::time::Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait on the child") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}: still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        stderr
            .read_to_string(&mut err)
            .expect("read the child's stderr");
    }
    (status, err)
}

/// A fresh directory under the system temp dir: `switchboard-<tag>-<pid>-<nanos>`.
pub fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("switchboard-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A byte stream: a TCP socket, or TLS over one.
trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// A blocking client of length-prefixed frames over a loopback connection.
pub struct FrameClient {
    io: Box<dyn ReadWrite>,
}

impl FrameClient {
    /// A plaintext connection to `addr`.
    pub fn plain(addr: SocketAddr) -> FrameClient {
        FrameClient {
            io: Box::new(connect(addr)),
        }
    }

    /// A plaintext connection to `addr` (IPv4) from `src` (any loopback address).
    pub fn plain_from(src: Ipv4Addr, addr: SocketAddr) -> FrameClient {
        FrameClient {
            io: Box::new(connect_from(src, addr)),
        }
    }

    /// A TLS connection to `addr`, trusting the certificate at `cert`.
    pub fn tls(addr: SocketAddr, cert: &Path) -> FrameClient {
        FrameClient::tls_over(connect(addr), cert)
    }

    /// A TLS connection to `addr` (IPv4) from `src`, trusting the certificate at `cert`.
    pub fn tls_from(src: Ipv4Addr, addr: SocketAddr, cert: &Path) -> FrameClient {
        FrameClient::tls_over(connect_from(src, addr), cert)
    }

    /// [`FrameClient::tls`], or `None` when the connection is refused (a server gone).
    pub fn try_tls(addr: SocketAddr, cert: &Path) -> Option<FrameClient> {
        let s = TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(READ_TIMEOUT_MS)))
            .ok()?;
        s.set_nodelay(true).ok()?;
        Some(FrameClient::tls_over(s, cert))
    }

    /// A TLS connection to `addr` made with `config` (a resuming one, say), its handshake
    /// finished before this returns; also how that handshake went (full or resumed).
    pub fn tls_with(
        addr: SocketAddr,
        config: std::sync::Arc<rustls::ClientConfig>,
    ) -> (FrameClient, rustls::HandshakeKind) {
        let mut stream = connect(addr);
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(config, name).expect("client conn");
        while conn.is_handshaking() {
            conn.complete_io(&mut stream).expect("TLS handshake");
        }
        let kind = conn.handshake_kind().expect("the handshake is done");
        let io = Box::new(rustls::StreamOwned::new(conn, stream));
        (FrameClient { io }, kind)
    }

    fn tls_over(stream: TcpStream, cert: &Path) -> FrameClient {
        let cfg = engine::tls::client_config_trusting(cert).expect("client config");
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(cfg, name).expect("client conn");
        FrameClient {
            io: Box::new(rustls::StreamOwned::new(conn, stream)),
        }
    }

    /// Sends one frame carrying `payload`.
    pub fn send(&mut self, payload: &[u8]) {
        self.write_raw(&frame(payload));
    }

    /// Writes several frames in one write, so they arrive together.
    pub fn send_many(&mut self, payloads: &[&[u8]]) {
        let bytes: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
        self.write_raw(&bytes);
    }

    /// The next frame's payload.
    pub fn recv(&mut self) -> Vec<u8> {
        self.try_recv()
            .expect("a frame before the connection closed")
    }

    /// The next frame's payload as text.
    pub fn recv_text(&mut self) -> String {
        String::from_utf8(self.recv()).unwrap()
    }

    /// The next frame's payload, or `None` once the server has closed the connection.
    pub fn try_recv(&mut self) -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        self.io.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.io.read_exact(&mut body).ok()?;
        Some(body)
    }

    /// Writes raw bytes (a frame, a part of one, garbage).
    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).expect("write");
        self.io.flush().unwrap();
    }

    /// Writes raw bytes; the error once the server has closed the connection.
    pub fn try_write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.write_all(bytes)?;
        self.io.flush()
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
}

/// `payload` as a frame: its 4-byte big-endian length, then the bytes.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(READ_TIMEOUT_MS)))
        .unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A TCP connection to `addr` (IPv4) from `src`, port chosen by the kernel.
fn connect_from(src: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(dst) = addr else {
        panic!("an IPv4 source needs an IPv4 server")
    };
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket(2); the result is checked, then owned by the TcpStream.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh socket nobody else owns.
    let s = unsafe { TcpStream::from_raw_fd(fd) };
    let (from, to) = (sockaddr(src, 0), sockaddr(*dst.ip(), dst.port()));
    // SAFETY: both sockaddrs are valid sockaddr_in values of `len` bytes.
    let bound = unsafe { libc::bind(fd, &from as *const _ as *const libc::sockaddr, len) };
    assert_eq!(bound, 0, "bind {src}: {}", std::io::Error::last_os_error());
    // SAFETY: as above.
    let connected = unsafe { libc::connect(fd, &to as *const _ as *const libc::sockaddr, len) };
    assert_eq!(connected, 0, "connect: {}", std::io::Error::last_os_error());
    s.set_read_timeout(Some(Duration::from_millis(READ_TIMEOUT_MS)))
        .unwrap();
    s.set_nodelay(true).unwrap();
    s
}

//! Opening many idle client connections to a server on loopback: each from a source address
//! in 127.0.0.0/8, each finishing its TLS handshake (when TLS is on) and one ping/pong, then
//! held open. Shared by the per-connection memory tools (`idle-conns`, `conn-bytes`).
//! Bounded: N connections, each with a 10 s read timeout.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use prost::Message;
use proto::v1::{client_frame, ClientFrame, Ping};

/// One open client connection (plaintext or TLS).
pub type Conn = Box<dyn ReadWriteSend>;
/// A byte stream a client thread can own.
pub trait ReadWriteSend: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWriteSend for T {}

/// The client TLS config for a server started on `data_dir` with its dev certificate, or
/// `None` for plaintext.
pub fn client_tls(
    data_dir: &std::path::Path,
    tls: bool,
) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
    if !tls {
        return Ok(None);
    }
    Ok(Some(engine::tls::client_config_trusting(
        &engine::tls::dev_cert_path(&data_dir.join("tls")),
    )?))
}

/// Opens `n` connections to `addr` over `threads` client threads, source addresses
/// 127.0.0.2 .. 127.0.0.(1 + `source_ips`) in turn.
pub fn open_many(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    n: usize,
    threads: usize,
    source_ips: u8,
) -> anyhow::Result<Vec<Conn>> {
    open_many_with(addr, tls, n, threads, source_ips, || {})
}

/// [`open_many`], running `on_thread` first on every client thread (`conn-bytes` marks
/// them as threads whose allocations are not the server's).
pub fn open_many_with(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    n: usize,
    threads: usize,
    source_ips: u8,
    on_thread: fn(),
) -> anyhow::Result<Vec<Conn>> {
    let per = n.div_ceil(threads.max(1));
    let handles: Vec<_> = (0..threads.max(1))
        .map(|t| {
            let tls = tls.clone();
            std::thread::spawn(move || -> anyhow::Result<Vec<Conn>> {
                on_thread();
                let mut v = Vec::with_capacity(per);
                for i in (t * per)..((t + 1) * per).min(n) {
                    let src = Ipv4Addr::new(127, 0, 0, 2 + (i % source_ips.max(1) as usize) as u8);
                    v.push(open_one(addr, src, tls.clone())?);
                }
                Ok(v)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for h in handles {
        all.extend(h.join().expect("client thread")?);
    }
    Ok(all)
}

fn open_one(
    addr: SocketAddr,
    src: Ipv4Addr,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> anyhow::Result<Conn> {
    let s = connect_from(addr, src)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    let mut c: Conn = match tls {
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::try_from("localhost")?;
            Box::new(rustls::StreamOwned::new(
                rustls::ClientConnection::new(cfg, name)?,
                s,
            ))
        }
        None => Box::new(s),
    };
    let ping = ClientFrame {
        kind: Some(client_frame::Kind::Ping(Ping { nonce: 7 })),
    };
    let mut out = Vec::new();
    proto::codec::encode_frame(&ping, &mut out)?;
    c.write_all(&out)?;
    let mut len = [0u8; 4];
    c.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    c.read_exact(&mut body)?;
    let frame = proto::v1::ServerFrame::decode(body.as_slice())?;
    if !matches!(frame.kind, Some(proto::v1::server_frame::Kind::Pong(_))) {
        bail!("expected pong, got {frame:?}");
    }
    Ok(c)
}

/// A TCP connection to `addr` from `src` (any address in 127.0.0.0/8), blocking.
pub fn connect_from(addr: SocketAddr, src: Ipv4Addr) -> anyhow::Result<TcpStream> {
    // std has no bind-before-connect; do it with libc, then hand the fd to std.
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2); checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: we own fd; TcpStream closes it on drop (also on the error paths below).
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let bind = sockaddr_in(SocketAddrV4::new(src, 0));
    let SocketAddr::V4(dst) = addr else {
        bail!("IPv4 only")
    };
    let dst = sockaddr_in(dst);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: valid fd and sockaddr_in pointers of the stated length.
    unsafe {
        if libc::bind(fd, &bind as *const _ as *const libc::sockaddr, len) != 0 {
            bail!("bind {src}: {}", std::io::Error::last_os_error());
        }
        if libc::connect(fd, &dst as *const _ as *const libc::sockaddr, len) != 0 {
            bail!(
                "connect {addr} from {src}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(stream)
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

//! Opening TCP connections from a chosen source address, and the client TLS setup shared by
//! the farm and the CLI.
//!
//! A socket is bound to its source address *before* it connects, with
//! `IP_BIND_ADDRESS_NO_PORT` so the kernel picks the port at connect time from the whole
//! 4-tuple (a bind with port 0 alone would reserve a port per source address for every
//! destination and run out at ~28k).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;

/// The name the dev certificate is issued for; clients check the server against it.
pub const SERVER_NAME_DEFAULT: &str = "localhost";

/// Whether a connect call finished at once or is still in progress (non-blocking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connecting {
    /// Connected (blocking mode, or a fast loopback connect).
    Done,
    /// `EINPROGRESS`: wait for writability, then check `take_error()`.
    InProgress,
}

/// Opens a TCP socket to `dst`, bound first to `src` if given. Non-blocking sockets return
/// [`Connecting::InProgress`] while the handshake runs. `TCP_NODELAY` is set.
pub fn connect_from(
    src: Option<Ipv4Addr>,
    dst: SocketAddr,
    nonblocking: bool,
) -> io::Result<(TcpStream, Connecting)> {
    let family = match dst {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let mut ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    if nonblocking {
        ty |= libc::SOCK_NONBLOCK;
    }
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(family, ty, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created socket we own; the TcpStream closes it on every path.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    if let Some(src) = src {
        if family != libc::AF_INET {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an IPv4 source address needs an IPv4 server address",
            ));
        }
        set_int_opt(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)?;
        let sa = sockaddr_v4(src, 0);
        // SAFETY: sa is a valid sockaddr_in for the length given.
        let rc = unsafe {
            libc::bind(
                fd,
                &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("bind to {src}: {e}")));
        }
    }
    let rc = match dst {
        SocketAddr::V4(v4) => {
            let sa = sockaddr_v4(*v4.ip(), v4.port());
            // SAFETY: sa is a valid sockaddr_in for the length given.
            unsafe {
                libc::connect(
                    fd,
                    &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(v6) => {
            // SAFETY: all-zero is a valid sockaddr_in6; the fields are then set.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_port = v6.port().to_be();
            sa.sin6_addr.s6_addr = v6.ip().octets();
            // SAFETY: sa is a valid sockaddr_in6 for the length given.
            unsafe {
                libc::connect(
                    fd,
                    &sa as *const libc::sockaddr_in6 as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc == 0 {
        return Ok((stream, Connecting::Done));
    }
    let e = io::Error::last_os_error();
    if nonblocking && e.raw_os_error() == Some(libc::EINPROGRESS) {
        return Ok((stream, Connecting::InProgress));
    }
    Err(e)
}

/// A loopback TCP port held bound but never listening: connecting to it is refused, and no
/// other socket can take the port while this lives. Tests use it as "the server is down"; a
/// port merely found free and released could be handed to a test server running alongside.
pub struct RefusingPort {
    _socket: OwnedFd,
    /// 127.0.0.1 and the held port.
    pub addr: SocketAddr,
}

/// Binds a TCP socket to 127.0.0.1 on a port the kernel picks, without listening.
pub fn refusing_port() -> io::Result<RefusingPort> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created socket nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut sa = sockaddr_v4(Ipv4Addr::LOCALHOST, 0);
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: sa is a valid sockaddr_in for the length given.
    if unsafe {
        libc::bind(
            fd,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            len,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sa and len are live and sized for a sockaddr_in.
    let rc = unsafe {
        libc::getsockname(
            fd,
            &mut sa as *mut libc::sockaddr_in as *mut libc::sockaddr,
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(RefusingPort {
        _socket: socket,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, u16::from_be(sa.sin_port))),
    })
}

fn sockaddr_v4(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in; the fields are then set.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = port.to_be();
    sa.sin_addr.s_addr = u32::from(ip).to_be();
    sa
}

fn set_int_opt(fd: i32, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: value is a live c_int and the length matches it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Client TLS settings: the config (trusting exactly the given CA or dev certificate) and
/// the name the server's certificate must carry.
#[derive(Clone)]
pub struct TlsClient {
    /// TLS 1.3, ALPN `switchboard/1`; resuming from session tickets or not (see
    /// `engine::tls`).
    pub config: Arc<rustls::ClientConfig>,
    /// Checked against the certificate (`localhost` for the dev certificate).
    pub server_name: ServerName<'static>,
}

impl TlsClient {
    /// Trusts the PEM certificate(s) in `ca` for `server_name`.
    pub fn trusting(ca: &Path, server_name: &str) -> anyhow::Result<TlsClient> {
        let config = engine::tls::client_config_trusting(ca)?;
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| anyhow::anyhow!("bad TLS server name {server_name:?}: {e}"))?;
        Ok(TlsClient {
            config,
            server_name,
        })
    }

    /// [`TlsClient::trusting`] that keeps the server's session tickets (in memory, shared by
    /// every session made from it) and resumes with them.
    pub fn resuming(ca: &Path, server_name: &str) -> anyhow::Result<TlsClient> {
        Ok(TlsClient {
            config: engine::tls::client_config_resuming(ca)?,
            ..TlsClient::trusting(ca, server_name)?
        })
    }

    /// A fresh client-side TLS session.
    pub fn session(&self) -> Result<rustls::ClientConnection, rustls::Error> {
        rustls::ClientConnection::new(self.config.clone(), self.server_name.clone())
    }
}

/// Where a server started with `--data-dir DIR` keeps its dev certificate.
pub fn dev_cert_in(data_dir: &Path) -> std::path::PathBuf {
    engine::tls::dev_cert_path(&data_dir.join("tls"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn binds_the_source_address_before_connecting() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let src: Ipv4Addr = "127.0.0.7".parse().unwrap();
        let (s, how) = connect_from(Some(src), l.local_addr().unwrap(), false).unwrap();
        assert_eq!(how, Connecting::Done);
        assert_eq!(s.local_addr().unwrap().ip(), std::net::IpAddr::V4(src));
        let (_peer, from) = l.accept().unwrap();
        assert_eq!(from.ip(), std::net::IpAddr::V4(src));
    }

    #[test]
    fn refused_is_an_error() {
        let down = refusing_port().unwrap();
        let e = connect_from(None, down.addr, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }
}

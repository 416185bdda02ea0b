//! A blocking protocol client, one connection, for the `chat` CLI and for tests.
//!
//! Reads use short socket timeouts so a caller can wait for "a frame or a deadline" without
//! threads; bytes that arrive in pieces are reassembled by a [`FrameBuffer`], so a timeout
//! never loses part of a frame.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use proto::codec::{decode_server, encode_frame};
use proto::v1::{server_frame::Kind, LoadTestLogin, LoggedIn, Login};
use proto::{ClientFrame, FrameBuffer, FrameError, ServerFrame, PROTOCOL_VERSION};

use crate::farm::user::error_name;
use crate::net::{connect_from, TlsClient};

/// Longest a single socket read blocks before the caller's deadline is checked again.
const READ_SLICE: Duration = Duration::from_millis(100);

/// What went wrong talking to the server.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No TCP connection (server down, wrong address).
    #[error("cannot connect to {addr}: {cause}{hint}", hint = connect_hint(cause))]
    Connect {
        /// The server address.
        addr: SocketAddr,
        /// Why.
        cause: io::Error,
    },
    /// TLS setup or handshake failed (wrong CA, not a TLS server).
    #[error("TLS with {addr} failed: {detail} (is --ca the server's certificate? is the server running --no-tls?)")]
    Tls {
        /// The server address.
        addr: SocketAddr,
        /// Why.
        detail: String,
    },
    /// The connection broke.
    #[error("connection to the server failed: {0}")]
    Io(io::Error),
    /// The server sent something that is not a frame.
    #[error("bad frame from the server: {0} (wrong port, or a TLS server reached with --no-tls?)")]
    Frame(FrameError),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// The server did not answer in time.
    #[error("no answer from the server within {0:?} ({1})")]
    Timeout(Duration, &'static str),
    /// The server answered with an Error frame.
    #[error("server refused: {name}{}", if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
    Refused {
        /// The code, e.g. `BAD_KEY`.
        name: String,
        /// The wire code.
        code: i32,
        /// The server's detail text.
        detail: String,
    },
    /// A box of a cluster that is not the user's home answered the login with `Redirect`:
    /// log in at this address instead.
    #[error("this box is not the user's home: log in at {0}")]
    Redirected(String),
}

fn connect_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => " (is the server running, and on this port?)",
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            " (no answer: wrong address or a firewall?)"
        }
        _ => "",
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Tls(s) => &s.sock,
        }
    }
}

/// One blocking connection to a server.
pub struct Client {
    io: Io,
    addr: SocketAddr,
    rx: FrameBuffer,
    buf: Vec<u8>,
}

impl Client {
    /// Connects (and, with `tls`, completes the handshake) within `timeout`.
    pub fn connect(
        addr: SocketAddr,
        tls: Option<&TlsClient>,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let cerr = |cause| ClientError::Connect { addr, cause };
        let tcp = match addr {
            SocketAddr::V4(_) => TcpStream::connect_timeout(&addr, timeout).map_err(cerr)?,
            SocketAddr::V6(_) => connect_from(None, addr, false).map_err(cerr)?.0,
        };
        tcp.set_nodelay(true).map_err(ClientError::Io)?;
        let io = match tls {
            None => Io::Plain(tcp),
            Some(t) => {
                let conn = t.session().map_err(|e| ClientError::Tls {
                    addr,
                    detail: e.to_string(),
                })?;
                let mut s = rustls::StreamOwned::new(conn, tcp);
                s.sock
                    .set_read_timeout(Some(timeout))
                    .map_err(ClientError::Io)?;
                s.sock
                    .set_write_timeout(Some(timeout))
                    .map_err(ClientError::Io)?;
                while s.conn.is_handshaking() {
                    s.conn
                        .complete_io(&mut s.sock)
                        .map_err(|e| ClientError::Tls {
                            addr,
                            detail: e.to_string(),
                        })?;
                }
                Io::Tls(Box::new(s))
            }
        };
        Ok(Client {
            io,
            addr,
            rx: FrameBuffer::new(),
            buf: vec![0; 16 * 1024],
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one frame.
    pub fn send(&mut self, f: impl Into<ClientFrame>) -> Result<(), ClientError> {
        let mut out = Vec::new();
        encode_frame(&f.into(), &mut out)?;
        let r = match &mut self.io {
            Io::Plain(s) => s.write_all(&out).and_then(|_| s.flush()),
            Io::Tls(s) => s.write_all(&out).and_then(|_| s.flush()),
        };
        r.map_err(ClientError::Io)
    }

    /// The next frame, or `None` if `deadline` passes first.
    pub fn recv_until(&mut self, deadline: Instant) -> Result<Option<ServerFrame>, ClientError> {
        loop {
            if let Some(payload) = self.rx.next_frame()? {
                return Ok(Some(decode_server(payload)?));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let slice = left.min(READ_SLICE).max(Duration::from_millis(1));
            self.io
                .tcp()
                .set_read_timeout(Some(slice))
                .map_err(ClientError::Io)?;
            let r = match &mut self.io {
                Io::Plain(s) => s.read(&mut self.buf),
                Io::Tls(s) => s.read(&mut self.buf),
            };
            match r {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => self.rx.extend(&self.buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(ClientError::Closed)
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(ClientError::Closed)
                }
                Err(e) => return Err(ClientError::Io(e)),
            }
        }
    }

    /// The next frame within `timeout`, or [`ClientError::Timeout`].
    pub fn recv(
        &mut self,
        timeout: Duration,
        what: &'static str,
    ) -> Result<ServerFrame, ClientError> {
        self.recv_until(Instant::now() + timeout)?
            .ok_or(ClientError::Timeout(timeout, what))
    }

    /// Waits for the first frame `pick` accepts; an Error frame for which `is_mine` holds
    /// fails. Other frames go to `other` (e.g. queued messages).
    pub fn wait_for<T>(
        &mut self,
        timeout: Duration,
        what: &'static str,
        mut pick: impl FnMut(&Kind) -> Option<T>,
        mut is_mine: impl FnMut(&proto::v1::Error) -> bool,
        mut other: impl FnMut(ServerFrame),
    ) -> Result<T, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(f) = self.recv_until(deadline)? else {
                return Err(ClientError::Timeout(timeout, what));
            };
            match &f.kind {
                Some(k) => {
                    if let Some(t) = pick(k) {
                        return Ok(t);
                    }
                    if let Kind::Error(e) = k {
                        if is_mine(e) {
                            return Err(refused(e));
                        }
                    }
                }
                None => continue,
            }
            other(f);
        }
    }

    /// Logs in through the load-test path (a server holding the same load-test secret; the
    /// farm and the benches). A `Redirect` is not followed: the caller names the home box.
    pub fn load_test_login(
        &mut self,
        phone: &str,
        secret: &[u8],
        timeout: Duration,
    ) -> Result<LoggedIn, ClientError> {
        self.send(LoadTestLogin {
            protocol_version: PROTOCOL_VERSION,
            phone: phone.into(),
            secret: secret.to_vec(),
        })?;
        self.wait_for(
            timeout,
            "login",
            |k| match k {
                Kind::LoggedIn(l) => Some(*l),
                _ => None,
            },
            |_| true,
            |_| {},
        )
    }

    /// Logs in; frames that arrive before `LoggedIn` (none expected) go to `other`. A box
    /// that is not the user's home answers [`ClientError::Redirected`] with the home's address.
    pub fn login(
        &mut self,
        phone: &str,
        key: &[u8],
        timeout: Duration,
    ) -> Result<LoggedIn, ClientError> {
        self.send(Login {
            protocol_version: PROTOCOL_VERSION,
            phone: phone.into(),
            device_key: key.to_vec(),
        })?;
        self.wait_for(
            timeout,
            "login",
            |k| match k {
                Kind::LoggedIn(l) => Some(Ok(*l)),
                Kind::Redirect(r) => Some(Err(r.addr.clone())),
                _ => None,
            },
            |_| true,
            |_| {},
        )?
        .map_err(ClientError::Redirected)
    }
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        ClientError::Frame(e)
    }
}

/// The error for an Error frame.
pub fn refused(e: &proto::v1::Error) -> ClientError {
    ClientError::Refused {
        name: error_name(e.code),
        code: e.code,
        detail: e.detail.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A box that is not the user's home answers the login with `Redirect`: `login` says
    /// where to go instead of waiting for a `LoggedIn` that never comes.
    #[test]
    fn a_redirect_answer_to_login_names_the_home_box() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut len = [0u8; 4];
            s.read_exact(&mut len).unwrap();
            let mut login = vec![0u8; u32::from_be_bytes(len) as usize];
            s.read_exact(&mut login).unwrap();
            let mut out = Vec::new();
            let redirect: ServerFrame = proto::v1::Redirect {
                addr: "127.0.0.9:5222".into(),
            }
            .into();
            proto::codec::encode_frame(&redirect, &mut out).unwrap();
            s.write_all(&out).unwrap();
        });
        let mut c = Client::connect(addr, None, Duration::from_secs(5)).unwrap();
        match c.login("+15550001", b"key", Duration::from_secs(5)) {
            Err(ClientError::Redirected(home)) => assert_eq!(home, "127.0.0.9:5222"),
            other => panic!("expected a redirect, got {other:?}"),
        }
        server.join().unwrap();
    }
}

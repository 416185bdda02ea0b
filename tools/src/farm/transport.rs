//! One farm connection's bytes: a non-blocking TCP socket, optionally wrapped in a rustls
//! client session, turning outgoing [`ClientFrame`]s into bytes and incoming bytes into
//! [`ServerFrame`]s. No protocol logic lives here.
//!
//! Lifecycle: [`Transport::start`] (connect in progress) → writable → [`Transport::on_writable`]
//! notices the connect finished → bytes flow both ways (TLS handshake first, driven by the
//! same reads and writes) → [`Transport::close_clean`] (TLS close_notify, FIN) or drop
//! (abrupt, like a network blip).
//!
//! A protocol whose server greets in plaintext before TLS (NATS: `INFO`, see
//! [`Wire::tls_after_greeting`]) keeps its TLS session aside until the greeting's line end
//! has been read in the clear; frames queued meanwhile wait, encrypted later, in that
//! session's buffer, so nothing but the greeting ever crosses unencrypted.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use proto::{ClientFrame, ServerFrame};

use crate::net::{connect_from, Connecting, TlsClient};

use super::wire::{Wire, WireError};

/// Why a connection failed; [`TransportError::kind`] names it for the error table.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The TCP connect failed.
    #[error("connect: {0}")]
    Connect(io::Error),
    /// A read or write failed after connecting.
    #[error("socket: {0}")]
    Io(io::Error),
    /// TLS failed (certificate, protocol).
    #[error("tls: {0}")]
    Tls(rustls::Error),
    /// The server sent bytes that are not valid in the connection's protocol.
    #[error("wire: {0}")]
    Wire(WireError),
    /// The server closed the connection.
    #[error("closed by server")]
    Eof,
}

impl TransportError {
    /// A short stable name: `connect:refused`, `io:reset`, `tls`, `frame`, `eof`.
    pub fn kind(&self) -> String {
        fn io_kind(e: &io::Error) -> &'static str {
            match e.kind() {
                io::ErrorKind::ConnectionRefused => "refused",
                io::ErrorKind::ConnectionReset => "reset",
                io::ErrorKind::TimedOut => "timeout",
                io::ErrorKind::AddrNotAvailable | io::ErrorKind::AddrInUse => "no_ports",
                io::ErrorKind::BrokenPipe => "broken_pipe",
                _ if e.raw_os_error() == Some(libc::EMFILE) => "too_many_files",
                _ => "other",
            }
        }
        match self {
            TransportError::Connect(e) => format!("connect:{}", io_kind(e)),
            TransportError::Io(e) => format!("io:{}", io_kind(e)),
            TransportError::Tls(_) => "tls".into(),
            TransportError::Wire(_) => "frame".into(),
            TransportError::Eof => "eof".into(),
        }
    }
}

impl From<rustls::Error> for TransportError {
    fn from(e: rustls::Error) -> Self {
        TransportError::Tls(e)
    }
}

impl From<WireError> for TransportError {
    fn from(e: WireError) -> Self {
        TransportError::Wire(e)
    }
}

/// A live (or connecting) connection.
pub struct Transport {
    stream: TcpStream,
    connected: bool,
    tls: Option<rustls::ClientConnection>,
    /// A TLS session that starts once the server's plaintext greeting line has been read.
    tls_after_greeting: Option<rustls::ClientConnection>,
    /// Plaintext bytes waiting for the socket (plaintext mode only; rustls buffers its own).
    tx: Vec<u8>,
    /// The protocol: encodes frames, decodes bytes (keeping what is split across reads).
    wire: Wire,
    /// Scratch for encoding one frame or a protocol's own replies.
    enc: Vec<u8>,
}

impl Transport {
    /// Starts a non-blocking connect from `src` to `dst`.
    pub fn start(
        src: Option<Ipv4Addr>,
        dst: SocketAddr,
        tls: Option<&TlsClient>,
        wire: Wire,
    ) -> Result<Transport, TransportError> {
        let (stream, how) = connect_from(src, dst, true).map_err(TransportError::Connect)?;
        let tls = match tls {
            Some(t) => {
                let mut c = t.session()?;
                // Our own frames are bounded by the in-flight limits; never refuse a write.
                c.set_buffer_limit(None);
                Some(c)
            }
            None => None,
        };
        let (tls, tls_after_greeting) = if wire.tls_after_greeting() {
            (None, tls)
        } else {
            (tls, None)
        };
        Ok(Transport {
            stream,
            connected: how == Connecting::Done,
            tls,
            tls_after_greeting,
            tx: Vec::new(),
            wire,
            enc: Vec::new(),
        })
    }

    /// The socket, for the poller.
    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// True once the TCP connect finished.
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// True once TLS (if any) finished its handshake.
    pub fn handshake_done(&self) -> bool {
        self.connected
            && self.tls_after_greeting.is_none()
            && self.tls.as_ref().is_none_or(|t| !t.is_handshaking())
    }

    /// True if bytes are waiting for the socket (or the connect is pending).
    pub fn wants_write(&self) -> bool {
        !self.connected
            || match (&self.tls, &self.tls_after_greeting) {
                (Some(t), _) => t.wants_write(),
                // Waiting for the greeting: nothing may go out yet.
                (None, Some(_)) => false,
                (None, None) => !self.tx.is_empty(),
            }
    }

    /// Queues one frame (sent by the next [`Transport::flush`]).
    pub fn queue(&mut self, frame: &ClientFrame) {
        self.enc.clear();
        self.wire.encode(frame, &mut self.enc);
        self.queue_enc();
    }

    /// Queues the bytes in `enc`.
    fn queue_enc(&mut self) {
        if self.enc.is_empty() {
            return;
        }
        match self.tls.as_mut().or(self.tls_after_greeting.as_mut()) {
            // Invariant: the buffer limit is off, so the writer takes every byte.
            Some(t) => t
                .writer()
                .write_all(&self.enc)
                .expect("unbounded TLS buffer"),
            None => self.tx.extend_from_slice(&self.enc),
        }
    }

    /// The socket became writable: finish a pending connect, then flush.
    pub fn on_writable(&mut self) -> Result<(), TransportError> {
        if !self.connected {
            if let Some(e) = self.stream.take_error().map_err(TransportError::Connect)? {
                return Err(TransportError::Connect(e));
            }
            // Writable without an error means the connect completed, unless it is still
            // pending (spurious wakeup); peer_addr tells.
            if self.stream.peer_addr().is_err() {
                return Ok(());
            }
            self.connected = true;
        }
        self.flush()
    }

    /// Writes as much as the socket takes now.
    pub fn flush(&mut self) -> Result<(), TransportError> {
        if !self.connected || self.tls_after_greeting.is_some() {
            return Ok(());
        }
        match &mut self.tls {
            Some(t) => {
                while t.wants_write() {
                    match t.write_tls(&mut self.stream) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(TransportError::Io(e)),
                    }
                }
            }
            None => {
                let mut off = 0;
                while off < self.tx.len() {
                    match self.stream.write(&self.tx[off..]) {
                        Ok(0) => return Err(TransportError::Eof),
                        Ok(n) => off += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(TransportError::Io(e)),
                    }
                }
                self.tx.drain(..off);
                if self.tx.is_empty() {
                    self.tx = Vec::new();
                }
            }
        }
        Ok(())
    }

    /// Reads everything available, appending decoded frames to `frames`. `scratch` is the
    /// thread's read buffer. An orderly close is [`TransportError::Eof`] (after the frames
    /// that came before it are returned in `frames`).
    pub fn on_readable(
        &mut self,
        scratch: &mut [u8],
        frames: &mut Vec<ServerFrame>,
    ) -> Result<(), TransportError> {
        if !self.connected {
            return Ok(());
        }
        let mut eof = false;
        self.enc.clear();
        // Bounded: at most 64 socket reads per readiness event, the rest next time.
        for _ in 0..64 {
            let n = match &mut self.tls {
                Some(t) => match t.read_tls(&mut self.stream) {
                    Ok(0) => {
                        eof = true;
                        0
                    }
                    Ok(n) => {
                        t.process_new_packets()?;
                        n
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(TransportError::Io(e)),
                },
                None => match self.stream.read(scratch) {
                    Ok(0) => {
                        eof = true;
                        0
                    }
                    Ok(n) => {
                        self.wire.decode(&scratch[..n], frames, &mut self.enc)?;
                        // The greeting ends at its line end; the server sends nothing more
                        // until the client's TLS handshake, so no TLS byte was read here.
                        if self.tls_after_greeting.is_some() && scratch[..n].contains(&b'\n') {
                            self.tls = self.tls_after_greeting.take();
                        }
                        n
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(TransportError::Io(e)),
                },
            };
            if let Some(t) = &mut self.tls {
                loop {
                    match t.reader().read(scratch) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(k) => self.wire.decode(&scratch[..k], frames, &mut self.enc)?,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            eof = true;
                            break;
                        }
                        Err(e) => return Err(TransportError::Io(e)),
                    }
                }
            }
            if eof || n == 0 {
                break;
            }
        }
        // The protocol's own answers (NATS PONG) go out with the next flush.
        self.queue_enc();
        if eof {
            return Err(TransportError::Eof);
        }
        Ok(())
    }

    /// Orderly close: the protocol's goodbye (MQTT DISCONNECT), TLS close_notify, flush what we can, FIN. Errors are ignored (the
    /// connection is going away either way).
    pub fn close_clean(mut self) {
        self.enc.clear();
        self.wire.goodbye(&mut self.enc);
        self.queue_enc();
        if let Some(t) = &mut self.tls {
            t.send_close_notify();
        }
        let _ = self.flush();
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

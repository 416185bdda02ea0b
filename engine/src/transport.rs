//! A connection's bytes: a glommio socket, plaintext or wrapped in a [`TlsSession`].
//!
//! Reads are readiness-first: glommio tries a non-blocking `recv` into the shard's scratch
//! buffer and arms an io_uring poll only when nothing is there, so an idle connection pins
//! no read buffer. TLS records are decrypted in place in that scratch buffer (rustls'
//! unbuffered API during the handshake, `tls_records` after); only a record that has not
//! fully arrived stays with the connection.
//! Writes go straight to the socket (`send`) from the shard's wire buffer, and only what the
//! kernel does not take is copied into `pending_out` (freed once drained).
//!
//! This module owns the socket, the TLS session and those two leftovers of one connection;
//! it must not touch the shard's tables or call the service.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::tls_session::{SessionError, TlsSession};

/// What one read from the socket produced.
pub(crate) enum ReadOutcome {
    /// The peer closed its side.
    Eof,
    /// `n` socket bytes were read; plaintext (if any) was appended to the caller's buffer.
    Bytes {
        /// Socket bytes read.
        n: usize,
        /// Socket bytes written in reply (TLS handshake records).
        sent: u64,
        /// The TLS handshake finished with these bytes.
        handshake_done: bool,
        /// The TLS peer sent close_notify: no more data will come.
        peer_closed: bool,
    },
}

/// One connection's socket and TLS session.
#[derive(Debug)]
pub(crate) struct Transport {
    stream: TcpStream,
    tls: Option<Box<TlsSession>>,
    /// Bytes of a frame that has not fully arrived yet. Empty (no capacity) when idle.
    pub(crate) unread: Vec<u8>,
    /// Wire bytes (ciphertext or plaintext) the kernel has not taken yet. Empty and
    /// capacity-free unless the peer's receive window is full.
    pending_out: Vec<u8>,
    /// Frames may be waiting in `unread` (after an adoption).
    pub(crate) check_buffered: bool,
}

impl Transport {
    pub(crate) fn new(stream: TcpStream, tls: Option<Box<TlsSession>>) -> Self {
        Transport {
            stream,
            tls,
            unread: Vec::new(),
            pending_out: Vec::new(),
            check_buffered: false,
        }
    }

    pub(crate) fn from_parts(
        stream: TcpStream,
        tls: Option<Box<TlsSession>>,
        unread: Vec<u8>,
    ) -> Self {
        let mut t = Transport::new(stream, tls);
        t.unread = unread;
        t.check_buffered = true;
        t
    }

    /// Splits the transport for a handoff. Its output must have been flushed.
    pub(crate) fn into_parts(self) -> (TcpStream, Option<Box<TlsSession>>, Vec<u8>) {
        assert!(
            self.pending_out.is_empty(),
            "handoff only after a full flush"
        );
        (self.stream, self.tls, self.unread)
    }

    /// Bytes the kernel has not taken yet (they count against the connection's output cap).
    pub(crate) fn unsent_bytes(&self) -> usize {
        self.pending_out.len()
    }

    /// Bytes of an unfinished frame (or TLS record) are waiting for the rest.
    pub(crate) fn has_partial(&self) -> bool {
        !self.unread.is_empty() || self.tls.as_ref().is_some_and(|t| t.pending_in_len() > 0)
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Takes the service's queued plaintext (leaving `outbox` empty and capacity-free),
    /// encrypts it into `wire` (the shard's scratch) for TLS, and writes what the socket
    /// takes. `Ready(Ok(bytes written))` once nothing is left queued. A TLS failure is an
    /// `InvalidData` error.
    pub(crate) fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        outbox: &mut Vec<u8>,
        wire: &mut Vec<u8>,
    ) -> Poll<io::Result<u64>> {
        let sent = self.poll_send_inner(cx, outbox, wire);
        if let Poll::Ready(Err(e)) = &sent {
            if e.kind() != io::ErrorKind::InvalidData {
                self.write_failed();
            }
        }
        sent
    }

    fn poll_send_inner(
        &mut self,
        cx: &mut Context<'_>,
        outbox: &mut Vec<u8>,
        wire: &mut Vec<u8>,
    ) -> Poll<io::Result<u64>> {
        let mut sent = 0;
        if !outbox.is_empty() {
            let out = match &mut self.tls {
                Some(tls) => {
                    wire.clear();
                    tls.encrypt(outbox, wire).map_err(invalid_data)?;
                    &wire[..]
                }
                None => &outbox[..],
            };
            sent += send_or_keep(&mut self.stream, &mut self.pending_out, cx, out)?;
            *outbox = Vec::new();
        }
        while !self.pending_out.is_empty() {
            match poll_write(&mut self.stream, cx, &self.pending_out) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    sent += n as u64;
                    drop(self.pending_out.drain(..n));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.pending_out = Vec::new();
        Poll::Ready(Ok(sent))
    }

    /// Reads once from the socket into `scratch`. TLS: held-back bytes are moved in front,
    /// records decrypted in place, plaintext appended to `plain`, handshake replies written
    /// from `wire` (the shard's scratch). Plaintext connections append the bytes themselves.
    /// A TLS failure is an `InvalidData` error (its alert already sent, best effort).
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        scratch: &mut [u8],
        plain: &mut Vec<u8>,
        wire: &mut Vec<u8>,
    ) -> Poll<io::Result<ReadOutcome>> {
        let held = self.tls.as_ref().map_or(0, |t| t.pending_in_len());
        let n = match Pin::new(&mut self.stream).poll_read(cx, &mut scratch[held..]) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(0)) => return Poll::Ready(Ok(ReadOutcome::Eof)),
            Poll::Ready(Ok(n)) => n,
        };
        let Some(tls) = &mut self.tls else {
            plain.extend_from_slice(&scratch[..n]);
            return Poll::Ready(Ok(ReadOutcome::Bytes {
                n,
                sent: 0,
                handshake_done: false,
                peer_closed: false,
            }));
        };
        let held = tls.take_pending_in(scratch);
        wire.clear();
        let read = tls.read(&mut scratch[..held + n], plain, wire);
        let sent = match send_or_keep(&mut self.stream, &mut self.pending_out, cx, wire) {
            Ok(sent) => sent,
            Err(e) => {
                tls.write_failed();
                return Poll::Ready(Err(e));
            }
        };
        let progress = read.map_err(invalid_data)?;
        Poll::Ready(Ok(ReadOutcome::Bytes {
            n,
            sent,
            handshake_done: progress.handshake_done,
            peer_closed: progress.peer_closed,
        }))
    }

    /// A write to the socket failed: sealed records may be lost, so the TLS session seals
    /// nothing more (no close_notify after a gap).
    fn write_failed(&mut self) {
        if let Some(tls) = &mut self.tls {
            tls.write_failed();
        }
    }

    /// Best effort: tell a TLS peer we are closing, without waiting. Nothing after a write
    /// error ([`TlsSession::write_failed`]).
    pub(crate) fn send_close_notify(&mut self, cx: &mut Context<'_>) {
        if let Some(tls) = &mut self.tls {
            let mut wire = Vec::new();
            tls.close_notify(&mut wire);
            let _ = send_or_keep(&mut self.stream, &mut self.pending_out, cx, &wire);
        }
    }

    /// The peer's address, IPv4 as an IPv4-mapped IPv6 address (`::` when unknown).
    pub(crate) fn peer_ip(&self) -> std::net::Ipv6Addr {
        match self.stream.peer_addr().map(|a| a.ip()) {
            Ok(std::net::IpAddr::V4(a)) => a.to_ipv6_mapped(),
            Ok(std::net::IpAddr::V6(a)) => a,
            Err(_) => std::net::Ipv6Addr::UNSPECIFIED,
        }
    }

    pub(crate) fn set_nodelay(&self) -> io::Result<()> {
        self.stream
            .set_nodelay(true)
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

fn invalid_data(e: SessionError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn poll_write(stream: &mut TcpStream, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    Pin::new(stream).poll_write(cx, buf)
}

/// Writes `bytes` to the socket now if nothing is queued ahead of them, and keeps whatever
/// the kernel does not take in `pending_out`. Returns the bytes written.
fn send_or_keep(
    stream: &mut TcpStream,
    pending_out: &mut Vec<u8>,
    cx: &mut Context<'_>,
    bytes: &[u8],
) -> io::Result<u64> {
    let mut at = 0;
    while pending_out.is_empty() && at < bytes.len() {
        match poll_write(stream, cx, &bytes[at..]) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => at += n,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    pending_out.extend_from_slice(&bytes[at..]);
    Ok(at as u64)
}

//! A connection's bytes: a glommio socket, plaintext or wrapped in a rustls session.
//!
//! Reads are readiness-first: glommio tries a non-blocking `recv` into the shard's scratch
//! buffer and arms an io_uring poll only when nothing is there, so an idle connection pins
//! no read buffer. Writes go straight to the socket (`send`), and only what the kernel does
//! not take stays queued. This module owns the socket and TLS state of one connection; it
//! must not touch the shard's tables or call the service.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

/// What one read from the socket produced.
pub(crate) enum ReadOutcome {
    /// The peer closed its side.
    Eof,
    /// `n` socket bytes were read; plaintext (if any) was appended to the caller's buffer.
    Bytes { n: usize, handshake_done: bool },
}

/// One connection's socket and TLS session.
#[derive(Debug)]
pub(crate) struct Transport {
    stream: TcpStream,
    tls: Option<Box<rustls::ServerConnection>>,
    /// Bytes of a frame that has not fully arrived yet. Empty (no capacity) when idle.
    pub(crate) unread: Vec<u8>,
    /// Plaintext bytes not yet taken by the kernel (plaintext connections only).
    pending_out: Vec<u8>,
    /// Frames may be waiting in `unread` or inside the TLS session (after an adoption).
    pub(crate) check_buffered: bool,
}

/// A `Write` over a glommio socket that never blocks: a pending write is `WouldBlock`.
struct SockWriter<'a, 'b> {
    stream: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
    written: usize,
}

impl Write for SockWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.stream).poll_write(self.cx, buf) {
            Poll::Ready(Ok(n)) => {
                self.written += n;
                Ok(n)
            }
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport {
    pub(crate) fn new(stream: TcpStream, tls: Option<Box<rustls::ServerConnection>>) -> Self {
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
        tls: Option<Box<rustls::ServerConnection>>,
        unread: Vec<u8>,
    ) -> Self {
        let mut t = Transport::new(stream, tls);
        t.unread = unread;
        t.check_buffered = true;
        t
    }

    pub(crate) fn into_parts(self) -> (TcpStream, Option<Box<rustls::ServerConnection>>, Vec<u8>) {
        (self.stream, self.tls, self.unread)
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Takes the service's queued plaintext (leaving `outbox` empty and capacity-free).
    pub(crate) fn queue(&mut self, outbox: &mut Vec<u8>) -> io::Result<()> {
        if outbox.is_empty() {
            return Ok(());
        }
        match &mut self.tls {
            Some(tls) => tls.writer().write_all(outbox)?,
            None if self.pending_out.is_empty() => std::mem::swap(&mut self.pending_out, outbox),
            None => self.pending_out.extend_from_slice(outbox),
        }
        *outbox = Vec::new();
        Ok(())
    }

    /// Writes what is queued. `Ready(Ok(bytes))` once everything is on the socket.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let mut w = SockWriter {
            stream: &mut self.stream,
            cx,
            written: 0,
        };
        match &mut self.tls {
            Some(tls) => {
                while tls.wants_write() {
                    match tls.write_tls(&mut w) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
            }
            None => {
                while !self.pending_out.is_empty() {
                    match w.write(&self.pending_out) {
                        Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                        Ok(n) => drop(self.pending_out.drain(..n)),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                self.pending_out = Vec::new();
            }
        }
        Poll::Ready(Ok(w.written as u64))
    }

    /// Reads once from the socket into `scratch`; TLS records are decrypted and the
    /// plaintext appended to `plain`. Plaintext connections append the bytes themselves.
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        scratch: &mut [u8],
        plain: &mut Vec<u8>,
    ) -> Poll<io::Result<ReadOutcome>> {
        let n = match Pin::new(&mut self.stream).poll_read(cx, scratch) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(0)) => return Poll::Ready(Ok(ReadOutcome::Eof)),
            Poll::Ready(Ok(n)) => n,
        };
        let Some(tls) = &mut self.tls else {
            plain.extend_from_slice(&scratch[..n]);
            return Poll::Ready(Ok(ReadOutcome::Bytes {
                n,
                handshake_done: false,
            }));
        };
        let was_handshaking = tls.is_handshaking();
        let mut input = &scratch[..n];
        while !input.is_empty() {
            tls.read_tls(&mut input)?;
            if let Err(e) = tls.process_new_packets() {
                // Queue the alert for the peer; the caller flushes it before closing.
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
            drain_plaintext(tls, plain)?;
        }
        let handshake_done = was_handshaking && !tls.is_handshaking();
        Poll::Ready(Ok(ReadOutcome::Bytes { n, handshake_done }))
    }

    /// Plaintext the TLS session decrypted but nobody has read yet (after an adoption).
    pub(crate) fn take_buffered_plaintext(&mut self, plain: &mut Vec<u8>) -> io::Result<()> {
        match &mut self.tls {
            Some(tls) => drain_plaintext(tls, plain),
            None => Ok(()),
        }
    }

    /// Best effort: tell a TLS peer we are closing, without waiting.
    pub(crate) fn send_close_notify(&mut self, cx: &mut Context<'_>) {
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            let _ = self.poll_flush(cx);
        }
    }

    pub(crate) fn set_nodelay(&self) -> io::Result<()> {
        self.stream
            .set_nodelay(true)
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

fn drain_plaintext(tls: &mut rustls::ServerConnection, plain: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 4096];
    loop {
        match tls.reader().read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => plain.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

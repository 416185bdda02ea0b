//! One server TLS 1.3 session over rustls' unbuffered API, with caller-owned buffers.
//!
//! ## What this module owns
//! The rustls [`UnbufferedServerConnection`] of one connection and the only TLS bytes that
//! connection keeps between reads: a record that has not fully arrived yet (`pending_in`,
//! empty and capacity-free otherwise). Everything else lives in the shard's scratch buffers,
//! which the caller lends per call:
//! - incoming TLS bytes are read into the shard's read buffer (after the pending prefix,
//!   which [`TlsSession::take_pending_in`] copies to its front) and decrypted in place;
//! - decrypted plaintext is appended to the caller's `plain` buffer;
//! - handshake records, alerts and encrypted application data are appended to the caller's
//!   `wire` buffer, which the caller writes to the socket.
//!
//! So an idle connection after the handshake holds only rustls' traffic keys and state, never
//! a deframer, plaintext or send buffer (the buffered `ServerConnection` keeps the
//! capacities of all three, several KiB; see ARCHITECTURE.md "Decisions and numbers").
//!
//! ## Protocol steps (one call to [`TlsSession::read`])
//! 1. `process_tls_records` on `incoming[start..]` returns a state and how many bytes to
//!    discard; the state is handled (plaintext copied out, records encoded into `wire`) and
//!    only then is `start` advanced — the order rustls requires.
//! 2. Repeat until rustls blocks (needs more bytes) or is idle (`WriteTraffic`).
//! 3. The undiscarded tail (a partial record, possibly already partly decrypted in place —
//!    rustls tracks that, so the bytes are kept exactly as they are) becomes `pending_in`.
//!
//! ## What it must not touch
//! Sockets, the shard's tables, the service. No I/O, no clock, no locks: a plain state
//! machine that moves with its connection when it is handed to another shard.

use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};

/// Most TLS bytes a connection may hold back between reads (a partial record or a handshake
/// message split over records). Two full records: anything longer is not TLS we accept.
pub const TLS_PENDING_BYTES_MAX: usize = 2 * TLS_RECORD_BYTES_MAX;

/// The largest TLS 1.3 record on the wire: 5-byte header, 2^14 bytes of plaintext, one
/// content-type byte and up to 255 bytes of AEAD expansion and padding.
pub const TLS_RECORD_BYTES_MAX: usize = 5 + (1 << 14) + 256;

/// Plaintext encrypted per `encrypt` call: one full record.
const ENCRYPT_CHUNK_BYTES: usize = 1 << 14;

/// Bytes a TLS 1.3 record adds to its plaintext with the AEADs we offer: header (5),
/// content type (1), tag (16).
const RECORD_OVERHEAD_BYTES: usize = 5 + 1 + 16;

/// Room for one handshake record or alert before rustls tells us its exact size.
const ENCODE_GUESS_BYTES: usize = 4096;

/// Why a TLS session cannot go on. The connection closes; no other connection notices.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The peer's bytes are not acceptable TLS (rustls' reason). An alert, if rustls made
    /// one, is already in `wire`.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The peer held back more than [`TLS_PENDING_BYTES_MAX`] bytes without completing a
    /// record.
    #[error("TLS record incomplete after {len} bytes (max {max})")]
    PendingTooLarge {
        /// Bytes held back.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Application data was queued before the handshake finished (an engine bug).
    #[error("cannot encrypt: handshake not complete")]
    NotReady,
    /// The traffic keys are exhausted (2^64 records); the connection must end.
    #[error("cannot encrypt: traffic keys exhausted")]
    KeysExhausted,
}

/// What one [`TlsSession::read`] produced besides plaintext and wire bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadProgress {
    /// The handshake finished during this call.
    pub handshake_done: bool,
    /// The peer sent close_notify: no more data will come.
    pub peer_closed: bool,
}

/// One connection's server TLS session. See the module doc for who owns which buffer.
pub struct TlsSession {
    conn: UnbufferedServerConnection,
    /// TLS bytes of a record not yet complete, exactly as rustls left them. Empty and
    /// capacity-free when none (the usual case for an idle connection); at most
    /// [`TLS_PENDING_BYTES_MAX`].
    pending_in: Vec<u8>,
    /// The session failed (bad input, or rustls panicked): it is never driven again.
    failed: bool,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .field("pending_in", &self.pending_in.len())
            .finish_non_exhaustive()
    }
}

impl TlsSession {
    /// A new server session, before the handshake.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(TlsSession {
            conn: UnbufferedServerConnection::new(config)?,
            pending_in: Vec::new(),
            failed: false,
        })
    }

    /// The handshake is not finished yet.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Bytes held back from earlier reads (a partial record).
    pub fn pending_in_len(&self) -> usize {
        self.pending_in.len()
    }

    /// Moves the held-back bytes to the front of `buf` (the shard's read buffer) and frees
    /// them; returns how many. The caller reads new bytes after them and passes the whole
    /// filled prefix to [`TlsSession::read`]. `buf` must be longer than
    /// [`TLS_PENDING_BYTES_MAX`].
    pub fn take_pending_in(&mut self, buf: &mut [u8]) -> usize {
        let n = self.pending_in.len();
        assert!(n <= TLS_PENDING_BYTES_MAX && buf.len() > TLS_PENDING_BYTES_MAX);
        buf[..n].copy_from_slice(&self.pending_in);
        self.pending_in = Vec::new();
        n
    }

    /// Processes the TLS bytes in `incoming` (held-back bytes first, then fresh ones):
    /// decrypts application data into `plain`, appends handshake records and alerts to
    /// `wire`, and keeps an incomplete tail for the next call.
    pub fn read(
        &mut self,
        incoming: &mut [u8],
        plain: &mut Vec<u8>,
        wire: &mut Vec<u8>,
    ) -> Result<ReadProgress, SessionError> {
        // rustls 0.23.46's unbuffered deframer panics (slice index out of range) on some
        // malformed handshake records (a full-size record of junk). A panic here would take
        // the whole shard down with every connection on it, so it is caught and becomes this
        // connection's TLS error; the session is dropped with the connection.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.read_records(incoming, plain, wire)
        }));
        match caught {
            Ok(Err(e)) => {
                self.failed = true;
                Err(e)
            }
            Ok(ok) => ok,
            Err(_) => {
                self.failed = true;
                Err(SessionError::Tls(rustls::Error::General(
                    "malformed TLS input (rustls panicked)".into(),
                )))
            }
        }
    }

    fn read_records(
        &mut self,
        incoming: &mut [u8],
        plain: &mut Vec<u8>,
        wire: &mut Vec<u8>,
    ) -> Result<ReadProgress, SessionError> {
        let was_handshaking = self.conn.is_handshaking();
        let mut progress = ReadProgress {
            handshake_done: false,
            peer_closed: false,
        };
        let mut start = 0;
        let result = loop {
            let status = self.conn.process_tls_records(&mut incoming[start..]);
            let mut discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => break Err(e),
            };
            match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    if let Err(e) = drain_records(&mut traffic, plain, &mut discard) {
                        break Err(e);
                    }
                }
                ConnectionState::EncodeTlsData(mut enc) => encode_into(wire, |b| enc.encode(b)),
                // The caller writes `wire` to the socket after this call: it owns those bytes.
                ConnectionState::TransmitTlsData(t) => t.done(),
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    progress.peer_closed = true;
                    start += discard;
                    break Ok(());
                }
                ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => {
                    start += discard;
                    break Ok(());
                }
                // Early data is off (no tickets, no resumption); anything else is new.
                _ => break Err(rustls::Error::General("unexpected TLS state".into())),
            }
            start += discard;
        };
        if let Err(e) = result {
            return Err(self.fail(e, &mut incoming[start..], wire));
        }
        let tail = &incoming[start..];
        if tail.len() > TLS_PENDING_BYTES_MAX {
            return Err(SessionError::PendingTooLarge {
                len: tail.len(),
                max: TLS_PENDING_BYTES_MAX,
            });
        }
        if !tail.is_empty() {
            self.pending_in = tail.to_vec();
        }
        progress.handshake_done = was_handshaking && !self.conn.is_handshaking();
        Ok(progress)
    }

    /// Encrypts `plaintext` as application data records appended to `wire`.
    pub fn encrypt(&mut self, plaintext: &[u8], wire: &mut Vec<u8>) -> Result<(), SessionError> {
        for chunk in plaintext.chunks(ENCRYPT_CHUNK_BYTES) {
            self.with_write_traffic(wire, |w, out| {
                let at = out.len();
                out.resize(at + chunk.len() + RECORD_OVERHEAD_BYTES, 0);
                let n = match w.encrypt(chunk, &mut out[at..]) {
                    Ok(n) => n,
                    Err(EncryptError::InsufficientSize(InsufficientSizeError {
                        required_size,
                    })) => {
                        out.resize(at + required_size, 0);
                        w.encrypt(chunk, &mut out[at..])
                            .map_err(|_| SessionError::KeysExhausted)?
                    }
                    Err(_) => return Err(SessionError::KeysExhausted),
                };
                out.truncate(at + n);
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Appends a close_notify alert to `wire`, if the session is far enough along to send
    /// one. Best effort: the connection is closing anyway.
    pub fn close_notify(&mut self, wire: &mut Vec<u8>) {
        if self.failed {
            return;
        }
        let _ = self.with_write_traffic(wire, |w, out| {
            let at = out.len();
            out.resize(at + ENCODE_GUESS_BYTES, 0);
            let n = w.queue_close_notify(&mut out[at..]).unwrap_or(0);
            out.truncate(at + n);
            Ok(())
        });
    }

    /// Brings the session to `WriteTraffic` (encoding anything rustls has queued, such as a
    /// key update, into `wire` on the way) and runs `f` there.
    fn with_write_traffic(
        &mut self,
        wire: &mut Vec<u8>,
        f: impl FnOnce(
            &mut rustls::unbuffered::WriteTraffic<'_, rustls::server::ServerConnectionData>,
            &mut Vec<u8>,
        ) -> Result<(), SessionError>,
    ) -> Result<(), SessionError> {
        loop {
            // Pass the held-back bytes, not an empty slice: rustls may be tracking a
            // handshake message that is partly in them. They hold no complete record.
            let status = self.conn.process_tls_records(&mut self.pending_in);
            assert_eq!(
                status.discard, 0,
                "held-back TLS bytes hold no complete record"
            );
            match status.state? {
                ConnectionState::WriteTraffic(mut w) => return f(&mut w, wire),
                ConnectionState::EncodeTlsData(mut enc) => encode_into(wire, |b| enc.encode(b)),
                ConnectionState::TransmitTlsData(t) => t.done(),
                _ => return Err(SessionError::NotReady),
            }
        }
    }

    /// After rustls refused the peer's bytes: collect the alert it queued (if any) into
    /// `wire` so the caller can send it before closing.
    /// Encodes the alert rustls has for `e` into `wire`. `rest` is the input rustls has not
    /// discarded: it may be tracking a handshake message inside it, so it must see the same
    /// bytes again (an empty slice made rustls index past it and panic).
    fn fail(&mut self, e: rustls::Error, rest: &mut [u8], wire: &mut Vec<u8>) -> SessionError {
        self.pending_in = Vec::new();
        for _ in 0..4 {
            let status = self.conn.process_tls_records(rest);
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut enc)) => encode_into(wire, |b| enc.encode(b)),
                Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
                _ => break,
            }
        }
        SessionError::Tls(e)
    }
}

/// Appends every decrypted record of `traffic` to `plain`, counting the bytes to discard.
fn drain_records(
    traffic: &mut rustls::unbuffered::ReadTraffic<'_, '_, rustls::server::ServerConnectionData>,
    plain: &mut Vec<u8>,
    discard: &mut usize,
) -> Result<(), rustls::Error> {
    while let Some(record) = traffic.next_record() {
        let record = record?;
        *discard += record.discard;
        plain.extend_from_slice(record.payload);
    }
    Ok(())
}

/// Runs rustls' `encode` into spare room at the end of `wire`, growing it once if rustls
/// says the record is larger.
fn encode_into(
    wire: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) {
    let at = wire.len();
    wire.resize(at + ENCODE_GUESS_BYTES, 0);
    let n = match encode(&mut wire[at..]) {
        Ok(n) => n,
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            wire.resize(at + required_size, 0);
            // The second try has exactly the room rustls asked for.
            encode(&mut wire[at..]).expect("encode into the size rustls asked for")
        }
        // Each EncodeTlsData is encoded once, just above.
        Err(EncodeError::AlreadyEncoded) => unreachable!("record encoded twice"),
    };
    wire.truncate(at + n);
}

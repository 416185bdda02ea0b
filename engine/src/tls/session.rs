//! One server TLS 1.3 session: rustls' unbuffered API for the handshake, then our
//! [`RecordLayer`] with the keys rustls hands over; caller-owned buffers throughout.
//!
//! ## What this module owns
//! The TLS state of one connection (the rustls [`UnbufferedServerConnection`] until the
//! handshake is done, the [`RecordLayer`] after), when to switch, and the only TLS bytes that
//! connection keeps between reads: a record that has not fully arrived yet (`pending_in`,
//! empty and capacity-free otherwise). Everything else lives in the shard's scratch buffers,
//! which the caller lends per call:
//! - incoming TLS bytes are read into the shard's read buffer (after the pending prefix,
//!   which [`TlsSession::take_pending_in`] copies to its front) and decrypted in place;
//! - decrypted plaintext is appended to the caller's `plain` buffer;
//! - handshake records, alerts and encrypted application data are appended to the caller's
//!   `wire` buffer, which the caller writes to the socket.
//!
//! After the handshake, at the first application data the server sends (rustls encrypts it,
//! which also flushes a KeyUpdate reply rustls may still owe the client) and with no partial
//! record held back, the rustls session is dropped: its traffic keys and sequence numbers
//! move into a [`RecordLayer`] (~110 bytes), which protects records from then on. So an idle connection after the handshake holds
//! neither rustls' ~3.3 KB of session state nor a deframer, plaintext or send buffer (see
//! `docs/decisions/tls-unbuffered-api.md`).
//!
//! ## Protocol steps (one call to [`TlsSession::read`] during the handshake)
//! 1. `process_tls_records` on `incoming[start..]` returns a state and how many bytes to
//!    discard; the state is handled (plaintext copied out, records encoded into `wire`) and
//!    only then is `start` advanced — the order rustls requires.
//! 2. Repeat until rustls blocks (needs more bytes) or is idle (`WriteTraffic`).
//! 3. The undiscarded tail (a partial record, possibly already partly decrypted in place —
//!    rustls tracks that, so the bytes are kept exactly as they are) becomes `pending_in`.
//!
//! ## rustls never takes a shard down
//! Every call into rustls that the peer's bytes can reach — reading records, encrypting
//! (which first drives rustls through what it has queued), close_notify and the key
//! hand-over — runs inside `guarded`: a panic in rustls (0.23.46 had one in its
//! deframer) becomes this connection's [`SessionError::RustlsFailed`], the session is
//! failed and dropped, and the shard goes on. Nothing on that path asserts; what rustls
//! does against its own contract is an error, not a panic.
//!
//! ## After a write error
//! [`TlsSession::write_failed`]: records already sealed never reached the peer, so a
//! close_notify sealed after them would follow a gap (the peer would see a bad record,
//! not a clean end); the session seals nothing more.
//!
//! ## A live upgrade
//! [`TlsSession::export`] gives the record layer's state (keys, IVs, sequence numbers) and
//! the held-back partial record, [`TlsSession::import`] takes them back in the next process
//! (`crate::upgrade`); a session still on rustls cannot move.
//!
//! ## What it must not touch
//! Sockets, the shard's tables, the service. No I/O, no clock, no locks: a plain state
//! machine that moves with its connection when it is handed to another shard.

use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};

#[cfg(doc)]
use crate::tls::records::RECORD_STATE_BYTES;
use crate::tls::records::{RecordError, RecordLayer, StateError};

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

/// Records rustls may ask us to encode before it is ready to write or has its alert out:
/// the server's handshake flight is a handful, a key update and an alert one each.
const ENCODE_ROUNDS_MAX: usize = 16;

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
    /// rustls refused to encrypt (its traffic keys are exhausted); the connection must end.
    #[error("cannot encrypt: traffic keys exhausted")]
    KeysExhausted,
    /// The session already failed (or a write failed); it is never driven again.
    #[error("TLS session already failed")]
    Failed,
    /// rustls panicked, or broke its own API contract, during `op`: a bug in rustls (or in
    /// how we drive it) reached through this connection's bytes. Only this connection ends.
    #[error("TLS: rustls failed inside {op} (panic or broken contract)")]
    RustlsFailed {
        /// What we asked rustls to do.
        op: &'static str,
    },
    /// After the handshake: the peer's records were refused, or a direction ran out of
    /// records. An alert, if one is due, is already in `wire`.
    #[error("TLS: {0}")]
    Record(#[from] RecordError),
}

/// What one [`TlsSession::read`] produced besides plaintext and wire bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadProgress {
    /// The handshake finished during this call.
    pub handshake_done: bool,
    /// The handshake that finished during this call resumed a session from a ticket.
    pub resumed: bool,
    /// The peer sent close_notify: no more data will come.
    pub peer_closed: bool,
}

/// One connection's server TLS session. See the module doc for who owns which buffer.
pub struct TlsSession {
    phase: Phase,
    /// TLS bytes of a record not yet complete, exactly as rustls left them. Empty and
    /// capacity-free when none (the usual case for an idle connection); at most
    /// [`TLS_PENDING_BYTES_MAX`].
    pending_in: Vec<u8>,
    /// The session failed (bad input, rustls panicked, or a write of its records failed):
    /// it is never driven again, and seals nothing more, not even close_notify.
    failed: bool,
}

/// Who protects the records now.
enum Phase {
    /// rustls, until the handshake is done (boxed: it is ~1.1 KB and goes away after).
    Handshake {
        conn: Box<UnbufferedServerConnection>,
        /// The config allows handing the traffic keys over (`enable_secret_extraction`);
        /// without it rustls keeps the session for its whole life.
        hand_over: bool,
    },
    /// Our record layer with the keys rustls handed over.
    Traffic(RecordLayer),
    /// The hand-over failed; the connection is closing.
    Failed,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.is_handshaking())
            .field("record_layer", &matches!(self.phase, Phase::Traffic(_)))
            .field("pending_in", &self.pending_in.len())
            .finish_non_exhaustive()
    }
}

impl TlsSession {
    /// A new server session, before the handshake.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Result<Self, rustls::Error> {
        let hand_over = config.enable_secret_extraction;
        Ok(TlsSession {
            phase: Phase::Handshake {
                conn: Box::new(UnbufferedServerConnection::new(config)?),
                hand_over,
            },
            pending_in: Vec::new(),
            failed: false,
        })
    }

    /// The handshake is not finished yet.
    pub fn is_handshaking(&self) -> bool {
        match &self.phase {
            Phase::Handshake { conn, .. } => conn.is_handshaking(),
            Phase::Traffic(_) | Phase::Failed => false,
        }
    }

    /// The rustls session is gone and [`RecordLayer`] protects the records (the state an
    /// idle connection should be in).
    pub fn uses_record_layer(&self) -> bool {
        matches!(self.phase, Phase::Traffic(_))
    }

    /// Bytes held back from earlier reads (a partial record).
    pub fn pending_in_len(&self) -> usize {
        self.pending_in.len()
    }

    /// For a process taking this connection over: appends the record layer's state
    /// ([`RECORD_STATE_BYTES`], secret: the caller zeroes it after use) to `state` and
    /// returns the partial record held back, to travel with it. `None` while rustls still
    /// protects the records (the handshake, or an established session that has not sent
    /// anything yet, see [`TlsSession::encrypt`]) or once the session failed: such a
    /// connection cannot move.
    pub fn export(&self, state: &mut Vec<u8>) -> Option<&[u8]> {
        match &self.phase {
            Phase::Traffic(records) if !self.failed => {
                records.export(state)?;
                Some(&self.pending_in)
            }
            _ => None,
        }
    }

    /// The session [`TlsSession::export`] described: the record layer from `state`, and
    /// `pending_in`, the partial record it held back (at most [`TLS_PENDING_BYTES_MAX`]).
    pub fn import(state: &[u8], pending_in: &[u8]) -> Result<TlsSession, StateError> {
        if pending_in.len() > TLS_PENDING_BYTES_MAX {
            return Err(StateError::Inconsistent("held-back record too long"));
        }
        Ok(TlsSession {
            phase: Phase::Traffic(RecordLayer::import(state)?),
            pending_in: pending_in.to_vec(),
            failed: false,
        })
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
        if self.failed {
            return Err(SessionError::Failed);
        }
        let result = match &mut self.phase {
            Phase::Traffic(records) => Self::read_traffic(records, incoming, plain, wire),
            Phase::Handshake { .. } => self.read_handshake(incoming, plain, wire),
            Phase::Failed => Err(SessionError::NotReady),
        };
        let (progress, tail_len) = match result {
            Ok(done) => done,
            Err(e) => {
                // Drop (and zero) the keys at once; the alert is already in `wire`.
                self.fail_now();
                return Err(e);
            }
        };
        let tail = &incoming[incoming.len() - tail_len..];
        if tail.len() > TLS_PENDING_BYTES_MAX {
            self.fail_now();
            return Err(SessionError::PendingTooLarge {
                len: tail.len(),
                max: TLS_PENDING_BYTES_MAX,
            });
        }
        if !tail.is_empty() {
            self.pending_in = tail.to_vec();
        }
        Ok(progress)
    }

    /// After the handshake: our record layer opens the records.
    fn read_traffic(
        records: &mut RecordLayer,
        incoming: &mut [u8],
        plain: &mut Vec<u8>,
        wire: &mut Vec<u8>,
    ) -> Result<(ReadProgress, usize), SessionError> {
        match records.open(incoming, plain) {
            Ok(opened) => Ok((
                ReadProgress {
                    handshake_done: false,
                    resumed: false,
                    peer_closed: opened.peer_closed,
                },
                if opened.peer_closed {
                    0
                } else {
                    incoming.len() - opened.consumed
                },
            )),
            Err(e) => {
                if let Some(alert) = e.alert() {
                    let _ = records.seal_alert(alert, wire);
                }
                Err(e.into())
            }
        }
    }

    /// During the handshake: rustls reads. Returns the progress and the length of the tail
    /// left unprocessed.
    fn read_handshake(
        &mut self,
        incoming: &mut [u8],
        plain: &mut Vec<u8>,
        wire: &mut Vec<u8>,
    ) -> Result<(ReadProgress, usize), SessionError> {
        let Phase::Handshake { conn, .. } = &mut self.phase else {
            unreachable!("read_handshake outside the handshake phase");
        };
        // rustls 0.23.46's unbuffered deframer panics (slice index out of range) on some
        // malformed handshake records (a full-size record of junk): caught, this
        // connection's error. Collecting the alert after an error goes through rustls
        // again, so it is inside too.
        guarded("process_tls_records", || {
            read_records(conn, incoming, plain, wire)
                .map_err(|(e, start)| fail(conn, e, &mut incoming[start..], wire))
        })
    }

    /// Right after rustls encrypted application data, and with no partial record held back,
    /// trades the rustls session for a [`RecordLayer`] with its traffic keys.
    ///
    /// Why only then: when a client KeyUpdate asks for one back, rustls switches its sending
    /// key at once but writes the KeyUpdate that announces it only with its next application
    /// data (`queued_key_update_message`), and `dangerous_into_kernel_connection` does not
    /// check for it. Handing over at any other moment could drop that message, and the
    /// client would fail every later record.
    fn hand_over_keys(&mut self) -> Result<(), SessionError> {
        let Phase::Handshake { conn, hand_over } = &mut self.phase else {
            return Ok(());
        };
        if !*hand_over || conn.is_handshaking() || !self.pending_in.is_empty() {
            return Ok(());
        }
        let Phase::Handshake { conn, .. } = std::mem::replace(&mut self.phase, Phase::Failed)
        else {
            unreachable!("checked above");
        };
        let handed = guarded("dangerous_into_kernel_connection", || {
            Ok(conn.dangerous_into_kernel_connection())
        });
        let handed = match handed {
            Ok(handed) => handed,
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        };
        match handed {
            Ok((_, kernel)) if kernel.protocol_version() != rustls::ProtocolVersion::TLSv1_3 => {
                self.failed = true;
                Err(SessionError::Tls(rustls::Error::General(
                    "the record layer speaks TLS 1.3 only".into(),
                )))
            }
            Ok((secrets, _kernel)) => match RecordLayer::new(&secrets) {
                Some(records) => {
                    self.phase = Phase::Traffic(records);
                    Ok(())
                }
                None => {
                    self.failed = true;
                    Err(SessionError::Tls(rustls::Error::General(
                        "negotiated cipher suite has no record layer here".into(),
                    )))
                }
            },
            Err(e) => {
                self.failed = true;
                Err(SessionError::Tls(e))
            }
        }
    }

    /// Encrypts `plaintext` as application data records appended to `wire`. The first
    /// time after the handshake, this is also where the keys are handed over.
    ///
    /// On an error the caller drops `wire`. While rustls still protects the records, some
    /// of them may already be sealed into it, so the session is failed (nothing sealed
    /// after a gap); the record layer appends nothing on an error and stays usable for a
    /// last close_notify.
    pub fn encrypt(&mut self, plaintext: &[u8], wire: &mut Vec<u8>) -> Result<(), SessionError> {
        if self.failed {
            return Err(SessionError::Failed);
        }
        let conn = match &mut self.phase {
            Phase::Traffic(records) => return Ok(records.seal(plaintext, wire)?),
            Phase::Handshake { conn, .. } => conn,
            Phase::Failed => return Err(SessionError::Failed),
        };
        let pending_in = &mut self.pending_in;
        let sealed = guarded("encrypt", || {
            for chunk in plaintext.chunks(ENCRYPT_CHUNK_BYTES) {
                with_write_traffic(conn, pending_in, wire, |w, out| {
                    encrypt_chunk(w, chunk, out)
                })?;
            }
            Ok(())
        });
        if let Err(e) = sealed {
            self.fail_now();
            return Err(e);
        }
        if !plaintext.is_empty() {
            self.hand_over_keys()?;
        }
        Ok(())
    }

    /// Appends a close_notify alert to `wire`, if the session is far enough along to send
    /// one and nothing it sealed was lost. Best effort: the connection is closing anyway.
    pub fn close_notify(&mut self, wire: &mut Vec<u8>) {
        if self.failed {
            return;
        }
        match &mut self.phase {
            Phase::Traffic(records) => {
                let _ = records.seal_alert(0, wire);
            }
            Phase::Handshake { conn, .. } => {
                let pending_in = &mut self.pending_in;
                let at = wire.len();
                let queued = guarded("queue_close_notify", || {
                    with_write_traffic(conn, pending_in, wire, |w, out| {
                        let at = out.len();
                        out.resize(at + ENCODE_GUESS_BYTES, 0);
                        let n = w.queue_close_notify(&mut out[at..]).unwrap_or(0);
                        out.truncate(at + n);
                        Ok(())
                    })
                });
                if queued.is_err() {
                    wire.truncate(at);
                    self.fail_now();
                }
            }
            Phase::Failed => {}
        }
    }

    /// Writing this session's records to the socket failed: what was sealed never reached
    /// the peer, so nothing more is sealed (a close_notify after the gap would reach the
    /// peer as a bad record) and the keys are dropped. The connection is closing.
    pub fn write_failed(&mut self) {
        self.fail_now();
    }

    /// The session has failed: never driven again, nothing more sealed, keys dropped (and
    /// zeroed) now.
    fn fail_now(&mut self) {
        self.failed = true;
        self.phase = Phase::Failed;
    }
}

/// Runs `f`, a call into rustls that the peer's bytes can reach, so that a panic inside
/// rustls ends this connection (as [`SessionError::RustlsFailed`]) instead of unwinding
/// through the shard's loop and taking every connection on it down. The caller fails
/// the session on any error, so state rustls left half-updated is never used again.
fn guarded<T>(
    op: &'static str,
    f: impl FnOnce() -> Result<T, SessionError>,
) -> Result<T, SessionError> {
    crate::runtime::contain_panics(f).unwrap_or(Err(SessionError::RustlsFailed { op }))
}

/// Encrypts one chunk (at most one record of plaintext) into `out`, growing it once if
/// rustls asks for more room.
fn encrypt_chunk(
    w: &mut rustls::unbuffered::WriteTraffic<'_, rustls::server::ServerConnectionData>,
    chunk: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), SessionError> {
    let at = out.len();
    out.resize(at + chunk.len() + RECORD_OVERHEAD_BYTES, 0);
    let n = match w.encrypt(chunk, &mut out[at..]) {
        Ok(n) => n,
        Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
            out.resize(at + required_size, 0);
            w.encrypt(chunk, &mut out[at..])
                .map_err(|_| SessionError::KeysExhausted)?
        }
        Err(_) => return Err(SessionError::KeysExhausted),
    };
    out.truncate(at + n);
    Ok(())
}

/// rustls' side of [`TlsSession::read`]: steps 1–3 of the module doc. Returns the progress
/// and the length of the unprocessed tail, or the error with where processing stopped.
fn read_records(
    conn: &mut UnbufferedServerConnection,
    incoming: &mut [u8],
    plain: &mut Vec<u8>,
    wire: &mut Vec<u8>,
) -> Result<(ReadProgress, usize), (rustls::Error, usize)> {
    let was_handshaking = conn.is_handshaking();
    let mut progress = ReadProgress {
        handshake_done: false,
        resumed: false,
        peer_closed: false,
    };
    let mut start = 0;
    loop {
        let status = conn.process_tls_records(&mut incoming[start..]);
        let mut discard = status.discard;
        let state = match status.state {
            Ok(state) => state,
            Err(e) => return Err((e, start)),
        };
        match state {
            ConnectionState::ReadTraffic(mut traffic) => {
                if let Err(e) = drain_records(&mut traffic, plain, &mut discard) {
                    return Err((e, start));
                }
            }
            ConnectionState::EncodeTlsData(mut enc) => {
                if let Err(e) = encode_into(wire, |b| enc.encode(b)) {
                    return Err((rustls::Error::General(e.to_string()), start));
                }
            }
            // The caller writes `wire` to the socket after this call: it owns those bytes.
            ConnectionState::TransmitTlsData(t) => t.done(),
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                // Anything after close_notify is ignored (RFC 8446 §6.1), never held back.
                progress.peer_closed = true;
                return Ok((progress, 0));
            }
            ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => {
                start += discard;
                break;
            }
            // Early data is off (`max_early_data_size = 0`); anything else is new.
            _ => return Err((rustls::Error::General("unexpected TLS state".into()), start)),
        }
        start += discard;
    }
    progress.handshake_done = was_handshaking && !conn.is_handshaking();
    progress.resumed =
        progress.handshake_done && conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    Ok((progress, incoming.len() - start))
}

/// Brings the rustls session to `WriteTraffic` (encoding anything rustls has queued, such as
/// a key update, into `wire` on the way) and runs `f` there. `pending_in` is the session's
/// held-back bytes.
fn with_write_traffic(
    conn: &mut UnbufferedServerConnection,
    pending_in: &mut [u8],
    wire: &mut Vec<u8>,
    f: impl FnOnce(
        &mut rustls::unbuffered::WriteTraffic<'_, rustls::server::ServerConnectionData>,
        &mut Vec<u8>,
    ) -> Result<(), SessionError>,
) -> Result<(), SessionError> {
    // A bound, not a loop forever: rustls queues at most a key update and its own alert.
    for _ in 0..ENCODE_ROUNDS_MAX {
        // Pass the held-back bytes, not an empty slice: rustls may be tracking a handshake
        // message that is partly in them. They hold no complete record, so rustls has nothing
        // to discard; if it says otherwise, it is not in a state we can write from.
        let status = conn.process_tls_records(pending_in);
        if status.discard != 0 {
            return Err(SessionError::RustlsFailed {
                op: "process_tls_records on held-back bytes",
            });
        }
        match status.state? {
            ConnectionState::WriteTraffic(mut w) => return f(&mut w, wire),
            ConnectionState::EncodeTlsData(mut enc) => encode_into(wire, |b| enc.encode(b))?,
            ConnectionState::TransmitTlsData(t) => t.done(),
            _ => return Err(SessionError::NotReady),
        }
    }
    Err(SessionError::RustlsFailed {
        op: "process_tls_records: never ready to write",
    })
}

/// After rustls refused the peer's bytes: encodes the alert it queued for `e` into `wire` so
/// the caller can send it before closing. `rest` is the input rustls has not discarded: it
/// may be tracking a handshake message inside it, so it must see the same bytes again (an
/// empty slice made rustls index past it and panic).
///
/// One call only: rustls hands out what it queued (the alert) before it looks at the input
/// again, and looking again would deframe the same bad bytes and queue a second fatal alert
/// (a `debug_assert!` in rustls; found when that panic stopped being mistaken for a TLS
/// error).
fn fail(
    conn: &mut UnbufferedServerConnection,
    e: rustls::Error,
    rest: &mut [u8],
    wire: &mut Vec<u8>,
) -> SessionError {
    let status = conn.process_tls_records(rest);
    if let Ok(ConnectionState::EncodeTlsData(mut enc)) = status.state {
        // Best effort: without the alert the connection still closes.
        let _ = encode_into(wire, |b| enc.encode(b));
    }
    SessionError::Tls(e)
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
/// says the record is larger. An encode that fails with the room rustls asked for (or twice)
/// breaks rustls' contract: an error, and `wire` is left as it was.
fn encode_into(
    wire: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), SessionError> {
    let at = wire.len();
    wire.resize(at + ENCODE_GUESS_BYTES, 0);
    let encoded = match encode(&mut wire[at..]) {
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            wire.resize(at + required_size, 0);
            encode(&mut wire[at..])
        }
        first => first,
    };
    match encoded {
        Ok(n) => {
            wire.truncate(at + n);
            Ok(())
        }
        Err(_) => {
            wire.truncate(at);
            Err(SessionError::RustlsFailed { op: "encode" })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_the_guard_is_this_connections_error() {
        let caught: Result<(), SessionError> = guarded("encrypt", || panic!("inside rustls"));
        assert!(
            matches!(caught, Err(SessionError::RustlsFailed { op: "encrypt" })),
            "{caught:?}"
        );
        let passed = guarded("encrypt", || Ok(7));
        assert!(matches!(passed, Ok(7)));
        let refused: Result<(), _> = guarded("encrypt", || Err(SessionError::KeysExhausted));
        assert!(matches!(refused, Err(SessionError::KeysExhausted)));
    }

    #[test]
    fn an_encode_that_breaks_rustls_contract_is_an_error_and_leaves_wire_as_it_was() {
        let mut wire = b"before".to_vec();
        let twice = encode_into(&mut wire, |_| Err(EncodeError::AlreadyEncoded));
        assert!(matches!(
            twice,
            Err(SessionError::RustlsFailed { op: "encode" })
        ));
        let mut asks = 0;
        let never_fits = encode_into(&mut wire, |_| {
            asks += 1;
            Err(EncodeError::InsufficientSize(InsufficientSizeError {
                required_size: 10_000,
            }))
        });
        assert!(never_fits.is_err());
        assert_eq!(asks, 2, "grown once, then refused");
        assert_eq!(wire, b"before");
    }
}

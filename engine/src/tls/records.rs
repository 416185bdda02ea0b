//! TLS 1.3 record protection for an established connection (RFC 8446 §5.2–5.5), from the
//! traffic keys rustls hands over once the handshake is done.
//!
//! ## Why
//! After its handshake a rustls session keeps ~3.3 KB per connection (session object, key
//! schedule, two AEAD key contexts; `docs/decisions/tls-record-layer.md`). A switch holds
//! millions of idle connections, so once the handshake is over [`crate::tls::session`] keeps
//! only what protecting records needs: per direction the AEAD key, the static IV and the
//! sequence number (~110 bytes together). The AEAD key context is built on the stack for each
//! batch of records (one AES key expansion, well under a microsecond), never kept.
//!
//! ## What this module owns
//! Sealing application data and alerts into records, opening records into plaintext, the
//! sequence numbers and their limits. The cryptography itself is *ring*'s AEAD (the provider
//! rustls already uses); this module only frames: header as additional data, nonce = IV XOR
//! sequence number, inner content type and zero padding.
//!
//! ## What it refuses, before spending an AEAD open where it can
//! - a header that is not application data (23) with `legacy_record_version` 0x0303, or
//!   announces more than 2^14 + 256 bytes: from the header alone;
//! - more than [`EMPTY_RECORDS_IN_A_ROW_MAX`] zero-length application-data records in a row
//!   (`unexpected_message`, as rustls);
//! - any alert but close_notify and a few user_canceled warnings: an error alert from the
//!   peer whatever its level (RFC 8446 §6.2), answered with nothing.
//!
//! Once a record fails (or the peer's close_notify arrived), the layer is finished: every
//! later `open` and `seal` is refused, so a record can never be accepted after one that
//! failed or was missing (deletion), nor after the peer closed.
//!
//! ## What it does not do
//! Post-handshake handshake messages: a client KeyUpdate (sent by TLS stacks only near the
//! AES-GCM record limit) ends the connection with `unexpected_message`, and the client
//! reconnects (deriving the next keys needs the traffic secret, which rustls keeps in the
//! ~1 KB `KernelConnection` we drop). The server's session tickets (`engine::tls`) go out
//! inside the handshake, before the keys move here, and clients send none, so nothing else
//! is expected. Our sending direction stops at [`Aead::records_max`] records
//! (a close_notify still fits) and the connection closes, inside the AEAD's
//! confidentiality limit; the receiving direction only guards the 2^64 sequence space (one
//! forgery ends the connection, so no integrity limit applies to it). Keys are zeroed when
//! the layer drops; the AEAD key context *ring* builds on the stack per batch of records is
//! not (as in rustls). No sockets, no clock, no shard state.

mod state;

pub use state::{StateError, RECORD_STATE_BYTES};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use rustls::ConnectionTrafficSecrets;
use zeroize::Zeroize;

/// Outer and inner content type of application data.
const APPLICATION_DATA: u8 = 23;
/// Inner content type of an alert.
const ALERT: u8 = 21;
/// Inner content type of a handshake message (post-handshake: KeyUpdate, tickets).
const HANDSHAKE: u8 = 22;
/// Record header: type, legacy version (3, 3), length.
const HEADER_BYTES: usize = 5;
/// Every AEAD we accept has a 16-byte tag.
const TAG_BYTES: usize = 16;
/// Most plaintext in one record (RFC 8446 §5.1).
pub const PLAINTEXT_MAX: usize = 1 << 14;
/// Most ciphertext in one record (RFC 8446 §5.2).
const CIPHERTEXT_MAX: usize = PLAINTEXT_MAX + 256;

/// Alert levels and the descriptions we act on (RFC 8446 §6).
const WARNING: u8 = 1;
const FATAL: u8 = 2;
const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;
/// Warning alerts (user_canceled) tolerated before the peer is misbehaving (as rustls).
const WARNING_ALERTS_MAX: u8 = 4;
/// Zero-length application-data records accepted in a row (as rustls' deframer): a peer
/// that sends nothing but empty records costs an AEAD open each and moves no frame along.
pub const EMPTY_RECORDS_IN_A_ROW_MAX: u8 = 32;
/// The only `legacy_record_version` a TLS 1.3 record carries (RFC 8446 §5.2).
const LEGACY_RECORD_VERSION: [u8; 2] = [3, 3];

/// Why the peer's records (or our own limits) end the connection.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A record failed authentication: tampered, truncated or out of order.
    #[error("TLS record failed authentication (bad_record_mac)")]
    BadRecordMac,
    /// A record longer than TLS 1.3 allows.
    #[error("TLS record too long (record_overflow)")]
    RecordOverflow,
    /// A record that is not application data, an alert or a handshake message.
    #[error("unexpected TLS record after the handshake (content type {0})")]
    UnexpectedMessage(u8),
    /// A record header whose `legacy_record_version` is not 0x0303; refused before any
    /// decryption.
    #[error("TLS record version {version:#06x} (only 0x0303 after the handshake)")]
    BadRecordVersion {
        /// The version the header carried.
        version: u16,
    },
    /// More than [`EMPTY_RECORDS_IN_A_ROW_MAX`] zero-length application-data records in a
    /// row.
    #[error("more than {max} empty TLS records in a row")]
    TooManyEmptyRecords {
        /// The limit.
        max: u8,
    },
    /// A handshake message after the handshake: a KeyUpdate (type 24), which this server
    /// does not support; the client reconnects.
    #[error("TLS handshake message type {0} after the handshake (KeyUpdate is not supported)")]
    PostHandshakeMessage(u8),
    /// The peer sent an error alert: any fatal one, or a warning other than close_notify
    /// and user_canceled (RFC 8446 §6.2: treated as fatal whatever its level). Nothing is
    /// sent back.
    #[error("peer sent TLS alert {0}")]
    PeerAlert(u8),
    /// An alert that is not two bytes, or has a level other than warning or fatal, or more
    /// user_canceled warnings than `WARNING_ALERTS_MAX`.
    #[error("malformed TLS alert from the peer")]
    BadAlert,
    /// The layer already failed or the peer already closed: nothing more is accepted.
    #[error("TLS session already ended")]
    Ended,
    /// A direction used up its records; the connection must end (clients reconnect).
    #[error("TLS traffic keys used for the most records allowed")]
    KeysExhausted,
}

impl RecordError {
    /// The alert to send the peer before closing, if any.
    pub fn alert(self) -> Option<u8> {
        match self {
            RecordError::BadRecordMac => Some(20),
            RecordError::RecordOverflow => Some(22),
            RecordError::UnexpectedMessage(_)
            | RecordError::PostHandshakeMessage(_)
            | RecordError::TooManyEmptyRecords { .. } => Some(10),
            RecordError::BadAlert | RecordError::BadRecordVersion { .. } => Some(50),
            RecordError::PeerAlert(_) | RecordError::Ended => None,
            RecordError::KeysExhausted => Some(CLOSE_NOTIFY),
        }
    }
}

/// The negotiated AEAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aead {
    /// TLS_AES_128_GCM_SHA256.
    Aes128Gcm,
    /// TLS_AES_256_GCM_SHA384.
    Aes256Gcm,
    /// TLS_CHACHA20_POLY1305_SHA256.
    Chacha20Poly1305,
}

impl Aead {
    fn algorithm(self) -> &'static ring::aead::Algorithm {
        match self {
            Aead::Aes128Gcm => &ring::aead::AES_128_GCM,
            Aead::Aes256Gcm => &ring::aead::AES_256_GCM,
            Aead::Chacha20Poly1305 => &ring::aead::CHACHA20_POLY1305,
        }
    }

    /// Records we send before the connection closes: 2^24 for AES-GCM (RFC 8446 §5.5
    /// allows ~2^24.5 full-size records; rustls would send a KeyUpdate at the same point),
    /// 2^48 for ChaCha20-Poly1305 (far below its 2^64 sequence space). The last one is kept
    /// for close_notify.
    pub fn records_max(self) -> u64 {
        match self {
            Aead::Aes128Gcm | Aead::Aes256Gcm => 1 << 24,
            Aead::Chacha20Poly1305 => 1 << 48,
        }
    }
}

/// One direction's key, IV and next sequence number. Zeroed when dropped.
struct Direction {
    key: [u8; 32],
    key_len: u8,
    iv: [u8; NONCE_LEN],
    seq: u64,
}

impl Direction {
    fn new(seq: u64, secrets: &ConnectionTrafficSecrets) -> Option<(Aead, Direction)> {
        let (aead, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Aead::Aes128Gcm, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Aead::Aes256Gcm, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (Aead::Chacha20Poly1305, key, iv)
            }
            _ => return None,
        };
        let (key, iv) = (key.as_ref(), iv.as_ref());
        if key.len() != aead.algorithm().key_len() || iv.len() != NONCE_LEN {
            return None;
        }
        let mut d = Direction {
            key: [0; 32],
            key_len: key.len() as u8,
            iv: [0; NONCE_LEN],
            seq,
        };
        d.key[..key.len()].copy_from_slice(key);
        d.iv.copy_from_slice(iv);
        Some((aead, d))
    }

    fn key(&self, aead: Aead) -> LessSafeKey {
        let unbound = UnboundKey::new(aead.algorithm(), &self.key[..self.key_len as usize])
            .expect("key length checked in Direction::new");
        LessSafeKey::new(unbound)
    }

    /// The nonce for the next record, and the sequence number moves on; refused once the
    /// sequence number reaches `limit`.
    fn next_nonce(&mut self, limit: u64) -> Result<Nonce, RecordError> {
        if self.seq >= limit {
            return Err(RecordError::KeysExhausted);
        }
        let nonce = nonce_for(&self.iv, self.seq);
        self.seq += 1;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

/// The per-record nonce: the static IV XOR the sequence number as a 96-bit big-endian
/// integer (RFC 8446 §5.3).
fn nonce_for(iv: &[u8; NONCE_LEN], seq: u64) -> [u8; NONCE_LEN] {
    let mut nonce = *iv;
    for (n, s) in nonce[NONCE_LEN - 8..].iter_mut().zip(seq.to_be_bytes()) {
        *n ^= s;
    }
    nonce
}

impl Drop for Direction {
    fn drop(&mut self) {
        self.key.zeroize();
        self.iv.zeroize();
    }
}

/// What [`RecordLayer::open`] consumed and saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Bytes of whole records processed; the rest is a partial record to keep.
    pub consumed: usize,
    /// The peer sent close_notify (anything after it is ignored).
    pub peer_closed: bool,
}

/// Record protection for both directions of one established TLS 1.3 connection.
pub struct RecordLayer {
    aead: Aead,
    /// A record failed or the peer closed: nothing more is opened or sealed.
    ended: bool,
    /// Warning alerts received so far.
    warnings: u8,
    /// Zero-length application-data records received since the last non-empty record; at
    /// most [`EMPTY_RECORDS_IN_A_ROW_MAX`].
    empty_in_a_row: u8,
    tx: Direction,
    rx: Direction,
}

impl std::fmt::Debug for RecordLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordLayer")
            .field("aead", &self.aead)
            .field("tx_seq", &self.tx.seq)
            .field("rx_seq", &self.rx.seq)
            .finish_non_exhaustive()
    }
}

impl RecordLayer {
    /// From rustls' extracted secrets; `None` for a suite this layer does not implement (the
    /// caller then keeps the rustls session).
    pub fn new(secrets: &rustls::ExtractedSecrets) -> Option<RecordLayer> {
        let (aead, tx) = Direction::new(secrets.tx.0, &secrets.tx.1)?;
        let (rx_aead, rx) = Direction::new(secrets.rx.0, &secrets.rx.1)?;
        (aead == rx_aead).then_some(RecordLayer {
            aead,
            ended: false,
            warnings: 0,
            empty_in_a_row: 0,
            tx,
            rx,
        })
    }

    /// The negotiated AEAD.
    pub fn aead(&self) -> Aead {
        self.aead
    }

    /// The peer's close_notify arrived, or a record failed: the layer takes nothing more.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Decrypts every whole record at the front of `incoming` in place, appending
    /// application data to `plain`. Stops after close_notify. After an error or a
    /// close_notify every later call is refused with [`RecordError::Ended`].
    pub fn open(
        &mut self,
        incoming: &mut [u8],
        plain: &mut Vec<u8>,
    ) -> Result<Opened, RecordError> {
        if self.ended {
            return Err(RecordError::Ended);
        }
        let result = self.open_records(incoming, plain);
        if !matches!(
            result,
            Ok(Opened {
                peer_closed: false,
                ..
            })
        ) {
            self.ended = true;
        }
        result
    }

    fn open_records(
        &mut self,
        incoming: &mut [u8],
        plain: &mut Vec<u8>,
    ) -> Result<Opened, RecordError> {
        let mut at = 0;
        let mut key = None;
        while incoming.len() - at >= HEADER_BYTES {
            let rest = &mut incoming[at..];
            let header: [u8; HEADER_BYTES] = rest[..HEADER_BYTES].try_into().expect("length");
            if header[0] != APPLICATION_DATA {
                return Err(RecordError::UnexpectedMessage(header[0]));
            }
            if header[1..3] != LEGACY_RECORD_VERSION {
                return Err(RecordError::BadRecordVersion {
                    version: u16::from_be_bytes([header[1], header[2]]),
                });
            }
            let len = u16::from_be_bytes([header[3], header[4]]) as usize;
            if len > CIPHERTEXT_MAX {
                return Err(RecordError::RecordOverflow);
            }
            if rest.len() < HEADER_BYTES + len {
                break;
            }
            let nonce = self.rx.next_nonce(u64::MAX)?;
            let key = key.get_or_insert_with(|| self.rx.key(self.aead));
            let inner = key
                .open_in_place(nonce, Aad::from(header), &mut rest[HEADER_BYTES..][..len])
                .map_err(|_| RecordError::BadRecordMac)?;
            at += HEADER_BYTES + len;
            // Inner plaintext: content, content type, zero padding; at most 2^14 + 1 bytes
            // with the padding (RFC 8446 §5.4).
            if inner.len() > PLAINTEXT_MAX + 1 {
                return Err(RecordError::RecordOverflow);
            }
            let Some(type_at) = inner.iter().rposition(|&b| b != 0) else {
                return Err(RecordError::UnexpectedMessage(0));
            };
            let (content, content_type) = (&inner[..type_at], inner[type_at]);
            match (content_type, content) {
                (APPLICATION_DATA, []) => {
                    if self.empty_in_a_row >= EMPTY_RECORDS_IN_A_ROW_MAX {
                        return Err(RecordError::TooManyEmptyRecords {
                            max: EMPTY_RECORDS_IN_A_ROW_MAX,
                        });
                    }
                    self.empty_in_a_row += 1;
                }
                (APPLICATION_DATA, data) => {
                    self.empty_in_a_row = 0;
                    plain.extend_from_slice(data);
                }
                // close_notify at either level (RFC 8446 §6.1).
                (ALERT, [WARNING | FATAL, CLOSE_NOTIFY]) => {
                    return Ok(Opened {
                        consumed: at,
                        peer_closed: true,
                    })
                }
                // A warning before close_notify (RFC 8446 §6.1): tolerated a few times.
                (ALERT, [WARNING, USER_CANCELED]) if self.warnings < WARNING_ALERTS_MAX => {
                    self.warnings += 1;
                }
                (ALERT, [WARNING, USER_CANCELED]) => return Err(RecordError::BadAlert),
                // Every other alert is an error alert, whatever its level (RFC 8446 §6.2),
                // and the peer has already given up: nothing goes back.
                (ALERT, [WARNING | FATAL, description]) => {
                    return Err(RecordError::PeerAlert(*description))
                }
                (ALERT, _) => return Err(RecordError::BadAlert),
                (HANDSHAKE, [msg_type, ..]) => {
                    return Err(RecordError::PostHandshakeMessage(*msg_type))
                }
                (other, _) => return Err(RecordError::UnexpectedMessage(other)),
            }
        }
        Ok(Opened {
            consumed: at,
            peer_closed: false,
        })
    }

    /// Appends `plaintext` to `wire` as application data records of at most
    /// [`PLAINTEXT_MAX`] bytes each. Refused after the layer ended; on an error nothing is
    /// appended.
    pub fn seal(&mut self, plaintext: &[u8], wire: &mut Vec<u8>) -> Result<(), RecordError> {
        if self.ended {
            return Err(RecordError::Ended);
        }
        if plaintext.is_empty() {
            return Ok(());
        }
        let records = plaintext.len().div_ceil(PLAINTEXT_MAX) as u64;
        // The last record of the direction is kept for close_notify.
        if self.tx.seq.saturating_add(records) > self.aead.records_max() - 1 {
            return Err(RecordError::KeysExhausted);
        }
        let key = self.tx.key(self.aead);
        for chunk in plaintext.chunks(PLAINTEXT_MAX) {
            self.seal_one(&key, APPLICATION_DATA, chunk, wire)?;
        }
        Ok(())
    }

    /// Appends an alert record with `description` (close_notify is a warning, anything
    /// else fatal) to `wire`. After a fatal alert, nothing more is sealed or opened.
    pub fn seal_alert(&mut self, description: u8, wire: &mut Vec<u8>) -> Result<(), RecordError> {
        let level = if description == CLOSE_NOTIFY {
            WARNING
        } else {
            FATAL
        };
        let key = self.tx.key(self.aead);
        let sealed = self.seal_one(&key, ALERT, &[level, description], wire);
        self.ended |= level == FATAL;
        sealed
    }

    /// Seals one record with `content` and `content_type` as given, whatever they are:
    /// what a peer could send (for the fuzz entry points and tests, never the server).
    #[doc(hidden)]
    pub fn seal_record(
        &mut self,
        content_type: u8,
        content: &[u8],
        wire: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        let key = self.tx.key(self.aead);
        self.seal_one(&key, content_type, content, wire)
    }

    fn seal_one(
        &mut self,
        key: &LessSafeKey,
        content_type: u8,
        content: &[u8],
        wire: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        let nonce = self.tx.next_nonce(self.aead.records_max())?;
        let len = content.len() + 1 + TAG_BYTES;
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        let at = wire.len();
        wire.reserve(HEADER_BYTES + len);
        wire.extend_from_slice(&header);
        wire.extend_from_slice(content);
        wire.push(content_type);
        let tag = key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut wire[at + HEADER_BYTES..])
            .expect("a record's plaintext is far below the AEAD's length limit");
        wire.extend_from_slice(tag.as_ref());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::{AeadKey, Iv};
    use rustls::ExtractedSecrets;

    fn secrets(seed: u8) -> ConnectionTrafficSecrets {
        ConnectionTrafficSecrets::Aes256Gcm {
            key: AeadKey::from([seed; 32]),
            iv: Iv::from([seed ^ 0x5a; NONCE_LEN]),
        }
    }

    /// A server layer and the client's mirror image (its tx is the server's rx).
    fn pair(seq: u64) -> (RecordLayer, RecordLayer) {
        let server = RecordLayer::new(&ExtractedSecrets {
            tx: (seq, secrets(1)),
            rx: (seq, secrets(2)),
        })
        .unwrap();
        let client = RecordLayer::new(&ExtractedSecrets {
            tx: (seq, secrets(2)),
            rx: (seq, secrets(1)),
        })
        .unwrap();
        (server, client)
    }

    /// A record with exactly `inner` as its inner plaintext (content, type, padding), sealed
    /// with `layer`'s next sending sequence number and no limit: what a peer could send.
    fn raw_record(layer: &mut RecordLayer, inner: &[u8]) -> Vec<u8> {
        let key = layer.tx.key(layer.aead);
        let nonce = layer.tx.next_nonce(u64::MAX).unwrap();
        let len = inner.len() + TAG_BYTES;
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        let mut body = inner.to_vec();
        let tag = key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut body)
            .unwrap();
        let mut record = header.to_vec();
        record.extend_from_slice(&body);
        record.extend_from_slice(tag.as_ref());
        record
    }

    #[test]
    fn nonces_are_what_rustls_computes() {
        let iv = [0xa5u8; NONCE_LEN];
        for seq in [0, 1, 255, 256, 1 << 24, u64::MAX] {
            let ours = nonce_for(&iv, seq);
            let theirs = rustls::crypto::cipher::Nonce::new(&Iv::from(iv), seq).0;
            assert_eq!(ours, theirs, "seq {seq}");
        }
    }

    #[test]
    fn sealed_records_open_in_order_and_a_partial_one_waits() {
        let (mut server, mut client) = pair(0);
        let mut wire = Vec::new();
        client.seal(b"one", &mut wire).unwrap();
        client.seal(b"two", &mut wire).unwrap();
        let mut plain = Vec::new();
        let cut = wire.len() - 1;
        let opened = server.open(&mut wire[..cut], &mut plain).unwrap();
        assert_eq!(plain, b"one");
        assert_eq!(opened.consumed, cut + 1 - (5 + 3 + 1 + 16));
        let mut rest = wire[opened.consumed..].to_vec();
        server.open(&mut rest, &mut plain).unwrap();
        assert_eq!(plain, b"onetwo");
    }

    #[test]
    fn padding_is_stripped_and_all_padding_is_refused() {
        let (mut server, mut client) = pair(7);
        let mut plain = Vec::new();
        // Content that itself ends in zeros: only what follows the content type is padding.
        let mut wire = raw_record(&mut client, b"hi\x17\0\0\0\x17");
        server.open(&mut wire, &mut plain).unwrap();
        assert_eq!(plain, b"hi\x17\0\0\0");
        plain.clear();
        let mut padded = raw_record(&mut client, b"hi\x17\0\0\0");
        server.open(&mut padded, &mut plain).unwrap();
        assert_eq!(plain, b"hi");
        let mut zeros = raw_record(&mut client, &[0; 4]);
        assert_eq!(
            server.open(&mut zeros, &mut plain),
            Err(RecordError::UnexpectedMessage(0)),
            "no content type at all"
        );
    }

    #[test]
    fn inner_plaintext_over_the_limit_is_refused_even_as_padding() {
        let (mut server, mut client) = pair(0);
        let mut inner = vec![b'x'; PLAINTEXT_MAX];
        inner.push(APPLICATION_DATA);
        let mut full = raw_record(&mut client, &inner);
        server.open(&mut full, &mut Vec::new()).unwrap();
        inner.extend_from_slice(&[0; 200]);
        let mut padded = raw_record(&mut client, &inner);
        assert_eq!(
            server.open(&mut padded, &mut Vec::new()),
            Err(RecordError::RecordOverflow)
        );
    }

    #[test]
    fn malformed_headers_are_refused_before_any_decryption() {
        let (mut server, _) = pair(0);
        let mut plain = Vec::new();
        let mut handshake = [22u8, 3, 3, 0, 20];
        assert_eq!(
            server.open(&mut handshake, &mut plain),
            Err(RecordError::UnexpectedMessage(22))
        );
        let (mut server, _) = pair(0);
        let long = (CIPHERTEXT_MAX + 1) as u16;
        let mut header = [23u8, 3, 3, (long >> 8) as u8, long as u8];
        assert_eq!(
            server.open(&mut header, &mut plain),
            Err(RecordError::RecordOverflow)
        );
        assert_eq!(server.rx.seq, 0, "no sequence number used");
    }

    #[test]
    fn after_a_failure_nothing_more_is_opened_or_sealed() {
        let (mut server, mut client) = pair(0);
        let mut first = Vec::new();
        client.seal(b"first", &mut first).unwrap();
        let mut second = Vec::new();
        client.seal(b"second", &mut second).unwrap();
        let last = first.len() - 1;
        first[last] ^= 1;
        let mut plain = Vec::new();
        assert_eq!(
            server.open(&mut first, &mut plain),
            Err(RecordError::BadRecordMac)
        );
        assert_eq!(
            server.open(&mut second, &mut plain),
            Err(RecordError::Ended),
            "the record after a missing one is never accepted"
        );
        assert!(plain.is_empty());
        let mut alert = Vec::new();
        server.seal_alert(20, &mut alert).unwrap();
        assert_eq!(
            server.seal(b"more", &mut Vec::new()),
            Err(RecordError::Ended)
        );
    }

    #[test]
    fn after_close_notify_nothing_more_is_opened() {
        let (mut server, mut client) = pair(0);
        let mut wire = Vec::new();
        client.seal(b"bye", &mut wire).unwrap();
        client.seal_alert(CLOSE_NOTIFY, &mut wire).unwrap();
        let mut plain = Vec::new();
        let opened = server.open(&mut wire, &mut plain).unwrap();
        assert!(opened.peer_closed);
        assert_eq!(plain, b"bye");
        let mut late = raw_record(&mut client, b"late\x17");
        assert_eq!(server.open(&mut late, &mut plain), Err(RecordError::Ended));
        assert_eq!(plain, b"bye");
        // Our own close_notify still goes out.
        assert!(server.seal_alert(CLOSE_NOTIFY, &mut Vec::new()).is_ok());
    }

    #[test]
    fn alerts_follow_rfc_8446() {
        let mut plain = Vec::new();
        // user_canceled at warning level is tolerated a few times, then refused.
        let (mut server, mut client) = pair(0);
        for _ in 0..WARNING_ALERTS_MAX {
            let mut r = raw_record(&mut client, &[WARNING, USER_CANCELED, ALERT]);
            server.open(&mut r, &mut plain).unwrap();
        }
        let mut r = raw_record(&mut client, &[WARNING, USER_CANCELED, ALERT]);
        assert_eq!(server.open(&mut r, &mut plain), Err(RecordError::BadAlert));
        // Fatal user_canceled, and any fatal alert, ends the session.
        let (mut server, mut client) = pair(0);
        let mut r = raw_record(&mut client, &[FATAL, USER_CANCELED, ALERT]);
        assert_eq!(
            server.open(&mut r, &mut plain),
            Err(RecordError::PeerAlert(USER_CANCELED))
        );
        // Any other warning is an error alert from the peer: nothing goes back.
        for description in [10, 40, 42, 46, 80, 255] {
            let (mut server, mut client) = pair(0);
            let mut r = raw_record(&mut client, &[WARNING, description, ALERT]);
            let err = server.open(&mut r, &mut plain).unwrap_err();
            assert_eq!(err, RecordError::PeerAlert(description));
            assert_eq!(err.alert(), None, "no alert answers an alert");
            assert!(server.is_ended());
        }
        // Wrong length or level: decode_error back.
        for body in [
            &[WARNING, 0, 0, ALERT][..],
            &[3, 40, ALERT],
            &[WARNING, ALERT],
        ] {
            let (mut server, mut client) = pair(0);
            let mut r = raw_record(&mut client, body);
            let err = server.open(&mut r, &mut plain).unwrap_err();
            assert_eq!(err, RecordError::BadAlert, "{body:?}");
            assert_eq!(err.alert(), Some(50));
        }
        // close_notify at fatal level still closes.
        let (mut server, mut client) = pair(0);
        let mut r = raw_record(&mut client, &[FATAL, CLOSE_NOTIFY, ALERT]);
        assert!(server.open(&mut r, &mut plain).unwrap().peer_closed);
        assert!(plain.is_empty());
    }

    #[test]
    fn sending_stops_at_the_limit_with_room_for_close_notify() {
        let limit = Aead::Aes256Gcm.records_max();
        let (mut server, mut client) = pair(limit - 2);
        let mut wire = Vec::new();
        client.seal(b"last", &mut wire).unwrap();
        assert_eq!(
            client.seal(b"one too many", &mut wire),
            Err(RecordError::KeysExhausted)
        );
        client.seal_alert(CLOSE_NOTIFY, &mut wire).unwrap();
        let mut plain = Vec::new();
        let opened = server.open(&mut wire, &mut plain).unwrap();
        assert!(opened.peer_closed);
        assert_eq!(plain, b"last");
    }

    #[test]
    fn receiving_is_not_held_to_the_sending_limit() {
        // A peer may send its record 2^24 under the old key before its KeyUpdate; only the
        // sequence space bounds what we receive.
        let limit = Aead::Aes256Gcm.records_max();
        let (mut server, mut client) = pair(limit + 10);
        let mut r = raw_record(&mut client, b"still fine\x17");
        let mut plain = Vec::new();
        server.open(&mut r, &mut plain).unwrap();
        assert_eq!(plain, b"still fine");
    }

    #[test]
    fn a_multi_record_seal_that_would_pass_the_limit_appends_nothing() {
        let limit = Aead::Aes256Gcm.records_max();
        let (_, mut client) = pair(limit - 2);
        let mut wire = Vec::new();
        assert_eq!(
            client.seal(&vec![0u8; PLAINTEXT_MAX + 1], &mut wire),
            Err(RecordError::KeysExhausted)
        );
        assert!(wire.is_empty());
    }

    #[test]
    fn empty_records_are_limited_in_a_row() {
        let (mut server, mut client) = pair(0);
        let mut plain = Vec::new();
        // Up to the limit, twice, with data in between resetting the count.
        for _ in 0..2 {
            let mut wire = Vec::new();
            for _ in 0..EMPTY_RECORDS_IN_A_ROW_MAX {
                wire.extend(raw_record(&mut client, &[APPLICATION_DATA, 0, 0]));
            }
            wire.extend(raw_record(&mut client, b"x\x17"));
            server.open(&mut wire, &mut plain).unwrap();
        }
        assert_eq!(plain, b"xx");
        // The count spans reads: the limit in one, one more in the next.
        let mut wire = Vec::new();
        for _ in 0..EMPTY_RECORDS_IN_A_ROW_MAX {
            wire.extend(raw_record(&mut client, &[APPLICATION_DATA]));
        }
        server.open(&mut wire, &mut plain).unwrap();
        let mut one_more = raw_record(&mut client, &[APPLICATION_DATA]);
        let err = server.open(&mut one_more, &mut plain).unwrap_err();
        assert_eq!(
            err,
            RecordError::TooManyEmptyRecords {
                max: EMPTY_RECORDS_IN_A_ROW_MAX
            }
        );
        assert_eq!(err.alert(), Some(10), "unexpected_message");
        assert!(server.is_ended());
        assert_eq!(plain, b"xx");
    }

    #[test]
    fn record_versions_other_than_0x0303_are_refused_before_decrypting() {
        for version in [
            [3u8, 1],
            [3, 4],
            [3, 0],
            [2, 0],
            [0, 0],
            [0x7f, 0x1c],
            [3, 0xff],
        ] {
            let (mut server, mut client) = pair(0);
            let mut record = raw_record(&mut client, b"hi\x17");
            record[1..3].copy_from_slice(&version);
            let err = server.open(&mut record, &mut Vec::new()).unwrap_err();
            assert_eq!(
                err,
                RecordError::BadRecordVersion {
                    version: u16::from_be_bytes(version)
                }
            );
            assert_eq!(err.alert(), Some(50), "decode_error");
            assert_eq!(server.rx.seq, 0, "refused before any decryption");
            // Even a partial header is refused at once, not held back.
            let (mut server, _) = pair(0);
            let mut header = [APPLICATION_DATA, version[0], version[1], 0x40, 0];
            assert!(server.open(&mut header, &mut Vec::new()).is_err());
        }
    }

    #[test]
    fn fatal_alerts_from_the_peer_end_the_session() {
        let (mut server, mut client) = pair(0);
        let mut wire = Vec::new();
        client.seal_alert(40, &mut wire).unwrap(); // handshake_failure
        assert_eq!(
            server.open(&mut wire, &mut Vec::new()),
            Err(RecordError::PeerAlert(40))
        );
    }
}

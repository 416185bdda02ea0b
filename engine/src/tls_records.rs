//! TLS 1.3 record protection for an established connection (RFC 8446 §5.2–5.5), from the
//! traffic keys rustls hands over once the handshake is done.
//!
//! ## Why
//! After its handshake a rustls session keeps ~3.3 KB per connection (session object, key
//! schedule, two AEAD key contexts; ARCHITECTURE.md "Decisions and numbers"). A switch holds
//! millions of idle connections, so once the handshake is over [`crate::tls_session`] keeps
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
//! ## What it does not do
//! Post-handshake handshake messages: a client KeyUpdate (sent by TLS stacks only near the
//! AES-GCM record limit) ends the connection with `unexpected_message`, and the client
//! reconnects. The server never sends tickets (`engine::tls`), so nothing else is expected.
//! Each direction stops at [`Aead::records_max`] records and the connection closes, well
//! inside the AEAD's confidentiality limit. No sockets, no clock, no shard state.

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

/// Alert descriptions we send (RFC 8446 §6).
const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;

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
    /// A handshake message after the handshake: a KeyUpdate (type 24), which this server
    /// does not support; the client reconnects.
    #[error("TLS handshake message type {0} after the handshake (KeyUpdate is not supported)")]
    PostHandshakeMessage(u8),
    /// The peer sent a fatal alert.
    #[error("peer sent TLS alert {0}")]
    PeerAlert(u8),
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
            RecordError::UnexpectedMessage(_) | RecordError::PostHandshakeMessage(_) => Some(10),
            RecordError::PeerAlert(_) => None,
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

    /// Records one direction may carry before the connection closes: 2^24 for AES-GCM
    /// (RFC 8446 §5.5 allows ~2^24.5 full-size records; rustls would send a KeyUpdate at the
    /// same point), 2^48 for ChaCha20-Poly1305 (far below its 2^64 sequence space).
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

    /// The nonce for the next record, and the sequence number moves on.
    fn next_nonce(&mut self, aead: Aead) -> Result<Nonce, RecordError> {
        if self.seq >= aead.records_max() {
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
        (aead == rx_aead).then_some(RecordLayer { aead, tx, rx })
    }

    /// The negotiated AEAD.
    pub fn aead(&self) -> Aead {
        self.aead
    }

    /// Decrypts every whole record at the front of `incoming` in place, appending
    /// application data to `plain`. Stops after close_notify.
    pub fn open(
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
            let len = u16::from_be_bytes([header[3], header[4]]) as usize;
            if len > CIPHERTEXT_MAX {
                return Err(RecordError::RecordOverflow);
            }
            if rest.len() < HEADER_BYTES + len {
                break;
            }
            let nonce = self.rx.next_nonce(self.aead)?;
            let key = key.get_or_insert_with(|| self.rx.key(self.aead));
            let inner = key
                .open_in_place(nonce, Aad::from(header), &mut rest[HEADER_BYTES..][..len])
                .map_err(|_| RecordError::BadRecordMac)?;
            at += HEADER_BYTES + len;
            // Inner plaintext: content, content type, zero padding.
            let Some(type_at) = inner.iter().rposition(|&b| b != 0) else {
                return Err(RecordError::UnexpectedMessage(0));
            };
            let (content, content_type) = (&inner[..type_at], inner[type_at]);
            if content.len() > PLAINTEXT_MAX {
                return Err(RecordError::RecordOverflow);
            }
            match (content_type, content) {
                (APPLICATION_DATA, data) => plain.extend_from_slice(data),
                (ALERT, [_, CLOSE_NOTIFY]) => {
                    return Ok(Opened {
                        consumed: at,
                        peer_closed: true,
                    })
                }
                // A warning before close_notify (RFC 8446 §6.1): nothing to do.
                (ALERT, [_, USER_CANCELED]) => {}
                (ALERT, [_, description]) => return Err(RecordError::PeerAlert(*description)),
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
    /// [`PLAINTEXT_MAX`] bytes each.
    pub fn seal(&mut self, plaintext: &[u8], wire: &mut Vec<u8>) -> Result<(), RecordError> {
        if plaintext.is_empty() {
            return Ok(());
        }
        let key = self.tx.key(self.aead);
        for chunk in plaintext.chunks(PLAINTEXT_MAX) {
            self.seal_one(&key, APPLICATION_DATA, chunk, wire)?;
        }
        Ok(())
    }

    /// Appends an alert record with `description` (close_notify is a warning, anything
    /// else fatal) to `wire`.
    pub fn seal_alert(&mut self, description: u8, wire: &mut Vec<u8>) -> Result<(), RecordError> {
        let level = if description == CLOSE_NOTIFY { 1 } else { 2 };
        let key = self.tx.key(self.aead);
        self.seal_one(&key, ALERT, &[level, description], wire)
    }

    fn seal_one(
        &mut self,
        key: &LessSafeKey,
        content_type: u8,
        content: &[u8],
        wire: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        let nonce = self.tx.next_nonce(self.aead)?;
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
        let key = client.tx.key(client.aead);
        // Content that itself ends in zeros: only what follows the content type is padding.
        let mut wire = Vec::new();
        client
            .seal_one(&key, APPLICATION_DATA, b"hi\x17\0\0\0", &mut wire)
            .unwrap();
        // "hi", content type 23, three zeros of padding, sealed by hand as a padding peer
        // would.
        let mut padded = Vec::new();
        let nonce = client.tx.next_nonce(client.aead).unwrap();
        let mut inner = b"hi\x17\0\0\0".to_vec();
        let len = inner.len() + TAG_BYTES;
        let header = [APPLICATION_DATA, 3, 3, 0, len as u8];
        let tag = key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut inner)
            .unwrap();
        padded.extend_from_slice(&header);
        padded.extend_from_slice(&inner);
        padded.extend_from_slice(tag.as_ref());
        let mut plain = Vec::new();
        server.open(&mut wire, &mut plain).unwrap();
        assert_eq!(
            plain, b"hi\x17\0\0\0",
            "inner type is the last non-zero byte"
        );
        plain.clear();
        server.open(&mut padded, &mut plain).unwrap();
        assert_eq!(plain, b"hi");
        // Nothing but zeros: no content type at all.
        let nonce = client.tx.next_nonce(client.aead).unwrap();
        let mut zeros = vec![0u8; 4];
        let header = [APPLICATION_DATA, 3, 3, 0, (4 + TAG_BYTES) as u8];
        let tag = key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut zeros)
            .unwrap();
        let mut record = header.to_vec();
        record.extend_from_slice(&zeros);
        record.extend_from_slice(tag.as_ref());
        assert_eq!(
            server.open(&mut record, &mut plain),
            Err(RecordError::UnexpectedMessage(0))
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
        let long = (CIPHERTEXT_MAX + 1) as u16;
        let mut header = [23u8, 3, 3, (long >> 8) as u8, long as u8];
        assert_eq!(
            server.open(&mut header, &mut plain),
            Err(RecordError::RecordOverflow)
        );
        assert_eq!(server.rx.seq, 0, "no sequence number used");
    }

    #[test]
    fn a_direction_stops_at_its_record_limit() {
        let limit = Aead::Aes256Gcm.records_max();
        let (mut server, mut client) = pair(limit - 1);
        let mut wire = Vec::new();
        client.seal(b"last", &mut wire).unwrap();
        assert_eq!(
            client.seal(b"one too many", &mut Vec::new()),
            Err(RecordError::KeysExhausted)
        );
        let mut plain = Vec::new();
        server.open(&mut wire, &mut plain).unwrap();
        assert_eq!(plain, b"last");
        assert_eq!(
            server.seal_alert(CLOSE_NOTIFY, &mut Vec::new()),
            Ok(()),
            "the other direction has its own count"
        );
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

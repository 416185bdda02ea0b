//! The hand-over blob: everything a new process needs, besides the descriptors themselves,
//! to take the old one's listeners and live connections over. Versioned and checked: a new
//! binary that cannot read it says why in one line ([`HandOverError`]'s `Display`).
//!
//! Layout (integers big-endian):
//! ```text
//! magic "SWBHANDO" | version u32 | shards u32 | listeners u32 | conns u32
//! listener*: shard u32 | fd u32
//! conn*:     shard u32 | fd u32 | flags u8 (bit 0: TLS, bit 1: logged in)
//!            [tls: state (RECORD_STATE_BYTES) | pending_in: len u32, bytes]
//!            unread: len u32, bytes | unsent: len u32, bytes | session: len u32, bytes
//! sha256 of everything above (32)
//! ```
//! `fd` is the index of the descriptor in the order they were passed (`upgrade::fds`),
//! each used once. `unread` is plaintext read but not yet a whole frame, `unsent` bytes
//! queued for the socket but not yet written (for TLS, records already sealed: the
//! sequence numbers in the state count them), `session` the service's own bytes for the
//! connection (who is logged in on it); the engine does not look inside.
//!
//! This module owns the layout and its checks; it must not touch sockets or shards. The
//! blob carries traffic keys: it is built and read in [`Zeroizing`] buffers.

use zeroize::Zeroizing;

use crate::conn::slot::{CONN_OUTPUT_BYTES_MAX, HANDOFF_UNREAD_BYTES_MAX};
use crate::tls::records::RECORD_STATE_BYTES;
use crate::tls::session::TLS_PENDING_BYTES_MAX;

/// The layout version this binary writes and reads. Bump it with any change to the layout
/// or to the meaning of a field; a new binary refuses another version (the old process
/// keeps serving).
pub const HANDOVER_VERSION: u32 = 1;

/// First bytes of a hand-over blob.
const MAGIC: [u8; 8] = *b"SWBHANDO";

/// Bytes of the fixed header: magic, version, shards, listeners, conns.
const HEADER_BYTES: usize = 8 + 4 * 4;

/// Bytes of the SHA-256 at the end.
const CHECKSUM_BYTES: usize = 32;

/// Most connections one hand-over carries (a box holds a few million at most).
pub const HANDOVER_CONNS_MAX: usize = 1 << 23;

/// Most listeners one hand-over carries (one per shard).
pub const HANDOVER_LISTENERS_MAX: usize = 1024;

/// Most bytes in one variable field of a connection (unread, unsent, session): above the
/// engine's own per-connection output and frame limits.
pub const HANDOVER_FIELD_BYTES_MAX: usize = 8 << 20;
const _: () = assert!(CONN_OUTPUT_BYTES_MAX <= HANDOVER_FIELD_BYTES_MAX);
const _: () = assert!(HANDOFF_UNREAD_BYTES_MAX <= HANDOVER_FIELD_BYTES_MAX);
const _: () = assert!(TLS_PENDING_BYTES_MAX <= HANDOVER_FIELD_BYTES_MAX);

/// A listening socket in the hand-over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerEntry {
    /// The shard it belongs to.
    pub shard: u32,
    /// Index of its descriptor among those passed.
    pub fd: u32,
}

/// One live connection in the hand-over.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnEntry {
    /// The shard it lives on (the new process keeps it there).
    pub shard: u32,
    /// Index of its descriptor among those passed.
    pub fd: u32,
    /// It has logged in (the engine's pre-login limits no longer apply to it).
    pub logged_in: bool,
    /// Its TLS session, `None` for plaintext.
    pub tls: Option<TlsEntry>,
    /// Plaintext read but not yet a whole frame.
    pub unread: Vec<u8>,
    /// Bytes queued for the socket, not yet written (sealed records, for TLS).
    pub unsent: Vec<u8>,
    /// The service's bytes for this connection (its session), opaque to the engine.
    pub session: Vec<u8>,
}

/// A TLS session in the hand-over (`TlsSession::export`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsEntry {
    /// The record layer's state: keys, IVs, sequence numbers. Zeroed on drop.
    pub state: Zeroizing<Vec<u8>>,
    /// A partial record held back.
    pub pending_in: Vec<u8>,
}

/// Everything the blob says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HandOver {
    /// The old process's shard count; the new one must run as many.
    pub shards: u32,
    /// Listening sockets.
    pub listeners: Vec<ListenerEntry>,
    /// Live connections.
    pub conns: Vec<ConnEntry>,
}

/// Why a new process refuses a hand-over. One line each: it is what the new process answers
/// the old one, and what the old one logs before it goes on serving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandOverError {
    /// The bytes do not start like a hand-over blob.
    #[error("not a hand-over blob (bad magic)")]
    NotAHandOver,
    /// Written by a binary with another layout version.
    #[error("hand-over version {theirs} from the old process, this binary reads version {ours}")]
    Version {
        /// What this binary reads.
        ours: u32,
        /// What the blob says.
        theirs: u32,
    },
    /// The checksum does not match: the bytes were damaged or cut.
    #[error("hand-over blob damaged (checksum mismatch)")]
    Checksum,
    /// The blob ends before its fields do.
    #[error("hand-over blob truncated at byte {at} of {len}")]
    Truncated {
        /// Where reading stopped.
        at: usize,
        /// The blob's length.
        len: usize,
    },
    /// The old process ran another number of shards.
    #[error("the old process runs {theirs} shards, this one would run {ours}: the shard count cannot change in an upgrade")]
    ShardCount {
        /// Shards this process would run.
        ours: u32,
        /// Shards the old process ran.
        theirs: u32,
    },
    /// A count or a field is over its limit.
    #[error("hand-over {what} is {len}, over the limit of {max}")]
    TooLarge {
        /// Which count or field.
        what: &'static str,
        /// Its value.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An entry names a shard that does not exist, a descriptor index out of range or used
    /// twice, unknown connection flags, or bytes follow the last entry.
    #[error("hand-over entry inconsistent: {0}")]
    Inconsistent(&'static str),
}

impl HandOver {
    /// The blob, checksum included.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.encoded_len_hint()));
        out.extend_from_slice(&MAGIC);
        for n in [
            HANDOVER_VERSION,
            self.shards,
            self.listeners.len() as u32,
            self.conns.len() as u32,
        ] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        for l in &self.listeners {
            out.extend_from_slice(&l.shard.to_be_bytes());
            out.extend_from_slice(&l.fd.to_be_bytes());
        }
        for c in &self.conns {
            encode_conn(c, &mut out);
        }
        let sum = ring::digest::digest(&ring::digest::SHA256, &out);
        out.extend_from_slice(sum.as_ref());
        out
    }

    fn encoded_len_hint(&self) -> usize {
        HEADER_BYTES + CHECKSUM_BYTES + 8 * self.listeners.len() + 40 * self.conns.len()
    }

    /// Reads a blob for a process that runs `shards` shards and received `fds` descriptors
    /// with it. Checks, in order: magic, version, checksum, shard count, then every entry.
    pub fn decode(blob: &[u8], shards: u32, fds: usize) -> Result<HandOver, HandOverError> {
        if blob.len() < MAGIC.len() || blob[..MAGIC.len()] != MAGIC {
            return Err(HandOverError::NotAHandOver);
        }
        let mut r = Reader { blob, at: 8 };
        let version = r.u32()?;
        if version != HANDOVER_VERSION {
            return Err(HandOverError::Version {
                ours: HANDOVER_VERSION,
                theirs: version,
            });
        }
        if blob.len() < HEADER_BYTES + CHECKSUM_BYTES {
            return Err(HandOverError::Truncated {
                at: blob.len(),
                len: blob.len(),
            });
        }
        let (body, sum) = blob.split_at(blob.len() - CHECKSUM_BYTES);
        if ring::digest::digest(&ring::digest::SHA256, body).as_ref() != sum {
            return Err(HandOverError::Checksum);
        }
        let mut r = Reader { blob: body, at: 12 };
        let theirs = r.u32()?;
        if theirs != shards {
            return Err(HandOverError::ShardCount {
                ours: shards,
                theirs,
            });
        }
        let listeners = r.count("listener count", HANDOVER_LISTENERS_MAX)?;
        let conns = r.count("connection count", HANDOVER_CONNS_MAX)?;
        let mut used = FdsUsed::new(fds);
        let mut out = HandOver {
            shards,
            listeners: Vec::with_capacity(listeners.min(fds)),
            conns: Vec::with_capacity(conns.min(fds)),
        };
        for _ in 0..listeners {
            let shard = r.shard(shards)?;
            let fd = used.take(r.u32()?)?;
            out.listeners.push(ListenerEntry { shard, fd });
        }
        for _ in 0..conns {
            out.conns.push(decode_conn(&mut r, shards, &mut used)?);
        }
        if r.at != body.len() {
            return Err(HandOverError::Inconsistent("bytes after the last entry"));
        }
        Ok(out)
    }
}

fn encode_conn(c: &ConnEntry, out: &mut Vec<u8>) {
    out.extend_from_slice(&c.shard.to_be_bytes());
    out.extend_from_slice(&c.fd.to_be_bytes());
    out.push(u8::from(c.tls.is_some()) | u8::from(c.logged_in) << 1);
    if let Some(t) = &c.tls {
        assert_eq!(
            t.state.len(),
            RECORD_STATE_BYTES,
            "TlsSession::export's size"
        );
        out.extend_from_slice(&t.state);
        put_bytes(&t.pending_in, out);
    }
    put_bytes(&c.unread, out);
    put_bytes(&c.unsent, out);
    put_bytes(&c.session, out);
}

fn put_bytes(b: &[u8], out: &mut Vec<u8>) {
    assert!(
        b.len() <= HANDOVER_FIELD_BYTES_MAX,
        "the engine's limits keep fields small"
    );
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn decode_conn(
    r: &mut Reader,
    shards: u32,
    used: &mut FdsUsed,
) -> Result<ConnEntry, HandOverError> {
    let shard = r.shard(shards)?;
    let fd = used.take(r.u32()?)?;
    let flags = r.take(1)?[0];
    if flags & !0b11 != 0 {
        return Err(HandOverError::Inconsistent("connection flags"));
    }
    let tls = if flags & 1 != 0 {
        Some(TlsEntry {
            state: Zeroizing::new(r.take(RECORD_STATE_BYTES)?.to_vec()),
            pending_in: r.bytes("held-back TLS record")?,
        })
    } else {
        None
    };
    Ok(ConnEntry {
        shard,
        fd,
        logged_in: flags & 2 != 0,
        tls,
        unread: r.bytes("unread plaintext")?,
        unsent: r.bytes("unsent plaintext")?,
        session: r.bytes("session")?,
    })
}

/// Reads the blob front to back; every read is bounds-checked.
struct Reader<'a> {
    blob: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], HandOverError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.blob.len());
        let Some(end) = end else {
            return Err(HandOverError::Truncated {
                at: self.at,
                len: self.blob.len(),
            });
        };
        let b = &self.blob[self.at..end];
        self.at = end;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, HandOverError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn count(&mut self, what: &'static str, max: usize) -> Result<usize, HandOverError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(HandOverError::TooLarge { what, len: n, max });
        }
        Ok(n)
    }

    fn shard(&mut self, shards: u32) -> Result<u32, HandOverError> {
        let s = self.u32()?;
        if s >= shards {
            return Err(HandOverError::Inconsistent("shard out of range"));
        }
        Ok(s)
    }

    fn bytes(&mut self, what: &'static str) -> Result<Vec<u8>, HandOverError> {
        let n = self.count(what, HANDOVER_FIELD_BYTES_MAX)?;
        Ok(self.take(n)?.to_vec())
    }
}

/// Which passed descriptors an entry already named.
struct FdsUsed(Vec<bool>);

impl FdsUsed {
    fn new(fds: usize) -> Self {
        FdsUsed(vec![false; fds])
    }

    fn take(&mut self, i: u32) -> Result<u32, HandOverError> {
        match self.0.get_mut(i as usize) {
            Some(used @ false) => {
                *used = true;
                Ok(i)
            }
            Some(true) => Err(HandOverError::Inconsistent("descriptor named twice")),
            None => Err(HandOverError::Inconsistent("descriptor index out of range")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HandOver {
        HandOver {
            shards: 2,
            listeners: vec![
                ListenerEntry { shard: 0, fd: 0 },
                ListenerEntry { shard: 1, fd: 1 },
            ],
            conns: vec![
                ConnEntry {
                    shard: 1,
                    fd: 2,
                    logged_in: true,
                    tls: None,
                    unread: b"\0\0\0\x09half".to_vec(),
                    unsent: b"reply".to_vec(),
                    session: b"+15550001".to_vec(),
                },
                ConnEntry {
                    shard: 0,
                    fd: 3,
                    tls: Some(TlsEntry {
                        state: Zeroizing::new(vec![7; RECORD_STATE_BYTES]),
                        pending_in: vec![23, 3, 3],
                    }),
                    ..ConnEntry::default()
                },
            ],
        }
    }

    #[test]
    fn a_hand_over_reads_back_as_written() {
        let h = sample();
        assert_eq!(HandOver::decode(&h.encode(), 2, 4).unwrap(), h);
        let empty = HandOver {
            shards: 1,
            ..HandOver::default()
        };
        assert_eq!(HandOver::decode(&empty.encode(), 1, 0).unwrap(), empty);
    }

    #[test]
    fn another_version_is_refused_naming_both() {
        let mut blob = sample().encode();
        blob[8..12].copy_from_slice(&(HANDOVER_VERSION + 1).to_be_bytes());
        let err = HandOver::decode(&blob, 2, 4).unwrap_err();
        assert_eq!(
            err,
            HandOverError::Version {
                ours: HANDOVER_VERSION,
                theirs: HANDOVER_VERSION + 1
            }
        );
        assert!(!err.to_string().contains('\n'), "one line: {err}");
    }

    #[test]
    fn another_shard_count_is_refused() {
        let err = HandOver::decode(&sample().encode(), 3, 4).unwrap_err();
        assert_eq!(err, HandOverError::ShardCount { ours: 3, theirs: 2 });
        assert!(err.to_string().contains("cannot change"), "{err}");
    }

    #[test]
    fn any_flipped_or_missing_byte_is_refused() {
        let blob = sample().encode();
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x40;
            assert!(HandOver::decode(&bad, 2, 4).is_err(), "byte {i} flipped");
        }
        for len in 0..blob.len() {
            assert!(
                HandOver::decode(&blob[..len], 2, 4).is_err(),
                "cut at {len}"
            );
        }
        assert_eq!(
            HandOver::decode(b"GET / HTTP/1.1\r\n\r\n", 2, 4),
            Err(HandOverError::NotAHandOver)
        );
    }

    /// Checksummed but wrong: what a bug in the old binary could write.
    #[test]
    fn entries_that_do_not_fit_the_descriptors_are_refused() {
        let mut h = sample();
        h.conns[1].fd = 2;
        let err = HandOver::decode(&h.encode(), 2, 4).unwrap_err();
        assert_eq!(err, HandOverError::Inconsistent("descriptor named twice"));
        assert_eq!(
            HandOver::decode(&sample().encode(), 2, 3).unwrap_err(),
            HandOverError::Inconsistent("descriptor index out of range")
        );
        let mut h = sample();
        h.conns[0].shard = 2;
        h.shards = 2;
        assert_eq!(
            HandOver::decode(&h.encode(), 2, 4).unwrap_err(),
            HandOverError::Inconsistent("shard out of range")
        );
    }
}

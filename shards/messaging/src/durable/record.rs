//! What the shard's durable log holds, and its on-disk framing.
//!
//! A record is a protobuf message (prost, no .proto file needed) framed as
//! `[u32 length BE][u32 crc32 BE][payload]`. Replay stops at the first frame that is short,
//! empty, fails its checksum or holds no record kind (a zero-filled region reads as length 0
//! and is refused), and then tells two cases apart ([`Tail`]):
//! - **torn**: nothing valid follows the bad frame, or only frames inside its own declared
//!   length that stop short of the end of the data (a message body is its sender's bytes,
//!   and may hold framed records). A crash mid-write leaves exactly this, and nothing in it
//!   was acknowledged (acks wait for `fdatasync`): truncate it.
//! - **corrupt**: some valid record follows. A torn write can only be the last thing in the
//!   file, so this is damage to data that was synced and acknowledged: refuse to start and
//!   name the offset; `--salvage` keeps every record that still passes its checksum
//!   ([`salvage`]), resuming after a bad frame where its length says it ends when a record
//!   starts there, never at a frame inside its body.
//!
//! Records are facts, applied in order: an account's current key hash, a queued item, the
//! removal of an item, a group's full state, a dedupe entry, the id high-water mark. Pure:
//! no I/O.

use prost::Message;

/// Largest record accepted at replay (a queued item holds at most one frame).
pub const RECORD_BYTES_MAX: usize = 2 * proto::limits::FRAME_BYTES_MAX;
/// Bytes of framing before each record.
pub const RECORD_HEADER_BYTES: usize = 8;

/// One fact in the log.
#[derive(Clone, PartialEq, Message)]
pub struct Record {
    /// What the fact is.
    #[prost(oneof = "record::Kind", tags = "1, 2, 3, 4, 5, 6")]
    pub kind: Option<record::Kind>,
}

/// The kinds of record.
#[allow(clippy::module_inception)]
pub mod record {
    /// The kinds of record.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// An account and its current device-key hash.
        #[prost(message, tag = "1")]
        Account(super::AccountRec),
        /// An item queued for a user.
        #[prost(message, tag = "2")]
        Item(super::ItemRec),
        /// An item removed (acknowledged).
        #[prost(message, tag = "3")]
        Removed(super::RemovedRec),
        /// A group's whole state (the latest one wins); no members means deleted.
        #[prost(message, tag = "4")]
        Group(super::GroupRec),
        /// A dedupe entry that outlived its message (written by compaction).
        #[prost(message, tag = "5")]
        Dedupe(super::DedupeRec),
        /// The shard's next id sequence (written into every snapshot).
        #[prost(message, tag = "6")]
        IdMark(super::IdMarkRec),
    }
}

/// An account.
#[derive(Clone, PartialEq, Message)]
pub struct AccountRec {
    /// E.164 phone number.
    #[prost(string, tag = "1")]
    pub phone: String,
    /// Server-issued user id.
    #[prost(uint64, tag = "2")]
    pub user_id: u64,
    /// SHA-256 of the current device key.
    #[prost(bytes = "vec", tag = "3")]
    pub key_hash: Vec<u8>,
}

pub use super::queue_rec::{ItemRec, RemovedRec};

/// A group's state.
#[derive(Clone, PartialEq, Message)]
pub struct GroupRec {
    /// Group id (its home is the shard in the id).
    #[prost(uint64, tag = "1")]
    pub group_id: u64,
    /// Display name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// The creator, who administers it.
    #[prost(string, tag = "3")]
    pub admin: String,
    /// Members, admin included.
    #[prost(string, repeated, tag = "4")]
    pub members: Vec<String>,
}

/// A remembered (sender, client_msg_id) → server id, so a late retry is not stored twice:
/// compaction writes one per copy in a sender's dedupe window, each with the window's floor.
#[derive(Clone, PartialEq, Message)]
pub struct DedupeRec {
    /// The sender.
    #[prost(string, tag = "1")]
    pub sender: String,
    /// The sender's id.
    #[prost(uint64, tag = "2")]
    pub client_msg_id: u64,
    /// The group (0 for 1:1).
    #[prost(uint64, tag = "3")]
    pub group_id: u64,
    /// The id the message got.
    #[prost(uint64, tag = "4")]
    pub server_msg_id: u64,
    /// The recipient (dedupe is per recipient copy for groups).
    #[prost(string, tag = "5")]
    pub recipient: String,
    /// The floor of the sender's window for this group (`dedupe.rs`): client ids below it
    /// were seen (0 in logs written before it).
    #[prost(uint64, tag = "6")]
    pub floor: u64,
    /// The sender's device (`dedupe::device_of`).
    #[prost(uint32, tag = "7")]
    pub sender_device: u32,
}

/// The id high-water mark: compaction drops the records of removed items, and with them the
/// largest ids issued; this keeps new ids above every id ever issued even if the clock that
/// seeds them after a restart stepped back.
#[derive(Clone, PartialEq, Message)]
pub struct IdMarkRec {
    /// The next sequence the shard would have issued (ids are `box << 58 | shard << 48 | sequence`: `state/home.rs`).
    #[prost(uint64, tag = "1")]
    pub next_seq: u64,
}

/// Appends `rec` to `out`, framed.
pub fn encode(rec: &Record, out: &mut Vec<u8>) {
    let len = rec.encoded_len();
    out.reserve(RECORD_HEADER_BYTES + len);
    let start = out.len();
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    // Encoding into a Vec cannot fail (it grows).
    rec.encode(out).expect("Vec grows");
    let crc = crc32fast::hash(&out[start + RECORD_HEADER_BYTES..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
}

/// [`encode`], returning the bytes it added.
pub fn encode_counted(rec: &Record, out: &mut Vec<u8>) -> usize {
    let before = out.len();
    encode(rec, out);
    out.len() - before
}

/// What follows the last good record of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// Every byte is a valid record.
    Clean,
    /// Bytes from `at` on hold no valid record: a torn write, safe to truncate.
    Torn {
        /// Offset of the first bad byte.
        at: u64,
    },
    /// The frame at `at` is bad but a valid record starts at `next_valid_at`: damage to
    /// synced data.
    Corrupt {
        /// Offset of the first bad frame.
        at: u64,
        /// Offset of the first valid record after it.
        next_valid_at: u64,
    },
}

/// A log's bytes as replay reads them: a slice in memory, or a file read through a bounded
/// window (`replay.rs`). Offsets are the log's.
pub trait LogBytes {
    /// Why reading failed (nothing, for a slice).
    type Error;
    /// The log's length.
    fn len(&self) -> u64;
    /// Whether the log is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The `n` bytes at `at`, or None when they run past the end. `n` is at most
    /// `RECORD_HEADER_BYTES + RECORD_BYTES_MAX`, or what [`LogBytes::data_end`] asks for.
    fn get(&mut self, at: u64, n: usize) -> Result<Option<&[u8]>, Self::Error>;
    /// The offset just past the last byte that is not zero (0 if none).
    fn data_end(&mut self) -> Result<u64, Self::Error>;
}

impl LogBytes for &[u8] {
    type Error = std::convert::Infallible;

    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn get(&mut self, at: u64, n: usize) -> Result<Option<&[u8]>, Self::Error> {
        let Ok(at) = usize::try_from(at) else {
            return Ok(None);
        };
        Ok(at.checked_add(n).and_then(|end| self[..].get(at..end)))
    }

    fn data_end(&mut self) -> Result<u64, Self::Error> {
        Ok(self
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |p| p as u64 + 1))
    }
}

/// Result of replaying a log held in memory.
#[derive(Debug)]
pub struct Replay {
    /// Records in order, up to the first bad frame.
    pub records: Vec<Record>,
    /// Bytes of well-formed records before the first bad frame.
    pub valid_len: u64,
    /// What comes after them.
    pub tail: Tail,
}

/// What a streamed replay ([`replay_with`]) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Records handed over, in order, up to the first bad frame.
    pub records: u64,
    /// Bytes of well-formed records before the first bad frame.
    pub valid_len: u64,
    /// What comes after them.
    pub tail: Tail,
}

/// The framed length and checksum in the header at `at`.
fn header_at<B: LogBytes>(src: &mut B, at: u64) -> Result<Option<(usize, u32)>, B::Error> {
    let Some(header) = src.get(at, RECORD_HEADER_BYTES)? else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    Ok(Some((len, crc)))
}

/// The record framed at `at`, and where the next frame starts, if the frame is valid.
fn frame_at<B: LogBytes>(src: &mut B, at: u64) -> Result<Option<(Record, u64)>, B::Error> {
    let Some((len, crc)) = header_at(src, at)? else {
        return Ok(None);
    };
    if len == 0 || len > RECORD_BYTES_MAX {
        return Ok(None);
    }
    let body_at = at + RECORD_HEADER_BYTES as u64;
    let Some(body) = src.get(body_at, len)? else {
        return Ok(None);
    };
    if crc32fast::hash(body) != crc {
        return Ok(None);
    }
    let record = Record::decode(body).ok().filter(|r| r.kind.is_some());
    Ok(record.map(|r| (r, body_at + len as u64)))
}

/// The first offset from `from` on where a valid record starts.
fn next_valid<B: LogBytes>(src: &mut B, from: u64) -> Result<Option<u64>, B::Error> {
    let last = src.len().saturating_sub(RECORD_HEADER_BYTES as u64);
    for at in from..last {
        if frame_at(src, at)?.is_some() {
            return Ok(Some(at));
        }
    }
    Ok(None)
}

/// Where the frame at `at` says it ends, if its length is plausible.
fn declared_end<B: LogBytes>(src: &mut B, at: u64) -> Result<Option<u64>, B::Error> {
    Ok(header_at(src, at)?
        .filter(|&(len, _)| len > 0 && len <= RECORD_BYTES_MAX)
        .map(|(len, _)| at + (RECORD_HEADER_BYTES + len) as u64))
}

/// Whether the bad frame at `at` is a torn last record and the valid frame at `inner` lies
/// in its body: every byte left that is not a preallocated zero lies within the bad frame's
/// declared length, and the frames from `inner` on stop short of that data's end (records
/// written after a damaged one would run to it). A message body holds whatever its sender
/// chose, framed records included, so a frame found inside one proves nothing.
fn torn_around<B: LogBytes>(src: &mut B, at: u64, inner: u64) -> Result<bool, B::Error> {
    let data_end = src.data_end()?;
    match declared_end(src, at)? {
        Some(end) if end >= data_end => {}
        _ => return Ok(false),
    }
    let mut chain_end = inner;
    while let Some((_, next)) = frame_at(src, chain_end)? {
        chain_end = next;
    }
    Ok(chain_end < data_end)
}

/// What follows a bad frame at `at`.
fn classify<B: LogBytes>(src: &mut B, at: u64) -> Result<Tail, B::Error> {
    Ok(match next_valid(src, at + 1)? {
        Some(next) if !torn_around(src, at, next)? => Tail::Corrupt {
            at,
            next_valid_at: next,
        },
        _ => Tail::Torn { at },
    })
}

/// Hands every well-formed record of `src` to `apply`, in order, up to the first bad frame,
/// and classifies what follows it. Holds one record at a time: what it buffers is `src`'s.
pub fn replay_with<B: LogBytes>(
    src: &mut B,
    mut apply: impl FnMut(Record),
) -> Result<Scan, B::Error> {
    let mut at = 0u64;
    let mut records = 0u64;
    while let Some((record, next)) = frame_at(src, at)? {
        apply(record);
        records += 1;
        at = next;
    }
    let tail = if at == src.len() {
        Tail::Clean
    } else {
        classify(src, at)?
    };
    Ok(Scan {
        records,
        valid_len: at,
        tail,
    })
}

/// The body's first byte when it holds a queued item: the key of `Record`'s only field
/// (tag 2, length-delimited), which the encoder writes first.
const ITEM_KEY: u8 = (2 << 3) | 2;

/// Hands the queued items among the records before `valid_len` (as a first
/// [`replay_with`] found them) to `apply`, in order, without decoding any other record.
pub fn items_with<B: LogBytes>(
    src: &mut B,
    valid_len: u64,
    mut apply: impl FnMut(ItemRec),
) -> Result<(), B::Error> {
    let mut at = 0u64;
    while at < valid_len {
        let Some((len, _)) = header_at(src, at)? else {
            return Ok(());
        };
        let body_at = at + RECORD_HEADER_BYTES as u64;
        if src.get(body_at, 1)?.is_some_and(|b| b[0] == ITEM_KEY) {
            if let Some((r, _)) = frame_at(src, at)? {
                if let Some(record::Kind::Item(i)) = r.kind {
                    apply(i);
                }
            }
        }
        at = body_at + len as u64;
    }
    Ok(())
}

/// Parses every well-formed record of `bytes` up to the first bad frame, and classifies
/// what follows it.
pub fn replay(bytes: &[u8]) -> Replay {
    let mut records = Vec::new();
    let mut src = bytes;
    let Ok(scan) = replay_with(&mut src, |r| records.push(r));
    Replay {
        records,
        valid_len: scan.valid_len,
        tail: scan.tail,
    }
}

/// What [`salvage`] kept and skipped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Salvage {
    /// The valid records, re-framed, in their original order.
    pub kept: Vec<u8>,
    /// How many records were kept.
    pub records: usize,
    /// Damaged regions skipped: (offset, bytes).
    pub skipped: Vec<(u64, u64)>,
}

/// Every record of `src` that still passes its checksum, skipping damaged regions: each
/// record's framed bytes go to `keep` in their original order. Returns how many were kept
/// and the regions skipped.
pub fn salvage_with<B: LogBytes>(
    src: &mut B,
    mut keep: impl FnMut(&[u8]) -> Result<(), B::Error>,
) -> Result<(usize, Skipped), B::Error> {
    let mut records = 0;
    let mut skipped = Vec::new();
    let len = src.len();
    let mut at = 0u64;
    while at < len {
        match frame_at(src, at)? {
            Some((_, next)) => {
                let n = (next - at) as usize;
                // The frame was just read whole, so it lies within the log.
                let framed = src.get(at, n)?.expect("a valid frame lies within the log");
                keep(framed)?;
                records += 1;
                at = next;
            }
            None => {
                // A bad body with a right length ends where the next record starts: resume
                // there, not at a frame inside the body (a sender's bytes).
                let resume = match declared_end(src, at)? {
                    Some(end) if frame_at(src, end)?.is_some() => end,
                    _ => match next_valid(src, at + 1)? {
                        Some(next) if !torn_around(src, at, next)? => next,
                        _ => len,
                    },
                };
                skipped.push((at, resume - at));
                at = resume;
            }
        }
    }
    Ok((records, skipped))
}

/// Damaged regions a salvage skipped: (offset, bytes).
pub type Skipped = Vec<(u64, u64)>;

/// [`salvage_with`] over bytes in memory.
pub fn salvage(bytes: &[u8]) -> Salvage {
    let mut kept = Vec::new();
    let mut src = bytes;
    let Ok((records, skipped)) = salvage_with(&mut src, |f| {
        kept.extend_from_slice(f);
        Ok(())
    });
    Salvage {
        kept,
        records,
        skipped,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An item record for `+15550000001` from `+15550000002` (the journal's tests use it too).
    pub(crate) fn item(id: u64) -> Record {
        Record {
            kind: Some(record::Kind::Item(ItemRec {
                user: crate::state::home::Phone::parse("+15550000001"),
                id,
                frame: vec![1, 2, 3],
                sender: crate::state::home::Phone::parse("+15550000002"),
                client_msg_id: id,
                group_id: 0,
                sender_device: 0,
            })),
        }
    }

    #[test]
    fn an_item_body_starts_with_the_key_the_item_pass_looks_for() {
        let mut log = Vec::new();
        encode(&item(7), &mut log);
        assert_eq!(log[RECORD_HEADER_BYTES], ITEM_KEY);
        let mut got = Vec::new();
        let mut src = &log[..];
        items_with(&mut src, log.len() as u64, |i| got.push(i.id)).unwrap();
        assert_eq!(got, vec![7]);
    }

    #[test]
    fn records_round_trip_in_order() {
        let mut log = Vec::new();
        for i in 1..=100 {
            encode(&item(i), &mut log);
        }
        let r = replay(&log);
        assert_eq!(r.records.len(), 100);
        assert_eq!(r.valid_len, log.len() as u64);
        assert_eq!(r.records[41], item(42));
    }

    #[test]
    fn torn_or_corrupt_tail_stops_replay_at_the_last_good_record() {
        let mut log = Vec::new();
        encode(&item(1), &mut log);
        let good = log.len();
        encode(&item(2), &mut log);
        // Torn: the second record is cut short.
        let r = replay(&log[..log.len() - 3]);
        assert_eq!((r.records.len(), r.valid_len), (1, good as u64));
        // Corrupt: a flipped byte in the second record's body.
        let mut bad = log.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let r = replay(&bad);
        assert_eq!((r.records.len(), r.valid_len), (1, good as u64));
        // Garbage length.
        let mut huge = log[..good].to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert_eq!(replay(&huge).records.len(), 1);
    }

    #[test]
    fn a_zero_filled_tail_is_torn_not_records() {
        let mut log = Vec::new();
        encode(&item(1), &mut log);
        let good = log.len() as u64;
        log.extend_from_slice(&[0u8; 4096]);
        let r = replay(&log);
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.valid_len, good);
        assert_eq!(r.tail, Tail::Torn { at: good });
        // A frame with a valid checksum but no record kind is refused too.
        let mut empty_kind = log[..good as usize].to_vec();
        encode(&Record { kind: None }, &mut empty_kind);
        assert_eq!(replay(&empty_kind).tail, Tail::Torn { at: good });
    }

    #[test]
    fn a_flipped_bit_with_records_after_it_is_corruption_not_a_tail() {
        let mut log = Vec::new();
        let mut starts = Vec::new();
        for i in 1..=10 {
            starts.push(log.len());
            encode(&item(i), &mut log);
        }
        let mut bad = log.clone();
        bad[starts[4] + RECORD_HEADER_BYTES + 3] ^= 0x10;
        let r = replay(&bad);
        assert_eq!(r.records.len(), 4, "records before the damage");
        assert_eq!(
            r.tail,
            Tail::Corrupt {
                at: starts[4] as u64,
                next_valid_at: starts[5] as u64
            }
        );
        let s = salvage(&bad);
        assert_eq!(s.records, 9, "every record but the damaged one");
        assert_eq!(
            s.skipped,
            vec![(starts[4] as u64, (starts[5] - starts[4]) as u64)]
        );
        let again = replay(&s.kept);
        assert_eq!(again.tail, Tail::Clean);
        assert_eq!(again.records[4], item(6));
        // An undamaged log salvages to itself.
        assert_eq!(salvage(&log).kept, log);
    }

    /// An item holding a message whose body the sender chose (`body` appears verbatim in the
    /// item's encoded frame, and so in the log).
    fn item_with_body(id: u64, body: Vec<u8>) -> Record {
        use proto::v1::{server_frame, Message as Msg, ServerFrame};
        let frame = ServerFrame {
            kind: Some(server_frame::Kind::Message(Msg {
                from: "+15550000002".into(),
                server_msg_id: id,
                body,
                ..Default::default()
            })),
        }
        .encode_to_vec();
        Record {
            kind: Some(record::Kind::Item(ItemRec {
                user: crate::state::home::Phone::parse("+15550000001"),
                id,
                frame,
                sender: crate::state::home::Phone::parse("+15550000002"),
                client_msg_id: id,
                group_id: 0,
                sender_device: 0,
            })),
        }
    }

    /// A framed account record giving a victim's number the sender's device key: what a
    /// sender can put inside a message body.
    fn forged_frame() -> Vec<u8> {
        let mut out = Vec::new();
        encode(
            &Record {
                kind: Some(record::Kind::Account(AccountRec {
                    phone: "+15550000009".into(),
                    user_id: 9,
                    key_hash: vec![0xee; 32],
                })),
            },
            &mut out,
        );
        out
    }

    fn offset_of(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len())
            .position(|w| w == needle)
            .expect("the body is in the log verbatim")
    }

    #[test]
    fn a_torn_record_whose_body_holds_a_framed_record_is_still_a_torn_tail() {
        let forged = forged_frame();
        let mut log = Vec::new();
        encode(&item(1), &mut log);
        let good = log.len();
        encode(&item_with_body(2, forged.clone()), &mut log);
        // The crash (or power loss) kept the last record up to just past the bytes of the
        // body, and the preallocated zeros after it: a torn tail, nothing of it acked.
        let cut = offset_of(&log, &forged) + forged.len() + 1;
        let mut torn = log[..cut].to_vec();
        torn.resize(cut + 4096, 0);
        assert_eq!(
            replay(&torn).tail,
            Tail::Torn { at: good as u64 },
            "a torn last record must not refuse the start (nor be salvaged into records)"
        );
    }

    #[test]
    fn salvage_never_keeps_a_record_forged_inside_a_damaged_message() {
        let mut log = Vec::new();
        encode(&item(1), &mut log);
        let at = log.len();
        encode(&item_with_body(2, forged_frame()), &mut log);
        encode(&item(3), &mut log);
        let mut bad = log.clone();
        bad[at + RECORD_HEADER_BYTES + 3] ^= 0x10; // damage in item 2's body
        assert!(matches!(replay(&bad).tail, Tail::Corrupt { .. }));
        let kept = replay(&salvage(&bad).kept).records;
        let forged: Vec<_> = kept
            .iter()
            .filter(|r| matches!(r.kind, Some(record::Kind::Account(_))))
            .collect();
        assert!(
            forged.is_empty(),
            "salvage kept a record no shard wrote (from a message body): {forged:?}"
        );
    }

    #[test]
    fn a_damaged_length_that_swallows_the_records_after_it_is_still_corruption() {
        let mut log = Vec::new();
        let mut starts = Vec::new();
        for i in 1..=10 {
            starts.push(log.len());
            encode(&item(i), &mut log);
        }
        // Record 8's length now reaches past the end of the data, preallocated zeros after.
        let reach = (log.len() - starts[7] + 100) as u32;
        log[starts[7]..starts[7] + 4].copy_from_slice(&reach.to_be_bytes());
        log.resize(log.len() + 4096, 0);
        assert_eq!(
            replay(&log).tail,
            Tail::Corrupt {
                at: starts[7] as u64,
                next_valid_at: starts[8] as u64
            },
            "records 9 and 10 run to the end of the data: acknowledged, not a torn body"
        );
        assert_eq!(salvage(&log).records, 9);
    }
}

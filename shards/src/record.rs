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

/// An item in a user's queue: a message, or a receipt for an offline sender.
#[derive(Clone, PartialEq, Message)]
pub struct ItemRec {
    /// Whose queue.
    #[prost(string, tag = "1")]
    pub user: String,
    /// The item's server id (message id, or receipt id).
    #[prost(uint64, tag = "2")]
    pub id: u64,
    /// The frame to deliver, encoded (`ServerFrame`).
    #[prost(bytes = "vec", tag = "3")]
    pub frame: Vec<u8>,
    /// For messages: who sent it (receipts go back there).
    #[prost(string, tag = "4")]
    pub sender: String,
    /// For messages: the sender's id for it (dedupe, receipts).
    #[prost(uint64, tag = "5")]
    pub client_msg_id: u64,
    /// For group messages: the group.
    #[prost(uint64, tag = "6")]
    pub group_id: u64,
    /// For messages: the sender's device (`dedupe::device_of`; 0 in logs written before it).
    #[prost(uint32, tag = "7")]
    pub sender_device: u32,
}

/// An item removed from a user's queue.
#[derive(Clone, PartialEq, Message)]
pub struct RemovedRec {
    /// Whose queue.
    #[prost(string, tag = "1")]
    pub user: String,
    /// The item's id.
    #[prost(uint64, tag = "2")]
    pub id: u64,
}

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
    /// The next sequence the shard would have issued (ids are `shard << 48 | sequence`).
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

/// Result of replaying a log.
#[derive(Debug)]
pub struct Replay {
    /// Records in order, up to the first bad frame.
    pub records: Vec<Record>,
    /// Bytes of well-formed records before the first bad frame.
    pub valid_len: u64,
    /// What comes after them.
    pub tail: Tail,
}

/// The record framed at `at`, and where the next frame starts, if the frame is valid.
fn frame_at(bytes: &[u8], at: usize) -> Option<(Record, usize)> {
    let header = bytes.get(at..at.checked_add(RECORD_HEADER_BYTES)?)?;
    let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
    if len == 0 || len > RECORD_BYTES_MAX {
        return None;
    }
    let body_at = at + RECORD_HEADER_BYTES;
    let body = bytes.get(body_at..body_at + len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let record = Record::decode(body).ok().filter(|r| r.kind.is_some())?;
    Some((record, body_at + len))
}

/// The first offset after `from` where a valid record starts.
fn next_valid(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(RECORD_HEADER_BYTES))
        .find(|&at| frame_at(bytes, at).is_some())
}

/// Where the frame at `at` says it ends, if its length is plausible.
fn declared_end(bytes: &[u8], at: usize) -> Option<usize> {
    let header = bytes.get(at..at.checked_add(RECORD_HEADER_BYTES)?)?;
    let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    (len > 0 && len <= RECORD_BYTES_MAX).then_some(at + RECORD_HEADER_BYTES + len)
}

/// Whether the bad frame at `at` is a torn last record and the valid frame at `inner` lies
/// in its body: every byte left that is not a preallocated zero lies within the bad frame's
/// declared length, and the frames from `inner` on stop short of that data's end (records
/// written after a damaged one would run to it). A message body holds whatever its sender
/// chose, framed records included, so a frame found inside one proves nothing.
fn torn_around(bytes: &[u8], at: usize, inner: usize) -> bool {
    let data_end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    match declared_end(bytes, at) {
        Some(end) if end >= data_end => {}
        _ => return false,
    }
    let mut chain_end = inner;
    while let Some((_, next)) = frame_at(bytes, chain_end) {
        chain_end = next;
    }
    chain_end < data_end
}

/// Parses every well-formed record of `bytes` up to the first bad frame, and classifies
/// what follows it.
pub fn replay(bytes: &[u8]) -> Replay {
    let mut at = 0usize;
    let mut records = Vec::new();
    while let Some((record, next)) = frame_at(bytes, at) {
        records.push(record);
        at = next;
    }
    let tail = if at == bytes.len() {
        Tail::Clean
    } else {
        match next_valid(bytes, at + 1) {
            Some(next) if !torn_around(bytes, at, next) => Tail::Corrupt {
                at: at as u64,
                next_valid_at: next as u64,
            },
            _ => Tail::Torn { at: at as u64 },
        }
    };
    Replay {
        records,
        valid_len: at as u64,
        tail,
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

/// Every record of `bytes` that still passes its checksum, skipping damaged regions.
pub fn salvage(bytes: &[u8]) -> Salvage {
    let mut out = Salvage::default();
    let mut at = 0usize;
    while at < bytes.len() {
        match frame_at(bytes, at) {
            Some((_, next)) => {
                out.kept.extend_from_slice(&bytes[at..next]);
                out.records += 1;
                at = next;
            }
            None => {
                // A bad body with a right length ends where the next record starts: resume
                // there, not at a frame inside the body (a sender's bytes).
                let resume = match declared_end(bytes, at) {
                    Some(end) if frame_at(bytes, end).is_some() => end,
                    _ => match next_valid(bytes, at + 1) {
                        Some(next) if !torn_around(bytes, at, next) => next,
                        _ => bytes.len(),
                    },
                };
                out.skipped.push((at as u64, (resume - at) as u64));
                at = resume;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: u64) -> Record {
        Record {
            kind: Some(record::Kind::Item(ItemRec {
                user: "+15550000001".into(),
                id,
                frame: vec![1, 2, 3],
                sender: "+15550000002".into(),
                client_msg_id: id,
                group_id: 0,
                sender_device: 0,
            })),
        }
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
                user: "+15550000001".into(),
                id,
                frame,
                sender: "+15550000002".into(),
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

//! What the shard's durable log holds, and its on-disk framing.
//!
//! A record is a protobuf message (prost, no .proto file needed) framed as
//! `[u32 length BE][u32 crc32 BE][payload]`. Replay stops at the first frame that is short
//! or fails its checksum (a torn tail from a crash mid-write: nothing in it was ever
//! acknowledged, because acks wait for `fdatasync`) and reports where to truncate.
//!
//! Records are facts, applied in order: an account's current key hash, a queued item, the
//! removal of an item, a group's full state, a dedupe entry. Pure: no I/O.

use prost::Message;

/// Largest record accepted at replay (a queued item holds at most one frame).
pub const RECORD_BYTES_MAX: usize = 2 * proto::limits::FRAME_BYTES_MAX;
/// Bytes of framing before each record.
pub const RECORD_HEADER_BYTES: usize = 8;

/// One fact in the log.
#[derive(Clone, PartialEq, Message)]
pub struct Record {
    /// What the fact is.
    #[prost(oneof = "record::Kind", tags = "1, 2, 3, 4, 5")]
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

/// A remembered (sender, client_msg_id) → server id, so a late retry is not stored twice.
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

/// Result of replaying a log.
#[derive(Debug, Default)]
pub struct Replay {
    /// Records in order.
    pub records: Vec<Record>,
    /// Bytes of well-formed records; anything after is a torn tail to truncate.
    pub valid_len: u64,
}

/// Parses every well-formed record of `bytes`, stopping at the first bad one.
pub fn replay(bytes: &[u8]) -> Replay {
    let mut at = 0usize;
    let mut records = Vec::new();
    while bytes.len() - at >= RECORD_HEADER_BYTES {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let body_at = at + RECORD_HEADER_BYTES;
        if len > RECORD_BYTES_MAX || bytes.len() - body_at < len {
            break;
        }
        let body = &bytes[body_at..body_at + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        match Record::decode(body) {
            Ok(r) => records.push(r),
            Err(_) => break,
        }
        at = body_at + len;
    }
    Replay {
        records,
        valid_len: at as u64,
    }
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
}

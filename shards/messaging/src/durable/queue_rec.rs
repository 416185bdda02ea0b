//! The records of a user's queue (`ItemRec`, `RemovedRec`; re-exported by `record.rs`),
//! with their phones as [`Phone`]s: written from the `Phone`s the path carries without a
//! `String` each, and parsed once when a log is replayed. Their protobuf encoding is written
//! by hand, field by field in tag order, to be byte for byte what prost's derive wrote when
//! these fields were `String`s (asserted in the tests below), so old logs replay and new
//! logs read as before. Owns only the encoding; what a record means is `record.rs`'.

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;

use crate::state::home::{Phone, E164_BYTES_MAX};

/// An item in a user's queue: a message, or a receipt for an offline sender.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemRec {
    /// Whose queue (tag 1, a string). `None` only when a log names something that is not
    /// an E.164 phone (no box writes one): replay keeps no item for it.
    pub user: Option<Phone>,
    /// The item's server id (message id, or receipt id) (tag 2).
    pub id: u64,
    /// The frame to deliver, encoded (`ServerFrame`) (tag 3).
    pub frame: Vec<u8>,
    /// For messages: who sent it (receipts go back there) (tag 4, a string; `None` for a
    /// receipt, written as nothing, as the empty string was).
    pub sender: Option<Phone>,
    /// For messages: the sender's id for it (dedupe, receipts) (tag 5).
    pub client_msg_id: u64,
    /// For group messages: the group (tag 6).
    pub group_id: u64,
    /// For messages: the sender's device (`dedupe::device_of`; 0 in logs written before it)
    /// (tag 7).
    pub sender_device: u32,
}

/// An item removed from a user's queue.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RemovedRec {
    /// Whose queue (tag 1, a string; `None` as for [`ItemRec::user`]).
    pub user: Option<Phone>,
    /// The item's id (tag 2).
    pub id: u64,
}

/// Writes `phone` as the string field `tag`, from a stack buffer.
fn put_phone(tag: u32, phone: Option<Phone>, buf: &mut impl BufMut) {
    if let Some(p) = phone {
        let mut b = [0u8; E164_BYTES_MAX];
        let s = p.e164_in(&mut b);
        encoding::encode_key(tag, WireType::LengthDelimited, buf);
        encoding::encode_varint(s.len() as u64, buf);
        buf.put_slice(s.as_bytes());
    }
}

/// Bytes [`put_phone`] writes.
fn phone_len(tag: u32, phone: Option<Phone>) -> usize {
    phone.map_or(0, |p| {
        let n = p.e164_len();
        encoding::key_len(tag) + encoding::encoded_len_varint(n as u64) + n
    })
}

/// Reads the string field into a phone (`None` when it is not E.164: module doc).
fn merge_phone(
    phone: &mut Option<Phone>,
    wire_type: WireType,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    let mut s = String::new();
    encoding::string::merge(wire_type, &mut s, buf, ctx)?;
    *phone = Phone::parse(&s);
    Ok(())
}

/// Writes a `uint64` field unless it is 0 (proto3's default is not written).
fn put_u64(tag: u32, v: u64, buf: &mut impl BufMut) {
    if v != 0 {
        encoding::uint64::encode(tag, &v, buf);
    }
}

/// Bytes [`put_u64`] writes.
fn u64_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        encoding::uint64::encoded_len(tag, &v)
    }
}

impl prost::Message for ItemRec {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_phone(1, self.user, buf);
        put_u64(2, self.id, buf);
        if !self.frame.is_empty() {
            encoding::bytes::encode(3, &self.frame, buf);
        }
        put_phone(4, self.sender, buf);
        put_u64(5, self.client_msg_id, buf);
        put_u64(6, self.group_id, buf);
        if self.sender_device != 0 {
            encoding::uint32::encode(7, &self.sender_device, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => merge_phone(&mut self.user, wire_type, buf, ctx),
            2 => encoding::uint64::merge(wire_type, &mut self.id, buf, ctx),
            3 => encoding::bytes::merge(wire_type, &mut self.frame, buf, ctx),
            4 => merge_phone(&mut self.sender, wire_type, buf, ctx),
            5 => encoding::uint64::merge(wire_type, &mut self.client_msg_id, buf, ctx),
            6 => encoding::uint64::merge(wire_type, &mut self.group_id, buf, ctx),
            7 => encoding::uint32::merge(wire_type, &mut self.sender_device, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        phone_len(1, self.user)
            + u64_len(2, self.id)
            + if self.frame.is_empty() {
                0
            } else {
                encoding::bytes::encoded_len(3, &self.frame)
            }
            + phone_len(4, self.sender)
            + u64_len(5, self.client_msg_id)
            + u64_len(6, self.group_id)
            + if self.sender_device == 0 {
                0
            } else {
                encoding::uint32::encoded_len(7, &self.sender_device)
            }
    }

    fn clear(&mut self) {
        *self = ItemRec::default();
    }
}

impl prost::Message for RemovedRec {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_phone(1, self.user, buf);
        put_u64(2, self.id, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => merge_phone(&mut self.user, wire_type, buf, ctx),
            2 => encoding::uint64::merge(wire_type, &mut self.id, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        phone_len(1, self.user) + u64_len(2, self.id)
    }

    fn clear(&mut self) {
        *self = RemovedRec::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The records as prost derived them while their phones were `String`s.
    #[derive(Clone, PartialEq, Message)]
    struct OldItemRec {
        #[prost(string, tag = "1")]
        user: String,
        #[prost(uint64, tag = "2")]
        id: u64,
        #[prost(bytes = "vec", tag = "3")]
        frame: Vec<u8>,
        #[prost(string, tag = "4")]
        sender: String,
        #[prost(uint64, tag = "5")]
        client_msg_id: u64,
        #[prost(uint64, tag = "6")]
        group_id: u64,
        #[prost(uint32, tag = "7")]
        sender_device: u32,
    }

    #[derive(Clone, PartialEq, Message)]
    struct OldRemovedRec {
        #[prost(string, tag = "1")]
        user: String,
        #[prost(uint64, tag = "2")]
        id: u64,
    }

    fn text(p: Option<Phone>) -> String {
        p.map(Phone::to_e164).unwrap_or_default()
    }

    #[test]
    fn queue_records_encode_and_decode_as_the_derived_string_records_did() {
        let phones = [
            None,
            Phone::parse("+15550000001"),
            Phone::parse("+123456789012345"),
            Phone::parse("+12345678"),
        ];
        let frames: [&[u8]; 3] = [b"", b"\x0a\x03abc", &[7u8; 300]];
        let mut cases = 0;
        for user in phones {
            for sender in phones {
                for frame in frames {
                    for (id, n) in [(0u64, 0u64), (1, 1), (u64::MAX, 1 << 40)] {
                        let new = ItemRec {
                            user,
                            id,
                            frame: frame.to_vec(),
                            sender,
                            client_msg_id: n,
                            group_id: n / 2,
                            sender_device: n as u32,
                        };
                        let old = OldItemRec {
                            user: text(user),
                            id,
                            frame: frame.to_vec(),
                            sender: text(sender),
                            client_msg_id: n,
                            group_id: n / 2,
                            sender_device: n as u32,
                        };
                        let bytes = old.encode_to_vec();
                        assert_eq!(new.encode_to_vec(), bytes, "{new:?}");
                        assert_eq!(new.encoded_len(), bytes.len());
                        assert_eq!(ItemRec::decode(&bytes[..]).unwrap(), new);
                        cases += 1;
                    }
                }
            }
            for id in [0u64, 5, u64::MAX] {
                let new = RemovedRec { user, id };
                let old = OldRemovedRec {
                    user: text(user),
                    id,
                };
                let bytes = old.encode_to_vec();
                assert_eq!(new.encode_to_vec(), bytes);
                assert_eq!(new.encoded_len(), bytes.len());
                assert_eq!(RemovedRec::decode(&bytes[..]).unwrap(), new);
            }
        }
        assert_eq!(cases, 4 * 4 * 3 * 3);
    }

    #[test]
    fn a_queue_record_naming_no_phone_decodes_without_one() {
        // No box writes one; a log that holds one still reads, and replay keeps no item.
        let old = OldItemRec {
            user: "alice".into(),
            id: 3,
            sender: "+1".into(),
            ..Default::default()
        };
        let new = ItemRec::decode(&old.encode_to_vec()[..]).unwrap();
        assert_eq!((new.user, new.sender, new.id), (None, None, 3));
        let removed = OldRemovedRec {
            user: "u".into(),
            id: 4,
        };
        let new = RemovedRec::decode(&removed.encode_to_vec()[..]).unwrap();
        assert_eq!((new.user, new.id), (None, 4));
    }
}

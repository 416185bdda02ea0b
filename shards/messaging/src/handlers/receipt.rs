//! Acks, reads and receipts. An `Ack` removes items from the acker's queue (a tombstone
//! record) and sends a DELIVERED receipt to each message's sender's home; a `Read` sends
//! READ. At the sender's home a receipt is sent at once if the sender is online, else
//! queued durably with its own id (the client acks it like a message). The messages a user
//! acked last are remembered (at most `RECENT_ACKED_PER_USER_MAX`, until their session
//! ends) so a `Read` after the `Ack` still finds the sender: an acked message leaves
//! nothing behind past that window.

use crate::durable::record::{record, Record, RemovedRec};
use crate::state::effect::{Effect, Out, WireFrame};
use crate::state::home::Phone;
use crate::state::mesh_msg::ShardMsg;
use crate::state::ShardState;
use crate::tables::queues::Item;
use crate::tables::recent_acked::AckedMsg;
use proto::v1::{server_frame, Receipt, ReceiptKind};

impl ShardState {
    /// `user` acks these items of their own queue; unknown ids are ignored (acks repeat).
    pub(crate) fn on_ack(&mut self, _now: u64, user: Phone, ids: Vec<u64>, out: &mut Out) {
        for id in ids {
            let Some(item) = self.queues.remove(user, id) else {
                continue;
            };
            self.records_since_snapshot += 1;
            out.records.push(Record {
                kind: Some(record::Kind::Removed(RemovedRec {
                    user: Some(user),
                    id,
                })),
            });
            let Some(sender) = item.sender else {
                continue; // a receipt: nothing to report back
            };
            if !item.answered {
                // Acked before its record was durable: the recipient holds it, so the sender
                // may count it as stored. The answer leaves before the receipt, on the same
                // path, so the sender never sees DELIVERED before its ServerAck.
                let copy = (id, user);
                let (client_msg_id, group_id) = (item.client_msg_id, item.group_id());
                self.answer_stored(sender, client_msg_id, group_id, copy, out);
            }
            let acked = AckedMsg {
                sender,
                client_msg_id: item.client_msg_id,
                group_id: item.group_id(),
            };
            self.send_receipt(user, id, &acked, ReceiptKind::Delivered, out);
            self.recent.insert(user, id, &acked);
        }
        self.pump(user, out);
    }

    /// `user` has read these messages (acks them first if they had not).
    pub(crate) fn on_read(&mut self, now: u64, user: Phone, ids: Vec<u64>, out: &mut Out) {
        let unacked: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| self.queues.contains(user, *id))
            .collect();
        if !unacked.is_empty() {
            self.on_ack(now, user, unacked, out);
        }
        for id in ids {
            if let Some(acked) = self.recent.take(user, id) {
                self.send_receipt(user, id, &acked, ReceiptKind::Read, out);
            }
        }
    }

    fn send_receipt(&self, by: Phone, id: u64, m: &AckedMsg, kind: ReceiptKind, out: &mut Out) {
        // `by` travels as a `Phone` and is written into the frame (no `String`).
        let receipt = Receipt {
            server_msg_id: id,
            client_msg_id: m.client_msg_id,
            by: String::new(),
            kind: kind as i32,
            group_id: m.group_id,
            receipt_id: 0,
        };
        let (sender, by) = (m.sender, Some(by));
        let msg = ShardMsg::Receipt {
            sender,
            by,
            receipt,
        };
        out.mesh(self.home_phone(sender), msg);
    }

    /// A receipt for `sender`, at the sender's home.
    pub(crate) fn on_receipt(
        &mut self,
        _now: u64,
        (sender, by): (Phone, Option<Phone>),
        mut receipt: Receipt,
        out: &mut Out,
    ) {
        if let Some(conn) = self.sessions.conn_of(sender) {
            let Some(by) = by else {
                return out.frame(conn, server_frame::Kind::Receipt(receipt));
            };
            let mut bytes = self.queues.spare_frame();
            write_receipt_frame(&receipt, by, &mut bytes);
            let w = WireFrame {
                bytes,
                sent_at_ms: 0,
            };
            return out.now.push(Effect::Wire(conn, w));
        }
        if !self.registry.exists(sender) {
            return;
        }
        if let Some(by) = by {
            receipt.by = by.to_e164(); // the queued item holds the whole frame
        }
        receipt.receipt_id = self.ids.issue();
        let item = Item::frame_only(receipt.receipt_id, server_frame::Kind::Receipt(receipt));
        if self.enqueue(sender, item, out).is_err() {
            self.abuse.receipts_dropped += 1;
            let user_id = self.registry.verified(sender).map_or(0, |a| a.user_id);
            tracing::warn!(user_id, "receipt dropped: queue full");
        }
    }
}

/// Appends `receipt` as an encoded `ServerFrame`, its `by` (empty in `receipt`) written
/// from `by`: the bytes prost writes for the receipt with `by` set to its E.164 form, in
/// field order, without the `String`.
pub(crate) fn write_receipt_frame(receipt: &Receipt, by: Phone, out: &mut Vec<u8>) {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, int32, uint64};
    use prost::encoding::{key_len, WireType};
    use prost::Message;
    debug_assert!(receipt.by.is_empty());
    let by_len = by.e164_len();
    let len = receipt.encoded_len() + key_len(3) + encoded_len_varint(by_len as u64) + by_len;
    encode_key(RECEIPT_TAG, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
    for (tag, v) in [(1, receipt.server_msg_id), (2, receipt.client_msg_id)] {
        if v != 0 {
            uint64::encode(tag, &v, out);
        }
    }
    encode_key(3, WireType::LengthDelimited, out);
    encode_varint(by_len as u64, out);
    by.write_e164_into(out);
    if receipt.kind != 0 {
        int32::encode(4, &receipt.kind, out);
    }
    for (tag, v) in [(5, receipt.group_id), (6, receipt.receipt_id)] {
        if v != 0 {
            uint64::encode(tag, &v, out);
        }
    }
}

/// `ServerFrame`'s field number of `receipt` (proto/switchboard.proto).
const RECEIPT_TAG: u32 = 9;

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_receipt_frame_written_from_a_phone_is_the_frame_prost_writes() {
        let by = Phone::parse("+15550000002").unwrap();
        for (ids, kind) in [(0, 0), (1, 1), (u64::MAX, 2), (1 << 50, 1)] {
            let receipt = Receipt {
                server_msg_id: ids,
                client_msg_id: ids / 3,
                by: String::new(),
                kind,
                group_id: ids / 5,
                receipt_id: ids / 7,
            };
            let mut ours = Vec::new();
            write_receipt_frame(&receipt, by, &mut ours);
            let prost = proto::v1::ServerFrame {
                kind: Some(server_frame::Kind::Receipt(Receipt {
                    by: by.to_e164(),
                    ..receipt.clone()
                })),
            };
            assert_eq!(ours, prost.encode_to_vec(), "{receipt:?}");
        }
    }
}

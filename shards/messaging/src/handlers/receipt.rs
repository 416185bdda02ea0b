//! Acks, reads and receipts. An `Ack` removes items from the acker's queue (a tombstone
//! record) and sends a DELIVERED receipt to each message's sender's home; a `Read` sends
//! READ. At the sender's home a receipt is sent at once if the sender is online, else
//! queued durably with its own id (the client acks it like a message). The messages a user
//! acked last are remembered (at most `RECENT_ACKED_PER_USER_MAX`, until their session
//! ends) so a `Read` after the `Ack` still finds the sender: an acked message leaves
//! nothing behind past that window.

use crate::durable::record::{record, Record, RemovedRec};
use crate::state::effect::Out;
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
        let receipt = Receipt {
            server_msg_id: id,
            client_msg_id: m.client_msg_id,
            by: by.to_e164(),
            kind: kind as i32,
            group_id: m.group_id,
            receipt_id: 0,
        };
        let sender = m.sender;
        out.mesh(
            self.home_phone(sender),
            ShardMsg::Receipt { sender, receipt },
        );
    }

    /// A receipt for `sender`, at the sender's home.
    pub(crate) fn on_receipt(
        &mut self,
        _now: u64,
        sender: Phone,
        mut receipt: Receipt,
        out: &mut Out,
    ) {
        if let Some(conn) = self.sessions.conn_of(sender) {
            return out.frame(conn, server_frame::Kind::Receipt(receipt));
        }
        if !self.registry.exists(sender) {
            return;
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

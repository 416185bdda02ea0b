//! Acks, reads and receipts. An `Ack` removes items from the acker's queue (a tombstone
//! record) and sends a DELIVERED receipt to each message's sender's home; a `Read` sends
//! READ. At the sender's home a receipt is sent at once if the sender is online, else
//! queued durably with its own id (the client acks it like a message). Recently acked
//! messages are remembered (bounded) so a `Read` after the `Ack` still finds the sender.

use std::collections::{HashMap, VecDeque};

use proto::v1::{server_frame, Receipt, ReceiptKind};

use crate::effect::Out;
use crate::limits::RECENT_ACKED_MAX;
use crate::mesh_msg::ShardMsg;
use crate::offline::Item;
use crate::record::{record, Record, RemovedRec};
use crate::state::ShardState;

/// What a receipt needs to know about an acked message.
#[derive(Debug, Clone)]
pub struct AckedMsg {
    sender: String,
    client_msg_id: u64,
    group_id: u64,
}

/// An acked message as its reader names it in a later `Read`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ReadKey {
    /// Who acked (and may read) it.
    reader: String,
    /// Its server id.
    id: u64,
}

/// Recently acked messages, by reader and id, bounded FIFO.
#[derive(Debug, Default)]
pub struct RecentAcked {
    by_id: HashMap<ReadKey, AckedMsg>,
    order: VecDeque<ReadKey>,
}

impl RecentAcked {
    fn insert(&mut self, reader: &str, id: u64, m: AckedMsg) {
        let key = ReadKey {
            reader: reader.to_string(),
            id,
        };
        if self.by_id.insert(key.clone(), m).is_none() {
            self.order.push_back(key);
            if self.order.len() > RECENT_ACKED_MAX {
                if let Some(old) = self.order.pop_front() {
                    self.by_id.remove(&old);
                }
            }
        }
    }

    fn take(&mut self, reader: &str, id: u64) -> Option<AckedMsg> {
        self.by_id.remove(&ReadKey {
            reader: reader.to_string(),
            id,
        })
    }
}

impl ShardState {
    /// `user` acks these items of their own queue; unknown ids are ignored (acks repeat).
    pub(crate) fn on_ack(&mut self, _now: u64, user: &str, ids: Vec<u64>, out: &mut Out) {
        for id in ids {
            let Some(item) = self.queues.remove(user, id) else {
                continue;
            };
            self.records_since_snapshot += 1;
            out.records.push(Record {
                kind: Some(record::Kind::Removed(RemovedRec {
                    user: user.to_string(),
                    id,
                })),
            });
            if item.sender.is_empty() {
                continue; // a receipt: nothing to report back
            }
            if !item.answered {
                // Acked before its record was durable: the recipient holds it, so the sender
                // may count it as stored. The answer leaves before the receipt, on the same
                // path, so the sender never sees DELIVERED before its ServerAck.
                self.answer_stored(&item.sender, item.client_msg_id, item.group_id, id, out);
            }
            let acked = AckedMsg {
                sender: item.sender,
                client_msg_id: item.client_msg_id,
                group_id: item.group_id,
            };
            self.send_receipt(user, id, &acked, ReceiptKind::Delivered, out);
            self.recent.insert(user, id, acked);
        }
        self.pump(user, out);
    }

    /// `user` has read these messages (acks them first if they had not).
    pub(crate) fn on_read(&mut self, now: u64, user: &str, ids: Vec<u64>, out: &mut Out) {
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

    fn send_receipt(&self, by: &str, id: u64, m: &AckedMsg, kind: ReceiptKind, out: &mut Out) {
        let receipt = Receipt {
            server_msg_id: id,
            client_msg_id: m.client_msg_id,
            by: by.to_string(),
            kind: kind as i32,
            group_id: m.group_id,
            receipt_id: 0,
        };
        out.mesh(
            self.home(&m.sender),
            ShardMsg::Receipt {
                sender: m.sender.clone(),
                receipt,
            },
        );
    }

    /// A receipt for `sender`, at the sender's home.
    pub(crate) fn on_receipt(
        &mut self,
        _now: u64,
        sender: String,
        mut receipt: Receipt,
        out: &mut Out,
    ) {
        if let Some(conn) = self.sessions.conn_of(&sender) {
            return out.frame(conn, server_frame::Kind::Receipt(receipt));
        }
        if !self.registry.exists(&sender) {
            return;
        }
        receipt.receipt_id = self.ids.issue();
        let item = Item {
            id: receipt.receipt_id,
            frame: server_frame::Kind::Receipt(receipt),
            sender: String::new(),
            sender_device: 0,
            client_msg_id: 0,
            group_id: 0,
            durable: false,
            answered: true,
            sent: false,
        };
        if self.enqueue(&sender, item, out).is_err() {
            self.abuse.receipts_dropped += 1;
            tracing::warn!(user = %sender, "receipt dropped: queue full");
        }
    }
}

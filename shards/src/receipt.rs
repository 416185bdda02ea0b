//! Acks, reads and receipts. An `Ack` removes items from the acker's queue (a tombstone
//! record) and sends a DELIVERED receipt to each message's sender's home; a `Read` sends
//! READ. At the sender's home a receipt is sent at once if the sender is online, else
//! queued durably with its own id (the client acks it like a message). The messages a user
//! acked last are remembered (at most `RECENT_ACKED_PER_USER_MAX`, until their session
//! ends) so a `Read` after the `Ack` still finds the sender: an acked message leaves
//! nothing behind past that window.

use std::collections::VecDeque;

use proto::v1::{server_frame, Receipt, ReceiptKind};

use crate::effect::Out;
use crate::home::Phone;
use crate::limits::RECENT_ACKED_PER_USER_MAX;
use crate::mesh_msg::ShardMsg;
use crate::offline::Item;
use crate::record::{record, Record, RemovedRec};
use crate::state::ShardState;
use crate::steady_map::SteadyMap;

/// What a receipt needs to know about an acked message.
#[derive(Debug, Clone)]
pub struct AckedMsg {
    sender: Phone,
    client_msg_id: u64,
    group_id: u64,
}

/// One acked message as its reader may name it in a `Read`: 32 bytes, no heap.
#[derive(Debug, Clone, Copy)]
struct Acked {
    id: u64,
    sender: Phone,
    client_msg_id: u64,
    group_id: u64,
}

/// The messages each user acked last, while they are online: at most
/// `RECENT_ACKED_PER_USER_MAX` per user, oldest forgotten first, all of a user's forgotten
/// when their session ends (a `Read` names what the phone just showed).
#[derive(Debug, Default)]
pub struct RecentAcked {
    by_reader: SteadyMap<Phone, VecDeque<Acked>>,
}

impl RecentAcked {
    fn insert(&mut self, reader: &str, id: u64, m: &AckedMsg) {
        let Some(reader) = Phone::parse(reader) else {
            return; // users of stored messages are E.164
        };
        let sender = m.sender;
        let acked = self.by_reader.get_or_insert_with(reader, VecDeque::new);
        if acked.len() == RECENT_ACKED_PER_USER_MAX {
            acked.pop_front();
        }
        acked.push_back(Acked {
            id,
            sender,
            client_msg_id: m.client_msg_id,
            group_id: m.group_id,
        });
    }

    fn take(&mut self, reader: &str, id: u64) -> Option<AckedMsg> {
        let acked = self.by_reader.get_mut(&Phone::parse(reader)?)?;
        let at = acked.iter().position(|a| a.id == id)?;
        let a = acked.remove(at)?;
        Some(AckedMsg {
            sender: a.sender,
            client_msg_id: a.client_msg_id,
            group_id: a.group_id,
        })
    }

    /// `reader`'s session ended: forget what they acked.
    pub fn forget(&mut self, reader: &str) {
        if let Some(r) = Phone::parse(reader) {
            self.by_reader.remove(&r);
        }
    }

    /// Acked messages remembered, all users.
    pub fn len(&self) -> usize {
        self.by_reader.values().map(VecDeque::len).sum()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_reader.is_empty()
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
            let Some(sender) = item.sender else {
                continue; // a receipt: nothing to report back
            };
            if !item.answered {
                // Acked before its record was durable: the recipient holds it, so the sender
                // may count it as stored. The answer leaves before the receipt, on the same
                // path, so the sender never sees DELIVERED before its ServerAck.
                let sender = sender.to_string();
                self.answer_stored(&sender, item.client_msg_id, item.group_id(), id, out);
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
        let sender = m.sender.to_string();
        out.mesh(self.home(&sender), ShardMsg::Receipt { sender, receipt });
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
        let item = Item::frame_only(receipt.receipt_id, server_frame::Kind::Receipt(receipt));
        if self.enqueue(&sender, item, out).is_err() {
            self.abuse.receipts_dropped += 1;
            let user_id = self.registry.verified(&sender).map_or(0, |a| a.user_id);
            tracing::warn!(user_id, "receipt dropped: queue full");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(cmid: u64) -> AckedMsg {
        AckedMsg {
            sender: Phone::parse("+15550000001").unwrap(),
            client_msg_id: cmid,
            group_id: 0,
        }
    }

    #[test]
    fn each_reader_keeps_its_last_acks_until_its_session_ends() {
        const R: &str = "+15550000002";
        let mut r = RecentAcked::default();
        let n = RECENT_ACKED_PER_USER_MAX as u64 + 10;
        for id in 1..=n {
            r.insert(R, id, &msg(id));
        }
        r.insert("+15550000003", 1, &msg(1));
        assert_eq!(r.len(), RECENT_ACKED_PER_USER_MAX + 1, "bounded per reader");
        assert!(r.take(R, 10).is_none(), "the oldest are forgotten");
        let m = r.take(R, n).expect("the newest are kept");
        assert_eq!(
            (m.sender.to_string(), m.client_msg_id),
            ("+15550000001".into(), n)
        );
        assert!(r.take(R, n).is_none(), "a Read reports once");
        r.forget(R);
        assert!(r.take(R, n - 1).is_none());
        assert_eq!(r.len(), 1, "others keep theirs");
    }
}

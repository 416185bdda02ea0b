//! Exactly-once verification of 1:1 messages across every worker.
//!
//! A message is named by `(sender index, client_msg_id)`; the farm never reuses a
//! client_msg_id, so the name is unique for the run. Senders record every message they sent
//! with its intended recipient, the ones the server acknowledged, and the ones it refused;
//! recipients record what they received and who they are (first time only; duplicates are
//! counted where they happen, since a recipient lives in exactly one thread). The parent
//! merges the lists:
//! - an acked message nobody received is **lost**;
//! - a received message that was never acked (its ServerAck was lost in a storm, or the run
//!   ended first) is **delivered_unacked**, which is allowed;
//! - a message received by someone other than its intended recipient is **misdelivered**;
//! - a sent message that was neither acked, refused nor received is **unanswered**: it
//!   vanished without the sender being told (allowed only when a storm cut its connection).

use serde::{Deserialize, Serialize};

/// One message's name: `(sender index, client_msg_id)`.
pub type MsgName = (u64, u64);

/// What one thread (or worker) saw of 1:1 messages.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ledger {
    /// Messages this side's senders sent, with the intended recipient's index.
    pub sent: Vec<(MsgName, u64)>,
    /// Messages this side's senders got a ServerAck for.
    pub acked: Vec<MsgName>,
    /// Messages the server refused with an Error frame.
    pub refused: Vec<MsgName>,
    /// Messages this side's recipients received (each once), with the recipient's index.
    pub delivered: Vec<(MsgName, u64)>,
}

/// The verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Acked messages never delivered.
    pub lost: u64,
    /// Delivered messages whose ServerAck the sender never saw.
    pub delivered_unacked: u64,
    /// Messages delivered to a user other than the one they were sent to.
    pub misdelivered: u64,
    /// Sent messages neither acked, refused nor delivered.
    pub unanswered: u64,
    /// Up to 10 lost messages, for debugging: (sender index, client_msg_id).
    pub lost_examples: Vec<MsgName>,
}

impl Ledger {
    /// Appends `o`'s records.
    pub fn merge(&mut self, o: Ledger) {
        self.sent.extend(o.sent);
        self.acked.extend(o.acked);
        self.refused.extend(o.refused);
        self.delivered.extend(o.delivered);
    }

    /// Compares the lists (sorts them).
    pub fn verify(&mut self) -> Verdict {
        for v in [&mut self.acked, &mut self.refused] {
            v.sort_unstable();
            v.dedup();
        }
        self.sent.sort_unstable();
        self.sent.dedup_by_key(|s| s.0);
        self.delivered.sort_unstable();
        self.delivered.dedup_by_key(|d| d.0);
        let mut v = Verdict::default();
        let delivered_names: Vec<MsgName> = self.delivered.iter().map(|d| d.0).collect();
        for a in &self.acked {
            if delivered_names.binary_search(a).is_err() {
                v.lost += 1;
                if v.lost_examples.len() < 10 {
                    v.lost_examples.push(*a);
                }
            }
        }
        for (name, recipient) in &self.delivered {
            if self.acked.binary_search(name).is_err() {
                v.delivered_unacked += 1;
            }
            let meant = self
                .sent
                .binary_search_by_key(name, |s| s.0)
                .map(|i| self.sent[i].1);
            if meant != Ok(*recipient) {
                v.misdelivered += 1;
            }
        }
        for (name, _) in &self.sent {
            let answered = self.acked.binary_search(name).is_ok()
                || self.refused.binary_search(name).is_ok()
                || delivered_names.binary_search(name).is_ok();
            if !answered {
                v.unanswered += 1;
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lost_unacked_misdelivered_and_unanswered() {
        let mut a = Ledger {
            sent: vec![((1, 1), 2), ((1, 2), 2), ((1, 3), 2), ((1, 4), 3)],
            acked: vec![(1, 1), (1, 2)],
            refused: vec![(1, 4)],
            delivered: vec![((2, 1), 1)],
        };
        let b = Ledger {
            sent: vec![((2, 1), 1), ((3, 1), 1), ((3, 2), 1)],
            acked: vec![(3, 1)],
            refused: vec![],
            delivered: vec![((1, 1), 2), ((3, 1), 1), ((3, 2), 4)],
        };
        a.merge(b);
        let v = a.verify();
        assert_eq!(v.lost, 1, "(1,2) acked, never delivered");
        assert_eq!(v.lost_examples, vec![(1, 2)]);
        assert_eq!(v.delivered_unacked, 2, "(2,1) and (3,2)");
        assert_eq!(v.misdelivered, 1, "(3,2) went to 4, not 1");
        assert_eq!(v.unanswered, 1, "(1,3): no ack, no error, no delivery");
    }

    #[test]
    fn empty_is_clean() {
        assert_eq!(Ledger::default().verify(), Verdict::default());
    }
}

//! Exactly-once verification of 1:1 messages across every worker.
//!
//! A message is named by `(sender index, client_msg_id)`; the farm never reuses a
//! client_msg_id, so the name is unique for the run. Senders record the messages the server
//! acknowledged; recipients record the messages they received (first time only, duplicates
//! are counted where they happen, since a recipient lives in exactly one thread). The parent
//! merges both lists: an acked message nobody received is **lost**; a received message that
//! was never acked (its ServerAck was lost in a storm, or the run ended first) is
//! **delivered_unacked**, which is allowed.

use serde::{Deserialize, Serialize};

/// One message's name: `(sender index, client_msg_id)`.
pub type MsgName = (u64, u64);

/// What one thread (or worker) saw of 1:1 messages.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ledger {
    /// Messages this side's senders got a ServerAck for.
    pub acked: Vec<MsgName>,
    /// Messages this side's recipients received (each once).
    pub delivered: Vec<MsgName>,
}

/// The verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Acked messages never delivered.
    pub lost: u64,
    /// Delivered messages whose ServerAck the sender never saw.
    pub delivered_unacked: u64,
    /// Up to 10 lost messages, for debugging: (sender index, client_msg_id).
    pub lost_examples: Vec<MsgName>,
}

impl Ledger {
    /// Appends `o`'s records.
    pub fn merge(&mut self, o: Ledger) {
        self.acked.extend(o.acked);
        self.delivered.extend(o.delivered);
    }

    /// Compares acked against delivered (sorts both).
    pub fn verify(&mut self) -> Verdict {
        self.acked.sort_unstable();
        self.acked.dedup();
        self.delivered.sort_unstable();
        self.delivered.dedup();
        let mut v = Verdict::default();
        let (mut i, mut j) = (0, 0);
        while i < self.acked.len() || j < self.delivered.len() {
            match (self.acked.get(i), self.delivered.get(j)) {
                (Some(a), Some(d)) if a == d => {
                    i += 1;
                    j += 1;
                }
                (Some(a), Some(d)) if a < d => {
                    v.lost += 1;
                    if v.lost_examples.len() < 10 {
                        v.lost_examples.push(*a);
                    }
                    i += 1;
                }
                (Some(a), None) => {
                    v.lost += 1;
                    if v.lost_examples.len() < 10 {
                        v.lost_examples.push(*a);
                    }
                    i += 1;
                }
                _ => {
                    v.delivered_unacked += 1;
                    j += 1;
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lost_and_unacked() {
        let mut a = Ledger {
            acked: vec![(1, 1), (1, 2), (2, 1)],
            delivered: vec![(2, 1)],
        };
        let b = Ledger {
            acked: vec![(3, 1)],
            delivered: vec![(1, 1), (3, 1), (3, 2)],
        };
        a.merge(b);
        let v = a.verify();
        assert_eq!(v.lost, 1);
        assert_eq!(v.lost_examples, vec![(1, 2)]);
        assert_eq!(v.delivered_unacked, 1);
    }

    #[test]
    fn empty_is_clean() {
        assert_eq!(Ledger::default().verify(), Verdict::default());
    }
}

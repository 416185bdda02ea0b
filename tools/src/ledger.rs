//! Exactly-once verification of 1:1 and group messages across every worker.
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
//!
//! Group messages the same way, per member: the thread that creates a group records its
//! members; an acked group message that some member other than its sender never received
//! is **group_lost** (once per missing member); a copy received by its sender or by someone
//! outside the group is **group_misdelivered**. A member's second copy is a duplicate,
//! counted where it happens like a 1:1 one.

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
    /// Groups this side created: (group id, every member's index, creator included).
    #[serde(default)]
    pub groups: Vec<(u64, Vec<u64>)>,
    /// Group messages this side's senders sent, with the group id.
    #[serde(default)]
    pub group_sent: Vec<(MsgName, u64)>,
    /// Group messages this side's senders got a ServerAck for.
    #[serde(default)]
    pub group_acked: Vec<MsgName>,
    /// Group copies this side's members received (each once per member), with the member.
    #[serde(default)]
    pub group_delivered: Vec<(MsgName, u64)>,
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
    /// (acked group message, member other than its sender) pairs never delivered.
    pub group_lost: u64,
    /// Group copies received by their sender or by a non-member.
    pub group_misdelivered: u64,
}

impl Ledger {
    /// Appends `o`'s records.
    pub fn merge(&mut self, o: Ledger) {
        self.sent.extend(o.sent);
        self.acked.extend(o.acked);
        self.refused.extend(o.refused);
        self.delivered.extend(o.delivered);
        self.groups.extend(o.groups);
        self.group_sent.extend(o.group_sent);
        self.group_acked.extend(o.group_acked);
        self.group_delivered.extend(o.group_delivered);
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
        self.verify_groups(&mut v);
        v
    }

    /// The group half of [`Ledger::verify`]: per member, as the module says.
    fn verify_groups(&mut self, v: &mut Verdict) {
        self.group_acked.sort_unstable();
        self.group_acked.dedup();
        self.group_sent.sort_unstable();
        self.group_sent.dedup_by_key(|s| s.0);
        self.group_delivered.sort_unstable();
        self.group_delivered.dedup();
        let members: std::collections::HashMap<u64, &Vec<u64>> =
            self.groups.iter().map(|(g, m)| (*g, m)).collect();
        let group_of = |name: &MsgName| {
            self.group_sent
                .binary_search_by_key(name, |s| s.0)
                .ok()
                .and_then(|i| members.get(&self.group_sent[i].1))
        };
        for name in &self.group_acked {
            let Some(ms) = group_of(name) else { continue };
            for &m in ms.iter().filter(|&&m| m != name.0) {
                if self.group_delivered.binary_search(&(*name, m)).is_err() {
                    v.group_lost += 1;
                }
            }
        }
        for (name, r) in &self.group_delivered {
            let member = group_of(name).is_some_and(|ms| ms.contains(r));
            if !member || *r == name.0 {
                v.group_misdelivered += 1;
            }
        }
        let delivered: Vec<MsgName> = self.group_delivered.iter().map(|d| d.0).collect();
        for (name, _) in &self.group_sent {
            let answered = self.group_acked.binary_search(name).is_ok()
                || self.refused.binary_search(name).is_ok()
                || delivered.binary_search(name).is_ok();
            if !answered {
                v.unanswered += 1;
            }
        }
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
            ..Ledger::default()
        };
        let b = Ledger {
            sent: vec![((2, 1), 1), ((3, 1), 1), ((3, 2), 1)],
            acked: vec![(3, 1)],
            refused: vec![],
            delivered: vec![((1, 1), 2), ((3, 1), 1), ((3, 2), 4)],
            ..Ledger::default()
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
    fn every_group_member_but_the_sender_gets_each_acked_message_once() {
        // Group 7 is users 10, 11, 12 (created in one thread); two workers' views merge.
        let mut a = Ledger {
            groups: vec![(7, vec![10, 11, 12])],
            group_sent: vec![((10, 1), 7), ((10, 2), 7), ((11, 1), 7)],
            group_acked: vec![(10, 1), (10, 2)],
            group_delivered: vec![((10, 1), 11), ((10, 1), 12), ((10, 2), 11)],
            ..Ledger::default()
        };
        let b = Ledger {
            // 12 got (11,1) though unacked (allowed); 10 got its own (10,2) and 99 is no member.
            group_delivered: vec![((11, 1), 12), ((10, 2), 10), ((10, 2), 99)],
            ..Ledger::default()
        };
        a.merge(b);
        let v = a.verify();
        assert_eq!(v.group_lost, 1, "(10,2) never reached 12");
        assert_eq!(
            v.group_misdelivered, 2,
            "(10,2) to its sender and to a non-member"
        );
        assert_eq!(v.unanswered, 0, "(11,1) was delivered, so answered");
        assert_eq!((v.lost, v.misdelivered), (0, 0), "1:1 untouched");
    }

    #[test]
    fn empty_is_clean() {
        assert_eq!(Ledger::default().verify(), Verdict::default());
    }
}

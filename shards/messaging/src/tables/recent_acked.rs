//! The messages each user acked last, so a `Read` after the `Ack` still finds their
//! senders: at most `RECENT_ACKED_PER_USER_MAX` per user, forgotten when the session ends.
//! Pure state; the receipts themselves are `handlers/receipt.rs`'s.

use crate::state::home::AsPhone;
use crate::state::home::Phone;
use crate::state::limits::RECENT_ACKED_PER_USER_MAX;
use crate::tables::steady_map::SteadyMap;
use std::collections::VecDeque;

/// What a receipt needs to know about an acked message.
#[derive(Debug, Clone)]
pub struct AckedMsg {
    pub(crate) sender: Phone,
    pub(crate) client_msg_id: u64,
    pub(crate) group_id: u64,
}

/// One acked message as its reader may name it in a `Read`: 32 bytes, no heap.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Acked {
    pub(crate) id: u64,
    pub(crate) sender: Phone,
    pub(crate) client_msg_id: u64,
    pub(crate) group_id: u64,
}

/// The messages each user acked last, while they are online: at most
/// `RECENT_ACKED_PER_USER_MAX` per user, oldest forgotten first, all of a user's forgotten
/// when their session ends (a `Read` names what the phone just showed).
#[derive(Debug, Default)]
pub struct RecentAcked {
    pub(crate) by_reader: SteadyMap<Phone, VecDeque<Acked>>,
}

impl RecentAcked {
    pub(crate) fn insert(&mut self, reader: impl AsPhone, id: u64, m: &AckedMsg) {
        let Some(reader) = reader.as_phone() else {
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

    pub(crate) fn take(&mut self, reader: impl AsPhone, id: u64) -> Option<AckedMsg> {
        let acked = self.by_reader.get_mut(&reader.as_phone()?)?;
        let at = acked.iter().position(|a| a.id == id)?;
        let a = acked.remove(at)?;
        Some(AckedMsg {
            sender: a.sender,
            client_msg_id: a.client_msg_id,
            group_id: a.group_id,
        })
    }

    /// `reader`'s session ended: forget what they acked.
    pub fn forget(&mut self, reader: impl AsPhone) {
        if let Some(r) = reader.as_phone() {
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

//! Dedupe of sends at the recipient's home: whether a `Deliver` is a retry of a send already
//! stored, in memory that grows with senders, not with messages.
//!
//! The rule it relies on (proto/proto/switchboard.proto, `SendMessage`): a device numbers its
//! sends with increasing `client_msg_id`s and reuses an id only to retry that same send.
//! Sends from one sender arrive here in the order they were sent along one path (the mesh
//! is FIFO per pair of shards): the sender's home for 1:1 sends, a group's home for that
//! group's copies. So per (sender, group) this shard keeps:
//! 1. a **window** of the last `DEDUPE_WINDOW_PER_SENDER` copies stored (client id, group,
//!    recipient → server id): a retry in it gets the same server id;
//! 2. a **floor**: the largest client id that fell out of the window. Every id below it
//!    (and the floor itself for a 1:1 send, which has one copy per id) was seen before, by
//!    the rule: a retry of it is recognised, stores nothing, and is answered with server id
//!    0 ("stored before; its id was in the earlier answer"), after any delay;
//! 3. the sender's **device** (the first bytes of its device-key hash): a new device starts
//!    counting again, so a send from another device resets the window and the floor.
//!
//! Why it is safe: an id refused (Busy, QueueFull...) enters nothing, so it can be retried
//! until the floor passes it, which takes `DEDUPE_WINDOW_PER_SENDER` later sends stored
//! from the same sender along the same path; the protocol tells clients to resend a
//! refused message under a new id. Durable as before: item records carry the sender's
//! device, and compaction writes each window as dedupe records with its floor, so a retry
//! after a restart is recognised too.
//!
//! Limit: a group copy whose id equals the floor is not recognised once it left the window
//! (a group send has one copy per member, all with one id): a retry of the sender's newest
//! send to a group with more than `DEDUPE_WINDOW_PER_SENDER` members homed here may store
//! those members' copies again (clients show a `(from, client_msg_id)` once).

use crate::durable::record::{DedupeRec, ItemRec};
use crate::state::home::Phone;
use crate::state::limits::DEDUPE_WINDOW_PER_SENDER;
use crate::tables::steady_map::SteadyMap;

/// One copy of a send as dedupe knows it: who sent it from which device, under which
/// client id, to which group (0 for 1:1) and for whom (a group send is one copy per member).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DedupeKey {
    /// The sender.
    pub sender: Phone,
    /// The sender's device ([`device_of`] its key hash).
    pub device: u32,
    /// The sender's id for the send.
    pub client_msg_id: u64,
    /// The group, or 0.
    pub group_id: u64,
    /// The recipient.
    pub recipient: Phone,
}

/// What dedupe knows about a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen: store it.
    New,
    /// Stored under this server id.
    Same(u64),
    /// Stored before (below the sender's floor); its server id is forgotten.
    Forgotten,
}

/// The device a key hash names: its first four bytes (0 for none).
pub fn device_of(key_hash: &[u8]) -> u32 {
    key_hash
        .get(..4)
        .map_or(0, |b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
}

/// A remembered copy: 24 bytes, no heap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct StoredCopy {
    client_msg_id: u64,
    /// `None` only in the unused slots of a window.
    recipient: Option<Phone>,
    server_msg_id: u64,
}

/// What one (sender, group) pair left here: fixed size, whatever it sent.
#[derive(Debug, Clone)]
pub(crate) struct SenderWindow {
    device: u32,
    /// Copies stored, oldest first from `next` (a ring; `len` of them valid).
    copies: [StoredCopy; DEDUPE_WINDOW_PER_SENDER],
    next: u8,
    len: u8,
    /// The largest client id that left the window (0: none).
    floor: u64,
}

impl SenderWindow {
    fn new(device: u32) -> Self {
        SenderWindow {
            device,
            copies: [StoredCopy::default(); DEDUPE_WINDOW_PER_SENDER],
            next: 0,
            len: 0,
            floor: 0,
        }
    }

    fn find(&self, client_msg_id: u64, recipient: Phone) -> Option<u64> {
        self.copies[..self.len as usize]
            .iter()
            .find(|c| c.client_msg_id == client_msg_id && c.recipient == Some(recipient))
            .map(|c| c.server_msg_id)
    }

    fn push(&mut self, c: StoredCopy) {
        let at = self.next as usize;
        if self.len as usize == DEDUPE_WINDOW_PER_SENDER {
            self.floor = self.floor.max(self.copies[at].client_msg_id);
        } else {
            self.len += 1;
        }
        self.copies[at] = c;
        self.next = ((at + 1) % DEDUPE_WINDOW_PER_SENDER) as u8;
    }

    /// The window's records, oldest copy first, each with the floor.
    pub(crate) fn records<'a>(&'a self, p: &'a PathKey) -> impl Iterator<Item = DedupeRec> + 'a {
        self.oldest_first().map(move |c| DedupeRec {
            sender: p.sender.to_string(),
            client_msg_id: c.client_msg_id,
            group_id: p.group_id,
            server_msg_id: c.server_msg_id,
            recipient: c.recipient.map(|r| r.to_string()).unwrap_or_default(),
            floor: self.floor,
            sender_device: self.device,
        })
    }

    /// The largest server id in the window (0 when it holds none).
    fn newest_server_id(&self) -> u64 {
        self.oldest_first()
            .map(|c| c.server_msg_id)
            .max()
            .unwrap_or(0)
    }

    /// The copies, oldest first.
    fn oldest_first(&self) -> impl Iterator<Item = &StoredCopy> {
        let len = self.len as usize;
        let start =
            (self.next as usize + DEDUPE_WINDOW_PER_SENDER - len) % DEDUPE_WINDOW_PER_SENDER;
        (0..len).map(move |i| &self.copies[(start + i) % DEDUPE_WINDOW_PER_SENDER])
    }
}

/// A window's map key: the sender and the path its sends take (1:1, or one group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PathKey {
    sender: Phone,
    group_id: u64,
}

/// Remembered sends, per (sender, group).
#[derive(Debug, Default)]
pub struct Dedupe {
    /// A snapshot walks it between events (`snapshot.rs`).
    pub(crate) windows: SteadyMap<PathKey, SenderWindow>,
}

impl Dedupe {
    /// Whether the send `key` names was stored here before.
    pub fn check(&self, key: &DedupeKey) -> Seen {
        let path = PathKey {
            sender: key.sender,
            group_id: key.group_id,
        };
        let Some(w) = self.windows.get(&path).filter(|w| w.device == key.device) else {
            return Seen::New;
        };
        if let Some(id) = w.find(key.client_msg_id, key.recipient) {
            return Seen::Same(id);
        }
        let below = key.client_msg_id < w.floor
            || (key.client_msg_id == w.floor && key.group_id == 0 && w.floor != 0);
        if below {
            Seen::Forgotten
        } else {
            Seen::New
        }
    }

    /// Remembers a stored copy. Idempotent: replay meets a copy in its dedupe record and
    /// again in its item record, and meets queued items older than the window it rebuilt.
    /// A window is told its copies in the order of their server ids (they come from this
    /// shard's allocator, and each is issued as its copy is stored), so a copy whose id is
    /// not above the window's newest was already counted in it (or in its floor, or before a
    /// device change): it changes nothing, whatever order replay meets it in.
    pub fn insert(&mut self, key: DedupeKey, server_msg_id: u64) {
        let path = PathKey {
            sender: key.sender,
            group_id: key.group_id,
        };
        if self
            .windows
            .get(&path)
            .is_some_and(|w| server_msg_id <= w.newest_server_id())
        {
            return;
        }
        if self.check(&key) != Seen::New {
            return;
        }
        self.push(
            path,
            key.device,
            key.client_msg_id,
            key.recipient,
            server_msg_id,
        );
    }

    /// Adds a copy to its window (a new window, or a fresh one if the device changed).
    fn push(
        &mut self,
        path: PathKey,
        device: u32,
        client_msg_id: u64,
        recipient: Phone,
        server_msg_id: u64,
    ) -> &mut SenderWindow {
        let w = self
            .windows
            .get_or_insert_with(path, || SenderWindow::new(device));
        if w.device != device {
            *w = SenderWindow::new(device);
        }
        w.push(StoredCopy {
            client_msg_id,
            recipient: Some(recipient),
            server_msg_id,
        });
        w
    }

    /// Replay of a dedupe record: the window is rebuilt as it was written, copy by copy
    /// (oldest first), whatever its floor says of them (a client that broke the
    /// increasing-id rule can leave copies below it).
    pub fn insert_durable(&mut self, d: &DedupeRec) {
        let (Some(sender), Some(recipient)) = (Phone::parse(&d.sender), Phone::parse(&d.recipient))
        else {
            return; // written by no shard: phones in records are E.164
        };
        let path = PathKey {
            sender,
            group_id: d.group_id,
        };
        if self
            .windows
            .get(&path)
            .is_some_and(|w| d.server_msg_id <= w.newest_server_id())
        {
            return;
        }
        let w = self.push(
            path,
            d.sender_device,
            d.client_msg_id,
            recipient,
            d.server_msg_id,
        );
        w.floor = w.floor.max(d.floor);
    }

    /// Replay of an item record (a message: it has a sender and a client id).
    pub fn insert_from_item(&mut self, i: &ItemRec) {
        let (Some(sender), Some(recipient)) = (i.sender, i.user) else {
            return;
        };
        let key = DedupeKey {
            sender,
            device: i.sender_device,
            client_msg_id: i.client_msg_id,
            group_id: i.group_id,
            recipient,
        };
        self.insert(key, i.id);
    }

    /// (sender, group) pairs remembered.
    pub fn paths(&self) -> usize {
        self.windows.len()
    }

    /// Every window, oldest copy first, each record with its window's floor: a snapshot.
    pub fn records(&self) -> impl Iterator<Item = DedupeRec> + '_ {
        self.windows.iter().flat_map(|(p, w)| w.records(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cmid: u64, group_id: u64, recipient: &str) -> DedupeKey {
        DedupeKey {
            sender: Phone::parse("+15550000001").unwrap(),
            device: 7,
            client_msg_id: cmid,
            group_id,
            recipient: Phone::parse(recipient).unwrap(),
        }
    }

    const B: &str = "+15550000002";
    const C: &str = "+15550000003";

    #[test]
    fn a_retry_in_the_window_gets_its_id_and_below_the_floor_is_still_known() {
        let mut d = Dedupe::default();
        let n = DEDUPE_WINDOW_PER_SENDER as u64 * 3;
        for cmid in 1..=n {
            assert_eq!(d.check(&key(cmid, 0, B)), Seen::New);
            d.insert(key(cmid, 0, B), 1000 + cmid);
        }
        assert_eq!(d.check(&key(n, 0, B)), Seen::Same(1000 + n));
        assert_eq!(d.check(&key(1, 0, B)), Seen::Forgotten);
        let floor = n - DEDUPE_WINDOW_PER_SENDER as u64;
        assert_eq!(d.check(&key(floor, 0, B)), Seen::Forgotten);
        assert_eq!(d.check(&key(n + 1, 0, B)), Seen::New);
        assert_eq!(d.paths(), 1, "one window, however many sends");
        // A new device counts from 1 again.
        let other = DedupeKey {
            device: 8,
            ..key(1, 0, B)
        };
        assert_eq!(d.check(&other), Seen::New);
        d.insert(other, 2000);
        assert_eq!(d.check(&other), Seen::Same(2000));
    }

    #[test]
    fn copies_met_out_of_order_by_replay_change_nothing() {
        let mut live = Dedupe::default();
        for cmid in 1..=20 {
            live.insert(key(cmid, 0, B), 100 + cmid);
        }
        // A snapshot's windows, then queued items older than them (a snapshot lists queued
        // items after the windows), then an old device's copy.
        let mut again = Dedupe::default();
        for r in live.records() {
            again.insert_durable(&r);
        }
        for cmid in [3, 20, 15, 19] {
            again.insert(key(cmid, 0, B), 100 + cmid);
        }
        let old_device = DedupeKey {
            device: 6,
            ..key(1, 0, B)
        };
        again.insert(old_device, 50);
        let a: Vec<DedupeRec> = again.records().collect();
        let l: Vec<DedupeRec> = live.records().collect();
        assert_eq!(a, l, "the window is the one that was written");
    }

    #[test]
    fn group_copies_share_an_id_and_do_not_shadow_each_other() {
        let mut d = Dedupe::default();
        d.insert(key(1, 0, B), 1);
        d.insert(key(2, 9, B), 2);
        assert_eq!(d.check(&key(2, 9, C)), Seen::New, "another member's copy");
        d.insert(key(2, 9, C), 3);
        assert_eq!(d.check(&key(2, 9, C)), Seen::Same(3));
        assert_eq!(d.check(&key(2, 0, B)), Seen::New, "another path");
    }

    #[test]
    fn records_rebuild_the_same_answers() {
        let mut d = Dedupe::default();
        for cmid in 1..=20 {
            d.insert(key(cmid, 0, B), 100 + cmid);
        }
        let mut again = Dedupe::default();
        for r in d.records() {
            again.insert_durable(&r);
        }
        for cmid in 1..=21 {
            assert_eq!(again.check(&key(cmid, 0, B)), d.check(&key(cmid, 0, B)));
        }
    }
}

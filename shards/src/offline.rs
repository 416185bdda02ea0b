//! Per-user queues of items (messages, and receipts for offline senders) for the users homed
//! on this shard. An item stays until the user acks it; it is delivered as soon as it is
//! queued (its record may still be on its way to the disk), in queue order, at most
//! `DELIVERY_WINDOW_ITEMS` unacked at a time. Pure state.
//!
//! Fair shares: a queue holds at most `QUEUE_ITEMS_PER_USER_MAX` items, of which at most
//! `QUEUE_MESSAGES_PER_USER_MAX` messages and at most `QUEUE_MESSAGES_PER_SENDER_MAX` from
//! any one sender. So one sender filling a queue gets QUEUE_FULL alone (others still get
//! through), and messages can never take the room receipts need: receipts are refused only
//! when the whole queue is full, which messages alone cannot make it.

use std::collections::{HashMap, VecDeque};

use proto::v1::server_frame;

use crate::limits::{
    DELIVERY_WINDOW_BYTES, DELIVERY_WINDOW_ITEMS, QUEUE_ITEMS_PER_USER_MAX,
    QUEUE_MESSAGES_PER_SENDER_MAX, QUEUE_MESSAGES_PER_USER_MAX,
};

/// One queued item.
#[derive(Debug, Clone)]
pub struct Item {
    /// Server id (the message's id, or the receipt's id).
    pub id: u64,
    /// What to deliver.
    pub frame: server_frame::Kind,
    /// For messages: the sender (receipts go back there); empty for receipts.
    pub sender: String,
    /// For messages: the sender's device (`dedupe::device_of`).
    pub sender_device: u32,
    /// For messages: the sender's id.
    pub client_msg_id: u64,
    /// For group messages: the group.
    pub group_id: u64,
    /// The record holding it has been fsynced.
    pub durable: bool,
    /// Whoever waits for the outcome (the sender's `ServerAck`, or the group home) was told:
    /// at durability or at the recipient's ack, whichever came first. Receipts and replayed
    /// items start answered.
    pub answered: bool,
    /// Sent on the current session and not yet acked.
    pub sent: bool,
}

/// One user's queue.
#[derive(Debug, Default)]
pub struct Queue {
    items: VecDeque<Item>,
    in_flight: usize,
    in_flight_bytes: usize,
    /// Messages (items with a sender) held, per sender; a sender leaves at 0. At most
    /// `QUEUE_MESSAGES_PER_USER_MAX` in all.
    by_sender: HashMap<String, u32>,
    /// The sum of `by_sender`.
    messages: usize,
    /// The push provider was told since the user was last online.
    pub push_notified: bool,
}

/// Why an item was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueFull {
    /// The queue is at `QUEUE_ITEMS_PER_USER_MAX` (or, for a message,
    /// `QUEUE_MESSAGES_PER_USER_MAX` messages).
    Queue,
    /// The sender holds `QUEUE_MESSAGES_PER_SENDER_MAX` messages in it.
    SenderShare,
}

/// Bytes a frame takes on the wire (what the delivery window counts).
fn frame_bytes(f: &server_frame::Kind) -> usize {
    use prost::Message;
    proto::limits::FRAME_HEADER_BYTES
        + proto::v1::ServerFrame {
            kind: Some(f.clone()),
        }
        .encoded_len()
}

/// All queues of users homed here.
#[derive(Debug, Default)]
pub struct Queues {
    by_user: HashMap<String, Queue>,
    total: usize,
    /// `users_at_len[n]`: users whose queue holds exactly `n` items (n ≥ 1); sized
    /// `QUEUE_ITEMS_PER_USER_MAX + 1` on first use, so the longest queue is known without a
    /// scan of the users.
    users_at_len: Vec<u32>,
    /// The longest queue's length (0 when every queue is empty).
    longest: usize,
}

impl Queues {
    /// Appends an item (not yet durable unless replayed) within the queue's shares.
    pub fn push(&mut self, user: &str, item: Item) -> Result<(), QueueFull> {
        if let Some(q) = self.by_user.get(user) {
            if !item.sender.is_empty() {
                if q.messages >= QUEUE_MESSAGES_PER_USER_MAX {
                    return Err(QueueFull::Queue);
                }
                let held = q.by_sender.get(&item.sender).copied().unwrap_or(0);
                if held as usize >= QUEUE_MESSAGES_PER_SENDER_MAX {
                    return Err(QueueFull::SenderShare);
                }
            }
        }
        self.restore(user, item)
    }

    /// Appends an item within the queue's hard limit only: replay keeps what was accepted
    /// under the shares of its time.
    pub fn restore(&mut self, user: &str, item: Item) -> Result<(), QueueFull> {
        let q = self.by_user.entry(user.to_string()).or_default();
        if q.items.len() >= QUEUE_ITEMS_PER_USER_MAX {
            return Err(QueueFull::Queue);
        }
        if !item.sender.is_empty() {
            *q.by_sender.entry(item.sender.clone()).or_default() += 1;
            q.messages += 1;
        }
        q.items.push_back(item);
        self.total += 1;
        let len = q.items.len();
        self.resized(len - 1, len);
        Ok(())
    }

    /// Keeps `users_at_len` and `longest` in step with one queue going from `from` to `to`
    /// items (they differ by one).
    fn resized(&mut self, from: usize, to: usize) {
        if self.users_at_len.is_empty() {
            self.users_at_len = vec![0; QUEUE_ITEMS_PER_USER_MAX + 1];
        }
        if from > 0 {
            self.users_at_len[from] -= 1;
        }
        if to > 0 {
            self.users_at_len[to] += 1;
        }
        if to > self.longest {
            self.longest = to;
        }
        while self.longest > 0 && self.users_at_len[self.longest] == 0 {
            self.longest -= 1;
        }
    }

    /// Items in the longest queue here.
    pub fn longest_len(&self) -> usize {
        self.longest
    }

    /// Users with at least one item queued.
    pub fn users_queued(&self) -> usize {
        self.users_at_len.iter().map(|&n| n as usize).sum()
    }

    /// The user with the longest queue and its length. Scans every queue: for alarms only.
    pub fn longest_user(&self) -> Option<(&str, usize)> {
        self.by_user
            .iter()
            .map(|(u, q)| (u.as_str(), q.items.len()))
            .filter(|(_, n)| *n > 0)
            .max_by_key(|(_, n)| *n)
    }

    /// Marks item `id` durable; returns it, if it is still queued.
    pub fn mark_durable(&mut self, user: &str, id: u64) -> Option<&mut Item> {
        let q = self.by_user.get_mut(user)?;
        let item = q.items.iter_mut().rev().find(|i| i.id == id)?;
        item.durable = true;
        Some(item)
    }

    /// Removes item `id` (acked); returns it.
    pub fn remove(&mut self, user: &str, id: u64) -> Option<Item> {
        let q = self.by_user.get_mut(user)?;
        let pos = q.items.iter().position(|i| i.id == id)?;
        let item = q.items.remove(pos).expect("position is in range");
        if item.sent {
            q.in_flight -= 1;
            q.in_flight_bytes -= frame_bytes(&item.frame);
        }
        if !item.sender.is_empty() {
            q.messages -= 1;
            let held = q
                .by_sender
                .get_mut(&item.sender)
                .expect("every queued message is counted under its sender");
            *held -= 1;
            if *held == 0 {
                q.by_sender.remove(&item.sender);
            }
        }
        self.total -= 1;
        let len = q.items.len();
        let drop_queue = q.items.is_empty() && !q.push_notified;
        self.resized(len + 1, len);
        if drop_queue {
            self.by_user.remove(user);
        }
        Some(item)
    }

    /// Items to send now to `user` (unsent, in order, within the window); marks them sent.
    pub fn take_sendable(&mut self, user: &str) -> Vec<server_frame::Kind> {
        let Some(q) = self.by_user.get_mut(user) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in q.items.iter_mut() {
            if q.in_flight >= DELIVERY_WINDOW_ITEMS {
                break;
            }
            if item.sent {
                continue;
            }
            let bytes = frame_bytes(&item.frame);
            // At least one item is always in flight, whatever its size.
            if q.in_flight > 0 && q.in_flight_bytes + bytes > DELIVERY_WINDOW_BYTES {
                break;
            }
            item.sent = true;
            q.in_flight += 1;
            q.in_flight_bytes += bytes;
            out.push(item.frame.clone());
        }
        out
    }

    /// The user's session ended: whatever was sent and not acked goes again next time.
    pub fn session_ended(&mut self, user: &str) {
        if let Some(q) = self.by_user.get_mut(user) {
            q.items.iter_mut().for_each(|i| i.sent = false);
            q.in_flight = 0;
            q.in_flight_bytes = 0;
        }
    }

    /// The user's queue, if any.
    pub fn get_mut(&mut self, user: &str) -> Option<&mut Queue> {
        self.by_user.get_mut(user)
    }

    /// The user's queue, created if needed.
    pub fn entry(&mut self, user: &str) -> &mut Queue {
        self.by_user.entry(user.to_string()).or_default()
    }

    /// Items queued for `user`.
    pub fn len_of(&self, user: &str) -> usize {
        self.by_user.get(user).map_or(0, |q| q.items.len())
    }

    /// Whether `user`'s queue holds item `id`.
    pub fn contains(&self, user: &str, id: u64) -> bool {
        self.by_user
            .get(user)
            .is_some_and(|q| q.items.iter().any(|i| i.id == id))
    }

    /// Items queued on this shard.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Every item, for a snapshot.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Item)> {
        self.by_user
            .iter()
            .flat_map(|(u, q)| q.items.iter().map(move |i| (u, i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: u64) -> Item {
        Item {
            id,
            frame: server_frame::Kind::Pong(proto::v1::Pong { nonce: id }),
            sender: "+15550000002".into(),
            sender_device: 0,
            client_msg_id: id,
            group_id: 0,
            durable: false,
            answered: false,
            sent: false,
        }
    }

    fn nonces(v: Vec<server_frame::Kind>) -> Vec<u64> {
        v.into_iter()
            .map(|k| match k {
                server_frame::Kind::Pong(p) => p.nonce,
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn items_go_out_in_order_once_per_session_durable_or_not() {
        let mut q = Queues::default();
        for id in 1..=2 {
            q.push("u", item(id)).unwrap();
        }
        assert!(q.mark_durable("u", 2).is_some());
        assert_eq!(nonces(q.take_sendable("u")), vec![1, 2]);
        assert!(q.take_sendable("u").is_empty(), "sent once per session");
        q.push("u", item(3)).unwrap();
        assert_eq!(nonces(q.take_sendable("u")), vec![3], "sent before durable");
        q.session_ended("u");
        assert!(q.mark_durable("u", 4).is_none(), "no such item");
        assert_eq!(
            nonces(q.take_sendable("u")),
            vec![1, 2, 3],
            "resent after reconnect"
        );
        assert_eq!(q.remove("u", 2).map(|i| i.id), Some(2));
        assert_eq!(q.len_of("u"), 2);
        assert_eq!(q.total(), 2);
    }

    #[test]
    fn longest_queue_is_tracked_through_pushes_and_removals() {
        let mut q = Queues::default();
        assert_eq!((q.longest_len(), q.users_queued()), (0, 0));
        for id in 1..=3 {
            q.push("a", item(id)).unwrap();
        }
        q.push("b", item(10)).unwrap();
        assert_eq!((q.longest_len(), q.users_queued()), (3, 2));
        assert_eq!(q.longest_user(), Some(("a", 3)));
        q.remove("a", 1);
        q.remove("a", 2);
        assert_eq!(q.longest_len(), 1);
        q.remove("a", 3);
        q.remove("b", 10);
        assert_eq!((q.longest_len(), q.users_queued()), (0, 0));
        assert_eq!(q.longest_user(), None);
    }

    fn from(sender: &str, id: u64) -> Item {
        Item {
            sender: sender.into(),
            ..item(id)
        }
    }

    #[test]
    fn one_sender_gets_its_share_and_receipts_keep_their_room() {
        let mut q = Queues::default();
        let per = QUEUE_MESSAGES_PER_SENDER_MAX as u64;
        for id in 0..per {
            q.push("u", from("mallory", id)).unwrap();
        }
        assert_eq!(
            q.push("u", from("mallory", per)),
            Err(QueueFull::SenderShare)
        );
        q.push("u", from("alice", per + 1))
            .expect("another sender still gets through");
        // Enough senders fill the message share, never the receipts' room.
        let mut id = per + 2;
        'fill: for s in 0.. {
            for _ in 0..per {
                if q.len_of("u") >= QUEUE_MESSAGES_PER_USER_MAX {
                    break 'fill;
                }
                q.push("u", from(&format!("s{s}"), id)).unwrap();
                id += 1;
            }
        }
        assert_eq!(q.push("u", from("bob", id)), Err(QueueFull::Queue));
        q.push("u", from("", id + 1)).expect("a receipt still fits");
        assert_eq!(q.remove("u", 0).map(|i| i.id), Some(0));
        q.push("u", from("mallory", id + 2))
            .expect("an ack frees one of the sender's share");
    }

    #[test]
    fn window_and_capacity_are_bounded() {
        let mut q = Queues::default();
        for id in 0..QUEUE_ITEMS_PER_USER_MAX as u64 {
            q.push("u", from("", id)).unwrap();
            q.mark_durable("u", id);
        }
        assert_eq!(q.push("u", from("", u64::MAX)), Err(QueueFull::Queue));
        assert_eq!(q.take_sendable("u").len(), DELIVERY_WINDOW_ITEMS);
        q.remove("u", 0);
        assert_eq!(q.take_sendable("u").len(), 1, "an ack opens one slot");
    }
}

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

use crate::state::home::AsPhone;
use std::collections::{HashMap, VecDeque};

use proto::v1::server_frame;

use crate::state::effect::WireFrame;
use crate::state::home::Phone;
use crate::state::limits::{
    DELIVERY_WINDOW_BYTES, DELIVERY_WINDOW_ITEMS, QUEUE_ITEMS_PER_USER_MAX,
    QUEUE_MESSAGES_PER_SENDER_MAX, QUEUE_MESSAGES_PER_USER_MAX,
};
use crate::tables::steady_map::SteadyMap;

/// One queued item: 56 bytes in its queue and one allocation for the rest (the body of a
/// plain message, then its group id if it has one; or the encoded frame of a receipt or of
/// a message with media).
#[derive(Debug, Clone)]
pub struct Item {
    /// Server id (the message's id, or the receipt's id).
    pub id: u64,
    /// For messages: the sender (receipts go back there); `None` for receipts.
    pub sender: Option<Phone>,
    /// For messages: the sender's id.
    pub client_msg_id: u64,
    /// For messages: when the sender's home accepted it (ms).
    sent_at_ms: u64,
    /// For messages: the sender's device (`dedupe::device_of`).
    pub sender_device: u32,
    /// The record holding it has been fsynced.
    pub durable: bool,
    /// Whoever waits for the outcome (the sender's `ServerAck`, or the group home) was told:
    /// at durability or at the recipient's ack, whichever came first. Receipts and replayed
    /// items start answered.
    pub answered: bool,
    /// Sent on the current session and not yet acked.
    pub sent: bool,
    /// What `payload` holds.
    kind: PayloadKind,
    payload: Box<[u8]>,
}

/// What an item's payload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PayloadKind {
    /// A 1:1 message's body.
    Body,
    /// A group message's body, then its group id (8 bytes, big-endian).
    GroupBody,
    /// An encoded `ServerFrame`.
    Frame,
}

/// Bytes of the group id after a group message's body.
const GROUP_ID_BYTES: usize = 8;
/// `ServerFrame`'s field number of `message` (proto/switchboard.proto).
const SERVER_FRAME_MESSAGE_TAG: u32 = 8;

/// What a message item is made of.
#[derive(Debug, Clone)]
pub struct MessageParts {
    /// Server id.
    pub id: u64,
    /// Sender.
    pub sender: Phone,
    /// The sender's device.
    pub sender_device: u32,
    /// The sender's id for it.
    pub client_msg_id: u64,
    /// Group, or 0.
    pub group_id: u64,
    /// When the sender's home accepted it (ms).
    pub sent_at_ms: u64,
    /// Body.
    pub body: Vec<u8>,
    /// Media reference.
    pub media: Option<Box<proto::v1::Media>>,
}

/// Bytes of a length-delimited field with a one-byte key holding `len` bytes (0 if empty:
/// proto3 leaves empty fields out).
fn field_bytes(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        1 + prost::encoding::encoded_len_varint(len as u64) + len
    }
}

impl Item {
    /// A message, not yet durable nor answered.
    pub fn message(m: MessageParts) -> Item {
        let (kind, payload) = match m.media {
            None if m.group_id == 0 => (PayloadKind::Body, m.body.into_boxed_slice()),
            None => {
                let mut body = m.body;
                body.reserve_exact(GROUP_ID_BYTES);
                body.extend_from_slice(&m.group_id.to_be_bytes());
                (PayloadKind::GroupBody, body.into_boxed_slice())
            }
            Some(media) => {
                let frame = server_frame::Kind::Message(proto::v1::Message {
                    from: m.sender.to_e164(),
                    server_msg_id: m.id,
                    client_msg_id: m.client_msg_id,
                    sent_at_ms: m.sent_at_ms,
                    body: m.body,
                    media: Some(media),
                    group_id: m.group_id,
                });
                (PayloadKind::Frame, encode(frame))
            }
        };
        Item {
            id: m.id,
            sender: Some(m.sender),
            client_msg_id: m.client_msg_id,
            sent_at_ms: m.sent_at_ms,
            sender_device: m.sender_device,
            durable: false,
            answered: false,
            sent: false,
            kind,
            payload,
        }
    }

    /// Any other frame (a receipt): no sender, answered from the start.
    pub fn frame_only(id: u64, frame: server_frame::Kind) -> Item {
        Item {
            id,
            sender: None,
            client_msg_id: 0,
            sent_at_ms: 0,
            sender_device: 0,
            durable: false,
            answered: true,
            sent: false,
            kind: PayloadKind::Frame,
            payload: encode(frame),
        }
    }

    /// The item an item record holds (replayed: durable and answered), if its frame decodes.
    pub fn from_record(r: &crate::durable::record::ItemRec) -> Option<Item> {
        let frame = proto::codec::decode_server(&r.frame).ok()?.kind?;
        let sender = r.sender;
        let mut item = match (frame, sender) {
            (server_frame::Kind::Message(m), Some(sender)) => Item::message(MessageParts {
                id: r.id,
                sender,
                sender_device: r.sender_device,
                client_msg_id: r.client_msg_id,
                group_id: r.group_id,
                sent_at_ms: m.sent_at_ms,
                body: m.body,
                media: m.media,
            }),
            (frame, _) => Item::frame_only(r.id, frame),
        };
        item.durable = true;
        item.answered = true;
        Some(item)
    }

    /// For group messages: the group (0 for 1:1 messages and receipts).
    pub fn group_id(&self) -> u64 {
        match self.kind {
            PayloadKind::Body => 0,
            PayloadKind::GroupBody => {
                let at = self.payload.len() - GROUP_ID_BYTES;
                u64::from_be_bytes(self.payload[at..].try_into().expect("8 bytes"))
            }
            PayloadKind::Frame => match self.frame() {
                server_frame::Kind::Message(m) => m.group_id,
                _ => 0,
            },
        }
    }

    /// A plain message's body.
    pub(crate) fn body(&self) -> &[u8] {
        match self.kind {
            PayloadKind::GroupBody => &self.payload[..self.payload.len() - GROUP_ID_BYTES],
            _ => &self.payload,
        }
    }

    /// The frame to deliver.
    pub fn frame(&self) -> server_frame::Kind {
        if self.kind == PayloadKind::Frame {
            // Encoded by `encode` below: it decodes.
            return proto::codec::decode_server(&self.payload)
                .ok()
                .and_then(|f| f.kind)
                .expect("an item's own encoding decodes");
        }
        let from = self.sender.map(Phone::to_e164);
        server_frame::Kind::Message(self.header(from, self.body().to_vec()))
    }

    /// The frame, encoded (`ServerFrame`, no length header): for its record, and what a
    /// delivery sends. One allocation of the exact size; a plain message's fields are
    /// written straight in ([`Item::write_frame`]).
    pub fn encoded_frame(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.wire_bytes() - proto::limits::FRAME_HEADER_BYTES);
        self.write_frame(&mut out);
        out
    }

    /// Appends the encoded `ServerFrame` to `out`: an item holding a frame copies it (never
    /// decoded and encoded again); a plain message writes its `Message` fields directly, as
    /// prost would (same bytes, field order and proto3 defaults left out), with no
    /// `Message`, `String` or body copy in between.
    pub fn write_frame(&self, out: &mut Vec<u8>) {
        use prost::encoding::{encode_key, encode_varint, uint64, WireType};
        if self.kind == PayloadKind::Frame {
            return out.extend_from_slice(&self.payload);
        }
        let from_len = self.sender.map_or(0, Phone::e164_len);
        let message_len = self.message_len(from_len);
        encode_key(SERVER_FRAME_MESSAGE_TAG, WireType::LengthDelimited, out);
        encode_varint(message_len as u64, out);
        if let Some(sender) = self.sender {
            encode_key(1, WireType::LengthDelimited, out);
            encode_varint(from_len as u64, out);
            sender.write_e164_into(out);
        }
        for (tag, v) in [(2, self.id), (3, self.sent_at_ms)] {
            if v != 0 {
                uint64::encode(tag, &v, out);
            }
        }
        let body = self.body();
        if !body.is_empty() {
            encode_key(4, WireType::LengthDelimited, out);
            encode_varint(body.len() as u64, out);
            out.extend_from_slice(body);
        }
        for (tag, v) in [(6, self.group_id()), (7, self.client_msg_id)] {
            if v != 0 {
                uint64::encode(tag, &v, out);
            }
        }
    }

    /// Bytes of a plain message's `Message` (inside its `ServerFrame`).
    fn message_len(&self, from_len: usize) -> usize {
        use prost::Message;
        self.header(None, Vec::new()).encoded_len()
            + field_bytes(from_len)
            + field_bytes(self.body().len())
    }

    /// A plain message's fields, with `from` and `body` as given.
    fn header(&self, from: Option<String>, body: Vec<u8>) -> proto::v1::Message {
        proto::v1::Message {
            from: from.unwrap_or_default(),
            server_msg_id: self.id,
            client_msg_id: self.client_msg_id,
            sent_at_ms: self.sent_at_ms,
            body,
            media: None,
            group_id: self.group_id(),
        }
    }

    /// Bytes the frame takes on the wire (what the delivery window counts), computed
    /// without building it.
    pub fn wire_bytes(&self) -> usize {
        let frame = if self.kind == PayloadKind::Frame {
            self.payload.len()
        } else {
            let inner = self.message_len(self.sender.map_or(0, Phone::e164_len));
            1 + prost::encoding::encoded_len_varint(inner as u64) + inner
        };
        proto::limits::FRAME_HEADER_BYTES + frame
    }
}

/// `frame` as an encoded `ServerFrame`.
fn encode(frame: server_frame::Kind) -> Box<[u8]> {
    use prost::Message;
    proto::v1::ServerFrame { kind: Some(frame) }
        .encode_to_vec()
        .into_boxed_slice()
}

/// One user's queue.
#[derive(Debug, Default)]
pub struct Queue {
    items: VecDeque<Item>,
    in_flight: usize,
    in_flight_bytes: usize,
    /// Messages (items with a sender) held, per sender; a sender leaves at 0. Kept only
    /// while the queue holds at least `QUEUE_MESSAGES_PER_SENDER_MAX` messages (below that
    /// no sender can be at its share): built by one scan when it gets there, dropped when
    /// it falls to half, so a short queue pays nothing per sender.
    /// Boxed: 8 bytes in every queue instead of a map's 48 in each.
    #[allow(clippy::box_collection)]
    by_sender: Option<Box<HashMap<Phone, u32>>>,
    /// Messages held (at most `QUEUE_MESSAGES_PER_USER_MAX`).
    messages: usize,
    /// The push provider was told since the user was last online.
    pub push_notified: bool,
}

impl Queue {
    /// The items, in order.
    pub(crate) fn items(&self) -> impl Iterator<Item = &Item> {
        self.items.iter()
    }
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

/// Item buffers of emptied queues kept for the next queue made (an online user who acks
/// each message empties their queue each time: without these, each message would allocate
/// a queue's buffer and free it). At most this many, each of at most
/// [`SPARE_QUEUE_ITEMS_MAX`] items: ~14 KiB a shard.
pub const SPARE_QUEUE_BUFFERS_MAX: usize = 64;
/// Items of room a kept buffer may have at most (a longer one is freed).
pub const SPARE_QUEUE_ITEMS_MAX: usize = 4;

/// Buffers of delivered frames kept for the next deliveries: the adapter hands each
/// `Effect::Wire`'s bytes back once copied into the connection's output
/// ([`Queues::wire_done`]), so a delivery allocates no buffer of its own. At most this
/// many, each of at most [`SPARE_WIRE_BYTES_MAX`].
pub const SPARE_WIRE_BUFFERS_MAX: usize = 64;
/// Bytes of room a kept frame buffer may have at most (a larger one is freed).
pub const SPARE_WIRE_BYTES_MAX: usize = 4 * 1024;

/// `item`'s encoded frame, in one of `spare` if there is one ([`Item::encoded_frame`]).
fn frame_in(spare: &mut Vec<Vec<u8>>, item: &Item) -> Vec<u8> {
    let mut frame = spare.pop().unwrap_or_default();
    frame.reserve_exact(item.wire_bytes() - proto::limits::FRAME_HEADER_BYTES);
    item.write_frame(&mut frame);
    frame
}

/// Messages per sender in `items`.
fn count_senders(items: &VecDeque<Item>) -> HashMap<Phone, u32> {
    let mut m = HashMap::new();
    for sender in items.iter().filter_map(|i| i.sender) {
        *m.entry(sender).or_default() += 1;
    }
    m
}

/// All queues of users homed here.
#[derive(Debug, Default)]
pub struct Queues {
    /// A snapshot walks it between events (`snapshot.rs`).
    pub(crate) by_user: SteadyMap<Phone, Queue>,
    total: usize,
    /// Wire bytes of every item queued: about what a snapshot writes for them (the
    /// compaction policy's measure).
    bytes: usize,
    /// `users_at_len[n]`: users whose queue holds exactly `n` items (n ≥ 1); sized
    /// `QUEUE_ITEMS_PER_USER_MAX + 1` on first use, so the longest queue is known without a
    /// scan of the users.
    users_at_len: Vec<u32>,
    /// The longest queue's length (0 when every queue is empty).
    longest: usize,
    /// Empty item buffers of dropped queues, for the next queue made
    /// ([`SPARE_QUEUE_BUFFERS_MAX`]).
    spare: Vec<VecDeque<Item>>,
    /// Frame buffers handed back after delivery ([`SPARE_WIRE_BUFFERS_MAX`]).
    spare_wire: Vec<Vec<u8>>,
}

impl Queues {
    /// Appends an item (not yet durable unless replayed) within the queue's shares.
    pub fn push(&mut self, user: impl AsPhone, item: Item) -> Result<(), QueueFull> {
        if let Some(q) = user.as_phone().and_then(|u| self.by_user.get(&u)) {
            if let Some(sender) = item.sender {
                if q.messages >= QUEUE_MESSAGES_PER_USER_MAX {
                    return Err(QueueFull::Queue);
                }
                let held = q.by_sender.as_ref().and_then(|m| m.get(&sender).copied());
                if held.unwrap_or(0) as usize >= QUEUE_MESSAGES_PER_SENDER_MAX {
                    return Err(QueueFull::SenderShare);
                }
            }
        }
        self.restore(user, item)
    }

    /// Appends an item within the queue's hard limit only: replay keeps what was accepted
    /// under the shares of its time.
    pub fn restore(&mut self, user: impl AsPhone, item: Item) -> Result<(), QueueFull> {
        let Some(user) = user.as_phone() else {
            return Err(QueueFull::Queue); // users homed here are E.164
        };
        let spare = &mut self.spare;
        let q = self.by_user.get_or_insert_with(user, || Queue {
            items: spare.pop().unwrap_or_default(),
            ..Queue::default()
        });
        if q.items.len() >= QUEUE_ITEMS_PER_USER_MAX {
            return Err(QueueFull::Queue);
        }
        if q.items.len() == q.items.capacity() {
            // Grow by a sixteenth, not double: a queue's slack stays under 1/16 of its items
            // (3.5 B per 56-byte item) for a copy of at most `QUEUE_ITEMS_PER_USER_MAX`
            // items (~0.5 MiB, tens of µs) per growth.
            q.items.reserve_exact(q.items.len() / 16 + 4);
        }
        if let Some(sender) = item.sender {
            if let Some(m) = &mut q.by_sender {
                *m.entry(sender).or_default() += 1;
            }
            q.messages += 1;
        }
        self.bytes += item.wire_bytes();
        q.items.push_back(item);
        if q.by_sender.is_none() && q.messages >= QUEUE_MESSAGES_PER_SENDER_MAX {
            q.by_sender = Some(Box::new(count_senders(&q.items)));
        }
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
    pub fn longest_user(&self) -> Option<(Phone, usize)> {
        self.by_user
            .iter()
            .map(|(u, q)| (*u, q.items.len()))
            .filter(|(_, n)| *n > 0)
            .max_by_key(|(_, n)| *n)
    }

    /// Marks item `id` durable; returns it, if it is still queued.
    pub fn mark_durable(&mut self, user: impl AsPhone, id: u64) -> Option<&mut Item> {
        let q = self.by_user.get_mut(&user.as_phone()?)?;
        let item = q.items.iter_mut().rev().find(|i| i.id == id)?;
        item.durable = true;
        Some(item)
    }

    /// Removes item `id` (acked); returns it.
    pub fn remove(&mut self, user: impl AsPhone, id: u64) -> Option<Item> {
        let user = user.as_phone()?;
        let q = self.by_user.get_mut(&user)?;
        let pos = q.items.iter().position(|i| i.id == id)?;
        let item = q.items.remove(pos).expect("position is in range");
        let bytes = item.wire_bytes();
        if item.sent {
            q.in_flight -= 1;
            q.in_flight_bytes -= bytes;
        }
        if let Some(sender) = item.sender {
            q.messages -= 1;
            if let Some(m) = &mut q.by_sender {
                let held = m
                    .get_mut(&sender)
                    .expect("every queued message is counted under its sender");
                *held -= 1;
                if *held == 0 {
                    m.remove(&sender);
                }
            }
            if q.messages < QUEUE_MESSAGES_PER_SENDER_MAX / 2 {
                q.by_sender = None;
            }
        }
        if q.items.capacity() > 2 * q.items.len() + 64 {
            q.items.shrink_to(q.items.len() + q.items.len() / 16 + 4);
        }
        self.total -= 1;
        self.bytes -= bytes;
        let len = q.items.len();
        let drop_queue = q.items.is_empty() && !q.push_notified;
        self.resized(len + 1, len);
        if drop_queue {
            if let Some(q) = self.by_user.remove(&user) {
                self.keep_spare(q.items);
            }
        }
        Some(item)
    }

    /// Keeps an emptied queue's buffer for the next queue made, within the bounds.
    fn keep_spare(&mut self, items: VecDeque<Item>) {
        let small = (1..=SPARE_QUEUE_ITEMS_MAX).contains(&items.capacity());
        if items.is_empty() && small && self.spare.len() < SPARE_QUEUE_BUFFERS_MAX {
            self.spare.push(items);
        }
    }

    /// An empty buffer for a frame: a kept one if there is one.
    pub fn spare_frame(&mut self) -> Vec<u8> {
        self.spare_wire.pop().unwrap_or_default()
    }

    /// `item`'s encoded frame, written into a kept buffer if there is one.
    pub fn frame_of(&mut self, item: &Item) -> Vec<u8> {
        frame_in(&mut self.spare_wire, item)
    }

    /// A delivered frame's buffer, its bytes copied out: kept for the next delivery,
    /// within the bounds.
    pub fn wire_done(&mut self, mut bytes: Vec<u8>) {
        if bytes.capacity() <= SPARE_WIRE_BYTES_MAX
            && self.spare_wire.len() < SPARE_WIRE_BUFFERS_MAX
        {
            bytes.clear();
            self.spare_wire.push(bytes);
        }
    }

    /// Frame buffers kept for the next deliveries.
    pub fn spare_wire_buffers(&self) -> usize {
        self.spare_wire.len()
    }

    /// Empty buffers kept for the next queues made.
    pub fn spare_buffers(&self) -> usize {
        self.spare.len()
    }

    /// Hands `send` the items to send now to `user` (unsent, in order, within the window),
    /// encoded; marks them sent.
    pub fn take_sendable(&mut self, user: impl AsPhone, mut send: impl FnMut(WireFrame)) {
        let Some(q) = user.as_phone().and_then(|u| self.by_user.get_mut(&u)) else {
            return;
        };
        for item in q.items.iter_mut() {
            if q.in_flight >= DELIVERY_WINDOW_ITEMS {
                break;
            }
            if item.sent {
                continue;
            }
            let bytes = item.wire_bytes();
            // At least one item is always in flight, whatever its size.
            if q.in_flight > 0 && q.in_flight_bytes + bytes > DELIVERY_WINDOW_BYTES {
                break;
            }
            item.sent = true;
            q.in_flight += 1;
            q.in_flight_bytes += bytes;
            let frame = frame_in(&mut self.spare_wire, item);
            send(WireFrame {
                bytes: frame,
                sent_at_ms: item.sent_at_ms,
            });
        }
    }

    /// Ids of `user`'s items sent on the current session and not acked yet, in order (at
    /// most the delivery window): what a live upgrade tells the next process was sent.
    pub fn sent_ids(&self, user: impl AsPhone) -> Vec<u64> {
        let Some(q) = user.as_phone().and_then(|u| self.by_user.get(&u)) else {
            return Vec::new();
        };
        q.items.iter().filter(|i| i.sent).map(|i| i.id).collect()
    }

    /// A live upgrade: `user`'s session goes on here, and the old process had sent the
    /// items `ids` on it; they count in flight and are not sent again. Ids no longer queued
    /// (acked meanwhile) are skipped.
    pub fn mark_sent(&mut self, user: impl AsPhone, ids: &[u64]) {
        let Some(q) = user.as_phone().and_then(|u| self.by_user.get_mut(&u)) else {
            return;
        };
        for item in q.items.iter_mut() {
            if !item.sent && ids.contains(&item.id) {
                item.sent = true;
                q.in_flight += 1;
                q.in_flight_bytes += item.wire_bytes();
            }
        }
    }

    /// The user's session ended: whatever was sent and not acked goes again next time.
    pub fn session_ended(&mut self, user: impl AsPhone) {
        if let Some(q) = user.as_phone().and_then(|u| self.by_user.get_mut(&u)) {
            q.items.iter_mut().for_each(|i| i.sent = false);
            q.in_flight = 0;
            q.in_flight_bytes = 0;
        }
    }

    /// The user's queue, if any.
    pub fn get_mut(&mut self, user: impl AsPhone) -> Option<&mut Queue> {
        self.by_user.get_mut(&user.as_phone()?)
    }

    /// Items queued for `user`.
    pub fn len_of(&self, user: impl AsPhone) -> usize {
        user.as_phone()
            .and_then(|u| self.by_user.get(&u))
            .map_or(0, |q| q.items.len())
    }

    /// Whether `user`'s queue holds item `id`.
    pub fn contains(&self, user: impl AsPhone, id: u64) -> bool {
        user.as_phone()
            .and_then(|u| self.by_user.get(&u))
            .is_some_and(|q| q.items.iter().any(|i| i.id == id))
    }

    /// Wire bytes of the items queued on this shard.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Items queued on this shard.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Every item (invariant checks and tests; a snapshot walks the map instead).
    pub fn iter(&self) -> impl Iterator<Item = (Phone, &Item)> {
        self.by_user
            .iter()
            .flat_map(|(u, q)| q.items.iter().map(move |i| (*u, i)))
    }
}

#[cfg(test)]
mod tests;

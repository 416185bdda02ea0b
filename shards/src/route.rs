//! 1:1 routing: a send at the sender's home becomes a `Deliver` at the recipient's home,
//! which dedupes, stores and answers. Also the dedupe memory: (sender, client_msg_id, group,
//! recipient) → server id, bounded FIFO, rebuilt from the log at start.

use std::collections::{HashMap, VecDeque};

use engine::ConnId;
use proto::v1::{server_frame, ErrorCode, SendMessage};

use crate::effect::{error, AfterCommit, Effect, Out};
use crate::home::home_of_id;
use crate::limits::DEDUPE_ENTRIES_MAX;
use crate::mesh_msg::{Delivery, ReplyTo, ShardMsg};
use crate::offline::Item;
use crate::record::{DedupeRec, ItemRec};
use crate::state::ShardState;

/// One send as dedupe knows it: who sent it, under which client id, to which group (0 for
/// 1:1) and for whom (a group send is one copy per member).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupeKey {
    /// The sender's phone.
    pub sender: String,
    /// The sender's id for the send.
    pub client_msg_id: u64,
    /// The group, or 0.
    pub group_id: u64,
    /// The recipient's phone.
    pub recipient: String,
}

/// Remembered sends.
#[derive(Debug, Default)]
pub struct Dedupe {
    ids: HashMap<DedupeKey, u64>,
    order: VecDeque<DedupeKey>,
}

impl Dedupe {
    /// The server id a (sender, client id, group, recipient) already got.
    pub fn get(&self, key: &DedupeKey) -> Option<u64> {
        self.ids.get(key).copied()
    }

    /// Remembers a new send, forgetting the oldest past `DEDUPE_ENTRIES_MAX`.
    pub fn insert(&mut self, key: DedupeKey, id: u64) {
        if self.ids.insert(key.clone(), id).is_none() {
            self.order.push_back(key);
            if self.order.len() > DEDUPE_ENTRIES_MAX {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }

    /// Replay of a dedupe record.
    pub fn insert_durable(&mut self, d: &DedupeRec) {
        let key = DedupeKey {
            sender: d.sender.clone(),
            client_msg_id: d.client_msg_id,
            group_id: d.group_id,
            recipient: d.recipient.clone(),
        };
        self.insert(key, d.server_msg_id);
    }

    /// Replay of an item record.
    pub fn insert_from_item(&mut self, i: &ItemRec) {
        let key = DedupeKey {
            sender: i.sender.clone(),
            client_msg_id: i.client_msg_id,
            group_id: i.group_id,
            recipient: i.user.clone(),
        };
        self.insert(key, i.id);
    }

    /// Every entry, for a snapshot.
    pub fn records(&self) -> impl Iterator<Item = DedupeRec> + '_ {
        self.order.iter().filter_map(|k| {
            Some(DedupeRec {
                sender: k.sender.clone(),
                client_msg_id: k.client_msg_id,
                group_id: k.group_id,
                server_msg_id: *self.ids.get(k)?,
                recipient: k.recipient.clone(),
            })
        })
    }
}

impl ShardState {
    /// `SendMessage` at the sender's home: forward to the recipient's home.
    pub(crate) fn on_send(
        &mut self,
        now: u64,
        _conn: ConnId,
        user: String,
        s: SendMessage,
        out: &mut Out,
    ) {
        let home = self.home(&s.to);
        let d = Delivery {
            to: s.to,
            from: user,
            client_msg_id: s.client_msg_id,
            group_id: 0,
            body: s.body,
            media: s.media,
            sent_at_ms: now,
            reply: ReplyTo::Sender,
        };
        out.mesh(home, ShardMsg::Deliver(Box::new(d)));
    }

    /// `Deliver` at the recipient's home: dedupe, store, deliver at once if the recipient is
    /// online; answer once durable or acked by the recipient, whichever is first.
    pub(crate) fn on_deliver(&mut self, _now: u64, d: Delivery, out: &mut Out) {
        if !self.registry.exists(&d.to) {
            return self.answer(&d, Err((ErrorCode::UnknownRecipient, "no such user")), out);
        }
        let key = DedupeKey {
            sender: d.from.clone(),
            client_msg_id: d.client_msg_id,
            group_id: d.group_id,
            recipient: d.to.clone(),
        };
        if let Some(id) = self.dedupe.get(&key) {
            // A retry: same answer, nothing stored. It waits like any answer, so it never
            // overtakes the durability of the original.
            let mut deferred = Out::default();
            self.answer(&d, Ok(id), &mut deferred);
            out.after_commit
                .extend(deferred.now.into_iter().map(AfterCommit::Effect));
            return;
        }
        if let (Some(retry_after_ms), ReplyTo::Sender) = (self.busy, &d.reply) {
            // Overloaded at the recipient's home: refuse before storing anything.
            self.busy_rejects += 1;
            let frame = crate::state::busy(retry_after_ms, d.client_msg_id);
            let home = self.home(&d.from);
            let msg = ShardMsg::ToUser {
                user: d.from.clone(),
                frame,
            };
            return out.mesh(home, msg);
        }
        let id = self.ids.issue();
        let item = Item {
            id,
            frame: server_frame::Kind::Message(proto::v1::Message {
                from: d.from.clone(),
                server_msg_id: id,
                client_msg_id: d.client_msg_id,
                sent_at_ms: d.sent_at_ms,
                body: d.body.clone(),
                media: d.media.clone(),
                group_id: d.group_id,
            }),
            sender: d.from.clone(),
            client_msg_id: d.client_msg_id,
            group_id: d.group_id,
            durable: false,
            answered: false,
            sent: false,
        };
        if let Err(full) = self.enqueue(&d.to, item, out) {
            if full == crate::offline::QueueFull::SenderShare {
                self.abuse.queue_sender_share_full += 1;
            }
            return self.answer(
                &d,
                Err((ErrorCode::QueueFull, "recipient's queue is full")),
                out,
            );
        }
        self.dedupe.insert(key, id);
    }

    /// Tells whoever waits for a stored item that it is stored: the sender (`ServerAck`,
    /// through its home) for a 1:1 message, the group home for a group copy.
    pub(crate) fn answer_stored(
        &self,
        sender: &str,
        client_msg_id: u64,
        group_id: u64,
        id: u64,
        out: &mut Out,
    ) {
        let msg = if group_id == 0 {
            ShardMsg::ToUser {
                user: sender.to_string(),
                frame: server_frame::Kind::ServerAck(proto::v1::ServerAck {
                    client_msg_id,
                    server_msg_id: id,
                    group_id: 0,
                }),
            }
        } else {
            ShardMsg::GroupCopyDone {
                group_id,
                sender: sender.to_string(),
                client_msg_id,
            }
        };
        let to = if group_id == 0 {
            self.home(sender)
        } else {
            home_of_id(group_id)
        };
        out.now.push(Effect::Mesh(to, msg));
    }

    /// Tells whoever waits for `d`'s outcome.
    fn answer(&self, d: &Delivery, outcome: Result<u64, (ErrorCode, &str)>, out: &mut Out) {
        match d.reply {
            ReplyTo::Sender => {
                let frame = match outcome {
                    Ok(id) => server_frame::Kind::ServerAck(proto::v1::ServerAck {
                        client_msg_id: d.client_msg_id,
                        server_msg_id: id,
                        group_id: 0,
                    }),
                    Err((code, detail)) => error(code, detail, d.client_msg_id),
                };
                let home = self.home(&d.from);
                out.now.push(Effect::Mesh(
                    home,
                    ShardMsg::ToUser {
                        user: d.from.clone(),
                        frame,
                    },
                ));
            }
            ReplyTo::Group => {
                // A missing or full member does not fail the group send; it is counted done.
                let msg = ShardMsg::GroupCopyDone {
                    group_id: d.group_id,
                    sender: d.from.clone(),
                    client_msg_id: d.client_msg_id,
                };
                out.now.push(Effect::Mesh(home_of_id(d.group_id), msg));
            }
        }
    }
}

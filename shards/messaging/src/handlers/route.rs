//! 1:1 routing: a send at the sender's home becomes a `Deliver` at the recipient's home,
//! which dedupes (`dedupe.rs`), stores and answers.
//!
//! Whether a number is registered is never told apart (enumeration): a send to a number the
//! sender has no tie to first spends the sender's new-recipient budget (`admission.rs`) at
//! the sender's home, before anything knows; at the recipient's home the retry and `Busy`
//! checks come before the registry's, and a send to a number nobody has is answered like a
//! stored one: a fresh server id, remembered by dedupe and logged (a retry gets the same id,
//! after a restart too) and a `ServerAck` released by the same commit a stored message
//! waits for.
//! Nothing is delivered, so no receipt ever comes; a registered recipient's receipt needs its
//! owner to read a real message (empty bodies are refused by `proto::validate`).

use proto::ids::ConnId;
use proto::v1::{server_frame, ErrorCode, SendMessage};

use crate::state::effect::{error, rate_limited_send, AfterCommit, Effect, Out};
use crate::state::home::home_of_id;
use crate::state::home::Phone;
use crate::state::mesh_msg::{Delivery, ReplyTo, ShardMsg};
use crate::state::ShardState;
use crate::tables::dedupe::{device_of, DedupeKey, Seen};
use crate::tables::queues::{Item, MessageParts};

/// Boxes of deliveries kept for the next sends a shard makes (each one `Delivery`, ~100
/// bytes, emptied of its body and media).
pub const SPARE_DELIVERIES_MAX: usize = 64;

impl ShardState {
    /// `SendMessage` at the sender's home: spend the new-recipient budget if the recipient
    /// is new to the sender, then forward to the recipient's home.
    pub(crate) fn on_send(
        &mut self,
        now: u64,
        conn: ConnId,
        user: Phone,
        s: SendMessage,
        out: &mut Out,
    ) {
        let Some(to) = Phone::parse(&s.to) else {
            // Validated as E.164 where the frame entered (`proto::validate`).
            let detail = "recipient is not an E.164 phone";
            return out.error(conn, ErrorCode::BadPhone, detail, s.client_msg_id);
        };
        if let Err(retry_after_ms) = self.admit_recipient(now, user, to) {
            self.abuse.refused_new_recipient += 1;
            let detail = "too many new recipients this hour";
            return out.frame(
                conn,
                rate_limited_send(detail, retry_after_ms, s.client_msg_id),
            );
        }
        let home = self.home_phone(to);
        let device = self.device_of(user);
        let d = self.boxed(Delivery {
            to: Some(to),
            from: user,
            device,
            client_msg_id: s.client_msg_id,
            group_id: 0,
            body: s.body,
            media: s.media,
            media_base: None,
            sent_at_ms: now,
            reply: ReplyTo::Sender,
        });
        out.mesh(home, ShardMsg::Deliver(d));
    }

    /// Whether `user` (homed here) may write to `to` now (`admission.rs` rule 2).
    fn admit_recipient(&mut self, now: u64, from: Phone, to: Phone) -> Result<(), u64> {
        if self.admission.recipients.is_off() {
            return Ok(());
        }
        let presence = &self.presence;
        self.admission
            .admit_recipient(from, to, now, || presence.follows(from, to, now))
    }

    /// `Deliver` at the recipient's home ([`ShardState::deliver`]); its box is kept, emptied,
    /// for the next send made here (no allocation per message for it on one shard).
    pub(crate) fn on_deliver(&mut self, now: u64, mut d: Box<Delivery>, out: &mut Out) {
        self.deliver(now, &mut d, out);
        if self.spare_deliveries.len() < SPARE_DELIVERIES_MAX {
            d.body = Default::default();
            d.media = None;
            d.media_base = None;
            self.spare_deliveries.push(d);
        }
    }

    /// `d` in a box, one kept by [`ShardState::on_deliver`] if there is one.
    fn boxed(&mut self, d: Delivery) -> Box<Delivery> {
        match self.spare_deliveries.pop() {
            Some(mut b) => {
                *b = d;
                b
            }
            None => Box::new(d),
        }
    }

    /// Dedupe, store, deliver at once if the recipient is online; answer once durable or
    /// acked by the recipient, whichever is first.
    fn deliver(&mut self, now: u64, d: &mut Delivery, out: &mut Out) {
        let (sender, Some(recipient)) = (d.from, d.to) else {
            return; // a 1:1 delivery or a group copy names its recipient
        };
        let key = DedupeKey {
            sender,
            device: d.device,
            client_msg_id: d.client_msg_id,
            group_id: d.group_id,
            recipient,
        };
        let seen = match self.dedupe.check(&key) {
            Seen::New => None,
            Seen::Same(id) => Some(id),
            Seen::Forgotten => Some(0),
        };
        if let Some(id) = seen {
            // A retry: same answer (server id 0 when it is forgotten), nothing stored. It
            // waits like any answer, so it never overtakes the durability of the original.
            let mut deferred = Out::default();
            self.answer(d, Ok(id), &mut deferred);
            out.after_commit
                .extend(deferred.now.into_iter().map(AfterCommit::Effect));
            return;
        }
        if let (Some(retry_after_ms), ReplyTo::Sender) = (self.busy, &d.reply) {
            // Overloaded at the recipient's home: refuse before storing anything.
            out.busy_refusals += 1;
            let frame = crate::state::busy(retry_after_ms, d.client_msg_id);
            let home = self.home_phone(d.from);
            let msg = ShardMsg::ToUser {
                user: d.from,
                frame,
            };
            return out.mesh(home, msg);
        }
        let known = self.registry.exists(recipient);
        if !known && d.reply == ReplyTo::Group {
            // A member without an account: the copy is counted done.
            return self.answer(d, Err((ErrorCode::UnknownRecipient, "no such user")), out);
        }
        if !known {
            return self.accept_unknown(key, d, out);
        }
        if d.group_id == 0 {
            self.admission.wrote(sender, recipient, now);
        }
        if let Some(media) = d.media.as_mut() {
            self.sign_download(recipient, d.sent_at_ms, d.media_base.as_deref(), media);
        }
        let id = self.ids.issue();
        let item = Item::message(MessageParts {
            id,
            sender,
            sender_device: d.device,
            client_msg_id: d.client_msg_id,
            group_id: d.group_id,
            sent_at_ms: d.sent_at_ms,
            // The decoded buffer itself when this delivery holds the only reference.
            body: Vec::from(std::mem::take(&mut d.body)),
            media: d.media.take(),
        });
        if let Err(full) = self.enqueue(recipient, item, out) {
            if full == crate::tables::queues::QueueFull::SenderShare {
                self.abuse.queue_sender_share_full += 1;
            }
            return self.answer(
                d,
                Err((ErrorCode::QueueFull, "recipient's queue is full")),
                out,
            );
        }
        self.dedupe.insert(key, id);
    }

    /// A 1:1 send to a number nobody has: answered as if stored (module doc), with nothing
    /// queued or delivered. Its record is an item without a frame: replay remembers the
    /// copy in dedupe (so a retry gets the same id after a restart too) and queues nothing;
    /// the answer waits for its commit like a stored message's.
    fn accept_unknown(&mut self, key: DedupeKey, d: &Delivery, out: &mut Out) {
        self.abuse.sends_to_unknown += 1;
        let Some(to) = d.to else {
            return; // on_deliver checked it
        };
        let id = self.ids.issue();
        self.dedupe.insert(key, id);
        self.records_since_snapshot += 1;
        out.records.push(crate::durable::record::Record {
            kind: Some(crate::durable::record::record::Kind::Item(
                crate::durable::record::ItemRec {
                    user: Some(to),
                    id,
                    frame: Vec::new(),
                    sender: Some(d.from),
                    client_msg_id: d.client_msg_id,
                    group_id: 0,
                    sender_device: d.device,
                },
            )),
        });
        let mut deferred = Out::default();
        self.answer(d, Ok(id), &mut deferred);
        out.after_commit
            .extend(deferred.now.into_iter().map(AfterCommit::Effect));
    }

    /// The device `user` (homed here) sends from: 0 if it has no account.
    pub(crate) fn device_of(&self, user: impl crate::state::home::AsPhone) -> u32 {
        self.registry
            .verified(user)
            .map_or(0, |a| device_of(&a.key_hash))
    }

    /// Tells whoever waits for a stored item that it is stored: the sender (`ServerAck`,
    /// through its home) for a 1:1 message, the group home for a group copy.
    pub(crate) fn answer_stored(
        &self,
        sender: Phone,
        client_msg_id: u64,
        group_id: u64,
        (id, member): (u64, Phone),
        out: &mut Out,
    ) {
        let to = if group_id == 0 {
            self.home_phone(sender)
        } else {
            home_of_id(group_id)
        };
        let msg = if group_id == 0 {
            ShardMsg::ToUser {
                user: sender,
                frame: server_frame::Kind::ServerAck(proto::v1::ServerAck {
                    client_msg_id,
                    server_msg_id: id,
                    group_id: 0,
                }),
            }
        } else {
            ShardMsg::GroupCopyDone {
                group_id,
                sender: sender.to_e164(),
                client_msg_id,
                member: Some(member),
            }
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
                let home = self.home_phone(d.from);
                out.now.push(Effect::Mesh(
                    home,
                    ShardMsg::ToUser {
                        user: d.from,
                        frame,
                    },
                ));
            }
            ReplyTo::Group => {
                // A missing or full member does not fail the group send; it is counted done.
                let msg = ShardMsg::GroupCopyDone {
                    group_id: d.group_id,
                    sender: d.from.to_e164(),
                    client_msg_id: d.client_msg_id,
                    member: d.to,
                };
                out.now.push(Effect::Mesh(home_of_id(d.group_id), msg));
            }
        }
    }
}

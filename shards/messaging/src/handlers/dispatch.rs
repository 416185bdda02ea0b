//! Where each event enters a shard's service: a client frame ([`ShardState::on_frame`]),
//! a connection's close, a mesh message, a commit becoming durable. Each is sent to its
//! handler; nothing here does I/O. Also the steps every handler shares: the `Busy`
//! refusal, queueing an item with its record, sending what is sendable, the push.

use crate::durable::record::{record, Record};
use crate::state::effect::{AfterCommit, Out};
use crate::state::home::{AsPhone, Phone, E164_BYTES_MAX};
use crate::state::mesh_msg::ShardMsg;
use crate::state::{busy, item_record_with, ShardState};
use crate::tables::queues::Item;
use proto::ids::ConnId;
use proto::v1::{client_frame, ClientFrame, ErrorCode};

impl ShardState {
    /// Answers `client_msg_id` with `Busy` when the shard is overloaded; true if it did.
    pub(crate) fn refused_busy(&mut self, conn: ConnId, client_msg_id: u64, out: &mut Out) -> bool {
        let Some(retry_after_ms) = self.busy else {
            return false;
        };
        out.busy_refusals += 1;
        out.frame(conn, busy(retry_after_ms, client_msg_id));
        true
    }

    /// A frame from `conn` (already validated against the wire limits).
    pub fn on_frame(&mut self, now: u64, conn: ConnId, frame: ClientFrame, out: &mut Out) {
        self.reserve_ids(out);
        let Some(kind) = frame.kind else {
            return out.fail(conn, ErrorCode::UnexpectedFrame, "empty frame");
        };
        use client_frame::Kind as K;
        match kind {
            K::Ping(p) => out.frame(
                conn,
                proto::v1::server_frame::Kind::Pong(proto::v1::Pong { nonce: p.nonce }),
            ),
            K::Register(r) => self.on_register(now, conn, r, out),
            K::Verify(v) => self.on_verify(now, conn, v, out),
            K::Login(l) => self.on_login(now, conn, l, out),
            K::LoadTestLogin(l) => self.on_load_test_login(now, conn, l, out),
            other => {
                let Some(user) = self.sessions.user_of(conn) else {
                    return out.error(conn, ErrorCode::NotLoggedIn, "log in first", 0);
                };
                self.on_user_frame(now, conn, user, other, out);
            }
        }
    }

    fn on_user_frame(
        &mut self,
        now: u64,
        conn: ConnId,
        phone: Phone,
        kind: client_frame::Kind,
        out: &mut Out,
    ) {
        // The 1:1 path (send, ack, read) carries the `Phone`; the rest take the E.164 form,
        // printed on the stack: only handlers that keep it make a `String`.
        let mut buf = [0u8; E164_BYTES_MAX];
        let user = phone.e164_in(&mut buf);
        use client_frame::Kind as K;
        match kind {
            K::Send(s) if self.refused_busy(conn, s.client_msg_id, out) => {}
            K::GroupSend(g) if self.refused_busy(conn, g.client_msg_id, out) => {}
            // Fans out to every contact's home: admitted like a send.
            K::PresenceSubscribe(_) if self.refused_busy(conn, 0, out) => {}
            K::Send(s) => self.on_send(now, conn, phone, s, out),
            K::Ack(a) => self.on_ack(now, phone, a.server_msg_ids, out),
            K::Read(r) => self.on_read(now, phone, r.server_msg_ids, out),
            K::GroupCreate(g) => self.on_group_create(now, conn, user.to_owned(), g, out),
            K::GroupAdd(g) => self.group_op(
                user.to_owned(),
                crate::state::mesh_msg::GroupOp::Add {
                    group_id: g.group_id,
                    members: g.members,
                },
                g.group_id,
                out,
            ),
            K::GroupRemove(g) => self.group_op(
                user.to_owned(),
                crate::state::mesh_msg::GroupOp::Remove {
                    group_id: g.group_id,
                    members: g.members,
                },
                g.group_id,
                out,
            ),
            K::GroupMembers(g) => self.group_op(
                user.to_owned(),
                crate::state::mesh_msg::GroupOp::Members {
                    group_id: g.group_id,
                },
                g.group_id,
                out,
            ),
            K::GroupSend(g) => self.on_group_send(now, user.to_owned(), g, out),
            K::PresenceSubscribe(p) => {
                self.on_presence_subscribe(now, conn, user.to_owned(), p.contacts, out)
            }
            K::PresencePrivacy(p) => {
                // Validated: the value is a known visibility.
                let v = proto::v1::PresenceVisibility::try_from(p.visibility).unwrap_or_default();
                self.on_presence_privacy(user, v)
            }
            K::GroupPrivacy(p) => {
                // Validated: the value is a known policy.
                let p = proto::v1::GroupAddPolicy::try_from(p.who_can_add).unwrap_or_default();
                self.on_group_privacy(user, p)
            }
            K::MediaSlot(r) => self.on_media_slot(now, conn, user, r, out),
            K::Ping(_) | K::Register(_) | K::Verify(_) | K::Login(_) | K::LoadTestLogin(_) => {
                out.error(conn, ErrorCode::UnexpectedFrame, "already logged in", 0)
            }
        }
    }

    /// Records a new id reservation when the current one is half used (before the event's
    /// own records, so that none of its ids is durable without it). An event issues at most
    /// a group's worth of ids, far less than the half block left.
    fn reserve_ids(&mut self, out: &mut Out) {
        if let Some(next_seq) = self.ids.reservation_due() {
            out.records.push(Record {
                kind: Some(record::Kind::IdMark(crate::durable::record::IdMarkRec {
                    next_seq,
                })),
            });
        }
    }

    /// `conn` is gone.
    pub fn on_close(&mut self, now: u64, conn: ConnId, out: &mut Out) {
        self.prelogin.remove(&conn);
        if let Some(user) = self.sessions.closed(conn) {
            if self.sessions.conn_of(&user).is_none() {
                self.recent.forget(&user);
            }
            self.queues.session_ended(&user);
            self.registry.went_offline(&user, now);
            self.presence.session_ended(&user);
            self.presence_changed(&user, false, now, out);
        }
    }

    /// A message from another shard (or this one).
    pub fn on_mesh(&mut self, now: u64, msg: ShardMsg, out: &mut Out) {
        self.reserve_ids(out);
        match msg {
            ShardMsg::Deliver(d) => self.on_deliver(now, d, out),
            ShardMsg::ToUser { user, frame } => {
                if let Some(conn) = self.sessions.conn_of(user) {
                    out.frame(conn, frame);
                }
            }
            ShardMsg::Receipt {
                sender,
                by,
                receipt,
            } => self.on_receipt(now, (sender, by), receipt, out),
            ShardMsg::GroupSend(d) => self.on_group_send_at_home(now, *d, out),
            ShardMsg::GroupCopyDone {
                group_id,
                sender,
                client_msg_id,
                member: _,
            } => self.on_group_copy_done(group_id, sender, client_msg_id, out),
            ShardMsg::GroupOp { requester, op } => self.on_group_op_at_home(requester, op, out),
            ShardMsg::PresenceSub {
                contact,
                subscriber,
            } => self.on_presence_sub_at_home(now, contact, subscriber, out),
            ShardMsg::GroupAddAsk {
                group_id,
                adder,
                members,
            } => self.on_group_add_ask(now, group_id, adder, members, out),
            ShardMsg::GroupAddAnswer {
                group_id,
                adder,
                accepted,
                answered,
            } => self.on_group_add_answer(group_id, adder, accepted, answered, out),
            ShardMsg::GroupCopyFailed {
                group_id,
                sender,
                client_msg_id,
            } => self.on_group_copy_failed(group_id, sender, client_msg_id, out),
        }
    }

    /// Records appended before this point are durable: release what waited for them.
    pub fn on_durable(&mut self, after: AfterCommit, out: &mut Out) {
        match after {
            AfterCommit::Effect(e) => out.now.push(e),
            AfterCommit::AccountDurable {
                conn,
                phone,
                made_account,
            } => self.on_account_durable(conn, &phone, made_account, out),
            AfterCommit::ItemDurable { user, id } => {
                let Some(item) = self.queues.mark_durable(user, id) else {
                    return; // acked (and answered then) before it became durable
                };
                if !item.answered {
                    item.answered = true;
                    let (sender, client_msg_id, group_id) =
                        (item.sender, item.client_msg_id, item.group_id());
                    // Receipts start answered: an unanswered item is a message.
                    if let Some(sender) = sender {
                        self.answer_stored(sender, client_msg_id, group_id, (id, user), out);
                    }
                }
                if self.sessions.conn_of(user).is_none() {
                    self.maybe_push(user, out);
                }
            }
        }
    }

    /// Sends `user` what is unsent, within the window.
    pub(crate) fn pump(&mut self, user: impl AsPhone, out: &mut Out) {
        let Some(user) = user.as_phone() else {
            return;
        };
        let Some(conn) = self.sessions.conn_of(user) else {
            return;
        };
        self.queues.take_sendable(user, |w| {
            out.now.push(crate::state::effect::Effect::Wire(conn, w))
        });
    }

    fn maybe_push(&mut self, user: Phone, out: &mut Out) {
        if let Some(q) = self.queues.get_mut(user) {
            if !q.push_notified {
                q.push_notified = true;
                let user_id = self.registry.verified(user).map_or(0, |a| a.user_id);
                out.now.push(crate::state::effect::Effect::Push {
                    phone: user.to_e164(),
                    user_id,
                });
            }
        }
    }

    /// Queues `item` for `user` with its record, and sends it at once if `user` is online
    /// (delivery does not wait for the disk; the sender's answer does, or for the ack).
    pub(crate) fn enqueue(
        &mut self,
        user: impl AsPhone,
        item: Item,
        out: &mut Out,
    ) -> Result<(), crate::tables::queues::QueueFull> {
        let Some(user) = user.as_phone() else {
            return Err(crate::tables::queues::QueueFull::Queue); // users homed here are E.164
        };
        let rec = item_record_with(user, &item, self.queues.frame_of(&item));
        let id = item.id;
        self.queues.push(user, item)?;
        self.records_since_snapshot += 1;
        out.records.push(Record {
            kind: Some(record::Kind::Item(rec)),
        });
        out.after_commit.push(AfterCommit::ItemDurable { user, id });
        self.pump(user, out);
        Ok(())
    }
}

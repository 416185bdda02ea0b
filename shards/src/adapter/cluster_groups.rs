//! The adapter's side of mesh messages between boxes, groups and presence
//! (`crate::cluster::groups`): on a box of a cluster, a mesh message whose addressee is on
//! another box goes to the gateway instead of the state machines (steps 2 and 6 there):
//! - a group send, operation or add answer for a group not here, to the group's box;
//! - an add ask: its members with no account here are asked at their own box, one ask each
//!   (answers count members, so a creation waits for all of them), the others here;
//! - a copy of a group send for a member with no account here, to the member's box (its
//!   outcome comes back as [`Event::GroupCopy`](crate::cluster::port::Event));
//! - a group frame or a presence update for a user with no account here, to the user's box;
//! - a presence subscription to a contact with no account here, to the contact's box.
//!
//! A box without `--cluster` never comes here. This module owns those choices; the wire
//! form is `cluster/groups.rs`'s.

use engine::ShardIo;
use messaging::state::home::{home_of, home_of_id, Phone};
use messaging::state::mesh_msg::{ReplyTo, ShardMsg};
use proto::v1::server_frame;

use super::Switchboard;
use crate::cluster::groups;

impl Switchboard {
    /// Hands `msg` to the gateway if its addressee is on another box (module doc); gives it
    /// back otherwise (or the part of an ask that stays here).
    pub(super) fn forward_to_box(
        &mut self,
        io: &mut ShardIo<Self>,
        msg: ShardMsg,
    ) -> Option<ShardMsg> {
        let Some(state) = self.state.as_ref() else {
            return Some(msg);
        };
        let here = |phone: Option<Phone>| phone.is_some_and(|p| state.registry().exists(p));
        let leaves = match &msg {
            ShardMsg::Deliver(d) => d.reply == ReplyTo::Group && !here(d.to),
            ShardMsg::GroupSend(d) => !state.group_is_here(d.group_id),
            ShardMsg::GroupOp { op, .. } => {
                use messaging::state::mesh_msg::GroupOp as Op;
                let (Op::Add { group_id, .. }
                | Op::Remove { group_id, .. }
                | Op::Members { group_id }) = op;
                !state.group_is_here(*group_id)
            }
            ShardMsg::GroupAddAnswer { group_id, .. } => !state.group_is_here(*group_id),
            ShardMsg::GroupAddAsk { members, .. } => members.iter().any(|m| !here(Phone::parse(m))),
            ShardMsg::ToUser { user, frame } => !here(Some(*user)) && groups::may_cross(frame),
            ShardMsg::PresenceSub { contact, .. } => !here(Phone::parse(contact)),
            _ => false,
        };
        if !leaves {
            return Some(msg);
        }
        match msg {
            ShardMsg::Deliver(d) => {
                let (group_id, sender, client_msg_id) =
                    (d.group_id, d.from.to_e164(), d.client_msg_id);
                let port = self.cluster.as_mut()?;
                if port.send(d).is_err() {
                    // The link is full: the send fails and its sender retries.
                    let failed = ShardMsg::GroupCopyFailed {
                        group_id,
                        sender,
                        client_msg_id,
                    };
                    self.mesh_send(io, home_of_id(group_id), failed);
                }
                None
            }
            ShardMsg::GroupAddAsk {
                group_id,
                adder,
                members,
            } => {
                let (stay, leave): (Vec<String>, Vec<String>) =
                    members.into_iter().partition(|m| here(Phone::parse(m)));
                let mut stay = stay;
                let port = self.cluster.as_mut()?;
                for m in leave {
                    let ask = ShardMsg::GroupAddAsk {
                        group_id,
                        adder: adder.clone(),
                        members: vec![m.clone()],
                    };
                    let Ok(env) = groups::envelope(ask) else {
                        continue;
                    };
                    if !port.forward(Box::new(env)) {
                        // The link is full: asked here, where it is refused (no account),
                        // so the creation still hears about every member.
                        stay.push(m);
                    }
                }
                (!stay.is_empty()).then_some(ShardMsg::GroupAddAsk {
                    group_id,
                    adder,
                    members: stay,
                })
            }
            other => {
                let busy_for = match &other {
                    ShardMsg::GroupSend(d) => Some((Some(d.from), d.client_msg_id)),
                    ShardMsg::GroupOp { requester, .. } => Some((Phone::parse(requester), 0)),
                    _ => None,
                };
                let env = groups::envelope(other).ok()?;
                let port = self.cluster.as_mut()?;
                if !port.forward(Box::new(env)) {
                    // The link is full: the requester hears `Busy`; answers, frames and
                    // presence are dropped as a full mesh would drop a presence update.
                    if let Some((Some(user), client_msg_id)) = busy_for {
                        let busy = proto::v1::Busy {
                            retry_after_ms: crate::cluster::BUSY_RETRY_AFTER_MS,
                            client_msg_id,
                        };
                        let home = home_of(user, io.shard_count());
                        let frame = server_frame::Kind::Busy(busy);
                        self.mesh_send(io, home, ShardMsg::ToUser { user, frame });
                    }
                }
                None
            }
        }
    }

    /// A copy of a group send published to its member's box, or not: the group's home
    /// counts it.
    pub(super) fn group_copy_outcome(
        &mut self,
        io: &mut ShardIo<Self>,
        (group_id, sender, client_msg_id): (u64, String, u64),
        stored: bool,
    ) {
        let msg = if stored {
            ShardMsg::GroupCopyDone {
                group_id,
                sender,
                client_msg_id,
                member: None,
            }
        } else {
            ShardMsg::GroupCopyFailed {
                group_id,
                sender,
                client_msg_id,
            }
        };
        self.mesh_send(io, home_of_id(group_id), msg);
    }
}

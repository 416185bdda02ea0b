//! Mesh messages between boxes (issue 24): groups and presence. A group lives on its
//! creator's box (where its id was issued); members homed on other boxes reach it, and it
//! reaches them, through the boxes' streams (`cross.rs`), as the mesh messages a single box
//! passes between its shards. Presence rides the same envelopes (step 6).
//!
//! ## Steps
//! 1. Where a group lives: the `switchboard_groups` KV bucket maps a group id to its box.
//!    The group's box writes the entry (KV `create`: once, never moved) before it first asks
//!    another box about a member ([`KIND_ASK`]), so every member homed elsewhere joined
//!    after the entry existed. A group whose members all live on its box has no entry. Ids
//!    name their box (`box << 58 | shard << 48 | sequence`, `box_number.rs`), so two boxes
//!    never issue the same one; an id another box claimed first anyway (a box that served
//!    alone, box 0, before it joined) is a clash: the ask is answered as refused, counted in
//!    `cluster_group_clashes_total`.
//! 2. A shard hands the gateway, instead of its state machines, a mesh message whose
//!    addressee is not on this box (`adapter/cluster_groups.rs`): a `GroupSend`, `GroupOp`
//!    or `GroupAddAnswer` for a group not here goes to the group's box (step 1's entry); a
//!    `GroupAddAsk` about members with no account here is split, one ask per member, each
//!    to the member's home box; a group frame (`ServerAck` of a group send, `Busy`, errors,
//!    `GroupMembers`, `GroupUpdated`, `GroupCreated`) for a user with no account here goes
//!    to the user's home box. Each becomes one [`MeshPart`] envelope, in the order handed
//!    over, on the same publishing rounds as messages (`routes.rs`), by stream only (a
//!    direct request carrying one is refused).
//! 3. A copy of a group send for a member homed on another box is a message envelope with
//!    its group id (`cross.rs`), sent from the group's box on its sender's line like a
//!    1:1 message (`direct.rs`: straight to a live box, else by its stream), in order, as
//!    the members' dedupe needs. The copy counts done at the group's home once the
//!    member's box stored it or its stream holds it (as a 1:1 message's `ServerAck`); a
//!    copy not taken fails the send (`Busy` to the
//!    sender once every copy is accounted for; it retries under the same id: copies
//!    already stored are recognised by dedupe, the retried publish by JetStream's message
//!    id).
//! 4. At the receiving box an envelope is checked ([`MeshPart::check`]: its kind, phones,
//!    member lists within `GROUP_MEMBERS_MAX`, only group frames) and handed to the shard
//!    it addresses as that mesh message, which runs there as in a single box.
//! 5. Nobody to go to (no such group anywhere; a number with no home): a send or operation
//!    is answered `UNKNOWN_GROUP`, an ask refused as a single box refuses a number nobody
//!    has; a stream that does not take it: the requester hears `Busy`.
//! 6. Presence: a `PresenceSub` for a contact with no account here goes to the contact's
//!    home box ([`KIND_PRESENCE_SUB`]), and a presence update or answer for a subscriber
//!    with no account here to the subscriber's ([`KIND_PRESENCE`]: a `Presence` frame
//!    about a valid phone). Neither is published to a box that is not live (it would wait
//!    in that box's stream for nothing): a subscription to a contact there is answered
//!    `hidden` (its presence is not known now). When a box joins, starts again (holding
//!    no presence state) or leaves (its users' presence unknown), the other boxes' users
//!    of this session ask again about every contact they follow (`membership.rs` step 4,
//!    `presence_ask_again`): nobody is left shown online by a box that died, and a box
//!    that is back learns its users' subscribers again. Both are the mesh messages of one box, so the consent rules
//!    (`messaging::tables::presence`) run unchanged at the contact's home, where its
//!    following list and privacy setting live. A contact nobody has gets the hidden
//!    answer a single box gives. Presence is best-effort as on one box (in memory; an
//!    update NATS did not take is lost; subscriptions lapse at the contact's home).
//!
//! This module owns the wire form of those messages and the groups bucket; it must not
//! touch a shard's state.

use async_nats::jetstream::kv;
use messaging::state::home::Phone;
use proto::limits::GROUP_MEMBERS_MAX;
use proto::v1::{server_frame, ServerFrame};

use messaging::state::mesh_msg::{Delivery, GroupOp, ReplyTo, ShardMsg};

use super::cross::Envelope;

/// The KV bucket: group id (decimal) → the id of the box the group lives on.
pub const GROUPS_BUCKET: &str = "switchboard_groups";
/// Group ids the gateway remembers the box of; past it the cache starts over (groups
/// never move, so a forgotten one costs a KV read).
pub const GROUP_CACHE_ENTRIES_MAX: usize = 1 << 16;

/// A group send, to the group's box.
pub const KIND_SEND: u32 = 1;
/// A group operation (add, remove, members), to the group's box.
pub const KIND_OP: u32 = 2;
/// May the adder add this member (homed at the receiving box)?
pub const KIND_ASK: u32 = 3;
/// A member's home box answers an ask, to the group's box.
pub const KIND_ANSWER: u32 = 4;
/// A group frame for a user homed at the receiving box.
pub const KIND_TO_USER: u32 = 5;
/// `who` subscribes to the presence of `to` (homed at the receiving box): a mesh
/// `PresenceSub` (step 6).
pub const KIND_PRESENCE_SUB: u32 = 6;
/// A presence update or answer for a user homed at the receiving box (step 6).
pub const KIND_PRESENCE: u32 = 7;

const OP_ADD: u32 = 1;
const OP_REMOVE: u32 = 2;
const OP_MEMBERS: u32 = 3;

/// A mesh message between boxes other than a message or receipt: a group message or a
/// presence one (step 6), inside an [`Envelope`] (whose `to` is the user it is for, for
/// [`KIND_ASK`], [`KIND_TO_USER`], [`KIND_PRESENCE_SUB`] and [`KIND_PRESENCE`]; whose
/// message fields carry a group send). The envelope's field is still named `group`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MeshPart {
    /// `KIND_*`.
    #[prost(uint32, tag = "1")]
    pub kind: u32,
    /// The group.
    #[prost(uint64, tag = "2")]
    pub group_id: u64,
    /// The requester of an operation, the adder of an ask or answer.
    #[prost(string, tag = "3")]
    pub who: String,
    /// The members an operation names, an ask asks about, an answer accepts.
    #[prost(string, repeated, tag = "4")]
    pub members: Vec<String>,
    /// Which operation (`OP_*`).
    #[prost(uint32, tag = "5")]
    pub op: u32,
    /// How many members an answer is about.
    #[prost(uint32, tag = "6")]
    pub answered: u32,
    /// The frame of a [`KIND_TO_USER`] or [`KIND_PRESENCE`] (an encoded `ServerFrame`).
    #[prost(bytes = "vec", tag = "7")]
    pub frame: Vec<u8>,
    /// Unique per envelope its box sent (its `Nats-Msg-Id`).
    #[prost(string, tag = "8")]
    pub nonce: String,
}

/// Whether `frame` is one a box may hand a user of another box: a group frame or a
/// presence update (step 6) about a valid phone.
pub fn may_cross(frame: &server_frame::Kind) -> bool {
    is_presence_frame(frame) || is_group_frame(frame)
}

/// Whether `frame` is a presence update about a valid phone (step 6).
pub fn is_presence_frame(frame: &server_frame::Kind) -> bool {
    matches!(frame, server_frame::Kind::Presence(p) if proto::validate::is_e164(&p.phone))
}

/// Whether `frame` is one a group's box may hand a user of another box.
pub fn is_group_frame(frame: &server_frame::Kind) -> bool {
    use server_frame::Kind as K;
    match frame {
        K::ServerAck(a) => a.group_id != 0,
        K::Busy(_) | K::Error(_) | K::GroupCreated(_) => true,
        K::GroupMembers(m) => m.members.len() <= GROUP_MEMBERS_MAX,
        K::GroupUpdated(u) => u.members.len() <= GROUP_MEMBERS_MAX,
        _ => false,
    }
}

/// Where an envelope goes: the box of a group, or of a phone.
#[derive(Debug, PartialEq, Eq)]
pub enum Address<'a> {
    /// The group's box (step 1).
    Group(u64),
    /// The phone's home box.
    Phone(&'a str),
}

impl MeshPart {
    /// Whether it is presence (step 6): best-effort, never published to a box that is
    /// not live.
    pub fn is_presence(&self) -> bool {
        matches!(self.kind, KIND_PRESENCE_SUB | KIND_PRESENCE)
    }

    /// Where its envelope goes.
    pub fn address<'a>(&self, env: &'a Envelope) -> Address<'a> {
        match self.kind {
            KIND_ASK | KIND_TO_USER | KIND_PRESENCE_SUB | KIND_PRESENCE => Address::Phone(&env.to),
            _ => Address::Group(self.group_id),
        }
    }

    /// The `Nats-Msg-Id`: unique per envelope. (A send's retry is a second envelope: the
    /// group's home takes a retry still fanning out once, and the copies of one fanned out
    /// again are recognised by JetStream's message id and the members' dedupe; one id per
    /// send would have JetStream drop a retry after a failed copy, which nobody answers.)
    pub fn msg_id(&self, _env: &Envelope) -> String {
        format!("o.{}", self.nonce)
    }

    /// Step 4: whether a peer's envelope may be handed to a shard.
    pub fn check(&self, env: &Envelope) -> bool {
        use proto::validate::is_e164;
        let members_ok =
            self.members.len() <= GROUP_MEMBERS_MAX && self.members.iter().all(|m| is_e164(m));
        let no_group = matches!(self.kind, KIND_TO_USER | KIND_PRESENCE_SUB | KIND_PRESENCE);
        let base = members_ok && (no_group || self.group_id != 0);
        base && match self.kind {
            KIND_SEND => {
                is_e164(&env.from)
                    && env.body.len() <= proto::limits::BODY_BYTES_MAX
                    && (!env.body.is_empty() || env.media.is_some())
            }
            KIND_OP => is_e164(&self.who) && (OP_ADD..=OP_MEMBERS).contains(&self.op),
            KIND_ASK => is_e164(&self.who) && is_e164(&env.to) && !self.members.is_empty(),
            KIND_ANSWER => is_e164(&self.who) && self.answered as usize <= GROUP_MEMBERS_MAX,
            KIND_TO_USER | KIND_PRESENCE => {
                is_e164(&env.to) && frame_of(self.kind, &self.frame).is_some()
            }
            KIND_PRESENCE_SUB => is_e164(&self.who) && is_e164(&env.to),
            _ => false,
        }
    }
}

/// The frame a [`KIND_TO_USER`] (a group frame) or a [`KIND_PRESENCE`] (a presence update)
/// carries, if it is one of those.
fn frame_of(kind: u32, bytes: &[u8]) -> Option<server_frame::Kind> {
    use prost::Message as _;
    let f = ServerFrame::decode(bytes).ok()?.kind?;
    let ok = match kind {
        KIND_PRESENCE => is_presence_frame(&f),
        _ => is_group_frame(&f),
    };
    ok.then_some(f)
}

fn part(kind: u32, group_id: u64) -> MeshPart {
    MeshPart {
        kind,
        group_id,
        ..Default::default()
    }
}

/// Step 2: the envelope for a mesh message bound for another box, or the message back if
/// it is not one that crosses. An ask names one member (`members[0]`).
pub fn envelope(msg: ShardMsg) -> Result<Envelope, ShardMsg> {
    use prost::Message as _;
    let env = match msg {
        ShardMsg::GroupSend(d) => {
            let d = *d;
            let mut env = Envelope::message(&d);
            env.group_id = 0;
            env.group = Some(part(KIND_SEND, d.group_id));
            env
        }
        ShardMsg::GroupOp { requester, op } => {
            let (op, group_id, members) = match op {
                GroupOp::Add { group_id, members } => (OP_ADD, group_id, members),
                GroupOp::Remove { group_id, members } => (OP_REMOVE, group_id, members),
                GroupOp::Members { group_id } => (OP_MEMBERS, group_id, Vec::new()),
            };
            let g = MeshPart {
                who: requester,
                members,
                op,
                ..part(KIND_OP, group_id)
            };
            Envelope {
                group: Some(g),
                ..Default::default()
            }
        }
        ShardMsg::GroupAddAsk {
            group_id,
            adder,
            members,
        } => {
            let to = members.first().cloned().unwrap_or_default();
            let g = MeshPart {
                who: adder,
                members,
                ..part(KIND_ASK, group_id)
            };
            Envelope {
                to,
                group: Some(g),
                ..Default::default()
            }
        }
        ShardMsg::GroupAddAnswer {
            group_id,
            adder,
            accepted,
            answered,
        } => {
            let g = MeshPart {
                who: adder,
                members: accepted,
                answered,
                ..part(KIND_ANSWER, group_id)
            };
            Envelope {
                group: Some(g),
                ..Default::default()
            }
        }
        ShardMsg::PresenceSub {
            contact,
            subscriber,
        } => Envelope {
            to: contact,
            group: Some(MeshPart {
                who: subscriber,
                ..part(KIND_PRESENCE_SUB, 0)
            }),
            ..Default::default()
        },
        ShardMsg::ToUser { user, frame } if may_cross(&frame) => {
            let kind = if is_presence_frame(&frame) {
                KIND_PRESENCE
            } else {
                KIND_TO_USER
            };
            let f = ServerFrame { kind: Some(frame) };
            let g = MeshPart {
                frame: f.encode_to_vec(),
                ..part(kind, 0)
            };
            Envelope {
                to: user.to_e164(),
                group: Some(g),
                ..Default::default()
            }
        }
        other => return Err(other),
    };
    Ok(env)
}

/// Step 4: the mesh message a checked envelope carries.
pub fn into_msg(env: Envelope) -> Option<ShardMsg> {
    let g = env.group.clone()?;
    let msg = match g.kind {
        KIND_SEND => {
            let d = Delivery {
                to: None,
                from: Phone::parse(&env.from)?,
                device: env.device,
                client_msg_id: env.client_msg_id,
                group_id: g.group_id,
                body: env.body.into(),
                media: env.media.map(std::boxed::Box::new),
                media_base: (!env.media_base.is_empty()).then(|| env.media_base.into()),
                sent_at_ms: env.sent_at_ms,
                reply: ReplyTo::Group,
            };
            ShardMsg::GroupSend(std::boxed::Box::new(d))
        }
        KIND_OP => {
            let op = match g.op {
                OP_ADD => GroupOp::Add {
                    group_id: g.group_id,
                    members: g.members,
                },
                OP_REMOVE => GroupOp::Remove {
                    group_id: g.group_id,
                    members: g.members,
                },
                _ => GroupOp::Members {
                    group_id: g.group_id,
                },
            };
            ShardMsg::GroupOp {
                requester: g.who,
                op,
            }
        }
        KIND_ASK => ShardMsg::GroupAddAsk {
            group_id: g.group_id,
            adder: g.who,
            members: g.members,
        },
        KIND_ANSWER => ShardMsg::GroupAddAnswer {
            group_id: g.group_id,
            adder: g.who,
            accepted: g.members,
            answered: g.answered,
        },
        KIND_TO_USER | KIND_PRESENCE => ShardMsg::ToUser {
            user: Phone::parse(&env.to)?,
            frame: frame_of(g.kind, &g.frame)?,
        },
        KIND_PRESENCE_SUB => ShardMsg::PresenceSub {
            contact: env.to.clone(),
            subscriber: g.who,
        },
        _ => return None,
    };
    Some(msg)
}

/// The shard of `shards` a group message between boxes is for: the home of the group it
/// names, or of the user; `None` for a group id whose shard this box does not have.
pub fn home_shard(msg: &ShardMsg, shards: usize) -> Option<usize> {
    use messaging::state::home::{home_of, home_of_id, home_of_phone};
    let group = |id: u64| Some(home_of_id(id).0).filter(|s| *s < shards);
    match msg {
        ShardMsg::GroupSend(d) => group(d.group_id),
        ShardMsg::GroupOp { op, .. } => match op {
            GroupOp::Add { group_id, .. }
            | GroupOp::Remove { group_id, .. }
            | GroupOp::Members { group_id } => group(*group_id),
        },
        ShardMsg::GroupAddAnswer { group_id, .. } => group(*group_id),
        ShardMsg::GroupAddAsk { members, .. } => Some(home_of_phone(members.first()?, shards).0),
        ShardMsg::ToUser { user, .. } => Some(home_of(*user, shards).0),
        ShardMsg::PresenceSub { contact, .. } => Some(home_of_phone(contact, shards).0),
        _ => None,
    }
}

/// Step 5: what the requester (or the group's home) hears when an envelope had nowhere to
/// go (`nowhere`: no box has the group or the phone; else NATS did not take it); each to
/// its [`home_shard`].
pub fn undelivered(env: Envelope, nowhere: bool) -> Vec<ShardMsg> {
    use proto::v1::ErrorCode;
    let Some(g) = env.group else {
        return Vec::new();
    };
    // Phones a checked envelope names are E.164.
    let to_user = |user: String, frame| {
        let user = Phone::parse(&user)?;
        Some(ShardMsg::ToUser { user, frame })
    };
    let refusal = |user: String, cmid| {
        let frame = if nowhere {
            messaging::state::effect::error(ErrorCode::UnknownGroup, "no such group", cmid)
        } else {
            server_frame::Kind::Busy(proto::v1::Busy {
                retry_after_ms: super::BUSY_RETRY_AFTER_MS,
                client_msg_id: cmid,
            })
        };
        to_user(user, frame)
    };
    match g.kind {
        KIND_SEND => refusal(env.from, env.client_msg_id).into_iter().collect(),
        KIND_OP => refusal(g.who, 0).into_iter().collect(),
        KIND_ASK => {
            // As a single box answers about a number nobody has (`group_consent.rs`).
            let detail = format!(
                "group {}: not added (they do not accept adds from you): {}",
                g.group_id,
                g.members.join(", ")
            );
            let frame = messaging::state::effect::error(ErrorCode::GroupAddRefused, &detail, 0);
            let answer = ShardMsg::GroupAddAnswer {
                group_id: g.group_id,
                adder: g.who.clone(),
                accepted: Vec::new(),
                answered: u32::try_from(g.members.len()).unwrap_or(u32::MAX),
            };
            to_user(g.who, frame).into_iter().chain([answer]).collect()
        }
        // A number nobody has, or a contact on a box that is not live: the hidden answer a
        // single box gives for a number nobody has (step 6). A presence update NATS did not
        // take is lost, as a full mesh loses one.
        KIND_PRESENCE_SUB if nowhere => {
            let frame = server_frame::Kind::Presence(proto::v1::Presence {
                phone: env.to,
                online: false,
                last_seen_ms: 0,
                hidden: true,
            });
            to_user(g.who, frame).into_iter().collect()
        }
        _ => Vec::new(),
    }
}

/// The box group `group_id` lives on, from the bucket (`None`: no entry).
pub async fn box_of(groups: &kv::Store, group_id: u64) -> Result<Option<String>, String> {
    match groups.get(group_id.to_string()).await {
        Ok(Some(v)) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Step 1: records that group `group_id` lives on box `me`; `Ok(false)`: another box holds
/// that id (a clash).
pub async fn claim(groups: &kv::Store, group_id: u64, me: &str) -> Result<bool, String> {
    let key = group_id.to_string();
    if groups
        .create(&key, me.as_bytes().to_vec().into())
        .await
        .is_ok()
    {
        return Ok(true);
    }
    Ok(box_of(groups, group_id).await?.as_deref() == Some(me))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    const A: &str = "+15550000001";
    const B: &str = "+15550000002";

    fn crosses(msg: ShardMsg) -> ShardMsg {
        let env = envelope(msg).expect("crosses");
        let back = Envelope::decode(env.encode_to_vec().as_slice()).unwrap();
        assert!(back.check(), "{back:?}");
        into_msg(back).expect("a message")
    }

    #[test]
    fn group_messages_cross_as_they_left() {
        let ask = ShardMsg::GroupAddAsk {
            group_id: 7,
            adder: A.into(),
            members: vec![B.into()],
        };
        assert!(matches!(crosses(ask),
            ShardMsg::GroupAddAsk { group_id: 7, adder, members } if adder == A && members == [B]));
        let answer = ShardMsg::GroupAddAnswer {
            group_id: 7,
            adder: A.into(),
            accepted: vec![B.into()],
            answered: 1,
        };
        assert!(matches!(
            crosses(answer),
            ShardMsg::GroupAddAnswer { answered: 1, .. }
        ));
        let op = ShardMsg::GroupOp {
            requester: B.into(),
            op: GroupOp::Remove {
                group_id: 7,
                members: vec![B.into()],
            },
        };
        assert!(matches!(
            crosses(op),
            ShardMsg::GroupOp {
                op: GroupOp::Remove { group_id: 7, .. },
                ..
            }
        ));
        let ack = ShardMsg::ToUser {
            user: Phone::parse(B).unwrap(),
            frame: server_frame::Kind::ServerAck(proto::v1::ServerAck {
                client_msg_id: 3,
                server_msg_id: 4,
                group_id: 7,
            }),
        };
        assert!(
            matches!(crosses(ack), ShardMsg::ToUser { user, .. } if user == Phone::parse(B).unwrap())
        );
    }

    #[test]
    fn presence_crosses_as_it_left_and_a_bad_one_is_refused() {
        let sub = ShardMsg::PresenceSub {
            contact: B.into(),
            subscriber: A.into(),
        };
        let env = envelope(sub).unwrap();
        assert_eq!(env.group.as_ref().unwrap().address(&env), Address::Phone(B));
        assert!(
            matches!(crosses(ShardMsg::PresenceSub { contact: B.into(), subscriber: A.into() }),
            ShardMsg::PresenceSub { contact, subscriber } if contact == B && subscriber == A)
        );
        let seen = server_frame::Kind::Presence(proto::v1::Presence {
            phone: B.into(),
            online: true,
            last_seen_ms: 0,
            hidden: false,
        });
        let update = ShardMsg::ToUser {
            user: Phone::parse(A).unwrap(),
            frame: seen.clone(),
        };
        let upd = envelope(ShardMsg::ToUser {
            user: Phone::parse(A).unwrap(),
            frame: seen.clone(),
        })
        .unwrap();
        let g = upd.group.as_ref().unwrap();
        assert!(g.kind == KIND_PRESENCE && g.is_presence());
        assert!(matches!(crosses(update),
            ShardMsg::ToUser { user, frame: server_frame::Kind::Presence(p) }
                if user == Phone::parse(A).unwrap() && p.phone == B && p.online));
        // Each kind carries its own frames only.
        let mut as_group = upd.clone();
        as_group.group.as_mut().unwrap().kind = KIND_TO_USER;
        assert!(!as_group.check(), "presence is no group frame");
        let group_frame = ServerFrame {
            kind: Some(server_frame::Kind::Busy(Default::default())),
        };
        let mut as_presence = upd;
        as_presence.group.as_mut().unwrap().frame = group_frame.encode_to_vec();
        assert!(!as_presence.check(), "a group frame is no presence update");
        let mut bad = env.clone();
        bad.group.as_mut().unwrap().who = "nobody".into();
        assert!(!bad.check(), "a subscriber that is no phone");
        let mut bad = env;
        bad.to = "nobody".into();
        assert!(!bad.check(), "a contact that is no phone");
        // A number nobody has: the hidden answer, to the subscriber.
        let nowhere = envelope(ShardMsg::PresenceSub {
            contact: B.into(),
            subscriber: A.into(),
        })
        .unwrap();
        let answers = undelivered(nowhere.clone(), true);
        assert!(matches!(&answers[..],
            [ShardMsg::ToUser { user, frame: server_frame::Kind::Presence(p) }]
                if *user == Phone::parse(A).unwrap() && p.phone == B && p.hidden && !p.online && p.last_seen_ms == 0));
        assert!(
            undelivered(nowhere, false).is_empty(),
            "lost, as on a full mesh"
        );
    }

    #[test]
    fn a_peers_bad_group_envelope_is_refused() {
        let mut too_many = envelope(ShardMsg::GroupAddAsk {
            group_id: 7,
            adder: A.into(),
            members: vec![B.into()],
        })
        .unwrap();
        let g = too_many.group.as_mut().unwrap();
        g.members = vec![B.to_string(); GROUP_MEMBERS_MAX + 1];
        assert!(!too_many.check());
        let mut bad_phone = too_many.clone();
        bad_phone.group.as_mut().unwrap().members = vec!["nobody".into()];
        assert!(!bad_phone.check());
        // Only group frames and presence about a valid phone reach a user from another box.
        let login = ServerFrame {
            kind: Some(server_frame::Kind::Presence(Default::default())),
        };
        let not_group = Envelope {
            to: B.into(),
            group: Some(MeshPart {
                kind: KIND_TO_USER,
                frame: login.encode_to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(!not_group.check());
        let unknown_kind = Envelope {
            group: Some(part(99, 1)),
            ..Default::default()
        };
        assert!(!unknown_kind.check());
        // A 1:1 ack is no group frame: it never crosses this way.
        let one_to_one = ShardMsg::ToUser {
            user: Phone::parse(B).unwrap(),
            frame: server_frame::Kind::ServerAck(Default::default()),
        };
        assert!(envelope(one_to_one).is_err());
    }
}

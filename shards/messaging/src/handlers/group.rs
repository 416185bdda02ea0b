//! Group frames: at the requester's home they become mesh messages to the group's
//! home, which checks membership and rights, persists changes, and fans sends out.

use proto::ids::ConnId;
use proto::limits::GROUP_MEMBERS_MAX;
use proto::v1::{server_frame, ErrorCode, GroupCreate, GroupSend};

use crate::durable::record::{record, GroupRec, Record};
use crate::state::effect::{error, rate_limited, rate_limited_send, AfterCommit, Effect, Out};
use crate::state::home::{home_of_id, AsPhone, Phone};
use crate::state::limits::GROUPS_ADMINISTERED_PER_USER_MAX;
use crate::state::mesh_msg::{Delivery, GroupOp, ReplyTo, ShardMsg};
use crate::state::ShardState;

use crate::tables::groups::{FanoutEnd, FanoutKey};

impl ShardState {
    /// A frame for `user`, at their home; `None` when `user` is not E.164 (every phone in
    /// the state is: it passed `proto::validate`, or replay's parse).
    pub(crate) fn to_user(&self, user: impl AsPhone, frame: server_frame::Kind) -> Option<Effect> {
        let user = user.as_phone()?;
        Some(Effect::Mesh(
            self.home_phone(user),
            ShardMsg::ToUser { user, frame },
        ))
    }

    fn group_home_valid(&self, group_id: u64) -> bool {
        group_id != 0 && home_of_id(group_id).0 < self.shards
    }

    pub(crate) fn on_group_create(
        &mut self,
        now: u64,
        conn: ConnId,
        user: String,
        g: GroupCreate,
        out: &mut Out,
    ) {
        let mut members = vec![user.clone()];
        for m in g.members {
            if !members.contains(&m) {
                members.push(m);
            }
        }
        if members.len() > GROUP_MEMBERS_MAX {
            return out.error(conn, ErrorCode::GroupTooLarge, "too many members", 0);
        }
        // Creations still waiting for their members count too: the cap is exact.
        let held = self.groups.administered_by(&user) + self.consent.pending_by(&user);
        if held >= GROUPS_ADMINISTERED_PER_USER_MAX {
            self.abuse.groups_per_user_full += 1;
            return out.error(conn, ErrorCode::TooManyGroups, "too many groups", 0);
        }
        // The user is logged in here, so the phone is valid.
        if let Some(phone) = Phone::parse(&user) {
            if let Err(r) = self.user_budgets.admit_group_create(phone, now) {
                self.abuse.refused[r.kind as usize] += 1;
                let frame = rate_limited("too many new groups; try again later", r.retry_after_ms);
                return out.frame(conn, frame);
            }
        }
        let group_id = self.ids.issue();
        let rec = GroupRec {
            group_id,
            name: g.name,
            admin: user.clone(),
            members,
        };
        if rec.members.len() > 1 {
            // The others are asked first (`group_consent.rs`).
            return self.start_pending_create(now, conn, rec, g.client_req_id, out);
        }
        self.persist_group(rec, out);
        let created = server_frame::Kind::GroupCreated(proto::v1::GroupCreated {
            client_req_id: g.client_req_id,
            group_id,
        });
        // To the user's session at commit time, not to `conn`: a client that reconnected
        // meanwhile still learns its group's id.
        let e = self.to_user(&user, created);
        out.after_commit.extend(e.map(AfterCommit::Effect));
    }

    pub(crate) fn persist_group(&mut self, rec: GroupRec, out: &mut Out) {
        self.groups.apply(&rec);
        self.records_since_snapshot += 1;
        out.records.push(Record {
            kind: Some(record::Kind::Group(rec)),
        });
    }

    pub(crate) fn group_op(&mut self, user: String, op: GroupOp, group_id: u64, out: &mut Out) {
        if !self.group_home_valid(group_id) {
            let e = error(ErrorCode::UnknownGroup, "no such group", 0);
            return out.now.extend(self.to_user(&user, e));
        }
        out.mesh(
            home_of_id(group_id),
            ShardMsg::GroupOp {
                requester: user,
                op,
            },
        );
    }

    pub(crate) fn on_group_op_at_home(&mut self, requester: String, op: GroupOp, out: &mut Out) {
        let group_id = match &op {
            GroupOp::Add { group_id, .. }
            | GroupOp::Remove { group_id, .. }
            | GroupOp::Members { group_id } => *group_id,
        };
        let Some(group) = self.groups.get(group_id) else {
            let e = error(ErrorCode::UnknownGroup, "no such group", 0);
            return out.now.extend(self.to_user(&requester, e));
        };
        let is_member = group.members.contains(&requester);
        let refuse = |s: &Self, out: &mut Out, code, detail| {
            out.now
                .extend(s.to_user(&requester, error(code, detail, 0)))
        };
        match op {
            GroupOp::Members { .. } if is_member => {
                let frame = server_frame::Kind::GroupMembers(proto::v1::GroupMembers {
                    group_id,
                    name: group.name,
                    admin: group.admin,
                    members: group.members,
                });
                out.now.extend(self.to_user(&requester, frame));
            }
            GroupOp::Members { .. } => refuse(self, out, ErrorCode::NotGroupMember, "not a member"),
            GroupOp::Add { members, .. } if requester == group.admin => {
                // Each name once, however often the request repeats it (`dedup` only
                // caught neighbours); stop looking once past the limit.
                let mut new = group.members.clone();
                for m in members {
                    if new.len() > GROUP_MEMBERS_MAX {
                        break;
                    }
                    if !new.contains(&m) {
                        new.push(m);
                    }
                }
                if new.len() > GROUP_MEMBERS_MAX {
                    return refuse(self, out, ErrorCode::GroupTooLarge, "too many members");
                }
                // Added once their homes say they accept (`group_consent.rs`).
                let asked = new.split_off(group.members.len());
                self.ask_member_homes(group_id, &requester, asked, out);
            }
            GroupOp::Remove { members, .. }
                if requester == group.admin || (members.len() == 1 && members[0] == requester) =>
            {
                if members.contains(&group.admin) {
                    return refuse(
                        self,
                        out,
                        ErrorCode::NotGroupAdmin,
                        "the admin cannot leave",
                    );
                }
                let new = group
                    .members
                    .iter()
                    .filter(|m| !members.contains(m))
                    .cloned()
                    .collect();
                self.change_members(group_id, group, new, out);
            }
            GroupOp::Add { .. } | GroupOp::Remove { .. } => refuse(
                self,
                out,
                ErrorCode::NotGroupAdmin,
                "only the admin changes members",
            ),
        }
    }

    pub(crate) fn change_members(
        &mut self,
        group_id: u64,
        old: crate::tables::groups::Group,
        members: Vec<String>,
        out: &mut Out,
    ) {
        let rec = GroupRec {
            group_id,
            name: old.name,
            admin: old.admin,
            members: members.clone(),
        };
        self.persist_group(rec, out);
        let frame = server_frame::Kind::GroupUpdated(proto::v1::GroupUpdated {
            group_id,
            members: members.clone(),
        });
        let mut told: Vec<&String> = members.iter().collect();
        told.extend(old.members.iter().filter(|m| !members.contains(m)));
        for m in told {
            let e = self.to_user(m, frame.clone());
            out.after_commit.extend(e.map(AfterCommit::Effect));
        }
    }

    pub(crate) fn on_group_send(&mut self, now: u64, user: String, g: GroupSend, out: &mut Out) {
        if !self.group_home_valid(g.group_id) {
            let e = error(ErrorCode::UnknownGroup, "no such group", g.client_msg_id);
            return out.now.extend(self.to_user(&user, e));
        }
        let Some(from) = Phone::parse(&user) else {
            return; // validated at login
        };
        let device = self.device_of(from);
        let d = Delivery {
            to: None,
            from,
            device,
            client_msg_id: g.client_msg_id,
            group_id: g.group_id,
            body: g.body.into(),
            media: g.media,
            media_base: None,
            sent_at_ms: now,
            reply: ReplyTo::Group,
        };
        out.mesh(home_of_id(g.group_id), ShardMsg::GroupSend(Box::new(d)));
    }

    /// A group send at the group's home: refused with `Busy` when this shard is
    /// overloaded, or `RATE_LIMITED` when its copies are over the sender's fan-out
    /// budget here (`admission.rs`); else fanned out, one copy per member.
    pub(crate) fn on_group_send_at_home(&mut self, now: u64, d: Delivery, out: &mut Out) {
        let Some(group) = self.groups.get(d.group_id) else {
            let e = error(ErrorCode::UnknownGroup, "no such group", d.client_msg_id);
            return out.now.extend(self.to_user(d.from, e));
        };
        let from = d.from.to_e164();
        if !group.members.contains(&from) {
            let e = error(ErrorCode::NotGroupMember, "not a member", d.client_msg_id);
            return out.now.extend(self.to_user(d.from, e));
        }
        let copies: Vec<String> = group
            .members
            .iter()
            .filter(|m| **m != from)
            .cloned()
            .collect();
        let sender = d.from;
        if let Some(retry_after_ms) = self.busy {
            out.busy_refusals += 1;
            let frame = crate::state::busy(retry_after_ms, d.client_msg_id);
            return out.now.extend(self.to_user(d.from, frame));
        }
        // At most GROUP_MEMBERS_MAX copies.
        let units = u32::try_from(copies.len()).unwrap_or(u32::MAX);
        if let Err(retry_after_ms) = self.admission.group.admit(sender, units, now) {
            self.abuse.refused_group_fanout += 1;
            let detail = "group messages too fast";
            let frame = rate_limited_send(detail, retry_after_ms, d.client_msg_id);
            return out.now.extend(self.to_user(d.from, frame));
        }
        let ack_id = self.ids.issue();
        let key = FanoutKey {
            group_id: d.group_id,
            sender,
            client_msg_id: d.client_msg_id,
        };
        if copies.is_empty() {
            return out
                .now
                .extend(self.group_ack(d.from, d.client_msg_id, ack_id, d.group_id));
        }
        if !self.groups.start_fanout(key, copies.len(), ack_id) {
            return; // a retry of a send still fanning out: its answer is on the way
        }
        for m in copies {
            let copy = Delivery {
                to: Phone::parse(&m),
                ..d.clone()
            };
            out.mesh(self.home(&m), ShardMsg::Deliver(Box::new(copy)));
        }
    }

    fn group_ack(
        &self,
        sender: impl AsPhone,
        client_msg_id: u64,
        ack_id: u64,
        group_id: u64,
    ) -> Option<Effect> {
        let ack = server_frame::Kind::ServerAck(proto::v1::ServerAck {
            client_msg_id,
            server_msg_id: ack_id,
            group_id,
        });
        self.to_user(sender, ack)
    }

    pub(crate) fn on_group_copy_done(
        &mut self,
        group_id: u64,
        sender: String,
        client_msg_id: u64,
        out: &mut Out,
    ) {
        self.group_copy_outcome(group_id, sender, client_msg_id, true, out);
    }

    /// A copy another box's stream refused (`ShardMsg::GroupCopyFailed`): once every copy
    /// is accounted for, the sender hears `Busy` and retries under the same id; its
    /// members' dedupe recognises the copies already stored.
    pub(crate) fn on_group_copy_failed(
        &mut self,
        group_id: u64,
        sender: String,
        client_msg_id: u64,
        out: &mut Out,
    ) {
        self.group_copy_outcome(group_id, sender, client_msg_id, false, out);
    }

    fn group_copy_outcome(
        &mut self,
        group_id: u64,
        sender: String,
        client_msg_id: u64,
        stored: bool,
        out: &mut Out,
    ) {
        let Some(phone) = crate::state::home::Phone::parse(&sender) else {
            return; // senders of group copies are members: E.164
        };
        let key = FanoutKey {
            group_id,
            sender: phone,
            client_msg_id,
        };
        match self.groups.copy_done(&key, stored) {
            Some(FanoutEnd::Stored(ack_id)) => {
                out.now
                    .extend(self.group_ack(&sender, client_msg_id, ack_id, group_id));
            }
            Some(FanoutEnd::Failed) => {
                let retry = crate::state::limits::BUSY_RETRY_AFTER_MS;
                let frame = crate::state::busy(retry, client_msg_id);
                out.now.extend(self.to_user(&sender, frame));
            }
            None => {}
        }
    }

    /// Whether group `group_id` is homed here, or its creation waits here for answers (on
    /// a box of a cluster, a group frame for a group not here goes to the group's box).
    pub fn group_is_here(&self, group_id: u64) -> bool {
        self.groups.contains(group_id) || self.consent.pending.contains_key(&group_id)
    }
}

#[cfg(test)]
mod tests {
    use proto::v1::{client_frame, server_frame};

    use crate::sim::Sim;

    const A: &str = "+15550000001";
    const B: &str = "+15550000002";
    const C: &str = "+15550000003";
    const D: &str = "+15550000004";

    /// The members the admin's session last heard of, after creating a group with B.
    fn members_after_add(add: &[&str]) -> Vec<String> {
        let mut sim = Sim::new(2);
        for m in [B, C, D] {
            sim.login_open_to_groups(m, 1);
        }
        let a = sim.login(A, 0);
        sim.send(
            a,
            client_frame::Kind::GroupCreate(proto::v1::GroupCreate {
                client_req_id: 1,
                name: "g".into(),
                members: vec![B.into()],
            }),
        );
        sim.commit();
        let created = sim.take(a);
        let [server_frame::Kind::GroupCreated(g)] = &created[..] else {
            panic!("{created:?}")
        };
        sim.send(
            a,
            client_frame::Kind::GroupAdd(proto::v1::GroupAdd {
                group_id: g.group_id,
                members: add.iter().map(|m| m.to_string()).collect(),
            }),
        );
        sim.commit();
        // Each member's home answers on its own: one update per home.
        sim.take(a)
            .into_iter()
            .rev()
            .find_map(|f| match f {
                server_frame::Kind::GroupUpdated(u) => Some(u.members),
                _ => None,
            })
            .expect("GroupUpdated")
    }

    #[test]
    fn the_groups_an_admin_holds_are_counted_through_changes_and_deletion() {
        use crate::durable::record::GroupRec;
        let rec = |id: u64, admin: &str, members: &[&str]| GroupRec {
            group_id: id,
            name: "g".into(),
            admin: admin.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
        };
        let mut g = crate::tables::groups::Groups::default();
        g.apply(&rec(1, A, &[A, B]));
        g.apply(&rec(2, A, &[A]));
        g.apply(&rec(3, B, &[B]));
        assert_eq!((g.administered_by(A), g.administered_by(B)), (2, 1));
        g.apply(&rec(1, A, &[A, B, C]));
        assert_eq!(g.administered_by(A), 2, "a change is not a new group");
        g.apply(&rec(2, A, &[]));
        g.apply(&rec(9, A, &[]));
        assert_eq!(g.administered_by(A), 1, "deleted (or never there)");
        g.apply(&rec(1, A, &[]));
        assert_eq!(g.administered_by(A), 0);
        assert!(g.administered.len() == 1, "no entry left for A");
    }

    #[test]
    fn repeated_members_in_one_add_are_added_once() {
        // Not only neighbours: C and D alternate, B and A are already members.
        let mut members = members_after_add(&[C, D, C, B, D, C, A]);
        // Members join in the order their homes answer.
        members.sort();
        assert_eq!(members, vec![A, B, C, D]);
    }
}

//! Who may add a user to a group: each user's choice (`GroupPrivacy`: CONTACTS by default,
//! EVERYONE or NOBODY), checked at the user's home, where their contacts are known; and the
//! group creations waiting for those answers at the group's home.
//!
//! Steps, and why each is safe:
//! 1. `GroupCreate` (at the creator's home, which is the group's) or `GroupAdd` (at the
//!    group's home, from its admin): the members not yet in the group are split by home
//!    shard, and each home gets one [`ShardMsg::GroupAddAsk`]. Nobody is added yet. A
//!    creation with members waits in the pending table of
//!    [`GroupConsent`](crate::tables::consent::GroupConsent) until every home has answered
//!    (at most
//!    [`GROUP_CREATES_PENDING_MAX`](crate::state::limits::GROUP_CREATES_PENDING_MAX) per
//!    shard; an entry older than [`GROUP_ADD_ANSWER_TIMEOUT_MS`] is dropped when room is
//!    needed), so the group is written once, with the members who accepted.
//! 2. At each member's home, a member accepts when registered here and their choice allows
//!    the adder: EVERYONE; CONTACTS, while the member subscribes to the adder's presence
//!    (their address book: `presence.rs`, lapsing with the subscription); never NOBODY.
//!    The others are counted (`group_adds_refused_total`) and named to the adder in one
//!    `GROUP_ADD_REFUSED` error — the same answer for a number nobody has, so the answer
//!    tells a stranger nothing about who is registered.
//! 3. The home answers with [`ShardMsg::GroupAddAnswer`] (always, even if nobody accepted:
//!    a creation counts the members answered about, so an ask split between boxes of a
//!    cluster is counted right). At the group's home a pending creation gathers them;
//!    for an existing group, the accepted members not yet in it are added if the adder is
//!    still its admin and it stays within `GROUP_MEMBERS_MAX`.
//!
//! The choice is kept in memory like `PresencePrivacy` (clients send it after each login); a
//! restart forgets it and CONTACTS, the strictest default that still lets friends add you,
//! applies until then. This module owns the choices and the pending creations; the groups
//! themselves are `group.rs`'s, the contacts `presence.rs`'s.

use crate::durable::record::GroupRec;
use crate::state::effect::{error, rate_limited, AfterCommit, Out};
use crate::state::home::Phone;
use crate::state::limits::GROUP_ADD_ANSWER_TIMEOUT_MS;
use crate::state::mesh_msg::ShardMsg;
use crate::state::ShardState;
use crate::tables::consent::PendingCreate;
use proto::v1::{server_frame, ErrorCode, GroupAddPolicy};

impl ShardState {
    /// `user` (homed here) sets who may add them to groups.
    pub(crate) fn on_group_privacy(&mut self, user: &str, p: GroupAddPolicy) {
        self.consent.set_policy(user, p);
    }

    /// Whether `member` (homed here) accepts being added by `adder` now.
    fn accepts(&self, member: &str, adder: &str, now: u64) -> bool {
        if !self.registry.exists(member) {
            return false;
        }
        match self.consent.policy_of(member) {
            GroupAddPolicy::Everyone => true,
            GroupAddPolicy::Nobody => false,
            // A contact: `member` follows `adder` in presence (`adder` is in their address book).
            GroupAddPolicy::Contacts => Phone::parse(member)
                .zip(Phone::parse(adder))
                .is_some_and(|(m, a)| self.presence.follows(m, a, now)),
        }
    }

    /// Asks the homes of `members` whether `adder` may add them to `group_id`; returns how
    /// many members were asked (each answer says how many members it is about).
    pub(crate) fn ask_member_homes(
        &mut self,
        group_id: u64,
        adder: &str,
        members: Vec<String>,
        out: &mut Out,
    ) -> usize {
        let mut by_home: Vec<Vec<String>> = vec![Vec::new(); self.shards];
        for m in members {
            by_home[self.home(&m).0].push(m);
        }
        let mut asked = 0;
        for (shard, members) in by_home.into_iter().enumerate() {
            if members.is_empty() {
                continue;
            }
            asked += members.len();
            let ask = ShardMsg::GroupAddAsk {
                group_id,
                adder: adder.to_string(),
                members,
            };
            out.mesh(proto::ids::ShardId(shard), ask);
        }
        asked
    }

    /// A creation with members: it waits for their homes' answers (refused with
    /// RATE_LIMITED when `GROUP_CREATES_PENDING_MAX` wait already).
    pub(crate) fn start_pending_create(
        &mut self,
        now: u64,
        conn: proto::ids::ConnId,
        rec: GroupRec,
        client_req_id: u64,
        out: &mut Out,
    ) {
        if !self.consent.room(now) {
            self.abuse.group_creates_pending_full += 1;
            let frame = rate_limited(
                "too many groups being created; try again later",
                GROUP_ADD_ANSWER_TIMEOUT_MS,
            );
            return out.frame(conn, frame);
        }
        let wanted: Vec<String> = rec.members[1..].to_vec();
        let members_left = self.ask_member_homes(rec.group_id, &rec.admin, wanted.clone(), out);
        let p = PendingCreate {
            creator: rec.admin,
            name: rec.name,
            client_req_id,
            wanted,
            accepted: Vec::new(),
            members_left,
            expires_at_ms: now + GROUP_ADD_ANSWER_TIMEOUT_MS,
        };
        self.consent.pending.insert(rec.group_id, p);
    }

    /// At a member's home: which of `members` accept `adder`.
    pub(crate) fn on_group_add_ask(
        &mut self,
        now: u64,
        group_id: u64,
        adder: String,
        members: Vec<String>,
        out: &mut Out,
    ) {
        let answered = u32::try_from(members.len()).unwrap_or(u32::MAX);
        let (accepted, refused): (Vec<String>, Vec<String>) = members
            .into_iter()
            .partition(|m| self.accepts(m, &adder, now));
        if !refused.is_empty() {
            self.abuse.group_adds_refused += refused.len() as u64;
            let detail = format!(
                "group {group_id}: not added (they do not accept adds from you): {}",
                refused.join(", ")
            );
            let frame = error(ErrorCode::GroupAddRefused, &detail, 0);
            out.now.extend(self.to_user(&adder, frame));
        }
        let answer = ShardMsg::GroupAddAnswer {
            group_id,
            adder,
            accepted,
            answered,
        };
        out.mesh(crate::state::home::home_of_id(group_id), answer);
    }

    /// At the group's home: a member's home answered.
    pub(crate) fn on_group_add_answer(
        &mut self,
        group_id: u64,
        adder: String,
        accepted: Vec<String>,
        answered: u32,
        out: &mut Out,
    ) {
        match self.consent.pending.get_mut(&group_id) {
            Some(p) if p.creator == adder => {
                p.accepted.extend(accepted);
                p.members_left = p.members_left.saturating_sub(answered as usize);
                if p.members_left == 0 {
                    // Present: just matched.
                    let p = self
                        .consent
                        .pending
                        .remove(&group_id)
                        .expect("matched above");
                    self.finish_create(group_id, p, out);
                }
            }
            Some(_) => {}
            None => self.add_accepted(group_id, adder, accepted, out),
        }
    }

    fn finish_create(&mut self, group_id: u64, p: PendingCreate, out: &mut Out) {
        let mut members = vec![p.creator.clone()];
        members.extend(p.wanted.into_iter().filter(|m| p.accepted.contains(m)));
        let rec = GroupRec {
            group_id,
            name: p.name,
            admin: p.creator.clone(),
            members,
        };
        self.persist_group(rec, out);
        let created = server_frame::Kind::GroupCreated(proto::v1::GroupCreated {
            client_req_id: p.client_req_id,
            group_id,
        });
        let e = self.to_user(&p.creator, created);
        out.after_commit.extend(e.map(AfterCommit::Effect));
    }

    fn add_accepted(&mut self, group_id: u64, adder: String, accepted: Vec<String>, out: &mut Out) {
        let Some(group) = self.groups.get(group_id) else {
            return; // deleted meanwhile
        };
        if group.admin != adder {
            return;
        }
        let mut new = group.members.clone();
        for m in accepted {
            if !new.contains(&m) {
                new.push(m);
            }
        }
        if new.len() == group.members.len() {
            return;
        }
        if new.len() > proto::limits::GROUP_MEMBERS_MAX {
            let frame = error(ErrorCode::GroupTooLarge, "too many members", 0);
            return out.now.extend(self.to_user(&adder, frame));
        }
        self.change_members(group_id, group, new, out);
    }
}

#[cfg(test)]
mod tests {
    use proto::v1::{server_frame, ErrorCode, GroupCreate};

    use crate::durable::record::GroupRec;
    use crate::state::effect::{Effect, Out};
    use crate::state::limits::GROUPS_ADMINISTERED_PER_USER_MAX;
    use crate::state::{ServiceSettings, ShardState};

    const U: &str = "+15550000001";

    #[test]
    fn creations_waiting_for_answers_count_against_the_cap_on_groups() {
        let random: crate::state::RandomSource = Box::new(|b: &mut [u8]| b.fill(1));
        let mut s = ShardState::new(
            proto::ids::ShardId(0),
            1,
            ServiceSettings::default(),
            random,
            0,
        );
        for id in 1..GROUPS_ADMINISTERED_PER_USER_MAX as u64 {
            s.groups.apply(&GroupRec {
                group_id: id,
                name: "g".into(),
                admin: U.into(),
                members: vec![U.into()],
            });
        }
        let conn = proto::ids::ConnId::from_u64(1);
        let create = |req| GroupCreate {
            client_req_id: req,
            name: "g".into(),
            members: vec!["+15550000002".into()],
        };
        // One more is allowed: it waits for its member's home (the ask is never answered).
        let mut out = Out::default();
        s.on_group_create(0, conn, U.into(), create(1), &mut out);
        assert_eq!(s.consent.pending_by(U), 1);
        let mut out = Out::default();
        s.on_group_create(0, conn, U.into(), create(2), &mut out);
        let refused = out.now.iter().any(|e| {
            matches!(e, Effect::Frame(_, server_frame::Kind::Error(x))
                if x.code == ErrorCode::TooManyGroups as i32)
        });
        assert!(refused, "{:?}", out.now);
        assert_eq!(s.abuse.groups_per_user_full, 1);
    }

    fn shard() -> ShardState {
        let random: crate::state::RandomSource = Box::new(|b: &mut [u8]| b.fill(1));
        ShardState::new(
            proto::ids::ShardId(0),
            1,
            ServiceSettings::default(),
            random,
            0,
        )
    }

    /// On a box of a cluster one ask is split between boxes (members homed elsewhere are
    /// asked at their own box): a creation waits for an answer about every member, however
    /// many answers that takes.
    #[test]
    fn a_creation_waits_for_an_answer_about_each_member_however_the_ask_was_split() {
        let mut s = shard();
        let conn = proto::ids::ConnId::from_u64(1);
        let create = GroupCreate {
            client_req_id: 1,
            name: "g".into(),
            members: vec!["+15550000002".into(), "+15550000003".into()],
        };
        let mut out = Out::default();
        s.on_group_create(0, conn, U.into(), create, &mut out);
        let group_id = *s.consent.pending.keys().next().expect("pending");
        let answer = |who: &str| crate::state::mesh_msg::ShardMsg::GroupAddAnswer {
            group_id,
            adder: U.into(),
            accepted: vec![who.into()],
            answered: 1,
        };
        let mut out = Out::default();
        s.on_mesh(0, answer("+15550000002"), &mut out);
        assert!(s.group_is_here(group_id), "pending is here");
        assert!(
            s.groups.get(group_id).is_none(),
            "one member still unanswered"
        );
        s.on_mesh(0, answer("+15550000003"), &mut out);
        let g = s.groups.get(group_id).expect("created");
        assert_eq!(g.members, vec![U, "+15550000002", "+15550000003"]);
    }

    /// A copy another box's stream refused fails the send: once every copy is accounted
    /// for, its sender hears `Busy` once (not an ack); a retry meanwhile is "on its way".
    #[test]
    fn a_group_copy_refused_by_another_box_answers_the_sender_busy() {
        use crate::tables::groups::FanoutKey;
        let mut s = shard();
        let key = FanoutKey {
            group_id: 9,
            sender: crate::state::home::Phone::parse(U).unwrap(),
            client_msg_id: 5,
        };
        assert!(s.groups.start_fanout(key, 2, 77));
        let mut out = Out::default();
        s.on_group_copy_failed(9, U.into(), 5, &mut out);
        assert!(out.now.is_empty(), "one copy still out: {:?}", out.now);
        assert!(!s.groups.start_fanout(key, 2, 78), "a retry now waits");
        s.on_group_copy_done(9, U.into(), 5, &mut out);
        assert!(
            matches!(&out.now[..], [Effect::Mesh(_, crate::state::mesh_msg::ShardMsg::ToUser {
                frame: server_frame::Kind::Busy(b), ..
            })] if b.client_msg_id == 5),
            "{:?}",
            out.now
        );
        let mut out = Out::default();
        s.on_group_copy_done(9, U.into(), 5, &mut out);
        assert!(out.now.is_empty(), "ended: {:?}", out.now);
        assert!(s.groups.start_fanout(key, 2, 78), "the retry counts anew");
    }
}

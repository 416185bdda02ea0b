//! The group attacks of issue 22 against the simulated cluster with fake time: one account
//! creating groups without end (item 3), and strangers adding anyone to a group (item 9).
//! (The same over real sockets: `tests/security_groups.rs`.)

use proto::v1::{client_frame::Kind as K, server_frame::Kind as S, ErrorCode};

use crate::sim::Sim;
use crate::state::limits::GROUPS_ADMINISTERED_PER_USER_MAX;
use crate::tables::budgets::{BudgetKind, GROUP_CREATES_PER_USER_PER_HOUR, HOUR_MS};

fn create(req: u64, members: &[&str]) -> K {
    K::GroupCreate(proto::v1::GroupCreate {
        client_req_id: req,
        name: format!("g{req}"),
        members: members.iter().map(|m| m.to_string()).collect(),
    })
}

/// The code of the first error in `frames`, if any.
fn error_of(frames: &[S]) -> Option<ErrorCode> {
    frames.iter().find_map(|f| match f {
        S::Error(e) => ErrorCode::try_from(e.code).ok(),
        _ => None,
    })
}

fn created(frames: &[S]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| match f {
            S::GroupCreated(g) => Some(g.group_id),
            _ => None,
        })
        .collect()
}

/// Creates a group and returns its id, or the error it got.
fn try_create(
    sim: &mut Sim,
    c: proto::ids::ConnId,
    req: u64,
    members: &[&str],
) -> Result<u64, ErrorCode> {
    sim.send(c, create(req, members));
    sim.commit();
    let frames = sim.take(c);
    match (created(&frames).first(), error_of(&frames)) {
        (Some(&id), None) => Ok(id),
        (_, Some(code)) => Err(code),
        (None, None) => panic!("no answer: {frames:?}"),
    }
}

#[test]
fn item3_group_creation_is_held_per_user_per_hour_and_in_all() {
    let mut sim = Sim::new(2);
    let a = "+15550000001";
    let c = sim.login(a, 0);
    for req in 0..GROUP_CREATES_PER_USER_PER_HOUR as u64 {
        try_create(&mut sim, c, req, &[]).unwrap();
    }
    assert_eq!(
        try_create(&mut sim, c, 999, &[]),
        Err(ErrorCode::RateLimited),
        "the hour's budget is spent"
    );
    let refused = |sim: &Sim| -> u64 {
        sim.shards
            .iter()
            .map(|s| s.abuse.refused[BudgetKind::GroupCreate as usize])
            .sum()
    };
    assert_eq!(refused(&sim), 1);
    // Another user is not held by it.
    let b = sim.login("+15550000002", 1);
    try_create(&mut sim, b, 1, &[]).unwrap();

    // Hour after hour the budget refills, up to the cap on groups administered.
    let mut made = GROUP_CREATES_PER_USER_PER_HOUR as usize;
    let mut req = 1_000;
    while made < GROUPS_ADMINISTERED_PER_USER_MAX {
        sim.now += HOUR_MS;
        let c = sim.login(a, 0);
        for _ in 0..GROUP_CREATES_PER_USER_PER_HOUR {
            if made == GROUPS_ADMINISTERED_PER_USER_MAX {
                break;
            }
            req += 1;
            try_create(&mut sim, c, req, &[]).unwrap();
            made += 1;
        }
    }
    sim.now += HOUR_MS;
    let c = sim.login(a, 0);
    assert_eq!(
        try_create(&mut sim, c, 5_000, &[]),
        Err(ErrorCode::TooManyGroups)
    );
    let full: u64 = sim
        .shards
        .iter()
        .map(|s| s.abuse.groups_per_user_full)
        .sum();
    assert_eq!(full, 1);
    // The count survives a restart (it is rebuilt from the log's group records).
    sim.restart();
    let c = sim.login(a, 0);
    assert_eq!(
        try_create(&mut sim, c, 5_001, &[]),
        Err(ErrorCode::TooManyGroups)
    );
    let stats = sim.shards[crate::state::home::home_of_phone(a, 2).0].abuse_stats();
    assert!(
        stats.contains(&("groups_per_user_full_total", 1)),
        "{stats:?}"
    );
}

fn privacy(p: proto::v1::GroupAddPolicy) -> K {
    K::GroupPrivacy(proto::v1::GroupPrivacy {
        who_can_add: p as i32,
    })
}

fn follow(contacts: &[&str]) -> K {
    K::PresenceSubscribe(proto::v1::PresenceSubscribe {
        contacts: contacts.iter().map(|c| c.to_string()).collect(),
    })
}

/// The group's members as its admin reads them.
fn members_of(sim: &mut Sim, admin: proto::ids::ConnId, group_id: u64) -> Vec<String> {
    sim.take(admin);
    sim.send(
        admin,
        K::GroupMembers(proto::v1::GroupMembersRequest { group_id }),
    );
    sim.commit();
    sim.take(admin)
        .into_iter()
        .find_map(|f| match f {
            S::GroupMembers(m) => Some(m.members),
            _ => None,
        })
        .expect("GroupMembers")
}

/// The details of the GROUP_ADD_REFUSED errors in `frames`.
fn add_refusals(frames: &[S]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| match f {
            S::Error(e) if e.code == ErrorCode::GroupAddRefused as i32 => Some(e.detail.clone()),
            _ => None,
        })
        .collect()
}

fn adds_refused(sim: &Sim) -> u64 {
    sim.shards.iter().map(|s| s.abuse.group_adds_refused).sum()
}

#[test]
fn item9_a_stranger_cannot_add_anyone_and_learns_nothing_about_who_is_registered() {
    let mut sim = Sim::new(2);
    let (v, s, nobody) = ("+15550000001", "+15550000002", "+15559999999");
    let victim = sim.login(v, 0);
    let stranger = sim.login(s, 1);
    sim.send(stranger, create(1, &[v]));
    sim.commit();
    let frames = sim.take(stranger);
    let [group_id] = created(&frames)[..] else {
        panic!("{frames:?}")
    };
    let refusals = add_refusals(&frames);
    assert_eq!(refusals.len(), 1, "{frames:?}");
    assert!(refusals[0].contains(v));
    assert_eq!(
        members_of(&mut sim, stranger, group_id),
        vec![s.to_string()]
    );
    assert!(sim.take(victim).is_empty(), "the victim hears nothing");
    assert_eq!(adds_refused(&sim), 1);

    // A number nobody has gets the very same answer.
    sim.send(
        stranger,
        K::GroupAdd(proto::v1::GroupAdd {
            group_id,
            members: vec![nobody.into()],
        }),
    );
    sim.commit();
    let other = add_refusals(&sim.take(stranger));
    assert_eq!(other, vec![refusals[0].replace(v, nobody)]);
    assert_eq!(
        members_of(&mut sim, stranger, group_id),
        vec![s.to_string()]
    );
    assert_eq!(adds_refused(&sim), 2);
}

#[test]
fn item9_a_member_who_left_is_not_added_back_by_a_stranger() {
    let mut sim = Sim::new(2);
    let (v, s) = ("+15550000001", "+15550000002");
    // The victim was in the group once (they allowed everyone then).
    let victim = sim.login_open_to_groups(v, 0);
    let stranger = sim.login(s, 1);
    let group_id = try_create(&mut sim, stranger, 1, &[v]).unwrap();
    assert_eq!(members_of(&mut sim, stranger, group_id), vec![s, v]);
    sim.send(victim, privacy(proto::v1::GroupAddPolicy::Contacts));
    sim.send(
        victim,
        K::GroupRemove(proto::v1::GroupRemove {
            group_id,
            members: vec![v.into()],
        }),
    );
    sim.commit();
    sim.take(victim);
    // Re-added at once: refused, and the victim sees no member list.
    sim.send(
        stranger,
        K::GroupAdd(proto::v1::GroupAdd {
            group_id,
            members: vec![v.into()],
        }),
    );
    sim.commit();
    assert_eq!(add_refusals(&sim.take(stranger)).len(), 1);
    assert_eq!(members_of(&mut sim, stranger, group_id), vec![s]);
    assert!(
        !sim.take(victim)
            .iter()
            .any(|f| matches!(f, S::GroupUpdated(_) | S::GroupMembers(_))),
        "the victim learns no member's number"
    );
}

#[test]
fn item9_contacts_may_add_by_default_everyone_and_nobody_as_chosen() {
    let mut sim = Sim::new(2);
    let (m, friend, s) = ("+15550000001", "+15550000002", "+15550000003");
    let member = sim.login(m, 0);
    let friend_c = sim.login(friend, 1);
    let stranger = sim.login(s, 1);
    // The member has the friend in their address book.
    sim.send(member, follow(&[friend]));
    sim.commit();
    let by_friend = try_create(&mut sim, friend_c, 1, &[m]).unwrap();
    assert_eq!(members_of(&mut sim, friend_c, by_friend), vec![friend, m]);
    // NOBODY: not even the friend.
    sim.send(member, privacy(proto::v1::GroupAddPolicy::Nobody));
    sim.send(friend_c, create(2, &[m]));
    sim.commit();
    assert_eq!(add_refusals(&sim.take(friend_c)).len(), 1);
    // EVERYONE: the stranger too.
    sim.send(member, privacy(proto::v1::GroupAddPolicy::Everyone));
    let by_stranger = try_create(&mut sim, stranger, 3, &[m]).unwrap();
    assert_eq!(members_of(&mut sim, stranger, by_stranger), vec![s, m]);
    // The address book lapses with the subscription: back to CONTACTS, a day later the
    // friend is a stranger until the member subscribes again.
    sim.send(member, privacy(proto::v1::GroupAddPolicy::Contacts));
    sim.now += crate::state::limits::PRESENCE_SUBSCRIPTION_TTL_MS;
    sim.send(friend_c, create(4, &[m]));
    sim.commit();
    assert_eq!(add_refusals(&sim.take(friend_c)).len(), 1);
    assert_eq!(adds_refused(&sim), 2);
}

#[test]
fn item9_a_creation_waits_for_every_home_and_is_written_once() {
    let mut sim = Sim::new(4);
    let members: Vec<String> = (2..40).map(|i| format!("+155500000{i:02}")).collect();
    for (i, m) in members.iter().enumerate() {
        if i % 3 != 0 {
            sim.login_open_to_groups(m, i % 4);
        }
    }
    let admin = sim.login("+15550000001", 0);
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let records_before: usize = sim.logs.iter().map(Vec::len).sum();
    sim.send(admin, create(1, &refs));
    sim.commit();
    let frames = sim.take(admin);
    let [group_id] = created(&frames)[..] else {
        panic!("{frames:?}")
    };
    let refused: usize = add_refusals(&frames)
        .iter()
        .map(|d| d.matches('+').count())
        .sum();
    assert_eq!(refused, members.len().div_ceil(3), "{frames:?}");
    let groups_written = sim
        .logs
        .iter()
        .flatten()
        .filter(|r| matches!(r.kind, Some(crate::durable::record::record::Kind::Group(_))))
        .count();
    assert_eq!(groups_written, 1, "one record for the creation");
    assert!(sim.logs.iter().map(Vec::len).sum::<usize>() > records_before);
    let mut want: Vec<String> = vec!["+15550000001".into()];
    want.extend(
        members
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, m)| m.clone()),
    );
    assert_eq!(
        members_of(&mut sim, admin, group_id),
        want,
        "in request order"
    );
    assert_eq!(
        sim.shards
            .iter()
            .map(|s| s.consent.pending())
            .sum::<usize>(),
        0
    );
}

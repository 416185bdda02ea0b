//! Admission rules in the simulator, with fake time (`admission.rs`, `route.rs`): presence
//! and group fan-out per user, `Busy` for fan-out frames, new recipients per sender per hour,
//! and the same answers for a number nobody has as for a registered one.

use proto::v1::{client_frame::Kind as K, server_frame::Kind as S, ErrorCode};

use crate::sim::{text, Sim};
use crate::state::ServiceSettings;
use crate::tables::admission::{
    UserLimits, GROUP_FANOUT_PER_USER_BURST, GROUP_FANOUT_PER_USER_PER_S,
    PRESENCE_FANOUT_PER_USER_BURST, PRESENCE_FANOUT_PER_USER_PER_S, PRESENCE_RENEWALS_PER_UNIT,
};
use crate::tables::budgets::HOUR_MS;

fn sub(contacts: &[String]) -> K {
    K::PresenceSubscribe(proto::v1::PresenceSubscribe {
        contacts: contacts.to_vec(),
    })
}

/// The only frame `conn` got: its kind, client_msg_id, server id or error code, retry-after.
fn answer(sim: &mut Sim, c: proto::ids::ConnId) -> (&'static str, u64, u64, u64) {
    let frames = sim.take(c);
    assert_eq!(frames.len(), 1, "{frames:?}");
    match &frames[0] {
        S::ServerAck(a) => ("ack", a.client_msg_id, a.server_msg_id, 0),
        S::Busy(b) => ("busy", b.client_msg_id, 0, u64::from(b.retry_after_ms)),
        S::Error(e) => ("error", e.client_msg_id, e.code as u64, e.retry_after_ms),
        other => panic!("unexpected {other:?}"),
    }
}

/// `n` phones homed on `shard` of `shards`, from `+1<prefix>0000000` on.
fn homed(sim: &Sim, shard: usize, prefix: u32, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("+1{prefix}{i:07}"))
        .filter(|p| sim.shards[0].home(p).0 == shard)
        .take(n)
        .collect()
}

#[test]
fn renewed_subscriptions_do_not_fan_out_and_a_reconnect_flood_is_refused_with_its_retry_after() {
    let mut sim = Sim::new(2);
    let attacker = "+15550000001";
    let contacts: Vec<String> = (0..1_024).map(|i| format!("+1777{i:07}")).collect();
    let mut c = sim.login(attacker, 0);
    let before = sim.mesh_sent;
    sim.send(c, sub(&contacts));
    let first = sim.mesh_sent - before;
    assert_eq!(
        first,
        2 * 1_024,
        "a request to each contact's home and its answer"
    );
    sim.take(c);
    const RENEWALS: u64 = 10;
    for _ in 0..RENEWALS {
        sim.send(c, sub(&contacts));
    }
    assert_eq!(sim.mesh_sent - before, first, "renewals send nothing");
    assert!(sim.take(c).is_empty());

    // Each new session (a millisecond later: a reconnect takes longer) fans out once more,
    // within the user's budget; renewals cost a unit per PRESENCE_RENEWALS_PER_UNIT.
    let n = contacts.len() as u64;
    let burst = u64::from(PRESENCE_FANOUT_PER_USER_BURST);
    let renewal_units = RENEWALS * n.div_ceil(u64::from(PRESENCE_RENEWALS_PER_UNIT));
    let mut spent = n + renewal_units;
    let mut admitted = 0;
    let interval_ms = 1_000 / u64::from(PRESENCE_FANOUT_PER_USER_PER_S);
    let refused = loop {
        sim.close(c);
        sim.now += 1;
        c = sim.login(attacker, 0);
        let sent = sim.mesh_sent;
        sim.send(c, sub(&contacts));
        let refusal = sim.take(c).into_iter().find_map(|f| match f {
            S::Error(e) if e.code == ErrorCode::RateLimited as i32 => Some(e.retry_after_ms),
            _ => None,
        });
        let Some(retry_after_ms) = refusal else {
            assert_eq!(sim.mesh_sent - sent, first);
            admitted += 1;
            spent += n;
            continue;
        };
        assert_eq!(sim.mesh_sent, sent, "a refused frame fans out nothing");
        break retry_after_ms;
    };
    assert_eq!(admitted, (burst - n - renewal_units) / n);
    // Full again at start + spent × interval; this frame fits once that is `burst` away.
    assert_eq!(
        refused,
        (spent + n - burst) * interval_ms - (admitted + 1),
        "refused whole, with the exact time the budget admits it"
    );
    let counted: u64 = (sim.shards.iter())
        .map(|s| s.abuse.refused_presence_fanout)
        .sum();
    assert_eq!(counted, 1);
    sim.now += refused;
    let sent = sim.mesh_sent;
    sim.send(c, sub(&contacts));
    assert_eq!(
        sim.mesh_sent - sent,
        first,
        "admitted once the budget is back"
    );

    // While the shard is overloaded a fan-out frame gets Busy and sends nothing.
    sim.take(c);
    sim.shards.iter_mut().for_each(|s| s.set_busy(Some(200)));
    let sent = sim.mesh_sent;
    sim.send(c, sub(&contacts[..1]));
    assert_eq!(answer(&mut sim, c), ("busy", 0, 0, 200));
    assert_eq!(sim.mesh_sent, sent);
}

#[test]
fn a_send_to_a_number_nobody_has_gets_the_answers_a_registered_number_gets() {
    let mut sim = Sim::new(2);
    let a = homed(&sim, 0, 555, 1)[0].clone();
    let far = homed(&sim, 1, 666, 2);
    let (known, unknown) = (far[0].clone(), far[1].clone());
    let k = sim.login(&known, 1);
    sim.close(k); // registered, offline
    let c = sim.login(&a, 0);
    let probe = |sim: &mut Sim, to: &str, id: u64| {
        sim.send(c, text(to, id));
        assert!(sim.take(c).is_empty(), "nothing before the commit");
        sim.commit();
        answer(sim, c)
    };
    let (kind, _, known_id, _) = probe(&mut sim, &known, 1);
    let (kind2, _, unknown_id, _) = probe(&mut sim, &unknown, 2);
    assert_eq!((kind, kind2), ("ack", "ack"));
    assert!(known_id != 0 && unknown_id != 0);
    // A retry gets the same id either way.
    assert_eq!(probe(&mut sim, &known, 1), ("ack", 1, known_id, 0));
    assert_eq!(probe(&mut sim, &unknown, 2), ("ack", 2, unknown_id, 0));
    assert_eq!(
        sim.shards[1].abuse.sends_to_unknown, 1,
        "a retry is not a send"
    );
    sim.restart();
    let c = sim.login(&a, 0);
    sim.send(c, text(&unknown, 2));
    sim.commit();
    assert_eq!(
        answer(&mut sim, c),
        ("ack", 2, unknown_id, 0),
        "after a restart too"
    );
    sim.send(c, text(&known, 1));
    sim.commit();
    assert_eq!(answer(&mut sim, c), ("ack", 1, known_id, 0));
    // Overloaded at the recipients' home: Busy for both.
    sim.shards[1].set_busy(Some(200));
    sim.send(c, text(&known, 3));
    assert_eq!(answer(&mut sim, c), ("busy", 3, 0, 200));
    sim.send(c, text(&unknown, 4));
    assert_eq!(answer(&mut sim, c), ("busy", 4, 0, 200));
    sim.shards[1].set_busy(None);
    // Nothing is kept for the number nobody has, and it got no account.
    assert!(!sim.shards[1].registry.exists(&unknown));
    assert_eq!(sim.shards[1].queues.len_of(&unknown), 0);
}

#[test]
fn new_recipients_are_budgeted_per_hour_and_contacts_and_people_who_wrote_are_free() {
    let settings = ServiceSettings {
        load_test_secret: Some(b"s".to_vec()),
        users: UserLimits {
            new_recipients_per_hour: 3,
        },
        ..ServiceSettings::default()
    };
    let mut sim = Sim::with_settings(2, settings);
    let a = "+15550000001";
    let others = homed(&sim, 1, 777, 8);
    let registered = &others[..4];
    for p in registered {
        let c = sim.login(p, 1);
        sim.close(c);
    }
    let unknown = &others[4..];
    let c = sim.login(a, 0);
    let mut id = 0;
    let mut send = |sim: &mut Sim, to: &str| {
        id += 1;
        sim.send(c, text(to, id));
        sim.commit();
        answer(sim, c)
    };
    for to in [&registered[0], &unknown[0], &registered[1]] {
        assert_eq!(send(&mut sim, to).0, "ack");
    }
    let interval = HOUR_MS / 3;
    let limited = ("error", 4, ErrorCode::RateLimited as u64, interval);
    assert_eq!(send(&mut sim, &registered[2]), limited);
    let limited = ("error", 5, ErrorCode::RateLimited as u64, interval);
    assert_eq!(send(&mut sim, &unknown[1]), limited, "the same refusal");
    assert_eq!(send(&mut sim, &unknown[0]).0, "ack", "paid for this hour");
    // Someone who wrote to A, and a contact A follows, cost nothing.
    let w = sim.login(&registered[3], 1);
    sim.send(w, text(a, 1));
    sim.commit();
    assert!(matches!(&sim.take(c)[..], [S::Message(m)] if m.from == registered[3]));
    assert_eq!(send(&mut sim, &registered[3]).0, "ack", "writing back");
    sim.send(c, sub(&[registered[2].clone()]));
    sim.take(c);
    assert_eq!(send(&mut sim, &registered[2]).0, "ack", "a contact");
    let refused: u64 = sim
        .shards
        .iter()
        .map(|s| s.abuse.refused_new_recipient)
        .sum();
    assert_eq!(refused, 2);
    sim.now += interval;
    assert_eq!(
        send(&mut sim, &unknown[1]).0,
        "ack",
        "one back per interval"
    );
}

#[test]
fn group_sends_spend_the_senders_fan_out_budget_at_the_groups_home() {
    let mut sim = Sim::new(2);
    let a = sim.login("+15550000001", 0);
    let members: Vec<String> = (0..proto::limits::GROUP_MEMBERS_MAX - 1)
        .map(|i| format!("+1666{i:07}"))
        .collect();
    // Members who accept adds from anyone (`GroupPrivacy`), so the group is created whole.
    for m in &members {
        sim.login_open_to_groups(m, 0);
    }
    sim.send(
        a,
        K::GroupCreate(proto::v1::GroupCreate {
            client_req_id: 1,
            name: "big".into(),
            members: members.clone(),
        }),
    );
    sim.commit();
    let group_id = match &sim.take(a)[..] {
        [S::GroupCreated(g)] => g.group_id,
        other => panic!("{other:?}"),
    };
    let send = |sim: &mut Sim, id: u64| {
        sim.send(
            a,
            K::GroupSend(proto::v1::GroupSend {
                group_id,
                client_msg_id: id,
                body: b"x".to_vec(),
                media: None,
            }),
        );
        sim.commit();
        answer(sim, a)
    };
    let copies = members.len() as u64;
    let admitted = u64::from(GROUP_FANOUT_PER_USER_BURST) / copies;
    for id in 1..=admitted {
        assert_eq!(send(&mut sim, id).0, "ack", "send {id}");
    }
    let interval_ms = 1_000 / u64::from(GROUP_FANOUT_PER_USER_PER_S);
    let over = (admitted + 1) * copies - u64::from(GROUP_FANOUT_PER_USER_BURST);
    let id = admitted + 1;
    let refused = send(&mut sim, id);
    assert_eq!(
        refused,
        (
            "error",
            id,
            ErrorCode::RateLimited as u64,
            over * interval_ms
        ),
        "refused whole, nothing stored"
    );
    let counted: u64 = sim
        .shards
        .iter()
        .map(|s| s.abuse.refused_group_fanout)
        .sum();
    assert_eq!(counted, 1);
    sim.now += refused.3;
    assert_eq!(
        send(&mut sim, id).0,
        "ack",
        "admitted once the budget is back"
    );
    // Overloaded at the group's home: Busy, nothing fanned out.
    let home = crate::state::home::home_of_id(group_id).0;
    sim.shards[home].set_busy(Some(200));
    let sent = sim.mesh_sent;
    assert_eq!(send(&mut sim, id + 1), ("busy", id + 1, 0, 200));
    assert!(
        sim.mesh_sent - sent <= 2,
        "to the group's home and back at most"
    );
}

//! Presence on a box of a cluster, against the simulated shards with fake time: when
//! another box joins or starts again (it holds no presence state), each user who subscribed
//! this session asks again about the contacts it follows, and only those users
//! (`handlers/presence.rs` `presence_ask_again`).

use proto::v1::{client_frame::Kind as K, server_frame::Kind as S};

use crate::sim::Sim;
use crate::state::effect::Out;
use crate::state::home::home_of_phone;

const S_PHONE: &str = "+15550000001";
const LOCAL: &str = "+15550000002";
const ELSEWHERE: &str = "+15550000003";
const OFFLINE_SUBSCRIBER: &str = "+15550000004";

fn subscribe(sim: &mut Sim, c: proto::ids::ConnId, contacts: &[&str]) {
    sim.send(
        c,
        K::PresenceSubscribe(proto::v1::PresenceSubscribe {
            contacts: contacts.iter().map(|s| s.to_string()).collect(),
        }),
    );
    sim.commit();
}

/// The phones `frames` carry a presence answer about.
fn answered(frames: &[S]) -> Vec<String> {
    let mut v: Vec<String> = frames
        .iter()
        .filter_map(|f| match f {
            S::Presence(p) => Some(p.phone.clone()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// Every shard hears that another box joined (as the gateway tells them).
fn box_joined(sim: &mut Sim) {
    for i in 0..sim.shards.len() {
        let mut out = Out::default();
        sim.shards[i].presence_ask_again(sim.now, &mut out);
        sim.apply(i, out);
    }
    sim.run();
    sim.commit();
}

#[test]
fn a_box_joining_has_the_subscribers_of_this_session_ask_again() {
    let mut sim = Sim::new(2);
    let home = |p: &str| home_of_phone(p, 2).0;
    let _local = sim.login(LOCAL, home(LOCAL));
    let s = sim.login(S_PHONE, home(S_PHONE));
    // ELSEWHERE has no account here: on a box of a cluster it lives on another box.
    subscribe(&mut sim, s, &[LOCAL, ELSEWHERE]);
    assert_eq!(answered(&sim.take(s)), [LOCAL, ELSEWHERE]);
    // A subscriber whose session ended asks nothing: it subscribes again at its next login.
    let gone = sim.login(OFFLINE_SUBSCRIBER, home(OFFLINE_SUBSCRIBER));
    subscribe(&mut sim, gone, &[ELSEWHERE]);
    sim.close(gone);
    sim.commit();

    sim.now += 1_000;
    box_joined(&mut sim);
    assert_eq!(
        answered(&sim.take(s)),
        [LOCAL, ELSEWHERE],
        "each contact answers again, as at a first subscription"
    );
    let reasks: u64 = sim.shards.iter().map(|s| s.abuse.presence_reasks).sum();
    assert_eq!(
        reasks, 2,
        "the subscriber whose session ended asked nothing"
    );

    // A subscription that lapsed is not asked about.
    sim.now += crate::state::limits::PRESENCE_SUBSCRIPTION_TTL_MS;
    box_joined(&mut sim);
    assert!(answered(&sim.take(s)).is_empty());
    let skipped: u64 = sim
        .shards
        .iter()
        .map(|s| s.abuse.presence_reasks_skipped)
        .sum();
    assert_eq!(skipped, 0);
}

#[test]
fn a_join_asks_again_at_most_the_cap_per_shard_and_counts_the_rest() {
    use crate::state::limits::{PRESENCE_REASKS_PER_JOIN_MAX, PRESENCE_SUBSCRIPTIONS_PER_USER_MAX};
    let mut sim = Sim::new(1);
    let per_user = PRESENCE_SUBSCRIPTIONS_PER_USER_MAX;
    let users = PRESENCE_REASKS_PER_JOIN_MAX / per_user + 1;
    let contacts: Vec<String> = (0..per_user).map(|i| format!("+1666{i:07}")).collect();
    let refs: Vec<&str> = contacts.iter().map(String::as_str).collect();
    for u in 0..users {
        let c = sim.login(&format!("+1777{u:07}"), 0);
        subscribe(&mut sim, c, &refs);
        sim.take(c);
    }
    box_joined(&mut sim);
    let st = &sim.shards[0];
    let total = (users * per_user) as u64;
    assert_eq!(
        st.abuse.presence_reasks,
        PRESENCE_REASKS_PER_JOIN_MAX as u64
    );
    assert_eq!(
        st.abuse.presence_reasks_skipped,
        total - PRESENCE_REASKS_PER_JOIN_MAX as u64
    );
}

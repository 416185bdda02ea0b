//! Dedupe in the simulator: a send retried long after it was stored, after its message was
//! delivered and acked, after many later sends, and after a restart, is recognised and
//! stored once (`dedupe.rs`).

use proto::v1::{client_frame, server_frame};

use crate::sim::{text, Sim};
use crate::state::limits::DEDUPE_WINDOW_PER_SENDER;

const A: &str = "+15550000001";
const B: &str = "+15550000002";

/// B's home shard in a 2-shard sim.
fn b_home() -> usize {
    crate::state::home::home_of_phone(B, 2).0
}

/// Sends past the window, so the first ones are known by the floor only.
const SENDS: u64 = 3 * DEDUPE_WINDOW_PER_SENDER as u64;

/// The ServerAcks `conn` received: (client id, server id).
fn server_acks(sim: &mut Sim, conn: proto::ids::ConnId) -> Vec<(u64, u64)> {
    sim.take(conn)
        .into_iter()
        .filter_map(|f| match f {
            server_frame::Kind::ServerAck(x) => Some((x.client_msg_id, x.server_msg_id)),
            _ => None,
        })
        .collect()
}

/// A sends `SENDS` messages to B (offline, on another shard), B logs in, receives and acks
/// them all; returns the server ids A was given, by client id (index 0 is client id 1).
fn sent_delivered_and_acked(sim: &mut Sim) -> Vec<u64> {
    let a = sim.login(A, 0);
    let b = sim.login(B, 1);
    sim.close(b);
    for cmid in 1..=SENDS {
        sim.send(a, text(B, cmid));
    }
    sim.commit();
    let acks = server_acks(sim, a);
    assert_eq!(acks.len(), SENDS as usize);
    let b = sim.login(B, 1);
    let ids: Vec<u64> = sim
        .take(b)
        .into_iter()
        .filter_map(|f| match f {
            server_frame::Kind::Message(m) => Some(m.server_msg_id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), SENDS as usize);
    sim.send(
        b,
        client_frame::Kind::Ack(proto::v1::Ack {
            server_msg_ids: ids,
        }),
    );
    sim.commit();
    sim.close(b);
    assert_eq!(
        sim.shards[b_home()].queued_total(),
        0,
        "every message acked"
    );
    acks.into_iter().map(|(_, id)| id).collect()
}

/// A's retries of client ids 1 (below the floor) and `SENDS` (in the window) on a new
/// session: both answered, the first with server id 0, the second with its id; B gets
/// nothing more.
fn retries_are_recognised(sim: &mut Sim, ids: &[u64]) {
    let a = sim.login(A, 0);
    sim.take(a);
    sim.send(a, text(B, 1));
    sim.send(a, text(B, SENDS));
    sim.commit();
    assert_eq!(
        server_acks(sim, a),
        vec![(1, 0), (SENDS, ids[SENDS as usize - 1])],
        "a retry is answered, not stored: server id 0 when forgotten, else the same id"
    );
    assert_eq!(
        sim.shards[b_home()].queued_total(),
        0,
        "nothing stored again"
    );
    let b = sim.login(B, 1);
    assert!(
        sim.take(b).is_empty(),
        "B already has these messages: nothing is delivered twice"
    );
    // The next new send is stored as usual.
    sim.send(a, text(B, SENDS + 1));
    sim.commit();
    assert_eq!(server_acks(sim, a).len(), 1);
    assert!(matches!(sim.take(b)[..], [server_frame::Kind::Message(_)]));
}

#[test]
fn a_send_retried_after_ten_minutes_is_the_same_message() {
    let mut sim = Sim::new(2);
    let ids = sent_delivered_and_acked(&mut sim);
    sim.now += 10 * 60 * 1000;
    retries_are_recognised(&mut sim, &ids);
}

#[test]
fn a_send_retried_after_a_restart_is_the_same_message() {
    let mut sim = Sim::new(2);
    let ids = sent_delivered_and_acked(&mut sim);
    sim.now += 60 * 1000;
    sim.restart();
    retries_are_recognised(&mut sim, &ids);
}

#[test]
fn a_send_retried_after_compaction_and_a_restart_is_the_same_message() {
    let mut sim = Sim::new(2);
    let ids = sent_delivered_and_acked(&mut sim);
    // Compaction: each log becomes its shard's snapshot (B's removed items are gone).
    for i in 0..2 {
        sim.logs[i] = sim.shards[i].snapshot();
    }
    sim.restart();
    retries_are_recognised(&mut sim, &ids);
}

#[test]
fn a_new_device_counts_from_one_again() {
    let mut sim = Sim::new(2);
    sent_delivered_and_acked(&mut sim);
    // A verifies a new phone: a new device key, whose sends start at client id 1.
    let a = sim.connect(0);
    sim.send(
        a,
        client_frame::Kind::Register(proto::v1::Register {
            protocol_version: proto::PROTOCOL_VERSION,
            phone: A.into(),
        }),
    );
    let pin = sim.sms.last().expect("a PIN was sent").1.clone();
    sim.send(
        a,
        client_frame::Kind::Verify(proto::v1::Verify {
            protocol_version: proto::PROTOCOL_VERSION,
            phone: A.into(),
            pin,
        }),
    );
    sim.commit();
    let key = sim
        .take(a)
        .into_iter()
        .find_map(|f| match f {
            server_frame::Kind::Verified(v) => Some(v.device_key),
            _ => None,
        })
        .expect("Verified");
    sim.send(
        a,
        client_frame::Kind::Login(proto::v1::Login {
            protocol_version: proto::PROTOCOL_VERSION,
            phone: A.into(),
            device_key: key,
        }),
    );
    sim.commit();
    sim.take(a);
    sim.send(a, text(B, 1));
    sim.commit();
    let acks = server_acks(&mut sim, a);
    assert!(
        matches!(acks[..], [(1, id)] if id != 0),
        "stored, not taken for a retry: {acks:?}"
    );
    assert_eq!(sim.shards[b_home()].queued_total(), 1);
}

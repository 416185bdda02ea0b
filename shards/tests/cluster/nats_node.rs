//! One node of a three-node NATS cluster SIGKILLed while messages cross boxes: the boxes'
//! clients move to the other nodes (every URL of `--cluster`), JetStream keeps what it
//! acknowledged (its streams and buckets ask for three replicas), a send whose publish fails
//! meanwhile is answered `Busy` and sent again under a new id, and every acknowledged message
//! arrives, once — also those whose delivery to the home box died with the node and come
//! again only after later ones (`shards/src/cluster/in_order.rs`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proto::v1::server_frame;
use testkit::nats::NatsCluster;

use crate::nats::Box;
use crate::placement::{phones_homed_on, ADV_A, ADV_B};
use crate::support::Client;

/// Longest wait for every acknowledged message to reach the recipient.
const DELIVERY_WAIT_MS: u64 = 90_000;

/// Reads `at` (the recipient) until every id of `acked` was shown, acking each; fails if one
/// is missing after [`DELIVERY_WAIT_MS`] or one is shown twice.
fn every_acked_arrives_once(at: &mut Client, acked: &[u64]) {
    let mut shown: HashMap<u64, u32> = HashMap::new();
    let deadline = Instant::now() + Duration::from_millis(DELIVERY_WAIT_MS);
    while acked.iter().any(|i| !shown.contains_key(i)) {
        if Instant::now() > deadline {
            let missing: Vec<&u64> = acked.iter().filter(|i| !shown.contains_key(i)).collect();
            panic!("acknowledged messages not arrived in {DELIVERY_WAIT_MS} ms: {missing:?}");
        }
        // None: nothing within the read timeout; JetStream may still be redelivering.
        let Some(f) = at.try_recv() else {
            continue;
        };
        if let server_frame::Kind::Message(m) = f {
            *shown.entry(m.client_msg_id).or_default() += 1;
            at.ack(vec![m.server_msg_id]);
        }
    }
    let twice: Vec<_> = shown.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "shown more than once: {twice:?}");
}

/// Sends `ids` from `at` to `to` and reads answers until each is acknowledged. A message
/// the box answers `Busy` (its publish failed) was not taken: it is sent again under a new
/// id, as the protocol asks of a phone, taken from `next_new` (after the pause the server
/// asks for). Returns the ids acknowledged.
fn send_until_acked(
    at: &mut Client,
    to: &str,
    ids: std::ops::RangeInclusive<u64>,
    next_new: &mut u64,
) -> Vec<u64> {
    send_bodies_until_acked(at, to, ids, next_new, 0)
}

/// [`send_until_acked`] with each body padded to `pad` bytes.
fn send_bodies_until_acked(
    at: &mut Client,
    to: &str,
    ids: std::ops::RangeInclusive<u64>,
    next_new: &mut u64,
    pad: usize,
) -> Vec<u64> {
    let body = |id: u64| format!("m{id:<pad$}");
    for id in ids.clone() {
        at.send_text(to, id, &body(id));
    }
    let mut waiting: std::collections::HashSet<u64> = ids.collect();
    let mut acked = Vec::new();
    while !waiting.is_empty() {
        let Some(f) = at.try_recv() else {
            panic!("no answer for {} messages: {waiting:?}", waiting.len());
        };
        match f {
            server_frame::Kind::ServerAck(s) => {
                assert_ne!(s.server_msg_id, 0, "the recipient has a home");
                if waiting.remove(&s.client_msg_id) {
                    acked.push(s.client_msg_id);
                }
            }
            server_frame::Kind::Busy(b) if waiting.remove(&b.client_msg_id) => {
                std::thread::sleep(Duration::from_millis(u64::from(
                    b.retry_after_ms.min(1_000),
                )));
                let id = *next_new;
                *next_new += 1;
                waiting.insert(id);
                at.send_text(to, id, &body(id));
            }
            server_frame::Kind::Receipt(_) | server_frame::Kind::Presence(_) => {}
            other => panic!("expected acks, got {other:?}"),
        }
    }
    acked
}

#[test]
fn a_nats_node_killed_under_load_loses_nothing_acknowledged() {
    const N: u64 = 300;
    let mut nats = NatsCluster::start("node-kill", 3);
    let url = nats.url();
    let a = Box::start(&url, "a", ADV_A, &[]);
    let b = Box::start(&url, "b", ADV_B, &[]);
    a.wait_stat("cluster_members", 2);
    b.wait_stat("cluster_members", 2);
    let alice = &phones_homed_on("a", 1, 4_400_000)[0];
    let bob = &phones_homed_on("b", 1, 4_400_000)[0];
    let mut at_b = b.client();
    at_b.load_test_login(bob);
    let mut at_a = a.client();
    at_a.load_test_login(alice);

    // A third before the kill, the rest sent right after it, while NATS moves. Ids past N
    // are resends of messages answered Busy.
    let mut next_new = 10_000;
    let mut acked = send_until_acked(&mut at_a, bob, 1..=N / 3, &mut next_new);
    nats.kill(0);
    acked.extend(send_until_acked(
        &mut at_a,
        bob,
        N / 3 + 1..=N,
        &mut next_new,
    ));
    let again = next_new - 10_000;

    let started = Instant::now();
    every_acked_arrives_once(&mut at_b, &acked);
    eprintln!(
        "every acknowledged message arrived {} ms after the last ack (sent again: {again})",
        started.elapsed().as_millis()
    );

    // With the node back the cluster carries on.
    nats.restart(0);
    send_until_acked(&mut at_a, bob, 20_000..=20_000, &mut next_new);
    loop {
        match at_b.try_recv() {
            Some(server_frame::Kind::Message(m)) if m.client_msg_id == 20_000 => break,
            Some(_) => {}
            None => panic!("no delivery after the node came back"),
        }
    }
}

/// Deliveries lost with a node: box b is paused (SIGSTOP) while messages for its user are
/// acknowledged, so JetStream's deliveries of them pile up in the NATS node b reads from;
/// that node is SIGKILLed, b resumes and more messages follow. The consumer counts the lost
/// deliveries as delivered and sends them again only after its ack wait, while the later
/// messages come at once: stored out of order, the earlier ones would be dropped by the
/// recipient's dedupe as retries. Every acknowledged message must arrive, once.
#[test]
fn deliveries_lost_with_a_nats_node_still_arrive_in_order() {
    const FIRST: u64 = 150;
    const N: u64 = 300;
    /// Bodies large enough that the paused box's socket cannot take every delivery.
    const PAD_BYTES: usize = 12 * 1024;
    let mut nats = NatsCluster::start("lost-deliveries", 3);
    let url = nats.url();
    let a = Box::start(&url, "a", ADV_A, &[]);
    let b = Box::start(&url, "b", ADV_B, &[]);
    a.wait_stat("cluster_members", 2);
    b.wait_stat("cluster_members", 2);
    let alice = &phones_homed_on("a", 1, 4_500_000)[0];
    let bob = &phones_homed_on("b", 1, 4_500_000)[0];
    let mut at_b = b.client();
    at_b.load_test_login(bob);
    let mut at_a = a.client();
    at_a.load_test_login(alice);
    let node = nats
        .node_serving("switchboard b")
        .expect("box b is connected to a node");

    let mut next_new = 10_000;
    b.pause();
    let mut acked = send_bodies_until_acked(&mut at_a, bob, 1..=FIRST, &mut next_new, PAD_BYTES);
    nats.kill(node);
    b.resume();
    acked.extend(send_bodies_until_acked(
        &mut at_a,
        bob,
        FIRST + 1..=N,
        &mut next_new,
        PAD_BYTES,
    ));
    every_acked_arrives_once(&mut at_b, &acked);
    eprintln!(
        "box b read its stream anew {:?} times, handed over again {:?}",
        b.stat("cluster_inbound_rereads_total"),
        b.stat("cluster_messages_in_retried_total")
    );
}

//! Messages to a live home box go straight over core NATS (`shards/src/cluster/direct.rs`),
//! not through JetStream; a home box that does not answer has them through its stream
//! instead, and a sender's messages still arrive once each, in the order sent, when the two
//! paths meet.

use proto::v1::server_frame;

use crate::nats::Nats;
use crate::placement::{phones_homed_on, two_boxes};
use crate::support::Client;

/// Reads acks for `ids` (any order), skipping presence and receipts.
fn acks(c: &mut Client, ids: std::ops::RangeInclusive<u64>) {
    let mut waiting: std::collections::BTreeSet<u64> = ids.collect();
    while !waiting.is_empty() {
        match c.recv() {
            server_frame::Kind::ServerAck(a) => {
                assert_ne!(a.server_msg_id, 0);
                assert!(waiting.remove(&a.client_msg_id), "ack {}", a.client_msg_id);
            }
            server_frame::Kind::Presence(_) | server_frame::Kind::Receipt(_) => {}
            other => panic!("expected acks, got {other:?}"),
        }
    }
}

/// Reads messages until `n` arrived; returns their client ids in arrival order.
fn messages(c: &mut Client, n: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    while ids.len() < n {
        match c.recv() {
            server_frame::Kind::Message(m) => {
                ids.push(m.client_msg_id);
                c.ack(vec![m.server_msg_id]);
            }
            server_frame::Kind::Presence(_) | server_frame::Kind::Receipt(_) => {}
            other => panic!("expected messages, got {other:?}"),
        }
    }
    ids
}

/// Boxes a and b on one NATS, alice of a and bob of b logged in, and alice's first message to
/// bob delivered (it finds bob's home in the homes bucket, through the stream; the rest know
/// it).
struct Pair {
    _nats: Nats,
    a: crate::nats::Box,
    b: crate::nats::Box,
    bob: String,
    at_a: Client,
    at_b: Client,
}

impl Pair {
    fn start(phones_from: u64) -> Pair {
        let nats = Nats::start();
        let (a, b) = two_boxes(&nats);
        let alice = phones_homed_on("a", 1, phones_from).remove(0);
        let bob = phones_homed_on("b", 1, phones_from).remove(0);
        let mut at_b = b.client();
        at_b.load_test_login(&bob);
        let mut at_a = a.client();
        at_a.load_test_login(&alice);
        at_a.send_text(&bob, 1, "m1");
        acks(&mut at_a, 1..=1);
        assert_eq!(messages(&mut at_b, 1), vec![1]);
        Pair {
            _nats: nats,
            a,
            b,
            bob,
            at_a,
            at_b,
        }
    }
}

#[test]
fn messages_to_a_live_box_go_straight_to_it() {
    const N: u64 = 40;
    let t = Pair::start(4_600_000);
    let (a, b, bob, mut at_a, mut at_b) = (t.a, t.b, t.bob, t.at_a, t.at_b);
    let bob = &bob;
    for id in 2..=N {
        at_a.send_text(bob, id, &format!("m{id}"));
    }
    acks(&mut at_a, 2..=N);
    assert_eq!(
        messages(&mut at_b, N as usize - 1),
        (2..=N).collect::<Vec<_>>()
    );
    a.wait_stat("cluster_direct_out_total", N - 1);
    b.wait_stat("cluster_direct_in_total", N - 1);
    assert_eq!(a.stat("cluster_direct_fallbacks_total"), Some(0));
}

/// Box b paused (SIGSTOP): alice's direct messages get no answer, fall back to b's stream
/// (her later ones follow them there, in order); b resumes and drains its stream; then her
/// next messages go straight to b again, only once b has handed over what its stream held
/// of hers. Every message arrives once, in the order sent.
#[test]
fn a_box_that_does_not_answer_gets_its_messages_through_its_stream_in_order() {
    const FIRST: u64 = 20;
    const N: u64 = 40;
    let t = Pair::start(4_700_000);
    let (a, b, bob, mut at_a, mut at_b) = (t.a, t.b, t.bob, t.at_a, t.at_b);
    let bob = &bob;

    b.pause();
    for id in 2..=FIRST {
        at_a.send_text(bob, id, &format!("m{id}"));
    }
    // JetStream answers for the paused box once the direct wait is over.
    acks(&mut at_a, 2..=FIRST);
    assert!(a.stat("cluster_direct_fallbacks_total") >= Some(1));
    b.resume();
    for id in FIRST + 1..=N {
        at_a.send_text(bob, id, &format!("m{id}"));
    }
    acks(&mut at_a, FIRST + 1..=N);
    assert_eq!(
        messages(&mut at_b, N as usize - 1),
        (2..=N).collect::<Vec<_>>()
    );
    // Nothing more: no message was stored twice. The stream is drained: the next one goes
    // straight to b again.
    let direct_before = a.stat("cluster_direct_out_total").unwrap();
    at_a.send_text(bob, N + 1, "last");
    acks(&mut at_a, N + 1..=N + 1);
    assert_eq!(messages(&mut at_b, 1), vec![N + 1]);
    a.wait_stat("cluster_direct_out_total", direct_before + 1);
}

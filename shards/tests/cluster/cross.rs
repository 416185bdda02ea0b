//! Messages between users of different boxes: through the recipient's home box's JetStream
//! stream, `ServerAck` once JetStream holds it, receipts back the same way; a home box
//! killed while messages for it are sent gets every one, once, when it is back.

use std::collections::HashMap;

use proto::v1::{server_frame, ReceiptKind};

use crate::nats::{Box, Nats};
use crate::placement::{phones_homed_on, two_boxes, ADV_B};
use crate::support::Client;

/// The next frame that is not a presence update.
fn next(c: &mut Client) -> server_frame::Kind {
    loop {
        match c.recv() {
            server_frame::Kind::Presence(_) => continue,
            other => return other,
        }
    }
}

fn expect_ack(c: &mut Client, client_msg_id: u64) {
    match next(c) {
        server_frame::Kind::ServerAck(a) => {
            assert_eq!(a.client_msg_id, client_msg_id);
            assert_ne!(a.server_msg_id, 0);
        }
        other => panic!("expected ServerAck {client_msg_id}, got {other:?}"),
    }
}

#[test]
fn users_of_two_boxes_exchange_messages_and_receipts() {
    let nats = Nats::start();
    let (a, b) = two_boxes(&nats);
    let alice = &phones_homed_on("a", 1, 4_000_000)[0];
    let bob = &phones_homed_on("b", 1, 4_000_000)[0];
    let mut at_a = a.client();
    at_a.load_test_login(alice);
    let mut at_b = b.client();
    at_b.load_test_login(bob);

    at_a.send_text(bob, 1, "hello bob");
    expect_ack(&mut at_a, 1);
    let m = match next(&mut at_b) {
        server_frame::Kind::Message(m) => m,
        other => panic!("expected the message, got {other:?}"),
    };
    assert_eq!((m.from.as_str(), m.client_msg_id), (alice.as_str(), 1));
    assert_eq!(m.body, b"hello bob");
    at_b.ack(vec![m.server_msg_id]);
    match next(&mut at_a) {
        server_frame::Kind::Receipt(r) => {
            assert_eq!((r.by.as_str(), r.client_msg_id), (bob.as_str(), 1));
            assert_eq!(r.kind, ReceiptKind::Delivered as i32);
        }
        other => panic!("expected the DELIVERED receipt, got {other:?}"),
    }

    at_b.send_text(alice, 7, "hi alice");
    expect_ack(&mut at_b, 7);
    let m = match next(&mut at_a) {
        server_frame::Kind::Message(m) => m,
        other => panic!("expected the message, got {other:?}"),
    };
    assert_eq!(
        (m.from.as_str(), m.body.as_slice()),
        (bob.as_str(), &b"hi alice"[..])
    );
    at_a.ack(vec![m.server_msg_id]);
    assert!(matches!(next(&mut at_b), server_frame::Kind::Receipt(_)));

    a.wait_stat("cluster_messages_out_total", 1);
    a.wait_stat("cluster_messages_in_total", 1);
    b.wait_stat("cluster_messages_in_total", 1);
    crate::nats::every_cluster_metric_is_documented(a.admin);
}

#[test]
fn a_home_box_killed_while_messages_for_it_are_sent_gets_each_once_when_back() {
    const N: u64 = 50;
    let nats = Nats::start();
    let (a, mut b) = two_boxes(&nats);
    let alice = &phones_homed_on("a", 1, 4_100_000)[0];
    let bob = &phones_homed_on("b", 1, 4_100_000)[0];
    b.client().load_test_login(bob); // bob's account, then offline
    let mut at_a = a.client();
    at_a.load_test_login(alice);
    at_a.send_text(bob, 1, "before the kill");
    expect_ack(&mut at_a, 1);

    b.child.kill().unwrap(); // SIGKILL
    b.child.wait().unwrap();
    for id in 2..=N {
        at_a.send_text(bob, id, &format!("m{id}"));
        expect_ack(&mut at_a, id);
    }
    // A retry of an acknowledged message is no second copy.
    at_a.send_text(bob, N, &format!("m{N}"));
    expect_ack(&mut at_a, N);

    let b = Box::start_in(b.data.clone(), &nats.url, "b", ADV_B, &[]);
    let mut at_b = b.client();
    let queued = at_b.load_test_login(bob);
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut got = 0;
    // Those queued at login, then those the stream still had.
    while seen.len() < N as usize {
        let m = match next(&mut at_b) {
            server_frame::Kind::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        };
        got += 1;
        *seen.entry(m.client_msg_id).or_default() += 1;
        at_b.ack(vec![m.server_msg_id]);
    }
    assert!(queued as u64 <= N);
    assert!(seen.values().all(|&n| n == 1), "none twice: {seen:?}");
    assert_eq!(got, N);
    assert!(
        at_b.sync()
            .iter()
            .all(|f| !matches!(f, server_frame::Kind::Message(_))),
        "nothing beyond what was sent"
    );
}

#[test]
fn a_home_box_killed_while_its_user_receives_under_load_loses_nothing_acked() {
    const N: u64 = 300;
    let nats = Nats::start();
    let (a, mut b) = two_boxes(&nats);
    let alice = &phones_homed_on("a", 1, 4_200_000)[0];
    let bob = &phones_homed_on("b", 1, 4_200_000)[0];
    let mut at_b = b.client();
    at_b.load_test_login(bob);
    let mut at_a = a.client();
    at_a.load_test_login(alice);
    // Alice sends without waiting; bob reads and acks a third, then his box is killed.
    for id in 1..=N {
        at_a.send_text(bob, id, &format!("m{id}"));
    }
    let mut shown: HashMap<u64, u32> = HashMap::new();
    while shown.len() < (N / 3) as usize {
        if let server_frame::Kind::Message(m) = next(&mut at_b) {
            *shown.entry(m.client_msg_id).or_default() += 1;
            at_b.ack(vec![m.server_msg_id]);
        }
    }
    b.child.kill().unwrap(); // SIGKILL, with messages in its stream, its queue and the wire
    b.child.wait().unwrap();
    drop(at_b);
    let mut acked = 0;
    while acked < N {
        match next(&mut at_a) {
            server_frame::Kind::ServerAck(_) => acked += 1,
            server_frame::Kind::Receipt(_) => {}
            other => panic!("expected acks and receipts, got {other:?}"),
        }
    }

    let b = Box::start_in(b.data.clone(), &nats.url, "b", ADV_B, &[]);
    let mut at_b = b.client();
    at_b.load_test_login(bob);
    // Every acknowledged message arrives; a copy of one bob acked just before the kill may
    // come again (the durability contract), and a client shows it once.
    let mut copies = 0;
    while shown.len() < N as usize {
        let Some(f) = at_b.try_recv() else {
            let missing: Vec<u64> = (1..=N).filter(|i| !shown.contains_key(i)).collect();
            panic!("acknowledged messages never arrived: {missing:?}");
        };
        if let server_frame::Kind::Message(m) = f {
            copies += 1;
            *shown.entry(m.client_msg_id).or_default() += 1;
            at_b.ack(vec![m.server_msg_id]);
        }
    }
    let again = shown.values().filter(|&&n| n > 1).count();
    assert!(
        again <= (N / 3) as usize,
        "only what was shown before the kill comes again"
    );
    assert!(copies >= N - N / 3);
}

/// More than a sender's share of an offline recipient's queue: the home box refuses the
/// rest for now (`QUEUE_FULL` in a single box), holds them in order and stores them as the
/// recipient reads; every acknowledged message arrives, in order, once.
#[test]
fn messages_past_the_senders_share_wait_in_order_until_the_recipient_reads() {
    let n = messaging::state::limits::QUEUE_MESSAGES_PER_SENDER_MAX as u64 + 200;
    let nats = Nats::start();
    let (a, b) = two_boxes(&nats);
    let alice = &phones_homed_on("a", 1, 4_300_000)[0];
    let bob = &phones_homed_on("b", 1, 4_300_000)[0];
    b.client().load_test_login(bob);
    let mut at_a = a.client();
    at_a.load_test_login(alice);
    for id in 1..=n {
        at_a.send_text(bob, id, &format!("m{id}"));
    }
    let mut acked = 0;
    while acked < n {
        match next(&mut at_a) {
            server_frame::Kind::ServerAck(_) => acked += 1,
            other => panic!("expected acks, got {other:?}"),
        }
    }
    b.wait_stat_any_shard("cluster_inbound_held", 200);
    let mut at_b = b.client();
    at_b.load_test_login(bob);
    let mut last = 0;
    while last < n {
        let Some(f) = at_b.try_recv() else {
            panic!("stopped after {last} of {n}");
        };
        if let server_frame::Kind::Message(m) = f {
            assert_eq!(m.client_msg_id, last + 1, "in order, once");
            last = m.client_msg_id;
            at_b.ack(vec![m.server_msg_id]);
        }
    }
}

/// Three boxes, one user on each: everyone writes to everyone; each message arrives once
/// and each sender gets its DELIVERED receipt.
#[test]
fn users_spread_over_three_boxes_all_reach_each_other() {
    let nats = Nats::start();
    let boxes = [
        Box::start(&nats.url, "a", "box-a.test:5222", &[]),
        Box::start(&nats.url, "b", "box-b.test:5222", &[]),
        Box::start(&nats.url, "c", "box-c.test:5222", &[]),
    ];
    for b in &boxes {
        b.wait_stat("cluster_members", 3);
    }
    let ids = ["a", "b", "c"];
    let users: Vec<String> = ids
        .iter()
        .map(|id| {
            (4_400_000..)
                .map(|i| format!("+1555{i:07}"))
                .find(|p| shards::cluster::placement::choose(p, ids) == Some(*id))
                .unwrap()
        })
        .collect();
    let mut clients: Vec<Client> = boxes.iter().map(Box::client).collect();
    for (c, u) in clients.iter_mut().zip(&users) {
        c.load_test_login(u);
    }
    for (i, from) in users.iter().enumerate() {
        for (j, to) in users.iter().enumerate() {
            if i != j {
                clients[i].send_text(to, (j + 1) as u64, &format!("{from}->{to}"));
            }
        }
    }
    // Each user: 2 ServerAcks and 2 messages (acked), in any order.
    let mut receipts = [0; 3];
    for (i, me) in users.iter().enumerate() {
        let (mut acks, mut got) = (0, Vec::new());
        while acks < 2 || got.len() < 2 {
            match next(&mut clients[i]) {
                server_frame::Kind::ServerAck(_) => acks += 1,
                server_frame::Kind::Message(m) => {
                    assert_eq!(m.body, format!("{}->{me}", m.from).into_bytes());
                    got.push(m.from.clone());
                    clients[i].ack(vec![m.server_msg_id]);
                }
                server_frame::Kind::Receipt(_) => receipts[i] += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        got.sort();
        let mut others: Vec<String> = users.iter().filter(|u| *u != me).cloned().collect();
        others.sort();
        assert_eq!(got, others, "one message from each other user");
    }
    // Then each sender's 2 DELIVERED receipts, each once.
    for (i, c) in clients.iter_mut().enumerate() {
        while receipts[i] < 2 {
            match next(c) {
                server_frame::Kind::Receipt(r) => {
                    assert_eq!(r.kind, ReceiptKind::Delivered as i32);
                    receipts[i] += 1;
                }
                other => panic!("user {i}: expected a receipt, got {other:?}"),
            }
        }
        let more = c
            .sync()
            .into_iter()
            .filter(|f| matches!(f, server_frame::Kind::Receipt(_)))
            .count();
        assert_eq!(more, 0, "user {i}: one receipt per message sent");
    }
}

/// NATS down when the recipient acks: the receipt's publish fails (counted) and is tried
/// again until NATS is back; the sender gets it.
#[test]
fn a_receipt_nats_did_not_take_is_sent_again_once_it_is_back() {
    let mut nats = testkit::nats::NatsCluster::start("receipt-again", 1);
    let url = nats.url();
    let a = Box::start(&url, "a", crate::placement::ADV_A, &[]);
    let b = Box::start(&url, "b", ADV_B, &[]);
    a.wait_stat("cluster_members", 2);
    b.wait_stat("cluster_members", 2);
    let alice = &phones_homed_on("a", 1, 4_800_000)[0];
    let bob = &phones_homed_on("b", 1, 4_800_000)[0];
    let mut at_b = b.client();
    at_b.load_test_login(bob);
    let mut at_a = a.client();
    at_a.load_test_login(alice);
    at_a.send_text(bob, 1, "ack me when NATS is down");
    expect_ack(&mut at_a, 1);
    let m = match next(&mut at_b) {
        server_frame::Kind::Message(m) => m,
        other => panic!("expected the message, got {other:?}"),
    };

    nats.kill(0);
    let failed_before = b.stat("cluster_publish_failures_total").unwrap_or(0);
    at_b.ack(vec![m.server_msg_id]);
    b.wait_stat("cluster_publish_failures_total", failed_before + 1);
    nats.restart(0);
    let r = loop {
        match at_a.recv() {
            server_frame::Kind::Receipt(r) => break r,
            server_frame::Kind::Presence(_) => {}
            other => panic!("expected the receipt, got {other:?}"),
        }
    };
    assert_eq!((r.by.as_str(), r.client_msg_id), (bob.as_str(), 1));
}

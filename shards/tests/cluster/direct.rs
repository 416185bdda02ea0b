//! Messages to a live home box go straight over core NATS (`shards/src/cluster/direct.rs`),
//! not through JetStream; a home box that does not answer has them through its stream
//! instead, and a sender's messages still arrive once each, in the order sent, when the two
//! paths meet.

use proto::v1::server_frame;

use crate::nats::Nats;
use crate::placement::{phones_homed_on, two_boxes, ADV_A, ADV_B};
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
    nats: Nats,
    a: crate::nats::Box,
    b: crate::nats::Box,
    bob: String,
    at_a: Client,
    at_b: Client,
}

impl Pair {
    fn start(phones_from: u64) -> Pair {
        Self::start_with(phones_from, &[])
    }

    /// [`Pair::start`] with `extra` flags for both boxes.
    fn start_with(phones_from: u64, extra: &[&str]) -> Pair {
        let nats = Nats::start();
        let (a, b) = if extra.is_empty() {
            two_boxes(&nats)
        } else {
            let a = crate::nats::Box::start(&nats.url, "a", ADV_A, extra);
            let b = crate::nats::Box::start(&nats.url, "b", ADV_B, extra);
            a.wait_stat("cluster_members", 2);
            b.wait_stat("cluster_members", 2);
            (a, b)
        };
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
            nats,
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

/// Reads messages until `n` arrived, acking each; returns (sender, client id) in arrival
/// order.
fn messages_from(c: &mut Client, n: usize) -> Vec<(String, u64)> {
    let mut got = Vec::new();
    while got.len() < n {
        match c.recv() {
            server_frame::Kind::Message(m) => {
                got.push((m.from.clone(), m.client_msg_id));
                c.ack(vec![m.server_msg_id]);
            }
            server_frame::Kind::Presence(_) | server_frame::Kind::Receipt(_) => {}
            other => panic!("expected messages, got {other:?}"),
        }
    }
    got
}

/// Many senders of box a write to bob of box b at once: their direct messages leave in
/// batches (one request per gateway turn for box b), one per sender in flight; each sender
/// gets every ack and bob every message once, each sender's in the order sent.
#[test]
fn many_senders_at_once_get_every_message_across_once_and_in_order() {
    many_senders_at_once(Pair::start(7_100_000), 7_100_000);
}

/// The same with `--cluster-linger-us` on both boxes: batches wait for more (and the shards'
/// pushes with them), and nothing is lost, doubled or reordered.
#[test]
fn with_a_linger_many_senders_still_get_every_message_once_and_in_order() {
    let t = Pair::start_with(7_200_000, &["--cluster-linger-us", "2000"]);
    many_senders_at_once(t, 7_200_000);
}

fn many_senders_at_once(t: Pair, phones_from: u64) {
    const SENDERS: usize = 12;
    const EACH: u64 = 10;
    let (a, b, bob, mut at_b) = (t.a, t.b, t.bob, t.at_b);
    let senders = phones_homed_on("a", SENDERS + 1, phones_from).split_off(1);
    let mut clients: Vec<Client> = senders
        .iter()
        .map(|p| {
            let mut c = a.client();
            c.load_test_login(p);
            c
        })
        .collect();
    for id in 1..=EACH {
        for c in &mut clients {
            c.send_text(&bob, id, &format!("m{id}"));
        }
    }
    let got = messages_from(&mut at_b, SENDERS * EACH as usize);
    for c in &mut clients {
        acks(c, 1..=EACH);
    }
    for s in &senders {
        let theirs: Vec<u64> = got
            .iter()
            .filter(|(f, _)| f == s)
            .map(|(_, i)| *i)
            .collect();
        assert_eq!(theirs, (1..=EACH).collect::<Vec<_>>(), "{s}'s messages");
    }
    let sent = SENDERS as u64 * EACH;
    // Alice's first message (before bob's home was known) went through the stream.
    a.wait_stat("cluster_direct_out_total", sent);
    b.wait_stat("cluster_direct_in_total", sent);
    assert_eq!(a.stat("cluster_direct_fallbacks_total"), Some(0));
    // Every message left in some request, once; a request carries one or more.
    a.wait_stat("cluster_direct_batched_out_total", sent);
    let requests = a.stat("cluster_direct_batches_out_total").unwrap();
    assert!((1..=sent).contains(&requests), "{requests} requests");
    eprintln!("{sent} messages in {requests} requests");
}

/// One request over core NATS, as another box sends it: `payload` to `subject`, the reply's
/// bytes back (the NATS text protocol on a plain socket, so that the test writes exactly
/// the bytes it means).
fn nats_request(url: &str, subject: &str, payload: &[u8]) -> Vec<u8> {
    use std::io::{BufRead, BufReader, Read, Write};
    let addr = url.trim_start_matches("nats://");
    let conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("INFO"), "{line}");
    write!(
        w,
        "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB t.reply 1\r\n\
         PUB {subject} t.reply {}\r\n",
        payload.len()
    )
    .unwrap();
    w.write_all(payload).unwrap();
    w.write_all(b"\r\nPING\r\n").unwrap();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.starts_with("PING") {
            w.write_all(b"PONG\r\n").unwrap();
        } else if let Some(head) = line.strip_prefix("MSG ") {
            let len: usize = head.split_whitespace().last().unwrap().parse().unwrap();
            let mut body = vec![0; len + 2];
            r.read_exact(&mut body).unwrap();
            body.truncate(len);
            return body;
        } else {
            assert!(
                line.starts_with("PONG") || line.starts_with("+OK"),
                "{line}"
            );
        }
    }
}

/// Peer input: a batch from another box is taken message by message (one that does not
/// check is answered 0 and counted, the others stored and answered with their ids, in the
/// order sent); one that is garbage, over-count or over-size is refused whole (no ids:
/// the sender's stream takes them) and counted; the box serves on.
#[test]
fn a_batch_from_another_box_is_taken_in_order_and_a_bad_one_is_refused_and_counted() {
    use shards::cluster::cross::Envelope;
    use shards::cluster::direct::{self, DirectBatchReply};
    let t = Pair::start(7_300_000);
    let (b, bob, mut at_b) = (t.b, t.bob, t.at_b);
    let env = |from: &str, to: &str, id: u64| Envelope {
        to: to.into(),
        from: from.into(),
        client_msg_id: id,
        body: format!("x{id}").into_bytes(),
        ..Default::default()
    };
    let envs = [
        env("+15559000001", &bob, 1),
        env("+15559000002", "not a phone", 1),
        env("+15559000003", &bob, 1),
        env("+15559000004", &bob, 1),
    ];
    let refs: Vec<&Envelope> = envs.iter().collect();
    let url = &t.nats.url;
    let subject = direct::subject("b");
    let reply = nats_request(url, &subject, &direct::encode_batch(0, &refs));
    let ids = DirectBatchReply::ids(&reply, 4);
    assert!(ids[0] != 0 && ids[2] != 0 && ids[3] != 0, "{ids:?}");
    assert_eq!(ids[1], 0);
    let got = messages_from(&mut at_b, 3);
    let from: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(from, ["+15559000001", "+15559000003", "+15559000004"]);
    b.wait_stat("cluster_messages_in_bad_total", 1);

    // Garbage, over-count, over-size: no ids, counted, nothing stored.
    assert!(nats_request(url, &subject, &[0xff; 12]).is_empty());
    let empties = [0x1a, 0x00].repeat(direct::DIRECT_BATCH_MSGS_MAX + 1);
    assert!(nats_request(url, &subject, &empties).is_empty());
    let big = vec![0x1a; direct::DIRECT_BATCH_BYTES_MAX + 1024];
    assert!(nats_request(url, &subject, &big).is_empty());
    b.wait_stat("cluster_direct_batches_bad_total", 3);

    // The box serves on: a batch of one still goes through.
    let one = env("+15559000005", &bob, 1);
    let reply = nats_request(url, &subject, &direct::encode_batch(0, &[&one]));
    assert_ne!(DirectBatchReply::ids(&reply, 1), vec![0]);
    assert_eq!(messages_from(&mut at_b, 1)[0].0, "+15559000005");
}

//! The attacks of issue 22 items 1 and 2 against the real server over TLS: a logged-in user
//! flooding `PresenceSubscribe` without reading while a legitimate pair converses, and a
//! logged-in user probing which numbers are registered. (The same rules with fake time, in
//! more detail: `sim/admission.rs`.)

use crate::support;

use std::time::Instant;

use proto::v1::{client_frame, server_frame, ErrorCode};
use support::admin::{fresh_stats, service_sum, sum};
use support::{phones_on, Client, TestServer};
use testkit::temp_dir;

/// Sends of the legitimate sender during the attack.
const CONVERSATION_SENDS: u64 = 80;
/// Subscribe frames the attacker writes per connection before reconnecting.
const FRAMES_PER_SESSION: usize = 60;
/// Most connections the attacker opens.
const SESSIONS_MAX: usize = 12;

fn server(shards: usize, tweak: impl FnOnce(&mut shards::config::ServerConfig)) -> TestServer {
    TestServer::start_cfg(shards, true, temp_dir("fanout"), |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
        tweak(c);
    })
}

/// Waits for the answer to send `cid`, skipping other frames; the client's read timeout
/// (10 s) fails the test if none comes.
fn answer_to(c: &mut Client, cid: u64) -> server_frame::Kind {
    loop {
        let f = c.recv();
        let id = match &f {
            server_frame::Kind::ServerAck(a) => a.client_msg_id,
            server_frame::Kind::Busy(b) => b.client_msg_id,
            server_frame::Kind::Error(e) => e.client_msg_id,
            _ => continue,
        };
        if id == cid {
            return f;
        }
    }
}

#[test]
fn a_presence_flood_without_reading_leaves_every_send_of_a_conversation_answered() {
    let server = server(2, |_| {});
    let admin = server
        .rt
        .as_ref()
        .unwrap()
        .admin_addr()
        .expect("admin serves");
    // Everyone homed on shard 0: the attacker's fan-out starts where the pair talks.
    let phones = phones_on(0, 2, 4, 8_200_000);
    let (attacker, alice, bob) = (phones[0].clone(), phones[1].clone(), phones[2].clone());
    let keys: Vec<Vec<u8>> = phones.iter().map(|p| server.register(p)).collect();
    let mut a = server.login(&alice, &keys[1]);
    let _b = server.login(&bob, &keys[2]);
    // A neighbour pinging on the same shard.
    let mut pinger = server.login(&phones[3], &keys[3]);
    let contacts: Vec<String> = (0..proto::limits::PRESENCE_CONTACTS_PER_FRAME_MAX)
        .map(|i| format!("+1999{i:07}"))
        .collect();
    let sub = client_frame::Kind::PresenceSubscribe(proto::v1::PresenceSubscribe { contacts });

    let started = Instant::now();
    let (flooding, flooding_rx) = std::sync::mpsc::channel();
    let attack = {
        let (key, sub) = (keys[0].clone(), sub.clone());
        // Connections made here (TestServer stays on this thread); each logs in in turn,
        // replacing the one before, as a reconnecting client does.
        // Their TLS handshakes are done before the measurement (a ping each).
        let conns: Vec<Client> = (0..SESSIONS_MAX)
            .map(|i| {
                let mut c = server.client();
                c.send(client_frame::Kind::Ping(proto::v1::Ping {
                    nonce: i as u64,
                }));
                assert!(matches!(c.recv(), server_frame::Kind::Pong(_)));
                c
            })
            .collect();
        std::thread::spawn(move || {
            let mut written = 0;
            for (i, mut c) in conns.into_iter().enumerate() {
                let login = client_frame::Kind::Login(proto::v1::Login {
                    protocol_version: support::V,
                    phone: attacker.clone(),
                    device_key: key.clone(),
                });
                let logged_in = c.try_send(login)
                    && matches!(c.try_recv(), Some(server_frame::Kind::LoggedIn(_)));
                if !logged_in {
                    continue; // the server closed it: the next one
                }
                // The same contacts again and again, never reading.
                for _ in 0..FRAMES_PER_SESSION {
                    if !c.try_send(sub.clone()) {
                        break;
                    }
                    written += 1;
                    if written == 10 {
                        let _ = flooding.send(());
                    }
                }
                // Before reconnecting, everything written was processed: a ping's answer
                // comes after the answers to the frames before it.
                let nonce = 1_000 + i as u64;
                if c.try_send(client_frame::Kind::Ping(proto::v1::Ping { nonce })) {
                    while let Some(f) = c.try_recv() {
                        if matches!(f, server_frame::Kind::Pong(p) if p.nonce == nonce) {
                            break;
                        }
                    }
                }
            }
            written
        })
    };
    flooding_rx.recv().expect("the attacker writes");
    let mut acked = 0;
    let mut pings = Vec::new();
    for cid in 1..=CONVERSATION_SENDS {
        let t = Instant::now();
        pinger.send(client_frame::Kind::Ping(proto::v1::Ping { nonce: cid }));
        assert!(matches!(pinger.recv(), server_frame::Kind::Pong(p) if p.nonce == cid));
        pings.push(t.elapsed());
        a.send_text(&bob, cid, "hello");
        match answer_to(&mut a, cid) {
            server_frame::Kind::ServerAck(_) => acked += 1,
            server_frame::Kind::Busy(b) => assert!(b.retry_after_ms > 0),
            other => panic!("send {cid}: {other:?}"),
        }
    }
    let written = attack.join().unwrap();
    let elapsed_s = started.elapsed().as_secs() + 1;
    assert!(acked > 0, "the conversation went on");
    pings.sort();
    let p99 = pings[pings.len() * 99 / 100];
    eprintln!(
        "neighbour's ping during the flood: p50 {:?}, p99 {p99:?} (debug assertions: {})",
        pings[pings.len() / 2],
        cfg!(debug_assertions)
    );
    // A liveness bound only (a debug build on a shared box; release numbers are the bench's):
    // the neighbour is never starved.
    assert!(p99 < std::time::Duration::from_secs(2), "ping p99 {p99:?}");

    let stats = fresh_stats(admin, 2);
    assert_eq!(service_sum(&stats, "mesh_owed_dropped_total"), 0);
    assert_eq!(sum(&stats, "mesh_send_full"), 0, "the outbox never filled");
    // Only new subscriptions and each session's first renewal fan out, within the budget:
    // a request and an answer per contact admitted.
    let admitted = u64::from(messaging::tables::admission::PRESENCE_FANOUT_PER_USER_BURST)
        + u64::from(messaging::tables::admission::PRESENCE_FANOUT_PER_USER_PER_S) * elapsed_s;
    let mesh = sum(&stats, "mesh_msgs_sent");
    assert!(
        mesh <= 2 * admitted + 10 * CONVERSATION_SENDS,
        "{mesh} mesh messages for {written} subscribe frames"
    );
    assert!(
        service_sum(&stats, "refused_presence_fanout_total") >= 1,
        "{written} frames over {SESSIONS_MAX} sessions spend more than the budget"
    );
}

#[test]
fn probes_get_the_same_answers_for_registered_and_unknown_numbers_and_are_budgeted() {
    const PROBES: usize = 20;
    let server = server(2, |c| c.users.new_recipients_per_hour = 2 * PROBES as u32);
    let admin = server
        .rt
        .as_ref()
        .unwrap()
        .admin_addr()
        .expect("admin serves");
    let attacker = phones_on(0, 2, 1, 8_300_000).remove(0);
    let key = server.register(&attacker);
    // Registered numbers (offline), and numbers nobody has, on both shards.
    let registered: Vec<String> = (phones_on(0, 2, PROBES / 2 + 1, 8_400_000).into_iter())
        .chain(phones_on(1, 2, PROBES / 2 + 1, 8_400_000))
        .collect();
    for p in &registered {
        let mut c = server.client();
        c.load_test_login(p);
    }
    let unknown: Vec<String> = (phones_on(0, 2, PROBES / 2 + 1, 8_500_000).into_iter())
        .chain(phones_on(1, 2, PROBES / 2 + 1, 8_500_000))
        .collect();
    let mut c = server.login(&attacker, &key);
    let mut cid = 0;
    let mut probe = |to: &str| {
        cid += 1;
        c.send_text(to, cid, "hi");
        match answer_to(&mut c, cid) {
            server_frame::Kind::ServerAck(a) => {
                assert_ne!(a.server_msg_id, 0);
                "ack".to_string()
            }
            server_frame::Kind::Error(e) if e.code == ErrorCode::RateLimited as i32 => {
                assert!(
                    e.retry_after_ms > 0 && e.retry_after_ms <= messaging::tables::budgets::HOUR_MS
                );
                format!("rate limited: {}", e.detail)
            }
            other => format!("{other:?}"),
        }
    };
    let mut answers = Vec::new();
    for i in 0..PROBES {
        answers.push((probe(&registered[i]), probe(&unknown[i])));
    }
    for (known, nobody) in &answers {
        assert_eq!((known.as_str(), nobody.as_str()), ("ack", "ack"));
    }
    // Over the budget: the same refusal either way.
    let (known, nobody) = (probe(&registered[PROBES]), probe(&unknown[PROBES]));
    assert!(known.starts_with("rate limited"), "{known}");
    assert_eq!(known, nobody);

    let stats = fresh_stats(admin, 2);
    assert_eq!(service_sum(&stats, "refused_new_recipient_total"), 2);
    assert_eq!(service_sum(&stats, "sends_to_unknown_total"), PROBES as u64);
}

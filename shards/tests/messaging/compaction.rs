//! The log is compacted once acked messages make it mostly garbage, and the compacted log
//! restores the same state: accounts, queues, and dedupe of old client ids (the sender's
//! window and floor: an old retry is recognised, a recent one gets its server id again).

use crate::support;

use proto::v1::server_frame;
use support::TestServer;

/// Bytes of records in the log (zeros written ahead of its end are not counted).
fn log_len(log: &std::path::Path) -> u64 {
    messaging::durable::record::replay(&std::fs::read(log).unwrap()).valid_len
}

#[test]
fn compaction_shrinks_the_log_and_keeps_the_state() {
    let data = testkit::temp_dir("compact");
    let log = data.join("shard-0.log");
    let (a, b) = ("+15556000001", "+15556000002");
    let body = "y".repeat(1000);
    let last_ack;
    {
        let server = TestServer::start_cfg(1, false, data.clone(), |c| c.compact_min_bytes = 1);
        let mut ca = server.client();
        ca.load_test_login(a);
        let mut cb = server.client();
        cb.load_test_login(b);
        drop(cb);
        for i in 1..=300u64 {
            ca.send_text(b, i, &body);
        }
        let acks = ca.recv_n(300);
        assert!(matches!(&acks[0], server_frame::Kind::ServerAck(_)));
        let before = log_len(&log);
        assert!(before > 300_000, "log holds the bodies: {before}");
        let mut cb = server.client();
        assert_eq!(cb.load_test_login(b), 300);
        for _ in 0..300 {
            let m = cb.expect_message();
            cb.ack(vec![m.server_msg_id]);
        }
        assert!(cb.sync().is_empty());
        // More traffic drives the next commit, which finds the log mostly garbage.
        ca.recv_n(300); // the DELIVERED receipts
        ca.send_text(b, 301, "after");
        last_ack = match ca.recv() {
            server_frame::Kind::ServerAck(x) => x.server_msg_id,
            other => panic!("expected ServerAck, got {other:?}"),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while log_len(&log) * 4 > before {
            assert!(std::time::Instant::now() < deadline, "log never compacted");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    // Restart on the compacted log.
    let server = TestServer::start_with(1, false, data);
    let mut cb = server.client();
    assert_eq!(cb.load_test_login(b), 1, "only the unacked message is left");
    assert_eq!(cb.expect_message().body, b"after");
    let mut ca = server.client();
    ca.load_test_login(a);
    ca.send_text(b, 1, &body);
    match ca.recv() {
        server_frame::Kind::ServerAck(x) => {
            assert_eq!(
                x.server_msg_id, 0,
                "recognised below the floor: stored before"
            )
        }
        other => panic!("expected ServerAck, got {other:?}"),
    }
    ca.send_text(b, 301, "after");
    match ca.recv() {
        server_frame::Kind::ServerAck(x) => {
            assert_eq!(x.server_msg_id, last_ack, "the window survived")
        }
        other => panic!("expected ServerAck, got {other:?}"),
    }
    assert!(
        cb.sync().is_empty(),
        "the old message is not delivered again"
    );
}

/// A compaction whose snapshot is built in slices while senders keep sending to queued
/// users: after a restart on the compacted log, every message the senders were told is
/// stored is there once, in order, and the snapshot really was built in more than one
/// slice. One sender writes without waiting for answers, so its records land in the log
/// while snapshots are being built (the compacted log must carry them after the snapshot).
#[test]
fn a_snapshot_built_while_messages_flow_loses_and_doubles_nothing() {
    use std::collections::BTreeMap;
    use support::admin::{fresh_stats, num};
    let data = testkit::temp_dir("compact-flow");
    let log = data.join("shard-0.log");
    let (a, b, e) = ("+15556000011", "+15556000012", "+15556000014");
    // Offline users whose queues stay: their walk takes several slices.
    let cs: Vec<String> = (0..40).map(|i| format!("+155560010{i:02}")).collect();
    let body = "z".repeat(1000);
    // (recipient, sender) → client ids, in the order sent.
    let mut want: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    {
        let server = TestServer::start_cfg(1, false, data.clone(), |cfg| {
            cfg.compact_min_bytes = 1;
            cfg.admin = Some("127.0.0.1:0".parse().unwrap());
        });
        let admin = server
            .rt
            .as_ref()
            .unwrap()
            .admin_addr()
            .expect("admin serves");
        let mut ca = server.client();
        ca.load_test_login(a);
        let mut ce = server.client();
        ce.load_test_login(e);
        for user in cs.iter().map(String::as_str).chain([b]) {
            let mut cl = server.client();
            cl.load_test_login(user);
        }
        // One device's client ids only grow, whoever they go to.
        let a_cid = std::cell::Cell::new(0u64);
        let next_a = || {
            a_cid.set(a_cid.get() + 1);
            a_cid.get()
        };
        type Want = BTreeMap<(String, String), Vec<u64>>;
        let send_to_c = |ca: &mut support::Client, want: &mut Want, text: &str| {
            let id = next_a();
            let to = &cs[id as usize % cs.len()];
            ca.send_text(to, id, text);
            want.entry((to.clone(), a.to_string()))
                .or_default()
                .push(id);
        };
        for _ in 0..80 {
            send_to_c(&mut ca, &mut want, &body);
        }
        ca.recv_n(80);
        // B's messages (900 from each of two senders: a sender's share of one queue is
        // 1,000) become garbage once B acks them: the log pays to compact.
        for i in 0..900u64 {
            ca.send_text(b, next_a(), &body);
            ce.send_text(b, 10_000 + i, &body);
        }
        for c in [&mut ca, &mut ce] {
            assert!(c
                .recv_n(900)
                .iter()
                .all(|f| matches!(f, server_frame::Kind::ServerAck(_))));
        }
        let before = log_len(&log);
        // E now writes 1,500 short sends to the Cs without waiting for answers.
        let e_sends: Vec<(String, u64)> = (0..1500u64)
            .map(|i| (cs[(i * 7) as usize % cs.len()].clone(), 20_000 + i))
            .collect();
        for (to, id) in &e_sends {
            want.entry((to.clone(), e.to_string()))
                .or_default()
                .push(*id);
        }
        let writer = std::thread::spawn(move || {
            for (to, id) in &e_sends {
                ce.send_text(to, *id, "short");
            }
            let mut acks = 0;
            while acks < e_sends.len() {
                match ce.recv() {
                    server_frame::Kind::ServerAck(x) => {
                        assert_ne!(x.server_msg_id, 0, "each send is new");
                        acks += 1;
                    }
                    server_frame::Kind::Receipt(_) => {}
                    other => panic!("E got {other:?}"),
                }
            }
        });
        let mut cb = server.client();
        assert_eq!(cb.load_test_login(b), 1800);
        // B acks in batches while A keeps sending to the Cs: the queues drain and
        // snapshots start while E's records land.
        for _ in 0..60 {
            // Within the delivery window (what B may hold unacked).
            let ids: Vec<u64> = (0..30).map(|_| cb.expect_message().server_msg_id).collect();
            cb.ack(ids);
            for _ in 0..2 {
                send_to_c(&mut ca, &mut want, &body);
            }
        }
        // A's answers: 120 ServerAcks, among 900 DELIVERED receipts.
        let mut server_acks = 0;
        while server_acks < 120 {
            if let server_frame::Kind::ServerAck(x) = ca.recv() {
                assert_ne!(x.server_msg_id, 0, "each send is new");
                server_acks += 1;
            }
        }
        writer.join().expect("E's sends all answered");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            // More sends drive the commits that find the log mostly garbage.
            for _ in 0..20 {
                send_to_c(&mut ca, &mut want, "tick");
            }
            let mut acks = 0;
            while acks < 20 {
                if let server_frame::Kind::ServerAck(_) = ca.recv() {
                    acks += 1;
                }
            }
            if log_len(&log) * 2 < before {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "log never compacted");
        }
        let s = &fresh_stats(admin, 1)[0]["service"];
        let (snapshots, slices) = (
            num(s, "log_snapshots_total"),
            num(s, "log_snapshot_slices_total"),
        );
        assert!(snapshots >= 1, "{s:?}");
        assert!(
            slices > snapshots,
            "built in slices: {slices} for {snapshots}"
        );
    }
    let server = TestServer::start_with(1, false, data);
    let mut got: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for user in &cs {
        let mut cc = server.client();
        let n = cc.load_test_login(user) as usize;
        for _ in 0..n {
            let m = cc.expect_message();
            got.entry((user.clone(), m.from.clone()))
                .or_default()
                .push(m.client_msg_id);
            cc.ack(vec![m.server_msg_id]);
        }
        assert!(cc.sync().is_empty(), "{user}: nothing more");
    }
    for (key, ids) in &want {
        assert_eq!(
            got.get(key),
            Some(ids),
            "{key:?}: every stored message once, in order"
        );
    }
    assert_eq!(got.len(), want.len(), "nothing from anyone else");
}

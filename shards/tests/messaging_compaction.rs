//! The log is compacted once acked messages make it mostly garbage, and the compacted log
//! restores the same state: accounts, queues, and dedupe of old client ids (the sender's
//! window and floor: an old retry is recognised, a recent one gets its server id again).

mod support;

use proto::v1::server_frame;
use support::TestServer;

/// Bytes of records in the log (zeros written ahead of its end are not counted).
fn log_len(log: &std::path::Path) -> u64 {
    shards::record::replay(&std::fs::read(log).unwrap()).valid_len
}

#[test]
fn compaction_shrinks_the_log_and_keeps_the_state() {
    let data = support::temp_dir("compact");
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

//! Tombstones are lazy (they start no sync of their own) but never forgotten: one rides on
//! a flush within `TOMBSTONE_FLUSH_MS` with no other traffic, and a graceful stop writes
//! what is left, so an acked message is not delivered again after either.

use crate::support;

use messaging::durable::record::{record::Kind, replay};
use proto::v1::server_frame;
use support::{Client, TestServer};

const A: &str = "+15557100001";
const B: &str = "+15557100002";

/// A sends one message to B; B takes it, and acks only once A's ServerAck says its record
/// is durable, so the ack needs a tombstone. Returns once A has the DELIVERED receipt.
fn acked_after_durable(server: &TestServer) -> (Client, Client) {
    let mut ca = server.client();
    ca.load_test_login(A);
    let mut cb = server.client();
    cb.load_test_login(B);
    ca.send_text(B, 1, "hello");
    let m = cb.expect_message();
    assert!(matches!(ca.recv(), server_frame::Kind::ServerAck(_)));
    cb.ack(vec![m.server_msg_id]);
    match ca.recv() {
        server_frame::Kind::Receipt(r) => assert_eq!(r.server_msg_id, m.server_msg_id),
        other => panic!("expected DELIVERED, got {other:?}"),
    }
    (ca, cb)
}

fn tombstones(data: &std::path::Path) -> usize {
    let bytes = std::fs::read(data.join("shard-0.log")).unwrap_or_default();
    replay(&bytes)
        .records
        .iter()
        .filter(|r| matches!(r.kind, Some(Kind::Removed(_))))
        .count()
}

fn queued_for_b(data: std::path::PathBuf) -> u32 {
    let server = TestServer::start_with(1, false, data);
    let mut cb = server.client();
    cb.load_test_login(B)
}

#[test]
fn a_lone_tombstone_is_written_within_the_flush_delay() {
    let data = testkit::temp_dir("tombstone-timer");
    {
        let server = TestServer::start_with(1, false, data.clone());
        let _clients = acked_after_durable(&server);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while tombstones(&data) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "tombstone never written"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    assert_eq!(queued_for_b(data), 0, "not delivered again");
}

#[test]
fn a_graceful_stop_writes_the_tombstones_left() {
    let data = testkit::temp_dir("tombstone-stop");
    {
        let mut server = TestServer::start_with(1, false, data.clone());
        let _clients = acked_after_durable(&server);
        server.stop();
    }
    assert_eq!(tombstones(&data), 1);
    assert_eq!(queued_for_b(data), 0, "not delivered again");
}

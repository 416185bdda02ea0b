//! Start-up replay of a log many times the replay window: the real server reads it through
//! its bounded window (`replay.rs`), records straddling every window end, and serves what
//! it holds, in order.

mod support;

use messaging::durable::record::{self, record::Kind, ItemRec, Record, RemovedRec};
use messaging::durable::replay::REPLAY_WINDOW_BYTES;
use prost::Message as _;
use proto::v1::{server_frame, Message, ServerFrame};
use support::TestServer;

const A: &str = "+15557100001";
const B: &str = "+15557100002";

/// An item for B from A holding `body`, framed.
fn item(id: u64, body: Vec<u8>, out: &mut Vec<u8>) {
    let frame = ServerFrame {
        kind: Some(server_frame::Kind::Message(Message {
            from: A.into(),
            server_msg_id: id,
            client_msg_id: id,
            body,
            ..Default::default()
        })),
    }
    .encode_to_vec();
    let rec = Kind::Item(ItemRec {
        user: messaging::state::home::Phone::parse(B),
        id,
        frame,
        sender: messaging::state::home::Phone::parse(A),
        client_msg_id: id,
        group_id: 0,
        sender_device: 0,
    });
    record::encode(&Record { kind: Some(rec) }, out);
}

#[test]
fn a_log_several_windows_long_is_replayed_whole_and_in_order() {
    let data = testkit::temp_dir("replay-big");
    {
        let server = TestServer::start_with(1, false, data.clone());
        server.client().load_test_login(A);
        server.client().load_test_login(B);
    }
    // What the shard wrote (accounts), without the zeros written ahead of its end, then
    // messages for B of every size up to the body limit, every other one acked (its
    // tombstone written a few records later, as lazy tombstones are).
    let path = shards::data::journal_check::log_path(&data, 0);
    let mut log = std::fs::read(&path).unwrap();
    let valid = record::replay(&log).valid_len as usize;
    log.truncate(valid);
    let (mut id, mut all, mut removed) = (1_000_000u64, Vec::new(), Vec::new());
    while log.len() < 3 * REPLAY_WINDOW_BYTES + REPLAY_WINDOW_BYTES / 2 {
        id += 1;
        let len = (id as usize * 7_919) % proto::limits::BODY_BYTES_MAX;
        let body = vec![b'a' + (id % 26) as u8; len];
        item(id, body.clone(), &mut log);
        all.push((id, body));
        if id % 2 == 1 && id > 1_000_005 {
            let rec = Kind::Removed(RemovedRec {
                user: messaging::state::home::Phone::parse(B),
                id: id - 4,
            });
            record::encode(&Record { kind: Some(rec) }, &mut log);
            removed.push(id - 4);
        }
    }
    let kept: Vec<(u64, Vec<u8>)> = all
        .into_iter()
        .filter(|(i, _)| !removed.contains(i))
        .collect();
    std::fs::write(&path, &log).unwrap();

    let server = TestServer::start_with(1, false, data);
    let mut b = server.client();
    let queued = b.load_test_login(B) as usize;
    assert_eq!(queued, kept.len());
    let mut got = Vec::new();
    while got.len() < queued {
        let m = b.expect_message();
        b.ack(vec![m.server_msg_id]);
        got.push((m.server_msg_id, m.body));
    }
    assert!(got == kept, "every message kept, whole and in log order");
}

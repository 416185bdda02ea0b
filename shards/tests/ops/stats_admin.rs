//! The admin endpoint on a real server: `/metrics` parses as Prometheus text and its
//! counters move with traffic; `/stats` per-shard numbers match exactly what the test sent.

use crate::support;

use proto::v1::{client_frame, server_frame, Ping};
use support::admin::{fresh_stats, get, metric_sum, num, parse_prometheus, sum};
use support::{phones_on, TestServer};
use testkit::temp_dir;

fn server(shards: usize, tls: bool) -> (TestServer, std::net::SocketAddr) {
    let s = TestServer::start_cfg(shards, tls, temp_dir("stats"), |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
        // A timing alarm: a debug build on a shared machine can trip it, and these tests
        // assert that no alarm is up (alarms themselves are tested in ops/stats_alarms.rs).
        c.alarms.turn_max_ms = None;
    });
    let admin = s.rt.as_ref().unwrap().admin_addr().expect("admin serves");
    (s, admin)
}

fn ping_frame(nonce: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let f = proto::v1::ClientFrame {
        kind: Some(client_frame::Kind::Ping(Ping { nonce })),
    };
    proto::codec::encode_frame(&f, &mut out).unwrap();
    out
}

#[test]
fn metrics_parse_as_prometheus_and_counters_move_with_traffic() {
    let (server, admin) = server(2, true);
    let before = parse_prometheus(&get(admin, "/metrics").1);
    let a = phones_on(0, 2, 1, 300).remove(0);
    let b = phones_on(1, 2, 1, 300).remove(0);
    let (ka, kb) = (server.register(&a), server.register(&b));
    let mut ca = server.login(&a, &ka);
    let mut cb = server.login(&b, &kb);
    for i in 1..=5 {
        ca.send_text(&b, i, "hi");
        assert!(matches!(ca.recv(), server_frame::Kind::ServerAck(_)));
        let m = cb.expect_message();
        cb.ack(vec![m.server_msg_id]);
        assert!(matches!(ca.recv(), server_frame::Kind::Receipt(_)));
    }
    ca.sync();
    cb.sync();
    fresh_stats(admin, 2);
    let (status, text) = get(admin, "/metrics");
    assert_eq!(status, 200);
    let after = parse_prometheus(&text);
    for s in &after {
        let shard: usize = s.labels["shard"]
            .parse()
            .expect("every sample names its shard");
        assert!(shard < 2, "{s:?}");
    }
    let moved = |name: &str| metric_sum(&after, name) - metric_sum(&before, name);
    // Register (2 frames) and login (1 frame) per user, 5 sends and 5 acks, 2 pings.
    assert!(
        moved("switchboard_frames_in_total") >= 18.0,
        "{}",
        moved("switchboard_frames_in_total")
    );
    assert!(moved("switchboard_frames_out_total") >= 18.0);
    assert!(
        moved("switchboard_tls_handshakes_total") >= 4.0,
        "two registrations, two logins"
    );
    assert!(moved("switchboard_accepts_total") >= 4.0);
    assert!(
        moved("switchboard_mesh_messages_sent_total") >= 5.0,
        "the users live on different shards"
    );
    assert!(metric_sum(&after, "switchboard_fsync_seconds_count") > 0.0);
    assert!(metric_sum(&after, "switchboard_log_bytes") > 0.0);
    assert_eq!(metric_sum(&after, "switchboard_connections_open"), 2.0);
    assert!(
        moved("switchboard_tls_handshake_seconds_count") >= 4.0,
        "every handshake timed"
    );
    assert!(
        moved("switchboard_mesh_hop_seconds_count") >= 5.0,
        "every batch between the shards timed"
    );
    assert_eq!(
        moved("switchboard_delivery_seconds_count"),
        5.0,
        "each message delivered to its online recipient once"
    );
    for s in after.iter().filter(|s| s.name.ends_with("_bucket")) {
        assert!(s.labels.contains_key("le"), "{s:?}");
    }
    let (status, _) = get(admin, "/nothing-here");
    assert_eq!(status, 404);
}

#[test]
fn stats_per_shard_numbers_match_what_the_test_sent() {
    let (server, admin) = server(2, false);
    let conns = 6;
    let pings = 25;
    let mut clients: Vec<_> = (0..conns).map(|_| server.client()).collect();
    for c in &mut clients {
        c.sync();
    }
    let before = fresh_stats(admin, 2);
    assert_eq!(sum(&before, "conns_open"), conns);
    let frame = ping_frame(7);
    for c in &mut clients {
        for _ in 0..pings {
            c.write_raw(&frame);
        }
        for _ in 0..pings {
            assert!(matches!(c.recv(), server_frame::Kind::Pong(p) if p.nonce == 7));
        }
    }
    let after = fresh_stats(admin, 2);
    let delta = |f: &str| sum(&after, f) - sum(&before, f);
    let sent = conns * pings;
    assert_eq!(delta("frames_in"), sent, "every frame counted once");
    assert_eq!(delta("frames_out"), sent, "one pong each");
    assert_eq!(
        delta("bytes_in"),
        sent * frame.len() as u64,
        "plaintext: bytes as sent"
    );
    assert_eq!(delta("accepts"), 0);
    assert_eq!(sum(&after, "conns_open"), conns);
    for (i, s) in after.iter().enumerate() {
        assert_eq!(num(s, "shard"), i as u64);
        assert_eq!(s["mesh_outbox_depth"].as_array().unwrap().len(), 2);
        assert!(s["rates"]["frames_in"]["1s"].as_f64().is_some());
        assert!(
            s["latency"]["fsync_seconds"]["count"].as_u64().is_some(),
            "{s}"
        );
        assert!(s["service"]["queue_items"].as_u64().is_some());
        assert!(s["alarms"].as_array().unwrap().is_empty(), "{s}");
    }
    drop(clients.pop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sum(&fresh_stats(admin, 2), "conns_open") != conns - 1 {
        assert!(std::time::Instant::now() < deadline, "close never counted");
    }
}

//! A phone that has to reconnect (a network change, a box that restarted) pays little: its
//! TLS handshake resumes from the ticket of its last connection, and logging in again with
//! a device the server knows writes nothing to the log.

use std::time::Duration;

use proto::v1::{client_frame, server_frame, Ping};
use rustls::HandshakeKind;
use testkit::temp_dir;

use crate::support::admin::{fresh_stats, service_sum, sum};
use crate::support::{phones_on, Client, TestServer};

#[test]
fn a_reconnecting_phone_resumes_tls_and_logs_in_without_a_log_write() {
    let s = TestServer::start_cfg(1, true, temp_dir("reconnect"), |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
        c.alarms.turn_max_ms = None;
    });
    let admin = s.rt.as_ref().unwrap().admin_addr().expect("admin serves");
    let phone = phones_on(0, 1, 1, 700).remove(0);
    let key = s.register(&phone);
    let cert = engine::tls::dev_cert_path(&shards::server::tls_dir(&s.cfg.data_dir));
    let config = engine::tls::client_config_resuming(&cert).unwrap();

    let (mut first, kind) = Client::tls_with(s.addr, config.clone());
    assert_eq!(kind, HandshakeKind::Full);
    // Reading LoggedIn also reads the ticket, which the server sent before it.
    first.login(&phone, &key);
    drop(first);

    let before = fresh_stats(admin, 1);
    let (mut second, kind) = Client::tls_with(s.addr, config);
    assert_eq!(kind, HandshakeKind::Resumed);
    second.login(&phone, &key);
    second.send(client_frame::Kind::Ping(Ping { nonce: 9 }));
    match second.recv() {
        server_frame::Kind::Pong(p) => assert_eq!(p.nonce, 9),
        other => panic!("expected Pong, got {other:?}"),
    }
    let after = wait_for_resumed(admin, sum(&before, "handshakes_resumed") + 1);
    for field in ["log_bytes", "log_commits_total"] {
        assert_eq!(
            service_sum(&after, field),
            service_sum(&before, field),
            "{field}: a known device's login writes nothing"
        );
    }
}

/// The shard's statistics once they count `want` resumed handshakes (they publish on a
/// timer, so a fresh snapshot may still predate the handshake).
fn wait_for_resumed(admin: std::net::SocketAddr, want: u64) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = fresh_stats(admin, 1);
        if sum(&now, "handshakes_resumed") >= want {
            assert_eq!(sum(&now, "handshakes_resumed"), want);
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no resumed handshake counted"
        );
    }
}

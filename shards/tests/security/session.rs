//! A user acts only on their own session: acks and reads of another user's queue items do
//! nothing, the sender of a message is always the session's phone, a session cannot switch
//! users, and load-test logins are off unless the server is started with a secret.
//! (Wrong keys, wrong load-test secrets and PIN brute force: `messaging/errors.rs`.)

use crate::support;

use clap::Parser;
use proto::v1::{client_frame, server_frame, ErrorCode};
use support::{phones_on, Client, TestServer, V};

fn code(e: &proto::v1::Error) -> ErrorCode {
    ErrorCode::try_from(e.code).unwrap()
}

fn server_ack_id(c: &mut Client) -> u64 {
    match c.recv() {
        server_frame::Kind::ServerAck(a) => a.server_msg_id,
        other => panic!("expected ServerAck, got {other:?}"),
    }
}

#[test]
fn acks_and_reads_of_another_users_items_do_nothing() {
    let server = TestServer::start(2, true);
    // Victim and thief on different shards and on the same shard.
    let victim = phones_on(0, 2, 1, 7_000_000)[0].clone();
    let thieves = [
        phones_on(0, 2, 2, 7_000_000)[1].clone(),
        phones_on(1, 2, 1, 7_000_000)[0].clone(),
    ];
    let sender = phones_on(1, 2, 2, 7_000_000)[1].clone();
    server.client().load_test_login(&victim); // offline from now on
    let mut s = server.client();
    s.load_test_login(&sender);
    let ids: Vec<u64> = (1..=5)
        .map(|i| {
            s.send_text(&victim, i, &format!("secret {i}"));
            server_ack_id(&mut s)
        })
        .collect();
    for t in &thieves {
        let mut thief = server.client();
        thief.load_test_login(t);
        assert_eq!(thief.sync(), vec![], "the thief's queue is its own (empty)");
        thief.ack(ids.clone());
        thief.read(ids.clone());
        assert!(
            thief.sync().is_empty(),
            "nothing comes back for foreign ids"
        );
    }
    // The sender got no DELIVERED or READ receipt out of that.
    assert!(s.sync().is_empty(), "no receipts for acks of foreign ids");
    // The victim still has every message, from the real sender.
    let mut v = server.client();
    assert_eq!(
        v.load_test_login(&victim),
        5,
        "the victim's queue is untouched"
    );
    for (i, id) in ids.iter().enumerate() {
        let m = v.expect_message();
        assert_eq!(m.server_msg_id, *id);
        assert_eq!(m.from, sender);
        assert_eq!(m.body, format!("secret {}", i + 1).into_bytes());
    }
    // The victim's own ack works and tells the sender.
    v.ack(vec![ids[0]]);
    match s.recv() {
        server_frame::Kind::Receipt(r) => {
            assert_eq!(r.server_msg_id, ids[0]);
            assert_eq!(r.by, victim);
        }
        other => panic!("expected a receipt, got {other:?}"),
    }
}

#[test]
fn the_sender_is_always_the_sessions_phone_and_a_session_cannot_switch_users() {
    let server = TestServer::start(2, true);
    let (a, b, mallory) = ("+15557100001", "+15557100002", "+15557100003");
    let mut ca = server.client();
    ca.load_test_login(a);
    let mut cm = server.client();
    cm.load_test_login(mallory);
    server.client().load_test_login(b);
    // There is no "from" on the wire: whatever Mallory sends is from Mallory.
    cm.send_text(b, 1, "I am a");
    server_ack_id(&mut cm);
    // Logging in again as someone else on the same connection is refused.
    cm.send(client_frame::Kind::LoadTestLogin(
        proto::v1::LoadTestLogin {
            protocol_version: V,
            phone: a.into(),
            secret: b"farm-secret".to_vec(),
        },
    ));
    assert_eq!(code(&cm.expect_error()), ErrorCode::UnexpectedFrame);
    cm.send_text(b, 2, "still mallory");
    server_ack_id(&mut cm);
    // Without a session nothing can be sent at all.
    let mut anon = server.client();
    anon.send_text(b, 3, "anonymous");
    assert_eq!(code(&anon.expect_error()), ErrorCode::NotLoggedIn);

    let mut cb = server.client();
    assert_eq!(cb.load_test_login(b), 2);
    for _ in 0..2 {
        assert_eq!(cb.expect_message().from, mallory);
    }
    assert!(ca.sync().is_empty(), "a heard nothing");
}

#[test]
fn load_test_login_is_refused_unless_the_server_enables_it() {
    // The binary's defaults: TLS on, load-test logins off.
    let cfg =
        shards::config::ServerConfig::from_cli(shards::config::Cli::parse_from(["switchboard"]))
            .unwrap();
    assert!(cfg.tls, "TLS is on by default");
    assert!(
        cfg.load_test_secret.is_none(),
        "load-test login is off by default"
    );

    let server = TestServer::start_cfg(1, true, testkit::temp_dir("no-load-test"), |cfg| {
        cfg.load_test_secret = None;
    });
    for secret in [&b"farm-secret"[..], b"", b"x"] {
        let mut c = server.client();
        c.send(client_frame::Kind::LoadTestLogin(
            proto::v1::LoadTestLogin {
                protocol_version: V,
                phone: "+15557200001".into(),
                secret: secret.to_vec(),
            },
        ));
        let e = c.expect_error();
        // An empty secret fails validation first (BAD_KEY); any other is LOAD_TEST_DISABLED.
        let want = if secret.is_empty() {
            ErrorCode::BadKey
        } else {
            ErrorCode::LoadTestDisabled
        };
        assert_eq!(code(&e), want);
        if !secret.is_empty() {
            assert!(c.is_closed(), "the connection is closed after the refusal");
        }
    }
    // Nothing was registered by those attempts: a real login for that phone fails.
    let mut c = server.client();
    c.send(client_frame::Kind::Login(proto::v1::Login {
        protocol_version: V,
        phone: "+15557200001".into(),
        device_key: vec![0; 32],
    }));
    assert_eq!(code(&c.expect_error()), ErrorCode::BadKey);
}

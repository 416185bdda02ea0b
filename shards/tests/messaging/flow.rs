//! Registration, login and the 1:1 message path on a real TLS server on loopback.

use crate::support;

use proto::v1::{client_frame, server_frame, ErrorCode, ReceiptKind};
use support::{phones_on, TestServer, V};

#[test]
fn register_verify_login_and_reregistration_revokes_the_old_key() {
    let server = TestServer::start(2, true);
    let phone = "+15550000001";
    let key1 = server.register(phone);
    let mut s1 = server.login(phone, &key1);
    assert!(s1.sync().is_empty());
    // Registering again issues a new key; the open session on the old key is closed.
    let key2 = server.register(phone);
    assert_ne!(key1, key2);
    assert_eq!(s1.expect_error().code, ErrorCode::BadKey as i32);
    assert!(s1.is_closed());
    // The old key no longer logs in; the new one does.
    let mut c = server.client();
    c.send(client_frame::Kind::Login(proto::v1::Login {
        protocol_version: V,
        phone: phone.into(),
        device_key: key1,
    }));
    assert_eq!(c.expect_error().code, ErrorCode::BadKey as i32);
    assert!(c.is_closed());
    let mut s2 = server.login(phone, &key2);
    assert!(s2.sync().is_empty());
}

#[test]
fn online_send_acks_delivers_and_receipts_in_order() {
    // Sender and recipient homed on different shards: every step crosses the mesh.
    let server = TestServer::start(2, true);
    let a = phones_on(0, 2, 1, 100).remove(0);
    let b = phones_on(1, 2, 1, 100).remove(0);
    let (ka, kb) = (server.register(&a), server.register(&b));
    let mut ca = server.login(&a, &ka);
    let mut cb = server.login(&b, &kb);
    ca.send_text(&b, 1, "hello");
    let ack = match ca.recv() {
        server_frame::Kind::ServerAck(a) => a,
        other => panic!("expected ServerAck, got {other:?}"),
    };
    assert_eq!(ack.client_msg_id, 1);
    let m = cb.expect_message();
    assert_eq!(
        (m.from.as_str(), m.body.as_slice(), m.server_msg_id),
        (a.as_str(), &b"hello"[..], ack.server_msg_id)
    );
    cb.ack(vec![m.server_msg_id]);
    match ca.recv() {
        server_frame::Kind::Receipt(r) => {
            assert_eq!(
                (r.kind, r.server_msg_id, r.client_msg_id),
                (ReceiptKind::Delivered as i32, m.server_msg_id, 1)
            );
            assert_eq!(r.by, b);
        }
        other => panic!("expected DELIVERED, got {other:?}"),
    }
    cb.read(vec![m.server_msg_id]);
    match ca.recv() {
        server_frame::Kind::Receipt(r) => assert_eq!(r.kind, ReceiptKind::Read as i32),
        other => panic!("expected READ, got {other:?}"),
    }
    // A retry of the same client_msg_id gets the same server id and is not delivered again.
    ca.send_text(&b, 1, "hello");
    match ca.recv() {
        server_frame::Kind::ServerAck(again) => assert_eq!(again.server_msg_id, ack.server_msg_id),
        other => panic!("expected the same ServerAck, got {other:?}"),
    }
    assert!(
        cb.sync().is_empty(),
        "a duplicate send is never delivered twice"
    );
}

#[test]
fn offline_recipient_gets_everything_in_order_exactly_once() {
    let server = TestServer::start(2, true);
    let (a, b) = ("+15550000010", "+15550000011");
    let (ka, kb) = (server.register(a), server.register(b));
    let mut ca = server.login(a, &ka);
    for i in 1..=200u64 {
        ca.send_text(b, i, &format!("m{i}"));
    }
    let acks = ca.recv_n(200);
    assert!(acks
        .iter()
        .all(|f| matches!(f, server_frame::Kind::ServerAck(_))));
    let mut cb = server.client();
    assert_eq!(cb.login(b, &kb), 200);
    let mut got = Vec::new();
    while got.len() < 200 {
        let m = cb.expect_message();
        cb.ack(vec![m.server_msg_id]);
        got.push(String::from_utf8(m.body).unwrap());
    }
    let want: Vec<String> = (1..=200).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
    drop(cb);
    // Everything was acked: a new session gets nothing, and the sender's receipts arrive
    // (the sender was online throughout).
    let mut cb2 = server.client();
    assert_eq!(cb2.login(b, &kb), 0);
    assert!(cb2.sync().is_empty());
    let receipts = ca.recv_n(200);
    assert!(receipts.iter().all(
        |f| matches!(f, server_frame::Kind::Receipt(r) if r.kind == ReceiptKind::Delivered as i32)
    ));
    assert!(ca.sync().is_empty());
}

#[test]
fn receipts_for_an_offline_sender_are_queued_and_acked_by_receipt_id() {
    let server = TestServer::start(2, false);
    let (a, b) = ("+15550000020", "+15550000021");
    let (ka, kb) = (server.register(a), server.register(b));
    let mut ca = server.login(a, &ka);
    ca.send_text(b, 7, "x");
    assert!(matches!(ca.recv(), server_frame::Kind::ServerAck(_)));
    drop(ca);
    let mut cb = server.login(b, &kb);
    let m = cb.expect_message();
    cb.ack(vec![m.server_msg_id]);
    assert!(cb.sync().is_empty());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut ca = server.client();
    assert_eq!(ca.login(a, &ka), 1);
    let r = match ca.recv() {
        server_frame::Kind::Receipt(r) => r,
        other => panic!("expected a queued receipt, got {other:?}"),
    };
    assert_eq!(r.client_msg_id, 7);
    assert_ne!(r.receipt_id, 0);
    ca.ack(vec![r.receipt_id]);
    assert!(ca.sync().is_empty());
    drop(ca);
    let mut ca = server.client();
    assert_eq!(ca.login(a, &ka), 0, "an acked receipt is gone");
}

#[test]
fn second_login_replaces_the_first_session() {
    let server = TestServer::start(1, false);
    let p = "+15550000030";
    let k = server.register(p);
    let mut first = server.login(p, &k);
    let mut second = server.login(p, &k);
    assert_eq!(first.expect_error().code, ErrorCode::SessionReplaced as i32);
    assert!(first.is_closed());
    assert!(second.sync().is_empty());
}

//! The real server on loopback answers Ping with Pong over TLS and plaintext, and a bad
//! frame gets an error frame and closes only its own connection.

mod support;

use proto::v1::{client_frame, server_frame, ErrorCode, Ping};
use support::TestServer;

fn ping_pong(tls: bool) {
    let server = TestServer::start(2, tls);
    let mut clients: Vec<_> = (0..8).map(|_| server.client()).collect();
    for round in 0..20u64 {
        for (i, c) in clients.iter_mut().enumerate() {
            let nonce = round * 100 + i as u64;
            c.send(client_frame::Kind::Ping(Ping { nonce }));
            match c.recv() {
                server_frame::Kind::Pong(p) => assert_eq!(p.nonce, nonce),
                other => panic!("expected pong, got {other:?}"),
            }
        }
    }
}

#[test]
fn ping_pong_over_tls() {
    ping_pong(true);
}

#[test]
fn ping_pong_over_plaintext() {
    ping_pong(false);
}

#[test]
fn malformed_frame_gets_an_error_and_closes_only_that_connection() {
    let server = TestServer::start(1, true);
    let mut good = server.client();
    let mut bad = server.client();
    bad.write_raw(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
    match bad.recv() {
        server_frame::Kind::Error(e) => assert_eq!(e.code, ErrorCode::MalformedFrame as i32),
        other => panic!("expected an error frame, got {other:?}"),
    }
    assert!(bad.is_closed());
    good.send(client_frame::Kind::Ping(Ping { nonce: 9 }));
    assert!(matches!(good.recv(), server_frame::Kind::Pong(p) if p.nonce == 9));
}

#[test]
fn oversized_frame_gets_frame_too_large() {
    let server = TestServer::start(1, false);
    let mut bad = server.client();
    bad.write_raw(&(10u32 << 20).to_be_bytes());
    match bad.recv() {
        server_frame::Kind::Error(e) => assert_eq!(e.code, ErrorCode::FrameTooLarge as i32),
        other => panic!("expected an error frame, got {other:?}"),
    }
    assert!(bad.is_closed());
}

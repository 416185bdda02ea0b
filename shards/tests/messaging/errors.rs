//! Bad input gets its error frame; nothing else breaks (other sessions keep working).

use crate::support;

use proto::v1::{client_frame, server_frame, ErrorCode};
use support::{TestServer, V};

fn code(e: &proto::v1::Error) -> ErrorCode {
    ErrorCode::try_from(e.code).unwrap()
}

#[test]
fn each_bad_input_gets_its_error_and_others_are_untouched() {
    let server = TestServer::start(2, true);
    let (a, b) = ("+15550000100", "+15550000101");
    let (ka, kb) = (server.register(a), server.register(b));
    let mut ca = server.login(a, &ka);
    let mut bystander = server.login(b, &kb);

    // A number nobody has: accepted like any send (whether a number is registered is not
    // told), and dropped.
    ca.send_text("+15559999999", 5, "hi");
    assert!(matches!(ca.recv(), server_frame::Kind::ServerAck(x) if x.client_msg_id == 5));

    // A recipient that is no E.164 phone: error with its client_msg_id, session open. The
    // longest phone there is (15 digits) is a phone: accepted.
    for (id, to) in [
        "",
        "+",
        "15551234567",
        "+0155512345",
        "+1234567890123456",
        "+1555abc4567",
        "+1555\u{0663}234567",
    ]
    .into_iter()
    .enumerate()
    {
        let id = 100 + id as u64;
        ca.send_text(to, id, "hi");
        let e = ca.expect_error();
        assert_eq!(
            (code(&e), e.client_msg_id),
            (ErrorCode::BadPhone, id),
            "{to:?}"
        );
    }
    ca.send_text("+123456789012345", 120, "hi");
    assert!(matches!(ca.recv(), server_frame::Kind::ServerAck(x) if x.client_msg_id == 120));

    // An empty message: error carries the client_msg_id; the session stays open.
    ca.send(client_frame::Kind::Send(proto::v1::SendMessage {
        to: b.into(),
        client_msg_id: 9,
        body: Vec::new().into(),
        media: None,
    }));
    let e = ca.expect_error();
    assert_eq!((code(&e), e.client_msg_id), (ErrorCode::EmptyMessage, 9));

    // Oversized body.
    ca.send(client_frame::Kind::Send(proto::v1::SendMessage {
        to: b.into(),
        client_msg_id: 6,
        body: vec![b'x'; proto::limits::BODY_BYTES_MAX + 1].into(),
        media: None,
    }));
    let e = ca.expect_error();
    assert_eq!((code(&e), e.client_msg_id), (ErrorCode::BodyTooLarge, 6));

    // Still works after both.
    ca.send_text(b, 7, "ok");
    assert!(matches!(ca.recv(), server_frame::Kind::ServerAck(x) if x.client_msg_id == 7));
    assert_eq!(bystander.expect_message().body, b"ok");

    // Not logged in.
    let mut anon = server.client();
    anon.send_text(b, 1, "who am I");
    assert_eq!(code(&anon.expect_error()), ErrorCode::NotLoggedIn);

    // Old protocol version.
    anon.send(client_frame::Kind::Login(proto::v1::Login {
        protocol_version: 0,
        phone: a.into(),
        device_key: ka.clone(),
    }));
    assert_eq!(code(&anon.expect_error()), ErrorCode::UnsupportedVersion);

    // Wrong key: error and close.
    let mut wrong = server.client();
    wrong.send(client_frame::Kind::Login(proto::v1::Login {
        protocol_version: V,
        phone: a.into(),
        device_key: vec![1; 32],
    }));
    assert_eq!(code(&wrong.expect_error()), ErrorCode::BadKey);
    assert!(wrong.is_closed());

    // Malformed frame: error and close.
    let mut garbage = server.client();
    garbage.write_raw(&[0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(code(&garbage.expect_error()), ErrorCode::MalformedFrame);
    assert!(garbage.is_closed());

    // Oversized frame header: error and close.
    let mut huge = server.client();
    huge.write_raw(&(1u32 << 30).to_be_bytes());
    assert_eq!(code(&huge.expect_error()), ErrorCode::FrameTooLarge);
    assert!(huge.is_closed());

    // The sessions that behaved are unaffected.
    ca.send_text(b, 8, "still here");
    assert!(matches!(ca.recv(), server_frame::Kind::ServerAck(x) if x.client_msg_id == 8));
    assert_eq!(bystander.expect_message().body, b"still here");
}

#[test]
fn bad_pins_are_refused_then_this_source_may_not_try_again() {
    let server = TestServer::start(1, true);
    let phone = "+15550000200";
    let mut c = server.client();
    c.send(client_frame::Kind::Register(proto::v1::Register {
        protocol_version: V,
        phone: phone.into(),
    }));
    assert!(matches!(c.recv(), server_frame::Kind::PinSent(_)));
    let right = server.pin_for(phone);
    let wrong = if right == "000000" {
        "000001"
    } else {
        "000000"
    };
    let wrong_pin = |c: &mut support::Client| {
        c.send(client_frame::Kind::Verify(proto::v1::Verify {
            protocol_version: V,
            phone: phone.into(),
            pin: wrong.into(),
        }));
        c.expect_error()
    };
    for _ in 1..messaging::tables::pin_codes::PIN_WRONG_TRIES_PER_PREFIX_MAX {
        assert_eq!(code(&wrong_pin(&mut c)), ErrorCode::BadPin);
    }
    // The last wrong try this source prefix may make says when a new PIN may be asked for.
    let spent = wrong_pin(&mut c);
    assert_eq!(code(&spent), ErrorCode::RateLimited);
    assert!(spent.retry_after_ms > 0);
    // Even the right PIN is refused from here now (another prefix could still use it:
    // sim/abuse.rs row4).
    c.send(client_frame::Kind::Verify(proto::v1::Verify {
        protocol_version: V,
        phone: phone.into(),
        pin: right,
    }));
    assert_eq!(code(&c.expect_error()), ErrorCode::RateLimited);
    // A malformed phone is refused before anything else.
    c.send(client_frame::Kind::Register(proto::v1::Register {
        protocol_version: V,
        phone: "12345".into(),
    }));
    assert_eq!(code(&c.expect_error()), ErrorCode::BadPhone);
}

#[test]
fn load_test_login_needs_the_secret() {
    let server = TestServer::start(1, false);
    let mut c = server.client();
    c.send(client_frame::Kind::LoadTestLogin(
        proto::v1::LoadTestLogin {
            protocol_version: V,
            phone: "+15550000300".into(),
            secret: b"wrong".to_vec(),
        },
    ));
    assert_eq!(code(&c.expect_error()), ErrorCode::BadKey);
    assert!(c.is_closed());
    let mut ok = server.client();
    assert_eq!(ok.load_test_login("+15550000300"), 0);
}

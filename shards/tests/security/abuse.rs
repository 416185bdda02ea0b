//! The attacks of issue 15 run as an attacker would, over real TLS sockets from several
//! loopback source addresses (all of 127.0.0.0/8 is loopback): each shows its limit holding
//! while a legitimate user on another address is unaffected, and the refusals counted in
//! `/stats` and `/metrics`. (The same rules with fake time, in more detail: `sim/abuse.rs`.)

use crate::support;

use std::net::Ipv4Addr;

use proto::v1::{client_frame, server_frame, ErrorCode};
use support::admin::{fresh_stats, get, metric_sum, parse_prometheus, service_sum};
use support::{phones_on, Client, TestServer, V};
use testkit::temp_dir;

fn server(shards: usize) -> (TestServer, std::net::SocketAddr) {
    let s = TestServer::start_cfg(shards, true, temp_dir("abuse"), |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
    });
    let admin = s.rt.as_ref().unwrap().admin_addr().expect("admin serves");
    (s, admin)
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn register(phone: &str) -> client_frame::Kind {
    client_frame::Kind::Register(proto::v1::Register {
        protocol_version: V,
        phone: phone.into(),
    })
}

fn verify(phone: &str, pin: &str) -> client_frame::Kind {
    client_frame::Kind::Verify(proto::v1::Verify {
        protocol_version: V,
        phone: phone.into(),
        pin: pin.into(),
    })
}

fn load_test_login(phone: &str, secret: &[u8]) -> client_frame::Kind {
    client_frame::Kind::LoadTestLogin(proto::v1::LoadTestLogin {
        protocol_version: V,
        phone: phone.into(),
        secret: secret.to_vec(),
    })
}

/// `Some(retry_after_ms)` when `f` is a RATE_LIMITED error.
fn rate_limited(f: &server_frame::Kind) -> Option<u64> {
    match f {
        server_frame::Kind::Error(e) if e.code == ErrorCode::RateLimited as i32 => {
            Some(e.retry_after_ms)
        }
        _ => None,
    }
}

/// Registers and verifies `phone` from `src`, as a legitimate user does.
fn legit_registration(server: &TestServer, src: Ipv4Addr, phone: &str) {
    let mut c = server.client_from(src);
    c.send(register(phone));
    assert!(matches!(c.recv(), server_frame::Kind::PinSent(_)));
    c.send(verify(phone, &server.pin_for(phone)));
    assert!(matches!(c.recv(), server_frame::Kind::Verified(_)));
}

fn presence(c: &mut Client) -> proto::v1::Presence {
    match c.recv() {
        server_frame::Kind::Presence(p) => p,
        other => panic!("expected Presence, got {other:?}"),
    }
}

#[test]
fn pin_sends_from_one_address_are_budgeted_and_counted_other_addresses_unaffected() {
    let (server, admin) = server(2);
    let numbers = phones_on(0, 2, 12, 8_000_000);
    let mut answers = Vec::new();
    for phone in &numbers {
        // A fresh connection each time, as a pumping script would.
        let mut c = server.client_from(ip("127.0.0.2"));
        c.send(register(phone));
        answers.push(c.recv());
    }
    let sent = answers
        .iter()
        .filter(|f| matches!(f, server_frame::Kind::PinSent(_)))
        .count();
    assert_eq!(
        sent,
        messaging::tables::budgets::PIN_SENDS_SOURCE_PER_HOUR_DEFAULT as usize
    );
    for f in &answers[sent..] {
        let retry = rate_limited(f).expect("RATE_LIMITED");
        assert!(
            retry > 0 && retry <= messaging::tables::budgets::HOUR_MS,
            "{retry}"
        );
    }
    let other = phones_on(0, 2, 1, 9_000_000).remove(0);
    legit_registration(&server, ip("127.0.1.2"), &other);
    let stats = fresh_stats(admin, 2);
    assert_eq!(service_sum(&stats, "refused_pin_source_total"), 7);
    assert_eq!(service_sum(&stats, "pins_sent_total"), 6);
    let metrics = parse_prometheus(&get(admin, "/metrics").1);
    assert_eq!(
        metric_sum(&metrics, "switchboard_refused_pin_source_total"),
        7.0
    );
}

#[test]
fn refused_verify_frames_close_the_connection_instead_of_bouncing_it() {
    let (server, admin) = server(2);
    let targets = [
        phones_on(0, 2, 1, 8_100_000).remove(0),
        phones_on(1, 2, 1, 8_100_000).remove(0),
    ];
    // Alternating shards: at most PRELOGIN_HANDOFFS_MAX hand-overs, then closed.
    let mut c = server.client_from(ip("127.0.0.3"));
    let mut answered = 0;
    for i in 0..10_000 {
        if !c.try_send(verify(&targets[i % 2], "000000")) || c.try_recv().is_none() {
            break;
        }
        answered += 1;
    }
    // Each hand-over's frame is answered, plus one local one and the closing refusal.
    assert!(
        answered <= messaging::state::limits::PRELOGIN_HANDOFFS_MAX as usize + 2,
        "{answered} frames answered"
    );
    assert!(c.is_closed());
    // One shard: at most PRELOGIN_REFUSALS_MAX refusals, then closed.
    let mut c = server.client_from(ip("127.0.0.4"));
    let mut refusals = 0;
    for i in 0..10_000u64 {
        let phone = phones_on(0, 2, 1, 8_200_000 + i * 7).remove(0);
        if !c.try_send(verify(&phone, "000000")) {
            break;
        }
        match c.try_recv() {
            Some(server_frame::Kind::Error(_)) => refusals += 1,
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    assert_eq!(refusals, messaging::state::limits::PRELOGIN_REFUSALS_MAX);
    assert!(c.is_closed());
    let stats = fresh_stats(admin, 2);
    assert_eq!(service_sum(&stats, "prelogin_closed_total"), 2);
    assert_eq!(
        service_sum(&stats, "pins_pending"),
        0,
        "no state for numbers without a PIN"
    );
    legit_registration(&server, ip("127.0.1.3"), &targets[1]);
}

#[test]
fn a_strangers_wrong_pins_do_not_lock_the_owner_out() {
    let server = TestServer::start(2, true);
    let victim = "+15550007777";
    let mut stranger = server.client_from(ip("127.0.0.5"));
    for _ in 0..5 {
        stranger.send(verify(victim, "000000"));
        assert_eq!(stranger.expect_error().code, ErrorCode::BadPin as i32);
    }
    legit_registration(&server, ip("127.0.1.5"), victim);
}

#[test]
fn load_test_secret_guesses_are_budgeted_per_source() {
    let (server, admin) = server(2);
    let phone = "+15550006666";
    for i in 0..messaging::tables::budgets::GUESSES_SOURCE_PER_HOUR_DEFAULT {
        let mut c = server.client_from(ip("127.0.0.6"));
        c.send(load_test_login(phone, format!("guess-{i}").as_bytes()));
        assert_eq!(c.expect_error().code, ErrorCode::BadKey as i32);
        assert!(c.is_closed());
    }
    let mut c = server.client_from(ip("127.0.0.6"));
    c.send(load_test_login(phone, b"farm-secret"));
    assert!(
        rate_limited(&c.recv()).is_some_and(|ms| ms > 0),
        "even the right secret"
    );
    let mut ok = server.client_from(ip("127.0.1.6"));
    assert_eq!(
        ok.load_test_login(phone),
        0,
        "another address is unaffected"
    );
    let stats = fresh_stats(admin, 2);
    assert_eq!(service_sum(&stats, "refused_guess_source_total"), 1);
}

#[test]
fn presence_reaches_mutual_contacts_only() {
    let server = TestServer::start(2, true);
    let (v, f) = ("+15554450001", "+15554450002");
    let mut victim = server.client_from(ip("127.0.0.7"));
    victim.load_test_login(v);
    let mut friend = server.client_from(ip("127.0.0.8"));
    friend.load_test_login(f);
    let mut stranger = server.client_from(ip("127.0.0.9"));
    stranger.load_test_login("+15554450003");
    let sub = |c: &mut Client, who: &str| {
        c.send(client_frame::Kind::PresenceSubscribe(
            proto::v1::PresenceSubscribe {
                contacts: vec![who.into()],
            },
        ))
    };
    sub(&mut stranger, v);
    let p = presence(&mut stranger);
    assert!(p.hidden && !p.online && p.last_seen_ms == 0);
    sub(&mut friend, v);
    assert!(presence(&mut friend).hidden, "not mutual yet");
    sub(&mut victim, f);
    assert!(
        !presence(&mut victim).hidden,
        "the friend follows the victim"
    );
    let p = presence(&mut friend);
    assert!(p.online && !p.hidden, "mutual now");
    drop(victim);
    let p = presence(&mut friend);
    assert!(!p.online && p.last_seen_ms > 0);
    // Anything the victim's going offline sent the stranger would come before this answer
    // (one ordered mesh ring from the victim's home): a new subscription, to another
    // number homed there (a renewal in the same session is not answered again).
    let home = messaging::state::home::home_of_phone(v, 2);
    let beside = (100..)
        .map(|i| format!("+155544{i:05}"))
        .find(|p| messaging::state::home::home_of_phone(p, 2) == home)
        .unwrap();
    sub(&mut stranger, &beside);
    assert!(
        presence(&mut stranger).hidden,
        "the stranger learned nothing"
    );
}

#[test]
fn one_sender_cannot_fill_an_offline_users_queue_for_everyone() {
    let (server, admin) = server(1);
    let bob = "+15550005555";
    server.client().load_test_login(bob);
    let mut mallory = server.client_from(ip("127.0.0.10"));
    mallory.load_test_login("+15550005556");
    let flood = messaging::state::limits::QUEUE_MESSAGES_PER_SENDER_MAX as u64 + 10;
    for id in 1..=flood {
        mallory.send_text(bob, id, "x");
    }
    let answers = mallory.recv_n(flood as usize);
    let full = answers
        .iter()
        .filter(
            |f| matches!(f, server_frame::Kind::Error(e) if e.code == ErrorCode::QueueFull as i32),
        )
        .count();
    assert_eq!(full, 10);
    let mut carol = server.client_from(ip("127.0.1.10"));
    carol.load_test_login("+15550005557");
    carol.send_text(bob, 1, "hello");
    assert!(matches!(carol.recv(), server_frame::Kind::ServerAck(_)));
    let stats = fresh_stats(admin, 1);
    assert_eq!(service_sum(&stats, "queue_sender_share_full_total"), 10);
}

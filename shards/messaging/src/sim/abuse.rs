//! The attacks of issue 15, run as an attacker would against the simulated cluster with fake
//! time: each test shows the limit holding and a legitimate user on another address
//! unaffected. (The same attacks over real sockets: `tests/security_signup.rs`.)

use std::net::IpAddr;

use proto::v1::{client_frame::Kind as K, server_frame::Kind as S, ErrorCode};

use crate::sim::{text, Sim};
use crate::state::home::home_of_phone;
use crate::state::limits::{
    PRELOGIN_HANDOFFS_MAX, PRELOGIN_REFUSALS_MAX, PRESENCE_SUBSCRIPTIONS_PER_USER_MAX,
    PRESENCE_SUBSCRIPTION_TTL_MS, QUEUE_MESSAGES_PER_SENDER_MAX, QUEUE_MESSAGES_PER_USER_MAX,
};
use crate::state::ServiceSettings;
use crate::tables::budgets::{
    BudgetKind, SignupLimits, GUESSES_BOX_PER_MINUTE_DEFAULT, GUESSES_SOURCE_PER_HOUR_DEFAULT,
    PIN_SENDS_PREFIX_PER_HOUR_DEFAULT, PIN_SENDS_RANGE_PER_HOUR_DEFAULT,
    PIN_SENDS_SOURCE_PER_HOUR_DEFAULT,
};
use crate::tables::pin_codes::PIN_WRONG_TRIES_PER_PREFIX_MAX;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn register(phone: &str) -> K {
    K::Register(proto::v1::Register {
        protocol_version: proto::PROTOCOL_VERSION,
        phone: phone.into(),
    })
}

fn verify(phone: &str, pin: &str) -> K {
    K::Verify(proto::v1::Verify {
        protocol_version: proto::PROTOCOL_VERSION,
        phone: phone.into(),
        pin: pin.into(),
    })
}

/// What a pre-login frame was answered with.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    PinSent,
    Verified,
    Error(ErrorCode),
    RateLimited,
    None,
}

fn answer(sim: &mut Sim, c: proto::ids::ConnId) -> Answer {
    sim.commit();
    match sim.take(c).first() {
        Some(S::PinSent(_)) => Answer::PinSent,
        Some(S::Verified(_)) => Answer::Verified,
        Some(S::Error(e)) if e.code == ErrorCode::RateLimited as i32 => {
            assert!(e.retry_after_ms > 0, "a refusal says when to retry: {e:?}");
            Answer::RateLimited
        }
        Some(S::Error(e)) => Answer::Error(ErrorCode::try_from(e.code).unwrap()),
        _ => Answer::None,
    }
}

/// Sends `frame` on a fresh connection from `from` and returns the answer.
fn once(sim: &mut Sim, from: IpAddr, frame: K) -> Answer {
    let c = sim.connect_from(0, from);
    sim.send(c, frame);
    answer(sim, c)
}

fn refused(sim: &Sim, kind: BudgetKind) -> u64 {
    sim.shards
        .iter()
        .map(|s| s.abuse.refused[kind as usize])
        .sum()
}

/// The last PIN the simulated SMS gateway holds for `phone`.
fn pin_of(sim: &Sim, phone: &str) -> String {
    let (_, pin) = sim
        .sms
        .iter()
        .rev()
        .find(|(p, _)| p == phone)
        .expect("a PIN was sent");
    pin.clone()
}

fn legit_user_registers(sim: &mut Sim, from: &str, phone: &str) {
    assert_eq!(once(sim, ip(from), register(phone)), Answer::PinSent);
    let pin = pin_of(sim, phone);
    assert_eq!(once(sim, ip(from), verify(phone, &pin)), Answer::Verified);
}

#[test]
fn row1_one_source_asking_pins_for_many_numbers_is_held_by_source_prefix_range_and_box() {
    let mut sim = Sim::new(1);
    // One address, 50 numbers in 50 ranges.
    let sent = (0..50)
        .filter(|i| {
            once(
                &mut sim,
                ip("203.0.113.5"),
                register(&format!("+3{i:05}00000")),
            ) == Answer::PinSent
        })
        .count();
    assert_eq!(sent, PIN_SENDS_SOURCE_PER_HOUR_DEFAULT as usize);
    assert_eq!(refused(&sim, BudgetKind::PinSource), 45);
    // The rest of its /24.
    let sent: usize = (0..50)
        .filter(|i| {
            let from = ip(&format!("203.0.113.{}", 10 + i));
            once(&mut sim, from, register(&format!("+4{i:05}00000"))) == Answer::PinSent
        })
        .count();
    assert_eq!(
        sent + PIN_SENDS_SOURCE_PER_HOUR_DEFAULT as usize,
        PIN_SENDS_PREFIX_PER_HOUR_DEFAULT as usize
    );
    // Many prefixes, one premium range.
    let sent = (0..50)
        .filter(|i| {
            let from = ip(&format!("100.64.{i}.1"));
            once(&mut sim, from, register(&format!("+447012{i:06}"))) == Answer::PinSent
        })
        .count();
    assert_eq!(sent, PIN_SENDS_RANGE_PER_HOUR_DEFAULT as usize);
    assert_eq!(
        sim.sms.len(),
        5 + 25 + 30,
        "only admitted PINs reached the gateway"
    );
    legit_user_registers(&mut sim, "198.51.100.7", "+15550001234");
}

#[test]
fn row1_the_box_budget_holds_over_every_source_and_refills_with_time() {
    let signup = SignupLimits {
        pin_sends_box_per_minute: 20,
        ..SignupLimits::default()
    };
    let settings = ServiceSettings {
        signup,
        ..ServiceSettings::default()
    };
    // Two shards: each gets 10 a minute.
    let mut sim = Sim::with_settings(2, settings);
    let on_shard0: Vec<String> = (0..400)
        .map(|i| format!("+{}{i:07}", 20 + i % 70))
        .filter(|p| home_of_phone(p, 2).0 == 0)
        .take(30)
        .collect();
    let mut sent = 0;
    for (i, phone) in on_shard0.iter().enumerate() {
        let from = ip(&format!("100.{}.{i}.1", 64 + i));
        if once(&mut sim, from, register(phone)) == Answer::PinSent {
            sent += 1;
        }
    }
    assert_eq!(sent, 10, "shard 0's half of the box budget");
    assert_eq!(refused(&sim, BudgetKind::PinBox), 20);
    sim.now += 6_000;
    assert_eq!(
        once(&mut sim, ip("198.51.100.7"), register(&on_shard0[29])),
        Answer::PinSent,
        "one more after an interval (60 s / 10)"
    );
}

#[test]
fn row2_a_verify_flood_stores_nothing_closes_the_connection_and_logs_little() {
    let mut sim = Sim::new(1);
    let c = sim.connect_from(0, ip("203.0.113.9"));
    let mut frames = 0;
    while !sim.closed.contains(&c) {
        frames += 1;
        assert!(frames <= 100, "the connection is closed");
        sim.send(c, verify(&format!("+1555{frames:07}"), "123456"));
    }
    assert_eq!(frames, PRELOGIN_REFUSALS_MAX);
    // Many sources, one frame each, all in the same minute.
    let mut answers = std::collections::HashMap::new();
    for i in 0..2_000u32 {
        let from = IpAddr::V4((0x6440_0000 + (i << 8)).into());
        let a = once(&mut sim, from, verify(&format!("+1666{i:07}"), "123456"));
        *answers.entry(format!("{a:?}")).or_insert(0) += 1;
    }
    let box_max = GUESSES_BOX_PER_MINUTE_DEFAULT as usize;
    assert_eq!(
        answers["Error(BadPin)"],
        box_max - PRELOGIN_REFUSALS_MAX as usize
    );
    assert_eq!(
        answers["RateLimited"],
        2_000 + PRELOGIN_REFUSALS_MAX as usize - box_max
    );
    let shard = &sim.shards[0];
    assert!(
        shard.pins.is_empty(),
        "no PIN entry for numbers without a PIN"
    );
    assert_eq!(shard.registry.snapshot().count(), 0, "no account entry");
    assert!(
        shard.budgets.keys() <= 2 * box_max + 1,
        "bounded by the box budget"
    );
    assert!(
        shard.refusal_log.suppressed >= 2_000,
        "one log line, not one per frame"
    );
}

#[test]
fn row3_a_strangers_wrong_pins_do_not_lock_the_owner_out() {
    let mut sim = Sim::new(1);
    let victim = "+15550007777";
    for _ in 0..3 {
        let c = sim.connect_from(0, ip("203.0.113.66"));
        for _ in 0..5 {
            sim.send(c, verify(victim, "000000"));
        }
    }
    assert!(sim.shards[0].pins.is_empty());
    legit_user_registers(&mut sim, "198.51.100.7", victim);
}

#[test]
fn row4_guesses_are_held_per_source_and_per_pin() {
    let mut sim = Sim::new(1);
    let attacker = ip("203.0.113.20");
    let phones: Vec<String> = (0..5).map(|i| format!("+1777{i:07}")).collect();
    for p in &phones {
        assert_eq!(once(&mut sim, attacker, register(p)), Answer::PinSent);
    }
    let mut answers = Vec::new();
    for i in 0..(GUESSES_SOURCE_PER_HOUR_DEFAULT + 5) {
        let p = &phones[(i / PIN_WRONG_TRIES_PER_PREFIX_MAX) as usize % phones.len()];
        let right = pin_of(&sim, p);
        let wrong = if right == "000000" {
            "000001"
        } else {
            "000000"
        };
        answers.push(once(&mut sim, attacker, verify(p, wrong)));
    }
    let limited = answers
        .iter()
        .filter(|a| **a == Answer::RateLimited)
        .count();
    // 4 bad + 1 refused (this prefix's tries spent) per PIN for 4 PINs, then the source
    // budget.
    assert_eq!(limited, 4 + 5, "{answers:?}");
    assert_eq!(refused(&sim, BudgetKind::GuessNumber), 4);
    assert_eq!(refused(&sim, BudgetKind::GuessSource), 5);
    let tried = &phones[0];
    let right = pin_of(&sim, tried);
    assert_eq!(
        once(&mut sim, ip("203.0.113.99"), verify(tried, &right)),
        Answer::RateLimited,
        "the attacker's /24 may not try that PIN again, even with the right digits"
    );
    assert_eq!(
        once(&mut sim, ip("198.51.100.8"), verify(tried, &right)),
        Answer::Verified,
        "the owner, on another prefix, still can: a stranger cannot burn it"
    );
    legit_user_registers(&mut sim, "198.51.100.7", "+15550001234");
}

#[test]
fn row5_presence_goes_only_to_contacts_the_user_allows() {
    let mut sim = Sim::new(2);
    let (v, f, s) = ("+15550000001", "+15550000002", "+15550000003");
    let victim = sim.login(v, 0);
    let friend = sim.login(f, 1);
    let stranger = sim.login(s, 0);
    let sub = |contacts: &[&str]| {
        K::PresenceSubscribe(proto::v1::PresenceSubscribe {
            contacts: contacts.iter().map(|c| c.to_string()).collect(),
        })
    };
    let presence = |frames: Vec<S>| -> Vec<proto::v1::Presence> {
        frames
            .into_iter()
            .filter_map(|f| match f {
                S::Presence(p) => Some(p),
                _ => None,
            })
            .collect()
    };
    sim.send(stranger, sub(&[v, "+15559999999"]));
    let seen = presence(sim.take(stranger));
    assert_eq!(seen.len(), 2);
    assert!(seen
        .iter()
        .all(|p| p.hidden && !p.online && p.last_seen_ms == 0));
    sim.send(friend, sub(&[v]));
    assert!(presence(sim.take(friend))[0].hidden, "not mutual yet");
    sim.send(victim, sub(&[f]));
    let now_mutual = presence(sim.take(friend));
    assert!(now_mutual.len() == 1 && now_mutual[0].online && !now_mutual[0].hidden);
    sim.now += 5_000;
    sim.close(victim);
    let offline = presence(sim.take(friend));
    assert_eq!(offline.len(), 1);
    assert_eq!(offline[0].last_seen_ms, sim.now);
    assert!(
        presence(sim.take(stranger)).is_empty(),
        "the stranger learns nothing"
    );
    // The victim chooses NOBODY: even the friend sees nothing.
    let victim = sim.login(v, 1);
    assert!(presence(sim.take(friend)).len() == 1);
    sim.send(
        victim,
        K::PresencePrivacy(proto::v1::PresencePrivacy {
            visibility: proto::v1::PresenceVisibility::Nobody as i32,
        }),
    );
    sim.close(victim);
    assert!(presence(sim.take(friend)).is_empty());
    // Subscriptions are capped per subscriber...
    // (The stranger follows two already.)
    let many: Vec<String> = (2..PRESENCE_SUBSCRIPTIONS_PER_USER_MAX)
        .map(|i| format!("+1888{i:07}"))
        .collect();
    for chunk in many.chunks(1000) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        sim.send(stranger, sub(&chunk));
    }
    sim.take(stranger);
    sim.send(stranger, sub(&["+15550000004"]));
    assert!(sim
        .take(stranger)
        .iter()
        .any(|f| matches!(f, S::Error(e) if e.code == ErrorCode::RateLimited as i32)));
    assert_eq!(
        sim.shards.iter().map(|s| s.presence.refused).sum::<u64>(),
        1
    );
    // ...and lapse: a day later the friend's subscription no longer reports.
    let victim = sim.login(v, 0);
    sim.send(
        victim,
        K::PresencePrivacy(proto::v1::PresencePrivacy {
            visibility: proto::v1::PresenceVisibility::Everyone as i32,
        }),
    );
    sim.take(friend);
    sim.now += PRESENCE_SUBSCRIPTION_TTL_MS;
    sim.login(v, 1);
    assert!(presence(sim.take(friend)).is_empty(), "lapsed");
}

#[test]
fn row6_one_sender_cannot_fill_a_queue_for_everyone_and_receipts_are_kept() {
    let mut sim = Sim::new(1);
    let (a, b) = ("+15550000001", "+15550000002");
    let alice = sim.login(a, 0);
    let bob = sim.login(b, 0);
    sim.send(alice, text(b, 1));
    sim.close(bob);
    sim.close(alice);
    // Mallory floods offline bob.
    let mallory = sim.login("+15550000066", 0);
    for id in 1..=(QUEUE_MESSAGES_PER_SENDER_MAX as u64 + 10) {
        sim.send(mallory, text(b, id));
    }
    sim.commit();
    let full = sim
        .take(mallory)
        .iter()
        .filter(|f| matches!(f, S::Error(e) if e.code == ErrorCode::QueueFull as i32))
        .count();
    assert_eq!(full, 10);
    let carol = sim.login("+15550000003", 0);
    sim.send(carol, text(b, 1));
    sim.commit();
    assert!(
        matches!(sim.take(carol)[..], [S::ServerAck(_)]),
        "others still get through"
    );
    // Enough senders fill offline alice's message share...
    let senders = QUEUE_MESSAGES_PER_USER_MAX / QUEUE_MESSAGES_PER_SENDER_MAX + 1;
    for s in 0..senders {
        let c = sim.login(&format!("+1555100{s:04}"), 0);
        for id in 1..=QUEUE_MESSAGES_PER_SENDER_MAX as u64 {
            sim.send(c, text(a, id));
        }
    }
    sim.commit();
    assert_eq!(sim.shards[0].queues.len_of(a), QUEUE_MESSAGES_PER_USER_MAX);
    // ...and bob's ack still queues alice's DELIVERED receipt.
    let bob = sim.login(b, 0);
    let first = match sim.take(bob).into_iter().next() {
        Some(S::Message(m)) => m.server_msg_id,
        other => panic!("expected alice's message, got {other:?}"),
    };
    sim.send(
        bob,
        K::Ack(proto::v1::Ack {
            server_msg_ids: vec![first],
        }),
    );
    sim.commit();
    assert_eq!(sim.shards[0].abuse.receipts_dropped, 0);
    assert_eq!(sim.shards[0].abuse.queue_sender_share_full, 10);
    assert_eq!(
        sim.shards[0].queues.len_of(a),
        QUEUE_MESSAGES_PER_USER_MAX + 1
    );
}

#[test]
fn row8_refused_frames_naming_other_shards_do_not_bounce_the_connection() {
    let mut sim = Sim::new(4);
    let phone_on = |shard: usize| {
        (0..)
            .map(|i| format!("+1999{i:07}"))
            .find(|p| home_of_phone(p, 4).0 == shard)
            .unwrap()
    };
    let targets: Vec<String> = (1..4).map(phone_on).collect();
    let c = sim.connect_from(0, ip("203.0.113.30"));
    for i in 0..10_000 {
        if sim.closed.contains(&c) {
            break;
        }
        sim.send(c, verify(&targets[i % 3], "000000"));
    }
    assert!(sim.closed.contains(&c));
    assert_eq!(sim.handoffs, PRELOGIN_HANDOFFS_MAX as u64);
    // An honest client is handed over once and logs in.
    let honest = sim.login(&targets[0], 0);
    assert_eq!(sim.conn_shard[&honest], 1);
}

#[test]
fn the_load_test_secret_is_limited_in_attempts_like_any_key() {
    let mut sim = Sim::new(1);
    let guess = |secret: &[u8]| {
        K::LoadTestLogin(proto::v1::LoadTestLogin {
            protocol_version: proto::PROTOCOL_VERSION,
            phone: "+15550000001".into(),
            secret: secret.to_vec(),
        })
    };
    for i in 0..GUESSES_SOURCE_PER_HOUR_DEFAULT {
        let c = sim.connect_from(0, ip("203.0.113.40"));
        sim.send(c, guess(format!("guess{i}").as_bytes()));
        assert!(matches!(&sim.take(c)[..], [S::Error(e)] if e.code == ErrorCode::BadKey as i32));
        assert!(sim.closed.contains(&c));
    }
    let c = sim.connect_from(0, ip("203.0.113.40"));
    sim.send(c, guess(b"s"));
    assert_eq!(
        answer(&mut sim, c),
        Answer::RateLimited,
        "even the right secret, now"
    );
    assert!(sim.closed.contains(&c));
    let ok = sim.connect_from(0, ip("198.51.100.7"));
    sim.send(ok, guess(b"s"));
    sim.commit(); // the account it made is durable: then LoggedIn
    assert!(matches!(sim.take(ok)[..], [S::LoggedIn(_)]));
}

#[test]
fn only_connections_signing_up_are_tracked_and_only_until_login() {
    let mut sim = Sim::new(1);
    let idle = sim.connect(0);
    sim.send(idle, K::Ping(proto::v1::Ping { nonce: 1 }));
    assert!(sim.shards[0].prelogin.is_empty(), "a ping leaves no entry");
    let c = sim.connect(0);
    sim.send(c, register("+15550004444"));
    assert_eq!(sim.shards[0].prelogin.len(), 1);
    let pin = pin_of(&sim, "+15550004444");
    sim.send(c, verify("+15550004444", &pin));
    sim.commit();
    let key = match &sim.take(c)[..] {
        [S::PinSent(_), S::Verified(v)] => v.device_key.clone(),
        other => panic!("expected PinSent, Verified: {other:?}"),
    };
    sim.send(
        c,
        K::Login(proto::v1::Login {
            protocol_version: proto::PROTOCOL_VERSION,
            phone: "+15550004444".into(),
            device_key: key,
        }),
    );
    assert!(matches!(sim.take(c)[..], [S::LoggedIn(_)]));
    assert!(sim.shards[0].prelogin.is_empty(), "dropped at login");
}

/// The retry-after of the last `RATE_LIMITED` among `c`'s frames, if any.
fn last_retry_after(sim: &mut Sim, c: proto::ids::ConnId) -> Option<u64> {
    sim.commit();
    sim.take(c).iter().rev().find_map(|f| match f {
        S::Error(e) if e.code == ErrorCode::RateLimited as i32 => Some(e.retry_after_ms),
        _ => None,
    })
}

/// Finding (review-sec): wrong tries burn a PIN whoever makes them, and every new PIN to a
/// number waits for the number's back-off. A stranger who asks a PIN for the victim's number
/// the moment the back-off allows (the retry-after tells it when) and burns it at once with
/// five wrong tries keeps the owner out, within one /24's budgets (after the first hour about
/// two PINs and ten guesses an hour). The owner here honours every retry-after and also tries
/// each PIN the attacker made the gateway text them, 10 s after it was sent.
#[test]
fn row4_a_stranger_burning_each_pin_as_it_is_sent_does_not_keep_the_owner_out() {
    let mut sim = Sim::new(1);
    let victim = "+15550007777";
    let owner = ip("198.51.100.7");
    let start = sim.now;
    let (mut attacker_at, mut owner_at, mut sms_at) = (start, start + 7_000, u64::MAX);
    let mut cycles = 0u64;
    let mut owner_in = false;
    while sim.now < start + 24 * crate::tables::budgets::HOUR_MS && !owner_in {
        if sim.now >= attacker_at {
            let attacker = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, (cycles % 4) as u8));
            cycles += 1;
            let c = sim.connect_from(0, attacker);
            sim.send(c, register(victim));
            if let Some(wait) = last_retry_after(&mut sim, c) {
                attacker_at = sim.now + wait;
            } else {
                sms_at = sim.now + 10_000;
                let right = pin_of(&sim, victim);
                let wrong = if right == "000000" {
                    "000001"
                } else {
                    "000000"
                };
                let c = sim.connect_from(0, attacker);
                for _ in 0..PIN_WRONG_TRIES_PER_PREFIX_MAX {
                    sim.send(c, verify(victim, wrong));
                }
                attacker_at = sim.now + last_retry_after(&mut sim, c).expect("burned");
            }
        }
        if sim.now >= sms_at {
            sms_at = u64::MAX;
            let pin = pin_of(&sim, victim);
            owner_in = once(&mut sim, owner, verify(victim, &pin)) == Answer::Verified;
        }
        if sim.now >= owner_at && !owner_in {
            let c = sim.connect_from(0, owner);
            sim.send(c, register(victim));
            match last_retry_after(&mut sim, c) {
                Some(wait) => owner_at = sim.now + wait,
                None => {
                    let pin = pin_of(&sim, victim);
                    owner_in = once(&mut sim, owner, verify(victim, &pin)) == Answer::Verified;
                    owner_at = sim.now + 60_000;
                }
            }
        }
        sim.now = attacker_at.min(owner_at).min(sms_at).max(sim.now + 1);
    }
    assert!(
        owner_in,
        "the owner registers within a day ({cycles} attacker cycles, {} PINs texted)",
        sim.sms.len()
    );
    eprintln!(
        "owner in after {} s, {cycles} attacker cycles; refusals: guess source {}, guess prefix {}",
        (sim.now - start) / 1000,
        refused(&sim, BudgetKind::GuessSource),
        refused(&sim, BudgetKind::GuessPrefix)
    );
}

/// Found in review: a logged-in connection has no pre-login record, so a `LoadTestLogin` on
/// it was charged to the box budget alone. From one address, an account holder (logging in
/// with its own key, which no budget counts) could spend the shard's whole guess budget and
/// have every owner's `Verify` refused, and guess the secret 1,200 times a minute.
#[test]
fn load_test_guesses_on_a_logged_in_connection_do_not_spend_the_box_budget() {
    let mut sim = Sim::new(1);
    let (attacker, phone) = (ip("203.0.113.50"), "+15550005555");
    assert_eq!(once(&mut sim, attacker, register(phone)), Answer::PinSent);
    let c = sim.connect_from(0, attacker);
    sim.send(c, verify(phone, &pin_of(&sim, phone)));
    sim.commit();
    let key = match &sim.take(c)[..] {
        [S::Verified(v)] => v.device_key.clone(),
        other => panic!("expected Verified: {other:?}"),
    };
    let login = K::Login(proto::v1::Login {
        protocol_version: proto::PROTOCOL_VERSION,
        phone: phone.into(),
        device_key: key,
    });
    let guess = K::LoadTestLogin(proto::v1::LoadTestLogin {
        protocol_version: proto::PROTOCOL_VERSION,
        phone: phone.into(),
        secret: b"guess".to_vec(),
    });
    for _ in 0..GUESSES_BOX_PER_MINUTE_DEFAULT {
        let c = sim.connect_from(0, attacker);
        sim.send(c, login.clone());
        sim.send(c, guess.clone());
        sim.take(c);
    }
    assert_eq!(refused(&sim, BudgetKind::GuessBox), 0);
    legit_user_registers(&mut sim, "198.51.100.7", "+15550001234");
    let c = sim.connect_from(0, attacker);
    sim.send(c, login);
    sim.send(c, guess);
    assert!(
        matches!(&sim.take(c)[..], [S::LoggedIn(_), .., S::Error(e)] if e.code == ErrorCode::UnexpectedFrame as i32),
        "refused as any pre-login frame on a logged-in connection"
    );
    assert!(!sim.closed.contains(&c), "the session goes on");
}

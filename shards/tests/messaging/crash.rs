//! The durability contract: the server is killed with SIGKILL after acknowledging 1,000
//! messages to offline users, restarted on the same data directory, and every acknowledged
//! message is delivered, in order, none twice; registrations survive too.

use crate::support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;

use proto::v1::server_frame;
use support::Client;

const RECIPIENTS: usize = 10;
const PER_RECIPIENT: u64 = 100;

fn spawn_server(data: &Path) -> (Child, SocketAddr) {
    support::spawn_binary(data, &[])
}

fn tls_client(data: &Path, addr: SocketAddr) -> Client {
    Client::tls(
        addr,
        &engine::tls::dev_cert_path(&shards::server::tls_dir(data)),
    )
}

#[test]
fn sigkill_after_acks_loses_nothing_and_duplicates_nothing() {
    let data = testkit::temp_dir("crash");
    let (mut server, addr) = spawn_server(&data);
    let recipients: Vec<String> = (0..RECIPIENTS).map(|i| format!("+1555200{i:04}")).collect();
    for r in &recipients {
        tls_client(&data, addr).load_test_login(r); // creates the account, then goes offline
    }
    let mut sender = tls_client(&data, addr);
    sender.load_test_login("+15552009999");
    let mut id = 0;
    for n in 0..PER_RECIPIENT {
        for r in &recipients {
            id += 1;
            sender.send_text(r, id, &format!("{r}:{n}"));
        }
    }
    let acks = sender.recv_n(id as usize);
    assert!(
        acks.iter()
            .all(|f| matches!(f, server_frame::Kind::ServerAck(_))),
        "all 1,000 acknowledged"
    );
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();

    let (mut server, addr) = spawn_server(&data);
    let mut seen: HashMap<String, u32> = HashMap::new();
    for r in &recipients {
        let mut c = tls_client(&data, addr);
        assert_eq!(
            c.load_test_login(r),
            PER_RECIPIENT as u32,
            "{r}'s queue survived"
        );
        for n in 0..PER_RECIPIENT {
            let m = c.expect_message();
            let body = String::from_utf8(m.body).unwrap();
            assert_eq!(body, format!("{r}:{n}"), "in order");
            *seen.entry(body).or_default() += 1;
            c.ack(vec![m.server_msg_id]);
        }
        assert!(c.sync().is_empty(), "nothing beyond what was sent");
    }
    assert_eq!(seen.len(), RECIPIENTS * PER_RECIPIENT as usize);
    assert!(seen.values().all(|&n| n == 1), "none delivered twice");
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn registration_survives_sigkill() {
    let data = testkit::temp_dir("crash-reg");
    let (mut server, addr) = spawn_server(&data);
    let phone = "+15552100001";
    let mut c = tls_client(&data, addr);
    c.send(proto::v1::client_frame::Kind::Register(
        proto::v1::Register {
            protocol_version: support::V,
            phone: phone.into(),
        },
    ));
    assert!(matches!(c.recv(), server_frame::Kind::PinSent(_)));
    let text = std::fs::read_to_string(data.join("sms-outbox.txt")).unwrap();
    let pin = text
        .lines()
        .last()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .to_string();
    c.send(proto::v1::client_frame::Kind::Verify(proto::v1::Verify {
        protocol_version: support::V,
        phone: phone.into(),
        pin,
    }));
    let key = match c.recv() {
        server_frame::Kind::Verified(v) => v.device_key,
        other => panic!("expected Verified, got {other:?}"),
    };
    server.kill().unwrap();
    server.wait().unwrap();
    let (mut server, addr) = spawn_server(&data);
    let mut again = tls_client(&data, addr);
    assert_eq!(again.login(phone, &key), 0);
    server.kill().unwrap();
    server.wait().unwrap();
}

/// The load-test login's twin of `registration_survives_sigkill`: `LoggedIn` for a login
/// that made its account is heard only once the account is on disk, whatever the commit
/// window. With the longest window (100 ms) the server is SIGKILLed the moment the answer
/// arrives; restarted, it knows the account (the same user id, not a new one).
#[test]
fn an_account_a_load_test_login_was_answered_for_survives_sigkill() {
    let data = testkit::temp_dir("crash-ltl");
    let window = messaging::state::limits::COMMIT_WINDOW_US_MAX.to_string();
    let (mut server, addr) = support::spawn_binary(&data, &["--commit-window-us", &window]);
    let phone = "+15552110001";
    let user_id = |c: &mut Client| c.load_test_logged_in(phone).user_id;
    let first = user_id(&mut tls_client(&data, addr));
    server.kill().unwrap();
    server.wait().unwrap();
    let (mut server, addr) = spawn_server(&data);
    assert_eq!(
        user_id(&mut tls_client(&data, addr)),
        first,
        "the account survived"
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

//! Crash safety under load: the server binary is killed with SIGKILL at a pseudo-random
//! moment (50–400 ms into a steady stream of sends to offline users), restarted on the same
//! data directory, and every recipient is drained. Three iterations on one directory.
//!
//! Held: every `ServerAck`ed message is delivered; no message is delivered under two server
//! ids (a redelivery under the same id, possible if an ack's tombstone was not yet durable at
//! the kill, is deduped by clients and counted here); nothing unsent appears; the account
//! registered with a PIN still logs in with its key after every restart.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

use proto::v1::{client_frame, server_frame};
use support::{raw_frame as frame, read_raw_frame as read_frame, Client};

const ITERATIONS: u64 = 3;
const RECIPIENTS: usize = 10;
const SENDER: &str = "+15554009999";
const PIN_USER: &str = "+15554008888";
/// Sends written before the sender reads their answers.
const WINDOW: u64 = 20;

fn spawn_server(data: &Path) -> (Child, SocketAddr) {
    support::spawn_binary(data, &["--no-tls"])
}

/// Sends to `recipients` in windows until the server dies, passing acked client ids to
/// `acked`; returns the next client id it would have used.
fn sender(
    addr: SocketAddr,
    recipients: Vec<String>,
    first_cid: u64,
    acked: mpsc::Sender<u64>,
) -> u64 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&frame(client_frame::Kind::LoadTestLogin(
        proto::v1::LoadTestLogin {
            protocol_version: support::V,
            phone: SENDER.into(),
            secret: b"farm-secret".to_vec(),
        },
    )))
    .unwrap();
    assert!(matches!(
        read_frame(&mut s),
        Some(server_frame::Kind::LoggedIn(_))
    ));
    let mut cid = first_cid;
    loop {
        let mut batch = Vec::new();
        for _ in 0..WINDOW {
            let to = recipients[cid as usize % recipients.len()].clone();
            batch.extend(frame(client_frame::Kind::Send(proto::v1::SendMessage {
                to,
                client_msg_id: cid,
                body: cid.to_string().into_bytes().into(),
                media: None,
            })));
            cid += 1;
        }
        if s.write_all(&batch).is_err() {
            return cid;
        }
        let mut answered = 0;
        while answered < WINDOW {
            match read_frame(&mut s) {
                Some(server_frame::Kind::ServerAck(a)) => {
                    let _ = acked.send(a.client_msg_id);
                    answered += 1;
                }
                // DELIVERED receipts for what the previous iteration drained.
                Some(server_frame::Kind::Receipt(_)) => {}
                Some(other) => panic!("unexpected answer: {other:?}"),
                None => return cid, // killed
            }
        }
    }
}

fn register_with_pin(data: &Path, addr: SocketAddr) -> Vec<u8> {
    let mut c = Client::plain(addr);
    c.send(client_frame::Kind::Register(proto::v1::Register {
        protocol_version: support::V,
        phone: PIN_USER.into(),
    }));
    assert!(matches!(c.recv(), server_frame::Kind::PinSent(_)));
    let text = std::fs::read_to_string(data.join("sms-outbox.txt")).unwrap();
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with(PIN_USER))
        .unwrap();
    let pin = line.split(' ').nth(1).unwrap().to_string();
    c.send(client_frame::Kind::Verify(proto::v1::Verify {
        protocol_version: support::V,
        phone: PIN_USER.into(),
        pin,
    }));
    match c.recv() {
        server_frame::Kind::Verified(v) => v.device_key,
        other => panic!("expected Verified, got {other:?}"),
    }
}

#[test]
fn sigkill_at_random_moments_under_load_loses_and_duplicates_nothing() {
    let data = testkit::temp_dir("crash-random");
    let mut moments = support::KillMoments::new("crash_random_kill");
    let (mut server, mut addr) = spawn_server(&data);
    let recipients: Vec<String> = (0..RECIPIENTS).map(|i| format!("+1555400{i:04}")).collect();
    for r in &recipients {
        Client::plain(addr).load_test_login(r);
    }
    let key = register_with_pin(&data, addr);
    // cid -> server id it was delivered under.
    let mut delivered: HashMap<u64, u64> = HashMap::new();
    let mut redelivered_same_id = 0u64;
    for it in 0..ITERATIONS {
        let (acked_tx, acked_rx) = mpsc::channel();
        let first_cid = (it + 1) * 1_000_000;
        let t = {
            let recipients = recipients.clone();
            std::thread::spawn(move || sender(addr, recipients, first_cid, acked_tx))
        };
        let kill_after = moments.next();
        std::thread::sleep(kill_after);
        server.kill().unwrap(); // SIGKILL
        server.wait().unwrap();
        let next_cid = t.join().unwrap();
        let acked: Vec<u64> = acked_rx.try_iter().collect();

        (server, addr) = spawn_server(&data);
        assert_eq!(
            Client::plain(addr).login(PIN_USER, &key),
            0,
            "registration survived"
        );
        let mut this_round = 0;
        for r in &recipients {
            let mut c = Client::plain(addr);
            let queued = c.load_test_login(r);
            for _ in 0..queued {
                let m = c.expect_message();
                let cid: u64 = String::from_utf8(m.body).unwrap().parse().unwrap();
                assert!(cid >= 1_000_000 && cid < next_cid, "{cid} was never sent");
                assert_eq!(&recipients[cid as usize % RECIPIENTS], r, "right recipient");
                match delivered.insert(cid, m.server_msg_id) {
                    None => this_round += 1,
                    Some(id) if id == m.server_msg_id => redelivered_same_id += 1,
                    Some(id) => panic!(
                        "message {cid} delivered twice, as {id} and as {}",
                        m.server_msg_id
                    ),
                }
                c.ack(vec![m.server_msg_id]);
            }
            assert!(c.sync().is_empty(), "{r}: nothing beyond what was queued");
        }
        let lost: Vec<&u64> = acked
            .iter()
            .filter(|c| !delivered.contains_key(c))
            .collect();
        eprintln!(
            "iteration {it}: killed after {kill_after:?}; sent {}, acked {}, delivered {this_round}",
            next_cid - first_cid,
            acked.len()
        );
        assert!(
            lost.is_empty(),
            "iteration {it}: {} acked messages lost, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
    }
    eprintln!("redelivered under the same server id (client dedupes): {redelivered_same_id}");
    server.kill().unwrap();
    server.wait().unwrap();
}

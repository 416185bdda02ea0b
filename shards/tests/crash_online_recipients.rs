//! Crash safety with recipients online: messages are delivered before their records are
//! durable, and an item its recipient acks first is never written at all. The server binary
//! is SIGKILLed at a pseudo-random moment while one sender streams 1:1 messages and group
//! messages to recipients that are online, reading and acking everything at once; then it
//! restarts on the same data directory and every recipient drains its queue. Three rounds.
//!
//! Held: every message whose sender got a `ServerAck` reached every recipient it was for
//! (before the kill, or from the queue after it); nothing unsent arrives; a client that
//! drops a `(from, client_msg_id)` it already showed shows each message once (redeliveries
//! are counted, not shown).

mod support;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

use proto::v1::{client_frame, server_frame};
use support::{raw_frame as frame, read_raw_frame as read_frame, Client};

const ROUNDS: u64 = 3;
const RECIPIENTS: usize = 6;
const SENDER: &str = "+15554109999";
/// Sends written before the sender reads their answers.
const WINDOW: u64 = 20;
/// Every this many sends is a group send (to every recipient).
const GROUP_EVERY: u64 = 5;

fn spawn_server(data: &Path) -> (Child, SocketAddr) {
    support::spawn_binary(data, &["--no-tls"])
}

fn login(addr: SocketAddr, phone: &str) -> TcpStream {
    match try_login(addr, phone) {
        Ok(s) => s,
        Err(other) => panic!("expected LoggedIn for {phone}, got {other:?}"),
    }
}

/// A login that the kill may cut short (the sender's races it: the kill can come first).
/// `Err(None)`: the server is gone; `Err(Some(frame))`: it answered something else.
fn try_login(addr: SocketAddr, phone: &str) -> Result<TcpStream, Option<String>> {
    let mut s = TcpStream::connect(addr).map_err(|_| None)?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let login = frame(client_frame::Kind::LoadTestLogin(
        proto::v1::LoadTestLogin {
            protocol_version: support::V,
            phone: phone.into(),
            secret: b"farm-secret".to_vec(),
        },
    ));
    s.write_all(&login).map_err(|_| None)?;
    match read_frame(&mut s) {
        Some(server_frame::Kind::LoggedIn(_)) => Ok(s),
        None => Err(None),
        Some(other) => Err(Some(format!("{other:?}"))),
    }
}

/// What one recipient saw: client ids shown (first copy), and copies dropped as repeats.
#[derive(Debug, Default)]
struct Seen {
    shown: HashSet<u64>,
    repeats: u64,
}

impl Seen {
    fn take(&mut self, m: &proto::v1::Message) {
        assert_eq!(m.from, SENDER, "only the sender writes here");
        let cid: u64 = String::from_utf8(m.body.clone()).unwrap().parse().unwrap();
        assert_eq!(
            cid, m.client_msg_id,
            "the sender's id travels with the message"
        );
        if !self.shown.insert(cid) {
            self.repeats += 1;
        }
    }
}

/// Reads and acks every message until the connection is gone.
fn recipient(mut s: TcpStream, seen: &mut Seen) {
    while let Some(f) = read_frame(&mut s) {
        if let server_frame::Kind::Message(m) = f {
            seen.take(&m);
            let ack = frame(client_frame::Kind::Ack(proto::v1::Ack {
                server_msg_ids: vec![m.server_msg_id],
            }));
            if s.write_all(&ack).is_err() {
                return;
            }
        }
    }
}

/// Streams sends until the server dies; returns (next client id, acked client ids).
fn sender(
    addr: SocketAddr,
    recipients: &[String],
    group_id: u64,
    first_cid: u64,
) -> (u64, Vec<u64>) {
    let mut s = match try_login(addr, SENDER) {
        Ok(s) => s,
        // Killed before the login finished (a loaded machine, a short draw): nothing sent.
        Err(None) => return (first_cid, Vec::new()),
        Err(Some(other)) => panic!("expected LoggedIn for the sender, got {other:?}"),
    };
    let mut acked = Vec::new();
    let mut cid = first_cid;
    loop {
        let mut batch = Vec::new();
        for _ in 0..WINDOW {
            let body = cid.to_string().into_bytes();
            batch.extend(frame(if cid.is_multiple_of(GROUP_EVERY) {
                client_frame::Kind::GroupSend(proto::v1::GroupSend {
                    group_id,
                    client_msg_id: cid,
                    body,
                    media: None,
                })
            } else {
                client_frame::Kind::Send(proto::v1::SendMessage {
                    to: recipients[cid as usize % recipients.len()].clone(),
                    client_msg_id: cid,
                    body: body.into(),
                    media: None,
                })
            }));
            cid += 1;
        }
        if s.write_all(&batch).is_err() {
            return (cid, acked);
        }
        let mut answered = 0;
        while answered < WINDOW {
            match read_frame(&mut s) {
                Some(server_frame::Kind::ServerAck(a)) => {
                    acked.push(a.client_msg_id);
                    answered += 1;
                }
                Some(server_frame::Kind::Receipt(_)) => {}
                Some(other) => panic!("unexpected answer: {other:?}"),
                None => return (cid, acked),
            }
        }
    }
}

fn create_group(addr: SocketAddr, members: &[String]) -> u64 {
    let mut c = Client::plain(addr);
    c.load_test_login(SENDER);
    c.send(client_frame::Kind::GroupCreate(proto::v1::GroupCreate {
        client_req_id: 1,
        name: "crash".into(),
        members: members.to_vec(),
    }));
    match c.recv() {
        server_frame::Kind::GroupCreated(g) => g.group_id,
        other => panic!("expected GroupCreated, got {other:?}"),
    }
}

/// Which recipients a client id was for.
fn meant_for(cid: u64, recipients: &[String]) -> Vec<usize> {
    if cid.is_multiple_of(GROUP_EVERY) {
        (0..recipients.len()).collect()
    } else {
        vec![cid as usize % recipients.len()]
    }
}

#[test]
fn sigkill_with_online_recipients_loses_nothing_acked_and_shows_nothing_twice() {
    let data = testkit::temp_dir("crash-online");
    let mut moments = support::KillMoments::new("crash_online_recipients");
    let (mut server, mut addr) = spawn_server(&data);
    let recipients: Vec<String> = (0..RECIPIENTS).map(|i| format!("+1555410{i:04}")).collect();
    for r in &recipients {
        let mut c = Client::plain(addr);
        c.load_test_login(r);
        c.group_privacy(proto::v1::GroupAddPolicy::Everyone);
    }
    let group_id = create_group(addr, &recipients);
    let mut seen: Vec<Seen> = (0..RECIPIENTS).map(|_| Seen::default()).collect();
    for round in 0..ROUNDS {
        let first_cid = (round + 1) * 1_000_000;
        let (seen_tx, seen_rx) = mpsc::channel();
        let readers: Vec<_> = recipients
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let s = login(addr, r);
                let tx = seen_tx.clone();
                let mut mine = std::mem::take(&mut seen[i]);
                std::thread::spawn(move || {
                    recipient(s, &mut mine);
                    tx.send((i, mine)).unwrap();
                })
            })
            .collect();
        let t = {
            let recipients = recipients.clone();
            std::thread::spawn(move || sender(addr, &recipients, group_id, first_cid))
        };
        let kill_after = moments.next();
        std::thread::sleep(kill_after);
        server.kill().unwrap(); // SIGKILL
        server.wait().unwrap();
        let (next_cid, acked) = t.join().unwrap();
        for r in readers {
            r.join().unwrap();
        }
        for (i, s) in seen_rx.try_iter() {
            seen[i] = s;
        }
        let shown_before: usize = seen.iter().map(|s| s.shown.len()).sum();

        (server, addr) = spawn_server(&data);
        for (i, r) in recipients.iter().enumerate() {
            let mut c = Client::plain(addr);
            let queued = c.load_test_login(r);
            for _ in 0..queued {
                let m = c.expect_message();
                seen[i].take(&m);
                c.ack(vec![m.server_msg_id]);
            }
            assert!(c.sync().is_empty(), "{r}: nothing beyond what was queued");
        }
        let mut lost: HashMap<u64, Vec<usize>> = HashMap::new();
        for &cid in &acked {
            for i in meant_for(cid, &recipients) {
                if !seen[i].shown.contains(&cid) {
                    lost.entry(cid).or_default().push(i);
                }
            }
        }
        for s in &seen {
            let unsent = s.shown.iter().filter(|&&c| c >= next_cid).count();
            assert_eq!(unsent, 0, "a message that was never sent arrived");
        }
        eprintln!(
            "round {round}: killed after {kill_after:?}; sent {}, acked {}, shown before the \
             kill {shown_before}, repeats dropped so far {}",
            next_cid - first_cid,
            acked.len(),
            seen.iter().map(|s| s.repeats).sum::<u64>()
        );
        assert!(
            lost.is_empty(),
            "round {round}: {} acked messages missing at some recipient, e.g. {:?}",
            lost.len(),
            lost.iter().take(5).collect::<Vec<_>>()
        );
    }
    server.kill().unwrap();
    server.wait().unwrap();
}

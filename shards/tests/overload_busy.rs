//! Overload fast reject: with a low journal limit, a sender flooding without waiting gets
//! explicit `Busy` frames for what the shard cannot take now. Every `ServerAck`ed message is
//! delivered exactly once, no `Busy`ed one is ever delivered (sent again under a new id, as
//! the protocol's client_msg_id rule asks, it is delivered once), and the server's memory
//! stays bounded.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use proto::codec::{decode_server, encode_frame};
use proto::v1::{client_frame, server_frame, ClientFrame, SendMessage};
use support::TestServer;

const RECIPIENTS: usize = 8;
/// Most sends in the flood (also bounded by FLOOD_MS).
const FLOOD_SENDS_MAX: u64 = 20_000;
const FLOOD_MS: u64 = 3_000;
/// Busy'd sends retried afterwards, one at a time.
const RETRIES: usize = 100;

fn vm_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn send_frame(cid: u64, to: &str) -> Vec<u8> {
    send_frame_as(cid, cid, to)
}

/// Message `m{msg}` under client id `cid`.
fn send_frame_as(cid: u64, msg: u64, to: &str) -> Vec<u8> {
    let f = ClientFrame {
        kind: Some(client_frame::Kind::Send(SendMessage {
            to: to.into(),
            client_msg_id: cid,
            body: format!("m{msg}").into_bytes().into(),
            media: None,
        })),
    };
    let mut out = Vec::new();
    encode_frame(&f, &mut out).unwrap();
    out
}

/// Reads frames from `s` until EOF, passing each on.
fn reader(mut s: TcpStream, tx: mpsc::Sender<server_frame::Kind>) {
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        if s.read_exact(&mut body).is_err() {
            return;
        }
        let kind = decode_server(&body).unwrap().kind.unwrap();
        if tx.send(kind).is_err() {
            return;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Acked,
    Busy,
    Refused,
}

fn record(answers: &mut HashMap<u64, Outcome>, f: server_frame::Kind) {
    let (cid, o) = match f {
        server_frame::Kind::ServerAck(a) => (a.client_msg_id, Outcome::Acked),
        server_frame::Kind::Busy(b) => {
            assert!(b.retry_after_ms > 0);
            (b.client_msg_id, Outcome::Busy)
        }
        server_frame::Kind::Error(e) => (e.client_msg_id, Outcome::Refused),
        other => panic!("unexpected frame to the sender: {other:?}"),
    };
    assert!(cid != 0, "every answer names its message");
    assert!(
        answers.insert(cid, o).is_none(),
        "message {cid} answered twice"
    );
}

#[test]
fn flood_gets_busy_and_loses_or_duplicates_nothing() {
    let server = TestServer::start_cfg(2, false, testkit::temp_dir("overload"), |cfg| {
        cfg.overload.journal_pending_bytes_max = 16 * 1024;
    });
    let recipients: Vec<String> = (0..RECIPIENTS).map(|i| format!("+1555300{i:04}")).collect();
    for r in &recipients {
        server.client().load_test_login(r); // account exists; the user goes offline
    }
    let mut login = server.client();
    login.load_test_login("+15553009999");
    drop(login);
    // The sender speaks raw frames on a socket split into a writer and a reader thread.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut hello = Vec::new();
    let f = ClientFrame {
        kind: Some(client_frame::Kind::LoadTestLogin(
            proto::v1::LoadTestLogin {
                protocol_version: support::V,
                phone: "+15553009999".into(),
                secret: b"farm-secret".to_vec(),
            },
        )),
    };
    encode_frame(&f, &mut hello).unwrap();
    s.write_all(&hello).unwrap();
    let (tx, rx) = mpsc::channel();
    let rd = s.try_clone().unwrap();
    let reader = std::thread::spawn(move || reader(rd, tx));
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        server_frame::Kind::LoggedIn(_)
    ));

    let rss_before = vm_rss_kib();
    let mut answers: HashMap<u64, Outcome> = HashMap::new();
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < FLOOD_SENDS_MAX && start.elapsed() < Duration::from_millis(FLOOD_MS) {
        let batch: Vec<u8> = (sent + 1..=sent + 200)
            .flat_map(|cid| send_frame(cid, &recipients[cid as usize % RECIPIENTS]))
            .collect();
        s.write_all(&batch).unwrap();
        sent += 200;
        while let Ok(f) = rx.try_recv() {
            record(&mut answers, f);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while (answers.len() as u64) < sent {
        let left = deadline.saturating_duration_since(Instant::now());
        let f = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{} of {sent} sends answered", answers.len()));
        record(&mut answers, f);
    }
    let rss_after = vm_rss_kib();
    let count = |o| answers.values().filter(|&&x| x == o).count();
    let (acked, busy, refused) = (
        count(Outcome::Acked),
        count(Outcome::Busy),
        count(Outcome::Refused),
    );
    eprintln!(
        "flood: {sent} sends in {:?}: {acked} acked, {busy} busy, {refused} refused; \
         RSS {rss_before} KiB -> {rss_after} KiB",
        start.elapsed()
    );
    assert!(busy > 0, "a flood past the journal limit got no Busy");
    assert!(acked > 0, "nothing was admitted");
    assert_eq!(refused, 0, "no other refusals expected");
    assert!(
        rss_after.saturating_sub(rss_before) < 128 * 1024,
        "server memory grew by {} KiB during the flood",
        rss_after - rss_before
    );

    // Send some Busy'd messages again, one at a time, each under a new client id (the
    // protocol's rule: a refused send was not stored; ids keep increasing).
    let mut busy_ids: Vec<u64> = answers
        .iter()
        .filter(|(_, &o)| o == Outcome::Busy)
        .map(|(&c, _)| c)
        .collect();
    busy_ids.sort();
    let retried: Vec<u64> = busy_ids.iter().copied().take(RETRIES).collect();
    let mut next_cid = sent + 1;
    for &msg in &retried {
        for attempt in 0.. {
            assert!(attempt < 50, "retry of {msg} kept getting Busy");
            let cid = next_cid;
            next_cid += 1;
            s.write_all(&send_frame_as(
                cid,
                msg,
                &recipients[msg as usize % RECIPIENTS],
            ))
            .unwrap();
            match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
                server_frame::Kind::ServerAck(a) => {
                    assert_eq!(a.client_msg_id, cid);
                    break;
                }
                server_frame::Kind::Busy(b) => {
                    std::thread::sleep(Duration::from_millis(b.retry_after_ms.into()))
                }
                other => panic!("unexpected answer to a retry: {other:?}"),
            }
        }
    }
    eprintln!("retries done at {:?}", start.elapsed());
    s.shutdown(std::net::Shutdown::Both).unwrap();
    reader.join().unwrap();

    // Drain every recipient: exactly the acked and the retried messages, each once.
    let mut delivered: HashMap<u64, u32> = HashMap::new();
    for r in &recipients {
        let mut c = server.client();
        let queued = c.load_test_login(r);
        for _ in 0..queued {
            let m = c.expect_message();
            let body = String::from_utf8(m.body).unwrap();
            let cid: u64 = body.strip_prefix('m').unwrap().parse().unwrap();
            assert_eq!(&recipients[cid as usize % RECIPIENTS], r, "right recipient");
            *delivered.entry(cid).or_default() += 1;
            c.ack(vec![m.server_msg_id]);
        }
        assert!(c.sync().is_empty(), "{r}: nothing beyond what was queued");
    }
    eprintln!("drained at {:?}", start.elapsed());
    let expected: HashSet<u64> = answers
        .iter()
        .filter(|(_, &o)| o == Outcome::Acked)
        .map(|(&c, _)| c)
        .chain(retried.iter().copied())
        .collect();
    let got: HashSet<u64> = delivered.keys().copied().collect();
    assert!(
        delivered.values().all(|&n| n == 1),
        "a message was delivered twice"
    );
    let lost: Vec<_> = expected.difference(&got).take(5).collect();
    assert!(lost.is_empty(), "acked but never delivered: {lost:?}...");
    let extra: Vec<_> = got.difference(&expected).take(5).collect();
    assert!(
        extra.is_empty(),
        "Busy'd (never acked) but delivered: {extra:?}..."
    );
}

//! What the server's log may say: no phone number at INFO and above (a user is named by
//! its server-issued id), and no webhook credentials (issue 22, items 6 and 8). The real
//! binary runs with its log at info on a pipe; the tests read every line it wrote.

use crate::support;

use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use proto::v1::{client_frame, server_frame};
use support::{Client, V};

/// The binary, started with `args`, and every line of its log as it comes.
struct Logged {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Logged {
    fn start(data: &std::path::Path, args: &[&str]) -> Logged {
        let mut cmd = support::switchboard_command(args);
        cmd.arg("--data-dir").arg(data);
        let mut child = cmd.spawn().unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut logged = Logged {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            lines,
            seen: Vec::new(),
        };
        let line = logged.wait_for("switchboard listening");
        logged.addr = shards::server::listening_addr(&line).expect("addr= in the line");
        logged
    }

    /// Waits (generously: the box may be loaded) for a log line containing `what`.
    fn wait_for(&mut self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(l) = self.seen.iter().find(|l| l.contains(what)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no log line with {what:?}; log:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Stops the server and returns its whole log.
    fn stop(mut self) -> String {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

fn pin_for(data: &std::path::Path, phone: &str) -> String {
    let text = std::fs::read_to_string(data.join("sms-outbox.txt")).expect("outbox");
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with(&format!("{phone} ")))
        .expect("a PIN was sent");
    line.split(' ').nth(1).unwrap().to_string()
}

fn register(addr: std::net::SocketAddr, data: &std::path::Path, phone: &str) -> Vec<u8> {
    let mut c = Client::plain(addr);
    c.send(client_frame::Kind::Register(proto::v1::Register {
        protocol_version: V,
        phone: phone.into(),
    }));
    assert!(matches!(c.recv(), server_frame::Kind::PinSent(_)));
    c.send(client_frame::Kind::Verify(proto::v1::Verify {
        protocol_version: V,
        phone: phone.into(),
        pin: pin_for(data, phone),
    }));
    match c.recv() {
        server_frame::Kind::Verified(v) => v.device_key,
        other => panic!("expected Verified, got {other:?}"),
    }
}

#[test]
fn register_verify_send_and_push_log_no_phone_number() {
    let data = testkit::temp_dir("logs-phones");
    let mut server = Logged::start(&data, &["--shards", "2", "--no-admin", "--no-tls"]);
    let (alice, bob) = ("+15559876501", "+15559876502");
    let alice_key = register(server.addr, &data, alice);
    register(server.addr, &data, bob);
    let mut a = Client::plain(server.addr);
    a.login(alice, &alice_key);
    // Bob is offline: the message is queued and his push provider told.
    a.send_text(bob, 1, "hello");
    assert!(matches!(a.recv(), server_frame::Kind::ServerAck(_)));
    server.wait_for("push: messages waiting");
    let log = server.stop();
    for phone in [alice, bob] {
        let digits = &phone[1..];
        assert!(!log.contains(digits), "{phone} in the log:\n{log}");
    }
    // The user is named by id instead.
    assert!(log.contains("user_id="), "{log}");
}

#[test]
fn a_down_sms_gateway_logs_no_credentials_of_its_url() {
    let data = testkit::temp_dir("logs-webhook");
    // A port nothing listens on: every POST fails at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hook = format!("http://gwuser:PASSWORD123@127.0.0.1:{port}/sms?api_key=SECRETKEY456");
    let mut server = Logged::start(
        &data,
        &[
            "--shards",
            "1",
            "--no-admin",
            "--no-tls",
            "--sms-webhook",
            &hook,
        ],
    );
    let mut c = Client::plain(server.addr);
    c.send(client_frame::Kind::Register(proto::v1::Register {
        protocol_version: V,
        phone: "+15559876503".into(),
    }));
    // The gateway is down: the PIN is not sent, and the client hears so.
    assert!(matches!(c.recv(), server_frame::Kind::Error(_)));
    server.wait_for("webhook POST failed");
    let log = server.stop();
    for secret in ["gwuser", "PASSWORD123", "SECRETKEY456", "api_key"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    assert!(
        log.contains(&format!("http://127.0.0.1:{port}/sms")),
        "{log}"
    );
}

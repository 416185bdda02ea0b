//! A live upgrade of the real binary (`kill -USR2`): the server starts its own binary again
//! and hands it every listener and connection. Clients logged in over plaintext and TLS keep
//! their sockets through two upgrades in a row: pings answered, messages delivered once
//! (one delivered before an upgrade and acked after it is not delivered again), receipts
//! back to the sender. A new binary that refuses (a test hook makes it read another blob
//! version) leaves the old one serving every connection.

use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use proto::v1::{client_frame, server_frame, Ping, ReceiptKind};

use crate::support::{phones_on, switchboard_command, Client};

/// How long a test waits for an upgrade's log line (a debug build on a busy machine).
const UPGRADE_WAIT_S: u64 = 60;

/// A server started from the binary, with every log line it (and the processes it starts,
/// which share its stderr) writes.
struct Box {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    lines: mpsc::Receiver<String>,
    data: std::path::PathBuf,
    tls: bool,
}

impl Box {
    fn start(tls: bool, env: &[(&str, &str)]) -> Box {
        Self::start_notifying(tls, env, None)
    }

    /// [`Box::start`] with `NOTIFY_SOCKET` set to `notify`, as systemd would.
    fn start_notifying(tls: bool, env: &[(&str, &str)], notify: Option<&std::path::Path>) -> Box {
        let data = testkit::temp_dir("upgrade");
        let mut args = vec!["--shards", "2", "--no-admin"];
        if !tls {
            args.push("--no-tls");
        }
        let mut cmd = switchboard_command(&args);
        cmd.env(shards::config::LOAD_TEST_SECRET_ENV, "farm-secret")
            .arg("--data-dir")
            .arg(&data);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(path) = notify {
            cmd.env(shards::sd_notify::NOTIFY_SOCKET_ENV, path);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("server: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut b = Box {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            lines,
            data,
            tls,
        };
        let line = b.wait_for(shards::server::LISTENING);
        b.addr = shards::server::listening_addr(&line).unwrap();
        b
    }

    /// The next log line containing `text` (earlier ones are skipped).
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(UPGRADE_WAIT_S);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with {text:?}: {e}"),
            }
        }
    }

    fn client(&self) -> Client {
        if self.tls {
            let cert = engine::tls::dev_cert_path(&shards::server::tls_dir(&self.data));
            Client::tls(self.addr, &cert)
        } else {
            Client::plain(self.addr)
        }
    }
}

fn pid_in(line: &str) -> i32 {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid= in {line:?}"))
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a server this test started (or that one started).
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill {pid}");
}

/// Waits until `pid` (not our child: started by the server) is gone.
fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(UPGRADE_WAIT_S);
    // SAFETY: kill(pid, 0) only asks whether the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 {
        assert!(Instant::now() < deadline, "pid {pid} still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ping(c: &mut Client, nonce: u64) {
    c.send(client_frame::Kind::Ping(Ping { nonce }));
    match c.recv() {
        server_frame::Kind::Pong(p) => assert_eq!(p.nonce, nonce),
        other => panic!("expected Pong {nonce}, got {other:?}"),
    }
}

/// `a` sends `body` to `b`; `b` receives it once. Returns its server id.
fn send(a: &mut Client, b: &mut Client, to: &str, id: u64, body: &str) -> u64 {
    a.send_text(to, id, body);
    match a.recv() {
        server_frame::Kind::ServerAck(ack) => assert_eq!(ack.client_msg_id, id),
        other => panic!("expected ServerAck {id}, got {other:?}"),
    }
    let m = b.expect_message();
    assert_eq!(m.body, body.as_bytes());
    m.server_msg_id
}

/// `b` acks `msg`; `a` gets the delivered receipt.
fn ack(a: &mut Client, b: &mut Client, msg: u64) {
    b.ack(vec![msg]);
    match a.recv() {
        server_frame::Kind::Receipt(r) => {
            assert_eq!(
                (r.kind, r.server_msg_id),
                (ReceiptKind::Delivered as i32, msg)
            )
        }
        other => panic!("expected a receipt for {msg}, got {other:?}"),
    }
}

fn upgrade_twice_keeps_every_connection(tls: bool) {
    // systemd's side, as `Type=notify` sees it.
    let notify_path = testkit::temp_dir("upgrade-notify").join("notify");
    std::fs::create_dir_all(notify_path.parent().unwrap()).unwrap();
    let systemd = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(UPGRADE_WAIT_S)))
        .unwrap();
    let heard = || {
        let mut buf = [0u8; 256];
        let n = systemd.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut server = Box::start_notifying(tls, &[], Some(&notify_path));
    assert_eq!(heard(), "READY=1");
    let (pa, pb) = (
        phones_on(0, 2, 1, 900).remove(0),
        phones_on(1, 2, 1, 900).remove(0),
    );
    let mut a = server.client();
    let mut b = server.client();
    a.load_test_login(&pa);
    b.load_test_login(&pb);
    let mut pid = server.child.id() as i32;
    let mut next_id = 1;
    for round in 0..2 {
        // Delivered before the upgrade, acked after it.
        let before = send(&mut a, &mut b, &pb, next_id, &format!("before {round}"));
        next_id += 1;
        if round == 0 {
            signal(pid, libc::SIGUSR2);
        } else {
            // The operator's way: name the data directory, the server holding it upgrades.
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
                .args(["upgrade", "--data-dir"])
                .arg(&server.data)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let done = server.wait_for("upgrade: done");
        let new_pid = pid_in(&done);
        assert_ne!(new_pid, pid);
        // The old process names its successor to systemd (a barrier follows; the kernel
        // closes its descriptor here, which completes it).
        assert_eq!(heard(), format!("MAINPID={new_pid}"));
        assert_eq!(heard(), "BARRIER=1");
        if round == 0 {
            assert!(
                server.child.wait().unwrap().success(),
                "the old process exits 0"
            );
        } else {
            wait_gone(pid);
        }
        pid = new_pid;
        // The same sockets: answered by the new process, nothing delivered twice (the
        // first frame `b` sees is its Pong, not "before" again).
        ping(&mut a, 10 + round);
        ping(&mut b, 20 + round);
        ack(&mut a, &mut b, before);
        let after = send(&mut a, &mut b, &pb, next_id, &format!("after {round}"));
        next_id += 1;
        ack(&mut a, &mut b, after);
    }
    signal(pid, libc::SIGTERM);
    wait_gone(pid);
}

#[test]
fn a_live_upgrade_twice_keeps_plaintext_connections() {
    upgrade_twice_keeps_every_connection(false);
}

#[test]
fn a_live_upgrade_twice_keeps_tls_connections() {
    upgrade_twice_keeps_every_connection(true);
}

#[test]
fn a_new_binary_that_refuses_leaves_the_old_one_serving() {
    old_one_serves_on(
        (shards::upgrade::TEST_HANDOVER_VERSION_ENV, "99"),
        "hand-over version",
    );
}

#[test]
fn a_new_process_that_dies_before_answering_leaves_the_old_one_serving() {
    old_one_serves_on(
        (shards::upgrade::TEST_HANDOVER_DIE_ENV, "1"),
        "did not take over",
    );
}

/// With the test hook `env` set, an upgrade fails and the log says `why`; the old process
/// takes every connection back and serves on.
fn old_one_serves_on(env: (&str, &str), why: &str) {
    let mut server = Box::start(false, &[env]);
    let (pa, pb) = (
        phones_on(0, 2, 1, 950).remove(0),
        phones_on(1, 2, 1, 950).remove(0),
    );
    let mut a = server.client();
    let mut b = server.client();
    a.load_test_login(&pa);
    b.load_test_login(&pb);
    let before = send(&mut a, &mut b, &pb, 1, "before");
    signal(server.child.id() as i32, libc::SIGUSR2);
    let line = server.wait_for("taking every connection back");
    assert!(line.contains(why), "{line}");
    server.wait_for("upgrade: called off; serving on");
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the old process serves on"
    );
    ping(&mut a, 1);
    ping(&mut b, 2);
    ack(&mut a, &mut b, before);
    let after = send(&mut a, &mut b, &pb, 2, "after");
    ack(&mut a, &mut b, after);
    signal(server.child.id() as i32, libc::SIGTERM);
    assert!(server.child.wait().unwrap().success());
}

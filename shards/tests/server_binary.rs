//! The `switchboard` binary: starts on the flags, answers over TLS with its dev certificate,
//! exits 0 on SIGTERM after closing its connections, and fails at start with one clear line.

mod support;

use std::process::Command;

use proto::v1::{client_frame, server_frame, Ping};

#[test]
fn serves_tls_and_stops_cleanly_on_sigterm() {
    let data = testkit::temp_dir("bin");
    let (mut child, addr) =
        support::spawn_switchboard(&data, &["--shards", "2", "--admin", "127.0.0.1:0"]);
    let cert = engine::tls::dev_cert_path(&shards::server::tls_dir(&data));
    let mut c = support::Client::tls(addr, &cert);
    c.send(client_frame::Kind::Ping(Ping { nonce: 42 }));
    assert!(matches!(c.recv(), server_frame::Kind::Pong(p) if p.nonce == 42));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert!(c.is_closed(), "connections are closed on shutdown");
}

#[test]
fn taken_port_is_one_clear_line_and_exit_1() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--listen", &addr.to_string(), "--no-tls", "--no-admin"])
        .arg("--data-dir")
        .arg(testkit::temp_dir("bin-taken"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("switchboard: error: cannot listen on"),
        "{err}"
    );
}

#[test]
fn a_load_test_secret_flag_is_one_clear_line_and_exit_1() {
    // A flag is readable by every local user in /proc/PID/cmdline (issue 22, item 10).
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--no-tls", "--no-admin", "--load-test-secret", "hunter2"])
        .arg("--data-dir")
        .arg(testkit::temp_dir("bin-secret-flag"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("switchboard: error: bad setting: --load-test-secret is refused"),
        "{err}"
    );
    assert!(err.contains(shards::config::LOAD_TEST_SECRET_ENV), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn taken_admin_port_is_one_clear_line_and_exit_1() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = held.local_addr().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--listen", "127.0.0.1:0", "--no-tls", "--no-pin"])
        .args(["--admin", &admin.to_string()])
        .arg("--data-dir")
        .arg(testkit::temp_dir("bin-admin-taken"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with(&format!(
            "switchboard: error: cannot serve the admin endpoint on {admin}"
        )),
        "{err}"
    );
}

#[test]
fn bad_certificate_is_one_clear_line_and_exit_1() {
    let dir = testkit::temp_dir("bin-badcert");
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--listen", "127.0.0.1:0", "--no-admin"])
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&cert)
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("switchboard: error: TLS"), "{err}");
    assert!(err.contains("cert.pem"), "names the file: {err}");
}

#[test]
fn data_written_by_other_shard_count_is_refused_or_adopted() {
    let data = testkit::temp_dir("bin-layout");
    let (mut first, line) =
        support::spawn_until_listening(&data, &["--shards", "3", "--no-tls", "--no-admin"]);
    assert!(line.contains("shards=3"), "{line}");
    first.kill().unwrap();
    first.wait().unwrap();

    // An explicit different count would look for every user on the wrong shard: refused.
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-tls",
            "--no-pin",
            "--no-admin",
        ])
        .args(["--shards", "2", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("switchboard: error: data directory") && last.contains("--shards 3"),
        "{err}"
    );

    // No count given (this machine's CPU count is the default): the data's count is used.
    let (mut again, line) = support::spawn_until_listening(&data, &["--no-tls", "--no-admin"]);
    assert!(line.contains("shards=3"), "{line}");
    again.kill().unwrap();
    again.wait().unwrap();
}

#[test]
fn the_default_relative_data_dir_works_from_any_working_directory() {
    // The README's start command: no --data-dir, so ./switchboard-data, a relative path.
    let cwd = testkit::temp_dir("relative");
    let mut cmd = support::switchboard_command(&["--no-admin", "--no-tls", "--shards", "2"]);
    cmd.env(shards::config::LOAD_TEST_SECRET_ENV, "farm-secret")
        .current_dir(&cwd);
    let (mut child, line) = support::listening(cmd);
    let addr = shards::server::listening_addr(&line).unwrap();
    // A message to an offline user is acked only once its record is durable: the logs of
    // both shards must have opened under the relative path.
    let mut b = support::Client::plain(addr);
    b.load_test_login("+15557200002");
    drop(b);
    let mut a = support::Client::plain(addr);
    a.load_test_login("+15557200001");
    a.send_text("+15557200002", 1, "hi");
    assert!(matches!(a.recv(), server_frame::Kind::ServerAck(_)));
    assert!(cwd.join("switchboard-data/shard-0.log").exists());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn an_immediate_restart_after_sigkill_gets_its_port_back() {
    // What a supervisor does (`Restart=always`): kill -9, start again on the same port and
    // data directory at once.
    let data = testkit::temp_dir("restart");
    let (mut first, addr) = support::spawn_binary(&data, &["--no-tls"]);
    let mut c = support::Client::plain(addr);
    c.send(client_frame::Kind::Ping(Ping { nonce: 1 }));
    assert!(matches!(c.recv(), server_frame::Kind::Pong(_)));
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let listen = addr.to_string();
    let (mut second, again) =
        support::spawn_binary(&data, &["--no-tls", "--listen", listen.as_str()]);
    assert_eq!(again, addr);
    let mut c = support::Client::plain(again);
    c.send(client_frame::Kind::Ping(Ping { nonce: 2 }));
    assert!(matches!(c.recv(), server_frame::Kind::Pong(_)));
    second.kill().unwrap();
    second.wait().unwrap();
}

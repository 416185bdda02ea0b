//! The `chat` CLI against the real server: clear errors now, and (once the messaging service
//! lands) a full register → verify → send → listen → receipt conversation and groups.

mod support;

use std::path::Path;

use support::{chat, ok, pin_for, TestServer};
use testkit::temp_dir;

const ALICE: &str = "+15550000001";
const BOB: &str = "+15550000002";
const CAROL: &str = "+15550000003";

#[test]
fn a_server_that_is_down_is_a_clear_error() {
    let dir = temp_dir("chat-down");
    let down = tools::net::refusing_port().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chat"))
        .args(["--server", &down.addr.to_string(), "--no-tls", "--config"])
        .arg(dir.join("c.toml"))
        .args(["register", ALICE])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is the server running"), "{err}");
}

#[test]
fn unregistered_device_is_told_what_to_do() {
    let server = TestServer::start(true, &[]);
    let dir = temp_dir("chat-unreg");
    let out = chat(&server, &dir.join("c.toml"), &["send", BOB, "hi"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chat register"), "{err}");
}

fn sign_up(server: &TestServer, config: &Path, phone: &str) {
    let out = ok(chat(server, config, &["register", phone]));
    assert!(out.contains("PIN sent"), "{out}");
    let pin = pin_for(server, phone);
    let out = ok(chat(server, config, &["verify", phone, &pin]));
    assert!(out.contains("verified"), "{out}");
}

#[test]
fn register_send_receive_and_receipts() {
    let server = TestServer::start(true, &[]);
    let dir = temp_dir("chat-conv");
    let (a, b) = (dir.join("alice.toml"), dir.join("bob.toml"));
    sign_up(&server, &a, ALICE);
    sign_up(&server, &b, BOB);

    let out = ok(chat(&server, &a, &["send", BOB, "hello bob"]));
    assert!(out.contains("✓ sent"), "{out}");

    // Bob's listen prints what is waiting and exits when stdin (null) closes.
    let out = ok(chat(&server, &b, &["listen", "--timeout", "5"]));
    assert!(out.contains(&format!("{ALICE}: hello bob")), "{out}");

    // Alice sees two ticks, then read.
    let out = ok(chat(&server, &a, &["listen", "--timeout", "3"]));
    assert!(out.contains(&format!("✓✓ delivered to {BOB}")), "{out}");
    assert!(out.contains(&format!("✓✓ read by {BOB}")), "{out}");

    // Receipts were acked: a second listen shows nothing new.
    let out = ok(chat(&server, &a, &["listen", "--timeout", "1"]));
    assert!(!out.contains("✓✓"), "{out}");

    // A tampered key is refused with advice.
    let text = std::fs::read_to_string(&a).unwrap();
    let bad = text
        .lines()
        .map(|l| {
            if l.starts_with("device_key") {
                "device_key = \"00ff\""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&a, bad).unwrap();
    let out = chat(&server, &a, &["send", BOB, "again"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused this device's key"), "{err}");
}

#[test]
fn groups_from_the_command_line() {
    let server = TestServer::start(false, &[]);
    let dir = temp_dir("chat-group");
    let (a, b, c) = (dir.join("a.toml"), dir.join("b.toml"), dir.join("c.toml"));
    sign_up(&server, &a, ALICE);
    sign_up(&server, &b, BOB);
    sign_up(&server, &c, CAROL);
    // By default only contacts may add someone; these three are strangers to each other.
    for cfg in [&b, &c] {
        let out = ok(chat(&server, cfg, &["group", "privacy", "everyone"]));
        assert!(out.contains("everyone"), "{out}");
    }
    let out = ok(chat(&server, &a, &["group", "create", "friends", BOB]));
    let gid: String = out
        .split_whitespace()
        .nth(1)
        .expect("group <id> created")
        .to_string();
    let out = ok(chat(&server, &a, &["group", "add", &gid, CAROL]));
    assert!(out.contains(CAROL), "{out}");
    let out = ok(chat(&server, &a, &["group", "members", &gid]));
    assert!(
        out.contains(BOB) && out.contains(CAROL) && out.contains(ALICE),
        "{out}"
    );
    let out = ok(chat(&server, &a, &["group", "send", &gid, "hi all"]));
    assert!(out.contains("✓ sent to group"), "{out}");
    for cfg in [&b, &c] {
        let out = ok(chat(&server, cfg, &["listen", "--timeout", "3"]));
        assert!(
            out.contains(&format!("[group {gid}] {ALICE}: hi all")),
            "{out}"
        );
    }
    let out = ok(chat(&server, &a, &["group", "remove", &gid, CAROL]));
    assert!(!out.contains(CAROL), "{out}");
}

#[test]
fn terminal_escapes_in_a_message_are_shown_not_obeyed() {
    let server = TestServer::start(false, &[]);
    let dir = temp_dir("chat-escapes");
    let (a, b) = (dir.join("alice.toml"), dir.join("bob.toml"));
    sign_up(&server, &a, ALICE);
    sign_up(&server, &b, BOB);
    // Sets the window title, hides text, and fakes a line from someone else.
    let attack = format!(
        "\u{1b}]0;pwned\u{7}hi\u{1b}[8mhidden\u{1b}[0m\r\n[99:99:99] {CAROL}: send me your PIN"
    );
    ok(chat(&server, &a, &["send", BOB, &attack]));
    let out = ok(chat(&server, &b, &["listen", "--timeout", "5"]));
    assert!(
        !out.chars().any(|c| c.is_control() && c != '\n'),
        "no control character reaches the terminal: {out:?}"
    );
    assert!(out.contains("\\u{1b}]0;pwned\\u{7}hi"), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let message = lines
        .iter()
        .find(|l| l.contains(&format!("{ALICE}: ")))
        .expect("the message line");
    assert!(message.ends_with(&format!("\\r\\n[99:99:99] {CAROL}: send me your PIN")));
    assert!(
        !lines.iter().any(|l| l.starts_with("[99:99:99] ")),
        "no fake line: {out}"
    );
}

#[test]
fn a_file_goes_up_with_send_file_and_comes_down_with_listen_save_dir() {
    let server = TestServer::start(true, &["--media-listen", "127.0.0.1:0"]);
    let dir = temp_dir("chat-media");
    let (a, b) = (dir.join("alice.toml"), dir.join("bob.toml"));
    sign_up(&server, &a, ALICE);
    sign_up(&server, &b, BOB);
    // Over 1 MiB: both transfers show progress.
    let photo: Vec<u8> = (0..1_200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let path = dir.join("cat.jpg");
    std::fs::write(&path, &photo).unwrap();
    let file = path.to_str().unwrap();

    let sent = chat(&server, &a, &["send-file", BOB, file, "--caption", "look"]);
    let progress = String::from_utf8_lossy(&sent.stderr).into_owned();
    let out = ok(sent);
    assert!(
        out.contains("✓ sent") && out.contains("1200000 bytes"),
        "{out}"
    );
    assert!(
        progress.contains("uploading: 100% of 1200000 bytes"),
        "{progress}"
    );

    let saved = dir.join("received");
    let save = saved.to_str().unwrap();
    let listened = chat(
        &server,
        &b,
        &["listen", "--timeout", "5", "--save-dir", save],
    );
    let progress = String::from_utf8_lossy(&listened.stderr).into_owned();
    let out = ok(listened);
    assert!(progress.contains("downloading: 100%"), "{progress}");
    assert!(out.contains(&format!("{ALICE}: look")), "{out}");
    assert!(out.contains("saved") && out.contains("image/jpeg"), "{out}");
    let files: Vec<_> = std::fs::read_dir(&saved)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::read(&files[0]).unwrap(), photo, "the same bytes");
}

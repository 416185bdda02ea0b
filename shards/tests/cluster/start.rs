//! A box that cannot reach NATS at start: one line and exit 1, or with `--cluster-optional`
//! it serves alone and says so.

use std::time::Duration;

use proto::v1::{client_frame, server_frame, ErrorCode};

use crate::nats::Box;
use crate::support::{self, V};

/// A "NATS server" that never answers: a listener nobody accepts from, held by the test
/// so that no other test's server can take its port meanwhile.
pub fn dead_nats() -> (std::net::TcpListener, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, format!("nats://127.0.0.1:{port}"))
}

/// A one-shard plaintext box `id` without admin, joined to `url`, on a new data directory
/// named after `tag`, with `extra` flags.
pub fn cluster_box_command(
    url: &str,
    id: &str,
    tag: &str,
    extra: &[&str],
) -> std::process::Command {
    let mut args = vec!["--shards", "1", "--no-tls", "--no-admin"];
    args.extend(extra);
    args.extend([
        "--cluster",
        url,
        "--box-id",
        id,
        "--advertise",
        "a.test:5222",
    ]);
    let mut cmd = support::switchboard_command(&args);
    cmd.arg("--data-dir").arg(testkit::temp_dir(tag));
    cmd
}

#[test]
fn a_box_that_cannot_reach_nats_says_so_in_one_line_and_exits_1() {
    let (_silent, url) = dead_nats();
    let cmd = cluster_box_command(&url, "a", "box-nonats", &[]);
    let error = exits_1_saying_one_error(cmd, "a box without NATS");
    assert!(
        error.contains("cannot reach NATS") && error.contains(&url),
        "{error}"
    );
}

/// Runs `cmd` (a box that must not start): it exits 1, and exactly one line of its stderr
/// is an error; returns that line.
pub fn exits_1_saying_one_error(mut cmd: std::process::Command, what: &str) -> String {
    let mut child = cmd.spawn().unwrap();
    let (status, stderr) = testkit::exit_and_stderr(&mut child, Duration::from_secs(30), what);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0].to_string()
}

#[test]
fn with_cluster_optional_a_box_alone_serves_logins_and_refuses_sign_ups() {
    let (_silent, url) = dead_nats();
    let b = Box::start(&url, "a", "a.test:5222", &["--cluster-optional"]);
    b.wait_stat("cluster_alone", 1);
    let (status, body) = support::admin::get(b.admin, "/readyz");
    assert_eq!(status, 200, "it serves its own users");
    assert!(body.starts_with("ready (alone"), "{body}");
    let mut c = b.client();
    c.send(client_frame::Kind::Register(proto::v1::Register {
        protocol_version: V,
        phone: "+15553000001".into(),
    }));
    let e = c.expect_error();
    assert_eq!(e.code, ErrorCode::ClusterUnavailable as i32);
    // A login is served here, as a single box serves it (this number has no account).
    c.send(client_frame::Kind::Login(proto::v1::Login {
        protocol_version: V,
        phone: "+15553000001".into(),
        device_key: vec![7; 32],
    }));
    match c.recv() {
        server_frame::Kind::Error(e) => {
            assert_ne!(e.code, ErrorCode::ClusterUnavailable as i32, "{e:?}")
        }
        other => panic!("expected the single box's answer, got {other:?}"),
    }
}

/// `switchboard cluster status` lists the live boxes with their advertised addresses and
/// load; without NATS it says so in one line and exits 1.
#[test]
fn cluster_status_lists_the_boxes_and_their_load() {
    let nats = crate::nats::Nats::start();
    let (a, _b) = crate::placement::two_boxes(&nats);
    let mut phone = a.client();
    phone.load_test_login(&crate::placement::phones_homed_on("a", 1, 4_500_000)[0]);
    // The connection shows in box a's next lease renewal.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let text = loop {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["cluster", "status", "--cluster", &nats.url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let a_line = text.lines().find(|l| l.starts_with("a ")).unwrap_or("");
        if a_line.split_whitespace().last() == Some("1") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "box a never showed 1 connection:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(text.contains(crate::placement::ADV_A), "{text}");
    assert!(text.contains(crate::placement::ADV_B), "{text}");
    assert!(text.contains("2 box(es) live"), "{text}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["cluster", "status", "--cluster", "nats://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot reach NATS"), "{err}");
}

/// NATS servers that require a login: a box without credentials says so in one line and
/// exits 1; with `SWITCHBOARD_NATS_USER` / `SWITCHBOARD_NATS_PASSWORD` in its environment
/// (never on its command line) it joins, and `switchboard cluster status` with the same
/// environment lists it.
#[test]
fn a_box_logs_in_to_nats_with_credentials_from_its_environment() {
    use shards::cluster::nats_auth::{PASSWORD_ENV, USER_ENV};
    const PASSWORD: &str = "s3cret-for-boxes";
    let nats = testkit::nats::NatsCluster::start_with_user("auth", 1, "boxes", PASSWORD);
    let url = nats.url();
    let cmd = cluster_box_command(&url, "a", "box-noauth", &[]);
    let error = exits_1_saying_one_error(cmd, "a box without a login");
    assert!(error.to_lowercase().contains("authorization"), "{error}");

    let b = {
        let mut cmd = cluster_box_command(&url, "b", "box-auth", &[]);
        cmd.env(USER_ENV, "boxes").env(PASSWORD_ENV, PASSWORD);
        support::KillOnDrop(support::listening(cmd).0)
    };
    let login = [
        (USER_ENV, "boxes".as_ref()),
        (PASSWORD_ENV, PASSWORD.as_ref()),
    ];
    assert_status_lists(&url, &login, "b");
    drop(b); // the box goes before its NATS
}

/// `switchboard cluster status` with `env` (how it logs in to NATS) succeeds and lists box
/// `id` (its lease, read back from the members bucket).
fn assert_status_lists(url: &str, env: &[(&str, &std::ffi::OsStr)], id: &str) {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["cluster", "status", "--cluster", url])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{out}");
    assert!(out.contains(&format!("{id} ")), "{out}");
}

/// Each box of a cluster has a number of its own (`box_number.rs`), named in every id it
/// issues — here a new account's user id — and kept in its data directory across restarts;
/// a data directory whose number another box holds does not start, in one line.
#[test]
fn each_box_issues_ids_under_a_number_of_its_own_kept_across_restarts() {
    use crate::placement::{phones_homed_on, two_boxes, ADV_B};
    const BOX_SHIFT: u32 = messaging::state::home::ID_BOX_SHIFT;
    let nats = crate::nats::Nats::start();
    let (a, mut b) = two_boxes(&nats);
    let kept = |data: &std::path::Path| -> u64 {
        let text = std::fs::read_to_string(data.join("box-number")).unwrap();
        text.trim().parse().unwrap()
    };
    let user_id = |at: &Box, phone: &str| at.client().load_test_logged_in(phone).user_id;
    let (number_a, number_b) = (kept(&a.data), kept(&b.data));
    assert_ne!(number_a, number_b);
    assert!([number_a, number_b].iter().all(|n| (1..=63).contains(n)));
    let on_a = phones_homed_on("a", 1, 4_700_000);
    let on_b = phones_homed_on("b", 2, 4_700_000);
    assert_eq!(user_id(&a, &on_a[0]) >> BOX_SHIFT, number_a);
    assert_eq!(user_id(&b, &on_b[0]) >> BOX_SHIFT, number_b);

    b.child.kill().unwrap(); // SIGKILL
    b.child.wait().unwrap();
    let b = Box::start_in(b.data.clone(), &nats.url, "b", ADV_B, &[]);
    assert_eq!(kept(&b.data), number_b, "kept across the restart");
    assert_eq!(user_id(&b, &on_b[1]) >> BOX_SHIFT, number_b);

    // A copy of box a's data directory under another box id.
    let copy = testkit::temp_dir("box-number-copy");
    std::fs::write(copy.join("box-number"), format!("{number_a}\n")).unwrap();
    let args = [
        "--shards",
        "1",
        "--no-tls",
        "--no-admin",
        "--cluster",
        &nats.url,
        "--box-id",
        "c",
        "--advertise",
        "c.test:5222",
    ];
    let mut cmd = support::switchboard_command(&args);
    cmd.arg("--data-dir").arg(&copy);
    let error = exits_1_saying_one_error(cmd, "a box with another box's number");
    assert!(
        error.contains(&format!("box number {number_a} belongs to box \"a\"")),
        "{error}"
    );
}

/// An operator-mode NATS (JWTs, as `nsc` makes them): a box with the user's credentials
/// file in `SWITCHBOARD_NATS_CREDS` joins and uses JetStream (its lease is in the members
/// bucket: `cluster status` with the same file lists it); without it, one line and exit 1.
#[test]
fn a_box_logs_in_to_an_operator_mode_nats_with_a_credentials_file() {
    use shards::cluster::nats_auth::CREDS_ENV;
    let trust = crate::nats_jwt::operator_account_user();
    let nats = testkit::nats::NatsCluster::start_with_operator("jwt", &trust.server_block);
    let url = nats.url();
    let creds = testkit::temp_dir("creds").join("box.creds");
    std::fs::write(&creds, &trust.creds).unwrap();

    let cmd = cluster_box_command(&url, "a", "box-nocreds", &[]);
    let error = exits_1_saying_one_error(cmd, "a box without credentials");
    assert!(error.to_lowercase().contains("authorization"), "{error}");

    let b = {
        let mut cmd = cluster_box_command(&url, "b", "box-creds", &[]);
        cmd.env(CREDS_ENV, &creds);
        support::KillOnDrop(support::listening(cmd).0)
    };
    assert_status_lists(&url, &[(CREDS_ENV, creds.as_os_str())], "b");
    drop(b); // the box goes before its NATS
}

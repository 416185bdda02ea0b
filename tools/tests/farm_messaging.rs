//! The farm's message mix against the real server: every acked message delivered exactly
//! once, receipts flowing back, groups, and a storm in the middle of traffic.
//!
//! They run against the real messaging service, started in-process with a load-test secret.

mod support;

use support::{args, every_due_send_accounted, run_farm, TestServer};

const SECRET: &str = "farm-test-secret";

fn messaging_server(tls: bool) -> TestServer {
    TestServer::start(tls, &["--load-test-secret", SECRET])
}

fn check_exactly_once(r: &serde_json::Value, conns: u64) {
    every_due_send_accounted(r);
    assert_eq!(r["connections_established"], conns, "{r:#}");
    assert_eq!(r["login_errors"], 0, "{r:#}");
    let sent = r["messages_sent"].as_u64().unwrap();
    let acked = r["server_acked"].as_u64().unwrap();
    let errors = r["send_errors"].as_u64().unwrap();
    assert!(sent > 0, "{r:#}");
    assert_eq!(acked + errors, sent, "every send answered: {r:#}");
    assert_eq!(r["lost"], 0, "{r:#}");
    assert_eq!(r["duplicates"], 0, "{r:#}");
    assert_eq!(r["delivered"].as_u64().unwrap(), acked, "{r:#}");
    assert_eq!(r["exactly_once"], true, "{r:#}");
    // Group copies are in the ledger too, per member.
    assert_eq!(r["group"]["lost"], 0, "{r:#}");
    assert_eq!(r["group"]["misdelivered"], 0, "{r:#}");
    // Group sends are timed too: one ack per group send, one delivery per member copy.
    let group = |k: &str| r["group"][k].as_u64().unwrap_or(0);
    for (which, expected) in [
        ("ack", acked + group("acked")),
        (
            "delivery",
            acked + group("delivered") + r["sends_skipped"].as_u64().unwrap(),
        ),
    ] {
        assert_eq!(
            r["latency_us"][which]["count"].as_u64().unwrap(),
            expected,
            "{which}: {r:#}"
        );
        assert!(r["latency_us"][which]["p50"].as_u64().unwrap() > 0);
    }
    let receipts = r["counters"]["receipts_delivered"].as_u64().unwrap();
    assert!(
        receipts > 0 && receipts <= acked + group("delivered"),
        "DELIVERED receipts: {r:#}"
    );
}

#[test]
fn steady_tls_two_procs_zipf_every_acked_message_once() {
    let server = messaging_server(true);
    let mut a = args(&[
        "--server",
        &server.addr.to_string(),
        "--conns",
        "100",
        "--procs",
        "2",
        "--source-ips",
        "127.0.0.10-127.0.0.12",
        "--mode",
        "steady",
        "--rate",
        "300",
        "--duration",
        "3",
        "--peers",
        "zipf",
        "--load-test-secret",
        SECRET,
        "--read-ratio",
        "1.0",
    ]);
    a.extend(server.tls_args());
    let (out, r) = run_farm(&a);
    assert!(out.status.success(), "exit {:?}: {r:#}", out.status);
    check_exactly_once(&r, 100);
    assert!(
        r["counters"]["receipts_read"].as_u64().unwrap() > 0,
        "{r:#}"
    );
}

#[test]
fn steady_plaintext_uniform_with_groups() {
    let server = messaging_server(false);
    let (out, r) = run_farm(&args(&[
        "--server",
        &server.addr.to_string(),
        "--conns",
        "64",
        "--procs",
        "1",
        "--threads",
        "2",
        "--mode",
        "steady",
        "--rate",
        "200",
        "--duration",
        "2",
        "--group-ratio",
        "0.2",
        "--group-size",
        "4",
        "--load-test-secret",
        SECRET,
    ]));
    assert!(out.status.success(), "{r:#}");
    check_exactly_once(&r, 64);
    let g = &r["group"];
    assert_eq!(g["created"], 16, "{r:#}");
    assert!(g["acked"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(g["delivered"], g["expected"], "{r:#}");
}

#[test]
fn storm_in_the_middle_of_traffic_loses_nothing() {
    let server = messaging_server(true);
    let mut a = args(&[
        "--server",
        &server.addr.to_string(),
        "--conns",
        "80",
        "--procs",
        "2",
        "--source-ips",
        "127.0.0.13-127.0.0.14",
        "--mode",
        "storm",
        "--rate",
        "200",
        "--duration",
        "3",
        "--storm-at",
        "1.5",
        "--load-test-secret",
        SECRET,
    ]);
    a.extend(server.tls_args());
    let (out, r) = run_farm(&a);
    assert!(out.status.success(), "{r:#}");
    assert_eq!(r["storm"]["drops"], 80, "{r:#}");
    assert_eq!(r["storm"]["reconnected"], 80, "{r:#}");
    // Sends whose ServerAck died with the connection are neither acked nor lost; every
    // acked one must arrive once (redeliveries after the drop are allowed and deduped).
    assert_eq!(r["lost"], 0, "{r:#}");
    assert_eq!(r["duplicates"], 0, "{r:#}");
    assert_eq!(r["exactly_once"], true, "{r:#}");
}

#[test]
fn wrong_secret_is_refused_as_load_test_login() {
    let server = messaging_server(false);
    let (_, r) = run_farm(&args(&[
        "--server",
        &server.addr.to_string(),
        "--conns",
        "5",
        "--load-test-secret",
        "wrong",
        "--duration",
        "0.2",
        "--drain",
        "0.5",
    ]));
    assert_eq!(r["connections_established"], 0, "{r:#}");
    assert_eq!(r["login_errors"], 5, "{r:#}");
}

#[test]
fn media_pairs_upload_send_and_download_beside_the_text() {
    let server = TestServer::start(
        true,
        &[
            "--load-test-secret",
            SECRET,
            "--media-listen",
            "127.0.0.1:0",
        ],
    );
    let mut a = args(&[
        "--server",
        &server.addr.to_string(),
        "--conns",
        "20",
        "--mode",
        "steady",
        "--rate",
        "100",
        "--duration",
        "2",
        "--load-test-secret",
        SECRET,
        "--media-mb-s",
        "4",
        "--media-pairs",
        "2",
    ]);
    a.extend(server.tls_args());
    let (out, r) = run_farm(&a);
    assert!(out.status.success(), "exit {:?}: {r:#}", out.status);
    check_exactly_once(&r, 20);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("media: "))
        .unwrap_or_else(|| panic!("no media line: {stdout}"));
    let field = |k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{k}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(field("errors"), 0.0, "{line}");
    assert!(field("uploads") >= 2.0, "{line}");
    assert_eq!(
        field("uploads"),
        field("downloads"),
        "every object came down: {line}"
    );
}

//! The farm's message paths against a small in-memory fake of the messaging protocol
//! (`support::fake`), so the mix, receipts, groups, storm handling and the exactly-once
//! ledger are exercised now; `farm_messaging.rs` runs the same checks against the real
//! server once it lands.

mod support;

use support::{args, fake, run_farm};

#[test]
fn steady_two_procs_every_acked_message_once() {
    let addr = fake::start();
    let (out, r) = run_farm(&args(&[
        "--server",
        &addr.to_string(),
        "--conns",
        "60",
        "--procs",
        "2",
        "--source-ips",
        "127.0.0.20-127.0.0.21",
        "--mode",
        "steady",
        "--rate",
        "300",
        "--duration",
        "2",
        "--peers",
        "zipf",
        "--load-test-secret",
        "x",
        "--read-ratio",
        "1.0",
    ]));
    assert!(out.status.success(), "{r:#}");
    assert_eq!(r["connections_established"], 60, "{r:#}");
    let acked = r["server_acked"].as_u64().unwrap();
    assert!(acked > 300, "{r:#}");
    assert_eq!(r["messages_sent"], acked, "{r:#}");
    assert_eq!(r["delivered"], acked, "{r:#}");
    assert_eq!(r["lost"], 0);
    assert_eq!(r["duplicates"], 0);
    assert_eq!(r["exactly_once"], true);
    assert_eq!(r["latency_us"]["ack"]["count"], acked);
    assert_eq!(r["latency_us"]["delivery"]["count"], acked);
    assert_eq!(r["counters"]["receipts_delivered"], acked, "{r:#}");
    assert_eq!(r["counters"]["receipts_read"], acked, "{r:#}");
}

#[test]
fn groups_deliver_to_every_other_member() {
    let addr = fake::start();
    let (out, r) = run_farm(&args(&[
        "--server",
        &addr.to_string(),
        "--conns",
        "32",
        "--threads",
        "2",
        "--mode",
        "steady",
        "--rate",
        "200",
        "--duration",
        "1.5",
        "--group-ratio",
        "0.3",
        "--group-size",
        "4",
        "--load-test-secret",
        "x",
    ]));
    assert!(out.status.success(), "{r:#}");
    let g = &r["group"];
    assert_eq!(g["created"], 8, "{r:#}");
    assert!(g["acked"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(g["expected"], g["acked"].as_u64().unwrap() * 3, "{r:#}");
    assert_eq!(g["delivered"], g["expected"], "{r:#}");
    assert_eq!(r["exactly_once"], true, "{r:#}");
}

#[test]
fn storm_mid_traffic_keeps_acked_messages() {
    let addr = fake::start();
    let (out, r) = run_farm(&args(&[
        "--server",
        &addr.to_string(),
        "--conns",
        "40",
        "--procs",
        "2",
        "--mode",
        "storm",
        "--rate",
        "200",
        "--duration",
        "2",
        "--storm-at",
        "1",
        "--load-test-secret",
        "x",
    ]));
    assert!(out.status.success(), "{r:#}");
    assert_eq!(r["storm"]["drops"], 40, "{r:#}");
    assert_eq!(r["storm"]["reconnected"], 40, "{r:#}");
    assert!(r["server_acked"].as_u64().unwrap() > 100, "{r:#}");
    assert!(r["delivered"].as_u64().unwrap() > 100, "{r:#}");
    assert_eq!(r["lost"], 0, "{r:#}");
    assert_eq!(r["duplicates"], 0, "{r:#}");
    assert_eq!(r["exactly_once"], true, "{r:#}");
}

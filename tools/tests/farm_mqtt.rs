//! The farm speaking MQTT 3.1.1 to a real mosquitto: every user subscribes to its own topic
//! and publishes to its peers' topics; the same ledger and histograms as for Switchboard
//! must account for every message.
//!
//! Each test starts its own mosquitto on a free loopback port (support::broker); without
//! mosquitto installed they skip with a printed reason, except under CI=true where they fail.

mod support;

use support::{args, broker, broker_with, every_due_send_accounted, run_farm, TestServer};
use tools::brokers::{BrokerKind, BrokerTls};

fn steady(addr: &str, qos: &str) -> Vec<String> {
    args(&[
        "--proto",
        "mqtt",
        "--qos",
        qos,
        "--server",
        addr,
        "--conns",
        "60",
        "--threads",
        "2",
        "--mode",
        "steady",
        "--rate",
        "400",
        "--duration",
        "2",
        "--ping-interval",
        "0.5",
    ])
}

#[test]
fn qos1_every_published_message_is_pubacked_and_delivered_once() {
    let Some(b) = broker(BrokerKind::Mosquitto) else {
        return;
    };
    let (out, r) = run_farm(&steady(&b.addr.to_string(), "1"));
    assert!(out.status.success(), "exit {:?}: {r:#}", out.status);
    every_due_send_accounted(&r);
    assert_eq!(r["connections_established"], 60, "{r:#}");
    assert_eq!(r["connect_errors"], 0, "{r:#}");
    let sent = r["messages_sent"].as_u64().unwrap();
    assert!(sent > 400, "about 800 due in 2 s at 400/s: {r:#}");
    assert_eq!(r["server_acked"], sent, "one PUBACK per PUBLISH: {r:#}");
    assert_eq!(r["delivered"], sent, "{r:#}");
    assert_eq!(r["lost"], 0, "{r:#}");
    assert_eq!(r["duplicates"], 0, "{r:#}");
    assert_eq!(r["misdelivered"], 0, "{r:#}");
    assert_eq!(r["unanswered"], 0, "{r:#}");
    assert_eq!(r["exactly_once"], true, "{r:#}");
    assert_eq!(r["counters"]["foreign_messages"], 0, "{r:#}");
    assert_eq!(r["latency_us"]["ack"]["count"], sent, "{r:#}");
    assert_eq!(r["latency_us"]["delivery"]["count"], sent, "{r:#}");
    assert!(r["latency_us"]["delivery"]["p50"].as_u64().unwrap() > 0);
    // Heartbeats are PINGREQ/PINGRESP: every answer matches a ping.
    let (pings, pongs) = (
        r["counters"]["pings"].as_u64().unwrap(),
        r["counters"]["pongs"].as_u64().unwrap(),
    );
    assert!(
        pongs > 0 && pongs <= pings,
        "pings {pings} pongs {pongs}: {r:#}"
    );
    assert_eq!(r["params"]["proto"], "mqtt");
}

#[test]
fn qos0_messages_count_as_accepted_when_written_and_arrive() {
    let Some(b) = broker(BrokerKind::Mosquitto) else {
        return;
    };
    let (out, r) = run_farm(&steady(&b.addr.to_string(), "0"));
    assert!(out.status.success(), "exit {:?}: {r:#}", out.status);
    every_due_send_accounted(&r);
    let sent = r["messages_sent"].as_u64().unwrap();
    assert!(sent > 400, "{r:#}");
    assert_eq!(r["server_acked"], sent, "{r:#}");
    assert_eq!(
        r["latency_us"]["ack"]["count"], 0,
        "QoS 0 has no acks to time: {r:#}"
    );
    // At this rate on loopback mosquitto drops nothing; a drop would show as lost.
    assert_eq!(r["delivered"], sent, "{r:#}");
    assert_eq!(r["lost"], 0, "{r:#}");
    assert_eq!(r["latency_us"]["delivery"]["count"], sent, "{r:#}");
}

#[test]
fn a_dead_broker_is_counted_as_connect_errors() {
    let Some(b) = broker(BrokerKind::Mosquitto) else {
        return;
    };
    let addr = b.addr.to_string();
    drop(b); // stopped: nothing listens there now
    let (out, r) = run_farm(&args(&[
        "--proto",
        "mqtt",
        "--server",
        &addr,
        "--conns",
        "5",
        "--mode",
        "idle",
        "--duration",
        "0",
        "--connect-attempts",
        "1",
    ]));
    assert!(out.status.success(), "{r:#}");
    assert_eq!(r["connections_established"], 0, "{r:#}");
    assert_eq!(r["connect_errors"], 5, "{r:#}");
}

#[test]
fn qos1_over_tls_with_the_dev_certificate() {
    // The server's dev certificate and key (the same dev CA the farm trusts for Switchboard).
    let server = TestServer::start(true, &[]);
    let tls = BrokerTls {
        cert: server.cert(),
        key: server.data_dir.join("tls").join(engine::tls::DEV_KEY_FILE),
    };
    let Some(b) = broker_with(BrokerKind::Mosquitto, Some(&tls)) else {
        return;
    };
    let mut a = steady(&b.addr.to_string(), "1");
    a.extend(server.tls_args());
    let (out, r) = run_farm(&a);
    assert!(out.status.success(), "exit {:?}: {r:#}", out.status);
    assert_eq!(r["connections_established"], 60, "{r:#}");
    let sent = r["messages_sent"].as_u64().unwrap();
    assert!(sent > 400, "{r:#}");
    assert_eq!(r["server_acked"], sent, "{r:#}");
    assert_eq!(r["delivered"], sent, "{r:#}");
    assert_eq!(r["exactly_once"], true, "{r:#}");
    // Plaintext against the TLS listener gets nowhere: the encryption is real.
    let (_, r) = run_farm(&args(&[
        "--proto",
        "mqtt",
        "--server",
        &b.addr.to_string(),
        "--conns",
        "2",
        "--mode",
        "idle",
        "--duration",
        "0",
        "--connect-attempts",
        "1",
        "--connect-timeout",
        "2",
    ]));
    assert_eq!(r["connections_established"], 0, "{r:#}");
}

#[test]
fn groups_are_refused_for_mqtt_and_nats() {
    for (proto, extra) in [
        ("mqtt", &["--group-ratio", "0.5"][..]),
        ("nats", &["--group-ratio", "0.5"][..]),
    ] {
        let mut a = args(&["--proto", proto, "--mode", "steady", "--conns", "4"]);
        a.extend(args(extra));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_farm"))
            .args(&a)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{proto} {extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("switchboard"), "{err}");
    }
}

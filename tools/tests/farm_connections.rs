//! The farm against the real server on loopback, connection modes only (these need nothing
//! beyond Ping/Pong): idle over TLS across processes and source addresses, plaintext, a
//! reconnect storm, a server that is down, and a login the server refuses. Each report is
//! checked against what was asked and, for idle, against the kernel's count of the server's
//! established sockets.

mod support;

use std::time::{Duration, Instant};

use support::{args, run_farm, server_side_established, TestServer};

#[test]
fn idle_over_tls_across_procs_and_source_ips() {
    let server = TestServer::start(true, &[]);
    let port = server.addr.port();
    let watcher = std::thread::spawn(move || {
        // Bounded: the farm runs ~5 s; watch for 20 s at most.
        let end = Instant::now() + Duration::from_secs(20);
        let mut max = 0;
        while Instant::now() < end {
            let farm_ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"].map(|s| s.parse().unwrap());
            max = max.max(server_side_established(port, &farm_ips));
            if max >= 200 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        max
    });
    let mut a = args(&[
        "--server",
        &server.addr.to_string(),
        "--conns",
        "200",
        "--procs",
        "2",
        "--threads",
        "2",
        "--source-ips",
        "127.0.0.2-127.0.0.4",
        "--connect-rate",
        "2000",
        "--mode",
        "idle",
        "--duration",
        "2",
        "--ping-interval",
        "0.5",
    ]);
    a.extend(server.tls_args());
    let (out, r) = run_farm(&a);
    assert!(
        out.status.success(),
        "farm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(r["connections_requested"], 200);
    assert_eq!(r["connections_established"], 200, "{r:#}");
    assert_eq!(r["connect_errors"], 0, "{r:#}");
    assert_eq!(r["connect_attempts"], 200);
    assert_eq!(r["worker_failures"], 0);
    assert_eq!(r["params"]["procs"], 2);
    assert_eq!(r["params"]["source_ips"].as_array().unwrap().len(), 3);
    assert!(r["params"]["tls_ca"].is_string());
    assert!(
        r["counters"]["pongs"].as_u64().unwrap() >= 200,
        "heartbeats answered"
    );
    assert!(r["latency_us"]["connect"]["count"].as_u64().unwrap() == 200);
    assert_eq!(
        watcher.join().unwrap(),
        200,
        "server-side established sockets"
    );
}

#[test]
fn idle_plaintext_in_one_process_matches_the_servers_own_counters() {
    let server = TestServer::start(false, &["--admin", "127.0.0.1:0"]);
    let (out, r) = run_farm(&args(&[
        "--server",
        &server.addr.to_string(),
        "--conns",
        "50",
        "--procs",
        "1",
        "--mode",
        "idle",
        "--duration",
        "0.5",
    ]));
    assert!(out.status.success());
    assert_eq!(r["connections_established"], 50, "{r:#}");
    assert_eq!(r["connect_errors"], 0);
    assert!(r["params"]["tls_ca"].is_null());
    // The server's own counters agree: one accept per connection the farm reports, and at
    // least its login frame from each. Stats are published once a second.
    let sum = |k: &str| -> u64 {
        server
            .shard_stats()
            .iter()
            .map(|s| s[k].as_u64().unwrap_or(0))
            .sum()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while sum("accepts") < 50 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        sum("accepts"),
        r["connect_attempts"].as_u64().unwrap(),
        "server accepts vs farm"
    );
    assert!(sum("frames_in") >= 50);
}

#[test]
fn storm_drops_and_reconnects_everyone() {
    let server = TestServer::start(true, &[]);
    let mut a = args(&[
        "--server",
        &server.addr.to_string(),
        "--conns",
        "120",
        "--procs",
        "2",
        "--source-ips",
        "127.0.0.5-127.0.0.6",
        "--mode",
        "storm",
        "--duration",
        "2",
        "--storm-at",
        "0.5",
    ]);
    a.extend(server.tls_args());
    let (out, r) = run_farm(&a);
    assert!(out.status.success());
    assert_eq!(r["connections_established"], 120, "{r:#}");
    assert_eq!(r["storm"]["drops"], 120, "{r:#}");
    assert_eq!(r["storm"]["reconnected"], 120, "{r:#}");
    assert_eq!(r["latency_us"]["connect"]["count"], 240);
}

#[test]
fn a_server_that_is_down_is_counted_not_hung() {
    let down = tools::net::refusing_port().unwrap();
    let (out, r) = run_farm(&args(&[
        "--server",
        &down.addr.to_string(),
        "--conns",
        "20",
        "--procs",
        "2",
        "--connect-attempts",
        "2",
        "--duration",
        "0.2",
        "--drain",
        "0.5",
    ]));
    assert!(out.status.success());
    assert_eq!(r["connections_established"], 0);
    assert_eq!(r["connect_errors"], 40, "{r:#}");
    assert_eq!(r["errors_by_kind"]["connect:refused"], 40, "{r:#}");
}

#[test]
fn a_refused_load_test_login_is_a_login_error() {
    // This server was not started with --load-test-secret, so LoadTestLogin is refused
    // (LOAD_TEST_DISABLED once the messaging service lands).
    let server = TestServer::start(false, &[]);
    let (out, r) = run_farm(&args(&[
        "--server",
        &server.addr.to_string(),
        "--conns",
        "10",
        "--load-test-secret",
        "nope",
        "--mode",
        "idle",
        "--duration",
        "0.2",
        "--drain",
        "0.5",
    ]));
    assert!(out.status.success());
    assert_eq!(r["connections_established"], 0, "{r:#}");
    assert_eq!(r["login_errors"], 10, "{r:#}");
    let kinds = r["errors_by_kind"].as_object().unwrap();
    assert!(kinds.keys().any(|k| k.starts_with("login:")), "{kinds:?}");
}

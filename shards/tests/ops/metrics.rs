//! The operator's view of a real server: `/metrics` passes `promtool check metrics` with no
//! complaint after real traffic (every latency histogram has observations), every metric the
//! Grafana dashboard and the alert rules query is served (and their PromQL parses; the
//! alerts' unit tests pass), every served metric is in docs/METRICS.md, and `/healthz` /
//! `/readyz` follow the server's life.
//!
//! promtool comes from Debian's `prometheus` package (.ci/run installs it). Under `CI=true`
//! a missing promtool fails the test; elsewhere the test says why it skipped.

use crate::support;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use proto::v1::server_frame;
use support::admin::{families, fresh_stats, get, metric_sum, parse_prometheus};
use support::{phones_on, TestServer};
use testkit::temp_dir;

const HISTOGRAMS: [&str; 4] = [
    "switchboard_fsync_seconds",
    "switchboard_delivery_seconds",
    "switchboard_tls_handshake_seconds",
    "switchboard_mesh_hop_seconds",
];

/// A 2-shard TLS server after a conversation across shards, and its admin address.
fn server_after_traffic() -> (TestServer, SocketAddr) {
    let server = TestServer::start_cfg(2, true, temp_dir("ops"), |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
        // The media service's counters are served too (by shard 0).
        let media = shards::config::media::MediaArgs {
            media_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        };
        c.media = media.resolve(None).unwrap();
    });
    let admin = server.rt.as_ref().unwrap().admin_addr().unwrap();
    let a = phones_on(0, 2, 1, 700).remove(0);
    let b = phones_on(1, 2, 1, 700).remove(0);
    let (ka, kb) = (server.register(&a), server.register(&b));
    let mut ca = server.login(&a, &ka);
    let mut cb = server.login(&b, &kb);
    for i in 1..=3 {
        ca.send_text(&b, i, "hello");
        assert!(matches!(ca.recv(), server_frame::Kind::ServerAck(_)));
        let m = cb.expect_message();
        cb.ack(vec![m.server_msg_id]);
        assert!(matches!(ca.recv(), server_frame::Kind::Receipt(_)));
    }
    fresh_stats(admin, 2);
    (server, admin)
}

fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if found {
        return Some("promtool");
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "promtool is not installed but CI=true: install Debian's `prometheus` package \
         (.ci/run does this when promtool is missing)"
    );
    eprintln!("SKIPPED: promtool not found (apt-get install prometheus); set CI=true to fail");
    None
}

#[test]
fn metrics_pass_promtool_check_metrics_on_a_live_server() {
    let (_server, admin) = server_after_traffic();
    let (status, text) = get(admin, "/metrics");
    assert_eq!(status, 200);
    let samples = parse_prometheus(&text);
    for h in HISTOGRAMS {
        let n = metric_sum(&samples, &format!("{h}_count"));
        assert!(n > 0.0, "{h} has observations after traffic: {n}");
        let inf: f64 = samples
            .iter()
            .filter(|s| s.name == format!("{h}_bucket") && s.labels["le"] == "+Inf")
            .map(|s| s.value)
            .sum();
        assert_eq!(inf, n, "{h}: +Inf bucket equals _count");
    }
    let Some(tool) = promtool() else { return };
    let out = promtool_check(tool, &text);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics complained ({}):\n{said}",
        out.status
    );
}

/// `promtool check metrics` on `text`: its exit status and what it said.
fn promtool_check(tool: &str, text: &str) -> std::process::Output {
    let mut child = Command::new(tool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn promtool_is_not_a_rubber_stamp() {
    // The same check on what /metrics used to serve must fail, or the test above proves
    // nothing.
    let Some(tool) = promtool() else { return };
    let old = "# HELP switchboard_fsync_us_p99 x\n# TYPE switchboard_fsync_us_p99 gauge\n\
               switchboard_fsync_us_p99 1\n# HELP switchboard_accepts x\n\
               # TYPE switchboard_accepts counter\nswitchboard_accepts 1\n";
    let out = promtool_check(tool, old);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("_total"), "{said}");
}

/// The PromQL of every panel target in the dashboard.
fn dashboard_exprs() -> Vec<String> {
    let exprs = support::admin::dashboard_exprs();
    assert!(exprs.len() >= 20, "a dashboard worth the name: {exprs:?}");
    exprs
}

/// Every `switchboard_*` name in the dashboard's queries and variables.
fn dashboard_metrics() -> BTreeSet<String> {
    let mut exprs = dashboard_exprs();
    for v in support::admin::dashboard()["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if let Some(q) = v["definition"].as_str() {
            exprs.push(q.to_string());
        }
    }
    support::admin::metric_names(&exprs, "switchboard_")
}

#[test]
fn every_metric_the_dashboard_and_alerts_query_is_served() {
    let queried = dashboard_metrics();
    for wanted in [
        "switchboard_connections_open",
        "switchboard_accepts_total",
        "switchboard_frames_in_total",
        "switchboard_frames_out_total",
        "switchboard_delivery_seconds_bucket",
        "switchboard_fsync_seconds_bucket",
        "switchboard_queue_items",
        "switchboard_mesh_outbox_depth",
        "switchboard_busy_seconds_total",
        "switchboard_alarms_active",
    ] {
        assert!(queried.contains(wanted), "the dashboard shows {wanted}");
    }
    let alerts =
        support::admin::metric_names(&[std::fs::read_to_string(ALERTS).unwrap()], "switchboard_");
    assert!(alerts.len() >= 6, "{alerts:?}");
    let (_server, admin) = server_after_traffic();
    let text = get(admin, "/metrics").1;
    let served: BTreeSet<String> = parse_prometheus(&text)
        .into_iter()
        .map(|s| s.name)
        .chain(families(&text).into_keys())
        .collect();
    // A single box serves no cluster metrics: the dashboard's cluster row is checked
    // against a box of a cluster (`tests/cluster/dashboard.rs`); here only that each is
    // documented.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/METRICS.md"))
        .unwrap();
    let (cluster, queried): (BTreeSet<String>, BTreeSet<String>) = queried
        .into_iter()
        .partition(|n| n.starts_with("switchboard_cluster_"));
    assert!(cluster.len() >= 10, "the cluster row: {cluster:?}");
    let undocumented: Vec<_> = cluster
        .iter()
        .filter(|n| !doc.contains(&format!("`{n}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "queried, not documented: {undocumented:?}"
    );
    let missing: Vec<_> = queried.difference(&served).collect();
    assert!(missing.is_empty(), "queried but not served: {missing:?}");
    let missing: Vec<_> = alerts.difference(&served).collect();
    assert!(missing.is_empty(), "alerted on but not served: {missing:?}");
}

const ALERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ops/prometheus/alerts.yml");

#[test]
fn alert_rules_parse_and_fire_on_their_unit_tests() {
    let Some(tool) = promtool() else { return };
    let check = Command::new(tool)
        .args(["check", "rules", ALERTS])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success() && said.contains("SUCCESS"), "{said}");
    let test = Command::new(tool)
        .args(["test", "rules"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../ops/prometheus/alerts_test.yml"
        ))
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let Some(tool) = promtool() else { return };
    // Grafana's variables become what they stand for, and each query a recording rule,
    // which `promtool check rules` parses.
    let exprs = dashboard_exprs();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$shard", ".*");
        let quoted = serde_json::to_string(&e).unwrap(); // a JSON string is a YAML string
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {quoted}\n"
        ));
    }
    let path = temp_dir("dash-rules").join("rules.yml");
    std::fs::write(&path, &rules).unwrap();
    let out = Command::new(tool)
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}\n{rules}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{said}"
    );
}

#[test]
fn every_served_metric_is_in_the_reference_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/METRICS.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let (_server, admin) = server_after_traffic();
    let text = get(admin, "/metrics").1;
    let served = families(&text);
    assert!(served.len() >= 30, "{served:?}");
    let undocumented: Vec<_> = served
        .iter()
        .filter(|(name, kind)| !doc.contains(&format!("| `{name}` | {kind} |")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "add a row (name, type, unit, meaning) to docs/METRICS.md for: {undocumented:?}"
    );
}

#[test]
fn healthz_and_readyz_follow_the_servers_life() {
    let mut server = TestServer::start_cfg(1, false, temp_dir("ops-ready"), |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
    });
    let rt = server.rt.as_ref().unwrap();
    let admin = rt.admin_addr().unwrap();
    // start() returns once the shards listen; each marks itself ready right after its
    // service replayed its log, so readiness follows within a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while rt.health().ready().is_err() {
        assert!(std::time::Instant::now() < deadline, "never ready");
        std::thread::yield_now();
    }
    assert_eq!(get(admin, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(admin, "/readyz"), (200, "ready\n".into()));
    // The admin endpoint serves until the runtime is joined: from the stop on (the shards
    // drain the open connection meanwhile), /readyz answers 503.
    let mut c = server.client();
    c.sync();
    rt.stop();
    assert_eq!(
        get(admin, "/readyz"),
        (503, "shutting down\n".into()),
        "a load balancer stops sending once shutdown starts"
    );
    assert_eq!(get(admin, "/healthz").0, 200, "still alive while draining");
    server.stop();
}

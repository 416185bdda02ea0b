//! Alarms on a real server: a user's queue passing a (low) threshold shows as an active
//! alarm naming that user (by server-issued id, never by phone number) in /stats and
//! /metrics, and clears once the queue drains.

use crate::support;

use shards::config::AlarmThresholds;
use support::admin::{fresh_stats, get, parse_prometheus};
use support::TestServer;
use testkit::temp_dir;

#[test]
fn queue_alarm_names_the_user_by_id_and_clears_when_drained() {
    let server = TestServer::start_cfg(1, false, temp_dir("alarm"), |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
        c.alarms = AlarmThresholds {
            queue_user_items: Some(3),
            queue_shard_items: None,
            mesh_depth_msgs: None,
            utilisation_pct: None,
            turn_max_ms: None,
            period_ms: 60_000,
        };
    });
    let admin = server.rt.as_ref().unwrap().admin_addr().unwrap();
    let (a, b) = ("+15550001001", "+15550001002");
    let (ka, kb) = (server.register(a), server.register(b));
    let mut ca = server.login(a, &ka);
    // b is offline: its queue grows past 3.
    for i in 1..=5 {
        ca.send_text(b, i, "queued");
    }
    ca.recv_n(5);
    let shard = fresh_stats(admin, 1).remove(0);
    let alarms = shard["alarms"].as_array().unwrap();
    assert_eq!(alarms.len(), 1, "{shard}");
    assert_eq!(alarms[0]["stat"], "queue_items_user_max");
    assert_eq!(
        (alarms[0]["value"].as_u64(), alarms[0]["max"].as_u64()),
        (Some(5), Some(3))
    );
    let offender = alarms[0]["offender"].as_str().unwrap();
    assert!(
        offender.starts_with("user id ") && offender.ends_with("(5 items)"),
        "names the user with the longest queue by id: {offender}"
    );
    let id: u64 = offender["user id ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(id, 0, "a verified user has a server-issued id");
    // Neither endpoint shows the phone number, in any spelling.
    let (_, stats_body) = get(admin, "/stats");
    let (_, metrics_body) = get(admin, "/metrics");
    for body in [&stats_body, &metrics_body] {
        assert!(!body.contains(&b[1..]), "a phone number leaked: {body}");
    }
    assert_eq!(
        alarm_active(&metrics_body, "queue_items_user_max"),
        Some(1.0)
    );

    // b logs in, receives everything and acks it: the queue drains and the alarm clears.
    let mut cb = server.client();
    assert_eq!(cb.login(b, &kb), 5);
    let ids: Vec<u64> = (0..5).map(|_| cb.expect_message().server_msg_id).collect();
    cb.ack(ids);
    cb.sync();
    ca.recv_n(5); // DELIVERED receipts
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let shard = fresh_stats(admin, 1).remove(0);
        if shard["alarms"].as_array().unwrap().is_empty() {
            assert_eq!(shard["service"]["queue_items_user_max"], 0);
            // A cleared alarm still has its sample, at 0 (dashboards, `absent()` alerts).
            let (_, metrics_body) = get(admin, "/metrics");
            assert_eq!(
                alarm_active(&metrics_body, "queue_items_user_max"),
                Some(0.0)
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alarm never cleared: {shard}"
        );
    }
}

/// The value of `switchboard_alarm_active` for the alarm on `stat`, if it has a sample.
fn alarm_active(metrics_body: &str, stat: &str) -> Option<f64> {
    parse_prometheus(metrics_body)
        .into_iter()
        .find(|s| {
            s.name == "switchboard_alarm_active"
                && s.labels.get("stat").map(String::as_str) == Some(stat)
        })
        .map(|s| s.value)
}

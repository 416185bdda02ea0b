//! The farm's message paths against a small in-memory fake of the messaging protocol
//! (`support::fake`), so the mix, receipts, groups, storm handling and the exactly-once
//! ledger are exercised now; `farm_messaging.rs` runs the same checks against the real
//! server once it lands.

mod support;

use support::{args, every_due_send_accounted, fake, run_farm};

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
    every_due_send_accounted(&r);
    assert_eq!(r["connections_established"], 60, "{r:#}");
    let acked = r["server_acked"].as_u64().unwrap();
    assert!(acked > 300, "{r:#}");
    assert_eq!(r["messages_sent"], acked, "{r:#}");
    assert_eq!(r["delivered"], acked, "{r:#}");
    assert_eq!(r["lost"], 0);
    assert_eq!(r["duplicates"], 0);
    assert_eq!(r["exactly_once"], true);
    assert_eq!(r["latency_us"]["ack"]["count"], acked);
    assert_eq!(r["sends_skipped"], 0, "{r:#}");
    assert_eq!(r["latency_us"]["delivery"]["count"], acked);
    assert_eq!(r["offered_per_s"], 300.0, "{r:#}");
    let sent_per_s = r["sent_per_s"].as_f64().unwrap();
    assert!((acked as f64 / 2.0 - sent_per_s).abs() < 1e-6, "{r:#}");
    assert_eq!(r["counters"]["receipts_delivered"], acked, "{r:#}");
    assert_eq!(r["counters"]["receipts_read"], acked, "{r:#}");
}

/// Users spread over two boxes of a (fake) cluster: about half log in at a box that is not
/// their home, follow its `Redirect` to the home box, and every message still arrives once.
#[test]
fn users_redirected_to_their_home_box_still_get_every_message_once() {
    let boxes = fake::start_boxes(2);
    let list = format!("{},{}", boxes[0], boxes[1]);
    let (out, r) = run_farm(&args(&[
        "--server",
        &list,
        "--conns",
        "40",
        "--mode",
        "steady",
        "--rate",
        "200",
        "--duration",
        "2",
        "--load-test-secret",
        "x",
    ]));
    assert!(out.status.success(), "{r:#}");
    every_due_send_accounted(&r);
    assert_eq!(r["connections_established"], 40, "{r:#}");
    assert_eq!(r["login_errors"], 0, "{r:#}");
    // Round robin over two boxes, home = a hash of the phone: about half land on their home
    // at once, the others are redirected (once each).
    let redirects = r["redirects"].as_u64().unwrap();
    assert!(redirects > 0 && redirects < 40, "{r:#}");
    let acked = r["server_acked"].as_u64().unwrap();
    assert!(acked > 100, "{r:#}");
    assert_eq!(r["delivered"], acked, "{r:#}");
    assert_eq!(r["lost"], 0, "{r:#}");
    assert_eq!(r["duplicates"], 0, "{r:#}");
    assert_eq!(r["exactly_once"], true, "{r:#}");
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
    // The ledger checked each member's copy of each acked group message.
    assert_eq!(
        (&g["lost"], &g["misdelivered"]),
        (&0.into(), &0.into()),
        "{r:#}"
    );
    assert_eq!(r["exactly_once"], true, "{r:#}");
}

#[test]
fn interval_lines_split_the_deliveries_without_counting_one_twice() {
    let addr = fake::start();
    let (out, r) = run_farm(&args(&[
        "--server",
        &addr.to_string(),
        "--conns",
        "20",
        "--mode",
        "steady",
        "--rate",
        "200",
        "--duration",
        "1.5",
        "--interval",
        "0.5",
        "--load-test-secret",
        "x",
    ]));
    assert!(out.status.success(), "{r:#}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<_> = stdout
        .lines()
        .filter_map(tools::farm::interval::IntervalLine::parse)
        .collect();
    assert!(!lines.is_empty(), "{stdout}");
    assert!(lines
        .windows(2)
        .all(|w| w[0].t_s < w[1].t_s && w[0].delivered <= w[1].delivered));
    let in_lines: u64 = lines.iter().map(|l| l.latency.count).sum();
    let total = r["latency_us"]["delivery"]["count"].as_u64().unwrap();
    assert!(
        in_lines > 0 && in_lines <= total,
        "{in_lines} of {total}: {stdout}"
    );
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

/// A server that logs everyone in and then never answers: sends pile up at the in-flight
/// cap, and the farm must count every scheduled send it could not make as late instead of
/// leaving it out (coordinated omission).
fn start_mute_server() -> std::net::SocketAddr {
    use proto::codec::{decode_client, encode_frame};
    use proto::v1::client_frame::Kind;
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut fb = proto::FrameBuffer::new();
                let mut buf = vec![0u8; 65536];
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    fb.extend(&buf[..n]);
                    while let Ok(Some(p)) = fb.next_frame() {
                        if let Ok(proto::ClientFrame {
                            kind: Some(Kind::LoadTestLogin(_)),
                        }) = decode_client(p)
                        {
                            let mut out = Vec::new();
                            let f: proto::ServerFrame = proto::v1::LoggedIn {
                                user_id: 1,
                                queued: 0,
                            }
                            .into();
                            encode_frame(&f, &mut out).unwrap();
                            let _ = s.write_all(&out);
                        }
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn unsent_scheduled_messages_count_as_late() {
    let addr = start_mute_server();
    let (out, r) = run_farm(&args(&[
        "--server",
        &addr.to_string(),
        "--conns",
        "4",
        "--mode",
        "steady",
        "--rate",
        "200",
        "--duration",
        "1",
        "--inflight",
        "2",
        "--drain",
        "0.5",
        "--load-test-secret",
        "x",
    ]));
    // Sent, never acked: not exactly-once, so exit 2.
    assert_eq!(out.status.code(), Some(2), "{r:#}");
    every_due_send_accounted(&r);
    assert_eq!(r["connections_established"], 4, "{r:#}");
    assert_eq!(r["messages_sent"], 8, "2 in flight × 4 users: {r:#}");
    assert_eq!(r["server_acked"], 0, "{r:#}");
    assert_eq!(r["unanswered"], 8, "sent, never acked nor delivered: {r:#}");
    let skipped = r["sends_skipped"].as_u64().unwrap();
    assert!(
        (190..=202).contains(&(skipped + 8)),
        "every one of the ~200 scheduled sends is sent or skipped: {r:#}"
    );
    assert_eq!(r["offered_per_s"], 200.0, "{r:#}");
    assert_eq!(r["sent_per_s"], 8.0, "{r:#}");
    // Each skipped send is in the delivery latency, at least the drain late.
    let d = &r["latency_us"]["delivery"];
    assert_eq!(d["count"], skipped, "{r:#}");
    assert!(d["p50"].as_u64().unwrap() >= 500_000, "{r:#}");
}

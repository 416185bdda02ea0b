//! The durable log's failure paths on the real server: each injects a fault (a failpoint in
//! the log-file layer, a flipped bit, a zeroed tail, a second server) and checks that no
//! acknowledged message is lost.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::log_file::{Fault, LogFaults};
use proto::v1::server_frame;
use support::{Client, TestServer};

const A: &str = "+15557000001";
const B: &str = "+15557000002";

fn server_acks(c: &mut Client, n: usize) -> Vec<u64> {
    c.recv_n(n)
        .into_iter()
        .map(|f| match f {
            server_frame::Kind::ServerAck(x) => x.server_msg_id,
            other => panic!("expected ServerAck, got {other:?}"),
        })
        .collect()
}

/// B's queued bodies after a login, in order.
fn queued_bodies(server: &TestServer) -> Vec<String> {
    let mut cb = server.client();
    let n = cb.load_test_login(B);
    (0..n)
        .map(|_| String::from_utf8(cb.expect_message().body).unwrap())
        .collect()
}

/// Fills B's queue, lets B take and ack it (so the log becomes mostly garbage and compacts),
/// with `fault` armed `times` from just before the acks; then queues five more messages
/// while B is offline. Returns after a restart what B finds queued.
fn compaction_under(fault: Fault, times: u32) -> Vec<String> {
    let data = testkit::temp_dir("logfault");
    let faults = Arc::new(LogFaults::default());
    let body = "z".repeat(1000);
    {
        let f = faults.clone();
        let server = TestServer::start_cfg(1, false, data.clone(), move |c| {
            c.compact_min_bytes = 1;
            c.log_faults = Some(f);
        });
        let mut ca = server.client();
        ca.load_test_login(A);
        let mut cb = server.client();
        cb.load_test_login(B);
        drop(cb);
        for i in 1..=200u64 {
            ca.send_text(B, i, &body);
        }
        server_acks(&mut ca, 200);
        faults.arm(fault, times);
        let mut cb = server.client();
        assert_eq!(cb.load_test_login(B), 200);
        for _ in 0..200 {
            let m = cb.expect_message();
            cb.ack(vec![m.server_msg_id]);
        }
        assert!(cb.sync().is_empty());
        drop(cb);
        ca.recv_n(200); // DELIVERED receipts
        for i in 1..=5u64 {
            ca.send_text(B, 1000 + i, &format!("after-{i}"));
        }
        // Each ack comes only once its message is durable, failures retried.
        server_acks(&mut ca, 5);
        assert_eq!(
            faults.hits(fault),
            times,
            "{fault:?}: the fault was hit (a compaction or append ran into it)"
        );
    }
    let server = TestServer::start_with(1, false, data);
    queued_bodies(&server)
}

fn after_five() -> Vec<String> {
    (1..=5).map(|i| format!("after-{i}")).collect()
}

#[test]
fn a_compaction_whose_directory_sync_fails_loses_nothing_acked_after_it() {
    assert_eq!(compaction_under(Fault::SyncDir, 2), after_five());
}

#[test]
fn a_short_snapshot_write_or_failed_rename_keeps_the_old_log_and_everything_acked() {
    assert_eq!(compaction_under(Fault::SnapshotShort, 1), after_five());
    assert_eq!(compaction_under(Fault::Rename, 1), after_five());
}

#[test]
fn failed_and_short_appends_are_retried_and_nothing_is_acked_before() {
    for fault in [Fault::AppendShort, Fault::AppendWrite, Fault::Sync] {
        let data = testkit::temp_dir("appendfault");
        let faults = Arc::new(LogFaults::default());
        {
            let f = faults.clone();
            let server =
                TestServer::start_cfg(1, false, data.clone(), move |c| c.log_faults = Some(f));
            let mut ca = server.client();
            ca.load_test_login(A);
            let mut cb = server.client();
            cb.load_test_login(B);
            drop(cb);
            faults.arm(fault, 1);
            let sent = Instant::now();
            for i in 1..=5u64 {
                ca.send_text(B, i, &format!("after-{i}"));
            }
            server_acks(&mut ca, 5);
            assert_eq!(faults.hits(fault), 1, "{fault:?}");
            assert!(
                sent.elapsed() >= Duration::from_millis(900),
                "{fault:?}: acked before the retry ({:?})",
                sent.elapsed()
            );
        }
        let server = TestServer::start_with(1, false, data);
        assert_eq!(queued_bodies(&server), after_five(), "{fault:?}");
    }
}

#[test]
fn a_zero_filled_tail_is_dropped_and_appends_after_it_survive() {
    let data = testkit::temp_dir("zerotail");
    let send = |from: u64| {
        let server = TestServer::start_with(1, false, data.clone());
        let mut cb = server.client();
        cb.load_test_login(B);
        drop(cb);
        let mut ca = server.client();
        ca.load_test_login(A);
        for i in from..from + 3 {
            ca.send_text(B, i, &format!("m{i}"));
        }
        server_acks(&mut ca, 3);
    };
    send(1);
    // A power loss can leave a zeroed region (any length) at the end.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("shard-0.log"))
        .unwrap();
    f.write_all(&[0u8; 4093]).unwrap();
    drop(f);
    send(4);
    let server = TestServer::start_with(1, false, data);
    assert_eq!(queued_bodies(&server), ["m1", "m2", "m3", "m4", "m5", "m6"]);
}

/// Runs the binary on `data` expecting it to exit by itself; returns (code, stderr).
fn run_expecting_exit(data: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["--no-admin", "--no-tls", "--shards", "2"];
    args.extend(extra);
    let mut child = support::switchboard_command(&args)
        .arg("--data-dir")
        .arg(data)
        .spawn()
        .unwrap();
    let (status, err) = testkit::exit_and_stderr(&mut child, Duration::from_secs(20), "the server");
    (status.code(), err)
}

#[test]
fn a_second_server_on_the_same_data_directory_exits_naming_the_first() {
    let data = testkit::temp_dir("lock");
    let (mut first, _addr) = support::spawn_binary(&data, &["--no-tls"]);
    let (code, err) = run_expecting_exit(&data, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "in use by another switchboard (pid {})",
            first.id()
        )),
        "{err}"
    );
    // The kernel drops the lock with its holder, however it dies.
    first.kill().unwrap();
    first.wait().unwrap();
    let (mut again, _) = support::spawn_binary(&data, &["--no-tls"]);
    again.kill().unwrap();
    again.wait().unwrap();
}

#[test]
fn a_flipped_bit_mid_log_refuses_to_start_and_salvage_keeps_every_readable_record() {
    let data = testkit::temp_dir("bitflip");
    let phones = support::phones_on(0, 2, 2, 7_100_000);
    let (a, b) = (&phones[0], &phones[1]);
    {
        let (mut server, addr) = support::spawn_binary(&data, &["--no-tls"]);
        let mut ca = Client::plain(addr);
        ca.load_test_login(a);
        let mut cb = Client::plain(addr);
        cb.load_test_login(b);
        drop(cb);
        for i in 1..=20u64 {
            ca.send_text(b, i, &format!("message-{i:02}-{}", "p".repeat(100)));
        }
        server_acks(&mut ca, 20);
        server.kill().unwrap();
        server.wait().unwrap();
    }
    let log = data.join("shard-0.log");
    let mut bytes = std::fs::read(&log).unwrap();
    // The middle of the records (zeros written ahead of the end follow them).
    let at = messaging::durable::record::replay(&bytes).valid_len as usize / 2;
    bytes[at] ^= 0x04;
    std::fs::write(&log, &bytes).unwrap();

    let (code, err) = run_expecting_exit(&data, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("shard-0.log is damaged at byte"), "{err}");
    assert!(err.contains("--salvage"), "{err}");
    assert_eq!(
        std::fs::read(&log).unwrap(),
        bytes,
        "a refused start changes nothing"
    );

    let (mut server, addr) = support::spawn_binary(&data, &["--no-tls", "--salvage"]);
    let mut cb = Client::plain(addr);
    let n = cb.load_test_login(b);
    let got: Vec<String> = (0..n)
        .map(|_| String::from_utf8(cb.expect_message().body).unwrap())
        .collect();
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(got.len(), 19, "only the damaged record is lost: {got:?}");
    let set_aside: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("shard-0.log.damaged-")
        })
        .collect();
    assert_eq!(set_aside.len(), 1, "the damaged log is set aside");
    assert_eq!(
        std::fs::read(set_aside[0].path()).unwrap(),
        bytes,
        "set aside whole, never truncated"
    );
}

//! Per-shard statistics on real shards: counters reach `Runtime::stats` and the admin
//! endpoint, and a lock taken on a shard thread through `engine::sync` shows up in that
//! shard's `locks_taken` (the positive control for the service-level test that routing
//! takes none).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use engine::sync::Mutex;
use engine::{CloseReason, Service, ShardIo, ShardStats};
use proto::ids::{ConnId, ShardId};
use testkit::FrameClient;

/// Answers every frame with "ok"; a frame `lock` first takes a counted lock.
struct Locker {
    shared: Mutex<u64>,
}

impl Service for Locker {
    type Msg = ();
    type Adopt = ();
    type Timer = ();

    fn on_open(&mut self, _io: &mut ShardIo<Self>, _conn: ConnId) {}

    fn on_frame(&mut self, io: &mut ShardIo<Self>, conn: ConnId, payload: &[u8]) {
        if payload == b"lock" {
            *self.shared.lock() += 1;
        }
        io.send_with(conn, |out| out.extend_from_slice(&testkit::frame(b"ok")))
            .unwrap();
    }

    fn on_close(&mut self, _io: &mut ShardIo<Self>, _conn: ConnId, _reason: CloseReason) {}
    fn on_mesh(&mut self, _io: &mut ShardIo<Self>, _from: ShardId, _msg: ()) {}
    fn on_adopt(&mut self, _io: &mut ShardIo<Self>, _f: ShardId, _c: ConnId, _m: ()) {}
    fn on_timer(&mut self, _io: &mut ShardIo<Self>, _t: ()) {}

    fn stats(&self) -> Vec<(&'static str, u64)> {
        vec![("locker_frames", 1)]
    }
}

/// Shard 0's next snapshot published after `seq`.
fn next_after(rt: &engine::Runtime, seq: u64) -> ShardStats {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = rt.stats()[0].clone().filter(|s| s.seq > seq) {
            return s;
        }
        assert!(Instant::now() < deadline, "shard 0 stopped publishing");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn counted_locks_and_frames_reach_the_shard_snapshot_and_admin() {
    let mut cfg = support::config(1);
    cfg.admin = Some("127.0.0.1:0".parse().unwrap());
    let rt = engine::start(cfg, |_| Locker {
        shared: Mutex::new(0),
    })
    .unwrap();
    let mut c = FrameClient::plain(rt.local_addr());
    c.send(b"hello");
    assert_eq!(c.recv(), b"ok");
    // A snapshot published after "hello" was handled (the first may predate it).
    let seen = next_after(&rt, 0).seq;
    let before = next_after(&rt, seen);
    for _ in 0..7 {
        c.send(b"lock");
        assert_eq!(c.recv(), b"ok");
    }
    c.send(b"plain");
    assert_eq!(c.recv(), b"ok");
    let after = next_after(&rt, before.seq);
    assert_eq!(
        after.locks_taken - before.locks_taken,
        7,
        "exactly the locks taken"
    );
    assert_eq!(after.counters.frames_in - before.counters.frames_in, 8);
    assert_eq!(after.counters.conns_open, 1);
    assert_eq!(after.service, vec![("locker_frames", 1)]);
    assert_eq!(after.mesh_outbox, vec![0]);
    assert!(after.utilisation_pct <= 100.0);

    let mut http = TcpStream::connect(rt.admin_addr().unwrap()).unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    http.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.contains("switchboard_locker_frames{shard=\"0\"} 1\n"),
        "{text}"
    );
    rt.stop();
    rt.join().unwrap();
}

#[test]
fn statistics_off_publishes_nothing() {
    let mut cfg = support::config(1);
    cfg.stats = false;
    let rt = engine::start(cfg, |_| Locker {
        shared: Mutex::new(0),
    })
    .unwrap();
    let mut c = FrameClient::plain(rt.local_addr());
    c.send(b"hello");
    assert_eq!(c.recv(), b"ok");
    std::thread::sleep(Duration::from_millis(1300));
    assert!(rt.stats().is_empty());
    assert!(rt.admin_addr().is_none());
    rt.stop();
    rt.join().unwrap();
}

/// The batching wait (`engine::coalesce`): `always` asks the kernel to batch its waits,
/// `adaptive` does not for a few frames. (20 frames bring well under the 320 completions a
/// 10 ms window needs before adaptive batches (32 per ms); the rule itself is unit-tested
/// with made-up times in `coalesce.rs`.)
#[test]
fn adaptive_does_not_batch_a_few_frames_and_always_batches_its_waits() {
    use engine::coalesce::CoalesceMode;
    for (mode, batches) in [
        (CoalesceMode::Adaptive, false),
        (CoalesceMode::Always, true),
    ] {
        let mut cfg = support::config(1);
        cfg.coalesce_us = 250;
        cfg.coalesce = mode;
        let rt = engine::start(cfg, |_| Locker {
            shared: Mutex::new(0),
        })
        .unwrap();
        let mut c = FrameClient::plain(rt.local_addr());
        for _ in 0..20 {
            c.send(b"hello");
            assert_eq!(c.recv(), b"ok");
        }
        // A snapshot published after the frames were handled.
        let seen = next_after(&rt, 0).seq;
        let s = next_after(&rt, seen);
        assert_eq!(s.counters.frames_in, 20);
        assert_eq!(
            s.counters.ring_waits_batched > 0,
            batches,
            "{mode:?}: {} batched waits of {} enters",
            s.counters.ring_waits_batched,
            s.counters.ring_enters
        );
        rt.stop();
        rt.join().unwrap();
    }
}

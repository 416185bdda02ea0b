//! The admin endpoint around a shard's start: while services are still starting (replaying
//! their logs) `/readyz` is 503 with how many shards are ready and `/metrics` already answers
//! 200 with zeros; once every shard has started, `/readyz` is 200 and the service's own
//! statistics appear.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use engine::{CloseReason, Service, ShardIo};
use proto::ids::{ConnId, ShardId};

/// A service whose construction, on its shard before `on_start`, waits at a barrier (as a
/// long log replay in `on_start` would).
struct Gated;

impl Service for Gated {
    type Msg = ();
    type Adopt = ();
    type Timer = ();

    fn on_open(&mut self, _io: &mut ShardIo<Self>, _conn: ConnId) {}
    fn on_frame(&mut self, _io: &mut ShardIo<Self>, _conn: ConnId, _payload: &[u8]) {}
    fn on_close(&mut self, _io: &mut ShardIo<Self>, _conn: ConnId, _reason: CloseReason) {}
    fn on_mesh(&mut self, _io: &mut ShardIo<Self>, _from: ShardId, _msg: ()) {}
    fn on_adopt(&mut self, _io: &mut ShardIo<Self>, _f: ShardId, _c: ConnId, _m: ()) {}
    fn on_timer(&mut self, _io: &mut ShardIo<Self>, _t: ()) {}

    fn stats(&self) -> Vec<(&'static str, u64)> {
        vec![("gated_items", 3), ("gated_events_total", 9)]
    }

    fn stat_help(&self) -> &'static [(&'static str, &'static str)] {
        &[("gated_items", "Items behind the gate.")]
    }
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_string(),
    )
}

#[test]
fn readyz_waits_for_every_shards_start_and_metrics_serve_zeros_meanwhile() {
    let gate = Arc::new(Barrier::new(3));
    let mut cfg = support::config(2);
    cfg.admin = Some("127.0.0.1:0".parse().unwrap());
    let g = gate.clone();
    let rt = engine::start(cfg, move |_| {
        g.wait();
        Gated
    })
    .unwrap();
    let admin = rt.admin_addr().unwrap();
    assert_eq!(
        get(admin, "/readyz"),
        (503, "starting: 0 of 2 shards ready\n".into())
    );
    assert_eq!(get(admin, "/healthz").0, 200);
    let (status, zeros) = get(admin, "/metrics");
    assert_eq!(status, 200, "{zeros}");
    for shard in 0..2 {
        assert!(
            zeros.contains(&format!(
                "switchboard_frames_in_total{{shard=\"{shard}\"}} 0\n"
            )),
            "{zeros}"
        );
    }
    assert!(!zeros.contains("gated_items"), "no service numbers yet");

    gate.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(admin, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = get(admin, "/metrics").1;
        if text.matches("switchboard_gated_items{").count() == 2 {
            break text;
        }
        assert!(Instant::now() < deadline, "service stats never published");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(text.contains("# HELP switchboard_gated_items Items behind the gate.\n"));
    assert!(text.contains("# TYPE switchboard_gated_items gauge\n"));
    assert!(text.contains("# TYPE switchboard_gated_events_total counter\n"));
    rt.stop();
    assert_eq!(get(admin, "/readyz"), (503, "shutting down\n".into()));
    rt.join().unwrap();
    assert!(
        TcpStream::connect(admin).is_err(),
        "the admin endpoint goes with the runtime"
    );
}

//! Lock counting on a real server: steady-state 1:1 routing across the mesh takes no lock on
//! any shard thread. Shards report the locks their own thread took through `engine::sync`
//! (the only sanctioned lock; clippy bans std's elsewhere) in `locks_taken`; the admin
//! thread's locks are its own. What this cannot see: locks inside glommio, rustls or std —
//! see `engine/src/sync.rs`. `engine/tests/engine_stats.rs` shows a lock taken on a shard
//! does show up.

use crate::support;

use std::time::{Duration, Instant};

use proto::v1::server_frame;
use support::admin::{fresh_stats, num, sum};
use support::{phones_on, TestServer};
use testkit::temp_dir;

#[test]
fn steady_state_routing_takes_no_locks_on_shard_threads() {
    let server = TestServer::start_cfg(2, true, temp_dir("locks"), |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
    });
    let admin = server.rt.as_ref().unwrap().admin_addr().unwrap();
    let a = phones_on(0, 2, 1, 500).remove(0);
    let b = phones_on(1, 2, 1, 500).remove(0);
    let (ka, kb) = (server.register(&a), server.register(&b));
    let mut ca = server.login(&a, &ka);
    let mut cb = server.login(&b, &kb);
    let mut id = 0;
    let mut round = |id: &mut u64| {
        *id += 1;
        ca.send_text(&b, *id, "steady");
        assert!(matches!(ca.recv(), server_frame::Kind::ServerAck(_)));
        let m = cb.expect_message();
        cb.ack(vec![m.server_msg_id]);
        assert!(matches!(ca.recv(), server_frame::Kind::Receipt(_)));
    };
    for _ in 0..20 {
        round(&mut id); // warm-up: sessions, queues, buffers in place
    }
    let before = fresh_stats(admin, 2);
    let window = Instant::now() + Duration::from_millis(2_500);
    while Instant::now() < window {
        round(&mut id);
    }
    let after = fresh_stats(admin, 2);
    assert!(
        num(&after[0], "seq") >= num(&before[0], "seq") + 2,
        "window spans publications"
    );
    for (b4, af) in before.iter().zip(&after) {
        let shard = num(af, "shard");
        assert!(
            num(af, "frames_in") > num(b4, "frames_in"),
            "shard {shard} routed frames"
        );
        assert_eq!(
            num(af, "locks_taken") - num(b4, "locks_taken"),
            0,
            "shard {shard} took locks while routing"
        );
    }
    let mesh = sum(&after, "mesh_msgs_sent") - sum(&before, "mesh_msgs_sent");
    assert!(
        mesh >= id - 20,
        "every message crossed the mesh ({mesh} mesh msgs)"
    );
}

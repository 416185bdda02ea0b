//! Every shard sends numbered messages to every shard (itself included) over the mesh;
//! every receiver checks all arrived, in order, from each sender.

use std::sync::mpsc;
use std::time::Duration;

use engine::{CloseReason, Service, ShardIo};
use proto::ids::{ConnId, ShardId};

const MSGS_PER_PAIR: u64 = 20_000;

struct Mesher {
    /// Next sequence number expected from each shard.
    expected: Vec<u64>,
    report: mpsc::Sender<(usize, Vec<u64>, bool)>,
    in_order: bool,
}

impl Service for Mesher {
    type Msg = (usize, u64);
    type Adopt = ();
    type Timer = ();

    fn on_start(&mut self, io: &mut ShardIo<Self>) {
        let me = io.shard_id().0;
        for seq in 0..MSGS_PER_PAIR {
            for to in 0..io.shard_count() {
                io.mesh_send(ShardId(to), (me, seq))
                    .map_err(|_| ())
                    .expect("outbox has room");
            }
        }
    }

    fn on_mesh(&mut self, io: &mut ShardIo<Self>, from: ShardId, (sender, seq): (usize, u64)) {
        assert_eq!(from.0, sender, "mesh reports the true sender");
        if self.expected[sender] != seq {
            self.in_order = false;
        }
        self.expected[sender] = seq + 1;
        if self.expected.iter().all(|&e| e == MSGS_PER_PAIR) {
            self.report
                .send((io.shard_id().0, self.expected.clone(), self.in_order))
                .unwrap();
        }
    }

    fn on_open(&mut self, _: &mut ShardIo<Self>, _: ConnId) {}
    fn on_frame(&mut self, _: &mut ShardIo<Self>, _: ConnId, _: &[u8]) {}
    fn on_close(&mut self, _: &mut ShardIo<Self>, _: ConnId, _: CloseReason) {}
    fn on_adopt(&mut self, _: &mut ShardIo<Self>, _: ShardId, _: ConnId, _: ()) {}
    fn on_timer(&mut self, _: &mut ShardIo<Self>, _: ()) {}
}

#[test]
fn every_shard_reaches_every_shard_in_order() {
    let shards = 4;
    let (tx, rx) = mpsc::channel();
    let mut cfg = engine::EngineConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards,
        pin_cpus: false,
        connections_max: Some(100),
        ..Default::default()
    };
    cfg.realtime = false;
    let rt = engine::start(cfg, move |_| Mesher {
        expected: vec![0; shards],
        report: tx.clone(),
        in_order: true,
    })
    .unwrap();
    let mut done = vec![false; shards];
    for _ in 0..shards {
        let (shard, expected, in_order) = rx.recv_timeout(Duration::from_secs(60)).expect("report");
        assert!(in_order, "shard {shard} saw messages out of order");
        assert_eq!(expected, vec![MSGS_PER_PAIR; shards]);
        done[shard] = true;
    }
    assert!(done.iter().all(|d| *d));
    rt.stop();
    rt.join().unwrap();
}

/// Shard 0 sends numbered messages to shard 1, a few per loop turn (each one also pings shard
/// 0 itself, which sends the next), while shard 1 is stalled for half a second: the ring
/// fills, later batches wait in shard 0's outbox (put back in front, in order), and shard 1
/// gets every message once, in order, when it resumes.
struct Staller {
    next_expected: u64,
    most_queued: usize,
    report: mpsc::Sender<(usize, u64, usize)>,
}

const STALLED_MSGS: u64 = 20_000;
const STALL: Duration = Duration::from_millis(500);

impl Service for Staller {
    type Msg = u64;
    type Adopt = ();
    type Timer = ();

    fn on_start(&mut self, io: &mut ShardIo<Self>) {
        match io.shard_id().0 {
            0 => io.mesh_send(ShardId(0), 0).map_err(|_| ()).expect("room"),
            _ => std::thread::sleep(STALL),
        }
    }

    fn on_mesh(&mut self, io: &mut ShardIo<Self>, from: ShardId, seq: u64) {
        if io.shard_id().0 == 0 {
            // A ping from itself: send `seq` to the stalled shard, and the next ping.
            self.most_queued = self.most_queued.max(io.mesh_queued());
            io.mesh_send(ShardId(1), seq).map_err(|_| ()).expect("room");
            if seq + 1 < STALLED_MSGS {
                io.mesh_send(ShardId(0), seq + 1)
                    .map_err(|_| ())
                    .expect("room");
            } else {
                self.report.send((0, seq, self.most_queued)).unwrap();
            }
            return;
        }
        assert_eq!(from, ShardId(0));
        assert_eq!(seq, self.next_expected, "in order, none lost or repeated");
        self.next_expected += 1;
        if self.next_expected == STALLED_MSGS {
            self.report.send((1, seq, 0)).unwrap();
        }
    }

    fn on_open(&mut self, _: &mut ShardIo<Self>, _: ConnId) {}
    fn on_frame(&mut self, _: &mut ShardIo<Self>, _: ConnId, _: &[u8]) {}
    fn on_close(&mut self, _: &mut ShardIo<Self>, _: ConnId, _: CloseReason) {}
    fn on_adopt(&mut self, _: &mut ShardIo<Self>, _: ShardId, _: ConnId, _: ()) {}
    fn on_timer(&mut self, _: &mut ShardIo<Self>, _: ()) {}
}

#[test]
fn a_stalled_peer_fills_its_ring_and_still_gets_everything_in_order() {
    let (tx, rx) = mpsc::channel();
    let cfg = engine::EngineConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        pin_cpus: false,
        connections_max: Some(100),
        ..Default::default()
    };
    let rt = engine::start(cfg, move |_| Staller {
        next_expected: 0,
        most_queued: 0,
        report: tx.clone(),
    })
    .unwrap();
    let mut most_queued = None;
    let mut received = false;
    for _ in 0..2 {
        match rx.recv_timeout(Duration::from_secs(60)).expect("report") {
            (0, last, q) => {
                assert_eq!(last, STALLED_MSGS - 1);
                most_queued = Some(q);
            }
            (_, last, _) => {
                assert_eq!(last, STALLED_MSGS - 1);
                received = true;
            }
        }
    }
    assert!(received, "the stalled shard got every message");
    let q = most_queued.expect("the sender finished");
    assert!(
        q > engine::mesh::MESH_RING_BATCHES,
        "the ring filled and messages waited in the outbox (most queued: {q})"
    );
    rt.stop();
    rt.join().unwrap();
}

//! Every shard sends numbered messages to every shard (itself included) over the mesh;
//! every receiver checks all arrived, in order, from each sender.

use std::sync::mpsc;
use std::time::Duration;

use engine::{CloseReason, ConnId, Service, ShardId, ShardIo};

const MSGS_PER_PAIR: u64 = 20_000;

struct Mesher {
    /// Next sequence number expected from each shard.
    expected: Vec<u64>,
    report: mpsc::Sender<(usize, Vec<u64>, bool)>,
    in_order: bool,
}

impl Service for Mesher {
    type Msg = (usize, u64);
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
    fn on_adopt(&mut self, _: &mut ShardIo<Self>, _: ShardId, _: ConnId, _: Self::Msg) {}
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

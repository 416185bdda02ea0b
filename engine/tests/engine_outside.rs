//! A thread that is not a shard wakes a parked shard (`Runtime::outside_wakes`): each push
//! it makes into its own queue is drained by the shard's `on_outside` at once, not at the
//! shard's next timeout (`HOUSEKEEPING_SLEEP_MS_MAX`, 100 ms, with nothing else to do).

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crossbeam::queue::ArrayQueue;
use engine::{CloseReason, Service, ShardIo};
use proto::ids::{ConnId, ShardId};

mod support;

const ROUND_TRIPS: u64 = 100;

struct Drainer {
    inbox: Arc<ArrayQueue<u64>>,
    echo: mpsc::Sender<u64>,
}

impl Service for Drainer {
    type Msg = ();
    type Adopt = ();
    type Timer = ();

    fn on_outside(&mut self, _: &mut ShardIo<Self>) {
        while let Some(n) = self.inbox.pop() {
            self.echo.send(n).unwrap();
        }
    }

    fn on_start(&mut self, _: &mut ShardIo<Self>) {}
    fn on_mesh(&mut self, _: &mut ShardIo<Self>, _: ShardId, _: ()) {}
    fn on_open(&mut self, _: &mut ShardIo<Self>, _: ConnId) {}
    fn on_frame(&mut self, _: &mut ShardIo<Self>, _: ConnId, _: &[u8]) {}
    fn on_close(&mut self, _: &mut ShardIo<Self>, _: ConnId, _: CloseReason) {}
    fn on_adopt(&mut self, _: &mut ShardIo<Self>, _: ShardId, _: ConnId, _: ()) {}
    fn on_timer(&mut self, _: &mut ShardIo<Self>, _: ()) {}
}

#[test]
fn an_outside_thread_wakes_a_parked_shard_at_once() {
    let inbox = Arc::new(ArrayQueue::new(16));
    let (tx, rx) = mpsc::channel();
    let shard_inbox = inbox.clone();
    let rt = engine::start(support::config(1), move |_| Drainer {
        inbox: shard_inbox.clone(),
        echo: tx.clone(),
    })
    .unwrap();
    let wake = rt.outside_wakes().remove(0);
    let t = Instant::now();
    for n in 0..ROUND_TRIPS {
        inbox.push(n).unwrap();
        wake.notify();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(n));
    }
    // Without the wake each round trip waits for the shard's timeout (up to 100 ms): 10 s.
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "{ROUND_TRIPS} round trips took {took:?}"
    );
    rt.stop();
    rt.join().unwrap();
}

//! The mesh: one bounded single-producer/single-consumer ring per ordered pair of shards.
//!
//! Protocol:
//! 1. A service callback calls `ShardIo::mesh_send(to, msg)`; the message is appended to
//!    this shard's outbox for `to` (a plain `Vec`, no synchronisation) and, if no flush is
//!    scheduled yet, one flush task is spawned.
//! 2. The flush task runs after the current batch of work on this shard, so every message
//!    queued meanwhile leaves in one batch: one ring push per peer, and at most one eventfd
//!    wake of a parked peer, however many messages the batch holds.
//! 3. The peer's receive task pops the batch and hands each message to its service in
//!    order. Messages from one shard to another arrive in the order sent.
//!
//! Why it is safe: each ring has exactly one producer thread and one consumer thread
//! (glommio's `shared_channel`, whose head and tail live on separate cache lines); a full
//! ring makes the flush task wait for room — it never drops or spins. Messages to this
//! shard itself skip the ring but keep the same batching and order.
//!
//! This module owns the outboxes and the rings; it must not touch connections or timers.

use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender};

use crate::conn_table::ConnId;
use crate::handoff::Detached;
use crate::ShardId;

/// Most messages one shard may have queued for all peers before `mesh_send` hands them back.
pub const MESH_OUTBOX_MSGS_MAX: usize = 256 * 1024;
/// Slots in each SPSC ring; each slot carries one batch.
pub const MESH_RING_BATCHES: usize = 1024;
/// Most messages in one batch; a larger outbox leaves as several batches.
pub const MESH_BATCH_MSGS_MAX: usize = 4096;

/// What travels on the mesh.
#[derive(Debug)]
pub(crate) enum Envelope<M> {
    /// A service message.
    Service(M),
    /// A live connection with the service's message about it.
    Adopt(Detached, M),
}

/// One batch: the unit pushed into a ring.
pub(crate) type Batch<M> = Vec<Envelope<M>>;

/// A batch in a ring, stamped when it was pushed (for the mesh-hop latency).
pub(crate) struct Sent<M> {
    pub(crate) at: std::time::Instant,
    pub(crate) batch: Batch<M>,
}

/// This shard's outgoing messages, per destination shard, waiting for the flush task.
#[derive(Debug)]
pub(crate) struct MeshOutbox<M> {
    per_peer: Vec<Batch<M>>,
    queued: usize,
    flush_scheduled: bool,
    /// Service messages for connections being handed off, until their sockets detach.
    handoffs: Vec<(ConnId, M)>,
}

impl<M> MeshOutbox<M> {
    pub(crate) fn new(shard_count: usize) -> Self {
        MeshOutbox {
            per_peer: (0..shard_count).map(|_| Vec::new()).collect(),
            queued: 0,
            flush_scheduled: false,
            handoffs: Vec::new(),
        }
    }

    /// Queues `env` for shard `to`; hands it back when the outbox is full.
    pub(crate) fn push(&mut self, to: ShardId, env: Envelope<M>) -> Result<(), Envelope<M>> {
        if self.queued >= MESH_OUTBOX_MSGS_MAX {
            return Err(env);
        }
        self.per_peer[to.0].push(env);
        self.queued += 1;
        Ok(())
    }

    /// Messages queued for all peers and not yet taken by the flush task.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// True when the caller must spawn the flush task (none is scheduled yet).
    pub(crate) fn mark_flush_scheduled(&mut self) -> bool {
        !std::mem::replace(&mut self.flush_scheduled, true)
    }

    /// Takes every queued batch; the next push schedules a new flush.
    pub(crate) fn take_batches(&mut self) -> Vec<(ShardId, Batch<M>)> {
        self.flush_scheduled = false;
        self.queued = 0;
        let mut out = Vec::new();
        for (i, q) in self.per_peer.iter_mut().enumerate() {
            while !q.is_empty() {
                let rest = if q.len() > MESH_BATCH_MSGS_MAX {
                    q.split_off(MESH_BATCH_MSGS_MAX)
                } else {
                    Vec::new()
                };
                out.push((ShardId(i), std::mem::replace(q, rest)));
            }
        }
        out
    }

    /// Messages queued per peer shard (index = peer), waiting for the flush task.
    pub(crate) fn len_per_peer(&self) -> impl Iterator<Item = usize> + '_ {
        self.per_peer.iter().map(Vec::len)
    }

    pub(crate) fn park_handoff(&mut self, conn: ConnId, msg: M) {
        self.handoffs.push((conn, msg));
    }

    pub(crate) fn take_handoff(&mut self, conn: ConnId) -> Option<M> {
        let i = self.handoffs.iter().position(|(c, _)| *c == conn)?;
        Some(self.handoffs.swap_remove(i).1)
    }
}

/// The unconnected ends of every ring, built on the main thread before shards start.
pub(crate) struct MeshPlan<M: Send + 'static> {
    /// `senders[from][to]`: the producer end of ring from→to (None on the diagonal).
    senders: Vec<Vec<Option<shared_channel::SharedSender<Sent<M>>>>>,
    /// `receivers[to][from]`: the consumer end of ring from→to.
    receivers: Vec<Vec<Option<shared_channel::SharedReceiver<Sent<M>>>>>,
}

/// One shard's connected ends.
pub(crate) struct ShardLinks<M: Send + 'static> {
    pub(crate) senders: Vec<Option<ConnectedSender<Sent<M>>>>,
    pub(crate) receivers: Vec<(ShardId, ConnectedReceiver<Sent<M>>)>,
}

/// One shard's unconnected ends, moved into its thread.
pub(crate) struct ShardEnds<M: Send + 'static> {
    senders: Vec<Option<shared_channel::SharedSender<Sent<M>>>>,
    receivers: Vec<Option<shared_channel::SharedReceiver<Sent<M>>>>,
}

impl<M: Send + 'static> MeshPlan<M> {
    pub(crate) fn new(n: usize) -> Self {
        let mut senders: Vec<Vec<_>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        let mut receivers: Vec<Vec<_>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        for from in 0..n {
            for to in 0..n {
                if from != to {
                    let (s, r) = shared_channel::new_bounded(MESH_RING_BATCHES);
                    senders[from][to] = Some(s);
                    receivers[to][from] = Some(r);
                }
            }
        }
        MeshPlan { senders, receivers }
    }

    /// Splits the plan into each shard's ends, in shard order.
    pub(crate) fn into_shards(self) -> Vec<ShardEnds<M>> {
        self.senders
            .into_iter()
            .zip(self.receivers)
            .map(|(senders, receivers)| ShardEnds { senders, receivers })
            .collect()
    }
}

impl<M: Send + 'static> ShardEnds<M> {
    /// Connects every end on the calling shard's executor. Each end's `connect` waits for
    /// its peer's, so all are started at once (as tasks) before any is awaited: connecting
    /// them one by one would deadlock two shards each waiting on the other.
    pub(crate) async fn connect(self) -> ShardLinks<M> {
        let senders: Vec<_> = self
            .senders
            .into_iter()
            .map(|s| s.map(|s| glommio::spawn_local(s.connect())))
            .collect();
        let receivers: Vec<_> = self
            .receivers
            .into_iter()
            .enumerate()
            .filter_map(|(from, r)| Some((ShardId(from), glommio::spawn_local(r?.connect()))))
            .collect();
        let mut links = ShardLinks {
            senders: Vec::new(),
            receivers: Vec::new(),
        };
        for s in senders {
            links.senders.push(match s {
                Some(task) => Some(task.await),
                None => None,
            });
        }
        for (from, task) in receivers {
            links.receivers.push((from, task.await));
        }
        links
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_batches_keep_order_and_split_large_batches() {
        let mut o: MeshOutbox<u32> = MeshOutbox::new(2);
        for i in 0..(MESH_BATCH_MSGS_MAX as u32 + 10) {
            o.push(ShardId(1), Envelope::Service(i)).unwrap();
        }
        assert!(o.mark_flush_scheduled());
        assert!(!o.mark_flush_scheduled());
        let batches = o.take_batches();
        assert_eq!(batches.len(), 2);
        let all: Vec<u32> = batches
            .into_iter()
            .flat_map(|(to, b)| {
                assert_eq!(to, ShardId(1));
                b.into_iter().map(|e| match e {
                    Envelope::Service(i) => i,
                    Envelope::Adopt(..) => unreachable!(),
                })
            })
            .collect();
        assert_eq!(
            all,
            (0..(MESH_BATCH_MSGS_MAX as u32 + 10)).collect::<Vec<_>>()
        );
        assert!(o.mark_flush_scheduled(), "taking batches re-arms the flush");
    }

    #[test]
    fn outbox_hands_message_back_when_full() {
        let mut o: MeshOutbox<usize> = MeshOutbox::new(1);
        for i in 0..MESH_OUTBOX_MSGS_MAX {
            o.push(ShardId(0), Envelope::Service(i)).unwrap();
        }
        match o.push(ShardId(0), Envelope::Service(7)) {
            Err(Envelope::Service(7)) => {}
            other => panic!("expected the message back, got {other:?}"),
        }
    }
}

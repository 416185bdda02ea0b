//! The mesh: one bounded single-producer/single-consumer ring per ordered pair of shards.
//!
//! Protocol:
//! 1. A service callback calls `ShardIo::mesh_send(to, msg)`; the message is appended to
//!    this shard's outbox for `to` (a plain `Vec`, no synchronisation).
//! 2. At the end of every loop turn the shard flushes its outboxes: every message queued
//!    during the turn leaves in one batch, one ring push per peer, and at most one eventfd
//!    write per peer — only when that peer is parked in the kernel.
//! 3. The peer's loop pops batches from its rings each turn and hands each message to its
//!    service in order. Messages from one shard to another arrive in the order sent.
//!
//! Why it is safe: each ring has exactly one producer thread and one consumer thread
//! (a bounded `crossbeam` queue). There is one flusher per shard — the loop itself — so a
//! batch that does not fit a full ring goes back to the front of its outbox and is retried
//! next turn, still counted against [`MESH_OUTBOX_MSGS_MAX`]: nothing is dropped, reordered
//! or held outside the cap. The one exception to the cap is an adoption (a live connection
//! in transit): it is never refused, and there is at most one per connection. Messages to this shard itself skip the ring but keep the same
//! batching and order.
//!
//! Parking (`ShardWake`): before a shard blocks in `io_uring_enter` it sets `parked`, then
//! looks at its rings once more; a producer pushes, then reads `parked` (both sequentially
//! consistent), and writes the eventfd only if it is set. Either the consumer sees the batch
//! or the producer sees the flag: a batch never waits for the consumer's timeout.
//!
//! This module owns the outboxes, the rings and the wake-ups; it must not touch connections
//! or timers.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use crate::conn::handoff::Detached;
use proto::ids::ConnId;
use proto::ids::ShardId;

/// Most messages one shard may have queued for all peers before `mesh_send` hands them back.
pub const MESH_OUTBOX_MSGS_MAX: usize = 256 * 1024;
/// Slots in each SPSC ring; each slot carries one batch.
pub const MESH_RING_BATCHES: usize = 1024;
/// Most messages in one batch; a larger outbox leaves as several batches.
pub const MESH_BATCH_MSGS_MAX: usize = 4096;

/// Longest emptied list of messages to itself a shard keeps for reuse (one large fan-out
/// does not hold its room for good).
pub const SPARE_LOCAL_BATCH_MSGS_MAX: usize = 256;

/// What travels on the mesh.
#[derive(Debug)]
pub(crate) enum Envelope<M, A> {
    /// A service message.
    Service(M),
    /// A live connection with what the service sends along with it.
    Adopt(Detached, A),
}

/// One batch: the unit pushed into a ring.
pub(crate) type Batch<M, A> = Vec<Envelope<M, A>>;

/// A batch in a ring, stamped when it was pushed (for the mesh-hop latency).
pub(crate) struct Sent<M, A> {
    pub(crate) at: std::time::Instant,
    pub(crate) batch: Batch<M, A>,
}

/// This shard's outgoing messages, per destination shard, waiting for the loop's flush.
#[derive(Debug)]
pub(crate) struct MeshOutbox<M, A> {
    per_peer: Vec<Batch<M, A>>,
    /// The emptied list of the last batch this shard delivered to itself, kept for the next
    /// one (at most [`SPARE_LOCAL_BATCH_MSGS_MAX`] long): no allocation per turn for the
    /// messages a shard sends itself.
    spare_local: Batch<M, A>,
    queued: usize,
    /// What the service sends along with each connection being handed off, until its
    /// socket detaches.
    handoffs: Vec<(ConnId, A)>,
}

impl<M, A> MeshOutbox<M, A> {
    pub(crate) fn new(shard_count: usize) -> Self {
        MeshOutbox {
            per_peer: (0..shard_count).map(|_| Vec::new()).collect(),
            spare_local: Vec::new(),
            queued: 0,
            handoffs: Vec::new(),
        }
    }

    /// Queues service message `msg` for shard `to`; hands it back when the outbox is full.
    pub(crate) fn push(&mut self, to: ShardId, msg: M) -> Result<(), M> {
        if self.queued >= MESH_OUTBOX_MSGS_MAX {
            return Err(msg);
        }
        self.per_peer[to.0].push(Envelope::Service(msg));
        self.queued += 1;
        Ok(())
    }

    /// Queues a live connection for shard `to`. Never refused, whatever the outbox holds:
    /// the connection (its socket, its login, its unread frames) has nowhere else to go, and
    /// the old shard's service has already heard `HandedOff`. There is at most one in
    /// flight per connection this shard held, so the shard's table bounds them.
    pub(crate) fn push_adopt(&mut self, to: ShardId, detached: Detached, adopt: A) {
        self.per_peer[to.0].push(Envelope::Adopt(detached, adopt));
        self.queued += 1;
    }

    /// Whether nothing is queued for any shard.
    pub(crate) fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Messages queued for all peers and not yet taken by the loop's flush.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// Takes up to [`MESH_BATCH_MSGS_MAX`] of the messages queued for `to`, oldest first.
    /// They still count against the cap until [`MeshOutbox::sent`].
    pub(crate) fn take_batch(&mut self, to: ShardId) -> Batch<M, A> {
        let q = &mut self.per_peer[to.0];
        if q.len() <= MESH_BATCH_MSGS_MAX {
            std::mem::take(q)
        } else {
            let rest = q.split_off(MESH_BATCH_MSGS_MAX);
            std::mem::replace(q, rest)
        }
    }

    /// [`MeshOutbox::take_batch`] for this shard itself (`me`): the list left in the
    /// batch's place is the one [`MeshOutbox::local_done`] kept.
    pub(crate) fn take_local(&mut self, me: ShardId) -> Batch<M, A> {
        let q = &mut self.per_peer[me.0];
        if q.len() > MESH_BATCH_MSGS_MAX {
            return self.take_batch(me);
        }
        std::mem::replace(q, std::mem::take(&mut self.spare_local))
    }

    /// A batch from [`MeshOutbox::take_local`] was delivered (emptied): its list is kept
    /// for the next, unless it grew past [`SPARE_LOCAL_BATCH_MSGS_MAX`].
    pub(crate) fn local_done(&mut self, batch: Batch<M, A>) {
        debug_assert!(batch.is_empty());
        if batch.capacity() <= SPARE_LOCAL_BATCH_MSGS_MAX {
            self.spare_local = batch;
        }
    }

    /// A batch taken by [`MeshOutbox::take_batch`] could not be pushed: it goes back in
    /// front of whatever was queued since, so order holds.
    pub(crate) fn put_back(&mut self, to: ShardId, mut batch: Batch<M, A>) {
        let q = &mut self.per_peer[to.0];
        batch.append(q);
        *q = batch;
    }

    /// `n` taken messages left (pushed into a ring or delivered here).
    pub(crate) fn sent(&mut self, n: usize) {
        self.queued -= n;
    }

    /// Whether anything is queued for `to`.
    pub(crate) fn has_for(&self, to: ShardId) -> bool {
        !self.per_peer[to.0].is_empty()
    }

    /// Messages queued per peer shard (index = peer), waiting for the loop's flush.
    pub(crate) fn len_per_peer(&self) -> impl Iterator<Item = usize> + '_ {
        self.per_peer.iter().map(Vec::len)
    }

    /// Keeps what travels with `conn` until its socket has detached.
    pub(crate) fn park_handoff(&mut self, conn: ConnId, adopt: A) {
        self.handoffs.push((conn, adopt));
    }

    /// What travels with `conn`, parked by [`MeshOutbox::park_handoff`].
    pub(crate) fn take_handoff(&mut self, conn: ConnId) -> Option<A> {
        let i = self.handoffs.iter().position(|(c, _)| *c == conn)?;
        Some(self.handoffs.swap_remove(i).1)
    }

    /// Handoff messages parked, waiting for their sockets to detach.
    #[cfg(test)]
    pub(crate) fn handoffs_parked(&self) -> usize {
        self.handoffs.len()
    }
}

/// Wakes a shard parked in `io_uring_enter`: an eventfd its ring keeps a read armed on, and
/// the flag that says whether writing it is needed.
#[derive(Debug)]
pub(crate) struct ShardWake {
    fd: OwnedFd,
    parked: AtomicBool,
}

impl ShardWake {
    pub(crate) fn new() -> std::io::Result<ShardWake> {
        // SAFETY: eventfd(2) with plain flags; the result is checked, then owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(ShardWake {
            // SAFETY: a fresh descriptor nobody else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            parked: AtomicBool::new(false),
        })
    }

    /// The eventfd the shard's ring reads.
    pub(crate) fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// The consumer is about to block (`true`) or is awake again (`false`).
    pub(crate) fn set_parked(&self, parked: bool) {
        self.parked.store(parked, Ordering::SeqCst);
    }

    /// Called by a producer after its pushes: wakes the consumer if it is parked.
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: an 8-byte write from a live u64 to our eventfd. A full counter
            // (EAGAIN) already means "wake up".
            unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }
}

/// A ring between two shards.
/// A handle with which a thread that is not a shard (a service's gateway to the outside)
/// wakes one shard: that shard's service hears `Service::on_outside` on its next turn.
/// The caller pushes what it has for the shard into its own queue first, then notifies:
/// the flag is set after the push and read by the shard before it parks (and cleared
/// before `on_outside` drains), so a push is never left waiting for the shard's timeout.
#[derive(Debug, Clone)]
pub struct OutsideWake {
    wake: Arc<ShardWake>,
    pending: Arc<AtomicBool>,
}

impl OutsideWake {
    /// Has the shard run `on_outside` soon; writes its eventfd only if it is parked.
    pub fn notify(&self) {
        self.pending.store(true, Ordering::SeqCst);
        self.wake.notify();
    }
}

pub(crate) type Ring<M, A> = Arc<ArrayQueue<Sent<M, A>>>;

/// A ring to one peer and the peer's wake-up.
pub(crate) type Sender<M, A> = (Ring<M, A>, Arc<ShardWake>);

/// One shard's ends of the mesh.
pub(crate) struct ShardLinks<M: Send + 'static, A: Send + 'static> {
    /// `senders[to]`: the ring to shard `to` and its wake-up (None for this shard).
    pub(crate) senders: Vec<Option<Sender<M, A>>>,
    /// The rings from every other shard.
    pub(crate) receivers: Vec<(ShardId, Ring<M, A>)>,
    /// This shard's own wake-up.
    pub(crate) wake: Arc<ShardWake>,
    /// Set by an [`OutsideWake`]: the service has something from outside the shards.
    pub(crate) outside: Arc<AtomicBool>,
}

impl<M: Send + 'static, A: Send + 'static> ShardLinks<M, A> {
    /// The handle an outside thread wakes this shard with.
    pub(crate) fn outside_wake(&self) -> OutsideWake {
        OutsideWake {
            wake: self.wake.clone(),
            pending: self.outside.clone(),
        }
    }

    /// Whether an outside thread has notified since the last [`Self::take_outside`].
    pub(crate) fn outside_pending(&self) -> bool {
        self.outside.load(Ordering::SeqCst)
    }

    /// Clears the outside flag; true if it was set (the service then drains its queue:
    /// anything pushed before a notify this clears is already in it).
    pub(crate) fn take_outside(&self) -> bool {
        if !self.outside.load(Ordering::Acquire) {
            return false;
        }
        self.outside.store(false, Ordering::SeqCst);
        true
    }
}

/// Builds every ring and wake-up; returns each shard's ends, in shard order.
pub(crate) fn build<M: Send + 'static, A: Send + 'static>(
    n: usize,
) -> std::io::Result<Vec<ShardLinks<M, A>>> {
    let wakes: Vec<Arc<ShardWake>> = (0..n)
        .map(|_| ShardWake::new().map(Arc::new))
        .collect::<Result<_, _>>()?;
    let mut links: Vec<ShardLinks<M, A>> = wakes
        .iter()
        .map(|w| ShardLinks {
            senders: (0..n).map(|_| None).collect(),
            receivers: Vec::new(),
            wake: w.clone(),
            outside: Arc::new(AtomicBool::new(false)),
        })
        .collect();
    for from in 0..n {
        for to in 0..n {
            if from != to {
                let ring: Ring<M, A> = Arc::new(ArrayQueue::new(MESH_RING_BATCHES));
                links[from].senders[to] = Some((ring.clone(), wakes[to].clone()));
                links[to].receivers.push((ShardId(from), ring));
            }
        }
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_batches_keep_order_and_split_large_batches() {
        let mut o: MeshOutbox<u32, ()> = MeshOutbox::new(2);
        for i in 0..(MESH_BATCH_MSGS_MAX as u32 + 10) {
            o.push(ShardId(1), i).unwrap();
        }
        let first = o.take_batch(ShardId(1));
        assert_eq!(first.len(), MESH_BATCH_MSGS_MAX);
        o.push(ShardId(1), u32::MAX).unwrap();
        // The ring was full: the batch goes back in front of what came since.
        o.put_back(ShardId(1), first);
        let mut all = Vec::new();
        while o.has_for(ShardId(1)) {
            let b = o.take_batch(ShardId(1));
            o.sent(b.len());
            all.extend(b.into_iter().map(|e| match e {
                Envelope::Service(i) => i,
                Envelope::Adopt(..) => panic!("no adoption was queued"),
            }));
        }
        let mut want: Vec<u32> = (0..(MESH_BATCH_MSGS_MAX as u32 + 10)).collect();
        want.push(u32::MAX);
        assert_eq!(all, want);
        assert_eq!(o.queued(), 0, "every message left");
    }

    /// Issue 27: the messages a shard sends itself reuse the list of the batch delivered
    /// before (two lists take turns), in order; a list grown past the cap is not kept.
    #[test]
    fn local_batches_reuse_the_emptied_list_and_keep_order() {
        let me = ShardId(0);
        let mut o: MeshOutbox<u32, ()> = MeshOutbox::new(2);
        o.push(me, 1).unwrap();
        let mut first = o.take_local(me);
        o.sent(first.len());
        o.push(me, 2).unwrap(); // queued while the first batch is delivered
        assert_eq!(first.drain(..).map(unwrap).collect::<Vec<_>>(), [1]);
        let kept = first.as_ptr();
        o.local_done(first);
        let second = o.take_local(me);
        o.sent(second.len());
        assert_eq!(second.into_iter().map(unwrap).collect::<Vec<_>>(), [2]);
        o.push(me, 3).unwrap();
        let third = o.take_local(me);
        assert_eq!(third.as_ptr(), kept, "the first batch's list, reused");
        o.sent(third.len());
        let mut big = Vec::with_capacity(SPARE_LOCAL_BATCH_MSGS_MAX + 1);
        big.push(Envelope::Service(4));
        big.clear();
        o.local_done(big);
        assert_eq!(o.spare_local.capacity(), 0, "too large to keep");
        assert!(o.is_empty());
    }

    fn unwrap(e: Envelope<u32, ()>) -> u32 {
        match e {
            Envelope::Service(m) => m,
            Envelope::Adopt(..) => panic!("no adoptions here"),
        }
    }

    #[test]
    fn an_adoption_is_queued_even_when_the_outbox_is_full() {
        let mut o: MeshOutbox<usize, u8> = MeshOutbox::new(2);
        for i in 0..MESH_OUTBOX_MSGS_MAX {
            o.push(ShardId(1), i).unwrap();
        }
        assert!(o.push(ShardId(1), 7).is_err());
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let detached = Detached {
            fd: a.into(),
            tls: None,
            unread: b"unread".to_vec(),
        };
        o.push_adopt(ShardId(1), detached, 9);
        assert_eq!(o.queued(), MESH_OUTBOX_MSGS_MAX + 1);
    }

    #[test]
    fn outbox_hands_message_back_when_full() {
        let mut o: MeshOutbox<usize, ()> = MeshOutbox::new(1);
        for i in 0..MESH_OUTBOX_MSGS_MAX {
            o.push(ShardId(0), i).unwrap();
        }
        assert_eq!(o.push(ShardId(0), 7), Err(7), "the message comes back");
    }
}

//! One shard: its service, its engine state, and the loop that runs them on one thread.
//!
//! The loop owns the shard's io_uring and is the only place the thread blocks. Each turn
//! ([`run`] reads as this list, one function per step):
//! 1. run the futures the service spawned that are ready (log jobs), and due sleeps;
//! 2. fire due timers (connection deadlines, service timers): `ShardCell::fire_timers`;
//! 3. take batches from the peers' mesh rings and hand them to the service:
//!    `Loop::take_batches`;
//! 4. flush: this shard's mesh outboxes into the peers' rings (one eventfd write per parked
//!    peer), then every connection the service touched (one send each): `Loop::flush`;
//!    re-arm the accept if it ended; publish statistics once a period; on the stop flag,
//!    drain (`Loop::stop_and_drain`, below);
//! 5. submit everything and wait in one `io_uring_enter` — not at all if work is left, else
//!    until a completion, the next timer or sleep, or [`HOUSEKEEPING_SLEEP_MS_MAX`]; while
//!    completions arrive densely the kernel holds them for a batch (`crate::coalesce`):
//!    `Loop::wait_timeout`, `Loop::enter`;
//! 6. handle every completion: accepts, receives (frames to the service), sends, file
//!    operations (wake their futures), the mesh eventfd: `Loop::handle_completions`.
//!
//! There is no task and no reactor source per connection: a connection is its table slot.
//!
//! Shutdown, in order: stop accepting → the service flushes (`on_shutdown`) → every
//! connection flushes its output and closes → the shard exits once its table is empty and
//! the service's flush is done (`Service::flushing`), or `SHUTDOWN_DRAIN_MS` has passed →
//! everything still in flight on the ring is cancelled and reaped (`ring::RING_DRAIN_MS`;
//! past it, the ring and every buffer it may use are leaked, never freed under the kernel)
//! → the ring closes and the buffers go (`shut_down`). A panic never gets here: the process exits from
//! the panic hook before unwinding (`runtime`, fail-fast).
//!
//! A stop for a live upgrade (`Runtime::depart`) drains the same way, except that the
//! connections the service describes detach instead of closing, and the listener is kept:
//! both go back to the runtime for the next process (`upgrade::depart`); a shard started
//! from a departure registers its connections before its first turn.
//!
//! This module owns the shard's loop. It must not reach into another shard's state:
//! everything cross-shard goes through the mesh.

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, types};

use crate::buffer_pool::{HugePages, PoolBacking};
use crate::coalesce::Coalescer;
use crate::conn::io::Scratch;
use crate::conn::listener::{Acceptor, ACCEPT_BACKOFF_MS};
use crate::conn::table::ConnTable;
use crate::mesh::{Batch, Envelope, MeshOutbox, Sent, ShardLinks};
use crate::observe::counters::ShardCounters;
use crate::observe::stats::StatsKeeper;
use crate::ring::buf_ring::BufRing;
use crate::ring::{self, exec, ops, user_data, Completion, Tag};
use crate::service::{CloseReason, Service};
use crate::shard_io::{now_ms, ShardCell, ShardIo, TimerEntry, SERVICE_TIMERS_MAX};
use crate::timer_wheel::{TimerId, TimerWheel};
use crate::upgrade::depart::{Departed, ShardExit};
use crate::EngineConfig;
use proto::ids::ConnId;
use proto::ids::ShardId;

/// Granularity of the shard's timer wheel.
pub const TIMER_TICK_MS: u64 = 10;
/// Slots in the timer wheel (one revolution = slots × tick).
pub const TIMER_SLOTS: usize = 4096;
/// Longest the loop waits in the kernel, so shutdown is noticed promptly.
pub const HOUSEKEEPING_SLEEP_MS_MAX: u64 = 100;
/// How long shutdown waits for connections to flush and close.
pub const SHUTDOWN_DRAIN_MS: u64 = 2_000;
/// Buffers in the shard's provided-buffer ring (a power of two) ...
pub const RECV_BUFS: u16 = 512;
/// ... and the bytes of each: one receive reads at most this much.
pub const RECV_BUF_BYTES: usize = 16 * 1024;
/// Batches taken from one peer's ring per turn, so one busy peer cannot starve the rest.
pub const MESH_BATCHES_PER_TURN_MAX: usize = 64;
/// While a batch waits for room in a full peer ring, the loop looks again this often.
pub const MESH_RETRY_US: u64 = 200;
/// A shard's connection table holds this many times its share of the connection cap:
/// accepts stop at the share, and the rest is room for connections handed to it (a user's
/// home shard adopts at login), so an adoption is not refused because accepts filled the
/// table.
pub const ADOPT_TABLE_FACTOR: usize = 2;
/// While a live upgrade drains, the loop looks at the other shards' quiet flags this often.
pub const DEPART_POLL_MS: u64 = 1;
/// Turns in a row on which every shard must look quiet before departing connections detach.
pub const DEPART_QUIET_TURNS: u32 = 2;
/// Rounds of delivering this shard's messages to itself per turn (each may queue more).
const LOCAL_ROUNDS_MAX: usize = 4;

const _: () = assert!(RECV_BUFS.is_power_of_two());

impl<S: Service> ShardCell<S> {
    /// A batch (the clock was set at this turn's start or after its wait).
    fn deliver(&mut self, from: ShardId, mut batch: Batch<S::Msg, S::Adopt>) {
        self.deliver_batch(from, &mut batch);
    }

    /// A batch from a peer's ring: its hop is timed from the peer's push.
    pub(crate) fn deliver_sent(&mut self, from: ShardId, sent: Sent<S::Msg, S::Adopt>) {
        self.io.latency.mesh_hop.record(sent.at.elapsed());
        self.deliver(from, sent.batch);
    }

    /// Hands each message of `batch` to the service, in order, leaving the list empty.
    fn deliver_batch(&mut self, from: ShardId, batch: &mut Batch<S::Msg, S::Adopt>) {
        for env in batch.drain(..) {
            match env {
                Envelope::Service(m) => {
                    self.io.counters.mesh_msgs_received += 1;
                    self.service.on_mesh(&mut self.io, from, m);
                }
                Envelope::Adopt(d, a) => self.adopt(from, d, a),
            }
        }
    }

    /// Sets the clocks to the turn's start, `now`, and fires every timer due by then.
    pub(crate) fn fire_timers(
        &mut self,
        now: Instant,
        fired: &mut Vec<(TimerId, TimerEntry<S::Timer>)>,
    ) {
        self.io.sync_wall_at(now);
        self.fire_timers_at(self.io.mono_ms, fired);
    }

    /// Fires every timer due at `now` (the shard's monotonic clock, ms).
    pub(crate) fn fire_timers_at(
        &mut self,
        now: u64,
        fired: &mut Vec<(TimerId, TimerEntry<S::Timer>)>,
    ) {
        self.io.mono_ms = now;
        self.io.timers.advance(now, fired);
        for (_, entry) in fired.drain(..) {
            self.io.counters.timers_fired += 1;
            match entry {
                TimerEntry::Handshake(id) => self.handshake_expired(id),
                TimerEntry::Idle(id) => self.idle_check(id),
                TimerEntry::Linger(id) => self.linger_expired(id),
                TimerEntry::Service(t) => {
                    self.io.service_timers -= 1;
                    self.service.on_timer(&mut self.io, t)
                }
            }
        }
    }
}

/// Everything one shard needs, moved into its thread.
pub(crate) struct ShardPlan<M: Send + 'static, A: Send + 'static> {
    pub(crate) id: ShardId,
    pub(crate) listener_fd: OwnedFd,
    pub(crate) links: ShardLinks<M, A>,
    pub(crate) stop: Arc<AtomicBool>,
    /// Set before `stop` for a live upgrade: connections depart instead of closing, and the
    /// listener is kept (`upgrade::depart`).
    pub(crate) depart: Arc<AtomicBool>,
    /// Connections taken over from the previous process, registered before the first turn.
    pub(crate) arrivals: Vec<Departed>,
    /// One flag per shard, for a live upgrade's drain: that shard is quiet (its service's
    /// flush done, no mesh message queued or waiting). Each shard stores only its own.
    pub(crate) quiet: Arc<[AtomicBool]>,
    pub(crate) config: EngineConfig,
    /// This shard's share of the process's connection cap.
    pub(crate) conns_max: usize,
    /// Publishes this shard's statistics; `None` when statistics are off.
    pub(crate) stats: Option<StatsKeeper>,
    /// Told once the service has started and the listener is armed (`/readyz`).
    pub(crate) health: Arc<crate::observe::health::Health>,
}

/// Runs shard `plan.id` on the calling thread until it is stopped and drained: the turn's
/// steps of the module doc, in order, then the shutdown.
pub(crate) fn run<S, F>(plan: ShardPlan<S::Msg, S::Adopt>, make: Arc<F>) -> Option<ShardExit>
where
    S: Service,
    F: Fn(ShardId) -> S + Send + Sync + 'static,
{
    let ShardPlan {
        id,
        listener_fd,
        links,
        stop,
        depart,
        arrivals,
        quiet,
        config,
        conns_max,
        stats,
        health,
    } = plan;
    let bufs = install_ring(id, config.huge_pages);
    let cell = new_cell(id, &config, conns_max, &*make);
    // The service starts before anything can reach it.
    {
        let c = &mut *cell.borrow_mut();
        c.service.on_start(&mut c.io);
        for d in arrivals {
            c.arrive(d);
        }
    }
    let flags = StopFlags {
        stop,
        depart,
        quiet,
    };
    let mut lp = Loop::<S>::new(id, links, listener_fd, bufs, &config, flags, stats);
    lp.acceptor.arm();
    lp.arm_wake();
    health.shard_started();
    // The monotonic clock is read twice a turn: before the wait (it times the turn's work
    // and sets the wait's timeout) and after it. A turn starts on the read after the last
    // wait, which its completions ran on: no read of its own.
    let mut turn = Instant::now();
    loop {
        // 1. Futures and sleeps.
        exec::fire_sleeps(turn);
        exec::run_ready();
        let c = &mut *cell.borrow_mut();
        // 2. Timers.
        c.fire_timers(turn, &mut lp.fired);
        // 3. Peers' batches, and what an outside thread woke the service for.
        lp.take_batches(c);
        if lp.links.take_outside() {
            c.service.on_outside(&mut c.io);
        }
        // 4. Flush; then the accept again if it ended and its back-off is over.
        lp.flush(c);
        lp.acceptor.rearm_if_due(c.io.mono_ms);
        lp.publish_stats(c, turn);
        if lp.stop_and_drain(c) {
            break;
        }
        // 5. Wait.
        let entered = Instant::now();
        let timeout = lp.wait_timeout(c, entered);
        let back = lp.enter(c, timeout);
        // The turn's busy time: its completions and its work (from the last wait's return
        // to this wait), and, if it did not mean to wait, this io_uring_enter too (the
        // kernel's inline work on its submissions: sends copied into sockets, say).
        let mut busy = entered.saturating_duration_since(turn);
        if timeout.is_zero() {
            busy += back.saturating_duration_since(entered);
        }
        let busy = busy.as_nanos() as u64;
        c.io.busy_ns += busy;
        c.io.turn_max_ns = c.io.turn_max_ns.max(busy);
        // 6. Completions, on the clock read after the wait.
        c.io.set_clock(back);
        lp.handle_completions(c);
        turn = back;
    }
    // Gone, so quiet: a shard that left on the drain deadline holds nobody back.
    lp.quiet[id.0].store(true, Ordering::Relaxed);
    let exit = lp.depart.load(Ordering::Relaxed).then(|| ShardExit {
        listener: lp
            .acceptor
            .listener_dup()
            .unwrap_or_else(|e| panic!("shard {}: cannot keep its listener: {e}", id.0)),
        departed: std::mem::take(&mut cell.borrow_mut().io.departures),
    });
    shut_down(cell, lp);
    exit
}

/// Sets up this thread's io_uring and the shard's provided-buffer ring.
fn install_ring(id: ShardId, huge_pages: bool) -> BufRing {
    let features =
        ring::install().unwrap_or_else(|e| panic!("shard {}: cannot set up io_uring: {e}", id.0));
    if id.0 == 0 {
        tracing::info!(%features, "io_uring features found");
    }
    let huge = if huge_pages {
        HugePages::On
    } else {
        HugePages::Off
    };
    match BufRing::new(RECV_BUFS, RECV_BUF_BYTES, huge) {
        Ok((bufs, backing)) => {
            if huge_pages && backing != PoolBacking::HugeTlb {
                tracing::warn!(
                    shard = id.0,
                    ?backing,
                    "huge pages asked for but none reserved; set /proc/sys/vm/nr_hugepages"
                );
            }
            bufs
        }
        Err(e) => panic!(
            "shard {}: cannot set up its receive buffer ring (Linux 6.0+ needed): {e}",
            id.0
        ),
    }
}

/// The shard's service and engine state, with every table sized up front.
fn new_cell<S, F>(
    id: ShardId,
    config: &EngineConfig,
    conns_max: usize,
    make: &F,
) -> Rc<RefCell<ShardCell<S>>>
where
    S: Service,
    F: Fn(ShardId) -> S,
{
    let clock_base = Instant::now();
    let now = 1;
    Rc::new_cyclic(|weak| {
        RefCell::new(ShardCell {
            service: make(id),
            io: ShardIo {
                shard: id,
                shard_count: config.shards,
                now_ms: now_ms(),
                mono_ms: now,
                clock_base,
                wall_offset_ms: now_ms() as i64 - now as i64,
                wall_step_ms: 0,
                idle_timeout_ms: config.idle_timeout_ms,
                frame_timeout_ms: config.frame_timeout_ms,
                conns: ConnTable::with_capacity(conns_max * ADOPT_TABLE_FACTOR),
                timers: TimerWheel::new(
                    TIMER_TICK_MS,
                    TIMER_SLOTS,
                    conns_max * ADOPT_TABLE_FACTOR + SERVICE_TIMERS_MAX,
                    now,
                ),
                mesh: MeshOutbox::new(config.shards),
                counters: ShardCounters::default(),
                latency: Default::default(),
                cell: weak.clone(),
                dirty: Vec::new(),
                spare_bufs: Vec::new(),
                service_timers: 0,
                busy_ns: 0,
                turn_max_ns: 0,
                turns: 0,
                prelogin: crate::conn::prelogin::PreLogin::new(
                    config.prelogin_conns_per_prefix_max,
                ),
                depart_hold: false,
                departures: Vec::new(),
            },
            tls: config.tls.clone(),
            handshake_timeout_ms: config.handshake_timeout_ms,
            accept_max: conns_max,
        })
    })
}

/// What stops the loop: the runtime's stop flag, and whether that stop is a live upgrade's.
struct StopFlags {
    stop: Arc<AtomicBool>,
    depart: Arc<AtomicBool>,
    quiet: Arc<[AtomicBool]>,
}

/// The loop's own state, beside the shard cell.
struct Loop<S: Service> {
    id: ShardId,
    links: ShardLinks<S::Msg, S::Adopt>,
    acceptor: Acceptor,
    /// The mesh eventfd's read target (the kernel writes 8 bytes here).
    wake_buf: Box<u64>,
    bufs: BufRing,
    scratch: Scratch,
    completions: Vec<Completion>,
    /// Whether the next wait batches completions, and for how long.
    coalescer: Coalescer,
    /// The timers the wheel hands back in a turn (emptied each turn, its room kept).
    fired: Vec<(TimerId, TimerEntry<S::Timer>)>,
    stop: Arc<AtomicBool>,
    /// The stop is a live upgrade's (`ShardPlan::depart`).
    depart: Arc<AtomicBool>,
    /// Every shard's quiet flag (`ShardPlan::quiet`).
    quiet: Arc<[AtomicBool]>,
    /// Turns in a row this shard has seen every flag quiet.
    quiet_turns: u32,
    /// Set when the stop flag is first seen: the shard exits by then at the latest.
    drain_until: Option<u64>,
    stats: Option<StatsKeeper>,
    last_stats: Instant,
}

impl<S: Service> Loop<S> {
    fn new(
        id: ShardId,
        links: ShardLinks<S::Msg, S::Adopt>,
        listener: OwnedFd,
        bufs: BufRing,
        config: &EngineConfig,
        StopFlags {
            stop,
            depart,
            quiet,
        }: StopFlags,
        stats: Option<StatsKeeper>,
    ) -> Self {
        Loop {
            id,
            links,
            acceptor: Acceptor::new(listener),
            wake_buf: Box::new(0),
            bufs,
            scratch: Scratch {
                incoming: Vec::new(),
                plain: Vec::new(),
                dirty: Vec::new(),
            },
            completions: Vec::with_capacity(ring::RING_ENTRIES as usize),
            coalescer: Coalescer::new(
                config.coalesce,
                Duration::from_micros(config.coalesce_us),
                Instant::now(),
            ),
            fired: Vec::new(),
            stop,
            depart,
            quiet,
            quiet_turns: 0,
            drain_until: None,
            stats,
            last_stats: Instant::now() - Duration::from_secs(1),
        }
    }

    fn arm_wake(&mut self) {
        let buf: *mut u64 = &mut *self.wake_buf;
        let sqe = opcode::Read::new(types::Fd(self.links.wake.fd()), buf.cast(), 8)
            .build()
            .user_data(user_data(Tag::Wake, 0));
        // SAFETY: `wake_buf` is boxed (stable) and lives as long as the loop, which drops
        // the ring first; the eventfd lives in `links`, also dropped after the ring.
        ring::with(|r| unsafe { r.push(&sqe) });
    }

    /// Whether a peer has pushed a batch this shard has not taken yet.
    fn inbound_waiting(&self) -> bool {
        self.links.outside_pending() || self.links.receivers.iter().any(|(_, r)| !r.is_empty())
    }

    /// Step 3: up to [`MESH_BATCHES_PER_TURN_MAX`] batches from each peer's ring.
    fn take_batches(&self, c: &mut ShardCell<S>) {
        for (from, r) in &self.links.receivers {
            for _ in 0..MESH_BATCHES_PER_TURN_MAX {
                let Some(sent) = r.pop() else { break };
                c.deliver_sent(*from, sent);
            }
        }
    }

    /// Step 4: the mesh outboxes into the peers' rings, then every dirty connection.
    fn flush(&mut self, c: &mut ShardCell<S>) {
        flush_mesh(c, &self.links);
        c.flush_dirty(&mut self.scratch);
        if !c.io.mesh.is_empty() {
            // A handoff queued an adoption while flushing: send it this turn.
            flush_mesh(c, &self.links);
        }
    }

    /// Statistics, at most every few ticks (the keeper publishes once a period).
    fn publish_stats(&mut self, c: &mut ShardCell<S>, now: Instant) {
        if let Some(k) = self.stats.as_mut() {
            if now.saturating_duration_since(self.last_stats)
                >= Duration::from_millis(TIMER_TICK_MS)
            {
                self.last_stats = now;
                k.tick(c);
            }
        }
    }

    /// Stop and drain: once the stop flag is seen, stop accepting, let the service flush and
    /// close every connection. True once the shard may exit: nothing left open and the
    /// service's flush done, or [`SHUTDOWN_DRAIN_MS`] passed.
    fn stop_and_drain(&mut self, c: &mut ShardCell<S>) -> bool {
        if self.drain_until.is_none() && self.stop.load(Ordering::Relaxed) {
            self.drain_until = Some(c.io.mono_now() + SHUTDOWN_DRAIN_MS);
            self.acceptor.stop();
            c.service.on_shutdown(&mut c.io);
            if self.depart.load(Ordering::Relaxed) {
                c.depart_all();
            } else {
                let ids: Vec<ConnId> = c.io.conns.iter().map(|(id, _)| id).collect();
                for id in ids {
                    let _ = c.io.close_with(id, CloseReason::Shutdown);
                }
            }
            c.flush_dirty(&mut self.scratch);
        }
        let Some(until) = self.drain_until else {
            return false;
        };
        if self.depart.load(Ordering::Relaxed) {
            self.hold_departures_until_quiet(c);
        }
        let busy = !c.io.conns.is_empty() || c.service.flushing();
        !busy || c.io.mono_now() >= until
    }

    /// A live upgrade's drain: says whether this shard is quiet, and lets its departing
    /// connections detach once every shard is (`upgrade::depart`, step 3).
    fn hold_departures_until_quiet(&mut self, c: &mut ShardCell<S>) {
        let quiet = !c.service.flushing() && c.io.mesh.is_empty() && !self.inbound_waiting();
        self.quiet[self.id.0].store(quiet, Ordering::Relaxed);
        let all = self.quiet.iter().all(|q| q.load(Ordering::Relaxed));
        // Each flag is a snapshot: a batch pushed into a peer's ring just after that peer
        // looked is seen by it on its next turn. Quiet on consecutive turns of this one,
        // a peer has had that turn.
        self.quiet_turns = if all { self.quiet_turns + 1 } else { 0 };
        c.set_depart_hold(self.quiet_turns < DEPART_QUIET_TURNS);
        c.flush_dirty(&mut self.scratch);
    }

    /// Step 5, before the wait: how long the kernel may keep this turn. Zero when work is
    /// left; else until the next timer or sleep (sleeps set during this turn count too), a
    /// mesh retry or an accept's back-off, at most [`HOUSEKEEPING_SLEEP_MS_MAX`]. A shard
    /// that will wait is parked first, then looks at its rings once more. `now` is the
    /// turn's start: a deadline may be met up to one turn's work late.
    fn wait_timeout(&mut self, c: &ShardCell<S>, now: Instant) -> Duration {
        let next_sleep = exec::fire_sleeps(now);
        let mut timeout = if exec::has_ready() || !c.io.dirty.is_empty() {
            Duration::ZERO
        } else {
            let next_timer = c.io.timers.next_deadline_ms().unwrap_or(u64::MAX);
            let ms = next_timer
                .saturating_sub(c.io.mono_ms)
                .min(HOUSEKEEPING_SLEEP_MS_MAX);
            let mut t = Duration::from_millis(ms);
            if let Some(at) = next_sleep {
                t = t.min(at.saturating_duration_since(now));
            }
            if c.io.mesh.queued() > 0 {
                t = t.min(Duration::from_micros(MESH_RETRY_US));
            }
            if self.acceptor.waiting_to_rearm() {
                t = t.min(Duration::from_millis(ACCEPT_BACKOFF_MS));
            }
            if self.drain_until.is_some() && self.depart.load(Ordering::Relaxed) {
                // Other shards' quiet flags wake nobody: look again soon.
                t = t.min(Duration::from_millis(DEPART_POLL_MS));
            }
            t
        };
        if !timeout.is_zero() {
            self.links.wake.set_parked(true);
            if self.inbound_waiting() {
                timeout = Duration::ZERO;
            }
        }
        timeout
    }

    /// Step 5: submit everything and wait, in one `io_uring_enter`. Returns when it came
    /// back (the clock's one read after the wait).
    fn enter(&mut self, c: &mut ShardCell<S>, timeout: Duration) -> Instant {
        let min_wait = self.coalescer.min_wait();
        if !min_wait.is_zero() && !timeout.is_zero() {
            c.io.counters.ring_waits_batched += 1;
        }
        let entered = ring::with(|r| r.enter(timeout, min_wait, &mut self.completions));
        let back = Instant::now();
        self.coalescer.observe(self.completions.len(), back);
        self.links.wake.set_parked(false);
        if let Err(e) = entered {
            panic!("shard {}: io_uring_enter failed: {e}", self.id.0);
        }
        c.io.turns += 1;
        // Every enter, those a full submission queue forced mid-turn included.
        c.io.counters.ring_enters = ring::with(|r| r.enters);
        back
    }

    /// Step 6: every completion the wait brought.
    fn handle_completions(&mut self, c: &mut ShardCell<S>) {
        c.io.counters.completions += self.completions.len() as u64;
        let mut completions = std::mem::take(&mut self.completions);
        for cqe in completions.drain(..) {
            self.handle_completion(c, cqe);
        }
        self.completions = completions;
        self.bufs.publish();
    }

    fn handle_completion(&mut self, c: &mut ShardCell<S>, cqe: Completion) {
        let (tag, low) = ring::split(cqe.user_data);
        match tag {
            Some(Tag::Op) => ops::complete(low, cqe.result),
            Some(Tag::Recv) => c.on_recv(low as u32, cqe, &mut self.bufs, &mut self.scratch),
            Some(Tag::Send) => c.on_send(low as u32, cqe),
            Some(Tag::Accept) => self.acceptor.on_completion(c, cqe),
            Some(Tag::Wake) => self.arm_wake(),
            Some(Tag::Ignore) | None => {}
        }
    }
}

/// After the last turn: everything still in flight on the ring is cancelled and reaped,
/// the connections left are closed, then the service's futures, the ring and the buffers
/// go, in that order (or, if the kernel still holds requests, are leaked).
fn shut_down<S: Service>(cell: Rc<RefCell<ShardCell<S>>>, lp: Loop<S>) {
    // Everything still in flight (receives, sends, the accept, log writes) is cancelled and
    // reaped before any memory it points at goes: closing the ring's descriptor alone does
    // not wait for the kernel to let go.
    let drained = ring::with(|r| {
        r.drain(Duration::from_millis(ring::RING_DRAIN_MS), |cqe| {
            if let (Some(Tag::Op), low) = ring::split(cqe.user_data) {
                ops::complete(low, cqe.result);
            }
        })
    });
    // Whatever did not close within the drain bound goes now.
    {
        let c = &mut *cell.borrow_mut();
        for (_, slot) in c.io.conns.iter() {
            if slot.wire.fd >= 0 {
                // SAFETY: the shard is exiting; nothing else will use the descriptor.
                unsafe { libc::close(slot.wire.fd) };
            }
        }
    }
    // The service's unfinished futures go while what they hold still exists; then the ring,
    // then the buffers.
    exec::drop_all();
    if drained {
        ring::uninstall();
        drop(lp);
        drop(cell);
    } else {
        // The kernel still holds requests: keep the ring open and every buffer they may use
        // (the receive buffers, send buffers, log writes) allocated for the process's life.
        let in_flight = ring::with(|r| r.in_flight());
        tracing::warn!(
            shard = lp.id.0,
            in_flight,
            "requests still in flight after {} ms: their buffers are leaked, not freed",
            ring::RING_DRAIN_MS
        );
        ring::leak();
        ops::leak_slots();
        std::mem::forget(lp);
        std::mem::forget(cell);
    }
}

/// Moves every queued mesh message on: to this shard's own service, or into the peers'
/// rings (waking each parked peer once). A batch that finds a ring full goes back in front
/// and is retried next turn.
fn flush_mesh<S: Service>(c: &mut ShardCell<S>, links: &ShardLinks<S::Msg, S::Adopt>) {
    let me = c.io.shard;
    for _ in 0..LOCAL_ROUNDS_MAX {
        if !c.io.mesh.has_for(me) {
            break;
        }
        let mut batch = c.io.mesh.take_local(me);
        c.io.mesh.sent(batch.len());
        c.deliver_batch(me, &mut batch);
        c.io.mesh.local_done(batch);
    }
    for (to, sender) in links.senders.iter().enumerate() {
        let Some((ring, wake)) = sender else { continue };
        let to = ShardId(to);
        let mut pushed = false;
        while c.io.mesh.has_for(to) {
            let batch = c.io.mesh.take_batch(to);
            let n = batch.len();
            let sent = Sent {
                at: Instant::now(),
                batch,
            };
            match ring.push(sent) {
                Ok(()) => {
                    c.io.mesh.sent(n);
                    c.io.counters.mesh_batches_sent += 1;
                    pushed = true;
                }
                Err(sent) => {
                    c.io.mesh.put_back(to, sent.batch);
                    break;
                }
            }
        }
        if pushed {
            wake.notify();
        }
    }
}

//! One shard: its service, its engine state, and the tasks that run them on one executor.
//!
//! Tasks per shard: one accept loop on the shard's own SO_REUSEPORT listener, one task per
//! connection (`conn_task`), one receive task per peer ring, a mesh flush task when
//! something is queued, and the housekeeping loop (the shard's main future) that advances
//! the timer wheel and watches for shutdown.
//!
//! Shutdown, in order: stop accepting → the service flushes (`on_shutdown`) → every
//! connection flushes its output and closes → the shard exits once its table is empty and
//! the service's flush is done (`Service::flushing`), or `SHUTDOWN_DRAIN_MS` has passed.
//!
//! This module owns the shard's task structure. It must not reach into another shard's
//! state: everything cross-shard goes through the mesh.

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::net::{TcpListener, TcpStream};

use crate::buffer_pool::{HugePages, PoolBacking};
use crate::conn_table::{ConnId, ConnTable};
use crate::conn_task;
use crate::counters::ShardCounters;
use crate::handoff::Detached;
use crate::mesh::{Envelope, MeshOutbox, Sent, ShardEnds, ShardLinks};
use crate::service::{CloseReason, Service};
use crate::shard_io::{ConnSlot, ShardIo, SlotState, TimerEntry};
use crate::stats::StatsKeeper;
use crate::timer_wheel::TimerWheel;
use crate::tls_session::TlsSession;
use crate::transport::Transport;
use crate::{EngineConfig, ShardId};

/// Granularity of the shard's timer wheel.
pub const TIMER_TICK_MS: u64 = 10;
/// Slots in the timer wheel (one revolution = slots × tick).
pub const TIMER_SLOTS: usize = 4096;
/// Longest the housekeeping loop sleeps, so shutdown is noticed promptly.
pub const HOUSEKEEPING_SLEEP_MS_MAX: u64 = 100;
/// After an accept error (EMFILE, ENOMEM...), wait this long before accepting again.
pub const ACCEPT_BACKOFF_MS: u64 = 50;
/// Service timers a shard may hold beyond one engine timer per connection.
pub const SERVICE_TIMERS_MAX: usize = 65_536;
/// How long shutdown waits for connections to flush and close.
pub const SHUTDOWN_DRAIN_MS: u64 = 2_000;

/// A shard's service and engine state, shared by the shard's tasks (one thread only).
pub(crate) struct ShardCell<S: Service> {
    pub(crate) service: S,
    pub(crate) io: ShardIo<S>,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) handshake_timeout_ms: u64,
    pub(crate) links: Rc<ShardLinks<S::Msg>>,
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    d.map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl<S: Service> ShardCell<S> {
    pub(crate) fn note_rx(&mut self, id: ConnId) {
        let now = self.io.now_ms;
        if let Some(slot) = self.io.conns.get_mut(id) {
            slot.last_rx_ms = now;
        }
    }

    /// The TLS handshake of `id` completed: swap its handshake timer for the idle timer.
    pub(crate) fn handshake_done(&mut self, id: ConnId) {
        self.io.counters.handshakes += 1;
        let slot = self.io.conns.get_mut(id).expect("handshaking slot exists");
        assert_eq!(slot.state, SlotState::Handshaking);
        // `register` set the handshake deadline `handshake_timeout_ms` after the accept.
        let accepted_ms = slot.timer_at_ms.saturating_sub(self.handshake_timeout_ms);
        let took_ms = self.io.now_ms.saturating_sub(accepted_ms);
        self.io.latency.tls_handshake.record_ns(took_ms * 1_000_000);
        slot.state = SlotState::Open;
        if let Some(t) = slot.timer.take() {
            self.io.timers.cancel(t);
        }
        slot.opened = true;
        self.arm_idle(id);
        self.service.on_open(&mut self.io, id);
    }

    fn arm_idle(&mut self, id: ConnId) {
        self.arm_at(id, self.io.now_ms + self.io.idle_timeout_ms);
    }

    /// Sets `id`'s deadline timer (idle or frame) to fire at `deadline`.
    fn arm_at(&mut self, id: ConnId, deadline: u64) {
        let timer = self.io.timers.insert(deadline, TimerEntry::Idle(id)).ok();
        if let Some(slot) = self.io.conns.get_mut(id) {
            slot.timer = timer;
            slot.timer_at_ms = deadline;
        }
    }

    /// Part of a frame is (or is no longer) waiting: a started frame must finish within the
    /// frame timeout, so a client trickling bytes cannot hold its connection forever.
    pub(crate) fn note_partial(&mut self, id: ConnId, partial: bool) {
        let now = self.io.now_ms;
        let due = now + self.io.frame_timeout_ms;
        let Some(slot) = self.io.conns.get_mut(id) else {
            return;
        };
        if !partial {
            slot.partial_since_ms = 0;
            return;
        }
        if slot.partial_since_ms != 0 || slot.state != SlotState::Open {
            return;
        }
        slot.partial_since_ms = now;
        if slot.timer.is_some() && slot.timer_at_ms <= due {
            return;
        }
        if let Some(t) = slot.timer.take() {
            self.io.timers.cancel(t);
        }
        self.arm_at(id, due);
    }

    /// Removes `id` for good and tells the service.
    pub(crate) fn finish(&mut self, id: ConnId, reason: CloseReason) {
        let slot = self.io.conns.remove(id).expect("finishing a live slot");
        if let Some(t) = slot.timer {
            self.io.timers.cancel(t);
        }
        self.io.counters.conns_open -= 1;
        self.io.counters.closes += 1;
        if reason == CloseReason::IdleTimeout {
            self.io.counters.idle_timeouts += 1;
        }
        if reason == CloseReason::HandshakeTimeout {
            self.io.counters.handshake_failures += 1;
        }
        if slot.opened {
            self.service.on_close(&mut self.io, id, reason);
        }
    }

    /// Puts a new socket in the table and starts its task. `None` when the table is full.
    fn register(&mut self, t: Transport, handshaking: bool) -> Option<ConnId> {
        let now = self.io.now_ms;
        let state = if handshaking {
            SlotState::Handshaking
        } else {
            SlotState::Open
        };
        let peer = t.peer_ip();
        let id = match self.io.conns.insert(ConnSlot::new(state, now, peer)) {
            Ok(id) => id,
            Err(_) => {
                self.io.counters.accepts_rejected_full += 1;
                return None;
            }
        };
        self.io.counters.conns_open += 1;
        if handshaking {
            let deadline = now + self.handshake_timeout_ms;
            let timer = self
                .io
                .timers
                .insert(deadline, TimerEntry::Handshake(id))
                .ok();
            let slot = self.io.conns.get_mut(id).expect("just inserted");
            slot.timer = timer;
            slot.timer_at_ms = deadline;
        } else {
            self.arm_idle(id);
        }
        let cell = self
            .io
            .cell
            .upgrade()
            .expect("shard cell alive while its tasks run");
        spawn_deferred(conn_task::drive(cell, id, t));
        Some(id)
    }

    fn accept(&mut self, stream: TcpStream) {
        self.io.counters.accepts += 1;
        self.io.now_ms = now_ms();
        let tls = match &self.tls {
            Some(cfg) => match TlsSession::new(cfg.clone()) {
                Ok(c) => Some(Box::new(c)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start TLS session");
                    return;
                }
            },
            None => None,
        };
        let handshaking = tls.is_some();
        let t = Transport::new(stream, tls);
        let _ = t.set_nodelay();
        if let Some(id) = self.register(t, handshaking) {
            if !handshaking {
                self.io.conns.get_mut(id).expect("just registered").opened = true;
                self.service.on_open(&mut self.io, id);
            }
        }
    }

    fn adopt(&mut self, from: ShardId, detached: Detached, msg: S::Msg) {
        self.io.now_ms = now_ms();
        let t = detached.into_transport();
        match self.register(t, false) {
            Some(id) => {
                self.io.counters.handoffs_in += 1;
                self.io.conns.get_mut(id).expect("just registered").opened = true;
                self.service.on_adopt(&mut self.io, from, id, msg);
            }
            None => self.io.counters.handoff_failures += 1,
        }
    }

    fn deliver(&mut self, from: ShardId, batch: Vec<Envelope<S::Msg>>) {
        self.io.now_ms = now_ms();
        self.deliver_batch(from, batch);
    }

    /// A batch from a peer's ring: its hop is timed from the peer's push.
    fn deliver_sent(&mut self, from: ShardId, sent: Sent<S::Msg>) {
        self.io.latency.mesh_hop.record(sent.at.elapsed());
        self.deliver(from, sent.batch);
    }

    fn deliver_batch(&mut self, from: ShardId, batch: Vec<Envelope<S::Msg>>) {
        for env in batch {
            match env {
                Envelope::Service(m) => {
                    self.io.counters.mesh_msgs_received += 1;
                    self.service.on_mesh(&mut self.io, from, m);
                }
                Envelope::Adopt(d, m) => self.adopt(from, d, m),
            }
        }
    }

    fn fire_timers(
        &mut self,
        fired: &mut Vec<(crate::timer_wheel::TimerId, TimerEntry<S::Timer>)>,
    ) {
        self.io.now_ms = now_ms();
        self.io.timers.advance(self.io.now_ms, fired);
        for (_, entry) in fired.drain(..) {
            self.io.counters.timers_fired += 1;
            match entry {
                TimerEntry::Handshake(id) => {
                    if let Some(slot) = self.io.conns.get_mut(id) {
                        slot.timer = None;
                        if slot.state == SlotState::Handshaking {
                            slot.state = SlotState::Closing(CloseReason::HandshakeTimeout);
                            slot.wake();
                        }
                    }
                }
                TimerEntry::Idle(id) => self.idle_check(id),
                TimerEntry::Service(t) => self.service.on_timer(&mut self.io, t),
            }
        }
    }

    fn idle_check(&mut self, id: ConnId) {
        let now = self.io.now_ms;
        let idle = self.io.idle_timeout_ms;
        let Some(slot) = self.io.conns.get_mut(id) else {
            return;
        };
        slot.timer = None;
        if slot.state != SlotState::Open {
            return;
        }
        let idle_due = slot.last_rx_ms + idle;
        let frame_due = match slot.partial_since_ms {
            0 => u64::MAX,
            since => since + self.io.frame_timeout_ms,
        };
        if now >= frame_due {
            self.io.counters.slow_frames += 1;
            let _ = self.io.close_with(id, CloseReason::SlowFrame);
        } else if now >= idle_due {
            let _ = self.io.close_with(id, CloseReason::IdleTimeout);
        } else {
            self.arm_at(id, idle_due.min(frame_due));
        }
    }
}

/// Spawns `fut` to start on a later turn of the executor, never inside the caller.
///
/// glommio runs a freshly spawned task right away, inside `spawn_local`. Callers here hold
/// the shard cell's borrow (they are service callbacks or run under one), and the task
/// borrows the cell first thing, so it must not start until the caller has returned.
pub(crate) fn spawn_deferred(fut: impl std::future::Future<Output = ()> + 'static) {
    glommio::spawn_local(Deferred {
        yielded: false,
        fut,
    })
    .detach();
}

pin_project_lite::pin_project! {
    /// `fut`, after first yielding once to the executor.
    ///
    /// A hand-written future rather than `async move { yield_now().await; fut.await }`:
    /// rustc lays out such a block with the captured `fut` and the awaited `fut` in separate
    /// slots, so every connection task carried its future twice (872 B instead of 432 B,
    /// measured with `conn-bytes`).
    struct Deferred<F> {
        yielded: bool,
        #[pin]
        fut: F,
    }
}

impl<F: std::future::Future> std::future::Future for Deferred<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        if !*this.yielded {
            *this.yielded = true;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        this.fut.poll(cx)
    }
}

/// Sends every queued batch; spawned by `ShardIo::schedule_mesh_flush`.
pub(crate) fn spawn_mesh_flush<S: Service>(cell: Weak<RefCell<ShardCell<S>>>) {
    spawn_deferred(async move {
        let Some(cell) = cell.upgrade() else { return };
        loop {
            let (me, batches, links) = {
                let mut c = cell.borrow_mut();
                (c.io.shard, c.io.mesh.take_batches(), c.links.clone())
            };
            if batches.is_empty() {
                return;
            }
            for (to, batch) in batches {
                if to == me {
                    cell.borrow_mut().deliver(me, batch);
                    continue;
                }
                let sender = links.senders[to.0]
                    .as_ref()
                    .expect("ring to every other shard");
                let sent = Sent {
                    at: std::time::Instant::now(),
                    batch,
                };
                if sender.send(sent).await.is_err() {
                    tracing::warn!(shard = me.0, peer = to.0, "mesh ring closed; batch dropped");
                }
                cell.borrow_mut().io.counters.mesh_batches_sent += 1;
            }
        }
    });
}

/// Everything one shard needs, moved into its thread.
pub(crate) struct ShardPlan<M: Send + 'static> {
    pub(crate) id: ShardId,
    pub(crate) listener_fd: std::os::fd::OwnedFd,
    pub(crate) ends: ShardEnds<M>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) config: EngineConfig,
    /// This shard's share of the process's connection cap.
    pub(crate) conns_max: usize,
    /// Publishes this shard's statistics; `None` when statistics are off.
    pub(crate) stats: Option<StatsKeeper>,
    /// Told once the service has started and the accept loop runs (`/readyz`).
    pub(crate) health: Arc<crate::health::Health>,
}

/// The shard's main future: set up, serve until stopped, drain.
pub(crate) async fn run<S, F>(plan: ShardPlan<S::Msg>, make: Arc<F>)
where
    S: Service,
    F: Fn(ShardId) -> S + Send + Sync + 'static,
{
    let ShardPlan {
        id,
        listener_fd,
        ends,
        stop,
        config,
        conns_max,
        stats,
        health,
    } = plan;
    let huge = if config.huge_pages {
        HugePages::On
    } else {
        HugePages::Off
    };
    match conn_task::install_scratch(huge) {
        Ok(backing) if config.huge_pages && backing != PoolBacking::HugeTlb => tracing::warn!(
            shard = id.0,
            ?backing,
            "huge pages asked for but none reserved; set /proc/sys/vm/nr_hugepages"
        ),
        Ok(backing) => tracing::debug!(shard = id.0, ?backing, "shard buffers mapped"),
        Err(e) => panic!("shard {}: cannot map its read buffers: {e}", id.0),
    }
    let links = Rc::new(ends.connect().await);
    let now = now_ms();
    let cell = Rc::new_cyclic(|weak| {
        RefCell::new(ShardCell {
            service: make(id),
            io: ShardIo {
                shard: id,
                shard_count: config.shards,
                now_ms: now,
                idle_timeout_ms: config.idle_timeout_ms,
                frame_timeout_ms: config.frame_timeout_ms,
                conns: ConnTable::with_capacity(conns_max),
                timers: TimerWheel::new(
                    TIMER_TICK_MS,
                    TIMER_SLOTS,
                    conns_max + SERVICE_TIMERS_MAX,
                    now,
                ),
                mesh: MeshOutbox::new(config.shards),
                counters: ShardCounters::default(),
                latency: Default::default(),
                cell: weak.clone(),
            },
            tls: config.tls.clone(),
            handshake_timeout_ms: config.handshake_timeout_ms,
            links: links.clone(),
        })
    });
    // The service starts before anything can reach it: glommio runs a spawned task at once,
    // so an accept or a mesh batch could otherwise arrive ahead of `on_start`.
    {
        let c = &mut *cell.borrow_mut();
        c.service.on_start(&mut c.io);
    }
    for (from, _) in &links.receivers {
        spawn_receiver(cell.clone(), links.clone(), *from);
    }
    let listener = crate::listener::attach(listener_fd);
    let acceptor = glommio::spawn_local(accept_loop(cell.clone(), listener));
    health.shard_started();
    housekeeping(&cell, &stop, stats).await;
    drop(acceptor);
    drain(&cell).await;
}

fn spawn_receiver<S: Service>(
    cell: Rc<RefCell<ShardCell<S>>>,
    links: Rc<ShardLinks<S::Msg>>,
    from: ShardId,
) {
    glommio::spawn_local(async move {
        let rx = &links
            .receivers
            .iter()
            .find(|(f, _)| *f == from)
            .expect("ring exists")
            .1;
        while let Some(sent) = rx.recv().await {
            cell.borrow_mut().deliver_sent(from, sent);
        }
    })
    .detach();
}

async fn accept_loop<S: Service>(cell: Rc<RefCell<ShardCell<S>>>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => cell.borrow_mut().accept(stream),
            Err(e) => {
                let errors = {
                    let mut c = cell.borrow_mut();
                    c.io.counters.accept_errors += 1;
                    c.io.counters.accept_errors
                };
                if errors.is_power_of_two() {
                    tracing::warn!(error = %e, errors, "accept failed; backing off");
                }
                glommio::timer::sleep(Duration::from_millis(ACCEPT_BACKOFF_MS)).await;
            }
        }
    }
}

async fn housekeeping<S: Service>(
    cell: &Rc<RefCell<ShardCell<S>>>,
    stop: &AtomicBool,
    mut stats: Option<StatsKeeper>,
) {
    let mut fired = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let sleep_ms = {
            let c = cell.borrow();
            let next = c.io.timers.next_deadline_ms().unwrap_or(u64::MAX);
            next.saturating_sub(c.io.now_ms)
                .clamp(TIMER_TICK_MS, HOUSEKEEPING_SLEEP_MS_MAX)
        };
        glommio::timer::sleep(Duration::from_millis(sleep_ms)).await;
        cell.borrow_mut().fire_timers(&mut fired);
        if let Some(k) = stats.as_mut() {
            k.tick(&cell.borrow());
        }
    }
}

async fn drain<S: Service>(cell: &Rc<RefCell<ShardCell<S>>>) {
    {
        let c = &mut *cell.borrow_mut();
        c.service.on_shutdown(&mut c.io);
        let ids: Vec<ConnId> = c.io.conns.iter().map(|(id, _)| id).collect();
        for id in ids {
            let _ = c.io.close_with(id, CloseReason::Shutdown);
        }
    }
    let deadline = now_ms() + SHUTDOWN_DRAIN_MS;
    let busy = |c: &ShardCell<S>| !c.io.conns.is_empty() || c.service.flushing();
    while busy(&cell.borrow()) && now_ms() < deadline {
        glommio::timer::sleep(Duration::from_millis(TIMER_TICK_MS)).await;
    }
}

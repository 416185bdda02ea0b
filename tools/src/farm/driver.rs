//! One farm thread: an epoll loop over its slice of the users, from ramp to clean close.
//!
//! Phases, each bounded in time, and what moves them on:
//! 1. **Ramp**: connect users at this thread's share of `--connect-rate` (at most
//!    [`CONNECTS_INFLIGHT_MAX`] in flight), retrying failures up to `connect_attempts`. Ends
//!    when every user is up or failed, or at `ramp_timeout_s` → `Ready`.
//! 2. **Hold** until the worker says `Go` (every thread of every worker is ready).
//! 3. **Run** for `duration_s`: heartbeats; in steady/storm, 1:1 (and group) sends at this
//!    thread's share of `--rate`; in storm, every connection drops at `storm_at_s` and
//!    reconnects at once.
//! 4. **Acking**: no new sends; wait for outstanding ServerAcks (at most `drain_s`) → `Sent`.
//! 5. **Hold** until `Drain` (every sender everywhere has stopped).
//! 6. **Draining**: wait for deliveries to go quiet for [`QUIET`] (at most `drain_s`), then
//!    close every connection cleanly → `Done` with the thread's stats and ledger.
//!
//! A `Stop` command, or the worker's channel closing, jumps straight to closing.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::v1::{
    GroupAddPolicy, GroupCreate, GroupPrivacy, GroupSend, LoadTestLogin, Ping, SendMessage,
};
use proto::{ServerFrame, PROTOCOL_VERSION};

use crate::ledger::Ledger;
use crate::net::TlsClient;
use crate::peers::{PeerPicker, Rng};
use crate::source_ips;
use crate::stats::{Counters, Stats};
use crate::workload::{secs, wall_us, BodyStamp, Mode, Pacer, Schedule, Scheduled, Spec};

use super::poller::{Event, Poller};
use super::transport::{Transport, TransportError};
use super::user::{Outcome, Pending, Phase, Tally, User, REDIRECTS_PER_LOGIN_MAX};
use super::wire::Wire;

/// Most connects in flight per thread (ramp and storm alike).
pub const CONNECTS_INFLIGHT_MAX: usize = 512;
/// Longest the loop sleeps in epoll.
const TICK: Duration = Duration::from_millis(5);
/// How often timeouts, retries and heartbeats are scanned.
const SCAN_EVERY: Duration = Duration::from_millis(100);
/// How often progress goes to the worker.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Deliveries silent this long end the drain.
pub const QUIET: Duration = Duration::from_secs(1);
/// Pause before retrying a failed connect.
const RETRY_BACKOFF: Duration = Duration::from_millis(250);
/// Events per epoll_wait.
const EVENTS_PER_WAIT: usize = 1024;
/// Most scheduled sends handled per loop turn (a farm far behind still reads and writes).
const SENDS_PER_TURN_MAX: usize = 4096;
/// Read buffer per thread.
const SCRATCH_BYTES: usize = 64 * 1024;

/// From the worker to a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Start the measured phase.
    Go,
    /// Every sender stopped: drain and close.
    Drain,
    /// Abort: close now and report.
    Stop,
}

/// A thread's progress snapshot (cumulative).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// Users up now.
    pub up: u64,
    /// Connects in flight now.
    pub connecting: u64,
    /// Cumulative counters.
    pub counters: Counters,
    /// send → ack p99 so far, µs.
    pub ack_p99_us: u64,
    /// send → delivery p99 so far, µs.
    pub delivery_p99_us: u64,
    /// The cumulative send → delivery histogram as (µs, count); only with `--interval`.
    #[serde(default)]
    pub delivery: Vec<(u64, u64)>,
}

/// From a thread to the worker.
#[derive(Debug)]
pub enum ThreadEvent {
    /// Ramp finished.
    Ready(usize),
    /// Periodic progress.
    Progress(usize, Snapshot),
    /// Sending finished and acks are in.
    Sent(usize),
    /// Closed everything; the results.
    Done(usize, Box<Stats>, Ledger),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    Ramp {
        deadline: Instant,
    },
    HoldForGo,
    Run {
        until: Instant,
        storm_at: Option<Instant>,
    },
    Acking {
        deadline: Instant,
    },
    HoldForDrain,
    Draining {
        deadline: Instant,
    },
}

struct Group {
    id: u64,
    members: Vec<usize>,
}

/// One thread's state.
pub struct Driver {
    id: usize,
    spec: Arc<Spec>,
    tls: Option<TlsClient>,
    users: Vec<User>,
    poller: Poller,
    events: Vec<Event>,
    frames: Vec<ServerFrame>,
    scratch: Vec<u8>,
    stats: Stats,
    ledger: Ledger,
    rng: Rng,
    picker: Option<PeerPicker>,
    connect_pacer: Pacer,
    /// The open-loop send schedule, from `Go`.
    send_schedule: Option<Schedule>,
    next_to_connect: usize,
    connecting: usize,
    up: usize,
    stage: Stage,
    groups: Vec<Group>,
    group_members: HashMap<u64, usize>,
    last_activity: Instant,
    storm_started: Option<Instant>,
    storm_down: usize,
    commands: Receiver<Command>,
    events_out: Sender<ThreadEvent>,
}

impl Driver {
    /// A thread for users `spec.users_of(worker, thread)`.
    pub fn new(
        spec: Arc<Spec>,
        worker: usize,
        thread: usize,
        tls: Option<TlsClient>,
        commands: Receiver<Command>,
        events_out: Sender<ThreadEvent>,
    ) -> std::io::Result<Driver> {
        let now = Instant::now();
        let users = spec
            .users_of(worker, thread)
            .map(|i| User::new(i, now))
            .collect();
        let picker = spec
            .sends()
            .then(|| PeerPicker::new(spec.conns, spec.peers));
        let connect_rate = spec.per_thread(spec.connect_rate);
        Ok(Driver {
            id: thread,
            tls,
            users,
            poller: Poller::new(EVENTS_PER_WAIT)?,
            events: Vec::with_capacity(EVENTS_PER_WAIT),
            frames: Vec::new(),
            scratch: vec![0; SCRATCH_BYTES],
            stats: Stats::default(),
            ledger: Ledger::default(),
            rng: Rng::new(
                spec.seed ^ ((worker as u64) << 32 | thread as u64).wrapping_mul(0x9E37_79B9),
            ),
            picker,
            connect_pacer: Pacer::new(connect_rate, (connect_rate / 20.0).max(1.0), now),
            send_schedule: None,
            next_to_connect: 0,
            connecting: 0,
            up: 0,
            stage: Stage::Ramp {
                deadline: now + secs(spec.ramp_timeout_s),
            },
            groups: Vec::new(),
            group_members: HashMap::new(),
            last_activity: now,
            storm_started: None,
            storm_down: 0,
            commands,
            events_out,
            spec,
        })
    }

    /// Runs every phase; returns when the thread has reported `Done`.
    pub fn run(mut self) {
        let mut next_scan = Instant::now();
        let mut next_progress = Instant::now() + PROGRESS_EVERY;
        loop {
            // Wake for the next scheduled send, not only every tick: a send is never late
            // by the farm's own sleep.
            let wait = match (&self.stage, &self.send_schedule) {
                (Stage::Run { .. }, Some(s)) => {
                    TICK.min(s.next_at().saturating_duration_since(Instant::now()))
                }
                _ => TICK,
            };
            if let Err(e) = self.poller.wait(wait, &mut self.events) {
                self.stats.error(format!("epoll:{e}"));
            }
            let now = Instant::now();
            let events = std::mem::take(&mut self.events);
            for ev in &events {
                self.on_event(*ev, now);
            }
            self.events = events;
            if !self.on_commands(now) {
                break;
            }
            self.start_connects(now);
            if now >= next_scan {
                self.scan(now);
                next_scan = now + SCAN_EVERY;
            }
            if let Stage::Run { until, .. } = self.stage {
                self.send_due(now.min(until), until);
            }
            if now >= next_progress {
                let _ = self
                    .events_out
                    .send(ThreadEvent::Progress(self.id, self.snapshot()));
                next_progress = now + PROGRESS_EVERY;
            }
            if !self.advance(now) {
                break;
            }
        }
        self.finish();
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            up: self.up as u64,
            connecting: self.connecting as u64,
            counters: self.stats.counters.clone(),
            ack_p99_us: self.stats.ack.summary().p99,
            delivery_p99_us: self.stats.delivery.summary().p99,
            delivery: if self.spec.interval_s > 0.0 {
                self.stats.delivery.to_pairs()
            } else {
                Vec::new()
            },
        }
    }

    /// Handles worker commands; false to stop now.
    fn on_commands(&mut self, now: Instant) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Go) if self.stage == Stage::HoldForGo => self.go(now),
                Ok(Command::Drain) if self.stage == Stage::HoldForDrain => {
                    self.last_activity = now;
                    self.stage = Stage::Draining {
                        deadline: now + secs(self.spec.drain_s),
                    };
                }
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return false,
                Ok(other) => self.stats.error(format!("command:{other:?}:out_of_order")),
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    fn go(&mut self, now: Instant) {
        let storm_at = (self.spec.mode == Mode::Storm).then(|| now + secs(self.spec.storm_at_s));
        self.stage = Stage::Run {
            until: now + secs(self.spec.duration_s),
            storm_at,
        };
        if self.spec.sends() {
            let rate = self.spec.per_thread(self.spec.rate);
            let tick = Duration::from_secs_f64(self.spec.send_tick_ms.max(0.0) / 1000.0);
            self.send_schedule = Some(Schedule::new(rate, now, wall_us()).with_tick(tick));
        }
        if self.spec.sends() && self.spec.group_ratio > 0.0 {
            self.create_groups();
        }
    }

    /// Moves between stages; false when the thread should close.
    fn advance(&mut self, now: Instant) -> bool {
        match self.stage {
            Stage::Ramp { deadline } => {
                let settled = self.next_to_connect == self.users.len()
                    && self.connecting == 0
                    && !self.users.iter().any(|u| u.phase == Phase::Down);
                if settled || now >= deadline {
                    // Users the ramp never reached stay out of the run (counted), so the
                    // measured phase is not also a ramp.
                    for u in &mut self.users[self.next_to_connect..] {
                        u.phase = Phase::Failed;
                        self.stats.counters.ramp_unstarted += 1;
                    }
                    self.next_to_connect = self.users.len();
                    self.stage = Stage::HoldForGo;
                    let _ = self.events_out.send(ThreadEvent::Ready(self.id));
                }
            }
            Stage::Run { until, storm_at } => {
                if storm_at.is_some_and(|t| now >= t) {
                    self.storm(now);
                    self.stage = Stage::Run {
                        until,
                        storm_at: None,
                    };
                }
                if now >= until {
                    // Everything due up to the end of the window goes (or counts as late),
                    // however far behind the farm is: no per-turn cap here. Bounded: each
                    // call takes at least one due send, and none is due after `until`.
                    while self
                        .send_schedule
                        .as_ref()
                        .is_some_and(|s| s.next_at() <= until)
                    {
                        self.send_due(until, until);
                    }
                    self.stage = Stage::Acking {
                        deadline: now + secs(self.spec.drain_s),
                    };
                }
            }
            Stage::Acking { deadline } => {
                let waiting = self.users.iter().any(|u| !u.pending.is_empty());
                if !waiting || now >= deadline {
                    self.stage = Stage::HoldForDrain;
                    let _ = self.events_out.send(ThreadEvent::Sent(self.id));
                }
            }
            Stage::Draining { deadline } => {
                let quiet = now.saturating_duration_since(self.last_activity) >= QUIET;
                return !(quiet || now >= deadline);
            }
            Stage::HoldForGo | Stage::HoldForDrain => {}
        }
        true
    }

    fn token(&self, local: usize) -> u64 {
        (local as u64) << 32 | self.users[local].gen as u64
    }

    /// Starts ramp connects (paced) and due reconnects (in-flight cap only).
    fn start_connects(&mut self, now: Instant) {
        if matches!(self.stage, Stage::Ramp { .. }) && self.next_to_connect < self.users.len() {
            let allowed = self.connect_pacer.take(now);
            for _ in 0..allowed {
                if self.next_to_connect >= self.users.len()
                    || self.connecting >= CONNECTS_INFLIGHT_MAX
                {
                    break;
                }
                let i = self.next_to_connect;
                self.next_to_connect += 1;
                self.connect(i, now);
            }
        }
    }

    fn connect(&mut self, i: usize, now: Instant) {
        let spec = self.spec.clone();
        let u = &mut self.users[i];
        u.gen = u.gen.wrapping_add(1);
        u.attempts += 1;
        u.started = now;
        self.stats.counters.connect_attempts += 1;
        let src = source_ips::pick(&spec.source_ips, u.idx);
        let server = u.home.unwrap_or_else(|| spec.first_server(u.idx));
        match Transport::start(src, server, self.tls.as_ref(), Wire::for_spec(&spec)) {
            Ok(mut t) => {
                // The first frame rides right behind the handshake (MQTT/NATS: connect and
                // subscribe to the user's own topic).
                if spec.logs_in() {
                    let secret = spec.load_test_secret.as_deref().unwrap_or("");
                    t.queue(
                        &LoadTestLogin {
                            protocol_version: PROTOCOL_VERSION,
                            phone: spec.phone(u.idx),
                            secret: secret.as_bytes().to_vec(),
                        }
                        .into(),
                    );
                } else {
                    t.queue(&Ping { nonce: u.idx }.into());
                }
                let token = (i as u64) << 32 | u.gen as u64;
                if let Err(e) = self.poller.add(t.fd(), token, true) {
                    self.stats.error(format!("epoll_add:{}", e.kind()));
                    self.fail_attempt(i, now, "epoll".into());
                    return;
                }
                let u = &mut self.users[i];
                u.watching_write = true;
                u.conn = Some(t);
                u.phase = Phase::Connecting;
                self.connecting += 1;
            }
            Err(e) => self.fail_attempt(i, now, e.kind()),
        }
    }

    /// A connect attempt failed: count it, schedule a retry or give up.
    fn fail_attempt(&mut self, i: usize, now: Instant, kind: String) {
        self.stats.counters.connect_errors += 1;
        self.stats.error(kind);
        self.drop_conn(i);
        let max = self.spec.connect_attempts.max(1);
        let u = &mut self.users[i];
        if u.attempts >= max {
            u.phase = Phase::Failed;
            if u.in_storm {
                u.in_storm = false;
                self.storm_down -= 1;
            }
        } else {
            u.phase = Phase::Down;
            u.retry_at = now + RETRY_BACKOFF * u.attempts;
        }
    }

    /// Forgets user `i`'s connection (abruptly) and fixes the gauges.
    fn drop_conn(&mut self, i: usize) {
        let u = &mut self.users[i];
        match u.phase {
            Phase::Connecting | Phase::WaitingUp => self.connecting -= 1,
            Phase::Up => self.up -= 1,
            Phase::Down | Phase::Failed => {}
        }
        if let Some(t) = u.conn.take() {
            self.poller.delete(t.fd());
        }
        u.phase = Phase::Down;
        u.watching_write = false;
    }

    fn on_event(&mut self, ev: Event, now: Instant) {
        let i = (ev.token >> 32) as usize;
        if i >= self.users.len() || self.token(i) != ev.token || self.users[i].conn.is_none() {
            return; // stale: the connection it named is gone
        }
        if let Err(e) = self.io(i, ev) {
            self.on_conn_error(i, now, e);
            return;
        }
        self.after_io(i, now);
    }

    fn io(&mut self, i: usize, ev: Event) -> Result<(), TransportError> {
        let u = &mut self.users[i];
        // Invariant: on_event checked that the user has a connection.
        let t = u.conn.as_mut().expect("live connection");
        if ev.writable {
            t.on_writable()?;
        }
        if ev.readable {
            let r = t.on_readable(&mut self.scratch, &mut self.frames);
            // Frames that arrived before an error still count.
            if r.is_err() && self.frames.is_empty() {
                return r;
            }
            self.dispatch(i);
            return r;
        }
        Ok(())
    }

    fn dispatch(&mut self, i: usize) {
        let now = Instant::now();
        let frames = std::mem::take(&mut self.frames);
        for f in frames {
            let mut tally = Tally {
                stats: &mut self.stats,
                ledger: &mut self.ledger,
                spec: &self.spec,
                rng: &mut self.rng,
                group_members: &self.group_members,
                last_activity: &mut self.last_activity,
            };
            match self.users[i].on_frame(f, now, &mut tally) {
                Outcome::Continue => {}
                Outcome::CameUp => self.came_up(i, now),
                Outcome::LoginRefused => {
                    self.stats.counters.login_errors += 1;
                    // A refused login is final: retrying cannot fix a bad secret.
                    self.users[i].attempts = u32::MAX;
                    self.fail_attempt(i, now, "login_refused".into());
                    return;
                }
                Outcome::Redirect(home) => {
                    self.stats.counters.redirects += 1;
                    let u = &mut self.users[i];
                    u.home = Some(home);
                    u.redirects += 1;
                    if u.redirects > REDIRECTS_PER_LOGIN_MAX {
                        u.attempts = u32::MAX;
                        self.fail_attempt(i, now, "redirect_loop".into());
                        return;
                    }
                    // Not a failed attempt: reconnect to the home box at once.
                    u.attempts = u.attempts.saturating_sub(1);
                    self.drop_conn(i);
                    self.users[i].retry_at = now;
                    return;
                }
                Outcome::GroupCreated { req, group_id } => {
                    if let Some(g) = self.groups.get_mut(req as usize) {
                        g.id = group_id;
                        self.group_members.insert(group_id, g.members.len());
                        let idx = g.members.iter().map(|&m| self.users[m].idx).collect();
                        self.ledger.groups.push((group_id, idx));
                    }
                }
            }
        }
    }

    fn came_up(&mut self, i: usize, now: Instant) {
        let jitter = 0.5 + self.rng.unit();
        let interval = secs(self.spec.ping_interval_s * jitter);
        let groups = self.spec.sends() && self.spec.group_ratio > 0.0;
        let u = &mut self.users[i];
        if u.phase != Phase::Connecting && u.phase != Phase::WaitingUp {
            return;
        }
        u.redirects = 0;
        if groups {
            // Farm users are strangers to each other, and by default only contacts may add
            // someone to a group: let the group's creator add them (before any group is
            // made: groups are created at Go, once every user is up).
            u.queue(GroupPrivacy {
                who_can_add: GroupAddPolicy::Everyone as i32,
            });
        }
        self.connecting -= 1;
        self.up += 1;
        u.phase = Phase::Up;
        u.attempts = 0;
        u.session_no += 1;
        u.next_ping = now + interval;
        self.stats
            .connect
            .record(now.saturating_duration_since(u.started).as_micros() as u64);
        if !u.ever_up {
            u.ever_up = true;
            self.stats.counters.connections_established += 1;
        }
        if u.in_storm {
            u.in_storm = false;
            self.stats.counters.storm_reconnected += 1;
            self.storm_down -= 1;
            if self.storm_down == 0 {
                if let Some(t0) = self.storm_started {
                    self.stats.storm_recovery_ms =
                        now.saturating_duration_since(t0).as_millis() as u64;
                }
            }
        }
    }

    /// After reads/writes: promote to WaitingUp once the transport is ready, flush, and
    /// watch for writability only while bytes wait.
    fn after_io(&mut self, i: usize, now: Instant) {
        let token = self.token(i);
        let u = &mut self.users[i];
        let Some(t) = u.conn.as_mut() else { return };
        if u.phase == Phase::Connecting && t.handshake_done() {
            u.phase = Phase::WaitingUp;
        }
        if let Err(e) = t.flush() {
            self.on_conn_error(i, now, e);
            return;
        }
        let want = t.wants_write();
        if want != u.watching_write {
            if let Err(e) = self.poller.modify(t.fd(), token, want) {
                self.stats.error(format!("epoll_mod:{}", e.kind()));
            }
            u.watching_write = want;
        }
    }

    fn on_conn_error(&mut self, i: usize, now: Instant, e: TransportError) {
        match self.users[i].phase {
            Phase::Connecting | Phase::WaitingUp => self.fail_attempt(i, now, e.kind()),
            Phase::Up => {
                if matches!(e, TransportError::Eof) {
                    self.stats.counters.closed_by_server += 1;
                }
                self.stats.error(format!("closed:{}", e.kind()));
                let u = &mut self.users[i];
                u.last_abrupt = u.session_no;
                u.pending.clear();
                self.drop_conn(i);
                let u = &mut self.users[i];
                u.retry_at = now + RETRY_BACKOFF;
            }
            // Already handled (a refused login closed it while its frames were read).
            Phase::Down | Phase::Failed => {}
        }
    }

    /// Timeouts, retries, heartbeats.
    fn scan(&mut self, now: Instant) {
        let timeout = secs(self.spec.connect_timeout_s);
        let ramping = matches!(self.stage, Stage::Ramp { .. });
        let closing = matches!(self.stage, Stage::Draining { .. });
        for i in 0..self.users.len() {
            match self.users[i].phase {
                Phase::Connecting | Phase::WaitingUp
                    if now.saturating_duration_since(self.users[i].started) > timeout =>
                {
                    let what = if self.users[i].phase == Phase::Connecting {
                        "connect"
                    } else {
                        "login"
                    };
                    self.fail_attempt(i, now, format!("timeout:{what}"));
                }
                Phase::Down
                    if self.users[i].retry_at <= now
                        && self.connecting < CONNECTS_INFLIGHT_MAX
                        && !closing
                        && (!ramping || i < self.next_to_connect) =>
                {
                    self.connect(i, now);
                }
                Phase::Up if self.users[i].next_ping <= now => {
                    let interval = secs(self.spec.ping_interval_s);
                    let u = &mut self.users[i];
                    u.next_ping = now + interval;
                    u.queue(Ping { nonce: u.idx });
                    self.stats.counters.pings += 1;
                    self.after_io(i, now);
                }
                _ => {}
            }
        }
    }

    /// Storm: every connection drops at once (no close_notify, like a network blip) and
    /// comes straight back.
    fn storm(&mut self, now: Instant) {
        self.storm_started = Some(now);
        for i in 0..self.users.len() {
            if self.users[i].conn.is_none() {
                continue;
            }
            let unacked = self.users[i].pending.len() as u64;
            self.stats.counters.storm_unacked += unacked;
            self.stats.counters.storm_drops += 1;
            self.drop_conn(i);
            let u = &mut self.users[i];
            u.pending.clear();
            u.last_abrupt = u.session_no;
            u.attempts = 0;
            u.retry_at = now;
            u.in_storm = true;
            self.storm_down += 1;
        }
    }

    /// Sends every message the open-loop schedule has made due, each stamped with its
    /// scheduled time. One that cannot go (no user up, the in-flight cap, no group yet) is
    /// counted in `sends_skipped` and recorded as late: its delivery latency is at least the
    /// time from its schedule to the end of the drain, when the farm stops waiting.
    fn send_due(&mut self, now: Instant, until: Instant) {
        let Some(picker) = self.picker.clone() else {
            return;
        };
        let Some(mut schedule) = self.send_schedule.take() else {
            return;
        };
        for _ in 0..SENDS_PER_TURN_MAX {
            let Some(due) = schedule.next_due(now) else {
                break;
            };
            self.stats.counters.sends_due += 1;
            self.stats
                .send_lag
                .record(now.saturating_duration_since(due.at).as_micros() as u64);
            let group = self.spec.group_ratio > 0.0 && self.rng.unit() < self.spec.group_ratio;
            let sent = if group {
                self.send_group(due, now)
            } else {
                self.send_one(&picker, due, now)
            };
            if !sent {
                self.stats.counters.sends_skipped += 1;
                let gave_up = until + secs(self.spec.drain_s);
                self.stats
                    .delivery
                    .record(gave_up.saturating_duration_since(due.at).as_micros() as u64);
            }
        }
        self.send_schedule = Some(schedule);
    }

    /// One 1:1 message from a random user that is up; false if none could send.
    fn send_one(&mut self, picker: &PeerPicker, due: Scheduled, now: Instant) -> bool {
        let Some(i) = self.random_up_user() else {
            return false;
        };
        let to = picker.pick(self.users[i].idx, &mut self.rng);
        let Some(cmid) = self.reserve(i, due, 0) else {
            return false;
        };
        let u = &mut self.users[i];
        let body = BodyStamp {
            sender: u.idx,
            client_msg_id: cmid,
            sent_at_us: due.wall_us,
        }
        .encode(self.spec.body_bytes);
        u.queue(SendMessage {
            to: self.spec.phone(to),
            client_msg_id: cmid,
            body: body.into(),
            media: None,
        });
        self.ledger.sent.push(((u.idx, cmid), to));
        self.stats.counters.messages_sent += 1;
        if !self.spec.server_acks() {
            self.accepted_unacknowledged(i, cmid);
        }
        self.after_io(i, now);
        true
    }

    /// A protocol without acknowledgements (MQTT QoS 0, NATS): the message counts as accepted
    /// once written, so the ledger calls it lost if it never arrives. No ack latency.
    fn accepted_unacknowledged(&mut self, i: usize, cmid: u64) {
        let u = &mut self.users[i];
        u.pending.remove(&cmid);
        self.stats.counters.server_acked += 1;
        self.ledger.acked.push((u.idx, cmid));
    }

    /// Takes the next client_msg_id of user `i` and records it pending since its scheduled
    /// time; `None` if the user already has the most in flight.
    fn reserve(&mut self, i: usize, due: Scheduled, group_id: u64) -> Option<u64> {
        let u = &mut self.users[i];
        if u.pending.len() >= self.spec.inflight_per_conn_max {
            return None;
        }
        let cmid = u.next_cmid;
        u.next_cmid += 1;
        u.pending.insert(
            cmid,
            Pending {
                at: due.at,
                group_id,
            },
        );
        Some(cmid)
    }

    fn random_up_user(&mut self) -> Option<usize> {
        if self.up == 0 {
            return None;
        }
        // Bounded: a few random probes, then a linear search from a random start.
        let n = self.users.len();
        for _ in 0..8 {
            let i = self.rng.below(n as u64) as usize;
            if self.users[i].phase == Phase::Up {
                return Some(i);
            }
        }
        let start = self.rng.below(n as u64) as usize;
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.users[i].phase == Phase::Up)
    }

    /// Groups are blocks of `group_size` consecutive users of this thread, created by the
    /// block's first user, so every member's deliveries are counted in this thread.
    fn create_groups(&mut self) {
        let size = self.spec.group_size;
        let n = self.users.len();
        for (req, start) in (0..n).step_by(size).enumerate() {
            let end = (start + size).min(n);
            if end - start < 2 {
                break;
            }
            let members: Vec<usize> = (start..end).collect();
            let phones = members[1..]
                .iter()
                .map(|&m| self.spec.phone(self.users[m].idx))
                .collect();
            self.groups.push(Group { id: 0, members });
            let name = format!("farm-{}", self.users[start].idx);
            self.users[start].queue(GroupCreate {
                client_req_id: req as u64,
                name,
                members: phones,
            });
            self.after_io(start, Instant::now());
        }
    }

    /// One group message from a random member of a random created group; false if it could
    /// not go.
    fn send_group(&mut self, due: Scheduled, now: Instant) -> bool {
        let ready: Vec<usize> = (0..self.groups.len())
            .filter(|&g| self.groups[g].id != 0)
            .collect();
        if ready.is_empty() {
            return false;
        }
        let g = ready[self.rng.below(ready.len() as u64) as usize];
        let members = &self.groups[g].members;
        let i = members[self.rng.below(members.len() as u64) as usize];
        let group_id = self.groups[g].id;
        if self.users[i].phase != Phase::Up {
            return false;
        }
        let Some(cmid) = self.reserve(i, due, group_id) else {
            return false;
        };
        let u = &mut self.users[i];
        let body = BodyStamp {
            sender: u.idx,
            client_msg_id: cmid,
            sent_at_us: due.wall_us,
        }
        .encode(self.spec.body_bytes);
        u.queue(GroupSend {
            group_id,
            client_msg_id: cmid,
            body,
            media: None,
        });
        self.stats.counters.group_sent += 1;
        self.ledger.group_sent.push(((u.idx, cmid), group_id));
        self.after_io(i, now);
        true
    }

    /// Closes every connection cleanly and reports.
    fn finish(mut self) {
        for u in &mut self.users {
            if let Some(t) = u.conn.take() {
                self.poller.delete(t.fd());
                t.close_clean();
            }
        }
        let _ = self.events_out.send(ThreadEvent::Done(
            self.id,
            Box::new(std::mem::take(&mut self.stats)),
            std::mem::take(&mut self.ledger),
        ));
    }
}

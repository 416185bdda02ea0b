//! The engine adapter: the `engine::Service` a shard runs. It decodes and validates frames,
//! hands them to the shard's state machines ([`ShardState`], the messaging core) and carries
//! out the effects they ask for; `commit.rs` runs the journal's group commit on the engine.
//! It owns no sockets (the engine does) and no service rules (the state machines do).

mod cluster;
mod cluster_groups;
mod commit;
pub mod login_deadline;
pub mod overload;
pub mod random;
pub mod stats;

use std::path::PathBuf;
use std::sync::Arc;

use engine::log_file::LogFaults;
use engine::{CloseReason, LogFile, Service, ShardHandle, ShardIo};
use proto::codec::{decode_client, encode_frame, FrameError};
use proto::ids::{ConnId, ShardId};
use proto::v1::{server_frame, ServerFrame};

use messaging::durable::journal::Journal;
use messaging::durable::record::{self, LogBytes};
use messaging::durable::snapshot::SnapshotWalk;
use messaging::handlers::mesh_back::{HandedBack, Held};
use messaging::state::effect::{AfterCommit, Effect, Out};
use messaging::state::limits::{COMPACT_MIN_BYTES, MESH_HELD_RETRY_MS};
use messaging::state::mesh_msg::{Adoption, ShardMsg};
use messaging::state::{ServiceSettings, ShardState};

use crate::adapter::login_deadline::LoginDeadlines;
use crate::adapter::overload::{Load, OverloadLimits};
use crate::adapter::random::os_random;
use crate::adapter::stats::{STAT_QUEUE_ITEMS, STAT_QUEUE_ITEMS_USER_MAX};
use crate::notify::pin_replies::{PinReplies, PIN_REPLY_POLL_MS};
use crate::notify::{PushProvider, SmsGateway};
use commit::{open_log, Start};

// The window (plus the one item always allowed) takes at most half the engine's
// per-connection output, leaving the rest for acks, receipts and presence.
const _: () = assert!(
    messaging::state::limits::DELIVERY_WINDOW_BYTES
        + proto::limits::FRAME_BYTES_MAX
        + proto::limits::FRAME_HEADER_BYTES
        < engine::conn::slot::CONN_OUTPUT_BYTES_MAX / 2
);

/// Delay before a failed log write is tried again.
pub const COMMIT_RETRY_MS: u64 = 1_000;
/// Room of the effects list kept from one event for the next (larger ones are freed).
pub const SPARE_EFFECTS_MAX: usize = 64;

/// What every shard's service shares (read-only after start).
#[derive(Debug, Clone)]
pub struct ServiceEnv {
    /// Durable state lives here.
    pub data_dir: PathBuf,
    /// Settings for the state machines.
    pub settings: ServiceSettings,
    /// Where PINs go.
    pub sms: Arc<dyn SmsGateway>,
    /// Who hears about waiting messages.
    pub push: Arc<dyn PushProvider>,
    /// Log size below which compaction never runs.
    pub compact_min_bytes: u64,
    /// When new sends are refused with `Busy`.
    pub overload: OverloadLimits,
    /// The data directory's lock, held while any shard runs (`None` in tests without one).
    pub data_dir_lock: Option<Arc<crate::data::lock::DataDirLock>>,
    /// Faults injected into the log files (tests only).
    pub log_faults: Option<Arc<LogFaults>>,
    /// How long a commit gathers before it starts when none is in flight.
    pub commit_window: std::time::Duration,
    /// A connection not logged in this long after it opened is closed (`login_deadline.rs`).
    pub login_timeout_ms: u64,
    /// The media service's counters, on the shard that reports them (shard 0), else `None`.
    pub media_counters: Option<Arc<crate::media::counters::MediaCounters>>,
    /// The link to the cluster gateway (`crate::cluster`); `None` for a box alone.
    pub cluster: Option<Arc<crate::cluster::ClusterLink>>,
}

impl ServiceEnv {
    /// Dev defaults: SMS to `<data_dir>/sms-outbox.txt`, push to the log.
    pub fn dev(data_dir: PathBuf) -> Self {
        let outbox = data_dir.join("sms-outbox.txt");
        ServiceEnv {
            data_dir,
            settings: ServiceSettings::default(),
            sms: Arc::new(crate::notify::DevOutbox::new(outbox)),
            push: Arc::new(crate::notify::DevPush),
            compact_min_bytes: COMPACT_MIN_BYTES,
            overload: OverloadLimits::default(),
            data_dir_lock: None,
            log_faults: None,
            commit_window: std::time::Duration::from_micros(
                messaging::state::limits::COMMIT_WINDOW_US_DEFAULT,
            ),
            login_timeout_ms: messaging::state::limits::LOGIN_TIMEOUT_MS_DEFAULT,
            media_counters: None,
            cluster: None,
        }
    }
}

/// Timers the service sets.
#[derive(Debug)]
pub enum ServiceTimer {
    /// Try the failed log write again.
    RetryCommit,
    /// Write the tombstones that had nothing else to ride on.
    FlushTombstones,
    /// Look for reports of PINs sent (while registrations wait for them).
    PinReplies,
    /// Close the connections past their log-in deadline.
    LoginDeadlines,
    /// Release the pre-login frames the cluster gateway answered (`adapter/cluster.rs`).
    ClusterAnswers,
}

/// The service of one shard.
pub struct Switchboard {
    env: ServiceEnv,
    state: Option<ShardState>,
    journal: Journal<LogFile>,
    log_path: PathBuf,
    /// Bytes of the log replayed at start.
    replayed_len: u64,
    /// A commit window is running (its task starts the commit when it ends).
    window_armed: bool,
    /// A tombstone flush timer is set.
    tombstone_timer_set: bool,
    /// Log-sync and delivery latencies, since start.
    latency: stats::Latency,
    /// The log's length after the last finished job.
    log_bytes: u64,
    /// Registrations waiting to hear whether their PIN went out.
    pins: PinReplies,
    /// A [`ServiceTimer::PinReplies`] is set.
    pins_timer: bool,
    /// The compaction snapshot being built, a slice per loop turn (`snapshot.rs`).
    snapshot: Option<SnapshotBuild>,
    /// A finished snapshot, waiting for the log to be free.
    snapshot_ready: Option<Vec<u8>>,
    /// Snapshots finished and slices taken, since start.
    snapshots: u64,
    snapshot_slices: u64,
    /// Owed mesh messages the full outbox handed back, waiting for room (`mesh_back.rs`).
    held: Held,
    /// A task sends the held messages again (one at a time).
    held_task: bool,
    /// Rate limit of the handed-back log lines.
    mesh_log: messaging::state::counters::RefusalLog,
    /// Connections that must log in by a deadline.
    logins: LoginDeadlines,
    /// Sends refused with `Busy` since start (each event's `Out::busy_refusals`).
    busy_rejects: u64,
    /// The last event's emptied lists of effects, records and effects after the commit,
    /// reused by the next (`fresh_out`, `keep_lists`).
    spare_effects: Vec<Effect>,
    spare_records: Vec<record::Record>,
    spare_after: Vec<AfterCommit>,
    /// This shard's end of the cluster link (set in `on_start`; `None` without `--cluster`).
    cluster: Option<crate::cluster::port::Port>,
}

/// A snapshot under way and the bytes it has written so far.
struct SnapshotBuild {
    walk: SnapshotWalk,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Switchboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switchboard")
            .field("state", &self.state)
            .finish()
    }
}

/// Queues `frame` to `conn`. A connection already gone is not an error: its `on_close` has
/// been (or will be) delivered and cleans up.
fn send_frame(io: &mut ShardIo<Switchboard>, conn: ConnId, kind: server_frame::Kind) {
    let frame = ServerFrame { kind: Some(kind) };
    let _ = io.send_with(conn, |out| {
        // Server frames are built from fields bounded by the wire limits; an oversized one
        // is our bug.
        encode_frame(&frame, out).expect("server frame within FRAME_BYTES_MAX");
    });
}

/// Queues an encoded `ServerFrame` to `conn` behind its length header, as it is.
fn send_wire(io: &mut ShardIo<Switchboard>, conn: ConnId, frame: &[u8]) {
    // Items are built from fields bounded by the wire limits; an oversized one is our bug.
    assert!(
        frame.len() <= proto::limits::FRAME_BYTES_MAX,
        "item frame within FRAME_BYTES_MAX"
    );
    let _ = io.send_with(conn, |out| {
        out.reserve(proto::limits::FRAME_HEADER_BYTES + frame.len());
        // Cannot truncate: FRAME_BYTES_MAX <= u32::MAX (asserted in limits.rs).
        out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        out.extend_from_slice(frame);
    });
}

impl Switchboard {
    /// The service for one shard; its state is loaded in `on_start`.
    pub fn new(env: ServiceEnv) -> Self {
        Switchboard {
            journal: Journal::new(env.compact_min_bytes),
            env,
            state: None,
            log_path: PathBuf::new(),
            replayed_len: 0,
            window_armed: false,
            tombstone_timer_set: false,
            latency: Default::default(),
            log_bytes: 0,
            pins: PinReplies::default(),
            pins_timer: false,
            snapshot: None,
            snapshot_ready: None,
            snapshots: 0,
            snapshot_slices: 0,
            held: Default::default(),
            held_task: false,
            mesh_log: Default::default(),
            logins: LoginDeadlines::default(),
            busy_rejects: 0,
            spare_effects: Vec::new(),
            spare_records: Vec::new(),
            spare_after: Vec::new(),
            cluster: None,
        }
    }

    /// Polls for PIN reports in [`PIN_REPLY_POLL_MS`] unless a poll is already set. A full
    /// timer wheel leaves it unset: the next PIN sent tries again, and every waiting
    /// registration still hears at its deadline once a poll runs.
    fn poll_pins_later(&mut self, io: &mut ShardIo<Self>) {
        if !self.pins_timer {
            let at = io.now_ms() + PIN_REPLY_POLL_MS;
            self.pins_timer = io.set_timer(at, ServiceTimer::PinReplies).is_ok();
        }
    }

    /// `conn` must log in within the login timeout from now (`login_deadline.rs`).
    fn must_log_in(&mut self, io: &mut ShardIo<Self>, conn: ConnId) {
        let deadline = io.now_ms() + self.env.login_timeout_ms;
        let live = io.connection_count();
        let waiting = |c| io.is_open(c) && !io.is_logged_in(c);
        self.logins.push(deadline, conn, live, waiting);
        self.login_timer(io);
    }

    /// Sets the deadline timer for the earliest deadline, if none is set.
    fn login_timer(&mut self, io: &mut ShardIo<Self>) {
        if let (false, Some(at)) = (self.logins.timer_set, self.logins.next_at()) {
            // A full timer wheel leaves it unset: the next connection's push tries again.
            self.logins.timer_set = io.set_timer(at, ServiceTimer::LoginDeadlines).is_ok();
        }
    }

    /// Answers and closes every connection past its deadline and still not logged in.
    fn close_late_logins(&mut self, io: &mut ShardIo<Self>) {
        let now = io.now_ms();
        let secs = self.env.login_timeout_ms / 1000;
        while let Some(conn) = self.logins.pop_due(now) {
            if !io.is_open(conn) || io.is_logged_in(conn) {
                continue;
            }
            self.run(io, |s, _, out| {
                s.count_login_timeout();
                out.fail(
                    conn,
                    proto::v1::ErrorCode::NotLoggedIn,
                    &format!("not logged in within {secs} s of connecting"),
                );
            });
        }
        self.login_timer(io);
    }

    /// PINs that certainly never reached their phone no longer hold its back-off.
    fn lift_unsent_backoffs(&mut self, now: u64) {
        for phone in self.pins.take_unsent() {
            self.state().pin_not_sent(&phone, now);
        }
    }

    fn state(&mut self) -> &mut ShardState {
        // Set in on_start, which the engine calls before any other callback.
        self.state.as_mut().expect("state loaded in on_start")
    }

    fn run(&mut self, io: &mut ShardIo<Self>, f: impl FnOnce(&mut ShardState, u64, &mut Out)) {
        let now = io.now_ms();
        let load = Load {
            journal_pending_bytes: self.journal.pending_bytes(),
            mesh_queued: io.mesh_queued() + self.held.len(),
        };
        let busy = self.env.overload.busy(load);
        let mut out = self.fresh_out();
        let state = self.state();
        state.set_busy(busy);
        f(state, now, &mut out);
        let rejects = self.busy_rejects;
        let after = rejects + out.busy_refusals;
        self.busy_rejects = after;
        if (rejects + 1..=after).any(u64::is_power_of_two) {
            // Logged at 1, 2, 4, 8... refusals, not per frame.
            tracing::warn!(
                shard = io.shard_id().0,
                rejects = after,
                ?load,
                "overloaded: sends refused with Busy"
            );
        }
        self.apply(io, out);
    }

    /// An empty `Out` whose lists are the ones the last event emptied (their room kept):
    /// no allocation per event for them.
    fn fresh_out(&mut self) -> Out {
        Out {
            now: std::mem::take(&mut self.spare_effects),
            records: std::mem::take(&mut self.spare_records),
            after_commit: std::mem::take(&mut self.spare_after),
            ..Out::default()
        }
    }

    /// Carries out `effects` and keeps the emptied list for the next event, unless it grew
    /// past [`SPARE_EFFECTS_MAX`] (one large fan-out does not hold its room for good).
    fn exec_all(&mut self, io: &mut ShardIo<Self>, mut effects: Vec<Effect>) {
        for e in effects.drain(..) {
            self.exec(io, e);
        }
        if effects.capacity() <= SPARE_EFFECTS_MAX {
            self.spare_effects = effects;
        }
    }

    /// Keeps an event's emptied record and after-commit lists for the next event, each
    /// unless it grew past [`SPARE_EFFECTS_MAX`].
    fn keep_lists(&mut self, records: Vec<record::Record>, after: Vec<AfterCommit>) {
        debug_assert!(records.is_empty() && after.is_empty());
        if records.capacity() <= SPARE_EFFECTS_MAX {
            self.spare_records = records;
        }
        if after.capacity() <= SPARE_EFFECTS_MAX {
            self.spare_after = after;
        }
    }

    /// Carries out an event's output: effects now, records into the journal.
    fn apply(&mut self, io: &mut ShardIo<Self>, out: Out) {
        let Out {
            now,
            mut records,
            mut after_commit,
            busy_refusals: _,
        } = out;
        self.exec_all(io, now);
        if !records.is_empty() || !after_commit.is_empty() {
            if self.journal.add_from(&mut records, &mut after_commit) {
                self.release(io, after_commit.drain(..));
            }
            self.frames_to_state();
            self.kick(io, Start::AfterWindow);
        }
        self.keep_lists(records, after_commit);
    }

    /// Hands the frame buffers of item records the journal is done with to the state, whose
    /// next items' frames are written into them (no allocation per queued item's record).
    fn frames_to_state(&mut self) {
        if let Some(state) = self.state.as_mut() {
            self.journal.spare_frames().for_each(|f| state.wire_done(f));
        }
    }

    fn release(&mut self, io: &mut ShardIo<Self>, after: impl IntoIterator<Item = AfterCommit>) {
        for a in after {
            let mut out = self.fresh_out();
            self.state().on_durable(a, &mut out);
            let Out {
                now,
                records,
                after_commit,
                busy_refusals: _,
            } = out;
            // on_durable only emits effects, never records.
            debug_assert!(records.is_empty() && after_commit.is_empty());
            self.exec_all(io, now);
            self.keep_lists(records, after_commit);
        }
    }

    fn exec(&mut self, io: &mut ShardIo<Self>, e: Effect) {
        // The shard's clock of this turn, not a clock read per delivered message.
        self.latency.note_delivery(&e, || io.now_ms());
        match e {
            Effect::Frame(conn, kind) => send_frame(io, conn, kind),
            Effect::Wire(conn, w) => {
                send_wire(io, conn, &w.bytes);
                // Its buffer serves the next delivery (no allocation per delivered item).
                if let Some(state) = self.state.as_mut() {
                    state.wire_done(w.bytes);
                }
            }
            Effect::Close(conn) => {
                let _ = io.close(conn);
            }
            Effect::Mesh(to, msg) => {
                if let Some(port) = &mut self.cluster {
                    if port.settle(&msg) {
                        return; // the answer to a message from another box
                    }
                }
                self.mesh_send(io, to, msg)
            }
            Effect::HandOff(conn, to, adoption) => {
                let _ = io.hand_off(conn, to, adoption);
            }
            Effect::Sms {
                conn,
                phone,
                pin,
                on_sent,
            } => {
                let now = io.now_ms();
                let refused =
                    self.pins
                        .send(self.env.sms.as_ref(), now, conn, (&phone, &pin), on_sent);
                match refused {
                    Some(frame) => {
                        send_frame(io, conn, frame);
                        self.lift_unsent_backoffs(now);
                    }
                    None => self.poll_pins_later(io),
                }
            }
            Effect::Push { phone, user_id } => self.env.push.notify(&phone, user_id),
            Effect::LoggedIn(conn) => io.set_logged_in(conn),
            Effect::HoldOutput(conn) => io.hold_output(conn),
            Effect::ReleaseOutput(conn) => io.release_output(conn),
        }
    }

    /// Sends `msg` to shard `to`; while the outbox is full, or older messages are held, the
    /// service decides what becomes of it (`mesh_back.rs`): answered, dropped or held.
    // The mesh hands a message back unboxed (no allocation per send).
    #[allow(clippy::result_large_err)]
    fn mesh_send(&mut self, io: &mut ShardIo<Self>, to: ShardId, msg: ShardMsg) {
        let Err(msg) = self.held.send(to, msg, |to, m| io.mesh_send(to, m)) else {
            return;
        };
        let mut out = Out::default();
        match self.state().on_mesh_refused(msg, &mut out) {
            HandedBack::Answered | HandedBack::Dropped => {}
            HandedBack::Hold(msg) => {
                if self.held.hold(to, msg).is_err() {
                    self.state().note_owed_dropped();
                } else if !self.held_task {
                    self.held_task = true;
                    io.spawn(send_held(io.handle()));
                }
            }
        }
        // Busy answers to local connections only.
        self.busy_rejects += out.busy_refusals;
        for e in out.now {
            self.exec(io, e);
        }
        let now = io.now_ms();
        if let Some(skipped) = self.mesh_log.note(now) {
            let c = self.state().mesh_back();
            tracing::warn!(
                shard = io.shard_id().0,
                peer = to.0,
                skipped,
                handed_back = c.handed_back,
                answered_busy = c.answered_busy,
                presence_dropped = c.presence_dropped,
                held = self.held.len(),
                owed_dropped = c.owed_dropped,
                "mesh outbox full: messages handed back (totals since start)"
            );
        }
    }

    /// Sends held messages again while the outbox takes them; true when none is left.
    #[allow(clippy::result_large_err)]
    fn send_held(&mut self, io: &mut ShardIo<Self>) -> bool {
        let done = self.held.resend(|to, m| io.mesh_send(to, m));
        self.held_task = !done;
        done
    }

    fn load(&mut self, io: &mut ShardIo<Self>) -> Result<ShardState, engine::log_file::LogError> {
        let shard = io.shard_id();
        self.log_path = crate::data::journal_check::log_path(&self.env.data_dir, shard.0);
        let mut state = ShardState::new(
            shard,
            io.shard_count(),
            self.env.settings.clone(),
            os_random(),
            io.now_ms(),
        );
        let mut window = crate::data::journal_reader::open_window(&self.log_path)?;
        let scan = messaging::durable::replay::replay_log(&mut window, &mut state)?;
        match scan.tail {
            record::Tail::Clean => {}
            record::Tail::Torn { at } => {
                let dropped = window.len() - at;
                let zeros = window.data_end()? <= at;
                if zeros {
                    // The zeros the log writes ahead of its end (preallocation).
                    tracing::debug!(path = %self.log_path.display(), at, "cutting preallocated zeros");
                } else {
                    tracing::warn!(
                        path = %self.log_path.display(),
                        at,
                        dropped,
                        "torn tail at the end of the log (a crash mid-write); truncating"
                    );
                }
                engine::log_file::truncate(&self.log_path, at)?;
            }
            // `data::journal_check` refuses or salvages such a log before any shard starts,
            // and the data-directory lock keeps anyone else from writing it since.
            record::Tail::Corrupt { at, .. } => panic!(
                "{}: damaged at byte {at} after the start-up check",
                self.log_path.display()
            ),
        }
        tracing::info!(
            shard = shard.0,
            records = scan.records,
            bytes = scan.valid_len,
            window_bytes = window.buffer_capacity(),
            queued = state.queued_total(),
            "log replayed"
        );
        self.replayed_len = scan.valid_len;
        Ok(state)
    }
}

/// Sends the held mesh messages again every [`MESH_HELD_RETRY_MS`] until none is left (the
/// outbox empties at the end of each loop turn the peers' rings take it).
async fn send_held(handle: ShardHandle<Switchboard>) {
    loop {
        engine::sleep(std::time::Duration::from_millis(MESH_HELD_RETRY_MS)).await;
        // None: the shard is gone (shutdown).
        if handle.with(|svc, io| svc.send_held(io)).unwrap_or(true) {
            return;
        }
    }
}

impl Service for Switchboard {
    type Msg = ShardMsg;
    type Timer = ServiceTimer;
    type Adopt = Box<Adoption>;

    fn on_start(&mut self, io: &mut ShardIo<Self>) {
        match self.load(io) {
            Ok(state) => self.state = Some(state),
            // Replaying is the only way to know what was acknowledged: refuse to serve
            // rather than serve without it.
            Err(e) => panic!("shard {}: cannot read its log: {e}", io.shard_id().0),
        }
        if let Some(link) = &self.env.cluster {
            let port = crate::cluster::port::Port::new(link.clone(), io.shard_id().0);
            self.cluster = Some(port);
            self.poll_cluster_later(io);
        }
        io.spawn(open_log(
            io.handle(),
            self.log_path.clone(),
            self.env.log_faults.clone(),
        ));
    }

    const LOGIN: bool = true;

    fn on_open(&mut self, io: &mut ShardIo<Self>, conn: ConnId) {
        self.must_log_in(io, conn);
    }

    /// Writes what gathers, lazy tombstones included, without waiting for a window: a
    /// graceful restart should not redeliver what was acked just before it.
    fn on_shutdown(&mut self, io: &mut ShardIo<Self>) {
        self.journal.request_lazy_flush();
        self.kick(io, Start::Now);
    }

    fn flushing(&self) -> bool {
        self.journal.busy() || self.journal.append_due()
    }

    fn on_frame(&mut self, io: &mut ShardIo<Self>, conn: ConnId, payload: &[u8]) {
        let frame = match decode_client(payload) {
            Ok(f) => f,
            Err(e) => {
                let mut out = Out::default();
                out.fail(conn, e.code(), "cannot decode frame");
                return self.apply(io, out);
            }
        };
        if let Err((code, detail)) = proto::validate::check_client_frame(&frame) {
            let mut out = Out::default();
            out.error(conn, code, detail, client_msg_id_of(&frame));
            return self.apply(io, out);
        }
        let peer = messaging::handlers::login::is_prelogin(&frame).then(|| io.peer_ip(conn));
        if let (Some(_), Some(peer)) = (&self.cluster, peer) {
            return self.ask_home(io, conn, frame, peer);
        }
        self.run(io, |s, now, out| {
            if let Some(peer) = peer {
                s.note_peer(conn, peer);
            }
            s.on_frame(now, conn, frame, out)
        });
    }

    fn on_frame_error(&mut self, io: &mut ShardIo<Self>, conn: ConnId, error: FrameError) {
        send_frame(
            io,
            conn,
            messaging::state::effect::error(error.code(), &error.to_string(), 0),
        );
    }

    fn on_close(&mut self, io: &mut ShardIo<Self>, conn: ConnId, reason: CloseReason) {
        if reason == CloseReason::Upgrade {
            // The session goes on in the next process: nobody is told it went offline, and
            // this process's state is not used again (a take-back replays the log).
            return;
        }
        self.run(io, |s, now, out| s.on_close(now, conn, out));
    }

    fn depart(&mut self, _io: &mut ShardIo<Self>, conn: ConnId) -> Option<Vec<u8>> {
        Some(self.state.as_ref()?.departing_session(conn))
    }

    fn on_arrive(&mut self, io: &mut ShardIo<Self>, conn: ConnId, session: &[u8]) {
        let mut logged_in = false;
        self.run(io, |s, _now, out| {
            logged_in = s.on_arrive(conn, session, out)
        });
        if !logged_in && io.is_open(conn) {
            self.must_log_in(io, conn);
        }
    }

    fn on_mesh(&mut self, io: &mut ShardIo<Self>, _from: ShardId, msg: ShardMsg) {
        if self.cluster.is_some() {
            return self.on_mesh_clustered(io, msg);
        }
        self.run(io, |s, now, out| s.on_mesh(now, msg, out));
    }

    fn on_outside(&mut self, io: &mut ShardIo<Self>) {
        self.poll_cluster(io, false);
    }

    fn on_adopt(&mut self, io: &mut ShardIo<Self>, _from: ShardId, conn: ConnId, a: Box<Adoption>) {
        self.run(io, |s, now, out| s.on_adopt(now, conn, *a, out));
        if io.is_open(conn) && !io.is_logged_in(conn) {
            self.must_log_in(io, conn);
        }
    }

    fn stats(&self) -> Vec<(&'static str, u64)> {
        let Some(state) = &self.state else {
            return Vec::new();
        };
        let g = stats::Gauges {
            queue_items: state.queues().total() as u64,
            queue_items_user_max: state.queues().longest_len() as u64,
            queue_users: state.queues().users_queued() as u64,
            log_bytes: self.log_bytes,
            log_commits: self.journal.commits(),
            log_failures: self.journal.failures(),
            log_items_skipped: self.journal.skipped_items(),
            log_snapshots: self.snapshots,
            log_snapshot_slices: self.snapshot_slices,
        };
        let mut stats = stats::report(g);
        stats.extend(state.abuse_stats());
        stats.extend(messaging::state::counters::mesh_back_report(
            state.mesh_back(),
            self.held.len() as u64,
        ));
        if let Some(m) = &self.env.media_counters {
            stats.extend(crate::media::counters::report(m));
        }
        if let Some(port) = &self.cluster {
            stats.extend(port.report());
        }
        stats
    }

    fn stat_help(&self) -> &'static [(&'static str, &'static str)] {
        // The shard's own statistics, then the media service's (reported by shard 0).
        static ALL: std::sync::OnceLock<Vec<(&str, &str)>> = std::sync::OnceLock::new();
        ALL.get_or_init(|| [stats::HELP, crate::media::counters::HELP].concat())
    }

    fn histograms(&self) -> Vec<engine::observe::histogram::NamedHistogram> {
        self.latency.named()
    }

    fn stat_offender(&self, stat: &str) -> Option<String> {
        let state = self.state.as_ref()?;
        match stat {
            STAT_QUEUE_ITEMS | STAT_QUEUE_ITEMS_USER_MAX => {
                // The server-issued id, never the phone number (shown in /stats).
                let (user, n) = state.queues().longest_user()?;
                let id = state.registry().verified(user).map_or(0, |a| a.user_id);
                Some(format!("user id {id} ({n} items)"))
            }
            _ => None,
        }
    }

    fn on_timer(&mut self, io: &mut ShardIo<Self>, timer: ServiceTimer) {
        match timer {
            ServiceTimer::RetryCommit => {
                self.journal.retry_due();
                self.kick(io, Start::Now);
            }
            ServiceTimer::FlushTombstones => {
                self.tombstone_timer_set = false;
                self.journal.request_lazy_flush();
                self.kick(io, Start::Now);
            }
            ServiceTimer::PinReplies => {
                self.pins_timer = false;
                for (conn, frame) in self.pins.poll(io.now_ms()) {
                    send_frame(io, conn, frame);
                }
                self.lift_unsent_backoffs(io.now_ms());
                if self.pins.waiting() > 0 {
                    self.poll_pins_later(io);
                }
            }
            ServiceTimer::LoginDeadlines => {
                self.logins.timer_set = false;
                self.close_late_logins(io);
            }
            ServiceTimer::ClusterAnswers => self.poll_cluster(io, true),
        }
    }
}

/// The client_msg_id a refused frame carried, so the client can match the error.
fn client_msg_id_of(frame: &proto::v1::ClientFrame) -> u64 {
    use proto::v1::client_frame::Kind;
    match &frame.kind {
        Some(Kind::Send(s)) => s.client_msg_id,
        Some(Kind::GroupSend(g)) => g.client_msg_id,
        _ => 0,
    }
}

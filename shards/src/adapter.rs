//! The engine adapter: the `engine::Service` a shard runs. It decodes and validates frames,
//! hands them to the shard's state machines ([`ShardState`]), carries out the effects they
//! ask for, and runs the durable log's group commit. It owns no sockets (the engine does)
//! and no service rules (the state machines do).

use std::path::PathBuf;
use std::sync::Arc;

use engine::{CloseReason, ConnId, LogFile, Service, ShardHandle, ShardId, ShardIo};
use proto::codec::{decode_client, encode_frame, FrameError};
use proto::v1::{server_frame, ServerFrame};

use crate::effect::{AfterCommit, Effect, Out};
use crate::journal::{Job, Journal};
use crate::limits::{COMPACT_GARBAGE_RATIO, COMPACT_MIN_BYTES};
use crate::mesh_msg::ShardMsg;
use crate::notify::{PushProvider, SmsGateway};
use crate::overload::{Load, OverloadLimits};
use crate::record;
use crate::service_stats::{self, STAT_QUEUE_ITEMS, STAT_QUEUE_ITEMS_USER_MAX};
use crate::state::{os_random, ServiceSettings, ShardState};

/// Delay before a failed log write is tried again.
pub const COMMIT_RETRY_MS: u64 = 1_000;

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
        }
    }
}

/// Timers the service sets.
#[derive(Debug)]
pub enum ServiceTimer {
    /// Try the failed log write again.
    RetryCommit,
}

/// The service of one shard.
pub struct Switchboard {
    env: ServiceEnv,
    state: Option<ShardState>,
    journal: Journal,
    log_path: PathBuf,
    /// Log-sync and delivery latencies, since start.
    latency: service_stats::Latency,
    /// The log's length after the last finished job.
    log_bytes: u64,
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

impl Switchboard {
    /// The service for one shard; its state is loaded in `on_start`.
    pub fn new(env: ServiceEnv) -> Self {
        Switchboard {
            env,
            state: None,
            journal: Journal::default(),
            log_path: PathBuf::new(),
            latency: Default::default(),
            log_bytes: 0,
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
            mesh_queued: io.mesh_queued(),
        };
        let busy = self.env.overload.busy(load);
        let mut out = Out::default();
        let state = self.state();
        state.set_busy(busy);
        let rejects = state.busy_rejects();
        f(state, now, &mut out);
        let after = self.state().busy_rejects();
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

    /// Carries out an event's output: effects now, records into the journal.
    fn apply(&mut self, io: &mut ShardIo<Self>, out: Out) {
        let Out {
            now,
            records,
            after_commit,
        } = out;
        for e in now {
            self.exec(io, e);
        }
        if records.is_empty() && after_commit.is_empty() {
            return;
        }
        let ready = self.journal.add(records, after_commit);
        self.release(io, ready);
        self.kick(io);
    }

    fn release(&mut self, io: &mut ShardIo<Self>, after: Vec<AfterCommit>) {
        for a in after {
            let mut out = Out::default();
            self.state().on_durable(a, &mut out);
            // on_durable only emits effects, never records.
            debug_assert!(out.records.is_empty() && out.after_commit.is_empty());
            for e in out.now {
                self.latency.note_delivery(&e, service_stats::wall_ms);
                self.exec(io, e);
            }
        }
    }

    fn exec(&mut self, io: &mut ShardIo<Self>, e: Effect) {
        match e {
            Effect::Frame(conn, kind) => send_frame(io, conn, kind),
            Effect::Close(conn) => {
                let _ = io.close(conn);
            }
            Effect::Mesh(to, msg) => {
                if io.mesh_send(to, msg).is_err() {
                    tracing::warn!(
                        shard = io.shard_id().0,
                        peer = to.0,
                        "mesh outbox full; message dropped"
                    );
                }
            }
            Effect::HandOff(conn, to, msg) => {
                let _ = io.hand_off(conn, to, msg);
            }
            Effect::Sms { phone, pin } => self.env.sms.send_pin(&phone, &pin),
            Effect::Push { phone } => self.env.push.notify(&phone),
        }
    }

    /// Starts the next log job if one is due and none is running.
    fn kick(&mut self, io: &mut ShardIo<Self>) {
        let unblocked = self.journal.take_unblocked();
        self.release(io, unblocked);
        let job = match self.compaction_due() {
            Some(snapshot) => self.journal.start_compaction(snapshot),
            None => self.journal.next_append(),
        };
        if let Some(job) = job {
            io.spawn(run_job(io.handle(), job));
        }
    }

    /// A snapshot to compact with, when the log is mostly garbage. Building a snapshot
    /// costs a pass over the state, so it is only tried when the log has doubled or the
    /// queues have shrunk to a quarter since the last try.
    fn compaction_due(&mut self) -> Option<Vec<u8>> {
        let len = self.journal.file.as_ref()?.len();
        let queued = self.state().queued_total();
        let grew = len >= 2 * self.journal.checked_len;
        let drained = queued * 4 < self.journal.checked_queued;
        if self.journal.busy() || len < self.env.compact_min_bytes || !(grew || drained) {
            return None;
        }
        self.journal.checked_len = len;
        self.journal.checked_queued = queued;
        let mut snapshot = Vec::new();
        for r in self.state().snapshot() {
            record::encode(&r, &mut snapshot);
        }
        (snapshot.len() as u64 * COMPACT_GARBAGE_RATIO <= len).then_some(snapshot)
    }

    fn job_done(
        &mut self,
        io: &mut ShardIo<Self>,
        file: LogFile,
        result: std::io::Result<()>,
        compacted: bool,
        took: std::time::Duration,
    ) {
        self.latency.record_sync(took);
        self.log_bytes = file.len();
        let ok = result.is_ok();
        if let Err(e) = &result {
            tracing::error!(shard = io.shard_id().0, path = %self.log_path.display(), "log write failed; nothing in it is acknowledged; retrying: {e}");
        }
        if ok && compacted {
            self.journal.checked_len = file.len();
            tracing::info!(shard = io.shard_id().0, bytes = file.len(), "log compacted");
        }
        let released = self.journal.finished(file, ok);
        self.release(io, released);
        if ok {
            self.kick(io);
        } else if !self.journal.retry_scheduled {
            self.journal.retry_scheduled = true;
            let _ = io.set_timer(io.now_ms() + COMMIT_RETRY_MS, ServiceTimer::RetryCommit);
        }
    }

    fn load(&mut self, io: &mut ShardIo<Self>) -> std::io::Result<ShardState> {
        let shard = io.shard_id();
        self.log_path = self.env.data_dir.join(format!("shard-{}.log", shard.0));
        let bytes = engine::log_file::read_all(&self.log_path)?;
        let replay = record::replay(&bytes);
        if replay.valid_len < bytes.len() as u64 {
            tracing::warn!(
                path = %self.log_path.display(),
                dropped = bytes.len() as u64 - replay.valid_len,
                "torn tail at the end of the log (a crash mid-write); truncating"
            );
            engine::log_file::truncate(&self.log_path, replay.valid_len)?;
        }
        let mut state = ShardState::new(
            shard,
            io.shard_count(),
            self.env.settings.clone(),
            os_random(),
            io.now_ms(),
        );
        let n = replay.records.len();
        state.replay(replay.records);
        tracing::info!(
            shard = shard.0,
            records = n,
            queued = state.queued_total(),
            "log replayed"
        );
        self.journal.checked_len = replay.valid_len;
        Ok(state)
    }
}

async fn run_job(handle: ShardHandle<Switchboard>, job: Job) {
    let started = std::time::Instant::now();
    let (file, result, compacted) = match job {
        Job::Append(mut file, bytes) => {
            let r = file.append_sync(bytes).await;
            (file, r, false)
        }
        Job::Compact(mut file, bytes) => {
            let r = file.replace_with(bytes).await;
            (file, r, true)
        }
    };
    let took = started.elapsed();
    handle.with(|svc, io| svc.job_done(io, file, result, compacted, took));
}

async fn open_log(handle: ShardHandle<Switchboard>, path: PathBuf) {
    match LogFile::open(&path).await {
        Ok(file) => {
            handle.with(|svc, io| {
                svc.log_bytes = file.len();
                svc.journal.file = Some(file);
                svc.kick(io);
            });
        }
        // Without its log a shard cannot acknowledge anything: stop loudly.
        Err(e) => panic!("cannot open the shard log {}: {e}", path.display()),
    }
}

impl Service for Switchboard {
    type Msg = ShardMsg;
    type Timer = ServiceTimer;

    fn on_start(&mut self, io: &mut ShardIo<Self>) {
        match self.load(io) {
            Ok(state) => self.state = Some(state),
            // Replaying is the only way to know what was acknowledged: refuse to serve
            // rather than serve without it.
            Err(e) => panic!("shard {}: cannot read its log: {e}", io.shard_id().0),
        }
        io.spawn(open_log(io.handle(), self.log_path.clone()));
    }

    fn on_open(&mut self, _io: &mut ShardIo<Self>, _conn: ConnId) {}

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
        self.run(io, |s, now, out| s.on_frame(now, conn, frame, out));
    }

    fn on_frame_error(&mut self, io: &mut ShardIo<Self>, conn: ConnId, error: FrameError) {
        send_frame(
            io,
            conn,
            crate::effect::error(error.code(), &error.to_string(), 0),
        );
    }

    fn on_close(&mut self, io: &mut ShardIo<Self>, conn: ConnId, _reason: CloseReason) {
        self.run(io, |s, now, out| s.on_close(now, conn, out));
    }

    fn on_mesh(&mut self, io: &mut ShardIo<Self>, _from: ShardId, msg: ShardMsg) {
        self.run(io, |s, now, out| s.on_mesh(now, msg, out));
    }

    fn on_adopt(&mut self, io: &mut ShardIo<Self>, _from: ShardId, conn: ConnId, msg: ShardMsg) {
        match msg {
            ShardMsg::Adopt(frame) => {
                self.run(io, |s, now, out| s.on_frame(now, conn, *frame, out))
            }
            other => unreachable!("only Adopt travels with a connection: {other:?}"),
        }
    }

    fn stats(&self) -> Vec<(&'static str, u64)> {
        let Some(state) = &self.state else {
            return Vec::new();
        };
        let g = service_stats::Gauges {
            queue_items: state.queues.total() as u64,
            queue_items_user_max: state.queues.longest_len() as u64,
            queue_users: state.queues.users_queued() as u64,
            log_bytes: self.log_bytes,
            log_commits: self.journal.commits,
            log_failures: self.journal.failures,
        };
        service_stats::report(g)
    }

    fn stat_help(&self) -> &'static [(&'static str, &'static str)] {
        service_stats::HELP
    }

    fn histograms(&self) -> Vec<engine::histogram::NamedHistogram> {
        self.latency.named()
    }

    fn stat_offender(&self, stat: &str) -> Option<String> {
        let state = self.state.as_ref()?;
        match stat {
            STAT_QUEUE_ITEMS | STAT_QUEUE_ITEMS_USER_MAX => {
                // The server-issued id, never the phone number (shown in /stats).
                let (user, n) = state.queues.longest_user()?;
                let id = state.registry.verified(user).map_or(0, |a| a.user_id);
                Some(format!("user id {id} ({n} items)"))
            }
            _ => None,
        }
    }

    fn on_timer(&mut self, io: &mut ShardIo<Self>, timer: ServiceTimer) {
        match timer {
            ServiceTimer::RetryCommit => {
                self.journal.retry_scheduled = false;
                self.kick(io);
            }
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

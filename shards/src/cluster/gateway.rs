//! The gateway thread: the box's one NATS client, on a tokio current-thread runtime of its
//! own. Shards never run any of this; they reach it through [`ClusterLink`]'s queues.
//!
//! ## Steps
//! 1. [`start`]: connect to NATS and open (or create) the members and homes buckets, within
//!    [`CONNECT_WAIT_MS`]. Failing that, the box does not start ([`ClusterStartError`]:
//!    one line, exit 1), or with `--cluster-optional` it starts alone
//!    ([`super::ClusterStatus::alone`]) and this thread keeps trying every
//!    [`RETRY_CONNECT_MS`].
//! 2. Serve: every [`GATEWAY_POLL_MS`] take the shards' questions (at most
//!    [`GATEWAY_PENDING_MAX`] at once; past it `Unavailable`), look each phone's home up
//!    (`placement.rs`) concurrently, and push each answer into its shard's queue. Renew this
//!    box's lease every [`MEMBER_BEAT_MS`] and follow the members bucket (`membership.rs`).
//! 3. When every shard has dropped its end of the link (the box is stopping), delete this
//!    box's member entry (a clean leave) and end.
//!
//! Why it is safe: the shards only ever `push`/`pop` bounded lock-free queues; an answer
//! that finds its shard's queue full is dropped and counted, and the shard answers that
//! question at its deadline; NATS being slow or gone delays only the frames that asked.
//!
//! This module owns the NATS connection; it must not touch a shard's state.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use async_nats::jetstream::{self, consumer::pull, kv};
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::in_order::InOrder;
use super::membership::{self, Member, Members, MEMBERS_BUCKET, MEMBER_BEAT_MS, MEMBER_LEASE_MS};
use super::placement::{self, HOMES_BUCKET};
use super::routes::{self, Issued, IssuedAck, Issuing, Outgoing, Published, ISSUE_BATCH_MAX};
use super::{
    cross, Answer, ClusterLink, ClusterStatus, Down, Placement, Up, GATEWAY_PENDING_MAX,
    GATEWAY_POLL_MS,
};
use crate::config::cluster::ClusterConfig;

mod direct;
mod finished;
mod groups;
mod inbound;
mod linger;
mod presence;
mod receipts;

pub use receipts::{RECEIPTS_AGAIN_MAX, RECEIPT_RETRY_MS};

use finished::finished_publish;

/// How long start-up waits for NATS and the buckets.
pub const CONNECT_WAIT_MS: u64 = 5_000;
/// How often a box alone tries to reach NATS again.
pub const RETRY_CONNECT_MS: u64 = 2_000;
/// Replicas asked for the buckets: 3 where NATS runs as a cluster of at least 3, else 1
/// (a single server refuses 3, and the gateway then asks for 1).
pub const BUCKET_REPLICAS: usize = 3;

/// Why a box could not join its cluster at start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterStartError {
    /// NATS did not answer, or refused the buckets.
    #[error("cannot reach NATS at {servers}: {detail} (use --cluster-optional to start alone)")]
    Unreachable {
        /// The servers tried.
        servers: String,
        /// Why.
        detail: String,
    },
    /// The gateway thread could not start.
    #[error("cluster gateway thread: {0}")]
    Thread(String),
    /// This box cannot have the number it asked for (`box_number.rs`).
    #[error("{0}")]
    BoxNumber(String),
}

/// Events the gateway handles, at most, before the direct batches they filled leave
/// (`direct.rs` step 5); they leave sooner as soon as no event is ready.
pub const TURN_EVENTS_MAX: usize = 64;

/// Most time a stopping box waits for its gateway to leave the members bucket.
pub const LEAVE_WAIT_MS: u64 = 2_000;

/// Set once this process's gateway has left (or ended); `None` without a cluster.
static LEFT: std::sync::OnceLock<Arc<std::sync::atomic::AtomicBool>> = std::sync::OnceLock::new();

/// Called once the shards have stopped: waits (at most [`LEAVE_WAIT_MS`]) for the gateway
/// to delete this box's member entry, so that the others see the leave at once instead of
/// at the end of the lease. Returns at once for a box without a cluster.
pub fn wait_left() {
    let Some(left) = LEFT.get() else {
        return;
    };
    let deadline = Instant::now() + Duration::from_millis(LEAVE_WAIT_MS);
    while !left.load(Ordering::Acquire) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The NATS side once connected.
struct Nats {
    client: async_nats::Client,
    js: jetstream::Context,
    members: kv::Store,
    homes: kv::Store,
    /// Group id → the box it lives on (`groups.rs`).
    groups: kv::Store,
    /// This box's stream, being read (`cross.rs` step 1); `None` until it can be.
    inbound: Option<pull::Stream>,
    /// Its lowest sequence when the reader was made.
    first_seq: Option<u64>,
    /// Direct messages from other boxes (`direct.rs`); `None` once the subscription ended.
    direct: Option<async_nats::Subscriber>,
}

/// Step 1. Returns once the box has joined, or (optional) is known to be alone.
pub fn start(cfg: &ClusterConfig, link: Arc<ClusterLink>) -> Result<(), ClusterStartError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(1);
    let cfg = cfg.clone();
    let left = LEFT.get_or_init(Default::default).clone();
    let servers = cfg.servers.join(",");
    std::thread::Builder::new()
        .name("cluster-gateway".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(format!("tokio runtime: {e}")));
                    return;
                }
            };
            rt.block_on(run(cfg, link, tx));
            left.store(true, Ordering::Release);
        })
        .map_err(|e| ClusterStartError::Thread(e.to_string()))?;
    let wait = Duration::from_millis(CONNECT_WAIT_MS + 1_000);
    match rx.recv_timeout(wait) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(detail)) => Err(ClusterStartError::Unreachable { servers, detail }),
        Err(_) => Err(ClusterStartError::Unreachable {
            servers,
            detail: "no answer in time".into(),
        }),
    }
}

async fn run(
    cfg: ClusterConfig,
    link: Arc<ClusterLink>,
    ready: std::sync::mpsc::SyncSender<Result<(), String>>,
) {
    let nats = match tokio::time::timeout(Duration::from_millis(CONNECT_WAIT_MS), connect(&cfg))
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
    {
        Ok(n) => {
            let _ = ready.send(Ok(()));
            n
        }
        Err(e) if cfg.optional => {
            tracing::warn!(
                servers = %cfg.servers.join(","),
                "cannot reach NATS ({e}): serving this box's own users alone"
            );
            link.status.alone.store(true, Ordering::Relaxed);
            let _ = ready.send(Ok(()));
            match retry_connect(&cfg, &link).await {
                Some(n) => n,
                None => return,
            }
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    link.status.alone.store(false, Ordering::Relaxed);
    tracing::info!(box_id = %cfg.box_id, advertise = %cfg.advertise, "joined the cluster");
    serve(cfg, link, nats).await;
}

/// Step 1 for a box alone: tries again until it connects, or the box stops (`None`).
async fn retry_connect(cfg: &ClusterConfig, link: &Arc<ClusterLink>) -> Option<Nats> {
    loop {
        tokio::time::sleep(Duration::from_millis(RETRY_CONNECT_MS)).await;
        if Arc::strong_count(link) == 1 {
            return None;
        }
        let attempt = tokio::time::timeout(Duration::from_millis(CONNECT_WAIT_MS), connect(cfg));
        if let Ok(Ok(n)) = attempt.await {
            return Some(n);
        }
    }
}

async fn connect(cfg: &ClusterConfig) -> Result<Nats, String> {
    let client = box_client(cfg, "").await?;
    let js = jetstream::new(client.clone());
    let members = bucket(
        &js,
        kv::Config {
            bucket: MEMBERS_BUCKET.into(),
            description: "switchboard boxes: {advertise, load} per box id, one lease".into(),
            history: 1,
            max_age: Duration::from_millis(MEMBER_LEASE_MS),
            ..Default::default()
        },
    )
    .await?;
    let homes = homes_bucket(&js).await?;
    let groups = write_once_bucket(
        &js,
        super::groups::GROUPS_BUCKET,
        "switchboard: the box each group with members elsewhere lives on",
    )
    .await?;
    let (reader, first_seq) = cross::own_stream(&js, &cfg.box_id, BUCKET_REPLICAS).await?;
    let direct = client
        .subscribe(super::direct::subject(&cfg.box_id))
        .await
        .map_err(|e| format!("subscribing to direct messages: {e}"))?;
    Ok(Nats {
        client,
        js,
        members,
        homes,
        groups,
        inbound: Some(reader),
        first_seq: Some(first_seq),
        direct: Some(direct),
    })
}

/// The homes bucket (`placement.rs`), as it exists or created.
pub(crate) async fn homes_bucket(js: &jetstream::Context) -> Result<kv::Store, String> {
    write_once_bucket(
        js,
        HOMES_BUCKET,
        "switchboard: each phone's home box id, written once",
    )
    .await
}

/// This box's NATS client, named `switchboard <box id><purpose>`, logged in as the
/// environment says (`nats_auth.rs`), within [`CONNECT_WAIT_MS`]: the gateway's own, and
/// the short-lived ones of start-up (`media_key.rs`, `box_number.rs`).
pub(crate) async fn box_client(
    cfg: &ClusterConfig,
    purpose: &str,
) -> Result<async_nats::Client, String> {
    super::nats_auth::options(format!("switchboard {}{purpose}", cfg.box_id))
        .await?
        .connection_timeout(Duration::from_millis(CONNECT_WAIT_MS))
        .connect(cfg.servers.as_slice())
        .await
        .map_err(|e| e.to_string())
}

/// A bucket of entries each written once (KV `create`), on disk, one value per key
/// (homes, groups, the media key, box numbers), as it exists or created.
pub(crate) async fn write_once_bucket(
    js: &jetstream::Context,
    name: &str,
    description: &str,
) -> Result<kv::Store, String> {
    let cfg = kv::Config {
        bucket: name.into(),
        description: description.into(),
        history: 1,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    bucket(js, cfg).await
}

/// The bucket as it exists, or created ([`BUCKET_REPLICAS`] replicas, else one). Two boxes
/// starting at once may both try to create it: the one whose creation fails takes the
/// other's.
///
/// The bucket's stream is created here as the client's `create_key_value` would create it:
/// that call first reads the account's JetStream limits, whose reply from nats-server 2.9
/// (Debian's) lacks fields the client requires.
pub(crate) async fn bucket(js: &jetstream::Context, cfg: kv::Config) -> Result<kv::Store, String> {
    if let Ok(store) = js.get_key_value(cfg.bucket.clone()).await {
        return Ok(store);
    }
    let stream = jetstream::stream::Config {
        name: format!("KV_{}", cfg.bucket),
        description: Some(cfg.description.clone()),
        subjects: vec![format!("$KV.{}.>", cfg.bucket)],
        max_messages_per_subject: cfg.history.max(1),
        max_age: cfg.max_age,
        storage: cfg.storage,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        num_replicas: BUCKET_REPLICAS,
        ..Default::default()
    };
    let created = match js.create_stream(stream.clone()).await {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::debug!(bucket = %cfg.bucket, "{BUCKET_REPLICAS} replicas refused ({e}); asking for 1");
            let single = jetstream::stream::Config {
                num_replicas: 1,
                ..stream
            };
            js.create_stream(single).await.map(|_| ())
        }
    };
    if let Err(e) = created {
        // Another box's creation may have won meanwhile.
        return js
            .get_key_value(cfg.bucket.clone())
            .await
            .map_err(|_| format!("bucket {}: {e}", cfg.bucket));
    }
    js.get_key_value(cfg.bucket.clone())
        .await
        .map_err(|e| format!("bucket {}: {e}", cfg.bucket))
}

type Found = Result<Option<placement::Home>, String>;

/// What a piece of work in flight ends with.
enum Finished {
    /// A home look-up for shard `.0`'s question `.1`.
    Placed(usize, u64, Found),
    /// A message published (or not) for shard `shard`.
    Sent {
        shard: usize,
        from: String,
        client_msg_id: u64,
        to: String,
        group_id: u64,
        publish: Published,
    },
    /// A 1:1 message for a phone with no home anywhere: answered by its shard as a single
    /// box answers a send to a number nobody has (a fresh server id, remembered by dedupe
    /// and logged: no signal that the number does not exist).
    Nowhere {
        shard: usize,
        env: Box<cross::Envelope>,
    },
    /// A group message published (or not) (`groups.rs`).
    GroupSent {
        env: Box<cross::Envelope>,
        publish: Published,
    },
    /// A receipt published (or not).
    ReceiptSent {
        env: Box<cross::Envelope>,
        publish: Published,
    },
    /// Messages and receipts sent straight to `home` in one batch: each stored there under
    /// its id in `stored_ids`, or (0) not taken.
    Direct {
        outs: Vec<Outgoing>,
        home: String,
        stored_ids: Vec<u64>,
    },
}

type Work = Pin<Box<dyn Future<Output = Finished> + Send>>;

/// The gateway's state while it serves (step 2).
struct Gw {
    cfg: ClusterConfig,
    link: Arc<ClusterLink>,
    nats: Nats,
    me: Member,
    members: Members,
    watch: Option<kv::Watch>,
    homes: cross::HomeCache,
    work: FuturesUnordered<Work>,
    /// Messages and receipts waiting to be published, in the order shards handed them over.
    outbox: std::collections::VecDeque<Outgoing>,
    /// The one round of publishes being issued: publishes leave in outbox order (a
    /// sender's messages reach the recipient's home in the order sent, as dedupe needs),
    /// while their acks are awaited together in `work`.
    issuing: Option<Issuing>,
    /// This box's stream, in order (`in_order.rs`).
    order: InOrder<jetstream::Message>,
    /// Inbound messages handed to shards, by token, until the shard says `Done`.
    in_shards: HashMap<u64, inbound::InShard>,
    /// The token of each stream sequence in `in_shards`.
    token_of_seq: HashMap<u64, u64>,
    next_token: u64,
    /// When the gateway started serving (the clock of `order`).
    started: Instant,
    /// The hole (its first sequence) the stream was last asked about.
    hole_asked: Option<u64>,
    /// Per sender, the path its messages take (`direct.rs`).
    lines: super::direct::Lines<Outgoing>,
    /// Per home box, the highest sequence of its stream JetStream acked to this box.
    stream_acked: HashMap<String, u64>,
    /// Per home box, the direct messages and receipts this turn sends it (`direct.rs`
    /// step 5).
    direct_out: super::direct::Batches<Outgoing>,
    /// Direct messages from other boxes in this box's shards, by token: their batch and
    /// place in it.
    direct_in_shards: HashMap<u64, (u64, usize)>,
    /// Batches from other boxes with messages in this box's shards, by number.
    direct_batches_in: HashMap<u64, direct::BatchIn>,
    /// The number of the next batch from another box.
    next_batch: u64,
    /// Receipts NATS did not take, each sent again once its time comes.
    receipts_again: std::collections::VecDeque<(Instant, cross::Envelope)>,
    /// Group id → the box it lives on, as learnt (`groups.rs`).
    group_boxes: HashMap<u64, String>,
    /// Group envelopes sent, for their unique ids.
    group_nonce: u64,
}

/// Step 2 and 3.
async fn serve(cfg: ClusterConfig, link: Arc<ClusterLink>, nats: Nats) {
    let first_seq = nats.first_seq;
    let me = Member::starting(cfg.advertise.clone());
    let mut members = Members::default();
    members.put(&cfg.box_id, me.clone(), Instant::now());
    let watch = nats.members.watch_all().await.ok();
    let mut gw = Gw {
        cfg,
        link,
        nats,
        me,
        members,
        watch,
        homes: Default::default(),
        work: FuturesUnordered::new(),
        outbox: Default::default(),
        issuing: None,
        order: InOrder::default(),
        in_shards: HashMap::new(),
        token_of_seq: HashMap::new(),
        next_token: 0,
        started: Instant::now(),
        hole_asked: None,
        lines: Default::default(),
        stream_acked: HashMap::new(),
        direct_out: Default::default(),
        direct_in_shards: HashMap::new(),
        direct_batches_in: HashMap::new(),
        next_batch: 0,
        receipts_again: Default::default(),
        group_boxes: HashMap::new(),
        group_nonce: 0,
    };
    gw.order.reread(first_seq);
    let Some(woken) = watch_wake(&gw.link) else {
        tracing::error!("cluster gateway: cannot watch its eventfd");
        return;
    };
    let mut poll = tokio::time::interval(Duration::from_millis(GATEWAY_POLL_MS));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut beat = tokio::time::interval(Duration::from_millis(MEMBER_BEAT_MS));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Events handled since the direct batches last left.
    let mut turn = 0;
    // `--cluster-linger-us`: direct batches wait this long for more, the shards' pushes
    // meanwhile taken only at its end (no wake-up per message).
    let mut linger = match gw.cfg.linger_us {
        0 => None,
        us => linger::Linger::new(Duration::from_micros(us))
            .map_err(|e| tracing::warn!("no linger for direct batches: {e}"))
            .ok(),
    };
    loop {
        // A turn ends once no event is ready (or after `TURN_EVENTS_MAX`): then each home
        // box's direct batch leaves as one request (`direct.rs` step 5). Nothing waits
        // for a batch to fill.
        if turn >= TURN_EVENTS_MAX && linger.is_none() {
            gw.flush_direct();
            turn = 0;
        }
        let batching = !gw.direct_out.is_empty();
        if let Some(l) = linger.as_mut().filter(|_| batching) {
            l.arm();
        }
        let lingering = linger.as_ref().is_some_and(linger::Linger::armed);
        // Parked from here until an event: a shard that pushes meanwhile writes the eventfd.
        // While lingering the shards are neither listened to nor woken for: what they push
        // is taken when the linger ends.
        gw.link.gateway_wake.set_parked(!lingering);
        let queued = gw.link.to_gateway.iter().any(|q| !q.is_empty());
        let next = async {
            tokio::select! {
                _ = shards_pushed(&woken, queued), if !lingering => Ev::Shards,
                _ = linger::over(&linger), if lingering => Ev::Lingered,
                _ = poll.tick() => Ev::Poll,
                _ = beat.tick() => Ev::Beat,
                Some(entry) = next_entry(&mut gw.watch) => Ev::Entry(entry),
                Some(m) = inbound::next_inbound(&mut gw.nats.inbound) => Ev::Inbound(m),
                Some(m) = next_direct(&mut gw.nats.direct) => Ev::Direct(m),
                Some(done) = gw.work.next(), if !gw.work.is_empty() => Ev::Done(done),
                Some(issued) = next_issued(&mut gw.issuing) => Ev::Issued(issued),
            }
        };
        let ev = if batching && !lingering {
            match futures_util::FutureExt::now_or_never(next) {
                Some(ev) => ev,
                None => {
                    gw.link.gateway_wake.set_parked(false);
                    gw.flush_direct();
                    turn = 0;
                    continue;
                }
            }
        } else {
            next.await
        };
        gw.link.gateway_wake.set_parked(false);
        turn += 1;
        match ev {
            Ev::Shards => gw.take_from_shards().await,
            Ev::Lingered => {
                if let Some(l) = linger.as_mut() {
                    l.ended();
                }
                gw.take_from_shards().await;
                gw.flush_direct();
                turn = 0;
            }
            Ev::Poll => {
                if Arc::strong_count(&gw.link) == 1 {
                    break;
                }
                gw.take_from_shards().await;
                gw.check_hole().await;
                gw.receipts_due();
            }
            Ev::Beat => gw.renew().await,
            Ev::Entry(entry) => gw.member_entry(&entry),
            Ev::Inbound(m) => gw.inbound(m).await,
            Ev::Direct(m) => gw.direct_request(m).await,
            Ev::Done(done) => {
                gw.finished(done);
                gw.issue_next();
            }
            Ev::Issued(issued) => gw.issued(issued),
        }
    }
    // Step 3: a clean leave.
    let _ = gw.nats.members.delete(&gw.cfg.box_id).await;
    let _ = gw.nats.client.flush().await;
    tracing::info!(box_id = %gw.cfg.box_id, "left the cluster");
}

/// What woke the gateway's loop (one at a time, moved straight into its handler).
#[allow(clippy::large_enum_variant)]
enum Ev {
    Shards,
    Lingered,
    Poll,
    Beat,
    Entry(kv::Entry),
    Inbound(jetstream::Message),
    Direct(async_nats::Message),
    Done(Finished),
    Issued(Vec<Issued>),
}

/// The shards' eventfd (a duplicate the watcher owns), watched by this runtime.
fn watch_wake(link: &ClusterLink) -> Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    let fd = link.gateway_wake.try_clone_fd().ok()?;
    // SAFETY: the AsyncFd owns `fd`, an open descriptor that stays open (and the same) until
    // the AsyncFd is dropped.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .ok()
}

/// Ready at once when something is `queued`, else once a shard writes the eventfd (which
/// is then cleared).
async fn shards_pushed(woken: &tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>, queued: bool) {
    if queued {
        return;
    }
    let Ok(mut guard) = woken.readable().await else {
        return std::future::pending().await;
    };
    let mut n: u64 = 0;
    let fd = std::os::fd::AsRawFd::as_raw_fd(woken.get_ref());
    // SAFETY: an 8-byte read into a live u64 from our non-blocking eventfd.
    let _ = unsafe { libc::read(fd, (&mut n as *mut u64).cast(), 8) };
    guard.clear_ready();
}

/// The next members entry; never ready while there is no watch (it is made again at the
/// next beat).
async fn next_entry(watch: &mut Option<kv::Watch>) -> Option<kv::Entry> {
    let Some(w) = watch.as_mut() else {
        return std::future::pending().await;
    };
    match w.next().await {
        Some(Ok(entry)) => Some(entry),
        _ => {
            *watch = None;
            None
        }
    }
}

/// The next direct request from another box; never ready once the subscription ended
/// (made again at the next beat).
async fn next_direct(sub: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    let Some(s) = sub.as_mut() else {
        return std::future::pending().await;
    };
    let m = s.next().await;
    if m.is_none() {
        *sub = None;
    }
    m
}

/// The round of publishes being issued, once issued; never ready while there is none.
async fn next_issued(issuing: &mut Option<Issuing>) -> Option<Vec<Issued>> {
    let Some(f) = issuing.as_mut() else {
        return std::future::pending().await;
    };
    let issued = f.await;
    *issuing = None;
    Some(issued)
}

impl Gw {
    /// Renews the lease; notes whether NATS answers; makes the watch and the stream reader
    /// again if they ended.
    async fn renew(&mut self) {
        self.me.load = self.link.load();
        let ok = membership::beat(&self.nats.members, &self.cfg.box_id, &self.me).await;
        let status = &self.link.status;
        if let Err(e) = &ok {
            ClusterStatus::bump(&status.lease_failures);
            tracing::warn!(box_id = %self.cfg.box_id, "cluster lease not renewed: {e}");
        }
        let now = Instant::now();
        // This box is live to itself while it can renew its lease.
        if ok.is_ok() {
            self.members.put(&self.cfg.box_id, self.me.clone(), now);
        }
        let left = self.members.expire(now);
        if left.iter().any(|id| *id != self.cfg.box_id) {
            self.members_changed();
        }
        status.alone.store(ok.is_err(), Ordering::Relaxed);
        let live = self.members.live(now).len() as u64;
        status.members.store(live, Ordering::Relaxed);
        if self.watch.is_none() {
            self.watch = self.nats.members.watch_all().await.ok();
        }
        if self.nats.inbound.is_none() {
            self.read_anew().await;
        }
        if self.nats.direct.is_none() {
            let subject = super::direct::subject(&self.cfg.box_id);
            self.nats.direct = self.nats.client.subscribe(subject).await.ok();
        }
        let pending = self.in_shards.len() as u64;
        self.link
            .status
            .inbound_pending
            .store(pending, Ordering::Relaxed);
    }

    /// Takes what every shard handed over and starts the work for it.
    async fn take_from_shards(&mut self) {
        let mut done = Vec::new();
        for shard in 0..self.link.to_gateway.len() {
            while let Some(up) = self.link.to_gateway[shard].pop() {
                match up {
                    Up::Done { token, stored } => done.push((token, stored)),
                    _ if self.work.len() + self.outbox.len() >= GATEWAY_PENDING_MAX => {
                        self.refuse(shard, up)
                    }
                    Up::Place(q) => self.place(shard, q),
                    Up::Send(d) => self.send(shard, *d),
                    Up::Receipt { sender, receipt } => self.send_receipt(sender, receipt),
                    Up::Forward(env) => self.forward(*env),
                }
            }
        }
        let settled = !done.is_empty();
        for (token, stored) in done {
            self.settle(token, stored).await;
        }
        if settled {
            self.hand_ready().await;
        }
        self.issue_next();
    }

    /// Too much in flight: the shard hears at once.
    fn refuse(&mut self, shard: usize, up: Up) {
        match up {
            Up::Place(q) => {
                let placement = Placement::Unavailable;
                answer(
                    &self.link,
                    shard,
                    Down::Placed(Answer {
                        token: q.token,
                        placement,
                    }),
                );
            }
            Up::Send(d) => {
                ClusterStatus::bump(&self.link.status.publish_failures);
                let sent = Down::Sent {
                    from: d.from.to_e164(),
                    client_msg_id: d.client_msg_id,
                    server_msg_id: None,
                    group_id: d.group_id,
                };
                answer(&self.link, shard, sent);
            }
            Up::Forward(env) => self.group_undelivered(*env, false),
            Up::Receipt { .. } | Up::Done { .. } => {}
        }
    }

    fn place(&mut self, shard: usize, q: super::Question) {
        let live = self.members.live(Instant::now());
        let homes = self.nats.homes.clone();
        self.work.push(Box::pin(async move {
            let found = placement::home(&homes, &q.phone, q.create, live).await;
            Finished::Placed(shard, q.token, found.map_err(|e| e.to_string()))
        }));
    }

    /// Step 2 of `cross.rs` for one message.
    fn send(&mut self, shard: usize, d: messaging::state::mesh_msg::Delivery) {
        let mut env = cross::Envelope::message(&d);
        env.stamp_media_base(self.link.media_base.get().map(String::as_str));
        self.route(Outgoing {
            shard: Some(shard),
            env,
        });
    }

    /// Step 4 of `cross.rs`: a receipt to the sender's home.
    fn send_receipt(&mut self, sender: String, receipt: proto::v1::Receipt) {
        let env = cross::Envelope {
            to: sender,
            receipt: Some(receipt),
            ..Default::default()
        };
        self.route(Outgoing { shard: None, env });
    }

    /// Starts the next round of publishes, unless one is being issued.
    pub(super) fn issue_next(&mut self) {
        if self.issuing.is_some() || self.outbox.is_empty() {
            return;
        }
        let n = self.outbox.len().min(ISSUE_BATCH_MAX);
        let batch: Vec<Outgoing> = self.outbox.drain(..n).collect();
        let mut known: HashMap<String, String> = HashMap::new();
        let mut known_groups: HashMap<u64, String> = HashMap::new();
        for o in &batch {
            if let Some(h) = self.homes.get(&o.env.to) {
                known.insert(o.env.to.clone(), h.to_string());
            }
            let group = o.env.group.as_ref().map(|g| g.group_id);
            if let Some((id, b)) = group.and_then(|id| Some((id, self.group_boxes.get(&id)?))) {
                known_groups.insert(id, b.clone());
            }
        }
        let at = routes::Where {
            homes: self.nats.homes.clone(),
            groups: self.nats.groups.clone(),
            known,
            known_groups,
            link: self.link.clone(),
            live: self.members.live(Instant::now()),
            // Every live box has put its entry within one beat: only then is a box
            // missing from `live` known not to be live.
            all_live_known: self.started.elapsed() >= Duration::from_millis(MEMBER_BEAT_MS),
        };
        let js = self.nats.js.clone();
        let me = self.cfg.box_id.clone();
        self.issuing = Some(Box::pin(routes::issue(js, at, me, batch)));
    }

    /// A round of publishes issued: their acks are awaited in `work`; the next round starts.
    fn issued(&mut self, issued: Vec<Issued>) {
        for Issued {
            shard,
            env,
            ack,
            guessed,
        } in issued
        {
            match ack {
                IssuedAck::Pending(home, f) => self.work.push(Box::pin(async move {
                    let publish = match f.await {
                        Ok(a) => Published::Stored {
                            home,
                            seq: a.sequence,
                            guessed,
                        },
                        Err(e) => Published::Failed(e.to_string()),
                    };
                    finished_publish(shard, env, publish)
                })),
                IssuedAck::Done(publish) => self.finished(finished_publish(shard, env, publish)),
            }
        }
        self.issue_next();
    }
}

/// Pushes `d` to `shard`, counting a placement by outcome (and anything dropped because
/// the queue is full: a placement then times out at the shard, a `Sent` leaves the sender
/// without an answer, so it retries).
fn answer(link: &ClusterLink, shard: usize, d: Down) {
    let s = &link.status;
    if let Down::Placed(a) = &d {
        let counter = match a.placement {
            Placement::Here | Placement::Nowhere => &s.answered_here,
            Placement::There(_) => &s.answered_there,
            Placement::HomeDown => &s.answered_home_down,
            Placement::Unavailable => &s.answered_unavailable,
        };
        ClusterStatus::bump(counter);
    }
    if link.to_shard[shard].push(d).is_err() {
        ClusterStatus::bump(&s.answers_dropped);
    }
    link.wake(shard);
}

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

use async_nats::jetstream::{self, kv};
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::membership::{self, Member, Members, MEMBERS_BUCKET, MEMBER_BEAT_MS, MEMBER_LEASE_MS};
use super::placement::{self, HOMES_BUCKET};
use super::{Answer, ClusterLink, ClusterStatus, Placement, GATEWAY_PENDING_MAX, GATEWAY_POLL_MS};
use crate::config::cluster::ClusterConfig;

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
}

/// The NATS side once connected.
struct Nats {
    client: async_nats::Client,
    members: kv::Store,
    homes: kv::Store,
}

/// Step 1. Returns once the box has joined, or (optional) is known to be alone.
pub fn start(cfg: &ClusterConfig, link: Arc<ClusterLink>) -> Result<(), ClusterStartError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(1);
    let cfg = cfg.clone();
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
    let client = async_nats::ConnectOptions::new()
        .name(format!("switchboard {}", cfg.box_id))
        .connection_timeout(Duration::from_millis(CONNECT_WAIT_MS))
        .connect(cfg.servers.as_slice())
        .await
        .map_err(|e| e.to_string())?;
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
    let homes = bucket(
        &js,
        kv::Config {
            bucket: HOMES_BUCKET.into(),
            description: "switchboard: each phone's home box id, written once".into(),
            history: 1,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        },
    )
    .await?;
    Ok(Nats {
        client,
        members,
        homes,
    })
}

/// The bucket as it exists, or created ([`BUCKET_REPLICAS`] replicas, else one).
///
/// The bucket's stream is created here as the client's `create_key_value` would create it:
/// that call first reads the account's JetStream limits, whose reply from nats-server 2.9
/// (Debian's) lacks fields the client requires.
async fn bucket(js: &jetstream::Context, cfg: kv::Config) -> Result<kv::Store, String> {
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
    created.map_err(|e| format!("bucket {}: {e}", cfg.bucket))?;
    js.get_key_value(cfg.bucket.clone())
        .await
        .map_err(|e| format!("bucket {}: {e}", cfg.bucket))
}

type Found = Result<Option<placement::Home>, String>;
type Lookup = Pin<Box<dyn Future<Output = (usize, u64, Found)> + Send>>;

/// Step 2 and 3.
async fn serve(cfg: ClusterConfig, link: Arc<ClusterLink>, nats: Nats) {
    let me = Member {
        advertise: cfg.advertise.clone(),
        load: 0,
    };
    let mut members = Members::default();
    members.put(&cfg.box_id, me.clone(), Instant::now());
    let mut watch = nats.members.watch_all().await.ok();
    let mut poll = tokio::time::interval(Duration::from_millis(GATEWAY_POLL_MS));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut beat = tokio::time::interval(Duration::from_millis(MEMBER_BEAT_MS));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut pending: FuturesUnordered<Lookup> = FuturesUnordered::new();
    loop {
        tokio::select! {
            _ = poll.tick() => {
                if Arc::strong_count(&link) == 1 {
                    break;
                }
                take_questions(&link, &nats, &members, &mut pending);
            }
            _ = beat.tick() => {
                renew(&cfg, &link, &nats, &me, &mut members, &mut watch).await;
            }
            Some(entry) = next_entry(&mut watch) => {
                members.apply(&entry, Instant::now());
                let live = members.live(Instant::now()).len() as u64;
                link.status.members.store(live, Ordering::Relaxed);
            }
            Some((shard, token, found)) = pending.next(), if !pending.is_empty() => {
                if let Ok(Some(placement::Home { created: true, .. })) = &found {
                    ClusterStatus::bump(&link.status.homes_created);
                }
                let placement = place(&cfg.box_id, &members, found);
                answer(&link, shard, Answer { token, placement });
            }
        }
    }
    // Step 3: a clean leave.
    let _ = nats.members.delete(&cfg.box_id).await;
    let _ = nats.client.flush().await;
    tracing::info!(box_id = %cfg.box_id, "left the cluster");
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

/// Renews the lease; notes whether NATS answers; makes the watch again if it ended.
async fn renew(
    cfg: &ClusterConfig,
    link: &ClusterLink,
    nats: &Nats,
    me: &Member,
    members: &mut Members,
    watch: &mut Option<kv::Watch>,
) {
    let ok = membership::beat(&nats.members, &cfg.box_id, me).await;
    if let Err(e) = &ok {
        ClusterStatus::bump(&link.status.lease_failures);
        tracing::warn!(box_id = %cfg.box_id, "cluster lease not renewed: {e}");
    }
    let now = Instant::now();
    // This box is live to itself while it can renew its lease.
    if ok.is_ok() {
        members.put(&cfg.box_id, me.clone(), now);
    }
    members.expire(now);
    link.status.alone.store(ok.is_err(), Ordering::Relaxed);
    link.status
        .members
        .store(members.live(now).len() as u64, Ordering::Relaxed);
    if watch.is_none() {
        *watch = nats.members.watch_all().await.ok();
    }
}

/// Takes every shard's questions and starts their look-ups.
fn take_questions(
    link: &ClusterLink,
    nats: &Nats,
    members: &Members,
    pending: &mut FuturesUnordered<Lookup>,
) {
    let mut live: Option<Vec<String>> = None;
    for (shard, q) in link.to_gateway.iter().enumerate() {
        while let Some(question) = q.pop() {
            if pending.len() >= GATEWAY_PENDING_MAX {
                let placement = Placement::Unavailable;
                answer(
                    link,
                    shard,
                    Answer {
                        token: question.token,
                        placement,
                    },
                );
                continue;
            }
            let live = live
                .get_or_insert_with(|| members.live(Instant::now()))
                .clone();
            let homes = nats.homes.clone();
            pending.push(Box::pin(async move {
                let found = placement::home(&homes, &question.phone, question.create, live).await;
                (shard, question.token, found.map_err(|e| e.to_string()))
            }));
        }
    }
}

/// What a look-up's result means for the asking box.
fn place(me: &str, members: &Members, found: Found) -> Placement {
    match found {
        Ok(Some(home)) if home.box_id == me => Placement::Here,
        Ok(Some(home)) => match members.advertise(&home.box_id, Instant::now()) {
            Some(addr) => Placement::There(addr.to_string()),
            None => Placement::HomeDown,
        },
        Ok(None) => Placement::Nowhere,
        Err(e) => {
            tracing::debug!("placement: {e}");
            Placement::Unavailable
        }
    }
}

/// Pushes `a` to `shard`, counting it by outcome (or as dropped when the queue is full).
fn answer(link: &ClusterLink, shard: usize, a: Answer) {
    let s = &link.status;
    let counter = match a.placement {
        Placement::Here | Placement::Nowhere => &s.answered_here,
        Placement::There(_) => &s.answered_there,
        Placement::HomeDown => &s.answered_home_down,
        Placement::Unavailable => &s.answered_unavailable,
    };
    ClusterStatus::bump(counter);
    if link.to_shard[shard].push(a).is_err() {
        ClusterStatus::bump(&s.answers_dropped);
    }
}

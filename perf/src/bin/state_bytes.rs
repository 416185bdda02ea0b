//! `state-bytes`: what a shard's service state costs per registered offline user, per
//! message queued for an offline user (its dedupe share included), and what a delivered and
//! acked message leaves behind, counted exactly (live heap bytes under a counting
//! allocator), the longest single event while the state grows, and the compaction snapshot
//! built in slices as the shard builds it: its longest slice and its total (thread CPU
//! time, so a shared machine's preemptions do not count).
//!
//! Drives one `ShardState` in this process, without the engine: load-test logins, sends,
//! acks and closes go through its public entry points, mesh messages loop back to it (one
//! shard), and "durability" is immediate after each step. Nothing here touches a socket or
//! a file; the numbers are the state's own.
//!
//! Steps, each measured as a heap delta:
//! 1. `--users` load-test logins, each closed at once: bytes per registered offline user.
//! 2. `--senders` online senders each send `--per-sender` messages of `--body` bytes,
//!    round-robin to `--recipients` offline users: bytes per queued message.
//! 3. The recipients log in, receive and ack everything, and leave: bytes left behind per
//!    delivered-and-acked message (against the heap before step 2).

use std::time::Duration;

use clap::Parser;
use messaging::state::effect::{AfterCommit, Effect, Out};
use messaging::state::{ServiceSettings, ShardState};
use perf::counting_alloc::{Counting, Snapshot};
use proto::ids::{ConnId, ShardId};
use proto::v1::{client_frame, server_frame, ClientFrame};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Parser)]
#[command(about = "A shard's state bytes per user and per message, and its longest event")]
struct Args {
    /// Registered users, offline.
    #[arg(long, default_value_t = 200_000)]
    users: u64,
    /// Online senders.
    #[arg(long, default_value_t = 1_000)]
    senders: u64,
    /// Offline recipients (registered first).
    #[arg(long, default_value_t = 1_000)]
    recipients: u64,
    /// Messages each sender sends.
    #[arg(long, default_value_t = 100)]
    per_sender: u64,
    /// Body bytes per message.
    #[arg(long, default_value_t = 64)]
    body: usize,
}

const SECRET: &[u8] = b"state-bytes";

/// One shard, driven like the engine would.
struct Driver {
    state: ShardState,
    now: u64,
    waiting: Vec<AfterCommit>,
    next_conn: u64,
    /// Server ids of messages delivered, per connection, not yet taken.
    delivered: Vec<(ConnId, u64)>,
    longest_event: Duration,
    /// What the longest event was.
    longest_kind: &'static str,
}

impl Driver {
    fn new() -> Driver {
        let settings = ServiceSettings {
            load_test_secret: Some(SECRET.to_vec()),
            ..ServiceSettings::default()
        };
        let mut seed = 1u64;
        let random = Box::new(move |buf: &mut [u8]| {
            for b in buf {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
        });
        let now = 1_800_000_000_000;
        Driver {
            state: ShardState::new(ShardId(0), 1, settings, random, now),
            now,
            waiting: Vec::new(),
            next_conn: 1,
            delivered: Vec::new(),
            longest_event: Duration::ZERO,
            longest_kind: "none",
        }
    }

    /// Runs one event, timed, then the mesh messages it (and they) sent.
    fn event(&mut self, kind: &'static str, f: impl FnOnce(&mut ShardState, u64, &mut Out)) {
        let mut out = Out::default();
        let t = thread_cpu();
        f(&mut self.state, self.now, &mut out);
        let took = thread_cpu().saturating_sub(t);
        if took > self.longest_event {
            self.longest_event = took;
            self.longest_kind = kind;
        }
        self.apply(out);
    }

    fn apply(&mut self, out: Out) {
        self.waiting.extend(out.after_commit);
        for e in out.now {
            match e {
                Effect::Mesh(_, msg) => self.event("mesh", |s, now, o| s.on_mesh(now, msg, o)),
                Effect::Frame(conn, server_frame::Kind::Message(m)) => {
                    self.delivered.push((conn, m.server_msg_id))
                }
                _ => {}
            }
        }
    }

    /// Everything appended is durable.
    fn commit(&mut self) {
        while !self.waiting.is_empty() {
            for a in std::mem::take(&mut self.waiting) {
                self.event("durable", |s, _, o| s.on_durable(a, o));
            }
        }
    }

    fn frame(&mut self, conn: ConnId, kind: client_frame::Kind) {
        let label = match &kind {
            client_frame::Kind::LoadTestLogin(_) => "login",
            client_frame::Kind::Send(_) => "send",
            client_frame::Kind::Ack(_) => "ack",
            _ => "frame",
        };
        let frame = ClientFrame { kind: Some(kind) };
        self.event(label, |s, now, o| s.on_frame(now, conn, frame, o));
    }

    fn login(&mut self, phone: &str) -> ConnId {
        let conn = ConnId::from_u64(self.next_conn);
        self.next_conn += 1;
        self.state.note_peer(conn, None);
        let login = proto::v1::LoadTestLogin {
            protocol_version: proto::PROTOCOL_VERSION,
            phone: phone.into(),
            secret: SECRET.to_vec(),
        };
        self.frame(conn, client_frame::Kind::LoadTestLogin(login));
        self.commit();
        conn
    }

    fn close(&mut self, conn: ConnId) {
        self.event("close", |s, now, o| s.on_close(now, conn, o));
    }
}

/// CPU time this thread has used: work, not the preemptions a shared machine adds.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID is always there on Linux");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn phone(i: u64) -> String {
    format!("+1{:010}", 2_000_000_000 + i)
}

fn heap() -> isize {
    Snapshot::take().bytes
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut d = Driver::new();
    let start = heap();

    // 1. Registered users, offline.
    for i in 0..a.users {
        let c = d.login(&phone(i));
        d.close(c);
    }
    d.commit();
    let users = heap();
    let per_user = (users - start) as f64 / a.users.max(1) as f64;
    println!("registered offline users: {}", a.users);
    println!("  bytes per registered offline user: {per_user:.0}");

    // 2. Messages queued for offline recipients.
    let recipients: Vec<String> = (0..a.recipients).map(|i| phone(a.users + i)).collect();
    for r in &recipients {
        let c = d.login(r);
        d.close(c);
    }
    let senders: Vec<ConnId> = (0..a.senders)
        .map(|i| d.login(&phone(a.users + a.recipients + i)))
        .collect();
    d.commit();
    d.delivered.clear();
    let before_sends = heap();
    let body = vec![b'x'; a.body];
    let mut sent = 0u64;
    for j in 0..a.per_sender {
        for (s, &conn) in senders.iter().enumerate() {
            let to = &recipients[(s as u64 + j) as usize % recipients.len()];
            let send = proto::v1::SendMessage {
                to: to.clone(),
                client_msg_id: j + 1,
                body: body.clone().into(),
                media: None,
            };
            d.frame(conn, client_frame::Kind::Send(send));
            sent += 1;
        }
        d.commit();
    }
    let queued = d.state.queued_total() as u64;
    let per_msg = (heap() - before_sends) as f64 / queued.max(1) as f64;
    println!(
        "messages queued for offline users: {queued} of {sent} sent, {} B bodies",
        a.body
    );
    println!(
        "  bytes per queued message: {per_msg:.0} (body + {:.0})",
        per_msg - a.body as f64
    );
    let snap = sliced_snapshot(&mut d.state);

    // 3. Delivered and acked.
    for r in &recipients {
        let c = d.login(r);
        loop {
            d.commit();
            let ids: Vec<u64> = d
                .delivered
                .drain(..)
                .filter(|(to, _)| *to == c)
                .map(|(_, id)| id)
                .collect();
            if ids.is_empty() {
                break;
            }
            for chunk in ids.chunks(proto::limits::ACK_IDS_PER_FRAME_MAX) {
                let ack = proto::v1::Ack {
                    server_msg_ids: chunk.to_vec(),
                };
                d.frame(c, client_frame::Kind::Ack(ack));
            }
        }
        d.close(c);
    }
    // The senders got their receipts; they leave too.
    for &c in &senders {
        d.close(c);
    }
    d.commit();
    d.delivered = Vec::new();
    let left = d.state.queued_total();
    let per_acked = (heap() - before_sends) as f64 / sent.max(1) as f64;
    println!("delivered and acked: {sent}, still queued: {left} (receipts for offline senders)");
    println!("  bytes left per delivered-and-acked message: {per_acked:.1}");
    println!(
        "longest single event: {:?} ({})",
        d.longest_event, d.longest_kind
    );
    println!(
        "snapshot of {} records, {} bytes, in {} slices (as the shard builds it): {:?} in all; slice median {:?}, longest {:?}",
        snap.records, snap.bytes, snap.slices, snap.total, snap.median_slice, snap.longest_slice
    );
    Ok(())
}

/// What building a compaction snapshot in slices cost.
struct SlicedSnapshot {
    records: u64,
    bytes: usize,
    slices: u64,
    total: Duration,
    longest_slice: Duration,
    median_slice: Duration,
}

/// Builds a snapshot as the shard does (`shards::adapter`): encoded, a slice of
/// `SNAPSHOT_SLICE_BYTES` at a time, each slice timed in thread CPU time. The shard sizes
/// its buffer up front (for the largest snapshot that pays); so does this, from a first,
/// untimed build.
fn sliced_snapshot(state: &mut ShardState) -> SlicedSnapshot {
    let size = {
        let mut n = 0;
        let mut count = |r: messaging::durable::record::Record| {
            let mut b = Vec::new();
            let k = messaging::durable::record::encode_counted(&r, &mut b);
            n += k;
            k
        };
        let mut walk = state.begin_snapshot(&mut count);
        while !state.snapshot_step(&mut walk, usize::MAX, &mut count) {}
        n
    };
    let mut bytes = Vec::with_capacity(size);
    let mut records = 0u64;
    let mut emit = |r: messaging::durable::record::Record| {
        records += 1;
        messaging::durable::record::encode_counted(&r, &mut bytes)
    };
    let t = thread_cpu();
    let mut walk = state.begin_snapshot(&mut emit);
    let mut slices = vec![thread_cpu().saturating_sub(t)];
    loop {
        let s = thread_cpu();
        let done = state.snapshot_step(
            &mut walk,
            messaging::state::limits::SNAPSHOT_SLICE_BYTES,
            &mut emit,
        );
        slices.push(thread_cpu().saturating_sub(s));
        if done {
            break;
        }
    }
    slices.sort();
    let longest_slice = *slices.last().expect("at least the first");
    let median_slice = slices[slices.len() / 2];
    let total = thread_cpu().saturating_sub(t);
    SlicedSnapshot {
        records,
        bytes: bytes.len(),
        slices: walk.slices,
        total,
        longest_slice,
        median_slice,
    }
}

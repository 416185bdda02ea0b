//! A cluster of boxes over NATS (issue 24): what a box shares with the others, and how its
//! shards reach the one thread that talks to NATS.
//!
//! - `gateway.rs`: the gateway thread (a tokio current-thread runtime with the `async-nats`
//!   client; never a shard thread): connects at start, keeps the buckets, answers the
//!   shards' questions.
//! - `membership.rs`: the `switchboard_members` KV bucket: this box's lease, the live boxes.
//! - `placement.rs`: a phone's home box: rendezvous hashing over the live boxes, recorded
//!   once in the `switchboard_homes` KV bucket.
//! - `cross.rs`: messages and receipts between boxes: one JetStream stream per box;
//!   `groups.rs`: group messages between boxes, and where each group lives;
//!   `routes.rs`: the gateway's publishing rounds for them, in order.
//! - `port.rs`: a shard's side: its questions waiting for answers, with deadlines, and the
//!   messages from other boxes it is storing.
//! - `status.rs`: `switchboard cluster status`, the members and their load for an operator.
//!
//! ## How a shard talks to the gateway
//! As shards talk to each other: one bounded SPSC queue per shard towards the gateway
//! ([`ClusterLink::to_gateway`]) and one back ([`ClusterLink::to_shard`]). A shard that
//! pushes wakes the gateway ([`GatewayWake`]: an eventfd written only while the gateway is
//! parked), which then takes everything queued (under load, batches form while it works);
//! it also looks every [`GATEWAY_POLL_MS`]. After pushing to a shard it wakes it through the engine
//! (`engine::mesh::OutsideWake`: the shard's eventfd, written only if it is parked), and the
//! shard drains its end in `Service::on_outside`. A shard also polls every [`PORT_POLL_MS`]
//! while frames wait or messages are held, else every [`PORT_IDLE_POLL_MS`]. A full queue is
//! `Busy` to the client, never a wait. Nothing here runs for a box without `--cluster`:
//! the shard's only cost is a branch on an `Option`.
//!
//! ## What is in place (and what is not)
//! Membership, placement, Register / Verify / Login / LoadTestLogin at any box (a box that
//! is not the phone's home answers `Redirect` to the home's advertised address), 1:1
//! messages and receipts between users of different boxes (straight to a live box:
//! `direct.rs`; else through its stream: `cross.rs`, handed over in order: `in_order.rs`),
//! groups with members on several boxes and presence across boxes (`groups.rs`), logging
//! in to NATS (`nats_auth.rs`), importing a box that ran alone (`import.rs`), and media
//! links naming the box that holds the object, signed with one cluster key
//! (`media_key.rs`). See ARCHITECTURE.md, "A cluster of boxes".
//!
//! This module owns the link and its counters; it must not touch a shard's state.

pub mod box_number;
pub mod cross;
pub mod direct;
pub mod gateway;
pub mod groups;
pub mod import;
pub mod in_order;
pub mod media_key;
pub mod membership;
pub mod nats_auth;
pub mod placement;
pub mod port;
mod routes;
pub mod status;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

/// Questions one shard may have queued for the gateway (and answers back); past it a new
/// question is answered `Busy`.
pub const LINK_QUEUE_MSGS_MAX: usize = 4096;
/// How often the gateway looks at the shards' queues without being woken (it is woken
/// after each push it could miss: `GatewayWake`), and at whether the shards are gone.
pub const GATEWAY_POLL_MS: u64 = 50;
/// How often a shard with frames waiting or messages held polls its end of the link.
pub const PORT_POLL_MS: u64 = 2;
/// How often a shard with nothing waiting polls it anyway (the gateway wakes it for what it
/// brings; this only bounds what a lost wake-up could cost).
pub const PORT_IDLE_POLL_MS: u64 = 100;
/// A question not answered within this long is answered `CLUSTER_UNAVAILABLE`.
pub const ANSWER_WAIT_MAX_MS: u64 = 5_000;
/// `Busy.retry_after_ms` for a pre-login frame that found the link full.
pub const BUSY_RETRY_AFTER_MS: u32 = 200;
/// Questions the gateway works on at once (all shards together); past it a question is
/// answered `Unavailable` at once.
pub const GATEWAY_PENDING_MAX: usize = 16_384;

/// A shard's question to the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The shard's token for it (answers carry it back).
    pub token: u64,
    /// The phone whose home box is asked for.
    pub phone: String,
    /// Choose and record a home if the phone has none (Register, LoadTestLogin).
    pub create: bool,
}

/// Where a phone's home box is, as the gateway found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// This box: serve the frame here.
    Here,
    /// The phone has no home recorded (a Login of a number nobody registered): serve the
    /// frame here, which answers as a single box does.
    Nowhere,
    /// Another live box, at this advertised address.
    There(String),
    /// Another box that is not live now.
    HomeDown,
    /// NATS could not answer.
    Unavailable,
}

/// The gateway's answer to a [`Question`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The question's token.
    pub token: u64,
    /// Where the phone's home is.
    pub placement: Placement,
}

/// What a shard hands its gateway.
#[derive(Debug)]
pub enum Up {
    /// Where is this phone's home?
    Place(Question),
    /// A 1:1 message whose recipient has no account on this box (`cross.rs`): publish it to
    /// the recipient's home box's stream, then answer [`Down::Sent`].
    Send(Box<messaging::state::mesh_msg::Delivery>),
    /// A receipt for a sender with no account on this box: publish it to the sender's home.
    Receipt {
        /// Who sent the message the receipt is about.
        sender: String,
        /// The receipt.
        receipt: proto::v1::Receipt,
    },
    /// A group message for another box (`groups.rs` step 2): publish it there.
    Forward(Box<cross::Envelope>),
    /// A message from another box ([`Down::Deliver`]) is stored (`true`: ack it) or was
    /// refused for now (`false`: JetStream delivers it again later).
    Done {
        /// The inbound message's token.
        token: u64,
        /// Stored or answered by the recipient.
        stored: bool,
    },
}

/// What the gateway hands a shard.
#[derive(Debug)]
pub enum Down {
    /// The answer to an [`Up::Place`].
    Placed(Answer),
    /// The outcome of an [`Up::Send`]: JetStream's stream sequence once the recipient's box
    /// stream holds it (0 for a group copy for a number with no home: counted done), or
    /// `None` when it could not be published (the sender gets `Busy`). A 1:1 message for a
    /// number with no home comes back as [`Down::Group`] instead.
    Sent {
        /// The sender.
        from: String,
        /// The sender's id for it.
        client_msg_id: u64,
        /// The id the sender's `ServerAck` carries, or `None`.
        server_msg_id: Option<u64>,
        /// For a copy of a group send (`groups.rs` step 3): its group, whose home then
        /// counts the copy done (or failed); 0 for a 1:1 message.
        group_id: u64,
    },
    /// A mesh message for this shard's state machines: a group message from another box
    /// (`groups.rs` step 4), an answer for one that could not leave, or a 1:1 message for a
    /// number with no home anywhere (stored as a single box stores a send to a number nobody
    /// has: no enumeration signal).
    Group(messaging::state::mesh_msg::ShardMsg),
    /// A message from another box for a user homed on this shard; answer [`Up::Done`].
    Deliver {
        /// The token [`Up::Done`] names.
        token: u64,
        /// The message.
        delivery: Box<messaging::state::mesh_msg::Delivery>,
    },
    /// A receipt from another box for a sender homed on this shard.
    Receipt {
        /// The sender.
        sender: String,
        /// The receipt.
        receipt: proto::v1::Receipt,
    },
    /// Another box joined or started again (holding no presence state), or left (its
    /// users' presence unknown now): this shard's subscribers ask again (`groups.rs` step
    /// 6).
    MembersChanged,
}

/// Box-wide cluster numbers the gateway keeps (read by shard 0's statistics once a second).
#[derive(Debug, Default)]
pub struct ClusterStatus {
    /// NATS is not reachable now (or was not at start, with `--cluster-optional`).
    pub alone: AtomicBool,
    /// Live boxes, this one included, as last seen.
    pub members: AtomicU64,
    /// Questions answered: serve here (this box is the home, or the phone has none).
    pub answered_here: AtomicU64,
    /// Questions answered: redirect to another live box.
    pub answered_there: AtomicU64,
    /// Questions answered: the home box is not live.
    pub answered_home_down: AtomicU64,
    /// Questions answered: NATS could not say.
    pub answered_unavailable: AtomicU64,
    /// Homes this box recorded (Register at a new number).
    pub homes_created: AtomicU64,
    /// Lease renewals that failed.
    pub lease_failures: AtomicU64,
    /// Answers dropped because a shard's queue was full (its question then times out).
    pub answers_dropped: AtomicU64,
    /// Messages published to another box's stream (acked by JetStream).
    pub messages_out: AtomicU64,
    /// Messages that could not be published (the sender got `Busy`).
    pub publish_failures: AtomicU64,
    /// Messages for phones with no home anywhere (answered like stored ones, dropped).
    pub messages_to_nobody: AtomicU64,
    /// Messages from other boxes stored here (JetStream acked).
    pub messages_in: AtomicU64,
    /// Messages from other boxes handed back for later (shard busy or queue full).
    pub messages_in_retried: AtomicU64,
    /// Inbound stream messages that did not decode (dropped).
    pub messages_in_bad: AtomicU64,
    /// Group messages published to another box (`groups.rs`).
    pub group_out: AtomicU64,
    /// Group messages from other boxes handed to shards.
    pub group_in: AtomicU64,
    /// Group messages with nobody to go to, or not taken by NATS (answered, `groups.rs`
    /// step 5).
    pub group_undelivered: AtomicU64,
    /// Group ids another box had claimed first (`groups.rs` step 1).
    pub group_clashes: AtomicU64,
    /// Receipts published to another box / received from one.
    pub receipts_out: AtomicU64,
    /// Receipts received from other boxes.
    pub receipts_in: AtomicU64,
    /// Messages handed to shards and not yet stored (JetStream redelivers them if lost).
    pub inbound_pending: AtomicU64,
    /// Times this box's stream was read anew because a delivery was lost on its way
    /// (`in_order.rs`).
    pub inbound_rereads: AtomicU64,
    /// Deliveries of this box's stream dropped unacked because `in_order::WAITING_MAX`
    /// waited behind a hole already (JetStream delivers them again).
    pub inbound_refused: AtomicU64,
    /// Messages refused `Busy` because their sender's direct line was full
    /// (`direct::LINE_MSGS_MAX`, `QUEUED_MSGS_MAX`, `LINES_MAX`).
    pub direct_lines_full: AtomicU64,
    /// Messages sent straight to a live home box and stored there (`direct.rs`).
    pub direct_out: AtomicU64,
    /// Messages and receipts a live home box did not take directly, sent to its stream.
    pub direct_fallbacks: AtomicU64,
    /// Messages from other boxes taken directly and stored here.
    pub direct_in: AtomicU64,
    /// Direct messages refused because this box had not yet handed over its stream up
    /// to where the sender's earlier messages are.
    pub direct_behind: AtomicU64,
    /// Receipts given up on: NATS did not take them and too many waited to be sent again.
    pub receipts_dropped: AtomicU64,
    /// Direct requests sent to other boxes (one per home box per gateway turn, or more
    /// when a batch is full: `direct.rs` step 5).
    pub direct_batches_out: AtomicU64,
    /// Messages and receipts those requests carried (÷ `direct_batches_out`: the average
    /// batch).
    pub direct_batched_out: AtomicU64,
    /// Direct requests from other boxes refused whole (garbage, cut short, over-size or
    /// over-count): their messages go to this box's stream.
    pub direct_batches_bad: AtomicU64,
}

impl ClusterStatus {
    /// The gateway counts (its own thread; never a shard's path).
    pub fn bump(counter: &AtomicU64) {
        #[allow(clippy::disallowed_methods)] // the gateway thread, once per question
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The gateway counts `n` at once (its own thread).
    pub fn add(counter: &AtomicU64, n: u64) {
        #[allow(clippy::disallowed_methods)] // the gateway thread, once per batch
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The statistics shard 0 reports for the box (names in `stats::HELP`).
    pub fn report(&self) -> Vec<(&'static str, u64)> {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            (
                "cluster_alone",
                u64::from(self.alone.load(Ordering::Relaxed)),
            ),
            ("cluster_members", l(&self.members)),
            ("cluster_placed_here_total", l(&self.answered_here)),
            ("cluster_placed_there_total", l(&self.answered_there)),
            ("cluster_home_down_total", l(&self.answered_home_down)),
            ("cluster_unavailable_total", l(&self.answered_unavailable)),
            ("cluster_homes_created_total", l(&self.homes_created)),
            ("cluster_lease_failures_total", l(&self.lease_failures)),
            ("cluster_answers_dropped_total", l(&self.answers_dropped)),
            ("cluster_messages_out_total", l(&self.messages_out)),
            ("cluster_publish_failures_total", l(&self.publish_failures)),
            (
                "cluster_messages_to_nobody_total",
                l(&self.messages_to_nobody),
            ),
            ("cluster_messages_in_total", l(&self.messages_in)),
            (
                "cluster_messages_in_retried_total",
                l(&self.messages_in_retried),
            ),
            ("cluster_messages_in_bad_total", l(&self.messages_in_bad)),
            ("cluster_group_out_total", l(&self.group_out)),
            ("cluster_group_in_total", l(&self.group_in)),
            (
                "cluster_group_undelivered_total",
                l(&self.group_undelivered),
            ),
            ("cluster_group_clashes_total", l(&self.group_clashes)),
            ("cluster_receipts_out_total", l(&self.receipts_out)),
            ("cluster_receipts_in_total", l(&self.receipts_in)),
            ("cluster_inbound_pending", l(&self.inbound_pending)),
            ("cluster_inbound_rereads_total", l(&self.inbound_rereads)),
            ("cluster_inbound_refused_total", l(&self.inbound_refused)),
            (
                "cluster_direct_lines_full_total",
                l(&self.direct_lines_full),
            ),
            ("cluster_direct_out_total", l(&self.direct_out)),
            ("cluster_direct_fallbacks_total", l(&self.direct_fallbacks)),
            ("cluster_direct_in_total", l(&self.direct_in)),
            ("cluster_direct_behind_total", l(&self.direct_behind)),
            ("cluster_receipts_dropped_total", l(&self.receipts_dropped)),
            (
                "cluster_direct_batches_out_total",
                l(&self.direct_batches_out),
            ),
            (
                "cluster_direct_batched_out_total",
                l(&self.direct_batched_out),
            ),
            (
                "cluster_direct_batches_bad_total",
                l(&self.direct_batches_bad),
            ),
        ]
    }
}

/// How a shard wakes the gateway after a push: an eventfd the gateway's runtime watches,
/// written only while the gateway is parked (the flag is set before it looks at the queues
/// one last time and waits; a shard pushes, then reads the flag; both sequentially
/// consistent, as the mesh's `ShardWake`). Under load the gateway is rarely parked, so a
/// push rarely costs a write.
#[derive(Debug)]
pub struct GatewayWake {
    fd: OwnedFd,
    parked: AtomicBool,
}

impl GatewayWake {
    fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd(2) with plain flags; the result is checked, then owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(GatewayWake {
            // SAFETY: a fresh descriptor nobody else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            parked: AtomicBool::new(false),
        })
    }

    /// A shard, after its push: wakes the gateway if it is parked.
    pub fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: an 8-byte write from a live u64 to our eventfd. A full counter
            // (EAGAIN) already wakes the reader, so the result does not matter.
            let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    /// The gateway is about to wait (`true`) or is awake (`false`).
    pub fn set_parked(&self, parked: bool) {
        self.parked.store(parked, Ordering::SeqCst);
    }

    /// A duplicate of the eventfd, for the gateway's runtime to watch and clear.
    pub fn try_clone_fd(&self) -> std::io::Result<OwnedFd> {
        self.fd.try_clone()
    }
}

/// What the shards and the gateway share: the queues and the box-wide numbers.
#[derive(Debug)]
pub struct ClusterLink {
    /// This box's id.
    pub box_id: String,
    /// Per shard, what it hands the gateway (producer: the shard; consumer: the gateway).
    pub to_gateway: Vec<ArrayQueue<Up>>,
    /// Per shard, what the gateway hands it (producer: the gateway; consumer: the shard).
    pub to_shard: Vec<ArrayQueue<Down>>,
    /// Box-wide numbers.
    pub status: ClusterStatus,
    /// Per shard, the gateway's way to wake it after pushing (set once the shards run).
    pub wakes: std::sync::OnceLock<Vec<engine::mesh::OutsideWake>>,
    /// The shards' way to wake the gateway after pushing.
    pub gateway_wake: GatewayWake,
    /// The shards' published statistics (set once they run): the load a box announces.
    pub stats: std::sync::OnceLock<Arc<engine::observe::stats::StatsBoard>>,
    /// This box's media service as clients reach it (set at start when it has one): the
    /// gateway names it in the envelopes of messages whose media it holds (`cross.rs`).
    pub media_base: std::sync::OnceLock<String>,
}

impl ClusterLink {
    /// Queues for `shards` shards, empty; fails only if no eventfd can be made.
    pub fn new(box_id: String, shards: usize) -> std::io::Result<Self> {
        Ok(ClusterLink {
            box_id,
            to_gateway: (0..shards)
                .map(|_| ArrayQueue::new(LINK_QUEUE_MSGS_MAX))
                .collect(),
            to_shard: (0..shards)
                .map(|_| ArrayQueue::new(LINK_QUEUE_MSGS_MAX))
                .collect(),
            status: ClusterStatus::default(),
            wakes: std::sync::OnceLock::new(),
            gateway_wake: GatewayWake::new()?,
            stats: std::sync::OnceLock::new(),
            media_base: std::sync::OnceLock::new(),
        })
    }

    /// Connections the box holds, as its shards last published (0 before they have).
    pub fn load(&self) -> u64 {
        self.stats.get().map_or(0, |b| {
            b.read_all()
                .iter()
                .flatten()
                .map(|s| s.counters.conns_open)
                .sum()
        })
    }

    /// Shard `shard` hands `up` to the gateway and wakes it; `Err` hands it back when the
    /// queue is full.
    pub fn up(&self, shard: usize, up: Up) -> Result<(), Up> {
        self.to_gateway[shard].push(up)?;
        self.gateway_wake.notify();
        Ok(())
    }

    /// Wakes shard `shard` after a push into its queue (a no-op until the shards run: they
    /// poll their queues at start anyway).
    pub fn wake(&self, shard: usize) {
        if let Some(w) = self.wakes.get().and_then(|w| w.get(shard)) {
            w.notify();
        }
    }

    /// True while this box cannot reach NATS.
    pub fn alone(&self) -> bool {
        self.status.alone.load(Ordering::Relaxed)
    }
}

/// The KV key a phone's home is recorded under: KV keys allow `[-/_=.a-zA-Z0-9]`, so an
/// E.164 number (`+` and digits) becomes `p` and its digits; anything else is hex.
pub fn phone_key(phone: &str) -> String {
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        format!("p{digits}")
    } else {
        let hex: String = phone.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x{hex}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_keys_are_valid_kv_keys_and_distinct() {
        assert_eq!(phone_key("+15551234567"), "p15551234567");
        assert_eq!(phone_key("15551234567"), "p15551234567");
        let odd = phone_key("+1 555.x");
        assert!(odd.starts_with('x'));
        assert!(odd.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(phone_key(""), phone_key("+"));
    }
}

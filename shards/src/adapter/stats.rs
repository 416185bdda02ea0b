//! What a shard's service reports in its statistics once a second: queue lengths (total,
//! longest, users waiting), the durable log's size, commits, failures and items never
//! written, and two latency histograms since start: each log sync (append + `fdatasync`, or
//! a compaction's replace), and each message's delivery at the recipient's home; and what
//! the abuse limits did (the core's
//! [`AbuseCounters`](messaging::state::counters::AbuseCounters): refusals per sign-up
//! budget as `refused_<budget>_total`, PINs sent and pending, pre-login closes, fair-queue
//! refusals, presence subscriptions).
//!
//! Names here are stable: they become `switchboard_<name>` metrics and the names alarm
//! rules watch ([`STAT_QUEUE_ITEMS`], [`STAT_QUEUE_ITEMS_USER_MAX`]). A name ending in
//! `_total` only grows (a Prometheus counter); the others are gauges. Pure bookkeeping on one
//! shard: recording is one bucket increment, per log sync or per delivered message.

use engine::observe::histogram::{Histogram, NamedHistogram};
use proto::v1::server_frame;

use messaging::state::effect::Effect;

/// Items queued on the shard (alarm rule: items per shard).
pub const STAT_QUEUE_ITEMS: &str = "queue_items";
/// Items in the longest single user's queue (alarm rule: items per user).
pub const STAT_QUEUE_ITEMS_USER_MAX: &str = "queue_items_user_max";

const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

/// Log sync buckets: tens of microseconds (a page cache or NVMe with a write cache) to
/// seconds (a saturated or failing disk).
pub const FSYNC_BOUNDS_NS: &[u64] = &[
    50 * US,
    100 * US,
    250 * US,
    500 * US,
    MS,
    2_500 * US,
    5 * MS,
    10 * MS,
    25 * MS,
    50 * MS,
    100 * MS,
    250 * MS,
    500 * MS,
    S,
    2_500 * MS,
    10 * S,
];

/// Delivery buckets: the sender's frame (millisecond clock) to the message leaving for the
/// online recipient; sub-millisecond deliveries land in the first bucket.
pub const DELIVERY_BOUNDS_NS: &[u64] = &[
    MS,
    2 * MS,
    5 * MS,
    10 * MS,
    20 * MS,
    50 * MS,
    100 * MS,
    200 * MS,
    500 * MS,
    S,
    2 * S,
    5 * S,
    10 * S,
    30 * S,
];

// Built at compile time: bounds that do not fit or do not increase fail the build.
const _: Histogram = Histogram::new(FSYNC_BOUNDS_NS);
const _: Histogram = Histogram::new(DELIVERY_BOUNDS_NS);

/// Help text per statistic, for `/metrics`.
pub const HELP: &[(&str, &str)] = &[
    (STAT_QUEUE_ITEMS, "Items queued for users on this shard."),
    (
        STAT_QUEUE_ITEMS_USER_MAX,
        "Items in the longest single user's queue.",
    ),
    ("queue_users", "Users with items waiting."),
    ("log_bytes", "Bytes in the shard's durable log."),
    ("log_commits_total", "Log batches committed."),
    ("log_failures_total", "Log batches that failed to write."),
    (
        "log_items_skipped_total",
        "Queued items never written: their recipient acked them before their batch left.",
    ),
    (
        "log_snapshots_total",
        "Compaction snapshots built (in slices between events).",
    ),
    (
        "log_snapshot_slices_total",
        "Slices compaction snapshots were built in, one per loop turn at most.",
    ),
    (
        "refused_pin_source_total",
        "PIN sends refused: the source address's budget.",
    ),
    (
        "refused_pin_prefix_total",
        "PIN sends refused: the source prefix's budget (/24, /48).",
    ),
    (
        "refused_pin_range_total",
        "PIN sends refused: the number range's budget.",
    ),
    (
        "refused_pin_box_total",
        "PIN sends refused: this shard's share of the box budget.",
    ),
    (
        "refused_pin_number_total",
        "PIN sends refused: the number's back-off.",
    ),
    (
        "refused_guess_source_total",
        "Verify attempts refused: the source address's budget.",
    ),
    (
        "refused_guess_prefix_total",
        "Verify attempts refused: the source prefix's budget.",
    ),
    (
        "refused_guess_box_total",
        "Verify attempts refused: this shard's share of the box budget.",
    ),
    (
        "refused_guess_number_total",
        "Verify attempts refused: the PIN was burned.",
    ),
    (
        "refused_group_create_total",
        "Group creations refused: the user's hourly budget.",
    ),
    (
        "groups_per_user_full_total",
        "Group creations refused: the user administers the most groups allowed.",
    ),
    (
        "group_adds_refused_total",
        "Members not added to a group: they do not accept adds from the adder.",
    ),
    (
        "group_creates_pending_full_total",
        "Group creations refused: too many wait for their members' answers.",
    ),
    (
        "group_creates_pending",
        "Group creations waiting for their members' answers.",
    ),
    ("pins_sent_total", "PINs handed to the SMS gateway."),
    (
        "pins_pending",
        "Numbers with an outstanding PIN or back-off.",
    ),
    (
        "budget_keys",
        "Keys tracked by the sign-up and per-user budgets.",
    ),
    ("prelogin_conns", "Pre-login connections tracked."),
    (
        "prelogin_closed_total",
        "Pre-login connections closed for refusals or hand-overs.",
    ),
    (
        "queue_sender_share_full_total",
        "Messages refused: the sender holds its share of the recipient's queue.",
    ),
    (
        "receipts_dropped_total",
        "Receipts that found their user's queue full.",
    ),
    (
        "login_timeouts_total",
        "Connections closed: not logged in within the login timeout.",
    ),
    ("presence_subscriptions", "Presence subscriptions held."),
    (
        "presence_refused",
        "Presence subscriptions refused at the per-subscriber cap.",
    ),
    (
        "refused_presence_fanout_total",
        "PresenceSubscribe frames refused: the user's presence fan-out budget.",
    ),
    (
        "refused_group_fanout_total",
        "Group sends refused: the sender's group fan-out budget at the group's home.",
    ),
    (
        "presence_updates_skipped_total",
        "Presence changes not fanned out: the shard was overloaded.",
    ),
    (
        "presence_reasks_total",
        "Presence subscriptions asked again: another box of the cluster joined or left.",
    ),
    (
        "presence_reasks_skipped_total",
        "Presence subscriptions not asked again at a box's join: over the per-join cap.",
    ),
    (
        "refused_new_recipient_total",
        "Sends refused: the sender's budget of new recipients per hour.",
    ),
    (
        "recipient_ties",
        "Sender-recipient pairs that write for free.",
    ),
    (
        "sends_to_unknown_total",
        "Sends to numbers nobody has, answered as if stored and dropped.",
    ),
    ("media_slots_granted_total", "Media upload slots granted."),
    (
        "media_slots_refused_total",
        "Media slot requests refused: no media service, or over the object limit.",
    ),
    (
        "mesh_handed_back_total",
        "Mesh messages the full outbox handed back to the service.",
    ),
    (
        "mesh_answered_busy_total",
        "Handed-back sends answered Busy at the sender's home.",
    ),
    (
        "mesh_presence_dropped_total",
        "Handed-back presence messages dropped (nobody is owed them).",
    ),
    (
        "mesh_held_total",
        "Handed-back owed messages held and sent again once the outbox had room.",
    ),
    (
        "mesh_owed_dropped_total",
        "Owed mesh messages dropped: the hold was full too (should stay 0).",
    ),
    (
        "mesh_held",
        "Owed mesh messages held now, waiting for outbox room.",
    ),
    // A box of a cluster only (`crate::cluster`); the box-wide ones from shard 0.
    (
        "cluster_redirects_total",
        "Pre-login frames answered Redirect: the phone's home is another box.",
    ),
    (
        "cluster_busy_total",
        "Pre-login frames answered Busy: the link to the cluster gateway was full.",
    ),
    (
        "cluster_answer_timeouts_total",
        "Pre-login frames refused: the cluster gateway did not answer in time.",
    ),
    (
        "cluster_waiting",
        "Pre-login frames waiting for the cluster gateway.",
    ),
    (
        "cluster_alone",
        "1 while this box cannot reach its cluster (NATS) and serves alone (shard 0).",
    ),
    (
        "cluster_members",
        "Live boxes in the cluster, this one included (shard 0).",
    ),
    (
        "cluster_placed_here_total",
        "Home look-ups answered: serve here (shard 0).",
    ),
    (
        "cluster_placed_there_total",
        "Home look-ups answered: another live box (shard 0).",
    ),
    (
        "cluster_home_down_total",
        "Home look-ups answered: the home box is not live (shard 0).",
    ),
    (
        "cluster_unavailable_total",
        "Home look-ups NATS could not answer (shard 0).",
    ),
    (
        "cluster_homes_created_total",
        "Phones whose home box this box recorded (shard 0).",
    ),
    (
        "cluster_lease_failures_total",
        "Renewals of this box's membership lease that failed (shard 0).",
    ),
    (
        "cluster_answers_dropped_total",
        "Gateway answers dropped: the shard's queue was full (shard 0).",
    ),
    (
        "cluster_sends_out_total",
        "1:1 messages handed to the cluster gateway (recipient on another box).",
    ),
    (
        "cluster_sends_busy_total",
        "Messages and receipts refused: the link to the gateway was full.",
    ),
    (
        "cluster_receipts_handed_total",
        "Receipts handed to the gateway for a sender on another box.",
    ),
    (
        "cluster_inbound_held",
        "Messages from other boxes held behind one this shard refused, in order.",
    ),
    (
        "cluster_inbound_unsettled",
        "Messages from other boxes being stored here, not yet answered.",
    ),
    (
        "cluster_messages_out_total",
        "Messages stored by another box: taken directly, or acked in its stream (shard 0).",
    ),
    (
        "cluster_publish_failures_total",
        "Messages and receipts JetStream did not take (shard 0).",
    ),
    (
        "cluster_messages_to_nobody_total",
        "Messages for numbers with no home box: answered as one box answers them (shard 0).",
    ),
    (
        "cluster_messages_in_total",
        "Messages from other boxes stored here, directly or from the stream (shard 0).",
    ),
    (
        "cluster_messages_in_retried_total",
        "Messages from other boxes handed back for later (shard 0).",
    ),
    (
        "cluster_messages_in_bad_total",
        "Messages in this box's stream that did not decode, dropped (shard 0).",
    ),
    (
        "cluster_group_out_total",
        "Group messages published to another box: sends, operations, asks, answers, frames (shard 0).",
    ),
    (
        "cluster_group_in_total",
        "Group messages from other boxes handed to their shard (shard 0).",
    ),
    (
        "cluster_group_undelivered_total",
        "Group messages with no box to go to or not taken by NATS, answered (shard 0).",
    ),
    (
        "cluster_group_clashes_total",
        "Group ids another box had claimed first; the member asked about is refused (shard 0).",
    ),
    (
        "cluster_groups_forwarded_total",
        "Group messages this shard handed the gateway for another box.",
    ),
    (
        "cluster_receipts_out_total",
        "Receipts published to a sender's home box (shard 0).",
    ),
    (
        "cluster_receipts_in_total",
        "Receipts from other boxes handed to their sender's shard (shard 0).",
    ),
    (
        "cluster_inbound_pending",
        "Messages of this box's stream handed to shards, not acked yet (shard 0).",
    ),
    (
        "cluster_inbound_rereads_total",
        "Times this box's stream was read anew after a delivery was lost (shard 0).",
    ),
    (
        "cluster_inbound_refused_total",
        "Stream deliveries left unacked because too many waited behind a hole (shard 0).",
    ),
    (
        "cluster_direct_lines_full_total",
        "Messages refused Busy because their sender's direct line was full (shard 0).",
    ),
    (
        "cluster_direct_out_total",
        "Messages sent straight to a live home box and stored there (shard 0).",
    ),
    (
        "cluster_direct_fallbacks_total",
        "Messages and receipts a live home box did not take directly, sent to its stream (shard 0).",
    ),
    (
        "cluster_direct_in_total",
        "Messages from other boxes taken directly and stored here (shard 0).",
    ),
    (
        "cluster_direct_behind_total",
        "Direct messages refused while this box's stream was behind the sender's (shard 0).",
    ),
    (
        "cluster_receipts_dropped_total",
        "Receipts NATS did not take, dropped once too many waited to be sent again (shard 0).",
    ),
    (
        "cluster_direct_batches_out_total",
        "Direct requests sent to other boxes: one per home box per gateway turn (shard 0).",
    ),
    (
        "cluster_direct_batched_out_total",
        "Messages and receipts those direct requests carried (shard 0).",
    ),
    (
        "cluster_direct_batches_bad_total",
        "Direct requests from other boxes refused whole: garbage or over a bound (shard 0).",
    ),
];

/// The service's latency histograms.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// Each log sync: append + fdatasync, or a compaction's replace.
    pub fsync: Histogram,
    /// Each message handed to its online recipient (which does not wait for the log): from
    /// the sender's frame at the sender's home to here (milliseconds, wall clock).
    pub delivery: Histogram,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            fsync: Histogram::new(FSYNC_BOUNDS_NS),
            delivery: Histogram::new(DELIVERY_BOUNDS_NS),
        }
    }
}

impl Latency {
    /// One sync that took `d`.
    pub fn record_sync(&mut self, d: std::time::Duration) {
        self.fsync.record(d);
    }

    /// If `e` hands a message to its recipient, records its delivery latency; `now_ms` is
    /// asked for only then (a clock read per delivered message, none otherwise).
    pub fn note_delivery(&mut self, e: &Effect, now_ms: impl FnOnce() -> u64) {
        let sent_at_ms = match e {
            Effect::Frame(_, server_frame::Kind::Message(m)) => m.sent_at_ms,
            Effect::Wire(_, w) if w.sent_at_ms != 0 => w.sent_at_ms,
            _ => return,
        };
        let ms = now_ms().saturating_sub(sent_at_ms);
        self.delivery.record_ns(ms.saturating_mul(MS));
    }

    /// Both, named for publication.
    pub fn named(&self) -> Vec<NamedHistogram> {
        vec![
            NamedHistogram {
                name: "fsync_seconds",
                help: "Each log sync: append + fdatasync, or a compaction's replace.",
                hist: self.fsync,
            },
            NamedHistogram {
                name: "delivery_seconds",
                help: "Sender's frame to the message leaving the recipient's home for the \
                       online recipient (millisecond clock).",
                hist: self.delivery,
            },
        ]
    }
}

/// Inputs to one report.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Items queued on this shard.
    pub queue_items: u64,
    /// Items in the longest queue.
    pub queue_items_user_max: u64,
    /// Users with items waiting.
    pub queue_users: u64,
    /// Bytes in the durable log.
    pub log_bytes: u64,
    /// Batches committed.
    pub log_commits: u64,
    /// Batches that failed to write.
    pub log_failures: u64,
    /// Items never written: acked by their recipient before their batch left.
    pub log_items_skipped: u64,
    /// Compaction snapshots finished.
    pub log_snapshots: u64,
    /// Slices those snapshots (and one under way) were built in.
    pub log_snapshot_slices: u64,
}

/// The service's statistics, by name.
pub fn report(g: Gauges) -> Vec<(&'static str, u64)> {
    vec![
        (STAT_QUEUE_ITEMS, g.queue_items),
        (STAT_QUEUE_ITEMS_USER_MAX, g.queue_items_user_max),
        ("queue_users", g.queue_users),
        ("log_bytes", g.log_bytes),
        ("log_commits_total", g.log_commits),
        ("log_failures_total", g.log_failures),
        ("log_items_skipped_total", g.log_items_skipped),
        ("log_snapshots_total", g.log_snapshots),
        ("log_snapshot_slices_total", g.log_snapshot_slices),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ids::ConnId;
    use std::time::Duration;

    #[test]
    fn every_reported_stat_has_help_and_counters_end_in_total() {
        for (name, _) in report(Gauges::default()) {
            assert!(HELP.iter().any(|(n, _)| *n == name), "{name} has no help");
        }
        let names: Vec<_> = report(Gauges::default())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(names.contains(&"log_commits_total"));
        let abbreviated = |n: &&str| n.split('_').any(|w| ["us", "ms", "ns", "pct"].contains(&w));
        assert!(!names.iter().any(abbreviated), "base units only: {names:?}");
    }

    #[test]
    fn syncs_and_deliveries_land_in_their_buckets() {
        let mut l = Latency::default();
        for us in [40, 300, 7_000] {
            l.record_sync(Duration::from_micros(us));
        }
        assert_eq!(l.fsync.count(), 3);
        assert_eq!(l.fsync.quantile_bound_seconds(0.5), 500e-6);
        let msg = |sent_at_ms| {
            Effect::Frame(
                ConnId::from_u64(1),
                server_frame::Kind::Message(proto::v1::Message {
                    sent_at_ms,
                    ..Default::default()
                }),
            )
        };
        l.note_delivery(&msg(1_000), || 1_003);
        let wire = |sent_at_ms| {
            Effect::Wire(
                ConnId::from_u64(1),
                messaging::state::effect::WireFrame {
                    bytes: Vec::new(),
                    sent_at_ms,
                },
            )
        };
        l.note_delivery(&wire(1_000), || 1_000);
        l.note_delivery(&wire(0), || unreachable!("not a message: no clock read"));
        l.note_delivery(&Effect::Close(ConnId::from_u64(1)), || {
            unreachable!("no clock read")
        });
        assert_eq!(l.delivery.count(), 2);
        assert_eq!(l.delivery.quantile_bound_seconds(1.0), 0.005);
        assert_eq!(l.delivery.quantile_bound_seconds(0.5), 0.001);
        let names: Vec<_> = l.named().iter().map(|h| h.name).collect();
        assert_eq!(names, ["fsync_seconds", "delivery_seconds"]);
    }
}

//! What the service counts on one shard since start, as plain numbers the state machines
//! bump: what the abuse limits refused ([`AbuseCounters`], reported by name with
//! [`abuse_report`]), what the mesh handed back ([`MeshBackCounters`]), and the rate limit
//! of the refusal log lines ([`RefusalLog`]). Names here are stable: the server serves them
//! as `switchboard_<name>` metrics. No clock, no I/O.

use crate::state::limits::REFUSAL_LOG_PERIOD_MS;
use crate::tables::budgets::BudgetKind;

/// What the abuse limits did on one shard since start (plain counters, bumped by the state
/// machines; see `budgets.rs`, `pin_codes.rs`, `login.rs`, `queues.rs`).
#[derive(Debug, Clone, Default)]
pub struct AbuseCounters {
    /// Refusals per budget, indexed by `BudgetKind as usize`.
    pub refused: [u64; BudgetKind::ALL.len()],
    /// PINs sent.
    pub pins_sent: u64,
    /// Pre-login connections closed for too many refusals or hand-overs.
    pub prelogin_closed: u64,
    /// Messages refused with QUEUE_FULL because the sender holds its share of the queue.
    pub queue_sender_share_full: u64,
    /// Receipts that found their user's queue full (kept at 0 by the receipt reserve).
    pub receipts_dropped: u64,
    /// Connections closed at their log-in deadline (`login_deadline.rs`).
    pub login_timeouts: u64,
    /// Group creations refused: the creator administers `GROUPS_ADMINISTERED_PER_USER_MAX`.
    pub groups_per_user_full: u64,
    /// Members not added to a group: they do not accept adds from the adder.
    pub group_adds_refused: u64,
    /// Group creations refused: `GROUP_CREATES_PENDING_MAX` wait already.
    pub group_creates_pending_full: u64,
    /// `PresenceSubscribe` frames refused by the user's fan-out budget.
    pub refused_presence_fanout: u64,
    /// Presence changes not fanned out while the shard was overloaded.
    pub presence_updates_skipped: u64,
    /// Presence subscriptions asked again because another box of a cluster joined or left.
    pub presence_reasks: u64,
    /// Those not asked again: over `PRESENCE_REASKS_PER_JOIN_MAX` at one join.
    pub presence_reasks_skipped: u64,
    /// Group sends refused by the sender's group fan-out budget at the group's home.
    pub refused_group_fanout: u64,
    /// Sends refused by the sender's new-recipient budget.
    pub refused_new_recipient: u64,
    /// Sends to numbers nobody has (answered as if stored).
    pub sends_to_unknown: u64,
    /// Media upload slots granted (`handlers/media.rs`).
    pub media_slots_granted: u64,
    /// Media slot requests refused: no media service, or the object is over the size limit.
    pub media_slots_refused: u64,
}

/// Sizes of the abuse limits' state on one shard now.
#[derive(Debug, Clone, Copy, Default)]
pub struct AbuseGauges {
    /// Phones with an outstanding PIN or back-off.
    pub pins_pending: u64,
    /// Keys tracked by the sign-up and per-user budgets.
    pub budget_keys: u64,
    /// Pre-login connections tracked.
    pub prelogin_conns: u64,
    /// Presence subscriptions held (follower and followed side).
    pub presence_subscriptions: u64,
    /// Presence subscriptions refused at the per-subscriber cap.
    pub presence_refused: u64,
    /// Group creations waiting for their members' answers.
    pub group_creates_pending: u64,
    /// Sender-recipient ties held.
    pub recipient_ties: u64,
}

/// The abuse limits' statistics, by name (`refused_<budget>` per budget, then the rest).
pub fn abuse_report(c: &AbuseCounters, g: AbuseGauges) -> Vec<(&'static str, u64)> {
    let mut v: Vec<(&'static str, u64)> = BudgetKind::ALL
        .iter()
        .map(|k| (k.stat(), c.refused[*k as usize]))
        .collect();
    v.extend([
        ("pins_sent_total", c.pins_sent),
        ("pins_pending", g.pins_pending),
        ("budget_keys", g.budget_keys),
        ("prelogin_conns", g.prelogin_conns),
        ("prelogin_closed_total", c.prelogin_closed),
        ("queue_sender_share_full_total", c.queue_sender_share_full),
        ("receipts_dropped_total", c.receipts_dropped),
        ("login_timeouts_total", c.login_timeouts),
        ("groups_per_user_full_total", c.groups_per_user_full),
        ("group_adds_refused_total", c.group_adds_refused),
        (
            "group_creates_pending_full_total",
            c.group_creates_pending_full,
        ),
        ("group_creates_pending", g.group_creates_pending),
        ("presence_subscriptions", g.presence_subscriptions),
        ("presence_refused", g.presence_refused),
        ("refused_presence_fanout_total", c.refused_presence_fanout),
        ("presence_updates_skipped_total", c.presence_updates_skipped),
        ("presence_reasks_total", c.presence_reasks),
        ("presence_reasks_skipped_total", c.presence_reasks_skipped),
        ("refused_group_fanout_total", c.refused_group_fanout),
        ("refused_new_recipient_total", c.refused_new_recipient),
        ("recipient_ties", g.recipient_ties),
        ("sends_to_unknown_total", c.sends_to_unknown),
        ("media_slots_granted_total", c.media_slots_granted),
        ("media_slots_refused_total", c.media_slots_refused),
    ]);
    v
}

/// What the mesh handed back, by name (`mesh_back.rs`), with the messages held now.
pub fn mesh_back_report(
    c: crate::state::counters::MeshBackCounters,
    held_now: u64,
) -> Vec<(&'static str, u64)> {
    vec![
        ("mesh_handed_back_total", c.handed_back),
        ("mesh_answered_busy_total", c.answered_busy),
        ("mesh_presence_dropped_total", c.presence_dropped),
        ("mesh_held_total", c.held),
        ("mesh_owed_dropped_total", c.owed_dropped),
        ("mesh_held", held_now),
    ]
}

/// What the mesh handed back since start.
#[derive(Debug, Clone, Copy, Default)]
pub struct MeshBackCounters {
    /// Messages handed back (all kinds).
    pub handed_back: u64,
    /// New sends answered `Busy` instead.
    pub answered_busy: u64,
    /// Presence messages dropped.
    pub presence_dropped: u64,
    /// Owed messages held to be sent again.
    pub held: u64,
    /// Owed messages dropped: the hold was full.
    pub owed_dropped: u64,
}

/// At most one log line per period for refused pre-login frames.
#[derive(Debug, Default)]
pub struct RefusalLog {
    /// When the last line was logged (ms).
    last_ms: u64,
    /// Refusals not logged since.
    pub suppressed: u64,
}

impl RefusalLog {
    /// `Some(refusals not logged before this one)` when this refusal may be logged.
    pub fn note(&mut self, now: u64) -> Option<u64> {
        if self.last_ms != 0 && now < self.last_ms + REFUSAL_LOG_PERIOD_MS {
            self.suppressed += 1;
            return None;
        }
        self.last_ms = now;
        Some(std::mem::take(&mut self.suppressed))
    }
}

//! What a shard's service reports in its statistics once a second: queue lengths (total,
//! longest, users waiting), the durable log's size, commits and failures, and the latency
//! of each log sync (append + `fdatasync`, or a compaction's replace) as an HDR histogram
//! summary since start; and what the abuse limits did ([`AbuseCounters`]: refusals per
//! sign-up budget as `refused_<budget>`, PINs sent and pending, pre-login closes, fair-queue
//! refusals, presence subscriptions).
//!
//! Names here are stable: they become `switchboard_<name>` metrics and the names alarm
//! rules watch ([`STAT_QUEUE_ITEMS`], [`STAT_QUEUE_ITEMS_USER_MAX`]). Pure bookkeeping on one
//! shard: recording a sync is one histogram increment; nothing here runs per frame.

use hdrhistogram::Histogram;

use crate::budget::BudgetKind;

/// Items queued on the shard (alarm rule: items per shard).
pub const STAT_QUEUE_ITEMS: &str = "queue_items";
/// Items in the longest single user's queue (alarm rule: items per user).
pub const STAT_QUEUE_ITEMS_USER_MAX: &str = "queue_items_user_max";
/// Log syncs slower than this are recorded as this (µs).
pub const SYNC_US_MAX: u64 = 60_000_000;

/// The log-sync latency record.
#[derive(Debug)]
pub struct SyncLatency {
    us: Histogram<u64>,
}

impl Default for SyncLatency {
    fn default() -> Self {
        SyncLatency {
            // 1 µs .. 60 s at 2 significant digits: a few KiB per shard.
            us: Histogram::new_with_bounds(1, SYNC_US_MAX, 2)
                .expect("constant histogram bounds are valid"),
        }
    }
}

impl SyncLatency {
    /// One sync that took `d`.
    pub fn record(&mut self, d: std::time::Duration) {
        self.us
            .saturating_record((d.as_micros() as u64).clamp(1, SYNC_US_MAX));
    }

    /// Syncs recorded.
    pub fn count(&self) -> u64 {
        self.us.len()
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
}

/// The service's statistics, by name.
pub fn report(g: Gauges, sync: &SyncLatency) -> Vec<(&'static str, u64)> {
    let h = &sync.us;
    let q = |p: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(p)
        }
    };
    vec![
        (STAT_QUEUE_ITEMS, g.queue_items),
        (STAT_QUEUE_ITEMS_USER_MAX, g.queue_items_user_max),
        ("queue_users", g.queue_users),
        ("log_bytes", g.log_bytes),
        ("log_commits", g.log_commits),
        ("log_failures", g.log_failures),
        ("log_items_skipped", g.log_items_skipped),
        ("fsyncs", h.len()),
        ("fsync_us_p50", q(0.50)),
        ("fsync_us_p99", q(0.99)),
        ("fsync_us_p999", q(0.999)),
        ("fsync_us_max", if h.is_empty() { 0 } else { h.max() }),
    ]
}

/// What the abuse limits did on one shard since start (plain counters, bumped by the state
/// machines; see `budget.rs`, `pins.rs`, `login.rs`, `offline.rs`).
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
}

/// Sizes of the abuse limits' state on one shard now.
#[derive(Debug, Clone, Copy, Default)]
pub struct AbuseGauges {
    /// Phones with an outstanding PIN or back-off.
    pub pins_pending: u64,
    /// Keys tracked by the sign-up budgets.
    pub budget_keys: u64,
    /// Pre-login connections tracked.
    pub prelogin_conns: u64,
    /// Presence subscriptions held (follower and followed side).
    pub presence_subscriptions: u64,
    /// Presence subscriptions refused at the per-subscriber cap.
    pub presence_refused: u64,
}

/// The abuse limits' statistics, by name (`refused_<budget>` per budget, then the rest).
pub fn abuse_report(c: &AbuseCounters, g: AbuseGauges) -> Vec<(&'static str, u64)> {
    let mut v: Vec<(&'static str, u64)> = BudgetKind::ALL
        .iter()
        .map(|k| (k.stat(), c.refused[*k as usize]))
        .collect();
    v.extend([
        ("pins_sent", c.pins_sent),
        ("pins_pending", g.pins_pending),
        ("budget_keys", g.budget_keys),
        ("prelogin_conns", g.prelogin_conns),
        ("prelogin_closed", c.prelogin_closed),
        ("queue_sender_share_full", c.queue_sender_share_full),
        ("receipts_dropped", c.receipts_dropped),
        ("presence_subscriptions", g.presence_subscriptions),
        ("presence_refused", g.presence_refused),
    ]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reports_quantiles_of_recorded_syncs() {
        let mut s = SyncLatency::default();
        let empty = report(Gauges::default(), &s);
        assert!(empty.iter().all(|(_, v)| *v == 0));
        for us in 1..=100 {
            s.record(Duration::from_micros(us * 10));
        }
        let r = report(Gauges::default(), &s);
        let get = |n: &str| r.iter().find(|(k, _)| *k == n).unwrap().1;
        assert_eq!(get("fsyncs"), 100);
        assert!((495..=505).contains(&get("fsync_us_p50")), "{r:?}");
        assert!((995..=1005).contains(&get("fsync_us_max")), "{r:?}");
    }
}

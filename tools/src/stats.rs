//! What each farm thread counts, and how counts and latency histograms travel from worker
//! processes to the parent and merge there.
//!
//! Counters are plain `u64`s owned by one thread (no atomics); a thread's [`Stats`] is
//! merged into its worker's, and the workers' into the parent's. Histograms are hdrhistogram
//! in microseconds (1 µs .. 1 h, 3 significant digits) and travel as `(value, count)` pairs.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency a histogram records, µs (one hour); larger values are clamped.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;

/// Plain event counts. Every field merges by addition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// TCP connect attempts started.
    pub connect_attempts: u64,
    /// Users whose connection came up (handshake done, logged in or first Pong) at least once.
    pub connections_established: u64,
    /// Attempts that failed (refused, timeout, TLS, login refused, closed early).
    pub connect_errors: u64,
    /// Users never tried because the ramp hit `ramp_timeout_s` first.
    pub ramp_unstarted: u64,
    /// Login refusals (a subset of connect_errors).
    pub login_errors: u64,
    /// Logins a box answered with `Redirect` (the user's home is another box); each was
    /// followed with a fresh connection to the named box.
    #[serde(default)]
    pub redirects: u64,
    /// Connections the server closed while up.
    pub closed_by_server: u64,
    /// Pings sent.
    pub pings: u64,
    /// Pongs received.
    pub pongs: u64,
    /// 1:1 messages sent.
    pub messages_sent: u64,
    /// 1:1 ServerAcks received.
    pub server_acked: u64,
    /// 1:1 sends refused with an Error frame.
    pub send_errors: u64,
    /// Sends the open-loop schedule made due in the window: every one is sent (1:1 or group)
    /// or skipped, so `messages_sent + group_sent + sends_skipped == sends_due`.
    #[serde(default)]
    pub sends_due: u64,
    /// Scheduled sends that could not go (in-flight cap, no user up, no group yet); each is
    /// also recorded in the delivery histogram as late (schedule → end of the drain).
    pub sends_skipped: u64,
    /// 1:1 messages delivered (first time per message).
    pub delivered: u64,
    /// Messages delivered again within one session or after a clean reconnect (a bug).
    pub duplicates: u64,
    /// Messages delivered again after an abrupt drop (the client's, or the server's crash:
    /// delivery does not wait for the disk) before their Ack was durable; suppressed by the
    /// (sender, client_msg_id) dedupe, never shown (allowed: at-least-once on the wire,
    /// exactly-once after client dedupe).
    pub redelivered: u64,
    /// Deliveries whose body was not a farm stamp or came from an unknown sender.
    pub foreign_messages: u64,
    /// DELIVERED receipts received.
    pub receipts_delivered: u64,
    /// READ receipts received.
    pub receipts_read: u64,
    /// Groups created.
    pub groups_created: u64,
    /// Group messages sent.
    pub group_sent: u64,
    /// Group messages acked by the server.
    pub group_acked: u64,
    /// Group deliveries expected: acked × (members − 1).
    pub group_expected: u64,
    /// Group deliveries received (first time per member and message).
    pub group_delivered: u64,
    /// Busy frames (server overload fast-reject).
    pub busy: u64,
    /// Storm mode: connections dropped on purpose.
    pub storm_drops: u64,
    /// Storm mode: dropped connections that came back up.
    pub storm_reconnected: u64,
    /// Storm mode: sends whose ServerAck was lost with the dropped connection.
    pub storm_unacked: u64,
}

impl Counters {
    /// Adds every field of `o`.
    pub fn add(&mut self, o: &Counters) {
        macro_rules! add {
            ($($f:ident),*) => { $( self.$f += o.$f; )* };
        }
        add!(
            connect_attempts,
            connections_established,
            connect_errors,
            ramp_unstarted,
            login_errors,
            redirects,
            closed_by_server,
            pings,
            pongs,
            messages_sent,
            server_acked,
            send_errors,
            sends_skipped,
            sends_due,
            delivered,
            duplicates,
            redelivered,
            foreign_messages,
            receipts_delivered,
            receipts_read,
            groups_created,
            group_sent,
            group_acked,
            group_expected,
            group_delivered,
            busy,
            storm_drops,
            storm_reconnected,
            storm_unacked
        );
    }
}

/// A latency histogram in µs.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        // Invariant: 1..=LATENCY_US_MAX with 3 digits is a valid configuration.
        Latency(Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid bounds"))
    }
}

/// Percentiles of a latency histogram, µs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    #[serde(default)]
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    #[serde(default)]
    pub p9999: u64,
    /// Largest.
    pub max: u64,
}

impl Latency {
    /// Records one sample (clamped to 1..=[`LATENCY_US_MAX`]).
    pub fn record(&mut self, us: u64) {
        // Invariant: the value is clamped into the histogram's bounds.
        self.0
            .record(us.clamp(1, LATENCY_US_MAX))
            .expect("value within bounds");
    }

    /// Adds every sample of `o`.
    pub fn merge(&mut self, o: &Latency) {
        // Invariant: both histograms have the same bounds.
        self.0.add(&o.0).expect("same bounds");
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// True if nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// p50/p99/p999/max.
    pub fn summary(&self) -> Summary {
        if self.0.is_empty() {
            return Summary::default();
        }
        Summary {
            count: self.0.len(),
            p50: self.0.value_at_quantile(0.5),
            p90: self.0.value_at_quantile(0.9),
            p99: self.0.value_at_quantile(0.99),
            p999: self.0.value_at_quantile(0.999),
            p9999: self.0.value_at_quantile(0.9999),
            max: self.0.max(),
        }
    }

    /// `(value, count)` pairs for transport.
    pub fn to_pairs(&self) -> Vec<(u64, u64)> {
        self.0
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    /// The samples of `self` that `earlier` (an older copy of the same cumulative histogram)
    /// does not hold. Should `earlier` hold a value `self` lacks (not an older copy), all of
    /// `self`.
    pub fn since(&self, earlier: &Latency) -> Latency {
        let mut h = self.clone();
        match h.0.subtract(&earlier.0) {
            Ok(()) => h,
            Err(_) => self.clone(),
        }
    }

    /// Rebuilds from [`Latency::to_pairs`] output.
    pub fn from_pairs(pairs: &[(u64, u64)]) -> Latency {
        let mut h = Latency::default();
        for &(v, n) in pairs {
            // Invariant: the value is clamped into the histogram's bounds.
            h.0.record_n(v.clamp(1, LATENCY_US_MAX), n)
                .expect("value within bounds");
        }
        h
    }
}

/// Everything one thread (then one worker) measured.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Event counts.
    pub counters: Counters,
    /// Errors by kind: `connect:refused`, `tls`, `error:QUEUE_FULL`, `timeout:connect`…
    pub errors: BTreeMap<String, u64>,
    /// send → ServerAck, µs.
    pub ack: Latency,
    /// scheduled send time → delivery (sender's stamp to receiver's clock), µs; sends that
    /// never went are in it too, as late (see `Counters::sends_skipped`).
    pub delivery: Latency,
    /// connect start → connection up (TCP + TLS + login or first Pong), µs.
    pub connect: Latency,
    /// Scheduled send time → the farm getting to it, µs: the farm's own lag (its event loop
    /// saturating shows here first).
    pub send_lag: Latency,
    /// Storm mode: drop → every dropped connection back up, ms (max over threads).
    pub storm_recovery_ms: u64,
}

impl Stats {
    /// Counts one error of `kind`.
    pub fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    /// Adds everything in `o`.
    pub fn merge(&mut self, o: &Stats) {
        self.counters.add(&o.counters);
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.ack.merge(&o.ack);
        self.delivery.merge(&o.delivery);
        self.connect.merge(&o.connect);
        self.send_lag.merge(&o.send_lag);
        self.storm_recovery_ms = self.storm_recovery_ms.max(o.storm_recovery_ms);
    }

    /// The wire form, for a worker's result line.
    pub fn to_wire(&self) -> StatsWire {
        StatsWire {
            counters: self.counters.clone(),
            errors: self.errors.clone(),
            ack: self.ack.to_pairs(),
            delivery: self.delivery.to_pairs(),
            connect: self.connect.to_pairs(),
            send_lag: self.send_lag.to_pairs(),
            storm_recovery_ms: self.storm_recovery_ms,
        }
    }

    /// Back from the wire form.
    pub fn from_wire(w: &StatsWire) -> Stats {
        Stats {
            counters: w.counters.clone(),
            errors: w.errors.clone(),
            ack: Latency::from_pairs(&w.ack),
            delivery: Latency::from_pairs(&w.delivery),
            connect: Latency::from_pairs(&w.connect),
            send_lag: Latency::from_pairs(&w.send_lag),
            storm_recovery_ms: w.storm_recovery_ms,
        }
    }
}

/// [`Stats`] as JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatsWire {
    /// Counts.
    pub counters: Counters,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// send → ServerAck histogram as (µs, count).
    pub ack: Vec<(u64, u64)>,
    /// send → delivery histogram as (µs, count).
    pub delivery: Vec<(u64, u64)>,
    /// connect → up histogram as (µs, count).
    pub connect: Vec<(u64, u64)>,
    /// scheduled → sent histogram as (µs, count).
    #[serde(default)]
    pub send_lag: Vec<(u64, u64)>,
    /// Storm recovery, ms.
    pub storm_recovery_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_survive_the_wire_and_merge() {
        let mut a = Stats::default();
        for v in [100, 200, 300, 10_000] {
            a.ack.record(v);
        }
        a.counters.messages_sent = 4;
        a.error("connect:refused");
        let json = serde_json::to_string(&a.to_wire()).unwrap();
        let b = Stats::from_wire(&serde_json::from_str(&json).unwrap());
        let mut total = Stats::default();
        total.merge(&a);
        total.merge(&b);
        assert_eq!(total.counters.messages_sent, 8);
        assert_eq!(total.errors["connect:refused"], 2);
        let s = total.ack.summary();
        assert_eq!(s.count, 8);
        assert!((9_990..=10_010).contains(&s.max), "{s:?}");
        assert!((199..=201).contains(&s.p50), "{s:?}");
    }

    #[test]
    fn out_of_range_latencies_are_clamped() {
        let mut l = Latency::default();
        l.record(0);
        l.record(u64::MAX);
        assert_eq!(l.len(), 2);
        assert!(l.summary().max >= LATENCY_US_MAX);
    }
}

//! The farm's JSON report (`--report FILE`) and its one-paragraph text summary.
//!
//! Field names are stable: scripts and tests read them. The issue's required fields are at
//! the top level (`connections_established`, `connect_errors`, `messages_sent`,
//! `server_acked`, `delivered`, `lost`, `duplicates`, `latency_us.{delivery,ack}`) and the
//! run's parameters are under `params`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ledger::Verdict;
use crate::stats::{Counters, Stats, Summary};
use crate::workload::Spec;

/// Send lag p99 above which the farm counts as saturated, µs: its event loop was more than
/// two ticks behind its schedule for over 1 % of sends.
pub const FARM_LAG_US_MAX: u64 = 10_000;

/// Latency percentiles, µs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    /// send → delivery at the recipient.
    pub delivery: Summary,
    /// send → ServerAck (one tick).
    pub ack: Summary,
    /// connect start → up (TCP, TLS, login or first Pong).
    pub connect: Summary,
    /// scheduled send → the farm getting to it: the farm's own lag.
    #[serde(default)]
    pub send_lag: Summary,
}

/// Group-message outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReport {
    /// Groups created.
    pub created: u64,
    /// Group messages sent.
    pub sent: u64,
    /// Group messages acked.
    pub acked: u64,
    /// Deliveries expected (acked × other members).
    pub expected: u64,
    /// Deliveries received.
    pub delivered: u64,
    /// (acked message, member) pairs never delivered, from the ledger.
    #[serde(default)]
    pub lost: u64,
    /// Copies received by their sender or by a non-member, from the ledger.
    #[serde(default)]
    pub misdelivered: u64,
}

/// Storm-mode outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StormReport {
    /// Connections dropped at once.
    pub drops: u64,
    /// Of those, back up before the end.
    pub reconnected: u64,
    /// Drop → last one back, ms.
    pub recovery_ms: u64,
    /// Sends whose ServerAck died with the connection.
    pub unacked: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Connections asked for.
    pub connections_requested: u64,
    /// Users whose connection came up.
    pub connections_established: u64,
    /// Failed connect attempts (all causes).
    pub connect_errors: u64,
    /// Of those, refused logins.
    pub login_errors: u64,
    /// Logins redirected to the user's home box (a cluster), each followed.
    #[serde(default)]
    pub redirects: u64,
    /// Connect attempts started.
    pub connect_attempts: u64,
    /// Users never tried: the ramp hit its timeout first (raise --ramp-timeout or lower
    /// --conns when this is not 0).
    pub ramp_unstarted: u64,
    /// Seconds from the first connect to the last worker ready.
    pub ramp_s: f64,
    /// connections_established / ramp_s.
    pub connect_rate_achieved: f64,
    /// Seconds of the measured phase.
    pub measured_s: f64,
    /// The offered rate: sends scheduled per second over the sending window (1:1 and group).
    #[serde(default)]
    pub offered_per_s: f64,
    /// Sends that went, per second of the sending window (1:1 and group).
    #[serde(default)]
    pub sent_per_s: f64,
    /// Scheduled sends that could not go; each counts as late in the delivery latency.
    #[serde(default)]
    pub sends_skipped: u64,
    /// Deliveries (1:1 first copies and group member copies) of messages sent in the
    /// sending window, per second of that window (`--duration`).
    #[serde(default)]
    pub delivered_per_s: f64,
    /// True when the farm itself fell behind its schedule (send lag p99 over
    /// [`FARM_LAG_US_MAX`]): latencies then include the farm's own delay.
    #[serde(default)]
    pub farm_saturated: bool,
    /// 1:1 messages sent.
    pub messages_sent: u64,
    /// 1:1 messages the server acknowledged.
    pub server_acked: u64,
    /// 1:1 messages delivered (first time each).
    pub delivered: u64,
    /// Acked 1:1 messages never delivered.
    pub lost: u64,
    /// Deliveries that should not have happened (same message twice without an abrupt drop).
    pub duplicates: u64,
    /// Redeliveries after an abrupt drop (allowed, deduped by the client).
    pub redelivered: u64,
    /// Delivered messages whose ServerAck the sender never saw.
    pub delivered_unacked: u64,
    /// 1:1 messages delivered to someone other than their recipient.
    #[serde(default)]
    pub misdelivered: u64,
    /// 1:1 messages sent and never acked, refused or delivered (allowed only in storm mode,
    /// where the connection they were sent on was cut).
    #[serde(default)]
    pub unanswered: u64,
    /// Sends refused by an Error frame.
    pub send_errors: u64,
    /// server_acked / measured_s.
    pub acked_per_s: f64,
    /// True when every acked message arrived exactly once, at its recipient, every sent one
    /// was answered (except in storm mode), and something was acked; or nothing was sent.
    pub exactly_once: bool,
    /// Latencies, µs.
    pub latency_us: Latencies,
    /// Group messages.
    pub group: GroupReport,
    /// Storm mode.
    pub storm: StormReport,
    /// Every counter, summed over workers.
    pub counters: Counters,
    /// Errors by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Up to 10 lost messages (sender index, client_msg_id).
    pub lost_examples: Vec<(u64, u64)>,
    /// Worker processes that returned no result.
    pub worker_failures: u64,
    /// The run's parameters.
    pub params: Spec,
}

/// Phase timings the parent measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// First connect → all workers ready, seconds.
    pub ramp_s: f64,
    /// Measured phase, seconds.
    pub measured_s: f64,
}

impl Report {
    /// Builds the report from merged stats and the ledger verdict.
    pub fn build(
        spec: &Spec,
        stats: &Stats,
        verdict: &Verdict,
        t: Timings,
        worker_failures: u64,
    ) -> Report {
        let c = &stats.counters;
        let per_s = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        let window = spec.duration_s;
        let send_lag = stats.send_lag.summary();
        Report {
            connections_requested: spec.conns,
            connections_established: c.connections_established,
            connect_errors: c.connect_errors,
            login_errors: c.login_errors,
            redirects: c.redirects,
            connect_attempts: c.connect_attempts,
            ramp_unstarted: c.ramp_unstarted,
            ramp_s: t.ramp_s,
            connect_rate_achieved: per_s(c.connections_established, t.ramp_s),
            measured_s: t.measured_s,
            offered_per_s: if spec.sends() { spec.rate } else { 0.0 },
            sent_per_s: per_s(c.messages_sent + c.group_sent, window),
            sends_skipped: c.sends_skipped,
            delivered_per_s: per_s(c.delivered + c.group_delivered, window),
            farm_saturated: send_lag.p99 > FARM_LAG_US_MAX,
            messages_sent: c.messages_sent,
            server_acked: c.server_acked,
            delivered: c.delivered,
            lost: verdict.lost,
            duplicates: c.duplicates,
            redelivered: c.redelivered,
            delivered_unacked: verdict.delivered_unacked,
            misdelivered: verdict.misdelivered,
            unanswered: verdict.unanswered,
            send_errors: c.send_errors,
            acked_per_s: per_s(c.server_acked, t.measured_s),
            exactly_once: verdict.lost == 0
                && verdict.misdelivered == 0
                && verdict.group_lost == 0
                && verdict.group_misdelivered == 0
                && (verdict.unanswered == 0 || spec.mode == crate::workload::Mode::Storm)
                && c.duplicates == 0
                && worker_failures == 0
                && (c.messages_sent == 0 || c.server_acked > 0),
            latency_us: Latencies {
                delivery: stats.delivery.summary(),
                ack: stats.ack.summary(),
                connect: stats.connect.summary(),
                send_lag,
            },
            group: GroupReport {
                created: c.groups_created,
                sent: c.group_sent,
                acked: c.group_acked,
                expected: c.group_expected,
                delivered: c.group_delivered,
                lost: verdict.group_lost,
                misdelivered: verdict.group_misdelivered,
            },
            storm: StormReport {
                drops: c.storm_drops,
                reconnected: c.storm_reconnected,
                recovery_ms: stats.storm_recovery_ms,
                unacked: c.storm_unacked,
            },
            counters: c.clone(),
            errors_by_kind: stats.errors.clone(),
            lost_examples: verdict.lost_examples.clone(),
            worker_failures,
            params: spec.clone(),
        }
    }

    /// Writes the report as pretty JSON.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n")
            .map_err(|e| anyhow::anyhow!("writing report {}: {e}", path.display()))
    }

    /// A few human lines.
    pub fn summary_text(&self) -> String {
        let g = &self.group;
        let groups = if g.sent > 0 {
            format!(
                "\ngroup messages sent {} acked {}; member copies delivered {} of {} expected, lost {}, misdelivered {}",
                g.sent, g.acked, g.delivered, g.expected, g.lost, g.misdelivered
            )
        } else {
            String::new()
        };
        let l = &self.latency_us;
        format!(
            "connections {}/{} up ({} connect errors, {} never tried, ramp {:.1}s, {:.0}/s)\n\
             offered {:.0}/s sent {:.0}/s skipped {} delivered {:.0}/s{}\n\
             messages sent {} acked {} delivered {} lost {} duplicates {} ({:.0} acked/s)\n\
             ack latency µs p50 {} p99 {} p999 {} max {}\n\
             delivery latency µs p50 {} p99 {} p999 {} max {}{groups}\n\
             exactly once: {}",
            self.connections_established,
            self.connections_requested,
            self.connect_errors,
            self.ramp_unstarted,
            self.ramp_s,
            self.connect_rate_achieved,
            self.offered_per_s,
            self.sent_per_s,
            self.sends_skipped,
            self.delivered_per_s,
            if self.farm_saturated {
                " (farm saturated: send lag p99 over 10 ms)"
            } else {
                ""
            },
            self.messages_sent,
            self.server_acked,
            self.delivered,
            self.lost,
            self.duplicates,
            self.acked_per_s,
            l.ack.p50,
            l.ack.p99,
            l.ack.p999,
            l.ack.max,
            l.delivery.p50,
            l.delivery.p99,
            l.delivery.p999,
            l.delivery.max,
            if self.exactly_once { "yes" } else { "NO" },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::test_spec;

    #[test]
    fn json_has_the_fields_the_issue_lists() {
        let mut stats = Stats::default();
        stats.counters.connections_established = 10;
        stats.counters.messages_sent = 3;
        stats.counters.server_acked = 3;
        stats.counters.delivered = 3;
        stats.ack.record(250);
        stats.delivery.record(900);
        let r = Report::build(
            &test_spec(),
            &stats,
            &Verdict::default(),
            Timings {
                ramp_s: 1.0,
                measured_s: 2.0,
            },
            0,
        );
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for f in [
            "connections_established",
            "connect_errors",
            "messages_sent",
            "server_acked",
            "delivered",
            "lost",
            "duplicates",
            "params",
        ] {
            assert!(v.get(f).is_some(), "missing {f}");
        }
        for which in ["delivery", "ack"] {
            for p in ["p50", "p99", "p999", "max"] {
                assert!(
                    v["latency_us"][which][p].is_u64(),
                    "missing latency_us.{which}.{p}"
                );
            }
        }
        assert_eq!(v["latency_us"]["ack"]["max"], 250);
        assert_eq!(v["params"]["conns"], 100);
        assert_eq!(v["params"]["mode"], "steady");
        assert_eq!(v["exactly_once"], true);
        assert_eq!(v["acked_per_s"], 1.5);
        // And it parses back.
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back.connections_established, 10);
    }

    #[test]
    fn loss_breaks_exactly_once() {
        let mut stats = Stats::default();
        stats.counters.messages_sent = 1;
        stats.counters.server_acked = 1;
        let verdict = Verdict {
            lost: 1,
            ..Verdict::default()
        };
        let r = Report::build(&test_spec(), &stats, &verdict, Timings::default(), 0);
        assert!(!r.exactly_once);
        assert!(r.summary_text().contains("exactly once: NO"));
    }
}

//! Renders shard snapshots as Prometheus text (`/metrics`) and as JSON (`/stats`).
//!
//! Pure formatting of [`ShardStats`] values the admin thread already copied: no I/O, no
//! shard state. The JSON is written by hand (a flat, fixed shape of numbers and a few
//! strings) rather than pulling `serde_json` into the engine for one endpoint; strings are
//! escaped by [`json_str`].

use std::fmt::Write;

use crate::observe::counters::ShardCounters;
use crate::observe::stats::{ShardStats, RATED};

/// One engine number: its `/stats` key, its `/metrics` name (without `switchboard_`), help
/// text, whether it only grows (a Prometheus counter), and its value.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Key in `/stats` (stable since the first release; not renamed).
    pub json: &'static str,
    /// Name in `/metrics`: base units, counters end in `_total`.
    pub prom: &'static str,
    /// One line for `# HELP`.
    pub help: &'static str,
    /// Only grows.
    pub counter: bool,
    /// The value, as `/stats` shows it.
    pub value: f64,
    /// `/metrics` shows `value * prom_scale` (a percentage becomes a 0..1 ratio).
    pub prom_scale: f64,
}

const fn field(
    json: &'static str,
    prom: &'static str,
    help: &'static str,
    counter: bool,
    value: f64,
) -> Field {
    Field {
        json,
        prom,
        help,
        counter,
        value,
        prom_scale: 1.0,
    }
}

/// Every engine counter, in a fixed order.
pub fn counter_fields(c: &ShardCounters) -> [Field; 36] {
    // Destructured so a new counter that is not listed here fails to compile.
    let ShardCounters {
        accepts,
        accept_errors,
        accepts_rejected_full,
        handshakes,
        handshake_failures,
        handshakes_resumed,
        conns_open,
        closes,
        idle_timeouts,
        slow_frames,
        frames_in,
        frames_out,
        bytes_in,
        bytes_out,
        frames_too_large,
        mesh_msgs_sent,
        mesh_msgs_received,
        mesh_batches_sent,
        mesh_send_full,
        handoffs_out,
        handoffs_in,
        handoff_failures,
        upgrade_departed,
        upgrade_arrived,
        upgrade_closed,
        linger_aborts,
        service_timers_refused,
        timers_fired,
        recv_no_buffers,
        ring_enters,
        completions,
        ring_waits_batched,
        prelogin_prefix_refused,
        prelogin_frames_too_large,
        prelogin_partial_closed,
        prelogin_partial_bytes,
    } = c.clone();
    #[rustfmt::skip]
    let fields = [
        field("accepts", "accepts_total", "Connections accepted.", true, accepts as f64),
        field("accept_errors", "accept_errors_total", "accept() calls that failed.", true, accept_errors as f64),
        field("accepts_rejected_full", "accepts_rejected_full_total", "Connections refused: table full.", true, accepts_rejected_full as f64),
        field("slow_frames", "slow_frames_total", "Connections closed: frame not finished within the frame timeout.", true, slow_frames as f64),
        field("handshakes", "tls_handshakes_total", "TLS handshakes completed.", true, handshakes as f64),
        field("handshake_failures", "tls_handshake_failures_total", "TLS handshakes failed or timed out.", true, handshake_failures as f64),
        field("handshakes_resumed", "tls_handshakes_resumed_total", "TLS handshakes that resumed a session from a ticket.", true, handshakes_resumed as f64),
        field("conns_open", "connections_open", "Connections in the shard's table.", false, conns_open as f64),
        field("closes", "closes_total", "Connections closed.", true, closes as f64),
        field("idle_timeouts", "idle_timeouts_total", "Connections closed by the idle timeout.", true, idle_timeouts as f64),
        field("frames_in", "frames_in_total", "Frames handed to the service.", true, frames_in as f64),
        field("frames_out", "frames_out_total", "Frames queued by the service.", true, frames_out as f64),
        field("bytes_in", "received_bytes_total", "Bytes read from sockets (TLS records included).", true, bytes_in as f64),
        field("bytes_out", "sent_bytes_total", "Bytes written to sockets (TLS records included).", true, bytes_out as f64),
        field("frames_too_large", "frames_too_large_total", "Frames over the size limit.", true, frames_too_large as f64),
        field("mesh_msgs_sent", "mesh_messages_sent_total", "Service messages queued on the mesh.", true, mesh_msgs_sent as f64),
        field("mesh_msgs_received", "mesh_messages_received_total", "Service messages received from the mesh.", true, mesh_msgs_received as f64),
        field("mesh_batches_sent", "mesh_batches_sent_total", "Batches pushed into peer rings.", true, mesh_batches_sent as f64),
        field("mesh_send_full", "mesh_send_full_total", "Mesh sends refused: outbox full.", true, mesh_send_full as f64),
        field("handoffs_out", "handoffs_out_total", "Connections handed to another shard.", true, handoffs_out as f64),
        field("handoffs_in", "handoffs_in_total", "Connections adopted from another shard.", true, handoffs_in as f64),
        field("handoff_failures", "handoff_failures_total", "Handoffs that failed.", true, handoff_failures as f64),
        field("upgrade_departed", "upgrade_departed_total", "Connections handed to the next process in a live upgrade.", true, upgrade_departed as f64),
        field("upgrade_arrived", "upgrade_arrived_total", "Connections taken over from the previous process in a live upgrade.", true, upgrade_arrived as f64),
        field("upgrade_closed", "upgrade_closed_total", "Connections a live upgrade closed instead of moving them.", true, upgrade_closed as f64),
        field("linger_aborts", "linger_aborts_total", "Closing or departing connections aborted: not gone within the linger deadline.", true, linger_aborts as f64),
        field("service_timers_refused", "service_timers_refused_total", "Service timers refused: the service's share of the wheel is taken.", true, service_timers_refused as f64),
        field("timers_fired", "timers_fired_total", "Timers that fired.", true, timers_fired as f64),
        field("recv_no_buffers", "recv_no_buffers_total", "Receives ended because every provided buffer was out.", true, recv_no_buffers as f64),
        field("ring_enters", "ring_enters_total", "io_uring_enter calls: one wait per loop turn, plus submits a full submission queue forced.", true, ring_enters as f64),
        field("completions", "ring_completions_total", "Completions reaped from the shard's ring.", true, completions as f64),
        field("ring_waits_batched", "ring_waits_batched_total", "Waits that asked the kernel to batch completions (min-wait).", true, ring_waits_batched as f64),
        field("prelogin_prefix_refused", "prelogin_prefix_refused_total", "Connections closed at accept: their source prefix held its share of pre-login connections.", true, prelogin_prefix_refused as f64),
        field("prelogin_frames_too_large", "prelogin_frames_too_large_total", "Pre-login frames over the pre-login frame cap.", true, prelogin_frames_too_large as f64),
        field("prelogin_partial_closed", "prelogin_partial_closed_total", "Pre-login connections closed: their partial frame would pass the shard's budget.", true, prelogin_partial_closed as f64),
        field("prelogin_partial_bytes", "prelogin_partial_bytes", "Bytes of unfinished frames and TLS records held by pre-login connections.", false, prelogin_partial_bytes as f64),
    ];
    fields
}

/// Engine gauges and counters beyond `ShardCounters`.
pub fn engine_fields(s: &ShardStats) -> [Field; 7] {
    #[rustfmt::skip]
    let fields = [
        field("timers", "timer_entries", "Entries in the timer wheel.", false, s.timers as f64),
        field("busy_seconds", "busy_seconds_total", "Time the shard loop spent working, not waiting in the kernel.", true, s.busy_ns as f64 / 1e9),
        field("tasks_run", "loop_turns_total", "Turns of the shard loop (io_uring_enter calls).", true, s.tasks_run as f64),
        Field { prom_scale: 1e-6, ..field("turn_max_us", "loop_turn_max_seconds", "Longest loop turn over the last period (work, and io_uring_enter when it did not wait).", false, s.turn_max_us as f64) },
        Field { prom_scale: 0.01, ..field("utilisation_pct", "utilisation_ratio", "Busy share of the last statistics period, 0 to 1.", false, s.utilisation_pct) },
        field("locks_taken", "locks_taken_total", "Locks the shard thread took via engine::sync.", true, s.locks_taken as f64),
        field("alarms_active", "alarms_active", "Alarms over their threshold now.", false, s.alarms.len() as f64),
    ];
    fields
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP switchboard_{name} {help}");
    let _ = writeln!(out, "# TYPE switchboard_{name} {kind}");
}

fn kind(counter: bool) -> &'static str {
    if counter {
        "counter"
    } else {
        "gauge"
    }
}

/// Finite numbers only: Prometheus and JSON both choke on NaN.
fn num(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// A service statistic's Prometheus type: by convention a name ending in `_total` only grows.
pub fn service_stat_is_counter(name: &str) -> bool {
    name.ends_with("_total")
}

const SERVICE_HELP_DEFAULT: &str = "Reported by the service.";

fn service_help(shards: &[ShardStats], name: &str) -> &'static str {
    shards
        .iter()
        .flat_map(|s| s.service_help.iter())
        .find(|(n, _)| *n == name)
        .map_or(SERVICE_HELP_DEFAULT, |(_, h)| h)
}

/// Names in first-seen order over every shard (a shard that has not published yet has none).
fn union<'a, T: 'a>(
    shards: &'a [ShardStats],
    items: impl Fn(&'a ShardStats) -> &'a [T],
    name: impl Fn(&T) -> &'static str,
) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for s in shards {
        for n in items(s).iter().map(&name) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    names
}

fn fields_families(
    out: &mut String,
    shards: &[ShardStats],
    fields: impl Fn(&ShardStats) -> Vec<Field>,
) {
    let Some(first) = shards.first() else {
        return;
    };
    for (i, f) in fields(first).into_iter().enumerate() {
        family(out, f.prom, f.help, kind(f.counter));
        for s in shards {
            let v = num(fields(s)[i].value * f.prom_scale);
            let _ = writeln!(out, "switchboard_{}{{shard=\"{}\"}} {v}", f.prom, s.shard);
        }
    }
}

fn histogram_families(out: &mut String, shards: &[ShardStats]) {
    for name in union(shards, |s| &s.histograms, |h| h.name) {
        let help = shards
            .iter()
            .flat_map(|s| &s.histograms)
            .find(|h| h.name == name)
            .map_or("", |h| h.help);
        family(out, name, help, "histogram");
        for s in shards {
            let Some(h) = s.histograms.iter().find(|h| h.name == name) else {
                continue;
            };
            for (le, c) in h.hist.cumulative() {
                let le = if le.is_infinite() {
                    "+Inf".to_string()
                } else {
                    format!("{le}")
                };
                let _ = writeln!(
                    out,
                    "switchboard_{name}_bucket{{shard=\"{}\",le=\"{le}\"}} {c}",
                    s.shard
                );
            }
            let _ = writeln!(
                out,
                "switchboard_{name}_sum{{shard=\"{}\"}} {}",
                s.shard,
                num(h.hist.sum_seconds())
            );
            let _ = writeln!(
                out,
                "switchboard_{name}_count{{shard=\"{}\"}} {}",
                s.shard,
                h.hist.count()
            );
        }
    }
}

/// Prometheus text exposition (version 0.0.4) of every shard's snapshot.
///
/// Conventions (what `promtool check metrics` asks): counters end in `_total`, units are base
/// units at the end of the name (`_seconds`, `_bytes`, `_ratio`), latencies are histograms,
/// every sample carries `shard`. Decayed rates are left to Prometheus' `rate()`; they stay
/// in `/stats`.
pub fn prometheus(shards: &[ShardStats]) -> String {
    let mut out = String::new();
    fields_families(&mut out, shards, |s| counter_fields(&s.counters).to_vec());
    fields_families(&mut out, shards, |s| engine_fields(s).to_vec());
    if !shards.is_empty() {
        family(
            &mut out,
            "mesh_outbox_depth",
            "Messages waiting for the mesh flush, per peer.",
            "gauge",
        );
    }
    for s in shards {
        for (peer, d) in s.mesh_outbox.iter().enumerate() {
            let _ = writeln!(
                out,
                "switchboard_mesh_outbox_depth{{shard=\"{}\",peer=\"{peer}\"}} {d}",
                s.shard
            );
        }
    }
    for name in union(shards, |s| &s.service, |(n, _)| n) {
        let counter = service_stat_is_counter(name);
        family(&mut out, name, service_help(shards, name), kind(counter));
        for s in shards {
            if let Some(v) = s.service_stat(name) {
                let _ = writeln!(out, "switchboard_{name}{{shard=\"{}\"}} {v}", s.shard);
            }
        }
    }
    histogram_families(&mut out, shards);
    if !shards.is_empty() {
        family(
            &mut out,
            "alarm_active",
            "1 while the alarm on this statistic is over its threshold.",
            "gauge",
        );
    }
    for s in shards {
        let quiet = s
            .alarms_watched
            .iter()
            .filter(|w| !s.alarms.iter().any(|a| a.stat == **w));
        let samples = s
            .alarms
            .iter()
            .map(|a| (a.stat, 1))
            .chain(quiet.map(|w| (*w, 0)));
        for (stat, active) in samples {
            let _ = writeln!(
                out,
                "switchboard_alarm_active{{shard=\"{}\",stat=\"{stat}\"}} {active}",
                s.shard
            );
        }
    }
    out
}

/// `s` as a JSON string literal (quote and backslash escaped, control characters as
/// `\uXXXX`). The one escaper of the project's hand-written JSON (admin, pmc, webhooks).
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_shard(out: &mut String, s: &ShardStats) {
    let _ = write!(
        out,
        "{{\"shard\":{},\"seq\":{},\"at_ms\":{}",
        s.shard, s.seq, s.at_ms
    );
    for f in counter_fields(&s.counters) {
        let _ = write!(out, ",\"{}\":{}", f.json, f.value as u64);
    }
    for f in engine_fields(s) {
        let _ = write!(out, ",\"{}\":{}", f.json, num(f.value));
    }
    let depths: Vec<String> = s.mesh_outbox.iter().map(u64::to_string).collect();
    let _ = write!(out, ",\"mesh_outbox_depth\":[{}]", depths.join(","));
    out.push_str(",\"rates\":{");
    for (i, name) in RATED.iter().enumerate() {
        let r = s.rates[i].per_s;
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(
            out,
            "{sep}\"{name}\":{{\"1s\":{},\"10s\":{},\"100s\":{}}}",
            num(r[0]),
            num(r[1]),
            num(r[2])
        );
    }
    let u = s.utilisation.per_s;
    let _ = write!(
        out,
        "}},\"utilisation_decayed_pct\":{{\"1s\":{},\"10s\":{},\"100s\":{}}}",
        num(u[0]),
        num(u[1]),
        num(u[2])
    );
    out.push_str(",\"service\":{");
    for (i, (name, v)) in s.service.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(out, "{sep}{}:{v}", json_str(name));
    }
    out.push_str("},\"latency\":{");
    for (i, h) in s.histograms.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        // Above every bucket has no finite bound: JSON says null.
        let q = |p| match h.hist.quantile_bound_seconds(p) {
            v if v.is_finite() => v.to_string(),
            _ => "null".to_string(),
        };
        let _ = write!(
            out,
            "{sep}{}:{{\"count\":{},\"sum_seconds\":{},\"p50_le_seconds\":{},\"p99_le_seconds\":{}}}",
            json_str(h.name),
            h.hist.count(),
            num(h.hist.sum_seconds()),
            q(0.5),
            q(0.99)
        );
    }
    out.push_str("},\"alarms\":[");
    for (i, a) in s.alarms.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(
            out,
            "{sep}{{\"stat\":{},\"value\":{},\"max\":{},\"offender\":{},\"since_ms\":{}}}",
            json_str(a.stat),
            a.value,
            a.max,
            json_str(&a.offender),
            a.since_ms
        );
    }
    out.push_str("]}");
}

/// `{"shards":[{...}, ...]}`: one object per shard that has published.
pub fn json(shards: &[ShardStats]) -> String {
    let mut out = String::from("{\"shards\":[");
    for (i, s) in shards.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_shard(&mut out, s);
    }
    out.push_str("]}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::alarm::ActiveAlarm;

    fn sample() -> ShardStats {
        let mut s = ShardStats {
            shard: 1,
            seq: 4,
            mesh_outbox: vec![3, 0],
            service: vec![("queue_items", 7), ("sends_total", 2)],
            service_help: &[("queue_items", "Items queued.")],
            utilisation_pct: 25.0,
            alarms_watched: vec!["queue_items", "utilisation_pct"],
            ..Default::default()
        };
        s.counters.frames_in = 42;
        s.alarms.push(ActiveAlarm {
            stat: "queue_items",
            value: 7,
            max: 5,
            offender: "user \"+1\"".into(),
            since_ms: 9,
        });
        s
    }

    #[test]
    fn prometheus_lines_carry_the_shard_label() {
        let text = prometheus(&[sample()]);
        assert!(text.contains("# TYPE switchboard_frames_in_total counter\n"));
        assert!(text.contains("switchboard_frames_in_total{shard=\"1\"} 42\n"));
        assert!(text.contains("switchboard_utilisation_ratio{shard=\"1\"} 0.25\n"));
        assert!(text.contains("switchboard_mesh_outbox_depth{shard=\"1\",peer=\"0\"} 3\n"));
        assert!(text.contains("# HELP switchboard_queue_items Items queued.\n"));
        assert!(text.contains("# TYPE switchboard_queue_items gauge\n"));
        assert!(text.contains("switchboard_queue_items{shard=\"1\"} 7\n"));
        assert!(text.contains("# TYPE switchboard_sends_total counter\n"));
        assert!(text.contains("# HELP switchboard_sends_total Reported by the service.\n"));
        assert!(text.contains("switchboard_alarm_active{shard=\"1\",stat=\"queue_items\"} 1\n"));
        // A watched statistic with no alarm still has a sample (dashboards, `absent()` alerts).
        assert!(text.contains("switchboard_alarm_active{shard=\"1\",stat=\"utilisation_pct\"} 0\n"));
        assert!(text.contains("switchboard_alarms_active{shard=\"1\"} 1\n"));
        assert!(prometheus(&[]).is_empty());
    }

    #[test]
    fn histograms_render_cumulative_buckets_sum_and_count() {
        let mut s = ShardStats::zero(0, 1);
        let mesh = s
            .histograms
            .iter_mut()
            .find(|h| h.name == "mesh_hop_seconds")
            .unwrap();
        mesh.hist.record_ns(1_500);
        mesh.hist.record_ns(3_000_000_000);
        let text = prometheus(&[s]);
        assert!(text.contains("# TYPE switchboard_mesh_hop_seconds histogram\n"));
        assert!(
            text.contains("switchboard_mesh_hop_seconds_bucket{shard=\"0\",le=\"0.000001\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("switchboard_mesh_hop_seconds_bucket{shard=\"0\",le=\"0.000002\"} 1\n")
        );
        assert!(text.contains("switchboard_mesh_hop_seconds_bucket{shard=\"0\",le=\"0.1\"} 1\n"));
        assert!(text.contains("switchboard_mesh_hop_seconds_bucket{shard=\"0\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("switchboard_mesh_hop_seconds_sum{shard=\"0\"} 3.0000015\n"));
        assert!(text.contains("switchboard_mesh_hop_seconds_count{shard=\"0\"} 2\n"));
        let j = json(&[ShardStats::zero(0, 1)]);
        assert!(j.contains("\"mesh_hop_seconds\":{\"count\":0,"), "{j}");
    }

    #[test]
    fn json_escapes_and_nests() {
        let j = json(&[sample()]);
        assert!(j.starts_with("{\"shards\":[{\"shard\":1,\"seq\":4,"));
        assert!(j.contains("\"frames_in\":42"));
        assert!(j.contains("\"offender\":\"user \\\"+1\\\"\""));
        assert!(j.contains("\"service\":{\"queue_items\":7,\"sends_total\":2}"));
        assert!(j.contains("\"utilisation_pct\":25,"), "{j}");
        assert_eq!(json_str("a\u{1}b"), "\"a\\u0001b\"");
    }
}

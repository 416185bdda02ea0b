//! Renders shard snapshots as Prometheus text (`/metrics`) and as JSON (`/stats`).
//!
//! Pure formatting of [`ShardStats`] values the admin thread already copied: no I/O, no
//! shard state. The JSON is written by hand (a flat, fixed shape of numbers and a few
//! strings) rather than pulling `serde_json` into the engine for one endpoint; strings are
//! escaped by [`json_str`].

use std::fmt::Write;

use crate::counters::ShardCounters;
use crate::stats::{ShardStats, RATED, RATE_WINDOWS_S};

/// Every engine counter with its help text and whether it only grows.
pub fn counter_fields(c: &ShardCounters) -> [(&'static str, &'static str, bool, u64); 22] {
    // Destructured so a new counter that is not listed here fails to compile.
    let ShardCounters {
        accepts,
        accept_errors,
        accepts_rejected_full,
        handshakes,
        handshake_failures,
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
        timers_fired,
    } = c.clone();
    [
        ("accepts", "Connections accepted.", true, accepts),
        (
            "accept_errors",
            "accept() calls that failed.",
            true,
            accept_errors,
        ),
        (
            "accepts_rejected_full",
            "Connections refused: table full.",
            true,
            accepts_rejected_full,
        ),
        (
            "slow_frames",
            "Connections closed: frame not finished within the frame timeout.",
            true,
            slow_frames,
        ),
        ("handshakes", "TLS handshakes completed.", true, handshakes),
        (
            "handshake_failures",
            "TLS handshakes failed or timed out.",
            true,
            handshake_failures,
        ),
        (
            "conns_open",
            "Connections in the shard's table.",
            false,
            conns_open,
        ),
        ("closes", "Connections closed.", true, closes),
        (
            "idle_timeouts",
            "Connections closed by the idle timeout.",
            true,
            idle_timeouts,
        ),
        (
            "frames_in",
            "Frames handed to the service.",
            true,
            frames_in,
        ),
        (
            "frames_out",
            "Frames queued by the service.",
            true,
            frames_out,
        ),
        ("bytes_in", "Bytes read from sockets.", true, bytes_in),
        ("bytes_out", "Bytes written to sockets.", true, bytes_out),
        (
            "frames_too_large",
            "Frames over the size limit.",
            true,
            frames_too_large,
        ),
        (
            "mesh_msgs_sent",
            "Service messages queued on the mesh.",
            true,
            mesh_msgs_sent,
        ),
        (
            "mesh_msgs_received",
            "Service messages received from the mesh.",
            true,
            mesh_msgs_received,
        ),
        (
            "mesh_batches_sent",
            "Batches pushed into peer rings.",
            true,
            mesh_batches_sent,
        ),
        (
            "mesh_send_full",
            "Mesh sends refused: outbox full.",
            true,
            mesh_send_full,
        ),
        (
            "handoffs_out",
            "Connections handed to another shard.",
            true,
            handoffs_out,
        ),
        (
            "handoffs_in",
            "Connections adopted from another shard.",
            true,
            handoffs_in,
        ),
        (
            "handoff_failures",
            "Handoffs that failed.",
            true,
            handoff_failures,
        ),
        ("timers_fired", "Timers that fired.", true, timers_fired),
    ]
}

/// Engine gauges and counters beyond `ShardCounters`: (name, help, is counter, value).
fn engine_fields(s: &ShardStats) -> [(&'static str, &'static str, bool, f64); 5] {
    [
        (
            "timers",
            "Entries in the timer wheel.",
            false,
            s.timers as f64,
        ),
        (
            "busy_seconds",
            "Time the executor was not parked.",
            true,
            s.busy_ns as f64 / 1e9,
        ),
        (
            "tasks_run",
            "Tasks the executor ran.",
            true,
            s.tasks_run as f64,
        ),
        (
            "utilisation_pct",
            "Busy share of the last period, percent.",
            false,
            s.utilisation_pct,
        ),
        (
            "locks_taken",
            "Locks the shard thread took via engine::sync.",
            true,
            s.locks_taken as f64,
        ),
    ]
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

/// Prometheus text exposition (version 0.0.4) of every shard's snapshot.
pub fn prometheus(shards: &[ShardStats]) -> String {
    let mut out = String::new();
    let Some(first) = shards.first() else {
        return out;
    };
    for (i, (name, help, counter, _)) in counter_fields(&first.counters).into_iter().enumerate() {
        family(&mut out, name, help, kind(counter));
        for s in shards {
            let v = counter_fields(&s.counters)[i].3;
            let _ = writeln!(out, "switchboard_{name}{{shard=\"{}\"}} {v}", s.shard);
        }
    }
    for (i, (name, help, counter, _)) in engine_fields(first).into_iter().enumerate() {
        family(&mut out, name, help, kind(counter));
        for s in shards {
            let v = num(engine_fields(s)[i].3);
            let _ = writeln!(out, "switchboard_{name}{{shard=\"{}\"}} {v}", s.shard);
        }
    }
    family(
        &mut out,
        "mesh_outbox_depth",
        "Messages waiting for the mesh flush, per peer.",
        "gauge",
    );
    for s in shards {
        for (peer, d) in s.mesh_outbox.iter().enumerate() {
            let _ = writeln!(
                out,
                "switchboard_mesh_outbox_depth{{shard=\"{}\",peer=\"{peer}\"}} {d}",
                s.shard
            );
        }
    }
    for (i, name) in RATED.iter().enumerate() {
        family(
            &mut out,
            &format!("{name}_rate"),
            "Per-second rate, decayed over the window.",
            "gauge",
        );
        for s in shards {
            for (w, v) in RATE_WINDOWS_S.iter().zip(s.rates[i].per_s) {
                let _ = writeln!(
                    out,
                    "switchboard_{name}_rate{{shard=\"{}\",window=\"{w}s\"}} {}",
                    s.shard,
                    num(v)
                );
            }
        }
    }
    let service_names: Vec<&str> = first.service.iter().map(|(n, _)| *n).collect();
    for name in service_names {
        family(&mut out, name, "Reported by the service.", "gauge");
        for s in shards {
            if let Some(v) = s.service_stat(name) {
                let _ = writeln!(out, "switchboard_{name}{{shard=\"{}\"}} {v}", s.shard);
            }
        }
    }
    family(
        &mut out,
        "alarm_active",
        "1 while an alarm is over its threshold.",
        "gauge",
    );
    for s in shards {
        for a in &s.alarms {
            let _ = writeln!(
                out,
                "switchboard_alarm_active{{shard=\"{}\",stat=\"{}\"}} 1",
                s.shard, a.stat
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
    for (name, _, _, v) in counter_fields(&s.counters) {
        let _ = write!(out, ",\"{name}\":{v}");
    }
    for (name, _, _, v) in engine_fields(s) {
        let _ = write!(out, ",\"{name}\":{}", num(v));
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
    use crate::alarm::ActiveAlarm;

    fn sample() -> ShardStats {
        let mut s = ShardStats {
            shard: 1,
            seq: 4,
            mesh_outbox: vec![3, 0],
            service: vec![("queue_items", 7)],
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
        assert!(text.contains("# TYPE switchboard_frames_in counter\n"));
        assert!(text.contains("switchboard_frames_in{shard=\"1\"} 42\n"));
        assert!(text.contains("switchboard_mesh_outbox_depth{shard=\"1\",peer=\"0\"} 3\n"));
        assert!(text.contains("switchboard_queue_items{shard=\"1\"} 7\n"));
        assert!(text.contains("switchboard_alarm_active{shard=\"1\",stat=\"queue_items\"} 1\n"));
        assert!(prometheus(&[]).is_empty());
    }

    #[test]
    fn json_escapes_and_nests() {
        let j = json(&[sample()]);
        assert!(j.starts_with("{\"shards\":[{\"shard\":1,\"seq\":4,"));
        assert!(j.contains("\"frames_in\":42"));
        assert!(j.contains("\"offender\":\"user \\\"+1\\\"\""));
        assert!(j.contains("\"service\":{\"queue_items\":7}"));
        assert_eq!(json_str("a\u{1}b"), "\"a\\u0001b\"");
    }
}

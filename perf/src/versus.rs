//! The comparison scenarios of `bench`, each run for every system ([`crate::compare`]) and
//! rendered as one Markdown table with a ratio column (Switchboard ÷ best peer) and the
//! commands behind the numbers:
//! - steady 1:1 at fixed offered rates: latency, loss, CPU per delivered message (user and
//!   kernel), syscalls and context switches per message, both processes' CPU; then perf's
//!   software counters and, from one more run per system, the syscalls by name
//!   ([`crate::counter_tables`]);
//! - the saturation sweep: the highest offered rate with p99 ≤ 10 ms, found by bisection;
//! - idle memory per connection and heartbeat CPU.
//!
//! Bounded: a [`Plan`] fixes every count and duration; each farm run has a timeout.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tools::brokers::{self, BrokerKind, BrokerTls};

use crate::compare::{run_window, start, System, WindowRun, SYSTEMS};
use crate::perf_stat::WINDOW_EVENTS;

static RETRIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Farm runs that failed once and were run again (the report states the count).
pub fn retries() -> usize {
    RETRIES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Every run of each system in one scenario.
pub type SystemRuns = Vec<(System, Vec<WindowRun>)>;

/// p99 a rate must hold to count in the sweep, µs.
pub const SWEEP_P99_US_MAX: f64 = 10_000.0;

/// How much to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Runs per (system, rate); the median is reported with min–max.
    pub runs: usize,
    /// Sending window per steady run, seconds.
    pub duration_s: f64,
    /// Connections in the steady runs.
    pub conns: u64,
    /// Offered rates of the steady tables, msgs/s.
    pub rates: Vec<u64>,
    /// Sending window per sweep run, seconds.
    pub sweep_duration_s: f64,
    /// Bisection steps of the sweep (each halves the log-rate interval).
    pub sweep_steps: usize,
    /// Lowest and highest rates the sweep considers, msgs/s.
    pub sweep_range: (f64, f64),
    /// Idle connections for memory per connection.
    pub idle_conns: u64,
    /// Connections and period of the heartbeat scenario.
    pub heartbeat: (u64, f64),
    /// Timeout per farm run.
    pub timeout: Duration,
}

impl Plan {
    /// The full report.
    pub fn full(runs: usize) -> Plan {
        Plan {
            runs,
            duration_s: 10.0,
            conns: 1000,
            rates: vec![2_000, 20_000],
            sweep_duration_s: 5.0,
            sweep_steps: 6,
            sweep_range: (1_000.0, 128_000.0),
            idle_conns: 15_000,
            heartbeat: (10_000, 5.0),
            timeout: Duration::from_secs(180),
        }
    }

    /// A few minutes in all: one run each, shorter windows, a coarser sweep.
    pub fn quick() -> Plan {
        Plan {
            runs: 1,
            duration_s: 3.0,
            sweep_duration_s: 2.0,
            sweep_steps: 4,
            idle_conns: 5_000,
            heartbeat: (5_000, 5.0),
            timeout: Duration::from_secs(60),
            ..Plan::full(1)
        }
    }
}

/// The systems that can run here, with their broker executables, and a line per peer that
/// cannot.
pub struct Lineup {
    /// (system, broker executable).
    pub systems: Vec<(System, Option<PathBuf>)>,
    /// Why a peer is missing.
    pub notes: Vec<String>,
}

/// Finds (and with `install`, apt-installs) the brokers.
pub fn lineup(install: bool) -> Lineup {
    let mut l = Lineup {
        systems: Vec::new(),
        notes: Vec::new(),
    };
    for s in SYSTEMS {
        let Some(kind) = s.broker() else {
            l.systems.push((s, None));
            continue;
        };
        let bin = if install {
            brokers::install(kind).map_err(|e| format!("{e:#}"))
        } else {
            brokers::find(kind).ok_or_else(|| "not installed".to_string())
        };
        match bin {
            Ok(b) => l.systems.push((s, Some(b))),
            Err(e) => l
                .notes
                .push(format!("{} skipped: {} ({e})", s.name(), kind.program())),
        }
    }
    l
}

fn one_run(
    farm: &Path,
    server_bin: &Path,
    sys: &(System, Option<PathBuf>),
    args: &[&str],
    plan: &Plan,
    tls: Option<&BrokerTls>,
) -> anyhow::Result<WindowRun> {
    counted_run(farm, server_bin, sys, args, plan, tls, &WINDOW_EVENTS)
}

/// [`one_run`] counting `events` of the server over the window.
fn counted_run<S: AsRef<str>>(
    farm: &Path,
    server_bin: &Path,
    (system, broker): &(System, Option<PathBuf>),
    args: &[&str],
    plan: &Plan,
    tls: Option<&BrokerTls>,
    events: &[S],
) -> anyhow::Result<WindowRun> {
    let attempt = || -> anyhow::Result<WindowRun> {
        let target = start(*system, server_bin, broker.as_deref(), tls)?;
        run_window(farm, &target, *system, args, plan.timeout, events)
    };
    // One retry, said out loud: on a shared machine a run can fail for reasons that are not
    // the system's (a timeout under load); a second failure stops the bench.
    attempt().or_else(|e| {
        eprintln!("bench: {} run failed, retrying once: {e:#}", system.name());
        RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        attempt()
    })
}

fn steady_args(conns: &str, rate: &str, duration: &str) -> Vec<String> {
    [
        "--conns",
        conns,
        "--threads",
        "1",
        "--mode",
        "steady",
        "--rate",
        rate,
        "--duration",
        duration,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The median, NaNs left out (NaN when nothing is left).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `median (min–max)` of `v / scale`; "n/a" when any run was not measured.
pub(crate) fn spread(v: &[f64], scale: f64, digits: usize) -> String {
    if v.iter().any(|x| x.is_nan()) {
        return "n/a".into(); // not measured (perf missing, nothing delivered)
    }
    let m = median(v.to_vec()) / scale;
    if v.len() < 2 {
        return format!("{m:.digits$}");
    }
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min) / scale;
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max) / scale;
    format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
}

/// Switchboard's value ÷ the best (lowest) peer's, with the peer named.
fn ratio(values: &[(System, f64)]) -> String {
    let sb = values
        .iter()
        .find(|(s, _)| *s == System::Switchboard)
        .map(|v| v.1);
    let best = values
        .iter()
        .filter(|(s, v)| *s != System::Switchboard && !v.is_nan())
        .min_by(|a, b| a.1.total_cmp(&b.1));
    match (sb, best) {
        (Some(sb), Some((s, b))) if *b > 0.0 => format!("{:.2} × (vs {})", sb / b, s.name()),
        _ => "–".into(),
    }
}

/// The steady scenario at `rate`: a Markdown section, and every run for the plots. With
/// `tls`, every system runs over TLS (NATS starting it after its plaintext INFO line).
pub fn steady_at(
    farm: &Path,
    server_bin: &Path,
    lineup: &Lineup,
    plan: &Plan,
    rate: u64,
    tls: Option<&BrokerTls>,
) -> anyhow::Result<(String, SystemRuns)> {
    let (c, r, d) = (
        plan.conns.to_string(),
        rate.to_string(),
        plan.duration_s.to_string(),
    );
    let args = steady_args(&c, &r, &d);
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let systems: Vec<&(System, Option<PathBuf>)> = lineup.systems.iter().collect();
    let over = if tls.is_some() { " over TLS" } else { "" };
    let mut all = Vec::new();
    for sys in &systems {
        eprintln!("bench: {} at {rate} msgs/s offered{over}", sys.0.name());
        let mut runs = Vec::new();
        for _ in 0..plan.runs {
            runs.push(one_run(farm, server_bin, sys, &a, plan, tls)?);
        }
        all.push((sys.0, runs));
    }
    let mut md = format!(
        "### Steady 1:1 at {rate} msgs/s offered{over} ({} connections, server on CPU 0, farm on CPU 1, {} s window, {} run(s) each: median (min–max))\n\n",
        plan.conns, plan.duration_s, plan.runs
    );
    md.push_str("| system | offered/s | sent/s | skipped | delivered/s | lost | p50 ms | p99 ms | p99.9 ms | server CPU µs/msg | user µs/msg | kernel µs/msg | syscalls/msg | ctx switches/msg | server CPU % | farm CPU % | farm lag p99 ms | Switchboard ÷ best peer |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    let col = |runs: &[WindowRun], f: &dyn Fn(&WindowRun) -> f64| -> Vec<f64> {
        runs.iter().map(f).collect()
    };
    let p99s: Vec<(System, f64)> = all
        .iter()
        .map(|(s, r)| {
            (
                *s,
                median(col(r, &|w| w.at(&["latency_us", "delivery", "p99"]))),
            )
        })
        .collect();
    let cpus: Vec<(System, f64)> = all
        .iter()
        .map(|(s, r)| (*s, median(col(r, &|w| w.per_msg(w.server.cpu_us())))))
        .collect();
    for (sys, runs) in &all {
        let ratios = if *sys == System::Switchboard {
            format!("CPU {}; p99 {}", ratio(&cpus), ratio(&p99s))
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {ratios} |",
            sys.name(),
            spread(&col(runs, &|w| w.at(&["offered_per_s"])), 1.0, 0),
            spread(&col(runs, &|w| w.at(&["sent_per_s"])), 1.0, 0),
            spread(&col(runs, &|w| w.at(&["sends_skipped"])), 1.0, 0),
            spread(&col(runs, &|w| w.at(&["delivered_per_s"])), 1.0, 0),
            spread(&col(runs, &|w| w.at(&["lost"])), 1.0, 0),
            spread(&col(runs, &|w| w.at(&["latency_us", "delivery", "p50"])), 1000.0, 2),
            spread(&col(runs, &|w| w.at(&["latency_us", "delivery", "p99"])), 1000.0, 2),
            spread(&col(runs, &|w| w.at(&["latency_us", "delivery", "p999"])), 1000.0, 2),
            spread(&col(runs, &|w| w.per_msg(w.server.cpu_us())), 1.0, 1),
            spread(&col(runs, &|w| w.per_msg(w.server.user_us)), 1.0, 1),
            spread(&col(runs, &|w| w.per_msg(w.server.sys_us)), 1.0, 1),
            spread(
                &col(runs, &|w| w.server_syscalls().map_or(f64::NAN, |n| w.per_msg(n))),
                1.0,
                2,
            ),
            spread(&col(runs, &|w| w.per_msg(w.server.ctx_switches)), 1.0, 3),
            spread(&col(runs, &|w| w.cpu_pct(&w.server)), 1.0, 0),
            spread(&col(runs, &|w| w.cpu_pct(&w.farm)), 1.0, 0),
            spread(&col(runs, &|w| w.at(&["latency_us", "send_lag", "p99"])), 1000.0, 2),
        );
    }
    md.push('\n');
    md.push_str(&crate::counter_tables::software_table(&all));
    let mut counted = Vec::new();
    // By name only in plaintext: the TLS tables differ by the crypto, not the calls.
    for sys in systems.iter().filter(|_| tls.is_none()) {
        eprintln!(
            "bench: {} at {rate} msgs/s{over}, syscalls by name",
            sys.0.name()
        );
        let events = crate::perf_stat::syscall_events();
        counted.push((
            sys.0,
            counted_run(farm, server_bin, sys, &a, plan, tls, &events)?,
        ));
    }
    if !counted.is_empty() {
        md.push_str(&crate::counter_tables::syscall_table(&counted, &all));
    }
    let _ = writeln!(md, "Commands (each run starts a fresh server):\n");
    let (tls_server, tls_farm) = if tls.is_some() {
        (
            " with TLS (Switchboard: its dev certificate; mosquitto: certfile/keyfile, nats-server: a tls block with cert_file/key_file, both from the same dev CA code; NATS clients start TLS after the server's plaintext INFO line, as nats-server 2.9 requires)",
            " --ca <that certificate>",
        )
    } else {
        ("", "")
    };
    for (sys, _) in &systems {
        let _ = writeln!(
            md,
            "- {}: server `{}`{tls_server}; `{}taskset -c 1 farm {} {}{tls_farm}`",
            sys.name(),
            sys.server_command(),
            sys.farm_env()
                .iter()
                .map(|(k, _)| format!("{k}=… "))
                .collect::<String>(),
            sys.farm_args().join(" "),
            args.join(" ")
        );
    }
    md.push('\n');
    Ok((md, all))
}

/// Whether a sweep run held the target: p99 ≤ 10 ms, nothing skipped or lost.
fn holds(w: &WindowRun) -> bool {
    w.at(&["latency_us", "delivery", "p99"]) <= SWEEP_P99_US_MAX
        && w.at(&["sends_skipped"]) == 0.0
        && w.at(&["lost"]) == 0.0
}

/// The saturation sweep: per system, bisect the offered rate (on a log scale) for the
/// highest that holds p99 ≤ 10 ms; every probe is listed with both processes' CPU.
pub fn sweep(
    farm: &Path,
    server_bin: &Path,
    lineup: &Lineup,
    plan: &Plan,
) -> anyhow::Result<(String, Vec<(System, f64)>)> {
    let mut md = format!("### Saturation sweep: highest offered rate with delivery p99 ≤ 10 ms, nothing skipped or lost ({} connections, {} s per probe, bisection over {:.0}–{:.0} msgs/s, {} steps)\n\n", plan.conns, plan.sweep_duration_s, plan.sweep_range.0, plan.sweep_range.1, plan.sweep_steps);
    md.push_str("| system | highest rate held, msgs/s | probes: offered → p99 ms, server CPU %, farm CPU %, farm saturated? | Switchboard ÷ best peer |\n|---|---:|---|---|\n");
    let mut best = Vec::new();
    let mut rows = Vec::new();
    for sys in &lineup.systems {
        eprintln!("bench: saturation sweep, {}", sys.0.name());
        let (mut lo, mut hi) = (plan.sweep_range.0.ln(), plan.sweep_range.1.ln());
        let mut held = None;
        let mut probes = Vec::new();
        let mut probe = |rate: f64| -> anyhow::Result<bool> {
            let args = steady_args(
                &plan.conns.to_string(),
                &format!("{rate:.0}"),
                &plan.sweep_duration_s.to_string(),
            );
            let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            let w = one_run(farm, server_bin, sys, &a, plan, None)?;
            let ok = holds(&w);
            probes.push(format!(
                "{rate:.0} → {:.2}, {:.0} %, {:.0} %{}",
                w.at(&["latency_us", "delivery", "p99"]) / 1000.0,
                w.cpu_pct(&w.server),
                w.cpu_pct(&w.farm),
                if w.report["farm_saturated"] == true {
                    ", farm saturated"
                } else {
                    ""
                }
            ));
            Ok(ok)
        };
        if probe(lo.exp())? {
            held = Some(lo.exp());
            for _ in 0..plan.sweep_steps {
                let mid = (lo + hi) / 2.0;
                if probe(mid.exp())? {
                    lo = mid;
                    held = Some(mid.exp());
                } else {
                    hi = mid;
                }
            }
        }
        let v = held.unwrap_or(0.0);
        best.push((sys.0, v));
        rows.push((sys.0, held, probes));
    }
    // Higher is better here: the ratio is Switchboard ÷ the highest peer.
    let top_peer = best
        .iter()
        .filter(|(s, _)| *s != System::Switchboard)
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let sb = best.iter().find(|(s, _)| *s == System::Switchboard);
    for (sys, held, probes) in rows {
        let ratio = match (sys, sb, top_peer) {
            (System::Switchboard, Some((_, v)), Some((p, b))) if *b > 0.0 => {
                format!("{:.2} × (vs {})", v / b, p.name())
            }
            _ => String::new(),
        };
        let held = held.map_or(format!("< {:.0}", plan.sweep_range.0), |v| {
            format!("{v:.0}")
        });
        let _ = writeln!(
            md,
            "| {} | {held} | {} | {ratio} |",
            sys.name(),
            probes.join("; ")
        );
    }
    let _ = writeln!(md, "\nEach probe: a fresh server, then `taskset -c 1 farm <proto flags> --conns {} --threads 1 --mode steady --rate R --duration {}`. \"Farm saturated\" means the farm's own send lag p99 exceeded 10 ms, so that probe measures the farm too.\n", plan.conns, plan.sweep_duration_s);
    Ok((md, best))
}

/// Idle memory per connection and heartbeat CPU, per system.
pub fn idle_and_heartbeat(
    farm: &Path,
    server_bin: &Path,
    lineup: &Lineup,
    plan: &Plan,
) -> anyhow::Result<(String, Vec<(System, f64)>)> {
    let n = plan.idle_conns.to_string();
    let idle = [
        "--conns",
        &n,
        "--mode",
        "idle",
        "--duration",
        "1",
        "--connect-rate",
        "5000",
    ];
    let (hb_n, hb_period) = plan.heartbeat;
    let (hb_n_s, hb_p_s) = (hb_n.to_string(), hb_period.to_string());
    let hb = [
        "--conns",
        &hb_n_s,
        "--mode",
        "idle",
        "--duration",
        "10",
        "--ping-interval",
        &hb_p_s,
        "--connect-rate",
        "5000",
    ];
    let mut mem = Vec::new();
    let mut peaks = Vec::new();
    let mut cpu = Vec::new();
    let mut hb_runs = Vec::new();
    for sys in &lineup.systems {
        eprintln!("bench: idle memory and heartbeats, {}", sys.0.name());
        let w = one_run(farm, server_bin, sys, &idle, plan, None)?;
        let up = w.at(&["connections_established"]).max(1.0);
        let per_conn = |b: u64| b.saturating_sub(w.server_rss_before) as f64 / up;
        mem.push((sys.0, per_conn(w.server_rss_connected)));
        peaks.push((
            per_conn(w.server_hwm_connected),
            per_conn(w.server.rss_bytes),
        ));
        let w = one_run(farm, server_bin, sys, &hb, plan, None)?;
        // Pings of the whole run; the first comes 0.5–1.5 periods after a connection is up,
        // so nearly all fall in the window.
        let pings = w.at(&["counters", "pings"]).max(1.0);
        cpu.push((
            sys.0,
            w.server.cpu_us() as f64 / pings,
            w.cpu_pct(&w.server),
        ));
        hb_runs.push((sys.0, vec![w]));
    }
    let mut md = format!("### Idle connections and heartbeats\n\n| system | user-space bytes per idle subscribed connection ({} conns, RSS delta) | peak during the ramp (VmHWM) / settled 1 s later, bytes per conn | server CPU µs per heartbeat ({hb_n} conns, one ping each per {hb_period} s, 10 s window) | server CPU % | Switchboard ÷ best peer |\n|---|---:|---:|---:|---:|---|\n", plan.idle_conns);
    let cpu_pairs: Vec<(System, f64)> = cpu.iter().map(|c| (c.0, c.1)).collect();
    for (((sys, bytes), (_, us, pct)), (peak, settled)) in mem.iter().zip(&cpu).zip(&peaks) {
        let r = if *sys == System::Switchboard {
            format!(
                "memory {}; heartbeat CPU {}",
                ratio(&mem),
                ratio(&cpu_pairs)
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "| {} | {bytes:.0} | {peak:.0} / {settled:.0} | {us:.1} | {pct:.1} | {r} |",
            sys.name()
        );
    }
    let _ = writeln!(md, "\nCommands: server as in the steady tables; `taskset -c 1 farm <proto flags> {}` (memory: server RSS after every connection is up minus before, over connections up; Switchboard's users are logged in, the brokers' subscribed to their own topic; the peak is the server's VmHWM when the last connection was up, which catches a hash map's old and new tables both resident while it grows, and \"settled\" its RSS at the end of the 1 s idle window) and `taskset -c 1 farm <proto flags> {}`. Kernel socket memory is the same for every system and is in the Switchboard-only table (`idle-conns`).\n", idle.join(" "), hb.join(" "));
    md.push_str("Heartbeats, per ping of the run: ");
    md.push_str(&crate::counter_tables::software_table_per(
        &hb_runs,
        "ping",
        &|w| w.at(&["counters", "pings"]),
    ));
    Ok((md, mem))
}

/// Brokers' note for the report: versions, or why a peer is missing.
pub fn versions(lineup: &Lineup) -> String {
    let mut v = Vec::new();
    for (s, bin) in &lineup.systems {
        let Some(bin) = bin else { continue };
        let flag = if s.broker() == Some(BrokerKind::Nats) {
            "--version"
        } else {
            "-h"
        };
        let out = std::process::Command::new(bin).arg(flag).output();
        let text = out
            .map(|o| {
                let t = String::from_utf8_lossy(&o.stdout).to_string()
                    + &String::from_utf8_lossy(&o.stderr);
                t.lines().next().unwrap_or("").trim().to_string()
            })
            .unwrap_or_default();
        if !v.contains(&text) && !text.is_empty() {
            v.push(text);
        }
    }
    v.extend(lineup.notes.iter().cloned());
    v.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_divides_by_the_best_peer_and_names_it() {
        let v = [
            (System::Switchboard, 40.0),
            (System::MosquittoQos1, 30.0),
            (System::MosquittoQos0, 20.0),
            (System::Nats, f64::NAN),
        ];
        assert_eq!(ratio(&v), "2.00 × (vs mosquitto QoS 0)");
        assert_eq!(ratio(&v[..1]), "–", "no peer, no ratio");
    }

    #[test]
    fn an_unmeasured_figure_reads_n_a() {
        assert_eq!(spread(&[1.0, f64::NAN], 1.0, 1), "n/a");
    }

    #[test]
    fn spread_is_median_with_min_and_max() {
        assert_eq!(
            spread(&[3000.0, 1000.0, 2000.0], 1000.0, 1),
            "2.0 (1.0–3.0)"
        );
        assert_eq!(spread(&[5.0], 1.0, 0), "5");
        assert!(median(vec![f64::NAN]).is_nan());
    }

    #[test]
    fn quick_plan_is_smaller_than_full() {
        let (q, f) = (Plan::quick(), Plan::full(3));
        assert!(q.runs < f.runs && q.duration_s < f.duration_s && q.idle_conns < f.idle_conns);
        assert_eq!(q.rates, vec![2_000, 20_000]);
        assert_eq!(q.conns, 1000);
    }
}

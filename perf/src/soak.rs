//! The soak (issue 14): one Switchboard shard under a steady load for minutes, followed as it
//! goes, and the memory a registered user costs while offline.
//!
//! Steps of [`run_soak`], each bounded (the farm has a timeout, the loop reads its lines):
//! 1. A fresh server (one shard, plaintext, CPU 0); the farm (CPU 1) logs in `conns` users
//!    and sends 1:1 messages at `rate` msgs/s for `duration_s`, printing an interval line
//!    (`farm --interval`, `tools::farm::interval`) every `every_s`.
//! 2. At the start of sending and at each interval line, the server's RSS and CPU are read
//!    from /proc: a row of RSS, server CPU per delivered message over the interval, and the
//!    interval's delivery latency percentiles (which trail the clock by up to 2 s).
//! 3. After the farm's drain: its ledger verdict (every message acked and delivered exactly
//!    once), RSS growth from the first sample to the last, and the longest task poll if the
//!    server's `/stats` reports one ([`longest_poll`]).
//!
//! Steps of [`offline_user_bytes`]: on a fresh server, the farm logs in `n` users (the
//! load-test login registers them) and disconnects them; RSS `r1`. Then `n` other users the
//! same way; RSS `r2`. The first round's connection memory was freed and is reused by the
//! second, so `(r2 − r1) / n` is what a registered offline user holds (`(r1 − r0) / n`, with
//! the connections' high-water mark, is shown beside it).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tools::farm::interval::IntervalLine;
use tools::stats::Summary;

use crate::proc_stats::{rss_bytes, sample_tree};
use crate::scenario::{Server, SECRET};

/// Target: RSS growth over the soak, bytes (issue 14: ≤ start + 32 MB after 1.2M messages).
pub const RSS_GROWTH_BYTES_MAX: u64 = 32 * 1024 * 1024;
/// Messages the RSS target is stated for.
pub const RSS_TARGET_MESSAGES: u64 = 1_200_000;
/// Target: delivery p99.9 in every interval, µs.
pub const P999_US_MAX: u64 = 20_000;
/// Target: bytes per registered offline user.
pub const OFFLINE_USER_BYTES_MAX: f64 = 128.0;
/// Pause after the farm closes every connection, before RSS is read, so the server has
/// handled the closes.
const SETTLE: Duration = Duration::from_secs(1);

/// How much to run.
#[derive(Debug, Clone)]
pub struct SoakPlan {
    /// Connections (users) sending and receiving.
    pub conns: u64,
    /// Offered 1:1 rate, msgs/s.
    pub rate: u64,
    /// Sending window, seconds.
    pub duration_s: u64,
    /// Seconds between samples.
    pub every_s: u64,
    /// Users registered per round for the offline-user figure.
    pub offline_users: u64,
    /// Timeout of each farm run.
    pub timeout: Duration,
}

impl SoakPlan {
    /// Issue 14's soak: 8,000 msgs/s for 150 s (1.2M messages).
    pub fn full() -> SoakPlan {
        SoakPlan {
            conns: 1000,
            rate: 8_000,
            duration_s: 150,
            every_s: 5,
            offline_users: 15_000,
            timeout: Duration::from_secs(300),
        }
    }

    /// 30 s at the same rate.
    pub fn quick() -> SoakPlan {
        SoakPlan {
            duration_s: 30,
            offline_users: 5_000,
            timeout: Duration::from_secs(120),
            ..SoakPlan::full()
        }
    }
}

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SoakRow {
    /// Seconds since sending started.
    pub t_s: f64,
    /// Server RSS, bytes.
    pub rss_bytes: u64,
    /// Server CPU per delivered message over the interval, µs.
    pub cpu_us_per_msg: f64,
    /// Deliveries in the interval.
    pub delivered: u64,
    /// The interval's delivery latency, µs.
    pub latency: Summary,
}

impl SoakRow {
    /// The row for interval `iv`, with the server's RSS now and its CPU since the previous
    /// row, when `delivered_before` messages had been delivered.
    pub fn of_interval(
        iv: &IntervalLine,
        rss_bytes: u64,
        cpu_us: u64,
        delivered_before: u64,
    ) -> SoakRow {
        let delivered = iv.delivered.saturating_sub(delivered_before);
        SoakRow {
            t_s: iv.t_s,
            rss_bytes,
            cpu_us_per_msg: if delivered > 0 {
                cpu_us as f64 / delivered as f64
            } else {
                f64::NAN
            },
            delivered,
            latency: iv.latency.clone(),
        }
    }
}

/// What the soak measured.
#[derive(Debug, Clone)]
pub struct Soak {
    /// Every sample, the first at the start of sending.
    pub rows: Vec<SoakRow>,
    /// The farm's JSON report.
    pub report: serde_json::Value,
    /// The longest task poll `/stats` reported: (key, value), or `None`.
    pub longest_poll: Option<(String, f64)>,
}

impl Soak {
    /// RSS at the last sample minus the first, bytes (negative when it shrank).
    pub fn rss_growth(&self) -> i64 {
        match (self.rows.first(), self.rows.last()) {
            (Some(a), Some(b)) => b.rss_bytes as i64 - a.rss_bytes as i64,
            _ => 0,
        }
    }

    /// The worst interval p99.9, µs (the first row has no interval).
    pub fn worst_p999(&self) -> u64 {
        self.rows.iter().map(|r| r.latency.p999).max().unwrap_or(0)
    }

    /// Messages delivered in the whole run.
    pub fn delivered(&self) -> u64 {
        let n = |k: &str| self.report[k].as_u64().unwrap_or(0);
        n("delivered") + self.report["group"]["delivered"].as_u64().unwrap_or(0)
    }

    /// Every acked message delivered exactly once, nothing skipped, lost or unanswered.
    pub fn clean(&self) -> bool {
        let n = |k: &str| self.report[k].as_u64().unwrap_or(u64::MAX);
        self.report["exactly_once"] == true
            && n("sends_skipped") == 0
            && n("lost") == 0
            && n("unanswered") == 0
            && n("messages_sent") == n("server_acked")
    }
}

fn farm_cmd(farm: &Path, server: &Server, report: &Path, timeout: Duration) -> Command {
    let mut c = Command::new("timeout");
    c.arg(timeout.as_secs().max(1).to_string())
        .args(["taskset", "-c", crate::compare::FARM_CPUS])
        .arg(farm)
        .args(["--server", &server.addr.to_string(), "--quiet"])
        .args(["--proto", "switchboard"])
        .env(shards::config::LOAD_TEST_SECRET_ENV, SECRET)
        .arg("--report")
        .arg(report);
    c
}

/// Runs the soak on a fresh server (see the module's steps).
pub fn run_soak(farm: &Path, server_bin: &Path, plan: &SoakPlan) -> anyhow::Result<Soak> {
    let server = Server::start(server_bin, 1, false)?;
    let pid = server.pid();
    std::fs::create_dir_all(&server.data)?;
    let report_path = server.data.join("soak-farm.json");
    let (conns, rate) = (plan.conns.to_string(), plan.rate.to_string());
    let (duration, every) = (plan.duration_s.to_string(), plan.every_s.to_string());
    let mut child = farm_cmd(farm, &server, &report_path, plan.timeout)
        .args(["--conns", &conns, "--threads", "1", "--mode", "steady"])
        .args([
            "--rate",
            &rate,
            "--duration",
            &duration,
            "--interval",
            &every,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the farm")?;
    let mut stderr = child.stderr.take().context("farm stderr")?;
    let errs = std::thread::spawn(move || {
        let mut v = String::new();
        let _ = stderr.read_to_string(&mut v);
        v
    });
    let mut rows = Vec::new();
    let mut last = None;
    // The server's longest stretch of work per second, sampled at every interval line: the
    // worst of the run, not of its last second.
    let mut longest_poll: Option<(String, f64)> = None;
    // Bounded: the farm's stdout closes when it exits, at most `timeout` from now.
    for line in BufReader::new(child.stdout.take().context("farm stdout")?).lines() {
        let Ok(line) = line else { break };
        if let Some(seen) = server
            .admin
            .and_then(|a| admin_stats(a).ok())
            .and_then(|v| self::longest_poll(&v))
        {
            if longest_poll.as_ref().is_none_or(|b| seen.1 > b.1) {
                longest_poll = Some(seen);
            }
        }
        let now = (sample_tree(pid), rss_bytes(pid).unwrap_or(0));
        if line.starts_with("farm: sending started") {
            rows.push(SoakRow {
                t_s: 0.0,
                rss_bytes: now.1,
                cpu_us_per_msg: f64::NAN,
                delivered: 0,
                latency: Summary::default(),
            });
            last = Some((now.0, 0));
        } else if let (Some(iv), Some((cpu0, delivered0))) = (IntervalLine::parse(&line), &last) {
            rows.push(SoakRow::of_interval(
                &iv,
                now.1,
                now.0.since(cpu0).cpu_us(),
                *delivered0,
            ));
            last = Some((now.0, iv.delivered));
        }
    }
    let status = child.wait()?;
    let stderr = errs.join().unwrap_or_default();
    let text = std::fs::read_to_string(&report_path)
        .with_context(|| format!("farm wrote no report ({status}): {stderr}"))?;
    Ok(Soak {
        rows,
        report: serde_json::from_str(&text)?,
        longest_poll,
    })
}

/// `GET /stats` from the admin endpoint, as JSON (bounded by a 5 s timeout).
pub fn admin_stats(addr: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let t = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, t)?;
    s.set_read_timeout(Some(t))?;
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    Ok(serde_json::from_str(body)?)
}

/// The largest value under a key named like `turn_max_us` (the engine's longest loop turn,
/// per shard and second), `poll_max` or
/// `longest_poll`, anywhere in `v` (one per shard: the worst shard's).
pub fn longest_poll(v: &serde_json::Value) -> Option<(String, f64)> {
    let mut best: Option<(String, f64)> = None;
    let mut stack = vec![v];
    // Bounded by the size of the document: each value is visited once.
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    let key = k.to_ascii_lowercase();
                    let named = key.contains("turn_max")
                        || key.contains("poll_max")
                        || key.contains("longest_poll");
                    if let (true, Some(n)) = (named, x.as_f64()) {
                        if best.as_ref().is_none_or(|b| n > b.1) {
                            best = Some((k.clone(), n));
                        }
                    }
                    stack.push(x);
                }
            }
            serde_json::Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    best
}

/// Registers `n` users per round on a fresh server and disconnects them (see the module's
/// steps). Returns (bytes per user from the second round, from the first).
pub fn offline_user_bytes(
    farm: &Path,
    server_bin: &Path,
    n: u64,
    timeout: Duration,
) -> anyhow::Result<(f64, f64)> {
    let server = Server::start(server_bin, 1, false)?;
    std::fs::create_dir_all(&server.data)?;
    let r0 = rss_bytes(server.pid())?;
    let mut after = Vec::new();
    for round in 0..2u64 {
        let base = (19_990_000_000 + round * n).to_string();
        let report = server.data.join(format!("offline-{round}.json"));
        let out = farm_cmd(farm, &server, &report, timeout)
            .args([
                "--conns",
                &n.to_string(),
                "--mode",
                "idle",
                "--duration",
                "1",
            ])
            .args(["--connect-rate", "5000", "--phone-base", &base])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).with_context(|| {
                format!(
                    "farm wrote no report ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )
            })?)?;
        let up = crate::scenario::at(&r, &["connections_established"]);
        anyhow::ensure!(up as u64 == n, "only {up} of {n} users logged in");
        std::thread::sleep(SETTLE);
        after.push(rss_bytes(server.pid())?);
    }
    let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / n as f64;
    Ok((per(after[1], after[0]), per(after[0], r0)))
}

/// The Targets table's "met" column: `yes` or `no`.
fn met(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "no"
    }
}

/// The soak's rows of the Targets table.
pub fn target_rows(s: &Soak, offline: Option<(f64, f64)>) -> String {
    let growth = s.rss_growth();
    let mib = |b: i64| b as f64 / 1048576.0;
    let mut md = format!(
        "| soak RSS growth ≤ start + 32 MB after {} messages | {:+.1} MiB after {} messages (1 shard, 1,000 conns) | {} |\n",
        RSS_TARGET_MESSAGES,
        mib(growth),
        s.delivered(),
        met(growth <= RSS_GROWTH_BYTES_MAX as i64 && s.delivered() >= RSS_TARGET_MESSAGES)
            .to_string()
            + if s.delivered() < RSS_TARGET_MESSAGES {
                " (fewer messages than the target's: a short run)"
            } else {
                ""
            }
    );
    let _ = writeln!(
        md,
        "| soak delivery p99.9 ≤ 20 ms in every interval | worst interval p99.9 {:.2} ms; every message acked and delivered once: {} | {} |",
        s.worst_p999() as f64 / 1000.0,
        if s.clean() { "yes" } else { "NO" },
        met(s.worst_p999() <= P999_US_MAX && s.clean())
    );
    let _ = match offline {
        Some((bytes, first)) => writeln!(
            md,
            "| memory per registered offline user ≤ 128 B | {bytes:.0} B (second round of users; {first:.0} B in the first, which also holds freed connection memory) | {} |",
            met(bytes <= OFFLINE_USER_BYTES_MAX)
        ),
        None => writeln!(md, "| memory per registered offline user ≤ 128 B | not measured (the run failed) | no |"),
    };
    md
}

/// The soak's section of the report: the table of samples, the verdict, and two charts
/// (`soak-rss.svg`, `soak-latency.svg`) written into `dir`.
pub fn section(
    dir: &Path,
    plan: &SoakPlan,
    s: &Soak,
    offline: &anyhow::Result<(f64, f64)>,
) -> anyhow::Result<String> {
    let mut md = format!("### Soak: one shard, {} connections, {} msgs/s offered for {} s (issue 14)\n\nServer `switchboard --shards 1 --no-tls` on CPU 0; `SWITCHBOARD_LOAD_TEST_SECRET=… taskset -c 1 farm --proto switchboard --conns {} --threads 1 --mode steady --rate {} --duration {} --interval {}`. A row every {} s: the server's RSS and CPU (/proc) when the farm's interval line arrives, and that interval's delivery latency (the farm's lines trail the clock by up to 2 s). Measured on a shared, busy 2-CPU VM: other engineers' compiles run beside it, so latency and CPU are noisy.\n\n| t s | RSS MiB | server CPU µs/msg | delivered | p50 ms | p99 ms | p99.9 ms | max ms |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n", plan.conns, plan.rate, plan.duration_s, plan.conns, plan.rate, plan.duration_s, plan.every_s, plan.every_s);
    let ms = |us: u64| us as f64 / 1000.0;
    for r in &s.rows {
        let rss = r.rss_bytes as f64 / 1048576.0;
        if r.latency.count == 0 {
            // The first row (sending started) has no interval behind it.
            let _ = writeln!(
                md,
                "| {:.0} | {rss:.1} | – | {} | – | – | – | – |",
                r.t_s, r.delivered
            );
            continue;
        }
        let _ = writeln!(
            md,
            "| {:.0} | {rss:.1} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.t_s,
            r.cpu_us_per_msg,
            r.delivered,
            ms(r.latency.p50),
            ms(r.latency.p99),
            ms(r.latency.p999),
            ms(r.latency.max)
        );
    }
    let n = |k: &str| crate::scenario::at(&s.report, &[k]);
    let _ = writeln!(
        md,
        "\nLedger: {} sent, {} acked, {} delivered, {} skipped, {} lost, {} duplicates, {} unanswered; exactly once: {}. RSS growth from the first row to the last: {:+.1} MiB ({:.0} B per delivered message). Longest task poll: {}.\n",
        n("messages_sent"),
        n("server_acked"),
        s.delivered(),
        n("sends_skipped"),
        n("lost"),
        n("duplicates"),
        n("unanswered"),
        if s.clean() { "yes" } else { "NO" },
        s.rss_growth() as f64 / 1048576.0,
        s.rss_growth() as f64 / s.delivered().max(1) as f64,
        match &s.longest_poll {
            Some((k, v)) if k.ends_with("_us") => format!(
                "{:.2} ms (`/stats` field `{k}`, worst sample; target ≤ 5 ms: {})",
                v / 1000.0,
                if *v <= 5000.0 { "met" } else { "not met" }
            ),
            Some((k, v)) => format!("{v} (`/stats` field `{k}`, worst sample)"),
            None => "not reported by this server (`/stats` has no `turn_max_us` field)".into(),
        }
    );
    let _ = match offline {
        Ok((bytes, first)) => writeln!(md, "Memory per registered offline user: {bytes:.0} B (RSS delta over a second round of users registered with `farm --mode idle --duration 1` and disconnected, after a first round that left {first:.0} B per user, connection memory included; fresh server, 1 shard).\n"),
        Err(e) => writeln!(md, "Memory per registered offline user: not measured ({e:#}).\n"),
    };
    md.push_str(&charts(dir, s)?);
    Ok(md)
}

/// RSS and p99/p99.9 over time, as `soak-rss.svg` and `soak-latency.svg` in `dir`; the
/// Markdown that shows them.
fn charts(dir: &Path, s: &Soak) -> anyhow::Result<String> {
    let ms = |us: u64| us as f64 / 1000.0;
    let series = |name: &str, f: &dyn Fn(&SoakRow) -> f64| crate::plot::Series {
        name: name.into(),
        points: s
            .rows
            .iter()
            .map(|r| (r.t_s, f(r)))
            .filter(|p| p.1.is_finite())
            .collect(),
    };
    // A target as a flat line across the run.
    let target = |name: &str, y: f64| crate::plot::Series {
        name: name.into(),
        points: [s.rows.first(), s.rows.last()]
            .iter()
            .flatten()
            .map(|r| (r.t_s, y))
            .collect(),
    };
    let rss = crate::plot::line_chart(
        "Soak: server RSS over time",
        "seconds since sending started",
        "MiB",
        &[
            series("RSS", &|r| r.rss_bytes as f64 / 1048576.0),
            target(
                "start + 32 MB (target)",
                s.rows.first().map_or(0.0, |r| {
                    (r.rss_bytes + RSS_GROWTH_BYTES_MAX) as f64 / 1048576.0
                }),
            ),
        ],
        false,
    );
    std::fs::write(dir.join("soak-rss.svg"), rss)?;
    let lat: Vec<&SoakRow> = s.rows.iter().skip(1).collect();
    let pick = |name: &str, f: fn(&Summary) -> u64| crate::plot::Series {
        name: name.into(),
        points: lat.iter().map(|r| (r.t_s, ms(f(&r.latency)))).collect(),
    };
    let latency = crate::plot::line_chart(
        "Soak: delivery latency per interval",
        "seconds since sending started",
        "ms",
        &[
            pick("p99", |l| l.p99),
            pick("p99.9", |l| l.p999),
            target("p99.9 target", ms(P999_US_MAX)),
        ],
        false,
    );
    std::fs::write(dir.join("soak-latency.svg"), latency)?;
    Ok("![soak RSS over time](soak-rss.svg)\n\n![soak p99 and p99.9 over time](soak-latency.svg)\n\n".into())
}

/// Everything `bench` reports of the soak: (section, rows for the Targets table). A run that
/// fails is reported as such, in both.
pub fn bench_section(
    farm: &Path,
    server_bin: &Path,
    dir: &Path,
    plan: &SoakPlan,
) -> anyhow::Result<(String, String)> {
    eprintln!(
        "bench: soak, {} msgs/s for {} s",
        plan.rate, plan.duration_s
    );
    let soak = run_soak(farm, server_bin, plan);
    eprintln!("bench: memory per registered offline user");
    let offline = offline_user_bytes(farm, server_bin, plan.offline_users, plan.timeout);
    match soak {
        Ok(s) => Ok((
            section(dir, plan, &s, &offline)?,
            target_rows(&s, offline.as_ref().ok().copied()),
        )),
        Err(e) => Ok((
            format!("### Soak (issue 14)\n\nThe soak run failed: {e:#}\n\n"),
            format!("| soak (RSS growth, p99.9, offline user memory) | the soak run failed: {e} | no |\n"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_poll_takes_the_worst_shard_under_either_name() {
        let v = serde_json::json!([
            {"shard": 0, "engine": {"poll_max_us": 120, "polls": 9}},
            {"shard": 1, "engine": {"longest_poll_us": 480.5}},
        ]);
        assert_eq!(longest_poll(&v), Some(("longest_poll_us".into(), 480.5)));
        assert_eq!(longest_poll(&serde_json::json!({"polls": 3})), None);
    }

    fn row(t_s: f64, rss_mib: u64, p999: u64) -> SoakRow {
        SoakRow {
            t_s,
            rss_bytes: rss_mib << 20,
            cpu_us_per_msg: 1.0,
            delivered: 1,
            latency: Summary {
                p999,
                ..Summary::default()
            },
        }
    }

    #[test]
    fn a_row_divides_the_interval_s_cpu_by_its_deliveries() {
        let iv = IntervalLine {
            t_s: 10.0,
            dt_s: 5.0,
            sent: 90,
            delivered: 80,
            latency: Summary {
                count: 30,
                ..Summary::default()
            },
        };
        let r = SoakRow::of_interval(&iv, 1 << 20, 600, 50);
        assert_eq!((r.delivered, r.cpu_us_per_msg), (30, 20.0));
        assert!(SoakRow::of_interval(&iv, 0, 600, 80)
            .cpu_us_per_msg
            .is_nan());
    }

    #[test]
    fn growth_and_worst_interval_decide_the_targets() {
        let report = serde_json::json!({
            "exactly_once": true, "sends_skipped": 0, "lost": 0, "unanswered": 0,
            "messages_sent": 1_200_000, "server_acked": 1_200_000, "delivered": 1_200_000,
            "group": {"delivered": 0}
        });
        let mut s = Soak {
            rows: vec![
                row(0.0, 100, 0),
                row(5.0, 120, 9_000),
                row(10.0, 131, 19_000),
            ],
            report,
            longest_poll: None,
        };
        assert_eq!(s.rss_growth(), 31 << 20);
        let md = target_rows(&s, Some((100.0, 900.0)));
        assert_eq!(md.matches("| yes |").count(), 3, "{md}");
        s.rows.push(row(15.0, 140, 25_000));
        let md = target_rows(&s, Some((200.0, 900.0)));
        assert_eq!(md.matches("| no |").count(), 3, "{md}");
        s.report["lost"] = 1.into();
        assert!(!s.clean());
    }
}

//! Switchboard beside the brokers people would otherwise pick, measured by the same farm.
//!
//! Steps of one run ([`run_window`]), each bounded by the farm's own timeout:
//! 1. The system under test is running pinned to CPU 0 ([`start`]): Switchboard with one
//!    shard (plaintext, load-test logins), mosquitto or nats-server under `taskset -c 0` with
//!    the config `tools::brokers` writes (plaintext, persistence off, limits raised).
//! 2. The farm runs under `taskset -c 1` with `--proto` for the system. When it prints
//!    `farm: sending started`, the server's and the farm's /proc counters are sampled; again
//!    `--duration` seconds later, while `perf stat -e EVENTS -p SERVER` counts the window's
//!    events ([`crate::perf_stat`]): the software counters and every syscall the server
//!    enters (/proc/PID/io's `syscr`/`syscw` would miss `sendto`, `recvfrom` and
//!    `io_uring_enter`), or in a separate run the syscalls one by one. CPU, syscalls and
//!    context switches are therefore those of the sending window only: not the ramp, the
//!    logins or the drain.
//! 3. The farm's JSON report gives the latencies (stamped at the scheduled send time), the
//!    offered, sent and delivered rates, skipped sends and losses.
//!
//! Only loopback is used; every child is stopped on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tools::brokers::{Broker, BrokerKind, BrokerTls};

use crate::perf_stat::Counts as PerfCounts;
use crate::proc_stats::{sample_tree, ProcSample};
use crate::scenario::{Server, SECRET};

/// CPU list the system under test is pinned to.
pub const SERVER_CPUS: &str = "0";
/// CPU list the farm is pinned to.
pub const FARM_CPUS: &str = "1";

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// Switchboard, one shard, plaintext.
    Switchboard,
    /// mosquitto, MQTT 3.1.1 QoS 1 (PUBACK per message both ways).
    MosquittoQos1,
    /// mosquitto, MQTT 3.1.1 QoS 0.
    MosquittoQos0,
    /// nats-server, core pub/sub.
    Nats,
}

/// Every system, Switchboard first.
pub const SYSTEMS: [System; 4] = [
    System::Switchboard,
    System::MosquittoQos1,
    System::MosquittoQos0,
    System::Nats,
];

impl System {
    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            System::Switchboard => "Switchboard",
            System::MosquittoQos1 => "mosquitto QoS 1",
            System::MosquittoQos0 => "mosquitto QoS 0",
            System::Nats => "NATS",
        }
    }

    /// The broker it needs, if it is not Switchboard.
    pub fn broker(self) -> Option<BrokerKind> {
        match self {
            System::Switchboard => None,
            System::MosquittoQos1 | System::MosquittoQos0 => Some(BrokerKind::Mosquitto),
            System::Nats => Some(BrokerKind::Nats),
        }
    }

    /// The farm flags that pick its protocol.
    pub fn farm_args(self) -> Vec<String> {
        let a: &[&str] = match self {
            // The secret travels in the environment (`farm_env`), never in argv.
            System::Switchboard => &["--proto", "switchboard"],
            System::MosquittoQos1 => &["--proto", "mqtt", "--qos", "1"],
            System::MosquittoQos0 => &["--proto", "mqtt", "--qos", "0"],
            System::Nats => &["--proto", "nats"],
        };
        a.iter().map(|s| s.to_string()).collect()
    }

    /// The farm's environment: the load-test secret for Switchboard (a flag would show it
    /// to every local user in /proc/PID/cmdline).
    pub fn farm_env(self) -> Vec<(&'static str, &'static str)> {
        match self {
            System::Switchboard => vec![(shards::config::LOAD_TEST_SECRET_ENV, SECRET)],
            _ => Vec::new(),
        }
    }

    /// How the server side is started, for the report's command column.
    pub fn server_command(self) -> &'static str {
        match self {
            System::Switchboard => "switchboard --shards 1 --no-tls (CPU 0)",
            System::MosquittoQos1 | System::MosquittoQos0 => {
                "taskset -c 0 mosquitto -c <persistence false, max_connections -1>"
            }
            System::Nats => "taskset -c 0 nats-server -c <max_connections 1000000>",
        }
    }
}

/// What keeps the system running; held only so that dropping the [`Target`] stops it.
#[allow(dead_code)]
enum Keep {
    Server(Server),
    Broker(Broker),
}

/// A running system under test, stopped on drop.
pub struct Target {
    /// Its pid (for /proc).
    pub pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
    /// With TLS: the certificate the farm must trust.
    pub ca: Option<std::path::PathBuf>,
    _keep: Keep,
}

/// Starts `system` pinned to [`SERVER_CPUS`]. `broker_bin` is the broker's executable
/// (ignored for Switchboard). With `tls`, Switchboard serves TLS with its own dev
/// certificate and a broker with `tls`'s certificate.
pub fn start(
    system: System,
    server_bin: &Path,
    broker_bin: Option<&Path>,
    tls: Option<&BrokerTls>,
) -> anyhow::Result<Target> {
    match system.broker() {
        None => {
            let s = Server::start(server_bin, 1, tls.is_some())?;
            let ca = tls.map(|_| engine::tls::dev_cert_path(&s.data.join("tls")));
            Ok(Target {
                pid: s.pid(),
                addr: s.addr,
                ca,
                _keep: Keep::Server(s),
            })
        }
        Some(kind) => {
            let bin = broker_bin.context("no broker executable")?;
            let b = Broker::start_with(kind, bin, Some(SERVER_CPUS), tls)?;
            Ok(Target {
                pid: b.pid(),
                addr: b.addr,
                ca: tls.map(|t| t.cert.clone()),
                _keep: Keep::Broker(b),
            })
        }
    }
}

/// One farm run's results.
#[derive(Debug, Clone)]
pub struct WindowRun {
    /// The farm's JSON report.
    pub report: serde_json::Value,
    /// The server's counters over the sending window.
    pub server: ProcSample,
    /// The farm's (all its processes) counters over the sending window.
    pub farm: ProcSample,
    /// The server's RSS before the farm connected, bytes.
    pub server_rss_before: u64,
    /// The server's RSS at the start of the sending window (everyone connected), bytes.
    pub server_rss_connected: u64,
    /// Length of the sampled window, seconds (measured).
    pub window_s: f64,
    /// The server's peak RSS (VmHWM) when the sending window started, bytes: with the
    /// connected RSS it shows map-resize and ramp peaks that an RSS delta hides.
    pub server_hwm_connected: u64,
    /// `perf stat` over the window, for the events the run asked for (every thread of the
    /// server, counted in the kernel).
    pub server_perf: PerfCounts,
}

impl WindowRun {
    /// A number from the report by path.
    pub fn at(&self, path: &[&str]) -> f64 {
        crate::scenario::at(&self.report, path)
    }

    /// Deliveries of messages sent in the window.
    pub fn delivered(&self) -> f64 {
        self.at(&["delivered_per_s"]) * self.at(&["params", "duration_s"])
    }

    /// `x / delivered` (NaN when nothing was delivered).
    pub fn per_msg(&self, x: u64) -> f64 {
        self.per_msg_f(x as f64)
    }

    /// Every syscall the server's threads entered over the window (perf's
    /// `raw_syscalls:sys_enter` tracepoint: `io_uring_enter`, `sendto` and `recvfrom`
    /// included); `None` where perf could not count it.
    pub fn server_syscalls(&self) -> Option<u64> {
        self.server_perf
            .get(crate::perf_stat::SYSCALLS_ALL)
            .map(|v| v as u64)
    }

    /// A perf count of the server per delivered message (NaN where it was not read).
    pub fn perf_per_msg(&self, event: &str) -> f64 {
        self.server_perf
            .get(event)
            .map_or(f64::NAN, |v| self.per_msg_f(v))
    }

    /// `x / delivered` (NaN when nothing was delivered).
    pub fn per_msg_f(&self, x: f64) -> f64 {
        let d = self.delivered();
        if d > 0.0 {
            x / d
        } else {
            f64::NAN
        }
    }

    /// A process's CPU over the window as a share of one core, %.
    pub fn cpu_pct(&self, s: &ProcSample) -> f64 {
        100.0 * s.cpu_us() as f64 / (self.window_s * 1e6).max(1.0)
    }
}

/// Runs the farm (pinned to [`FARM_CPUS`]) against `target` with `system`'s protocol and
/// `args` (which must include `--duration`), sampling both processes over the sending window
/// and counting `events` of the server with `perf stat` over it.
pub fn run_window<S: AsRef<str>>(
    farm: &Path,
    target: &Target,
    system: System,
    args: &[&str],
    timeout: Duration,
    events: &[S],
) -> anyhow::Result<WindowRun> {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run_no = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "sb-compare-{}-{run_no}-{}",
        std::process::id(),
        target.pid
    ));
    std::fs::create_dir_all(&dir)?;
    let report_path = dir.join("farm.json");
    let duration: f64 = args
        .iter()
        .position(|a| *a == "--duration")
        .and_then(|i| args.get(i + 1))
        .and_then(|d| d.parse().ok())
        .context("run_window needs --duration")?;
    let server_rss_before = crate::proc_stats::rss_bytes(target.pid).unwrap_or(0);
    let mut child = Command::new("timeout")
        .arg(timeout.as_secs().max(1).to_string())
        .args(["taskset", "-c", FARM_CPUS])
        .arg(farm)
        .args(["--server", &target.addr.to_string(), "--quiet", "--report"])
        .arg(&report_path)
        .args(system.farm_args())
        .envs(system.farm_env())
        .args(
            target
                .ca
                .iter()
                .flat_map(|c| [std::ffi::OsStr::new("--ca"), c.as_os_str()]),
        )
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the farm")?;
    let farm_pid = child.id();
    // Drain stderr meanwhile: a farm blocked on a full stderr pipe would never close stdout.
    let mut stderr = child.stderr.take().context("farm stderr")?;
    let errs = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut v);
        String::from_utf8_lossy(&v).into_owned()
    });
    let mut lines = BufReader::new(child.stdout.take().context("farm stdout")?).lines();
    let mut window = None;
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        if line.starts_with("farm: sending started") {
            let s0 = (
                sample_tree(target.pid),
                sample_tree(farm_pid),
                Instant::now(),
            );
            let hwm = crate::proc_stats::peak_rss_bytes(target.pid).unwrap_or(0);
            // perf counts for the window (and sleeps it); without perf, just the sleep.
            let counts = crate::perf_stat::count(target.pid, events, duration);
            if counts.error.is_some() {
                std::thread::sleep(
                    Duration::from_secs_f64(duration).saturating_sub(s0.2.elapsed()),
                );
            }
            let s1 = (sample_tree(target.pid), sample_tree(farm_pid));
            window = Some((
                s1.0.since(&s0.0),
                s1.1.since(&s0.1),
                s0.2.elapsed(),
                (s0.0.rss_bytes, hwm),
                counts,
            ));
            break;
        }
    }
    lines.for_each(drop);
    let status = child.wait().context("waiting for the farm")?;
    let stderr = errs.join().unwrap_or_default();
    let text = std::fs::read_to_string(&report_path);
    let _ = std::fs::remove_dir_all(&dir);
    let text = text.with_context(|| format!("farm wrote no report ({status}): {stderr}"))?;
    let Some((server, farm_s, took, (rss_connected, hwm), server_perf)) = window else {
        bail!("the farm never started sending ({status}): {stderr}");
    };
    Ok(WindowRun {
        report: serde_json::from_str(&text)
            .with_context(|| format!("farm report unreadable ({status}): {stderr}"))?,
        server,
        farm: farm_s,
        server_rss_before,
        server_rss_connected: rss_connected,
        window_s: took.as_secs_f64(),
        server_hwm_connected: hwm,
        server_perf,
    })
}

//! `farm`: the Switchboard connection farm. See `tools::farm` and `farm --help`.
//!
//! The parent parses flags into a `Spec`, re-executes itself as `--procs` workers (the
//! hidden `--worker` flag), gathers their results, prints a summary and writes `--report`.
//! Exit status: 0, or 2 when messages were sent and exactly-once verification failed, or 1
//! on a setup error.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tools::farm::{fanout, worker};
use tools::peers::PeerDist;
use tools::source_ips::parse_source_ips;
use tools::workload::{Mode, Proto, Spec};

/// Synthetic phones for a Switchboard server: connect, log in, chat, measure.
#[derive(Debug, Parser)]
#[command(name = "farm", version)]
struct Args {
    /// Run as a worker (internal: the parent starts workers this way).
    #[arg(long, hide = true)]
    worker: bool,
    /// Server address (loopback or an address you own). Several (repeat the flag or separate
    /// with commas) spread the users over the boxes of a cluster, round robin; a box that is
    /// not a user's home redirects it there and the farm follows.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:5222", num_args = 1..)]
    server: Vec<SocketAddr>,
    /// Protocol: switchboard, mqtt (3.1.1, see --qos) or nats (core pub/sub, text protocol).
    #[arg(long, value_enum, default_value_t = Proto::Switchboard)]
    proto: Proto,
    /// MQTT QoS of publishes and subscriptions: 1 (PUBACK per message) or 0.
    #[arg(long, default_value_t = 1)]
    qos: u8,
    /// Connections (= synthetic users) in total.
    #[arg(long, default_value_t = 1000)]
    conns: u64,
    /// Worker processes (each must stay under its open-file limit).
    #[arg(long, default_value_t = 1)]
    procs: usize,
    /// Event-loop threads per worker.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Source addresses, e.g. 127.0.0.2-127.0.0.200,10.0.0.7 (default: kernel's choice).
    #[arg(long)]
    source_ips: Option<String>,
    /// New connections per second, whole farm.
    #[arg(long, default_value_t = 2000.0)]
    connect_rate: f64,
    /// Seconds of the measured phase.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// idle (heartbeats only), steady (message mix), storm (mix + everyone reconnects at once).
    #[arg(long, value_enum, default_value_t = Mode::Idle)]
    mode: Mode,
    /// 1:1 messages per second, whole farm (default: 100 when users log in, else 0).
    #[arg(long)]
    rate: Option<f64>,
    /// Peer choice: uniform, zipf or zipf:S.
    #[arg(long, default_value = "uniform")]
    peers: PeerDist,
    /// Bytes per message body (≥ 24).
    #[arg(long, default_value_t = 64)]
    body_bytes: usize,
    /// Fraction of received messages marked read.
    #[arg(long, default_value_t = 0.5)]
    read_ratio: f64,
    /// Fraction of sends that go to a group (0 = no groups).
    #[arg(long, default_value_t = 0.0)]
    group_ratio: f64,
    /// Members per synthetic group.
    #[arg(long, default_value_t = 8)]
    group_size: usize,
    /// TLS, trusting --ca (or <--data-dir>/tls/dev-cert.pem).
    #[arg(long)]
    tls: bool,
    /// CA or certificate file to trust (implies --tls).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// With TLS: resume sessions from the server's tickets (reconnects skip the
    /// certificate exchange). Off by default, so every handshake is a full one.
    #[arg(long)]
    tls_resume: bool,
    /// The server's data directory, to find its dev certificate.
    #[arg(long, default_value = "./switchboard-data")]
    data_dir: PathBuf,
    /// Name the server certificate must carry.
    #[arg(long, default_value = tools::net::SERVER_NAME_DEFAULT)]
    server_name: String,
    /// Log users in via the load-test path (must match the server's; UNSAFE in production).
    /// Also read from $SWITCHBOARD_LOAD_TEST_SECRET.
    #[arg(long)]
    load_test_secret: Option<String>,
    /// User i has phone +(phone_base + i).
    #[arg(long, default_value_t = 19_990_000_000)]
    phone_base: u64,
    /// Heartbeat period per connection, seconds.
    #[arg(long, default_value_t = 60.0)]
    ping_interval: f64,
    /// Connect + handshake + login timeout, seconds.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// Attempts per user during the ramp.
    #[arg(long, default_value_t = 3)]
    connect_attempts: u32,
    /// Longest ramp, seconds (default: twice conns / connect-rate, plus 30).
    #[arg(long)]
    ramp_timeout: Option<f64>,
    /// Longest wait for acks, then for deliveries, after sending stops, seconds.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Storm mode: seconds into the measured phase when everyone drops (default: half).
    #[arg(long)]
    storm_at: Option<f64>,
    /// Most unacknowledged sends per connection.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// PRNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print delivery percentiles of the last S seconds every S seconds of the run (0: off).
    #[arg(long, default_value_t = 0.0)]
    interval: f64,
    /// Send in bursts every this many ms (every send due by then at once), like a driver on a
    /// coarse timer (tokio's is 1 ms); 0: each send at its own time. Latency still counts
    /// from each send's scheduled time.
    #[arg(long, default_value_t = 0.0)]
    send_tick_ms: f64,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// Media beside the text: upload MB/s over all media pairs (0: none; the server needs
    /// --media-listen). Each pair uploads, sends and downloads one object at a time.
    #[arg(long, default_value_t = 0.0)]
    media_mb_s: f64,
    /// Media pairs (threads in the parent; phones after the farm's users).
    #[arg(long, default_value_t = 4)]
    media_pairs: usize,
}

fn main() {
    let args = Args::parse();
    if args.worker {
        if let Err(e) = worker::run_worker() {
            eprintln!("farm worker: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("farm: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn spec_from(a: &Args) -> anyhow::Result<Spec> {
    let source_ips = match &a.source_ips {
        Some(s) => parse_source_ips(s).context("--source-ips")?,
        None => Vec::new(),
    };
    let tls_ca = match (&a.ca, a.tls) {
        (Some(ca), _) => Some(ca.clone()),
        (None, true) => Some(tools::net::dev_cert_in(&a.data_dir)),
        (None, false) => None,
    };
    if let Some(ca) = &tls_ca {
        anyhow::ensure!(
            ca.exists(),
            "CA file {} does not exist (pass --ca or --data-dir)",
            ca.display()
        );
    }
    let load_test_secret = a
        .load_test_secret
        .clone()
        .or_else(|| std::env::var("SWITCHBOARD_LOAD_TEST_SECRET").ok())
        .filter(|s| !s.is_empty());
    let per_proc = a.conns / a.procs.max(1) as u64;
    if per_proc > 19_000 {
        eprintln!("farm: warning: {per_proc} connections per worker; this host allows ~20000 files per process (raise --procs)");
    }
    let logs_in = load_test_secret.is_some() || a.proto != Proto::Switchboard;
    let spec = Spec {
        servers: a.server.clone(),
        proto: a.proto,
        qos: a.qos,
        conns: a.conns,
        procs: a.procs.max(1),
        threads: a.threads.max(1),
        source_ips,
        connect_rate: a.connect_rate,
        duration_s: a.duration,
        mode: a.mode,
        rate: match (a.mode, a.rate) {
            (Mode::Idle, _) => 0.0,
            (_, Some(r)) => r,
            (_, None) if logs_in => 100.0,
            (_, None) => 0.0,
        },
        peers: a.peers,
        body_bytes: a.body_bytes,
        read_ratio: a.read_ratio.clamp(0.0, 1.0),
        group_ratio: a.group_ratio.clamp(0.0, 1.0),
        group_size: a.group_size,
        tls_ca,
        tls_resume: a.tls_resume,
        server_name: a.server_name.clone(),
        load_test_secret,
        phone_base: a.phone_base,
        ping_interval_s: a.ping_interval,
        connect_timeout_s: a.connect_timeout,
        connect_attempts: a.connect_attempts.max(1),
        ramp_timeout_s: a
            .ramp_timeout
            .unwrap_or(2.0 * a.conns as f64 / a.connect_rate.max(1e-3) + 30.0),
        drain_s: a.drain,
        storm_at_s: a.storm_at.unwrap_or(a.duration / 2.0),
        inflight_per_conn_max: a.inflight.max(1),
        seed: a.seed,
        interval_s: a.interval,
        send_tick_ms: a.send_tick_ms,
    };
    spec.check().map_err(|e| anyhow::anyhow!(e))?;
    Ok(spec)
}

/// The media pairs' settings, when `--media-mb-s` asks for them.
fn media_spec(a: &Args, spec: &Spec) -> anyhow::Result<Option<tools::farm::media::MediaSpec>> {
    if a.media_mb_s <= 0.0 {
        return Ok(None);
    }
    anyhow::ensure!(
        a.proto == Proto::Switchboard,
        "--media-mb-s needs --proto switchboard"
    );
    let secret = spec
        .load_test_secret
        .clone()
        .context("--media-mb-s needs the load-test secret")?;
    let tls = match &spec.tls_ca {
        Some(ca) => Some((
            tools::net::TlsClient::trusting(ca, &a.server_name)?,
            ca.clone(),
        )),
        None => None,
    };
    Ok(Some(tools::farm::media::MediaSpec {
        // The first box: media pairs do not follow a cluster's redirects.
        server: *a.server.first().context("no --server")?,
        tls,
        secret,
        phone_base: a.phone_base + a.conns + 1_000,
        pairs: a.media_pairs.max(1),
        bytes_per_s: a.media_mb_s * 1e6,
    }))
}

fn run(a: Args) -> anyhow::Result<i32> {
    let spec = spec_from(&a)?;
    let exe = std::env::current_exe().context("finding this executable to start workers")?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let media = match media_spec(&a, &spec)? {
        Some(m) => {
            let stop = stop.clone();
            Some(std::thread::spawn(move || {
                tools::farm::media::run(&m, &stop)
            }))
        }
        None => None,
    };
    let report = fanout::run_farm(&spec, &exe, &["--worker"], a.quiet);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let media = media.map(|h| h.join().expect("media pairs do not panic"));
    let report = report?;
    println!("{}", report.summary_text());
    if let Some(m) = &media {
        println!("{}", m.line());
    }
    if let Some(path) = &a.report {
        report.write(path)?;
        println!("report written to {}", path.display());
    }
    let failed = !report.exactly_once && report.messages_sent > 0;
    Ok(if failed { 2 } else { 0 })
}

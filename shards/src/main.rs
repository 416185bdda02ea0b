//! `switchboard`: starts the shards and serves until SIGINT/SIGTERM, then drains and exits 0.
//! `switchboard --check-config FILE` validates a configuration and prints the effective
//! settings without starting anything.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engine::upgrade::fds::Reply;

use clap::Parser;
use shards::config::{Cli, ServerConfig};
use shards::log_lines::{JsonLines, LogFormat};

/// The server's flags plus the ones that only shape this process (not in the config file).
#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Thread-per-core io_uring messaging switch"
)]
struct Args {
    #[command(flatten)]
    cli: Cli,
    /// Log lines as text or as one JSON object per line (levels from RUST_LOG).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Validate this config file (merged with the other flags; a given certificate and key
    /// must load), print the effective settings as TOML and exit: 0 when valid, 1 with the
    /// reason otherwise.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("cluster") {
        match cluster_command(std::env::args().skip(2)) {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("switchboard cluster: error: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("upgrade") {
        match signal_upgrade(std::env::args().skip(2)) {
            Ok(pid) => println!(
                "switchboard: asked pid {pid} to upgrade (SIGUSR2); its log says how it went"
            ),
            Err(e) => {
                eprintln!("switchboard upgrade: error: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let mut args = Args::parse();
    init_logs(args.log_format);
    if let Some(file) = args.check_config.take() {
        args.cli.config = Some(file);
        match check_config(args.cli) {
            Ok(effective) => {
                print!("{effective}");
                return;
            }
            Err(e) => {
                eprintln!("switchboard: error: {e}");
                std::process::exit(1);
            }
        }
    }
    if let Err(e) = run(args.cli) {
        eprintln!("switchboard: error: {e}");
        std::process::exit(1);
    }
}

/// `switchboard cluster status --cluster nats://H:P[,..]`: the boxes of the cluster and their
/// load, read from the members bucket (`shards::cluster::status`); `switchboard cluster
/// import --data-dir DIR --cluster URLS --box-id ID`: a box that ran alone gets its accounts'
/// homes (`shards::cluster::import`).
fn cluster_command(mut args: impl Iterator<Item = String>) -> Result<String, String> {
    const USAGE: &str = "usage: switchboard cluster status --cluster nats://HOST:PORT[,...]\n   \
        or: switchboard cluster import --data-dir DIR --cluster nats://HOST:PORT[,...] --box-id ID";
    let servers =
        |urls: &str| shards::config::cluster::servers(urls).map_err(|e| format!("{e}\n{USAGE}"));
    match args.next().as_deref() {
        Some("status") => match (args.next().as_deref(), args.next(), args.next()) {
            (Some("--cluster"), Some(urls), None) => {
                shards::cluster::status::cluster_status(&servers(&urls)?)
            }
            _ => Err(USAGE.into()),
        },
        Some("import") => {
            let (mut dir, mut urls, mut id) = (None, None, None);
            while let Some(flag) = args.next() {
                let slot = match flag.as_str() {
                    "--data-dir" => &mut dir,
                    "--cluster" => &mut urls,
                    "--box-id" => &mut id,
                    _ => return Err(USAGE.into()),
                };
                *slot = Some(args.next().ok_or(USAGE)?);
            }
            let (Some(dir), Some(urls), Some(id)) = (dir, urls, id) else {
                return Err(USAGE.into());
            };
            shards::cluster::import::import(Path::new(&dir), &servers(&urls)?, &id)
        }
        _ => Err(USAGE.into()),
    }
}

/// `switchboard upgrade --data-dir DIR`: sends SIGUSR2 to the server holding DIR's lock (its
/// pid is in the lock file); returns that pid.
fn signal_upgrade(mut args: impl Iterator<Item = String>) -> anyhow::Result<i32> {
    let dir = match (args.next().as_deref(), args.next(), args.next()) {
        (Some("--data-dir"), Some(dir), None) => PathBuf::from(dir),
        _ => anyhow::bail!("usage: switchboard upgrade --data-dir DIR"),
    };
    let lock = dir.join(shards::data::lock::LOCK_FILE);
    let text = std::fs::read_to_string(&lock).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (is a server running on {}?)",
            lock.display(),
            dir.display()
        )
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{}: no pid in it", lock.display()))?;
    if shards::data::lock::lock(&dir).is_ok() {
        anyhow::bail!("no server holds {} (pid {pid} is gone)", dir.display());
    }
    // SAFETY: kill(2) with a pid and a signal number; no memory involved.
    if unsafe { libc::kill(pid, libc::SIGUSR2) } != 0 {
        anyhow::bail!("signalling pid {pid}: {}", std::io::Error::last_os_error());
    }
    Ok(pid)
}

/// The settings `cli` resolves to, after checking that a given certificate and key load.
fn check_config(cli: Cli) -> anyhow::Result<String> {
    let cfg = ServerConfig::from_cli(cli)?;
    if let (true, Some((cert, key))) = (cfg.tls, &cfg.cert_key) {
        engine::tls::server_config(&engine::tls::CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        })?;
    }
    Ok(shards::config::show::effective_toml(&cfg))
}

fn init_logs(format: LogFormat) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // async-nats' connector logs each failed connection attempt as an error of its own; the
    // gateway says what failed, once (and counts lease failures while it runs). Shown only
    // when RUST_LOG names async_nats.
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("async_nats")) {
        if let Ok(quiet) = "async_nats::connector=off".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.event_format(JsonLines).init(),
    }
}

/// How often the main thread looks at the stop and upgrade flags.
const MAIN_POLL_MS: u64 = 20;

fn run(cli: Cli) -> anyhow::Result<()> {
    // The binary at the server's path, as started: what an upgrade starts (a file put in
    // its place since is the new binary).
    let exe = std::env::current_exe()?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let cfg = ServerConfig::from_cli(cli)?;
    let stop = Arc::new(AtomicBool::new(false));
    let upgrade = Arc::new(AtomicBool::new(false));
    engine::shutdown::stop_on_signals(&stop)?;
    engine::shutdown::upgrade_on_sigusr2(&upgrade)?;
    let (mut rt, mut media) = match shards::upgrade::handover_socket() {
        None => {
            let started = shards::server::start_all(&cfg)?;
            // A successor says nothing: its predecessor names it (MAINPID=) before exiting.
            if let Err(e) = shards::sd_notify::notify("READY=1") {
                tracing::warn!("cannot tell systemd the server is ready: {e}");
            }
            started
        }
        Some(sock) => take_over(&cfg, sock)?,
    };
    loop {
        log_listening(&rt, &cfg);
        while !stop.load(Ordering::Relaxed) && !upgrade.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(MAIN_POLL_MS));
        }
        if stop.load(Ordering::Relaxed) {
            rt.stop();
            rt.join()?;
            // A cluster box leaves the members bucket before it exits (at most 2 s).
            shards::cluster::gateway::wait_left();
            drop(media);
            tracing::info!("switchboard stopped");
            return Ok(());
        }
        upgrade.store(false, Ordering::Relaxed);
        tracing::info!(exe = %exe.display(), "upgrade: asked for; stopping the shards at a turn boundary");
        let departure = rt.depart()?;
        // The next process binds the media port anew: uploads in progress end here (their
        // clients retry), finished objects are on disk.
        drop(media.take());
        tracing::info!(
            conns = departure.conns(),
            "upgrade: shards stopped, log flushed and closed, data directory unlocked"
        );
        match shards::upgrade::hand_over(&exe, &args, &departure) {
            Ok(pid) => {
                if let Err(e) = shards::sd_notify::hand_main_pid_to(pid) {
                    tracing::warn!(pid, "cannot tell systemd the new main pid: {e}");
                }
                tracing::info!(pid, "upgrade: the new process took over; exiting");
                return Ok(());
            }
            Err(why) => {
                tracing::warn!("upgrade: {why}; taking every connection back");
                (rt, media) = shards::server::start_with(&cfg, |_| Ok(Some(departure)))?;
                // A signal that came during the attempt asked for the one that just failed.
                upgrade.store(false, Ordering::Relaxed);
                tracing::info!("upgrade: called off; serving on");
            }
        }
    }
}

/// A new process of a live upgrade: take the old one's listeners and connections over on
/// `sock`, answering `ready` or why not.
fn take_over(cfg: &ServerConfig, mut sock: UnixStream) -> anyhow::Result<shards::server::Started> {
    tracing::info!("upgrade: started by a running server; taking over");
    let mut conns = 0;
    let started = shards::server::start_with(cfg, |shards| {
        let d = shards::upgrade::receive(&mut sock, shards)?;
        conns = d.conns();
        Ok(Some(d))
    });
    match started {
        Ok(started) => {
            shards::upgrade::answer(&mut sock, &Reply::Ready);
            tracing::info!(
                conns,
                pid = std::process::id(),
                "upgrade: done; this process serves"
            );
            Ok(started)
        }
        Err(e) => {
            tracing::error!("upgrade: refused: {e}");
            shards::upgrade::answer(&mut sock, &Reply::Refused(e.to_string()));
            Err(e.into())
        }
    }
}

fn log_listening(rt: &engine::Runtime, cfg: &ServerConfig) {
    tracing::info!(
        addr = %rt.local_addr(),
        admin = ?rt.admin_addr(),
        shards = rt.shards(),
        tls = cfg.tls,
        connections_max = rt.connections_max(),
        data_dir = %cfg.data_dir.display(),
        pid = std::process::id(),
        "{}",
        shards::server::LISTENING
    );
}

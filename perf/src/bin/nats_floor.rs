//! `nats-floor`: what core NATS alone costs per message in the shape of the cluster's direct
//! path (issue 24's floor), on this machine.
//!
//! Starts `nats-server` (a free loopback port) and a responder (this binary again, as a
//! child process: `nats-floor respond URL`), then sends `--rate` messages a second for
//! `--seconds`: a pacer thread (standing for a shard) hands each message to a client
//! thread (standing for the sending box's gateway: a tokio current-thread runtime, woken
//! per hand-over as the gateway is by a shard), which sends it as a core-NATS request to
//! the responder (the home box's gateway), which answers each request at once. With
//! `--batch B` every request carries B messages (rate / B requests a second, B answers in
//! one reply): what batching per destination could buy at best.
//!
//! Prints the CPU summed over nats-server, the requester process and the responder process
//! per message (`/proc/PID/stat` user + system over the sending window) and the request
//! round trip's p50/p99. A cross-box message of the direct path costs two such round trips
//! (the message, then its receipt). Bounded: the sending stops after `--seconds`, answers
//! are awaited at most 2 s more, every child is killed at exit.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use futures_util::stream::{FuturesUnordered, StreamExt};

#[derive(Parser)]
#[command(about = "core-NATS request/reply cost per message (the cluster's floor)")]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,
    /// Messages a second.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// How long to send.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Messages per NATS request.
    #[arg(long, default_value_t = 1)]
    batch: u64,
    /// Bytes per message (64 B of body plus an envelope's sender, recipient and ids).
    #[arg(long, default_value_t = 128)]
    bytes: usize,
    /// The nats-server binary.
    #[arg(long, default_value = "/usr/sbin/nats-server")]
    nats_server: PathBuf,
}

#[derive(Subcommand)]
enum Role {
    /// Answers every request on `floor.direct` at once (the child process).
    Respond {
        /// The NATS URL.
        url: String,
    },
}

const SUBJECT: &str = "floor.direct";
/// Longest wait for the answers still out once the sending has stopped.
const DRAIN_WAIT_MS: u64 = 2_000;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Role::Respond { url }) = &args.role {
        return runtime()?.block_on(respond(url));
    }
    if args.batch == 0 || args.rate < args.batch {
        bail!("--batch must be 1..=--rate");
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let url = format!("nats://127.0.0.1:{port}");
    let mut children = Children(Vec::new());
    let mut nats = Command::new(&args.nats_server)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", args.nats_server.display()))?;
    let log = nats.stderr.take().context("nats-server's log")?;
    children.0.push(nats);
    let mut lines = BufReader::new(log).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("Server is ready") => break,
            Some(Ok(_)) => {}
            _ => bail!("nats-server ended before it was ready"),
        }
    }
    // Keep reading its log so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let me = std::env::current_exe()?;
    let mut responder = Command::new(me)
        .args(["respond", &url])
        .stdout(Stdio::piped())
        .spawn()?;
    let ready = responder.stdout.take().context("the responder's output")?;
    children.0.push(responder);
    let mut ready = BufReader::new(ready).lines();
    if !matches!(ready.next(), Some(Ok(l)) if l == "ready") {
        bail!("the responder did not start");
    }
    let pids = [children.0[0].id(), children.0[1].id(), std::process::id()];
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let (rate, secs, batch) = (args.rate, args.seconds, args.batch);
    // The pacer: one hand-over per request, at its time (no drift: each deadline counts
    // from the start).
    let cpu = std::thread::spawn(move || -> anyhow::Result<[u64; 3]> {
        let requests = rate * secs / batch;
        let period = Duration::from_nanos(1_000_000_000 * batch / rate);
        let c0 = cpu_of(&pids)?;
        let start = Instant::now();
        for i in 0..requests {
            let due = start + period * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let _ = tx.send(Instant::now());
        }
        drop(tx);
        let c1 = cpu_of(&pids)?;
        Ok([0, 1, 2].map(|i| c1[i] - c0[i]))
    });
    let mut lat = runtime()?.block_on(request(&url, rx, batch, args.bytes))?;
    let cpu = cpu.join().expect("the pacer")?;
    let tk = clock_ticks();
    let msgs = (rate * secs / batch * batch) as f64;
    let us = |t: u64| t as f64 / tk * 1e6 / msgs;
    let answered = lat.len() as u64 * batch;
    lat.sort_unstable();
    let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)));
    println!(
        "rate={rate} batch={batch} bytes={} messages={} answered={answered} \
         cpu_us_per_msg={:.1} (nats-server {:.1}, responder {:.1}, requester {:.1}) \
         round_trip_us p50={} p99={}",
        args.bytes,
        msgs as u64,
        us(cpu.iter().sum()),
        us(cpu[0]),
        us(cpu[1]),
        us(cpu[2]),
        pct(0.5).copied().unwrap_or(0),
        pct(0.99).copied().unwrap_or(0),
    );
    Ok(())
}

/// The requester's runtime: a request per hand-over, its round trip in µs.
async fn request(
    url: &str,
    mut handed: tokio::sync::mpsc::UnboundedReceiver<Instant>,
    batch: u64,
    bytes: usize,
) -> anyhow::Result<Vec<u32>> {
    let client = async_nats::connect(url).await?;
    let payload = bytes::Bytes::from(vec![7u8; bytes * batch as usize]);
    let mut out = FuturesUnordered::new();
    let mut lat = Vec::new();
    let mut open = true;
    while open || !out.is_empty() {
        tokio::select! {
            at = handed.recv(), if open => match at {
                Some(at) => {
                    let (c, p) = (client.clone(), payload.clone());
                    out.push(async move {
                        let asked = c.request(SUBJECT, p);
                        let r = tokio::time::timeout(Duration::from_millis(DRAIN_WAIT_MS), asked);
                        r.await.ok().and_then(|r| r.ok()).map(|_| at.elapsed())
                    });
                }
                None => open = false,
            },
            Some(done) = out.next(), if !out.is_empty() => {
                if let Some(d) = done {
                    lat.push(d.as_micros().min(u32::MAX as u128) as u32);
                }
            }
        }
    }
    Ok(lat)
}

/// The responder: answers each request at once (3 bytes an answer, as a stored id).
async fn respond(url: &str) -> anyhow::Result<()> {
    let client = async_nats::connect(url).await?;
    let mut sub = client.subscribe(SUBJECT).await?;
    client.flush().await?;
    println!("ready");
    while let Some(m) = sub.next().await {
        let Some(reply) = m.reply else { continue };
        let n = m.payload.len().max(1).div_ceil(128);
        let _ = client.publish(reply, vec![1u8; 3 * n].into()).await;
    }
    Ok(())
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// User + system ticks of each process.
fn cpu_of(pids: &[u32; 3]) -> anyhow::Result<[u64; 3]> {
    let mut t = [0; 3];
    for (i, pid) in pids.iter().enumerate() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command's closing parenthesis: utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')').context("a stat line")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        t[i] = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    }
    Ok(t)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// Children killed at exit, however it comes.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

//! `upgrade-time`: a live upgrade under load: how long the hand-over takes and the worst
//! delivery latency while it happens, with N logged-in connections.
//!
//! Starts a `switchboard` server (a child process), logs N phones in on N connections
//! (TLS unless `--no-tls`), and starts a probe: phone A sends B a message every millisecond
//! (waiting for its `ServerAck`), B acks each one and records its latency (send to
//! receipt, one clock: both ends are threads of this process). After a second, SIGUSR2:
//! the server starts its own binary again and hands every connection over. Measured: from
//! the signal until the old process has exited (the new one answered `ready`); the probe's
//! worst and 99th-percentile latency in that window; then every connection is pinged on
//! its same socket (a missing pong is a disconnect). The new server is stopped at the end
//! (its pid is in the data directory's lock file). Bounded: N connections, a 10 s read
//! timeout each, 60 s for the hand-over.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use prost::Message;
use proto::v1::{client_frame, server_frame, ClientFrame, ServerFrame};

#[derive(Parser)]
#[command(about = "Live upgrade under load: hand-over time and worst delivery latency")]
struct Args {
    /// Logged-in connections to hand over (besides the probe's two).
    #[arg(long, default_value_t = 5000)]
    conns: usize,
    /// Plaintext instead of TLS.
    #[arg(long)]
    no_tls: bool,
    /// Shards for the server.
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// Client threads opening the connections.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// The server binary (default: `switchboard` beside this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

/// First phone of the run.
const PHONE_BASE: u64 = 17_770_000_000;

/// Longest wait for the old process to exit after the signal.
const HANDOVER_WAIT_S: u64 = 60;

type Conn = Box<dyn perf::idle_clients::ReadWriteSend>;

/// What B saw: each message's (arrival, latency ms), and its client id.
type Received = (Vec<(f64, f64)>, Vec<u64>);

/// Messages the probe sent, each one's (arrival, latency ms), and the client ids B got.
type Probed = (u64, Vec<(f64, f64)>, Vec<u64>);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = perf::scenario::server_bin(args.server_bin.clone());
    let tls = !args.no_tls;
    let mut server = perf::scenario::Server::start_pinned(&bin, args.shards, tls, false)?;
    let config = perf::idle_clients::client_tls(&server.data, tls)?;
    let t = Instant::now();
    let mut conns = open_logged_in(server.addr, config.clone(), args.conns, args.threads)?;
    println!(
        "{} connections logged in ({:.1} s)",
        conns.len(),
        t.elapsed().as_secs_f64()
    );
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let probe = start_probe(server.addr, config, epoch, stop.clone())?;
    std::thread::sleep(Duration::from_secs(1));
    let old = server.pid();
    let t0 = epoch.elapsed().as_secs_f64();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(old as i32, libc::SIGUSR2) };
    let deadline = Instant::now() + Duration::from_secs(HANDOVER_WAIT_S);
    while !server.exited() {
        if Instant::now() > deadline {
            bail!("the old server did not exit within {HANDOVER_WAIT_S} s");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let t1 = epoch.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let (sent, latencies, mut got) = probe.join().expect("probe")?;
    let received = got.len();
    got.sort_unstable();
    got.dedup();
    let duplicates = received - got.len();
    // Every message A sent was acknowledged (it waits for each ServerAck) and must arrive.
    let lost = (1..=sent)
        .filter(|id| got.binary_search(id).is_err())
        .count();
    let disconnects = ping_all(&mut conns);
    let new_pid = std::fs::read_to_string(server.data.join("LOCK"))?
        .trim()
        .to_string();
    let mut during: Vec<f64> = latencies
        .iter()
        .filter(|(at, _)| *at >= t0 - 0.01 && *at <= t1 + 0.5)
        .map(|(_, ms)| *ms)
        .collect();
    during.sort_by(f64::total_cmp);
    let p = |q: f64| {
        during
            .get(((during.len() as f64 * q) as usize).min(during.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "upgrade-time: mode={} shards={} conns={} (+2 probe)\n\
         hand-over (SIGUSR2 to the old process's exit): {:.0} ms\n\
         probe during it: {} messages, worst {:.1} ms, p99 {:.1} ms, p50 {:.1} ms (of {} sent in all)\n\
         disconnects (no pong on the same socket afterwards): {disconnects}; probe messages lost: {lost}, delivered twice: {duplicates}\n\
         RESULT upgrade mode={} conns={} handover_ms={:.0} worst_ms={:.1} p99_ms={:.1} disconnects={disconnects} lost={lost} duplicates={duplicates}",
        if tls { "tls" } else { "plaintext" },
        args.shards,
        conns.len(),
        (t1 - t0) * 1e3,
        during.len(),
        p(1.0),
        p(0.99),
        p(0.5),
        sent,
        if tls { "tls" } else { "plaintext" },
        conns.len(),
        (t1 - t0) * 1e3,
        p(1.0),
        p(0.99),
    );
    if let Ok(pid) = new_pid.parse::<i32>() {
        // SAFETY: kill(2) on the server our child started (its pid from the lock file).
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    drop(conns);
    Ok(())
}

/// `n` connections over `threads` threads, each logged in as its own phone.
fn open_logged_in(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    n: usize,
    threads: usize,
) -> anyhow::Result<Vec<Conn>> {
    let per = n.div_ceil(threads.max(1));
    let handles: Vec<_> = (0..threads.max(1))
        .map(|t| {
            let tls = tls.clone();
            std::thread::spawn(move || -> anyhow::Result<Vec<Conn>> {
                let mut v = Vec::with_capacity(per);
                for i in (t * per)..((t + 1) * per).min(n) {
                    let src = Ipv4Addr::new(127, 0, 2, 2 + (i % 200) as u8);
                    v.push(connect_login(
                        addr,
                        src,
                        tls.clone(),
                        PHONE_BASE + 2 + i as u64,
                    )?);
                }
                Ok(v)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for h in handles {
        all.extend(h.join().expect("client thread")?);
    }
    Ok(all)
}

fn connect_login(
    addr: SocketAddr,
    src: Ipv4Addr,
    tls: Option<Arc<rustls::ClientConfig>>,
    phone: u64,
) -> anyhow::Result<Conn> {
    let s = perf::idle_clients::connect_from(addr, src)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    let mut c: Conn = match tls {
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::try_from("localhost")?;
            Box::new(rustls::StreamOwned::new(
                rustls::ClientConnection::new(cfg, name)?,
                s,
            ))
        }
        None => Box::new(s),
    };
    write(
        &mut c,
        client_frame::Kind::LoadTestLogin(proto::v1::LoadTestLogin {
            protocol_version: proto::PROTOCOL_VERSION,
            phone: format!("+{phone}"),
            secret: perf::scenario::SECRET.as_bytes().to_vec(),
        }),
    )?;
    match read(&mut c)? {
        server_frame::Kind::LoggedIn(_) => Ok(c),
        other => bail!("expected LoggedIn for +{phone}, got {other:?}"),
    }
}

fn write(c: &mut Conn, kind: client_frame::Kind) -> anyhow::Result<()> {
    let mut out = Vec::new();
    proto::codec::encode_frame(&ClientFrame { kind: Some(kind) }, &mut out)?;
    c.write_all(&out)?;
    Ok(())
}

fn read(c: &mut Conn) -> anyhow::Result<server_frame::Kind> {
    let mut len = [0u8; 4];
    c.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    c.read_exact(&mut body)?;
    ServerFrame::decode(body.as_slice())?
        .kind
        .context("an empty server frame")
}

/// A sends B a message every millisecond until `stop`; B acks each and records (when it
/// arrived, its latency in ms), in seconds since `epoch`. Returns how many A sent, and B's
/// records.
fn start_probe(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<Probed>>> {
    let src = Ipv4Addr::new(127, 0, 3, 2);
    let mut a = connect_login(addr, src, tls.clone(), PHONE_BASE)?;
    let mut b = connect_login(addr, src, tls, PHONE_BASE + 1)?;
    let stop_b = stop.clone();
    // The last id A sent, once it stopped: B reads until it has that one (in order, from
    // one sender), so nothing sent is counted lost for being read late.
    let last = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let last_b = last.clone();
    let receiver = std::thread::spawn(move || -> anyhow::Result<Received> {
        let mut latencies = Vec::new();
        let mut ids = Vec::new();
        loop {
            let done = ids
                .last()
                .is_some_and(|&id| id >= last_b.load(Ordering::Relaxed));
            if stop_b.load(Ordering::Relaxed) && done {
                break;
            }
            let frame = match read(&mut b) {
                Ok(f) => f,
                Err(e) => return Err(e.context("probe B reading")),
            };
            let server_frame::Kind::Message(m) = frame else {
                continue;
            };
            let sent_ns = u64::from_be_bytes(m.body[..8].try_into()?);
            let now = epoch.elapsed();
            let ms = (now.as_nanos() as u64).saturating_sub(sent_ns) as f64 / 1e6;
            latencies.push((now.as_secs_f64(), ms));
            ids.push(m.client_msg_id);
            write(
                &mut b,
                client_frame::Kind::Ack(proto::v1::Ack {
                    server_msg_ids: vec![m.server_msg_id],
                }),
            )?;
        }
        Ok((latencies, ids))
    });
    Ok(std::thread::spawn(move || -> anyhow::Result<Probed> {
        let mut sent = 0u64;
        let mut send_one = |id: u64| -> anyhow::Result<()> {
            let now = epoch.elapsed().as_nanos() as u64;
            write(
                &mut a,
                client_frame::Kind::Send(proto::v1::SendMessage {
                    to: format!("+{}", PHONE_BASE + 1),
                    client_msg_id: id,
                    body: now.to_be_bytes().to_vec().into(),
                    media: None,
                }),
            )?;
            // Receipts come too; wait for this message's ServerAck.
            loop {
                if let server_frame::Kind::ServerAck(ack) =
                    read(&mut a).with_context(|| format!("probe A waiting for ServerAck {id}"))?
                {
                    if ack.client_msg_id == id {
                        return Ok(());
                    }
                }
            }
        };
        while !stop.load(Ordering::Relaxed) {
            sent += 1;
            send_one(sent)?;
            std::thread::sleep(Duration::from_millis(1));
        }
        last.store(sent, Ordering::Relaxed);
        // One more, after `last` is set: B sees an id at or past it and stops reading.
        send_one(sent + 1)?;
        let (latencies, ids) = receiver.join().expect("receiver")?;
        Ok((sent, latencies, ids))
    }))
}

/// Pings every connection on its socket; returns how many did not answer.
fn ping_all(conns: &mut [Conn]) -> usize {
    let mut missing = 0;
    for (i, c) in conns.iter_mut().enumerate() {
        let ok = write(
            c,
            client_frame::Kind::Ping(proto::v1::Ping { nonce: i as u64 }),
        )
        .and_then(|()| read(c))
        .is_ok_and(|f| matches!(f, server_frame::Kind::Pong(p) if p.nonce == i as u64));
        missing += usize::from(!ok);
    }
    missing
}

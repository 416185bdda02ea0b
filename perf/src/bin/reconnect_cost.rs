//! `reconnect-cost`: server CPU per reconnect, with a full TLS handshake and with one
//! resumed from a session ticket.
//!
//! Starts a `switchboard` server (TLS, one shard) as a child process and logs `--phones`
//! phones in once, so every later login is a known device's. Then, in alternating rounds,
//! client threads reconnect one connection after another: connect from a loopback source
//! address, TLS handshake (full: a config without resumption; resumed: a config that keeps
//! the server's tickets), `LoadTestLogin` for a known phone, wait for `LoggedIn`, close.
//! The server's CPU over a round (utime + stime from /proc, 10 ms ticks) divided by the
//! reconnects is the cost of one; 10^6 / cost is how many one core could take per second.
//! The resumed round also counts the handshakes the client saw resume (all of them, unless
//! a thread outran its tickets). Bounded: rounds × reconnects, each with a 10 s timeout.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use prost::Message;
use proto::v1::{client_frame, server_frame, ClientFrame, LoadTestLogin, ServerFrame};

#[derive(Parser)]
#[command(about = "Server CPU per reconnect: full vs resumed TLS handshake, plus login")]
struct Args {
    /// Reconnects per round.
    #[arg(long, default_value_t = 3000)]
    reconnects: usize,
    /// Rounds of each kind (alternating full, resumed); medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Known phones the reconnects log in as, in turn.
    #[arg(long, default_value_t = 100)]
    phones: usize,
    /// Client threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Pin the server's shard to a core.
    #[arg(long)]
    pin: bool,
    /// The server binary (default: `switchboard` beside this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

/// First phone number of the run (`+PHONE_BASE + i`).
const PHONE_BASE: u64 = 15_550_000_000;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = perf::scenario::server_bin(args.server_bin.clone());
    let server = perf::scenario::Server::start_pinned(&bin, 1, true, args.pin)?;
    let cert = engine::tls::dev_cert_path(&server.data.join("tls"));
    let full = engine::tls::client_config_trusting(&cert)?;
    // Every phone logs in once: an account record each, so later logins are known devices.
    round(&server, full.clone(), args.phones, 1, args.phones)?;
    let (mut full_us, mut resumed_us, mut resumed_share) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..args.rounds {
        let (us, _) = round(
            &server,
            full.clone(),
            args.reconnects,
            args.threads,
            args.phones,
        )?;
        full_us.push(us);
        // A fresh ticket cache per round; its first connection per thread may be full.
        let resuming = engine::tls::client_config_resuming(&cert)?;
        let (us, resumed) = round(
            &server,
            resuming,
            args.reconnects,
            args.threads,
            args.phones,
        )?;
        resumed_us.push(us);
        resumed_share.push(resumed as f64 / args.reconnects as f64);
        println!(
            "round {r}: full {:.1} µs, resumed {us:.1} µs per reconnect ({resumed} of {} resumed)",
            full_us[r], args.reconnects
        );
    }
    let (f, r) = (median(&mut full_us), median(&mut resumed_us));
    println!(
        "server CPU per reconnect (connect + TLS handshake + login + close), median of {} rounds:\n\
         full handshake:    {f:.1} µs  ({:.0} per second per core)\n\
         resumed handshake: {r:.1} µs  ({:.0} per second per core; {:.1}% resumed)\n\
         RESULT reconnect full_us={f:.1} resumed_us={r:.1} full_per_core_s={:.0} resumed_per_core_s={:.0}",
        args.rounds,
        1e6 / f,
        1e6 / r,
        100.0 * median(&mut resumed_share),
        1e6 / f,
        1e6 / r,
    );
    Ok(())
}

/// `n` reconnects over `threads` threads with `tls`; returns the server's CPU per reconnect
/// in µs and how many handshakes resumed.
fn round(
    server: &perf::scenario::Server,
    tls: Arc<rustls::ClientConfig>,
    n: usize,
    threads: usize,
    phones: usize,
) -> anyhow::Result<(f64, usize)> {
    let pid = server.pid();
    let addr = server.addr;
    let closes0 = closes(server)?;
    let cpu0 = perf::proc_stats::cpu_us(pid)?;
    let per = n.div_ceil(threads.max(1));
    let handles: Vec<_> = (0..threads.max(1))
        .map(|t| {
            let tls = tls.clone();
            std::thread::spawn(move || -> anyhow::Result<usize> {
                let mut resumed = 0;
                for i in (t * per)..((t + 1) * per).min(n) {
                    let src = Ipv4Addr::new(127, 0, 1, 2 + (i % 200) as u8);
                    let phone = format!("+{}", PHONE_BASE + (i % phones.max(1)) as u64);
                    resumed += usize::from(reconnect(addr, src, tls.clone(), &phone)?);
                }
                Ok(resumed)
            })
        })
        .collect();
    let mut resumed = 0;
    for h in handles {
        resumed += h.join().expect("client thread")?;
    }
    // The server closes each connection after the client's: wait until it has counted
    // them all (its statistics are published on a timer, never ahead of the truth).
    wait_for_closes(server, closes0 + n as u64)?;
    let cpu = perf::proc_stats::cpu_us(pid)?.saturating_sub(cpu0);
    Ok((cpu as f64 / n as f64, resumed))
}

/// Connections the server has closed so far, over its shards (0 without an admin endpoint).
fn closes(server: &perf::scenario::Server) -> anyhow::Result<u64> {
    let Some(admin) = server.admin else {
        return Ok(0);
    };
    let v = perf::soak::admin_stats(admin)?;
    let shards = v["shards"].as_array().cloned().unwrap_or_default();
    Ok(shards.iter().filter_map(|s| s["closes"].as_u64()).sum())
}

/// Polls the server's statistics until it has closed `want` connections (10 s at most).
fn wait_for_closes(server: &perf::scenario::Server, want: u64) -> anyhow::Result<()> {
    if server.admin.is_none() {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while closes(server)? < want {
        if Instant::now() > deadline {
            bail!("the server closed fewer than {want} connections in 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// One reconnect; returns whether its handshake resumed.
fn reconnect(
    addr: SocketAddr,
    src: Ipv4Addr,
    tls: Arc<rustls::ClientConfig>,
    phone: &str,
) -> anyhow::Result<bool> {
    let mut s = perf::idle_clients::connect_from(addr, src)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let mut conn = rustls::ClientConnection::new(tls, name)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut s)?;
    }
    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let mut c = rustls::StreamOwned::new(conn, s);
    let login = ClientFrame {
        kind: Some(client_frame::Kind::LoadTestLogin(LoadTestLogin {
            protocol_version: proto::PROTOCOL_VERSION,
            phone: phone.to_string(),
            secret: perf::scenario::SECRET.as_bytes().to_vec(),
        })),
    };
    let mut out = Vec::new();
    proto::codec::encode_frame(&login, &mut out)?;
    c.write_all(&out)?;
    let mut len = [0u8; 4];
    c.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    c.read_exact(&mut body)?;
    let frame = ServerFrame::decode(body.as_slice())?;
    if !matches!(frame.kind, Some(server_frame::Kind::LoggedIn(_))) {
        bail!("expected LoggedIn for {phone}, got {frame:?}");
    }
    // Reading LoggedIn read the ticket that came before it; close without waiting.
    Ok(resumed)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

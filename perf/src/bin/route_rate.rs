//! `route-rate`: messages per second through the whole 1:1 flow on a real server.
//!
//! Starts `switchboard` (plaintext, load-test logins on) as a child with `--shards N`, logs in
//! P senders and P recipients (for N > 1, each sender's recipient is homed on another shard,
//! so every message crosses the mesh), then runs rounds until `--seconds` pass: every sender
//! writes W messages in one write; every recipient reads its W messages and acks them in one
//! frame; every sender reads W ServerAcks and W DELIVERED receipts. Prints delivered
//! messages/s and server CPU µs per message (utime+stime delta / delivered).
//! Bounded by time and by a per-read timeout; stops the server with SIGTERM.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use proto::v1::{client_frame, server_frame, ClientFrame};

#[derive(Parser)]
#[command(about = "1:1 routing throughput on a real switchboard server")]
struct Args {
    /// Shards for the server.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Sender/recipient pairs (2 connections each).
    #[arg(long, default_value_t = 20)]
    pairs: usize,
    /// Messages per sender per round.
    #[arg(long, default_value_t = 50)]
    window: usize,
    /// How long to run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Pin this client process to this CPU (the server gets the others).
    #[arg(long)]
    client_cpu: Option<usize>,
    /// The server binary (default: `switchboard` beside this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Run the server with `--no-stats` (to measure what per-shard statistics cost).
    #[arg(long)]
    no_stats: bool,
}

struct Conn(TcpStream, Vec<u8>);

impl Conn {
    fn send(&mut self, frames: &[client_frame::Kind]) -> anyhow::Result<()> {
        let mut out = Vec::new();
        for k in frames {
            proto::codec::encode_frame(
                &ClientFrame {
                    kind: Some(k.clone()),
                },
                &mut out,
            )?;
        }
        self.0.write_all(&out)?;
        Ok(())
    }

    fn recv(&mut self) -> anyhow::Result<server_frame::Kind> {
        loop {
            if let Some((payload, used)) = proto::codec::split_frame(&self.1)? {
                let f = proto::codec::decode_server(payload)?;
                self.1.drain(..used);
                return f.kind.context("empty server frame");
            }
            let mut buf = [0u8; 65536];
            let n = self.0.read(&mut buf)?;
            if n == 0 {
                bail!("server closed the connection");
            }
            self.1.extend_from_slice(&buf[..n]);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = perf::scenario::server_bin(args.server_bin.clone());
    let pin = args.client_cpu.is_some();
    let extra: &[&str] = if args.no_stats { &["--no-stats"] } else { &[] };
    let server = perf::scenario::Server::start_with(&bin, args.shards, false, pin, extra)?;
    println!("{}", run(&args, server.addr, server.pid())?);
    Ok(())
}

fn login(addr: SocketAddr, phone: &str) -> anyhow::Result<Conn> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut c = Conn(s, Vec::new());
    c.send(&[client_frame::Kind::LoadTestLogin(
        proto::v1::LoadTestLogin {
            protocol_version: proto::PROTOCOL_VERSION,
            phone: phone.into(),
            secret: perf::scenario::SECRET.as_bytes().to_vec(),
        },
    )])?;
    match c.recv()? {
        server_frame::Kind::LoggedIn(_) => Ok(c),
        other => bail!("login failed: {other:?}"),
    }
}

fn phones(shard: usize, shards: usize, n: usize, from: u64) -> Vec<String> {
    (from..)
        .map(|i| format!("+1444{i:07}"))
        .filter(|p| messaging::state::home::home_of_phone(p, shards).0 == shard)
        .take(n)
        .collect()
}

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn run(args: &Args, addr: SocketAddr, pid: u32) -> anyhow::Result<String> {
    if let Some(cpu) = args.client_cpu {
        pin_to(cpu);
    }
    let n = args.shards;
    let mut senders = Vec::new();
    let mut recipients = Vec::new();
    for i in 0..args.pairs {
        let s_shard = i % n;
        let r_shard = (i + 1) % n; // another shard whenever n > 1
        let s = phones(s_shard, n, 1, 1_000 * i as u64).remove(0);
        let r = phones(r_shard, n, 1, 1_000 * i as u64 + 500).remove(0);
        senders.push((s.clone(), login(addr, &s)?));
        recipients.push((r.clone(), login(addr, &r)?));
    }
    let cpu0 = perf::proc_stats::cpu_us(pid)?;
    let t0 = Instant::now();
    let (mut delivered, mut next_id) = (0u64, 1u64);
    while t0.elapsed() < Duration::from_secs(args.seconds) {
        for ((_, s), (r, _)) in senders.iter_mut().zip(recipients.iter()) {
            let frames: Vec<_> = (0..args.window)
                .map(|k| {
                    client_frame::Kind::Send(proto::v1::SendMessage {
                        to: r.clone(),
                        client_msg_id: next_id + k as u64,
                        body: vec![b'x'; 64].into(),
                        media: None,
                    })
                })
                .collect();
            s.send(&frames)?;
        }
        next_id += args.window as u64;
        for (_, r) in recipients.iter_mut() {
            let mut ids = Vec::with_capacity(args.window);
            while ids.len() < args.window {
                if let server_frame::Kind::Message(m) = r.recv()? {
                    ids.push(m.server_msg_id);
                }
            }
            delivered += ids.len() as u64;
            r.send(&[client_frame::Kind::Ack(proto::v1::Ack {
                server_msg_ids: ids,
            })])?;
        }
        for (_, s) in senders.iter_mut() {
            let (mut acks, mut receipts) = (0, 0);
            while acks < args.window || receipts < args.window {
                match s.recv()? {
                    server_frame::Kind::ServerAck(_) => acks += 1,
                    server_frame::Kind::Receipt(_) => receipts += 1,
                    other => bail!("unexpected frame {other:?}"),
                }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = perf::proc_stats::cpu_us(pid)? - cpu0;
    Ok(format!(
        "route-rate: shards={} pairs={} window={} cross_shard={}\n\
         delivered: {} in {:.2} s = {:.0} msgs/s (full flow: durable ServerAck, delivery, Ack, DELIVERED)\n\
         server CPU: {:.1} µs per delivered message ({} µs total)\n\
         RESULT route shards={} msgs_per_s={:.0} cpu_us_per_msg={:.2}",
        n,
        args.pairs,
        args.window,
        n > 1,
        delivered,
        secs,
        delivered as f64 / secs,
        cpu as f64 / delivered.max(1) as f64,
        cpu,
        n,
        delivered as f64 / secs,
        cpu as f64 / delivered.max(1) as f64,
    ))
}

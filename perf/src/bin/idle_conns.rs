//! `idle-conns`: user-space and kernel bytes per idle connection.
//!
//! Starts a `switchboard` server as a child process, warms it up, reads its RSS, then opens
//! N connections from source addresses spread over 127.0.0.0/8 (each finishes its TLS
//! handshake and one ping/pong, then goes idle), waits, and reads the RSS again.
//! Prints the delta divided by N, and the kernel's TCP memory (from /proc/net/sockstat).
//! Bounded: N connections, each with a 10 s timeout, then the server is stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
#[command(about = "Measure memory per idle connection on a real switchboard server")]
struct Args {
    /// Connections to open (this process must be allowed that many files, plus a few).
    #[arg(long, default_value_t = 15_000)]
    conns: usize,
    /// Plaintext instead of TLS.
    #[arg(long)]
    no_tls: bool,
    /// Shards for the server.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// The server binary (default: `switchboard` beside this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Client threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Source addresses 127.0.0.2 .. 127.0.0.(1+N) spread the connections.
    #[arg(long, default_value_t = 50)]
    source_ips: u8,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = perf::scenario::server_bin(args.server_bin.clone());
    let server = perf::scenario::Server::start_pinned(&bin, args.shards, !args.no_tls, false)?;
    let report = measure(&args, server.addr, &server.data, server.pid())?;
    println!("{report}");
    Ok(())
}

fn measure(
    args: &Args,
    addr: SocketAddr,
    data: &std::path::Path,
    pid: u32,
) -> anyhow::Result<String> {
    let tls = perf::idle_clients::client_tls(data, !args.no_tls)?;
    // Warm up: allocator arenas, executor structures, rustls once.
    let warm =
        perf::idle_clients::open_many(addr, tls.clone(), 200, args.threads, args.source_ips)?;
    drop(warm);
    std::thread::sleep(Duration::from_millis(1500));
    let rss0 = perf::proc_stats::rss_bytes(pid)?;
    let tcp0 = perf::proc_stats::tcp_mem_pages().unwrap_or(0);
    let slab0 = perf::proc_stats::slab_bytes().unwrap_or(0);
    let cpu0 = perf::proc_stats::cpu_us(pid)?;
    let t = Instant::now();
    let conns =
        perf::idle_clients::open_many(addr, tls, args.conns, args.threads, args.source_ips)?;
    let took = t.elapsed();
    // The rate above is the harness's (blocking client threads doing client TLS); what the
    // server pays per connection is its own CPU over the same span.
    let server_cpu_us = perf::proc_stats::cpu_us(pid)?.saturating_sub(cpu0);
    std::thread::sleep(Duration::from_secs(2));
    let rss1 = perf::proc_stats::rss_bytes(pid)?;
    let tcp1 = perf::proc_stats::tcp_mem_pages().unwrap_or(0);
    let slab1 = perf::proc_stats::slab_bytes().unwrap_or(0);
    let n = conns.len() as f64;
    let page = 4096.0;
    let report = format!(
        "idle-conns: mode={} shards={} conns={} source_ips={}\n\
         connect+{}ping rate: {:.0}/s ({:.2} s; the client harness's rate)\n\
         server CPU per connect+{}ping: {:.1} µs\n\
         server RSS before: {} KiB, after: {} KiB\n\
         user-space bytes per idle connection: {:.0}\n\
         kernel TCP buffer memory per connection (sockstat, both ends on loopback): {:.0} bytes\n\
         kernel slab per socket (Slab delta / 2N: each loopback connection is two sockets): {:.0} bytes\n\
         RESULT idle mode={} conns={} user_bytes_per_conn={:.0} kernel_slab_bytes_per_socket={:.0} connect_rate={:.0} server_cpu_us_per_conn={:.1}",
        if args.no_tls { "plaintext" } else { "tls1.3" },
        args.shards,
        conns.len(),
        args.source_ips,
        if args.no_tls { "" } else { "handshake+" },
        n / took.as_secs_f64(),
        took.as_secs_f64(),
        if args.no_tls { "" } else { "handshake+" },
        server_cpu_us as f64 / n,
        rss0 / 1024,
        rss1 / 1024,
        (rss1 as f64 - rss0 as f64) / n,
        (tcp1 as f64 - tcp0 as f64) * page / n,
        (slab1 as f64 - slab0 as f64) / (2.0 * n),
        if args.no_tls { "plaintext" } else { "tls" },
        conns.len(),
        (rss1 as f64 - rss0 as f64) / n,
        (slab1 as f64 - slab0 as f64) / (2.0 * n),
        n / took.as_secs_f64(),
        server_cpu_us as f64 / n,
    );
    drop(conns);
    Ok(report)
}

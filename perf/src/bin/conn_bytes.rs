//! `conn-bytes`: the server's heap per idle connection, counted exactly and by allocation
//! size, to see *what* an idle connection costs (`idle-conns` sees only the RSS total).
//!
//! Runs the switchboard server in this process under a counting global allocator that
//! keeps, for the server's threads only, live bytes and live allocations per size class.
//! Client threads (the connections' other ends, in this process too) mark themselves and
//! are not counted. After a warm-up it opens N connections (TLS handshake or plaintext, one
//! ping/pong each, from source addresses spread over 127.0.0.0/8), waits for them to go
//! idle, and prints the delta per connection: total, and by size class. With the RSS delta
//! beside it, the difference is what the allocator and partly used pages add.
//! Bounded: N connections with 10 s timeouts, then the server stops.

use std::time::Duration;

use clap::Parser;
use perf::counting_alloc::{class_range, not_counted, Counting, Snapshot};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Parser)]
#[command(about = "The server's heap per idle connection, by allocation size")]
struct Args {
    /// Connections to open (both ends live in this process: 2 files each).
    #[arg(long, default_value_t = 8_000)]
    conns: usize,
    /// Plaintext instead of TLS.
    #[arg(long)]
    no_tls: bool,
    /// Client threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Source addresses 127.0.0.2 .. 127.0.0.(1+N) spread the connections.
    #[arg(long, default_value_t = 20)]
    source_ips: u8,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    not_counted();
    let data = std::env::temp_dir().join(format!("sb-conn-bytes-{}", std::process::id()));
    let mut cli = vec![
        "switchboard",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--no-pin",
        "--no-admin",
        // Idle connections that never log in, from a few source addresses: far past the
        // per-prefix pre-login cap a real box keeps (64), which would close them.
        "--prelogin-conns-per-prefix",
        "1000000",
    ];
    if args.no_tls {
        cli.push("--no-tls");
    }
    let cli = <shards::config::Cli as Parser>::parse_from(
        cli.into_iter()
            .map(String::from)
            .chain(["--data-dir".into(), data.display().to_string()]),
    );
    let cfg = shards::config::ServerConfig::from_cli(cli)?;
    let rt = shards::server::start(&cfg)?;
    let addr = rt.local_addr();
    let tls = perf::idle_clients::client_tls(&data, !args.no_tls)?;
    let open = |n| {
        perf::idle_clients::open_many_with(
            addr,
            tls.clone(),
            n,
            args.threads,
            args.source_ips,
            not_counted,
        )
    };
    let warm = open(200)?;
    drop(warm);
    std::thread::sleep(Duration::from_millis(1500));
    let pid = std::process::id();
    let before = Snapshot::take();
    let rss0 = perf::proc_stats::rss_bytes(pid)?;
    let conns = open(args.conns)?;
    std::thread::sleep(Duration::from_secs(2));
    let after = Snapshot::take();
    let rss1 = perf::proc_stats::rss_bytes(pid)?;
    let n = conns.len() as f64;
    println!(
        "conn-bytes: mode={} shards=1 conns={} (server in this process; client threads not counted)",
        if args.no_tls { "plaintext" } else { "tls1.3" },
        conns.len()
    );
    println!(
        "server heap per idle connection: {:.0} B live (requested sizes, before allocator headers)",
        (after.bytes - before.bytes) as f64 / n
    );
    println!(
        "process RSS per connection: {:.0} B (includes the client ends' own few bytes, allocator headers and partly used pages)",
        (rss1 as f64 - rss0 as f64) / n
    );
    println!("live allocations per connection by requested size:");
    let mut total = 0.0;
    for (class, (a, b)) in before.by_class.iter().zip(&after.by_class).enumerate() {
        let per = (b - a) as f64 / n;
        if per.abs() < 0.05 {
            continue;
        }
        total += per;
        println!("  {:>9} B: {per:+.2}", class_range(class));
    }
    println!("  total: {total:.2} allocations per connection");
    println!(
        "RESULT conn-bytes mode={} conns={} heap_bytes_per_conn={:.0} rss_bytes_per_conn={:.0} allocs_per_conn={:.2}",
        if args.no_tls { "plaintext" } else { "tls" },
        conns.len(),
        (after.bytes - before.bytes) as f64 / n,
        (rss1 as f64 - rss0 as f64) / n,
        total
    );
    drop(conns);
    rt.stop();
    rt.join()?;
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

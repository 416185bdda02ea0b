//! `idle-conns`: user-space and kernel bytes per idle connection.
//!
//! Starts a `switchboard` server as a child process, warms it up, reads its RSS, then opens
//! N connections from source addresses spread over 127.0.0.0/8 (each finishes its TLS
//! handshake and one ping/pong, then goes idle), waits, and reads the RSS again.
//! Prints the delta divided by N, and the kernel's TCP memory (from /proc/net/sockstat).
//! Bounded: N connections, each with a 10 s timeout, then the server is stopped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use prost::Message;
use proto::v1::{client_frame, ClientFrame, Ping};

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

type Conn = Box<dyn ReadWriteSend>;
trait ReadWriteSend: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWriteSend for T {}

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
    let tls = if args.no_tls {
        None
    } else {
        Some(engine::tls::client_config_trusting(
            &engine::tls::dev_cert_path(&data.join("tls")),
        )?)
    };
    // Warm up: allocator arenas, executor structures, rustls once.
    let warm = open_many(addr, tls.clone(), 200, args.threads, args.source_ips)?;
    drop(warm);
    std::thread::sleep(Duration::from_millis(1500));
    let rss0 = perf::proc_stats::rss_bytes(pid)?;
    let tcp0 = perf::proc_stats::tcp_mem_pages().unwrap_or(0);
    let slab0 = perf::proc_stats::slab_bytes().unwrap_or(0);
    let t = Instant::now();
    let conns = open_many(addr, tls, args.conns, args.threads, args.source_ips)?;
    let took = t.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let rss1 = perf::proc_stats::rss_bytes(pid)?;
    let tcp1 = perf::proc_stats::tcp_mem_pages().unwrap_or(0);
    let slab1 = perf::proc_stats::slab_bytes().unwrap_or(0);
    let n = conns.len() as f64;
    let page = 4096.0;
    let report = format!(
        "idle-conns: mode={} shards={} conns={} source_ips={}\n\
         connect+{}ping rate: {:.0}/s ({:.2} s)\n\
         server RSS before: {} KiB, after: {} KiB\n\
         user-space bytes per idle connection: {:.0}\n\
         kernel TCP buffer memory per connection (sockstat, both ends on loopback): {:.0} bytes\n\
         kernel slab per socket (Slab delta / 2N: each loopback connection is two sockets): {:.0} bytes\n\
         RESULT idle mode={} conns={} user_bytes_per_conn={:.0} kernel_slab_bytes_per_socket={:.0} connect_rate={:.0}",
        if args.no_tls { "plaintext" } else { "tls1.3" },
        args.shards,
        conns.len(),
        args.source_ips,
        if args.no_tls { "" } else { "handshake+" },
        n / took.as_secs_f64(),
        took.as_secs_f64(),
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
    );
    drop(conns);
    Ok(report)
}

fn open_many(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    n: usize,
    threads: usize,
    source_ips: u8,
) -> anyhow::Result<Vec<Conn>> {
    let per = n.div_ceil(threads.max(1));
    let handles: Vec<_> = (0..threads.max(1))
        .map(|t| {
            let tls = tls.clone();
            std::thread::spawn(move || -> anyhow::Result<Vec<Conn>> {
                let mut v = Vec::with_capacity(per);
                for i in (t * per)..((t + 1) * per).min(n) {
                    let src = Ipv4Addr::new(127, 0, 0, 2 + (i % source_ips.max(1) as usize) as u8);
                    v.push(open_one(addr, src, tls.clone())?);
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

fn open_one(
    addr: SocketAddr,
    src: Ipv4Addr,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> anyhow::Result<Conn> {
    let s = connect_from(addr, src)?;
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
    let ping = ClientFrame {
        kind: Some(client_frame::Kind::Ping(Ping { nonce: 7 })),
    };
    let mut out = Vec::new();
    proto::codec::encode_frame(&ping, &mut out)?;
    c.write_all(&out)?;
    let mut len = [0u8; 4];
    c.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    c.read_exact(&mut body)?;
    let frame = proto::v1::ServerFrame::decode(body.as_slice())?;
    if !matches!(frame.kind, Some(proto::v1::server_frame::Kind::Pong(_))) {
        bail!("expected pong, got {frame:?}");
    }
    Ok(c)
}

fn connect_from(addr: SocketAddr, src: Ipv4Addr) -> anyhow::Result<TcpStream> {
    // std has no bind-before-connect; do it with libc, then hand the fd to std.
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2); checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: we own fd; TcpStream closes it on drop (also on the error paths below).
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let bind = sockaddr_in(SocketAddrV4::new(src, 0));
    let SocketAddr::V4(dst) = addr else {
        bail!("IPv4 only")
    };
    let dst = sockaddr_in(dst);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: valid fd and sockaddr_in pointers of the stated length.
    unsafe {
        if libc::bind(fd, &bind as *const _ as *const libc::sockaddr, len) != 0 {
            bail!("bind {src}: {}", std::io::Error::last_os_error());
        }
        if libc::connect(fd, &dst as *const _ as *const libc::sockaddr, len) != 0 {
            bail!(
                "connect {addr} from {src}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(stream)
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

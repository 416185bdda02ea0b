//! `tls-session-bytes`: heap bytes one idle server TLS session keeps after its handshake.
//!
//! Runs N TLS 1.3 handshakes in memory (no sockets) between rustls clients and the engine's
//! server session, each followed by one small request and reply, drops the clients and
//! counts the heap bytes and allocations still live, per session. A counting global
//! allocator gives exact numbers, free of the allocator's fragmentation that an RSS delta
//! also sees (compare with `idle-conns`). `--buffered` measures rustls' buffered
//! `ServerConnection` instead, the engine's previous choice.

use std::io::{Read, Write};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use engine::tls::session::TlsSession;

#[global_allocator]
static GLOBAL: perf::counting_alloc::Counting = perf::counting_alloc::Counting;

#[derive(Parser)]
#[command(about = "Heap bytes per idle server TLS session, counted exactly")]
struct Args {
    /// Sessions to keep.
    #[arg(long, default_value_t = 2_000)]
    sessions: usize,
    /// Measure rustls' buffered ServerConnection instead of the engine's TlsSession.
    #[arg(long)]
    buffered: bool,
    /// Have the client offer only this suite: aes128, aes256 or chacha (default: rustls'
    /// client order, AES-256-GCM first on CPUs with AES instructions).
    #[arg(long)]
    suite: Option<String>,
}

/// One server session under test.
enum Server {
    Unbuffered(Box<TlsSession>),
    Buffered(Box<rustls::ServerConnection>),
}

impl Server {
    /// Feeds `tls` bytes in; returns plaintext and the TLS bytes to send back.
    fn exchange(&mut self, tls: &mut [u8], reply: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let (mut plain, mut wire) = (Vec::new(), Vec::new());
        match self {
            Server::Unbuffered(s) => {
                let mut buf = vec![0u8; 64 * 1024];
                let held = s.pending_in_len();
                buf[held..held + tls.len()].copy_from_slice(tls);
                let held = s.take_pending_in(&mut buf);
                s.read(&mut buf[..held + tls.len()], &mut plain, &mut wire)?;
                if !reply.is_empty() {
                    s.encrypt(reply, &mut wire)?;
                }
            }
            Server::Buffered(s) => {
                let mut input = &tls[..];
                while !input.is_empty() {
                    s.read_tls(&mut input)?;
                    s.process_new_packets()?;
                }
                let mut chunk = [0u8; 4096];
                while let Ok(n) = s.reader().read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    plain.extend_from_slice(&chunk[..n]);
                }
                s.writer().write_all(reply)?;
                while s.wants_write() {
                    s.write_tls(&mut wire)?;
                }
            }
        }
        Ok((plain, wire))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("sb-tls-bytes-{}", std::process::id()));
    let server_cfg = engine::tls::server_config(&engine::tls::CertSource::DevInDir(dir.clone()))?;
    let mut client_cfg = engine::tls::client_config_trusting(&engine::tls::dev_cert_path(&dir))?;
    if let Some(suite) = &args.suite {
        client_cfg = client_offering(&dir, suite)?;
    }
    // Warm up lazily initialised state (ring's CPU features, config caches).
    drop(session(&args, &server_cfg, &client_cfg)?);
    let mut kept = Vec::with_capacity(args.sessions);
    let (bytes0, allocs0) = live();
    for _ in 0..args.sessions {
        kept.push(session(&args, &server_cfg, &client_cfg)?);
    }
    let (bytes1, allocs1) = live();
    let n = args.sessions as f64;
    println!(
        "tls-session-bytes: {} sessions={} suite={} (ALPN, TLS 1.3, one request/reply each)\n\
         live heap bytes per idle session: {:.0} in {:.1} allocations (plus the allocator's \
         own headers, ~16 bytes each)\n\
         size_of session box: {} bytes",
        if args.buffered {
            "rustls buffered ServerConnection"
        } else {
            "engine TlsSession (unbuffered)"
        },
        args.sessions,
        args.suite.as_deref().unwrap_or("client default"),
        (bytes1 - bytes0) as f64 / n,
        (allocs1 - allocs0) as f64 / n,
        if args.buffered {
            std::mem::size_of::<rustls::ServerConnection>()
        } else {
            std::mem::size_of::<TlsSession>()
        },
    );
    drop(kept);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A client like the engine's, offering one cipher suite only.
fn client_offering(
    dir: &std::path::Path,
    suite: &str,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::crypto::ring::cipher_suite as cs;
    let suite = match suite {
        "aes128" => cs::TLS13_AES_128_GCM_SHA256,
        "aes256" => cs::TLS13_AES_256_GCM_SHA384,
        "chacha" => cs::TLS13_CHACHA20_POLY1305_SHA256,
        other => bail!("unknown suite {other} (aes128, aes256, chacha)"),
    };
    Ok(engine::tls::client_config_offering(
        &engine::tls::dev_cert_path(dir),
        &[suite],
    )?)
}

fn live() -> (isize, isize) {
    let now = perf::counting_alloc::Snapshot::take();
    (now.bytes, now.allocations())
}

/// One handshake plus one request/reply; returns the idle server session.
fn session(
    args: &Args,
    server_cfg: &Arc<rustls::ServerConfig>,
    client_cfg: &Arc<rustls::ClientConfig>,
) -> anyhow::Result<Server> {
    let mut server = if args.buffered {
        Server::Buffered(Box::new(rustls::ServerConnection::new(server_cfg.clone())?))
    } else {
        Server::Unbuffered(Box::new(TlsSession::new(server_cfg.clone())?))
    };
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let mut client = rustls::ClientConnection::new(client_cfg.clone(), name)?;
    let request = b"ping-ping-ping-ping";
    client.writer().write_all(request)?;
    let mut got = Vec::new();
    let mut replied = false;
    for _ in 0..8 {
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server)?;
        }
        let reply: &[u8] = if got == request && !replied {
            b"pong"
        } else {
            b""
        };
        let (plain, wire) = server.exchange(&mut to_server, reply)?;
        replied |= !reply.is_empty();
        got.extend_from_slice(&plain);
        let mut input = &wire[..];
        while !input.is_empty() {
            client.read_tls(&mut input)?;
            client.process_new_packets().context("client")?;
        }
        if replied {
            let mut pong = [0u8; 4];
            client.reader().read_exact(&mut pong)?;
            return Ok(server);
        }
    }
    bail!("handshake did not settle (server got {} bytes)", got.len())
}

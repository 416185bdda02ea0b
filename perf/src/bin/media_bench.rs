//! `media-bench`: media upload and download throughput and server CPU per MB, beside nginx
//! serving the same files (issue 25's anchor for plain HTTP file serving), in one run.
//!
//! Starts `switchboard` (TLS, 1 shard, `--media-listen`) as a child, logs in one user with
//! the load-test secret, asks for a slot per object, then times two phases with T client
//! threads (one keep-alive HTTPS connection each): every object PUT once, then every object
//! GET `--gets` times (download tokens signed with the data directory's key). For each phase
//! it prints payload MB/s and the server's CPU seconds per MB (utime+stime of the whole
//! process, and of its `media` thread alone). Then, if `nginx` is on the PATH (the bench may
//! `apt-get install -y nginx` first), the same objects are PUT (WebDAV module) and GET over
//! HTTPS with the same certificate against one nginx worker, measured the same way.
//! Bounded by time: every request has a deadline; children are stopped at the end.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use messaging::media::token::{hex, MediaKey, Purpose, Token};
use perf::proc_stats::{cpu_us, sample_tree};

#[derive(Parser)]
#[command(about = "Media upload/download MB/s and server CPU per MB, beside nginx")]
struct Args {
    /// Objects (each uploaded once).
    #[arg(long, default_value_t = 200)]
    objects: usize,
    /// Bytes per object.
    #[arg(long, default_value_t = 200 * 1024)]
    object_bytes: usize,
    /// Downloads of each object.
    #[arg(long, default_value_t = 4)]
    gets: usize,
    /// Client threads (one connection each).
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// The server binary (default: `switchboard` beside this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Skip nginx even if it is installed.
    #[arg(long)]
    no_nginx: bool,
}

/// One phase's result.
struct Phase {
    bytes: u64,
    wall: Duration,
    server_cpu_us: u64,
    thread_cpu_us: Option<u64>,
}

impl Phase {
    fn line(&self, who: &str, what: &str) -> String {
        let mb = self.bytes as f64 / 1e6;
        let per_mb = |us: u64| us as f64 / 1e6 / mb * 1e3;
        let thread = self.thread_cpu_us.map_or(String::new(), |t| {
            format!(", media thread {:.2} ms/MB", per_mb(t))
        });
        format!(
            "{who:<12} {what:<9} {:>8.1} MB/s   server CPU {:.2} ms/MB{thread}   ({mb:.0} MB in {:.2} s)",
            mb / self.wall.as_secs_f64(),
            per_mb(self.server_cpu_us),
            self.wall.as_secs_f64()
        )
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let dir = std::env::temp_dir().join(format!("media-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let objects: Vec<Vec<u8>> = (0..a.objects)
        .map(|i| {
            (0..a.object_bytes)
                .map(|j| (j as u32 ^ (i as u32).wrapping_mul(2654435761)) as u8)
                .collect()
        })
        .collect();
    let shas: Vec<[u8; 32]> = objects.iter().map(|o| sha256(o)).collect();

    let (mut child, addr, media) = start_server(&a, &dir)?;
    let cert = engine::tls::dev_cert_path(&shards::server::tls_dir(&dir));
    let urls = slots(addr, &cert, &objects, &shas)?;
    let key: [u8; 32] = std::fs::read(dir.join("media/key"))?
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad key"))?;
    let key = MediaKey::new(&key);
    let base = format!("https://{media}");
    let gets: Vec<String> = shas
        .iter()
        .zip(&objects)
        .map(|(sha, o)| {
            let t = key.sign(&Token {
                purpose: Purpose::Download,
                user: 15550009999,
                sha256: *sha,
                size: o.len() as u64,
                expires_at_ms: u64::MAX,
            });
            format!("{base}/m/{}?t={t}", hex(sha))
        })
        .collect();
    let pid = child.id();
    let thread = media_thread(pid);
    let up = phase(&a, pid, thread, || put_all(&a, &cert, &urls, &objects))?;
    let down = phase(&a, pid, thread, || {
        get_all(&a, &cert, &gets, a.object_bytes)
    })?;
    println!("{}", up.line("switchboard", "upload"));
    println!("{}", down.line("switchboard", "download"));
    stop(&mut child);

    if !a.no_nginx {
        match nginx(&a, &dir, &cert, &objects, &shas) {
            Ok(Some((up, down))) => {
                println!("{}", up.line("nginx", "upload"));
                println!("{}", down.line("nginx", "download"));
            }
            Ok(None) => println!("nginx: not installed (apt-get install -y nginx), skipped"),
            Err(e) => println!("nginx: {e:#}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
    out
}

fn start_server(
    a: &Args,
    dir: &Path,
) -> anyhow::Result<(std::process::Child, SocketAddr, SocketAddr)> {
    let bin = match &a.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("switchboard"),
    };
    let mut child = std::process::Command::new(&bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "1",
            "--no-admin",
            "--no-pin",
        ])
        .args([
            "--media-listen",
            "127.0.0.1:0",
            "--media-uploads-per-user-max",
            "64",
        ])
        .arg("--data-dir")
        .arg(dir)
        .env(shards::config::LOAD_TEST_SECRET_ENV, "bench-secret")
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut media = None;
    let addr = loop {
        let Some(Ok(line)) = lines.next() else {
            bail!("switchboard exited before listening");
        };
        if let Some(m) = shards::server::media_listening_addr(&line) {
            media = Some(m);
        }
        if let Some(a) = shards::server::listening_addr(&line) {
            break a;
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let media = media.context("no media listening line")?;
    Ok((child, addr, media))
}

fn slots(
    addr: SocketAddr,
    cert: &Path,
    objects: &[Vec<u8>],
    shas: &[[u8; 32]],
) -> anyhow::Result<Vec<String>> {
    use proto::v1::server_frame::Kind;
    let wait = Duration::from_secs(10);
    let tls = tools::net::TlsClient::trusting(cert, "localhost")?;
    let mut c = tools::client::Client::connect(addr, Some(&tls), wait)?;
    c.load_test_login("+15550009998", b"bench-secret", wait)?;
    let mut urls = Vec::new();
    for (i, (o, sha)) in objects.iter().zip(shas).enumerate() {
        let id = i as u64 + 1;
        c.send(proto::v1::MediaSlotRequest {
            client_req_id: id,
            size: o.len() as u64,
            mime: "image/jpeg".into(),
            sha256: sha.to_vec(),
        })?;
        let url = c.wait_for(
            wait,
            "slot",
            |k| match k {
                Kind::MediaSlot(s) if s.client_req_id == id => Some(s.upload_url.clone()),
                _ => None,
            },
            |_| true,
            |_| {},
        )?;
        urls.push(url);
    }
    Ok(urls)
}

/// The task id of `pid`'s thread named `media`.
fn media_thread(pid: u32) -> Option<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .find_map(|e| {
            let tid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
            (comm.trim() == "media").then_some(tid)
        })
}

fn thread_cpu_us(pid: u32, tid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Some((ticks(11) + ticks(12)) * 1_000_000 / perf::proc_stats::clock_ticks_per_second())
}

fn phase(
    _a: &Args,
    pid: u32,
    thread: Option<u32>,
    run: impl FnOnce() -> anyhow::Result<u64>,
) -> anyhow::Result<Phase> {
    let cpu0 = sample_tree(pid).cpu_us();
    let t0 = thread.and_then(|t| thread_cpu_us(pid, t));
    let start = Instant::now();
    let bytes = run()?;
    let wall = start.elapsed();
    let server_cpu_us = sample_tree(pid).cpu_us() - cpu0;
    let thread_cpu_us = match (thread, t0) {
        (Some(t), Some(t0)) => thread_cpu_us(pid, t).map(|t1| t1 - t0),
        _ => None,
    };
    Ok(Phase {
        bytes,
        wall,
        server_cpu_us,
        thread_cpu_us,
    })
}

fn agent(cert: &Path) -> anyhow::Result<ureq::Agent> {
    let pem = std::fs::read(cert)?;
    let roots = ureq::tls::parse_pem(&pem)
        .filter_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
        .build();
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .new_agent())
}

/// Runs `each(agent, i)` for i in 0..n over the client threads; the bytes they moved.
fn spread(
    a: &Args,
    cert: &Path,
    n: usize,
    each: impl Fn(&ureq::Agent, usize) -> anyhow::Result<u64> + Sync,
) -> anyhow::Result<u64> {
    let each = &each;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..a.threads)
            .map(|t| {
                s.spawn(move || -> anyhow::Result<u64> {
                    let agent = agent(cert)?;
                    let mut bytes = 0;
                    for i in (t..n).step_by(a.threads) {
                        bytes += each(&agent, i)?;
                    }
                    Ok(bytes)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

fn put_all(a: &Args, cert: &Path, urls: &[String], objects: &[Vec<u8>]) -> anyhow::Result<u64> {
    spread(a, cert, urls.len(), |agent, i| {
        let r = agent.put(&urls[i]).send(&objects[i][..])?;
        if !r.status().is_success() {
            bail!("PUT {}: {}", urls[i], r.status());
        }
        Ok(objects[i].len() as u64)
    })
}

fn get_all(a: &Args, cert: &Path, urls: &[String], size: usize) -> anyhow::Result<u64> {
    spread(a, cert, urls.len() * a.gets, |agent, i| {
        let url = &urls[i % urls.len()];
        let mut r = agent.get(url).call()?;
        let body = r.body_mut().with_config().limit(u64::MAX).read_to_vec()?;
        if r.status() != 200 || body.len() != size {
            bail!("GET {url}: {} ({} bytes)", r.status(), body.len());
        }
        Ok(body.len() as u64)
    })
}

fn stop(child: &mut std::process::Child) {
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

/// The same two phases against one nginx worker (WebDAV PUT, static GET, same certificate).
fn nginx(
    a: &Args,
    dir: &Path,
    cert: &Path,
    objects: &[Vec<u8>],
    shas: &[[u8; 32]],
) -> anyhow::Result<Option<(Phase, Phase)>> {
    let Some(bin) = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .find(|p| Path::new(p).exists())
    else {
        return Ok(None);
    };
    let root = dir.join("nginx");
    std::fs::create_dir_all(root.join("www/m"))?;
    std::fs::create_dir_all(root.join("tmp"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let key = cert.with_file_name(engine::tls::DEV_KEY_FILE);
    let conf = format!(
        "worker_processes 1; daemon off; user root; pid {r}/nginx.pid; error_log {r}/error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; client_body_temp_path {r}/tmp;
  server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {c}; ssl_certificate_key {k};
    ssl_protocols TLSv1.3; root {r}/www; client_max_body_size 100m;
    location /m/ {{ dav_methods PUT; }} }} }}\n",
        r = root.display(),
        c = cert.display(),
        k = key.display()
    );
    std::fs::write(root.join("nginx.conf"), conf)?;
    let mut child = std::process::Command::new(bin)
        .arg("-p")
        .arg(&root)
        .arg("-c")
        .arg(root.join("nginx.conf"))
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            stop(&mut child);
            bail!("nginx did not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let urls: Vec<String> = shas
        .iter()
        .map(|s| format!("https://127.0.0.1:{port}/m/{}", hex(s)))
        .collect();
    let pid = child.id();
    let _ = cpu_us(pid);
    let up = phase(a, pid, None, || put_all(a, cert, &urls, objects));
    let down = phase(a, pid, None, || get_all(a, cert, &urls, a.object_bytes));
    stop(&mut child);
    Ok(Some((up?, down?)))
}

//! The media service (issue 25): uploads and downloads of photos, voice notes and videos
//! over HTTP(S), on its own thread, off the shard threads.
//!
//! One thread runs a current-thread tokio runtime with hyper (HTTP/1.1) and, when the
//! server has TLS, tokio-rustls with the server's certificate. It owns the media directory
//! under the data directory: the signing key (`key.rs`, shared read-only with the shards,
//! which sign slots and download tokens with it; in a cluster the cluster's one key,
//! `cluster/media_key.rs`, with the file's key still opening tokens signed before), the objects (`store.rs`), the budgets
//! (`limits.rs`) and the retention sweep. It must not touch shard state; the shards never
//! touch media files. Counters (`counters.rs`) are atomics shard 0 reports.
//!
//! Layout: `http.rs` (the two requests), `range.rs` (the `Range` header), `store.rs`
//! (content-addressed files, crash-safe commit), `limits.rs`, `counters.rs`, `key.rs`,
//! `stall.rs` (the write deadline for peers that stop reading).

pub mod counters;
pub mod http;
pub mod key;
pub mod limits;
pub mod range;
pub mod stall;
pub mod store;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use messaging::media::token::MediaKey;

use crate::config::media::MediaConfig;
use counters::{bump, MediaCounters};
use http::Shared;
use store::Store;

/// Connections the media service holds at once; more are closed at accept and counted.
pub const MEDIA_CONNECTIONS_MAX: usize = 4096;
/// Time a client gets to finish its TLS handshake.
pub const MEDIA_HANDSHAKE_MS: u64 = 10_000;
/// Time a client gets to send a request's headers (slowloris before the body).
pub const MEDIA_HEADER_READ_MS: u64 = 10_000;
/// How often the retention sweep runs (and once at start).
pub const MEDIA_SWEEP_MS: u64 = 3_600_000;
/// Back-off after a failed accept (out of descriptors), before trying again.
const ACCEPT_RETRY_MS: u64 = 100;

/// The running service; dropping it stops the service (its listener closes, requests in
/// progress are dropped: an upload not yet answered leaves only a temp file).
#[derive(Debug)]
pub struct MediaService {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it did (reported by shard 0).
    pub counters: Arc<MediaCounters>,
    stop: Arc<tokio::sync::Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for MediaService {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The key in `<data_dir>/media/`, made on first use: loaded before the shards start, which
/// sign with it.
pub fn load_key(data_dir: &Path) -> std::io::Result<MediaKey> {
    load_key_bytes(data_dir).map(|b| MediaKey::new(&b))
}

/// [`load_key`], the key's bytes.
pub fn load_key_bytes(
    data_dir: &Path,
) -> std::io::Result<[u8; messaging::media::token::MEDIA_KEY_BYTES]> {
    let dir = data_dir.join(store::MEDIA_DIR);
    std::fs::create_dir_all(&dir)?;
    key::load_or_create_bytes(&dir)
}

/// Opens the store, binds `cfg.listen` and starts the media thread, verifying tokens with
/// `key` (and `earlier_key`, the data directory's own, when a cluster's key replaced it).
pub fn start(
    cfg: &MediaConfig,
    data_dir: &Path,
    tls: Option<Arc<rustls::ServerConfig>>,
    key: MediaKey,
    earlier_key: Option<MediaKey>,
) -> std::io::Result<MediaService> {
    let store = Store::open(&data_dir.join(store::MEDIA_DIR))?;
    let found = store.scan()?;
    let stored: u64 = found.iter().map(|(_, f)| f.bytes).sum();
    let counters = Arc::new(MediaCounters::default());
    counters.objects.store(found.len() as u64, Relaxed);
    counters.stored_bytes.store(stored, Relaxed);
    let limits = limits::Limits {
        user_bytes_per_day: cfg.user_bytes_per_day,
        uploads_per_user_max: cfg.uploads_per_user_max,
        disk_bytes_max: cfg.disk_bytes_max,
    };
    let listener = std::net::TcpListener::bind(cfg.listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let acceptor = tls.map(|t| {
        // The chat listener's ALPN names our protocol; HTTP clients offer http/1.1.
        let mut t = (*t).clone();
        t.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(t))
    });
    let retention_ms = cfg.retention_ms;
    let object_bytes_max = cfg.object_bytes_max;
    let upload_bytes_per_s_min = cfg.upload_bytes_per_s_min;
    let upload_grace_ms = cfg.upload_grace_ms;
    let write_stall_ms = cfg.write_stall_ms;
    let cpu = cfg.cpu;
    let thread_counters = counters.clone();
    let stop = Arc::new(tokio::sync::Notify::new());
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("media".into())
        .spawn(move || {
            if let Some(id) = cpu {
                if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                    tracing::warn!(cpu = id, "media: cannot pin the media thread to its CPU");
                }
            }
            let sh = Rc::new(Shared {
                store,
                key,
                earlier_key,
                budgets: RefCell::new(limits::Budgets::new(limits, stored)),
                counters: thread_counters,
                object_bytes_max,
                upload_bytes_per_s_min,
                upload_grace_ms,
                write_stall_ms,
                next_temp: Cell::new(0),
            });
            run(sh, listener, acceptor, retention_ms, &thread_stop);
        })?;
    Ok(MediaService {
        addr,
        counters,
        stop,
        thread: Some(thread),
    })
}

fn run(
    sh: Rc<Shared>,
    listener: std::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    retention_ms: u64,
    stop: &tokio::sync::Notify,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return tracing::error!(error = %e, "media: no runtime; media is off"),
    };
    let local = tokio::task::LocalSet::new();
    let serve = async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => return tracing::error!(error = %e, "media: listener; media is off"),
        };
        tokio::task::spawn_local(sweep_forever(sh.clone(), retention_ms));
        let open = Rc::new(Cell::new(0usize));
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "media: accept failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                    continue;
                }
            };
            if open.get() >= MEDIA_CONNECTIONS_MAX {
                bump(&sh.counters.connections_refused);
                continue;
            }
            open.set(open.get() + 1);
            let (sh, acceptor, open) = (sh.clone(), acceptor.clone(), open.clone());
            tokio::task::spawn_local(async move {
                serve(sh, tcp, acceptor).await;
                open.set(open.get() - 1);
            });
        }
    };
    // Everything spawned on the LocalSet is dropped with it when `stop` fires.
    local.block_on(&rt, futures_lite::future::or(serve, stop.notified()));
}

async fn serve(
    sh: Rc<Shared>,
    tcp: tokio::net::TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) {
    let _ = tcp.set_nodelay(true);
    let stall = Duration::from_millis(sh.write_stall_ms);
    let counters = sh.counters.clone();
    let tcp = stall::WriteDeadline::new(tcp, stall, move || bump(&counters.write_stalls));
    match acceptor {
        None => serve_http(sh, TokioIo::new(tcp)).await,
        Some(a) => {
            let handshake = Duration::from_millis(MEDIA_HANDSHAKE_MS);
            if let Ok(Ok(tls)) = tokio::time::timeout(handshake, a.accept(tcp)).await {
                serve_http(sh, TokioIo::new(tls)).await;
            }
        }
    }
}

async fn serve_http<IO>(sh: Rc<Shared>, io: IO)
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    let service = hyper::service::service_fn(move |req| http::handle(sh.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(MEDIA_HEADER_READ_MS))
        .serve_connection(io, service)
        .await;
}

/// Deletes objects older than `retention_ms`, now and every [`MEDIA_SWEEP_MS`].
async fn sweep_forever(sh: Rc<Shared>, retention_ms: u64) {
    loop {
        let store = sh.store.clone();
        let scanned = tokio::task::spawn_blocking(move || {
            let mut deleted = Vec::new();
            for (path, f) in store.scan()? {
                if f.age_ms >= retention_ms && std::fs::remove_file(&path).is_ok() {
                    deleted.push(f.bytes);
                }
            }
            std::io::Result::Ok(deleted)
        })
        .await;
        match scanned {
            Ok(Ok(deleted)) => {
                let mut b = sh.budgets.borrow_mut();
                for bytes in deleted {
                    b.deleted(bytes);
                    bump(&sh.counters.expired);
                    counters::add(&sh.counters.objects, u64::MAX); // minus one
                }
                sh.counters.stored_bytes.store(b.stored_bytes(), Relaxed);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "media: retention sweep failed"),
            Err(e) => tracing::warn!(error = %e, "media: retention sweep failed"),
        }
        tokio::time::sleep(Duration::from_millis(MEDIA_SWEEP_MS)).await;
    }
}

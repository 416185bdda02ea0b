//! The two requests the media service answers, on the media thread:
//! - `PUT /m/<sha256 hex>?t=<upload token>`: the object's bytes, streamed to a temp file
//!   (`store.rs`) with its SHA-256 computed on the way; never more than the slot's size is
//!   read, and the upload must finish before its slow-upload deadline (a grace period,
//!   `MEDIA_UPLOAD_GRACE_MS` by default, plus its size at the slowest rate allowed). Answers
//!   201 (stored), 200 (already stored: nothing written, its retention restarted), or an
//!   error. An answer given before the body is read drains at most 1 MiB of it first
//!   ([`MEDIA_DRAIN_BYTES_MAX`]), unless the client sent `Expect: 100-continue`.
//! - `GET`/`HEAD /m/<sha256 hex>?t=<download token>`: the object, or one `Range` of it.
//!
//! Every refusal carries its `ErrorCode` number in the `x-switchboard-error` header (30-39,
//! `proto/proto/switchboard.proto`) and a one-line reason in the body, and is counted.
//! Tokens (`messaging::media::token`) are checked before anything touches the disk.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use hyper::{Method, Request, Response, StatusCode};
use messaging::media::token::{MediaKey, Purpose, Token};
use proto::v1::ErrorCode;

use super::counters::{bump, MediaCounters};
use super::limits::{Budgets, Refusal};
use super::range::{self, Span};
use super::store::{is_object_name, Store};

/// Bytes a download reads from the file per body chunk.
pub const MEDIA_READ_CHUNK_BYTES: usize = 64 * 1024;
/// Most bytes of a refused upload's body read (and dropped) so its client hears the answer.
pub const MEDIA_DRAIN_BYTES_MAX: usize = 1024 * 1024;
/// Longest time spent reading a refused upload's body.
pub const MEDIA_DRAIN_MS: u64 = 5_000;
/// The header that carries the `ErrorCode` number of a refusal.
pub const ERROR_HEADER: &str = "x-switchboard-error";

/// What every request on the media thread shares.
#[derive(Debug)]
pub struct Shared {
    /// Where objects live.
    pub store: Store,
    /// Verifies tokens.
    pub key: MediaKey,
    /// The data directory's own key when a cluster's key is used instead
    /// (`cluster/media_key.rs`): tokens this box signed before it joined still open.
    pub earlier_key: Option<MediaKey>,
    /// Per-user and disk budgets.
    pub budgets: RefCell<Budgets>,
    /// Counters reported by shard 0.
    pub counters: Arc<MediaCounters>,
    /// Largest object.
    pub object_bytes_max: u64,
    /// Slowest upload accepted.
    pub upload_bytes_per_s_min: u64,
    /// Time every upload gets on top of its size at the slowest rate.
    pub upload_grace_ms: u64,
    /// A write waiting this long without progress ends its connection (`stall.rs`).
    pub write_stall_ms: u64,
    /// Numbers temp files apart.
    pub next_temp: Cell<u64>,
}

/// A response body: a short text, or a span of an object's file.
#[derive(Debug)]
pub enum MediaBody {
    /// A short text (or nothing).
    Text(Option<Bytes>),
    /// `remaining` bytes of `file` from its current position.
    File {
        /// The object.
        file: std::fs::File,
        /// Bytes still to send.
        remaining: u64,
        /// Where sent bytes are counted.
        counters: Arc<MediaCounters>,
    },
}

impl hyper::body::Body for MediaBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            MediaBody::Text(t) => {
                hyper::body::SizeHint::with_exact(t.as_ref().map_or(0, |b| b.len() as u64))
            }
            MediaBody::File { remaining, .. } => hyper::body::SizeHint::with_exact(*remaining),
        }
    }

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            MediaBody::Text(t) => Poll::Ready(t.take().map(|b| Ok(Frame::data(b)))),
            MediaBody::File {
                file,
                remaining,
                counters,
            } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let n = (*remaining).min(MEDIA_READ_CHUNK_BYTES as u64) as usize;
                let mut buf = vec![0u8; n];
                // A page-cache read on the media thread, never a shard's.
                if let Err(e) = file.read_exact(&mut buf) {
                    return Poll::Ready(Some(Err(e)));
                }
                *remaining -= n as u64;
                super::counters::add(&counters.download_bytes, n as u64);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
            }
        }
    }
}

type Resp = Response<MediaBody>;

fn text(status: StatusCode, body: &str) -> Resp {
    let mut r = Response::new(MediaBody::Text(Some(Bytes::from(format!("{body}\n")))));
    *r.status_mut() = status;
    r
}

fn refuse(status: StatusCode, code: ErrorCode, detail: &str) -> Resp {
    let mut r = text(status, &format!("{}: {detail}", code.as_str_name()));
    r.headers_mut()
        .insert(ERROR_HEADER, HeaderValue::from(code as i32));
    r
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Answers one request.
pub async fn handle(sh: Rc<Shared>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let Some(name) = req
        .uri()
        .path()
        .strip_prefix("/m/")
        .filter(|n| is_object_name(n))
    else {
        return Ok(text(StatusCode::NOT_FOUND, "no such path"));
    };
    let name = name.to_owned();
    let mut sha256 = [0u8; 32];
    // 64 hex digits (checked above).
    let _ = messaging::media::token::unhex(&name, &mut sha256);
    let token = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("t=")))
        .unwrap_or("");
    let purpose = match *req.method() {
        Method::PUT => Purpose::Upload,
        Method::GET | Method::HEAD => Purpose::Download,
        _ => return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "PUT, GET or HEAD")),
    };
    let opened = sh.key.open(token).or_else(|e| match &sh.earlier_key {
        Some(k) => k.open(token),
        None => Err(e),
    });
    let t = match opened.and_then(|t| t.check(purpose, &sha256, now_ms()).map(|()| t)) {
        Ok(t) => t,
        Err(e) => {
            bump(&sh.counters.refused_token);
            let r = refuse(
                StatusCode::FORBIDDEN,
                ErrorCode::MediaBadToken,
                &e.to_string(),
            );
            return Ok(after_draining(req, r).await);
        }
    };
    Ok(match purpose {
        Purpose::Upload => upload(&sh, &name, t, req).await,
        Purpose::Download => download(&sh, &name, &req),
    })
}

/// Gives an upload's reservation back however it ends (answered, refused, or dropped with
/// its connection), and deletes its temp file unless it was committed.
struct Reservation<'a> {
    sh: &'a Shared,
    user: u64,
    size: u64,
    temp: Option<PathBuf>,
    stored: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.temp.take() {
            let _ = std::fs::remove_file(t);
        }
        let mut b = self.sh.budgets.borrow_mut();
        b.end(self.user, self.size, self.stored);
        self.sh
            .counters
            .stored_bytes
            .store(b.stored_bytes(), Relaxed);
    }
}

/// An answer given before the body was read (a refusal, or "already stored"): the body is
/// read and dropped first, at most `MEDIA_DRAIN_BYTES_MAX` within `MEDIA_DRAIN_MS`, so a
/// client that sends without waiting hears the answer instead of a reset; past either bound
/// the connection just closes. A client that sent `Expect: 100-continue` (what big uploads
/// should do) is answered at once and never sends the body.
async fn after_draining(req: Request<Incoming>, resp: Resp) -> Resp {
    let expects = req
        .headers()
        .get(hyper::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects || req.method() != Method::PUT {
        return resp;
    }
    let mut body = req.into_body();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(MEDIA_DRAIN_MS);
    let mut read = 0usize;
    while read <= MEDIA_DRAIN_BYTES_MAX {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => read += f.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
    resp
}

async fn upload(sh: &Shared, name: &str, t: Token, req: Request<Incoming>) -> Resp {
    match before_body(sh, name, &t, &req) {
        Some(early) => after_draining(req, early).await,
        None => receive_and_store(sh, name, t, req).await,
    }
}

/// The answer an upload gets before its body is read, if any.
fn before_body(sh: &Shared, name: &str, t: &Token, req: &Request<Incoming>) -> Option<Resp> {
    let c = &sh.counters;
    if t.size > sh.object_bytes_max || declared_len(req).is_some_and(|n| n > t.size) {
        bump(&c.refused_too_large);
        let detail = "larger than the slot or the object limit";
        let code = ErrorCode::MediaObjectTooLarge;
        return Some(refuse(StatusCode::PAYLOAD_TOO_LARGE, code, detail));
    }
    if sh.store.object_path(name).exists() {
        bump(&c.uploads_duplicate);
        // Retention counts from the latest upload (a new message may name an old object).
        if let Err(e) = sh.store.touch(name) {
            tracing::warn!(error = %e, "media: touching an object failed");
        }
        return Some(text(StatusCode::OK, "already stored"));
    }
    if let Err(r) = sh.budgets.borrow_mut().begin(t.user, t.size, now_ms()) {
        return Some(refused_budget(c, r));
    }
    None
}

/// The upload [`before_body`] let through (its budgets reserved): the body to a temp file,
/// checked, committed.
async fn receive_and_store(sh: &Shared, name: &str, t: Token, req: Request<Incoming>) -> Resp {
    let c = &sh.counters;
    let mut res = Reservation {
        sh,
        user: t.user,
        size: t.size,
        temp: None,
        stored: false,
    };
    let n = sh.next_temp.get();
    sh.next_temp.set(n + 1);
    let (path, file) = match sh.store.temp(name, n) {
        Ok(x) => x,
        Err(e) => return internal("temp file", &e),
    };
    res.temp = Some(path.clone());
    let file = match receive(sh, &t, req.into_body(), file).await {
        Ok(file) => file,
        Err(resp) => return resp,
    };
    let store = sh.store.clone();
    let owned = name.to_owned();
    let committed = tokio::task::spawn_blocking(move || store.commit(file, &path, &owned)).await;
    let new = match committed {
        Ok(Ok(new)) => new,
        Ok(Err(e)) => return internal("commit", &e),
        Err(e) => return internal("commit", &std::io::Error::other(e.to_string())),
    };
    res.temp = None;
    if !new {
        // The same bytes were stored by another upload meanwhile.
        bump(&c.uploads_duplicate);
        return text(StatusCode::OK, "already stored");
    }
    res.stored = true;
    bump(&c.uploads);
    bump(&c.objects);
    super::counters::add(&c.upload_bytes, t.size);
    drop(res);
    text(StatusCode::CREATED, "stored")
}

/// Streams the body into `file`: at most `t.size` bytes, before the slow-upload deadline,
/// with the right SHA-256.
async fn receive(
    sh: &Shared,
    t: &Token,
    mut body: Incoming,
    mut file: std::fs::File,
) -> Result<std::fs::File, Resp> {
    let c = &sh.counters;
    let allowed_ms = sh.upload_grace_ms + t.size.saturating_mul(1000) / sh.upload_bytes_per_s_min;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(allowed_ms);
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut written = 0u64;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                bump(&c.refused_slow);
                let detail = "upload slower than the server's slowest rate";
                return Err(refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    ErrorCode::MediaTooSlow,
                    detail,
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(text(StatusCode::BAD_REQUEST, &e.to_string())),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        written += data.len() as u64;
        if written > t.size {
            bump(&c.refused_too_large);
            let detail = "more bytes than the slot's size";
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::MediaObjectTooLarge,
                detail,
            ));
        }
        hash.update(&data);
        if let Err(e) = file.write_all(&data) {
            return Err(internal("write", &e));
        }
    }
    if written != t.size || hash.finish().as_ref() != t.sha256 {
        bump(&c.refused_bad_hash);
        let detail = "the bytes do not have the slot's size and SHA-256";
        return Err(refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::MediaBadHash,
            detail,
        ));
    }
    Ok(file)
}

fn declared_len(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn refused_budget(c: &MediaCounters, r: Refusal) -> Resp {
    let (counter, status, code, detail) = match r {
        Refusal::Concurrent => (
            &c.refused_concurrent,
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::MediaConcurrentUploads,
            "too many uploads in progress",
        ),
        Refusal::DailyBytes => (
            &c.refused_daily_bytes,
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::MediaDailyBytes,
            "upload bytes for today are spent",
        ),
        Refusal::Disk => (
            &c.refused_disk,
            StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::MediaDiskBudget,
            "the server's media storage is full",
        ),
    };
    bump(counter);
    refuse(status, code, detail)
}

fn internal(what: &str, e: &std::io::Error) -> Resp {
    tracing::warn!(error = %e, "media: {what} failed");
    refuse(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, what)
}

fn download(sh: &Shared, name: &str, req: &Request<Incoming>) -> Resp {
    let c = &sh.counters;
    let opened = std::fs::File::open(sh.store.object_path(name))
        .and_then(|f| f.metadata().map(|m| (f, m.len())));
    let (mut file, len) = match opened {
        Ok(x) => x,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bump(&c.not_found);
            return refuse(
                StatusCode::NOT_FOUND,
                ErrorCode::MediaNotFound,
                "no such object",
            );
        }
        Err(e) => return internal("open", &e),
    };
    let header = req.headers().get(RANGE).and_then(|h| h.to_str().ok());
    let (status, start, count) = match range::parse(header, len) {
        Span::Whole => (StatusCode::OK, 0, len),
        Span::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Span::Unsatisfiable => {
            let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, "range past the end");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(CONTENT_RANGE, v);
            }
            return r;
        }
    };
    if let Err(e) = file.seek(std::io::SeekFrom::Start(start)) {
        return internal("seek", &e);
    }
    bump(&c.downloads);
    let remaining = if req.method() == Method::HEAD {
        0
    } else {
        count
    };
    let mut r = Response::new(MediaBody::File {
        file,
        remaining,
        counters: c.clone(),
    });
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_LENGTH, HeaderValue::from(count));
    h.insert("accept-ranges", HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        let end = start + count - 1;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
            h.insert(CONTENT_RANGE, v);
        }
    }
    r
}

//! The admin endpoint: one plain std thread (not a shard, not pinned) serving minimal
//! HTTP/1.1 on a loopback address by default.
//!
//! - `GET /metrics`: Prometheus text (see [`crate::observe::stats_text::prometheus`]); before a shard
//!   has published, its engine numbers show as zeros.
//! - `GET /stats`: JSON, one object per shard that has published.
//! - `GET /healthz`: 200 while the process serves this endpoint and every shard lives
//!   (liveness); 503 once a shard died.
//! - `GET /readyz`: 200 once every shard has started (its log replayed, its accept loop
//!   running) and until shutdown starts or a shard dies; 503 with the reason otherwise.
//! - Anything else: 404 (405 for a method other than GET). Every response closes the
//!   connection.
//!
//! Serving, and why a slow or hostile client cannot block it:
//! 1. One thread `poll`s the listener and every open admin connection (non-blocking
//!    sockets), at most [`ADMIN_CONNS_MAX`] at once.
//! 2. Each connection has one deadline, [`REQUEST_DEADLINE_MS`] after its accept, for the
//!    whole request: reading the head, and writing the answer. Past it, the connection is
//!    dropped, however the bytes trickle (slowloris).
//! 3. When the table is full, a new connection evicts the oldest one, so a flood of idle
//!    connections costs each of them their slot, never a newcomer its answer.
//! 4. Answers are built in memory from the snapshots (a pop, a clone, a push per shard) and
//!    written as the socket takes them; a client that does not read is dropped at its deadline.
//!
//! Why it is off the hot path: it only reads the shards' published snapshots from the
//! [`StatsBoard`] and the [`Health`] counters; it never touches a shard's state and a shard
//! never waits for it. The listener is bound in [`bind`] before any shard starts, so a taken
//! port is one start-up error. The thread exits when its handle's stop flag is set, after
//! the shards have drained (so `/readyz` says 503 during the drain).
//!
//! This module owns the admin socket and thread; it must not touch shard state.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::observe::health::Health;
use crate::observe::stats::{ShardStats, StatsBoard};
use crate::observe::stats_text;

/// Default admin address (loopback only).
pub const ADMIN_ADDR_DEFAULT: &str = "127.0.0.1:9100";
/// Largest request head read; longer requests get 400.
pub const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// How long a client has, from its accept, to send its request and read the whole answer.
pub const REQUEST_DEADLINE_MS: u64 = 2_000;
/// Admin connections served at once; one more evicts the oldest.
pub const ADMIN_CONNS_MAX: usize = 64;
/// How often the thread looks at the stop flag while idle.
pub const STOP_POLL_MS: u64 = 200;

/// The bound admin socket, not yet served.
#[derive(Debug)]
pub struct AdminListener {
    listener: TcpListener,
    addr: SocketAddr,
}

/// The running admin thread.
#[derive(Debug)]
pub struct AdminHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl AdminHandle {
    /// The address it serves (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Asks the thread to stop, and wakes it at once with a connection of our own (else it
    /// notices within [`STOP_POLL_MS`]); `stop_and_join` waits for it.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(STOP_POLL_MS));
    }

    /// Stops the thread and waits for it (within [`STOP_POLL_MS`]).
    pub fn stop_and_join(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Binds the admin address.
pub fn bind(addr: SocketAddr) -> std::io::Result<AdminListener> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    Ok(AdminListener { listener, addr })
}

/// What the admin thread reads: the snapshots (`None` when statistics are off) and health.
#[derive(Debug, Clone)]
pub struct AdminView {
    /// The shards' published snapshots.
    pub board: Option<Arc<StatsBoard>>,
    /// Readiness.
    pub health: Arc<Health>,
}

/// Serves `board` (or 503 on the statistics routes when statistics are off) and `health` on
/// its own thread until [`AdminHandle::stop_and_join`].
pub fn spawn(
    l: AdminListener,
    board: Option<Arc<StatsBoard>>,
    health: Arc<Health>,
) -> std::io::Result<AdminHandle> {
    let addr = l.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let view = AdminView { board, health };
    l.listener.set_nonblocking(true)?;
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || serve(l.listener, &view, &flag))?;
    Ok(AdminHandle { addr, stop, thread })
}

/// One admin connection between accept and close.
struct Client {
    stream: TcpStream,
    deadline: Instant,
    /// The request head so far (reading) — at most `REQUEST_BYTES_MAX + 1024`.
    head: Vec<u8>,
    /// The whole answer, once known; `written` of it has gone out.
    answer: Option<Vec<u8>>,
    written: usize,
}

/// What a step on one client left it as.
enum Step {
    Open,
    Done,
}

fn serve(listener: TcpListener, view: &AdminView, stop: &AtomicBool) {
    let mut clients: Vec<Client> = Vec::with_capacity(ADMIN_CONNS_MAX);
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(ADMIN_CONNS_MAX + 1);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        clients.retain(|c| c.deadline > now);
        let wait = clients
            .iter()
            .map(|c| c.deadline.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::MAX)
            .min(Duration::from_millis(STOP_POLL_MS));
        fds.clear();
        fds.push(pollfd(listener.as_raw_fd(), libc::POLLIN));
        for c in &clients {
            let ev = if c.answer.is_some() {
                libc::POLLOUT
            } else {
                libc::POLLIN
            };
            fds.push(pollfd(c.stream.as_raw_fd(), ev));
        }
        // Round up so a deadline 0.4 ms away does not spin.
        let wait_ms = wait.as_millis() as i32 + 1;
        // SAFETY: `fds` is a valid, initialised array of `fds.len()` pollfds that outlives
        // the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        if n <= 0 {
            continue;
        }
        // Clients first (their indices match `fds[1..]`), then new ones.
        let mut i = 0;
        clients.retain_mut(|c| {
            i += 1;
            if fds[i].revents == 0 {
                return true;
            }
            matches!(step(c, view), Step::Open)
        });
        if fds[0].revents & libc::POLLIN != 0 {
            accept_all(&listener, &mut clients);
        }
    }
}

fn pollfd(fd: i32, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Takes the pending connections, at most a table's worth per wake-up (so a connect flood
/// cannot keep the thread from serving); a full table drops its oldest client for each.
fn accept_all(listener: &TcpListener, clients: &mut Vec<Client>) {
    for _ in 0..ADMIN_CONNS_MAX {
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                if clients.len() >= ADMIN_CONNS_MAX {
                    // The oldest is the one with the earliest deadline (all get the same span).
                    let oldest = (0..clients.len())
                        .min_by_key(|&i| clients[i].deadline)
                        .expect("a full table is not empty");
                    clients.swap_remove(oldest);
                }
                clients.push(Client {
                    stream,
                    deadline: Instant::now() + Duration::from_millis(REQUEST_DEADLINE_MS),
                    head: Vec::with_capacity(1024),
                    answer: None,
                    written: 0,
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and friends: try again on the next wake-up.
                tracing::warn!(error = %e, "admin accept failed");
                return;
            }
        }
    }
}

/// Reads what is there, answers once the head is whole, writes what the socket takes.
fn step(c: &mut Client, view: &AdminView) -> Step {
    if c.answer.is_none() {
        let mut buf = [0u8; 1024];
        // The client may close its side right after its request (HTTP/1.0 style): it
        // still gets the answer.
        let mut eof = false;
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => c.head.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Step::Done,
            }
            if c.head.len() > REQUEST_BYTES_MAX {
                break;
            }
        }
        match parse_head(&c.head) {
            Head::Partial if eof => return Step::Done,
            Head::Partial => return Step::Open,
            Head::TooLarge => c.answer = Some(respond(Response::too_large())),
            Head::Request { method, path } => {
                c.answer = Some(respond(route(&method, &path, view)));
            }
        }
    }
    let answer = c.answer.as_deref().expect("set above");
    while c.written < answer.len() {
        match c.stream.write(&answer[c.written..]) {
            Ok(0) => return Step::Done,
            Ok(n) => c.written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Open,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Step::Done,
        }
    }
    Step::Done
}

/// A request head as far as it has arrived.
#[derive(Debug, PartialEq)]
enum Head {
    Partial,
    TooLarge,
    Request { method: String, path: String },
}

fn parse_head(head: &[u8]) -> Head {
    if head.len() > REQUEST_BYTES_MAX {
        return Head::TooLarge;
    }
    if !head.windows(4).any(|w| w == b"\r\n\r\n") {
        return Head::Partial;
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("");
    let path = path.split('?').next().unwrap_or("").to_string();
    Head::Request { method, path }
}

/// An answer before it is serialised.
#[derive(Debug)]
struct Response {
    status: &'static str,
    ctype: &'static str,
    body: String,
}

impl Response {
    fn text(status: &'static str, body: impl Into<String>) -> Self {
        Response {
            status,
            ctype: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    fn too_large() -> Self {
        Response::text("400 Bad Request", "request too large\n")
    }
}

const ROUTES: &str = "try /metrics, /stats, /healthz or /readyz\n";

fn route(method: &str, path: &str, view: &AdminView) -> Response {
    if method != "GET" {
        return Response::text("405 Method Not Allowed", "GET only\n");
    }
    match path {
        "/healthz" => match view.health.dead_shard() {
            None => Response::text("200 OK", "ok\n"),
            Some(shard) => {
                Response::text("503 Service Unavailable", format!("shard {shard} died\n"))
            }
        },
        "/readyz" => match (view.health.ready(), view.health.note()) {
            (Ok(()), None) => Response::text("200 OK", "ready\n"),
            (Ok(()), Some(note)) => Response::text("200 OK", format!("ready ({note})\n")),
            (Err(why), _) => Response::text("503 Service Unavailable", format!("{why}\n")),
        },
        "/metrics" | "/stats" => {
            let Some(board) = &view.board else {
                return Response::text(
                    "503 Service Unavailable",
                    "statistics are off (--no-stats)\n",
                );
            };
            let snaps = board.read_all();
            if path == "/stats" {
                let snaps: Vec<_> = snaps.into_iter().flatten().collect();
                return Response {
                    status: "200 OK",
                    ctype: "application/json",
                    body: stats_text::json(&snaps),
                };
            }
            let n = snaps.len();
            let snaps: Vec<ShardStats> = snaps
                .into_iter()
                .enumerate()
                .map(|(i, s)| s.unwrap_or_else(|| ShardStats::zero(i, n)))
                .collect();
            Response {
                status: "200 OK",
                ctype: "text/plain; version=0.0.4; charset=utf-8",
                body: stats_text::prometheus(&snaps),
            }
        }
        _ => Response::text("404 Not Found", ROUTES),
    }
}

fn respond(r: Response) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.status,
        r.ctype,
        r.body.len()
    )
    .into_bytes();
    out.extend_from_slice(r.body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, req: &str) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    fn serve_test(shards: usize) -> (AdminHandle, Arc<AtomicBool>, Arc<Health>) {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let health = Arc::new(Health::new(shards, stop.clone()));
        let board = Arc::new(StatsBoard::new(shards));
        let h = spawn(l, Some(board), health.clone()).unwrap();
        (h, stop, health)
    }

    #[test]
    fn routes_and_stops() {
        let (h, _stop, _) = serve_test(1);
        let addr = h.local_addr();
        let r = get(addr, "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.ends_with("{\"shards\":[]}\n"),
            "no shard has published yet: {r}"
        );
        assert!(get(addr, "GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /stats HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        // No end of head in sight: answered once the cap is passed, not at the deadline.
        let big = format!("GET /{}", "a".repeat(REQUEST_BYTES_MAX));
        assert!(get(addr, &big).starts_with("HTTP/1.1 400"));
        h.stop_and_join();
    }

    #[test]
    fn a_client_that_closes_its_side_after_the_request_is_answered() {
        let (h, _stop, _) = serve_test(1);
        let mut c = TcpStream::connect(h.local_addr()).unwrap();
        c.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("ok\n"),
            "{out}"
        );
        // Half a head and then EOF: closed without an answer.
        let mut c = TcpStream::connect(h.local_addr()).unwrap();
        c.write_all(b"GET /heal").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert_eq!(out, "");
        h.stop_and_join();
    }

    #[test]
    fn metrics_before_any_snapshot_are_zeros_with_a_200() {
        let (h, _stop, _) = serve_test(2);
        let r = get(h.local_addr(), "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains("switchboard_frames_in_total{shard=\"1\"} 0\n"),
            "{r}"
        );
        assert!(r.contains("switchboard_tls_handshake_seconds_count{shard=\"0\"} 0\n"));
        h.stop_and_join();
    }

    #[test]
    fn readyz_follows_the_shards_and_the_stop_flag() {
        let (h, stop, health) = serve_test(1);
        let addr = h.local_addr();
        let r = get(addr, "GET /readyz HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.ends_with("starting: 0 of 1 shards ready\n"), "{r}");
        health.shard_started();
        assert!(get(addr, "GET /readyz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        let alone = Arc::new(AtomicBool::new(true));
        let flag = alone.clone();
        health.set_note(crate::observe::health::ReadyNote(Box::new(move || {
            flag.load(Ordering::Relaxed).then(|| "alone".to_string())
        })));
        let r = get(addr, "GET /readyz HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("ready (alone)\n"),
            "{r}"
        );
        alone.store(false, Ordering::Relaxed);
        assert!(get(addr, "GET /readyz HTTP/1.1\r\n\r\n").ends_with("ready\n"));
        stop.store(true, Ordering::Relaxed);
        let r = get(addr, "GET /readyz HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 503") && r.ends_with("shutting down\n"),
            "{r}"
        );
        assert!(get(addr, "GET /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        h.stop_and_join();
    }

    #[test]
    fn a_taken_port_is_an_error() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(bind(l.addr).is_err());
    }
}

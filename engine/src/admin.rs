//! The admin endpoint: one plain std thread (not a shard, not pinned) serving minimal
//! HTTP/1.1 on a loopback address by default.
//!
//! - `GET /metrics`: Prometheus text, `switchboard_<name>{shard="N"} value`.
//! - `GET /stats`: JSON, one object per shard.
//! - Anything else: 404 (405 for a method other than GET). Every response closes the
//!   connection; requests are read with a short timeout and a size cap, one at a time.
//!
//! Why it is off the hot path: it only reads the shards' published snapshots from the
//! [`StatsBoard`] (a pop, a clone, a push per shard per request); it never touches a shard's
//! state and a shard never waits for it. The listener is bound in [`bind`] before any shard
//! starts, so a taken port is one start-up error. The thread polls the listener with a
//! timeout and exits when the runtime's stop flag is set.
//!
//! This module owns the admin socket and thread; it must not touch shard state.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::stats::StatsBoard;
use crate::stats_text;

/// Default admin address (loopback only).
pub const ADMIN_ADDR_DEFAULT: &str = "127.0.0.1:9100";
/// Largest request head read; longer requests get 400.
pub const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// How long a client may take to send its request or read the answer.
pub const CLIENT_TIMEOUT_MS: u64 = 2_000;
/// How often the thread looks at the stop flag while idle.
pub const STOP_POLL_MS: i32 = 200;

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
    thread: JoinHandle<()>,
}

impl AdminHandle {
    /// The address it serves (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the thread (it exits once the stop flag is set).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Binds the admin address.
pub fn bind(addr: SocketAddr) -> std::io::Result<AdminListener> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    Ok(AdminListener { listener, addr })
}

/// Serves `board` (or 503 when statistics are off) on its own thread until `stop` is set.
pub fn spawn(
    l: AdminListener,
    board: Option<Arc<StatsBoard>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<AdminHandle> {
    let addr = l.addr;
    let thread = std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || serve(l.listener, board, &stop))?;
    Ok(AdminHandle { addr, thread })
}

fn serve(listener: TcpListener, board: Option<Arc<StatsBoard>>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        if !readable(&listener, STOP_POLL_MS) {
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, board.as_deref()) {
                    tracing::debug!(error = %e, "admin request failed");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                std::thread::sleep(Duration::from_millis(STOP_POLL_MS as u64));
            }
        }
    }
}

/// Waits up to `timeout_ms` for a connection to accept.
fn readable(listener: &TcpListener, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd that lives across the call.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    n > 0 && pfd.revents & libc::POLLIN != 0
}

/// Reads one request head and answers it.
fn answer(mut s: TcpStream, board: Option<&StatsBoard>) -> std::io::Result<()> {
    let timeout = Some(Duration::from_millis(CLIENT_TIMEOUT_MS));
    s.set_read_timeout(timeout)?;
    s.set_write_timeout(timeout)?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > REQUEST_BYTES_MAX {
            return respond(
                &mut s,
                "400 Bad Request",
                "text/plain",
                "request too large\n",
            );
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    if method != "GET" {
        return respond(&mut s, "405 Method Not Allowed", "text/plain", "GET only\n");
    }
    let route = match path {
        "/metrics" => Route::Metrics,
        "/stats" => Route::Stats,
        _ => {
            return respond(
                &mut s,
                "404 Not Found",
                "text/plain",
                "try /metrics or /stats\n",
            )
        }
    };
    let Some(board) = board else {
        return respond(
            &mut s,
            "503 Service Unavailable",
            "text/plain",
            "statistics are off (--no-stats)\n",
        );
    };
    let snaps: Vec<_> = board.read_all().into_iter().flatten().collect();
    match route {
        Route::Metrics => respond(
            &mut s,
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            &stats_text::prometheus(&snaps),
        ),
        Route::Stats => respond(
            &mut s,
            "200 OK",
            "application/json",
            &stats_text::json(&snaps),
        ),
    }
}

enum Route {
    Metrics,
    Stats,
}

fn respond(s: &mut TcpStream, status: &str, ctype: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    s.flush()
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

    #[test]
    fn routes_and_stops() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let board = Arc::new(StatsBoard::new(1));
        let h = spawn(l, Some(board), stop.clone()).unwrap();
        let addr = h.local_addr();
        let r = get(addr, "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.ends_with("{\"shards\":[]}\n"),
            "no shard has published yet: {r}"
        );
        assert!(get(addr, "GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /stats HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        stop.store(true, Ordering::Relaxed);
        h.join();
    }

    #[test]
    fn a_taken_port_is_an_error() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(bind(l.addr).is_err());
    }
}

//! The failure paths of the shard loop against real shards on loopback: a client that stops
//! reading and then breaks the protocol is gone within its linger deadline while others are
//! served; a handoff into a shard whose accept share is taken still lands; a shard that
//! panics takes the process down with a clear status (fail-fast).

// The test service reports to the test thread through shared counters.
#![allow(clippy::disallowed_methods)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{CloseReason, Service, ShardIo};
use proto::ids::{ConnId, ShardId};

/// Answers text commands:
/// - `ping` → `pong:<shard>`
/// - `fill` → a 32 KB answer
///
/// Every frame notes, for the test, the bytes the service queued and the bytes the kernel
/// has taken off the shard's sockets: their difference is the output stuck in the shard.
/// - `move` → hands the connection to the next shard, which answers `moved:<from>-><to>`
/// - `die` → panics (a bug on this shard's thread)
struct Cmd {
    seen: Arc<Seen>,
}

#[derive(Default)]
struct Seen {
    closes: AtomicUsize,
    queued: AtomicU64,
    taken: AtomicU64,
}

impl Seen {
    fn stuck(&self) -> u64 {
        let queued = self.queued.load(Ordering::SeqCst);
        queued.saturating_sub(self.taken.load(Ordering::SeqCst))
    }

    fn closes(&self) -> usize {
        self.closes.load(Ordering::SeqCst)
    }
}

impl Cmd {
    fn answer(&self, io: &mut ShardIo<Self>, conn: ConnId, body: &[u8]) {
        let f = testkit::frame(body);
        if io.send_with(conn, |out| out.extend_from_slice(&f)).is_ok() {
            self.seen.queued.fetch_add(f.len() as u64, Ordering::SeqCst);
        }
    }
}

impl Service for Cmd {
    type Msg = ();
    type Adopt = ();
    type Timer = ();

    fn on_open(&mut self, _io: &mut ShardIo<Self>, _conn: ConnId) {}

    fn on_frame(&mut self, io: &mut ShardIo<Self>, conn: ConnId, payload: &[u8]) {
        let taken = io.counters().bytes_out;
        self.seen.taken.store(taken, Ordering::SeqCst);
        match payload {
            b"ping" => {
                let text = format!("pong:{}", io.shard_id().0);
                self.answer(io, conn, text.as_bytes());
            }
            b"fill" => self.answer(io, conn, &[b'x'; 32 * 1024]),
            b"move" => {
                let to = ShardId((io.shard_id().0 + 1) % io.shard_count());
                let _ = io.hand_off(conn, to, ());
            }
            b"die" => panic!("told to die"),
            _ => {}
        }
    }

    fn on_close(&mut self, _io: &mut ShardIo<Self>, _conn: ConnId, reason: CloseReason) {
        if reason != CloseReason::HandedOff {
            self.seen.closes.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn on_mesh(&mut self, _io: &mut ShardIo<Self>, _from: ShardId, _msg: ()) {}

    fn on_adopt(&mut self, io: &mut ShardIo<Self>, from: ShardId, conn: ConnId, _msg: ()) {
        let text = format!("moved:{}->{}", from.0, io.shard_id().0);
        self.answer(io, conn, text.as_bytes());
    }

    fn on_timer(&mut self, _io: &mut ShardIo<Self>, _t: ()) {}
}

fn start(cfg: engine::EngineConfig) -> (engine::Runtime, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let rt = engine::start(cfg, move |_| Cmd { seen: s.clone() }).expect("start");
    (rt, seen)
}

/// A TCP connection whose receive buffer is a few KiB: a client that does not read fills
/// it (and the server's send) quickly.
fn tiny_window_client(addr: SocketAddr) -> TcpStream {
    let SocketAddr::V4(v4) = addr else {
        panic!("loopback v4")
    };
    // SAFETY: a fresh socket, a setsockopt from a live int and a connect from a live
    // sockaddr_in; the descriptor is owned by the TcpStream from here.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let small: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        let s = TcpStream::from_raw_fd(fd);
        s.set_nodelay(true).unwrap();
        s
    }
}

/// Sends one command and reads one answer; `None` when the server closed the connection.
fn ask(s: &mut TcpStream, cmd: &[u8]) -> Option<String> {
    s.write_all(&testkit::frame(cmd)).ok()?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(String::from_utf8(body).unwrap())
}

/// Waits (polling an observable, with a deadline) until `f` holds.
fn wait_for(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Reproduced on the release binary: a client that stops reading, has output queued and
/// then sends a frame of absurd length kept its slot and socket forever (the close waited
/// for a send that never completes). Now it is gone within its linger deadline, and the
/// shard answers others all along.
#[test]
fn a_client_that_stops_reading_and_then_breaks_the_protocol_is_gone_within_its_linger() {
    let mut cfg = support::config(1);
    cfg.idle_timeout_ms = 600_000;
    let (rt, seen) = start(cfg);
    let addr = rt.local_addr();
    let mut probe = TcpStream::connect(addr).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut hog = tiny_window_client(addr);
    // Fill the socket's buffers until output is stuck in the shard: more than 64 KiB, well
    // under the per-connection cap (one answer is 32 KiB).
    let mut fills = 0;
    while seen.stuck() < 64 * 1024 {
        let before = seen.queued.load(Ordering::SeqCst);
        hog.write_all(&testkit::frame(b"fill")).unwrap();
        fills += 1;
        assert!(fills < 10_000, "output never got stuck");
        let answered = wait_for(Duration::from_secs(10), || {
            seen.queued.load(Ordering::SeqCst) >= before + 32 * 1024
        });
        assert!(answered, "fill {fills} not answered");
        // A frame on the probe brings the count of bytes taken up to date.
        assert_eq!(ask(&mut probe, b"ping").as_deref(), Some("pong:0"));
    }
    assert!(seen.stuck() < 200 * 1024, "{} bytes stuck", seen.stuck());
    hog.write_all(&[0xff; 4]).unwrap(); // a frame of 4 GiB
    let started = Instant::now();
    let gone = wait_for(Duration::from_secs(30), || seen.closes() >= 1);
    assert!(
        gone,
        "the hog still holds its slot after 30 s ({} bytes stuck)",
        seen.stuck()
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        ask(&mut probe, b"ping").as_deref(),
        Some("pong:0"),
        "others still served"
    );
    drop(hog);
    rt.stop();
    rt.join().unwrap();
}

/// A handoff into a shard whose share of the connection cap is taken by accepted
/// connections used to close the connection (its login and unread frames lost while the
/// old shard's service had heard `HandedOff`). The table keeps room for adoptions.
#[test]
fn a_handoff_lands_on_a_shard_whose_accept_share_is_taken() {
    let mut cfg = support::config(2);
    cfg.connections_max = Some(2); // one accepted connection per shard
    let (rt, _closes) = start(cfg);
    let addr = rt.local_addr();
    let mut on: [Option<TcpStream>; 2] = [None, None];
    for _ in 0..200 {
        if on.iter().all(Option::is_some) {
            break;
        }
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // A connection past its shard's share is refused (closed at once).
        if let Some(answer) = ask(&mut s, b"ping") {
            let shard: usize = answer.strip_prefix("pong:").unwrap().parse().unwrap();
            assert!(on[shard].is_none(), "a second connection on shard {shard}");
            on[shard] = Some(s);
        }
    }
    let [Some(mut first), Some(_second)] = on else {
        panic!("never got one connection on each shard");
    };
    assert_eq!(
        ask(&mut first, b"move").as_deref(),
        Some("moved:0->1"),
        "the adoption was refused"
    );
    assert_eq!(ask(&mut first, b"ping").as_deref(), Some("pong:1"));
    rt.stop();
    rt.join().unwrap();
}

const CHILD_ENV: &str = "ENGINE_FAILURE_PATHS_CHILD";

/// Fail-fast: a shard thread that panics (here, the service's bug on one frame) takes the
/// whole process down at once with `SHARD_PANIC_EXIT_CODE`, after saying which shard died.
/// Run in a child process (this test binary again), since the process is what exits.
#[test]
fn a_panicking_shard_takes_the_process_down_with_a_clear_status() {
    if std::env::var_os(CHILD_ENV).is_some() {
        let (rt, _closes) = start(support::config(2));
        let mut s = TcpStream::connect(rt.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        assert!(ask(&mut s, b"ping").is_some());
        let _ = ask(&mut s, b"die");
        // Not reached when the process exits; if it does, the parent sees status 0.
        std::process::exit(0);
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_panicking_shard_takes_the_process_down_with_a_clear_status",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (status, err) = testkit::exit_and_stderr(
        &mut child,
        Duration::from_secs(60),
        "the child after a shard's panic",
    );
    assert_eq!(
        status.code(),
        Some(engine::runtime::SHARD_PANIC_EXIT_CODE),
        "{err}"
    );
    assert!(err.contains("told to die"), "{err}");
    assert!(
        err.contains("switchboard: shard ") && err.contains(" died"),
        "{err}"
    );
}

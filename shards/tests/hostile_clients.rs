//! Hostile clients against a real server on loopback: each is disconnected by a named limit
//! (handshake timeout, idle timeout, output cap, TLS errors) and no other connection notices.
//!
//! Bounded: every test finishes in a few seconds; timeouts are lowered through `ServerConfig`.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::codec::encode_frame;
use proto::v1::{client_frame, server_frame, ClientFrame, Ping};
use support::{Client, TestServer};

/// Waits for the server to close `s` (EOF or reset); returns how long it took, or `None` if
/// it stayed open for `within`. Bytes the server sends first (a TLS alert) are skipped.
fn wait_closed(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut b = [0u8; 4096];
    while start.elapsed() < within {
        match s.read(&mut b) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

fn ping_frame(nonce: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let f = ClientFrame {
        kind: Some(client_frame::Kind::Ping(Ping { nonce })),
    };
    encode_frame(&f, &mut out).unwrap();
    out
}

/// Round trip of one ping on `c`.
fn ping_rtt(c: &mut Client, nonce: u64) -> Duration {
    let t = Instant::now();
    c.send(client_frame::Kind::Ping(Ping { nonce }));
    match c.recv() {
        server_frame::Kind::Pong(p) => assert_eq!(p.nonce, nonce),
        other => panic!("expected Pong, got {other:?}"),
    }
    t.elapsed()
}

fn p99(c: &mut Client, n: u64) -> Duration {
    let mut v: Vec<Duration> = (0..n).map(|i| ping_rtt(c, i + 1)).collect();
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// A good client still gets a pong promptly.
fn assert_server_serves(server: &TestServer) {
    let mut c = server.client();
    assert!(ping_rtt(&mut c, 42) < Duration::from_secs(2));
}

#[test]
fn connections_that_never_finish_the_handshake_are_closed_by_the_handshake_timeout() {
    let server = TestServer::start_cfg(2, true, testkit::temp_dir("hs-timeout"), |cfg| {
        cfg.handshake_timeout_ms = 300;
    });
    // Silent: TCP connects, never says anything.
    let mut silent = TcpStream::connect(server.addr).unwrap();
    // Stalled: half a TLS record header, then nothing.
    let mut stalled = TcpStream::connect(server.addr).unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).unwrap();
    for (name, s) in [("silent", &mut silent), ("stalled", &mut stalled)] {
        let took = wait_closed(s, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{name} connection was never closed"));
        assert!(
            took < Duration::from_secs(3),
            "{name}: closed after {took:?}, handshake timeout is 300 ms"
        );
    }
    assert_server_serves(&server);
}

#[test]
fn silent_connections_are_closed_by_the_idle_timeout() {
    let server = TestServer::start_cfg(2, true, testkit::temp_dir("idle"), |cfg| {
        cfg.idle_timeout_ms = 1_000;
    });
    // A logged-in TLS session that pinged once and went silent (a phone that lost its
    // network without a FIN looks exactly like this to the server).
    let mut c = server.client();
    c.load_test_login("+15557600001");
    ping_rtt(&mut c, 1);
    let start = Instant::now();
    assert!(c.is_closed(), "idle connection was not closed within 10 s");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "closed after {took:?}, idle timeout is 1 s"
    );
    // A logged-in client that keeps pinging inside the timeout is not closed (before login,
    // pings do not keep a connection alive: security_prelogin.rs).
    let mut alive = server.client();
    alive.load_test_login("+15557600002");
    for i in 0..6 {
        ping_rtt(&mut alive, i + 1);
        std::thread::sleep(Duration::from_millis(300));
    }
    ping_rtt(&mut alive, 99);
}

fn garbage(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn garbage_instead_of_tls_is_closed_and_nobody_else_notices() {
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("random", garbage(64 * 1024)),
        ("protobuf-frame", ping_frame(7)),
    ];
    garbage_is_closed(inputs);
}

/// A plausible TLS record header announcing a full-size (16 KiB) handshake record, then junk.
#[test]
fn a_fake_full_size_tls_record_is_closed_and_nobody_else_notices() {
    let record = [&[0x16, 0x03, 0x03, 0x40, 0x00][..], &garbage(16_384)[..]].concat();
    garbage_is_closed(vec![("fake-record", record)]);
}

fn garbage_is_closed(inputs: Vec<(&str, Vec<u8>)>) {
    let server = TestServer::start(2, true);
    let mut good = server.client();
    ping_rtt(&mut good, 1);
    for (name, bytes) in inputs {
        let mut s = TcpStream::connect(server.addr).unwrap();
        // The server may close before taking everything; a write error is fine.
        let _ = s.write_all(&bytes);
        let took = wait_closed(&mut s, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{name}: not closed"));
        assert!(
            took < Duration::from_secs(3),
            "{name}: closed after {took:?}"
        );
        ping_rtt(&mut good, 2);
    }
    assert_server_serves(&server);
}

/// A TLS client socket with a tiny receive buffer that sends pings and never reads.
fn flood_never_reading(addr: SocketAddr, cert: &std::path::Path, stop: &AtomicBool) -> bool {
    let sock = TcpStream::connect(addr).unwrap();
    let small: libc::c_int = 4096;
    // SAFETY: valid socket fd, pointer to a live c_int of the stated size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &small as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    sock.set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let cfg = engine::tls::client_config_trusting(cert).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let batch: Vec<u8> = (0..500).flat_map(ping_frame).collect();
    while !stop.load(Ordering::Relaxed) {
        if tls.write_all(&batch).and_then(|_| tls.flush()).is_err() {
            return true; // the server dropped us
        }
        // ~250k pings/s offered: far more output than a client that never reads can hold,
        // without this test's own encryption hogging one of the machine's two cores.
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

#[test]
fn a_client_that_never_reads_is_dropped_and_others_keep_their_latency() {
    let server = TestServer::start(2, true);
    let mut good = server.client();
    ping_rtt(&mut good, 1); // handshake done before measuring
    let before = p99(&mut good, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let drops = Arc::new(AtomicU64::new(0));
    let bad = {
        let (stop, drops, addr) = (stop.clone(), drops.clone(), server.addr);
        let cert = engine::tls::dev_cert_path(&shards::server::tls_dir(&server.cfg.data_dir));
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if flood_never_reading(addr, &cert, &stop) {
                    #[allow(clippy::disallowed_methods)] // the test's client threads
                    drops.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    // Let the first flood get going, then measure while bad clients come and go.
    let t = Instant::now();
    while drops.load(Ordering::Relaxed) == 0 && t.elapsed() < Duration::from_secs(20) {
        ping_rtt(&mut good, 7);
    }
    let during = p99(&mut good, 200);
    stop.store(true, Ordering::Relaxed);
    bad.join().unwrap();
    let dropped = drops.load(Ordering::Relaxed);
    eprintln!("p99 before {before:?}, during {during:?}; never-reading clients dropped: {dropped}");
    assert!(dropped >= 1, "a client that never reads was never dropped");
    let bound = before * 10 + Duration::from_millis(50);
    assert!(
        during <= bound,
        "good client's p99 moved: before {before:?}, during {during:?} (bound {bound:?})"
    );
}

/// Plaintext: the same never-reading client, without TLS's own buffer limit in the way.
#[test]
fn a_plaintext_client_that_never_reads_is_dropped() {
    let server = TestServer::start(1, false);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let batch: Vec<u8> = (0..2000).flat_map(ping_frame).collect();
    let start = Instant::now();
    let mut dropped = false;
    while start.elapsed() < Duration::from_secs(15) {
        if s.write_all(&batch).is_err() {
            dropped = true;
            break;
        }
    }
    assert!(
        dropped,
        "never-reading plaintext client still connected after 15 s"
    );
}

/// Slowloris: one frame trickled a byte at a time, each byte inside the idle timeout.
#[test]
fn slowloris_is_closed_by_a_partial_frame_deadline() {
    let server = TestServer::start_cfg(1, false, testkit::temp_dir("slowloris"), |cfg| {
        cfg.idle_timeout_ms = 1_000;
        cfg.frame_timeout_ms = 1_000;
    });
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    // A header announcing 1,000 bytes, then one byte every 300 ms.
    s.write_all(&1000u32.to_be_bytes()).unwrap();
    let start = Instant::now();
    let mut b = [0u8; 64];
    while start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(300));
        if s.write_all(&[0x0a]).is_err() {
            return; // closed
        }
        match s.read(&mut b) {
            Ok(0) => return,
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return,
            _ => {}
        }
    }
    panic!("a frame trickled at 3 bytes/s kept the connection open for 5 s");
}

/// A well-behaved client that pipelines many pings (and reads every pong) is not dropped:
/// the output limits only catch clients that do not read. (Guards the transport handing a
/// burst of output to rustls, whose own buffer limit is 64 KiB.)
#[test]
fn a_pipelining_tls_client_that_reads_is_not_dropped() {
    let server = TestServer::start(1, true);
    let mut c = server.client();
    ping_rtt(&mut c, 1);
    const N: u64 = 8_000; // ~16 bytes of pong each: ~128 KiB of output for one 64 KiB read
    let batch: Vec<u8> = (1..=N).flat_map(ping_frame).collect();
    c.write_raw(&batch);
    for i in 1..=N {
        match c.recv() {
            server_frame::Kind::Pong(p) => assert_eq!(p.nonce, i),
            other => panic!("expected Pong {i}, got {other:?}"),
        }
    }
}

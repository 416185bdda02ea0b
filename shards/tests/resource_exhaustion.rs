//! Resource exhaustion: out of file descriptors (accept fails with EMFILE) and a full disk
//! under the log. The server keeps serving existing connections, backs off, recovers when the
//! resource returns, and never acks what it could not persist.
//!
//! Both need root-ish powers (prlimit on another process, mount); without them the test
//! prints why and passes without checking.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proto::codec::encode_frame;
use proto::v1::{client_frame, server_frame, ClientFrame, Ping};
use support::{Client, TestServer};

fn spawn_server(data: &std::path::Path) -> (Child, SocketAddr) {
    let (child, addr) =
        support::spawn_switchboard(data, &["--shards", "1", "--no-tls", "--no-admin"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            if pong_within(&mut s, 1, Duration::from_secs(2)) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "server never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, addr)
}

/// Sends a ping on a plaintext connection and waits for its pong.
fn pong_within(s: &mut TcpStream, nonce: u64, within: Duration) -> bool {
    let mut f = Vec::new();
    let ping = ClientFrame {
        kind: Some(client_frame::Kind::Ping(Ping { nonce })),
    };
    encode_frame(&ping, &mut f).unwrap();
    if s.write_all(&f).is_err() {
        return false;
    }
    wait_pong(s, nonce, within)
}

fn wait_pong(s: &mut TcpStream, nonce: u64, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut len = [0u8; 4];
    if s.read_exact(&mut len).is_err() {
        return false;
    }
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    if s.read_exact(&mut body).is_err() {
        return false;
    }
    matches!(
        proto::codec::decode_server(&body).map(|f| f.kind),
        Ok(Some(server_frame::Kind::Pong(p))) if p.nonce == nonce
    )
}

/// The server child dies with the test, pass or fail.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64
}

#[test]
fn out_of_descriptors_keeps_existing_connections_and_recovers() {
    let data = testkit::temp_dir("emfile");
    let (server, addr) = spawn_server(&data);
    let server = KillOnDrop(server);
    let pid = server.0.id();
    std::thread::sleep(Duration::from_millis(100));
    let base = open_fds(pid);
    // Room for 10 more descriptors only.
    let limit = libc::rlimit {
        rlim_cur: base + 10,
        rlim_max: base + 10,
    };
    // SAFETY: prlimit on a child we own, with a valid rlimit and no old-value pointer.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    if rc != 0 {
        eprintln!(
            "SKIPPED: prlimit not permitted: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    // Connect until one is not served: the kernel completes its TCP handshake (backlog) but
    // the server's accept fails with EMFILE. Its ping waits in the socket.
    let mut held: Vec<TcpStream> = Vec::new();
    let mut waiting = None;
    for i in 0..40 {
        let mut s = TcpStream::connect(addr).unwrap();
        if pong_within(&mut s, 500 + i, Duration::from_millis(500)) {
            held.push(s);
        } else {
            waiting = Some((s, 500 + i));
            break;
        }
    }
    let (mut waiting, nonce) = waiting.expect("never ran out of descriptors");
    assert!(
        held.len() >= 5,
        "only {} connections before EMFILE",
        held.len()
    );
    // A second one queues behind it.
    let mut second = TcpStream::connect(addr).unwrap();
    let mut f = Vec::new();
    let ping = ClientFrame {
        kind: Some(client_frame::Kind::Ping(Ping { nonce: 999 })),
    };
    encode_frame(&ping, &mut f).unwrap();
    second.write_all(&f).unwrap();
    // Existing connections keep working meanwhile.
    for (i, s) in held.iter_mut().enumerate() {
        assert!(
            pong_within(s, 200 + i as u64, Duration::from_secs(2)),
            "held {i} still served"
        );
    }
    // Free descriptors: the waiting connections are accepted after the backoff.
    let served_before = held.len();
    held.truncate(served_before / 2);
    let t = Instant::now();
    assert!(
        wait_pong(&mut waiting, nonce, Duration::from_secs(5)),
        "waiting connection never served after descriptors came back"
    );
    assert!(
        wait_pong(&mut second, 999, Duration::from_secs(5)),
        "second waiting connection"
    );
    eprintln!(
        "EMFILE: {served_before} served at the limit; recovered {:?} after descriptors came back",
        t.elapsed()
    );
}

/// Padding that makes each test message about 2 KiB.
const BODY_PAD_BYTES: usize = 2_000;

/// Appends to the filler file until the disk is full again.
fn fill_more(dir: &std::path::Path) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("filler"))
        .unwrap();
    let chunk = vec![0xaau8; 512];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

fn fill(dir: &std::path::Path) -> u64 {
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0xaau8; 4096];
    let mut n = 0;
    while f.write_all(&chunk).is_ok() {
        n += 4096;
    }
    let _ = f.sync_all();
    n
}

#[test]
fn a_full_disk_gets_no_acks_until_space_returns() {
    let dir = testkit::temp_dir("diskfull");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs (needs root / CAP_SYS_ADMIN)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(dir.clone());
    let mut server = TestServer::start_cfg(1, false, dir.clone(), |_| {});
    let (sender, recipient) = ("+15558000001", "+15558000002");
    Client::plain(server.addr).load_test_login(recipient);
    let mut s = Client::plain(server.addr);
    s.load_test_login(sender);
    let filled = fill(&dir);
    // Bodies big enough that whatever the log prepared ahead of its end (zeros written before
    // the disk filled) is used up within a few sends.
    let body = |cid: u64| format!("m{cid}-{}", "x".repeat(BODY_PAD_BYTES));
    // Send until one is not acked.
    let mut acked: Vec<u64> = Vec::new();
    let mut cid = 0;
    let mut unacked_from = None;
    while unacked_from.is_none() {
        cid += 1;
        assert!(cid < 500, "the log never ran out of space");
        s.send_text(recipient, cid, &body(cid));
        s.send(client_frame::Kind::Ping(Ping { nonce: cid }));
        loop {
            match s.recv() {
                server_frame::Kind::ServerAck(a) => acked.push(a.client_msg_id),
                server_frame::Kind::Pong(_) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        // An ack normally follows within milliseconds; a failed batch is retried only
        // after a second (COMMIT_RETRY_MS), so one not there by then was not written.
        let t = Instant::now();
        while !acked.contains(&cid) && t.elapsed() < Duration::from_millis(900) {
            std::thread::sleep(Duration::from_millis(20));
            for f in s.sync() {
                if let server_frame::Kind::ServerAck(a) = f {
                    acked.push(a.client_msg_id);
                }
            }
        }
        if !acked.contains(&cid) {
            unacked_from = Some(cid);
        }
    }
    // A failed batch is cut off the log's end, which can free what the log had prepared
    // there and let its retry succeed: fill again, so from here the disk stays full.
    fill_more(&dir);
    std::thread::sleep(Duration::from_millis(50));
    for f in s.sync() {
        if let server_frame::Kind::ServerAck(a) = f {
            acked.push(a.client_msg_id);
        }
    }
    // While full: more sends, no acks for 1.5 s (the log retries every second).
    for _ in 0..3 {
        cid += 1;
        s.send_text(recipient, cid, &body(cid));
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1_500) {
        let frames = s.sync();
        assert!(
            frames.is_empty(),
            "acked while the disk is full: {frames:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Space returns: everything is acked, in order, within a few retries.
    let held: Vec<u64> = (1..=cid).filter(|c| !acked.contains(c)).collect();
    assert!(held.len() >= 3, "the sends while full are held: {held:?}");
    // Space returns: the filesystem grows (removing the filler alone frees nothing when the
    // log itself took the space, preparing its tail before the filler was written).
    let grown = Command::new("mount")
        .args(["-o", "remount,size=4m"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(grown, "remount the tmpfs bigger");
    let t = Instant::now();
    let mut late = Vec::new();
    while late.len() < held.len() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "acks never came after space returned"
        );
        for f in s.sync() {
            match f {
                server_frame::Kind::ServerAck(a) => late.push(a.client_msg_id),
                other => panic!("unexpected {other:?}"),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(late, held);
    eprintln!(
        "disk full: filler {filled} bytes; acked before {}, held then acked {} after {:?}",
        acked.len(),
        late.len(),
        t.elapsed()
    );
    let _ = unacked_from;
    // And everything is delivered, once.
    let mut r = Client::plain(server.addr);
    assert_eq!(r.load_test_login(recipient) as u64, cid);
    for i in 1..=cid {
        let m = r.expect_message();
        assert_eq!(m.body, body(i).into_bytes());
        // Acked as read: the delivery window holds only so many bytes unacked.
        r.ack(vec![m.server_msg_id]);
    }
    server.stop();
}

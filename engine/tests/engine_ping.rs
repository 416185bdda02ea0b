//! Real shards on loopback answer frames over plaintext and TLS; stale connection ids are
//! rejected; a connection moves to another shard mid-session and keeps talking.

mod support;

use std::time::Duration;

use engine::{CloseReason, Service, ShardIo};
use proto::ids::{ConnId, ShardId};
use testkit::FrameClient;

/// Answers text commands:
/// - `ping` → `pong:<shard>`
/// - `move` → hands the connection to the next shard, which answers `moved:<from>-><to>`
/// - `remember` → remembers this connection's id; `poke` → tries to send to the remembered
///   id and answers `stale-rejected` or `stale-accepted`
struct Echo {
    remembered: Option<ConnId>,
}

/// What travels with a moved connection.
struct Moved;

impl Service for Echo {
    type Msg = ();
    type Adopt = Moved;
    type Timer = ();

    fn on_open(&mut self, _io: &mut ShardIo<Self>, _conn: ConnId) {}

    fn on_frame(&mut self, io: &mut ShardIo<Self>, conn: ConnId, payload: &[u8]) {
        let reply = match payload {
            b"ping" => format!("pong:{}", io.shard_id().0),
            b"move" => {
                let to = ShardId((io.shard_id().0 + 1) % io.shard_count());
                io.hand_off(conn, to, Moved).unwrap();
                return;
            }
            b"remember" => {
                self.remembered = Some(conn);
                "ok".into()
            }
            b"poke" => {
                let old = self.remembered.expect("remember first");
                match io.send_with(old, |out| out.extend_from_slice(&testkit::frame(b"boo"))) {
                    Ok(()) => "stale-accepted".into(),
                    Err(_) => "stale-rejected".into(),
                }
            }
            other => format!("unknown:{}", String::from_utf8_lossy(other)),
        };
        io.send_with(conn, |out| {
            out.extend_from_slice(&testkit::frame(reply.as_bytes()))
        })
        .unwrap();
    }

    fn on_close(&mut self, _io: &mut ShardIo<Self>, _conn: ConnId, _reason: CloseReason) {}

    fn on_mesh(&mut self, _io: &mut ShardIo<Self>, _from: ShardId, _msg: ()) {}

    fn on_adopt(&mut self, io: &mut ShardIo<Self>, from: ShardId, conn: ConnId, _moved: Moved) {
        let text = format!("moved:{}->{}", from.0, io.shard_id().0);
        io.send_with(conn, |out| {
            out.extend_from_slice(&testkit::frame(text.as_bytes()))
        })
        .unwrap();
    }

    fn on_timer(&mut self, _io: &mut ShardIo<Self>, _t: ()) {}
}

fn start(shards: usize, tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> engine::Runtime {
    let mut cfg = support::config(shards);
    cfg.tls = tls;
    engine::start(cfg, |_| Echo { remembered: None }).expect("start")
}

#[test]
fn ping_pong_over_plaintext() {
    let rt = start(2, None);
    let mut c = FrameClient::plain(rt.local_addr());
    for _ in 0..100 {
        c.send(b"ping");
        assert!(c.recv_text().starts_with("pong:"));
    }
    rt.stop();
    rt.join().unwrap();
}

#[test]
fn ping_pong_over_tls() {
    let (tls, cert) = support::dev_tls();
    let rt = start(2, Some(tls));
    let mut c = FrameClient::tls(rt.local_addr(), &cert);
    for _ in 0..100 {
        c.send(b"ping");
        assert!(c.recv_text().starts_with("pong:"));
    }
    rt.stop();
    rt.join().unwrap();
}

fn hand_off_keeps_the_session(tls: bool) {
    let (cfg, cert) = support::dev_tls();
    let rt = start(3, tls.then_some(cfg));
    let connect = || {
        if tls {
            FrameClient::tls(rt.local_addr(), &cert)
        } else {
            FrameClient::plain(rt.local_addr())
        }
    };
    let mut c = connect();
    c.send(b"ping");
    let first: usize = c
        .recv_text()
        .strip_prefix("pong:")
        .unwrap()
        .parse()
        .unwrap();
    // The move and the ping after it arrive in one read: the ping must be answered by the
    // new shard, after the adoption notice.
    c.send_many(&[b"move", b"ping"]);
    let expect_to = (first + 1) % 3;
    assert_eq!(c.recv_text(), format!("moved:{first}->{expect_to}"));
    assert_eq!(c.recv_text(), format!("pong:{expect_to}"));
    // Move twice more: the session survives every hop.
    c.send(b"move");
    let next = (expect_to + 1) % 3;
    assert_eq!(c.recv_text(), format!("moved:{expect_to}->{next}"));
    for _ in 0..10 {
        c.send(b"ping");
        assert_eq!(c.recv_text(), format!("pong:{next}"));
    }
    rt.stop();
    rt.join().unwrap();
}

#[test]
fn hand_off_mid_session_plaintext() {
    hand_off_keeps_the_session(false);
}

#[test]
fn hand_off_mid_session_tls() {
    hand_off_keeps_the_session(true);
}

#[test]
fn stale_connection_id_is_rejected() {
    // One shard, so both connections land in the same table and the slot is reused.
    let rt = start(1, None);
    let mut a = FrameClient::plain(rt.local_addr());
    a.send(b"remember");
    assert_eq!(a.recv_text(), "ok");
    drop(a);
    std::thread::sleep(Duration::from_millis(100));
    let mut b = FrameClient::plain(rt.local_addr());
    b.send(b"poke");
    assert_eq!(b.recv_text(), "stale-rejected");
    rt.stop();
    rt.join().unwrap();
}

#[test]
fn oversized_frame_closes_only_that_connection() {
    let rt = start(1, None);
    let mut good = FrameClient::plain(rt.local_addr());
    let mut bad = FrameClient::plain(rt.local_addr());
    bad.write_raw(&u32::MAX.to_be_bytes());
    assert!(bad.is_closed());
    good.send(b"ping");
    assert_eq!(good.recv_text(), "pong:0");
    rt.stop();
    rt.join().unwrap();
}

#[test]
fn garbage_instead_of_tls_closes_only_that_connection() {
    let (tls, cert) = support::dev_tls();
    let rt = start(1, Some(tls));
    let mut good = FrameClient::tls(rt.local_addr(), &cert);
    good.send(b"ping");
    assert_eq!(good.recv_text(), "pong:0");
    let mut bad = FrameClient::plain(rt.local_addr());
    bad.write_raw(b"GET / HTTP/1.1\r\n\r\n");
    assert!(bad.is_closed());
    good.send(b"ping");
    assert_eq!(good.recv_text(), "pong:0");
    rt.stop();
    rt.join().unwrap();
}

#[test]
fn idle_connection_is_closed_by_the_timer_wheel() {
    let mut cfg = support::config(1);
    cfg.idle_timeout_ms = 300;
    let rt = engine::start(cfg, |_| Echo { remembered: None }).unwrap();
    let mut c = FrameClient::plain(rt.local_addr());
    c.send(b"ping");
    assert_eq!(c.recv_text(), "pong:0");
    let t = std::time::Instant::now();
    assert!(c.is_closed());
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed too early: {waited:?}"
    );
    rt.stop();
    rt.join().unwrap();
}

#[test]
fn port_taken_is_a_clear_error() {
    let rt = start(1, None);
    let mut cfg = support::config(1);
    cfg.listen = rt.local_addr();
    let err = engine::start(cfg, |_| Echo { remembered: None }).unwrap_err();
    assert!(err.to_string().contains("cannot listen on"), "{err}");
    rt.stop();
    rt.join().unwrap();
}

#[test]
fn slowloris_frame_is_closed_by_the_frame_deadline() {
    let mut cfg = support::config(1);
    cfg.frame_timeout_ms = 300;
    let rt = engine::start(cfg, |_| Echo { remembered: None }).unwrap();
    let mut good = FrameClient::plain(rt.local_addr());
    let mut slow = FrameClient::plain(rt.local_addr());
    // A header announcing 100 bytes, then one byte every 50 ms: the idle timer keeps being
    // reset, but the frame never completes in time.
    slow.write_raw(&100u32.to_be_bytes());
    let t = std::time::Instant::now();
    let mut closed = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(50));
        if slow.try_write_raw(b"x").is_err() {
            closed = true;
            break;
        }
        good.send(b"ping");
        assert_eq!(good.recv_text(), "pong:0");
    }
    assert!(closed || slow.is_closed(), "slow frame not closed");
    assert!(t.elapsed() >= Duration::from_millis(250));
    rt.stop();
    rt.join().unwrap();
}

/// A client that keeps writing while its connection moves: every frame written after "move",
/// in separate writes that race the old shard's cancel of its receive and the new shard's
/// first one, is answered once, in order, by the new shard.
fn hand_off_while_the_client_keeps_writing(tls: bool) {
    let (cfg, cert) = support::dev_tls();
    let rt = start(3, tls.then_some(cfg));
    let mut c = if tls {
        FrameClient::tls(rt.local_addr(), &cert)
    } else {
        FrameClient::plain(rt.local_addr())
    };
    c.send(b"ping");
    let mut at: usize = c
        .recv_text()
        .strip_prefix("pong:")
        .unwrap()
        .parse()
        .unwrap();
    for _ in 0..20 {
        c.send(b"move");
        for _ in 0..50 {
            c.send(b"ping");
        }
        let to = (at + 1) % 3;
        assert_eq!(c.recv_text(), format!("moved:{at}->{to}"));
        for i in 0..50 {
            assert_eq!(
                c.recv_text(),
                format!("pong:{to}"),
                "reply {i} after the move"
            );
        }
        at = to;
    }
    rt.stop();
    rt.join().unwrap();
}

#[test]
fn hand_off_while_the_client_keeps_writing_plaintext() {
    hand_off_while_the_client_keeps_writing(false);
}

#[test]
fn hand_off_while_the_client_keeps_writing_tls() {
    hand_off_while_the_client_keeps_writing(true);
}

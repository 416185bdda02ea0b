//! The failure paths of a connection on the shard loop, driven by hand: a shard cell with a
//! real ring (never entered: what it queues never reaches the kernel) and a socket pair per
//! connection, with completions made up by the test. Each test is one path of issue 21
//! that once leaked a slot or panicked the shard.

use std::os::fd::{IntoRawFd, OwnedFd};
use std::rc::Weak;

use crate::conn::io::Scratch;
use crate::conn::slot::{SlotState, CONN_LINGER_MS, CONN_OUTPUT_BYTES_MAX};
use crate::conn::table::ConnTable;
use crate::conn::wire::Wire;
use crate::mesh::MeshOutbox;
use crate::ring::{self, Completion};
use crate::service::{CloseReason, Service};
use crate::shard_io::{ShardCell, ShardIo, SERVICE_TIMERS_MAX};
use crate::timer_wheel::TimerWheel;
use proto::ids::ConnId;
use proto::ids::ShardId;

const NOW_MS: u64 = 1_000_000;

#[derive(Default)]
struct Rec {
    frames: Vec<Vec<u8>>,
    closes: Vec<CloseReason>,
}

impl Service for Rec {
    type Msg = u32;
    type Adopt = u32;
    type Timer = u32;
    fn on_open(&mut self, _io: &mut ShardIo<Self>, _conn: ConnId) {}
    fn on_frame(&mut self, _io: &mut ShardIo<Self>, _conn: ConnId, payload: &[u8]) {
        self.frames.push(payload.to_vec());
    }
    fn on_close(&mut self, _io: &mut ShardIo<Self>, _conn: ConnId, reason: CloseReason) {
        self.closes.push(reason);
    }
    fn on_mesh(&mut self, _io: &mut ShardIo<Self>, _from: ShardId, _msg: u32) {}
    fn on_adopt(&mut self, _io: &mut ShardIo<Self>, _from: ShardId, _conn: ConnId, _adopt: u32) {}
    fn on_timer(&mut self, _io: &mut ShardIo<Self>, _t: u32) {}
}

/// A shard cell for `conns` connections, with this thread's ring installed.
fn cell(conns: usize) -> ShardCell<Rec> {
    ring::install().unwrap();
    ShardCell {
        service: Rec::default(),
        io: ShardIo {
            shard: ShardId(0),
            shard_count: 2,
            now_ms: NOW_MS,
            mono_ms: NOW_MS,
            clock_base: std::time::Instant::now(),
            wall_offset_ms: 0,
            wall_step_ms: 0,
            idle_timeout_ms: 60_000,
            frame_timeout_ms: 30_000,
            conns: ConnTable::with_capacity(conns * 2),
            timers: TimerWheel::new(10, 4096, conns * 2 + SERVICE_TIMERS_MAX, NOW_MS),
            mesh: MeshOutbox::new(2),
            counters: Default::default(),
            latency: Default::default(),
            cell: Weak::new(),
            dirty: Vec::new(),
            spare_bufs: Vec::new(),
            service_timers: 0,
            busy_ns: 0,
            turn_max_ns: 0,
            turns: 0,
            prelogin: crate::conn::prelogin::PreLogin::new(64),
            depart_hold: false,
            departures: Vec::new(),
        },
        tls: None,
        handshake_timeout_ms: 10_000,
        accept_max: conns,
    }
}

fn scratch() -> Scratch {
    Scratch {
        incoming: Vec::new(),
        plain: Vec::new(),
        dirty: Vec::new(),
    }
}

/// A plaintext connection on one end of a socket pair (the other end is returned, and
/// nobody reads it); no receive counts as in flight.
fn open_conn(c: &mut ShardCell<Rec>, handshaking: bool) -> (ConnId, OwnedFd) {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let id = c
        .register(
            Wire::new(a.into_raw_fd(), None, Vec::new()),
            handshaking,
            true,
        )
        .unwrap_or_else(|_| panic!("room in the table"));
    let slot = c.io.conns.get_mut(id).unwrap();
    slot.wire.recv_armed = false;
    slot.opened = !handshaking;
    (id, b.into())
}

fn completion(result: i32) -> Completion {
    Completion {
        user_data: 0,
        result,
        flags: 0,
    }
}

fn fire_at(c: &mut ShardCell<Rec>, now: u64) {
    let mut fired = Vec::new();
    c.fire_timers_at(now, &mut fired);
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn done() {
    ring::uninstall();
}

/// Item 2: a client's Finished that lands after its slot was told to close (handshake
/// timeout, shutdown) used to hit `assert_eq!(state, Handshaking)` and kill the shard.
#[test]
fn a_handshake_that_finishes_on_a_closing_slot_does_not_panic_the_shard() {
    let mut c = cell(4);
    let (id, _peer) = open_conn(&mut c, true);
    c.io.conns.get_mut(id).unwrap().state = SlotState::Closing(CloseReason::HandshakeTimeout);
    c.handshake_done(id, false);
    let slot = c.io.conns.get(id).unwrap();
    assert_eq!(
        slot.state,
        SlotState::Closing(CloseReason::HandshakeTimeout)
    );
    assert_eq!(c.io.counters.handshakes, 0);
    done();
}

/// Item 2 with real TLS bytes: a client whose Finished arrives after its slot was told to
/// close (here, the handshake timeout) used to panic the shard through
/// `handshake_done`'s assert. Its bytes are now dropped, and the slot goes on closing.
#[test]
fn a_client_finished_after_the_handshake_timeout_is_dropped() {
    let dir = std::env::temp_dir().join(format!(
        "sb-failure-tls-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let server_cfg = crate::tls::server_config(&crate::tls::CertSource::DevInDir(dir.clone()))
        .expect("dev certificate");
    let client_cfg = crate::tls::client_config_trusting(&crate::tls::dev_cert_path(&dir))
        .expect("client config");
    let mut c = cell(4);
    let mut s = scratch();
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let session = crate::tls::session::TlsSession::new(server_cfg).unwrap();
    let id = c
        .register(
            Wire::new(a.into_raw_fd(), Some(Box::new(session)), Vec::new()),
            true,
            true,
        )
        .unwrap_or_else(|_| panic!("room in the table"));
    c.io.conns.get_mut(id).unwrap().wire.recv_armed = false;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(client_cfg, name).unwrap();
    // ClientHello in, the server's flight out.
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    c.received(id, &mut hello, &mut s);
    let flight = c.io.conns.get_mut(id).unwrap().wire.take_pending();
    assert!(!flight.is_empty(), "the server answered the ClientHello");
    client.read_tls(&mut &flight[..]).unwrap();
    client.process_new_packets().unwrap();
    let mut finished = Vec::new();
    client.write_tls(&mut finished).unwrap();
    assert!(!finished.is_empty(), "the client's Finished");
    // The handshake deadline passes before the Finished arrives.
    c.io.conns.get_mut(id).unwrap().state = SlotState::Closing(CloseReason::HandshakeTimeout);
    c.received(id, &mut finished, &mut s);
    let slot = c.io.conns.get(id).unwrap();
    assert_eq!(
        slot.state,
        SlotState::Closing(CloseReason::HandshakeTimeout)
    );
    assert_eq!(c.io.counters.handshakes, 0);
    assert!(c.service.closes.is_empty() && c.service.frames.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
    done();
}

/// Item 3: input to a closing slot is dropped, not buffered (it used to pile up in the
/// slot's unread bytes without bound).
#[test]
fn input_to_a_closing_slot_is_dropped() {
    let mut c = cell(4);
    let mut s = scratch();
    let (id, _peer) = open_conn(&mut c, false);
    c.io.close_with(id, CloseReason::Service).unwrap();
    let mut data: Vec<u8> = (0..100).flat_map(|_| frame(b"after the close")).collect();
    c.received(id, &mut data, &mut s);
    assert!(c.service.frames.is_empty());
    assert!(c.io.conns.get(id).unwrap().wire.unread.is_empty());
    done();
}

/// Item 3: a slot being handed off keeps at most one frame's worth of input.
#[test]
fn input_to_a_departing_slot_is_capped_at_one_frame() {
    let mut c = cell(4);
    let mut s = scratch();
    let (id, _peer) = open_conn(&mut c, false);
    // The receive is still out: the handoff waits for its last completion.
    c.io.conns.get_mut(id).unwrap().wire.recv_armed = true;
    c.io.hand_off(id, ShardId(1), 7).unwrap();
    c.flush_dirty(&mut s);
    let mut chunk = vec![0u8; 16 * 1024];
    for _ in 0..8 {
        c.received(id, &mut chunk, &mut s);
        if matches!(c.io.conns.get(id).unwrap().state, SlotState::Closing(_)) {
            break;
        }
    }
    let slot = c.io.conns.get_mut(id).unwrap();
    assert!(slot.wire.unread.len() <= crate::conn::slot::HANDOFF_UNREAD_BYTES_MAX);
    // The cancelled receive's last completion.
    slot.wire.recv_armed = false;
    c.flush_dirty(&mut s);
    assert!(c.io.conns.get(id).is_none(), "closed once past one frame");
    assert_eq!(c.service.closes, [CloseReason::FrameTooLarge]);
    assert_eq!(c.io.mesh.handoffs_parked(), 0);
    done();
}

/// Item 3 (reproduced on the release binary): a client that stops reading, has output
/// queued and then breaks the protocol kept its slot forever, waiting for a send that
/// never completes. Its linger deadline now aborts it.
#[test]
fn a_closing_slot_whose_peer_stops_reading_is_aborted_at_its_linger_deadline() {
    let mut c = cell(4);
    let mut s = scratch();
    let (id, _peer) = open_conn(&mut c, false);
    c.io.send_with(id, |out| out.extend_from_slice(&frame(&[7; 100_000])))
        .unwrap();
    c.io.close_with(id, CloseReason::FrameTooLarge).unwrap();
    c.flush_dirty(&mut s);
    assert!(
        c.io.conns.get(id).unwrap().wire.send_armed,
        "the send is out"
    );
    // Nothing completes: the peer does not read. Until the deadline, the slot waits.
    fire_at(&mut c, NOW_MS + CONN_LINGER_MS - 100);
    c.flush_dirty(&mut s);
    assert!(c.io.conns.get(id).is_some());
    fire_at(&mut c, NOW_MS + CONN_LINGER_MS + 100);
    c.flush_dirty(&mut s);
    assert_eq!(c.io.counters.linger_aborts, 1);
    let slot = c.io.conns.get(id).unwrap();
    assert!(slot.wire.cancel_sent, "what is in flight is cancelled");
    // The cancelled send's completion lets the slot go.
    c.on_send(id.index(), completion(-libc::ECANCELED));
    c.flush_dirty(&mut s);
    assert!(c.io.conns.get(id).is_none(), "slot freed");
    assert_eq!(c.service.closes, [CloseReason::FrameTooLarge]);
    done();
}

/// Item 4: a send that fails while the slot is being handed off used to leave the slot,
/// its socket and its parked message behind for good.
#[test]
fn a_send_error_during_a_handoff_closes_the_slot_and_drops_its_parked_message() {
    let mut c = cell(4);
    let mut s = scratch();
    let (id, _peer) = open_conn(&mut c, false);
    c.io.send_with(id, |out| out.extend_from_slice(&frame(b"last words")))
        .unwrap();
    c.io.hand_off(id, ShardId(1), 7).unwrap();
    c.flush_dirty(&mut s);
    assert!(c.io.conns.get(id).unwrap().wire.send_armed);
    c.on_send(id.index(), completion(-libc::ECONNRESET));
    c.flush_dirty(&mut s);
    assert!(c.io.conns.get(id).is_none(), "slot freed");
    assert_eq!(c.io.mesh.handoffs_parked(), 0, "parked message dropped");
    assert!(c.io.mesh.is_empty(), "no adoption sent");
    assert_eq!(c.service.closes, [CloseReason::IoError]);
    assert_eq!(c.io.counters.handoff_failures, 1);
    done();
}

/// Item 8: the kernel took part of a send made after the receive's cancel (a TLS alert,
/// say): the rest still goes, or the peer sees a cut record.
#[test]
fn a_partial_send_after_a_cancel_sends_the_rest() {
    let mut c = cell(4);
    let mut s = scratch();
    let (id, _peer) = open_conn(&mut c, false);
    c.io.send_with(id, |out| out.extend_from_slice(&[1; 1000]))
        .unwrap();
    c.flush_dirty(&mut s);
    c.io.conns.get_mut(id).unwrap().wire.cancel_sent = true;
    c.on_send(id.index(), completion(100));
    let slot = c.io.conns.get(id).unwrap();
    assert!(slot.wire.send_armed, "the rest is resubmitted");
    assert_eq!(slot.wire.unsent(), 900);
    done();
}

/// Item 10: a service that sets every timer it can never leaves a connection without its
/// deadline (an insert into a full wheel used to be dropped with `.ok()`).
#[test]
fn a_service_that_fills_its_timer_share_leaves_room_for_connection_deadlines() {
    let conns = 4;
    let mut c = cell(conns);
    let mut set = 0;
    while c.io.set_timer(NOW_MS + 60_000, 0).is_ok() {
        set += 1;
        assert!(set <= conns * 2 + SERVICE_TIMERS_MAX, "never refused");
    }
    assert_eq!(set, SERVICE_TIMERS_MAX);
    assert_eq!(c.io.counters.service_timers_refused, 1);
    let mut peers = Vec::new();
    for _ in 0..conns {
        let (id, peer) = open_conn(&mut c, false);
        peers.push(peer);
        assert!(c.io.conns.get(id).unwrap().timer.is_some());
    }
    done();
}

/// An output overflow is still answered at once (not after the linger deadline).
#[test]
fn an_output_overflow_aborts_without_waiting_for_the_linger_deadline() {
    let mut c = cell(4);
    let mut s = scratch();
    let (id, _peer) = open_conn(&mut c, false);
    let big = vec![0u8; CONN_OUTPUT_BYTES_MAX / 2 + 1];
    c.io.send_with(id, |out| out.extend_from_slice(&big))
        .unwrap();
    c.flush_dirty(&mut s);
    c.io.send_with(id, |out| out.extend_from_slice(&big))
        .unwrap();
    c.flush_dirty(&mut s);
    assert!(c.io.conns.get(id).unwrap().wire.cancel_sent);
    c.on_send(id.index(), completion(-libc::ECANCELED));
    c.flush_dirty(&mut s);
    assert!(c.io.conns.get(id).is_none());
    assert_eq!(c.service.closes, [CloseReason::OutputOverflow]);
    done();
}

/// Item 6: the wheel runs on the monotonic clock. A step of the wall clock (NTP, an
/// operator) used to fire every idle deadline at once (forward) or stall every deadline
/// (back); now connection deadlines and service timers keep their time.
#[test]
fn a_wall_clock_step_neither_fires_nor_stalls_the_deadlines() {
    let mut c = cell(4);
    c.io.timers = TimerWheel::new(10, 4096, 8 + SERVICE_TIMERS_MAX, 1);
    c.io.mono_ms = 1;
    c.io.sync_wall();
    let (id, _peer) = open_conn(&mut c, false);
    let idle_due = c.io.mono_ms + c.io.idle_timeout_ms;
    let mut fired = Vec::new();
    // A day ahead: nothing is due.
    c.io.wall_step_ms = 86_400_000;
    c.fire_timers(std::time::Instant::now(), &mut fired);
    assert_eq!(c.io.conns.get(id).unwrap().state, SlotState::Open);
    // A service timer one second ahead on the (stepped) wall clock...
    let wall = c.io.now_ms();
    c.io.set_timer(wall + 1_000, 5).unwrap();
    // ...and the wall clock steps two days back: the timer still fires a second later, and
    // the connection's idle deadline still comes on time.
    c.io.wall_step_ms = -2 * 86_400_000;
    c.fire_timers(std::time::Instant::now(), &mut fired);
    assert_eq!(c.io.service_timers, 1, "not yet due");
    let mono = c.io.mono_ms;
    c.fire_timers_at(mono + 1_100, &mut fired);
    assert_eq!(c.io.service_timers, 0, "fired a second later");
    assert_eq!(c.io.conns.get(id).unwrap().state, SlotState::Open);
    c.fire_timers_at(idle_due + 20, &mut fired);
    assert_eq!(
        c.io.conns.get(id).unwrap().state,
        SlotState::Closing(CloseReason::IdleTimeout)
    );
    done();
}

/// A held connection's frames wait in its outbox, under the outbox cap, and leave in order
/// once released (the messaging service holds a login's answer until its account is durable).
#[test]
fn held_output_waits_in_the_outbox_until_released() {
    let mut c = cell(4);
    let mut s = scratch();
    let (id, _peer) = open_conn(&mut c, false);
    c.io.hold_output(id);
    c.io.send_with(id, |o| o.extend_from_slice(&frame(b"first")))
        .unwrap();
    c.io.send_with(id, |o| o.extend_from_slice(&frame(b"second")))
        .unwrap();
    c.flush_dirty(&mut s);
    let slot = c.io.conns.get(id).unwrap();
    assert_eq!(slot.outbox.len(), 2 * 4 + 11, "held: nothing staged");
    assert_eq!(slot.wire.unsent(), 0);
    c.io.release_output(id);
    c.flush_dirty(&mut s);
    let slot = c.io.conns.get(id).unwrap();
    assert!(slot.outbox.is_empty(), "released: staged for sending");
    assert_eq!(slot.wire.unsent(), 2 * 4 + 11);

    // A close drops what is held.
    let (other, _peer2) = open_conn(&mut c, false);
    c.io.hold_output(other);
    c.io.send_with(other, |o| o.extend_from_slice(&frame(b"held")))
        .unwrap();
    c.io.close(other).unwrap();
    c.flush_dirty(&mut s);
    assert!(c.io.conns.get(other).is_none_or(|s| s.wire.unsent() == 0));

    // The cap still applies while held.
    c.io.hold_output(id);
    let big = vec![0u8; CONN_OUTPUT_BYTES_MAX + 1];
    c.io.send_with(id, |o| o.extend_from_slice(&big)).unwrap();
    assert_eq!(
        c.io.conns.get(id).unwrap().state,
        SlotState::Closing(CloseReason::OutputOverflow)
    );
    done();
}

/// Issue 27: a send buffer goes back to the shard's spares when its send completes; the
/// next frame to any connection with no output is written into it (no allocation per
/// frame), and a connection left idle keeps no buffer, even after a write of nothing.
#[test]
fn send_buffers_are_reused_and_an_idle_connection_keeps_none() {
    let mut c = cell(4);
    let mut s = scratch();
    let (a, _pa) = open_conn(&mut c, false);
    let (b, _pb) = open_conn(&mut c, false);
    let one = frame(b"one");
    c.io.send_with(a, |out| out.extend_from_slice(&one))
        .unwrap();
    c.flush_dirty(&mut s);
    assert!(c.io.spare_bufs.is_empty(), "the buffer is in flight");
    c.on_send(a.index(), completion(one.len() as i32));
    assert_eq!(c.io.spare_bufs.len(), 1, "back once sent");
    let kept = c.io.spare_bufs[0].as_ptr();
    let two = frame(b"two");
    let written_at = c.io.send_with(b, |out| {
        out.extend_from_slice(&two);
        out.as_ptr()
    });
    assert_eq!(written_at.unwrap(), kept, "the spare buffer, not a new one");
    assert!(c.io.spare_bufs.is_empty());
    c.flush_dirty(&mut s);
    c.on_send(b.index(), completion(two.len() as i32));
    c.io.send_with(a, |_| {}).unwrap();
    c.flush_dirty(&mut s);
    assert_eq!(
        c.io.spare_bufs.len(),
        1,
        "an empty outbox gives its buffer back"
    );
    for id in [a, b] {
        let slot = c.io.conns.get(id).unwrap();
        assert_eq!(slot.outbox.capacity(), 0, "idle: no buffer held");
        assert_eq!(slot.wire.unsent(), 0);
    }
    done();
}

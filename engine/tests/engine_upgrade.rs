//! A live upgrade at the engine's level, in one test process: a runtime departs (its
//! connections detach, its listeners stay open), the departure crosses a unix socket as
//! the blob and its descriptors, and a second runtime, a new generation of the service,
//! takes everything over. Clients keep their sockets, plaintext and TLS, and a frame begun
//! before the move finishes after it. A hand-over that is refused leaves the first
//! generation free to take its own connections back.

mod support;

use std::os::unix::net::UnixStream;
use std::sync::Arc;

use engine::upgrade::depart::Departure;
use engine::upgrade::fds;
use engine::{CloseReason, Service, ShardIo};
use proto::ids::{ConnId, ShardId};
use testkit::FrameClient;

/// Answers text commands with its generation, and keeps a name per connection:
/// - `ping` → `pong:<generation>`;
/// - `login:<name>` → `ok`, the name is this connection's session (it moves with it);
/// - `who` → the session's name (or `nobody`);
/// - `stay` → `ok`, and this connection will not move (it closes at the upgrade).
struct Gen {
    generation: u32,
    names: std::collections::HashMap<ConnId, String>,
    staying: std::collections::HashSet<ConnId>,
}

impl Service for Gen {
    type Msg = ();
    type Adopt = ();
    type Timer = ();

    fn on_open(&mut self, _io: &mut ShardIo<Self>, _conn: ConnId) {}

    fn on_frame(&mut self, io: &mut ShardIo<Self>, conn: ConnId, payload: &[u8]) {
        let text = String::from_utf8_lossy(payload);
        let reply = if text == "ping" {
            format!("pong:{}", self.generation)
        } else if let Some(name) = text.strip_prefix("login:") {
            self.names.insert(conn, name.to_string());
            "ok".into()
        } else if text == "who" {
            self.names.get(&conn).cloned().unwrap_or("nobody".into())
        } else if text == "stay" {
            self.staying.insert(conn);
            "ok".into()
        } else {
            format!("unknown:{text}")
        };
        io.send_with(conn, |out| {
            out.extend_from_slice(&testkit::frame(reply.as_bytes()))
        })
        .unwrap();
    }

    fn on_close(&mut self, _io: &mut ShardIo<Self>, conn: ConnId, _reason: CloseReason) {
        self.names.remove(&conn);
    }

    fn on_mesh(&mut self, _io: &mut ShardIo<Self>, _from: ShardId, _msg: ()) {}

    fn on_adopt(&mut self, _io: &mut ShardIo<Self>, _from: ShardId, _conn: ConnId, _a: ()) {}

    fn on_timer(&mut self, _io: &mut ShardIo<Self>, _t: ()) {}

    fn depart(&mut self, _io: &mut ShardIo<Self>, conn: ConnId) -> Option<Vec<u8>> {
        if self.staying.contains(&conn) {
            return None;
        }
        Some(
            self.names
                .get(&conn)
                .cloned()
                .unwrap_or_default()
                .into_bytes(),
        )
    }

    fn on_arrive(&mut self, _io: &mut ShardIo<Self>, conn: ConnId, session: &[u8]) {
        if !session.is_empty() {
            self.names
                .insert(conn, String::from_utf8_lossy(session).into_owned());
        }
    }
}

fn config(tls: Option<Arc<rustls::ServerConfig>>) -> engine::EngineConfig {
    let mut cfg = support::config(2);
    cfg.tls = tls;
    cfg
}

fn generation(g: u32) -> impl Fn(ShardId) -> Gen + Send + Sync + 'static {
    move |_| Gen {
        generation: g,
        names: Default::default(),
        staying: Default::default(),
    }
}

/// The departure through a unix socket and back, as two processes would pass it; `shards`
/// is what the receiving side runs.
fn across_a_socket(d: &Departure, shards: u32) -> Result<Departure, String> {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let (blob, fds_out) = d.to_hand_over();
    std::thread::scope(|s| {
        s.spawn(|| fds::send(&mut a, &blob, &fds_out).unwrap());
        let (blob, fds_in) = fds::recv(&mut b, 1 << 30, 1 << 20).unwrap();
        Departure::from_hand_over(&blob, fds_in, shards).map_err(|e| e.to_string())
    })
}

fn upgrade_keeps_every_connection(tls: bool) {
    let (server_tls, cert) = support::dev_tls();
    let cfg = config(tls.then_some(server_tls));
    let old = engine::start(cfg.clone(), generation(1)).expect("start");
    let addr = old.local_addr();
    let connect = || {
        if tls {
            FrameClient::tls(addr, &cert)
        } else {
            FrameClient::plain(addr)
        }
    };
    let mut clients: Vec<FrameClient> = (0..6).map(|_| connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("login:user{i}").as_bytes());
        assert_eq!(c.recv_text(), "ok");
    }
    let mut stays = connect();
    stays.send(b"stay");
    assert_eq!(stays.recv_text(), "ok");
    // Half a frame before the upgrade: its other half comes after.
    let ping = testkit::frame(b"ping");
    clients[0].write_raw(&ping[..5]);

    let departure = old.depart().expect("depart");
    assert_eq!(departure.conns(), 6, "every logged-in connection departs");
    let taken = across_a_socket(&departure, 2).expect("the new generation takes it");
    let new = engine::start_from(cfg, generation(2), Some(taken)).expect("start_from");
    drop(departure); // the old process lets go of its descriptors
    assert_eq!(new.local_addr(), addr);

    clients[0].write_raw(&ping[5..]);
    assert_eq!(
        clients[0].recv_text(),
        "pong:2",
        "the frame begun before the move"
    );
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(b"who");
        assert_eq!(c.recv_text(), format!("user{i}"), "the session moved");
        c.send(b"ping");
        assert_eq!(c.recv_text(), "pong:2");
    }
    assert!(stays.is_closed(), "what the service does not move closes");
    let mut fresh = connect();
    fresh.send(b"ping");
    assert_eq!(fresh.recv_text(), "pong:2", "the listener moved too");
    new.stop();
    new.join().unwrap();
}

#[test]
fn a_live_upgrade_keeps_every_plaintext_connection() {
    upgrade_keeps_every_connection(false);
}

#[test]
fn a_live_upgrade_keeps_every_tls_connection() {
    upgrade_keeps_every_connection(true);
}

#[test]
fn a_refused_hand_over_leaves_the_old_generation_to_take_its_connections_back() {
    let cfg = config(None);
    let old = engine::start(cfg.clone(), generation(1)).expect("start");
    let addr = old.local_addr();
    let mut c = FrameClient::plain(addr);
    c.send(b"login:kept");
    assert_eq!(c.recv_text(), "ok");
    let departure = old.depart().expect("depart");
    // A new binary that would run three shards refuses, saying why.
    let why = across_a_socket(&departure, 3).unwrap_err();
    assert!(why.contains("shard count cannot change"), "{why}");
    // The old process takes back what it departed (its own service state rebuilt).
    let back = engine::start_from(cfg, generation(1), Some(departure)).expect("take back");
    c.send(b"who");
    assert_eq!(c.recv_text(), "kept");
    c.send(b"ping");
    assert_eq!(c.recv_text(), "pong:1");
    back.stop();
    back.join().unwrap();
}

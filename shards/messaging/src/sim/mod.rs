//! A simulated cluster for tests: N shard states, an in-memory mesh, connections that are
//! just ids, fake time, and durability that happens when the test says so. Every service
//! rule can be driven here deterministically, without sockets or files.

#[cfg(test)]
mod abuse;
#[cfg(test)]
mod admission;
#[cfg(test)]
mod dedupe;
/// Random event streams against a simulated cluster (fuzz targets, property tests).
pub mod fuzz;
#[cfg(test)]
mod groups;
pub mod journal;
#[cfg(test)]
mod media;
#[cfg(test)]
mod presence;

use std::collections::{HashMap, HashSet, VecDeque};

use proto::ids::{ConnId, ShardId};
use proto::v1::{client_frame, server_frame, ClientFrame};

use crate::state::effect::{AfterCommit, Effect, Out};
use crate::state::mesh_msg::ShardMsg;
use crate::state::{ServiceSettings, ShardState};

/// A simulated cluster.
pub struct Sim {
    pub shards: Vec<ShardState>,
    /// Where each connection lives now (it moves on handoff).
    pub conn_shard: HashMap<ConnId, usize>,
    /// Frames each connection received.
    pub inbox: HashMap<ConnId, Vec<server_frame::Kind>>,
    pub closed: Vec<ConnId>,
    /// Connections whose `on_close` has run: a frame to one of them is a service bug.
    pub dead: HashSet<ConnId>,
    /// Frames kept for connections whose output is held (`Effect::HoldOutput`).
    held: HashMap<ConnId, Vec<server_frame::Kind>>,
    /// Post-commit replies addressed to a connection that closed before the commit.
    pub replies_after_close: u64,
    pub pushes: Vec<String>,
    pub sms: Vec<(String, String)>,
    mesh: VecDeque<(usize, ShardMsg)>,
    /// Effects waiting for "durability", per shard.
    waiting: Vec<Vec<AfterCommit>>,
    /// Every record each shard appended, in order: its log (see `restart`).
    pub logs: Vec<Vec<crate::durable::record::Record>>,
    settings: ServiceSettings,
    pub now: u64,
    /// Connections handed between shards so far.
    pub handoffs: u64,
    /// Sends refused with `Busy`, summed from every event's `Out`.
    pub busy_refusals: u64,
    /// Each connection's peer address (what the engine's slot holds).
    peers: HashMap<ConnId, std::net::IpAddr>,
    next_conn: u64,
    /// Mesh messages sent so far (fan-out is measured by it).
    pub mesh_sent: u64,
    /// The real journal over in-memory files ([`Sim::with_journal`]); `None`: durability
    /// is `commit`'s alone and `logs` holds every record appended.
    journaled: Option<journal::Journaled>,
}

impl Sim {
    /// `n` shards with load-test logins (secret `s`) and the media service on (so random
    /// frames reach slot grants and download signing).
    pub fn new(n: usize) -> Sim {
        Sim::with_settings(
            n,
            ServiceSettings {
                load_test_secret: Some(b"s".to_vec()),
                media: Some(crate::media::settings::MediaSettings {
                    key: crate::media::token::MediaKey::new(&[5; 32]),
                    base_url: "https://media.test".into(),
                    object_bytes_max: crate::media::settings::MEDIA_OBJECT_BYTES_MAX_DEFAULT,
                    retention_ms: crate::media::settings::MEDIA_RETENTION_MS_DEFAULT,
                }),
                ..ServiceSettings::default()
            },
        )
    }

    /// A cluster of `n` shards with these settings.
    pub fn with_settings(n: usize, settings: ServiceSettings) -> Sim {
        let now = 1_800_000_000_000;
        let shards = (0..n)
            .map(|i| ShardState::new(ShardId(i), n, settings.clone(), seeded(1), now))
            .collect();
        Sim {
            logs: (0..n).map(|_| Vec::new()).collect(),
            settings,
            shards,
            conn_shard: HashMap::new(),
            inbox: HashMap::new(),
            closed: Vec::new(),
            dead: HashSet::new(),
            held: HashMap::new(),
            replies_after_close: 0,
            pushes: Vec::new(),
            sms: Vec::new(),
            mesh: VecDeque::new(),
            waiting: (0..n).map(|_| Vec::new()).collect(),
            now,
            handoffs: 0,
            busy_refusals: 0,
            peers: HashMap::new(),
            next_conn: 1,
            mesh_sent: 0,
            journaled: None,
        }
    }

    /// A new connection accepted by `shard`, from an address of its own in a /24 of its own
    /// (10.x.y.1), so budgets per source and prefix never join two `connect`s.
    pub fn connect(&mut self, shard: usize) -> ConnId {
        let n = self.next_conn;
        let peer = std::net::Ipv4Addr::new(10, (n >> 8) as u8, n as u8, 1);
        self.connect_from(shard, peer.into())
    }

    /// A new connection from `peer` accepted by `shard`.
    pub fn connect_from(&mut self, shard: usize, peer: std::net::IpAddr) -> ConnId {
        let c = ConnId::from_u64(self.next_conn);
        self.next_conn += 1;
        self.conn_shard.insert(c, shard);
        self.peers.insert(c, peer);
        c
    }

    /// `conn` sends a frame; the cluster runs until quiet (durability not included).
    pub fn send(&mut self, conn: ConnId, kind: client_frame::Kind) {
        self.send_frame(conn, ClientFrame { kind: Some(kind) });
    }

    /// `conn` sends a whole frame (which may carry no kind).
    pub fn send_frame(&mut self, conn: ConnId, frame: ClientFrame) {
        let shard = self.conn_shard[&conn];
        if crate::handlers::login::is_prelogin(&frame) {
            // As the adapter does, from the engine's slot.
            self.shards[shard].note_peer(conn, self.peers.get(&conn).copied());
        }
        let mut out = Out::default();
        self.shards[shard].on_frame(self.now, conn, frame, &mut out);
        self.apply(shard, out);
        self.run();
    }

    /// Closes `conn`.
    pub fn close(&mut self, conn: ConnId) {
        self.dead.insert(conn);
        self.held.remove(&conn); // as the engine drops a closed connection's held output
        let shard = self.conn_shard[&conn];
        let mut out = Out::default();
        self.shards[shard].on_close(self.now, conn, &mut out);
        self.apply(shard, out);
        self.run();
    }

    /// Makes everything durable and runs until quiet.
    pub fn commit(&mut self) {
        loop {
            let mut any = false;
            for shard in 0..self.shards.len() {
                if let Some(j) = &mut self.journaled {
                    let released = j.write(shard);
                    self.waiting[shard].extend(released);
                }
                for a in std::mem::take(&mut self.waiting[shard]) {
                    any = true;
                    if let AfterCommit::Effect(Effect::Frame(c, _)) = &a {
                        if self.dead.contains(c) {
                            // A reply to the connection that asked (GroupCreated, Verified),
                            // released after the commit: that connection closed meanwhile.
                            // The engine drops it too (generation-tagged ids never reach a
                            // newer connection).
                            self.replies_after_close += 1;
                            continue;
                        }
                    }
                    let mut out = Out::default();
                    self.shards[shard].on_durable(a, &mut out);
                    self.apply(shard, out);
                }
            }
            self.run();
            if !any {
                return;
            }
        }
    }

    /// Frames `conn` received since the last call.
    pub fn take(&mut self, conn: ConnId) -> Vec<server_frame::Kind> {
        self.inbox.remove(&conn).unwrap_or_default()
    }

    /// A crash and restart of every shard at `now`: what was not committed is lost (frames,
    /// mesh messages, answers waiting for durability), every connection is gone, and each
    /// shard replays its log (every record appended before the crash: the log as the kernel
    /// has it, synced or not).
    pub fn restart(&mut self) {
        let n = self.shards.len();
        self.mesh.clear();
        self.waiting.iter_mut().for_each(Vec::clear);
        self.held.clear();
        if let Some(j) = &mut self.journaled {
            j.crash();
        }
        self.dead.extend(self.conn_shard.keys().copied());
        self.conn_shard.clear();
        for i in 0..n {
            let mut fresh =
                ShardState::new(ShardId(i), n, self.settings.clone(), seeded(2), self.now);
            match &mut self.journaled {
                Some(j) => j.replay(i, &mut fresh),
                None => fresh.replay(self.logs[i].clone()),
            }
            self.shards[i] = fresh;
        }
    }

    fn apply(&mut self, shard: usize, out: Out) {
        self.busy_refusals += out.busy_refusals;
        let after = match &mut self.journaled {
            Some(j) => j.add(shard, out.records, out.after_commit),
            None => {
                self.logs[shard].extend(out.records);
                out.after_commit
            }
        };
        for e in out.now {
            self.exec(shard, e);
        }
        self.waiting[shard].extend(after);
    }

    fn exec(&mut self, shard: usize, e: Effect) {
        match e {
            Effect::Frame(c, f) => {
                assert!(
                    !self.dead.contains(&c),
                    "frame to closed connection {c:?}: {f:?}"
                );
                assert_eq!(
                    self.conn_shard.get(&c),
                    Some(&shard),
                    "frames only to local connections"
                );
                match self.held.get_mut(&c) {
                    Some(kept) => kept.push(f),
                    None => self.inbox.entry(c).or_default().push(f),
                }
            }
            Effect::Wire(c, w) => {
                // Delivered as encoded bytes: the client decodes them.
                let f = proto::codec::decode_server(&w.bytes)
                    .ok()
                    .and_then(|f| f.kind)
                    .expect("an item's encoding decodes");
                self.exec(shard, Effect::Frame(c, f));
            }
            Effect::Close(c) => self.closed.push(c),
            Effect::Mesh(to, m) => {
                self.mesh_sent += 1;
                self.mesh.push_back((to.0, m));
            }
            Effect::HandOff(c, to, a) => {
                self.handoffs += 1;
                self.conn_shard.insert(c, to.0);
                let mut out = Out::default();
                self.shards[to.0].on_adopt(self.now, c, *a, &mut out);
                self.apply(to.0, out);
            }
            Effect::Sms {
                conn,
                phone,
                pin,
                on_sent,
            } => {
                // The simulated gateway sends every PIN at once.
                self.sms.push((phone, pin));
                self.exec(shard, Effect::Frame(conn, on_sent));
            }
            Effect::Push { phone, .. } => self.pushes.push(phone),
            Effect::LoggedIn(_) => {}
            Effect::HoldOutput(c) => {
                self.held.entry(c).or_default();
            }
            Effect::ReleaseOutput(c) => {
                if let Some(kept) = self.held.remove(&c) {
                    self.inbox.entry(c).or_default().extend(kept);
                }
            }
        }
    }

    /// `msg` arrives at `shard` from outside the shards (as a cluster gateway hands one in)
    /// and everything it causes runs.
    pub fn from_outside(&mut self, shard: usize, msg: ShardMsg) {
        self.mesh.push_back((shard, msg));
        self.run();
    }

    fn run(&mut self) {
        while let Some((to, msg)) = self.mesh.pop_front() {
            let mut out = Out::default();
            self.shards[to].on_mesh(self.now, msg, &mut out);
            self.apply(to, out);
        }
    }

    /// A live upgrade's arrival (after a [`Sim::restart`], the next process): a new
    /// connection on `shard` carrying `session`, what `ShardState::departing_session` gave.
    pub fn arrive(&mut self, shard: usize, session: &[u8]) -> ConnId {
        let c = self.connect(shard);
        let mut out = Out::default();
        self.shards[shard].on_arrive(c, session, &mut out);
        self.apply(shard, out);
        self.run();
        c
    }

    /// Logs `phone` in with the load-test path on a new connection at `shard`.
    pub fn login(&mut self, phone: &str, shard: usize) -> ConnId {
        let c = self.connect(shard);
        self.send(
            c,
            client_frame::Kind::LoadTestLogin(proto::v1::LoadTestLogin {
                protocol_version: proto::PROTOCOL_VERSION,
                phone: phone.into(),
                secret: b"s".to_vec(),
            }),
        );
        self.commit();
        let mut frames = self.take(c);
        assert!(matches!(
            frames.first(),
            Some(server_frame::Kind::LoggedIn(_))
        ));
        frames.remove(0);
        self.inbox.insert(c, frames);
        c
    }

    /// Logs `phone` in on `shard` and lets anyone add it to groups (`GroupPrivacy`
    /// EVERYONE; by default only its contacts may).
    pub fn login_open_to_groups(&mut self, phone: &str, shard: usize) -> ConnId {
        let c = self.login(phone, shard);
        self.send(
            c,
            client_frame::Kind::GroupPrivacy(proto::v1::GroupPrivacy {
                who_can_add: proto::v1::GroupAddPolicy::Everyone as i32,
            }),
        );
        c
    }
}

/// A deterministic random source (xorshift from `seed`).
fn seeded(mut seed: u64) -> crate::state::RandomSource {
    Box::new(move |buf: &mut [u8]| {
        for b in buf {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
    })
}

pub fn text(to: &str, id: u64) -> client_frame::Kind {
    client_frame::Kind::Send(proto::v1::SendMessage {
        to: to.into(),
        client_msg_id: id,
        body: vec![b'x'].into(),
        media: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::record::Record;

    /// +15550000001 (on shard 0) sends `n` messages to +15550000002, who logged in once and
    /// left, and they are committed; returns the sender's connection.
    fn sends_to_offline(sim: &mut Sim, n: u64) -> ConnId {
        let a = sim.login("+15550000001", 0);
        let b = sim.login("+15550000002", 0);
        sim.close(b);
        for id in 1..=n {
            sim.send(a, text("+15550000002", id));
        }
        sim.commit();
        a
    }

    #[test]
    fn a_send_refused_busy_comes_back_in_the_events_out() {
        let mut sim = Sim::new(2);
        let a = sim.login("+15550000001", 0);
        let home_a = sim.shards[0].home("+15550000001");
        let to = (2..10)
            .map(|i| format!("+1555000000{i}"))
            .find(|p| sim.shards[0].home(p) != home_a)
            .expect("a phone homed on the other shard");
        sim.login(&to, 0);
        // The sender's own home is overloaded: refused before it leaves.
        sim.shards[home_a.0].set_busy(Some(100));
        sim.send(a, text(&to, 1));
        assert!(matches!(&sim.take(a)[..], [server_frame::Kind::Busy(_)]));
        assert_eq!(sim.busy_refusals, 1);
        // Only the recipient's home is: refused there, answered through the mesh.
        sim.shards[home_a.0].set_busy(None);
        sim.shards[1 - home_a.0].set_busy(Some(100));
        sim.send(a, text(&to, 2));
        assert!(matches!(&sim.take(a)[..], [server_frame::Kind::Busy(_)]));
        assert_eq!(sim.busy_refusals, 2);
    }

    #[test]
    fn delivery_does_not_wait_for_the_disk_but_the_server_ack_does() {
        let mut sim = Sim::new(3);
        let a = sim.login("+15550000001", 0);
        let b = sim.login("+15550000002", 1);
        sim.send(a, text("+15550000002", 7));
        assert!(sim.take(a).is_empty(), "no ServerAck before durability");
        match &sim.take(b)[..] {
            [server_frame::Kind::Message(m)] => {
                assert_eq!(m.client_msg_id, 7, "the sender's id travels with it")
            }
            other => panic!("expected the message at once, got {other:?}"),
        }
        sim.commit();
        assert!(matches!(
            sim.take(a)[..],
            [server_frame::Kind::ServerAck(_)]
        ));
        assert!(sim.take(b).is_empty(), "delivered once");
    }

    #[test]
    fn an_ack_before_durability_answers_the_sender_then_reports_delivered_once() {
        let mut sim = Sim::new(3);
        let a = sim.login("+15550000001", 0);
        let b = sim.login("+15550000002", 1);
        sim.send(a, text("+15550000002", 1));
        let [server_frame::Kind::Message(m)] = &sim.take(b)[..] else {
            panic!("expected the message");
        };
        sim.send(
            b,
            client_frame::Kind::Ack(proto::v1::Ack {
                server_msg_ids: vec![m.server_msg_id],
            }),
        );
        match &sim.take(a)[..] {
            [server_frame::Kind::ServerAck(x), server_frame::Kind::Receipt(r)] => {
                assert_eq!(x.server_msg_id, m.server_msg_id);
                assert_eq!(r.server_msg_id, m.server_msg_id);
            }
            other => panic!("expected ServerAck then DELIVERED, before any sync: {other:?}"),
        }
        sim.commit();
        assert!(sim.take(a).is_empty(), "answered once");
    }

    #[test]
    fn push_is_sent_once_per_burst_and_rearmed_by_login() {
        let mut sim = Sim::new(2);
        let a = sends_to_offline(&mut sim, 5);
        assert_eq!(
            sim.pushes,
            vec!["+15550000002".to_string()],
            "one push for the burst"
        );
        let b = sim.login("+15550000002", 1);
        assert_eq!(sim.take(b).len(), 5);
        sim.close(b);
        sim.send(a, text("+15550000002", 6));
        sim.commit();
        assert_eq!(
            sim.pushes.len(),
            2,
            "a new burst after a login pushes again"
        );
    }

    #[test]
    fn replay_of_the_snapshot_rebuilds_queues_and_dedupe() {
        let mut sim = Sim::new(1);
        let a = sends_to_offline(&mut sim, 3);
        let acked: Vec<u64> = sim
            .take(a)
            .into_iter()
            .filter_map(|f| match f {
                server_frame::Kind::ServerAck(x) => Some(x.server_msg_id),
                _ => None,
            })
            .collect();
        assert_eq!(acked.len(), 3);
        let snapshot = sim.shards[0].snapshot();
        let mut fresh = Sim::new(1);
        fresh.shards[0].replay(snapshot);
        assert_eq!(fresh.shards[0].queued_total(), 3);
        // A retry of message 2 after the "restart" gets the same id and stores nothing.
        let a2 = fresh.login("+15550000001", 0);
        fresh.send(a2, text("+15550000002", 2));
        fresh.commit();
        match &fresh.take(a2)[..] {
            [server_frame::Kind::ServerAck(x)] => assert_eq!(x.server_msg_id, acked[1]),
            other => panic!("expected one ServerAck, got {other:?}"),
        }
        assert_eq!(fresh.shards[0].queued_total(), 3);
    }

    #[test]
    fn a_snapshot_keeps_new_ids_above_every_issued_one_when_the_clock_steps_back() {
        let mut sim = Sim::new(1);
        sends_to_offline(&mut sim, 3);
        let issued = sim.shards[0].ids.issue();
        // What compaction keeps once the items and their dedupe entries are gone: the mark.
        let marks: Vec<Record> = sim.shards[0]
            .snapshot()
            .into_iter()
            .filter(|r| {
                matches!(
                    r.kind,
                    Some(crate::durable::record::record::Kind::IdMark(_))
                )
            })
            .collect();
        assert_eq!(marks.len(), 1, "every snapshot carries the id mark");
        // A restart an hour earlier by the wall clock (stepped back).
        let random: crate::state::RandomSource = Box::new(|buf: &mut [u8]| buf.fill(7));
        let mut fresh = ShardState::new(
            ShardId(0),
            1,
            ServiceSettings::default(),
            random,
            sim.now - 3_600_000,
        );
        fresh.replay(marks);
        assert!(
            fresh.ids.issue() > issued,
            "an id issued before the restart would be issued again"
        );
    }

    #[test]
    fn an_id_delivered_before_durability_is_not_issued_again_after_a_crash() {
        let (a_phone, b_phone, c_phone) = ("+15550000001", "+15550000002", "+15550000003");
        let mut sim = Sim::new(1);
        let a = sim.login(a_phone, 0);
        let b = sim.login(b_phone, 0);
        sim.login(c_phone, 0);
        // The most a log can hold at the crash: a snapshot, id mark included.
        let durable = sim.shards[0].snapshot();
        sim.send(a, text(b_phone, 1));
        let [server_frame::Kind::Message(m1)] = &sim.take(b)[..] else {
            panic!("delivered before durable");
        };
        // SIGKILL before m1's record is durable (A got no ServerAck: fine). B's phone holds
        // m1 under its server id. The restart finds the clock stepped back an hour.
        let mut fresh = Sim::new(1);
        let random: crate::state::RandomSource = Box::new(|buf: &mut [u8]| buf.fill(7));
        let settings = ServiceSettings {
            load_test_secret: Some(b"s".to_vec()),
            ..ServiceSettings::default()
        };
        fresh.shards[0] = ShardState::new(ShardId(0), 1, settings, random, sim.now - 3_600_000);
        fresh.shards[0].replay(durable);
        let c = fresh.login(c_phone, 0);
        fresh.send(c, text(b_phone, 1));
        fresh.commit();
        let b2 = fresh.login(b_phone, 0);
        let [server_frame::Kind::Message(m2)] = &fresh.take(b2)[..] else {
            panic!("C's message queued for B");
        };
        // B's phone now holds two different messages under one server id: its Read or Ack
        // of m1 (sent late, after a reconnect) would remove m2 and tell C it was read.
        assert_ne!(
            m2.server_msg_id, m1.server_msg_id,
            "a server id B's phone already holds was issued again"
        );
    }

    #[test]
    fn login_on_a_foreign_shard_hands_the_connection_home() {
        let mut sim = Sim::new(4);
        let phone = "+15550000009";
        let home = crate::state::home::home_of_phone(phone, 4).0;
        let other = (home + 1) % 4;
        let c = sim.login(phone, other);
        assert_eq!(sim.conn_shard[&c], home);
    }

    #[test]
    fn group_created_reaches_the_session_that_is_current_at_commit() {
        let mut sim = Sim::new(2);
        sim.login_open_to_groups("+15550000002", 1);
        let a = sim.login("+15550000001", 0);
        sim.send(
            a,
            client_frame::Kind::GroupCreate(proto::v1::GroupCreate {
                client_req_id: 3,
                name: "g".into(),
                members: vec!["+15550000002".into()],
            }),
        );
        sim.close(a);
        let a2 = sim.login("+15550000001", 1);
        sim.commit();
        assert!(sim.take(a).is_empty());
        assert!(matches!(
            sim.take(a2)[..],
            [server_frame::Kind::GroupCreated(proto::v1::GroupCreated {
                client_req_id: 3,
                ..
            })]
        ));
    }

    #[test]
    fn a_sent_body_is_queued_in_the_buffer_it_was_decoded_into() {
        use prost::Message as _;
        let mut sim = Sim::new(1);
        let a = sim.login("+15550000001", 0);
        let b = sim.login("+15550000002", 0);
        sim.close(b);
        let send = proto::v1::SendMessage {
            to: "+15550000002".into(),
            client_msg_id: 1,
            body: vec![7; 64].into(),
            media: None,
        };
        let wire = ClientFrame {
            kind: Some(client_frame::Kind::Send(send)),
        }
        .encode_to_vec();
        let frame = proto::codec::decode_client(&wire).unwrap();
        let Some(client_frame::Kind::Send(s)) = &frame.kind else {
            panic!("a send");
        };
        let decoded = s.body.as_ptr();
        sim.send_frame(a, frame);
        let items: Vec<_> = sim.shards[0].queues().iter().collect();
        let [(_, item)] = items[..] else {
            panic!("one item queued: {items:?}");
        };
        assert_eq!(item.body(), &[7; 64][..]);
        // One allocation from the wire to the queue: decode's, kept by the item.
        assert_eq!(item.body().as_ptr(), decoded);
    }

    #[test]
    fn a_send_that_names_no_phone_past_validation_is_refused_not_lost() {
        // `proto::validate` refuses it first; should one get by, the sender hears why.
        let mut sim = Sim::new(1);
        let a = sim.login("+15550000001", 0);
        sim.take(a);
        sim.send(a, text("+0123", 9));
        let frames = sim.take(a);
        assert!(
            matches!(&frames[..], [server_frame::Kind::Error(e)]
                if e.code == proto::v1::ErrorCode::BadPhone as i32 && e.client_msg_id == 9),
            "{frames:?}"
        );
    }

    #[test]
    fn a_delivery_box_is_kept_emptied_for_the_next_send_and_the_spares_are_bounded() {
        let mut sim = Sim::new(1);
        let a = sim.login("+15550000001", 0);
        let b = sim.login("+15550000002", 0);
        sim.send(a, text("+15550000002", 1));
        let kept = |sim: &Sim| sim.shards[0].spare_deliveries.len();
        assert_eq!(kept(&sim), 1, "the delivered message's box");
        assert!(sim.shards[0].spare_deliveries[0].body.is_empty());
        sim.send(a, text("+15550000002", 2));
        assert_eq!(kept(&sim), 1, "taken by the send, kept again at delivery");
        assert_eq!(sim.take(b).len(), 2);
        let many = crate::handlers::route::SPARE_DELIVERIES_MAX + 3;
        sim.shards[0].spare_deliveries.clear();
        for n in 0..many {
            let d = crate::state::mesh_msg::Delivery {
                to: crate::state::home::Phone::parse("+15550000002"),
                from: crate::state::home::Phone::parse("+15550000003").unwrap(),
                device: 0,
                client_msg_id: n as u64 + 10,
                group_id: 0,
                body: vec![b'x'].into(),
                media: None,
                media_base: None,
                sent_at_ms: 0,
                reply: crate::state::mesh_msg::ReplyTo::Sender,
            };
            sim.from_outside(0, ShardMsg::Deliver(Box::new(d)));
        }
        assert_eq!(kept(&sim), crate::handlers::route::SPARE_DELIVERIES_MAX);
    }
}

//! Randomized driving of the simulated cluster ([`crate::sim`]): many fake connections on
//! several shards send frames (structured random ones, or whatever bytes a fuzzer gives),
//! connect, log in, disconnect, commit and flip overload, and the service's invariants are
//! checked as it goes. Used by the bounded in-suite run (tests at the bottom) and by the
//! `service` cargo-fuzz target (`fuzz/`), which calls [`run_bytes`].
//!
//! Invariants checked:
//! - no panic, whatever the frames;
//! - no frame to a connection after its `on_close` (asserted in `Sim`);
//! - frames only to connections on the shard that sends them (asserted in `Sim`);
//! - no user's queue holds more than `QUEUE_ITEMS_PER_USER_MAX` items;
//! - every `ServerAck`ed 1:1 message is in its recipient's queue, or that recipient acked it;
//! - no more sessions than live connections.

use std::collections::{HashMap, HashSet};

use proto::ids::ConnId;
use proto::v1::{client_frame::Kind as K, server_frame, ClientFrame};

use crate::sim::Sim;
use crate::state::limits::QUEUE_ITEMS_PER_USER_MAX;

/// A small xorshift PRNG: deterministic, no dependencies.
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What one run saw.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub frames: u64,
    pub server_acks: u64,
    pub busy: u64,
    pub errors: u64,
    pub messages: u64,
    pub closes: u64,
    pub logins: u64,
}

/// The cluster and what the fake clients know.
pub struct Harness {
    pub sim: Sim,
    pub stats: Stats,
    rng: XorShift,
    /// Connections not yet closed, with the phone logged in on each (if any).
    live: Vec<(ConnId, Option<String>)>,
    /// Phones the clients use.
    phones: Vec<String>,
    /// (sender, client_msg_id) → recipient, for 1:1 sends (retries reuse the pair).
    sends: HashMap<(String, u64), String>,
    next_cid: u64,
    /// Recent 1:1 sends, resent as retries.
    recent_sends: Vec<proto::v1::SendMessage>,
    /// ServerAck'd 1:1 messages: (recipient, server id).
    server_acked: Vec<(String, u64)>,
    /// (user, server id) pairs users acked.
    client_acked: HashSet<(String, u64)>,
    /// Server ids seen in delivered frames (acks pick from these).
    seen_ids: Vec<u64>,
    groups: Vec<u64>,
    /// LoadTestLogin sent on a connection, waiting for LoggedIn.
    logging_in: HashMap<ConnId, String>,
}

impl Harness {
    /// A cluster of `shards` with a pool of `phones` users, driven by `seed`.
    pub fn new(shards: usize, phones: usize, seed: u64) -> Harness {
        Harness::over(Sim::new(shards), phones, seed)
    }

    /// [`Harness::new`] whose durability is the real journal's ([`Sim::with_journal`]).
    pub fn journaled(shards: usize, phones: usize, seed: u64) -> Harness {
        Harness::over(Sim::with_journal(shards), phones, seed)
    }

    fn over(sim: Sim, phones: usize, seed: u64) -> Harness {
        let phones = (0..phones).map(|i| format!("+1555600{i:04}")).collect();
        Harness {
            sim,
            stats: Stats::default(),
            rng: XorShift(seed | 1),
            live: Vec::new(),
            phones,
            sends: HashMap::new(),
            next_cid: 1,
            recent_sends: Vec::new(),
            server_acked: Vec::new(),
            client_acked: HashSet::new(),
            seen_ids: Vec::new(),
            groups: Vec::new(),
            logging_in: HashMap::new(),
        }
    }

    fn shards(&self) -> usize {
        self.sim.shards.len()
    }

    /// A new anonymous connection on a random shard.
    pub fn connect(&mut self) {
        let shard = self.rng.below(self.shards() as u64) as usize;
        let c = self.sim.connect(shard);
        self.live.push((c, None));
    }

    /// A pool phone logs in (load-test path) on a new connection at a random shard.
    pub fn login(&mut self) {
        let phone = self.phones[self.rng.below(self.phones.len() as u64) as usize].clone();
        let shard = self.rng.below(self.shards() as u64) as usize;
        let c = self.sim.connect(shard);
        self.live.push((c, None));
        self.logging_in.insert(c, phone.clone());
        // `LoggedIn` is held until the account is durable: this commit, or a later one when
        // appends fail now (`observe` counts the login then).
        self.sim.send(
            c,
            K::LoadTestLogin(proto::v1::LoadTestLogin {
                protocol_version: proto::PROTOCOL_VERSION,
                phone,
                secret: b"s".to_vec(),
            }),
        );
        self.sim.commit();
        self.settle();
    }

    /// The client side of live connection `i` goes away.
    pub fn disconnect(&mut self, i: usize) {
        if self.live.is_empty() {
            return;
        }
        let (c, _) = self.live.swap_remove(i % self.live.len());
        self.sim.close(c);
        self.stats.closes += 1;
        self.settle();
    }

    /// Makes everything durable.
    pub fn commit(&mut self) {
        self.sim.commit();
        self.settle();
    }

    /// Sets or clears overload on a shard.
    pub fn set_busy(&mut self, shard: usize, busy: bool) {
        let n = self.shards();
        self.sim.shards[shard % n].set_busy(busy.then_some(100));
    }

    /// Live connection `i` sends `frame`, checked as the adapter checks it first.
    pub fn send(&mut self, i: usize, frame: ClientFrame) {
        if self.live.is_empty() {
            return;
        }
        let (c, user) = self.live[i % self.live.len()].clone();
        self.stats.frames += 1;
        if proto::validate::check_client_frame(&frame).is_err() {
            self.stats.errors += 1; // the adapter answers with an error frame
            return;
        }
        // A login whose `LoggedIn` is held (its account not yet durable) already has its
        // session: what it sends meanwhile is that user's.
        let user = user.or_else(|| self.logging_in.get(&c).cloned());
        match (&frame.kind, &user) {
            (Some(K::LoadTestLogin(l)), None) => {
                self.logging_in.insert(c, l.phone.clone());
            }
            (Some(K::Send(s)), Some(u)) => {
                self.sends
                    .entry((u.clone(), s.client_msg_id))
                    .or_insert_with(|| s.to.clone());
            }
            // A Read acks what was not acked yet.
            (Some(K::Ack(proto::v1::Ack { server_msg_ids })), Some(u))
            | (Some(K::Read(proto::v1::Read { server_msg_ids })), Some(u)) => {
                self.client_acked
                    .extend(server_msg_ids.iter().map(|&id| (u.clone(), id)));
            }
            _ => {}
        }
        self.sim.send_frame(c, frame);
        self.settle();
    }

    /// Reads every connection's frames and runs the engine's side of closes.
    fn settle(&mut self) {
        loop {
            let live = self.live.clone();
            for (i, (c, _)) in live.iter().enumerate() {
                for f in self.sim.take(*c) {
                    // Read per frame: a `LoggedIn` earlier in this batch names the user.
                    let user = self.live[i].1.clone();
                    self.observe(i, *c, user.as_deref(), f);
                }
            }
            let closed: Vec<ConnId> = std::mem::take(&mut self.sim.closed);
            if closed.is_empty() {
                return;
            }
            for c in closed {
                if let Some(i) = self.live.iter().position(|(x, _)| *x == c) {
                    self.live.swap_remove(i);
                    self.sim.close(c);
                    self.stats.closes += 1;
                }
            }
        }
    }

    fn observe(&mut self, i: usize, c: ConnId, user: Option<&str>, f: server_frame::Kind) {
        use server_frame::Kind as S;
        match f {
            S::LoggedIn(_) => {
                if let Some(p) = self.logging_in.remove(&c) {
                    self.live[i].1 = Some(p);
                    self.stats.logins += 1;
                }
            }
            S::ServerAck(a) => {
                self.stats.server_acks += 1;
                // Server id 0: a retry of a send stored before, whose id was forgotten
                // (`dedupe.rs`); the original's own ServerAck is the one checked.
                if a.group_id == 0 && a.server_msg_id != 0 {
                    let user = user.expect("ServerAck only to a logged-in connection");
                    let to = self.sends[&(user.to_string(), a.client_msg_id)].clone();
                    self.server_acked.push((to, a.server_msg_id));
                }
            }
            S::Message(m) => {
                self.stats.messages += 1;
                self.seen_ids.push(m.server_msg_id);
            }
            S::Receipt(r) => self.seen_ids.push(r.receipt_id),
            S::GroupCreated(g) => self.groups.push(g.group_id),
            S::Busy(_) => self.stats.busy += 1,
            S::Error(_) => self.stats.errors += 1,
            _ => {}
        }
    }

    /// Checks the invariants that need a look at every shard's state.
    pub fn check(&self) {
        let mut queued: HashSet<(String, u64)> = HashSet::new();
        let mut per_user: HashMap<String, usize> = HashMap::new();
        let mut sessions = 0;
        for s in &self.sim.shards {
            sessions += s.sessions.len();
            for (user, item) in s.queues.iter() {
                queued.insert((user.to_string(), item.id));
                *per_user.entry(user.to_string()).or_default() += 1;
            }
        }
        for (user, n) in per_user {
            assert!(
                n <= QUEUE_ITEMS_PER_USER_MAX,
                "{user}'s queue holds {n} items"
            );
        }
        assert!(
            sessions <= self.live.len(),
            "{sessions} sessions, {} live connections",
            self.live.len()
        );
        // Sends to a number nobody had were accepted and dropped (`route.rs`): their items
        // were logged without a frame, for dedupe only.
        let logged: Vec<crate::durable::record::Record> = match self.sim.journaled() {
            Some(j) => (0..self.shards()).flat_map(|s| j.records(s)).collect(),
            None => self.sim.logs.iter().flatten().cloned().collect(),
        };
        let dropped: HashSet<u64> = (logged.iter())
            .filter_map(|r| match &r.kind {
                Some(crate::durable::record::record::Kind::Item(i)) if i.frame.is_empty() => {
                    Some(i.id)
                }
                _ => None,
            })
            .collect();
        if self.sim.journaled().is_some() {
            // Answered once durable or acked: what was answered and not acked is written.
            let written: HashSet<u64> = (logged.iter())
                .filter_map(|r| match &r.kind {
                    Some(crate::durable::record::record::Kind::Item(i)) => Some(i.id),
                    _ => None,
                })
                .collect();
            for (to, id) in &self.server_acked {
                assert!(
                    written.contains(id) || self.client_acked.contains(&(to.clone(), *id)),
                    "message {id} to {to} was ServerAck'd but never written nor acked"
                );
            }
        }
        for (to, id) in &self.server_acked {
            if dropped.contains(id) {
                assert!(queued.iter().all(|(_, q)| q != id), "{id} was dropped");
                continue;
            }
            assert!(
                queued.contains(&(to.clone(), *id))
                    || self.client_acked.contains(&(to.clone(), *id)),
                "message {id} to {to} was ServerAck'd but is neither queued nor acked by {to}"
            );
        }
    }

    /// A structured random frame, mostly valid, often referring to real users, groups and ids.
    pub fn random_frame(&mut self) -> ClientFrame {
        let r = &mut self.rng;
        let phone = |r: &mut XorShift, phones: &[String]| -> String {
            match r.below(20) {
                0 => "not-a-phone".into(),
                1 => "+15559999999".into(), // never registered
                _ => phones[r.below(phones.len() as u64) as usize].clone(),
            }
        };
        let id = |r: &mut XorShift, seen: &[u64]| -> u64 {
            if !seen.is_empty() && r.chance(80) {
                seen[r.below(seen.len() as u64) as usize]
            } else {
                r.next_u64()
            }
        };
        let body = |r: &mut XorShift| -> Vec<u8> {
            let len = if r.chance(2) {
                proto::limits::BODY_BYTES_MAX + 1
            } else {
                r.below(48) as usize
            };
            vec![b'b'; len]
        };
        use proto::v1::*;
        let kind = match r.below(16) {
            0 => return ClientFrame { kind: None },
            1 => K::Ping(Ping {
                nonce: r.next_u64(),
            }),
            2..=6 if !self.recent_sends.is_empty() && r.chance(10) => {
                // A retry: the same frame again (a fresh client_msg_id always names one
                // recipient, so ServerAcks map back to it).
                K::Send(self.recent_sends[r.below(self.recent_sends.len() as u64) as usize].clone())
            }
            2..=6 => {
                let cid = if r.chance(2) { 0 } else { self.next_cid }; // 0 is invalid
                self.next_cid += 1;
                let s = SendMessage {
                    to: phone(r, &self.phones),
                    client_msg_id: cid,
                    body: body(r).into(),
                    media: r.chance(10).then(|| {
                        Box::new(Media {
                            size: r.below(1 << 20),
                            sha256: vec![9; if r.chance(10) { 5 } else { 32 }],
                            ..Default::default()
                        })
                    }),
                };
                if self.recent_sends.len() < 64 {
                    self.recent_sends.push(s.clone());
                } else {
                    self.recent_sends[(cid % 64) as usize] = s.clone();
                }
                K::Send(s)
            }
            7 | 8 => K::Ack(Ack {
                server_msg_ids: (0..r.below(4)).map(|_| id(r, &self.seen_ids)).collect(),
            }),
            9 => K::Read(Read {
                server_msg_ids: (0..r.below(4)).map(|_| id(r, &self.seen_ids)).collect(),
            }),
            10 => K::GroupCreate(GroupCreate {
                client_req_id: r.next_u64(),
                name: "g".into(),
                members: (0..r.below(5)).map(|_| phone(r, &self.phones)).collect(),
            }),
            11 => K::GroupSend(GroupSend {
                group_id: id(r, &self.groups),
                client_msg_id: r.below(1_000) + 1,
                body: body(r),
                media: None,
            }),
            12 => {
                let group_id = id(r, &self.groups);
                let members = (0..r.below(3)).map(|_| phone(r, &self.phones)).collect();
                match r.below(3) {
                    0 => K::GroupAdd(GroupAdd { group_id, members }),
                    1 => K::GroupRemove(GroupRemove { group_id, members }),
                    _ => K::GroupMembers(GroupMembersRequest { group_id }),
                }
            }
            13 if r.chance(20) => K::MediaSlot(MediaSlotRequest {
                client_req_id: r.below(3),
                size: r.below(1 << 27),
                mime: "image/jpeg".into(),
                sha256: vec![7; if r.chance(10) { 31 } else { 32 }],
            }),
            13 if r.chance(25) => K::PresencePrivacy(proto::v1::PresencePrivacy {
                visibility: r.below(4) as i32,
            }),
            13 if r.chance(35) => K::GroupPrivacy(proto::v1::GroupPrivacy {
                who_can_add: r.below(4) as i32,
            }),
            13 => K::PresenceSubscribe(PresenceSubscribe {
                contacts: (0..r.below(4)).map(|_| phone(r, &self.phones)).collect(),
            }),
            14 => K::LoadTestLogin(LoadTestLogin {
                protocol_version: proto::PROTOCOL_VERSION,
                phone: phone(r, &self.phones),
                secret: if r.chance(50) {
                    b"s".to_vec()
                } else {
                    b"wrong".to_vec()
                },
            }),
            _ => match r.below(3) {
                0 => K::Register(Register {
                    protocol_version: proto::PROTOCOL_VERSION,
                    phone: phone(r, &self.phones),
                }),
                1 => K::Verify(Verify {
                    protocol_version: proto::PROTOCOL_VERSION,
                    phone: phone(r, &self.phones),
                    pin: format!("{:06}", r.below(1_000_000)),
                }),
                _ => K::Login(Login {
                    protocol_version: proto::PROTOCOL_VERSION,
                    phone: phone(r, &self.phones),
                    device_key: vec![r.next_u64() as u8; 32],
                }),
            },
        };
        ClientFrame { kind: Some(kind) }
    }

    /// One random step: mostly frames, sometimes connects, logins, closes, commits, overload.
    pub fn random_step(&mut self) {
        let pick = self.rng.next_u64() as usize;
        match self.rng.below(100) {
            0..=69 => {
                let f = self.random_frame();
                self.send(pick, f);
            }
            70..=72 => self.connect(),
            73..=78 => self.login(),
            79..=82 => self.disconnect(pick),
            83..=97 => self.commit(),
            _ => {
                let busy = self.rng.chance(50);
                self.set_busy(pick, busy);
            }
        }
    }
}

/// The `service` fuzz target: arbitrary bytes as operations on a 3-shard cluster. Frames
/// are decoded from the bytes as the server would decode them (most fail to decode, which
/// the adapter answers before the state machines see anything).
pub fn run_bytes(data: &[u8]) {
    let mut h = Harness::new(3, 8, 0x5eed);
    for _ in 0..4 {
        h.login();
    }
    h.connect();
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op {
            0..=199 => {
                let len = rest.first().copied().unwrap_or(0) as usize;
                let take = len.min(rest.len().saturating_sub(1));
                let payload = rest.get(1..1 + take).unwrap_or(&[]);
                rest = &rest[(1 + take).min(rest.len())..];
                if let Ok(frame) = proto::codec::decode_client(payload) {
                    h.send(op as usize, frame);
                }
            }
            200..=209 => h.connect(),
            210..=219 => h.login(),
            220..=229 => h.disconnect(op as usize),
            230..=249 => h.commit(),
            _ => h.set_busy(op as usize, op % 2 == 0),
        }
    }
    h.set_busy(0, false);
    h.commit();
    h.check();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20,000 structured random frames over four clusters (1 to 4 shards), invariants checked
    /// every 500 steps and at the end.
    #[test]
    fn random_frames_keep_the_invariants() {
        let mut total = Stats::default();
        for (shards, seed) in [(1, 11), (2, 22), (3, 33), (4, 44)] {
            let mut h = Harness::new(shards, 12, seed);
            for _ in 0..6 {
                h.login();
            }
            let mut steps = 0;
            while h.stats.frames < 5_000 {
                h.random_step();
                steps += 1;
                if steps % 500 == 0 {
                    h.commit();
                    h.check();
                }
            }
            for s in 0..shards {
                h.set_busy(s, false);
            }
            h.commit();
            h.check();
            total.frames += h.stats.frames;
            total.server_acks += h.stats.server_acks;
            total.busy += h.stats.busy;
            total.messages += h.stats.messages;
            total.closes += h.stats.closes;
            total.errors += h.stats.errors;
            total.logins += h.stats.logins;
        }
        eprintln!("{total:?}");
        assert!(total.frames >= 20_000);
        assert!(
            total.server_acks > 500,
            "the run exercised too few sends: {total:?}"
        );
        assert!(total.busy > 0 && total.messages > 500, "{total:?}");
    }

    /// The same random frames with the real journal over in-memory files, appends failing
    /// at random: nothing is answered before its batch is written.
    #[test]
    fn random_frames_through_the_real_journal_keep_the_invariants() {
        let mut acks = 0;
        for (shards, seed) in [(1, 15), (3, 35)] {
            let mut h = Harness::journaled(shards, 12, seed);
            for _ in 0..6 {
                h.login();
            }
            while h.stats.frames < 3_000 {
                if h.rng.chance(2) {
                    let shard = h.rng.below(shards as u64) as usize;
                    h.sim.fail_appends(shard, 1 + h.rng.below(3) as u32);
                }
                h.random_step();
            }
            for s in 0..shards {
                h.set_busy(s, false);
                h.sim.fail_appends(s, 0);
            }
            h.commit();
            h.commit();
            h.check();
            acks += h.stats.server_acks;
        }
        assert!(acks > 200, "the run exercised too few sends: {acks}");
    }

    #[test]
    fn arbitrary_bytes_through_the_service_never_panic() {
        let mut rng = XorShift(77);
        for _ in 0..200 {
            let len = rng.below(512) as usize;
            let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            run_bytes(&data);
        }
    }
}

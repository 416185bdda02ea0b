//! One synthetic user: its connection's lifecycle and what it does with each server frame,
//! like a real phone would (ack every message, mark some read, ack every receipt, dedupe by
//! message name).
//!
//! The user never touches the poller or the clock itself: the driver passes `now` and the
//! thread's [`Tally`], and acts on the returned [`Outcome`].

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use proto::v1::{server_frame::Kind, Ack, ErrorCode, Read, ReceiptKind};
use proto::{ClientFrame, ServerFrame};

use crate::ledger::Ledger;
use crate::peers::Rng;
use crate::stats::Stats;
use crate::workload::{wall_us, BodyStamp, Spec};

use super::transport::Transport;

/// Where a user's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No connection; (re)connect at `retry_at`.
    Down,
    /// TCP connect (and then TLS) in progress.
    Connecting,
    /// Transport ready; LoggedIn (or the first Pong without login) not yet received.
    WaitingUp,
    /// Logged in (or answering pings).
    Up,
    /// Gave up after the allowed attempts.
    Failed,
}

/// A message this user sent and has no ServerAck for yet.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    /// When it was due (its scheduled send time).
    pub at: Instant,
    /// Its group, 0 for 1:1.
    pub group_id: u64,
}

/// What the thread keeps for one user. Idle users own no heap memory beyond the transport.
pub struct User {
    /// Global user index (phone = phone_base + idx).
    pub idx: u64,
    /// Connection state.
    pub phase: Phase,
    /// The connection, while one exists.
    pub conn: Option<Transport>,
    /// Bumped per connection attempt; part of the poller token so stale events are ignored.
    pub gen: u32,
    /// Whether the poller watches for writability now.
    pub watching_write: bool,
    /// When the current attempt started.
    pub started: Instant,
    /// When a Down user may try again.
    pub retry_at: Instant,
    /// Attempts since the last success (or storm).
    pub attempts: u32,
    /// Came up at least once.
    pub ever_up: bool,
    /// Dropped on purpose by a storm and not back yet.
    pub in_storm: bool,
    /// Sessions so far (1 = first).
    pub session_no: u32,
    /// Last session that ended abruptly (0 = none): earlier unacked messages may come again.
    pub last_abrupt: u32,
    /// Next heartbeat.
    pub next_ping: Instant,
    /// Next client_msg_id (starts at 1).
    pub next_cmid: u64,
    /// Sent, not yet acked: client_msg_id → when and where.
    pub pending: HashMap<u64, Pending>,
    /// 1:1 messages received: name → session it was last received in.
    pub seen: HashMap<(u64, u64), u32>,
    /// Group messages received: (group, sender, client_msg_id).
    pub seen_group: HashSet<(u64, u64, u64)>,
    /// The user's home box, once a box redirected it there; later connections go straight to it.
    pub home: Option<std::net::SocketAddr>,
    /// Redirects followed since the last login (a loop between boxes stops at
    /// [`REDIRECTS_PER_LOGIN_MAX`]).
    pub redirects: u8,
}

/// Redirects one login may follow before the farm counts it as refused: a user has one home,
/// so more than a couple means the boxes disagree about it.
pub const REDIRECTS_PER_LOGIN_MAX: u8 = 3;

/// What the driver must do after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing special.
    Continue,
    /// The connection just came up.
    CameUp,
    /// The server refused the login: close and count.
    LoginRefused,
    /// The box is not this user's home: connect to this one instead and log in there.
    Redirect(std::net::SocketAddr),
    /// A group the thread asked for now exists.
    GroupCreated {
        /// The creator's client_req_id (the group's slot in the thread).
        req: u64,
        /// The server's group id.
        group_id: u64,
    },
}

/// Thread-wide things a frame may update.
pub struct Tally<'a> {
    /// Counters, errors, histograms.
    pub stats: &'a mut Stats,
    /// Exactly-once records.
    pub ledger: &'a mut Ledger,
    /// The run.
    pub spec: &'a Spec,
    /// For read sampling.
    pub rng: &'a mut Rng,
    /// Members per known group id (for expected deliveries).
    pub group_members: &'a HashMap<u64, usize>,
    /// Time of the latest delivery or receipt (drain waits for quiet).
    pub last_activity: &'a mut Instant,
}

/// `ERROR_CODE_QUEUE_FULL` → `QUEUE_FULL`.
pub fn error_name(code: i32) -> String {
    match ErrorCode::try_from(code) {
        Ok(c) => c.as_str_name().trim_start_matches("ERROR_CODE_").to_owned(),
        Err(_) => format!("CODE_{code}"),
    }
}

/// The first client_msg_id of this farm process's users: the wall clock in µs. A user's ids
/// count up from it, so a later farm run against the same server (same phones, same
/// device key) keeps counting up as the protocol's client_msg_id rule asks; ids counted
/// from 1 again would be taken for retries of what the last run sent.
fn first_client_msg_id() -> u64 {
    static FIRST: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *FIRST.get_or_init(|| wall_us().max(1))
}

impl User {
    /// A user that has not connected yet.
    pub fn new(idx: u64, now: Instant) -> User {
        User {
            idx,
            phase: Phase::Down,
            conn: None,
            gen: 0,
            watching_write: false,
            started: now,
            retry_at: now,
            attempts: 0,
            ever_up: false,
            in_storm: false,
            session_no: 0,
            last_abrupt: 0,
            next_ping: now,
            next_cmid: first_client_msg_id(),
            pending: HashMap::new(),
            seen: HashMap::new(),
            seen_group: HashSet::new(),
            home: None,
            redirects: 0,
        }
    }

    /// True while connecting or logging in. A frame can arrive while still `Connecting`:
    /// the read that finishes the TLS handshake may carry the answer to the login too.
    pub fn awaiting_up(&self) -> bool {
        matches!(self.phase, Phase::Connecting | Phase::WaitingUp)
    }

    /// Queues a frame on the connection (dropped if there is none).
    pub fn queue(&mut self, f: impl Into<ClientFrame>) {
        if let Some(c) = &mut self.conn {
            c.queue(&f.into());
        }
    }

    /// Handles one frame; queues acks and reads on the connection.
    pub fn on_frame(&mut self, f: ServerFrame, now: Instant, t: &mut Tally<'_>) -> Outcome {
        let Some(kind) = f.kind else {
            t.stats.error("frame:empty");
            return Outcome::Continue;
        };
        let c = &mut t.stats.counters;
        match kind {
            Kind::Pong(_) => {
                c.pongs += 1;
                if self.awaiting_up() && !t.spec.logs_in() {
                    return Outcome::CameUp;
                }
            }
            Kind::LoggedIn(_) => {
                if self.awaiting_up() {
                    return Outcome::CameUp;
                }
            }
            Kind::Error(e) => return self.on_error(e, t),
            Kind::Busy(_) => {
                c.busy += 1;
                t.stats.error("busy");
            }
            Kind::ServerAck(a) => self.on_server_ack(a, now, t),
            Kind::Message(m) => self.on_message(m, t),
            Kind::Receipt(r) => {
                match ReceiptKind::try_from(r.kind) {
                    Ok(ReceiptKind::Delivered) => c.receipts_delivered += 1,
                    Ok(ReceiptKind::Read) => c.receipts_read += 1,
                    _ => t.stats.error("receipt:unknown_kind"),
                }
                *t.last_activity = now;
                if r.receipt_id != 0 {
                    self.queue(Ack {
                        server_msg_ids: vec![r.receipt_id],
                    });
                }
            }
            Kind::GroupCreated(g) => {
                c.groups_created += 1;
                return Outcome::GroupCreated {
                    req: g.client_req_id,
                    group_id: g.group_id,
                };
            }
            Kind::Redirect(r) => {
                if !self.awaiting_up() {
                    t.stats.error("redirect:while_up");
                    return Outcome::Continue;
                }
                return match r.addr.parse() {
                    Ok(addr) => Outcome::Redirect(addr),
                    Err(_) => {
                        t.stats.error("redirect:bad_addr");
                        Outcome::LoginRefused
                    }
                };
            }
            Kind::PinSent(_)
            | Kind::Verified(_)
            | Kind::GroupMembers(_)
            | Kind::Presence(_)
            | Kind::GroupUpdated(_)
            | Kind::MediaSlot(_) => {}
        }
        Outcome::Continue
    }

    fn on_error(&mut self, e: proto::v1::Error, t: &mut Tally<'_>) -> Outcome {
        let name = error_name(e.code);
        if e.client_msg_id != 0 {
            if self.pending.remove(&e.client_msg_id).is_some() {
                t.stats.counters.send_errors += 1;
                t.ledger.refused.push((self.idx, e.client_msg_id));
            }
            t.stats.error(format!("send:{name}"));
            return Outcome::Continue;
        }
        if self.awaiting_up() {
            t.stats.error(format!("login:{name}"));
            return Outcome::LoginRefused;
        }
        t.stats.error(format!("error:{name}"));
        Outcome::Continue
    }

    fn on_server_ack(&mut self, a: proto::v1::ServerAck, now: Instant, t: &mut Tally<'_>) {
        let Some(p) = self.pending.remove(&a.client_msg_id) else {
            t.stats.error("ack:unknown_client_msg_id");
            return;
        };
        t.stats
            .ack
            .record(now.saturating_duration_since(p.at).as_micros() as u64);
        if p.group_id == 0 {
            t.stats.counters.server_acked += 1;
            t.ledger.acked.push((self.idx, a.client_msg_id));
        } else {
            t.stats.counters.group_acked += 1;
            t.ledger.group_acked.push((self.idx, a.client_msg_id));
            let members = t.group_members.get(&p.group_id).copied().unwrap_or(1);
            t.stats.counters.group_expected += members.saturating_sub(1) as u64;
        }
    }

    fn on_message(&mut self, m: proto::v1::Message, t: &mut Tally<'_>) {
        let now_us = wall_us();
        *t.last_activity = Instant::now();
        // A real client acks everything it has stored, even what it cannot parse.
        self.queue(Ack {
            server_msg_ids: vec![m.server_msg_id],
        });
        let stamp = BodyStamp::decode(&m.body);
        let from = t.spec.user_of(&m.from);
        // The server names the sender's id for the message (0 from peers that cannot);
        // dedupe is by (sender, client_msg_id), so a copy under another id is foreign.
        let Some(stamp) = stamp.filter(|s| {
            Some(s.sender) == from && (m.client_msg_id == 0 || m.client_msg_id == s.client_msg_id)
        }) else {
            t.stats.counters.foreign_messages += 1;
            return;
        };
        let first = if m.group_id != 0 {
            let fresh = self
                .seen_group
                .insert((m.group_id, stamp.sender, stamp.client_msg_id));
            if fresh {
                t.stats.counters.group_delivered += 1;
                t.ledger
                    .group_delivered
                    .push(((stamp.sender, stamp.client_msg_id), self.idx));
            } else {
                t.stats.counters.duplicates += 1;
            }
            fresh
        } else {
            self.on_direct(stamp, t)
        };
        if first {
            t.stats
                .delivery
                .record(now_us.saturating_sub(stamp.sent_at_us));
            if t.rng.unit() < t.spec.read_ratio {
                self.queue(Read {
                    server_msg_ids: vec![m.server_msg_id],
                });
            }
        }
    }

    /// Records a 1:1 delivery; true the first time this message arrives.
    fn on_direct(&mut self, s: BodyStamp, t: &mut Tally<'_>) -> bool {
        let key = (s.sender, s.client_msg_id);
        match self.seen.insert(key, self.session_no) {
            None => {
                t.stats.counters.delivered += 1;
                t.ledger.delivered.push((key, self.idx));
                true
            }
            Some(first_session) => {
                if first_session < self.session_no && self.last_abrupt >= first_session {
                    t.stats.counters.redelivered += 1;
                } else {
                    t.stats.counters.duplicates += 1;
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::test_spec;
    use proto::v1::Message;

    fn msg(spec: &Spec, sender: u64, cmid: u64, server_id: u64) -> ServerFrame {
        Message {
            from: spec.phone(sender),
            server_msg_id: server_id,
            sent_at_ms: 0,
            body: BodyStamp {
                sender,
                client_msg_id: cmid,
                sent_at_us: wall_us(),
            }
            .encode(32),
            media: None,
            group_id: 0,
            client_msg_id: cmid,
        }
        .into()
    }

    #[test]
    fn duplicates_and_redeliveries_are_told_apart() {
        let spec = test_spec();
        let mut stats = Stats::default();
        let mut ledger = Ledger::default();
        let mut rng = Rng::new(1);
        let groups = HashMap::new();
        let now = Instant::now();
        let mut last = now;
        let mut u = User::new(5, now);
        u.session_no = 1;
        let mut t = Tally {
            stats: &mut stats,
            ledger: &mut ledger,
            spec: &spec,
            rng: &mut rng,
            group_members: &groups,
            last_activity: &mut last,
        };
        u.on_frame(msg(&spec, 1, 1, 100), now, &mut t);
        u.on_frame(msg(&spec, 1, 1, 100), now, &mut t); // same session: duplicate
        u.last_abrupt = 1;
        u.session_no = 2;
        u.on_frame(msg(&spec, 1, 1, 100), now, &mut t); // after an abrupt drop: redelivery
        u.session_no = 3;
        u.on_frame(msg(&spec, 1, 1, 100), now, &mut t); // seen in 2, clean since: duplicate
        assert_eq!(stats.counters.delivered, 1);
        assert_eq!(stats.counters.duplicates, 2);
        assert_eq!(stats.counters.redelivered, 1);
        assert_eq!(ledger.delivered, vec![((1, 1), 5)]);
    }

    #[test]
    fn logged_in_counts_even_before_the_handshake_was_noticed() {
        let spec = test_spec();
        let mut stats = Stats::default();
        let mut ledger = Ledger::default();
        let mut rng = Rng::new(1);
        let groups = HashMap::new();
        let now = Instant::now();
        let mut last = now;
        let mut t = Tally {
            stats: &mut stats,
            ledger: &mut ledger,
            spec: &spec,
            rng: &mut rng,
            group_members: &groups,
            last_activity: &mut last,
        };
        let mut u = User::new(1, now);
        u.phase = Phase::Connecting;
        let f: ServerFrame = proto::v1::LoggedIn {
            user_id: 1,
            queued: 0,
        }
        .into();
        assert_eq!(u.on_frame(f.clone(), now, &mut t), Outcome::CameUp);
        u.phase = Phase::Up;
        assert_eq!(u.on_frame(f, now, &mut t), Outcome::Continue);
    }

    #[test]
    fn error_names_drop_the_prefix() {
        assert_eq!(error_name(ErrorCode::QueueFull as i32), "QUEUE_FULL");
        assert_eq!(error_name(999), "CODE_999");
    }
}

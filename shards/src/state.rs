//! One shard's service state and its event entry points. Every handler takes the event and
//! `now` and writes what to do into an [`Out`]; nothing here does I/O, so the whole service
//! runs in tests with fake time and a fake mesh (`sim.rs`).
//!
//! The message path (see ARCHITECTURE.md):
//! 1. `SendMessage` arrives at the sender's home → `Deliver` to the recipient's home.
//! 2. The recipient's home dedupes (sender, client_msg_id), queues the item and appends its
//!    record; once durable, it tells the sender's home (→ `ServerAck`) and delivers if the
//!    recipient is online (else notifies the push provider, once per burst).
//! 3. The recipient's `Ack` removes the item (tombstone) and sends a DELIVERED receipt to the
//!    sender's home, which sends it or, if the sender is offline, queues it durably.
//!    `Read` does the same with READ.

use std::collections::HashMap;

use proto::ids::{ConnId, ShardId};
use proto::v1::{client_frame, ClientFrame, ErrorCode};

use crate::dedupe::Dedupe;
use crate::effect::{AfterCommit, Out};
use crate::group::Groups;
use crate::home::{home_of_phone, IdAllocator};
use crate::mesh_msg::ShardMsg;
use crate::offline::{Item, Queues};
use crate::presence::Presence;
use crate::receipt::RecentAcked;
use crate::record::{record, ItemRec, Record};
use crate::registry::Registry;
use crate::session::Sessions;

/// Settings the state machines need.
#[derive(Debug, Clone, Default)]
pub struct ServiceSettings {
    /// Enables `LoadTestLogin` when set (unsafe in production: anyone with it is anyone).
    pub load_test_secret: Option<Vec<u8>>,
    /// Sign-up budgets, box-wide (each shard takes its share of the box ones).
    pub signup: crate::budget::SignupLimits,
    /// Per-user budgets that have flags (`admission.rs`).
    pub users: crate::admission::UserLimits,
}

/// Fills a buffer with random bytes (the OS's in production, a seeded one in tests).
pub type RandomSource = Box<dyn FnMut(&mut [u8])>;

/// The OS's randomness.
pub fn os_random() -> RandomSource {
    Box::new(|buf: &mut [u8]| {
        let mut filled = 0;
        while filled < buf.len() {
            let rest = &mut buf[filled..];
            // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`.
            let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
            // getrandom only fails before the pool is seeded at boot or on EINTR.
            assert!(
                n >= 0 || std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            );
            filled += n.max(0) as usize;
        }
    })
}

/// The service state of one shard.
pub struct ShardState {
    pub(crate) shard: ShardId,
    pub(crate) shards: usize,
    pub(crate) settings: ServiceSettings,
    pub(crate) ids: IdAllocator,
    pub(crate) registry: Registry,
    pub(crate) sessions: Sessions,
    pub(crate) queues: Queues,
    pub(crate) dedupe: Dedupe,
    pub(crate) recent: RecentAcked,
    pub(crate) groups: Groups,
    pub(crate) presence: Presence,
    /// Who may add users homed here to groups; creations waiting for members' answers.
    pub(crate) consent: crate::group_consent::GroupConsent,
    pub(crate) random: RandomSource,
    /// Records written since the last snapshot (compaction estimate).
    pub(crate) records_since_snapshot: u64,
    /// `Some(retry_after_ms)` while the shard is overloaded: new sends get `Busy`
    /// (`overload.rs`). Set by the adapter (or the sim) before each event.
    pub(crate) busy: Option<u32>,
    /// Outstanding PINs and per-phone back-off.
    pub(crate) pins: crate::pins::Pins,
    /// Sign-up budgets (per source, prefix, range, this shard's share of the box).
    pub(crate) budgets: crate::budget::SignupBudgets,
    /// Logged-in users' budgets (group creations), per user homed here.
    pub(crate) user_budgets: crate::budget::UserBudgets,
    /// Connections on this shard that have not logged in: peer, refusals, hand-overs.
    /// Bounded by the engine's connection table; dropped at login and close.
    pub(crate) prelogin: HashMap<ConnId, crate::mesh_msg::PreLogin>,
    /// Rate limit of the refusal log lines.
    pub(crate) refusal_log: crate::login::RefusalLog,
    /// What the abuse limits did since start.
    pub(crate) abuse: crate::service_stats::AbuseCounters,
    /// Per-user budgets: presence fan-out, new recipients (`admission.rs`).
    pub(crate) admission: crate::admission::Admission,
    /// What the mesh handed back since start (`mesh_back.rs`).
    pub(crate) mesh_back: crate::mesh_back::MeshBackCounters,
}

impl std::fmt::Debug for ShardState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardState")
            .field("shard", &self.shard)
            .field("online", &self.sessions.len())
            .field("queued", &self.queues.total())
            .finish()
    }
}

impl ShardState {
    /// Empty state for `shard` of `shards`.
    pub fn new(
        shard: ShardId,
        shards: usize,
        settings: ServiceSettings,
        random: RandomSource,
        now: u64,
    ) -> Self {
        ShardState {
            shard,
            shards,
            budgets: crate::budget::SignupBudgets::new(settings.signup, shards),
            pins: crate::pins::Pins::default(),
            user_budgets: crate::budget::UserBudgets::default(),
            prelogin: HashMap::new(),
            refusal_log: crate::login::RefusalLog::default(),
            abuse: crate::service_stats::AbuseCounters::default(),
            admission: crate::admission::Admission::new(settings.users),
            mesh_back: Default::default(),
            settings,
            ids: IdAllocator::new(shard, 0, now),
            registry: Registry::default(),
            sessions: Sessions::default(),
            queues: Queues::default(),
            dedupe: Dedupe::default(),
            recent: RecentAcked::default(),
            groups: Groups::default(),
            presence: Presence::default(),
            consent: crate::group_consent::GroupConsent::default(),
            random,
            records_since_snapshot: 0,
            busy: None,
        }
    }

    /// Home shard of a phone.
    pub(crate) fn home(&self, phone: &str) -> ShardId {
        home_of_phone(phone, self.shards)
    }

    /// Items queued on this shard.
    pub fn queued_total(&self) -> usize {
        self.queues.total()
    }

    /// Sets whether new sends are refused with `Busy { retry_after_ms }` (`None`: admitted).
    pub fn set_busy(&mut self, retry_after_ms: Option<u32>) {
        self.busy = retry_after_ms;
    }

    /// The abuse limits' statistics (`service_stats::abuse_report`).
    pub fn abuse_stats(&self) -> Vec<(&'static str, u64)> {
        let g = crate::service_stats::AbuseGauges {
            pins_pending: self.pins.len() as u64,
            budget_keys: (self.budgets.keys() + self.user_budgets.keys()) as u64,
            prelogin_conns: self.prelogin.len() as u64,
            presence_subscriptions: self.presence.entries() as u64,
            presence_refused: self.presence.refused,
            group_creates_pending: self.consent.pending() as u64,
            recipient_ties: self.admission.ties.len() as u64,
        };
        crate::service_stats::abuse_report(&self.abuse, g)
    }

    /// Answers `client_msg_id` with `Busy` when the shard is overloaded; true if it did.
    pub(crate) fn refused_busy(&mut self, conn: ConnId, client_msg_id: u64, out: &mut Out) -> bool {
        let Some(retry_after_ms) = self.busy else {
            return false;
        };
        out.busy_refusals += 1;
        out.frame(conn, busy(retry_after_ms, client_msg_id));
        true
    }

    /// A frame from `conn` (already validated against the wire limits).
    pub fn on_frame(&mut self, now: u64, conn: ConnId, frame: ClientFrame, out: &mut Out) {
        self.reserve_ids(out);
        let Some(kind) = frame.kind else {
            return out.fail(conn, ErrorCode::UnexpectedFrame, "empty frame");
        };
        use client_frame::Kind as K;
        match kind {
            K::Ping(p) => out.frame(
                conn,
                proto::v1::server_frame::Kind::Pong(proto::v1::Pong { nonce: p.nonce }),
            ),
            K::Register(r) => self.on_register(now, conn, r, out),
            K::Verify(v) => self.on_verify(now, conn, v, out),
            K::Login(l) => self.on_login(now, conn, l, out),
            K::LoadTestLogin(l) => self.on_load_test_login(now, conn, l, out),
            other => {
                let Some(user) = self.sessions.user_of(conn).map(|u| u.to_string()) else {
                    return out.error(conn, ErrorCode::NotLoggedIn, "log in first", 0);
                };
                self.on_user_frame(now, conn, user, other, out);
            }
        }
    }

    fn on_user_frame(
        &mut self,
        now: u64,
        conn: ConnId,
        user: String,
        kind: client_frame::Kind,
        out: &mut Out,
    ) {
        use client_frame::Kind as K;
        match kind {
            K::Send(s) if self.refused_busy(conn, s.client_msg_id, out) => {}
            K::GroupSend(g) if self.refused_busy(conn, g.client_msg_id, out) => {}
            // Fans out to every contact's home: admitted like a send.
            K::PresenceSubscribe(_) if self.refused_busy(conn, 0, out) => {}
            K::Send(s) => self.on_send(now, conn, user, s, out),
            K::Ack(a) => self.on_ack(now, &user, a.server_msg_ids, out),
            K::Read(r) => self.on_read(now, &user, r.server_msg_ids, out),
            K::GroupCreate(g) => self.on_group_create(now, conn, user, g, out),
            K::GroupAdd(g) => self.group_op(
                user,
                crate::mesh_msg::GroupOp::Add {
                    group_id: g.group_id,
                    members: g.members,
                },
                g.group_id,
                out,
            ),
            K::GroupRemove(g) => self.group_op(
                user,
                crate::mesh_msg::GroupOp::Remove {
                    group_id: g.group_id,
                    members: g.members,
                },
                g.group_id,
                out,
            ),
            K::GroupMembers(g) => self.group_op(
                user,
                crate::mesh_msg::GroupOp::Members {
                    group_id: g.group_id,
                },
                g.group_id,
                out,
            ),
            K::GroupSend(g) => self.on_group_send(now, user, g, out),
            K::PresenceSubscribe(p) => self.on_presence_subscribe(now, conn, user, p.contacts, out),
            K::PresencePrivacy(p) => {
                // Validated: the value is a known visibility.
                let v = proto::v1::PresenceVisibility::try_from(p.visibility).unwrap_or_default();
                self.on_presence_privacy(&user, v)
            }
            K::GroupPrivacy(p) => {
                // Validated: the value is a known policy.
                let p = proto::v1::GroupAddPolicy::try_from(p.who_can_add).unwrap_or_default();
                self.on_group_privacy(&user, p)
            }
            K::Ping(_) | K::Register(_) | K::Verify(_) | K::Login(_) | K::LoadTestLogin(_) => {
                out.error(conn, ErrorCode::UnexpectedFrame, "already logged in", 0)
            }
        }
    }

    /// Records a new id reservation when the current one is half used (before the event's
    /// own records, so that none of its ids is durable without it). An event issues at most
    /// a group's worth of ids, far less than the half block left.
    fn reserve_ids(&mut self, out: &mut Out) {
        if let Some(next_seq) = self.ids.reservation_due() {
            out.records.push(Record {
                kind: Some(record::Kind::IdMark(crate::record::IdMarkRec { next_seq })),
            });
        }
    }

    /// `conn` is gone.
    pub fn on_close(&mut self, now: u64, conn: ConnId, out: &mut Out) {
        self.prelogin.remove(&conn);
        if let Some(user) = self.sessions.closed(conn) {
            if self.sessions.conn_of(&user).is_none() {
                self.recent.forget(&user);
            }
            self.queues.session_ended(&user);
            self.registry.went_offline(&user, now);
            self.presence.session_ended(&user);
            self.presence_changed(&user, false, now, out);
        }
    }

    /// A message from another shard (or this one).
    pub fn on_mesh(&mut self, now: u64, msg: ShardMsg, out: &mut Out) {
        self.reserve_ids(out);
        match msg {
            ShardMsg::Deliver(d) => self.on_deliver(now, *d, out),
            ShardMsg::ToUser { user, frame } => {
                if let Some(conn) = self.sessions.conn_of(&user) {
                    out.frame(conn, frame);
                }
            }
            ShardMsg::Receipt { sender, receipt } => self.on_receipt(now, sender, receipt, out),
            ShardMsg::GroupSend(d) => self.on_group_send_at_home(now, *d, out),
            ShardMsg::GroupCopyDone {
                group_id,
                sender,
                client_msg_id,
            } => self.on_group_copy_done(group_id, sender, client_msg_id, out),
            ShardMsg::GroupOp { requester, op } => self.on_group_op_at_home(requester, op, out),
            ShardMsg::PresenceSub {
                contact,
                subscriber,
            } => self.on_presence_sub_at_home(now, contact, subscriber, out),
            ShardMsg::GroupAddAsk {
                group_id,
                adder,
                members,
            } => self.on_group_add_ask(now, group_id, adder, members, out),
            ShardMsg::GroupAddAnswer {
                group_id,
                adder,
                accepted,
            } => self.on_group_add_answer(group_id, adder, accepted, out),
        }
    }

    /// Records appended before this point are durable: release what waited for them.
    pub fn on_durable(&mut self, after: AfterCommit, out: &mut Out) {
        match after {
            AfterCommit::Effect(e) => out.now.push(e),
            AfterCommit::ItemDurable { user, id } => {
                let Some(item) = self.queues.mark_durable(&user, id) else {
                    return; // acked (and answered then) before it became durable
                };
                if !item.answered {
                    item.answered = true;
                    let (sender, client_msg_id, group_id) =
                        (item.sender, item.client_msg_id, item.group_id());
                    // Receipts start answered: an unanswered item is a message.
                    let sender = sender.map(|s| s.to_string()).unwrap_or_default();
                    self.answer_stored(&sender, client_msg_id, group_id, id, out);
                }
                if self.sessions.conn_of(&user).is_none() {
                    self.maybe_push(&user, out);
                }
            }
        }
    }

    /// Sends `user` what is unsent, within the window.
    pub(crate) fn pump(&mut self, user: &str, out: &mut Out) {
        let Some(conn) = self.sessions.conn_of(user) else {
            return;
        };
        for frame in self.queues.take_sendable(user) {
            out.frame(conn, frame);
        }
    }

    fn maybe_push(&mut self, user: &str, out: &mut Out) {
        if let Some(q) = self.queues.get_mut(user) {
            if !q.push_notified {
                q.push_notified = true;
                let user_id = self.registry.verified(user).map_or(0, |a| a.user_id);
                out.now.push(crate::effect::Effect::Push {
                    phone: user.to_string(),
                    user_id,
                });
            }
        }
    }

    /// Queues `item` for `user` with its record, and sends it at once if `user` is online
    /// (delivery does not wait for the disk; the sender's answer does, or for the ack).
    pub(crate) fn enqueue(
        &mut self,
        user: &str,
        item: Item,
        out: &mut Out,
    ) -> Result<(), crate::offline::QueueFull> {
        let rec = item_record(user, &item);
        let id = item.id;
        self.queues.push(user, item)?;
        self.records_since_snapshot += 1;
        out.records.push(Record {
            kind: Some(record::Kind::Item(rec)),
        });
        out.after_commit.push(AfterCommit::ItemDurable {
            user: user.to_string(),
            id,
        });
        self.pump(user, out);
        Ok(())
    }
}

/// A `Busy` frame for `client_msg_id`.
pub(crate) fn busy(retry_after_ms: u32, client_msg_id: u64) -> proto::v1::server_frame::Kind {
    proto::v1::server_frame::Kind::Busy(proto::v1::Busy {
        retry_after_ms,
        client_msg_id,
    })
}

/// The record of a queued item.
pub(crate) fn item_record(user: &str, item: &Item) -> ItemRec {
    ItemRec {
        user: user.to_string(),
        id: item.id,
        frame: item.encoded_frame(),
        sender: item.sender.map(|s| s.to_string()).unwrap_or_default(),
        client_msg_id: item.client_msg_id,
        group_id: item.group_id(),
        sender_device: item.sender_device,
    }
}

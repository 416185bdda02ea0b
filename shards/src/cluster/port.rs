//! A shard's end of the cluster link: its pre-login frames waiting to hear where their
//! phone's home box is.
//!
//! ## Steps
//! 1. [`Port::ask`]: a Register, Verify, Login or LoadTestLogin frame ([`needs_home`]) is
//!    parked with a deadline and its question pushed to the gateway. A full queue or
//!    [`PORT_WAITING_MAX`] parked frames: the frame is answered `Busy` now. A box alone
//!    (NATS unreachable) serves a Login here at once (its own users keep working) and
//!    refuses the others with `CLUSTER_UNAVAILABLE`: a phone registered while alone would
//!    have no recorded home.
//! 2. [`Port::poll`], on a timer every [`super::PORT_POLL_MS`] while frames wait: each answer
//!    releases its frame: served here, redirected, or refused; a frame past its deadline is
//!    refused with `CLUSTER_UNAVAILABLE`.
//!
//! Why it is safe: the shard never blocks (answers are popped from a bounded queue), each
//! parked frame is released exactly once (removed from the map when answered, answers for
//! frames already released at their deadline are ignored) and the map is bounded in size
//! and in time.
//!
//! This module owns the parked frames; the adapter (`adapter/cluster.rs`) carries out what
//! [`Port::poll`] returns.

use messaging::state::home::Phone;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use proto::ids::ConnId;
use proto::v1::{client_frame, ClientFrame, ErrorCode};

use messaging::state::mesh_msg::{Delivery, ShardMsg};
use proto::v1::server_frame;

use super::{ClusterLink, Down, Placement, Question, Up, ANSWER_WAIT_MAX_MS};

/// Frames one shard may have parked waiting for the gateway; more are answered `Busy`.
pub const PORT_WAITING_MAX: usize = 4096;
/// Messages from other boxes one shard may hold unsettled (handed to its state machines and
/// not yet stored, or held behind a refused one); the gateway's own cap
/// (`cross::INBOUND_PENDING_MAX`) is the same.
pub const PORT_INBOUND_MAX: usize = super::cross::INBOUND_PENDING_MAX;

/// The phone a frame needs the home of, and whether the frame may give it one.
pub fn needs_home(frame: &ClientFrame) -> Option<(&str, bool)> {
    use client_frame::Kind as K;
    match frame.kind.as_ref()? {
        K::Register(r) => Some((&r.phone, true)),
        K::LoadTestLogin(l) => Some((&l.phone, true)),
        K::Verify(v) => Some((&v.phone, false)),
        K::Login(l) => Some((&l.phone, false)),
        _ => None,
    }
}

/// A frame parked until its answer.
#[derive(Debug)]
pub struct Parked {
    /// Its connection.
    pub conn: ConnId,
    /// The frame, served as it came once the answer says so.
    pub frame: ClientFrame,
    /// Where the connection comes from (pre-login budgets).
    pub peer: Option<IpAddr>,
    /// When it is refused if no answer came.
    pub deadline_ms: u64,
}

/// What to do with a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Release {
    /// Serve it on this box, as a single box would.
    Serve,
    /// Send `Redirect { addr }` and close the connection.
    Redirect(String),
    /// Answer this error.
    Refuse(ErrorCode, &'static str),
}

/// Why [`Port::ask`] released a frame at once.
#[derive(Debug, PartialEq, Eq)]
pub enum Now {
    /// Too many frames wait already: answer `Busy`.
    Busy,
    /// The answer is known without the gateway.
    Release(Release),
}

/// What [`Port::poll`] hands the adapter besides released frames.
#[derive(Debug)]
pub enum Event {
    /// A frame for a user homed on this box, via its home shard (`ServerAck` or `Busy`).
    ToUser {
        /// The user.
        user: Phone,
        /// The frame.
        frame: server_frame::Kind,
    },
    /// A receipt or a group message from another box: handle it as a mesh message.
    Mesh(ShardMsg),
    /// A copy of a group send from another box for a member homed here: hand it to the
    /// state machines as a mesh `Deliver` (its answer is settled by [`Port::settle`]).
    InboundCopy {
        /// The copy.
        delivery: Box<Delivery>,
    },
    /// A copy of a group send published to its member's box (`stored`), or not: tell the
    /// group's home (`GroupCopyDone` / `GroupCopyFailed`, `groups.rs` step 3).
    GroupCopy {
        /// The group.
        group_id: u64,
        /// The group message's sender.
        sender: String,
        /// The sender's id for it.
        client_msg_id: u64,
        /// The member's box's stream holds it.
        stored: bool,
    },
    /// Another box joined, started again or left: this shard's subscribers ask again about
    /// their contacts (`groups.rs` step 6).
    MembersChanged,
    /// A message from another box for a user of this shard: store it as a mesh `Deliver`,
    /// then tell the port ([`Port::after_store`]).
    Inbound {
        /// The gateway's token for it.
        token: u64,
        /// The message.
        delivery: Box<Delivery>,
    },
}

/// Counters of one shard's port (plain: only this shard writes them).
#[derive(Debug, Default, Clone, Copy)]
pub struct PortCounters {
    redirects: u64,
    busy: u64,
    timeouts: u64,
    sends_out: u64,
    sends_busy: u64,
    receipts_out: u64,
    groups_forwarded: u64,
}

/// One shard's end of the link (steps in the module doc).
#[derive(Debug)]
pub struct Port {
    link: Arc<ClusterLink>,
    shard: usize,
    waiting: HashMap<u64, Parked>,
    next_token: u64,
    /// Messages from other boxes handed to the state machines, by (sender, client id),
    /// until their answer (`Port::settle`).
    inbound: HashMap<(Phone, u64), u64>,
    /// Per sender, messages from other boxes held in order behind one the state machines
    /// refused (busy, queue full): retried in order, so that a sender's later messages
    /// never overtake it (the recipient's dedupe relies on that order).
    held: HashMap<Phone, std::collections::VecDeque<(u64, Box<Delivery>)>>,
    held_count: usize,
    /// Copies of group sends from other boxes handed to the state machines, by (sender,
    /// client id, member), until their `GroupCopyDone` (`Port::deliver_copy`).
    copies: HashMap<(Phone, u64, Phone), u64>,
    /// The message the state machines just refused, with its token (`Port::after_store`).
    refused: Option<((Phone, u64), u64)>,
    counters: PortCounters,
    /// A poll timer is set.
    /// When the poll timer set last is due (`None`: none is pending).
    pub timer_at: Option<u64>,
}

const ALONE: &str = "this box cannot reach its cluster now; try again later";

impl Port {
    /// Shard `shard`'s end of `link`.
    pub fn new(link: Arc<ClusterLink>, shard: usize) -> Self {
        Port {
            link,
            shard,
            waiting: HashMap::new(),
            next_token: 0,
            inbound: HashMap::new(),
            held: HashMap::new(),
            held_count: 0,
            copies: HashMap::new(),
            refused: None,
            counters: PortCounters::default(),
            timer_at: None,
        }
    }

    /// Step 1. `Ok(())`: parked (poll later).
    pub fn ask(
        &mut self,
        now_ms: u64,
        conn: ConnId,
        frame: ClientFrame,
        peer: Option<IpAddr>,
    ) -> Result<(), Now> {
        let Some((phone, create)) = needs_home(&frame) else {
            return Err(Now::Release(Release::Serve));
        };
        if self.link.alone() {
            let is_login = matches!(frame.kind, Some(client_frame::Kind::Login(_)));
            return Err(Now::Release(if is_login {
                Release::Serve
            } else {
                Release::Refuse(ErrorCode::ClusterUnavailable, ALONE)
            }));
        }
        if self.waiting.len() >= PORT_WAITING_MAX {
            self.counters.busy += 1;
            return Err(Now::Busy);
        }
        let token = self.next_token;
        let question = Question {
            token,
            phone: phone.to_string(),
            create,
        };
        if self.link.up(self.shard, Up::Place(question)).is_err() {
            self.counters.busy += 1;
            return Err(Now::Busy);
        }
        self.next_token += 1;
        let deadline_ms = now_ms + ANSWER_WAIT_MAX_MS;
        let parked = Parked {
            conn,
            frame,
            peer,
            deadline_ms,
        };
        self.waiting.insert(token, parked);
        Ok(())
    }

    /// A 1:1 message whose recipient has no account here: to the gateway (`cross.rs`).
    /// `Err` hands it back when the link is full (the sender gets `Busy`).
    pub fn send(&mut self, d: Box<Delivery>) -> Result<(), Box<Delivery>> {
        let q = &self.link.to_gateway[self.shard];
        // This shard is the queue's only producer: room now is room for the push.
        if q.is_full() {
            self.counters.sends_busy += 1;
            return Err(d);
        }
        let _ = self.link.up(self.shard, Up::Send(d));
        self.counters.sends_out += 1;
        Ok(())
    }

    /// A receipt for a sender with no account here: to the gateway. Dropped (counted) when
    /// the link is full, as a single box drops a receipt its sender's full queue refuses.
    pub fn receipt(&mut self, sender: Phone, receipt: proto::v1::Receipt) {
        let sender = sender.to_e164();
        if self
            .link
            .up(self.shard, Up::Receipt { sender, receipt })
            .is_ok()
        {
            self.counters.receipts_out += 1;
        } else {
            self.counters.sends_busy += 1;
        }
    }

    /// A group message for another box (`groups.rs` step 2): to the gateway. False when
    /// the link is full (counted; the caller answers as the message needs).
    pub fn forward(&mut self, env: Box<super::cross::Envelope>) -> bool {
        if self.link.up(self.shard, Up::Forward(env)).is_ok() {
            self.counters.groups_forwarded += 1;
            true
        } else {
            self.counters.sends_busy += 1;
            false
        }
    }

    /// For each mesh message this shard sends: if it answers a message from another box
    /// (`ServerAck`, `Busy` or an error for that sender and client id), tells the gateway
    /// (`Up::Done`) and returns true: the mesh message has nobody to go to here.
    pub fn settle(&mut self, msg: &ShardMsg) -> bool {
        if let ShardMsg::GroupCopyDone {
            sender,
            client_msg_id,
            member: Some(member),
            ..
        } = msg
        {
            // A group copy from another box, answered (`Port::deliver_copy`).
            if self.copies.is_empty() {
                return false;
            }
            // The group path carries the sender as text: E.164 (it passed validation).
            let Some(sender) = Phone::parse(sender) else {
                return false;
            };
            let key = (sender, *client_msg_id, *member);
            let Some(token) = self.copies.remove(&key) else {
                return false;
            };
            let _ = self.link.up(
                self.shard,
                Up::Done {
                    token,
                    stored: true,
                },
            );
            return true;
        }
        if self.inbound.is_empty() {
            return false;
        }
        let ShardMsg::ToUser { user, frame } = msg else {
            return false;
        };
        let (client_msg_id, stored) = match frame {
            server_frame::Kind::ServerAck(a) if a.group_id == 0 => (a.client_msg_id, true),
            server_frame::Kind::Busy(b) => (b.client_msg_id, false),
            server_frame::Kind::Error(e) => (e.client_msg_id, false),
            _ => return false,
        };
        let key = (*user, client_msg_id);
        let Some(token) = self.inbound.remove(&key) else {
            return false;
        };
        if stored {
            // A full link leaves it unacked: JetStream delivers it again after its ack
            // wait, and dedupe answers the copy.
            let _ = self.link.up(self.shard, Up::Done { token, stored });
        } else {
            // Refusals are answered while the message is handed over: `after_store` holds
            // it for a retry.
            self.nak_stray_refusal();
            self.refused = Some((key, token));
        }
        true
    }

    /// A message about to be handed over whose sender has messages held: it joins the end
    /// of their line instead (`None`); otherwise it is handed back to be handed over.
    pub fn behind_held(&mut self, token: u64, d: Box<Delivery>) -> Option<(u64, Box<Delivery>)> {
        let Some(line) = self.held.get_mut(&d.from) else {
            return Some((token, d));
        };
        self.inbound.remove(&(d.from, d.client_msg_id));
        line.push_back((token, d));
        self.held_count += 1;
        None
    }

    /// After `delivery` (a copy of the message just handed over under `token`; `retried`:
    /// taken from the front of its sender's line): held again in its place if the state
    /// machines refused it; true if so.
    pub fn after_store(&mut self, token: u64, delivery: Box<Delivery>, retried: bool) -> bool {
        let key = (delivery.from, delivery.client_msg_id);
        match self.refused.take() {
            Some((k, t)) if k == key && t == token => {
                let line = self.held.entry(key.0).or_default();
                if retried {
                    line.push_front((token, delivery));
                } else {
                    line.push_back((token, delivery));
                }
                self.held_count += 1;
                true
            }
            other => {
                self.refused = other;
                self.nak_stray_refusal();
                false
            }
        }
    }

    /// A refusal not matched to the message handed over (none is expected): JetStream
    /// delivers that message again later.
    fn nak_stray_refusal(&mut self) {
        if let Some((_, token)) = self.refused.take() {
            let _ = self.link.up(
                self.shard,
                Up::Done {
                    token,
                    stored: false,
                },
            );
        }
    }

    /// Senders with messages held now.
    pub fn held_senders(&self) -> Vec<Phone> {
        self.held.keys().copied().collect()
    }

    /// The next held message of `sender`, handed over again now.
    pub fn pop_held(&mut self, sender: Phone) -> Option<(u64, Box<Delivery>)> {
        let line = self.held.get_mut(&sender)?;
        let (token, d) = line.pop_front()?;
        self.held_count -= 1;
        if line.is_empty() {
            self.held.remove(&sender);
        }
        self.inbound.insert((d.from, d.client_msg_id), token);
        Some((token, d))
    }

    /// Step 2: the frames released now, and what else the gateway handed over.
    pub fn poll(&mut self, now_ms: u64) -> (Vec<(Parked, Release)>, Vec<Event>) {
        let mut out = Vec::new();
        let mut events = Vec::new();
        while let Some(down) = self.link.to_shard[self.shard].pop() {
            let a = match down {
                Down::Placed(a) => a,
                Down::Sent {
                    from,
                    client_msg_id,
                    server_msg_id,
                    group_id: 0,
                } => {
                    // Our own sender, as the gateway got it from this box: E.164.
                    events.extend(sent(&from, client_msg_id, server_msg_id));
                    continue;
                }
                Down::Sent {
                    from,
                    client_msg_id,
                    server_msg_id,
                    group_id,
                } => {
                    events.push(Event::GroupCopy {
                        group_id,
                        sender: from,
                        client_msg_id,
                        stored: server_msg_id.is_some(),
                    });
                    continue;
                }
                Down::Group(msg) => {
                    events.push(Event::Mesh(msg));
                    continue;
                }
                Down::Deliver { token, delivery } if delivery.group_id != 0 => {
                    self.deliver_copy(token, delivery, &mut events);
                    continue;
                }
                Down::Deliver { token, delivery } => {
                    self.deliver(token, delivery, &mut events);
                    continue;
                }
                Down::Receipt { sender, receipt } => {
                    // Checked at the gateway (`Envelope::check`): E.164.
                    if let Some(sender) = Phone::parse(&sender) {
                        let by = None; // its `by` as the other box wrote it
                        let msg = ShardMsg::Receipt {
                            sender,
                            by,
                            receipt,
                        };
                        events.push(Event::Mesh(msg));
                    }
                    continue;
                }
                Down::MembersChanged => {
                    events.push(Event::MembersChanged);
                    continue;
                }
            };
            let Some(p) = self.waiting.remove(&a.token) else {
                continue; // released at its deadline already
            };
            let release = match a.placement {
                Placement::Here | Placement::Nowhere => Release::Serve,
                Placement::There(addr) => {
                    self.counters.redirects += 1;
                    Release::Redirect(addr)
                }
                Placement::HomeDown => Release::Refuse(
                    ErrorCode::HomeBoxDown,
                    "this number's home box is down; try again later",
                ),
                Placement::Unavailable => Release::Refuse(ErrorCode::ClusterUnavailable, ALONE),
            };
            out.push((p, release));
        }
        let late: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, p)| p.deadline_ms <= now_ms)
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            if let Some(p) = self.waiting.remove(&t) {
                self.counters.timeouts += 1;
                out.push((p, Release::Refuse(ErrorCode::ClusterUnavailable, ALONE)));
            }
        }
        (out, events)
    }

    /// A message from another box: remembered until its answer, then handed over.
    fn deliver(&mut self, token: u64, d: Box<Delivery>, events: &mut Vec<Event>) {
        let key = (d.from, d.client_msg_id);
        let full = self.inbound.len() + self.held_count >= PORT_INBOUND_MAX;
        let again = self.inbound.contains_key(&key)
            || self
                .held
                .get(&key.0)
                .is_some_and(|l| l.iter().any(|(_, h)| h.client_msg_id == key.1));
        if full || again {
            // The same message (delivered again) is already here: it settles both. Full
            // does not happen: the gateway keeps at most `cross::INBOUND_PENDING_MAX`
            // (= PORT_INBOUND_MAX) messages in the shards (`gateway/inbound.rs`).
            let _ = self.link.up(
                self.shard,
                Up::Done {
                    token,
                    stored: false,
                },
            );
            return;
        }
        if let Some(line) = self.held.get_mut(&key.0) {
            // Behind its sender's held messages, in order.
            line.push_back((token, d));
            self.held_count += 1;
            return;
        }
        self.inbound.insert(key, token);
        events.push(Event::Inbound { token, delivery: d });
    }

    /// A copy of a group send from another box (`groups.rs` step 3): handed to the state
    /// machines at once, as the group's home hands a copy to a member's home. It is never
    /// refused (a member's full queue or missing account counts it done, as in a single
    /// box), and every outcome is a `GroupCopyDone` naming the member: one message has a
    /// copy per member, so copies are told apart by (sender, client id, member), and need
    /// no place in their sender's line of held messages. The same copy twice (delivered
    /// again) or too many unanswered: later.
    fn deliver_copy(&mut self, token: u64, d: Box<Delivery>, events: &mut Vec<Event>) {
        let Some(member) = d.to else {
            let _ = self.link.up(
                self.shard,
                Up::Done {
                    token,
                    stored: true,
                },
            );
            return; // checked at the gateway: E.164
        };
        let key = (d.from, d.client_msg_id, member);
        let full = self.inbound.len() + self.copies.len() + self.held_count >= PORT_INBOUND_MAX;
        if full || self.copies.contains_key(&key) {
            let stored = false;
            let _ = self.link.up(self.shard, Up::Done { token, stored });
            return;
        }
        self.copies.insert(key, token);
        events.push(Event::InboundCopy { delivery: d });
    }

    /// Frames parked now.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Something here needs polling soon (frames with deadlines, held messages to retry);
    /// otherwise the gateway's wake-ups are enough.
    pub fn busy(&self) -> bool {
        !self.waiting.is_empty() || self.held_count > 0
    }

    /// This shard's statistics, with the box's (shard 0 reports those).
    pub fn report(&self) -> Vec<(&'static str, u64)> {
        let c = self.counters;
        let mut v = vec![
            ("cluster_redirects_total", c.redirects),
            ("cluster_busy_total", c.busy),
            ("cluster_answer_timeouts_total", c.timeouts),
            ("cluster_waiting", self.waiting.len() as u64),
            ("cluster_sends_out_total", c.sends_out),
            ("cluster_sends_busy_total", c.sends_busy),
            ("cluster_receipts_handed_total", c.receipts_out),
            ("cluster_groups_forwarded_total", c.groups_forwarded),
            (
                "cluster_inbound_unsettled",
                (self.inbound.len() + self.copies.len()) as u64,
            ),
            ("cluster_inbound_held", self.held_count as u64),
        ];
        if self.shard == 0 {
            v.extend(self.link.status.report());
        }
        v
    }
}

/// The sender's answer for a message published (or not) to another box.
fn sent(from: &str, client_msg_id: u64, server_msg_id: Option<u64>) -> Option<Event> {
    let frame = match server_msg_id {
        Some(id) => server_frame::Kind::ServerAck(proto::v1::ServerAck {
            client_msg_id,
            server_msg_id: id,
            group_id: 0,
        }),
        None => server_frame::Kind::Busy(proto::v1::Busy {
            retry_after_ms: super::BUSY_RETRY_AFTER_MS,
            client_msg_id,
        }),
    };
    let user = Phone::parse(from)?;
    Some(Event::ToUser { user, frame })
}

#[cfg(test)]
mod tests;

//! The adapter's side of a cluster of boxes (`crate::cluster`):
//! - a pre-login frame on a box of a cluster waits for its phone's home box
//!   (`cluster/port.rs`) before the shard's state machines see it, then is served here,
//!   redirected or refused;
//! - a 1:1 message or a receipt for a phone with no account on this box goes to the gateway
//!   instead of the state machines (`cluster/cross.rs`), and what the gateway brings back
//!   (the sender's `ServerAck` or `Busy`, messages and receipts from other boxes) is handed
//!   to them as mesh messages;
//! - the shard polls its end of the link every [`PORT_POLL_MS`].
//!
//! A box without `--cluster` has no port and never comes here.

use std::net::IpAddr;

use engine::ShardIo;
use proto::ids::ConnId;
use proto::v1::{server_frame, ClientFrame};

use messaging::state::home::Phone;
use messaging::state::mesh_msg::{ReplyTo, ShardMsg};

use super::{send_frame, ServiceTimer, Switchboard};
use crate::cluster::port::{Event, Now, Parked, Release};
use crate::cluster::{BUSY_RETRY_AFTER_MS, PORT_IDLE_POLL_MS, PORT_POLL_MS};

impl Switchboard {
    /// Parks `frame` until the gateway says where its phone's home is, or releases it now.
    pub(super) fn ask_home(
        &mut self,
        io: &mut ShardIo<Self>,
        conn: ConnId,
        frame: ClientFrame,
        peer: Option<IpAddr>,
    ) {
        let now = io.now_ms();
        let Some(port) = self.cluster.as_mut() else {
            return self.serve_prelogin(io, conn, frame, peer);
        };
        match port.ask(now, conn, frame.clone(), peer) {
            Ok(()) => self.poll_cluster_later(io),
            Err(Now::Busy) => {
                let busy = proto::v1::Busy {
                    retry_after_ms: BUSY_RETRY_AFTER_MS,
                    client_msg_id: 0,
                };
                send_frame(io, conn, server_frame::Kind::Busy(busy));
            }
            Err(Now::Release(r)) => self.release_parked(io, (conn, frame, peer), r),
        }
    }

    /// Serves a pre-login frame on this box, as a single box does.
    fn serve_prelogin(
        &mut self,
        io: &mut ShardIo<Self>,
        conn: ConnId,
        frame: ClientFrame,
        peer: Option<IpAddr>,
    ) {
        self.run(io, |s, now, out| {
            s.note_peer(conn, peer);
            s.on_frame(now, conn, frame, out)
        });
    }

    fn release_parked(
        &mut self,
        io: &mut ShardIo<Self>,
        (conn, frame, peer): (ConnId, ClientFrame, Option<IpAddr>),
        release: Release,
    ) {
        // Closed while it waited: its on_close has run, nothing may be served for it.
        if !io.is_open(conn) {
            return;
        }
        match release {
            Release::Serve => self.serve_prelogin(io, conn, frame, peer),
            Release::Redirect(addr) => {
                let redirect = proto::v1::Redirect { addr };
                send_frame(io, conn, server_frame::Kind::Redirect(redirect));
                let _ = io.close(conn);
            }
            Release::Refuse(code, detail) => {
                let frame = messaging::state::effect::error(code, detail, 0);
                send_frame(io, conn, frame);
            }
        }
    }

    /// Polls again in [`PORT_POLL_MS`] while frames wait or messages are held, else in
    /// [`PORT_IDLE_POLL_MS`] (the gateway wakes the shard for what it brings:
    /// `on_outside`), unless an earlier poll is set. A full timer wheel leaves it unset: the
    /// next question or wake-up tries again.
    pub(super) fn poll_cluster_later(&mut self, io: &mut ShardIo<Self>) {
        let Some(port) = self.cluster.as_mut() else {
            return;
        };
        let wait = if port.busy() {
            PORT_POLL_MS
        } else {
            PORT_IDLE_POLL_MS
        };
        let now = io.now_ms();
        let at = now + wait;
        // A pending poll due already is one whose timer has fired or is firing.
        if port.timer_at.is_none_or(|t| at < t || t <= now) {
            let set = io.set_timer(at, ServiceTimer::ClusterAnswers).is_ok();
            port.timer_at = set.then_some(at).or(port.timer_at);
        }
    }

    /// [`ServiceTimer::ClusterAnswers`] or a wake-up by the gateway (`on_outside`):
    /// releases every answered or late frame, hands over what the gateway brought, and
    /// retries held messages.
    pub(super) fn poll_cluster(&mut self, io: &mut ShardIo<Self>, timer_fired: bool) {
        let Some(port) = self.cluster.as_mut() else {
            return;
        };
        // A timer may fire a little before the wall clock reaches the time it was set for:
        // whichever fired, the next poll is set anew below (an extra one is harmless).
        if timer_fired {
            port.timer_at = None;
        }
        let (released, events) = port.poll(io.now_ms());
        for (p, r) in released {
            let Parked {
                conn, frame, peer, ..
            } = p;
            self.release_parked(io, (conn, frame, peer), r);
        }
        for e in events {
            match e {
                Event::ToUser { user, frame } => {
                    let home = messaging::state::home::home_of(user, io.shard_count());
                    self.mesh_send(io, home, ShardMsg::ToUser { user, frame });
                }
                Event::Mesh(msg) => self.run(io, |s, now, out| s.on_mesh(now, msg, out)),
                Event::MembersChanged => self.run(io, |s, now, out| s.presence_ask_again(now, out)),
                Event::InboundCopy { delivery } => {
                    let msg = ShardMsg::Deliver(delivery);
                    self.run(io, |s, now, out| s.on_mesh(now, msg, out));
                }
                Event::GroupCopy {
                    group_id,
                    sender,
                    client_msg_id,
                    stored,
                } => self.group_copy_outcome(io, (group_id, sender, client_msg_id), stored),
                Event::Inbound { token, delivery } => {
                    // Behind its sender's messages refused earlier in this round, if any.
                    let Some(port) = self.cluster.as_mut() else {
                        continue;
                    };
                    if let Some((token, d)) = port.behind_held(token, delivery) {
                        self.store_inbound(io, token, d, false);
                    }
                }
            }
        }
        self.retry_held(io);
        self.poll_cluster_later(io);
    }

    /// Stores a message from another box as a mesh `Deliver`; true if it was refused (the
    /// port holds it for a retry, in its sender's order).
    fn store_inbound(
        &mut self,
        io: &mut ShardIo<Self>,
        token: u64,
        delivery: Box<messaging::state::mesh_msg::Delivery>,
        retried: bool,
    ) -> bool {
        // Kept only for this call: a refusal is answered while the message is handed over.
        let copy = delivery.clone();
        self.run(io, |s, now, out| {
            s.on_mesh(now, ShardMsg::Deliver(delivery), out)
        });
        self.cluster
            .as_mut()
            .is_some_and(|p| p.after_store(token, copy, retried))
    }

    /// Hands held messages over again, each sender's in order, until one is refused.
    fn retry_held(&mut self, io: &mut ShardIo<Self>) {
        let Some(port) = self.cluster.as_ref() else {
            return;
        };
        for sender in port.held_senders() {
            loop {
                let Some(port) = self.cluster.as_mut() else {
                    return;
                };
                let Some((token, d)) = port.pop_held(sender) else {
                    break;
                };
                if self.store_inbound(io, token, d, true) {
                    break;
                }
            }
        }
    }

    /// A mesh message on a box of a cluster: a 1:1 message or a receipt for a phone with no
    /// account here goes to the gateway; everything else to the state machines.
    pub(super) fn on_mesh_clustered(&mut self, io: &mut ShardIo<Self>, msg: ShardMsg) {
        let here = |s: &Self, phone: Option<Phone>| {
            s.state
                .as_ref()
                .is_some_and(|st| phone.is_some_and(|p| st.registry().exists(p)))
        };
        let msg = match msg {
            ShardMsg::Deliver(d) if d.reply == ReplyTo::Sender && !here(self, d.to) => {
                let Some(port) = self.cluster.as_mut() else {
                    return;
                };
                let Err(d) = port.send(d) else {
                    return;
                };
                // The link is full: the sender retries.
                let busy = proto::v1::Busy {
                    retry_after_ms: BUSY_RETRY_AFTER_MS,
                    client_msg_id: d.client_msg_id,
                };
                let home = messaging::state::home::home_of(d.from, io.shard_count());
                let frame = server_frame::Kind::Busy(busy);
                let user = d.from;
                return self.mesh_send(io, home, ShardMsg::ToUser { user, frame });
            }
            ShardMsg::Receipt {
                sender,
                by,
                mut receipt,
            } if !here(self, Some(sender)) => {
                if let Some(by) = by {
                    receipt.by = by.to_e164(); // the envelope carries it as text
                }
                if let Some(port) = self.cluster.as_mut() {
                    port.receipt(sender, receipt);
                }
                return;
            }
            other => match self.forward_to_box(io, other) {
                Some(msg) => msg,
                None => return, // to another box (`cluster_groups.rs`)
            },
        };
        self.run(io, |s, now, out| s.on_mesh(now, msg, out));
    }
}

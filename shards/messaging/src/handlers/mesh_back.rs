//! What the service does with a mesh message its outbox handed back (the outbox was full, or
//! older messages wait to be sent again): the mesh never drops a message the protocol owes
//! an answer for. Owns that decision and its counters; it does not send or hold anything
//! itself (the adapter does).
//!
//! Per message, and why each is safe:
//! - a new send (`Deliver` of a 1:1 message, `GroupSend`) or a group operation, on its way
//!   from its sender's home: the sender is here, and is answered `Busy` at once. Nothing
//!   was stored, so a retry with the same `client_msg_id` is a fresh send (`overload.rs`).
//! - a presence request or update (`PresenceSub`, `ToUser` with a `Presence`): nobody is
//!   owed it; dropped and counted (the subscriber asks again after reconnecting).
//! - anything else is an answer or a result of work already admitted (`ServerAck`, `Busy`,
//!   errors, receipts, group copies and their outcomes): held and sent again, in order,
//!   once the outbox has room. The hold is bounded (`MESH_HELD_MSGS_MAX`); what does not
//!   fit is dropped and counted in `mesh_owed_dropped_total`, which the overload admission
//!   (new work refused from a quarter of the outbox) keeps at 0.

use std::collections::VecDeque;

use crate::state::home::Phone;
use proto::ids::ShardId;
use proto::v1::server_frame;

use crate::state::counters::MeshBackCounters;
use crate::state::effect::Out;
use crate::state::limits::BUSY_RETRY_AFTER_MS;
use crate::state::limits::MESH_HELD_MSGS_MAX;
use crate::state::mesh_msg::{ReplyTo, ShardMsg};
use crate::state::{busy, ShardState};

/// What became of a handed-back message.
#[derive(Debug)]
pub enum HandedBack {
    /// Its sender was answered `Busy` (or is gone): nothing more to do.
    Answered,
    /// Nobody is owed it: dropped.
    Dropped,
    /// Owed: send it again once the outbox has room.
    Hold(ShardMsg),
}

/// Owed messages the outbox handed back, in the order they were sent, until it has room:
/// at most [`MESH_HELD_MSGS_MAX`]. While any is held, newer messages wait behind them, so
/// messages between two shards keep their order (an answer before its receipt).
#[derive(Debug, Default)]
pub struct Held {
    queue: VecDeque<(ShardId, ShardMsg)>,
}

/// Queues a message on the mesh, or hands it back (`ShardIo::mesh_send`).
pub trait MeshSend: FnMut(ShardId, ShardMsg) -> Result<(), ShardMsg> {}
impl<F: FnMut(ShardId, ShardMsg) -> Result<(), ShardMsg>> MeshSend for F {}

// A failed send hands the message back (STYLE); boxing it would allocate on every send.
#[allow(clippy::result_large_err)]
impl Held {
    /// Sends `msg` through `send` unless older messages are held; gives it back when it was
    /// not sent (then the service decides: [`ShardState::on_mesh_refused`]).
    pub fn send(
        &self,
        to: ShardId,
        msg: ShardMsg,
        mut send: impl MeshSend,
    ) -> Result<(), ShardMsg> {
        if !self.queue.is_empty() {
            return Err(msg);
        }
        send(to, msg)
    }

    /// Holds `msg` for `to`; gives it back when the hold is full.
    pub fn hold(&mut self, to: ShardId, msg: ShardMsg) -> Result<(), ShardMsg> {
        if self.queue.len() >= MESH_HELD_MSGS_MAX {
            return Err(msg);
        }
        self.queue.push_back((to, msg));
        Ok(())
    }

    /// Sends held messages again, oldest first, while `send` takes them; true when none is
    /// left.
    pub fn resend(&mut self, mut send: impl MeshSend) -> bool {
        while let Some((to, msg)) = self.queue.pop_front() {
            if let Err(msg) = send(to, msg) {
                self.queue.push_front((to, msg));
                return false;
            }
        }
        true
    }

    /// Messages held now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

impl ShardState {
    /// The mesh handed `msg` back: answer its sender, drop it, or hold it (module doc).
    pub fn on_mesh_refused(&mut self, msg: ShardMsg, out: &mut Out) -> HandedBack {
        self.mesh_back.handed_back += 1;
        let (sender, client_msg_id) = match &msg {
            ShardMsg::Deliver(d) if d.reply == ReplyTo::Sender => (Some(d.from), d.client_msg_id),
            ShardMsg::GroupSend(d) => (Some(d.from), d.client_msg_id),
            ShardMsg::GroupOp { requester, .. } => (Phone::parse(requester), 0),
            ShardMsg::PresenceSub { .. }
            | ShardMsg::ToUser {
                frame: server_frame::Kind::Presence(_),
                ..
            } => {
                self.mesh_back.presence_dropped += 1;
                return HandedBack::Dropped;
            }
            _ => {
                self.mesh_back.held += 1;
                return HandedBack::Hold(msg);
            }
        };
        self.mesh_back.answered_busy += 1;
        out.busy_refusals += 1;
        if let Some(conn) = self.sessions.conn_of(sender) {
            out.frame(conn, busy(BUSY_RETRY_AFTER_MS, client_msg_id));
        }
        HandedBack::Answered
    }

    /// An owed message could not be held either.
    pub fn note_owed_dropped(&mut self) {
        self.mesh_back.owed_dropped += 1;
    }

    /// What the mesh handed back since start.
    pub fn mesh_back(&self) -> MeshBackCounters {
        self.mesh_back
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Sim;
    use crate::state::mesh_msg::Delivery;

    const A: &str = "+15550000001";
    const B: &str = "+15550000002";

    fn delivery(reply: ReplyTo) -> Delivery {
        Delivery {
            to: Phone::parse(B),
            from: Phone::parse(A).unwrap(),
            device: 0,
            client_msg_id: 7,
            group_id: if reply == ReplyTo::Group { 9 } else { 0 },
            body: b"hi".to_vec().into(),
            media: None,
            media_base: None,
            sent_at_ms: 0,
            reply,
        }
    }

    fn ack(n: u64) -> ShardMsg {
        ShardMsg::ToUser {
            user: Phone::parse(A).unwrap(),
            frame: server_frame::Kind::ServerAck(proto::v1::ServerAck {
                client_msg_id: n,
                ..Default::default()
            }),
        }
    }

    fn id(m: &ShardMsg) -> u64 {
        match m {
            ShardMsg::ToUser {
                frame: server_frame::Kind::ServerAck(a),
                ..
            } => a.client_msg_id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn held_messages_go_out_in_order_before_any_newer_one_and_the_hold_is_bounded() {
        // An outbox with room for two, flushed by the test.
        let mut outbox: Vec<u64> = Vec::new();
        let mut held = Held::default();
        let to = proto::ids::ShardId(1);
        let offer = |held: &mut Held, outbox: &mut Vec<u64>, m: ShardMsg| {
            let sent = held.send(to, m, |_, m| {
                if outbox.len() == 2 {
                    return Err(m);
                }
                outbox.push(id(&m));
                Ok(())
            });
            if let Err(m) = sent {
                held.hold(to, m).unwrap();
            }
        };
        for n in 1..=4 {
            offer(&mut held, &mut outbox, ack(n));
        }
        assert_eq!((outbox.clone(), held.len()), (vec![1, 2], 2));
        outbox.clear(); // the loop turn flushed it
        offer(&mut held, &mut outbox, ack(5));
        assert!(
            outbox.is_empty(),
            "a newer message waits behind the held ones"
        );
        let resend = |held: &mut Held, outbox: &mut Vec<u64>| {
            held.resend(|_, m| {
                if outbox.len() == 2 {
                    return Err(m);
                }
                outbox.push(id(&m));
                Ok(())
            })
        };
        assert!(!resend(&mut held, &mut outbox));
        assert_eq!(outbox, vec![3, 4]);
        outbox.clear();
        assert!(resend(&mut held, &mut outbox));
        assert_eq!((outbox, held.len()), (vec![5], 0));
        for n in 0..MESH_HELD_MSGS_MAX as u64 {
            held.hold(to, ack(n)).unwrap();
        }
        assert!(held.hold(to, ack(0)).is_err(), "bounded");
    }

    #[test]
    fn a_handed_back_send_is_answered_busy_presence_is_dropped_and_answers_are_held() {
        let mut sim = Sim::new(1);
        let a = sim.login(A, 0);
        sim.take(a);
        let s = &mut sim.shards[0];
        let mut out = Out::default();
        let send = ShardMsg::Deliver(Box::new(delivery(ReplyTo::Sender)));
        assert!(matches!(
            s.on_mesh_refused(send, &mut out),
            HandedBack::Answered
        ));
        let frames: Vec<_> = out.now.drain(..).collect();
        assert!(
            matches!(&frames[..], [crate::state::effect::Effect::Frame(c, server_frame::Kind::Busy(b))]
                if *c == a && b.client_msg_id == 7),
            "{frames:?}"
        );
        let presence = ShardMsg::PresenceSub {
            contact: B.into(),
            subscriber: A.into(),
        };
        assert!(matches!(
            s.on_mesh_refused(presence, &mut out),
            HandedBack::Dropped
        ));
        let ack = ShardMsg::ToUser {
            user: Phone::parse(A).unwrap(),
            frame: server_frame::Kind::ServerAck(Default::default()),
        };
        assert!(matches!(
            s.on_mesh_refused(ack, &mut out),
            HandedBack::Hold(_)
        ));
        let copy = ShardMsg::Deliver(Box::new(delivery(ReplyTo::Group)));
        assert!(matches!(
            s.on_mesh_refused(copy, &mut out),
            HandedBack::Hold(_)
        ));
        let receipt = ShardMsg::Receipt {
            sender: Phone::parse(A).unwrap(),
            by: Phone::parse(B),
            receipt: Default::default(),
        };
        assert!(matches!(
            s.on_mesh_refused(receipt, &mut out),
            HandedBack::Hold(_)
        ));
        assert!(out.now.is_empty());
        let c = s.mesh_back();
        assert_eq!(
            (c.handed_back, c.answered_busy, c.presence_dropped, c.held),
            (5, 1, 1, 3)
        );
    }
}

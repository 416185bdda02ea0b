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

use proto::v1::server_frame;

use crate::effect::Out;
use crate::mesh_msg::{ReplyTo, ShardMsg};
use crate::overload::BUSY_RETRY_AFTER_MS;
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

/// What the mesh handed back since start.
#[derive(Debug, Clone, Copy, Default)]
pub struct MeshBackCounters {
    /// Messages handed back (all kinds).
    pub handed_back: u64,
    /// New sends answered `Busy` instead.
    pub answered_busy: u64,
    /// Presence messages dropped.
    pub presence_dropped: u64,
    /// Owed messages held to be sent again.
    pub held: u64,
    /// Owed messages dropped: the hold was full.
    pub owed_dropped: u64,
}

impl ShardState {
    /// The mesh handed `msg` back: answer its sender, drop it, or hold it (module doc).
    pub fn on_mesh_refused(&mut self, msg: ShardMsg, out: &mut Out) -> HandedBack {
        self.mesh_back.handed_back += 1;
        let (sender, client_msg_id) = match &msg {
            ShardMsg::Deliver(d) if d.reply == ReplyTo::Sender => (&d.from, d.client_msg_id),
            ShardMsg::GroupSend(d) => (&d.from, d.client_msg_id),
            ShardMsg::GroupOp { requester, .. } => (requester, 0),
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
        self.busy_rejects += 1;
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
    use crate::mesh_msg::Delivery;
    use crate::sim::Sim;

    const A: &str = "+15550000001";
    const B: &str = "+15550000002";

    fn delivery(reply: ReplyTo) -> Delivery {
        Delivery {
            to: B.into(),
            from: A.into(),
            device: 0,
            client_msg_id: 7,
            group_id: if reply == ReplyTo::Group { 9 } else { 0 },
            body: b"hi".to_vec(),
            media: None,
            sent_at_ms: 0,
            reply,
        }
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
            matches!(&frames[..], [crate::effect::Effect::Frame(c, server_frame::Kind::Busy(b))]
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
            user: A.into(),
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
            sender: A.into(),
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

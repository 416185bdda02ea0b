//! A live upgrade's side of the rules: what a logged-in connection carries to the next
//! process (who is logged in, and which queued items were already sent on it), and how the
//! next process takes the session on without the phone noticing (no second `LoggedIn`, no
//! item sent twice).
//!
//! The session bytes: `version (1) | phone length (1) | phone | sent count (u32) | ids
//! (u64 each)`, big-endian. Empty: the connection had not logged in. The next process has
//! replayed the same log (the old one flushed it before it let go of the data directory),
//! so every id names an item it also holds, unless acked meanwhile.
//!
//! Not carried (in memory only, rebuilt as phones act): presence subscriptions and the
//! recent-ack memory a reconnecting phone's duplicate acks are matched against.

use proto::ids::ConnId;

use crate::state::effect::{Effect, Out};
use crate::state::ShardState;

/// Layout version of the session bytes.
const SESSION_VERSION: u8 = 1;

/// Most sent ids one session carries (the delivery window is far below this).
const SESSION_SENT_IDS_MAX: usize = 1 << 16;

impl ShardState {
    /// What `conn` carries to the next process: its session, or nothing before login.
    pub fn departing_session(&self, conn: ConnId) -> Vec<u8> {
        let Some(user) = self.sessions.user_of(conn) else {
            return Vec::new();
        };
        let phone = user.to_string();
        let ids = self.queues.sent_ids(&phone);
        let mut out = Vec::with_capacity(2 + phone.len() + 4 + 8 * ids.len());
        out.push(SESSION_VERSION);
        out.push(phone.len() as u8);
        out.extend_from_slice(phone.as_bytes());
        out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out
    }

    /// In the next process: `conn` arrives with the bytes [`ShardState::departing_session`]
    /// made. A session goes on as it was (no `LoggedIn` frame; items already sent stay
    /// sent; items the old process had not sent yet go now). Returns whether `conn` is
    /// logged in; bytes that do not parse leave it logged out (it must log in again).
    pub fn on_arrive(&mut self, conn: ConnId, session: &[u8], out: &mut Out) -> bool {
        let Some((phone, ids)) = parse_session(session) else {
            return false;
        };
        if self.sessions.login(&phone, conn).is_some() {
            // Two connections of one phone cannot both have been its session.
            return false;
        }
        out.now.push(Effect::LoggedIn(conn));
        self.queues.mark_sent(&phone, &ids);
        self.pump(&phone, out);
        true
    }
}

fn parse_session(b: &[u8]) -> Option<(String, Vec<u64>)> {
    let (&version, rest) = b.split_first()?;
    let (&len, rest) = rest.split_first()?;
    if version != SESSION_VERSION || rest.len() < usize::from(len) + 4 {
        return None;
    }
    let (phone, rest) = rest.split_at(usize::from(len));
    let phone = std::str::from_utf8(phone).ok()?.to_string();
    crate::state::home::Phone::parse(&phone)?;
    let (count, rest) = rest.split_at(4);
    let count = u32::from_be_bytes(count.try_into().ok()?) as usize;
    if count > SESSION_SENT_IDS_MAX || rest.len() != 8 * count {
        return None;
    }
    let ids = rest
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Some((phone, ids))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{text, Sim};
    use proto::v1::{client_frame, server_frame};

    const A: &str = "+15550000001";
    const B: &str = "+15550000002";

    /// B got message 1 and has not acked it when the process is replaced; its session
    /// goes on in the next one (`keep_sent`: with the ids it carries, or without them).
    /// Returns what B's new connection receives before anything else happens, the cluster
    /// with A's and B's new connections, and message 1's server id.
    fn upgraded(keep_sent: bool) -> (Vec<server_frame::Kind>, Sim, ConnId, ConnId, u64) {
        let mut sim = Sim::new(2);
        let a = sim.login(A, 0);
        let b = sim.login(B, 1);
        sim.send(a, text(B, 1));
        sim.commit();
        let got = sim.take(b);
        let [server_frame::Kind::Message(m1)] = got.as_slice() else {
            panic!("message 1: {got:?}")
        };
        let m1 = m1.server_msg_id;
        let (ha, hb) = (sim.conn_shard[&a], sim.conn_shard[&b]);
        let sa = sim.shards[ha].departing_session(a);
        let mut sb = sim.shards[hb].departing_session(b);
        if !keep_sent {
            let phone_end = 2 + usize::from(sb[1]);
            sb.truncate(phone_end);
            sb.extend_from_slice(&0u32.to_be_bytes());
        }
        // The next process: every shard replays the log.
        sim.restart();
        let a2 = sim.arrive(ha, &sa);
        let b2 = sim.arrive(hb, &sb);
        let first = sim.take(b2);
        (first, sim, a2, b2, m1)
    }

    #[test]
    fn an_upgraded_session_gets_nothing_twice_and_loses_nothing() {
        let (first, mut sim, a2, b2, m1) = upgraded(true);
        assert!(
            first.is_empty(),
            "message 1 is not delivered again: {first:?}"
        );
        sim.send(a2, text(B, 2));
        sim.commit();
        let got = sim.take(b2);
        let [server_frame::Kind::Message(m2)] = got.as_slice() else {
            panic!("only message 2: {got:?}")
        };
        assert_eq!(m2.client_msg_id, 2);
        // B acks both: A hears a delivered receipt for each, message 1 included.
        sim.send(
            b2,
            client_frame::Kind::Ack(proto::v1::Ack {
                server_msg_ids: vec![m1, m2.server_msg_id],
            }),
        );
        sim.commit();
        let receipts = sim
            .take(a2)
            .into_iter()
            .filter(|f| matches!(f, server_frame::Kind::Receipt(_)))
            .count();
        assert_eq!(receipts, 2);
    }

    /// The ids are what keeps message 1 from going out twice.
    #[test]
    fn without_the_sent_ids_the_unacked_message_would_go_again() {
        let (first, ..) = upgraded(false);
        assert!(
            matches!(first.as_slice(), [server_frame::Kind::Message(m)] if m.client_msg_id == 1),
            "{first:?}"
        );
    }

    #[test]
    fn session_bytes_read_back_and_garbage_is_no_session() {
        let mut b = vec![SESSION_VERSION, 12];
        b.extend_from_slice(b"+15550001234");
        b.extend_from_slice(&2u32.to_be_bytes());
        b.extend_from_slice(&7u64.to_be_bytes());
        b.extend_from_slice(&9u64.to_be_bytes());
        assert_eq!(parse_session(&b), Some(("+15550001234".into(), vec![7, 9])));
        for len in 0..b.len() {
            assert_eq!(parse_session(&b[..len]), None, "cut at {len}");
        }
        let mut other = b.clone();
        other[0] = 2;
        assert_eq!(parse_session(&other), None);
        assert_eq!(parse_session(&[]), None);
    }
}

//! Messages to a live box straight over core NATS (request/reply), JetStream only when that
//! box does not take them: the cheap path between boxes that are up.
//!
//! ## Why
//! Through JetStream a message costs a stream write, a publish ack, a pull delivery and a
//! consumer ack in nats-server (about half of a cross-box message's CPU, measured with
//! `just bench-cluster`). A live home box stores a message durably itself (its shard log),
//! so the sender's `ServerAck` can wait for its answer instead.
//!
//! ## Steps
//! 1. A message whose recipient's home is known and live is sent as a [`DirectRequest`] to
//!    [`subject`] of that box, carrying `after_seq`: the highest sequence of the home box's
//!    stream this box has had acked by JetStream.
//! 2. The home box takes it only once it has handed over its stream up to `after_seq`
//!    (`in_order.rs`), pushes it to the recipient's shard like a stream message, and answers
//!    [`DirectReply`] when the shard has stored it (durable or acked by the recipient), or
//!    `stored_id` 0 when it did not take it. No answer within [`DIRECT_WAIT_MS`], no
//!    responder, or 0: the message goes to the home box's stream (`cross.rs`) instead. If
//!    the home box had stored it after all, its dedupe stores the stream's copy once.
//! 3. Order: the recipient's dedupe needs a sender's messages in the order sent
//!    (`tables/dedupe.rs`). Two paths could overtake each other, so [`Lines`] keeps, per
//!    sender, at most one direct message in flight, its later ones queued behind it; one
//!    that falls back to the stream takes its queue with it, in order; and a sender with
//!    messages in flight to a stream sends its next one directly only once they are all
//!    in that stream (acked), whose sequence then rides as `after_seq`.
//! 4. Receipts go directly too, without a line (a receipt has no order to keep); one not
//!    taken goes to the stream.
//!
//! Peer input: a request is decoded and its envelope checked (`cross::Envelope::check`)
//! before any shard sees it; one that fails is answered 0 and counted.
//!
//! This module owns the wire format and the lines; it must not touch NATS or a shard.

use std::collections::{HashMap, VecDeque};

use super::cross::Envelope;

/// Longest wait for a live box to answer a direct message before it goes to the stream.
pub const DIRECT_WAIT_MS: u64 = 2_000;
/// Senders with messages in flight between boxes that this box keeps lines for; past it a
/// new sender's message is answered `Busy`.
pub const LINES_MAX: usize = 1 << 16;
/// Messages one sender may have queued behind its direct message; past it `Busy`. As many
/// as the home box's stream reader takes unacked (`cross::INBOUND_PENDING_MAX`): a burst
/// larger than a sender's share of a recipient's queue
/// (`QUEUE_MESSAGES_PER_SENDER_MAX`) still queues, and falls back to the stream whole.
pub const LINE_MSGS_MAX: usize = super::cross::INBOUND_PENDING_MAX;
/// Messages all senders together may have queued; past it `Busy`.
pub const QUEUED_MSGS_MAX: usize = super::GATEWAY_PENDING_MAX;

/// The subject box `id` takes direct messages on.
pub fn subject(id: &str) -> String {
    format!("sb.direct.{id}")
}

/// A message or receipt sent straight to its home box.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DirectRequest {
    /// The home box takes it only once it has handed over its stream up to here.
    #[prost(uint64, tag = "1")]
    pub after_seq: u64,
    /// The message or receipt.
    #[prost(message, optional, tag = "2")]
    pub env: Option<Envelope>,
}

impl DirectRequest {
    /// The wire bytes of a request for `env`, written from it where it lies (no copy of
    /// the envelope and its body, as building a `DirectRequest` would make).
    pub fn encode(after_seq: u64, env: &Envelope) -> Vec<u8> {
        use prost::encoding::{message, uint64};
        let len = uint64::encoded_len(1, &after_seq) + message::encoded_len(2, env);
        let mut buf = Vec::with_capacity(len);
        if after_seq != 0 {
            uint64::encode(1, &after_seq, &mut buf);
        }
        message::encode(2, env, &mut buf);
        buf
    }
}

/// The home box's answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DirectReply {
    /// Nonzero: stored (the sender's `ServerAck` id); 0: not taken, use the stream.
    #[prost(uint64, tag = "1")]
    pub stored_id: u64,
}

/// Where a sender's next message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Straight to its home box (one in flight for this sender now).
    Direct,
    /// To its home box's stream.
    Stream,
    /// Behind the sender's direct message in flight (queued in its line).
    Queued,
    /// Not taken (too many lines, or this sender's is full): the sender hears `Busy`.
    Full,
}

/// One sender's state.
#[derive(Debug)]
enum Sending<M> {
    /// One direct message in flight; later ones wait here, in order.
    Direct(VecDeque<M>),
    /// This many messages in flight to streams.
    Stream(usize),
}

/// Per sender: which path its messages take, so that no two of them overtake each other.
#[derive(Debug)]
pub struct Lines<M> {
    senders: HashMap<String, Sending<M>>,
    /// Messages queued in all lines.
    queued: usize,
}

impl<M> Default for Lines<M> {
    fn default() -> Self {
        Lines {
            senders: HashMap::new(),
            queued: 0,
        }
    }
}

impl<M> Lines<M> {
    /// Step 3: where `sender`'s next message `m` goes, `direct` saying whether its home is
    /// known and live. `Queued` keeps `m`; otherwise it is given back to be sent.
    pub fn route(&mut self, sender: &str, direct: bool, m: M) -> (Route, Option<M>) {
        let full = self.senders.len() >= LINES_MAX;
        match self.senders.get_mut(sender) {
            None if full => (Route::Full, Some(m)),
            None => {
                let (state, route) = if direct {
                    (Sending::Direct(VecDeque::new()), Route::Direct)
                } else {
                    (Sending::Stream(1), Route::Stream)
                };
                self.senders.insert(sender.to_string(), state);
                (route, Some(m))
            }
            Some(Sending::Stream(n)) => {
                *n += 1;
                (Route::Stream, Some(m))
            }
            Some(Sending::Direct(line))
                if line.len() < LINE_MSGS_MAX && self.queued < QUEUED_MSGS_MAX =>
            {
                line.push_back(m);
                self.queued += 1;
                (Route::Queued, None)
            }
            Some(Sending::Direct(_)) => (Route::Full, Some(m)),
        }
    }

    /// Step 2 and 3: `sender`'s direct message was stored (`taken`) or must go to the
    /// stream. Returns what goes where now, in order: with `taken`, the next message of the
    /// line to send directly if `can_direct` says its home may be reached so (the rest stay
    /// queued behind it); otherwise the whole line, to the stream, behind the message that
    /// was not taken (the caller sends that one to the stream first).
    pub fn direct_done(
        &mut self,
        sender: &str,
        taken: bool,
        can_direct: impl Fn(&M) -> bool,
    ) -> Vec<(Route, M)> {
        let Some(Sending::Direct(line)) = self.senders.get_mut(sender) else {
            return Vec::new();
        };
        if taken {
            match line.front() {
                None => {
                    self.senders.remove(sender);
                    return Vec::new();
                }
                Some(next) if can_direct(next) => {
                    let next = line.pop_front().expect("a front");
                    self.queued -= 1;
                    return vec![(Route::Direct, next)];
                }
                Some(_) => {}
            }
        }
        let line = std::mem::take(line);
        self.queued -= line.len();
        // Every message handed back is in flight to the stream now (and, when not taken,
        // the one that fell back too).
        let in_flight = line.len() + usize::from(!taken);
        if in_flight == 0 {
            self.senders.remove(sender);
        } else {
            self.senders
                .insert(sender.to_string(), Sending::Stream(in_flight));
        }
        line.into_iter().map(|m| (Route::Stream, m)).collect()
    }

    /// Step 3: one of `sender`'s stream messages is settled (in the stream, or refused).
    pub fn stream_done(&mut self, sender: &str) {
        if let Some(Sending::Stream(n)) = self.senders.get_mut(sender) {
            *n -= 1;
            if *n == 0 {
                self.senders.remove(sender);
            }
        }
    }

    /// Senders with a line now.
    pub fn senders(&self) -> usize {
        self.senders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_has_one_direct_message_in_flight_the_rest_queue_behind_it() {
        let mut l = Lines::default();
        assert_eq!(l.route("s", true, 1), (Route::Direct, Some(1)));
        assert_eq!(l.route("s", true, 2), (Route::Queued, None));
        assert_eq!(l.route("s", true, 3), (Route::Queued, None));
        // Another sender is not held up.
        assert_eq!(l.route("t", true, 9), (Route::Direct, Some(9)));
        assert_eq!(l.direct_done("s", true, |_| true), vec![(Route::Direct, 2)]);
        assert_eq!(l.direct_done("s", true, |_| true), vec![(Route::Direct, 3)]);
        assert!(l.direct_done("s", true, |_| true).is_empty());
        assert_eq!(l.senders(), 1);
    }

    #[test]
    fn a_direct_message_not_taken_takes_its_line_to_the_stream_in_order() {
        let mut l = Lines::default();
        l.route("s", true, 1);
        l.route("s", true, 2);
        l.route("s", true, 3);
        assert_eq!(
            l.direct_done("s", false, |_| true),
            vec![(Route::Stream, 2), (Route::Stream, 3)]
        );
        // Later ones follow them to the stream until all three are in it.
        assert_eq!(l.route("s", true, 4), (Route::Stream, Some(4)));
        for _ in 0..3 {
            l.stream_done("s");
            assert_eq!(l.senders(), 1);
        }
        l.stream_done("s");
        assert_eq!(l.senders(), 0);
        assert_eq!(l.route("s", true, 5), (Route::Direct, Some(5)));
    }

    #[test]
    fn a_queued_message_whose_home_went_down_takes_the_line_to_the_stream() {
        let mut l = Lines::default();
        l.route("s", true, 1);
        l.route("s", true, 2);
        l.route("s", true, 3);
        assert_eq!(
            l.direct_done("s", true, |m| *m != 2),
            vec![(Route::Stream, 2), (Route::Stream, 3)]
        );
        assert_eq!(l.route("s", true, 4), (Route::Stream, Some(4)));
        for _ in 0..3 {
            l.stream_done("s");
        }
        assert_eq!(l.senders(), 0);
    }

    #[test]
    fn a_home_not_known_or_not_live_is_reached_through_its_stream() {
        let mut l = Lines::default();
        assert_eq!(l.route("s", false, 1), (Route::Stream, Some(1)));
        // Known now, but the first is not in the stream yet: the next may not overtake it.
        assert_eq!(l.route("s", true, 2), (Route::Stream, Some(2)));
        l.stream_done("s");
        l.stream_done("s");
        assert_eq!(l.route("s", true, 3), (Route::Direct, Some(3)));
    }

    #[test]
    fn a_full_line_is_busy_never_a_second_path() {
        let mut l = Lines::default();
        l.route("s", true, 0);
        for i in 1..=LINE_MSGS_MAX {
            assert_eq!(l.route("s", true, i), (Route::Queued, None));
        }
        assert_eq!(l.route("s", true, 999), (Route::Full, Some(999)));
        assert_eq!(l.direct_done("s", true, |_| true), vec![(Route::Direct, 1)]);
        assert_eq!(l.route("s", true, 1000), (Route::Queued, None));
    }

    #[test]
    fn requests_cross_as_they_left() {
        use prost::Message as _;
        let r = DirectRequest {
            after_seq: 7,
            env: Some(Envelope {
                to: "+15550000001".into(),
                from: "+15550000002".into(),
                client_msg_id: 3,
                body: b"hi".to_vec(),
                ..Default::default()
            }),
        };
        let back = DirectRequest::decode(r.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, r);
        // Written without building the request: the same bytes.
        let env = r.env.as_ref().unwrap();
        assert_eq!(DirectRequest::encode(7, env), r.encode_to_vec());
        let first = DirectRequest {
            after_seq: 0,
            env: Some(env.clone()),
        };
        assert_eq!(DirectRequest::encode(0, env), first.encode_to_vec());
    }
}

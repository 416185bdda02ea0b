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
//! 5. Batches: what a gateway turn (the events ready at once, at most
//!    `gateway::TURN_EVENTS_MAX`) sends to one home box leaves as one NATS request
//!    ([`Batches`], [`encode_batch`]: at most [`DIRECT_BATCH_MSGS_MAX`] messages and
//!    receipts and [`DIRECT_BATCH_BYTES_MAX`] bytes), answered by one reply with an id per
//!    message in the order sent ([`DirectBatchReply`]), once the home has settled all of
//!    them. Nothing waits for a batch to fill: a batch holds what was already waiting, so
//!    it forms only when messages to one box come faster than the gateway's turns. Lines
//!    are unchanged (one message per sender in flight: a batch holds at most one of each
//!    sender's), and one `after_seq` (the highest at sending) covers the batch. A batch of
//!    one is the same bytes as a request before batching (field 2), and a reply of one the
//!    same as a [`DirectReply`].
//!
//! Peer input: a request is decoded with its size and count bounded ([`decode_batch`])
//! and each envelope checked (`cross::Envelope::check`) before any shard sees it; a batch
//! that fails is answered with no ids (every message of it goes to the stream) and
//! counted, an envelope that fails is answered 0 and counted.
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

/// Messages and receipts one direct request carries, at most.
pub const DIRECT_BATCH_MSGS_MAX: usize = 64;
/// Bytes of envelopes one direct request carries, at most (a batch of one may hold the
/// largest envelope, `cross::ENVELOPE_BYTES_MAX`; nats-server's default payload limit is
/// 1 MiB).
pub const DIRECT_BATCH_BYTES_MAX: usize = 256 * 1024;
/// Bytes of a request beyond its envelopes, at most: `after_seq` and each envelope's tag
/// and length.
const BATCH_FRAMING_BYTES_MAX: usize = 11 + DIRECT_BATCH_MSGS_MAX * 4;
/// Bytes of a reply, at most (an id per message: tag and varint).
const REPLY_BYTES_MAX: usize = DIRECT_BATCH_MSGS_MAX * 11;

/// The wire bytes of one request carrying `envs` (1 ..= [`DIRECT_BATCH_MSGS_MAX`]), written
/// from them where they lie. One envelope goes as field 2, as a request before batching
/// did ([`DirectRequest`]); more go as field 3, which a box before batching does not read
/// (it answers 0: they go to the stream).
pub fn encode_batch(after_seq: u64, envs: &[&Envelope]) -> Vec<u8> {
    use prost::encoding::{message, uint64};
    let field = if envs.len() == 1 { 2 } else { 3 };
    let len = uint64::encoded_len(1, &after_seq)
        + envs
            .iter()
            .map(|e| message::encoded_len(field, *e))
            .sum::<usize>();
    let mut buf = Vec::with_capacity(len);
    if after_seq != 0 {
        uint64::encode(1, &after_seq, &mut buf);
    }
    for env in envs {
        message::encode(field, *env, &mut buf);
    }
    buf
}

/// Why a batch from another box was refused whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// More bytes than a batch may hold.
    #[error("over {DIRECT_BATCH_BYTES_MAX} bytes")]
    TooLarge,
    /// More envelopes than a batch may hold.
    #[error("over {DIRECT_BATCH_MSGS_MAX} envelopes")]
    TooMany,
    /// No envelope.
    #[error("no envelope")]
    Empty,
    /// Not a batch: bad framing, cut short, or an envelope that does not decode.
    #[error("does not decode")]
    Garbage,
}

/// A request from another box: its `after_seq` and envelopes, in the order sent. Bounded
/// before anything is allocated: the bytes, then the count as it reads.
pub fn decode_batch(mut buf: &[u8]) -> Result<(u64, Vec<Envelope>), BatchError> {
    use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
    use prost::Message as _;
    if buf.len() > DIRECT_BATCH_BYTES_MAX + BATCH_FRAMING_BYTES_MAX {
        return Err(BatchError::TooLarge);
    }
    let mut after_seq = 0;
    let mut envs = Vec::new();
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).map_err(|_| BatchError::Garbage)?;
        match (tag, wire) {
            (1, WireType::Varint) => {
                after_seq = decode_varint(&mut buf).map_err(|_| BatchError::Garbage)?;
            }
            (2 | 3, WireType::LengthDelimited) => {
                let len = decode_varint(&mut buf).map_err(|_| BatchError::Garbage)?;
                let len = usize::try_from(len).map_err(|_| BatchError::Garbage)?;
                if len > buf.len() {
                    return Err(BatchError::Garbage);
                }
                if envs.len() == DIRECT_BATCH_MSGS_MAX {
                    return Err(BatchError::TooMany);
                }
                let (one, rest) = buf.split_at(len);
                envs.push(Envelope::decode(one).map_err(|_| BatchError::Garbage)?);
                buf = rest;
            }
            _ => skip_field(wire, tag, &mut buf, DecodeContext::default())
                .map_err(|_| BatchError::Garbage)?,
        }
    }
    if envs.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok((after_seq, envs))
}

/// The home box's answer to a batch: per envelope, in the order sent, its stored id
/// (nonzero: stored, the sender's `ServerAck` id; 0: not taken, use the stream). Written
/// unpacked, so that a reply of one is a [`DirectReply`]'s bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DirectBatchReply {
    /// One per envelope; ids missing from a reply count 0.
    #[prost(uint64, repeated, packed = "false", tag = "1")]
    pub stored_ids: Vec<u64>,
}

impl DirectBatchReply {
    /// The ids of a reply to `n` envelopes (missing ones, or all of a reply that does not
    /// decode or is over-size, 0: those messages go to the stream).
    pub fn ids(payload: &[u8], n: usize) -> Vec<u64> {
        use prost::Message as _;
        let mut ids = (payload.len() <= REPLY_BYTES_MAX)
            .then(|| DirectBatchReply::decode(payload).ok())
            .flatten()
            .map(|r| r.stored_ids)
            .unwrap_or_default();
        ids.resize(n, 0);
        ids
    }
}

/// Per home box, what this gateway turn sends it (step 5): filled as messages are routed,
/// sent at the end of the turn, or at once when one more would pass a bound.
#[derive(Debug)]
pub struct Batches<M> {
    /// Home box → its batch and the batch's envelope bytes (few homes: a list).
    homes: Vec<(String, Vec<M>, usize)>,
}

impl<M> Default for Batches<M> {
    fn default() -> Self {
        Batches { homes: Vec::new() }
    }
}

impl<M> Batches<M> {
    /// Adds `m` (`bytes` encoded) to `home`'s batch. Returns that batch to send now if `m`
    /// would not fit it (`m` then starts the next one).
    pub fn add(&mut self, home: &str, m: M, bytes: usize) -> Option<(String, Vec<M>)> {
        let Some(i) = self.homes.iter().position(|(h, ..)| h == home) else {
            self.homes.push((home.to_string(), vec![m], bytes));
            return None;
        };
        let (_, batch, held) = &mut self.homes[i];
        let fits = batch.len() < DIRECT_BATCH_MSGS_MAX && *held + bytes <= DIRECT_BATCH_BYTES_MAX;
        if fits || batch.is_empty() {
            batch.push(m);
            *held += bytes;
            return None;
        }
        let full = std::mem::replace(batch, vec![m]);
        *held = bytes;
        Some((home.to_string(), full))
    }

    /// Every batch, to send (the end of a turn).
    pub fn take_all(&mut self) -> Vec<(String, Vec<M>)> {
        self.homes
            .drain(..)
            .map(|(home, batch, _)| (home, batch))
            .collect()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.homes.is_empty()
    }
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

    fn env(n: u64) -> Envelope {
        Envelope {
            to: "+15550000001".into(),
            from: format!("+1555000{n:04}"),
            client_msg_id: n,
            body: vec![b'x'; 64],
            ..Default::default()
        }
    }

    #[test]
    fn batches_cross_as_they_left_and_one_is_a_request_from_before_batching() {
        use prost::Message as _;
        let envs: Vec<Envelope> = (1..=5).map(env).collect();
        let refs: Vec<&Envelope> = envs.iter().collect();
        assert_eq!(decode_batch(&encode_batch(9, &refs)), Ok((9, envs.clone())));
        // One: the bytes a box before batching sent, and what it reads.
        let one = encode_batch(3, &refs[..1]);
        assert_eq!(one, DirectRequest::encode(3, &envs[0]));
        assert_eq!(decode_batch(&one), Ok((3, vec![envs[0].clone()])));
        // A reply of one is a `DirectReply`'s bytes, both ways.
        let reply = DirectBatchReply {
            stored_ids: vec![42],
        };
        assert_eq!(
            reply.encode_to_vec(),
            DirectReply { stored_id: 42 }.encode_to_vec()
        );
        let old = DirectReply { stored_id: 7 }.encode_to_vec();
        assert_eq!(DirectBatchReply::ids(&old, 1), vec![7]);
        let many = DirectBatchReply {
            stored_ids: vec![1, 0, 3],
        };
        assert_eq!(
            DirectBatchReply::ids(&many.encode_to_vec(), 3),
            vec![1, 0, 3]
        );
    }

    #[test]
    fn a_batch_that_is_garbage_cut_short_or_over_size_is_refused_never_a_panic() {
        let envs: Vec<Envelope> = (1..=3).map(env).collect();
        let refs: Vec<&Envelope> = envs.iter().collect();
        let good = encode_batch(1, &refs);
        // Cut anywhere inside: refused (or, cut between envelopes, fewer of them).
        for cut in 0..good.len() {
            match decode_batch(&good[..cut]) {
                Ok((_, got)) => assert!(got.len() < 3 && envs.starts_with(&got)),
                Err(e) => assert!(matches!(e, BatchError::Garbage | BatchError::Empty)),
            }
        }
        // Garbage: every byte value in every position of a short request.
        for i in 0..good.len().min(40) {
            for b in [0u8, 0x7f, 0x80, 0xff, 0x0a, 0x1a] {
                let mut bad = good.clone();
                bad[i] = b;
                let _ = decode_batch(&bad);
            }
        }
        assert_eq!(decode_batch(&[0xff; 12]), Err(BatchError::Garbage));
        assert_eq!(decode_batch(&[]), Err(BatchError::Empty));
        // An envelope whose length runs past the end.
        assert_eq!(decode_batch(&[0x1a, 0x7f, 0x0a]), Err(BatchError::Garbage));
        // Over-size, and over-count (empty envelopes are the smallest).
        let big = vec![0u8; DIRECT_BATCH_BYTES_MAX + BATCH_FRAMING_BYTES_MAX + 1];
        assert_eq!(decode_batch(&big), Err(BatchError::TooLarge));
        let empties = [0x1a, 0x00].repeat(DIRECT_BATCH_MSGS_MAX + 1);
        assert_eq!(decode_batch(&empties), Err(BatchError::TooMany));
        let just = [0x1a, 0x00].repeat(DIRECT_BATCH_MSGS_MAX);
        assert_eq!(
            decode_batch(&just).map(|b| b.1.len()),
            Ok(DIRECT_BATCH_MSGS_MAX)
        );
        // A reply that is garbage or over-size: every message goes to the stream.
        assert_eq!(DirectBatchReply::ids(&[0xff, 0xff], 2), vec![0, 0]);
        assert_eq!(
            DirectBatchReply::ids(&vec![8u8; REPLY_BYTES_MAX + 1], 1),
            vec![0]
        );
        // A reply with more ids than envelopes: the extra ones are ignored.
        assert_eq!(DirectBatchReply::ids(&[8, 1, 8, 2], 1), vec![1]);
    }

    #[test]
    fn a_turn_sends_one_batch_per_home_bounded_in_count_and_bytes() {
        let mut b = Batches::default();
        assert!(b.add("b", 1, 100).is_none());
        assert!(b.add("c", 2, 100).is_none());
        assert!(b.add("b", 3, 100).is_none());
        assert_eq!(
            b.take_all(),
            vec![("b".to_string(), vec![1, 3]), ("c".to_string(), vec![2])]
        );
        assert!(b.is_empty());
        // Count: the one past the bound starts the next batch; the full one leaves at once.
        for i in 0..DIRECT_BATCH_MSGS_MAX {
            assert!(b.add("b", i, 1).is_none());
        }
        let (home, full) = b.add("b", 999, 1).expect("a full batch");
        assert_eq!((home.as_str(), full.len()), ("b", DIRECT_BATCH_MSGS_MAX));
        assert_eq!(b.take_all(), vec![("b".to_string(), vec![999])]);
        // Bytes: likewise; one envelope alone always fits.
        assert!(b.add("b", 1, DIRECT_BATCH_BYTES_MAX - 10).is_none());
        assert_eq!(b.add("b", 2, 11), Some(("b".to_string(), vec![1])));
        assert!(b.add("b", 3, DIRECT_BATCH_BYTES_MAX - 11).is_none());
        assert_eq!(b.take_all(), vec![("b".to_string(), vec![2, 3])]);
    }
}

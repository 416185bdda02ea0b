//! Messages from this box's stream handed to shards in stream order, whatever order
//! JetStream delivers them in.
//!
//! Why: the recipient's dedupe (`messaging::tables::dedupe`) takes a sender's message below
//! its floor for a retry of one already stored, which holds only while a sender's messages
//! reach it in the order sent. Publishes leave in order (`routes.rs`), so the stream holds
//! them in order; but JetStream delivers out of order whenever a delivery is lost (a NATS
//! node dies with messages on their way to this box: they come again only after their ack
//! wait, while later ones come at once) or handed back. Stored out of order, the earlier
//! ones would be dropped as retries — lost after their senders were acknowledged.
//!
//! ## Steps
//! 1. Each message comes with its stream sequence. Within one run the sequences from the
//!    stream's lowest message on have no holes (nothing but this box's acks removes a
//!    message, and only once it was handed over); a restart starts at the lowest message
//!    left and finds holes above it where its earlier run acked out of order: those are
//!    skipped once the stream says it no longer holds them ([`InOrder::hole_at`],
//!    [`InOrder::skip_to`]).
//! 2. [`InOrder::receive`]: a message at the next sequence, or ahead of it, waits in order;
//!    one behind it was handed over before (delivered again) and is returned at once.
//! 3. [`InOrder::pop_ready`]: the messages that are next, in order; one whose shard queue is
//!    full goes back ([`InOrder::unpop`]) and everything after it waits.
//! 4. [`InOrder::stalled`]: a hole older than [`GAP_WAIT_MS`] means a delivery was lost;
//!    the gateway then reads the stream anew (a new consumer delivers every unacked message
//!    again, lowest first) and calls [`InOrder::reread`] with the stream's lowest sequence
//!    now: everything below it was acked, so handed over, and nothing between it and the
//!    next sequence can be missing. A consumer that could not be made anew (NATS busy
//!    electing) still delivers the hole again after its ack wait: later, never out of order.
//!
//! Waiting messages are bounded by the consumer's `max_ack_pending`
//! (`cross::INBOUND_PENDING_MAX`), and [`InOrder::receive`] refuses more anyway (except
//! the message the hole waits for).
//!
//! This module owns the order; it must not touch NATS or a shard's state.

use std::collections::BTreeMap;

/// How long a hole in the stream's sequence may last before the stream is read anew.
pub const GAP_WAIT_MS: u64 = 1_000;
/// Messages waiting for a hole to close, at most (the consumer's own cap, again).
pub const WAITING_MAX: usize = super::cross::INBOUND_PENDING_MAX;

/// What [`InOrder::receive`] did with a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<M> {
    /// It waits for its turn ([`InOrder::pop_ready`]).
    Queued,
    /// Handed over before (delivered again): the caller decides.
    Behind(M),
    /// Too many waiting: dropped unacked (JetStream delivers it again).
    Refused(M),
}

/// The order messages of one stream are handed over in.
#[derive(Debug)]
pub struct InOrder<M> {
    /// The next sequence to hand over; `None` until the first message of the first reader.
    next: Option<u64>,
    /// Received, not yet handed over, by sequence.
    waiting: BTreeMap<u64, M>,
    /// Since when (ms) the lowest waiting message has been ahead of `next`.
    hole_since_ms: Option<u64>,
}

impl<M> Default for InOrder<M> {
    fn default() -> Self {
        InOrder {
            next: None,
            waiting: BTreeMap::new(),
            hole_since_ms: None,
        }
    }
}

impl<M> InOrder<M> {
    /// Step 2: message `m` at stream sequence `seq`, received at `now_ms`.
    pub fn receive(&mut self, seq: u64, m: M, now_ms: u64) -> Received<M> {
        let next = *self.next.get_or_insert(seq);
        if seq < next {
            return Received::Behind(m);
        }
        if seq != next && self.waiting.len() >= WAITING_MAX && !self.waiting.contains_key(&seq) {
            return Received::Refused(m);
        }
        self.waiting.insert(seq, m);
        self.note_hole(now_ms);
        Received::Queued
    }

    /// Step 3: the next message, if it is here; the next sequence moves past it.
    pub fn pop_ready(&mut self) -> Option<(u64, M)> {
        let next = self.next?;
        let entry = self.waiting.first_entry()?;
        if *entry.key() != next {
            return None;
        }
        let m = entry.remove();
        self.next = Some(next + 1);
        self.hole_since_ms = None;
        Some((next, m))
    }

    /// A message [`InOrder::pop_ready`] returned that could not be handed over: first again.
    pub fn unpop(&mut self, seq: u64, m: M) {
        self.waiting.insert(seq, m);
        self.next = Some(self.next.map_or(seq, |n| n.min(seq)));
    }

    /// Step 4: whether a hole has lasted [`GAP_WAIT_MS`] at `now_ms`.
    pub fn stalled(&mut self, now_ms: u64) -> bool {
        self.note_hole(now_ms);
        self.hole_since_ms
            .is_some_and(|since| now_ms.saturating_sub(since) >= GAP_WAIT_MS)
    }

    /// Step 4 (and at start): the stream is read anew; its lowest message now is at
    /// `first_seq` (`None`: not known; the first message received is taken as next). What
    /// waits here comes again.
    pub fn reread(&mut self, first_seq: Option<u64>) {
        self.waiting.clear();
        self.hole_since_ms = None;
        // A stream that never held a message says 0; its first message will be 1.
        if let Some(first) = first_seq.map(|f| f.max(1)) {
            self.next = Some(self.next.map_or(first, |n| n.max(first)));
        }
    }

    /// The next sequence, while a hole lies before the lowest message waiting (the caller
    /// asks the stream whether anything is still there: [`InOrder::skip_to`]).
    pub fn hole_at(&self) -> Option<u64> {
        let next = self.next?;
        let lowest = *self.waiting.keys().next()?;
        (lowest > next).then_some(next)
    }

    /// The stream holds nothing from the next sequence up to `seq` (those messages were
    /// acked, by an earlier run of this box: a restart starts at the stream's lowest message
    /// and finds the holes its acks left above it): the next sequence moves up to `seq`.
    pub fn skip_to(&mut self, seq: u64) {
        if let Some(next) = self.next.as_mut() {
            *next = (*next).max(seq);
        }
        self.hole_since_ms = None;
    }

    /// Whether every message up to `seq` has been handed over (0: nothing asked).
    pub fn handed_through(&self, seq: u64) -> bool {
        seq == 0 || self.next.is_some_and(|n| n > seq)
    }

    /// Messages waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    fn note_hole(&mut self, now_ms: u64) {
        let hole = match (self.next, self.waiting.keys().next()) {
            (Some(n), Some(&lowest)) => lowest > n,
            _ => false,
        };
        self.hole_since_ms = match (hole, self.hole_since_ms) {
            (false, _) => None,
            (true, Some(since)) => Some(since),
            (true, None) => Some(now_ms),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(o: &mut InOrder<u64>) -> Vec<u64> {
        std::iter::from_fn(|| o.pop_ready().map(|(_, m)| m)).collect()
    }

    #[test]
    fn messages_in_order_pass_straight_through() {
        let mut o = InOrder::default();
        for s in 5..8 {
            assert_eq!(o.receive(s, s, 0), Received::Queued);
        }
        assert_eq!(drain(&mut o), vec![5, 6, 7]);
        assert!(!o.stalled(10_000));
    }

    #[test]
    fn later_messages_wait_for_an_earlier_one_delivered_again_late() {
        // 1..=3 were lost on their way (a NATS node died); 4 and 5 come first.
        let mut o = InOrder::default();
        assert_eq!(o.receive(1, 1, 0), Received::Queued);
        assert_eq!(drain(&mut o), vec![1]);
        o.receive(4, 4, 10);
        o.receive(5, 5, 11);
        assert!(drain(&mut o).is_empty(), "nothing past the hole");
        assert!(!o.stalled(10 + GAP_WAIT_MS - 1));
        o.receive(3, 3, 20);
        o.receive(2, 2, 21);
        assert_eq!(drain(&mut o), vec![2, 3, 4, 5]);
    }

    #[test]
    fn a_hole_that_lasts_has_the_stream_read_anew_from_its_lowest() {
        let mut o = InOrder::default();
        o.receive(1, 1, 0);
        assert_eq!(drain(&mut o), vec![1]);
        o.receive(3, 3, 100);
        assert!(!o.stalled(100 + GAP_WAIT_MS - 1));
        assert!(o.stalled(100 + GAP_WAIT_MS));
        o.reread(Some(2));
        assert_eq!(o.waiting(), 0);
        // The new consumer delivers every unacked message again, lowest first.
        for s in 2..=3 {
            o.receive(s, s, 2_000);
        }
        assert_eq!(drain(&mut o), vec![2, 3]);
    }

    #[test]
    fn the_first_reader_starts_at_the_streams_lowest_message() {
        let mut o = InOrder::default();
        o.reread(Some(5));
        // A consumer not made anew delivers 7 first; 5 and 6 are still its own.
        o.receive(7, 7, 0);
        assert!(drain(&mut o).is_empty());
        o.receive(5, 5, 1);
        o.receive(6, 6, 1);
        assert_eq!(drain(&mut o), vec![5, 6, 7]);
    }

    #[test]
    fn a_stream_that_never_held_a_message_starts_at_one() {
        let mut o = InOrder::default();
        o.reread(Some(0));
        o.receive(1, 1, 0);
        assert_eq!(drain(&mut o), vec![1]);
    }

    #[test]
    fn a_reread_never_moves_the_next_sequence_back() {
        let mut o = InOrder::default();
        o.reread(Some(1));
        for s in 1..=4 {
            o.receive(s, s, 0);
        }
        assert_eq!(drain(&mut o), vec![1, 2, 3, 4]);
        // 3 and 4 are handed over and not acked: the stream's lowest is 3.
        o.reread(Some(3));
        assert_eq!(o.receive(3, 3, 1), Received::Behind(3));
        o.receive(5, 5, 1);
        assert_eq!(drain(&mut o), vec![5]);
        // Everything up to 9 acked meanwhile: nothing between 6 and 9 can be missing.
        o.reread(Some(9));
        o.receive(9, 9, 2);
        assert_eq!(drain(&mut o), vec![9]);
    }

    #[test]
    fn a_message_handed_over_before_is_returned_at_once() {
        let mut o = InOrder::default();
        o.receive(1, 1, 0);
        o.receive(2, 2, 0);
        assert_eq!(drain(&mut o), vec![1, 2]);
        assert_eq!(o.receive(1, 1, 1), Received::Behind(1));
        o.reread(Some(2));
        // A new reader's first message may be one handed over and not yet acked.
        assert_eq!(o.receive(2, 2, 2), Received::Behind(2));
        o.receive(3, 3, 2);
        assert_eq!(drain(&mut o), vec![3]);
    }

    #[test]
    fn holes_an_earlier_run_acked_are_skipped_once_the_stream_says_so() {
        let mut o = InOrder::default();
        // A restart: 5 is the lowest left; 6 was acked by the run before; 7 follows.
        o.reread(Some(5));
        o.receive(5, 5, 0);
        o.receive(7, 7, 0);
        assert_eq!(drain(&mut o), vec![5]);
        assert_eq!(o.hole_at(), Some(6));
        // The stream's lowest message at or after 6 is 7.
        o.skip_to(7);
        assert_eq!(o.hole_at(), None);
        assert_eq!(drain(&mut o), vec![7]);
        assert!(!o.stalled(10_000));
        // Never backwards.
        o.skip_to(3);
        o.receive(8, 8, 1);
        assert_eq!(drain(&mut o), vec![8]);
    }

    #[test]
    fn handed_through_counts_only_what_left_in_order() {
        let mut o = InOrder::default();
        assert!(o.handed_through(0));
        assert!(!o.handed_through(1), "nothing read yet");
        o.reread(Some(3));
        assert!(o.handed_through(2), "acked before this reader");
        assert!(!o.handed_through(3));
        o.receive(4, 4, 0);
        assert!(!o.handed_through(4), "waits behind 3");
        o.receive(3, 3, 0);
        assert_eq!(drain(&mut o), vec![3, 4]);
        assert!(o.handed_through(4));
    }

    #[test]
    fn a_message_that_could_not_be_handed_over_stays_first() {
        let mut o = InOrder::default();
        for s in 1..=3 {
            o.receive(s, s, 0);
        }
        let (seq, m) = o.pop_ready().unwrap();
        o.unpop(seq, m);
        assert_eq!(drain(&mut o), vec![1, 2, 3]);
    }

    #[test]
    fn waiting_is_bounded() {
        let mut o = InOrder::default();
        o.receive(1, 1, 0);
        drain(&mut o);
        for s in 3..3 + WAITING_MAX as u64 {
            assert_eq!(o.receive(s, s, 0), Received::Queued);
        }
        assert_eq!(o.receive(99_999, 0, 0), Received::Refused(0));
        // The hole's own message is always taken: it lets the rest go.
        assert_eq!(o.receive(2, 2, 0), Received::Queued);
        assert_eq!(drain(&mut o).len(), WAITING_MAX + 1);
    }
}

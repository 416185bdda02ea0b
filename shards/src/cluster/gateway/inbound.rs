//! The gateway's inbound path (`cross.rs` step 3): this box's stream read, handed to the
//! shards in stream order (`in_order.rs` says why), and acked once stored.
//!
//! ## Steps
//! 1. [`next_inbound`]: the reader's next message (a reader that failed is dropped and made
//!    anew at the next beat, [`Gw::read_anew`]).
//! 2. [`Gw::inbound`]: ordered by its stream sequence; [`Gw::hand_ready`] hands over what is
//!    next, until a shard's queue is full or [`cross::INBOUND_PENDING_MAX`] are in the
//!    shards (with the direct messages of `gateway/direct.rs`) (then it waits for a `Done` or the next poll, never a nak: a nak would let
//!    later messages pass it).
//! 3. A message delivered again that is in a shard still: its newer handle is kept (acks
//!    go through it), nothing is handed over twice. One handed over and settled before (its
//!    ack was lost with a NATS node) is handed over again: the recipient's dedupe knows it.
//! 4. [`Gw::settle`]: the shard's `Done` acks it (stored) or naks it (a second copy the
//!    shard had already: the first settles it).
//! 5. [`Gw::check_hole`] (at once, and every poll): a hole the stream no longer holds was
//!    acked by an earlier run (skipped); one it holds, older than
//!    [`super::in_order::GAP_WAIT_MS`], means a delivery was lost: the stream is read anew.
//!
//! This module owns the inbound messages in flight; it must not touch a shard's state.

use async_nats::jetstream::{self, consumer::pull};
use futures_util::stream::StreamExt;
use std::sync::atomic::Ordering;

use super::super::in_order::Received;
use super::super::{cross, ClusterStatus, Down};
use super::{routes, Gw, BUCKET_REPLICAS};

/// Holes the stream is asked about per call of [`Gw::check_hole`], at most.
const HOLE_QUESTIONS_PER_TURN_MAX: usize = 64;

/// What [`Gw::push_envelope`] did.
pub(super) enum Handed {
    /// A receipt, pushed.
    Receipt,
    /// A message, pushed under this token.
    Message(u64),
    /// The shard's queue is full: nothing pushed.
    Full,
    /// Not a delivery (a phone is not E.164, which [`cross::Envelope::check`] refuses
    /// first): nothing pushed, counted as a bad message.
    Bad,
}

/// An inbound message in a shard, until its `Done`.
pub(super) struct InShard {
    /// The newest delivery of it (acks go through it).
    pub(super) m: jetstream::Message,
    /// Its stream sequence.
    pub(super) seq: u64,
}

/// The next message of this box's stream; never ready while it is not being read (it is
/// read again from the next beat, also after an error).
pub(super) async fn next_inbound(inbound: &mut Option<pull::Stream>) -> Option<jetstream::Message> {
    let Some(s) = inbound.as_mut() else {
        return std::future::pending().await;
    };
    match s.next().await {
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => {
            // A pull that failed (its consumer's server died, heartbeats missed) may never
            // deliver again: drop the reader; the next beat makes the consumer anew, which
            // delivers again what was taken and not acked.
            tracing::warn!("reading this box's stream: {e}; reading it anew");
            *inbound = None;
            None
        }
        None => {
            *inbound = None;
            None
        }
    }
}

impl Gw {
    /// Milliseconds since the gateway started (the clock of `in_order.rs`).
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Makes the consumer anew and reads the stream from its lowest unacked message.
    pub(super) async fn read_anew(&mut self) {
        self.nats.inbound = None;
        let js = &self.nats.js;
        match cross::own_stream(js, &self.cfg.box_id, BUCKET_REPLICAS).await {
            Ok((reader, first)) => {
                self.nats.inbound = Some(reader);
                self.order.reread(Some(first));
            }
            Err(e) => tracing::warn!("this box's stream: {e}; trying again at the next beat"),
        }
    }

    /// Step 2: one message of this box's stream.
    pub(super) async fn inbound(&mut self, m: jetstream::Message) {
        let Ok(seq) = m.info().map(|i| i.stream_sequence) else {
            // Not a consumer's delivery (no reply subject): nothing to ack it with.
            ClusterStatus::bump(&self.link.status.messages_in_bad);
            return;
        };
        match self.order.receive(seq, m, self.now_ms()) {
            Received::Queued => {}
            Received::Behind(m) => self.again(seq, m).await,
            // Dropped unacked: JetStream delivers it again.
            Received::Refused(_) => ClusterStatus::bump(&self.link.status.inbound_refused),
        }
        self.hand_ready().await;
        if self.order.hole_at().is_some() {
            self.check_hole().await;
        }
    }

    /// Step 2: hands over every message that is next, in order.
    pub(super) async fn hand_ready(&mut self) {
        while self.in_shards.len() + self.direct_in_shards.len() < cross::INBOUND_PENDING_MAX {
            let Some((seq, m)) = self.order.pop_ready() else {
                break;
            };
            if let Err(m) = self.hand(seq, m).await {
                self.order.unpop(seq, m);
                break;
            }
        }
    }

    /// Step 5: a hole the stream no longer holds (acked by an earlier run of this box) is
    /// skipped at once; one it still holds (a delivery lost) has the stream read anew once
    /// it has lasted.
    pub(super) async fn check_hole(&mut self) {
        // Each answer may uncover the next hole (a restart finds one per message its
        // earlier run acked out of order): a bounded number of questions per call.
        for _ in 0..HOLE_QUESTIONS_PER_TURN_MAX {
            let Some(next) = self.order.hole_at().filter(|n| self.hole_asked != Some(*n)) else {
                break;
            };
            self.hole_asked = Some(next);
            match cross::lowest_at_or_after(&self.nats.js, &self.cfg.box_id, next).await {
                Ok(Some(lowest)) if lowest > next => {
                    self.order.skip_to(lowest);
                    self.hand_ready().await;
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!("asking this box's stream about a hole: {e}");
                    break;
                }
            }
        }
        if self.order.stalled(self.now_ms()) {
            ClusterStatus::bump(&self.link.status.inbound_rereads);
            tracing::warn!(
                waiting = self.order.waiting(),
                "a message of this box's stream was lost on its way; reading the stream anew"
            );
            self.read_anew().await;
        }
        self.hand_ready().await;
    }

    /// Hands one message to its shard; gives it back if the shard's queue is full.
    async fn hand(&mut self, seq: u64, m: jetstream::Message) -> Result<(), jetstream::Message> {
        use prost::Message as _;
        let status = &self.link.status;
        let env = (m.payload.len() <= cross::ENVELOPE_BYTES_MAX)
            .then(|| cross::Envelope::decode(m.payload.as_ref()).ok())
            .flatten()
            .filter(cross::Envelope::check);
        let Some(env) = env else {
            ClusterStatus::bump(&status.messages_in_bad);
            let _ = m.ack().await;
            return Ok(());
        };
        if env.group.is_some() {
            return self.hand_group(m, env).await; // `groups.rs`
        }
        match self.push_envelope(env) {
            Handed::Full => Err(m),
            Handed::Receipt | Handed::Bad => {
                let _ = m.ack().await;
                Ok(())
            }
            Handed::Message(token) => {
                self.in_shards.insert(token, InShard { m, seq });
                self.token_of_seq.insert(seq, token);
                Ok(())
            }
        }
    }

    /// Pushes a checked message or receipt envelope from another box to its recipient's
    /// shard (a message under a new token, answered by `Up::Done`) and wakes it; nothing
    /// when that shard's queue is full. Shared by the stream and the direct path.
    pub(super) fn push_envelope(&mut self, env: cross::Envelope) -> Handed {
        let shards = self.link.to_shard.len();
        let shard = messaging::state::home::home_of_phone(&env.to, shards).0;
        let (down, handed) = match env.receipt {
            Some(receipt) => {
                let sender = env.to;
                (Down::Receipt { sender, receipt }, Handed::Receipt)
            }
            None => {
                let token = self.next_token;
                let Some(delivery) = env.into_delivery().map(Box::new) else {
                    ClusterStatus::bump(&self.link.status.messages_in_bad);
                    return Handed::Bad;
                };
                (Down::Deliver { token, delivery }, Handed::Message(token))
            }
        };
        if self.link.to_shard[shard].push(down).is_err() {
            return Handed::Full;
        }
        self.link.wake(shard);
        match handed {
            Handed::Receipt => ClusterStatus::bump(&self.link.status.receipts_in),
            _ => self.next_token += 1,
        }
        handed
    }

    /// Step 3: a message delivered again that was handed over before.
    async fn again(&mut self, seq: u64, m: jetstream::Message) {
        if let Some(held) = self
            .token_of_seq
            .get(&seq)
            .and_then(|t| self.in_shards.get_mut(t))
        {
            held.m = m;
            return;
        }
        ClusterStatus::bump(&self.link.status.messages_in_retried);
        if let Err(m) = self.hand(seq, m).await {
            let _ = m.ack_with(routes::retry()).await;
        }
    }

    /// Step 4: a shard's `Done` for an inbound message.
    pub(super) async fn settle(&mut self, token: u64, stored: bool) {
        if self.direct_settle(token, stored).await {
            return;
        }
        let Some(InShard { m, seq }) = self.in_shards.remove(&token) else {
            return;
        };
        if self.token_of_seq.get(&seq) == Some(&token) {
            self.token_of_seq.remove(&seq);
        }
        let status = &self.link.status;
        if stored {
            ClusterStatus::bump(&status.messages_in);
            let _ = m.ack().await;
        } else {
            ClusterStatus::bump(&status.messages_in_retried);
            let _ = m.ack_with(routes::retry()).await;
        }
        status
            .inbound_pending
            .store(self.in_shards.len() as u64, Ordering::Relaxed);
    }
}

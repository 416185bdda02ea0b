//! The gateway's side of `cluster/direct.rs`: messages and receipts sent straight to a live
//! home box (and what happens when it does not take them), and the requests other boxes
//! send straight to this one.
//!
//! This module owns the direct requests in flight both ways; it must not touch a shard's
//! state.

use std::time::{Duration, Instant};

use super::super::direct::{self, DirectBatchReply, Route};
use super::super::{cross, ClusterStatus, Down};
use super::inbound::Handed;
use super::{answer, Finished, Gw, Outgoing};
use crate::cluster::membership::Members;
use crate::config::cluster::ClusterConfig;

impl Gw {
    /// The home box `phone`'s messages may go to directly: known, live, not this box
    /// (and direct messages not turned off).
    pub(super) fn direct_home(&self, phone: &str) -> Option<String> {
        direct_home_in(&self.cfg, &self.homes, &self.members, phone)
    }

    /// Step 1 and 3 of `direct.rs` for a message (or receipt, `shard` `None`).
    pub(super) fn route(&mut self, out: Outgoing) {
        let home = self.direct_home(&out.env.to);
        if out.shard.is_none() {
            match home {
                Some(home) => self.send_direct(home, out),
                None => self.outbox.push_back(out),
            }
            return;
        }
        if self.cfg.stream_only {
            self.outbox.push_back(out);
            return;
        }
        let from = out.env.from.clone();
        match self.lines.route(&from, home.is_some(), out) {
            (Route::Direct, Some(out)) => {
                let home = home.expect("Direct only with a home");
                self.send_direct(home, out);
            }
            (Route::Stream, Some(out)) => self.outbox.push_back(out),
            (Route::Full, Some(out)) => {
                ClusterStatus::bump(&self.link.status.direct_lines_full);
                let sent = Down::Sent {
                    from: out.env.from,
                    client_msg_id: out.env.client_msg_id,
                    server_msg_id: None,
                    group_id: out.env.group_id,
                };
                answer(&self.link, out.shard.unwrap_or(0), sent);
            }
            _ => {}
        }
    }

    /// Adds one message (or receipt) for `home` to this turn's batch for it (`direct.rs`
    /// step 5), answered in `work` by [`Finished::Direct`]; a batch that is full leaves now.
    fn send_direct(&mut self, home: String, out: Outgoing) {
        use prost::Message as _;
        let bytes = out.env.encoded_len();
        if let Some((home, batch)) = self.direct_out.add(&home, out, bytes) {
            self.send_batch(home, batch);
        }
    }

    /// The end of a gateway turn: each home box's batch leaves as one request.
    pub(super) fn flush_direct(&mut self) {
        if self.direct_out.is_empty() {
            return;
        }
        for (home, batch) in self.direct_out.take_all() {
            self.send_batch(home, batch);
        }
    }

    /// Sends one batch straight to `home`; its `after_seq` is the highest acked now, which
    /// covers every message of it (a higher one only asks the home for more of its stream).
    fn send_batch(&mut self, home: String, outs: Vec<Outgoing>) {
        let status = &self.link.status;
        ClusterStatus::bump(&status.direct_batches_out);
        ClusterStatus::add(&status.direct_batched_out, outs.len() as u64);
        let after_seq = self.stream_acked.get(&home).copied().unwrap_or(0);
        let envs: Vec<&cross::Envelope> = outs.iter().map(|o| &o.env).collect();
        let payload = direct::encode_batch(after_seq, &envs);
        let client = self.nats.client.clone();
        let subject = direct::subject(&home);
        self.work.push(Box::pin(async move {
            let wait = Duration::from_millis(direct::DIRECT_WAIT_MS);
            let asked = client.request(subject, payload.into());
            let stored_ids = match tokio::time::timeout(wait, asked).await {
                Ok(Ok(reply)) => DirectBatchReply::ids(reply.payload.as_ref(), outs.len()),
                _ => vec![0; outs.len()],
            };
            Finished::Direct {
                outs,
                home,
                stored_ids,
            }
        }));
    }

    /// Step 2: the home box's answer (or its absence) for a direct message.
    pub(super) fn direct_finished(&mut self, out: Outgoing, home: String, stored_id: u64) {
        let status = &self.link.status;
        let Some(shard) = out.shard else {
            if stored_id != 0 {
                ClusterStatus::bump(&status.receipts_out);
            } else {
                ClusterStatus::bump(&status.direct_fallbacks);
                self.outbox.push_back(out);
            }
            return;
        };
        let from = out.env.from.clone();
        if stored_id != 0 {
            ClusterStatus::bump(&status.messages_out);
            ClusterStatus::bump(&status.direct_out);
            let sent = Down::Sent {
                from: from.clone(),
                client_msg_id: out.env.client_msg_id,
                server_msg_id: Some(stored_id),
                group_id: out.env.group_id,
            };
            answer(&self.link, shard, sent);
        } else {
            ClusterStatus::bump(&status.direct_fallbacks);
            self.outbox.push_back(out);
        }
        let (homes, members, cfg) = (&self.homes, &self.members, &self.cfg);
        let next = self.lines.direct_done(&from, stored_id != 0, |o| {
            direct_home_in(cfg, homes, members, &o.env.to).is_some()
        });
        for (route, o) in next {
            match (route, self.direct_home(&o.env.to)) {
                (Route::Direct, Some(h)) => self.send_direct(h, o),
                // Not live any more since the line decided: the stream (a fallback).
                (Route::Direct, None) => self.direct_finished(o, home.clone(), 0),
                _ => self.outbox.push_back(o),
            }
        }
    }
}

/// [`Gw::direct_home`] from the parts of the gateway it reads.
fn direct_home_in(
    cfg: &ClusterConfig,
    homes: &cross::HomeCache,
    members: &Members,
    phone: &str,
) -> Option<String> {
    if cfg.stream_only {
        return None;
    }
    let home = homes.get(phone)?;
    let live = members.advertise(home, Instant::now()).is_some();
    (home != cfg.box_id && live).then(|| home.to_string())
}

/// A batch from another box with messages in this box's shards, until each has settled.
pub(super) struct BatchIn {
    /// Where the answer goes.
    reply: async_nats::Subject,
    /// Per envelope, its stored id (0 until stored, or not taken).
    ids: Vec<u64>,
    /// Messages of it in shards still.
    waiting: usize,
}

impl Gw {
    /// Step 2 at the home box: a batch of direct messages and receipts from another box,
    /// answered once every message of it has settled.
    pub(super) async fn direct_request(&mut self, m: async_nats::Message) {
        let status = &self.link.status;
        let Some(reply) = m.reply.clone() else {
            ClusterStatus::bump(&status.messages_in_bad);
            return;
        };
        let (after_seq, envs) = match direct::decode_batch(m.payload.as_ref()) {
            Ok(batch) => batch,
            Err(e) => {
                ClusterStatus::bump(&status.direct_batches_bad);
                tracing::debug!("a direct batch refused: {e}");
                return self.direct_answer(reply, &[]).await;
            }
        };
        let mut ids = vec![0; envs.len()];
        // The senders' earlier messages in this box's stream go first.
        if !self.order.handed_through(after_seq) {
            ClusterStatus::add(&status.direct_behind, envs.len() as u64);
            return self.direct_answer(reply, &ids).await;
        }
        let batch = self.next_batch;
        self.next_batch += 1;
        let mut waiting = 0;
        for (i, env) in envs.into_iter().enumerate() {
            // Group messages other than copies travel by stream only (`groups.rs`).
            if !env.check() || env.group.is_some() {
                ClusterStatus::bump(&self.link.status.messages_in_bad);
                continue;
            }
            let room = self.in_shards.len() + self.direct_in_shards.len();
            if env.receipt.is_none() && room >= cross::INBOUND_PENDING_MAX {
                continue;
            }
            match self.push_envelope(env) {
                Handed::Full | Handed::Bad => {}
                Handed::Receipt => ids[i] = 1,
                Handed::Message(token) => {
                    self.direct_in_shards.insert(token, (batch, i));
                    waiting += 1;
                }
            }
        }
        if waiting == 0 {
            return self.direct_answer(reply, &ids).await;
        }
        let held = BatchIn {
            reply,
            ids,
            waiting,
        };
        self.direct_batches_in.insert(batch, held);
    }

    /// Step 2: a shard's `Done` for a direct message, if `token` is one: the batch's
    /// answer once it was the last of its batch.
    pub(super) async fn direct_settle(&mut self, token: u64, stored: bool) -> bool {
        let Some((batch, i)) = self.direct_in_shards.remove(&token) else {
            return false;
        };
        if stored {
            ClusterStatus::bump(&self.link.status.messages_in);
            ClusterStatus::bump(&self.link.status.direct_in);
        }
        let Some(held) = self.direct_batches_in.get_mut(&batch) else {
            return true;
        };
        // The id the sender's ServerAck carries: nonzero, this box's own.
        held.ids[i] = if stored { token + 1 } else { 0 };
        held.waiting -= 1;
        if held.waiting == 0 {
            if let Some(held) = self.direct_batches_in.remove(&batch) {
                self.direct_answer(held.reply, &held.ids).await;
            }
        }
        true
    }

    async fn direct_answer(&self, reply: async_nats::Subject, stored_ids: &[u64]) {
        use prost::Message as _;
        let stored_ids = stored_ids.to_vec();
        let payload = DirectBatchReply { stored_ids }.encode_to_vec();
        let _ = self.nats.client.publish(reply, payload.into()).await;
    }
}

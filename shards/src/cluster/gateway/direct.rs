//! The gateway's side of `cluster/direct.rs`: messages and receipts sent straight to a live
//! home box (and what happens when it does not take them), and the requests other boxes
//! send straight to this one.
//!
//! This module owns the direct requests in flight both ways; it must not touch a shard's
//! state.

use std::time::{Duration, Instant};

use super::super::direct::{self, DirectReply, DirectRequest, Route};
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

    /// Sends one message straight to `home`, answered in `work` by [`Finished::Direct`].
    fn send_direct(&mut self, home: String, out: Outgoing) {
        use prost::Message as _;
        let after_seq = self.stream_acked.get(&home).copied().unwrap_or(0);
        let payload = DirectRequest::encode(after_seq, &out.env);
        let client = self.nats.client.clone();
        let subject = direct::subject(&home);
        self.work.push(Box::pin(async move {
            let wait = Duration::from_millis(direct::DIRECT_WAIT_MS);
            let asked = client.request(subject, payload.into());
            let stored_id = match tokio::time::timeout(wait, asked).await {
                Ok(Ok(reply)) => DirectReply::decode(reply.payload.as_ref())
                    .map(|r| r.stored_id)
                    .unwrap_or(0),
                _ => 0,
            };
            Finished::Direct {
                out: Box::new(out),
                home,
                stored_id,
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

impl Gw {
    /// Step 2 at the home box: a direct request from another box.
    pub(super) async fn direct_request(&mut self, m: async_nats::Message) {
        use prost::Message as _;
        let status = &self.link.status;
        let Some(reply) = m.reply.clone() else {
            ClusterStatus::bump(&status.messages_in_bad);
            return;
        };
        let req = (m.payload.len() <= cross::ENVELOPE_BYTES_MAX + 16)
            .then(|| DirectRequest::decode(m.payload.as_ref()).ok())
            .flatten();
        let Some((after_seq, env)) = req
            .and_then(|r| r.env.map(|e| (r.after_seq, e)))
            // Group messages other than copies travel by stream only (`groups.rs`).
            .filter(|(_, e)| e.check() && e.group.is_none())
        else {
            ClusterStatus::bump(&status.messages_in_bad);
            return self.direct_answer(reply, 0).await;
        };
        // The sender's earlier messages in this box's stream go first.
        if !self.order.handed_through(after_seq) {
            ClusterStatus::bump(&status.direct_behind);
            return self.direct_answer(reply, 0).await;
        }
        let room = self.in_shards.len() + self.direct_in_shards.len();
        if env.receipt.is_none() && room >= cross::INBOUND_PENDING_MAX {
            return self.direct_answer(reply, 0).await;
        }
        match self.push_envelope(env) {
            Handed::Full => self.direct_answer(reply, 0).await,
            Handed::Receipt => self.direct_answer(reply, 1).await,
            Handed::Message(token) => {
                self.direct_in_shards.insert(token, reply);
            }
        }
    }

    /// Step 2: a shard's `Done` for a direct message, if `token` is one: the answer.
    pub(super) async fn direct_settle(&mut self, token: u64, stored: bool) -> bool {
        let Some(reply) = self.direct_in_shards.remove(&token) else {
            return false;
        };
        if stored {
            ClusterStatus::bump(&self.link.status.messages_in);
            ClusterStatus::bump(&self.link.status.direct_in);
        }
        // The id the sender's ServerAck carries: nonzero, this box's own.
        let id = if stored { token + 1 } else { 0 };
        self.direct_answer(reply, id).await;
        true
    }

    async fn direct_answer(&self, reply: async_nats::Subject, stored_id: u64) {
        use prost::Message as _;
        let payload = DirectReply { stored_id }.encode_to_vec();
        let _ = self.nats.client.publish(reply, payload.into()).await;
    }
}

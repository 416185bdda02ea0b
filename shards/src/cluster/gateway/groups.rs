//! The gateway's part of groups across boxes (`groups.rs`): group messages into the
//! outbox, what becomes of them, and those from other boxes to their shard. A child of
//! `gateway.rs` (it works on the gateway's state); it must not touch a shard's state.

use async_nats::jetstream;

use super::routes::{Outgoing, Published};
use super::{answer, Gw};
use crate::cluster::{cross, groups, ClusterStatus, Down};

impl Gw {
    /// Step 2: a group message for another box joins the outbox, in order.
    pub(super) fn forward(&mut self, mut env: cross::Envelope) {
        env.stamp_media_base(self.link.media_base.get().map(String::as_str));
        if let Some(g) = env.group.as_mut() {
            self.group_nonce += 1;
            g.nonce = format!(
                "{}.{}.{}",
                self.cfg.box_id,
                self.started_ms(),
                self.group_nonce
            );
        }
        self.outbox.push_back(Outgoing { shard: None, env });
    }

    /// When this gateway started (ms since the epoch): unique envelope ids across restarts.
    fn started_ms(&self) -> u128 {
        static STARTED: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
        *STARTED.get_or_init(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        })
    }

    /// A group message published, or with nowhere to go (step 5).
    pub(super) fn group_sent(&mut self, env: cross::Envelope, publish: Published) {
        let status = &self.link.status;
        match publish {
            Published::Stored { home, .. } => {
                ClusterStatus::bump(&status.group_out);
                let Some(g) = env.group.as_ref() else {
                    return;
                };
                // Where the group lives: the box it was sent to, or this one for an ask
                // (its claim is made: `routes.rs` need not make it again).
                let lives = match g.address(&env) {
                    groups::Address::Group(id) => Some((id, home)),
                    _ if g.kind == groups::KIND_ASK => Some((g.group_id, self.cfg.box_id.clone())),
                    _ => None,
                };
                if let Some((id, at)) = lives {
                    if self.group_boxes.len() >= groups::GROUP_CACHE_ENTRIES_MAX {
                        self.group_boxes.clear();
                    }
                    self.group_boxes.insert(id, at);
                }
            }
            Published::Nobody => self.group_undelivered(env, true),
            Published::Failed(e) => {
                tracing::debug!("cross-box group message not published: {e}");
                self.group_undelivered(env, false);
            }
        }
    }

    /// Step 5: answers for a group message that did not leave.
    pub(super) fn group_undelivered(&mut self, env: cross::Envelope, nowhere: bool) {
        ClusterStatus::bump(&self.link.status.group_undelivered);
        let shards = self.link.to_shard.len();
        for msg in groups::undelivered(env, nowhere) {
            if let Some(shard) = groups::home_shard(&msg, shards) {
                answer(&self.link, shard, Down::Group(msg));
            }
        }
    }

    /// Step 4: a group message of this box's stream to the shard it addresses, acked once
    /// handed over (as a receipt is); given back when that shard's queue is full (the
    /// stream's order waits for it: `inbound.rs`).
    pub(super) async fn hand_group(
        &mut self,
        m: jetstream::Message,
        env: cross::Envelope,
    ) -> Result<(), jetstream::Message> {
        let shards = self.link.to_shard.len();
        let msg = groups::into_msg(env);
        let shard = msg.as_ref().and_then(|msg| groups::home_shard(msg, shards));
        let (Some(msg), Some(shard)) = (msg, shard) else {
            ClusterStatus::bump(&self.link.status.messages_in_bad);
            let _ = m.ack().await;
            return Ok(());
        };
        if self.link.to_shard[shard].push(Down::Group(msg)).is_err() {
            return Err(m);
        }
        self.link.wake(shard);
        ClusterStatus::bump(&self.link.status.group_in);
        let _ = m.ack().await;
        Ok(())
    }
}

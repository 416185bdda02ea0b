//! What a finished piece of the gateway's work means (a home looked up, a message or
//! receipt published or not, a direct message answered or not): the answers to shards and
//! the counters. A child of `gateway.rs` (it works on the gateway's state); it must not touch
//! a shard's state.

use std::time::Instant;

use super::super::{cross, placement, Answer, ClusterStatus, Down, Placement};
use super::routes::Published;
use super::{answer, Finished, Found, Gw};
use crate::cluster::membership::Members;

impl Gw {
    /// Carries out what `done` means.
    pub(super) fn finished(&mut self, done: Finished) {
        let status = &self.link.status;
        match done {
            Finished::Placed(shard, token, found) => {
                if let Ok(Some(placement::Home { created: true, .. })) = &found {
                    ClusterStatus::bump(&status.homes_created);
                }
                let placement = place(&self.cfg.box_id, &self.members, found);
                answer(&self.link, shard, Down::Placed(Answer { token, placement }));
            }
            Finished::GroupSent { env, publish } => self.group_sent(*env, publish),
            Finished::Nowhere { shard, env } => {
                self.lines.stream_done(&env.from);
                ClusterStatus::bump(&status.messages_to_nobody);
                // This box's own message (`Envelope::message` of a `Delivery`): its phones
                // parse.
                if let Some(delivery) = env.into_delivery() {
                    let msg = messaging::state::mesh_msg::ShardMsg::Deliver(Box::new(delivery));
                    answer(&self.link, shard, Down::Group(msg));
                }
            }
            Finished::Sent {
                shard,
                from,
                client_msg_id,
                to,
                group_id,
                publish,
            } => {
                self.lines.stream_done(&from);
                let server_msg_id = match publish {
                    Published::Stored { home, seq, guessed } => {
                        ClusterStatus::bump(&status.messages_out);
                        let acked = self.stream_acked.entry(home.clone()).or_default();
                        *acked = (*acked).max(seq);
                        if guessed {
                            // A number with no home (`routes.rs`): counted, not remembered.
                            ClusterStatus::bump(&status.messages_to_nobody);
                        } else {
                            self.homes.put(to, home);
                        }
                        Some(seq)
                    }
                    Published::Nobody => {
                        // A group copy for a member with no home: counted done, as a
                        // single box counts one (a 1:1 message is `Finished::Nowhere`).
                        ClusterStatus::bump(&status.messages_to_nobody);
                        Some(0)
                    }
                    Published::Failed(e) => {
                        ClusterStatus::bump(&status.publish_failures);
                        tracing::debug!("cross-box publish failed: {e}");
                        None
                    }
                };
                let sent = Down::Sent {
                    from,
                    client_msg_id,
                    server_msg_id,
                    group_id,
                };
                answer(&self.link, shard, sent);
            }
            Finished::Direct {
                outs,
                home,
                stored_ids,
            } => {
                for (out, stored_id) in outs.into_iter().zip(stored_ids) {
                    self.direct_finished(out, home.clone(), stored_id);
                }
            }
            Finished::ReceiptSent { env, publish } => match publish {
                Published::Stored { home, .. } => {
                    ClusterStatus::bump(&status.receipts_out);
                    self.homes.put(env.to, home);
                }
                Published::Nobody => {}
                Published::Failed(e) => {
                    ClusterStatus::bump(&status.publish_failures);
                    tracing::debug!("cross-box receipt not published: {e}; trying again");
                    self.retry_receipt(*env);
                }
            },
        }
    }
}

/// What finished for a publish of `env` for `shard` (`None`: a receipt).
pub(super) fn finished_publish(
    shard: Option<usize>,
    env: cross::Envelope,
    publish: Published,
) -> Finished {
    if env.group.is_some() {
        let env = Box::new(env);
        return Finished::GroupSent { env, publish };
    }
    if let (Some(shard), Published::Nobody, 0) = (shard, &publish, env.group_id) {
        let env = Box::new(env);
        return Finished::Nowhere { shard, env };
    }
    match shard {
        Some(shard) => Finished::Sent {
            shard,
            from: env.from,
            client_msg_id: env.client_msg_id,
            to: env.to,
            group_id: env.group_id,
            publish,
        },
        None => Finished::ReceiptSent {
            env: Box::new(env),
            publish,
        },
    }
}

/// What a look-up's result means for the asking box.
fn place(me: &str, members: &Members, found: Found) -> Placement {
    match found {
        Ok(Some(home)) if home.box_id == me => Placement::Here,
        Ok(Some(home)) => match members.advertise(&home.box_id, Instant::now()) {
            Some(addr) => Placement::There(addr.to_string()),
            None => Placement::HomeDown,
        },
        Ok(None) => Placement::Nowhere,
        Err(e) => {
            tracing::debug!("placement: {e}");
            Placement::Unavailable
        }
    }
}

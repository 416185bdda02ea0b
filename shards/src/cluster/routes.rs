//! The gateway's routes for messages and receipts between boxes (`cross.rs` steps 2 and 4):
//! publishes issued in the order the shards handed them over, one round at a time, with
//! their acks awaited apart; and the nak that has JetStream deliver a message again.
//!
//! This module owns the publishing rounds; the gateway's loop (`gateway.rs`) starts them
//! and counts what they end with. It must not touch a shard's state.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_nats::jetstream::{self, kv};

use super::groups::{self, Address};
use super::{cross, placement, ClusterLink, ClusterStatus};

/// A message or receipt waiting to be published; `shard` is the sender's shard for a
/// message, `None` for a receipt.
pub(super) struct Outgoing {
    pub(super) shard: Option<usize>,
    pub(super) env: cross::Envelope,
}

/// A publish issued (written to NATS, in order) and what its ack is.
pub(super) struct Issued {
    pub(super) shard: Option<usize>,
    pub(super) env: cross::Envelope,
    pub(super) ack: IssuedAck,
    /// Sent where hashing would put a number with no home (not its home: not remembered).
    pub(super) guessed: bool,
}

pub(super) enum IssuedAck {
    /// JetStream's ack will come; the home box is known.
    Pending(String, jetstream::context::PublishAckFuture),
    /// Known already.
    Done(Published),
}

pub(super) type Issuing = Pin<Box<dyn Future<Output = Vec<Issued>> + Send>>;

/// Most messages one issuing round takes from the outbox.
pub const ISSUE_BATCH_MAX: usize = 1024;

/// A nak that has JetStream deliver the message again after [`cross::INBOUND_RETRY_MS`].
pub(super) fn retry() -> jetstream::AckKind {
    jetstream::AckKind::Nak(Some(Duration::from_millis(cross::INBOUND_RETRY_MS)))
}

/// How a publish to a phone's home box ended.
pub(super) enum Published {
    /// The home box's stream holds it, at this sequence.
    Stored {
        home: String,
        seq: u64,
        /// Not the phone's recorded home (`Issued::guessed`).
        guessed: bool,
    },
    /// The phone has no home anywhere.
    Nobody,
    /// NATS did not take it.
    Failed(String),
}

/// What a round needs to know where its envelopes go: the homes and groups buckets, and
/// what the gateway remembers of them (phone → box, group id → box).
pub(super) struct Where {
    pub(super) homes: kv::Store,
    pub(super) groups: kv::Store,
    pub(super) known: HashMap<String, String>,
    pub(super) known_groups: HashMap<u64, String>,
    pub(super) link: std::sync::Arc<ClusterLink>,
    /// The live boxes (where a 1:1 message for a number with no home goes).
    pub(super) live: Vec<String>,
    /// Whether `live` holds every live box (the gateway has run for a beat).
    pub(super) all_live_known: bool,
}

/// Issues one round of publishes in order: each to the stream of `env.to`'s home box
/// (`known`, or read from the homes bucket, one read per phone), or of the box a group
/// lives on (`groups.rs`), without waiting for JetStream's acks. A phone homed on this box
/// `me` (it came here because this box has no account for it: recorded at a Register
/// never verified), or a group of this box that is not here, has nobody to go to.
pub(super) async fn issue(
    js: jetstream::Context,
    mut at: Where,
    me: String,
    batch: Vec<Outgoing>,
) -> Vec<Issued> {
    use prost::Message as _;
    let mut out = Vec::with_capacity(batch.len());
    for Outgoing { shard, env } in batch {
        let to_group = match env.group.as_ref().map(|g| g.address(&env)) {
            Some(Address::Group(id)) => Some(id),
            _ => None,
        };
        let home = match to_group {
            Some(id) => match at.known_groups.get(&id) {
                Some(b) => Ok(Some(b.clone())),
                None => groups::box_of(&at.groups, id).await,
            },
            _ => match at.known.get(&env.to) {
                Some(h) => Ok(Some(h.clone())),
                None => placement::home(&at.homes, &env.to, false, Vec::new())
                    .await
                    .map(|h| h.map(|h| h.box_id))
                    .map_err(|e| e.to_string()),
            },
        };
        let home = match (home, claim_for(&env)) {
            // `groups.rs` step 1: the group's entry before its first ask to another box.
            (Ok(Some(home)), Some(id)) if home != me && at.known_groups.get(&id) != Some(&me) => {
                match groups::claim(&at.groups, id, &me).await {
                    Ok(true) => {
                        at.known_groups.insert(id, me.clone());
                        Ok(Some(home))
                    }
                    Ok(false) => {
                        ClusterStatus::bump(&at.link.status.group_clashes);
                        tracing::warn!(group_id = id, "group id claimed by another box first");
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            }
            (home, _) => home,
        };
        // A 1:1 message for a number with no account on any box goes where hashing would
        // put that number (this box included), whose shard answers it as a single box
        // answers a send to a number nobody has; the sender's `ServerAck` is a publish ack
        // like any other cross-box message's: no sign of whether the number exists.
        let one_to_one = shard.is_some() && env.group.is_none() && env.group_id == 0;
        let guessed = one_to_one && matches!(home, Ok(None));
        let home = match home {
            Ok(None) if one_to_one => {
                let live = at.live.iter().map(String::as_str);
                Ok(placement::choose(&env.to, live).map(str::to_string))
            }
            other => other,
        };
        // Presence is best-effort: never left waiting in the stream of a box that is not
        // live; a subscription is answered as for a number nobody has (`hidden`: its
        // presence is not known now), and asked again when the box is back (`groups.rs`
        // step 6).
        let presence = env.group.as_ref().is_some_and(|g| g.is_presence());
        let ack = match home {
            Ok(Some(home)) if home == me && !one_to_one => IssuedAck::Done(Published::Nobody),
            Ok(Some(home)) if presence && at.all_live_known && !at.live.contains(&home) => {
                IssuedAck::Done(Published::Nobody)
            }
            Ok(Some(home)) => {
                match to_group {
                    Some(id) => {
                        at.known_groups.insert(id, home.clone());
                    }
                    None if !guessed => {
                        at.known.insert(env.to.clone(), home.clone());
                    }
                    None => {}
                }
                let msg = jetstream::message::PublishMessage::build()
                    .payload(env.encode_to_vec().into())
                    .message_id(env.msg_id());
                match js.send_publish(cross::subject(&home), msg).await {
                    Ok(f) => IssuedAck::Pending(home, f),
                    Err(e) => IssuedAck::Done(Published::Failed(e.to_string())),
                }
            }
            Ok(None) => IssuedAck::Done(Published::Nobody),
            Err(e) => IssuedAck::Done(Published::Failed(e.to_string())),
        };
        out.push(Issued {
            shard,
            env,
            ack,
            guessed,
        });
    }
    out
}

/// The group an envelope claims before it leaves (an ask about a member of another box).
fn claim_for(env: &cross::Envelope) -> Option<u64> {
    env.group
        .as_ref()
        .filter(|g| g.kind == groups::KIND_ASK)
        .map(|g| g.group_id)
}

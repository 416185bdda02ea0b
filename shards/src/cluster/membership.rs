//! Which boxes are in the cluster now.
//!
//! ## Steps
//! 1. Every [`MEMBER_BEAT_MS`] each box puts `{advertise, load}` under its box id in the
//!    `switchboard_members` KV bucket, whose `max_age` is [`MEMBER_LEASE_MS`]: a box that
//!    stops putting (killed, cut off) drops out of the bucket by itself.
//! 2. Each box watches the bucket: a put is a join or a renewal (noted with the local time
//!    it arrived), a delete is a leave (a box stopping cleanly deletes its key).
//! 3. A box is live while its last put arrived within the lease ([`Members::live`]). KV
//!    watchers hear nothing when an entry ages out, so the lease is applied here too.
//! 4. A put from a box that was not live, or that started again since its last put (its
//!    `started_ms` changed: a restart within the lease), is a join ([`Members::apply`]):
//!    that box holds no presence state any more. A delete, or a lease run out
//!    ([`Members::expire`]), is a leave: its users' presence is not known any more. After
//!    either, this box's users ask again about their contacts (`groups.rs` step 6).
//!
//! Why it is safe: membership only decides where *new* phones go and which address a
//! redirect names; a box wrongly thought live for up to a lease gets a phone's redirect or a
//! new phone that it will serve when back; nothing is lost by it. Peer input (the values
//! other boxes put) is bounded: at most [`MEMBERS_MAX`] boxes, values of at most
//! [`MEMBER_VALUE_BYTES_MAX`]; anything else is ignored.
//!
//! This module owns the members view; it must not touch homes or the shards.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

/// The members bucket.
pub const MEMBERS_BUCKET: &str = "switchboard_members";
/// A box's entry expires this long after its last renewal.
pub const MEMBER_LEASE_MS: u64 = 10_000;
/// How often a box renews its entry (a few renewals per lease, so one lost put is no leave).
pub const MEMBER_BEAT_MS: u64 = 3_000;
/// Most boxes a members view holds; entries of more are ignored.
pub const MEMBERS_MAX: usize = 1024;
/// Largest member value read; larger ones are ignored.
pub const MEMBER_VALUE_BYTES_MAX: usize = 1024;

const _: () = assert!(3 * MEMBER_BEAT_MS <= MEMBER_LEASE_MS);

/// What a box says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Where phones reach it.
    pub advertise: String,
    /// Connections it holds.
    pub load: u64,
    /// When this run of the box started (ms since the epoch; 0 from a box that does not
    /// say): step 4.
    #[serde(default)]
    pub started_ms: u64,
}

impl Member {
    /// This box as it starts now, with no connections.
    pub fn starting(advertise: String) -> Member {
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Member {
            advertise,
            load: 0,
            started_ms,
        }
    }
}

/// The members seen, with the time each one's last put arrived.
#[derive(Debug, Default)]
pub struct Members {
    seen: HashMap<String, (Member, Instant)>,
}

impl Members {
    /// Step 2 for one watched entry; whether it is a join or a leave (step 4).
    pub fn apply(&mut self, entry: &kv::Entry, now: Instant) -> bool {
        match entry.operation {
            kv::Operation::Put => {
                if entry.value.len() > MEMBER_VALUE_BYTES_MAX {
                    return false;
                }
                serde_json::from_slice::<Member>(&entry.value)
                    .is_ok_and(|m| self.put(&entry.key, m, now))
            }
            kv::Operation::Delete | kv::Operation::Purge => self.seen.remove(&entry.key).is_some(),
        }
    }

    /// A put of `m` under `id` arrived at `now`; whether it is a join (step 4).
    pub fn put(&mut self, id: &str, m: Member, now: Instant) -> bool {
        if self.seen.len() >= MEMBERS_MAX && !self.seen.contains_key(id) {
            self.expire(now);
            if self.seen.len() >= MEMBERS_MAX {
                return false;
            }
        }
        let lease = Duration::from_millis(MEMBER_LEASE_MS);
        let joined = self.seen.get(id).is_none_or(|(was, at)| {
            was.started_ms != m.started_ms || now.saturating_duration_since(*at) >= lease
        });
        self.seen.insert(id.to_string(), (m, now));
        joined
    }

    /// Forgets boxes whose lease ran out; returns their ids (step 4: they left).
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let lease = Duration::from_millis(MEMBER_LEASE_MS);
        let mut gone = Vec::new();
        self.seen.retain(|id, (_, at)| {
            let live = now.saturating_duration_since(*at) < lease;
            if !live {
                gone.push(id.clone());
            }
            live
        });
        gone
    }

    /// The live boxes' ids.
    pub fn live(&self, now: Instant) -> Vec<String> {
        let lease = Duration::from_millis(MEMBER_LEASE_MS);
        self.seen
            .iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) < lease)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// A live box's advertised address.
    pub fn advertise(&self, id: &str, now: Instant) -> Option<&str> {
        let (m, at) = self.seen.get(id)?;
        (now.saturating_duration_since(*at) < Duration::from_millis(MEMBER_LEASE_MS))
            .then_some(m.advertise.as_str())
    }

    /// Every live box with what it last said, sorted by id.
    pub fn list(&self, now: Instant) -> Vec<(String, Member)> {
        let mut v: Vec<_> = self
            .seen
            .iter()
            .filter(|(_, (_, at))| {
                now.saturating_duration_since(*at) < Duration::from_millis(MEMBER_LEASE_MS)
            })
            .map(|(id, (m, _))| (id.clone(), m.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// Step 1: renews this box's entry.
pub async fn beat(store: &kv::Store, box_id: &str, me: &Member) -> Result<(), String> {
    let value = serde_json::to_vec(me).map_err(|e| e.to_string())?;
    store
        .put(box_id, value.into())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(addr: &str) -> Member {
        Member {
            advertise: addr.into(),
            load: 0,
            started_ms: 1,
        }
    }

    #[test]
    fn a_box_that_was_not_live_or_started_again_joins() {
        let t0 = Instant::now();
        let mut v = Members::default();
        assert!(v.put("a", m("a:1"), t0), "first seen");
        assert!(!v.put("a", m("a:1"), t0), "a renewal");
        let restarted = Member {
            started_ms: 2,
            ..m("a:1")
        };
        assert!(
            v.put("a", restarted.clone(), t0),
            "a restart within the lease"
        );
        let lease = Duration::from_millis(MEMBER_LEASE_MS);
        assert!(
            v.put("a", restarted, t0 + lease),
            "back after its lease ran out"
        );
        assert_eq!(v.expire(t0 + lease), Vec::<String>::new());
        assert_eq!(v.expire(t0 + lease * 2), ["a"], "a leave");
    }

    #[test]
    fn a_box_is_live_for_one_lease_after_its_last_put() {
        let t0 = Instant::now();
        let mut v = Members::default();
        v.put("a", m("a:1"), t0);
        let lease = Duration::from_millis(MEMBER_LEASE_MS);
        assert_eq!(v.live(t0 + lease / 2), ["a"]);
        assert_eq!(v.advertise("a", t0 + lease / 2), Some("a:1"));
        assert!(v.live(t0 + lease).is_empty());
        assert_eq!(v.advertise("a", t0 + lease), None);
        v.put("a", m("a:1"), t0 + lease);
        assert_eq!(v.live(t0 + lease + lease / 2), ["a"]);
    }

    #[test]
    fn the_view_holds_at_most_members_max_boxes() {
        let t0 = Instant::now();
        let mut v = Members::default();
        for i in 0..MEMBERS_MAX + 10 {
            v.put(&format!("b{i}"), m("x:1"), t0);
        }
        assert_eq!(v.live(t0).len(), MEMBERS_MAX);
        // Once the old ones expire there is room again.
        let later = t0 + Duration::from_millis(MEMBER_LEASE_MS);
        v.put("new", m("n:1"), later);
        assert_eq!(v.live(later), ["new"]);
    }
}

//! The gateway's part of presence across boxes (`groups.rs` step 6): another box joined
//! the cluster or started again, holding no presence state, or left it, its users'
//! presence unknown now (`membership.rs` step 4): each shard is told, and its users who
//! subscribed this session ask again about the contacts they follow. It also keeps the
//! members view up to date as entries are watched. A child of `gateway.rs`; it must not touch a shard's state.

use std::sync::atomic::Ordering;
use std::time::Instant;

use async_nats::jetstream::kv;

use super::{answer, Gw};
use crate::cluster::Down;

impl Gw {
    /// A members entry watched (`membership.rs` steps 2 and 4): the view, the members
    /// gauge, and a join or leave of another box told to the shards.
    pub(super) fn member_entry(&mut self, entry: &kv::Entry) {
        if self.members.apply(entry, Instant::now()) && entry.key != self.cfg.box_id {
            self.members_changed();
        }
        let live = self.members.live(Instant::now()).len() as u64;
        self.link.status.members.store(live, Ordering::Relaxed);
    }

    /// Another box joined or left: every shard hears it (best-effort: a full queue drops
    /// it, as any answer, counted in `cluster_answers_dropped_total`).
    pub(super) fn members_changed(&self) {
        for shard in 0..self.link.to_shard.len() {
            answer(&self.link, shard, Down::MembersChanged);
        }
    }
}

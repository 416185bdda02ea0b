//! The gateway's part of presence across boxes (`groups.rs` step 6): another box joined
//! the cluster, or started again (`membership.rs` step 4), holding no presence state: each
//! shard is told, and its users who subscribed this session ask again about their
//! contacts of other boxes. A child of `gateway.rs`; it must not touch a shard's state.

use super::{answer, Gw};
use crate::cluster::Down;

impl Gw {
    /// Another box joined: every shard hears it (best-effort: a full queue drops it, as
    /// any answer, counted in `cluster_answers_dropped_total`).
    pub(super) fn box_joined(&self) {
        for shard in 0..self.link.to_shard.len() {
            answer(&self.link, shard, Down::BoxJoined);
        }
    }
}

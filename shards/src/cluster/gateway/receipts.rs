//! Receipts for another box's users that NATS did not take: kept, bounded, and sent again
//! every [`RECEIPT_RETRY_MS`] until NATS takes them (a receipt has no order to keep, and
//! JetStream's message id makes a second copy in its duplicate window none).
//!
//! This module owns the receipts waiting to be sent again; it must not touch a shard's
//! state.

use std::time::{Duration, Instant};

use super::super::{cross, ClusterStatus};
use super::{Gw, Outgoing};

/// How long a receipt NATS did not take waits before it is sent again.
pub const RECEIPT_RETRY_MS: u64 = 1_000;
/// Receipts waiting to be sent again, at most; past it the oldest is dropped (counted).
pub const RECEIPTS_AGAIN_MAX: usize = 65_536;

impl Gw {
    /// A receipt NATS did not take: sent again after [`RECEIPT_RETRY_MS`] (the oldest is
    /// dropped, counted, past [`RECEIPTS_AGAIN_MAX`]).
    pub(super) fn retry_receipt(&mut self, env: cross::Envelope) {
        if self.receipts_again.len() >= RECEIPTS_AGAIN_MAX {
            self.receipts_again.pop_front();
            ClusterStatus::bump(&self.link.status.receipts_dropped);
        }
        let due = Instant::now() + Duration::from_millis(RECEIPT_RETRY_MS);
        self.receipts_again.push_back((due, env));
    }

    /// Sends again the receipts whose time has come.
    pub(super) fn receipts_due(&mut self) {
        let now = Instant::now();
        while self
            .receipts_again
            .front()
            .is_some_and(|(due, _)| *due <= now)
        {
            if let Some((_, env)) = self.receipts_again.pop_front() {
                self.route(Outgoing { shard: None, env });
            }
        }
        self.issue_next();
    }
}

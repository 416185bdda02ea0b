//! Overload fast reject (WeChat's FastReject): when a shard is behind, a new `SendMessage` or
//! `GroupSend` is answered at once with `Busy { retry_after_ms, client_msg_id }` instead of
//! being queued behind work that would time out.
//!
//! Signals, sampled by the adapter before every event:
//! - **journal bytes not yet durable** (pending + in flight): admitted messages wait for
//!   their fsync; beyond the limit the disk is not keeping up (or is failing: a failed write
//!   keeps its batch), and every new message would only add latency and memory.
//! - **mesh outbox depth**: messages queued for other shards and not yet flushed; beyond the
//!   limit a peer is not draining its ring.
//!
//! Why refusing is safe: a refused send stores nothing, gets no id and enters no dedupe
//! window, so a retry with the same `client_msg_id` is a fresh send until the sender's
//! dedupe floor passes it (`dedupe.rs`: `DEDUPE_WINDOW_PER_SENDER` later sends from that
//! sender stored at that home, which a busy home stores none of). Retries of sends
//! already stored are still answered with their `ServerAck` (the dedupe hit costs nothing).
//! Group copies of an admitted group send are never refused (the group send was admitted
//! as a whole at the sender's home). Pure: no I/O, no clock.

use engine::mesh::MESH_OUTBOX_MSGS_MAX;
use messaging::state::limits::BUSY_RETRY_AFTER_MS;

/// Default limit on a shard's journal bytes not yet durable before new sends are refused.
pub const JOURNAL_PENDING_BYTES_MAX_DEFAULT: usize = 8 * 1024 * 1024;
/// Default limit on a shard's unflushed mesh messages before new sends are refused.
pub const MESH_QUEUED_MAX_DEFAULT: usize = MESH_OUTBOX_MSGS_MAX / 4;

// Refusing must start well before the mesh outbox is full (a full outbox drops messages).
const _: () = assert!(MESH_QUEUED_MAX_DEFAULT < MESH_OUTBOX_MSGS_MAX);

/// The overload limits of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverloadLimits {
    /// Journal bytes not yet durable above which new sends get `Busy`.
    pub journal_pending_bytes_max: usize,
    /// Unflushed mesh messages above which new sends get `Busy`.
    pub mesh_queued_max: usize,
}

impl Default for OverloadLimits {
    fn default() -> Self {
        OverloadLimits {
            journal_pending_bytes_max: JOURNAL_PENDING_BYTES_MAX_DEFAULT,
            mesh_queued_max: MESH_QUEUED_MAX_DEFAULT,
        }
    }
}

/// A shard's load at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Journal bytes appended by events and not yet durable.
    pub journal_pending_bytes: usize,
    /// Mesh messages queued and not yet flushed.
    pub mesh_queued: usize,
}

impl OverloadLimits {
    /// `Some(retry_after_ms)` when new sends must be refused under `load`.
    pub fn busy(&self, load: Load) -> Option<u32> {
        let over = load.journal_pending_bytes > self.journal_pending_bytes_max
            || load.mesh_queued > self.mesh_queued_max;
        over.then_some(BUSY_RETRY_AFTER_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_only_above_a_limit() {
        let l = OverloadLimits {
            journal_pending_bytes_max: 100,
            mesh_queued_max: 10,
        };
        assert_eq!(l.busy(Load::default()), None);
        let at = Load {
            journal_pending_bytes: 100,
            mesh_queued: 10,
        };
        assert_eq!(l.busy(at), None, "at the limit is still fine");
        let j = Load {
            journal_pending_bytes: 101,
            ..at
        };
        assert_eq!(l.busy(j), Some(BUSY_RETRY_AFTER_MS));
        let m = Load {
            mesh_queued: 11,
            ..at
        };
        assert_eq!(l.busy(m), Some(BUSY_RETRY_AFTER_MS));
    }
}

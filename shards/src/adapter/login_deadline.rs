//! The log-in deadline: a connection that has not logged in within the login timeout of its
//! opening (or of its adoption by this shard) is answered `NOT_LOGGED_IN` and closed,
//! whatever it sends meanwhile (pings do not keep it alive: the engine does not refresh a
//! pre-login connection's idle deadline either). Until then the engine counts it against
//! its source prefix (`engine::conn::prelogin`), so one address cannot hold connection slots
//! for longer than this.
//!
//! Every deadline is the opening time plus one timeout, so deadlines kept in opening order
//! are sorted: one queue, checked by one service timer set at the earliest, and no timer
//! per connection. An entry whose connection closed, moved or logged in is dropped when it
//! comes due. Whenever the queue holds more than twice the shard's connections (plus
//! [`LOGIN_DEADLINES_FLOOR`]) it drops every such entry at once, so connections that come
//! and go fast cannot grow it without bound (each compaction at least halves it, so its cost
//! is constant per connection).
//!
//! This module only keeps the queue; it must not touch sessions or frames.

use std::collections::VecDeque;

use proto::ids::ConnId;

/// Entries the deadline queue may hold beyond twice the shard's connections before it drops
/// those of connections already gone or logged in.
pub const LOGIN_DEADLINES_FLOOR: usize = 1_024;

/// Connections waiting for their login deadline, in deadline order.
#[derive(Debug, Default)]
pub struct LoginDeadlines {
    queue: VecDeque<(u64, ConnId)>,
    /// A service timer is set for the earliest deadline.
    pub timer_set: bool,
}

impl LoginDeadlines {
    /// `conn` must log in by `deadline_ms`. `live` is the shard's connection count and
    /// `waiting(conn)` whether a queued connection is still open and not logged in.
    pub fn push(
        &mut self,
        deadline_ms: u64,
        conn: ConnId,
        live: usize,
        waiting: impl Fn(ConnId) -> bool,
    ) {
        if self.queue.len() >= 2 * live + LOGIN_DEADLINES_FLOOR {
            self.queue.retain(|&(_, c)| waiting(c));
        }
        self.queue.push_back((deadline_ms, conn));
    }

    /// The next connection whose deadline is at or before `now_ms`.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<ConnId> {
        match self.queue.front() {
            Some(&(at, conn)) if at <= now_ms => {
                self.queue.pop_front();
                Some(conn)
            }
            _ => None,
        }
    }

    /// The earliest deadline queued.
    pub fn next_at(&self) -> Option<u64> {
        self.queue.front().map(|&(at, _)| at)
    }

    /// Entries queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether none is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(i: u64) -> ConnId {
        ConnId::from_u64(i)
    }

    #[test]
    fn deadlines_come_due_in_order_and_only_when_due() {
        let mut d = LoginDeadlines::default();
        d.push(1_000, conn(1), 10, |_| true);
        d.push(1_500, conn(2), 10, |_| true);
        assert_eq!(d.next_at(), Some(1_000));
        assert_eq!(d.pop_due(999), None);
        assert_eq!(d.pop_due(1_200), Some(conn(1)));
        assert_eq!(d.pop_due(1_200), None);
        assert_eq!(d.next_at(), Some(1_500));
        assert_eq!(d.pop_due(5_000), Some(conn(2)));
        assert!(d.is_empty());
    }

    #[test]
    fn churning_connections_cannot_grow_the_queue_without_bound() {
        let mut d = LoginDeadlines::default();
        // A million connections that open and close at once (none still waiting), on a
        // shard holding 10: the queue stays within twice that plus the floor.
        for i in 0..1_000_000u64 {
            d.push(60_000 + i, conn(i), 10, |_| false);
            assert!(d.len() <= 2 * 10 + LOGIN_DEADLINES_FLOOR + 1);
        }
        // Those still waiting are kept, in order.
        let mut d = LoginDeadlines::default();
        for i in 0..5_000u64 {
            d.push(i, conn(i), 0, |c| c.to_u64() % 2 == 0);
        }
        let mut last = None;
        while let Some(c) = d.pop_due(u64::MAX) {
            assert!(last < Some(c.to_u64()));
            last = Some(c.to_u64());
        }
    }
}

//! Group commit for the shard's durable log.
//!
//! Records produced by events are encoded into `pending`; the effects that must wait for
//! them (acks, deliveries) go to `pending_after`. One commit at a time is in flight: it
//! takes the whole pending batch, appends it and `fdatasync`s it, and only then are the
//! batch's effects released. While it is in flight the next batch gathers, so under load one
//! fsync covers many messages. A failed write keeps the batch (nothing is acked) and is
//! retried; the shard keeps serving. Compaction replaces the log with a snapshot of the
//! state, which covers the pending batch too. Pure bookkeeping: the adapter does the I/O.

use engine::LogFile;

use crate::effect::AfterCommit;
use crate::record::{self, Record};

/// What the commit task should do next.
pub enum Job {
    /// Append these bytes and sync.
    Append(LogFile, Vec<u8>),
    /// Replace the log with this snapshot.
    Compact(LogFile, Vec<u8>),
}

/// The shard's log bookkeeping.
#[derive(Default)]
pub struct Journal {
    pending: Vec<u8>,
    pending_after: Vec<AfterCommit>,
    /// Effects of the batch in flight.
    in_flight_after: Option<Vec<AfterCommit>>,
    /// Bytes of the batch in flight (kept to retry after a failure).
    in_flight_bytes: Vec<u8>,
    /// The log, when no commit holds it (None while opening and while in flight).
    pub file: Option<LogFile>,
    /// Log length at the last compaction check.
    pub checked_len: u64,
    /// Items queued at the last compaction check.
    pub checked_queued: usize,
    /// Batches that failed to write.
    pub failures: u64,
    /// Commits done.
    pub commits: u64,
    /// A retry is scheduled after a failure.
    pub retry_scheduled: bool,
}

impl Journal {
    /// Adds an event's records and waiting effects; returns effects that need not wait.
    pub fn add(&mut self, records: Vec<Record>, after: Vec<AfterCommit>) -> Vec<AfterCommit> {
        for r in &records {
            record::encode(r, &mut self.pending);
        }
        if self.pending.is_empty()
            && self.in_flight_after.is_none()
            && self.pending_after.is_empty()
        {
            return after;
        }
        self.pending_after.extend(after);
        Vec::new()
    }

    /// Whether a commit is in flight.
    pub fn busy(&self) -> bool {
        self.in_flight_after.is_some()
    }

    /// Effects waiting with nothing to write (released when nothing is in flight).
    pub fn take_unblocked(&mut self) -> Vec<AfterCommit> {
        if self.pending.is_empty() && !self.busy() {
            return std::mem::take(&mut self.pending_after);
        }
        Vec::new()
    }

    /// Bytes appended by events and not yet durable (gathering, in flight, or kept after a
    /// failed write): the overload signal of the log.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len() + self.in_flight_bytes.len()
    }

    /// The next append, if one is due and the file is free.
    pub fn next_append(&mut self) -> Option<Job> {
        if self.busy() || self.pending.is_empty() || self.retry_scheduled {
            return None;
        }
        let file = self.file.take()?;
        let bytes = std::mem::take(&mut self.pending);
        self.in_flight_bytes = bytes.clone();
        self.in_flight_after = Some(std::mem::take(&mut self.pending_after));
        Some(Job::Append(file, bytes))
    }

    /// A compaction with `snapshot` (which covers everything pending, too).
    pub fn start_compaction(&mut self, snapshot: Vec<u8>) -> Option<Job> {
        if self.busy() || self.retry_scheduled {
            return None;
        }
        let file = self.file.take()?;
        // Kept in case the compaction fails: then they are appended as usual.
        self.in_flight_bytes = std::mem::take(&mut self.pending);
        self.in_flight_after = Some(std::mem::take(&mut self.pending_after));
        Some(Job::Compact(file, snapshot))
    }

    /// The job finished. On success returns the effects to release; on failure puts the
    /// batch back in front of what gathered since (the caller schedules a retry).
    pub fn finished(&mut self, file: LogFile, ok: bool) -> Vec<AfterCommit> {
        self.file = Some(file);
        let after = self.in_flight_after.take().expect("a job was in flight");
        if ok {
            self.commits += 1;
            self.in_flight_bytes.clear();
            return after;
        }
        self.failures += 1;
        let mut bytes = std::mem::take(&mut self.in_flight_bytes);
        bytes.extend_from_slice(&self.pending);
        self.pending = bytes;
        let mut waiting = after;
        waiting.append(&mut self.pending_after);
        self.pending_after = waiting;
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effect::Effect;
    use crate::record::{record, RemovedRec};

    fn rec(id: u64) -> Record {
        Record {
            kind: Some(record::Kind::Removed(RemovedRec {
                user: "u".into(),
                id,
            })),
        }
    }

    fn push(phone: &str) -> AfterCommit {
        AfterCommit::Effect(Effect::Push {
            phone: phone.into(),
        })
    }

    #[test]
    fn effects_wait_for_their_batch_and_batches_group() {
        let mut j = Journal::default();
        // Nothing pending and nothing in flight: an effect without records goes at once.
        assert_eq!(j.add(vec![], vec![push("a")]).len(), 1);
        // With records, it waits; no file yet, so no job either.
        assert!(j.add(vec![rec(1)], vec![push("b")]).is_empty());
        assert!(j.next_append().is_none());
        assert!(j.add(vec![rec(2)], vec![push("c")]).is_empty());
        assert!(
            j.take_unblocked().is_empty(),
            "records are pending: nothing unblocks"
        );
    }
}

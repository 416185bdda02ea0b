//! Group commit and compaction policy for the shard's durable log.
//!
//! Records produced by events gather in `pending`; the effects that must wait for them
//! (acks, replies) go to `pending_after`. One job at a time is in flight: it takes the whole
//! pending batch, encodes, appends and `fdatasync`s it, and only then are the batch's
//! effects released. While it is in flight the next batch gathers, so under load one sync
//! covers many messages.
//!
//! What need not be written is not:
//! - an item acked by its recipient before its record left `pending` (the usual case for
//!   an online recipient) is dropped from the batch together with its tombstone: neither
//!   costs a byte or a sync;
//! - any other tombstone (`Removed`) is **lazy**: nothing waits for it, so it never starts
//!   a job of its own; it rides on the next batch, or is flushed when the adapter asks
//!   ([`Journal::request_lazy_flush`]) after a bounded delay. A crash before it is written
//!   brings the item back, and it is delivered again (clients drop a
//!   `(from, client_msg_id)` they already showed).
//!
//! Failures, and why each is safe:
//! - an append fails: nothing of the batch counts as written; its records (kept while it
//!   was in flight, so no batch is copied for a retry) go back in front of what gathered
//!   since and its effects wait; the adapter retries after a delay. Nothing is
//!   acknowledged meanwhile. The file layer cuts any partial write before the retry.
//! - a compaction fails before its rename: the log is unchanged, so the same as above.
//! - a compaction renamed its snapshot but the directory sync failed: the snapshot (which
//!   covers the batch) is the log now, but a crash could bring back the old one, which lacks
//!   the batch. The batch's bytes are dropped (they are in the snapshot) and its effects
//!   wait for a sync that is owed even with nothing to write: the next job retries the
//!   directory sync first, and nothing is released until it succeeds.
//!
//! Compaction replaces the log with a snapshot of the state when the log is mostly garbage
//! ([`Journal::compaction_due`], [`Journal::start_compaction`]). The snapshot is built in
//! slices while events go on (`snapshot.rs`), so it is fuzzy: from
//! [`Journal::snapshot_began`] the journal keeps a copy of every batch it appends, and the
//! compacted log is the snapshot, then those batches, then what is pending at the switch
//! (held as usual, in case the compaction fails). Pure bookkeeping, generic over the file
//! so it is tested without I/O: the adapter does the I/O.

use std::collections::HashMap;

use crate::durable::record::{self, Record};
use crate::state::effect::AfterCommit;

/// Room (effects) of the released list the journal keeps for the next batch at most.
pub const SPARE_AFTER_MAX: usize = 4096;

/// Frame buffers of item records done with that the journal keeps for the state at most.
pub const SPARE_FRAMES_MAX: usize = 64;

/// Encoded size of a framed record.
fn framed_len(r: &Record) -> usize {
    use prost::Message;
    record::RECORD_HEADER_BYTES + r.encoded_len()
}

/// What the commit task should do next.
pub enum Job<F> {
    /// Append these bytes (possibly none: only the syncs owed) and sync.
    Append(F, Vec<u8>),
    /// Replace the log with this snapshot.
    Compact(F, Vec<u8>),
}

/// How a job ended (the file layer's result, as the journal needs it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The batch is durable.
    Appended,
    /// The append failed; nothing of it counts as written.
    AppendFailed,
    /// The snapshot is the log and durable.
    Compacted,
    /// The compaction failed before its rename: the log is as it was.
    NotCompacted,
    /// The snapshot is the log but its rename is not yet durable.
    CompactedNotDurable,
}

impl Outcome {
    /// Whether the job's effects may be released.
    pub fn durable(self) -> bool {
        matches!(self, Outcome::Appended | Outcome::Compacted)
    }
}

/// When compaction is worth trying.
#[derive(Debug, Clone, Copy)]
struct CompactionPolicy {
    /// Logs smaller than this are never compacted.
    min_bytes: u64,
    /// Log length at the last check.
    checked_len: u64,
    /// Bytes queued at the last check.
    checked_queued: usize,
    /// The last snapshot that did not pay: its bytes, and the bytes queued when it began.
    dropped: Option<(u64, usize)>,
}

/// The shard's log bookkeeping.
pub struct Journal<F> {
    /// An emptied list of released effects, for the next batch's ([`Journal::keep_after`]).
    spare_after: Vec<AfterCommit>,
    /// The frame buffers of item records done with (cancelled, or appended), for the
    /// state's next item (`ShardState::wire_done`; at most [`SPARE_FRAMES_MAX`]).
    spare_frames: Vec<Vec<u8>>,
    /// Records gathering for the next batch; `None` where an item was cancelled.
    pending: Vec<Option<Record>>,
    /// Item id → its record's index in `pending` (only items can be cancelled).
    pending_items: HashMap<u64, usize>,
    /// Encoded bytes of the live records in `pending`.
    pending_len: usize,
    /// Tombstones that ride on the next batch.
    lazy: Vec<Record>,
    /// Encoded bytes of `lazy`.
    lazy_len: usize,
    /// The adapter asked for the lazy tombstones to be written even with nothing else.
    lazy_flush: bool,
    /// A failed batch's records, written first by the next job (never cancelled: they
    /// were submitted once).
    retry: Vec<Record>,
    pending_after: Vec<AfterCommit>,
    /// Effects of the job in flight.
    in_flight_after: Option<Vec<AfterCommit>>,
    /// Records of the job in flight, kept (not a copy of its bytes) to be encoded again
    /// after a failure.
    in_flight: Vec<Record>,
    /// Encoded bytes of `retry` and of `in_flight`.
    retry_len: usize,
    in_flight_len: usize,
    /// The log, when no job holds it (None while opening and while in flight).
    file: Option<F>,
    /// A sync is owed even with nothing new to write (a compaction's directory sync failed).
    sync_owed: bool,
    policy: CompactionPolicy,
    /// Jobs that failed.
    failures: u64,
    /// Jobs that made their batch durable.
    commits: u64,
    /// Item records (and their tombstones) never written: acked before their batch left.
    skipped_items: u64,
    /// A retry is scheduled after a failure.
    retry_scheduled: bool,
    /// While a snapshot is being built: the bytes of every batch appended since it began,
    /// which the compacted log holds after the snapshot.
    trailing: Option<Vec<u8>>,
    /// A copy of the append in flight, when it started while a snapshot was being built
    /// (it joins `trailing` once durable).
    in_flight_copy: Option<Vec<u8>>,
}

impl<F> Journal<F> {
    /// An empty journal; logs under `compact_min_bytes` are never compacted.
    pub fn new(compact_min_bytes: u64) -> Self {
        Journal {
            spare_after: Vec::new(),
            spare_frames: Vec::new(),
            pending: Vec::new(),
            pending_items: HashMap::new(),
            pending_len: 0,
            lazy: Vec::new(),
            lazy_len: 0,
            lazy_flush: false,
            retry: Vec::new(),
            pending_after: Vec::new(),
            in_flight_after: None,
            in_flight: Vec::new(),
            retry_len: 0,
            in_flight_len: 0,
            file: None,
            sync_owed: false,
            policy: CompactionPolicy {
                min_bytes: compact_min_bytes,
                checked_len: 0,
                checked_queued: 0,
                dropped: None,
            },
            failures: 0,
            commits: 0,
            skipped_items: 0,
            retry_scheduled: false,
            trailing: None,
            in_flight_copy: None,
        }
    }

    /// The log was opened (or replayed to `replayed_len` bytes).
    pub fn opened(&mut self, file: F, replayed_len: u64) {
        self.file = Some(file);
        self.policy.checked_len = replayed_len;
    }

    /// The log, when no job holds it.
    pub fn file(&self) -> Option<&F> {
        self.file.as_ref()
    }

    /// Jobs that made their batch durable.
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// Jobs that failed.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Items never written because their recipient acked them first.
    pub fn skipped_items(&self) -> u64 {
        self.skipped_items
    }

    /// Whether records that something waits for are gathering (not just lazy tombstones).
    fn has_pending(&self) -> bool {
        self.pending_len > 0 || self.retry_len > 0
    }

    /// Whether lazy tombstones wait with nothing else to carry them.
    pub fn lazy_waiting(&self) -> bool {
        !self.lazy.is_empty() && !self.has_pending()
    }

    /// Lets the next job write the lazy tombstones even with nothing else pending.
    pub fn request_lazy_flush(&mut self) {
        self.lazy_flush = true;
    }

    /// Adds an event's records and waiting effects; returns effects that need not wait.
    pub fn add(
        &mut self,
        mut records: Vec<Record>,
        mut after: Vec<AfterCommit>,
    ) -> Vec<AfterCommit> {
        if self.add_from(&mut records, &mut after) {
            after
        } else {
            Vec::new()
        }
    }

    /// [`Journal::add`] from lists the caller keeps for its next event: `records` is emptied
    /// (its room kept), and so is `after` unless its effects need not wait (true): then they
    /// are left there for the caller to release.
    pub fn add_from(&mut self, records: &mut Vec<Record>, after: &mut Vec<AfterCommit>) -> bool {
        for r in records.drain(..) {
            self.add_record(r);
        }
        if !self.has_pending()
            && self.in_flight_after.is_none()
            && self.pending_after.is_empty()
            && !self.sync_owed
        {
            return true;
        }
        self.pending_after.append(after);
        false
    }

    fn add_record(&mut self, r: Record) {
        match &r.kind {
            Some(record::record::Kind::Removed(rm)) => {
                if let Some(at) = self.pending_items.remove(&rm.id) {
                    let item = self.pending[at].take().expect("indexed records are live");
                    self.pending_len -= framed_len(&item);
                    self.skipped_items += 1;
                    self.done_with(item);
                } else {
                    self.lazy_len += framed_len(&r);
                    self.lazy.push(r);
                }
                return;
            }
            Some(record::record::Kind::Item(i)) => {
                self.pending_items.insert(i.id, self.pending.len());
            }
            _ => {}
        }
        self.pending_len += framed_len(&r);
        self.pending.push(Some(r));
    }

    /// Moves the batch (a failed batch first, then what gathered, then lazy tombstones)
    /// into the job in flight.
    fn hold_batch(&mut self) {
        let mut batch = std::mem::take(&mut self.retry);
        batch.extend(self.pending.drain(..).flatten());
        batch.append(&mut self.lazy);
        self.in_flight = batch;
        self.in_flight_len = self.retry_len + self.pending_len + self.lazy_len;
        self.pending_items.clear();
        self.retry_len = 0;
        self.pending_len = 0;
        self.lazy_len = 0;
        self.lazy_flush = false;
    }

    /// The effects gathered for the job starting now; `pending_after` goes on in the list
    /// the last job's caller handed back ([`Journal::keep_after`]), its room kept.
    fn take_pending_after(&mut self) -> Vec<AfterCommit> {
        let spare = std::mem::take(&mut self.spare_after);
        std::mem::replace(&mut self.pending_after, spare)
    }

    /// The list [`Journal::finished`] or [`Journal::take_unblocked`] returned, its effects
    /// released: kept for the next
    /// batch's effects unless it grew past [`SPARE_AFTER_MAX`] (no allocation per batch).
    pub fn keep_after(&mut self, after: Vec<AfterCommit>) {
        // One with no room (nothing was released) leaves the kept one alone.
        let room = after.capacity();
        if after.is_empty() && room > self.spare_after.capacity() && room <= SPARE_AFTER_MAX {
            self.spare_after = after;
        }
    }

    /// Keeps a record's frame buffer, if it is an item's, for [`Journal::spare_frames`].
    fn done_with(&mut self, r: Record) {
        if let Some(record::record::Kind::Item(i)) = r.kind {
            if self.spare_frames.len() < SPARE_FRAMES_MAX && i.frame.capacity() > 0 {
                self.spare_frames.push(i.frame);
            }
        }
    }

    /// The frame buffers of item records done with since the last call: the caller hands
    /// them to the state, whose next items' frames are written into them.
    pub fn spare_frames(&mut self) -> std::vec::Drain<'_, Vec<u8>> {
        self.spare_frames.drain(..)
    }

    /// [`Journal::hold_batch`], encoded for an append.
    fn take_batch(&mut self) -> Vec<u8> {
        self.hold_batch();
        let mut out = Vec::with_capacity(self.in_flight_len);
        for r in &self.in_flight {
            record::encode(r, &mut out);
        }
        debug_assert_eq!(out.len(), self.in_flight_len);
        if self.trailing.is_some() {
            self.in_flight_copy = Some(out.clone());
        }
        out
    }

    /// Whether a job is in flight.
    pub fn busy(&self) -> bool {
        self.in_flight_after.is_some()
    }

    /// Effects waiting with nothing to write (released when nothing is in flight or owed);
    /// the caller hands the emptied list back ([`Journal::keep_after`]).
    pub fn take_unblocked(&mut self) -> Vec<AfterCommit> {
        if !self.has_pending() && !self.busy() && !self.sync_owed && !self.pending_after.is_empty()
        {
            return self.take_pending_after();
        }
        Vec::new()
    }

    /// Bytes appended by events and not yet durable (gathering, in flight, or kept after a
    /// failed write): the overload signal of the log.
    pub fn pending_bytes(&self) -> usize {
        self.pending_len + self.lazy_len + self.retry_len + self.in_flight_len
    }

    /// Whether an append would start now if the file were free.
    pub fn append_due(&self) -> bool {
        !self.busy()
            && !self.retry_scheduled
            && (self.has_pending() || self.sync_owed || (self.lazy_flush && !self.lazy.is_empty()))
    }

    /// The next append, if one is due and the file is free.
    pub fn next_append(&mut self) -> Option<Job<F>> {
        if !self.append_due() {
            return None;
        }
        let file = self.file.take()?;
        let bytes = self.take_batch();
        self.in_flight_after = Some(self.take_pending_after());
        Some(Job::Append(file, bytes))
    }

    /// Whether a snapshot should be built now: the log (`log_len` bytes) is past the
    /// minimum and has doubled, or the queues (`queued` wire bytes of items, about what a
    /// snapshot writes for them) shrank to a quarter, since the last check; or, after a
    /// snapshot that did not pay, the queues shrank since it began enough that one scaled
    /// to them would pay with a quarter to spare (each such try needs a fifth less queued
    /// than the last, so they cannot repeat for long).
    /// Building a snapshot costs a pass over the state, hence the check.
    pub fn compaction_due(&mut self, log_len: u64, queued: usize) -> bool {
        let p = &mut self.policy;
        let grew = log_len >= 2 * p.checked_len;
        let drained = queued * 4 < p.checked_queued;
        let would_pay = p.dropped.is_some_and(|(bytes, then)| {
            // In u128: bytes times bytes.
            queued < then
                && queued as u128
                    * bytes as u128
                    * (crate::state::limits::COMPACT_GARBAGE_RATIO as u128 + 1)
                    <= log_len as u128 * then as u128
        });
        if self.in_flight_after.is_some()
            || self.retry_scheduled
            || self.sync_owed
            || self.trailing.is_some()
            || log_len < p.min_bytes
            || !(grew || drained || would_pay)
        {
            return false;
        }
        p.checked_len = log_len;
        p.checked_queued = queued;
        true
    }

    /// A snapshot is being built from now on: every batch appended from here is kept for
    /// the compacted log (and no other compaction is due meanwhile).
    pub fn snapshot_began(&mut self) {
        self.trailing = Some(Vec::new());
    }

    /// Bytes kept for the snapshot being built (0 when none is).
    pub fn trailing_bytes(&self) -> usize {
        self.trailing.as_ref().map_or(0, Vec::len)
    }

    /// Whether a finished snapshot can replace the log now: no job in flight, no retry
    /// waiting, no directory sync owed.
    pub fn can_compact(&self) -> bool {
        !self.busy() && !self.retry_scheduled && !self.sync_owed && self.file.is_some()
    }

    /// Replaces the log (`log_len` bytes) with `snapshot`, then every batch appended since
    /// the snapshot began, then what is pending now; `None` (and the snapshot is dropped)
    /// unless the log is at least `COMPACT_GARBAGE_RATIO` times that, or if
    /// [`Journal::can_compact`] says no.
    pub fn start_compaction(&mut self, log_len: u64, mut snapshot: Vec<u8>) -> Option<Job<F>> {
        let trailing = self.trailing.take().unwrap_or_default();
        if !self.can_compact() {
            return None;
        }
        let pending = self.retry_len + self.pending_len + self.lazy_len;
        let total = (snapshot.len() + trailing.len() + pending) as u64;
        if total * crate::state::limits::COMPACT_GARBAGE_RATIO > log_len {
            self.policy.dropped = Some((total, self.policy.checked_queued));
            return None;
        }
        self.policy.dropped = None;
        let file = self.file.take()?;
        snapshot.extend_from_slice(&trailing);
        // Held as well, in case the compaction fails before its rename: then they are
        // appended to the old log.
        self.hold_batch();
        for r in &self.in_flight {
            record::encode(r, &mut snapshot);
        }
        self.in_flight_after = Some(self.take_pending_after());
        Some(Job::Compact(file, snapshot))
    }

    /// The job finished with `outcome`; the log is now `file` (`log_len` bytes). Returns
    /// the effects to release. After a failure the caller schedules a retry
    /// (`Journal::retry_scheduled`).
    pub fn finished(&mut self, file: F, log_len: u64, outcome: Outcome) -> Vec<AfterCommit> {
        self.file = Some(file);
        let after = self.in_flight_after.take().expect("a job was in flight");
        let copy = self.in_flight_copy.take();
        if let (Some(trailing), Some(copy), Outcome::Appended) = (&mut self.trailing, copy, outcome)
        {
            trailing.extend_from_slice(&copy);
        }
        match outcome {
            Outcome::Appended | Outcome::Compacted => {
                self.commits += 1;
                std::mem::take(&mut self.in_flight)
                    .into_iter()
                    .for_each(|r| self.done_with(r));
                self.in_flight_len = 0;
                self.sync_owed = false;
                if outcome == Outcome::Compacted {
                    self.policy.checked_len = log_len;
                }
                return after;
            }
            Outcome::AppendFailed | Outcome::NotCompacted => {
                // Submitted once: written first next time, never cancelled.
                self.retry = std::mem::take(&mut self.in_flight);
                self.retry_len = std::mem::take(&mut self.in_flight_len);
            }
            Outcome::CompactedNotDurable => {
                // The snapshot holds these records already; what is owed is the sync.
                self.in_flight.clear();
                self.in_flight_len = 0;
                self.sync_owed = true;
                self.policy.checked_len = log_len;
            }
        }
        self.failures += 1;
        let mut waiting = after;
        waiting.append(&mut self.pending_after);
        self.pending_after = waiting;
        Vec::new()
    }

    /// Marks a retry as scheduled; false if one already was.
    pub fn schedule_retry(&mut self) -> bool {
        !std::mem::replace(&mut self.retry_scheduled, true)
    }

    /// The scheduled retry is due: jobs may start again.
    pub fn retry_due(&mut self) {
        self.retry_scheduled = false;
    }
}

#[cfg(test)]
mod tests;

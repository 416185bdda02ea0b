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
mod tests {
    use super::*;
    use crate::durable::record::{record, AccountRec, ItemRec, RemovedRec};
    use crate::state::effect::Effect;

    /// A stand-in for the log file: the journal only passes it around.
    #[derive(Debug, PartialEq)]
    struct File;

    /// A record something waits for.
    fn rec(id: u64) -> Record {
        Record {
            kind: Some(record::Kind::Account(AccountRec {
                phone: "+15550000001".into(),
                user_id: id,
                key_hash: vec![1; 32],
            })),
        }
    }

    fn item(id: u64) -> Record {
        Record {
            kind: Some(record::Kind::Item(ItemRec {
                user: crate::state::home::Phone::parse("+15550000001"),
                id,
                frame: vec![1, 2, 3],
                sender: crate::state::home::Phone::parse("+15550000002"),
                client_msg_id: id,
                group_id: 0,
                sender_device: 0,
            })),
        }
    }

    fn removed(id: u64) -> Record {
        Record {
            kind: Some(record::Kind::Removed(RemovedRec {
                user: crate::state::home::Phone::parse("+15550000001"),
                id,
            })),
        }
    }

    fn push(phone: &str) -> AfterCommit {
        AfterCommit::Effect(Effect::Push {
            phone: phone.into(),
            user_id: 0,
        })
    }

    fn phones(after: &[AfterCommit]) -> Vec<String> {
        after
            .iter()
            .map(|a| match a {
                AfterCommit::Effect(Effect::Push { phone, .. }) => phone.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    fn encoded(ids: &[u64]) -> Vec<u8> {
        encoded_records(&ids.iter().map(|&id| rec(id)).collect::<Vec<_>>())
    }

    fn encoded_records(records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            crate::durable::record::encode(r, &mut out);
        }
        out
    }

    fn append_bytes(job: Option<Job<File>>) -> Vec<u8> {
        match job {
            Some(Job::Append(File, bytes)) => bytes,
            _ => panic!("expected an append"),
        }
    }

    #[test]
    fn effects_wait_for_their_batch_and_batches_group() {
        let mut j = Journal::new(0);
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
        j.opened(File, 0);
        assert_eq!(append_bytes(j.next_append()), encoded(&[1, 2]));
        assert_eq!(phones(&j.finished(File, 10, Outcome::Appended)), ["b", "c"]);
        assert_eq!(j.commits(), 1);
    }

    /// Issue 27: the adapter's lists come back empty with their room, except effects that
    /// need not wait, which stay for it to release.
    #[test]
    fn add_from_empties_the_callers_lists_and_leaves_what_need_not_wait() {
        let mut j = Journal::new(0);
        let (mut records, mut after) = (Vec::with_capacity(4), Vec::with_capacity(4));
        after.push(push("now"));
        assert!(
            j.add_from(&mut records, &mut after),
            "nothing pending: goes at once"
        );
        assert_eq!(phones(&after), ["now"]);
        after.clear();
        records.push(rec(1));
        after.push(push("waits"));
        assert!(!j.add_from(&mut records, &mut after));
        assert!(records.is_empty() && after.is_empty());
        assert!(
            records.capacity() >= 4 && after.capacity() >= 4,
            "room kept"
        );
        j.opened(File, 0);
        assert_eq!(append_bytes(j.next_append()), encoded(&[1]));
        assert_eq!(phones(&j.finished(File, 10, Outcome::Appended)), ["waits"]);
    }

    #[test]
    fn a_failed_append_keeps_its_batch_in_front_and_releases_nothing_until_retried() {
        let mut j = Journal::new(0);
        j.opened(File, 0);
        j.add(vec![rec(1)], vec![push("first")]);
        assert_eq!(append_bytes(j.next_append()), encoded(&[1]));
        // While it is in flight the next batch gathers.
        j.add(vec![rec(2)], vec![push("second")]);
        assert!(j.finished(File, 0, Outcome::AppendFailed).is_empty());
        assert_eq!(j.failures(), 1);
        assert_eq!(j.pending_bytes(), encoded(&[1, 2]).len());
        // Retry scheduled: no job, and an effect without records must wait too.
        assert!(j.schedule_retry());
        assert!(!j.schedule_retry(), "one retry at a time");
        assert!(j.next_append().is_none());
        assert!(j.add(vec![], vec![push("third")]).is_empty());
        assert!(j.take_unblocked().is_empty());
        j.retry_due();
        assert_eq!(
            append_bytes(j.next_append()),
            encoded(&[1, 2]),
            "the failed batch first, in order"
        );
        assert_eq!(
            phones(&j.finished(File, 20, Outcome::Appended)),
            ["first", "second", "third"]
        );
        assert_eq!(j.pending_bytes(), 0);
    }

    #[test]
    fn a_compaction_that_failed_before_its_rename_appends_the_batch_as_usual() {
        let mut j = Journal::new(0);
        j.opened(File, 0);
        j.add(vec![rec(1)], vec![push("a")]);
        assert!(j.compaction_due(1000, 0));
        let Some(Job::Compact(File, _)) = j.start_compaction(1000, vec![0; 10]) else {
            panic!("expected a compaction");
        };
        assert!(j.finished(File, 1000, Outcome::NotCompacted).is_empty());
        j.retry_due();
        assert_eq!(append_bytes(j.next_append()), encoded(&[1]));
        assert_eq!(phones(&j.finished(File, 1010, Outcome::Appended)), ["a"]);
    }

    #[test]
    fn a_compaction_renamed_but_not_durable_owes_a_sync_before_anything_is_released() {
        let mut j = Journal::new(0);
        j.opened(File, 0);
        j.add(vec![rec(1)], vec![push("in-snapshot")]);
        assert!(j.compaction_due(1000, 0));
        assert!(j.start_compaction(1000, vec![0; 10]).is_some());
        assert!(j
            .finished(File, 10, Outcome::CompactedNotDurable)
            .is_empty());
        assert_eq!(j.pending_bytes(), 0, "the snapshot holds the batch");
        // Effects with no records of their own still wait for the owed sync.
        assert!(j.add(vec![], vec![push("later")]).is_empty());
        assert!(j.take_unblocked().is_empty());
        assert!(
            !j.compaction_due(10_000, 0),
            "no compaction while a sync is owed"
        );
        j.retry_due();
        assert_eq!(
            append_bytes(j.next_append()),
            Vec::<u8>::new(),
            "a sync-only job: nothing rewritten"
        );
        assert_eq!(
            phones(&j.finished(File, 10, Outcome::Appended)),
            ["in-snapshot", "later"]
        );
        assert_eq!(j.add(vec![], vec![push("now")]).len(), 1, "nothing owed");
    }

    #[test]
    fn compaction_is_tried_when_the_log_doubles_or_the_queues_drain_and_only_if_it_pays() {
        let mut j: Journal<File> = Journal::new(100);
        j.opened(File, 0);
        assert!(!j.compaction_due(50, 0), "below the minimum");
        assert!(j.compaction_due(200, 40));
        assert!(!j.compaction_due(300, 40), "neither doubled nor drained");
        assert!(
            j.compaction_due(300, 9),
            "queues drained to under a quarter"
        );
        assert!(
            j.start_compaction(300, vec![0; 100]).is_none(),
            "a snapshot over a quarter of the log is not worth it"
        );
        assert!(j.start_compaction(400, vec![0; 100]).is_some());
    }

    #[test]
    fn an_item_acked_before_its_batch_left_costs_no_write_and_no_tombstone() {
        let mut j = Journal::new(0);
        j.opened(File, 0);
        j.add(vec![item(1), item(2)], vec![push("a")]);
        j.add(vec![removed(1)], vec![]);
        assert_eq!(j.skipped_items(), 1);
        assert_eq!(j.pending_bytes(), encoded_records(&[item(2)]).len());
        assert_eq!(
            append_bytes(j.next_append()),
            encoded_records(&[item(2)]),
            "item 1 and its tombstone are gone; item 2 stays"
        );
        // Both acked before anything was written: nothing to write, nothing to wait for.
        j.finished(File, 10, Outcome::Appended);
        j.add(vec![item(3)], vec![push("b")]);
        assert!(j.take_unblocked().is_empty());
        j.add(vec![removed(3)], vec![]);
        assert!(!j.append_due(), "nothing left to write");
        assert_eq!(phones(&j.take_unblocked()), ["b"]);
    }

    #[test]
    fn the_frames_of_items_cancelled_or_appended_are_handed_back_at_most_the_cap() {
        let mut j = Journal::new(0);
        j.opened(File, 0);
        j.add(vec![item(1), item(2)], vec![]);
        j.add(vec![removed(1)], vec![]);
        assert_eq!(j.spare_frames().count(), 1, "the cancelled item's");
        assert!(j.next_append().is_some());
        assert_eq!(j.spare_frames().count(), 0, "item 2's is in flight");
        j.finished(File, 10, Outcome::Appended);
        let frames: Vec<Vec<u8>> = j.spare_frames().collect();
        assert!(
            matches!(&frames[..], [f] if f.capacity() >= 3),
            "and once appended"
        );
        let ids = 10..10 + SPARE_FRAMES_MAX as u64 + 5;
        j.add(ids.clone().map(item).collect(), vec![]);
        j.add(ids.map(removed).collect(), vec![]);
        assert_eq!(j.spare_frames().count(), SPARE_FRAMES_MAX);
    }

    #[test]
    fn the_list_of_released_effects_gathers_the_batch_after_next() {
        let mut j = Journal::new(0);
        j.opened(File, 0);
        j.add(vec![item(1)], vec![push("a"), push("b")]);
        assert!(j.next_append().is_some());
        let mut released = j.finished(File, 10, Outcome::Appended);
        assert_eq!(phones(&released), ["a", "b"]);
        released.clear();
        let room = released.as_ptr();
        j.keep_after(released);
        j.add(vec![item(2)], vec![push("c")]);
        assert!(j.next_append().is_some());
        j.add(vec![item(3)], vec![push("d")]);
        assert_eq!(j.pending_after.as_ptr(), room, "no new list for it");
        // A list grown past the cap is not kept.
        j.keep_after(Vec::with_capacity(SPARE_AFTER_MAX + 1));
        assert_eq!(j.spare_after.capacity(), 0);

        // Effects released with nothing to write (their item acked first) hand theirs back
        // too: two lists take turns.
        let mut j = Journal::new(0);
        j.opened(File, 0);
        let mut first = None;
        for id in 5..8 {
            j.add(vec![item(id)], vec![push("e")]);
            if id == 7 {
                assert_eq!(
                    Some(j.pending_after.as_ptr()),
                    first,
                    "the first list again"
                );
            }
            j.add(vec![removed(id)], vec![]);
            let mut unblocked = j.take_unblocked();
            assert_eq!(phones(&unblocked), ["e"]);
            unblocked.clear();
            first = first.or(Some(unblocked.as_ptr()));
            j.keep_after(unblocked);
            // Nothing released, no room: the kept list stays.
            let none = j.take_unblocked();
            j.keep_after(none);
        }
    }

    #[test]
    fn tombstones_of_written_items_ride_on_the_next_batch_or_a_requested_flush() {
        let mut j = Journal::new(0);
        j.opened(File, 0);
        j.add(vec![item(1)], vec![]);
        assert!(j.next_append().is_some());
        // Acked while its record is in flight: the tombstone is needed, but lazy.
        j.add(vec![removed(1)], vec![]);
        j.finished(File, 10, Outcome::Appended);
        assert!(j.lazy_waiting());
        assert_eq!(
            j.add(vec![], vec![push("now")]).len(),
            1,
            "nothing waits for a lazy tombstone"
        );
        assert!(!j.append_due(), "a tombstone alone starts no job");
        j.add(vec![rec(5)], vec![]);
        assert_eq!(
            append_bytes(j.next_append()),
            encoded_records(&[rec(5), removed(1)]),
            "it rides on the next batch"
        );
        j.finished(File, 20, Outcome::Appended);
        j.add(vec![removed(9)], vec![]);
        assert!(!j.append_due());
        j.request_lazy_flush();
        assert_eq!(
            append_bytes(j.next_append()),
            encoded_records(&[removed(9)])
        );
    }

    fn compact_bytes(job: Option<Job<File>>) -> Vec<u8> {
        match job {
            Some(Job::Compact(File, bytes)) => bytes,
            _ => panic!("expected a compaction"),
        }
    }

    #[test]
    fn a_snapshot_built_during_appends_is_followed_by_every_batch_appended_since_it_began() {
        let mut j = Journal::new(0);
        j.opened(File, 0);
        // In flight when the snapshot begins: the state the snapshot reads already holds it.
        j.add(vec![rec(1)], vec![]);
        assert!(j.compaction_due(1000, 0));
        assert!(j.next_append().is_some());
        j.snapshot_began();
        assert!(!j.compaction_due(1_000_000, 0), "one snapshot at a time");
        j.add(vec![rec(2)], vec![push("two")]);
        j.finished(File, 10, Outcome::Appended);
        assert_eq!(j.trailing_bytes(), 0, "began before the snapshot");
        // Appended during the snapshot: kept. A failed append is kept once, when it lands.
        assert!(j.next_append().is_some());
        assert!(j.finished(File, 10, Outcome::AppendFailed).is_empty());
        assert_eq!(j.trailing_bytes(), 0, "nothing of a failed append");
        j.schedule_retry();
        assert!(!j.can_compact(), "not while a retry waits");
        j.retry_due();
        j.add(vec![rec(3)], vec![]);
        assert_eq!(append_bytes(j.next_append()), encoded(&[2, 3]));
        assert!(!j.can_compact(), "not while an append is in flight");
        assert_eq!(phones(&j.finished(File, 20, Outcome::Appended)), ["two"]);
        assert_eq!(j.trailing_bytes(), encoded(&[2, 3]).len());
        // Pending at the switch: written after them, and held in case it fails.
        j.add(vec![rec(4)], vec![push("four")]);
        assert!(j.can_compact());
        let mut want = b"SNAPSHOT".to_vec();
        want.extend(encoded(&[2, 3, 4]));
        assert_eq!(
            compact_bytes(j.start_compaction(1000, b"SNAPSHOT".to_vec())),
            want
        );
        assert!(j.finished(File, 40, Outcome::NotCompacted).is_empty());
        j.retry_due();
        assert_eq!(
            append_bytes(j.next_append()),
            encoded(&[4]),
            "a failed compaction appends what it held to the old log"
        );
        assert_eq!(phones(&j.finished(File, 50, Outcome::Appended)), ["four"]);
        assert_eq!(j.trailing_bytes(), 0, "the snapshot is over");
    }

    #[test]
    fn a_snapshot_that_would_not_pay_is_dropped_with_what_it_kept() {
        let mut j = Journal::new(0);
        j.opened(File, 0);
        j.snapshot_began();
        j.add(vec![rec(1)], vec![]);
        assert!(j.next_append().is_some());
        j.finished(File, 10, Outcome::Appended);
        assert!(j.trailing_bytes() > 0);
        assert!(j.start_compaction(100, vec![0; 30]).is_none());
        assert_eq!(j.trailing_bytes(), 0);
        assert!(j.compaction_due(1000, 0), "another may begin");
    }

    #[test]
    fn after_a_snapshot_that_did_not_pay_another_is_tried_once_the_queues_shrink_enough() {
        let mut j: Journal<File> = Journal::new(0);
        j.opened(File, 0);
        assert!(j.compaction_due(1000, 400));
        j.snapshot_began();
        assert!(
            j.start_compaction(1000, vec![0; 300]).is_none(),
            "300 B of 1,000 does not pay"
        );
        // Neither doubled nor drained to a quarter: only the estimate can call it.
        assert!(
            !j.compaction_due(1100, 300),
            "300 items of 300 B each would not pay"
        );
        assert!(
            !j.compaction_due(1100, 400),
            "no less queued than when it began"
        );
        assert!(
            j.compaction_due(1100, 200),
            "200 items: ~150 B, pays with room"
        );
        j.snapshot_began();
        assert!(
            j.start_compaction(1100, vec![0; 300]).is_none(),
            "it did not"
        );
        assert!(
            !j.compaction_due(1100, 190),
            "each try needs a fifth less queued than the last"
        );
        assert!(j.compaction_due(1100, 100));
        j.snapshot_began();
        assert!(j.start_compaction(1100, vec![0; 100]).is_some());
    }
}

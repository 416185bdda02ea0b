//! The commit driver: when a shard's journal job starts (an append after the commit window,
//! at once when its records already waited, or a compaction once a snapshot is built), the
//! job itself on the shard's ring, and what its outcome releases. The bookkeeping (what is
//! pending, in flight, durable; retries) is the core's `Journal`; this module runs it on the
//! engine. It owns no rule of the service and no socket.

use std::path::PathBuf;
use std::sync::Arc;

use engine::log_file::{LogFaults, ReplaceError};
use engine::{LogFile, ShardHandle, ShardIo};

use messaging::durable::journal::{Job, Outcome};
use messaging::durable::record;

use super::{ServiceTimer, SnapshotBuild, Switchboard, COMMIT_RETRY_MS};

impl Switchboard {
    /// Starts the next log job if one is due and none is running: a compaction when a
    /// snapshot is ready and worth it (and starts building one when the policy says so);
    /// else an append, at once (`Start::Now`: its records waited for a job in
    /// flight, or its window ended) or after the commit window; and sets the tombstone
    /// flush timer when tombstones have nothing else to ride on.
    pub(super) fn kick(&mut self, io: &mut ShardIo<Self>, start: Start) {
        let mut unblocked = self.journal.take_unblocked();
        self.release(io, unblocked.drain(..));
        self.journal.keep_after(unblocked);
        if let Some(job) = self.compaction_job(io) {
            return io.spawn(run_job(io.handle(), job));
        }
        if self.journal.append_due() {
            let wait = start == Start::AfterWindow && !self.env.commit_window.is_zero();
            if !wait {
                if let Some(job) = self.journal.next_append() {
                    io.spawn(run_job(io.handle(), job));
                }
            } else if !self.window_armed {
                self.window_armed = true;
                io.spawn(commit_window(io.handle(), self.env.commit_window));
            }
        } else if self.journal.lazy_waiting() && !self.tombstone_timer_set {
            // A full timer wheel leaves it unset: the next kick tries again, and the
            // tombstones ride on the next batch meanwhile.
            let at = io.now_ms() + messaging::state::limits::TOMBSTONE_FLUSH_MS;
            self.tombstone_timer_set = io.set_timer(at, ServiceTimer::FlushTombstones).is_ok();
        }
    }

    /// A compaction, when a finished snapshot waits and the log is free; otherwise, when
    /// the journal's policy says the log is worth compacting, starts building a snapshot
    /// in slices (the log keeps taking appends meanwhile).
    fn compaction_job(&mut self, io: &mut ShardIo<Self>) -> Option<Job<LogFile>> {
        let len = self.journal.file()?.len();
        if self.snapshot_ready.is_some() {
            if !self.journal.can_compact() {
                return None;
            }
            let bytes = self.snapshot_ready.take()?;
            return self.journal.start_compaction(len, bytes);
        }
        if self.snapshot.is_some() {
            return None;
        }
        let queued_bytes = self.state().queues().bytes();
        if !self.journal.compaction_due(len, queued_bytes) {
            return None;
        }
        // A snapshot that pays is at most a quarter of the log: room for it (up to 1 GiB),
        // so the buffer never moves while it fills (its pages are touched only as it does).
        let room = (len / messaging::state::limits::COMPACT_GARBAGE_RATIO).min(1 << 30);
        let mut bytes = Vec::with_capacity(room as usize);
        let walk = self
            .state()
            .begin_snapshot(&mut |r| record::encode_counted(&r, &mut bytes));
        self.journal.snapshot_began();
        self.snapshot = Some(SnapshotBuild { walk, bytes });
        io.spawn(build_snapshot(io.handle()));
        None
    }

    /// One slice of the snapshot under way; true when it is finished (then the
    /// compaction starts as soon as the log is free).
    fn snapshot_slice(&mut self, io: &mut ShardIo<Self>) -> bool {
        let Some(mut build) = self.snapshot.take() else {
            return true;
        };
        self.snapshot_slices += 1;
        let state = self.state.as_mut().expect("state loaded in on_start");
        let done = state.snapshot_step(
            &mut build.walk,
            messaging::state::limits::SNAPSHOT_SLICE_BYTES,
            &mut |r| record::encode_counted(&r, &mut build.bytes),
        );
        if !done {
            self.snapshot = Some(build);
            return false;
        }
        self.snapshots += 1;
        tracing::debug!(
            shard = io.shard_id().0,
            bytes = build.bytes.len(),
            slices = build.walk.slices,
            trailing = self.journal.trailing_bytes(),
            "snapshot built"
        );
        self.snapshot_ready = Some(build.bytes);
        self.kick(io, Start::Now);
        true
    }

    pub(super) fn job_done(&mut self, io: &mut ShardIo<Self>, done: JobDone) {
        let JobDone {
            file,
            outcome,
            error,
            took,
        } = done;
        self.latency.record_sync(took);
        self.log_bytes = file.len();
        let shard = io.shard_id().0;
        if let Some(e) = &error {
            tracing::error!(
                shard,
                ?outcome,
                "log job failed; nothing waiting on it is acknowledged; retrying: {e}"
            );
        }
        if outcome == Outcome::Compacted {
            tracing::info!(shard, bytes = file.len(), "log compacted");
        }
        let len = file.len();
        let mut released = self.journal.finished(file, len, outcome);
        self.frames_to_state();
        self.release(io, released.drain(..));
        self.journal.keep_after(released);
        if outcome.durable() {
            self.kick(io, Start::Now);
        } else if self.journal.schedule_retry() {
            let _ = io.set_timer(io.now_ms() + COMMIT_RETRY_MS, ServiceTimer::RetryCommit);
        }
    }
}

/// When a due append may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// Now: its records already waited (for a job in flight, a window, a retry).
    Now,
    /// After the commit window, so that more records (and acks that cancel them) gather.
    AfterWindow,
}

/// Ends the commit window: the gathered batch starts.
async fn commit_window(handle: ShardHandle<Switchboard>, window: std::time::Duration) {
    engine::sleep(window).await;
    handle.with(|svc, io| {
        svc.window_armed = false;
        svc.kick(io, Start::Now);
    });
}

/// Builds the compaction snapshot, one slice per loop turn, so frames and completions are
/// handled between any two slices.
async fn build_snapshot(handle: ShardHandle<Switchboard>) {
    loop {
        engine::yield_turn().await;
        // None: the shard is gone (shutdown).
        if handle
            .with(|svc, io| svc.snapshot_slice(io))
            .unwrap_or(true)
        {
            return;
        }
    }
}

/// A finished log job, back on the shard.
pub(super) struct JobDone {
    file: LogFile,
    outcome: Outcome,
    error: Option<String>,
    took: std::time::Duration,
}

async fn run_job(handle: ShardHandle<Switchboard>, job: Job<LogFile>) {
    let started = std::time::Instant::now();
    let (file, outcome, error) = match job {
        Job::Append(mut file, bytes) => match file.append_sync(bytes).await {
            Ok(()) => (file, Outcome::Appended, None),
            Err(e) => (file, Outcome::AppendFailed, Some(e.to_string())),
        },
        Job::Compact(mut file, bytes) => match file.replace_with(bytes).await {
            Ok(()) => (file, Outcome::Compacted, None),
            Err(e @ ReplaceError::NotReplaced(_)) => {
                (file, Outcome::NotCompacted, Some(e.to_string()))
            }
            Err(e @ ReplaceError::NotDurable(_)) => {
                (file, Outcome::CompactedNotDurable, Some(e.to_string()))
            }
            Err(e) => (file, Outcome::NotCompacted, Some(e.to_string())),
        },
    };
    let done = JobDone {
        file,
        outcome,
        error,
        took: started.elapsed(),
    };
    handle.with(|svc, io| svc.job_done(io, done));
}

pub(super) async fn open_log(
    handle: ShardHandle<Switchboard>,
    path: PathBuf,
    faults: Option<Arc<LogFaults>>,
) {
    match LogFile::open_with(&path, faults).await {
        Ok(file) => {
            handle.with(|svc, io| {
                svc.log_bytes = file.len();
                svc.journal.opened(file, svc.replayed_len);
                svc.kick(io, Start::Now);
            });
        }
        // Without its log a shard cannot acknowledge anything: stop loudly.
        Err(e) => panic!("cannot open the shard log: {e}"),
    }
}

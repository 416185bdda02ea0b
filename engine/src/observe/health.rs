//! Liveness and readiness, for `/healthz` and `/readyz`.
//!
//! A shard that dies (panics: an engine or service bug) marks itself dead from its panic
//! hook before the process exits (`runtime`, fail-fast), so `/readyz` never says ready
//! with a shard gone, and `/healthz` says 503 too.
//!
//! Ready means: every shard has run its service's `on_start` (for Switchboard: the log is
//! replayed) and attached its accept loop to its already-bound listener, and the runtime is
//! not stopping. Each shard marks itself started once, from its own thread, after both; the
//! admin thread reads the count. One atomic add per shard per process life: nothing here is
//! on the per-frame path.
//!
//! This module holds no shard state; it must not be written from a frame callback.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// What the service adds to a ready `/readyz` (e.g. "alone: the cluster is unreachable"),
/// asked at each request; `None` adds nothing.
pub struct ReadyNote(pub Box<dyn Fn() -> Option<String> + Send + Sync>);

impl std::fmt::Debug for ReadyNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadyNote")
    }
}

/// Why the server is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotReady {
    /// Some shards have not finished starting (replaying their log).
    #[error("starting: {started} of {shards} shards ready")]
    Starting {
        /// Shards that finished starting.
        started: usize,
        /// Shards in all.
        shards: usize,
    },
    /// The stop flag is set: the server is draining.
    #[error("shutting down")]
    ShuttingDown,
    /// A shard thread died (a bug); the process is on its way out.
    #[error("shard {shard} died")]
    ShardDied {
        /// The first shard that died.
        shard: usize,
    },
}

/// What the shards report about their start and the runtime about its stop.
#[derive(Debug)]
pub struct Health {
    shards: usize,
    started: AtomicUsize,
    /// 1 + the first shard that died, or 0.
    died: AtomicUsize,
    stop: Arc<AtomicBool>,
    /// Set once, after start, by a service with something to say when ready.
    note: OnceLock<ReadyNote>,
}

impl Health {
    /// Health of a runtime of `shards` shards stopped by `stop`.
    pub fn new(shards: usize, stop: Arc<AtomicBool>) -> Self {
        Health {
            shards,
            started: AtomicUsize::new(0),
            died: AtomicUsize::new(0),
            stop,
            note: OnceLock::new(),
        }
    }

    /// Sets what a ready `/readyz` adds (once; a second call is ignored).
    pub fn set_note(&self, note: ReadyNote) {
        let _ = self.note.set(note);
    }

    /// What a ready `/readyz` adds now.
    pub fn note(&self) -> Option<String> {
        self.note.get().and_then(|n| (n.0)())
    }

    /// One shard finished starting (called once per shard).
    pub(crate) fn shard_started(&self) {
        // Once per shard, at start: shared with the admin thread that answers /readyz.
        #[allow(clippy::disallowed_methods)]
        let before = self.started.fetch_add(1, Ordering::Release);
        assert!(before < self.shards, "a shard started twice");
    }

    /// Shard `shard` died (called from its thread as it panics): never ready again.
    pub(crate) fn shard_died(&self, shard: usize) {
        // Once, from a dying shard's panic hook: never on the per-frame path.
        #[allow(clippy::disallowed_methods)]
        let _ = self
            .died
            .compare_exchange(0, shard + 1, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The first shard that died, if any.
    pub fn dead_shard(&self) -> Option<usize> {
        self.died.load(Ordering::Acquire).checked_sub(1)
    }

    /// Ready to take traffic, or why not.
    pub fn ready(&self) -> Result<(), NotReady> {
        if let Some(shard) = self.dead_shard() {
            return Err(NotReady::ShardDied { shard });
        }
        if self.stop.load(Ordering::Relaxed) {
            return Err(NotReady::ShuttingDown);
        }
        let started = self.started.load(Ordering::Acquire);
        if started < self.shards {
            return Err(NotReady::Starting {
                started,
                shards: self.shards,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_between_every_start_and_the_stop() {
        let stop = Arc::new(AtomicBool::new(false));
        let h = Health::new(2, stop.clone());
        assert_eq!(
            h.ready(),
            Err(NotReady::Starting {
                started: 0,
                shards: 2
            })
        );
        h.shard_started();
        assert!(h.ready().is_err());
        h.shard_started();
        assert_eq!(h.ready(), Ok(()));
        stop.store(true, Ordering::Relaxed);
        assert_eq!(h.ready(), Err(NotReady::ShuttingDown));
    }

    #[test]
    fn never_ready_once_a_shard_died() {
        let h = Health::new(2, Arc::new(AtomicBool::new(false)));
        h.shard_started();
        h.shard_started();
        assert_eq!(h.ready(), Ok(()));
        h.shard_died(1);
        h.shard_died(0);
        assert_eq!(h.ready(), Err(NotReady::ShardDied { shard: 1 }));
        assert_eq!(h.dead_shard(), Some(1), "the first death is the one told");
    }
}

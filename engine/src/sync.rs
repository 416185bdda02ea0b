//! The one door to locks in the engine and the service: a `Mutex` that counts every
//! acquisition in a per-thread counter, so a shard can report how many locks its own thread
//! took (`locks_taken` in its statistics) and a test can assert that steady-state routing
//! takes none.
//!
//! Rules, and why they hold:
//! - `clippy.toml` bans `std::sync::Mutex` and `std::sync::RwLock` across the workspace; this
//!   module is the only place allowed to name them, so a lock anyone adds to engine or service
//!   code goes through [`Mutex::lock`] and is counted.
//! - The counter is a `thread_local` `Cell<u64>`: counting costs one non-atomic increment and
//!   shares nothing between threads. A shard reads its own count when it publishes its
//!   statistics; the admin thread's locks land in the admin thread's count, never a shard's.
//!
//! What it cannot see: locks taken inside dependencies (rustls, crossbeam, the
//! allocator, `std` itself — `std::sync::mpsc`, stdout, the environment) and atomic
//! read-modify-writes. Those are covered, as far as they are, by `tests/engine_no_locks.rs`
//! (no lock types and no atomic RMW in the hot-path modules) and by reading the dependency.
//!
//! This module owns the counter; it must not be used on the per-frame path at all.

use std::cell::Cell;

thread_local! {
    static LOCKS_TAKEN: Cell<u64> = const { Cell::new(0) };
}

/// Locks the calling thread has taken through this module since it started.
pub fn locks_taken() -> u64 {
    LOCKS_TAKEN.with(Cell::get)
}

fn count_one() {
    LOCKS_TAKEN.with(|c| c.set(c.get() + 1));
}

/// A mutual-exclusion lock whose every acquisition is counted for the calling thread.
/// Poisoning is ignored: the data behind these locks (statistics, settings) stays valid if a
/// holder panicked.
#[derive(Debug, Default)]
pub struct Mutex<T> {
    #[allow(clippy::disallowed_types)] // the one sanctioned lock: counted below
    inner: std::sync::Mutex<T>,
}

/// Access to a [`Mutex`]'s value; the lock is released when this is dropped.
#[allow(clippy::disallowed_types)] // the guard of the sanctioned lock
pub type MutexGuard<'a, T> = std::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    /// A new unlocked mutex.
    pub const fn new(value: T) -> Self {
        #[allow(clippy::disallowed_types)]
        Mutex {
            inner: std::sync::Mutex::new(value),
        }
    }

    /// Blocks until the lock is held; counts one acquisition for this thread.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        count_one();
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value, without locking (the mutex is consumed).
    pub fn into_inner(self) -> T {
        self.inner.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_counts_only_its_own_acquisitions() {
        let m = std::sync::Arc::new(Mutex::new(0u32));
        let before = locks_taken();
        *m.lock() += 1;
        *m.lock() += 1;
        assert_eq!(locks_taken() - before, 2);
        let m2 = m.clone();
        let other = std::thread::spawn(move || {
            for _ in 0..5 {
                *m2.lock() += 1;
            }
            locks_taken()
        })
        .join()
        .unwrap();
        assert_eq!(other, 5, "a fresh thread starts at zero and counts its own");
        assert_eq!(
            locks_taken() - before,
            2,
            "the other thread's locks are not ours"
        );
        assert_eq!(*m.lock(), 7);
    }
}

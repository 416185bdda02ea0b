//! A counting global allocator for the memory tools (`conn-bytes`, `tls-session-bytes`):
//! live heap bytes and live allocations per 16-byte size class, exact, free of the
//! fragmentation an RSS delta also sees. A binary installs it with
//! `#[global_allocator] static GLOBAL: perf::counting_alloc::Counting = Counting;`.
//!
//! Threads count by default; a thread whose allocations are not the subject (the clients
//! of an in-process server) calls [`not_counted`]. The bookkeeping never allocates (atomics
//! and a const-initialised thread-local), and everything is forwarded to the system
//! allocator unchanged.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

/// Size classes are this many bytes wide, up to 4 KiB; one more class holds larger blocks.
pub const CLASS_BYTES: usize = 16;
/// Number of size classes.
pub const CLASSES: usize = 4096 / CLASS_BYTES + 1;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_BY_CLASS: [AtomicIsize; CLASSES] = [const { AtomicIsize::new(0) }; CLASSES];

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(true) };
}

/// Stops counting this thread's allocations (and frees).
pub fn not_counted() {
    COUNTED.with(|c| c.set(false));
}

/// The size class of a request of `size` bytes.
pub fn class_of(size: usize) -> usize {
    (size.saturating_sub(1) / CLASS_BYTES).min(CLASSES - 1)
}

/// The requested sizes a class covers, for printing ("481–496", "> 4096").
pub fn class_range(class: usize) -> String {
    if class == CLASSES - 1 {
        return "> 4096".into();
    }
    let hi = (class + 1) * CLASS_BYTES;
    format!("{}–{}", hi - CLASS_BYTES + 1, hi)
}

/// Live bytes and live allocations per class, counted threads only.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Live requested bytes.
    pub bytes: isize,
    /// Live allocations per size class.
    pub by_class: Vec<isize>,
}

impl Snapshot {
    /// Now.
    pub fn take() -> Snapshot {
        Snapshot {
            bytes: LIVE_BYTES.load(Ordering::Relaxed),
            by_class: LIVE_BY_CLASS
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
        }
    }

    /// Live allocations in all classes.
    pub fn allocations(&self) -> isize {
        self.by_class.iter().sum()
    }
}

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

fn count(size: usize, sign: isize) {
    LIVE_BYTES.fetch_add(sign * size as isize, Ordering::Relaxed);
    LIVE_BY_CLASS[class_of(size)].fetch_add(sign, Ordering::Relaxed);
}

/// The allocator. A block freed on another thread than the one that made it is counted
/// where it is freed, so measure work whose blocks stay on their threads (shards do).
pub struct Counting;

// SAFETY: forwards to the system allocator unchanged; only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            count(layout.size(), 1);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if counted() {
            count(layout.size(), 1);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            count(layout.size(), -1);
        }
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            count(layout.size(), -1);
            count(new_size, 1);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_sizes_in_16_byte_steps() {
        assert_eq!(class_of(1), 0);
        assert_eq!(class_of(16), 0);
        assert_eq!(class_of(17), 1);
        assert_eq!(class_range(class_of(490)), "481–496");
        assert_eq!(class_of(1 << 20), CLASSES - 1);
        assert_eq!(class_range(CLASSES - 1), "> 4096");
    }
}

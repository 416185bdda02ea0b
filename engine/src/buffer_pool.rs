//! The per-shard frame-buffer allocator: fixed-size buffers carved from one arena mapped at
//! shard start, optionally backed by huge pages.
//!
//! ## What it owns
//! One [`BufferPool`] per shard owns one anonymous memory mapping (the arena) cut into `count`
//! buffers of `buf_bytes` each, plus the free list of their indices. A connection holds a
//! buffer ([`PoolBuf`]) only while it has bytes to read or write, never while idle, so the
//! pool's size bounds the shard's frame memory however many connections it holds.
//!
//! ## What it must not touch
//! No ring, no locks, no atomics, no file I/O: just `mmap`/`madvise`/`munmap` on its own
//! arena. It is single-threaded: [`BufferPool`] and [`PoolBuf`] are neither `Send` nor `Sync`,
//! so a buffer can never leave the shard whose pool made it.
//!
//! ## Capacity and lifecycle
//! - [`BufferPool::new`] maps the whole arena up front; after that no call allocates.
//!   Anonymous memory starts zeroed and pages are faulted in on first touch.
//! - [`BufferPool::take`] pops a free index in O(1), or returns `None` when every buffer is in
//!   use (counted by [`BufferPool::exhausted_count`]: the caller should treat it as overload and
//!   shed work, not wait). Buffers come back with stale contents: read only what you wrote.
//! - [`BufferPool::give_back`] pushes the index back in O(1). A [`PoolBuf`] is neither `Clone`
//!   nor `Copy` and `give_back` consumes it, so the same buffer cannot be given back twice in
//!   safe code; a buffer from another pool, or a forged duplicate, fails an `assert!`.
//! - A `PoolBuf` dropped without `give_back` leaks its slot (visible in
//!   [`BufferPool::in_use`]); it is never handed out again.
//! - Dropping the pool unmaps the arena, unless some `PoolBuf` is still out: then the arena is
//!   leaked instead, so a `PoolBuf` always points at mapped memory. This is what makes handing
//!   out raw-pointer buffers sound without tying them to a borrow of the pool (a borrow could
//!   not be held across an `.await` of a socket read).
//!
//! ## Huge pages
//! With [`HugePages::On`] the arena is rounded up to [`HUGE_PAGE_BYTES`] and mapped with
//! `MAP_HUGETLB` (2 MiB pages from the kernel's reserved pool: one TLB entry covers 512 normal
//! pages). That needs reserved pages, as root: `echo N > /proc/sys/vm/nr_hugepages` with `N` at
//! least the sum over shards of `arena bytes / 2 MiB` (check `HugePages_Free` in
//! `/proc/meminfo`). If that mapping fails (by default `nr_hugepages` is 0), the pool falls back
//! to a normal mapping aligned to 2 MiB plus `madvise(MADV_HUGEPAGE)` and reports
//! [`PoolBacking::TransparentHuge`]; that takes effect when
//! `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise`. If `madvise` fails
//! too, it reports [`PoolBacking::Normal`]. The caller logs the backing it got.

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::{self, NonNull};

/// Size of the huge pages the pool asks for (x86-64 and aarch64 with 4 KiB base pages).
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

/// Most buffers one pool may hold: indices are `u32`.
pub const POOL_BUFFERS_MAX: usize = u32::MAX as usize;

/// Largest arena one pool may map (a sanity bound on configuration, far above any shard's need).
pub const POOL_ARENA_BYTES_MAX: usize = 1 << 40;

/// `MAP_HUGE_2MB`: log2(2 MiB) in the mmap flags' huge-page-size field (Linux ABI, bits 26..32),
/// so a system whose default huge page is 1 GiB still gets 2 MiB pages.
const MAP_HUGE_2MB: libc::c_int = 21 << 26;

const _: () = assert!(HUGE_PAGE_BYTES == 1 << 21);
const _: () = assert!(POOL_ARENA_BYTES_MAX <= isize::MAX as usize - HUGE_PAGE_BYTES);

/// Whether the pool should ask for huge pages.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HugePages {
    /// Normal pages only.
    Off,
    /// `MAP_HUGETLB` if reserved pages exist, else transparent huge pages, else normal pages.
    On,
}

/// What actually backs the arena; the caller logs it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PoolBacking {
    /// Normal pages.
    Normal,
    /// Reserved 2 MiB pages from `/proc/sys/vm/nr_hugepages` (`MAP_HUGETLB`).
    HugeTlb,
    /// Normal mapping, 2 MiB aligned, advised with `MADV_HUGEPAGE`.
    TransparentHuge,
}

/// Why [`BufferPool::new`] could not build a pool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// `buf_bytes` or `count` is zero.
    #[error("buffer pool must not be empty: {count} buffers of {buf_bytes} bytes")]
    Empty {
        /// Requested buffer size.
        buf_bytes: usize,
        /// Requested buffer count.
        count: usize,
    },
    /// More than [`POOL_BUFFERS_MAX`] buffers or more than [`POOL_ARENA_BYTES_MAX`] bytes.
    #[error(
        "buffer pool too large: {count} buffers of {buf_bytes} bytes \
         (max {POOL_BUFFERS_MAX} buffers, {POOL_ARENA_BYTES_MAX} bytes)"
    )]
    TooLarge {
        /// Requested buffer size.
        buf_bytes: usize,
        /// Requested buffer count.
        count: usize,
    },
    /// The kernel refused the arena mapping.
    #[error("{op} of {len} bytes for the buffer pool arena failed: {source}")]
    Map {
        /// The call that failed.
        op: &'static str,
        /// Bytes asked for.
        len: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// One buffer taken from a [`BufferPool`]: exclusive access to `len()` bytes of its arena.
///
/// Dereferences to `[u8]`. Give it back with [`BufferPool::give_back`].
#[must_use = "a PoolBuf that is not given back leaks its pool slot"]
pub struct PoolBuf {
    /// Start of this buffer in the arena. Invariant: `ptr..ptr + len` is mapped for as long as
    /// this `PoolBuf` exists and no other live `PoolBuf` covers it.
    ptr: NonNull<u8>,
    len: usize,
    index: u32,
}

impl PoolBuf {
    /// The buffer's size in bytes (the pool's `buf_bytes`).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: pools hold buffers of at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer's index in its pool.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The buffer's bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: by the `ptr` invariant the range is mapped, readable and not aliased by any
        // other `PoolBuf`; anonymous memory is initialised (zero-filled) and every byte pattern
        // is a valid `u8`; the borrow of `self` bounds the slice's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The buffer's bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; the range is writable (PROT_WRITE) and `&mut self` makes
        // this the only live reference into it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Deref for PoolBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl DerefMut for PoolBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl fmt::Debug for PoolBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuf")
            .field("index", &self.index)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// A shard's pool of fixed-size frame buffers in one mmap'd arena.
pub struct BufferPool {
    /// Start of the arena: `map_len` bytes mapped read/write by `new`, unmapped by `drop`.
    base: NonNull<u8>,
    /// Bytes mapped (`buf_bytes * count`, rounded up to `HUGE_PAGE_BYTES` with huge pages).
    map_len: usize,
    /// Size of each buffer.
    buf_bytes: usize,
    /// Number of buffers; fixed for the pool's life.
    count: usize,
    /// Indices of free buffers, taken from the end (the most recently given back is reused
    /// first, while it is still in cache). Capacity `count`, never reallocated.
    free: Vec<u32>,
    /// `in_use[i]` while buffer `i` is out as a `PoolBuf`.
    in_use: Vec<bool>,
    /// Buffers out (`count - free.len()`).
    in_use_count: usize,
    /// `take` calls that found the pool empty.
    exhausted: u64,
    /// What backs the arena.
    backing: PoolBacking,
}

impl BufferPool {
    /// Maps an arena of `count` buffers of `buf_bytes` each and reports what backs it.
    ///
    /// With [`HugePages::On`] this never fails for want of huge pages: it falls back as the
    /// module doc describes. Errors: an empty or oversized request, or the kernel refusing even
    /// a normal mapping (out of address space or memory).
    pub fn new(
        buf_bytes: usize,
        count: usize,
        huge: HugePages,
    ) -> Result<(Self, PoolBacking), PoolError> {
        if buf_bytes == 0 || count == 0 {
            return Err(PoolError::Empty { buf_bytes, count });
        }
        let arena = buf_bytes
            .checked_mul(count)
            .filter(|bytes| *bytes <= POOL_ARENA_BYTES_MAX && count <= POOL_BUFFERS_MAX);
        let Some(arena) = arena else {
            return Err(PoolError::TooLarge { buf_bytes, count });
        };
        let (base, map_len, backing) = map_arena(arena, huge)?;
        let pool = BufferPool {
            base,
            map_len,
            buf_bytes,
            count,
            free: (0..count as u32).rev().collect(),
            in_use: vec![false; count],
            in_use_count: 0,
            exhausted: 0,
            backing,
        };
        Ok((pool, backing))
    }

    /// Takes a free buffer in O(1), or `None` (counted) when all are in use.
    pub fn take(&mut self) -> Option<PoolBuf> {
        let Some(index) = self.free.pop() else {
            self.exhausted += 1;
            return None;
        };
        let slot = index as usize;
        assert!(
            !self.in_use[slot],
            "free list holds buffer {index}, which is in use"
        );
        self.in_use[slot] = true;
        self.in_use_count += 1;
        Some(PoolBuf {
            ptr: self.buf_ptr(slot),
            len: self.buf_bytes,
            index,
        })
    }

    /// Returns a buffer taken from this pool, in O(1).
    ///
    /// Panics if `buf` came from another pool or is already free (a forged duplicate): either
    /// is a bug in the engine.
    pub fn give_back(&mut self, buf: PoolBuf) {
        let slot = buf.index as usize;
        assert!(
            slot < self.count && buf.len == self.buf_bytes && buf.ptr == self.buf_ptr(slot),
            "buffer {} given back to a pool it does not belong to",
            buf.index
        );
        assert!(self.in_use[slot], "buffer {} given back twice", buf.index);
        self.in_use[slot] = false;
        self.in_use_count -= 1;
        assert!(self.free.len() < self.count, "free list overflow");
        self.free.push(buf.index);
    }

    /// Buffers currently out.
    pub fn in_use(&self) -> usize {
        self.in_use_count
    }

    /// Buffers free right now.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Total buffers in the pool.
    pub fn capacity(&self) -> usize {
        self.count
    }

    /// Size of each buffer in bytes.
    pub fn buf_bytes(&self) -> usize {
        self.buf_bytes
    }

    /// How many `take` calls found the pool exhausted.
    pub fn exhausted_count(&self) -> u64 {
        self.exhausted
    }

    /// What backs the arena.
    pub fn backing(&self) -> PoolBacking {
        self.backing
    }

    /// Start of buffer `slot`. `slot` must be below `count`.
    fn buf_ptr(&self, slot: usize) -> NonNull<u8> {
        assert!(slot < self.count, "buffer index {slot} out of range");
        // SAFETY: `slot * buf_bytes < count * buf_bytes <= map_len`, so the offset stays inside
        // the arena mapping, one allocation that starts at `base`.
        unsafe { self.base.add(slot * self.buf_bytes) }
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        if self.in_use_count > 0 {
            // Outstanding PoolBufs still point into the arena: leak it rather than unmap
            // memory under them.
            return;
        }
        // SAFETY: `base`/`map_len` are exactly the mapping made in `new`, no `PoolBuf` points
        // into it (none is out), and the pool is being destroyed, so nothing uses it again.
        let rc = unsafe { libc::munmap(self.base.as_ptr().cast(), self.map_len) };
        assert!(
            rc == 0,
            "munmap of the buffer pool arena failed: {}",
            io::Error::last_os_error()
        );
    }
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("buf_bytes", &self.buf_bytes)
            .field("capacity", &self.count)
            .field("in_use", &self.in_use_count)
            .field("exhausted", &self.exhausted)
            .field("backing", &self.backing)
            .finish_non_exhaustive()
    }
}

/// Maps an arena of at least `len` bytes (`0 < len <= POOL_ARENA_BYTES_MAX`); returns its start,
/// its mapped length and its backing.
fn map_arena(len: usize, huge: HugePages) -> Result<(NonNull<u8>, usize, PoolBacking), PoolError> {
    assert!(
        len > 0 && len <= POOL_ARENA_BYTES_MAX,
        "arena length {len} unchecked"
    );
    if huge == HugePages::Off {
        let base = map_anonymous(len, 0).map_err(|source| PoolError::Map {
            op: "mmap",
            len,
            source,
        })?;
        return Ok((base, len, PoolBacking::Normal));
    }
    let len = len.next_multiple_of(HUGE_PAGE_BYTES);
    if let Ok(base) = map_anonymous(len, libc::MAP_HUGETLB | MAP_HUGE_2MB) {
        return Ok((base, len, PoolBacking::HugeTlb));
    }
    let base = map_aligned(len, HUGE_PAGE_BYTES)?;
    // SAFETY: `base..base + len` is a mapping this function just made; MADV_HUGEPAGE only
    // changes how the kernel backs it, never its contents.
    let rc = unsafe { libc::madvise(base.as_ptr().cast(), len, libc::MADV_HUGEPAGE) };
    let backing = if rc == 0 {
        PoolBacking::TransparentHuge
    } else {
        PoolBacking::Normal
    };
    Ok((base, len, backing))
}

/// A fresh private anonymous read/write mapping of `len` bytes with `extra_flags`.
fn map_anonymous(len: usize, extra_flags: libc::c_int) -> io::Result<NonNull<u8>> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags;
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: a new anonymous mapping at a kernel-chosen address (no MAP_FIXED) cannot overlap
    // memory Rust already uses; no file descriptor is involved.
    let addr = unsafe { libc::mmap(ptr::null_mut(), len, prot, flags, -1, 0) };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(addr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned address 0"))
}

/// A normal mapping of `len` bytes (a multiple of `align`) whose start is `align`-aligned:
/// maps `len + align` and unmaps the unaligned head and the tail.
fn map_aligned(len: usize, align: usize) -> Result<NonNull<u8>, PoolError> {
    assert!(
        align.is_power_of_two() && len & (align - 1) == 0,
        "bad alignment request"
    );
    let raw_len = len + align;
    let raw = map_anonymous(raw_len, 0).map_err(|source| PoolError::Map {
        op: "mmap",
        len: raw_len,
        source,
    })?;
    let head = raw.as_ptr().align_offset(align);
    assert!(head < align, "mmap result not page aligned");
    let tail = align - head;
    // SAFETY: `raw..raw + raw_len` is the mapping just made and nothing points into it yet;
    // unmapping its first `head` and last `tail` bytes (both page multiples, since `raw`
    // and `align` are page aligned) leaves exactly `raw + head .. raw + head + len` mapped.
    unsafe {
        let aligned = raw.add(head);
        if head > 0 {
            let rc = libc::munmap(raw.as_ptr().cast(), head);
            assert!(rc == 0, "munmap of arena head failed");
        }
        let rc = libc::munmap(aligned.add(len).as_ptr().cast(), tail);
        assert!(rc == 0, "munmap of arena tail failed");
        Ok(aligned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUF_BYTES: usize = 4096;
    const COUNT: usize = 8;

    fn pool(huge: HugePages) -> BufferPool {
        BufferPool::new(BUF_BYTES, COUNT, huge).unwrap().0
    }

    #[test]
    fn take_all_then_exhausted() {
        let mut pool = pool(HugePages::Off);
        assert_eq!(pool.capacity(), COUNT);
        let bufs: Vec<_> = (0..COUNT).map(|_| pool.take().unwrap()).collect();
        assert_eq!(pool.in_use(), COUNT);
        assert_eq!(pool.available(), 0);
        assert!(pool.take().is_none());
        assert!(pool.take().is_none());
        assert_eq!(pool.exhausted_count(), 2);
        let mut indices: Vec<_> = bufs.iter().map(PoolBuf::index).collect();
        indices.sort_unstable();
        assert_eq!(indices, (0..COUNT as u32).collect::<Vec<_>>());
        for buf in bufs {
            assert_eq!(buf.len(), BUF_BYTES);
            pool.give_back(buf);
        }
        assert_eq!(pool.in_use(), 0);
        assert_eq!(pool.available(), COUNT);
    }

    #[test]
    fn given_back_buffer_is_reused() {
        let mut pool = pool(HugePages::Off);
        let mut buf = pool.take().unwrap();
        let index = buf.index();
        buf[0] = 0xab;
        pool.give_back(buf);
        let again = pool.take().unwrap();
        assert_eq!(
            again.index(),
            index,
            "most recently given back is reused first"
        );
        assert_eq!(again[0], 0xab, "contents are not cleared");
        pool.give_back(again);
        // Exhaust, give one back, and take succeeds again.
        let mut bufs: Vec<_> = (0..COUNT).map(|_| pool.take().unwrap()).collect();
        assert!(pool.take().is_none());
        pool.give_back(bufs.pop().unwrap());
        bufs.push(pool.take().expect("one buffer was given back"));
        bufs.into_iter().for_each(|b| pool.give_back(b));
    }

    #[test]
    #[should_panic(expected = "given back twice")]
    fn double_give_back_panics() {
        let mut pool = pool(HugePages::Off);
        let buf = pool.take().unwrap();
        // Safe code cannot duplicate a PoolBuf; forge one the way a bug in unsafe code might.
        let forged = PoolBuf {
            ptr: buf.ptr,
            len: buf.len,
            index: buf.index,
        };
        pool.give_back(buf);
        pool.give_back(forged);
    }

    #[test]
    #[should_panic(expected = "does not belong")]
    fn give_back_to_another_pool_panics() {
        let mut a = pool(HugePages::Off);
        let mut b = pool(HugePages::Off);
        let _held = b.take().unwrap();
        let buf = a.take().unwrap();
        b.give_back(buf);
    }

    #[test]
    fn writes_stay_in_their_buffer() {
        let mut pool = pool(HugePages::Off);
        let mut bufs: Vec<_> = (0..COUNT).map(|_| pool.take().unwrap()).collect();
        for buf in &mut bufs {
            let fill = buf.index() as u8 + 1;
            buf.fill(fill);
        }
        for buf in &bufs {
            let fill = buf.index() as u8 + 1;
            assert!(
                buf.iter().all(|b| *b == fill),
                "buffer {} overwritten",
                buf.index()
            );
        }
        bufs.into_iter().for_each(|b| pool.give_back(b));
    }

    #[test]
    fn huge_pages_on_falls_back_and_works() {
        let (mut pool, backing) = BufferPool::new(BUF_BYTES, COUNT, HugePages::On).unwrap();
        assert_eq!(pool.backing(), backing);
        assert_eq!(
            pool.map_len % HUGE_PAGE_BYTES,
            0,
            "rounded up to a huge page"
        );
        assert_eq!(
            pool.base.as_ptr() as usize % HUGE_PAGE_BYTES,
            0,
            "2 MiB aligned"
        );
        let reserved = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
            .map(|s| s.trim().parse::<u64>().unwrap_or(0))
            .unwrap_or(0);
        if reserved == 0 {
            assert_ne!(backing, PoolBacking::HugeTlb);
        }
        let mut buf = pool.take().unwrap();
        buf.fill(7);
        assert!(buf.iter().all(|b| *b == 7));
        pool.give_back(buf);
    }

    #[test]
    fn huge_pages_off_is_normal() {
        let (pool, backing) = BufferPool::new(100, 3, HugePages::Off).unwrap();
        assert_eq!(backing, PoolBacking::Normal);
        assert_eq!(pool.map_len, 300);
        assert_eq!(pool.buf_bytes(), 100);
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(matches!(
            BufferPool::new(0, 4, HugePages::Off),
            Err(PoolError::Empty { .. })
        ));
        assert!(matches!(
            BufferPool::new(4096, 0, HugePages::Off),
            Err(PoolError::Empty { .. })
        ));
        assert!(matches!(
            BufferPool::new(1 << 30, 1 << 20, HugePages::On),
            Err(PoolError::TooLarge { .. })
        ));
        assert!(matches!(
            BufferPool::new(usize::MAX, 2, HugePages::Off),
            Err(PoolError::TooLarge { .. })
        ));
    }

    #[test]
    fn outstanding_buffer_outlives_pool() {
        let mut pool = pool(HugePages::Off);
        let mut buf = pool.take().unwrap();
        drop(pool);
        // The arena was leaked, not unmapped: the buffer is still valid memory.
        buf.fill(1);
        assert_eq!(buf[BUF_BYTES - 1], 1);
    }

    #[test]
    fn new_buffers_are_zeroed() {
        let mut pool = pool(HugePages::Off);
        let buf = pool.take().unwrap();
        assert!(buf.iter().all(|b| *b == 0));
        pool.give_back(buf);
    }
}

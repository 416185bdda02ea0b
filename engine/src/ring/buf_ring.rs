//! The shard's provided-buffer ring: the buffers every multishot receive of the shard reads
//! into. The kernel picks a free buffer when bytes arrive, so an idle connection holds no
//! read buffer and no receive ever probes a socket that has nothing.
//!
//! Protocol: at start every buffer is handed to the kernel. A receive completion names the
//! buffer it filled; the shard processes those bytes at once (decrypting them into its
//! scratch, or framing them in place) and gives the buffer back with [`BufRing::give_back`];
//! [`BufRing::publish`] makes the returned buffers visible to the kernel once per loop turn.
//! When all buffers are out the kernel ends receives with `ENOBUFS`; the shard re-arms them
//! after publishing.
//!
//! This module owns the buffers and the ring's memory; it must not touch connections.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::sync::atomic::{fence, Ordering};

use io_uring::types::BufRingEntry;

use crate::buffer_pool::{BufferPool, HugePages, PoolBacking, PoolBuf};

/// The shard's buffer group id (one group per ring).
pub(crate) const BUF_GROUP: u16 = 0;

/// The provided-buffer ring of one shard.
pub(crate) struct BufRing {
    entries: *mut BufRingEntry,
    layout: Layout,
    mask: u16,
    /// Our copy of the tail (published with a release store).
    tail: u16,
    published: u16,
    bufs: Vec<PoolBuf>,
    buf_bytes: usize,
    _pool: BufferPool,
}

impl BufRing {
    /// Maps `count` buffers of `buf_bytes` (huge pages when asked), registers them with the
    /// calling thread's ring and hands them all to the kernel. `count` is a power of two.
    pub(crate) fn new(
        count: u16,
        buf_bytes: usize,
        huge: HugePages,
    ) -> io::Result<(BufRing, PoolBacking)> {
        assert!(
            count.is_power_of_two(),
            "buffer ring size is a power of two"
        );
        let (mut pool, backing) =
            BufferPool::new(buf_bytes, count as usize, huge).map_err(io::Error::other)?;
        let bufs: Vec<PoolBuf> = (0..count)
            .map(|_| pool.take().expect("a fresh pool has every buffer"))
            .collect();
        let layout =
            Layout::from_size_align(count as usize * std::mem::size_of::<BufRingEntry>(), 4096)
                .expect("valid layout");
        // SAFETY: a non-zero size (count ≥ 1) and a valid alignment.
        let entries = unsafe { alloc_zeroed(layout) }.cast::<BufRingEntry>();
        assert!(!entries.is_null(), "out of memory for the buffer ring");
        let mut ring = BufRing {
            entries,
            layout,
            mask: count - 1,
            tail: 0,
            published: 0,
            bufs,
            buf_bytes,
            _pool: pool,
        };
        // SAFETY: `entries` is page-aligned memory for `count` entries that lives as long as
        // `ring`, which unregisters it on drop before freeing it.
        super::with(|r| unsafe {
            r.submitter()
                .register_buf_ring_with_flags(entries as u64, count, BUF_GROUP, 0)
        })?;
        for bid in 0..count {
            ring.give_back(bid);
        }
        ring.publish();
        Ok((ring, backing))
    }

    /// The `len` bytes the kernel put in buffer `bid` (ours until given back).
    pub(crate) fn data_mut(&mut self, bid: u16, len: usize) -> &mut [u8] {
        &mut self.bufs[bid as usize].as_mut_slice()[..len.min(self.buf_bytes)]
    }

    /// Returns buffer `bid` to the ring (visible to the kernel after [`BufRing::publish`]).
    pub(crate) fn give_back(&mut self, bid: u16) {
        let addr = self.bufs[bid as usize].as_slice().as_ptr() as u64;
        // SAFETY: `tail & mask` indexes one of the ring's `count` entries; the kernel does
        // not read entries past the published tail, so this one is ours to write.
        let e = unsafe { &mut *self.entries.add((self.tail & self.mask) as usize) };
        e.set_addr(addr);
        e.set_len(self.buf_bytes as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every buffer given back so far visible to the kernel.
    pub(crate) fn publish(&mut self) {
        if self.published == self.tail {
            return;
        }
        // A release fence, then the tail (liburing's `io_uring_smp_store_release`): the
        // kernel reads the tail with an acquire load, so it sees the entries written before.
        fence(Ordering::Release);
        // SAFETY: the tail lives in the first entry's reserved field, which only we write.
        unsafe {
            let tail = BufRingEntry::tail(self.entries) as *mut u16;
            std::ptr::write_volatile(tail, self.tail);
        }
        self.published = self.tail;
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if super::installed() {
            let _ = super::with(|r| r.submitter().unregister_buf_ring(BUF_GROUP));
        }
        // SAFETY: allocated in `new` with this layout; the kernel no longer uses it.
        unsafe { dealloc(self.entries.cast(), self.layout) };
    }
}

//! The per-shard hashed timer wheel: idle timeouts, heartbeats and retries with O(1) insert and
//! cancel, and no timer future per connection.
//!
//! ## What it owns
//! One [`TimerWheel`] per shard holds every armed timer of that shard. A timer is a deadline
//! (milliseconds on the shard's monotonic clock) and a value `T` (typically a `ConnId` plus what
//! to do), named by a generation-tagged [`TimerId`] that a connection keeps in its slab entry.
//!
//! ## What it must not touch
//! No clock, no I/O, no ring, no locks, no atomics. Time comes in as `now_ms` arguments, so
//! tests drive it with fake time. Single-threaded: a wheel belongs to one shard (`!Sync`).
//!
//! ## Layout
//! - Entries live in a slab sized at construction (`capacity`, never reallocated); freed
//!   entries are reused oldest first (FIFO free list) and their generation is bumped, so a
//!   cancelled or fired [`TimerId`] never matches again.
//! - `slots` buckets (a power of two) each head an intrusive doubly-linked list threaded
//!   through the slab. An entry with deadline `d` sits in the bucket of tick `ceil(d / tick_ms)`
//!   (the first tick boundary at or after `d`), so insert and cancel are O(1) link operations.
//! - Deadlines beyond one revolution share buckets with nearer ones. Instead of a `rounds`
//!   counter decremented on every pass, each entry keeps its absolute deadline: "rounds
//!   remaining" is derived, so a pass never writes to entries it skips and a jump of `now` by
//!   many revolutions needs no catch-up arithmetic.
//! - Generation wraparound: an entry freed at generation [`TIMER_GENERATION_MAX`] is retired
//!   (never reused), exactly as the connection table does; [`TimerWheel::retired`] counts them.
//!
//! ## Protocol of [`TimerWheel::advance`], and why it is correct
//! 1. `cursor_tick` is the next tick not yet processed. Invariant: every armed entry's bucket
//!    tick is `>= cursor_tick` (insert clamps a past deadline to `cursor_tick`).
//! 2. `advance(now)` processes ticks `cursor_tick..=now / tick_ms`, but visits at most `slots`
//!    buckets: after a jump of a full revolution or more every bucket is visited once.
//! 3. In a visited bucket, exactly the entries with `deadline_ms <= now` fire; the rest belong
//!    to later revolutions and stay linked. So a timer never fires early.
//! 4. A timer's bucket tick `ceil(d / tick_ms)` is processed by the first `advance` whose `now`
//!    reaches `ceil(d / tick_ms) * tick_ms < d + tick_ms`: it fires at most one tick late.
//! 5. `cursor_tick` becomes `now / tick_ms + 1`. Every entry left has `deadline_ms > now`, so its
//!    bucket tick is `> now / tick_ms`: the invariant holds again.
//!
//! Each bucket is visited once per elapsed tick (at most once per call), so the work per call
//! is `min(elapsed ticks, slots)` buckets plus the entries in them.

use std::cell::Cell;
use std::fmt;

/// Most buckets a wheel may have (one revolution = `slots * tick_ms`).
pub const TIMER_WHEEL_SLOTS_MAX: usize = 1 << 22;

/// Most armed timers a wheel may hold: slab indices are `u32` and `u32::MAX` marks "none".
pub const TIMER_WHEEL_CAPACITY_MAX: usize = u32::MAX as usize;

/// Last generation a slab entry may carry; an entry freed at this generation is retired.
pub const TIMER_GENERATION_MAX: u32 = u32::MAX;

/// Shortest tick.
pub const TIMER_TICK_MS_MIN: u64 = 1;

/// "No entry" marker in links.
const NIL: u32 = u32::MAX;

const _: () = assert!(TIMER_WHEEL_CAPACITY_MAX <= NIL as usize);
const _: () = assert!(TIMER_WHEEL_SLOTS_MAX <= NIL as usize);

/// Names one armed timer; stale once it fires or is cancelled.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

impl TimerId {
    /// The entry's index in the wheel's slab.
    pub fn index(self) -> u32 {
        self.index
    }

    /// The entry's generation when this id was handed out.
    pub fn generation(self) -> u32 {
        self.generation
    }

    /// Packs the id into a `u64` (generation high, index low).
    pub fn to_u64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// Unpacks an id made by [`TimerId::to_u64`]; a forged or stale one matches no timer.
    pub fn from_u64(packed: u64) -> Self {
        TimerId {
            index: packed as u32,
            generation: (packed >> 32) as u32,
        }
    }
}

/// [`TimerWheel::insert`] found every usable slab entry armed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("timer wheel full: {capacity} timers")]
pub struct WheelFull {
    /// The wheel's capacity.
    pub capacity: usize,
}

/// One slab entry: an armed timer, or a free entry on the free list.
struct Entry<T> {
    generation: u32,
    /// Bucket the entry is linked into while armed; `NIL` while free.
    bucket: u32,
    /// Previous entry in the bucket list (`NIL` at the head); unused while free.
    prev: u32,
    /// Next entry in the bucket list, or in the free list while free; `NIL` at the tail.
    next: u32,
    deadline_ms: u64,
    /// `Some` exactly while armed.
    value: Option<T>,
}

/// Head and tail of one bucket's list (FIFO, so equal deadlines fire in insertion order).
#[derive(Copy, Clone)]
struct Bucket {
    head: u32,
    tail: u32,
}

const EMPTY_BUCKET: Bucket = Bucket {
    head: NIL,
    tail: NIL,
};

/// A hashed timer wheel with a fixed-capacity slab of timers.
pub struct TimerWheel<T> {
    /// Milliseconds per tick: the wheel's resolution.
    tick_ms: u64,
    /// `slots - 1`; `slots` is a power of two.
    mask: u64,
    /// One list per slot, allocated at construction.
    buckets: Vec<Bucket>,
    /// Timers, armed or free; capacity reserved at construction, grown up to `capacity` only.
    entries: Vec<Entry<T>>,
    /// Most timers this wheel holds.
    capacity: usize,
    /// Oldest freed entry (reused first), or `NIL`.
    free_head: u32,
    /// Newest freed entry, or `NIL`.
    free_tail: u32,
    /// Armed timers.
    len: usize,
    /// Entries retired because their generation would wrap.
    retired: usize,
    /// Next tick to process; every armed entry's bucket tick is at or after it.
    cursor_tick: u64,
    /// Cached answer of [`TimerWheel::next_deadline_ms`]: never later than the true next
    /// firing tick boundary (cancellation can only make it early). `None` = recompute.
    next_hint: Cell<Option<u64>>,
}

impl<T> TimerWheel<T> {
    /// Makes an empty wheel of `slots` buckets of `tick_ms` each, holding at most `capacity`
    /// timers, whose clock currently reads `now_ms`.
    ///
    /// Panics on a configuration bug: `tick_ms` below [`TIMER_TICK_MS_MIN`], `slots` not a
    /// power of two or above [`TIMER_WHEEL_SLOTS_MAX`], or `capacity` above
    /// [`TIMER_WHEEL_CAPACITY_MAX`].
    pub fn new(tick_ms: u64, slots: usize, capacity: usize, now_ms: u64) -> Self {
        assert!(tick_ms >= TIMER_TICK_MS_MIN, "tick_ms {tick_ms} too small");
        assert!(slots.is_power_of_two(), "slots {slots} not a power of two");
        assert!(slots <= TIMER_WHEEL_SLOTS_MAX, "slots {slots} too many");
        assert!(
            capacity <= TIMER_WHEEL_CAPACITY_MAX,
            "capacity {capacity} too large"
        );
        TimerWheel {
            tick_ms,
            mask: slots as u64 - 1,
            buckets: vec![EMPTY_BUCKET; slots],
            entries: Vec::with_capacity(capacity),
            capacity,
            free_head: NIL,
            free_tail: NIL,
            len: 0,
            retired: 0,
            cursor_tick: now_ms / tick_ms + 1,
            next_hint: Cell::new(None),
        }
    }

    /// Arms a timer that fires at the first [`advance`](TimerWheel::advance) whose `now_ms`
    /// reaches the tick boundary at or after `deadline_ms`. A deadline already past fires at the
    /// next tick. O(1). [`WheelFull`] when every usable entry is armed.
    pub fn insert(&mut self, deadline_ms: u64, value: T) -> Result<TimerId, WheelFull> {
        let Some(index) = self.alloc_entry() else {
            return Err(WheelFull {
                capacity: self.capacity,
            });
        };
        let tick = deadline_ms.div_ceil(self.tick_ms).max(self.cursor_tick);
        let bucket = (tick & self.mask) as u32;
        let entry = &mut self.entries[index as usize];
        entry.deadline_ms = deadline_ms;
        entry.value = Some(value);
        let generation = entry.generation;
        self.link_tail(index, bucket);
        self.len += 1;
        if let Some(hint) = self.next_hint.get() {
            self.next_hint
                .set(Some(hint.min(tick.saturating_mul(self.tick_ms))));
        }
        Ok(TimerId { index, generation })
    }

    /// Disarms the timer named by `id` and hands its value back; `None` if it already fired,
    /// was cancelled, or never existed. O(1).
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        match self.entries.get(id.index as usize) {
            Some(entry) if entry.generation == id.generation && entry.value.is_some() => {}
            _ => return None,
        }
        self.unlink(id.index);
        let value = self.entries[id.index as usize].value.take();
        self.free_entry(id.index);
        self.len -= 1;
        value
    }

    /// Moves the clock to `now_ms` and appends every timer that fires to `fired`: each one
    /// has `deadline_ms <= now_ms`, and none is more than one tick late (see the module doc).
    /// Visits at most one revolution of buckets however far `now_ms` jumps; a `now_ms` earlier
    /// than a previous one fires nothing.
    pub fn advance(&mut self, now_ms: u64, fired: &mut Vec<(TimerId, T)>) {
        let now_tick = now_ms / self.tick_ms;
        if now_tick < self.cursor_tick {
            return;
        }
        if self.len > 0 {
            let ticks = now_tick - self.cursor_tick + 1;
            let visits = ticks.min(self.mask + 1);
            for step in 0..visits {
                let bucket = ((self.cursor_tick + step) & self.mask) as u32;
                self.fire_bucket(bucket, now_ms, fired);
            }
        }
        self.cursor_tick = now_tick + 1;
        if self.next_hint.get().is_some_and(|hint| hint <= now_ms) {
            self.next_hint.set(None);
        }
    }

    /// When the shard should next call [`advance`](TimerWheel::advance): the tick boundary at
    /// which the earliest armed timer fires, or `None` if nothing is armed. Never later than
    /// that boundary (after cancellations it may be earlier, and then the wake is merely
    /// spurious). Cached; a recomputation walks buckets from the cursor up to the first one
    /// due this revolution, which `advance` would walk anyway.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        if let Some(hint) = self.next_hint.get() {
            return Some(hint);
        }
        let next = self.scan_next_boundary();
        self.next_hint.set(Some(next));
        Some(next)
    }

    /// Armed timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most timers this wheel holds (retired entries included).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries retired because their generation would have wrapped.
    pub fn retired(&self) -> usize {
        self.retired
    }

    /// Milliseconds per tick.
    pub fn tick_ms(&self) -> u64 {
        self.tick_ms
    }

    /// Fires the entries of `bucket` whose deadline is at or before `now_ms`.
    fn fire_bucket(&mut self, bucket: u32, now_ms: u64, fired: &mut Vec<(TimerId, T)>) {
        let mut index = self.buckets[bucket as usize].head;
        while index != NIL {
            let entry = &self.entries[index as usize];
            let next = entry.next;
            if entry.deadline_ms <= now_ms {
                let generation = entry.generation;
                self.unlink(index);
                // Invariant: every entry linked into a bucket is armed.
                let value = self.entries[index as usize].value.take().unwrap();
                self.free_entry(index);
                self.len -= 1;
                fired.push((TimerId { index, generation }, value));
            }
            index = next;
        }
    }

    /// The first tick boundary at which some armed timer fires, or a lower bound on it (one
    /// revolution ahead) when no bucket holds a timer due this revolution.
    fn scan_next_boundary(&self) -> u64 {
        for step in 0..=self.mask {
            let tick = self.cursor_tick + step;
            let boundary = tick.saturating_mul(self.tick_ms);
            let mut index = self.buckets[(tick & self.mask) as usize].head;
            while index != NIL {
                let entry = &self.entries[index as usize];
                if entry.deadline_ms <= boundary {
                    return boundary;
                }
                index = entry.next;
            }
        }
        (self.cursor_tick + self.mask + 1).saturating_mul(self.tick_ms)
    }

    /// Takes the oldest free entry, else a fresh one, else `None`.
    fn alloc_entry(&mut self) -> Option<u32> {
        if self.free_head != NIL {
            let index = self.free_head;
            let entry = &self.entries[index as usize];
            assert!(
                entry.value.is_none() && entry.bucket == NIL,
                "free entry armed"
            );
            self.free_head = entry.next;
            if self.free_head == NIL {
                assert!(self.free_tail == index, "free list tail out of sync");
                self.free_tail = NIL;
            }
            return Some(index);
        }
        if self.entries.len() >= self.capacity {
            return None;
        }
        let index = self.entries.len() as u32;
        self.entries.push(Entry {
            generation: 0,
            bucket: NIL,
            prev: NIL,
            next: NIL,
            deadline_ms: 0,
            value: None,
        });
        assert!(self.entries.capacity() >= self.capacity, "slab reallocated");
        Some(index)
    }

    /// Returns an unlinked, disarmed entry to the free list (or retires it).
    fn free_entry(&mut self, index: u32) {
        let entry = &mut self.entries[index as usize];
        assert!(
            entry.value.is_none() && entry.bucket == NIL,
            "freeing an armed entry"
        );
        if entry.generation == TIMER_GENERATION_MAX {
            self.retired += 1;
            return;
        }
        entry.generation += 1;
        entry.next = NIL;
        if self.free_tail == NIL {
            assert!(self.free_head == NIL, "free list head out of sync");
            self.free_head = index;
        } else {
            self.entries[self.free_tail as usize].next = index;
        }
        self.free_tail = index;
    }

    /// Links entry `index` at the tail of `bucket`.
    fn link_tail(&mut self, index: u32, bucket: u32) {
        let tail = self.buckets[bucket as usize].tail;
        let entry = &mut self.entries[index as usize];
        assert!(entry.bucket == NIL, "entry already linked");
        entry.bucket = bucket;
        entry.prev = tail;
        entry.next = NIL;
        if tail == NIL {
            self.buckets[bucket as usize].head = index;
        } else {
            self.entries[tail as usize].next = index;
        }
        self.buckets[bucket as usize].tail = index;
    }

    /// Unlinks entry `index` from its bucket.
    fn unlink(&mut self, index: u32) {
        let entry = &mut self.entries[index as usize];
        let (bucket, prev, next) = (entry.bucket, entry.prev, entry.next);
        assert!(bucket != NIL, "unlinking an entry in no bucket");
        entry.bucket = NIL;
        entry.prev = NIL;
        entry.next = NIL;
        let list = &mut self.buckets[bucket as usize];
        if prev == NIL {
            assert!(list.head == index, "bucket head out of sync");
            list.head = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        let list = &mut self.buckets[bucket as usize];
        if next == NIL {
            assert!(list.tail == index, "bucket tail out of sync");
            list.tail = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
    }
}

impl<T> fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("tick_ms", &self.tick_ms)
            .field("slots", &self.buckets.len())
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("cursor_tick", &self.cursor_tick)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const TICK_MS: u64 = 10;
    const SLOTS: usize = 64;

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn values(fired: &[(TimerId, u64)]) -> Vec<u64> {
        fired.iter().map(|(_, v)| *v).collect()
    }

    #[test]
    fn fires_in_order_never_early_at_most_one_tick_late() {
        let mut wheel = TimerWheel::new(TICK_MS, SLOTS, 16, 1_000);
        for deadline in [1_035, 1_010, 1_020, 1_021, 1_100] {
            wheel.insert(deadline, deadline).unwrap();
        }
        let mut fired = Vec::new();
        wheel.advance(1_009, &mut fired);
        assert!(fired.is_empty());
        wheel.advance(1_010, &mut fired);
        assert_eq!(values(&fired), [1_010]);
        fired.clear();
        wheel.advance(1_029, &mut fired);
        assert_eq!(values(&fired), [1_020], "1_021 waits for the tick at 1_030");
        fired.clear();
        wheel.advance(1_030, &mut fired);
        assert_eq!(values(&fired), [1_021]);
        fired.clear();
        for now in 1_031..1_040 {
            wheel.advance(now, &mut fired);
        }
        assert!(fired.is_empty(), "1_035 fires at 1_040, not before");
        wheel.advance(1_040, &mut fired);
        assert_eq!(values(&fired), [1_035]);
        fired.clear();
        wheel.advance(1_100, &mut fired);
        assert_eq!(values(&fired), [1_100]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn equal_deadlines_fire_in_insertion_order() {
        let mut wheel = TimerWheel::new(TICK_MS, SLOTS, 16, 0);
        for v in 0..5 {
            wheel.insert(50, v).unwrap();
        }
        let mut fired = Vec::new();
        wheel.advance(50, &mut fired);
        assert_eq!(values(&fired), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn past_deadline_fires_next_tick() {
        let mut wheel = TimerWheel::new(TICK_MS, SLOTS, 4, 500);
        wheel.insert(100, 1).unwrap();
        assert_eq!(wheel.next_deadline_ms(), Some(510));
        let mut fired = Vec::new();
        wheel.advance(505, &mut fired);
        assert!(fired.is_empty());
        wheel.advance(510, &mut fired);
        assert_eq!(values(&fired), [1]);
    }

    #[test]
    fn cancel_before_fire() {
        let mut wheel = TimerWheel::new(TICK_MS, SLOTS, 4, 0);
        let a = wheel.insert(30, 1).unwrap();
        let b = wheel.insert(30, 2).unwrap();
        assert_eq!(wheel.cancel(a), Some(1));
        assert_eq!(wheel.cancel(a), None);
        assert_eq!(wheel.len(), 1);
        let mut fired = Vec::new();
        wheel.advance(100, &mut fired);
        assert_eq!(fired, [(b, 2)]);
    }

    #[test]
    fn cancel_after_fire_returns_none() {
        let mut wheel = TimerWheel::new(TICK_MS, SLOTS, 1, 0);
        let a = wheel.insert(20, 1).unwrap();
        let mut fired = Vec::new();
        wheel.advance(20, &mut fired);
        assert_eq!(fired, [(a, 1)]);
        assert_eq!(wheel.cancel(a), None);
        // The entry is reused by the next insert; the old id still does not match it.
        let b = wheel.insert(40, 2).unwrap();
        assert_eq!(b.index(), a.index());
        assert_eq!(wheel.cancel(a), None);
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.cancel(TimerId::from_u64(b.to_u64())), Some(2));
        assert_eq!(wheel.cancel(TimerId::from_u64(0xffff)), None);
    }

    #[test]
    fn deadlines_beyond_one_revolution() {
        const REVOLUTION_MS: u64 = TICK_MS * SLOTS as u64;
        let mut wheel = TimerWheel::new(TICK_MS, SLOTS, 8, 0);
        // Same bucket, three different revolutions.
        for round in [2, 0, 1] {
            wheel.insert(50 + round * REVOLUTION_MS, round).unwrap();
        }
        let mut fired = Vec::new();
        let mut now = 0;
        while now <= 3 * REVOLUTION_MS {
            wheel.advance(now, &mut fired);
            for (_, round) in fired.drain(..) {
                assert_eq!(now, 50 + round * REVOLUTION_MS, "fired exactly on its tick");
            }
            now += TICK_MS;
        }
        assert!(wheel.is_empty());
    }

    #[test]
    fn far_jump_fires_everything_due_and_keeps_the_rest() {
        let mut wheel = TimerWheel::new(TICK_MS, SLOTS, 64, 0);
        for d in (0..40).map(|i| i * 997) {
            wheel.insert(d, d).unwrap();
        }
        let mut fired = Vec::new();
        wheel.advance(20_000, &mut fired);
        let mut got = values(&fired);
        got.sort_unstable();
        let want: Vec<u64> = (0..40).map(|i| i * 997).filter(|d| *d <= 20_000).collect();
        assert_eq!(got, want);
        assert_eq!(wheel.len(), 40 - want.len());
        fired.clear();
        wheel.advance(40_000, &mut fired);
        assert_eq!(fired.len() + want.len(), 40);
        assert!(wheel.is_empty());
    }

    #[test]
    fn next_deadline_is_the_firing_boundary() {
        let mut wheel = TimerWheel::new(TICK_MS, SLOTS, 8, 0);
        assert_eq!(wheel.next_deadline_ms(), None);
        let far = wheel.insert(5_000, 0).unwrap();
        // Beyond one revolution (640 ms): a lower bound one revolution ahead.
        assert_eq!(wheel.next_deadline_ms(), Some(650));
        wheel.insert(123, 1).unwrap();
        assert_eq!(wheel.next_deadline_ms(), Some(130));
        let mut fired = Vec::new();
        wheel.advance(130, &mut fired);
        assert_eq!(values(&fired), [1]);
        assert_eq!(
            wheel.next_deadline_ms(),
            Some(140 + 640),
            "cursor tick 14 plus a revolution"
        );
        wheel.advance(4_990, &mut fired);
        assert_eq!(wheel.next_deadline_ms(), Some(5_000));
        assert_eq!(wheel.cancel(far), Some(0));
        assert_eq!(wheel.next_deadline_ms(), None);
    }

    #[test]
    fn full_wheel_errors_and_keeps_working() {
        let mut wheel = TimerWheel::new(TICK_MS, SLOTS, 2, 0);
        let a = wheel.insert(10, 1).unwrap();
        wheel.insert(20, 2).unwrap();
        assert_eq!(wheel.insert(30, 3), Err(WheelFull { capacity: 2 }));
        assert_eq!(wheel.cancel(a), Some(1));
        wheel.insert(30, 3).unwrap();
        assert_eq!(wheel.len(), 2);
        assert_eq!(wheel.capacity(), 2);
    }

    #[test]
    fn generation_wrap_retires_the_entry() {
        let mut wheel = TimerWheel::new(TICK_MS, SLOTS, 2, 0);
        let id = wheel.insert(10, 1).unwrap();
        wheel.entries[id.index() as usize].generation = TIMER_GENERATION_MAX;
        let last = TimerId {
            index: id.index(),
            generation: TIMER_GENERATION_MAX,
        };
        assert_eq!(wheel.cancel(id), None);
        assert_eq!(wheel.cancel(last), Some(1));
        assert_eq!(wheel.retired(), 1);
        let next = wheel.insert(10, 2).unwrap();
        assert_ne!(next.index(), last.index());
        assert_eq!(wheel.insert(10, 3), Err(WheelFull { capacity: 2 }));
    }

    /// The test: fire and cancel 100k timers in the wheel and check exactly the
    /// uncancelled ones fired, none early and none more than one tick late.
    #[test]
    fn fire_and_cancel_100k_timers() {
        const TIMERS: usize = 100_000;
        const HORIZON_MS: u64 = 200_000;
        const START_MS: u64 = 12_345;
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let mut wheel = TimerWheel::new(TICK_MS, 256, TIMERS, START_MS);
        let mut deadline_of = HashMap::with_capacity(TIMERS);
        let mut ids = Vec::with_capacity(TIMERS);
        for value in 0..TIMERS as u64 {
            let deadline = START_MS + rng.next() % HORIZON_MS;
            ids.push(wheel.insert(deadline, value).unwrap());
            deadline_of.insert(value, deadline);
        }
        assert!(matches!(wheel.insert(0, 0), Err(WheelFull { .. })));
        let mut uncancelled: Vec<u64> = Vec::new();
        for (value, id) in ids.iter().enumerate() {
            if rng.next() & 1 == 0 {
                assert_eq!(wheel.cancel(*id), Some(value as u64));
            } else {
                uncancelled.push(value as u64);
            }
        }
        assert_eq!(wheel.len(), uncancelled.len());
        let mut fired_all = Vec::with_capacity(uncancelled.len());
        let mut fired = Vec::new();
        let (mut prev, mut now) = (START_MS, START_MS);
        while now < START_MS + HORIZON_MS + TICK_MS {
            // Random steps: mostly sub-tick, sometimes several ticks, rarely a revolution+.
            now += match rng.next() % 100 {
                0 => rng.next() % 5_000,
                1..=20 => rng.next() % 50,
                _ => rng.next() % 8,
            };
            wheel.advance(now, &mut fired);
            for (_, value) in fired.drain(..) {
                let deadline = deadline_of[&value];
                assert!(deadline <= now, "fired early: {deadline} at {now}");
                assert!(
                    prev < deadline + TICK_MS,
                    "more than a tick late: {deadline}"
                );
                fired_all.push(value);
            }
            prev = now;
        }
        fired_all.sort_unstable();
        assert_eq!(
            fired_all, uncancelled,
            "exactly the uncancelled timers fired"
        );
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline_ms(), None);
    }
}

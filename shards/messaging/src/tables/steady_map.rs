//! A hash map that never stalls its shard to grow: when its table is full it allocates one
//! twice the size and moves the old entries over `STEADY_MAP_MOVE_PER_OP` at a time, on
//! each later change, instead of all at once. A std `HashMap` of a million accounts
//! rehashes them in one insert (65 ms measured by `state-bytes`); here the longest step
//! moves a slice (tens of µs) however large the map.
//!
//! Steps, and why each is safe:
//! 1. An insert into a full `new` table first makes it `old` and starts an empty `new` of
//!    twice the capacity. Nothing moves yet.
//! 2. Every change (insert, remove, `get_mut`, `get_or_insert_with`) first moves up to
//!    `STEADY_MAP_MOVE_PER_OP` entries from `old` into `new`. `new` has room for all of
//!    `old` and as many inserts again, and `old` empties after `len / MOVE` changes, long
//!    before `new` fills: `new` itself never resizes while `old` holds anything (asserted).
//! 3. A key lives in exactly one of the two tables: an insert removes it from `old`;
//!    reads look in `new`, then `old`.
//!
//! Iteration visits both tables (order is unspecified, as for any hash map).
//!
//! A **walk** ([`SteadyMap::begin_walk`], [`SteadyMap::walk_step`]) visits, in slices
//! between changes, every entry that is in the map from the walk's start to its end, each
//! once, with its value at the time of the visit: what a snapshot built between events
//! needs. It reuses the two tables: at the start every entry moves (by swapping the
//! tables, nothing is copied) into `old`, which then holds exactly the entries not yet
//! visited; each step visits a slice of `old` and moves it to `new`. While a walk runs:
//! - changes never move an entry between the tables (no growth steps; an insert or update
//!   of a key still in `old` changes it there), so nothing leaves `old` unvisited except
//!   by removal;
//! - a new key goes into `new` (it is not visited: whoever walks for a snapshot has its
//!   record from the change), or into `old` when `new` is full (visited later: once too
//!   many, which a snapshot's reader tolerates);
//! - a walk starts only when no growth is under way; `begin_walk` helps that along.
//!
//! A large map's tables are made and freed on the table thread (`table_thread.rs`): the
//! next, bigger table is asked for when the present one is three quarters full, and a
//! walk waits a slice or two for its table; an emptied table is freed there. So the shard
//! never waits for the kernel's page work (9 ms to give back a table of a million entries,
//! 1–2 ms to make one).

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash, RandomState};

use hashbrown::HashMap;

use crate::tables::table_thread::{self, Coming, Made};

/// Entries moved from the old table per change while one is being emptied.
pub const STEADY_MAP_MOVE_PER_OP: usize = 1024;

/// A hash map that grows in slices (module docs). `S` hashes its keys: SipHash with a random
/// seed unless every key is an id we issue (`id_hash.rs`).
#[derive(Debug)]
pub struct SteadyMap<K, V, S = RandomState> {
    new: HashMap<K, V, S>,
    old: HashMap<K, V, S>,
    /// A walk is under way: `old` holds the entries it has not visited yet.
    walking: bool,
    /// The next table, being made on the table thread.
    coming: Option<Coming<HashMap<K, V, S>>>,
}

impl<K, V, S: Default> Default for SteadyMap<K, V, S> {
    fn default() -> Self {
        SteadyMap {
            new: HashMap::with_hasher(S::default()),
            old: HashMap::with_hasher(S::default()),
            walking: false,
            coming: None,
        }
    }
}

impl<K, V, S> SteadyMap<K, V, S>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher + Clone + Send + 'static,
{
    /// The value of `k`.
    pub fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.new.get(k).or_else(|| self.old.get(k))
    }

    /// Whether `k` is here.
    pub fn contains_key<Q>(&self, k: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(k).is_some()
    }

    /// The value of `k`, to change.
    pub fn get_mut<Q>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.step();
        // One probe when nothing is left to move (the common case).
        if self.old.is_empty() || self.new.contains_key(k) {
            return self.new.get_mut(k);
        }
        self.old.get_mut(k)
    }

    /// Sets `k` to `v`; returns the value it had.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.step();
        if self.walking {
            if let Some(slot) = self.old.get_mut(&k) {
                return Some(std::mem::replace(slot, v));
            }
            if let Some(slot) = self.new.get_mut(&k) {
                return Some(std::mem::replace(slot, v));
            }
            self.table_for_a_new_key().insert(k, v);
            return None;
        }
        if self.quiet_with_room() {
            return self.new.insert(k, v); // one probe
        }
        let before = self.old.remove(&k);
        if before.is_none() && !self.new.contains_key(&k) {
            self.make_room();
        }
        self.new.insert(k, v).or(before)
    }

    /// The value of `k`, inserted with `f` if there is none.
    pub fn get_or_insert_with(&mut self, k: K, f: impl FnOnce() -> V) -> &mut V {
        self.step();
        if self.walking {
            if self.old.contains_key(&k) {
                return self.old.get_mut(&k).expect("just found");
            }
            if self.new.contains_key(&k) {
                return self.new.get_mut(&k).expect("just found");
            }
            return self.table_for_a_new_key().entry(k).or_insert_with(f);
        }
        if self.quiet_with_room() {
            return self.new.entry(k).or_insert_with(f); // one probe
        }
        if !self.new.contains_key(&k) {
            let moved = self.old.remove(&k);
            if moved.is_none() {
                self.make_room();
            }
            return self.new.entry(k).or_insert_with(|| moved.unwrap_or_else(f));
        }
        self.new.entry(k).or_insert_with(f)
    }

    /// Removes `k`; returns its value.
    pub fn remove<Q>(&mut self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.step();
        let removed = self.new.remove(k);
        if removed.is_some() || self.old.is_empty() {
            return removed;
        }
        self.old.remove(k)
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.new.len() + self.old.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.new.iter().chain(self.old.iter())
    }

    /// Every value.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.new.values().chain(self.old.values())
    }

    /// Nothing to move and room for a new key without preparing a growth (`make_room`
    /// would do nothing): a change needs one probe of `new` alone.
    fn quiet_with_room(&self) -> bool {
        self.old.is_empty() && self.new.len() < self.new.capacity() * 3 / 4
    }

    /// Where a key in neither table goes during a walk: `new` while it has room, else
    /// `old` (visited later) while that has room, else `new` grown in place.
    fn table_for_a_new_key(&mut self) -> &mut HashMap<K, V, S> {
        if self.new.len() < self.new.capacity() {
            return &mut self.new;
        }
        if self.old.len() < self.old.capacity() {
            return &mut self.old;
        }
        self.grow_new_in_place();
        &mut self.new
    }

    /// Doubles `new` where it is during a walk: one rehash of what it holds, a stall. Only
    /// when keys added during the walk outgrew the room planned for them (the walk starved
    /// of steps), never in normal running.
    fn grow_new_in_place(&mut self) {
        self.new.reserve(self.new.len().max(8));
    }

    /// Starts a walk (module docs); false, after moving a slice, while a growth is still
    /// under way, or while the table thread makes the table the walk fills: call again
    /// later.
    pub fn begin_walk(&mut self) -> bool {
        assert!(!self.walking, "one walk at a time");
        if !self.old.is_empty() {
            self.step();
            return false;
        }
        // Room for every entry and an eighth more (keys added while the walk runs), so
        // that a walk leaves the table about the size growth alone would have made it.
        let want = self.new.len() + self.new.len() / 8 + 8;
        self.prepare(want);
        if self.table_pending() {
            return false;
        }
        let fresh = self.table_for(want);
        self.old = std::mem::replace(&mut self.new, fresh);
        self.walking = true;
        true
    }

    /// Visits up to `budget` units of entries not visited yet (`visit` says what each
    /// costs); returns true when the walk is over (every entry visited).
    pub fn walk_step(&mut self, budget: usize, mut visit: impl FnMut(&K, &V) -> usize) -> bool {
        assert!(self.walking, "walk_step outside a walk");
        let mut spent = 0;
        let mut moving = Vec::new();
        let mut slice = self.old.extract_if(|_, _| true);
        while spent < budget {
            let Some((k, v)) = slice.next() else { break };
            spent += visit(&k, &v).max(1);
            moving.push((k, v));
        }
        drop(slice);
        for (k, v) in moving {
            if self.new.len() == self.new.capacity() {
                self.grow_new_in_place();
            }
            self.new.insert(k, v);
        }
        if !self.old.is_empty() {
            return false;
        }
        self.free_old();
        self.walking = false;
        true
    }

    /// Moves a slice of the old table into the new one (never during a walk: the walk
    /// moves `old` itself, visiting what it moves).
    fn step(&mut self) {
        if self.old.is_empty() || self.walking {
            return;
        }
        let moving: Vec<(K, V)> = self
            .old
            .extract_if(|_, _| true)
            .take(STEADY_MAP_MOVE_PER_OP)
            .collect();
        for (k, v) in moving {
            assert!(
                self.new.len() < self.new.capacity(),
                "new table sized for old"
            );
            self.new.insert(k, v);
        }
        if self.old.is_empty() {
            self.free_old();
        }
    }

    /// Replaces the emptied old table with an unallocated one, freeing it on the table
    /// thread when it is large.
    fn free_old(&mut self) {
        let bytes = self.old.allocation_size();
        let fresh = HashMap::with_hasher(self.old.hasher().clone());
        let emptied = std::mem::replace(&mut self.old, fresh);
        table_thread::free(emptied, bytes);
    }

    /// Before an insert of a new key: if `new` is full, it becomes `old` (then empty,
    /// since a full table only starts moving after the previous one emptied) and a table
    /// twice its size takes its place. At three quarters full, that table is asked for.
    fn make_room(&mut self) {
        if self.new.len() < self.new.capacity() {
            if self.old.is_empty() && self.new.len() * 4 >= self.new.capacity() * 3 {
                self.prepare((self.new.capacity() * 2).max(8));
            }
            return;
        }
        // `new` filled at least as many inserts after the last swap as `old` had entries,
        // each of which moved STEADY_MAP_MOVE_PER_OP: `old` is empty unless it was tiny.
        while !self.old.is_empty() {
            self.step();
        }
        let bigger = self.table_for((self.new.capacity() * 2).max(8));
        self.old = std::mem::replace(&mut self.new, bigger);
    }

    /// Bytes a table for `capacity` entries takes (buckets and their control bytes).
    fn table_bytes(capacity: usize) -> usize {
        capacity * 8 / 7 * (std::mem::size_of::<(K, V)>() + 1)
    }

    /// Asks the table thread for an empty table for `capacity` entries, if it is large and
    /// none is coming.
    fn prepare(&mut self, capacity: usize) {
        if self.coming.is_some() || Self::table_bytes(capacity) < table_thread::OFF_THREAD_BYTES {
            return;
        }
        let hasher = self.new.hasher().clone();
        self.coming =
            table_thread::make(move || HashMap::with_capacity_and_hasher(capacity, hasher));
    }

    /// An empty table for at least `capacity` entries: the one the table thread made if it
    /// is ready and large enough, else one made here.
    fn table_for(&mut self, capacity: usize) -> HashMap<K, V, S> {
        if let Some(mut coming) = self.coming.take() {
            match coming.try_take() {
                Made::Ready(t) if t.capacity() >= capacity => return t,
                Made::Ready(t) => {
                    let bytes = t.allocation_size();
                    table_thread::free(t, bytes);
                }
                // Not made yet: it is dropped on the table thread when it is.
                Made::Pending | Made::Lost => {}
            }
        }
        HashMap::with_capacity_and_hasher(capacity, self.new.hasher().clone())
    }

    /// Whether a table asked of the table thread is still being made.
    fn table_pending(&mut self) -> bool {
        self.coming.as_mut().is_some_and(Coming::pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_moves_slices_and_agrees_with_a_hash_map() {
        let mut m: SteadyMap<u64, u64> = SteadyMap::default();
        let mut mirror = std::collections::HashMap::new();
        let mut saw_moving = false;
        let mut x = 1u64;
        for i in 0..60_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = x % 40_000;
            match i % 5 {
                0 => assert_eq!(m.remove(&k), mirror.remove(&k)),
                1 => {
                    *m.get_or_insert_with(k, || 0) += 1;
                    *mirror.entry(k).or_insert(0) += 1;
                }
                2 => {
                    if let Some(v) = m.get_mut(&k) {
                        *v += 10;
                    }
                    if let Some(v) = mirror.get_mut(&k) {
                        *v += 10;
                    }
                }
                _ => assert_eq!(m.insert(k, i), mirror.insert(k, i)),
            }
            saw_moving |= !m.old.is_empty() && !m.new.is_empty();
            assert_eq!(m.get(&k), mirror.get(&k));
            assert_eq!(m.len(), mirror.len());
        }
        assert!(saw_moving, "the old table was emptied in slices");
        let mut all: Vec<(u64, u64)> = m.iter().map(|(k, v)| (*k, *v)).collect();
        let mut want: Vec<(u64, u64)> = mirror.into_iter().collect();
        all.sort();
        want.sort();
        assert_eq!(all, want);
    }

    /// A xorshift step: deterministic keys for the tests.
    fn next(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    #[test]
    fn a_walk_visits_every_entry_present_throughout_once_with_its_value_then() {
        for (seed, budget) in [(1u64, 1usize), (7, 5), (99, 64)] {
            let mut m: SteadyMap<u64, u64> = SteadyMap::default();
            let mut mirror = std::collections::HashMap::new();
            let mut x = seed;
            for i in 0..3_000u64 {
                let k = next(&mut x) % 5_000;
                m.insert(k, i);
                mirror.insert(k, i);
            }
            // A growth may be under way: the walk starts once it is done.
            while !m.begin_walk() {}
            assert!(m.walking);
            let at_start: std::collections::HashSet<u64> = mirror.keys().copied().collect();
            let mut removed = std::collections::HashSet::new();
            let mut visits: std::collections::HashMap<u64, u32> = Default::default();
            let mut i = 10_000u64;
            loop {
                // A few changes between slices: updates, removals, many new keys (more
                // than the eighth planned for them, so both fallbacks run).
                for _ in 0..6 {
                    i += 1;
                    let k = next(&mut x) % 12_000;
                    match i % 4 {
                        0 => {
                            assert_eq!(m.remove(&k), mirror.remove(&k));
                            removed.insert(k);
                        }
                        1 => {
                            *m.get_or_insert_with(k, || 0) += 1;
                            *mirror.entry(k).or_insert(0) += 1;
                        }
                        2 => {
                            if let Some(v) = m.get_mut(&k) {
                                *v += 10;
                            }
                            if let Some(v) = mirror.get_mut(&k) {
                                *v += 10;
                            }
                        }
                        _ => assert_eq!(m.insert(k, i), mirror.insert(k, i)),
                    }
                    assert_eq!(m.get(&k), mirror.get(&k));
                }
                let done = m.walk_step(budget, |k, v| {
                    assert_eq!(mirror.get(k), Some(v), "visited with its value now");
                    *visits.entry(*k).or_default() += 1;
                    1
                });
                if done {
                    break;
                }
            }
            assert!(!m.walking);
            for k in &at_start {
                if !removed.contains(k) {
                    assert_eq!(visits.get(k), Some(&1), "{k} present throughout");
                }
            }
            // Only a key removed during the walk and added again can be visited again: the
            // new key may land in `old` when `new` is full (module doc), which depends on
            // whether the table thread had made `new` by then.
            assert!(
                visits.iter().all(|(k, &n)| n == 1 || removed.contains(k)),
                "nothing visited twice but a key removed and added again"
            );
            let mut all: Vec<(u64, u64)> = m.iter().map(|(k, v)| (*k, *v)).collect();
            let mut want: Vec<(u64, u64)> = mirror.into_iter().collect();
            all.sort();
            want.sort();
            assert_eq!(all, want, "the map is intact after the walk");
        }
    }

    #[test]
    fn a_walk_waits_for_a_growth_under_way_and_grows_again_after() {
        let mut m: SteadyMap<u64, u64> = SteadyMap::default();
        let mut k = 0;
        // Fill until a growth is under way.
        while m.old.is_empty() || m.new.is_empty() || m.old.len() < 2 * STEADY_MAP_MOVE_PER_OP {
            k += 1;
            m.insert(k, k);
        }
        assert!(
            !m.begin_walk(),
            "not while the old table still holds entries"
        );
        while !m.begin_walk() {}
        let mut seen = 0;
        while !m.walk_step(100, |_, _| {
            seen += 1;
            1
        }) {}
        assert_eq!(seen, k as usize);
        for more in k + 1..k + 100_000 {
            m.insert(more, more);
        }
        assert_eq!(m.len(), (k + 99_999) as usize);
    }

    #[test]
    fn a_large_map_gets_its_tables_from_the_table_thread_and_stays_whole() {
        let mut m: SteadyMap<u64, [u8; 64]> = SteadyMap::default();
        let mut asked = 0;
        for k in 0..120_000u64 {
            let had = m.coming.is_some();
            m.insert(k, [k as u8; 64]);
            asked += usize::from(!had && m.coming.is_some());
        }
        assert!(
            asked >= 2,
            "tables of over 1 MiB are asked for ahead: {asked}"
        );
        let mut tries = 0;
        while !m.begin_walk() {
            tries += 1;
            std::thread::yield_now();
        }
        let mut seen = 0u64;
        while !m.walk_step(1000, |k, v| {
            assert_eq!(v[0], *k as u8);
            seen += 1;
            1
        }) {}
        assert_eq!(seen, 120_000, "after {tries} tries to begin");
        for k in 0..120_000u64 {
            assert_eq!(m.get(&k).map(|v| v[0]), Some(k as u8));
        }
    }
}

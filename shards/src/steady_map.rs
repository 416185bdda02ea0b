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

use std::borrow::Borrow;
use std::hash::{Hash, RandomState};

use hashbrown::HashMap;

/// Entries moved from the old table per change while one is being emptied.
pub const STEADY_MAP_MOVE_PER_OP: usize = 1024;

/// A hash map that grows in slices (module docs).
#[derive(Debug)]
pub struct SteadyMap<K, V> {
    new: HashMap<K, V, RandomState>,
    old: HashMap<K, V, RandomState>,
}

impl<K, V> Default for SteadyMap<K, V> {
    fn default() -> Self {
        SteadyMap {
            new: HashMap::with_hasher(RandomState::new()),
            old: HashMap::with_hasher(RandomState::new()),
        }
    }
}

impl<K: Hash + Eq, V> SteadyMap<K, V> {
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
        if self.new.contains_key(k) {
            return self.new.get_mut(k);
        }
        self.old.get_mut(k)
    }

    /// Sets `k` to `v`; returns the value it had.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.step();
        let before = self.old.remove(&k);
        if before.is_none() && !self.new.contains_key(&k) {
            self.make_room();
        }
        self.new.insert(k, v).or(before)
    }

    /// The value of `k`, inserted with `f` if there is none.
    pub fn get_or_insert_with(&mut self, k: K, f: impl FnOnce() -> V) -> &mut V {
        self.step();
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
        self.new.remove(k).or_else(|| self.old.remove(k))
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

    /// Moves a slice of the old table into the new one.
    fn step(&mut self) {
        if self.old.is_empty() {
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
            self.old = HashMap::with_hasher(self.old.hasher().clone());
        }
    }

    /// Before an insert of a new key: if `new` is full, it becomes `old` (then empty,
    /// since a full table only starts moving after the previous one emptied) and a table
    /// twice its size takes its place.
    fn make_room(&mut self) {
        if self.new.len() < self.new.capacity() {
            return;
        }
        // `new` filled at least as many inserts after the last swap as `old` had entries,
        // each of which moved STEADY_MAP_MOVE_PER_OP: `old` is empty unless it was tiny.
        while !self.old.is_empty() {
            self.step();
        }
        let bigger = HashMap::with_capacity_and_hasher(
            (self.new.capacity() * 2).max(8),
            self.new.hasher().clone(),
        );
        self.old = std::mem::replace(&mut self.new, bigger);
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
}

//! The per-shard connection slab: fixed capacity, O(1) insert/get/remove, generation-tagged ids.
//!
//! ## What it owns
//! One [`ConnTable`] per shard holds every connection homed on that shard (whatever `T` the
//! engine stores per connection: socket handle, TLS state, session). Each occupant is named by a
//! [`ConnId`] (`proto::ids`) = (slot index, slot generation). The id is plain data (`Copy`, and
//! [`ConnId::to_u64`] for carrying it in a message), so timers, mesh messages and the service can
//! refer to a connection without holding a reference to it.
//!
//! ## What it must not touch
//! No I/O, no clock, no ring, no locks, no atomics. It is single-threaded by construction:
//! a table belongs to one shard and is never shared (another shard sends a mesh message instead).
//!
//! ## Capacity and lifecycle
//! - [`ConnTable::with_capacity`] reserves room for `max` slots up front (the shard's connection
//!   cap); the slot vector never reallocates. Slots are initialised on first use, so resident
//!   memory follows the peak number of live connections, not the cap.
//! - [`ConnTable::insert`] takes the oldest freed slot (FIFO free list), else a fresh slot, else
//!   fails with [`TableFull`]. FIFO reuse spreads generations over all freed slots, so a stale
//!   id is as unlikely as possible to meet its slot's generation again.
//! - [`ConnTable::remove`] bumps the slot's generation, so every id handed out for the previous
//!   occupant stops matching at once: `get`, `get_mut` and `remove` with a stale id return
//!   `None` and never touch the live occupant.
//! - Generation wraparound: a slot whose generation is already [`CONN_GENERATION_MAX`] when its
//!   occupant is removed is *retired*: it is never handed out again (an id can then never be
//!   reused with an old generation). Each retirement lowers the usable capacity by one; it takes
//!   2^32 reuses of one slot, and the count is exposed by [`ConnTable::retired`] for the
//!   shard's counters.

use std::fmt;

use proto::ids::ConnId;

/// Largest number of slots a table may hold: indices are `u32` and `u32::MAX` marks
/// "no slot" in the free list.
pub const CONN_TABLE_SLOTS_MAX: usize = u32::MAX as usize;

/// Last generation a slot may carry; a slot removed at this generation is retired.
pub const CONN_GENERATION_MAX: u32 = u32::MAX;

/// "No slot" marker in free-list links.
const NIL: u32 = u32::MAX;

const _: () = assert!(CONN_TABLE_SLOTS_MAX <= NIL as usize);

/// [`ConnTable::insert`] found every usable slot occupied.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("connection table full: {max} slots")]
pub struct TableFull {
    /// The table's capacity (the shard's connection cap).
    pub max: usize,
}

/// What a slot holds.
enum Entry<T> {
    /// A live connection.
    Occupied(T),
    /// Free; `next_free` links the FIFO free list (towards the tail), `NIL` at the tail.
    Vacant { next_free: u32 },
    /// Generation exhausted: never handed out again.
    Retired,
}

/// One slot: the generation of its current (or next) occupant and what it holds.
struct Slot<T> {
    generation: u32,
    entry: Entry<T>,
}

/// A fixed-capacity slab of connections named by generation-tagged [`ConnId`]s.
pub struct ConnTable<T> {
    /// Every slot ever used, in index order; capacity reserved for `max` at construction and
    /// never grown past it.
    slots: Vec<Slot<T>>,
    /// The shard's connection cap: `slots.len()` never exceeds it.
    max: usize,
    /// Oldest freed slot (taken first), or `NIL`.
    free_head: u32,
    /// Newest freed slot (appended to), or `NIL`.
    free_tail: u32,
    /// Occupied slots.
    len: usize,
    /// Slots retired because their generation would wrap.
    retired: usize,
}

impl<T> ConnTable<T> {
    /// Makes an empty table for at most `max` connections, reserving all slots up front.
    ///
    /// Panics if `max` exceeds [`CONN_TABLE_SLOTS_MAX`] (a configuration bug).
    pub fn with_capacity(max: usize) -> Self {
        assert!(
            max <= CONN_TABLE_SLOTS_MAX,
            "connection cap {max} exceeds {CONN_TABLE_SLOTS_MAX}"
        );
        ConnTable {
            slots: Vec::with_capacity(max),
            max,
            free_head: NIL,
            free_tail: NIL,
            len: 0,
            retired: 0,
        }
    }

    /// Whether [`ConnTable::insert`] would refuse (every usable slot is taken).
    pub fn is_full(&self) -> bool {
        self.free_head == NIL && self.slots.len() >= self.max
    }

    /// Stores `value` and returns its id, or [`TableFull`] when every usable slot is taken.
    pub fn insert(&mut self, value: T) -> Result<ConnId, TableFull> {
        let index = if self.free_head != NIL {
            self.pop_free()
        } else if self.slots.len() < self.max {
            let index = self.slots.len();
            self.slots.push(Slot {
                generation: 0,
                entry: Entry::Vacant { next_free: NIL },
            });
            assert!(self.slots.capacity() >= self.max, "slab reallocated");
            index as u32
        } else {
            return Err(TableFull { max: self.max });
        };
        let slot = &mut self.slots[index as usize];
        slot.entry = Entry::Occupied(value);
        self.len += 1;
        Ok(ConnId::new(index, slot.generation))
    }

    /// The occupant named by `id`, or `None` if `id` is stale or was never handed out.
    pub fn get(&self, id: ConnId) -> Option<&T> {
        match self.slots.get(id.index() as usize) {
            Some(Slot {
                generation,
                entry: Entry::Occupied(value),
            }) if *generation == id.generation() => Some(value),
            _ => None,
        }
    }

    /// The id of whoever occupies slot `index` now, if anyone (completions from the kernel
    /// name a slot by index; the slot cannot change hands while they are in flight).
    pub fn id_at(&self, index: u32) -> Option<ConnId> {
        match self.slots.get(index as usize) {
            Some(Slot {
                generation,
                entry: Entry::Occupied(_),
            }) => Some(ConnId::new(index, *generation)),
            _ => None,
        }
    }

    /// Mutable access to the occupant named by `id`, or `None` if `id` is stale.
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        match self.slots.get_mut(id.index() as usize) {
            Some(Slot {
                generation,
                entry: Entry::Occupied(value),
            }) if *generation == id.generation() => Some(value),
            _ => None,
        }
    }

    /// Takes the occupant named by `id` out of the table; `None` (table untouched) if `id` is
    /// stale. The slot's generation is bumped (or the slot retired) so `id` never matches again.
    pub fn remove(&mut self, id: ConnId) -> Option<T> {
        self.get(id)?;
        let slot = &mut self.slots[id.index() as usize];
        let retire = slot.generation == CONN_GENERATION_MAX;
        let next = if retire {
            Entry::Retired
        } else {
            slot.generation += 1;
            Entry::Vacant { next_free: NIL }
        };
        let Entry::Occupied(value) = std::mem::replace(&mut slot.entry, next) else {
            unreachable!("get() just matched an occupied slot");
        };
        self.len -= 1;
        if retire {
            self.retired += 1;
        } else {
            self.push_free(id.index());
        }
        Some(value)
    }

    /// Live connections.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no connection is live.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The cap given to [`ConnTable::with_capacity`] (retired slots included).
    pub fn capacity(&self) -> usize {
        self.max
    }

    /// Slots retired because their generation would have wrapped; usable capacity is
    /// `capacity() - retired()`.
    pub fn retired(&self) -> usize {
        self.retired
    }

    /// Every live connection with its id, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &T)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| match &slot.entry {
                Entry::Occupied(value) => Some((ConnId::new(index as u32, slot.generation), value)),
                _ => None,
            })
    }

    /// Unlinks and returns the oldest free slot. The free list must be non-empty.
    fn pop_free(&mut self) -> u32 {
        let index = self.free_head;
        assert!(index != NIL, "pop from empty free list");
        let Entry::Vacant { next_free } = self.slots[index as usize].entry else {
            panic!("free list links a slot that is not vacant: {index}");
        };
        self.free_head = next_free;
        if next_free == NIL {
            assert!(self.free_tail == index, "free list tail out of sync");
            self.free_tail = NIL;
        }
        index
    }

    /// Appends a vacant slot to the tail of the free list.
    fn push_free(&mut self, index: u32) {
        assert!(
            matches!(
                self.slots[index as usize].entry,
                Entry::Vacant { next_free: NIL }
            ),
            "only an unlinked vacant slot joins the free list"
        );
        if self.free_tail == NIL {
            assert!(self.free_head == NIL, "free list head out of sync");
            self.free_head = index;
        } else {
            self.slots[self.free_tail as usize].entry = Entry::Vacant { next_free: index };
        }
        self.free_tail = index;
    }
}

impl<T> fmt::Debug for ConnTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnTable")
            .field("len", &self.len)
            .field("capacity", &self.max)
            .field("retired", &self.retired)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove() {
        let mut table = ConnTable::with_capacity(4);
        let a = table.insert("a").unwrap();
        let b = table.insert("b").unwrap();
        assert_ne!(a, b);
        assert_eq!(table.len(), 2);
        assert_eq!(table.get(a), Some(&"a"));
        *table.get_mut(b).unwrap() = "bee";
        assert_eq!(table.get(b), Some(&"bee"));
        assert_eq!(table.remove(a), Some("a"));
        assert_eq!(table.get(a), None);
        assert_eq!(table.remove(a), None);
        assert_eq!(table.len(), 1);
        assert_eq!(table.capacity(), 4);
    }

    #[test]
    fn stale_id_after_reuse_is_rejected() {
        let mut table = ConnTable::with_capacity(1);
        let old = table.insert(1).unwrap();
        assert_eq!(table.remove(old), Some(1));
        let new = table.insert(2).unwrap();
        assert_eq!(new.index(), old.index(), "the only slot is reused");
        assert_ne!(new.generation(), old.generation());
        assert_eq!(table.get(old), None);
        assert_eq!(table.get_mut(old), None);
        assert_eq!(table.remove(old), None);
        assert_eq!(table.get(new), Some(&2), "live occupant untouched");
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn unknown_index_is_rejected() {
        let mut table: ConnTable<u8> = ConnTable::with_capacity(2);
        let forged = ConnId::from_u64(7);
        assert_eq!(table.get(forged), None);
        assert_eq!(table.remove(forged), None);
    }

    #[test]
    fn full_table_errors_and_keeps_working() {
        let mut table = ConnTable::with_capacity(3);
        let ids: Vec<_> = (0..3).map(|i| table.insert(i).unwrap()).collect();
        assert_eq!(table.insert(99), Err(TableFull { max: 3 }));
        assert_eq!(table.len(), 3);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(table.get(*id), Some(&i));
        }
        assert_eq!(table.remove(ids[1]), Some(1));
        let again = table.insert(42).unwrap();
        assert_eq!(table.get(again), Some(&42));
        assert_eq!(table.insert(43), Err(TableFull { max: 3 }));
    }

    #[test]
    fn zero_capacity_is_always_full() {
        let mut table = ConnTable::with_capacity(0);
        assert_eq!(table.insert(()), Err(TableFull { max: 0 }));
        assert!(table.is_empty());
    }

    #[test]
    fn generation_wrap_retires_the_slot() {
        let mut table = ConnTable::with_capacity(2);
        let id = table.insert("x").unwrap();
        // Jump the slot to its last generation instead of 2^32 reuses.
        table.slots[id.index() as usize].generation = CONN_GENERATION_MAX;
        let last = ConnId::new(id.index(), CONN_GENERATION_MAX);
        assert_eq!(table.get(id), None);
        assert_eq!(table.remove(last), Some("x"));
        assert_eq!(table.retired(), 1);
        assert_eq!(table.get(last), None);
        // The retired slot is never reused: the next inserts take slot 1, then the table is full.
        let next = table.insert("y").unwrap();
        assert_ne!(next.index(), last.index());
        assert_eq!(table.insert("z"), Err(TableFull { max: 2 }));
        assert_eq!(table.remove(last), None);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn iter_yields_live_entries_with_ids() {
        let mut table = ConnTable::with_capacity(4);
        let a = table.insert('a').unwrap();
        let b = table.insert('b').unwrap();
        let c = table.insert('c').unwrap();
        table.remove(b);
        let seen: Vec<_> = table.iter().map(|(id, v)| (id, *v)).collect();
        assert_eq!(seen, vec![(a, 'a'), (c, 'c')]);
    }

    #[test]
    fn free_list_is_fifo() {
        let mut table = ConnTable::with_capacity(3);
        let ids: Vec<_> = (0..3).map(|i| table.insert(i).unwrap()).collect();
        table.remove(ids[2]);
        table.remove(ids[0]);
        assert_eq!(table.insert(10).unwrap().index(), ids[2].index());
        assert_eq!(table.insert(11).unwrap().index(), ids[0].index());
    }

    #[test]
    fn churn_keeps_len_correct() {
        const CYCLES: usize = 100_000;
        const LIVE_MAX: usize = 64;
        let mut table = ConnTable::with_capacity(LIVE_MAX);
        let mut live: Vec<(ConnId, usize)> = Vec::new();
        let mut stale: Vec<ConnId> = Vec::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        for i in 0..CYCLES {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let insert = live.len() < LIVE_MAX && (live.is_empty() || rng & 1 == 0);
            if insert {
                live.push((table.insert(i).unwrap(), i));
            } else {
                let (id, value) = live.swap_remove((rng >> 8) as usize % live.len());
                assert_eq!(table.remove(id), Some(value));
                stale.push(id);
            }
            assert_eq!(table.len(), live.len());
        }
        for (id, value) in &live {
            assert_eq!(table.get(*id), Some(value));
        }
        assert!(stale.iter().all(|id| table.get(*id).is_none()));
        assert_eq!(table.iter().count(), live.len());
        assert_eq!(table.retired(), 0);
    }
}

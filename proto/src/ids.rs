//! The ids the engine and the messaging core both name things by: a shard ([`ShardId`]) and
//! a connection ([`ConnId`]). One definition, used by both; no I/O, no state.
//!
//! ## What it owns
//! The two newtypes and how a [`ConnId`] packs into a `u64` to travel in a message. Which slot
//! an id names, and when it goes stale, is the engine's connection table's business
//! (`engine/src/conn/table.rs`); the core only carries ids and compares them.

use std::fmt;

/// A shard's index, `0..shard_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

/// Names one occupant of one slot of a shard's connection table; stale once that occupant
/// is removed (the table bumps the slot's generation).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

impl ConnId {
    /// The id of slot `index` at `generation` (the connection table hands these out).
    pub fn new(index: u32, generation: u32) -> Self {
        ConnId { index, generation }
    }

    /// The slot index in the shard's table.
    pub fn index(self) -> u32 {
        self.index
    }

    /// The slot's generation when this id was handed out.
    pub fn generation(self) -> u32 {
        self.generation
    }

    /// Packs the id into a `u64` (generation in the high half, index in the low half) so it
    /// can travel in a message.
    pub fn to_u64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// Unpacks an id made by [`ConnId::to_u64`]. Any `u64` decodes; a forged or stale one simply
    /// matches no occupant.
    pub fn from_u64(packed: u64) -> Self {
        ConnId {
            index: packed as u32,
            generation: (packed >> 32) as u32,
        }
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn {}.{}", self.index, self.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_through_u64() {
        let id = ConnId::new(0xdead_beef, 0x1234_5678);
        assert_eq!(id.to_u64(), 0x1234_5678_dead_beef);
        assert_eq!(ConnId::from_u64(id.to_u64()), id);
        assert_eq!(
            id.to_string(),
            format!("conn {}.{}", 0xdead_beef_u32, 0x1234_5678)
        );
    }
}

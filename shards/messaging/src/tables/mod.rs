//! What a shard keeps, one table per concern: accounts, sessions, queues, dedupe windows,
//! PIN codes, budgets, groups, presence. Pure data structures with their own invariants and
//! bounds; they depend on `state/`'s shared types and on each other from the bottom up,
//! never on a handler or on the shard state that holds them.

pub mod admission;
pub mod budgets;
pub mod consent;
pub mod dedupe;
pub mod groups;
pub mod id_hash;
pub mod pin_codes;
pub mod presence;
pub mod queues;
pub mod recent_acked;
pub mod registry;
pub mod sessions;
pub mod steady_map;
pub mod table_thread;

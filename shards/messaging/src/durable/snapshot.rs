//! A snapshot of one shard's durable state — what compaction writes in place of the log —
//! built in slices between events, so that no event waits for it however large the state.
//!
//! The snapshot is **fuzzy**: each entry is written as it is when the walk reaches it, and
//! entries change meanwhile. It is made exact by what follows it in the compacted log:
//! every record appended since the walk began (`journal.rs` keeps them). Replaying the
//! snapshot and then those records gives the state at the end, because:
//! - every entry present from the walk's start to its end is written once
//!   (`SteadyMap`'s walk), with its value at some moment after the start; every change
//!   after the start has its record among those that follow;
//! - accounts, groups and the id mark are "latest wins", so a later record corrects an
//!   older value; a dedupe window ignores a copy whose server id is not above its newest
//!   (`dedupe.rs`: ids only grow per window), so the order replay meets copies in does
//!   not matter;
//! - an item the snapshot holds may come again in the records after it: replay keeps the
//!   first and skips the rest (`ShardState::replay`); a removal names its id, so it works
//!   wherever the item stands.
//!
//! Order: the id mark first (ids of items the snapshot drops are never issued again), then
//! accounts, groups, queued items, and dedupe windows last, so that every queued item the
//! snapshot holds was seen by its window before the window was written (replay then meets
//! each item as already known, and later ones in the order they came).
//!
//! A slice ends once it has written `SNAPSHOT_SLICE_BYTES`, but never inside one user's
//! queue, which is written whole (at most `QUEUE_ITEMS_PER_USER_MAX` items: a longer
//! slice for a user at the cap).
//!
//! This module reads the state's maps (and moves their entries between a map's two tables,
//! which is how a walk keeps its place); it changes no value.

use std::hash::Hash;

use crate::durable::record::{record, IdMarkRec, Record};
use crate::state::{item_record, ShardState};
use crate::tables::steady_map::SteadyMap;

/// Where a snapshot's walk stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Accounts,
    Groups,
    Queues,
    Dedupe,
    Done,
}

impl Part {
    fn next(self) -> Part {
        match self {
            Part::Accounts => Part::Groups,
            Part::Groups => Part::Queues,
            Part::Queues => Part::Dedupe,
            Part::Dedupe | Part::Done => Part::Done,
        }
    }
}

/// A snapshot under way: call [`ShardState::snapshot_step`] until it says done.
#[derive(Debug)]
pub struct SnapshotWalk {
    part: Part,
    /// The current part's map walk has begun.
    begun: bool,
    /// Slices taken so far.
    pub slices: u64,
}

/// One slice of one map's walk, or its beginning (a slice of its own, once any growth
/// under way has ended); true once every entry is visited.
fn walk_slice<K, V, S>(
    map: &mut SteadyMap<K, V, S>,
    begun: &mut bool,
    budget: usize,
    visit: impl FnMut(&K, &V) -> usize,
) -> bool
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: std::hash::BuildHasher + Clone + Send + 'static,
{
    if !*begun {
        // Beginning allocates the table the walk fills (its control bytes are set: about
        // 1 ms at a million entries): a slice of its own.
        *begun = map.begin_walk();
        return false;
    }
    map.walk_step(budget, visit)
}

/// A record of `kind`.
fn rec(kind: record::Kind) -> Record {
    Record { kind: Some(kind) }
}

impl ShardState {
    /// Starts a snapshot; emits its first record, the id mark.
    pub fn begin_snapshot(&mut self, emit: &mut impl FnMut(Record) -> usize) -> SnapshotWalk {
        emit(rec(record::Kind::IdMark(IdMarkRec {
            next_seq: self.ids.mark(),
        })));
        SnapshotWalk {
            part: Part::Accounts,
            begun: false,
            slices: 0,
        }
    }

    /// Emits up to about `budget` encoded bytes of the snapshot (`emit` returns each
    /// record's size); true when the snapshot is complete.
    pub fn snapshot_step(
        &mut self,
        walk: &mut SnapshotWalk,
        budget: usize,
        emit: &mut impl FnMut(Record) -> usize,
    ) -> bool {
        walk.slices += 1;
        let mut spent = 0;
        while walk.part != Part::Done && spent < budget {
            let left = budget - spent;
            let mut cost = |r| {
                let n = emit(r);
                spent += n;
                n
            };
            let done = match walk.part {
                Part::Accounts => walk_slice(
                    &mut self.registry.accounts,
                    &mut walk.begun,
                    left,
                    |p, a| {
                        a.record(*p)
                            .map_or(0, |a| cost(rec(record::Kind::Account(a))))
                    },
                ),
                Part::Groups => {
                    walk_slice(&mut self.groups.groups, &mut walk.begun, left, |id, g| {
                        cost(rec(record::Kind::Group(g.record(*id))))
                    })
                }
                Part::Queues => walk_slice(
                    &mut self.queues.by_user,
                    &mut walk.begun,
                    left,
                    |user, q| {
                        q.items()
                            .map(|i| cost(rec(record::Kind::Item(item_record(*user, i)))))
                            .sum()
                    },
                ),
                Part::Dedupe => {
                    walk_slice(&mut self.dedupe.windows, &mut walk.begun, left, |p, w| {
                        w.records(p)
                            .map(|d| cost(rec(record::Kind::Dedupe(d))))
                            .sum()
                    })
                }
                Part::Done => true,
            };
            if !done {
                // The slice is spent, or a map's growth must end before its walk begins.
                break;
            }
            walk.part = walk.part.next();
            walk.begun = false;
        }
        walk.part == Part::Done
    }

    /// The whole snapshot in one call (tests and tools; the shard builds it in slices).
    pub fn snapshot(&mut self) -> Vec<Record> {
        let mut out = Vec::new();
        let mut emit = |r: Record| {
            out.push(r);
            1
        };
        let mut walk = self.begin_snapshot(&mut emit);
        while !self.snapshot_step(&mut walk, usize::MAX, &mut emit) {}
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::durable::record::{AccountRec, DedupeRec, GroupRec, ItemRec};
    use crate::sim::fuzz::Harness;

    /// A shard's durable state in a form two shards can be compared by: accounts and
    /// groups by key, each user's queue in order, each dedupe window in order.
    #[derive(Debug, PartialEq, Default)]
    struct Durable {
        accounts: BTreeMap<String, AccountRec>,
        groups: BTreeMap<u64, GroupRec>,
        queues: BTreeMap<Option<crate::state::home::Phone>, Vec<ItemRec>>,
        windows: BTreeMap<(String, u64), Vec<DedupeRec>>,
    }

    fn durable(s: &mut ShardState) -> Durable {
        let mut d = Durable::default();
        for r in s.snapshot() {
            match r.kind.expect("snapshots hold kinds") {
                record::Kind::Account(a) => {
                    d.accounts.insert(a.phone.clone(), a);
                }
                record::Kind::Group(g) => {
                    d.groups.insert(g.group_id, g);
                }
                record::Kind::Item(i) => d.queues.entry(i.user).or_default().push(i),
                record::Kind::Dedupe(w) => d
                    .windows
                    .entry((w.sender.clone(), w.group_id))
                    .or_default()
                    .push(w),
                record::Kind::IdMark(_) => {}
                record::Kind::Removed(_) => panic!("a snapshot holds no tombstones"),
            }
        }
        d
    }

    /// The first difference between two shards' durable states, keyed, for a readable failure.
    fn first_difference(got: &Durable, want: &Durable) -> Option<String> {
        fn keyed<K: Ord + std::fmt::Debug + Clone, V: PartialEq + std::fmt::Debug>(
            what: &str,
            got: &BTreeMap<K, V>,
            want: &BTreeMap<K, V>,
        ) -> Option<String> {
            let keys: std::collections::BTreeSet<&K> = got.keys().chain(want.keys()).collect();
            keys.into_iter()
                .find(|k| got.get(k) != want.get(k))
                .map(|k| {
                    format!(
                        "{what} {k:?}: replayed {:?}, live {:?}",
                        got.get(k),
                        want.get(k)
                    )
                })
        }
        keyed("account", &got.accounts, &want.accounts)
            .or_else(|| keyed("group", &got.groups, &want.groups))
            .or_else(|| keyed("queue", &got.queues, &want.queues))
            .or_else(|| keyed("window", &got.windows, &want.windows))
    }

    /// Every id the shard issued so far is below what a replayed shard issues next.
    fn highest_issued(s: &ShardState) -> u64 {
        s.ids.next_seq()
    }

    #[test]
    fn a_snapshot_built_in_slices_during_traffic_then_the_records_since_replays_to_the_state() {
        let mut compared = 0;
        for (shards, seed, budget) in [(1, 5, 1), (2, 6, 3), (3, 7, 2), (2, 8, 8), (4, 9, 1)] {
            let mut h = Harness::new(shards, 10, seed);
            for _ in 0..6 {
                h.login();
            }
            for _ in 0..1_500 {
                h.random_step();
            }
            // Every shard snapshots in slices of `budget` records, with random traffic
            // between slices, and keeps what its log got since its walk began.
            let mut walks = Vec::new();
            for i in 0..shards {
                let mut snap = Vec::new();
                let walk = h.sim.shards[i].begin_snapshot(&mut |r| {
                    snap.push(r);
                    1
                });
                walks.push((walk, snap, h.sim.logs[i].len(), false));
            }
            let mut slices_with_traffic = 0;
            while walks.iter().any(|w| !w.3) {
                for (i, (walk, snap, _, done)) in walks.iter_mut().enumerate() {
                    if !*done {
                        *done = h.sim.shards[i].snapshot_step(walk, budget, &mut |r| {
                            snap.push(r);
                            1
                        });
                    }
                }
                for _ in 0..3 {
                    h.random_step();
                }
                slices_with_traffic += 1;
            }
            assert!(
                slices_with_traffic > 3,
                "the walk spanned too little traffic: {slices_with_traffic} slices"
            );
            for (i, (walk, snap, from, _)) in walks.into_iter().enumerate() {
                assert!(walk.slices > 1);
                let mut log = snap;
                log.extend(h.sim.logs[i][from..].iter().cloned());
                let mut fresh = ShardState::new(
                    proto::ids::ShardId(i),
                    shards,
                    Default::default(),
                    Box::new(|b: &mut [u8]| b.fill(3)),
                    h.sim.now,
                );
                fresh.replay(log);
                let live = &mut h.sim.shards[i];
                assert!(fresh.ids.next_seq() >= highest_issued(live));
                let want = durable(live);
                assert!(!want.queues.is_empty() || !want.accounts.is_empty());
                if let Some(d) = first_difference(&durable(&mut fresh), &want) {
                    panic!("shard {i} of {shards}, seed {seed}: {d}");
                }
                compared += want.queues.values().map(Vec::len).sum::<usize>();
            }
        }
        assert!(compared > 50, "too few queued items compared: {compared}");
    }
}

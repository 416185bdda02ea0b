//! Per-shard statistics: once a period each shard's housekeeping loop builds a [`ShardStats`]
//! snapshot from its own state and publishes it, by value, into its slot on the
//! [`StatsBoard`], where the admin thread (or [`crate::Runtime::stats`]) reads it.
//!
//! Protocol, and why it is safe and cheap:
//! 1. Everything counted between snapshots is a plain `u64` in the shard's `ShardCounters`,
//!    touched only by the shard's thread (no atomics, no locks on the per-frame path).
//! 2. Every [`STATS_PERIOD_MS`], the housekeeping loop (never a frame callback) reads those
//!    counters, the timer wheel's and mesh outboxes' lengths, the loop's busy time
//!    (for utilisation), the service's [`crate::Service::stats`] and the latency histograms
//!    (the engine's TLS handshake and mesh hop, and [`crate::Service::histograms`]),
//!    computes the decayed rates and checks the alarms — all shard-locally — and builds one
//!    `ShardStats`. The first one goes out at the shard's first tick, right after the
//!    service started, so the board is never empty for long.
//! 3. It publishes the snapshot into a one-slot lock-free queue (`ArrayQueue::force_push`):
//!    one compare-exchange per second and no lock, so the shard's `locks_taken` stays zero.
//!    The snapshot it displaces is freed on the shard.
//! 4. A reader pops the snapshot, clones it and pushes it back (unless the shard published
//!    a newer one meanwhile, in which case the clone is merely a second old). Only readers
//!    pop, so a shard never waits on a reader and a reader never sees a torn snapshot.
//!
//! Utilisation comes from the shard loop's own clock: the time each turn spent working, not
//! waiting in `io_uring_enter` (`ShardIo::busy_ns`, reset here each period). The longest
//! turn (`ShardIo::turn_max_ns`: its work, and its `io_uring_enter` when it did not wait
//! there, which is the kernel's inline work on its submissions) is published as
//! `turn_max_us`: every connection of the shard waited at least that long once.
//!
//! This module must not be called from the per-frame path, and must not touch another
//! shard's state: each shard publishes only its own slot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use crate::observe::alarm::{ActiveAlarm, AlarmConfig, Alarms};
use crate::observe::counters::ShardCounters;
use crate::observe::histogram::{EngineLatency, NamedHistogram};
use crate::service::Service;
use crate::shard_io::ShardCell;

/// How often a shard publishes its statistics.
pub const STATS_PERIOD_MS: u64 = 1_000;
/// Decay windows of the rates, in seconds.
pub const RATE_WINDOWS_S: [u64; 3] = [1, 10, 100];
/// Engine statistic an alarm may watch: the deepest mesh outbox (messages) of any peer.
pub const STAT_MESH_OUTBOX_DEPTH_MAX: &str = "mesh_outbox_depth_max";
/// Engine statistic an alarm may watch: utilisation over the last period, percent.
pub const STAT_UTILISATION_PCT: &str = "utilisation_pct";
/// Engine statistic an alarm may watch: the longest loop turn over the last period (its
/// work, and its `io_uring_enter` when it did not wait), ms (every connection of the shard
/// waited that long).
pub const STAT_TURN_MAX_MS: &str = "turn_max_ms";
/// How many times a reader retries a slot another reader is holding.
const READ_RETRIES_MAX: usize = 1_000;

/// A rate (per second) with exponential decay over 1 s, 10 s and 100 s.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rate {
    /// One value per window of [`RATE_WINDOWS_S`].
    pub per_s: [f64; 3],
}

impl Rate {
    /// Folds in `delta` events seen over `dt_s` seconds.
    pub fn update(&mut self, delta: u64, dt_s: f64) {
        if dt_s <= 0.0 {
            return;
        }
        self.fold(delta as f64 / dt_s, dt_s);
    }

    /// Folds in an instantaneous value that held for `dt_s` seconds.
    pub fn fold(&mut self, value: f64, dt_s: f64) {
        for (r, w) in self.per_s.iter_mut().zip(RATE_WINDOWS_S) {
            let alpha = 1.0 - (-dt_s / w as f64).exp();
            *r += alpha * (value - *r);
        }
    }
}

/// Counters that get decayed rates, by name.
pub const RATED: [&str; 4] = ["frames_in", "frames_out", "accepts", "mesh_msgs_sent"];

fn rated_values(c: &ShardCounters) -> [u64; 4] {
    [c.frames_in, c.frames_out, c.accepts, c.mesh_msgs_sent]
}

/// One shard's statistics at one moment, published by value.
#[derive(Debug, Clone, Default)]
pub struct ShardStats {
    /// Which shard.
    pub shard: usize,
    /// Publications so far (1 for the first); readers wait for it to move.
    pub seq: u64,
    /// Wall clock at publication, ms since the Unix epoch.
    pub at_ms: u64,
    /// Everything the engine counts (`conns_open` is the open connections).
    pub counters: ShardCounters,
    /// Entries in the timer wheel (connection deadlines and service timers).
    pub timers: u64,
    /// Messages queued in this shard's outbox per peer shard (index = peer), waiting for the
    /// loop's end-of-turn flush; it grows while a full ring makes the flush wait.
    pub mesh_outbox: Vec<u64>,
    /// Time the shard's loop spent working (not waiting in the kernel), since start, ns.
    pub busy_ns: u64,
    /// Turns of the shard's loop (`io_uring_enter` calls) since start. (The name is the
    /// JSON key `/stats` has always shown; the loop runs no task per turn.)
    pub tasks_run: u64,
    /// The longest loop turn over the last period (its work, and its `io_uring_enter`
    /// when it did not wait), in µs: the worst stall any connection of the shard saw.
    pub turn_max_us: u64,
    /// Busy time over the last period, percent of wall time.
    pub utilisation_pct: f64,
    /// `utilisation_pct` decayed over the rate windows.
    pub utilisation: Rate,
    /// Decayed rates of the counters named in [`RATED`], same order.
    pub rates: [Rate; 4],
    /// Locks this shard's thread took through [`crate::sync`] since start.
    pub locks_taken: u64,
    /// What the service reported ([`crate::Service::stats`]).
    pub service: Vec<(&'static str, u64)>,
    /// Help text for the service's statistics ([`crate::Service::stat_help`]).
    pub service_help: &'static [(&'static str, &'static str)],
    /// Latency histograms since start: the engine's, then the service's
    /// ([`crate::Service::histograms`]).
    pub histograms: Vec<NamedHistogram>,
    /// Alarms over their threshold now.
    pub alarms: Vec<ActiveAlarm>,
    /// The statistics an alarm rule watches, active or not (each exported as 0 or 1).
    pub alarms_watched: Vec<&'static str>,
}

impl ShardStats {
    /// What a shard that has not published yet shows: every engine number zero, its engine
    /// histograms empty, nothing from its service (which has not reported yet).
    pub fn zero(shard: usize, shards: usize) -> Self {
        ShardStats {
            shard,
            mesh_outbox: vec![0; shards],
            histograms: EngineLatency::default().named().to_vec(),
            ..Default::default()
        }
    }

    /// The deepest outbox and its peer.
    pub fn mesh_outbox_max(&self) -> (u64, usize) {
        let mut best = (0, 0);
        for (peer, &d) in self.mesh_outbox.iter().enumerate() {
            if d > best.0 {
                best = (d, peer);
            }
        }
        best
    }

    /// A service statistic by name.
    pub fn service_stat(&self, name: &str) -> Option<u64> {
        self.service
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}

struct Slot {
    latest: ArrayQueue<Box<ShardStats>>,
    /// Publications so far; written by the shard only (a plain store, not an RMW).
    published: AtomicU64,
}

/// One slot per shard holding its latest snapshot.
pub struct StatsBoard {
    slots: Vec<Slot>,
}

impl std::fmt::Debug for StatsBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsBoard")
            .field("shards", &self.slots.len())
            .finish()
    }
}

impl StatsBoard {
    /// A board for `shards` shards, every slot empty.
    pub fn new(shards: usize) -> Self {
        StatsBoard {
            slots: (0..shards)
                .map(|_| Slot {
                    latest: ArrayQueue::new(1),
                    published: AtomicU64::new(0),
                })
                .collect(),
        }
    }

    /// Shards on the board.
    pub fn shards(&self) -> usize {
        self.slots.len()
    }

    fn publish(&self, stats: ShardStats) {
        let slot = &self.slots[stats.shard];
        let seq = stats.seq;
        drop(slot.latest.force_push(Box::new(stats)));
        slot.published.store(seq, Ordering::Release);
    }

    /// A copy of shard `shard`'s latest snapshot; `None` before its first publication.
    pub fn read(&self, shard: usize) -> Option<ShardStats> {
        let slot = &self.slots[shard];
        for _ in 0..READ_RETRIES_MAX {
            if let Some(b) = slot.latest.pop() {
                let copy = (*b).clone();
                // Fails only when the shard published a newer one meanwhile: keep that.
                let _ = slot.latest.push(b);
                return Some(copy);
            }
            if slot.published.load(Ordering::Acquire) == 0 {
                return None;
            }
            // Another reader holds it for the length of a clone.
            std::thread::yield_now();
        }
        None
    }

    /// Every shard's latest snapshot, in shard order.
    pub fn read_all(&self) -> Vec<Option<ShardStats>> {
        (0..self.slots.len()).map(|i| self.read(i)).collect()
    }
}

/// A shard's statistics state between publications; lives in its housekeeping loop.
pub(crate) struct StatsKeeper {
    shard: usize,
    board: Arc<StatsBoard>,
    alarms: Alarms,
    seq: u64,
    last_ms: u64,
    last_rated: [u64; 4],
    rates: [Rate; 4],
    utilisation: Rate,
    busy_ns: u64,
    tasks_run: u64,
}

impl StatsKeeper {
    pub(crate) fn new(shard: usize, board: Arc<StatsBoard>, alarms: AlarmConfig) -> Self {
        StatsKeeper {
            shard,
            board,
            alarms: Alarms::new(alarms),
            seq: 0,
            last_ms: 0,
            last_rated: [0; 4],
            rates: [Rate::default(); 4],
            utilisation: Rate::default(),
            busy_ns: 0,
            tasks_run: 0,
        }
    }

    /// Publishes a snapshot if a period has passed since the last one (the first call starts
    /// the clock).
    pub(crate) fn tick<S: Service>(&mut self, cell: &mut ShardCell<S>) {
        // Periods on the monotonic clock: a step of the wall clock neither stalls the
        // statistics nor makes a period negative.
        let now = cell.io.mono_ms;
        if self.last_ms == 0 {
            self.last_ms = now;
            // Start utilisation from here: the shard's startup is not load.
            cell.io.busy_ns = 0;
            cell.io.turn_max_ns = 0;
            // Publish at once, so the service's statistics are on the board from the
            // shard's first moment rather than a period later (its rates start at zero).
            let stats = self.build(cell, now);
            self.board.publish(stats);
            return;
        }
        if now < self.last_ms + STATS_PERIOD_MS {
            return;
        }
        let stats = self.build(cell, now);
        self.board.publish(stats);
    }

    fn build<S: Service>(&mut self, cell: &mut ShardCell<S>, now: u64) -> ShardStats {
        let dt_s = (now - self.last_ms) as f64 / 1000.0;
        self.last_ms = now;
        self.seq += 1;
        let counters = cell.io.counters.clone();
        for ((rate, last), v) in self
            .rates
            .iter_mut()
            .zip(self.last_rated.iter_mut())
            .zip(rated_values(&counters))
        {
            rate.update(v.saturating_sub(*last), dt_s);
            *last = v;
        }
        let busy = std::mem::take(&mut cell.io.busy_ns);
        let turn_max_ns = std::mem::take(&mut cell.io.turn_max_ns);
        self.busy_ns += busy;
        self.tasks_run = cell.io.turns;
        let utilisation_pct = if dt_s > 0.0 {
            (busy as f64 / (dt_s * 1e9) * 100.0).clamp(0.0, 100.0)
        } else {
            0.0
        };
        self.utilisation.fold(utilisation_pct, dt_s);
        let mut stats = ShardStats {
            shard: self.shard,
            seq: self.seq,
            at_ms: cell.io.now_ms,
            counters,
            timers: cell.io.timers.len() as u64,
            mesh_outbox: cell.io.mesh.len_per_peer().map(|n| n as u64).collect(),
            busy_ns: self.busy_ns,
            tasks_run: self.tasks_run,
            turn_max_us: turn_max_ns / 1000,
            utilisation_pct,
            utilisation: self.utilisation,
            rates: self.rates,
            locks_taken: crate::sync::locks_taken(),
            service: cell.service.stats(),
            service_help: cell.service.stat_help(),
            histograms: cell
                .io
                .latency
                .named()
                .into_iter()
                .chain(cell.service.histograms())
                .collect(),
            alarms: Vec::new(),
            alarms_watched: self.alarms.watched(),
        };
        stats.alarms = self.check_alarms(&stats, &cell.service, now);
        stats
    }

    fn check_alarms<S: Service>(
        &mut self,
        stats: &ShardStats,
        service: &S,
        now: u64,
    ) -> Vec<ActiveAlarm> {
        let value = |stat: &str| match stat {
            STAT_MESH_OUTBOX_DEPTH_MAX => Some(stats.mesh_outbox_max().0),
            STAT_UTILISATION_PCT => Some(stats.utilisation_pct as u64),
            STAT_TURN_MAX_MS => Some(stats.turn_max_us / 1000),
            other => stats.service_stat(other),
        };
        let offender = |stat: &str| match stat {
            STAT_MESH_OUTBOX_DEPTH_MAX => format!("peer shard {}", stats.mesh_outbox_max().1),
            STAT_UTILISATION_PCT | STAT_TURN_MAX_MS => format!("shard {}", stats.shard),
            other => service.stat_offender(other).unwrap_or_default(),
        };
        self.alarms.check(self.shard, now, value, offender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_converge_at_their_own_speed() {
        let mut r = Rate::default();
        for _ in 0..5 {
            r.update(1000, 1.0);
        }
        assert!(
            (r.per_s[0] - 1000.0).abs() < 10.0,
            "1 s window is there: {r:?}"
        );
        assert!(
            r.per_s[1] > 300.0 && r.per_s[1] < 500.0,
            "10 s halfway: {r:?}"
        );
        assert!(r.per_s[2] < 60.0, "100 s barely moved: {r:?}");
        r.update(0, 0.0);
        assert!(r.per_s[0] > 990.0, "a zero interval changes nothing");
    }

    #[test]
    fn board_reads_copies_and_keeps_the_newest() {
        let board = StatsBoard::new(2);
        assert!(board.read(0).is_none());
        for seq in 1..=3 {
            board.publish(ShardStats {
                shard: 1,
                seq,
                ..Default::default()
            });
        }
        assert_eq!(board.read(1).map(|s| s.seq), Some(3));
        assert_eq!(
            board.read(1).map(|s| s.seq),
            Some(3),
            "reading leaves it there"
        );
        assert!(board.read(0).is_none());
    }
}

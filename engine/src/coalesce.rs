//! Whether a shard's next wait in the kernel batches completions (the kernel's min-wait,
//! Linux 6.12+), and for how long.
//!
//! The kernel's min-wait holds a wait that has any completion until `min_wait` has passed
//! *since the wait began* (or [`crate::ring::COALESCE_BATCH`] completions are in), then
//! returns with what it has. It pays when many completions arrive within that time: one
//! wake-up serves them all. When few do, it only delays them: every hop of a message waits
//! up to `min_wait` more, for the wake-up the shard would have paid anyway.
//!
//! So, like NAPI's interrupt moderation, [`CoalesceMode::Adaptive`] batches only while the
//! recent turns saw completions arrive densely: over each window of
//! [`COALESCE_WINDOW_US`] it counts the completions the waits brought; the next window
//! batches when at least [`COALESCE_ADAPTIVE_PER_MS_MIN`] of them, on average, arrived per
//! millisecond, and goes on batching until fewer than half that many do (hysteresis: a load
//! near the threshold does not flip the mode every window). The rate is per unit of time,
//! not per wake-up, so batching does not keep itself on by making its own batches larger.
//! The switch point is a rate of its own, not tied to the wait's length: a shorter wait
//! (less latency per hop) batches from the same load on.
//!
//! Pure bookkeeping over the times it is given: the loop feeds it, tests drive it with
//! made-up instants. It owns nothing else and touches no ring.

use std::time::{Duration, Instant};

/// Length of the adaptive mode's measuring window.
pub const COALESCE_WINDOW_US: u64 = 10_000;
/// Completions per millisecond that must arrive, on average over a window, for the adaptive
/// mode to start batching: fewer, and a batching wait would mostly delay them. It stops
/// below half of it. (32/ms is 8 per 250 µs: about 7,500 1:1 messages/s on one shard, at
/// 4.2 completions each.)
pub const COALESCE_ADAPTIVE_PER_MS_MIN: u64 = 32;

/// When a shard's wait batches completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CoalesceMode {
    /// Only while completions arrive densely (module doc). The default.
    #[default]
    Adaptive,
    /// Every wait (at most `coalesce_us`).
    Always,
}

/// The loop's choice of batching wait, turn by turn.
#[derive(Debug)]
pub(crate) struct Coalescer {
    mode: CoalesceMode,
    /// The batching wait when on; zero: never.
    max_wait: Duration,
    /// Whether the next waits batch.
    on: bool,
    window_started: Instant,
    /// Completions the waits brought since `window_started`.
    window_completions: u64,
}

impl Coalescer {
    pub(crate) fn new(mode: CoalesceMode, max_wait: Duration, now: Instant) -> Self {
        Coalescer {
            mode,
            max_wait,
            on: mode == CoalesceMode::Always,
            window_started: now,
            window_completions: 0,
        }
    }

    /// The min-wait to ask of the next wait (zero: return with the first completion).
    pub(crate) fn min_wait(&self) -> Duration {
        if self.on {
            self.max_wait
        } else {
            Duration::ZERO
        }
    }

    /// A wait returned `completions` at `now`.
    pub(crate) fn observe(&mut self, completions: usize, now: Instant) {
        if self.mode != CoalesceMode::Adaptive || self.max_wait.is_zero() {
            return;
        }
        self.window_completions += completions as u64;
        let elapsed = now.saturating_duration_since(self.window_started);
        if elapsed < Duration::from_micros(COALESCE_WINDOW_US) {
            return;
        }
        // completions / elapsed ≥ threshold per ms, without dividing; the threshold is
        // halved while on.
        let arrived = 2 * u128::from(self.window_completions) * 1_000_000;
        let threshold = if self.on {
            COALESCE_ADAPTIVE_PER_MS_MIN
        } else {
            2 * COALESCE_ADAPTIVE_PER_MS_MIN
        };
        self.on = arrived >= u128::from(threshold) * elapsed.as_nanos();
        self.window_started = now;
        self.window_completions = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_micros(250);

    /// Feeds `per_ms` completions each millisecond for `ms` milliseconds, from `t`.
    fn feed(c: &mut Coalescer, t: &mut Instant, per_ms: usize, ms: u64) {
        for _ in 0..ms {
            *t += Duration::from_millis(1);
            c.observe(per_ms, *t);
        }
    }

    #[test]
    fn adaptive_starts_off_and_batches_only_while_completions_are_dense() {
        let mut t = Instant::now();
        let mut c = Coalescer::new(CoalesceMode::Adaptive, WAIT, t);
        assert_eq!(c.min_wait(), Duration::ZERO, "starts without batching");
        // 32 per ms: dense enough.
        feed(&mut c, &mut t, 32, 10);
        assert_eq!(c.min_wait(), WAIT);
        // 20 per ms: too few to start, enough to go on (hysteresis).
        feed(&mut c, &mut t, 20, 10);
        assert_eq!(c.min_wait(), WAIT, "stays on above half the threshold");
        // 12 per ms: a batching wait would mostly delay them.
        feed(&mut c, &mut t, 12, 10);
        assert_eq!(c.min_wait(), Duration::ZERO);
        feed(&mut c, &mut t, 20, 10);
        assert_eq!(
            c.min_wait(),
            Duration::ZERO,
            "does not start again at 20 per ms"
        );
    }

    /// The switch point is a rate, whatever the wait's length: a short wait starts and stops
    /// at the same load as a long one (it once scaled with the wait: 8 per wait).
    #[test]
    fn a_short_wait_switches_at_the_same_rate_as_a_long_one() {
        for wait in [Duration::from_micros(50), WAIT, Duration::from_millis(1)] {
            let mut t = Instant::now();
            let mut c = Coalescer::new(CoalesceMode::Adaptive, wait, t);
            feed(&mut c, &mut t, 31, 10);
            assert_eq!(
                c.min_wait(),
                Duration::ZERO,
                "{wait:?}: 31 per ms is too few"
            );
            feed(&mut c, &mut t, 32, 10);
            assert_eq!(c.min_wait(), wait, "{wait:?}: 32 per ms batches");
            feed(&mut c, &mut t, 16, 10);
            assert_eq!(c.min_wait(), wait, "{wait:?}: 16 per ms goes on");
            feed(&mut c, &mut t, 15, 10);
            assert_eq!(c.min_wait(), Duration::ZERO, "{wait:?}: 15 per ms stops");
        }
    }

    #[test]
    fn adaptive_decides_once_per_window_not_per_wake_up() {
        let mut t = Instant::now();
        let mut c = Coalescer::new(CoalesceMode::Adaptive, WAIT, t);
        // One large batch inside a window changes nothing until the window ends...
        t += Duration::from_millis(1);
        c.observe(1_000, t);
        assert_eq!(c.min_wait(), Duration::ZERO);
        // ... and then counts over the whole window: 1,000 in 10 ms is dense.
        t += Duration::from_millis(9);
        c.observe(0, t);
        assert_eq!(c.min_wait(), WAIT);
        // A quiet window turns it off again.
        feed(&mut c, &mut t, 1, 10);
        assert_eq!(c.min_wait(), Duration::ZERO);
    }

    #[test]
    fn always_batches_every_wait_and_zero_never_does() {
        let mut t = Instant::now();
        let mut always = Coalescer::new(CoalesceMode::Always, WAIT, t);
        let mut zero = Coalescer::new(CoalesceMode::Adaptive, Duration::ZERO, t);
        feed(&mut always, &mut t, 0, 20);
        assert_eq!(always.min_wait(), WAIT, "quiet or not");
        feed(&mut zero, &mut t, 1_000, 20);
        assert_eq!(zero.min_wait(), Duration::ZERO, "0 µs is off in every mode");
    }
}

//! Interval lines: with `--interval S`, the parent prints one line every S seconds of the
//! measured phase and the drain, for observers (the bench's soak) that follow a long run
//! as it goes:
//!
//! `farm: interval {"t_s":10.0,"dt_s":5.0,"sent":…,"delivered":…,"latency":{…}}`
//!
//! Steps, and why the numbers are those of the interval:
//! 1. Each thread puts its cumulative delivery histogram in its progress [`Snapshot`] (only
//!    when `--interval` is on: it costs a copy per second).
//! 2. Workers add their threads' latest snapshots and the parent its workers' (a sum of
//!    cumulative histograms is cumulative; a snapshot replaced by a newer one loses nothing).
//! 3. [`Intervals::tick`] subtracts the previous cumulative histogram from the current one:
//!    the remainder is exactly the deliveries recorded since the last line.
//!
//! Snapshots travel once a second per thread and once a second per worker, so a line's
//! numbers trail the clock by up to two seconds; counts are never lost or counted twice.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::stats::{Latency, Summary};

use super::driver::Snapshot;

/// The prefix of an interval line on the farm's stdout.
pub const PREFIX: &str = "farm: interval ";

/// One interval, as printed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntervalLine {
    /// Seconds since sending started, at the end of the interval.
    pub t_s: f64,
    /// Length of the interval, seconds.
    pub dt_s: f64,
    /// 1:1 and group sends so far.
    pub sent: u64,
    /// 1:1 and group deliveries so far (first time per message and recipient).
    pub delivered: u64,
    /// Delivery latency of the deliveries recorded in this interval, µs.
    pub latency: Summary,
}

impl IntervalLine {
    /// The line as printed.
    pub fn render(&self) -> String {
        // Invariant: a struct of numbers always serializes.
        format!("{PREFIX}{}", serde_json::to_string(self).expect("numbers"))
    }

    /// Reads a printed line back; `None` for any other line.
    pub fn parse(line: &str) -> Option<IntervalLine> {
        serde_json::from_str(line.strip_prefix(PREFIX)?).ok()
    }
}

/// The parent's interval clock and last cumulative histogram.
#[derive(Debug)]
pub struct Intervals {
    every: Duration,
    start: Instant,
    next: Instant,
    last_t_s: f64,
    last: Latency,
}

impl Intervals {
    /// Lines every `every_s` seconds from `start` (sending started).
    pub fn new(every_s: f64, start: Instant) -> Intervals {
        let every = Duration::from_secs_f64(every_s.max(0.1));
        Intervals {
            every,
            start,
            next: start + every,
            last_t_s: 0.0,
            last: Latency::default(),
        }
    }

    /// The line for the interval that ended by `now`, if one did; `total` is the farm's sum
    /// of its latest snapshots.
    pub fn tick(&mut self, now: Instant, total: &Snapshot) -> Option<IntervalLine> {
        if now < self.next {
            return None;
        }
        while self.next <= now {
            self.next += self.every;
        }
        let cumulative = Latency::from_pairs(&total.delivery);
        let latency = cumulative.since(&self.last).summary();
        self.last = cumulative;
        let t_s = (now - self.start).as_secs_f64();
        let c = &total.counters;
        let line = IntervalLine {
            t_s,
            dt_s: t_s - self.last_t_s,
            sent: c.messages_sent + c.group_sent,
            delivered: c.delivered + c.group_delivered,
            latency,
        };
        self.last_t_s = t_s;
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(latencies: &[u64], delivered: u64) -> Snapshot {
        let mut h = Latency::default();
        latencies.iter().for_each(|&us| h.record(us));
        let mut s = Snapshot {
            delivery: h.to_pairs(),
            ..Snapshot::default()
        };
        s.counters.delivered = delivered;
        s
    }

    #[test]
    fn each_line_holds_only_the_interval_s_deliveries() {
        let t0 = Instant::now();
        let mut iv = Intervals::new(5.0, t0);
        assert!(iv
            .tick(t0 + Duration::from_secs(4), &snapshot(&[100], 1))
            .is_none());
        let a = iv
            .tick(t0 + Duration::from_secs(5), &snapshot(&[100, 200], 2))
            .unwrap();
        assert_eq!((a.latency.count, a.latency.max, a.delivered), (2, 200, 2));
        // Cumulative 100, 200, then 9,000 µs: the second interval saw only 9,000.
        let b = iv
            .tick(
                t0 + Duration::from_secs(11),
                &snapshot(&[100, 200, 9000], 3),
            )
            .unwrap();
        assert_eq!(b.latency.count, 1);
        assert!((8990..=9010).contains(&b.latency.p50), "{:?}", b.latency);
        assert_eq!((b.t_s, b.dt_s), (11.0, 6.0));
        // The next line is due at 15 s, not 16 s.
        assert!(iv
            .tick(t0 + Duration::from_secs(14), &snapshot(&[], 3))
            .is_none());
    }

    #[test]
    fn a_line_reads_back() {
        let l = IntervalLine {
            t_s: 5.0,
            dt_s: 5.0,
            sent: 10,
            delivered: 9,
            latency: Summary::default(),
        };
        assert_eq!(IntervalLine::parse(&l.render()), Some(l));
        assert_eq!(IntervalLine::parse("farm: sending started (3 s)"), None);
    }
}

//! Fixed-bucket latency histograms, in the shape Prometheus wants (`_bucket{le=...}`,
//! `_sum`, `_count`).
//!
//! A [`Histogram`] is a `Copy` array of counts over a `'static` list of upper bounds: no
//! allocation, ever. Recording is a binary search over at most [`HISTOGRAM_BUCKETS_MAX`]
//! bounds and two additions, on the thread that owns it; the housekeeping loop copies it into
//! the snapshot once a second. Buckets are chosen per latency so that each sits where that
//! latency lives (microseconds for a mesh hop, milliseconds to seconds for an fsync).
//!
//! This module is pure bookkeeping: no clock, no I/O.

use std::time::Duration;

/// Most finite buckets a histogram may have (one more counts everything above them).
pub const HISTOGRAM_BUCKETS_MAX: usize = 16;

const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

/// TLS handshake, accept to handshake done. The engine's clock here is milliseconds, so the
/// first bucket is 1 ms.
pub const TLS_HANDSHAKE_BOUNDS_NS: &[u64] = &[
    MS,
    2 * MS,
    5 * MS,
    10 * MS,
    20 * MS,
    50 * MS,
    100 * MS,
    200 * MS,
    500 * MS,
    S,
    2 * S,
    5 * S,
    10 * S,
];

/// One mesh hop: a batch pushed into a peer's ring until that peer takes it out.
pub const MESH_HOP_BOUNDS_NS: &[u64] = &[
    US,
    2 * US,
    5 * US,
    10 * US,
    20 * US,
    50 * US,
    100 * US,
    200 * US,
    500 * US,
    MS,
    2 * MS,
    5 * MS,
    10 * MS,
    50 * MS,
    100 * MS,
];

// Built at compile time: bounds that do not fit or do not increase fail the build.
const _: Histogram = Histogram::new(TLS_HANDSHAKE_BOUNDS_NS);
const _: Histogram = Histogram::new(MESH_HOP_BOUNDS_NS);

/// Counts of observations per bucket, plus their sum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Histogram {
    /// Upper bounds (inclusive), nanoseconds, strictly increasing.
    bounds_ns: &'static [u64],
    /// `counts[i]`: observations in bucket `i` alone (not cumulative); index
    /// `bounds_ns.len()` counts those above every bound.
    counts: [u64; HISTOGRAM_BUCKETS_MAX + 1],
    /// Sum of every observation, nanoseconds (saturating).
    sum_ns: u64,
}

impl Histogram {
    /// An empty histogram over `bounds_ns` (strictly increasing, at most
    /// [`HISTOGRAM_BUCKETS_MAX`]; checked when the constant is built).
    pub const fn new(bounds_ns: &'static [u64]) -> Self {
        assert!(bounds_ns.len() <= HISTOGRAM_BUCKETS_MAX);
        let mut i = 1;
        while i < bounds_ns.len() {
            assert!(bounds_ns[i - 1] < bounds_ns[i], "bounds strictly increase");
            i += 1;
        }
        Histogram {
            bounds_ns,
            counts: [0; HISTOGRAM_BUCKETS_MAX + 1],
            sum_ns: 0,
        }
    }

    /// One observation of `ns` nanoseconds.
    pub fn record_ns(&mut self, ns: u64) {
        let i = self.bounds_ns.partition_point(|&b| b < ns);
        self.counts[i] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// One observation of `d`.
    pub fn record(&mut self, d: Duration) {
        self.record_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum of the observations, seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    /// `(upper bound in seconds, observations at or below it)`, cumulative, ending with
    /// `(f64::INFINITY, count)`.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let bounds = self
            .bounds_ns
            .iter()
            .map(|&b| b as f64 / 1e9)
            .chain(std::iter::once(f64::INFINITY));
        bounds.zip(self.counts.iter().scan(0u64, |acc, &c| {
            *acc += c;
            Some(*acc)
        }))
    }

    /// The upper bound (seconds) of the bucket holding quantile `q` (0..=1); `0` when empty,
    /// infinity when it lies above every bound. For `/stats`, where a reader wants one number.
    pub fn quantile_bound_seconds(&self, q: f64) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        self.cumulative()
            .find(|&(_, c)| c >= rank)
            .map_or(f64::INFINITY, |(le, _)| le)
    }
}

/// A histogram with the name and help text it is published under
/// (`switchboard_<name>_bucket`...; the name ends in its unit, `_seconds`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NamedHistogram {
    /// Metric name without the `switchboard_` prefix, ending in `_seconds`.
    pub name: &'static str,
    /// One line for `# HELP`.
    pub help: &'static str,
    /// The counts.
    pub hist: Histogram,
}

/// The latencies the engine itself measures on a shard.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EngineLatency {
    /// Accept to TLS handshake done (TLS listeners only).
    pub(crate) tls_handshake: Histogram,
    /// A batch's push into a peer's ring until that peer pops it.
    pub(crate) mesh_hop: Histogram,
}

impl Default for EngineLatency {
    fn default() -> Self {
        EngineLatency {
            tls_handshake: Histogram::new(TLS_HANDSHAKE_BOUNDS_NS),
            mesh_hop: Histogram::new(MESH_HOP_BOUNDS_NS),
        }
    }
}

impl EngineLatency {
    /// Both, named for publication.
    pub(crate) fn named(&self) -> [NamedHistogram; 2] {
        [
            NamedHistogram {
                name: "tls_handshake_seconds",
                help: "Accept to TLS handshake done (millisecond clock).",
                hist: self.tls_handshake,
            },
            NamedHistogram {
                name: "mesh_hop_seconds",
                help: "A mesh batch pushed into a peer shard's ring until that shard takes it.",
                hist: self.mesh_hop,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_upper_bounds_and_cumulative() {
        static B: &[u64] = &[10, 100];
        let mut h = Histogram::new(B);
        for ns in [1, 10, 11, 100, 101, 5_000] {
            h.record_ns(ns);
        }
        let c: Vec<_> = h.cumulative().collect();
        assert_eq!(c, vec![(1e-8, 2), (1e-7, 4), (f64::INFINITY, 6)]);
        assert_eq!(h.count(), 6);
        assert!((h.sum_seconds() - 5_223e-9).abs() < 1e-15);
    }

    #[test]
    fn quantile_bound_names_the_bucket() {
        let mut h = Histogram::new(MESH_HOP_BOUNDS_NS);
        assert_eq!(h.quantile_bound_seconds(0.99), 0.0, "empty");
        for _ in 0..99 {
            h.record(Duration::from_micros(3));
        }
        h.record(Duration::from_secs(1));
        assert_eq!(h.quantile_bound_seconds(0.5), 5e-6);
        assert_eq!(h.quantile_bound_seconds(0.99), 5e-6);
        assert_eq!(h.quantile_bound_seconds(1.0), f64::INFINITY);
    }

    #[test]
    fn huge_values_saturate_instead_of_wrapping() {
        let mut h = Histogram::new(TLS_HANDSHAKE_BOUNDS_NS);
        h.record(Duration::from_secs(u64::MAX));
        h.record_ns(u64::MAX);
        assert_eq!(h.count(), 2);
        assert_eq!(h.sum_seconds(), u64::MAX as f64 / 1e9);
    }
}

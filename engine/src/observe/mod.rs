//! What operators see of the engine: per-shard counters, the snapshots published once a
//! second with their rates and alarms, latency histograms, their Prometheus and JSON text,
//! and the admin thread that serves them with health and readiness. Nothing here runs on
//! the per-frame path except bumping a counter or recording into a histogram.

pub mod admin;
pub mod alarm;
pub mod counters;
pub mod health;
pub mod histogram;
pub mod stats;
pub mod stats_text;

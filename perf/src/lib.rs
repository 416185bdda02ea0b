//! # perf — Switchboard's measuring tools
//!
//! Benchmark scenarios that print numbers (never timed tests). Each binary says what it
//! measured, how, and on what machine.
//!
//! ## Layout
//! - [`plot`]: SVG line charts for RESULTS.md.
//! - [`proc_stats`]: reading a process's memory and CPU from /proc.
//! - [`perf_event`]: raw `perf_event_open(2)` counters, and why one is unavailable.
//! - [`perf_stat`]: `perf stat` on a running server over a window (software counters,
//!   syscalls one by one), parsed.
//! - [`scenario`]: a server child plus a pinned farm run, for the bench.
//! - [`compare`]: Switchboard, mosquitto (QoS 1/0) and nats-server as systems under test,
//!   one farm run sampled over its sending window; [`versus`]: the side-by-side scenarios;
//!   [`counter_tables`]: their perf software counters and syscalls by name;
//!   [`versus_plots`]: their charts.
//! - [`soak`]: one shard under steady load for minutes, sampled as it goes (issue 14).
//! - [`schedstat`]: per-thread scheduler and fault counts from /proc/PID/task/TID.
//! - [`sampler`]: following every thread of a running process, sample by sample.
//! - [`counting_alloc`]: a counting global allocator (live bytes per size class).
//! - [`idle_clients`]: many idle loopback client connections, for the memory tools.
//! - [`launch`]: starting a command held at a gate so counters see its whole run.
//! - [`report`]: per-thread tables and JSON.
//! - `bin/idle_conns.rs`: user-space bytes per idle connection (RSS delta / N).
//! - `bin/pmc.rs`: pmcstat-like per-thread counters for a command or a running server.
#![warn(missing_docs)]

pub mod compare;
pub mod counter_tables;
pub mod counting_alloc;
pub mod idle_clients;
pub mod launch;
pub mod perf_event;
pub mod perf_stat;
pub mod plot;
pub mod proc_stats;
pub mod report;
pub mod sampler;
pub mod scenario;
pub mod schedstat;
pub mod soak;
pub mod versus;
pub mod versus_plots;

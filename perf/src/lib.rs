//! # perf — Switchboard's measuring tools
//!
//! Benchmark scenarios that print numbers (never timed tests). Each binary says what it
//! measured, how, and on what machine.
//!
//! ## Layout
//! - [`proc_stats`]: reading a process's memory and CPU from /proc.
//! - `bin/idle_conns.rs`: user-space bytes per idle connection (RSS delta / N).
#![warn(missing_docs)]

pub mod proc_stats;

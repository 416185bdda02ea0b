//! What operators read and run: the binary's flags and exits, `/metrics` (checked by promtool),
//! `/stats`, alarms, the lock counter, the systemd unit, and every path the docs quote. One
//! test binary, a module per topic (`cargo test -p shards --test ops`).

#[path = "../support/mod.rs"]
mod support;

mod binary;
mod docs_paths;
mod metrics;
mod stats_admin;
mod stats_alarms;
mod stats_locks;
mod systemd;
mod upgrade;

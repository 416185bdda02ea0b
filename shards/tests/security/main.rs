//! Attacks on the real server by one account or one address (issues 15, 21, 22): abuse
//! budgets, the admin endpoint, fan-out, groups, hand-off deadlines, log lines, sessions. One
//! test binary, a module per attack family (`cargo test -p shards --test security`).

#[path = "../support/mod.rs"]
mod support;

mod abuse;
mod admin;
mod fanout;
mod groups;
mod handoff_deadline;
mod logs;
mod session;

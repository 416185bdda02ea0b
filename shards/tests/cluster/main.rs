//! A cluster of boxes over NATS (issue 24): nats-server (JetStream, a temp store, a port of
//! its own) and `switchboard` boxes as processes. One test binary, a module per topic
//! (`cargo test -p shards --test cluster`). nats-server comes from the Debian package
//! (`.ci/run` installs it).

#[path = "../support/mod.rs"]
mod support;

mod cross;
mod dashboard;
mod direct;
mod groups;
mod media;
mod nats;
mod nats_jwt;
mod nats_node;
mod nobody;
mod placement;
mod presence;
mod start;

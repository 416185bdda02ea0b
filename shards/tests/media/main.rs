//! Media over the real server (issue 25): slots on the chat connection, uploads and
//! downloads over HTTPS on the media listener, refusals with their error codes, and a crash
//! during uploads. One test binary (`cargo test -p shards --test media`).

#[path = "../support/mod.rs"]
mod support;

mod crash;
mod http;
mod pinning;
mod refusals;
mod round_trip;

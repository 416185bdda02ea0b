//! The connection farm: worker processes, each running event-loop threads over a slice of
//! the synthetic users.
//!
//! - [`fanout`]: the parent re-executes itself as `--procs` workers, drives their phases
//!   through a line protocol on stdin/stdout, and gathers their results.
//! - [`worker`]: one worker process: threads, the barrier between them, progress lines.
//! - [`driver`]: one thread's epoll loop and phases.
//! - [`user`]: one synthetic user's protocol behaviour.
//! - [`transport`]: one connection's bytes (TCP, TLS), encoded by its [`wire`] protocol:
//!   Switchboard frames, [`mqtt`] 3.1.1 or [`nats`], all presented as Switchboard frames.
//! - [`poller`]: the epoll wrapper.
//! - [`interval`]: `--interval` lines, delivery percentiles per interval of a long run.
//! - [`media`]: `--media-mb-s`, pairs uploading and downloading media beside the text.

pub mod driver;
pub mod fanout;
pub mod interval;
pub mod media;
pub mod mqtt;
pub mod nats;
pub mod poller;
pub mod transport;
pub mod user;
pub mod wire;
pub mod worker;

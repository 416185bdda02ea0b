//! A connection's whole life on its shard, from the listening socket to the last byte:
//!
//! - [`listener`]: the SO_REUSEPORT listening sockets, bound before the shards start;
//! - [`table`]: the slab of slots with generation-tagged [`ConnId`](proto::ids::ConnId)s;
//! - [`slot`]: one slot's data (state, queued frames, deadline) and the per-connection limits;
//! - `wire`: one socket's state on the shard's ring (descriptor, TLS session, bytes in
//!   transit);
//! - `open`: registering an accepted or adopted socket, the handshake's end, removal;
//! - `deadline`: the handshake, idle and frame deadlines of a live connection;
//! - `io`: what each receive and send completion does, and the end-of-turn flush;
//! - `linger`: a connection leaving `Open`, its linger deadline, a handoff called off;
//! - [`handoff`]: a live connection packed on one shard and adopted by another;
//! - [`prelogin`]: what a connection that has not logged in yet may hold (per address, per
//!   shard).
//!
//! Everything here runs on the shard's own thread and acts on its `ShardCell` (`shard_io`).
//! Nothing here touches the mesh rings, the timer wheel's other entries or another shard's
//! state; the loop (`shard`) decides when each of these runs.

mod deadline;
#[cfg(test)]
mod failure_tests;
pub mod handoff;
pub(crate) mod io;
pub(crate) mod linger;
pub mod listener;
mod open;
pub mod prelogin;
pub mod slot;
pub mod table;
pub(crate) mod wire;

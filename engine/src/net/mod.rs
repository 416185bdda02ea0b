//! Connections: the listening sockets ([`listener`]), one socket's state on the shard's ring
//! (`wire`), what each completion and each end of a loop turn does for a connection
//! (`conn_io`), and a live connection moving to another shard ([`handoff`]). Nothing here
//! touches the mesh rings or another shard's state.

pub(crate) mod conn_io;
pub mod handoff;
pub mod listener;
pub mod prelogin;
pub(crate) mod wire;

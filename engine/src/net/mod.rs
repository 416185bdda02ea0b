//! Connections: the listening sockets ([`listener`]), one socket's state on the shard's ring
//! (`wire`), what each completion and each end of a loop turn does for a connection
//! (`conn_io`), a connection leaving `Open` (`linger`), and a live connection moving to
//! another shard ([`handoff`]). Nothing here touches the mesh rings or another shard's
//! state.

pub(crate) mod conn_io;
#[cfg(test)]
mod failure_tests;
pub mod handoff;
pub(crate) mod linger;
pub mod listener;
pub mod prelogin;
pub(crate) mod wire;

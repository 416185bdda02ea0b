//! A connection on the shard's ring: its socket state ([`wire`]) and what each completion and
//! each end of a loop turn does for it ([`conn_io`]). The listener and the handoff packing
//! stay in their own modules; this one never touches the mesh rings or another shard.

pub(crate) mod conn_io;
pub(crate) mod wire;

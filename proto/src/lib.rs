//! The Switchboard wire protocol: the protobuf schema, the frame codec and the wire limits.
//!
//! Everything a phone and a server exchange is defined here, once, for the server (`shards`),
//! the load farm and the CLI client (`tools`) alike.
//!
//! # Promises
//! - **No I/O, no clock, no runtime, no locks.** Functions take bytes and return values; the
//!   caller owns sockets, time and threads. Every function is deterministic.
//! - **Peer input never panics.** Any byte sequence fed to [`codec::split_frame`],
//!   [`FrameBuffer`] or the decoders yields a value or a [`FrameError`] (a randomized test in
//!   `codec.rs` holds this); [`FrameError::code`] gives the error code to answer with.
//! - **Bounded.** A frame's payload never exceeds [`limits::FRAME_BYTES_MAX`], detected from the
//!   header before the body is buffered; every field's limit is a named constant.
//! - **Cheap when idle.** A [`FrameBuffer`] holding no partial frame owns no heap memory.
//! - The schema is compiled at build time by `protox` and `prost-build`; no `protoc` binary.
//!
//! # Layout
//! - `proto/switchboard.proto`: the schema, package `switchboard.v1` (one comment per message).
//! - [`v1`]: the generated types: [`ClientFrame`] and [`ServerFrame`] envelopes, one `oneof
//!   kind` each, and every message and enum ([`v1::ErrorCode`], [`v1::ReceiptKind`]).
//! - [`codec`]: frame = 4-byte big-endian payload length + protobuf payload; encode, split,
//!   decode, and [`FrameError`].
//! - [`FrameBuffer`] (`frame_buffer.rs`): reassembly of frames from partial reads, zero-copy
//!   for frames that arrive whole.
//! - [`ids`]: [`ids::ShardId`] and [`ids::ConnId`], the ids the engine and the messaging core
//!   share (one definition for both).
//! - [`limits`]: every wire limit as a named constant, relations asserted at compile time.
//! - [`validate`]: per-frame limit checks and [`validate::is_e164`].
//! - `envelope.rs`: `From<Inner>` for both envelopes, `kind_name()`, [`error_frame`].

#![warn(missing_docs)]

/// Types generated from `proto/switchboard.proto` (package `switchboard.v1`).
#[allow(missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/switchboard.v1.rs"));
}

pub mod codec;
mod envelope;
mod frame_buffer;
#[doc(hidden)]
pub mod fuzzing;
pub mod ids;
pub mod limits;
pub mod validate;

pub use codec::{decode_client, decode_server, encode_frame, split_frame, FrameError};
pub use envelope::error_frame;
pub use frame_buffer::FrameBuffer;
pub use v1::{ClientFrame, ErrorCode, ServerFrame};

/// The protocol version this crate speaks; `Register`, `Verify`, `Login` and `LoadTestLogin`
/// must carry it, or the server answers `UNSUPPORTED_VERSION`.
pub const PROTOCOL_VERSION: u32 = 1;

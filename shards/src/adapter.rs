//! The engine adapter: the `engine::Service` a shard runs. It decodes frames, hands them to
//! the service's state machines and turns their answers into frames. It owns no sockets
//! (the engine does) and no service rules (the state machines do).

use engine::{CloseReason, ConnId, Service, ShardId, ShardIo};
use proto::codec::{decode_client, encode_frame, FrameError};
use proto::v1::{client_frame, server_frame, ErrorCode, Pong, ServerFrame};

/// Messages between shards.
#[derive(Debug)]
pub enum ShardMsg {}

/// Timers the service sets.
#[derive(Debug)]
pub enum ServiceTimer {}

/// The service of one shard.
#[derive(Debug, Default)]
pub struct Switchboard {}

/// Queues `frame` to `conn`. A connection that is already gone is not an error here: its
/// `on_close` has been (or will be) delivered and cleans up.
pub(crate) fn send_frame(io: &mut ShardIo<Switchboard>, conn: ConnId, frame: server_frame::Kind) {
    let frame = ServerFrame { kind: Some(frame) };
    let _ = io.send_with(conn, |out| {
        // Server frames are built from bounded fields; an oversize one is our bug.
        encode_frame(&frame, out).expect("server frame within FRAME_BYTES_MAX");
    });
}

/// Sends an error frame and closes the connection after it is flushed.
pub(crate) fn fail(io: &mut ShardIo<Switchboard>, conn: ConnId, code: ErrorCode, detail: &str) {
    send_frame(
        io,
        conn,
        server_frame::Kind::Error(proto::v1::Error {
            code: code as i32,
            detail: detail.into(),
            client_msg_id: 0,
        }),
    );
    let _ = io.close(conn);
}

impl Service for Switchboard {
    type Msg = ShardMsg;
    type Timer = ServiceTimer;

    fn on_open(&mut self, _io: &mut ShardIo<Self>, _conn: ConnId) {}

    fn on_frame(&mut self, io: &mut ShardIo<Self>, conn: ConnId, payload: &[u8]) {
        let frame = match decode_client(payload) {
            Ok(f) => f,
            Err(e) => return fail(io, conn, e.code(), "cannot decode frame"),
        };
        match frame.kind {
            Some(client_frame::Kind::Ping(p)) => {
                send_frame(io, conn, server_frame::Kind::Pong(Pong { nonce: p.nonce }))
            }
            _ => fail(io, conn, ErrorCode::UnexpectedFrame, "not supported yet"),
        }
    }

    fn on_frame_error(&mut self, io: &mut ShardIo<Self>, conn: ConnId, error: FrameError) {
        send_frame(
            io,
            conn,
            server_frame::Kind::Error(proto::v1::Error {
                code: error.code() as i32,
                detail: error.to_string(),
                client_msg_id: 0,
            }),
        );
    }

    fn on_close(&mut self, _io: &mut ShardIo<Self>, _conn: ConnId, _reason: CloseReason) {}

    fn on_mesh(&mut self, _io: &mut ShardIo<Self>, _from: ShardId, msg: ShardMsg) {
        match msg {}
    }

    fn on_adopt(&mut self, _io: &mut ShardIo<Self>, _from: ShardId, _conn: ConnId, msg: ShardMsg) {
        match msg {}
    }

    fn on_timer(&mut self, _io: &mut ShardIo<Self>, timer: ServiceTimer) {
        match timer {}
    }
}

//! What the state machines ask for: frames to connections, closes, mesh messages, handoffs,
//! SMS and push notifications, and records to make durable — with the effects that must
//! wait until those records are durable. The adapter carries them out. Pure data.

use proto::ids::{ConnId, ShardId};
use proto::v1::server_frame;

use crate::durable::record::Record;
use crate::state::mesh_msg::{Adoption, ShardMsg};

/// One thing to do.
#[derive(Debug)]
pub enum Effect {
    /// Queue a frame to a connection on this shard.
    Frame(ConnId, server_frame::Kind),
    /// Queue a frame already encoded (a queued item's delivery) to a connection here.
    Wire(ConnId, WireFrame),
    /// Close a connection after its queued frames are written.
    Close(ConnId),
    /// Send a message to a shard (possibly this one).
    Mesh(ShardId, ShardMsg),
    /// Move a connection to another shard with what the old shard knew about it.
    HandOff(ConnId, ShardId, Box<Adoption>),
    /// Send a registration PIN by SMS, then answer `conn`: `on_sent` (`PinSent`) once the
    /// gateway reports it sent, an error frame if it could not be sent.
    Sms {
        /// The connection that asked.
        conn: ConnId,
        /// The phone.
        phone: String,
        /// The PIN.
        pin: String,
        /// The frame for `conn` once the PIN is out.
        on_sent: server_frame::Kind,
    },
    /// The connection logged in: the engine's pre-login limits no longer apply to it.
    LoggedIn(ConnId),
    /// Keep what is sent to the connection from now on until `ReleaseOutput` (its login
    /// names an account not yet durable).
    HoldOutput(ConnId),
    /// Send what `HoldOutput` kept.
    ReleaseOutput(ConnId),
    /// Tell the push provider a user has messages waiting.
    Push {
        /// The phone.
        phone: String,
        /// The user's server-issued id: what a log line names instead of the phone.
        user_id: u64,
    },
}

/// An encoded `ServerFrame` (no length header), as a queued item is delivered: its bytes
/// go into the connection's output as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireFrame {
    /// The encoded frame.
    pub bytes: Vec<u8>,
    /// For a message, when the sender's home accepted it (ms; the delivery-latency
    /// histogram reads it); 0 for anything else.
    pub sent_at_ms: u64,
}

/// What must wait for durability.
#[derive(Debug)]
pub enum AfterCommit {
    /// An effect (an ack, a reply).
    Effect(Effect),
    /// A load-test login's account record is durable: the connection's held output (its
    /// `LoggedIn` first) may go, so a client never hears of an account a crash could still
    /// take away.
    AccountDurable {
        /// The connection that logged in (its output held since: `Effect::HoldOutput`).
        conn: ConnId,
        /// Whose account.
        phone: String,
        /// Whether this login made the account (its record is the one now durable).
        made_account: bool,
    },
    /// Item `id` of `user`'s queue is durable: it may be delivered now.
    ItemDurable {
        /// Whose queue.
        user: crate::state::home::Phone,
        /// The item.
        id: u64,
    },
}

/// The output of one event.
#[derive(Debug, Default)]
pub struct Out {
    /// Effects to carry out now.
    pub now: Vec<Effect>,
    /// Records to append to the log.
    pub records: Vec<Record>,
    /// Effects released once every record so far is durable.
    pub after_commit: Vec<AfterCommit>,
    /// Sends this event refused with `Busy` (the shard was overloaded): the adapter counts
    /// them and warns.
    pub busy_refusals: u64,
}

impl Out {
    /// Queues a frame now.
    pub fn frame(&mut self, conn: ConnId, f: server_frame::Kind) {
        self.now.push(Effect::Frame(conn, f));
    }

    /// Queues an error frame and a close.
    pub fn fail(&mut self, conn: ConnId, code: proto::v1::ErrorCode, detail: &str) {
        self.error(conn, code, detail, 0);
        self.now.push(Effect::Close(conn));
    }

    /// Queues an error frame (the connection stays open).
    pub fn error(
        &mut self,
        conn: ConnId,
        code: proto::v1::ErrorCode,
        detail: &str,
        client_msg_id: u64,
    ) {
        self.frame(conn, error(code, detail, client_msg_id));
    }

    /// Sends a mesh message now.
    pub fn mesh(&mut self, to: ShardId, msg: ShardMsg) {
        self.now.push(Effect::Mesh(to, msg));
    }
}

/// An error frame.
pub fn error(code: proto::v1::ErrorCode, detail: &str, client_msg_id: u64) -> server_frame::Kind {
    server_frame::Kind::Error(proto::v1::Error {
        code: code as i32,
        detail: detail.into(),
        client_msg_id,
        retry_after_ms: 0,
    })
}

/// A `RATE_LIMITED` error frame with the time until the refusing budget admits the frame.
pub fn rate_limited(detail: &str, retry_after_ms: u64) -> server_frame::Kind {
    rate_limited_send(detail, retry_after_ms, 0)
}

/// A `RATE_LIMITED` error frame for the send `client_msg_id`.
pub fn rate_limited_send(
    detail: &str,
    retry_after_ms: u64,
    client_msg_id: u64,
) -> server_frame::Kind {
    server_frame::Kind::Error(proto::v1::Error {
        code: proto::v1::ErrorCode::RateLimited as i32,
        detail: detail.into(),
        client_msg_id,
        retry_after_ms,
    })
}

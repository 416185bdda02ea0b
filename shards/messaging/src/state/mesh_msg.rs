//! Messages between shards. Each names the user or group it is about; the receiving shard is
//! that user's (or group's) home. Pure data, `Send`.

use proto::v1::{server_frame, ClientFrame, Media};

use crate::state::home::Phone;

/// Where the outcome of a delivery goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyTo {
    /// A 1:1 send: the sender's home answers the sender.
    Sender,
    /// One copy of a group send: the group's home counts the copies.
    Group,
}

/// A message between shards.
#[derive(Debug)]
pub enum ShardMsg {
    /// Store and deliver a message to `to` (the receiving shard is `to`'s home).
    Deliver(Box<Delivery>),
    /// A frame for `user`, delivered if they are online (replies, receipts, presence).
    ToUser {
        /// The user (at their home).
        user: Phone,
        /// The frame.
        frame: server_frame::Kind,
    },
    /// A receipt for `sender` (at the sender's home): sent now if online, else queued.
    Receipt {
        /// Who sent the message.
        sender: Phone,
        /// Who received or read it, when a shard here made the receipt: then
        /// `receipt.by` is empty and the frame's `by` is written from this. `None` for a
        /// receipt from another box (its `by` as that box sent it).
        by: Option<Phone>,
        /// The receipt.
        receipt: proto::v1::Receipt,
    },
    /// A group send, at the group's home.
    GroupSend(Box<Delivery>),
    /// The outcome of one copy of a group send, at the group's home.
    GroupCopyDone {
        /// The group.
        group_id: u64,
        /// The sender of the group message.
        sender: String,
        /// The sender's id for it.
        client_msg_id: u64,
        /// Whose copy (`None` when not known): a box of a cluster settles a copy it took
        /// from another box by it, as one message has a copy per member.
        member: Option<Phone>,
    },
    /// A group operation by `requester`, at the group's home.
    GroupOp {
        /// Who asks.
        requester: String,
        /// What.
        op: GroupOp,
    },
    /// `subscriber` wants `contact`'s presence (at the contact's home).
    PresenceSub {
        /// Whose presence.
        contact: String,
        /// Who wants it.
        subscriber: String,
    },
    /// Group home → a member's home: may `adder` add these members (homed there)?
    GroupAddAsk {
        /// The group.
        group_id: u64,
        /// Its admin, adding.
        adder: String,
        /// Members homed at the receiver.
        members: Vec<String>,
    },
    /// Member's home → group home: those of the asked members who accept.
    GroupAddAnswer {
        /// The group.
        group_id: u64,
        /// The adder asked about.
        adder: String,
        /// Members who accept.
        accepted: Vec<String>,
        /// How many members this answer is about (accepted or not): a creation waits for
        /// an answer about each member it asked (one ask may be split between boxes).
        answered: u32,
    },
    /// One copy of a group send could not be handed on (another box's stream refused it):
    /// the send fails, and once every copy is accounted for its sender hears `Busy` and
    /// retries (copies already stored are recognised by their members' dedupe). At the
    /// group's home.
    GroupCopyFailed {
        /// The group.
        group_id: u64,
        /// The sender of the group message.
        sender: String,
        /// The sender's id for it.
        client_msg_id: u64,
    },
}

/// A connection on its way to another shard before login: what travels with it
/// (`Service::Adopt`), to the home of the phone its frame names.
#[derive(Debug)]
pub struct Adoption {
    /// The frame that named a phone homed there.
    pub frame: ClientFrame,
    /// What travels with the connection.
    pub guard: PreLogin,
}

/// What a shard knows about a connection that has not logged in: where it comes from (its
/// sign-up budgets are charged to that address) and how often it was refused or handed
/// over (`PRELOGIN_REFUSALS_MAX`, `PRELOGIN_HANDOFFS_MAX`). Dropped at login and close.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PreLogin {
    /// The peer's address (`None` when the engine could not say).
    pub peer: Option<std::net::IpAddr>,
    /// Frames refused so far.
    pub refusals: u32,
    /// Hand-overs so far.
    pub handoffs: u32,
}

/// A message on its way to one recipient.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Recipient (1:1), or `None` for a group send not yet fanned out.
    pub to: Option<Phone>,
    /// Sender.
    pub from: Phone,
    /// The sender's device (`dedupe::device_of` its key hash), set at the sender's home.
    pub device: u32,
    /// The sender's id for it.
    pub client_msg_id: u64,
    /// Group, or 0.
    pub group_id: u64,
    /// Body: a 1:1 send's, as decoded (`SendMessage.body`); it becomes the queued item's
    /// payload without a copy.
    pub body: prost::bytes::Bytes,
    /// Media reference.
    pub media: Option<Box<Media>>,
    /// The media service that holds the object (`https://host[:port][/path]`), when the
    /// message came from another box of a cluster (its gateway names its own service;
    /// `cluster/cross.rs`). `None` for every message a client sent to this box: the
    /// recipient's download URL then names this box's service.
    pub media_base: Option<Box<str>>,
    /// When the sender's home accepted it (ms).
    pub sent_at_ms: u64,
    /// Where the outcome goes.
    pub reply: ReplyTo,
}

/// Group operations.
#[derive(Debug)]
pub enum GroupOp {
    /// Add members (admin only).
    Add {
        /// The group.
        group_id: u64,
        /// Who.
        members: Vec<String>,
    },
    /// Remove members (admin only; a member may remove themself).
    Remove {
        /// The group.
        group_id: u64,
        /// Who.
        members: Vec<String>,
    },
    /// List members (members only).
    Members {
        /// The group.
        group_id: u64,
    },
}

//! The service's limits, each a named constant with its unit last. Wire limits (frame,
//! body, group size...) live in `proto::limits`; these are the server's own.

/// Items (messages and receipts) one user's queue may hold; more are refused with QUEUE_FULL.
pub const QUEUE_ITEMS_PER_USER_MAX: usize = 10_000;
/// Items sent to a session and not yet acked; the rest wait for acks (flow control).
pub const DELIVERY_WINDOW_ITEMS: usize = 256;
/// Bytes sent to a session and not yet acked (with the item count above, whichever is hit
/// first): a login with a long queue never floods the connection's output past the
/// engine's limit, which would close it.
pub const DELIVERY_WINDOW_BYTES: usize = 48 * 1024;
// Sign-up limits (PINs per number, per source, per prefix, per range, per box; guesses)
// live with their rules: `pin_codes.rs` and `budgets.rs`. Pre-login and presence limits below.
/// Device key length.
pub const DEVICE_KEY_BYTES: usize = 32;
/// Stored copies a shard remembers exactly per (sender, group) to answer a retry with the
/// same server id; older ones are known by the sender's floor (`dedupe.rs`).
pub const DEDUPE_WINDOW_PER_SENDER: usize = 8;
/// Acked messages a shard remembers per online user so a later Read can still produce a
/// READ receipt (32 bytes each: 2 KiB per online user at most).
pub const RECENT_ACKED_PER_USER_MAX: usize = 64;
/// Subscribers one user's presence may have.
pub const PRESENCE_SUBSCRIBERS_PER_USER_MAX: usize = 10_000;
/// Contacts one user may follow (presence subscriptions per subscriber); more are refused
/// with RATE_LIMITED until some expire.
pub const PRESENCE_SUBSCRIPTIONS_PER_USER_MAX: usize = 2_000;
/// A presence subscription lapses this long after it was last made (clients subscribe again
/// after each login).
pub const PRESENCE_SUBSCRIPTION_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// Subscriptions one shard asks again about when another box of a cluster joins, starts
/// again or leaves (`handlers/presence.rs`); the rest are counted (`presence_reasks_skipped_total`)
/// and wait for their subscriber's next session.
pub const PRESENCE_REASKS_PER_JOIN_MAX: usize = 65_536;
/// Messages (not receipts) one user's queue may hold; the rest of
/// `QUEUE_ITEMS_PER_USER_MAX` is kept for receipts, which messages can therefore never
/// crowd out.
pub const QUEUE_MESSAGES_PER_USER_MAX: usize = QUEUE_ITEMS_PER_USER_MAX * 3 / 4;
/// Messages from one sender that one user's queue may hold: one sender cannot fill a queue
/// for everyone (QUEUE_FULL to that sender only).
pub const QUEUE_MESSAGES_PER_SENDER_MAX: usize = 1_000;
/// Frames refused before login (bad PIN, over a budget, wrong secret...) after which the
/// connection is closed instead of answered again.
pub const PRELOGIN_REFUSALS_MAX: u32 = 8;
/// Times a connection may be handed to another shard before it logs in (one is enough for
/// any honest client); past it the connection is closed.
pub const PRELOGIN_HANDOFFS_MAX: u32 = 2;
/// Default log-in deadline: a connection not logged in this long after it opened is
/// answered `NOT_LOGGED_IN` and closed (`login_deadline.rs`). A client waiting for its PIN
/// longer than this sends `Verify` on a new connection (the PIN belongs to the phone).
pub const LOGIN_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// At most one refusal log line per shard per this period (with the count since the last).
pub const REFUSAL_LOG_PERIOD_MS: u64 = 1_000;
/// Owed mesh messages (answers, receipts, group copies) a shard holds when its outbox is
/// full, to send again once it has room (`mesh_back.rs`); past it they are dropped and
/// counted in `mesh_owed_dropped_total`.
pub const MESH_HELD_MSGS_MAX: usize = 64 * 1024;
/// How often held mesh messages are tried again.
pub const MESH_HELD_RETRY_MS: u64 = 1;
/// Group sends whose fan-out is still being confirmed, per shard.
pub const GROUP_FANOUTS_IN_FLIGHT_MAX: usize = 100_000;
/// Groups one user may administer (the groups they created and have not deleted), counted at
/// their home, where their groups live; more are refused with TOO_MANY_GROUPS. Caps what one
/// account makes every shard's memory, log and restart carry (at `GROUP_MEMBERS_MAX`
/// members, about 1 MB of state per user at the cap). Groups a user is a member of are not
/// capped here: others add them only with their consent (`group_consent.rs`).
pub const GROUPS_ADMINISTERED_PER_USER_MAX: usize = 500;
/// Group creations with members waiting for the members' homes to answer, per shard
/// (`group_consent.rs`); past it a creation gets RATE_LIMITED.
pub const GROUP_CREATES_PENDING_MAX: usize = 10_000;
/// A waiting creation whose answers have not all come after this long may be dropped to
/// make room (answers are lost only when the mesh drops a message).
pub const GROUP_ADD_ANSWER_TIMEOUT_MS: u64 = 30_000;
/// Log bytes below which compaction never runs.
pub const COMPACT_MIN_BYTES: u64 = 64 * 1024 * 1024;
/// How long a commit gathers after its first record before it starts, when no commit is in
/// flight (a commit in flight gathers the next batch anyway): long enough that an online
/// recipient's ack usually arrives first and the item is never written, short enough to
/// keep a sender's ServerAck for an offline recipient prompt (window + fdatasync). 10 ms: a
/// quarter of the log commits of 2 ms and −19 % CPU per message at 2,000 msgs/s
/// (docs/decisions/delivery-before-durability.md, "The window, again"). Every answer that
/// names a record waits for it (a load-test login that makes an account included: its
/// connection hears nothing until `AfterCommit::AccountDurable`), so the window delays answers and never loses an answered record.
pub const COMMIT_WINDOW_US_DEFAULT: u64 = 10_000;
/// Upper bound for the commit window (a larger one would only delay ServerAcks).
pub const COMMIT_WINDOW_US_MAX: u64 = 100_000;
/// A tombstone with nothing else to carry it is written after at most this long.
pub const TOMBSTONE_FLUSH_MS: u64 = 1_000;
/// Compact when the log is this many times larger than a snapshot would be.
pub const COMPACT_GARBAGE_RATIO: u64 = 4;
/// Encoded bytes a snapshot slice writes before it gives the shard back to its events
/// (`snapshot.rs`): about 0.3 ms of work (0.8 ms at most) at a million users, measured by
/// `just bench-state`.
pub const SNAPSHOT_SLICE_BYTES: usize = 32 * 1024;

/// What `Busy` tells the client to wait before retrying.
pub const BUSY_RETRY_AFTER_MS: u32 = 200;

const _: () = assert!(DELIVERY_WINDOW_ITEMS <= QUEUE_ITEMS_PER_USER_MAX);
const _: () =
    assert!(DEDUPE_WINDOW_PER_SENDER >= 1 && DEDUPE_WINDOW_PER_SENDER <= u8::MAX as usize);
const _: () = assert!(QUEUE_MESSAGES_PER_SENDER_MAX <= QUEUE_MESSAGES_PER_USER_MAX);
const _: () = assert!(QUEUE_MESSAGES_PER_USER_MAX < QUEUE_ITEMS_PER_USER_MAX);
const _: () =
    assert!(PRESENCE_SUBSCRIPTIONS_PER_USER_MAX >= proto::limits::PRESENCE_CONTACTS_PER_FRAME_MAX);
const _: () = assert!(DELIVERY_WINDOW_ITEMS <= proto::limits::ACK_IDS_PER_FRAME_MAX);

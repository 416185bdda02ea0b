//! One shard's service state ([`ShardState`]) and the types every part of the service
//! shares: what an event asks for ([`effect`]), messages between shards ([`mesh_msg`]),
//! homes and ids ([`home`]), the service's limits ([`limits`]) and its counters
//! ([`counters`]). The event entry points and the rules are `handlers/`'s; the tables the
//! state holds are `tables/`'s. Nothing here does I/O, so the whole service runs in tests
//! with fake time and a fake mesh (`sim/`).
//!
//! The message path (see ARCHITECTURE.md):
//! 1. `SendMessage` arrives at the sender's home → `Deliver` to the recipient's home.
//! 2. The recipient's home dedupes (sender, client_msg_id), queues the item and appends its
//!    record; once durable, it tells the sender's home (→ `ServerAck`) and delivers if the
//!    recipient is online (else notifies the push provider, once per burst).
//! 3. The recipient's `Ack` removes the item (tombstone) and sends a DELIVERED receipt to the
//!    sender's home, which sends it or, if the sender is offline, queues it durably.
//!    `Read` does the same with READ.

pub mod counters;
pub mod effect;
pub mod home;
pub mod limits;
pub mod mesh_msg;

use std::collections::HashMap;

use proto::ids::{ConnId, ShardId};

use crate::durable::record::ItemRec;
use crate::state::home::{home_of_phone, IdAllocator, Phone};
use crate::tables::dedupe::Dedupe;
use crate::tables::groups::Groups;
use crate::tables::presence::Presence;
use crate::tables::queues::{Item, Queues};
use crate::tables::recent_acked::RecentAcked;
use crate::tables::registry::Registry;
use crate::tables::sessions::Sessions;

/// Settings the state machines need.
#[derive(Debug, Clone, Default)]
pub struct ServiceSettings {
    /// Enables `LoadTestLogin` when set (unsafe in production: anyone with it is anyone).
    pub load_test_secret: Option<Vec<u8>>,
    /// Sign-up budgets, box-wide (each shard takes its share of the box ones).
    pub signup: crate::tables::budgets::SignupLimits,
    /// Per-user budgets that have flags (`admission.rs`).
    pub users: crate::tables::admission::UserLimits,
    /// The media service's key, URL and limits; `None` when it is off (`handlers/media.rs`).
    pub media: Option<crate::media::settings::MediaSettings>,
    /// This box's number in its cluster, named in every id it issues (`home.rs`); 0 alone.
    pub box_number: u8,
}

/// Fills a buffer with random bytes (the OS's in production, the server's `os_random`; a
/// seeded one in tests).
pub type RandomSource = Box<dyn FnMut(&mut [u8])>;

/// The service state of one shard.
pub struct ShardState {
    pub(crate) shard: ShardId,
    pub(crate) shards: usize,
    pub(crate) settings: ServiceSettings,
    pub(crate) ids: IdAllocator,
    pub(crate) registry: Registry,
    pub(crate) sessions: Sessions,
    pub(crate) queues: Queues,
    pub(crate) dedupe: Dedupe,
    pub(crate) recent: RecentAcked,
    pub(crate) groups: Groups,
    pub(crate) presence: Presence,
    /// Who may add users homed here to groups; creations waiting for members' answers.
    pub(crate) consent: crate::tables::consent::GroupConsent,
    pub(crate) random: RandomSource,
    /// Records written since the last snapshot (compaction estimate).
    pub(crate) records_since_snapshot: u64,
    /// `Some(retry_after_ms)` while the shard is overloaded: new sends get `Busy`
    /// (`overload.rs`). Set by the adapter (or the sim) before each event.
    pub(crate) busy: Option<u32>,
    /// Outstanding PINs and per-phone back-off.
    pub(crate) pins: crate::tables::pin_codes::Pins,
    /// Sign-up budgets (per source, prefix, range, this shard's share of the box).
    pub(crate) budgets: crate::tables::budgets::SignupBudgets,
    /// Logged-in users' budgets (group creations), per user homed here.
    pub(crate) user_budgets: crate::tables::budgets::UserBudgets,
    /// Connections on this shard that have not logged in: peer, refusals, hand-overs.
    /// Bounded by the engine's connection table; dropped at login and close.
    pub(crate) prelogin: HashMap<ConnId, crate::state::mesh_msg::PreLogin>,
    /// Accounts made by a load-test login whose record is not durable yet, with how many
    /// such records are in flight: a login to one waits for the commit too. Bounded by the
    /// logins of one commit window; empty when the log is idle.
    pub(crate) accounts_in_commit: HashMap<String, u32>,
    /// Rate limit of the refusal log lines.
    pub(crate) refusal_log: crate::state::counters::RefusalLog,
    /// What the abuse limits did since start.
    pub(crate) abuse: crate::state::counters::AbuseCounters,
    /// Per-user budgets: presence fan-out, new recipients (`admission.rs`).
    pub(crate) admission: crate::tables::admission::Admission,
    /// What the mesh handed back since start (`mesh_back.rs`).
    pub(crate) mesh_back: crate::state::counters::MeshBackCounters,
    /// Boxes of deliveries handled here, emptied, for the next sends made here
    /// (`route.rs`; at most `SPARE_DELIVERIES_MAX`). Boxes, as the boxes are what is
    /// reused: `ShardMsg::Deliver` carries one.
    #[allow(clippy::vec_box)]
    pub(crate) spare_deliveries: Vec<Box<crate::state::mesh_msg::Delivery>>,
}

impl std::fmt::Debug for ShardState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardState")
            .field("shard", &self.shard)
            .field("online", &self.sessions.len())
            .field("queued", &self.queues.total())
            .finish()
    }
}

impl ShardState {
    /// Empty state for `shard` of `shards`.
    pub fn new(
        shard: ShardId,
        shards: usize,
        settings: ServiceSettings,
        random: RandomSource,
        now: u64,
    ) -> Self {
        ShardState {
            spare_deliveries: Vec::new(),
            shard,
            shards,
            budgets: crate::tables::budgets::SignupBudgets::new(settings.signup, shards),
            pins: crate::tables::pin_codes::Pins::default(),
            user_budgets: crate::tables::budgets::UserBudgets::default(),
            prelogin: HashMap::new(),
            accounts_in_commit: HashMap::new(),
            refusal_log: crate::state::counters::RefusalLog::default(),
            abuse: crate::state::counters::AbuseCounters::default(),
            admission: crate::tables::admission::Admission::new(settings.users),
            mesh_back: Default::default(),
            ids: {
                let mut ids = IdAllocator::new(shard, 0, now);
                ids.set_box(settings.box_number);
                ids
            },
            settings,
            registry: Registry::default(),
            sessions: Sessions::default(),
            queues: Queues::default(),
            dedupe: Dedupe::default(),
            recent: RecentAcked::default(),
            groups: Groups::default(),
            presence: Presence::default(),
            consent: crate::tables::consent::GroupConsent::default(),
            random,
            records_since_snapshot: 0,
            busy: None,
        }
    }

    /// Home shard of a phone.
    pub(crate) fn home(&self, phone: &str) -> ShardId {
        home_of_phone(phone, self.shards)
    }

    /// The home shard of `phone` (no parse: its E.164 form is printed on the stack).
    pub(crate) fn home_phone(&self, phone: Phone) -> ShardId {
        crate::state::home::home_of(phone, self.shards)
    }

    /// Items queued on this shard.
    pub fn queued_total(&self) -> usize {
        self.queues.total()
    }

    /// A delivered frame's buffer (an `Effect::Wire`'s), copied into the connection's
    /// output: kept for the next delivery (`Queues::wire_done`).
    pub fn wire_done(&mut self, bytes: Vec<u8>) {
        self.queues.wire_done(bytes);
    }

    /// The per-user queues, to read (the statistics' sizes, the longest queue).
    pub fn queues(&self) -> &Queues {
        &self.queues
    }

    /// The accounts, to read.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts a connection closed at its log-in deadline (`login_timeouts_total`).
    pub fn count_login_timeout(&mut self) {
        self.abuse.login_timeouts += 1;
    }

    /// The PIN sent to `phone` certainly never reached it: its back-off no longer holds.
    pub fn pin_not_sent(&mut self, phone: &str, now: u64) {
        self.pins.not_sent(phone, now);
    }

    /// Sets whether new sends are refused with `Busy { retry_after_ms }` (`None`: admitted).
    pub fn set_busy(&mut self, retry_after_ms: Option<u32>) {
        self.busy = retry_after_ms;
    }

    /// The abuse limits' statistics ([`abuse_report`](counters::abuse_report)).
    pub fn abuse_stats(&self) -> Vec<(&'static str, u64)> {
        let g = crate::state::counters::AbuseGauges {
            pins_pending: self.pins.len() as u64,
            budget_keys: (self.budgets.keys() + self.user_budgets.keys()) as u64,
            prelogin_conns: self.prelogin.len() as u64,
            presence_subscriptions: self.presence.entries() as u64,
            presence_refused: self.presence.refused,
            group_creates_pending: self.consent.pending() as u64,
            recipient_ties: self.admission.ties.len() as u64,
        };
        crate::state::counters::abuse_report(&self.abuse, g)
    }
}

/// A `Busy` frame for `client_msg_id`.
pub(crate) fn busy(retry_after_ms: u32, client_msg_id: u64) -> proto::v1::server_frame::Kind {
    proto::v1::server_frame::Kind::Busy(proto::v1::Busy {
        retry_after_ms,
        client_msg_id,
    })
}

/// The record of a queued item.
pub(crate) fn item_record(user: Phone, item: &Item) -> ItemRec {
    item_record_with(user, item, item.encoded_frame())
}

/// [`item_record`] with the item's frame as given (written into a spare buffer).
pub(crate) fn item_record_with(user: Phone, item: &Item, frame: Vec<u8>) -> ItemRec {
    ItemRec {
        user: Some(user),
        id: item.id,
        frame,
        sender: item.sender,
        client_msg_id: item.client_msg_id,
        group_id: item.group_id(),
        sender_device: item.sender_device,
    }
}

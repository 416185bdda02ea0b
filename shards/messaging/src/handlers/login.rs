//! Registration, verification and login: the frames that name a phone before a session
//! exists. Each is handled at the phone's home shard: a connection whose frame names a phone
//! homed elsewhere is handed, live, to that shard with the frame (and its [`PreLogin`]), and
//! stays there for the rest of its life.
//!
//! Before login, step by step (the abuse limits; `docs/RELIABILITY.md`):
//! 1. The first pre-login frame records the connection's peer address ([`note_peer`],
//!    called by the adapter); every sign-up budget is charged to it and its prefix
//!    (`budgets.rs`). The record travels with a hand-over and is dropped at login or close,
//!    so neither a logged-in connection nor an idle one that never logs in pays for it.
//!
//! [`note_peer`]: ShardState::note_peer
//! 2. `Register`: the phone's back-off (`pin_codes.rs`), then the PIN budgets (source, prefix,
//!    number range, this shard's share of the box), checked all before any is charged.
//! 3. `Verify` and a wrong load-test secret spend the guess budgets (source, prefix, box);
//!    wrong PINs also count against that PIN only (`pin_codes.rs`), never against a phone
//!    without one.
//! 4. Every refusal is counted per connection; at `PRELOGIN_REFUSALS_MAX` the connection is
//!    closed, and a connection is handed over at most `PRELOGIN_HANDOFFS_MAX` times, so it
//!    cannot bounce between shards. Refusals are logged at most once per
//!    `REFUSAL_LOG_PERIOD_MS` per shard, with the count of those not logged.

use proto::ids::ConnId;
use proto::v1::{
    client_frame, server_frame, ClientFrame, ErrorCode, LoadTestLogin, Login, Register, Verify,
};

use crate::durable::record::{record, AccountRec, Record};
use crate::state::effect::{error, rate_limited, AfterCommit, Effect, Out};
use crate::state::limits::{DEVICE_KEY_BYTES, PRELOGIN_HANDOFFS_MAX, PRELOGIN_REFUSALS_MAX};
use crate::state::mesh_msg::{Adoption, PreLogin};
use crate::state::ShardState;
use crate::tables::budgets::{BudgetKind, Refused, Spend};
use crate::tables::pin_codes::PinError;
use crate::tables::registry::{constant_time_eq, hash_key};

/// Whether `frame` names a phone before a session exists (Register, Verify, Login,
/// LoadTestLogin): the frames whose connection's peer address the budgets need.
pub fn is_prelogin(frame: &ClientFrame) -> bool {
    use proto::v1::client_frame::Kind as K;
    matches!(
        frame.kind,
        Some(K::Register(_) | K::Verify(_) | K::Login(_) | K::LoadTestLogin(_))
    )
}

impl ShardState {
    /// `conn` sends a pre-login frame ([`is_prelogin`]) from `peer`: remembers where it
    /// comes from, once. Only such connections get an entry, so an idle connection that never
    /// logs in costs nothing here, and a logged-in one has none.
    pub fn note_peer(&mut self, conn: ConnId, peer: Option<std::net::IpAddr>) {
        if self.sessions.user_of(conn).is_some() {
            return;
        }
        self.prelogin.entry(conn).or_insert(PreLogin {
            peer,
            ..PreLogin::default()
        });
    }

    /// A connection handed over by another shard, with its first frame here.
    pub fn on_adopt(&mut self, now: u64, conn: ConnId, a: Adoption, out: &mut Out) {
        self.prelogin.insert(conn, a.guard);
        self.on_frame(now, conn, a.frame, out);
    }

    /// Where `conn` comes from, if known.
    fn source_of(&self, conn: ConnId) -> Option<std::net::IpAddr> {
        self.prelogin.get(&conn).and_then(|g| g.peer)
    }

    /// If `phone` is homed elsewhere, hands `conn` there with `frame` and returns true.
    fn route_home(
        &mut self,
        now: u64,
        conn: ConnId,
        phone: &str,
        frame: client_frame::Kind,
        out: &mut Out,
    ) -> bool {
        let home = self.home(phone);
        if home == self.shard {
            return false;
        }
        if self.sessions.user_of(conn).is_some() {
            out.error(conn, ErrorCode::UnexpectedFrame, "already logged in", 0);
            return true;
        }
        let mut guard = self.prelogin.remove(&conn).unwrap_or_default();
        if guard.handoffs >= PRELOGIN_HANDOFFS_MAX {
            self.abuse.prelogin_closed += 1;
            self.log_refusal(now, "connection closed: handed between shards too often");
            out.fail(
                conn,
                ErrorCode::RateLimited,
                "too many phones on one connection",
            );
            return true;
        }
        guard.handoffs += 1;
        let frame = ClientFrame { kind: Some(frame) };
        let adoption = Adoption { frame, guard };
        out.now
            .push(Effect::HandOff(conn, home, Box::new(adoption)));
        true
    }

    fn log_refusal(&mut self, now: u64, what: &str) {
        if let Some(suppressed) = self.refusal_log.note(now) {
            tracing::warn!(
                shard = self.shard.0,
                suppressed,
                "pre-login frame refused: {what}"
            );
        }
    }

    /// Answers a refused pre-login frame with `frame`, closing the connection once it has
    /// been refused `PRELOGIN_REFUSALS_MAX` times.
    fn refuse(
        &mut self,
        now: u64,
        conn: ConnId,
        frame: server_frame::Kind,
        what: &str,
        out: &mut Out,
    ) {
        self.log_refusal(now, what);
        out.frame(conn, frame);
        let Some(guard) = self.prelogin.get_mut(&conn) else {
            return;
        };
        guard.refusals += 1;
        if guard.refusals >= PRELOGIN_REFUSALS_MAX {
            self.abuse.prelogin_closed += 1;
            out.now.push(Effect::Close(conn));
        }
    }

    /// Answers a frame a budget refused with `RATE_LIMITED` and its retry-after.
    fn refuse_budget(&mut self, now: u64, conn: ConnId, r: Refused, out: &mut Out) {
        self.abuse.refused[r.kind as usize] += 1;
        let frame = rate_limited("too many attempts; try again later", r.retry_after_ms);
        self.refuse(now, conn, frame, r.kind.stat(), out);
    }

    pub(crate) fn on_register(&mut self, now: u64, conn: ConnId, r: Register, out: &mut Out) {
        if self.route_home(
            now,
            conn,
            &r.phone.clone(),
            client_frame::Kind::Register(r.clone()),
            out,
        ) {
            return;
        }
        if self.sessions.user_of(conn).is_some() {
            return out.error(conn, ErrorCode::UnexpectedFrame, "already logged in", 0);
        }
        let source = self.source_of(conn);
        let spend = Spend::PinSend { phone: &r.phone };
        let admitted = self
            .pins
            .may_send(&r.phone, now)
            .and_then(|()| self.budgets.check(spend, source, now));
        if let Err(refused) = admitted {
            return self.refuse_budget(now, conn, refused, out);
        }
        self.budgets.charge(spend, source, now);
        let mut digits = [0u8; 4];
        (self.random)(&mut digits);
        let pin = format!("{:06}", u32::from_le_bytes(digits) % 1_000_000);
        let expires_in_s = self.pins.sent(&r.phone, pin.clone(), now);
        self.abuse.pins_sent += 1;
        // PinSent goes out only once the gateway reports the PIN sent.
        out.now.push(Effect::Sms {
            conn,
            phone: r.phone.clone(),
            pin,
            on_sent: server_frame::Kind::PinSent(proto::v1::PinSent {
                phone: r.phone,
                expires_in_s: expires_in_s as u32,
            }),
        });
    }

    pub(crate) fn on_verify(&mut self, now: u64, conn: ConnId, v: Verify, out: &mut Out) {
        if self.route_home(
            now,
            conn,
            &v.phone.clone(),
            client_frame::Kind::Verify(v.clone()),
            out,
        ) {
            return;
        }
        if self.sessions.user_of(conn).is_some() {
            return out.error(conn, ErrorCode::UnexpectedFrame, "already logged in", 0);
        }
        if let Err(refused) = self.budgets.admit(Spend::Guess, self.source_of(conn), now) {
            return self.refuse_budget(now, conn, refused, out);
        }
        if let Err(e) = self
            .pins
            .verify(&v.phone, &v.pin, self.source_of(conn), now)
        {
            let code = match e {
                PinError::Burned { retry_after_ms } => {
                    let refused = Refused {
                        kind: BudgetKind::GuessNumber,
                        retry_after_ms,
                    };
                    return self.refuse_budget(now, conn, refused, out);
                }
                PinError::Expired => ErrorCode::PinExpired,
                _ => ErrorCode::BadPin,
            };
            return self.refuse(now, conn, error(code, &e.to_string(), 0), "PIN", out);
        }
        let mut key = vec![0u8; DEVICE_KEY_BYTES];
        (self.random)(&mut key);
        self.set_key(&v.phone, &key, out);
        // The new key replaces the old one at once: an open session on the old key ends.
        if let Some(old) = self.sessions.conn_of(&v.phone) {
            if old != conn {
                out.fail(
                    old,
                    ErrorCode::BadKey,
                    "device key revoked by a new registration",
                );
            }
        }
        let verified = server_frame::Kind::Verified(proto::v1::Verified {
            phone: v.phone,
            device_key: key,
        });
        out.after_commit
            .push(AfterCommit::Effect(Effect::Frame(conn, verified)));
    }

    /// Stores `key`'s hash as `phone`'s key (a new account gets an id).
    fn set_key(&mut self, phone: &str, key: &[u8], out: &mut Out) {
        let user_id = match self.registry.verified(phone) {
            Some(a) => a.user_id,
            None => self.ids.issue(),
        };
        let rec = AccountRec {
            phone: phone.to_string(),
            user_id,
            key_hash: hash_key(key),
        };
        self.registry.apply(&rec);
        self.records_since_snapshot += 1;
        out.records.push(Record {
            kind: Some(record::Kind::Account(rec)),
        });
    }

    pub(crate) fn on_login(&mut self, now: u64, conn: ConnId, l: Login, out: &mut Out) {
        if self.route_home(
            now,
            conn,
            &l.phone.clone(),
            client_frame::Kind::Login(l.clone()),
            out,
        ) {
            return;
        }
        if !self.registry.key_matches(&l.phone, &l.device_key) {
            self.log_refusal(now, "login with a wrong device key");
            return out.fail(conn, ErrorCode::BadKey, "unknown phone or wrong device key");
        }
        self.start_session(now, conn, l.phone, out);
    }

    pub(crate) fn on_load_test_login(
        &mut self,
        now: u64,
        conn: ConnId,
        l: LoadTestLogin,
        out: &mut Out,
    ) {
        let Some(secret) = self.settings.load_test_secret.clone() else {
            return out.fail(
                conn,
                ErrorCode::LoadTestDisabled,
                "load-test logins are disabled",
            );
        };
        // A logged-in connection has no pre-login record: its guesses would be charged to
        // the box budget alone, so one address could spend every owner's Verify.
        if self.sessions.user_of(conn).is_some() {
            return out.error(conn, ErrorCode::UnexpectedFrame, "already logged in", 0);
        }
        if self.route_home(
            now,
            conn,
            &l.phone.clone(),
            client_frame::Kind::LoadTestLogin(l.clone()),
            out,
        ) {
            return;
        }
        // The secret is a key like any other: guesses spend the guess budgets, and a source
        // over them is refused before its guess is compared.
        let source = self.source_of(conn);
        if let Err(refused) = self.budgets.check(Spend::Guess, source, now) {
            self.refuse_budget(now, conn, refused, out);
            return out.now.push(Effect::Close(conn));
        }
        if !constant_time_eq(&secret, &l.secret) {
            self.budgets.charge(Spend::Guess, source, now);
            self.log_refusal(now, "wrong load-test secret");
            return out.fail(conn, ErrorCode::BadKey, "wrong load-test secret");
        }
        let made_account = !self.registry.exists(&l.phone);
        if made_account {
            let mut key = vec![0u8; DEVICE_KEY_BYTES];
            (self.random)(&mut key);
            self.set_key(&l.phone, &key, out);
        }
        if made_account || self.accounts_in_commit.contains_key(&l.phone) {
            self.hold_until_account_durable(conn, &l.phone, made_account, out);
        }
        self.start_session(now, conn, l.phone, out);
    }

    /// A load-test login whose account record is not durable yet (it made the account, or
    /// an earlier login did and that record is still in flight): the session starts now
    /// (frames pipelined behind the login are served), but the connection hears nothing —
    /// `LoggedIn` first — until the record is durable, as `Verified` waits for its own. A
    /// box killed right after answering then still has the account when it starts again.
    fn hold_until_account_durable(
        &mut self,
        conn: ConnId,
        phone: &str,
        made_account: bool,
        out: &mut Out,
    ) {
        if made_account {
            *self
                .accounts_in_commit
                .entry(phone.to_string())
                .or_default() += 1;
        }
        out.now.push(Effect::HoldOutput(conn));
        out.after_commit.push(AfterCommit::AccountDurable {
            conn,
            phone: phone.to_string(),
            made_account,
        });
    }

    /// The account record a held login waited for is durable ([`AfterCommit::AccountDurable`]):
    /// what the connection was sent since goes out.
    pub(crate) fn on_account_durable(
        &mut self,
        conn: ConnId,
        phone: &str,
        made_account: bool,
        out: &mut Out,
    ) {
        if made_account {
            if let Some(n) = self.accounts_in_commit.get_mut(phone) {
                *n -= 1;
                if *n == 0 {
                    self.accounts_in_commit.remove(phone);
                }
            }
        }
        // Connection ids carry a generation: a closed connection's never names a newer one.
        out.now.push(Effect::ReleaseOutput(conn));
    }

    fn start_session(&mut self, now: u64, conn: ConnId, phone: String, out: &mut Out) {
        if let Some(other) = self.sessions.user_of(conn) {
            if Some(other) != crate::state::home::Phone::parse(&phone) {
                return out.error(conn, ErrorCode::UnexpectedFrame, "already logged in", 0);
            }
        }
        self.prelogin.remove(&conn);
        out.now.push(Effect::LoggedIn(conn));
        if let Some(old) = self.sessions.login(&phone, conn) {
            out.fail(old, ErrorCode::SessionReplaced, "logged in elsewhere");
            self.queues.session_ended(&phone);
        }
        if let Some(q) = self.queues.get_mut(&phone) {
            q.push_notified = false;
        }
        let user_id = self.registry.verified(&phone).map_or(0, |a| a.user_id);
        let queued = self.queues.len_of(&phone) as u32;
        out.frame(
            conn,
            server_frame::Kind::LoggedIn(proto::v1::LoggedIn { user_id, queued }),
        );
        self.pump(&phone, out);
        self.presence_changed(&phone, true, now, out);
    }
}

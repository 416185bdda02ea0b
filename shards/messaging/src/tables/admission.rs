//! Admission of what one logged-in user may make the server do beyond answering their own
//! frame: presence fan-out (each contact subscribed costs a mesh message to its home and
//! one back) and messages to numbers the sender has no tie to (the way to learn which
//! numbers are registered). Owns the per-user budgets ([`UserRate`]) and the ties
//! ([`Ties`]); it does not touch sessions, queues or the mesh. Pure state: time comes in as
//! an argument.
//!
//! The rules, and why each holds:
//! 1. **Presence fan-out**: a `PresenceSubscribe` costs one unit per contact that fans out
//!    (a new subscription, or the first renewal in a session); renewals within a session
//!    send nothing and cost one unit per [`PRESENCE_RENEWALS_PER_UNIT`]. Each user may spend [`PRESENCE_FANOUT_PER_USER_BURST`]
//!    at once, then [`PRESENCE_FANOUT_PER_USER_PER_S`] a second; a frame over it is refused
//!    whole with `RATE_LIMITED` and the exact retry-after. A login's subscriptions (at most
//!    `PRESENCE_SUBSCRIPTIONS_PER_USER_MAX`) fit the burst, so honest clients never see it.
//!    A `GroupSend` is admitted the same way at the group's home: `Busy` while that shard
//!    is overloaded, and its copies spend the sender's [`GROUP_FANOUT_PER_USER_BURST`] /
//!    [`GROUP_FANOUT_PER_USER_PER_S`] there (refused whole, nothing stored). `Ack` and
//!    `Read` fan out one receipt per message the user really received, so they need none.
//! 2. **New recipients**: a `SendMessage` to a number the sender has no tie to costs one
//!    unit of the sender's [`UserLimits::new_recipients_per_hour`]; the number is then tied
//!    for [`HOUR_MS`]. Ties that cost nothing: people who wrote to the sender (for
//!    [`TIE_WROTE_TO_YOU_MS`]) and contacts the sender follows in presence. Over the budget
//!    the send is refused with `RATE_LIMITED` and the exact retry-after, before anything
//!    learns whether the number is registered, so the refusal says nothing about it.
//! 3. **Bounded**: budget entries are per user homed here and dropped once full again (a
//!    sweep whose cost is paid for by the inserts since the last one); ties are at most
//!    [`TIES_PER_SHARD_MAX`], lapsed ones swept the same way. A full tie table stores no new
//!    tie: those sends pay the budget, which is the safe side.

use std::collections::HashMap;

use crate::state::home::Phone;
use crate::tables::budgets::HOUR_MS;

/// Presence contacts one user may fan out at once (the GCRA burst).
pub const PRESENCE_FANOUT_PER_USER_BURST: u32 = 4_096;
/// Presence contacts one user may fan out per second once the burst is spent.
pub const PRESENCE_FANOUT_PER_USER_PER_S: u32 = 200;
/// Renewals that cost one unit of the presence budget: they send nothing, but each costs
/// the shard a lookup, so a flood of renewals is bounded too.
pub const PRESENCE_RENEWALS_PER_UNIT: u32 = 16;
/// Group copies one sender may have fanned out at once by one group home (the GCRA burst:
/// 32 messages to a full group).
pub const GROUP_FANOUT_PER_USER_BURST: u32 = 8_192;
/// Group copies one sender may have fanned out per second by one group home once the burst
/// is spent (about 4 messages a second to a full group).
pub const GROUP_FANOUT_PER_USER_PER_S: u32 = 1_000;
/// Default: distinct new recipients one sender may write to per hour (0: off).
pub const NEW_RECIPIENTS_PER_HOUR_DEFAULT: u32 = 200;
/// How long a message from someone lets the recipient write back without spending budget.
pub const TIE_WROTE_TO_YOU_MS: u64 = 7 * 24 * HOUR_MS;
/// Ties one shard remembers (about 30 bytes each: 30 MiB at the cap).
pub const TIES_PER_SHARD_MAX: usize = 1 << 20;
/// Entries below which no sweep runs.
const SWEEP_ENTRIES_MIN: usize = 1_024;

// One frame's contacts, and a login's subscriptions, fit the burst.
const _: () = assert!(
    proto::limits::PRESENCE_CONTACTS_PER_FRAME_MAX <= PRESENCE_FANOUT_PER_USER_BURST as usize
);
const _: () = assert!(
    crate::state::limits::PRESENCE_SUBSCRIPTIONS_PER_USER_MAX
        <= PRESENCE_FANOUT_PER_USER_BURST as usize
);
const _: () = assert!(TIE_WROTE_TO_YOU_MS >= HOUR_MS);
const _: () = assert!(PRESENCE_RENEWALS_PER_UNIT >= 1);
const _: () = assert!(proto::limits::GROUP_MEMBERS_MAX <= GROUP_FANOUT_PER_USER_BURST as usize);
// Budgets count in whole milliseconds per unit.
const _: () =
    assert!(GROUP_FANOUT_PER_USER_PER_S <= 1_000 && PRESENCE_FANOUT_PER_USER_PER_S <= 1_000);

/// Per-user budgets that have flags (box-wide, as configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserLimits {
    /// Distinct new recipients per sender per hour (0: off, and no ties are tracked).
    pub new_recipients_per_hour: u32,
}

impl Default for UserLimits {
    fn default() -> Self {
        UserLimits {
            new_recipients_per_hour: NEW_RECIPIENTS_PER_HOUR_DEFAULT,
        }
    }
}

/// A budget of `count` units per `window_ms` per user, spending up to `burst` at once
/// (GCRA with a cost: the entry is the time the user's budget is full again).
#[derive(Debug)]
pub struct UserRate {
    /// Milliseconds one unit takes to come back; 0: the budget is off.
    interval_ms: u64,
    /// How far ahead of now the full-again time may run (`burst` units).
    burst_ms: u64,
    /// User → time their budget is full again; entries at or before now are dead.
    tat: HashMap<Phone, u64>,
    /// Entries at which the next sweep runs.
    sweep_at: usize,
}

impl UserRate {
    /// `count` units per `window_ms`, `burst` at once (`count` 0: off).
    pub fn new(count: u32, window_ms: u64, burst: u32) -> Self {
        let interval_ms = if count == 0 {
            0
        } else {
            (window_ms / u64::from(count)).max(1)
        };
        UserRate {
            interval_ms,
            burst_ms: interval_ms * u64::from(burst),
            tat: HashMap::new(),
            sweep_at: SWEEP_ENTRIES_MIN,
        }
    }

    /// Whether the budget is off.
    pub fn is_off(&self) -> bool {
        self.interval_ms == 0
    }

    /// Spends `units` of `who`'s budget at `now`; `Err(retry_after_ms)` (at least 1) when
    /// they do not fit, and then nothing is spent.
    pub fn admit(&mut self, who: Phone, units: u32, now: u64) -> Result<(), u64> {
        if self.is_off() || units == 0 {
            return Ok(());
        }
        self.sweep(now);
        let tat = self.tat.get(&who).map_or(now, |&t| t.max(now));
        let next = tat + u64::from(units) * self.interval_ms;
        let ahead = next - now;
        if ahead > self.burst_ms {
            return Err((ahead - self.burst_ms).max(1));
        }
        self.tat.insert(who, next);
        Ok(())
    }

    fn sweep(&mut self, now: u64) {
        if self.tat.len() < self.sweep_at {
            return;
        }
        self.tat.retain(|_, t| *t > now);
        self.sweep_at = (self.tat.len() * 2).max(SWEEP_ENTRIES_MIN);
    }

    /// Users tracked (dead entries included until swept).
    pub fn len(&self) -> usize {
        self.tat.len()
    }

    /// Whether no user is tracked.
    pub fn is_empty(&self) -> bool {
        self.tat.is_empty()
    }
}

/// Who may write to whom without spending the new-recipient budget: (sender, recipient) →
/// when that lapses. Kept at the sender's home, where both the sender's sends and the
/// messages written to the sender arrive.
#[derive(Debug, Default)]
pub struct Ties {
    lapse: HashMap<(Phone, Phone), u64>,
    /// Entries at which the next sweep runs (0: the minimum).
    sweep_at: usize,
    /// When a full table was last swept (a full table is swept at most once an hour).
    full_swept_ms: u64,
}

impl Ties {
    /// Whether `from` may write to `to` for free at `now`.
    pub fn has(&self, from: Phone, to: Phone, now: u64) -> bool {
        self.lapse.get(&(from, to)).is_some_and(|&l| l > now)
    }

    /// `from` may write to `to` for free until `until` (a later lapse already held is kept).
    /// A tie already held costs one lookup.
    pub fn tie(&mut self, from: Phone, to: Phone, until: u64, now: u64) {
        if let Some(l) = self.lapse.get_mut(&(from, to)) {
            *l = (*l).max(until);
            return;
        }
        self.sweep(now);
        if self.lapse.len() < TIES_PER_SHARD_MAX {
            self.lapse.insert((from, to), until);
        }
    }

    fn sweep(&mut self, now: u64) {
        let len = self.lapse.len();
        let due = len >= self.sweep_at.max(SWEEP_ENTRIES_MIN)
            || (len >= TIES_PER_SHARD_MAX && now >= self.full_swept_ms + HOUR_MS);
        if !due {
            return;
        }
        self.lapse.retain(|_, l| *l > now);
        if self.lapse.len() >= TIES_PER_SHARD_MAX / 2 {
            self.full_swept_ms = now;
        }
        self.sweep_at = (self.lapse.len() * 2).max(SWEEP_ENTRIES_MIN);
    }

    /// Ties held (lapsed ones included until swept).
    pub fn len(&self) -> usize {
        self.lapse.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.lapse.is_empty()
    }
}

/// One shard's admission state.
#[derive(Debug)]
pub struct Admission {
    /// Presence contacts fanned out, per user homed here.
    pub presence: UserRate,
    /// Group copies fanned out here, per sender (a group home budgets each sender of its
    /// groups: one spraying groups over every shard gets `shards ×` it).
    pub group: UserRate,
    /// New recipients written to, per sender homed here.
    pub recipients: UserRate,
    /// Who may write to whom for free (empty while the recipient budget is off).
    pub ties: Ties,
}

impl Admission {
    /// The admission state for `limits`.
    pub fn new(limits: UserLimits) -> Self {
        Admission {
            presence: UserRate::new(
                PRESENCE_FANOUT_PER_USER_PER_S,
                1_000,
                PRESENCE_FANOUT_PER_USER_BURST,
            ),
            group: UserRate::new(
                GROUP_FANOUT_PER_USER_PER_S,
                1_000,
                GROUP_FANOUT_PER_USER_BURST,
            ),
            recipients: UserRate::new(limits.new_recipients_per_hour, HOUR_MS, {
                limits.new_recipients_per_hour
            }),
            ties: Ties::default(),
        }
    }

    /// Whether `from` may write to `to` now: free when tied (or to themself), else one unit
    /// of the budget, after which the pair is tied for an hour. `follows` says whether `from`
    /// follows `to` in presence (asked only when the pair is not tied).
    pub fn admit_recipient(
        &mut self,
        from: Phone,
        to: Phone,
        now: u64,
        follows: impl FnOnce() -> bool,
    ) -> Result<(), u64> {
        if self.recipients.is_off() || from == to || self.ties.has(from, to, now) || follows() {
            return Ok(());
        }
        self.recipients.admit(from, 1, now)?;
        self.ties.tie(from, to, now + HOUR_MS, now);
        Ok(())
    }

    /// `writer` wrote to `reader` (homed here): `reader` may write back for free.
    pub fn wrote(&mut self, writer: Phone, reader: Phone, now: u64) {
        if !self.recipients.is_off() {
            self.ties
                .tie(reader, writer, now + TIE_WROTE_TO_YOU_MS, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u64) -> Phone {
        Phone::parse(&format!("+1555{n:07}")).unwrap()
    }

    #[test]
    fn a_user_rate_spends_its_burst_then_units_per_interval_with_an_exact_retry_after() {
        let mut r = UserRate::new(200, 1_000, 4_096);
        assert_eq!(r.admit(p(1), 4_096, 0), Ok(()));
        assert_eq!(r.admit(p(1), 1, 0), Err(5), "one unit back every 5 ms");
        assert_eq!(r.admit(p(1), 10, 0), Err(50), "a frame is refused whole");
        assert_eq!(r.admit(p(2), 1_024, 0), Ok(()), "users are apart");
        assert_eq!(r.admit(p(1), 10, 50), Ok(()));
        assert_eq!(
            r.admit(p(1), 0, 50),
            Ok(()),
            "nothing to fan out costs nothing"
        );
        assert!(UserRate::new(0, 1_000, 10).admit(p(1), 1_000, 0).is_ok());
    }

    #[test]
    fn user_rate_entries_are_swept_once_full_again() {
        let mut r = UserRate::new(10, 1_000, 10);
        for i in 0..SWEEP_ENTRIES_MIN as u64 {
            r.admit(p(i), 1, 0).unwrap();
        }
        assert_eq!(r.len(), SWEEP_ENTRIES_MIN);
        r.admit(p(999_999), 1, 100).unwrap();
        assert_eq!(r.len(), 1, "the others were full again at 100 ms");
    }

    #[test]
    fn ties_cost_the_budget_once_an_hour_and_writing_back_is_free() {
        let mut a = Admission::new(UserLimits {
            new_recipients_per_hour: 2,
        });
        let never = || false;
        assert!(a.admit_recipient(p(1), p(2), 0, never).is_ok());
        assert!(a.admit_recipient(p(1), p(2), 1, never).is_ok(), "tied now");
        assert!(a.admit_recipient(p(1), p(3), 2, never).is_ok());
        let retry = a.admit_recipient(p(1), p(4), 3, never).unwrap_err();
        assert_eq!(
            retry,
            HOUR_MS / 2 - 3,
            "one new recipient back every half hour"
        );
        assert!(
            a.admit_recipient(p(1), p(4), 3, || true).is_ok(),
            "contacts are free"
        );
        assert!(
            a.admit_recipient(p(1), p(1), 3, never).is_ok(),
            "notes to self are free"
        );
        a.wrote(p(5), p(1), 4);
        assert!(
            a.admit_recipient(p(1), p(5), 5, never).is_ok(),
            "writing back is free"
        );
        assert!(!a.ties.has(p(1), p(2), HOUR_MS), "a paid tie lasts an hour");
        assert!(
            a.admit_recipient(p(1), p(2), HOUR_MS, never).is_ok(),
            "budget back"
        );
        assert!(a.ties.has(p(1), p(5), TIE_WROTE_TO_YOU_MS + 3));
    }

    #[test]
    fn ties_stay_bounded_and_lapsed_ones_are_swept() {
        let mut t = Ties::default();
        for i in 0..SWEEP_ENTRIES_MIN as u64 {
            t.tie(p(1), p(i + 2), 10, 0);
        }
        assert_eq!(t.len(), SWEEP_ENTRIES_MIN);
        t.tie(p(9), p(9_999_999), 1_000, 100);
        assert_eq!(t.len(), 1, "lapsed ties were swept");
        assert!(t.has(p(9), p(9_999_999), 999) && !t.has(p(9), p(9_999_999), 1_000));
        let off = Admission::new(UserLimits {
            new_recipients_per_hour: 0,
        });
        assert!(off.ties.is_empty());
    }
}

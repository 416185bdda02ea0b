//! Sign-up budgets: how often PINs may be sent and PINs or secrets guessed, per source
//! address, per address prefix (IPv4 /24, IPv6 /48), per number range (country code and
//! leading digits) and per box. Each budget is a named limit ([`SignupLimits`], defaults
//! below, flags in `config.rs`) answered with `RATE_LIMITED` and a retry-after.
//!
//! How a budget counts (GCRA, the generic cell rate algorithm): a budget of `count` events
//! per `window_ms` keeps, per key, one number — the time `tat` at which the key's budget is
//! full again. An event at `now` is admitted when `tat - now <= window - interval` (with
//! `interval = window / count`), and then `tat = max(tat, now) + interval`. So a key may
//! spend `count` at once and then one every `interval`; the retry-after is exact.
//!
//! Why the tables are bounded without a lock or a scan:
//! 1. An event is first checked against every budget it falls under and charged to all of
//!    them only when all admit it ([`SignupBudgets::admit`]), so refused events create no
//!    entry.
//! 2. A key's entry is useless once `tat <= now`, which is at most `window_ms` after its last
//!    charge; each charge also queues `(charge time + window, key)`, in time order, and the
//!    front of that queue is swept on every check. A table therefore holds at most the
//!    events admitted in the last window.
//! 3. The box budget is split per shard ([`SignupLimits::per_shard`]) and caps what is
//!    admitted per window, so every table is bounded by it (and, as a backstop, by
//!    [`BUDGET_KEYS_PER_TABLE_MAX`]: a full table refuses new keys).
//!
//! Budgets live on the shard that processes the frame (the phone's home, which sees the
//! connection after the hand-over): a source spraying numbers over every shard gets at most
//! `shards ×` its per-source budget; the box budget is split so the box as a whole holds.
//! Pure state: time comes in as an argument.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;

/// Keys one budget table may track (a backstop; the box budget bounds them first).
pub const BUDGET_KEYS_PER_TABLE_MAX: usize = 1 << 20;
/// One hour, the window of the per-source, per-prefix and per-range budgets.
pub const HOUR_MS: u64 = 60 * 60 * 1000;
/// One minute, the window of the per-box budgets.
pub const MINUTE_MS: u64 = 60 * 1000;
/// Leading digits of a phone number (after `+`, country code included) that name its range.
pub const NUMBER_RANGE_DIGITS: usize = 6;
/// Bits of an IPv4 source that name its prefix (/24).
pub const PREFIX_V4_BITS: u32 = 24;
/// Bits of an IPv6 source that name its prefix (/48).
pub const PREFIX_V6_BITS: u32 = 48;

const _: () = assert!(NUMBER_RANGE_DIGITS < proto::limits::PHONE_DIGITS_MIN);

/// Default: PINs sent per source address per hour (per shard).
pub const PIN_SENDS_SOURCE_PER_HOUR_DEFAULT: u32 = 5;
/// Default: PINs sent per source prefix per hour (per shard).
pub const PIN_SENDS_PREFIX_PER_HOUR_DEFAULT: u32 = 30;
/// Default: PINs sent per number range per hour (per shard).
pub const PIN_SENDS_RANGE_PER_HOUR_DEFAULT: u32 = 30;
/// Default: PINs sent by the whole box per minute (split over the shards).
pub const PIN_SENDS_BOX_PER_MINUTE_DEFAULT: u32 = 600;
/// Default: Verify attempts and wrong secrets per source address per hour (per shard).
pub const GUESSES_SOURCE_PER_HOUR_DEFAULT: u32 = 20;
/// Default: Verify attempts and wrong secrets per source prefix per hour (per shard).
pub const GUESSES_PREFIX_PER_HOUR_DEFAULT: u32 = 100;
/// Default: Verify attempts and wrong secrets on the whole box per minute (split).
pub const GUESSES_BOX_PER_MINUTE_DEFAULT: u32 = 1_200;

// A prefix holds at least its sources' budget; a range at least one source's.
const _: () = assert!(PIN_SENDS_SOURCE_PER_HOUR_DEFAULT <= PIN_SENDS_PREFIX_PER_HOUR_DEFAULT);
const _: () = assert!(PIN_SENDS_SOURCE_PER_HOUR_DEFAULT <= PIN_SENDS_RANGE_PER_HOUR_DEFAULT);
const _: () = assert!(GUESSES_SOURCE_PER_HOUR_DEFAULT <= GUESSES_PREFIX_PER_HOUR_DEFAULT);
// What the default box budget admits in an hour fits the tables without the backstop.
const _: () = assert!((GUESSES_BOX_PER_MINUTE_DEFAULT as usize) * 60 <= BUDGET_KEYS_PER_TABLE_MAX);
const _: () =
    assert!((PIN_SENDS_BOX_PER_MINUTE_DEFAULT as usize) * 60 <= BUDGET_KEYS_PER_TABLE_MAX);

/// The sign-up budgets, box-wide as configured (0 turns one off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignupLimits {
    /// PINs sent per source address per hour.
    pub pin_sends_source_per_hour: u32,
    /// PINs sent per source prefix (IPv4 /24, IPv6 /48) per hour.
    pub pin_sends_prefix_per_hour: u32,
    /// PINs sent per number range (`+` and the first [`NUMBER_RANGE_DIGITS`]) per hour.
    pub pin_sends_range_per_hour: u32,
    /// PINs sent by the box per minute (each shard gets its share).
    pub pin_sends_box_per_minute: u32,
    /// Verify attempts and wrong load-test secrets per source per hour. (A wrong device key
    /// is not counted: it closes its connection, and a 256-bit key is not guessed.)
    pub guesses_source_per_hour: u32,
    /// The same per source prefix per hour.
    pub guesses_prefix_per_hour: u32,
    /// The same for the box per minute (each shard gets its share).
    pub guesses_box_per_minute: u32,
}

impl Default for SignupLimits {
    fn default() -> Self {
        SignupLimits {
            pin_sends_source_per_hour: PIN_SENDS_SOURCE_PER_HOUR_DEFAULT,
            pin_sends_prefix_per_hour: PIN_SENDS_PREFIX_PER_HOUR_DEFAULT,
            pin_sends_range_per_hour: PIN_SENDS_RANGE_PER_HOUR_DEFAULT,
            pin_sends_box_per_minute: PIN_SENDS_BOX_PER_MINUTE_DEFAULT,
            guesses_source_per_hour: GUESSES_SOURCE_PER_HOUR_DEFAULT,
            guesses_prefix_per_hour: GUESSES_PREFIX_PER_HOUR_DEFAULT,
            guesses_box_per_minute: GUESSES_BOX_PER_MINUTE_DEFAULT,
        }
    }
}

impl SignupLimits {
    /// One shard's share: the box budgets divided over `shards` (rounded up, at least 1 when
    /// on); the per-key budgets unchanged.
    pub fn per_shard(self, shards: usize) -> SignupLimits {
        let split = |n: u32| match n {
            0 => 0,
            n => n.div_ceil(shards.max(1) as u32),
        };
        SignupLimits {
            pin_sends_box_per_minute: split(self.pin_sends_box_per_minute),
            guesses_box_per_minute: split(self.guesses_box_per_minute),
            ..self
        }
    }
}

/// Which budget refused an event; also the name of its refusal counter in the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetKind {
    /// PIN sends from one source address.
    PinSource,
    /// PIN sends from one prefix.
    PinPrefix,
    /// PIN sends to one number range.
    PinRange,
    /// PIN sends on this shard's share of the box.
    PinBox,
    /// PIN sends to one number (growing back-off, `pin_codes.rs`).
    PinNumber,
    /// Guesses from one source address.
    GuessSource,
    /// Guesses from one prefix.
    GuessPrefix,
    /// Guesses on this shard's share of the box.
    GuessBox,
    /// Wrong tries at one outstanding PIN (`pin_codes.rs`).
    GuessNumber,
    /// Groups created by one user ([`UserBudgets`]).
    GroupCreate,
}

impl BudgetKind {
    /// Every kind, in statistics order.
    pub const ALL: [BudgetKind; 10] = [
        BudgetKind::PinSource,
        BudgetKind::PinPrefix,
        BudgetKind::PinRange,
        BudgetKind::PinBox,
        BudgetKind::PinNumber,
        BudgetKind::GuessSource,
        BudgetKind::GuessPrefix,
        BudgetKind::GuessBox,
        BudgetKind::GuessNumber,
        BudgetKind::GroupCreate,
    ];

    /// The statistic counting this budget's refusals.
    pub fn stat(self) -> &'static str {
        match self {
            BudgetKind::PinSource => "refused_pin_source_total",
            BudgetKind::PinPrefix => "refused_pin_prefix_total",
            BudgetKind::PinRange => "refused_pin_range_total",
            BudgetKind::PinBox => "refused_pin_box_total",
            BudgetKind::PinNumber => "refused_pin_number_total",
            BudgetKind::GuessSource => "refused_guess_source_total",
            BudgetKind::GuessPrefix => "refused_guess_prefix_total",
            BudgetKind::GuessBox => "refused_guess_box_total",
            BudgetKind::GuessNumber => "refused_guess_number_total",
            BudgetKind::GroupCreate => "refused_group_create_total",
        }
    }
}

/// An event refused by a budget: which, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The budget.
    pub kind: BudgetKind,
    /// Milliseconds until that budget admits the event (at least 1).
    pub retry_after_ms: u64,
}

/// `count` events per `window_ms` (`count` 0: unlimited).
#[derive(Debug, Clone, Copy)]
struct Rate {
    interval_ms: u64,
    tolerance_ms: u64,
    window_ms: u64,
}

impl Rate {
    fn new(count: u32, window_ms: u64) -> Option<Rate> {
        if count == 0 {
            return None;
        }
        let interval_ms = (window_ms / count as u64).max(1);
        Some(Rate {
            interval_ms,
            tolerance_ms: window_ms.saturating_sub(interval_ms),
            window_ms,
        })
    }

    /// `Err(retry_after_ms)` when an event at `now` with state `tat` is over the budget.
    fn check(&self, tat: u64, now: u64) -> Result<(), u64> {
        let allowed_at = tat.saturating_sub(self.tolerance_ms);
        if allowed_at > now {
            return Err(allowed_at - now);
        }
        Ok(())
    }

    fn charged(&self, tat: u64, now: u64) -> u64 {
        tat.max(now) + self.interval_ms
    }
}

/// One budget over many keys (sources, prefixes, ranges). See the module header.
#[derive(Debug)]
pub struct KeyedBudget<K> {
    rate: Option<Rate>,
    kind: BudgetKind,
    /// Key → time its budget is full again. Entries at or before now are dead.
    tat: HashMap<K, u64>,
    /// `(charge time + window, key)` per charge, in time order: the sweep's work list.
    expiry: VecDeque<(u64, K)>,
}

impl<K: Hash + Eq + Copy> KeyedBudget<K> {
    fn new(kind: BudgetKind, count: u32, window_ms: u64) -> Self {
        KeyedBudget {
            rate: Rate::new(count, window_ms),
            kind,
            tat: HashMap::new(),
            expiry: VecDeque::new(),
        }
    }

    /// Drops the entries no longer holding anything back.
    fn sweep(&mut self, now: u64) {
        while let Some(&(at, key)) = self.expiry.front() {
            if at > now {
                break;
            }
            self.expiry.pop_front();
            if self.tat.get(&key).is_some_and(|&t| t <= now) {
                self.tat.remove(&key);
            }
        }
    }

    /// Whether `key` may spend one event now.
    pub fn check(&mut self, key: K, now: u64) -> Result<(), Refused> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        self.sweep(now);
        let refused = |retry_after_ms: u64| Refused {
            kind: self.kind,
            retry_after_ms: retry_after_ms.max(1),
        };
        match self.tat.get(&key) {
            Some(&tat) => rate.check(tat, now).map_err(refused),
            None if self.tat.len() >= BUDGET_KEYS_PER_TABLE_MAX => Err(refused(rate.window_ms)),
            None => Ok(()),
        }
    }

    /// Spends one event of `key` (after every budget it falls under admitted it).
    pub fn charge(&mut self, key: K, now: u64) {
        let Some(rate) = self.rate else {
            return;
        };
        let tat = self.tat.entry(key).or_insert(0);
        *tat = rate.charged(*tat, now);
        self.expiry.push_back((now + rate.window_ms, key));
    }

    /// Keys tracked now (dead ones included until swept).
    pub fn len(&self) -> usize {
        self.tat.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.tat.is_empty()
    }
}

/// Groups one user may create per hour (at their home, where their groups live).
pub const GROUP_CREATES_PER_USER_PER_HOUR: u32 = 60;

/// Budgets of logged-in users, per user, at the user's home. Bounded like the sign-up
/// tables: an entry lives at most a window after its last charge, so a table holds at most
/// the users who spent in the last window (and [`BUDGET_KEYS_PER_TABLE_MAX`]).
#[derive(Debug)]
pub struct UserBudgets {
    group_creates: KeyedBudget<crate::state::home::Phone>,
}

impl Default for UserBudgets {
    fn default() -> Self {
        UserBudgets {
            group_creates: KeyedBudget::new(
                BudgetKind::GroupCreate,
                GROUP_CREATES_PER_USER_PER_HOUR,
                HOUR_MS,
            ),
        }
    }
}

impl UserBudgets {
    /// Checks and, when admitted, spends one group creation of `user`.
    pub fn admit_group_create(
        &mut self,
        user: crate::state::home::Phone,
        now: u64,
    ) -> Result<(), Refused> {
        self.group_creates.check(user, now)?;
        self.group_creates.charge(user, now);
        Ok(())
    }

    /// Keys tracked over all tables (a gauge for the statistics).
    pub fn keys(&self) -> usize {
        self.group_creates.len()
    }
}

/// A source address's prefix: IPv4 /24 or IPv6 /48, as the masked address.
pub fn prefix_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) & (u32::MAX << (32 - PREFIX_V4_BITS))).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) & (u128::MAX << (128 - PREFIX_V6_BITS))).into()),
    }
}

/// A phone's number range: its first [`NUMBER_RANGE_DIGITS`] digits as a number (phones are
/// validated E.164 with at least `PHONE_DIGITS_MIN` digits before they get here).
pub fn range_of(phone: &str) -> u32 {
    phone
        .bytes()
        .filter(u8::is_ascii_digit)
        .take(NUMBER_RANGE_DIGITS)
        .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
}

/// What is being spent.
#[derive(Debug, Clone, Copy)]
pub enum Spend<'a> {
    /// A PIN sent to `phone`.
    PinSend {
        /// The phone the PIN goes to.
        phone: &'a str,
    },
    /// A Verify attempt or a wrong load-test secret.
    Guess,
}

/// One shard's sign-up budgets.
#[derive(Debug)]
pub struct SignupBudgets {
    pin_source: KeyedBudget<IpAddr>,
    pin_prefix: KeyedBudget<IpAddr>,
    pin_range: KeyedBudget<u32>,
    pin_box: KeyedBudget<()>,
    guess_source: KeyedBudget<IpAddr>,
    guess_prefix: KeyedBudget<IpAddr>,
    guess_box: KeyedBudget<()>,
}

impl SignupBudgets {
    /// Budgets of one shard's share of `limits`.
    pub fn new(limits: SignupLimits, shards: usize) -> Self {
        let l = limits.per_shard(shards);
        use BudgetKind as K;
        SignupBudgets {
            pin_source: KeyedBudget::new(K::PinSource, l.pin_sends_source_per_hour, HOUR_MS),
            pin_prefix: KeyedBudget::new(K::PinPrefix, l.pin_sends_prefix_per_hour, HOUR_MS),
            pin_range: KeyedBudget::new(K::PinRange, l.pin_sends_range_per_hour, HOUR_MS),
            pin_box: KeyedBudget::new(K::PinBox, l.pin_sends_box_per_minute, MINUTE_MS),
            guess_source: KeyedBudget::new(K::GuessSource, l.guesses_source_per_hour, HOUR_MS),
            guess_prefix: KeyedBudget::new(K::GuessPrefix, l.guesses_prefix_per_hour, HOUR_MS),
            guess_box: KeyedBudget::new(K::GuessBox, l.guesses_box_per_minute, MINUTE_MS),
        }
    }

    /// Checks `spend` from `source` (`None`: unknown, only the box budget applies) against
    /// every budget it falls under without spending anything.
    pub fn check(
        &mut self,
        spend: Spend<'_>,
        source: Option<IpAddr>,
        now: u64,
    ) -> Result<(), Refused> {
        match spend {
            Spend::PinSend { phone } => {
                if let Some(ip) = source {
                    self.pin_source.check(ip, now)?;
                    self.pin_prefix.check(prefix_of(ip), now)?;
                }
                self.pin_range.check(range_of(phone), now)?;
                self.pin_box.check((), now)
            }
            Spend::Guess => {
                if let Some(ip) = source {
                    self.guess_source.check(ip, now)?;
                    self.guess_prefix.check(prefix_of(ip), now)?;
                }
                self.guess_box.check((), now)
            }
        }
    }

    /// Spends `spend` from `source` in every budget it falls under (after [`Self::check`]).
    pub fn charge(&mut self, spend: Spend<'_>, source: Option<IpAddr>, now: u64) {
        match spend {
            Spend::PinSend { phone } => {
                if let Some(ip) = source {
                    self.pin_source.charge(ip, now);
                    self.pin_prefix.charge(prefix_of(ip), now);
                }
                self.pin_range.charge(range_of(phone), now);
                self.pin_box.charge((), now);
            }
            Spend::Guess => {
                if let Some(ip) = source {
                    self.guess_source.charge(ip, now);
                    self.guess_prefix.charge(prefix_of(ip), now);
                }
                self.guess_box.charge((), now);
            }
        }
    }

    /// Checks and, when every budget admits it, spends.
    pub fn admit(
        &mut self,
        spend: Spend<'_>,
        source: Option<IpAddr>,
        now: u64,
    ) -> Result<(), Refused> {
        self.check(spend, source, now)?;
        self.charge(spend, source, now);
        Ok(())
    }

    /// Keys tracked over all tables (a gauge for the statistics).
    pub fn keys(&self) -> usize {
        self.pin_source.len()
            + self.pin_prefix.len()
            + self.pin_range.len()
            + self.pin_box.len()
            + self.guess_source.len()
            + self.guess_prefix.len()
            + self.guess_box.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_budget_spends_its_count_then_one_per_interval_with_an_exact_retry_after() {
        let mut b = KeyedBudget::new(BudgetKind::PinSource, 4, HOUR_MS);
        let k = ip("10.0.0.1");
        for _ in 0..4 {
            b.check(k, 0).unwrap();
            b.charge(k, 0);
        }
        let r = b.check(k, 0).unwrap_err();
        assert_eq!(r.kind, BudgetKind::PinSource);
        assert_eq!(r.retry_after_ms, HOUR_MS / 4, "one event back per interval");
        assert!(
            b.check(ip("10.0.0.2"), 0).is_ok(),
            "other keys are unaffected"
        );
        assert!(b.check(k, HOUR_MS / 4 - 1).is_err());
        assert!(b.check(k, HOUR_MS / 4).is_ok());
    }

    #[test]
    fn entries_are_swept_once_their_window_passed() {
        let mut b = KeyedBudget::new(BudgetKind::GuessSource, 2, HOUR_MS);
        for i in 0..100u32 {
            b.charge(IpAddr::V4(i.into()), u64::from(i));
        }
        assert_eq!(b.len(), 100);
        b.check(ip("10.0.0.1"), HOUR_MS + 50).unwrap();
        assert_eq!(b.len(), 49, "keys charged at 0..=50 are gone");
        b.check(ip("10.0.0.1"), 2 * HOUR_MS).unwrap();
        assert!(b.is_empty());
    }

    #[test]
    fn refused_events_create_no_entry_and_the_box_budget_is_split() {
        let limits = SignupLimits {
            pin_sends_box_per_minute: 10,
            ..SignupLimits::default()
        };
        assert_eq!(limits.per_shard(4).pin_sends_box_per_minute, 3);
        let mut b = SignupBudgets::new(limits, 4);
        let phone = "+15550001111";
        for i in 0..3u32 {
            b.admit(
                Spend::PinSend { phone },
                Some(IpAddr::V4((i << 8).into())),
                0,
            )
            .unwrap();
        }
        let keys = b.keys();
        let r = b
            .admit(Spend::PinSend { phone }, Some(ip("192.0.2.1")), 0)
            .unwrap_err();
        assert_eq!(r.kind, BudgetKind::PinBox);
        assert_eq!(b.keys(), keys, "a refused send leaves no state behind");
    }

    #[test]
    fn prefixes_and_ranges() {
        assert_eq!(prefix_of(ip("203.0.113.77")), ip("203.0.113.0"));
        assert_eq!(prefix_of(ip("2001:db8:1:2::5")), ip("2001:db8:1::"));
        assert_eq!(range_of("+447012345678"), 447_012);
        assert_ne!(range_of("+447012345678"), range_of("+447112345678"));
        let mut b = SignupBudgets::new(SignupLimits::default(), 1);
        for i in 0..PIN_SENDS_SOURCE_PER_HOUR_DEFAULT {
            b.admit(
                Spend::PinSend {
                    phone: "+15550000001",
                },
                Some(ip("198.51.100.1")),
                u64::from(i),
            )
            .unwrap();
        }
        let r = b
            .admit(
                Spend::PinSend {
                    phone: "+15550000001",
                },
                Some(ip("198.51.100.1")),
                10,
            )
            .unwrap_err();
        assert_eq!(r.kind, BudgetKind::PinSource);
        assert!(
            b.admit(
                Spend::PinSend {
                    phone: "+15550000001"
                },
                Some(ip("198.51.100.2")),
                10
            )
            .is_ok(),
            "a neighbour in the same /24 has its own source budget"
        );
    }
}

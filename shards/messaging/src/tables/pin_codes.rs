//! Outstanding registration PINs of the phones homed on this shard, and each phone's growing
//! back-off between PIN sends. Pure state: time and PINs come in as arguments.
//!
//! Rules, and why each is safe:
//! 1. State exists only for a phone a PIN was sent to: a Verify for any other phone finds
//!    nothing and stores nothing, so a stranger's wrong tries cannot lock an owner out and a
//!    flood of Verify frames cannot grow memory.
//! 2. A PIN is valid [`PIN_TTL_MS`]. Wrong tries count per source prefix (IPv4 /24, IPv6
//!    /48): a prefix that made [`PIN_WRONG_TRIES_PER_PREFIX_MAX`] may not try this PIN again,
//!    but the PIN stays good for everyone else, so a stranger who had the gateway text the
//!    owner a PIN cannot burn it before the owner types it. After
//!    [`PIN_WRONG_TRIES_MAX`] wrong tries in all the PIN is burned. With the per-source
//!    guess budget (`budgets.rs`), N PINs sent give at most 25N guesses, and N is budgeted
//!    per source, prefix, number range and box. (Found in review: with one count per PIN,
//!    a stranger burning each PIN as it was sent kept the owner out for a day.)
//! 3. Each send to a phone waits for the previous one's back-off, which doubles from
//!    [`PIN_BACKOFF_BASE_MS`] up to [`PIN_BACKOFF_MAX_MS`]; a successful Verify clears it.
//! 4. An entry is forgotten [`PIN_ENTRY_TTL_MS`] after its last send (swept in time order, no
//!    scan), and at most [`PINS_PER_SHARD_MAX`] exist: a full table refuses new phones.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use crate::tables::budgets::{BudgetKind, Refused};
use crate::tables::registry::constant_time_eq;

/// A PIN is valid this long.
pub const PIN_TTL_MS: u64 = 10 * 60 * 1000;
/// Wrong tries one source prefix may make at one PIN.
pub const PIN_WRONG_TRIES_PER_PREFIX_MAX: u32 = 5;
/// Wrong tries one PIN takes, from all prefixes, before it is burned.
pub const PIN_WRONG_TRIES_MAX: u32 = 25;
const _: () = assert!(PIN_WRONG_TRIES_PER_PREFIX_MAX <= PIN_WRONG_TRIES_MAX);
/// Wait after a phone's first PIN before another is sent; doubles with each send.
pub const PIN_BACKOFF_BASE_MS: u64 = 60 * 1000;
/// The longest wait between two PINs to one phone.
pub const PIN_BACKOFF_MAX_MS: u64 = 32 * 60 * 1000;
/// A phone's entry (PIN and back-off) is forgotten this long after its last send.
pub const PIN_ENTRY_TTL_MS: u64 = 60 * 60 * 1000;
/// Phones with an entry, per shard (the per-shard box budget bounds them first).
pub const PINS_PER_SHARD_MAX: usize = 100_000;

const _: () = assert!(PIN_TTL_MS <= PIN_ENTRY_TTL_MS);
const _: () = assert!(PIN_BACKOFF_MAX_MS <= PIN_ENTRY_TTL_MS);
// The default box budget (all of it on one shard) cannot fill the table within an entry's life.
const _: () = assert!(
    crate::tables::budgets::PIN_SENDS_BOX_PER_MINUTE_DEFAULT as u64 * (PIN_ENTRY_TTL_MS / 60_000)
        <= PINS_PER_SHARD_MAX as u64
);

/// One phone a PIN was sent to.
#[derive(Debug)]
struct Pending {
    /// The PIN and when it expires; `None` once used, burned or expired.
    pin: Option<(String, u64)>,
    /// Wrong tries at the current PIN.
    wrong: u32,
    /// Wrong tries at the current PIN per source prefix (`None`: source unknown).
    wrong_by_prefix: Vec<(Option<IpAddr>, u32)>,
    /// PINs sent since the entry was created.
    sends: u32,
    /// No new PIN before this.
    next_send_ms: u64,
    /// The entry is forgotten at this time.
    forget_ms: u64,
}

/// Why a Verify was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    /// No PIN outstanding, or it does not match (the same answer, so the reply does not
    /// tell whether a PIN is outstanding).
    #[error("wrong PIN")]
    BadPin,
    /// The PIN is older than its time to live.
    #[error("PIN expired; register again")]
    Expired,
    /// This source prefix has used its wrong tries at this PIN (which stays good for
    /// others), or the PIN took its last wrong try and is burned; a new one may be asked
    /// for after `retry_after_ms`.
    #[error("too many wrong PINs; register again later")]
    Burned {
        /// Until the phone's back-off allows a new PIN.
        retry_after_ms: u64,
    },
}

/// Outstanding PINs and back-offs of this shard's phones.
#[derive(Debug, Default)]
pub struct Pins {
    by_phone: HashMap<String, Pending>,
    /// `(forget time, phone)` per send, in time order: the sweep's work list.
    expiry: VecDeque<(u64, String)>,
}

impl Pins {
    fn sweep(&mut self, now: u64) {
        while let Some((at, _)) = self.expiry.front() {
            if *at > now {
                break;
            }
            let (_, phone) = self.expiry.pop_front().expect("front exists");
            if self
                .by_phone
                .get(&phone)
                .is_some_and(|p| p.forget_ms <= now)
            {
                self.by_phone.remove(&phone);
            }
        }
    }

    /// Whether a PIN may be sent to `phone` now (its back-off, and room in the table).
    pub fn may_send(&mut self, phone: &str, now: u64) -> Result<(), Refused> {
        self.sweep(now);
        let refused = |retry_after_ms: u64| Refused {
            kind: BudgetKind::PinNumber,
            retry_after_ms: retry_after_ms.max(1),
        };
        match self.by_phone.get(phone) {
            Some(p) if p.next_send_ms > now => Err(refused(p.next_send_ms - now)),
            Some(_) => Ok(()),
            None if self.by_phone.len() >= PINS_PER_SHARD_MAX => Err(refused(PIN_BACKOFF_BASE_MS)),
            None => Ok(()),
        }
    }

    /// `pin` was sent to `phone` at `now` (after [`Self::may_send`]); returns its life in s.
    pub fn sent(&mut self, phone: &str, pin: String, now: u64) -> u64 {
        let p = self.by_phone.entry(phone.to_string()).or_insert(Pending {
            pin: None,
            wrong: 0,
            wrong_by_prefix: Vec::new(),
            sends: 0,
            next_send_ms: 0,
            forget_ms: 0,
        });
        let backoff = PIN_BACKOFF_BASE_MS
            .saturating_mul(1 << p.sends.min(16))
            .min(PIN_BACKOFF_MAX_MS);
        p.sends += 1;
        p.pin = Some((pin, now + PIN_TTL_MS));
        p.wrong = 0;
        p.wrong_by_prefix.clear();
        p.next_send_ms = now + backoff;
        p.forget_ms = now + PIN_ENTRY_TTL_MS;
        self.expiry.push_back((p.forget_ms, phone.to_string()));
        PIN_TTL_MS / 1000
    }

    /// The PIN last sent to `phone` certainly never reached it (the gateway's queue or the
    /// gateway refused it): it is void and no longer holds the phone's back-off, so the
    /// owner told "PIN not sent; try again" can. The budgets it spent stay spent.
    pub fn not_sent(&mut self, phone: &str, now: u64) {
        if let Some(p) = self.by_phone.get_mut(phone) {
            p.pin = None;
            p.sends = p.sends.saturating_sub(1);
            p.next_send_ms = p.next_send_ms.min(now);
        }
    }

    /// Checks `pin` for `phone`, tried from `source`; on success the entry is gone and the
    /// caller issues a key.
    pub fn verify(
        &mut self,
        phone: &str,
        pin: &str,
        source: Option<IpAddr>,
        now: u64,
    ) -> Result<(), PinError> {
        self.sweep(now);
        let Some(p) = self.by_phone.get_mut(phone) else {
            return Err(PinError::BadPin);
        };
        let Some((expected, expires)) = &p.pin else {
            return Err(PinError::BadPin);
        };
        let prefix = source.map(crate::tables::budgets::prefix_of);
        let tried = p
            .wrong_by_prefix
            .iter()
            .find(|(k, _)| *k == prefix)
            .map_or(0, |(_, n)| *n);
        let retry_after_ms = p.next_send_ms.saturating_sub(now).max(1);
        if tried >= PIN_WRONG_TRIES_PER_PREFIX_MAX {
            // Not even compared: this prefix has had its tries at this PIN.
            return Err(PinError::Burned { retry_after_ms });
        }
        if !constant_time_eq(expected.as_bytes(), pin.as_bytes()) {
            p.wrong += 1;
            match p.wrong_by_prefix.iter_mut().find(|(k, _)| *k == prefix) {
                Some((_, n)) => *n += 1,
                // Bounded by PIN_WRONG_TRIES_MAX: each prefix here took one of the PIN's tries.
                None => p.wrong_by_prefix.push((prefix, 1)),
            }
            let last_for_prefix = tried + 1 >= PIN_WRONG_TRIES_PER_PREFIX_MAX;
            if p.wrong >= PIN_WRONG_TRIES_MAX {
                p.pin = None;
                return Err(PinError::Burned { retry_after_ms });
            }
            if last_for_prefix {
                return Err(PinError::Burned { retry_after_ms });
            }
            return Err(PinError::BadPin);
        }
        if now >= *expires {
            p.pin = None;
            return Err(PinError::Expired);
        }
        self.by_phone.remove(phone);
        Ok(())
    }

    /// Phones with an entry (a gauge for the statistics).
    pub fn len(&self) -> usize {
        self.by_phone.len()
    }

    /// Whether no phone has an entry.
    pub fn is_empty(&self) -> bool {
        self.by_phone.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "+15550001111";
    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 1)));

    fn source(a: u8, b: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, a, b)))
    }

    #[test]
    fn a_pin_is_single_use_and_expires() {
        let mut p = Pins::default();
        assert_eq!(p.sent(P, "123456".into(), 0), PIN_TTL_MS / 1000);
        assert_eq!(p.verify(P, "123456", A, 10), Ok(()));
        assert_eq!(p.verify(P, "123456", A, 11), Err(PinError::BadPin));
        assert!(p.is_empty(), "a verified phone keeps no entry");
        p.may_send(P, 12).unwrap();
        p.sent(P, "222222".into(), 12);
        assert_eq!(
            p.verify(P, "222222", A, 12 + PIN_TTL_MS),
            Err(PinError::Expired)
        );
    }

    #[test]
    fn verify_without_a_pin_stores_nothing_and_locks_nobody_out() {
        let mut p = Pins::default();
        for i in 0..1000 {
            assert_eq!(p.verify(P, "000000", A, i), Err(PinError::BadPin));
        }
        assert!(p.is_empty());
        p.may_send(P, 2000).unwrap();
        p.sent(P, "654321".into(), 2000);
        assert_eq!(
            p.verify(P, "654321", A, 2001),
            Ok(()),
            "the owner is not locked out"
        );
    }

    #[test]
    fn a_pin_that_never_went_out_voids_and_lifts_its_back_off() {
        let mut p = Pins::default();
        p.sent(P, "123456".into(), 0);
        p.not_sent(P, 5);
        assert_eq!(p.verify(P, "123456", A, 6), Err(PinError::BadPin), "void");
        p.may_send(P, 6).unwrap();
        p.sent(P, "222222".into(), 6);
        let wait = p.may_send(P, 6).unwrap_err().retry_after_ms;
        assert_eq!(
            wait, PIN_BACKOFF_BASE_MS,
            "the first back-off again, not the second"
        );
        p.not_sent("+15550009999", 7);
        assert_eq!(p.len(), 1, "no entry for a phone without one");
    }

    #[test]
    fn wrong_tries_burn_the_pin_and_sends_back_off() {
        let mut p = Pins::default();
        p.sent(P, "123456".into(), 0);
        // One prefix has its tries, then is refused; the PIN stays good for others.
        for i in 1..PIN_WRONG_TRIES_PER_PREFIX_MAX {
            assert_eq!(
                p.verify(P, "000000", source(1, 1), u64::from(i)),
                Err(PinError::BadPin)
            );
        }
        let spent = Err(PinError::Burned {
            retry_after_ms: PIN_BACKOFF_BASE_MS - 10,
        });
        assert_eq!(p.verify(P, "000000", source(1, 2), 10), spent, "same /24");
        assert_eq!(
            p.verify(P, "123456", source(1, 3), 10),
            spent,
            "that prefix may not try even the right PIN"
        );
        // Other prefixes, together, burn it at PIN_WRONG_TRIES_MAX.
        let mut t = 10;
        let per = PIN_WRONG_TRIES_PER_PREFIX_MAX;
        for k in 1..PIN_WRONG_TRIES_MAX / per {
            for _ in 0..per {
                t += 1;
                let _ = p.verify(P, "000000", source(2 + k as u8, 1), t);
            }
        }
        assert_eq!(
            p.verify(P, "123456", source(99, 1), t),
            Err(PinError::BadPin),
            "burned"
        );
        let r = p.may_send(P, 11).unwrap_err();
        assert_eq!(r.retry_after_ms, PIN_BACKOFF_BASE_MS - 11);
        let mut t = PIN_BACKOFF_BASE_MS;
        let mut waits = Vec::new();
        for _ in 0..7 {
            p.may_send(P, t).unwrap();
            p.sent(P, "111111".into(), t);
            let wait = p.may_send(P, t).unwrap_err().retry_after_ms;
            waits.push(wait / 60_000);
            t += wait;
        }
        assert_eq!(
            waits,
            vec![2, 4, 8, 16, 32, 32, 32],
            "doubles up to the cap"
        );
        p.may_send(P, t + PIN_ENTRY_TTL_MS).unwrap();
        assert!(p.is_empty(), "forgotten an hour after the last send");
    }
}

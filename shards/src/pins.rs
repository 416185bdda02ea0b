//! Outstanding registration PINs of the phones homed on this shard, and each phone's growing
//! back-off between PIN sends. Pure state: time and PINs come in as arguments.
//!
//! Rules, and why each is safe:
//! 1. State exists only for a phone a PIN was sent to: a Verify for any other phone finds
//!    nothing and stores nothing, so a stranger's wrong tries cannot lock an owner out and a
//!    flood of Verify frames cannot grow memory.
//! 2. A PIN is valid [`PIN_TTL_MS`] and takes at most [`PIN_WRONG_TRIES_MAX`] wrong tries;
//!    then it is burned (the owner asks for a new one). With the per-source guess budget
//!    (`budget.rs`), N PINs sent give at most 5N guesses, and N is budgeted per source,
//!    prefix, number range and box.
//! 3. Each send to a phone waits for the previous one's back-off, which doubles from
//!    [`PIN_BACKOFF_BASE_MS`] up to [`PIN_BACKOFF_MAX_MS`]; a successful Verify clears it.
//! 4. An entry is forgotten [`PIN_ENTRY_TTL_MS`] after its last send (swept in time order, no
//!    scan), and at most [`PINS_PER_SHARD_MAX`] exist: a full table refuses new phones.

use std::collections::{HashMap, VecDeque};

use crate::budget::{BudgetKind, Refused};
use crate::registry::constant_time_eq;

/// A PIN is valid this long.
pub const PIN_TTL_MS: u64 = 10 * 60 * 1000;
/// Wrong tries one PIN takes before it is burned.
pub const PIN_WRONG_TRIES_MAX: u32 = 5;
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
    crate::budget::PIN_SENDS_BOX_PER_MINUTE_DEFAULT as u64 * (PIN_ENTRY_TTL_MS / 60_000)
        <= PINS_PER_SHARD_MAX as u64
);

/// One phone a PIN was sent to.
#[derive(Debug)]
struct Pending {
    /// The PIN and when it expires; `None` once used, burned or expired.
    pin: Option<(String, u64)>,
    /// Wrong tries at the current PIN.
    wrong: u32,
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
    /// That was the last wrong try: the PIN is burned; a new one may be asked for after
    /// `retry_after_ms`.
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

    /// Checks `pin` for `phone`; on success the entry is gone and the caller issues a key.
    pub fn verify(&mut self, phone: &str, pin: &str, now: u64) -> Result<(), PinError> {
        self.sweep(now);
        let Some(p) = self.by_phone.get_mut(phone) else {
            return Err(PinError::BadPin);
        };
        let Some((expected, expires)) = &p.pin else {
            return Err(PinError::BadPin);
        };
        if !constant_time_eq(expected.as_bytes(), pin.as_bytes()) {
            p.wrong += 1;
            if p.wrong < PIN_WRONG_TRIES_MAX {
                return Err(PinError::BadPin);
            }
            p.pin = None;
            let retry_after_ms = p.next_send_ms.saturating_sub(now).max(1);
            return Err(PinError::Burned { retry_after_ms });
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

    #[test]
    fn a_pin_is_single_use_and_expires() {
        let mut p = Pins::default();
        assert_eq!(p.sent(P, "123456".into(), 0), PIN_TTL_MS / 1000);
        assert_eq!(p.verify(P, "123456", 10), Ok(()));
        assert_eq!(p.verify(P, "123456", 11), Err(PinError::BadPin));
        assert!(p.is_empty(), "a verified phone keeps no entry");
        p.may_send(P, 12).unwrap();
        p.sent(P, "222222".into(), 12);
        assert_eq!(
            p.verify(P, "222222", 12 + PIN_TTL_MS),
            Err(PinError::Expired)
        );
    }

    #[test]
    fn verify_without_a_pin_stores_nothing_and_locks_nobody_out() {
        let mut p = Pins::default();
        for i in 0..1000 {
            assert_eq!(p.verify(P, "000000", i), Err(PinError::BadPin));
        }
        assert!(p.is_empty());
        p.may_send(P, 2000).unwrap();
        p.sent(P, "654321".into(), 2000);
        assert_eq!(
            p.verify(P, "654321", 2001),
            Ok(()),
            "the owner is not locked out"
        );
    }

    #[test]
    fn a_pin_that_never_went_out_voids_and_lifts_its_back_off() {
        let mut p = Pins::default();
        p.sent(P, "123456".into(), 0);
        p.not_sent(P, 5);
        assert_eq!(p.verify(P, "123456", 6), Err(PinError::BadPin), "void");
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
        for i in 1..PIN_WRONG_TRIES_MAX {
            assert_eq!(p.verify(P, "000000", u64::from(i)), Err(PinError::BadPin));
        }
        assert_eq!(
            p.verify(P, "000000", 10),
            Err(PinError::Burned {
                retry_after_ms: PIN_BACKOFF_BASE_MS - 10
            })
        );
        assert_eq!(p.verify(P, "123456", 11), Err(PinError::BadPin), "burned");
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

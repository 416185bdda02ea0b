//! Accounts of the users homed on this shard: registration by phone (PIN by SMS, then a
//! device key), and key checks at login.
//!
//! Rules: a PIN is 6 random digits, valid `PIN_TTL_MS`, at most `PIN_SENDS_PER_HOUR_MAX`
//! sent per phone per hour and `PIN_ATTEMPTS_PER_HOUR_MAX` wrong tries per phone per hour
//! (each refused try is logged). A verified PIN issues a fresh 32-byte device key; only its
//! SHA-256 is kept, and a new key replaces the old one at once. Keys are compared in constant
//! time. Pure state: randomness and time come in as arguments.

use std::collections::{HashMap, VecDeque};

use crate::limits::{
    PIN_ATTEMPTS_PER_HOUR_MAX, PIN_SENDS_PER_HOUR_MAX, PIN_TTL_MS, RATE_WINDOW_MS,
};
use crate::record::AccountRec;

/// One registered (or registering) phone.
#[derive(Debug, Default)]
pub struct Account {
    /// Server-issued id; 0 until the first successful verification.
    pub user_id: u64,
    /// SHA-256 of the current device key; empty until verified.
    pub key_hash: Vec<u8>,
    pin: Option<(String, u64)>,
    pin_sends: VecDeque<u64>,
    bad_attempts: VecDeque<u64>,
}

/// Why a registration step was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Too many PINs sent or wrong PINs tried in the last hour.
    #[error("too many attempts; try again later")]
    RateLimited,
    /// No PIN outstanding, or it does not match.
    #[error("wrong PIN")]
    BadPin,
    /// The PIN is older than its time to live.
    #[error("PIN expired; register again")]
    PinExpired,
}

/// All accounts homed here.
#[derive(Debug, Default)]
pub struct Registry {
    accounts: HashMap<String, Account>,
}

/// SHA-256 of a device key.
pub fn hash_key(key: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, key)
        .as_ref()
        .to_vec()
}

/// Equality that takes the same time wherever the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn prune(window: &mut VecDeque<u64>, now: u64) {
    while window.front().is_some_and(|&t| t + RATE_WINDOW_MS <= now) {
        window.pop_front();
    }
}

impl Registry {
    /// The account of `phone`, if it has ever been verified.
    pub fn verified(&self, phone: &str) -> Option<&Account> {
        self.accounts.get(phone).filter(|a| a.user_id != 0)
    }

    /// Whether `phone` is a verified user here.
    pub fn exists(&self, phone: &str) -> bool {
        self.verified(phone).is_some()
    }

    /// Starts a registration: stores `pin` for `phone` unless too many were sent this hour.
    pub fn start(&mut self, phone: &str, pin: String, now: u64) -> Result<u64, RegistryError> {
        let acc = self.accounts.entry(phone.to_string()).or_default();
        prune(&mut acc.pin_sends, now);
        if acc.pin_sends.len() >= PIN_SENDS_PER_HOUR_MAX {
            return Err(RegistryError::RateLimited);
        }
        acc.pin_sends.push_back(now);
        acc.pin = Some((pin, now + PIN_TTL_MS));
        Ok(PIN_TTL_MS / 1000)
    }

    /// Checks `pin`; on success the PIN is used up and the caller issues a key.
    pub fn check_pin(&mut self, phone: &str, pin: &str, now: u64) -> Result<(), RegistryError> {
        let acc = self.accounts.entry(phone.to_string()).or_default();
        prune(&mut acc.bad_attempts, now);
        if acc.bad_attempts.len() >= PIN_ATTEMPTS_PER_HOUR_MAX {
            return Err(RegistryError::RateLimited);
        }
        let Some((expected, expires)) = &acc.pin else {
            acc.bad_attempts.push_back(now);
            return Err(RegistryError::BadPin);
        };
        if !constant_time_eq(expected.as_bytes(), pin.as_bytes()) {
            acc.bad_attempts.push_back(now);
            return Err(RegistryError::BadPin);
        }
        if now >= *expires {
            acc.pin = None;
            return Err(RegistryError::PinExpired);
        }
        acc.pin = None;
        Ok(())
    }

    /// Sets `phone`'s key hash (and id): from a verification, a load-test login or replay.
    pub fn apply(&mut self, rec: &AccountRec) {
        let acc = self.accounts.entry(rec.phone.clone()).or_default();
        acc.user_id = rec.user_id;
        acc.key_hash = rec.key_hash.clone();
    }

    /// Whether `key` is `phone`'s current device key.
    pub fn key_matches(&self, phone: &str, key: &[u8]) -> bool {
        match self.verified(phone) {
            Some(acc) => constant_time_eq(&acc.key_hash, &hash_key(key)),
            None => {
                // Same work for unknown phones, so timing does not reveal who is registered.
                let _ = constant_time_eq(&[0; 32], &hash_key(key));
                false
            }
        }
    }

    /// Every verified account, for a snapshot.
    pub fn snapshot(&self) -> impl Iterator<Item = AccountRec> + '_ {
        self.accounts
            .iter()
            .filter(|(_, a)| a.user_id != 0)
            .map(|(p, a)| AccountRec {
                phone: p.clone(),
                user_id: a.user_id,
                key_hash: a.key_hash.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "+15550001111";

    #[test]
    fn pin_then_key_then_login() {
        let mut r = Registry::default();
        assert_eq!(r.start(P, "123456".into(), 0), Ok(PIN_TTL_MS / 1000));
        assert_eq!(r.check_pin(P, "123456", 10), Ok(()));
        assert_eq!(
            r.check_pin(P, "123456", 11),
            Err(RegistryError::BadPin),
            "PIN is single-use"
        );
        r.apply(&AccountRec {
            phone: P.into(),
            user_id: 7,
            key_hash: hash_key(b"k1"),
        });
        assert!(r.key_matches(P, b"k1"));
        assert!(!r.key_matches(P, b"k2"));
        r.apply(&AccountRec {
            phone: P.into(),
            user_id: 7,
            key_hash: hash_key(b"k2"),
        });
        assert!(
            !r.key_matches(P, b"k1"),
            "the old key stops working at once"
        );
        assert!(!r.key_matches("+15559999999", b"k1"));
    }

    #[test]
    fn wrong_pins_are_rate_limited_per_hour() {
        let mut r = Registry::default();
        r.start(P, "123456".into(), 0).unwrap();
        for i in 0..PIN_ATTEMPTS_PER_HOUR_MAX as u64 {
            assert_eq!(r.check_pin(P, "000000", i), Err(RegistryError::BadPin));
        }
        assert_eq!(
            r.check_pin(P, "123456", 100),
            Err(RegistryError::RateLimited)
        );
        r.start(P, "654321".into(), RATE_WINDOW_MS + 50).unwrap();
        assert_eq!(
            r.check_pin(P, "654321", RATE_WINDOW_MS + 100),
            Ok(()),
            "window passes"
        );
    }

    #[test]
    fn pin_sends_are_rate_limited_and_pins_expire() {
        let mut r = Registry::default();
        for i in 0..PIN_SENDS_PER_HOUR_MAX as u64 {
            r.start(P, "111111".into(), i).unwrap();
        }
        assert_eq!(
            r.start(P, "111111".into(), 10),
            Err(RegistryError::RateLimited)
        );
        assert_eq!(
            r.check_pin(P, "111111", PIN_TTL_MS + 10),
            Err(RegistryError::PinExpired)
        );
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}

//! Accounts of the users homed on this shard: the device key of each verified phone, and key
//! checks at login. (PINs on their way to becoming an account live in `pin_codes.rs`, so a phone
//! nobody verified has no entry here.)
//!
//! Rules: a verified PIN issues a fresh 32-byte device key; only a 128-bit prefix of its
//! SHA-256 is kept, and a new key replaces the old one at once. Keys are compared in
//! constant time. Accounts are fixed-size records keyed by the phone as an integer, with
//! the user's last-seen time. Pure state.

use crate::durable::record::AccountRec;
use crate::state::home::AsPhone;
use crate::state::home::Phone;
use crate::tables::steady_map::SteadyMap;

/// Bytes of a device key's SHA-256 kept: a 128-bit prefix (guessing a key that matches it
/// is still 2^128 work), so an account is a fixed-size record with no heap of its own.
pub const KEY_HASH_BYTES: usize = 16;

/// One verified phone: 32 bytes, no heap (its phone is the map's key, an integer).
#[derive(Debug, Default, Clone, Copy)]
pub struct Account {
    /// Server-issued id (never 0 for a stored account).
    pub user_id: u64,
    /// The first `KEY_HASH_BYTES` of the SHA-256 of the current device key.
    pub key_hash: [u8; KEY_HASH_BYTES],
    /// When the user last went offline (ms; 0: not since the server started).
    pub last_seen_ms: u64,
}

impl Account {
    /// The record of `phone`'s account, if it is verified.
    pub(crate) fn record(&self, phone: Phone) -> Option<AccountRec> {
        (self.user_id != 0).then(|| AccountRec {
            phone: phone.to_string(),
            user_id: self.user_id,
            key_hash: self.key_hash.to_vec(),
        })
    }
}

/// All accounts homed here.
#[derive(Debug, Default)]
pub struct Registry {
    /// A snapshot walks it between events (`snapshot.rs`).
    pub(crate) accounts: SteadyMap<Phone, Account>,
}

/// SHA-256 of a device key.
pub fn hash_key(key: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, key)
        .as_ref()
        .to_vec()
}

/// The part of a key hash an account keeps (zeros past a short one).
fn kept(hash: &[u8]) -> [u8; KEY_HASH_BYTES] {
    let mut out = [0; KEY_HASH_BYTES];
    let n = hash.len().min(KEY_HASH_BYTES);
    out[..n].copy_from_slice(&hash[..n]);
    out
}

/// Equality that takes the same time wherever the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Registry {
    /// The account of `phone`, if it has ever been verified.
    pub fn verified(&self, phone: impl AsPhone) -> Option<&Account> {
        self.accounts
            .get(&phone.as_phone()?)
            .filter(|a| a.user_id != 0)
    }

    /// Whether `phone` is a verified user here.
    pub fn exists(&self, phone: impl AsPhone) -> bool {
        self.verified(phone).is_some()
    }

    /// Sets `phone`'s key hash (and id): from a verification, a load-test login or replay.
    pub fn apply(&mut self, rec: &AccountRec) {
        let Some(phone) = Phone::parse(&rec.phone) else {
            return; // no shard writes an account for a phone that is not E.164
        };
        let acc = self.accounts.get_or_insert_with(phone, Account::default);
        acc.user_id = rec.user_id;
        acc.key_hash = kept(&rec.key_hash);
    }

    /// Whether `key` is `phone`'s current device key.
    pub fn key_matches(&self, phone: impl AsPhone, key: &[u8]) -> bool {
        let hash = kept(&hash_key(key));
        match self.verified(phone) {
            Some(acc) => constant_time_eq(&acc.key_hash, &hash),
            None => {
                // Same work for unknown phones, so timing does not reveal who is registered.
                let _ = constant_time_eq(&[0; KEY_HASH_BYTES], &hash);
                false
            }
        }
    }

    /// `phone` (a user here) went offline at `now`.
    pub fn went_offline(&mut self, phone: impl AsPhone, now: u64) {
        if let Some(acc) = phone.as_phone().and_then(|p| self.accounts.get_mut(&p)) {
            acc.last_seen_ms = now;
        }
    }

    /// When `phone` was last online (0 if unknown).
    pub fn last_seen(&self, phone: impl AsPhone) -> u64 {
        self.verified(phone).map_or(0, |a| a.last_seen_ms)
    }

    /// Accounts here.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// Every verified account, for a snapshot.
    pub fn snapshot(&self) -> impl Iterator<Item = AccountRec> + '_ {
        self.accounts.iter().filter_map(|(p, a)| a.record(*p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "+15550001111";

    #[test]
    fn key_then_login() {
        let mut r = Registry::default();
        assert!(!r.exists(P));
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
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}

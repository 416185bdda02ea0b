//! Accounts of the users homed on this shard: the device key of each verified phone, and key
//! checks at login. (PINs on their way to becoming an account live in `pins.rs`, so a phone
//! nobody verified has no entry here.)
//!
//! Rules: a verified PIN issues a fresh 32-byte device key; only its SHA-256 is kept, and a
//! new key replaces the old one at once. Keys are compared in constant time. Pure state.

use std::collections::HashMap;

use crate::record::AccountRec;

/// One verified phone.
#[derive(Debug, Default)]
pub struct Account {
    /// Server-issued id (never 0 for a stored account).
    pub user_id: u64,
    /// SHA-256 of the current device key.
    pub key_hash: Vec<u8>,
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

impl Registry {
    /// The account of `phone`, if it has ever been verified.
    pub fn verified(&self, phone: &str) -> Option<&Account> {
        self.accounts.get(phone).filter(|a| a.user_id != 0)
    }

    /// Whether `phone` is a verified user here.
    pub fn exists(&self, phone: &str) -> bool {
        self.verified(phone).is_some()
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

//! The hasher for maps keyed by ids this server issues (connection ids, group ids): a
//! multiply-rotate over the key's words (the Fx hash rustc uses), a few cycles where
//! SipHash-1-3 costs tens of nanoseconds per lookup.
//!
//! Not for keys a peer chooses: without a secret seed, whoever picks keys can pick ones that
//! collide and turn lookups linear (hash flooding). Phone numbers and anything else that
//! comes from outside stay on SipHash (`RandomState`); which map uses which is listed in
//! ARCHITECTURE.md ("Where a message's user-space CPU goes").

use std::hash::{BuildHasher, Hasher};

/// Builds [`IdHasher`]s (no seed: the keys are ours).
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHash;

impl BuildHasher for IdHash {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

/// Fx-style hasher over whole words.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

/// The Fx multiplier (an odd constant with well-spread bits).
const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // A product's low bits depend only on the input's low bits; hashbrown takes the
        // bucket from the low bits, so the well-mixed high bits are rotated down (as
        // rustc-hash 2 does).
        self.0.rotate_left(26)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hash;

    fn hash<T: Hash>(t: &T) -> u64 {
        IdHash.hash_one(t)
    }

    #[test]
    fn equal_keys_hash_equal_and_sequential_ids_spread_over_the_top_bits() {
        assert_eq!(hash(&42u64), hash(&42u64));
        // hashbrown takes its 7-bit tag from the top bits: sequential ids must not share it.
        let tags: std::collections::HashSet<u64> = (0..1024u64).map(|i| hash(&i) >> 57).collect();
        assert!(tags.len() > 100, "only {} distinct tags", tags.len());
        // And its bucket from the low bits.
        let buckets: std::collections::HashSet<u64> =
            (0..1024u64).map(|i| hash(&(i << 20)) & 1023).collect();
        assert!(
            buckets.len() > 500,
            "only {} distinct buckets",
            buckets.len()
        );
    }
}

//! A [`RecordLayer`]'s whole state as bytes, and back: what a process taking a live
//! connection over (a live upgrade, `crate::upgrade`) needs to go on protecting its records
//! exactly where the old process stopped. Owns the byte layout only; what travels with it,
//! and how, is the upgrade's.
//!
//! The bytes hold the traffic keys: whoever has them can read and forge that connection's
//! records. They never leave the machine (a unix socket to our own successor), and the
//! caller zeroes them once sent or read.

use super::{Aead, Direction, RecordLayer, EMPTY_RECORDS_IN_A_ROW_MAX, WARNING_ALERTS_MAX};
use ring::aead::NONCE_LEN;

/// Bytes of one direction in [`RecordLayer::export`]: key length, key (32, zero-padded),
/// IV, sequence number.
const DIRECTION_STATE_BYTES: usize = 1 + 32 + NONCE_LEN + 8;

/// Bytes of [`RecordLayer::export`]'s state: AEAD, warnings, empty records in a row, then
/// both directions (sending first).
pub const RECORD_STATE_BYTES: usize = 3 + 2 * DIRECTION_STATE_BYTES;

/// Why exported record-layer state was refused by [`RecordLayer::import`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Not [`RECORD_STATE_BYTES`] long.
    #[error("TLS record state is {len} bytes, not {RECORD_STATE_BYTES}")]
    Length {
        /// Bytes given.
        len: usize,
    },
    /// An AEAD code we do not know, a key length that is not the AEAD's, or counters past
    /// their limits.
    #[error("TLS record state is inconsistent ({0})")]
    Inconsistent(&'static str),
}

impl Aead {
    fn code(self) -> u8 {
        match self {
            Aead::Aes128Gcm => 1,
            Aead::Aes256Gcm => 2,
            Aead::Chacha20Poly1305 => 3,
        }
    }

    fn from_code(code: u8) -> Option<Aead> {
        match code {
            1 => Some(Aead::Aes128Gcm),
            2 => Some(Aead::Aes256Gcm),
            3 => Some(Aead::Chacha20Poly1305),
            _ => None,
        }
    }
}

impl Direction {
    fn export(&self, out: &mut Vec<u8>) {
        out.push(self.key_len);
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.iv);
        out.extend_from_slice(&self.seq.to_be_bytes());
    }

    fn import(aead: Aead, b: &[u8; DIRECTION_STATE_BYTES]) -> Result<Direction, StateError> {
        let mut d = Direction {
            key: [0; 32],
            key_len: b[0],
            iv: [0; NONCE_LEN],
            seq: 0,
        };
        if usize::from(d.key_len) != aead.algorithm().key_len() {
            return Err(StateError::Inconsistent("key length"));
        }
        d.key.copy_from_slice(&b[1..33]);
        d.iv.copy_from_slice(&b[33..33 + NONCE_LEN]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&b[33 + NONCE_LEN..]);
        d.seq = u64::from_be_bytes(seq);
        Ok(d)
    }
}

impl RecordLayer {
    /// Appends this layer's whole state ([`RECORD_STATE_BYTES`]: keys, IVs, sequence
    /// numbers, alert and empty-record counts) to `out`, for a process that takes the
    /// connection over ([`RecordLayer::import`]). The bytes are secret: whoever holds them
    /// can read and forge this connection's records, so the caller zeroes them after use.
    /// `None` once the layer has ended (such a connection is closing, not moving).
    pub fn export(&self, out: &mut Vec<u8>) -> Option<()> {
        if self.ended {
            return None;
        }
        out.extend_from_slice(&[self.aead.code(), self.warnings, self.empty_in_a_row]);
        self.tx.export(out);
        self.rx.export(out);
        Some(())
    }

    /// The layer [`RecordLayer::export`] wrote into `state`: it goes on exactly where that
    /// one stopped (the next record sealed or opened uses the next sequence number).
    pub fn import(state: &[u8]) -> Result<RecordLayer, StateError> {
        let state: &[u8; RECORD_STATE_BYTES] = state
            .try_into()
            .map_err(|_| StateError::Length { len: state.len() })?;
        let aead = Aead::from_code(state[0]).ok_or(StateError::Inconsistent("AEAD"))?;
        if state[2] > EMPTY_RECORDS_IN_A_ROW_MAX || state[1] > WARNING_ALERTS_MAX {
            return Err(StateError::Inconsistent("alert or empty-record count"));
        }
        let half = |at: usize| -> &[u8; DIRECTION_STATE_BYTES] {
            state[at..at + DIRECTION_STATE_BYTES]
                .try_into()
                .expect("a slice of exactly DIRECTION_STATE_BYTES")
        };
        Ok(RecordLayer {
            aead,
            ended: false,
            warnings: state[1],
            empty_in_a_row: state[2],
            tx: Direction::import(aead, half(3))?,
            rx: Direction::import(aead, half(3 + DIRECTION_STATE_BYTES))?,
        })
    }
}

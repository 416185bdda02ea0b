//! Bounded smoke runs of the engine's fuzz entry points (`engine::fuzzing`, the same code the
//! cargo-fuzz target `tls_records` in `fuzz/` runs): random bytes as post-handshake TLS
//! records, and sealed records with one bit flipped. Seeded xorshift: deterministic. And a
//! model check of the record layer's limits: random runs of data, empty records, warnings
//! and odd record versions, fed in random splits, end exactly where the model says.

use engine::tls::records::{RecordError, RecordLayer, EMPTY_RECORDS_IN_A_ROW_MAX};
use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn input(rng: &mut XorShift, mode: u8) -> Vec<u8> {
    let len = (rng.next() % 600) as usize;
    let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    data.insert(0, rng.next() as u8);
    data.insert(0, mode);
    // Every few raw inputs start with a plausible record header, to get past the first check.
    if mode.is_multiple_of(2) && data.len() > 7 && rng.next().is_multiple_of(3) {
        data[2] = 23;
        data[3] = 3;
        data[4] = 3;
    }
    data
}

#[test]
fn random_bytes_as_records_never_panic() {
    let mut rng = XorShift(0x5eed_0001);
    for i in 0..20_000u32 {
        let mode = (i % 4) as u8 * 2; // even: raw bytes, both suites
        engine::fuzzing::records(&input(&mut rng, mode));
    }
}

#[test]
fn sealed_records_with_a_flipped_bit_never_leak() {
    let mut rng = XorShift(0x5eed_0002);
    for i in 0..20_000u32 {
        let mode = (i % 4) as u8 * 2 + 1; // odd: sealed, both suites, some untouched
        engine::fuzzing::records(&input(&mut rng, mode));
    }
}

/// The server's layer and the peer's mirror image.
fn layers() -> (RecordLayer, RecordLayer) {
    let secrets = |seed: u8| ConnectionTrafficSecrets::Chacha20Poly1305 {
        key: AeadKey::from([seed; 32]),
        iv: Iv::from([seed ^ 0x5a; 12]),
    };
    let layer = |tx: u8, rx: u8| {
        RecordLayer::new(&ExtractedSecrets {
            tx: (0, secrets(tx)),
            rx: (0, secrets(rx)),
        })
        .unwrap()
    };
    (layer(1, 2), layer(2, 1))
}

/// User_canceled warnings the layer tolerates (as rustls).
const WARNINGS_MAX: usize = 4;

/// What the record layer must make of a peer's stream, record by record.
struct Model {
    empty_in_a_row: usize,
    warnings: usize,
}

impl Model {
    /// Seals one record of the kind `pick` chooses into `wire`; returns the application
    /// data it carries, or the error the stream must end with there. Picks 0–5 are
    /// acceptable on their own (data, empty records, user_canceled) and end a stream only
    /// through a limit; 6 and 7 always end it.
    fn record(
        &mut self,
        pick: u64,
        rng: &mut XorShift,
        peer: &mut RecordLayer,
        wire: &mut Vec<u8>,
    ) -> Result<Vec<u8>, RecordError> {
        let at = wire.len();
        match pick % 8 {
            0 | 1 => {
                let len = 1 + rng.next() % 4;
                let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                peer.seal_record(23, &data, wire).unwrap();
                self.empty_in_a_row = 0;
                Ok(data)
            }
            2..=4 => {
                // Empty application data, sometimes zero-padded: inner plaintext 23, 0, ...
                let padding = (rng.next() % 3) as usize;
                if padding == 0 {
                    peer.seal_record(23, &[], wire).unwrap();
                } else {
                    let mut inner = vec![23u8];
                    inner.resize(padding, 0);
                    peer.seal_record(0, &inner, wire).unwrap();
                }
                self.empty_in_a_row += 1;
                if self.empty_in_a_row > EMPTY_RECORDS_IN_A_ROW_MAX as usize {
                    return Err(RecordError::TooManyEmptyRecords {
                        max: EMPTY_RECORDS_IN_A_ROW_MAX,
                    });
                }
                Ok(Vec::new())
            }
            5 => {
                peer.seal_record(21, &[1, 90], wire).unwrap();
                self.warnings += 1;
                if self.warnings > WARNINGS_MAX {
                    return Err(RecordError::BadAlert);
                }
                Ok(Vec::new())
            }
            6 => {
                peer.seal_record(23, b"odd", wire).unwrap();
                let version = [3u8, [0, 1, 2, 4][(rng.next() % 4) as usize]];
                wire[at + 1..at + 3].copy_from_slice(&version);
                Err(RecordError::BadRecordVersion {
                    version: u16::from_be_bytes(version),
                })
            }
            _ => {
                // A warning that is not user_canceled: an error alert from the peer.
                peer.seal_record(21, &[1, 40], wire).unwrap();
                Err(RecordError::PeerAlert(40))
            }
        }
    }
}

#[test]
fn record_limits_end_the_stream_exactly_where_the_model_says() {
    let mut rng = XorShift(0x5eed_0003);
    let mut endings = [0u32; 5];
    for _ in 0..2_000 {
        let (mut server, mut peer) = layers();
        let mut model = Model {
            empty_in_a_row: 0,
            warnings: 0,
        };
        // Mostly records that are fine on their own, so runs get long enough to reach the
        // limits; now and then one that ends the stream at once.
        let (mut wire, mut expected, mut ends) = (Vec::new(), Vec::new(), None);
        let empty_bias = rng.next().is_multiple_of(2);
        for _ in 0..rng.next() % 120 {
            let pick = match rng.next() % 64 {
                0 => 6 + rng.next() % 2,
                _ if empty_bias => 2 + rng.next() % 3,
                _ => rng.next() % 6,
            };
            match model.record(pick, &mut rng, &mut peer, &mut wire) {
                Ok(data) => expected.extend(data),
                Err(e) => {
                    ends = Some(e);
                    break;
                }
            }
        }
        // Fed in random splits, the partial record carried as a connection does.
        let (mut plain, mut carried, mut at, mut got) = (Vec::new(), Vec::new(), 0, None);
        while at < wire.len() && got.is_none() {
            let n = (1 + rng.next() as usize % 300).min(wire.len() - at);
            carried.extend_from_slice(&wire[at..at + n]);
            at += n;
            match server.open(&mut carried, &mut plain) {
                Ok(opened) => drop(carried.drain(..opened.consumed)),
                Err(e) => got = Some(e),
            }
        }
        assert_eq!(got, ends);
        assert_eq!(plain, expected, "exactly the data before the end, in order");
        if ends.is_none() {
            assert!(carried.is_empty(), "every record opened");
        }
        endings[match ends {
            None => 0,
            Some(RecordError::TooManyEmptyRecords { .. }) => 1,
            Some(RecordError::BadAlert) => 2,
            Some(RecordError::BadRecordVersion { .. }) => 3,
            Some(_) => 4,
        }] += 1;
    }
    // Every way a stream can end was reached, many times.
    assert!(endings.iter().all(|&n| n >= 20), "{endings:?}");
}

//! Entry points shared by the cargo-fuzz targets in `fuzz/` and the bounded smoke runs in
//! `tests/fuzz_smoke.rs`, so both exercise the same code. Each takes arbitrary bytes and
//! panics only when a promise of the engine is broken. Not part of the engine's API.

use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};

use crate::tls_records::RecordLayer;

/// Peer bytes after the TLS handshake, through [`RecordLayer::open`]. `data[0]` picks how:
/// - even: the rest as they are, fed in two reads split at a point `data[1]` picks, the
///   partial record carried over as a connection does. Checks: no panic, never more bytes
///   consumed than given, a partial record is all that is left.
/// - odd: the rest is sealed by the peer's side as application data; unless `data[1]` is
///   0, one bit it picks is flipped. Checks: untouched records open to exactly what was
///   sealed; a flipped one never yields a byte that was not sealed.
pub fn records(data: &[u8]) {
    let [mode, pick, rest @ ..] = data else {
        return;
    };
    let (mut server, mut peer) = pair(*mode);
    let mut plain = Vec::new();
    if mode % 2 == 0 {
        let split = (*pick as usize * rest.len()) / 256;
        let mut buf = rest[..split].to_vec();
        let Ok(first) = server.open(&mut buf, &mut plain) else {
            return;
        };
        assert!(first.consumed <= buf.len());
        if first.peer_closed {
            return;
        }
        let mut carried = buf[first.consumed..].to_vec();
        carried.extend_from_slice(&rest[split..]);
        if let Ok(second) = server.open(&mut carried, &mut plain) {
            assert!(second.consumed <= carried.len());
            if !second.peer_closed {
                assert_partial(&carried[second.consumed..]);
            }
        }
        return;
    }
    let mut wire = Vec::new();
    peer.seal(rest, &mut wire).expect("fresh keys seal");
    if *pick == 0 || wire.is_empty() {
        let opened = server
            .open(&mut wire, &mut plain)
            .expect("untouched records open");
        assert_eq!(opened.consumed, wire.len());
        assert_eq!(plain, rest, "exactly what was sealed");
        return;
    }
    let bit = (*pick as usize * 7919 + rest.len()) % (wire.len() * 8);
    wire[bit / 8] ^= 1 << (bit % 8);
    let _ = server.open(&mut wire, &mut plain);
    assert!(
        rest.starts_with(&plain),
        "a tampered stream yields only bytes that were sealed, in order"
    );
}

/// What is left after `open` is at most one record that has not fully arrived.
fn assert_partial(tail: &[u8]) {
    if tail.len() >= 5 {
        let len = u16::from_be_bytes([tail[3], tail[4]]) as usize;
        assert!(tail.len() < 5 + len, "a whole record was left unopened");
    }
}

/// A server layer and its peer's mirror image, for the suite `choice` picks.
fn pair(choice: u8) -> (RecordLayer, RecordLayer) {
    let secrets = |seed: u8| {
        let key = AeadKey::from([seed; 32]);
        let iv = Iv::from([seed ^ 0x5a; 12]);
        match (choice / 2) % 2 {
            0 => ConnectionTrafficSecrets::Aes256Gcm { key, iv },
            _ => ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv },
        }
    };
    let layer = |tx: u8, rx: u8| {
        RecordLayer::new(&ExtractedSecrets {
            tx: (0, secrets(tx)),
            rx: (0, secrets(rx)),
        })
        .expect("a suite the record layer implements")
    };
    (layer(1, 2), layer(2, 1))
}

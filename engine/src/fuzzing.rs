//! Entry points shared by the cargo-fuzz targets in `fuzz/` and the bounded smoke runs in
//! `tests/fuzz_smoke.rs`, so both exercise the same code. Each takes arbitrary bytes and
//! panics only when a promise of the engine is broken. Not part of the engine's API.

use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};

use crate::tls::records::{Opened, RecordLayer};

/// Peer bytes after the TLS handshake, through [`RecordLayer::open`]. `data[0]` picks how:
/// - even: the rest as they are, fed in two reads split at a point `data[1]` picks, the
///   partial record carried over as a connection does. Checks: no panic, never more bytes
///   consumed than given, a partial record is all that is left.
/// - odd: the rest is sealed by the peer's side as application data (or, as `data[0]`
///   picks, as one alert or handshake record, or with the content type and zero padding
///   taken from the bytes themselves); unless `data[1]` is 0, one bit it picks is flipped.
///   Checks: untouched application data opens to exactly what was sealed; a flipped stream
///   never yields a byte that was not sealed; once `open` fails or sees close_notify,
///   every later call is refused.
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
    let data_only = match (mode / 8) % 4 {
        0 => {
            peer.seal(rest, &mut wire).expect("fresh keys seal");
            true
        }
        1 => {
            // An alert (any length, any level and description).
            let body = &rest[..rest.len().min(3)];
            peer.seal_record(21, body, &mut wire)
                .expect("fresh keys seal");
            false
        }
        2 => {
            // A post-handshake handshake message (KeyUpdate and others).
            let body = &rest[..rest.len().min(64)];
            peer.seal_record(22, body, &mut wire)
                .expect("fresh keys seal");
            false
        }
        _ => {
            // Inner plaintext as given: its last non-zero byte is the content type.
            let Some((&content_type, body)) = rest.split_last() else {
                return;
            };
            let body = &body[..body.len().min(1 << 14)];
            peer.seal_record(content_type, body, &mut wire)
                .expect("fresh keys seal");
            false
        }
    };
    let result = if *pick == 0 || wire.is_empty() {
        let opened = server.open(&mut wire, &mut plain);
        if data_only {
            let done = opened.expect("untouched application data opens");
            assert_eq!(done.consumed, wire.len());
            assert_eq!(plain, rest, "exactly what was sealed");
        }
        opened
    } else {
        let bit = (*pick as usize * 7919 + rest.len()) % (wire.len() * 8);
        wire[bit / 8] ^= 1 << (bit % 8);
        let opened = server.open(&mut wire, &mut plain);
        if data_only {
            assert!(
                rest.starts_with(&plain),
                "a tampered stream yields only bytes that were sealed, in order"
            );
        }
        opened
    };
    if !data_only {
        // Only application data the bytes spelled out can reach `plain`.
        assert!(plain.len() <= rest.len());
    }
    if matches!(
        result,
        Err(_)
            | Ok(Opened {
                peer_closed: true,
                ..
            })
    ) {
        let mut again = wire.clone();
        assert!(
            server.open(&mut again, &mut plain).is_err(),
            "nothing is opened after a failure or close_notify"
        );
    }
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
        // AES-128-GCM shares AES-256-GCM's code path here; rustls offers no public way to
        // make a 16-byte key, and the interop tests cover that suite with real handshakes.
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

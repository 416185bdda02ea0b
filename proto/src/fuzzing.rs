//! Entry points shared by the cargo-fuzz targets in `fuzz/` and the bounded smoke runs in
//! `tests/fuzz_smoke.rs`, so both exercise the same code. Each takes arbitrary bytes and
//! panics only when a promise of this crate is broken. Not part of the protocol API.

use crate::codec::{decode_client, encode_frame, split_frame};
use crate::limits::{FRAME_BYTES_MAX, FRAME_HEADER_BYTES};
use crate::validate::check_client_frame;

/// A byte stream as a connection delivers it: split into frames, each decoded and validated
/// the way the server does. Checks: split never over-reads or passes the frame limit, and a
/// decoded frame re-encodes to one that decodes to the same value.
pub fn frames(data: &[u8]) {
    let mut at = 0;
    while at < data.len() {
        match split_frame(&data[at..]) {
            Ok(Some((payload, used))) => {
                assert_eq!(used, payload.len() + FRAME_HEADER_BYTES);
                assert!(payload.len() <= FRAME_BYTES_MAX);
                assert!(at + used <= data.len());
                at += used;
                frame_payload(payload);
            }
            Ok(None) => break,
            Err(e) => {
                let _ = e.code();
                break;
            }
        }
    }
}

/// One frame payload: decode, validate; a decoded frame round-trips, and a valid one always
/// fits in a frame (the relations asserted in `limits.rs` hold for real frames).
pub fn frame_payload(payload: &[u8]) {
    let Ok(f) = decode_client(payload) else {
        return;
    };
    let valid = check_client_frame(&f).is_ok();
    let mut out = Vec::new();
    match encode_frame(&f, &mut out) {
        Ok(()) => {
            let again =
                decode_client(&out[FRAME_HEADER_BYTES..]).expect("re-encoded frame decodes");
            assert_eq!(again, f, "decode(encode(f)) == f");
        }
        Err(_) => assert!(
            !valid,
            "a frame that passed validation does not fit in a frame"
        ),
    }
}

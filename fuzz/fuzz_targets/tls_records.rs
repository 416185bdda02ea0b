//! Peer bytes after the TLS handshake through the engine's record layer, raw or as sealed
//! records with a bit flipped (`engine::fuzzing::records`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    engine::fuzzing::records(data);
});

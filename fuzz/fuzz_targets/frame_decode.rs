//! A connection's byte stream: `split_frame` → `decode_client` → `check_client_frame`, and
//! decode/encode round trips (`proto::fuzzing::frames`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    proto::fuzzing::frames(data);
});

//! One frame payload: decode, `check_client_frame`; valid frames always fit in a frame
//! (`proto::fuzzing::frame_payload`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    proto::fuzzing::frame_payload(data);
});

//! The service handlers: bytes become operations (frames decoded as the server decodes them,
//! connects, logins, disconnects, commits, overload) on a simulated 3-shard cluster, with the
//! invariants of `messaging::sim::fuzz` checked at the end.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    messaging::sim::fuzz::run_bytes(data);
});

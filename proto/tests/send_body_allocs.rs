//! A `SendMessage`'s body costs one allocation to decode (`build.rs` makes it a `Bytes`; as
//! a `Vec<u8>` prost copied it twice: into a `Bytes`, then into the `Vec`). Counted with a
//! global allocator of this test binary alone, per thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use prost::Message as _;
use proto::v1::{client_frame, ClientFrame, SendMessage};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call goes to `System` as it came; the counter is a thread-local `Cell`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (so from `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        // SAFETY: as for `dealloc`, and `new_size` as the caller gives it.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by decoding a send of `body_len` bytes.
fn decode_allocs(body_len: usize) -> u64 {
    let wire = ClientFrame {
        kind: Some(client_frame::Kind::Send(SendMessage {
            to: "+15550000002".into(),
            client_msg_id: 1,
            body: vec![7; body_len].into(),
            media: None,
        })),
    }
    .encode_to_vec();
    let before = ALLOCS.with(Cell::get);
    let frame = proto::codec::decode_client(&wire).expect("it decodes");
    let n = ALLOCS.with(Cell::get) - before;
    drop(frame);
    n
}

#[test]
fn a_send_body_is_copied_once_when_decoded() {
    for len in [1, 64, 1_000, proto::limits::BODY_BYTES_MAX] {
        assert_eq!(
            decode_allocs(len) - decode_allocs(0),
            1,
            "a {len}-byte body"
        );
    }
}

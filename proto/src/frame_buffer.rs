//! [`FrameBuffer`]: reassembles frames from a byte stream that arrives in arbitrary pieces.
//!
//! One lives in every connection, so at 2M mostly idle connections its idle size is what
//! matters: 32 bytes inline and **no heap capacity while no partial frame is held**.
//!
//! Two ways to use it:
//! - [`FrameBuffer::feed`] (for a reader of socket chunks; the engine does not use it yet — its
//!   `engine::conn::io`'s `dispatch_frames` must stop mid-chunk when a connection closes or moves
//!   and keep the rest, which `feed` cannot): hand it each chunk read from the socket and a
//!   callback. Whole frames inside the chunk are passed
//!   to the callback straight from the chunk, never copied; only a frame split across reads is
//!   copied into the buffer, and the buffer is freed as soon as that frame completes.
//! - [`FrameBuffer::extend`] then [`FrameBuffer::next_frame`] in a loop (simple clients, tests):
//!   everything is copied in, frames are borrowed out, and the call that returns `Ok(None)` with
//!   nothing left frees the buffer.
//!
//! A header announcing more than [`FRAME_BYTES_MAX`] fails at once, so the buffer never holds
//! more than one maximal frame's worth from `feed`. After any error the stream is out of sync:
//! close the connection.

use crate::codec::{frame_len, split_frame, FrameError};
use crate::limits::{FRAME_BYTES_MAX, FRAME_HEADER_BYTES};

/// Bytes of a stream not yet returned as frames.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    /// Received bytes; those before `start` are already consumed. Capacity is 0 whenever no
    /// unconsumed byte is held, and at most one frame (header included) when filled by `feed`.
    buf: Vec<u8>,
    /// Offset of the first unconsumed byte in `buf`; nonzero only between `next_frame` calls.
    start: usize,
}

impl FrameBuffer {
    /// An empty buffer; allocates nothing.
    pub const fn new() -> Self {
        FrameBuffer {
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Bytes held that are not yet consumed as frames.
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// True when no unconsumed byte is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes currently owned (0 when idle).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Drops every held byte and frees the heap buffer.
    pub fn clear(&mut self) {
        self.buf = Vec::new();
        self.start = 0;
    }

    /// Appends received bytes (copied) for later [`FrameBuffer::next_frame`] calls.
    pub fn extend(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// The payload of the next whole frame held, or `Ok(None)` if more bytes are needed.
    ///
    /// The call that returns `Ok(None)` with nothing held frees the heap buffer, so the usual
    /// `while let Some(payload) = fb.next_frame()? { … }` loop leaves an idle buffer at 0 bytes.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if self.is_empty() {
            self.clear();
            return Ok(None);
        }
        match split_frame(&self.buf[self.start..])?.map(|(_, used)| used) {
            Some(used) => {
                let at = self.start;
                self.start += used;
                Ok(Some(&self.buf[at + FRAME_HEADER_BYTES..at + used]))
            }
            None => {
                self.compact();
                Ok(None)
            }
        }
    }

    /// Passes the payload of every frame completed by `input` to `on_frame`, in order, and
    /// keeps the trailing partial frame, if any.
    ///
    /// Frames lying whole inside `input` are passed without copying. Stops at the first error,
    /// from the stream ([`FrameError`], converted) or from `on_frame`; the stream is then out
    /// of sync and the connection should close.
    pub fn feed<E, F>(&mut self, mut input: &[u8], mut on_frame: F) -> Result<(), E>
    where
        E: From<FrameError>,
        F: FnMut(&[u8]) -> Result<(), E>,
    {
        // Frames already whole in the buffer (only if `extend` was used) go first.
        while let Some(payload) = self.next_frame()? {
            on_frame(payload)?;
        }
        // Now at most one partial frame is held: complete it from the front of `input`.
        if !self.is_empty() {
            let taken = self.fill_current(input)?;
            input = &input[taken..];
            let Some((payload, used)) = split_frame(&self.buf)? else {
                debug_assert!(input.is_empty(), "a partial frame left input unread");
                return Ok(());
            };
            debug_assert_eq!(used, self.buf.len());
            let result = on_frame(payload);
            self.clear();
            result?;
        }
        // Whole frames straight from `input`, without copying.
        while let Some((payload, used)) = split_frame(input)? {
            on_frame(payload)?;
            input = &input[used..];
        }
        if !input.is_empty() {
            self.buf.reserve_exact(input.len());
            self.buf.extend_from_slice(input);
        }
        Ok(())
    }

    /// Copies bytes from `input` into the held partial frame, up to that frame's end; returns
    /// how many bytes it took. Requires `start == 0` and less than one whole frame held.
    fn fill_current(&mut self, input: &[u8]) -> Result<usize, FrameError> {
        debug_assert_eq!(self.start, 0);
        let mut taken = 0;
        if self.buf.len() < FRAME_HEADER_BYTES {
            taken = (FRAME_HEADER_BYTES - self.buf.len()).min(input.len());
            self.push_capped(&input[..taken], FRAME_HEADER_BYTES);
        }
        let Some(len) = frame_len(&self.buf)? else {
            return Ok(taken);
        };
        let total = FRAME_HEADER_BYTES + len;
        let n = total
            .saturating_sub(self.buf.len())
            .min(input.len() - taken);
        self.push_capped(&input[taken..taken + n], total);
        Ok(taken + n)
    }

    /// Appends `bytes`, growing capacity geometrically but never past `limit` (the size of the
    /// frame being assembled), so a slow sender never makes us hold more than its frame.
    fn push_capped(&mut self, bytes: &[u8], limit: usize) {
        let need = self.buf.len() + bytes.len();
        if need > self.buf.capacity() {
            let target = need.max(self.buf.capacity() * 2).min(limit).max(need);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Moves unconsumed bytes to the front of `buf`.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

const _: () = assert!(FRAME_HEADER_BYTES + FRAME_BYTES_MAX <= isize::MAX as usize);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_client, encode_frame};
    use crate::v1::{ClientFrame, Ping, SendMessage};

    fn wire_of(frames: &[ClientFrame]) -> Vec<u8> {
        let mut w = Vec::new();
        for f in frames {
            encode_frame(f, &mut w).unwrap();
        }
        w
    }

    fn sample() -> Vec<ClientFrame> {
        (0..50u64)
            .map(|i| match i % 3 {
                0 => Ping { nonce: i }.into(),
                1 => ClientFrame::default(), // empty payload: a zero-length frame
                _ => SendMessage {
                    to: "+15551234567".into(),
                    client_msg_id: i,
                    body: vec![i as u8; (i * 37 % 900) as usize].into(),
                    media: None,
                }
                .into(),
            })
            .collect()
    }

    fn feed_all(fb: &mut FrameBuffer, chunk: &[u8], got: &mut Vec<ClientFrame>) {
        fb.feed(chunk, |p| {
            // The empty frames in `sample()` decode as Err(Empty): keep them as the default.
            got.push(decode_client(p).unwrap_or_default());
            Ok::<(), FrameError>(())
        })
        .unwrap();
    }

    #[test]
    fn new_buffer_owns_no_heap() {
        let fb = FrameBuffer::new();
        assert_eq!(fb.capacity(), 0);
        assert!(fb.is_empty());
        assert_eq!(std::mem::size_of::<FrameBuffer>(), 32);
    }

    #[test]
    fn feed_byte_by_byte_and_capacity_returns_to_zero() {
        let frames = sample();
        let wire = wire_of(&frames);
        let mut fb = FrameBuffer::new();
        let mut got = Vec::new();
        for b in &wire {
            feed_all(&mut fb, std::slice::from_ref(b), &mut got);
            assert!(fb.capacity() <= FRAME_HEADER_BYTES + FRAME_BYTES_MAX);
        }
        assert_eq!(got, frames);
        assert_eq!(fb.capacity(), 0);
    }

    #[test]
    fn feed_random_chunks() {
        let frames = sample();
        let wire = wire_of(&frames);
        let mut seed = 0xDEAD_BEEF_u64;
        for _ in 0..50 {
            let mut fb = FrameBuffer::new();
            let mut got = Vec::new();
            let mut rest = &wire[..];
            while !rest.is_empty() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let n = ((seed % 1500) as usize + 1).min(rest.len());
                feed_all(&mut fb, &rest[..n], &mut got);
                rest = &rest[n..];
            }
            assert_eq!(got, frames);
            assert_eq!(fb.capacity(), 0);
        }
    }

    #[test]
    fn feed_passes_whole_frames_without_copying() {
        let wire = wire_of(&sample());
        let range = wire.as_ptr_range();
        let mut fb = FrameBuffer::new();
        let mut n = 0;
        fb.feed(&wire, |p| {
            assert!(
                range.contains(&p.as_ptr()) || p.is_empty(),
                "payload was copied"
            );
            n += 1;
            Ok::<(), FrameError>(())
        })
        .unwrap();
        assert_eq!(n, 50);
        assert_eq!(fb.capacity(), 0);
    }

    #[test]
    fn split_frame_is_held_only_as_long_as_its_size() {
        let big: ClientFrame = SendMessage {
            body: vec![7; 10_000].into(),
            ..Default::default()
        }
        .into();
        let wire = wire_of(std::slice::from_ref(&big));
        let mut fb = FrameBuffer::new();
        let mut got = Vec::new();
        feed_all(&mut fb, &wire[..3], &mut got);
        assert_eq!(fb.capacity(), 3);
        for chunk in wire[3..wire.len() - 1].chunks(100) {
            feed_all(&mut fb, chunk, &mut got);
            assert!(
                fb.capacity() <= wire.len(),
                "held {} for a {} frame",
                fb.capacity(),
                wire.len()
            );
        }
        assert!(got.is_empty());
        feed_all(&mut fb, &wire[wire.len() - 1..], &mut got);
        assert_eq!(got, [big]);
        assert_eq!(fb.capacity(), 0);
    }

    #[test]
    fn extend_next_frame_two_frames_then_zero_capacity() {
        let a: ClientFrame = Ping { nonce: 1 }.into();
        let b: ClientFrame = Ping { nonce: 2 }.into();
        let wire = wire_of(&[a.clone(), b.clone()]);
        let mut fb = FrameBuffer::new();
        fb.extend(&wire[..wire.len() - 1]);
        assert_eq!(decode_client(fb.next_frame().unwrap().unwrap()).unwrap(), a);
        assert_eq!(fb.next_frame().unwrap(), None);
        assert_eq!(fb.len(), wire.len() / 2 - 1, "partial second frame kept");
        fb.extend(&wire[wire.len() - 1..]);
        assert_eq!(decode_client(fb.next_frame().unwrap().unwrap()).unwrap(), b);
        assert!(fb.is_empty());
        assert_eq!(fb.next_frame().unwrap(), None);
        assert_eq!(fb.capacity(), 0);
    }

    #[test]
    fn extend_then_feed_keeps_order() {
        let frames = sample();
        let wire = wire_of(&frames);
        let mut fb = FrameBuffer::new();
        fb.extend(&wire[..1000]);
        let mut got = Vec::new();
        feed_all(&mut fb, &wire[1000..], &mut got);
        assert_eq!(got, frames);
        assert_eq!(fb.capacity(), 0);
    }

    #[test]
    fn too_large_header_fails_before_body() {
        let header = ((FRAME_BYTES_MAX + 1) as u32).to_be_bytes();
        let mut fb = FrameBuffer::new();
        let ok = fb.feed(&header[..2], |_| Ok::<(), FrameError>(()));
        assert_eq!(ok, Ok(()));
        let err = fb
            .feed(&header[2..], |_| Ok::<(), FrameError>(()))
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
        let mut fb = FrameBuffer::new();
        fb.extend(&header);
        assert!(fb.next_frame().is_err());
    }

    #[test]
    fn callback_error_stops_feed() {
        let wire = wire_of(&sample());
        let mut fb = FrameBuffer::new();
        let mut seen = 0;
        let err = fb
            .feed(&wire, |_| {
                seen += 1;
                if seen == 3 {
                    Err(FrameError::Malformed)
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
        assert_eq!(err, FrameError::Malformed);
        assert_eq!(seen, 3);
    }
}

//! The task that drives one connection: flush queued output, read, frame, dispatch.
//!
//! Per wake-up, in this order:
//! 1. take the slot's outbox (frames the service queued) into the transport and write;
//! 2. if the slot is closing or handing off and everything is written, finish;
//! 3. read what the socket has (into the shard's scratch buffer), decrypt in place, split frames and
//!    hand each to the service — stopping early if the service closes the connection or
//!    hands it off mid-batch, so frames after that point travel with the socket;
//! 4. repeat until the socket would block, at most `READS_PER_WAKE_MAX` reads per wake-up.
//!
//! The task owns the socket; the shard's tables own the slot. The two meet only here, always
//! under a short `RefCell` borrow that never spans an await. This module must not touch the
//! listener or the mesh rings (handoffs go through the mesh outbox).

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll};

use crate::buffer_pool::{BufferPool, HugePages, PoolBacking, PoolBuf, PoolError};
use crate::conn_table::ConnId;
use crate::handoff::Detached;
use crate::mesh::Envelope;
use crate::service::{CloseReason, Service};
use crate::shard::{now_ms, ShardCell};
use crate::shard_io::{SlotState, CONN_OUTPUT_BYTES_MAX};
use crate::tls_session::{TLS_PENDING_BYTES_MAX, TLS_RECORD_BYTES_MAX};
use crate::transport::{ReadOutcome, Transport};
use crate::ShardId;

/// Reads per wake-up before the task yields to its neighbours on the shard.
pub const READS_PER_WAKE_MAX: usize = 16;
/// Bytes read from a socket in one go (the shard's scratch buffer).
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

// A connection's held-back TLS bytes go in front of a read, with room for a record after.
const _: () = assert!(READ_CHUNK_BYTES >= TLS_PENDING_BYTES_MAX + TLS_RECORD_BYTES_MAX);

/// The shard's I/O buffers: socket bytes (from the shard's buffer pool, huge-page backed
/// when asked), the plaintext they decrypt to, and the wire bytes (TLS records) a connection
/// is about to write. Shared by every connection on the shard, borrowed only inside one poll.
struct Scratch {
    read: PoolBuf,
    plain: Vec<u8>,
    /// Encrypted output on its way to one socket; what the socket does not take is copied
    /// to that connection's transport. Grows to the largest burst, kept for the shard's life.
    wire: Vec<u8>,
    _pool: BufferPool,
}

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

/// Sets up this shard thread's read buffers; returns what backs them.
pub(crate) fn install_scratch(huge: HugePages) -> Result<PoolBacking, PoolError> {
    let (mut pool, backing) = BufferPool::new(READ_CHUNK_BYTES, 1, huge)?;
    let read = pool.take().expect("a fresh pool of one has one buffer");
    let plain = Vec::with_capacity(READ_CHUNK_BYTES);
    let wire = Vec::with_capacity(READ_CHUNK_BYTES);
    SCRATCH.with(|s| {
        *s.borrow_mut() = Some(Scratch {
            read,
            plain,
            wire,
            _pool: pool,
        })
    });
    Ok(backing)
}

/// How a connection's task ends.
enum Outcome {
    Close(CloseReason),
    HandOff(ShardId),
}

/// Drives `id` until it closes or moves to another shard.
///
/// A plain function returning an `async move` block, not an `async fn`: an `async fn` moves
/// its arguments from their captured slots into locals, so the task held the 184-byte
/// `Transport` twice for its whole life. Captured by the block, it is held once.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub(crate) fn drive<S: Service>(
    cell: Rc<RefCell<ShardCell<S>>>,
    id: ConnId,
    mut t: Transport,
) -> impl std::future::Future<Output = ()> + 'static {
    async move {
        let outcome = poll_fn(|cx| step(&cell, id, &mut t, cx)).await;
        match outcome {
            Outcome::Close(reason) => {
                poll_fn(|cx| {
                    t.send_close_notify(cx);
                    Poll::Ready(())
                })
                .await;
                drop(t);
                cell.borrow_mut().finish(id, reason);
            }
            Outcome::HandOff(to) => hand_off(&cell, id, to, t),
        }
    }
}

fn hand_off<S: Service>(cell: &Rc<RefCell<ShardCell<S>>>, id: ConnId, to: ShardId, t: Transport) {
    let mut c = cell.borrow_mut();
    let msg = c.io.mesh.take_handoff(id);
    // A HandingOff slot always parked its message first (ShardIo::hand_off).
    let msg = msg.expect("handoff message parked");
    match Detached::from_transport(t) {
        Ok(detached) => {
            c.io.counters.handoffs_out += 1;
            if c.io.mesh.push(to, Envelope::Adopt(detached, msg)).is_err() {
                c.io.counters.handoff_failures += 1;
            }
            c.io.schedule_mesh_flush();
            c.finish(id, CloseReason::HandedOff);
        }
        Err(e) => {
            tracing::warn!(conn = ?id, error = %e, "handoff failed: cannot duplicate socket");
            c.io.counters.handoff_failures += 1;
            c.finish(id, CloseReason::IoError);
        }
    }
}

fn step<S: Service>(
    cell: &Rc<RefCell<ShardCell<S>>>,
    id: ConnId,
    t: &mut Transport,
    cx: &mut Context<'_>,
) -> Poll<Outcome> {
    if t.check_buffered {
        t.check_buffered = false;
        if let Err(o) = dispatch_buffered(cell, id, t) {
            return Poll::Ready(o);
        }
    }
    for _ in 0..READS_PER_WAKE_MAX {
        // 1. Output.
        let (state, mut outbox) = {
            let mut c = cell.borrow_mut();
            let slot =
                c.io.conns
                    .get_mut(id)
                    .expect("only this task removes its slot");
            if slot.waker.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
                slot.waker = Some(cx.waker().clone());
            }
            (slot.state, std::mem::take(&mut slot.outbox))
        };
        let sent = SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            // Installed by the shard before it accepts anything.
            let wire = &mut s.as_mut().expect("scratch installed").wire;
            t.poll_send(cx, &mut outbox, wire)
        });
        let flushed = match sent {
            Poll::Ready(Ok(n)) => {
                cell.borrow_mut().io.counters.bytes_out += n;
                true
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Outcome::Close(io_close_reason(&e))),
            Poll::Pending => false,
        };
        // A peer that does not read: what the kernel would not take counts against the cap.
        let unsent = t.unsent_bytes();
        if let Some(slot) = cell.borrow_mut().io.conns.get_mut(id) {
            slot.unsent_bytes = unsent;
        }
        if unsent > CONN_OUTPUT_BYTES_MAX {
            return Poll::Ready(Outcome::Close(CloseReason::OutputOverflow));
        }
        // 2. Ending. An overflowing peer is not waited for: it is not reading.
        match state {
            SlotState::Closing(CloseReason::OutputOverflow) => {
                return Poll::Ready(Outcome::Close(CloseReason::OutputOverflow))
            }
            SlotState::Closing(r) if flushed => return Poll::Ready(Outcome::Close(r)),
            SlotState::HandingOff(to) if flushed => return Poll::Ready(Outcome::HandOff(to)),
            SlotState::Closing(_) | SlotState::HandingOff(_) => return Poll::Pending,
            SlotState::Open | SlotState::Handshaking => {}
        }
        // 3. Input.
        match read_and_dispatch(cell, id, t, cx) {
            Poll::Ready(Ok(())) => continue,
            Poll::Ready(Err(o)) => return Poll::Ready(o),
            Poll::Pending => return Poll::Pending,
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

fn read_and_dispatch<S: Service>(
    cell: &Rc<RefCell<ShardCell<S>>>,
    id: ConnId,
    t: &mut Transport,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Outcome>> {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        // Installed by the shard before it accepts anything.
        let Scratch {
            read: scratch,
            plain,
            wire,
            ..
        } = s.as_mut().expect("scratch installed");
        plain.clear();
        let outcome = match t.poll_read(cx, scratch, plain, wire) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(o)) => o,
            Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                cell.borrow_mut().io.counters.handshake_failures += u64::from(t.is_handshaking());
                return Poll::Ready(Err(Outcome::Close(CloseReason::TlsError)));
            }
            Poll::Ready(Err(_)) => return Poll::Ready(Err(Outcome::Close(CloseReason::IoError))),
        };
        let ReadOutcome::Bytes {
            n,
            sent,
            handshake_done,
            peer_closed,
        } = outcome
        else {
            return Poll::Ready(Err(Outcome::Close(CloseReason::PeerClosed)));
        };
        let mut c = cell.borrow_mut();
        c.io.now_ms = now_ms();
        c.io.counters.bytes_in += n as u64;
        c.io.counters.bytes_out += sent;
        c.note_rx(id);
        if handshake_done {
            c.handshake_done(id);
        }
        c.dispatch_frames(id, &mut t.unread, plain)?;
        c.note_partial(id, t.has_partial());
        if peer_closed {
            return Poll::Ready(Err(Outcome::Close(CloseReason::PeerClosed)));
        }
        Poll::Ready(Ok(()))
    })
}

/// Why a connection closes after a failed write: TLS refused to encrypt, or the socket.
fn io_close_reason(e: &std::io::Error) -> CloseReason {
    if e.kind() == std::io::ErrorKind::InvalidData {
        CloseReason::TlsError
    } else {
        CloseReason::IoError
    }
}

/// Frames that were already read when the connection arrived on this shard.
fn dispatch_buffered<S: Service>(
    cell: &Rc<RefCell<ShardCell<S>>>,
    id: ConnId,
    t: &mut Transport,
) -> Result<(), Outcome> {
    // Plaintext is never buffered inside the TLS session: every read decrypts all it can.
    cell.borrow_mut().dispatch_frames(id, &mut t.unread, &[])
}

impl<S: Service> ShardCell<S> {
    /// Splits whole frames out of `unread` + `fresh` and hands them to the service. Keeps an
    /// incomplete tail in `unread`; stops (keeping the rest) if the slot leaves `Open`.
    fn dispatch_frames(
        &mut self,
        id: ConnId,
        unread: &mut Vec<u8>,
        fresh: &[u8],
    ) -> Result<(), Outcome> {
        let owned;
        let src: &[u8] = if unread.is_empty() {
            fresh
        } else {
            unread.extend_from_slice(fresh);
            owned = std::mem::take(unread);
            &owned
        };
        let mut at = 0;
        while self
            .io
            .conns
            .get(id)
            .is_some_and(|s| s.state == SlotState::Open)
        {
            match proto::codec::split_frame(&src[at..]) {
                Ok(Some((payload, used))) => {
                    at += used;
                    self.io.counters.frames_in += 1;
                    self.service.on_frame(&mut self.io, id, payload);
                }
                Ok(None) => break,
                Err(e) => {
                    self.io.counters.frames_too_large += 1;
                    self.service.on_frame_error(&mut self.io, id, e);
                    let _ = self.io.close_with(id, CloseReason::FrameTooLarge);
                    return Ok(());
                }
            }
        }
        if at < src.len() {
            *unread = src[at..].to_vec();
        }
        Ok(())
    }
}

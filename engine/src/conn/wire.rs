//! One connection's socket, as the shard's ring sees it: the descriptor, the TLS session, the
//! plaintext of a frame not yet complete, and the wire bytes on their way out.
//!
//! Output has two stages. `pending` holds wire bytes (TLS records, or plaintext frames)
//! produced since the last send was submitted; `inflight` holds the bytes a submitted send
//! is writing, owned here until its completion comes back (the kernel reads them). Only one
//! send per connection is in flight, so bytes leave in order. Both are empty and
//! capacity-free on an idle connection.
//!
//! Input needs no buffer here: the multishot receive reads into the shard's provided
//! buffers, and only a partial TLS record (in the session) or a partial frame (`unread`)
//! stays with the connection.
//!
//! This module builds the connection's submissions and keeps its bytes; it must not touch
//! the shard's tables or call the service.

use std::io;
use std::os::fd::{FromRawFd, RawFd};

use io_uring::{opcode, types};

use crate::ring::buf_ring::BUF_GROUP;
use crate::ring::{self, user_data, Tag};
use crate::tls::session::{ReadProgress, SessionError, TlsSession, TLS_PENDING_BYTES_MAX};

/// Spare send buffers a shard keeps for reuse (each at most [`SPARE_BUF_BYTES_MAX`]).
pub(crate) const SPARE_BUFS_MAX: usize = 256;
/// Largest send buffer kept for reuse; bigger ones are freed.
pub(crate) const SPARE_BUF_BYTES_MAX: usize = 64 * 1024;

/// Keeps an emptied send buffer for the next send (any connection's), unless it holds no
/// room, is larger than [`SPARE_BUF_BYTES_MAX`] or [`SPARE_BUFS_MAX`] are kept already.
pub(crate) fn keep_spare(spare: &mut Vec<Vec<u8>>, mut buf: Vec<u8>) {
    let room = buf.capacity();
    if room > 0 && room <= SPARE_BUF_BYTES_MAX && spare.len() < SPARE_BUFS_MAX {
        buf.clear();
        spare.push(buf);
    }
}

/// One connection's socket state.
#[derive(Debug)]
pub(crate) struct Wire {
    /// The socket; closed by the shard when the connection is finished, or moved away
    /// with a handoff.
    pub(crate) fd: RawFd,
    pub(crate) tls: Option<Box<TlsSession>>,
    /// Plaintext of a frame that has not fully arrived. Empty (no capacity) when idle.
    pub(crate) unread: Vec<u8>,
    pending: Vec<u8>,
    inflight: Vec<u8>,
    inflight_at: u32,
    /// A multishot receive is armed (its last completion has not come yet).
    pub(crate) recv_armed: bool,
    /// A send is in flight.
    pub(crate) send_armed: bool,
    /// Everything in flight on this socket was asked to cancel.
    pub(crate) cancel_sent: bool,
    /// The connection is going away without flushing (peer gone, socket failed).
    pub(crate) abort: bool,
}

impl Wire {
    pub(crate) fn new(fd: RawFd, tls: Option<Box<TlsSession>>, unread: Vec<u8>) -> Wire {
        Wire {
            fd,
            tls,
            unread,
            pending: Vec::new(),
            inflight: Vec::new(),
            inflight_at: 0,
            recv_armed: false,
            send_armed: false,
            cancel_sent: false,
            abort: false,
        }
    }

    /// Whether this connection can move to another process: plaintext, or TLS on our
    /// record layer (a rustls session cannot be exported).
    pub(crate) fn movable(&self) -> bool {
        self.tls.as_ref().is_none_or(|t| t.uses_record_layer())
    }

    /// Wire bytes produced and not yet taken by the kernel.
    pub(crate) fn unsent(&self) -> usize {
        self.pending.len() + self.inflight.len() - self.inflight_at as usize
    }

    /// Takes the wire bytes produced and not yet submitted (tests that play the peer).
    #[cfg(test)]
    pub(crate) fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    /// Bytes of an unfinished frame (or TLS record) are waiting for the rest.
    pub(crate) fn has_partial(&self) -> bool {
        !self.unread.is_empty() || self.tls.as_ref().is_some_and(|t| t.pending_in_len() > 0)
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// A receive or a send still references this socket.
    pub(crate) fn in_flight(&self) -> bool {
        self.recv_armed || self.send_armed
    }

    /// Decrypts `data` (behind any bytes the session held back, joined in `incoming`) and
    /// appends the plaintext to `plain`; handshake replies and alerts queue behind whatever
    /// is pending. `data` is a provided buffer: records are decrypted in place.
    pub(crate) fn decrypt(
        &mut self,
        data: &mut [u8],
        incoming: &mut Vec<u8>,
        plain: &mut Vec<u8>,
    ) -> Result<ReadProgress, SessionError> {
        let tls = self.tls.as_mut().expect("only TLS connections decrypt");
        let held = tls.pending_in_len();
        let buf: &mut [u8] = if held == 0 {
            data
        } else {
            let n = held + data.len();
            incoming.resize(n.max(TLS_PENDING_BYTES_MAX + 1), 0);
            let held = tls.take_pending_in(incoming);
            incoming[held..n].copy_from_slice(data);
            &mut incoming[..n]
        };
        tls.read(buf, plain, &mut self.pending)
    }

    /// Arms the multishot receive of the connection in table slot `index`.
    pub(crate) fn arm_recv(&mut self, index: u32) {
        debug_assert!(!self.recv_armed);
        let sqe = opcode::RecvMulti::new(types::Fd(self.fd), BUF_GROUP)
            .build()
            .user_data(user_data(Tag::Recv, u64::from(index)));
        // SAFETY: the receive points at no memory of ours (the kernel picks a provided
        // buffer); the descriptor stays open until this receive's last completion.
        ring::with(|r| unsafe { r.push(&sqe) });
        self.recv_armed = true;
    }

    /// Moves the service's queued plaintext into `pending` (encrypted for TLS, into a spare
    /// buffer when `pending` has none), leaving `outbox` empty and capacity-free: its buffer
    /// becomes `pending` or goes back to `spare`.
    pub(crate) fn stage(
        &mut self,
        outbox: &mut Vec<u8>,
        spare: &mut Vec<Vec<u8>>,
    ) -> Result<(), SessionError> {
        if !outbox.is_empty() {
            match &mut self.tls {
                Some(tls) => {
                    if self.pending.capacity() == 0 {
                        self.pending = spare.pop().unwrap_or_default();
                    }
                    tls.encrypt(outbox, &mut self.pending)?
                }
                None if self.pending.is_empty() => std::mem::swap(&mut self.pending, outbox),
                None => self.pending.extend_from_slice(outbox),
            }
        }
        keep_spare(spare, std::mem::take(outbox));
        Ok(())
    }

    /// Submits a send of everything pending, unless one is in flight or nothing is pending.
    /// `pending` is left capacity-free: an idle connection holds no buffer.
    pub(crate) fn start_send(&mut self, index: u32) {
        if self.send_armed || self.pending.is_empty() {
            return;
        }
        self.inflight = std::mem::take(&mut self.pending);
        self.inflight_at = 0;
        self.submit_send(index);
    }

    fn submit_send(&mut self, index: u32) {
        let rest = &self.inflight[self.inflight_at as usize..];
        let sqe = opcode::Send::new(types::Fd(self.fd), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(Tag::Send, u64::from(index)));
        // SAFETY: `inflight` is neither touched nor freed until this send's completion
        // (`sent`); the descriptor stays open until then.
        ring::with(|r| unsafe { r.push(&sqe) });
        self.send_armed = true;
    }

    /// The send in flight completed with `res`. Returns the bytes it wrote; resubmits the
    /// rest when the kernel took only part. A failed send poisons the TLS session (sealed
    /// records may be lost: no close_notify after a gap).
    pub(crate) fn sent(
        &mut self,
        index: u32,
        res: i32,
        spare: &mut Vec<Vec<u8>>,
    ) -> io::Result<usize> {
        self.send_armed = false;
        if res < 0 || (res == 0 && !self.inflight.is_empty()) {
            if let Some(tls) = &mut self.tls {
                tls.write_failed();
            }
            // The kernel is done with the buffer; what it did not take never will be sent.
            self.inflight = Vec::new();
            self.inflight_at = 0;
            self.pending = Vec::new();
            return Err(match res {
                0 => io::ErrorKind::WriteZero.into(),
                e => io::Error::from_raw_os_error(-e),
            });
        }
        self.inflight_at += res as u32;
        // The rest goes out unless the connection is aborting: bytes made after a cancel (a
        // TLS alert) are whole records, and cutting one breaks the peer's record stream.
        if (self.inflight_at as usize) < self.inflight.len() && !self.abort {
            self.submit_send(index);
        } else {
            self.inflight_at = 0;
            keep_spare(spare, std::mem::take(&mut self.inflight));
        }
        Ok(res as usize)
    }

    /// The connection gives up on its output (its linger deadline passed): what is pending is
    /// dropped, the send in flight (if any) is cancelled with the rest, and no alert follows.
    pub(crate) fn abort_output(&mut self) {
        self.abort = true;
        self.pending = Vec::new();
        // A cancel sent earlier (for the receive) did not cover a send submitted since.
        self.cancel_sent = false;
    }

    /// Asks the kernel to end everything in flight on this socket (once).
    pub(crate) fn cancel(&mut self, index: u32) {
        if self.cancel_sent || !self.in_flight() {
            return;
        }
        // By user_data, which the kernel finds in a hash table; a cancel by descriptor walks
        // every request on the ring, so closing or detaching every connection of a shard at
        // once (a shutdown, a live upgrade) would cost O(n²).
        for tag in [Tag::Recv, Tag::Send] {
            let target = user_data(tag, u64::from(index));
            let sqe = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(target).all())
                .build()
                .user_data(user_data(Tag::Ignore, 0));
            // SAFETY: a cancel points at no memory.
            ring::with(|r| unsafe { r.push(&sqe) });
        }
        self.cancel_sent = true;
    }

    /// Best effort, without waiting: tell a TLS peer we are closing. Nothing after a write
    /// error. One plain non-blocking `send`: closes are rare next to frames.
    pub(crate) fn send_close_notify(&mut self) {
        let Some(tls) = &mut self.tls else { return };
        let mut wire = Vec::new();
        tls.close_notify(&mut wire);
        if wire.is_empty() {
            return;
        }
        // SAFETY: send(2) from a live buffer on a descriptor we own.
        unsafe {
            libc::send(
                self.fd,
                wire.as_ptr().cast(),
                wire.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
    }
}

/// Borrows `fd` as a std `TcpStream` for the socket calls std already has; never closes it.
fn as_stream(fd: RawFd) -> std::mem::ManuallyDrop<std::net::TcpStream> {
    // SAFETY: `fd` is an open TCP socket the caller owns for the borrow's length, and
    // `ManuallyDrop` keeps the stream from closing it.
    std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) })
}

/// The peer's address of socket `fd`, IPv4 as an IPv4-mapped IPv6 address (`::` when the
/// socket cannot say).
pub(crate) fn peer_ip(fd: RawFd) -> std::net::Ipv6Addr {
    match as_stream(fd).peer_addr().map(|a| a.ip()) {
        Ok(std::net::IpAddr::V4(a)) => a.to_ipv6_mapped(),
        Ok(std::net::IpAddr::V6(a)) => a,
        Err(_) => std::net::Ipv6Addr::UNSPECIFIED,
    }
}

/// Turns Nagle off on `fd` (frames are whole; latency matters more than packet count).
pub(crate) fn set_nodelay(fd: RawFd) {
    let _ = as_stream(fd).set_nodelay(true);
}

//! Limits on connections that have not logged in yet, for services that have a login
//! ([`Service::LOGIN`]): what an address with no account can hold on a shard.
//!
//! A connection is *pre-login* from its accept (or adoption) until the service calls
//! [`ShardIo::set_logged_in`]. While it is:
//! 1. it counts against its source prefix (IPv4 /24, IPv6 /48) on this shard; past
//!    [`EngineConfig::prelogin_conns_per_prefix_max`] a new one is closed at once, before its
//!    TLS handshake (nothing can be said to it yet: counted as `prelogin_prefix_refused`).
//!    The cap is per shard, like the sign-up budgets: a box with N shards lets one prefix
//!    hold N times it. Logged-in connections do not count, so a campus NAT's users are
//!    limited only in how many log in at the same moment;
//! 2. a frame whose header announces more than [`PRELOGIN_FRAME_BYTES_MAX`] is refused
//!    like any oversized frame (an error frame, then the close; `prelogin_frames_too_large`);
//! 3. the bytes of its unfinished frame, and of the unfinished TLS record held back for the
//!    next read, count against the shard's [`PRELOGIN_PARTIAL_BYTES_SHARD_MAX`]; a connection
//!    whose partial frame or record would pass it is answered as an oversized frame (with
//!    the bytes the budget had left for it as the limit) and closed
//!    (`prelogin_partial_closed`);
//! 4. what it sends does not keep it alive: its idle deadline runs from its accept
//!    (`conn/deadline.rs` `note_rx`). The service closes it at its login deadline.
//!
//! Why this is safe: every count is taken and given back on the shard that owns the slot,
//! in one place each (admitted here, released in `PreLogin::release` from `finish` or at
//! login), so a slot never leaves a count behind.
//!
//! This module owns the pre-login bookkeeping only; it must not touch sockets, TLS, the
//! ring or the timer wheel.
//!
//! [`Service::LOGIN`]: crate::service::Service::LOGIN
//! [`ShardIo::set_logged_in`]: crate::shard_io::ShardIo::set_logged_in
//! [`EngineConfig::prelogin_conns_per_prefix_max`]: crate::config::EngineConfig::prelogin_conns_per_prefix_max

use std::collections::HashMap;
use std::net::Ipv6Addr;

use proto::limits::{FRAME_HEADER_BYTES, PRELOGIN_FRAME_BYTES_MAX};

use crate::conn::slot::{ConnSlot, SlotState};
use crate::observe::counters::ShardCounters;
use crate::service::{CloseReason, Service};
use crate::shard_io::{ShardCell, ShardIo};
use proto::ids::ConnId;

/// Bytes of unfinished frames and TLS records that the pre-login connections of one shard may
/// hold in all (a frame is at most [`PRELOGIN_FRAME_BYTES_MAX`], a held-back record about
/// 16 KiB): 1,024 of the largest frames.
pub const PRELOGIN_PARTIAL_BYTES_SHARD_MAX: usize = 1024 * PRELOGIN_FRAME_BYTES_MAX;

// A slot's share of the budget is kept in a u32.
const _: () = assert!(PRELOGIN_PARTIAL_BYTES_SHARD_MAX <= u32::MAX as usize);

/// A source prefix, as a map key: an IPv4 address's /24 (tagged by the top bit) or an IPv6
/// address's /48.
pub(crate) fn prefix_of(peer: Ipv6Addr) -> u64 {
    match peer.to_ipv4_mapped() {
        Some(v4) => (1 << 63) | u64::from(u32::from(v4) >> 8),
        None => (u128::from(peer) >> 80) as u64,
    }
}

/// One shard's pre-login counts.
#[derive(Debug)]
pub(crate) struct PreLogin {
    /// Pre-login connections per source prefix (entries at zero are removed, so this holds
    /// at most one entry per pre-login connection).
    per_prefix: HashMap<u64, u32>,
    /// The cap per prefix.
    per_prefix_max: u32,
}

impl PreLogin {
    pub(crate) fn new(per_prefix_max: usize) -> Self {
        PreLogin {
            per_prefix: HashMap::new(),
            per_prefix_max: u32::try_from(per_prefix_max).unwrap_or(u32::MAX),
        }
    }

    /// A new slot: counted against its prefix if it is pre-login. False (and counted as
    /// refused) when its prefix is at the cap.
    pub(crate) fn admit(&mut self, slot: &mut ConnSlot, counters: &mut ShardCounters) -> bool {
        if slot.logged_in {
            return true;
        }
        let n = self.per_prefix.entry(prefix_of(slot.peer)).or_insert(0);
        if *n >= self.per_prefix_max {
            counters.prelogin_prefix_refused += 1;
            if *n == 0 {
                self.per_prefix.remove(&prefix_of(slot.peer));
            }
            return false;
        }
        *n += 1;
        slot.prefix_counted = true;
        true
    }

    /// Gives back what `slot` holds (at its login, or when it goes). The shard's partial
    /// bytes are kept in `counters.prelogin_partial_bytes`.
    pub(crate) fn release(&mut self, slot: &mut ConnSlot, counters: &mut ShardCounters) {
        if std::mem::take(&mut slot.prefix_counted) {
            let key = prefix_of(slot.peer);
            if let Some(n) = self.per_prefix.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.per_prefix.remove(&key);
                }
            }
        }
        counters.prelogin_partial_bytes -= u64::from(std::mem::take(&mut slot.partial_counted));
    }

    /// `slot` now holds `held` bytes of an unfinished frame. `Err(room)` (counted) when a
    /// pre-login slot's growth would take the shard past [`PRELOGIN_PARTIAL_BYTES_SHARD_MAX`],
    /// with the bytes the budget had left for it: the caller closes it.
    pub(crate) fn hold_partial(
        &self,
        slot: &mut ConnSlot,
        held: usize,
        counters: &mut ShardCounters,
    ) -> Result<(), usize> {
        if slot.logged_in {
            return Ok(());
        }
        let counted = slot.partial_counted as usize;
        let others = counters.prelogin_partial_bytes as usize - counted;
        if held > counted && others + held > PRELOGIN_PARTIAL_BYTES_SHARD_MAX {
            counters.prelogin_partial_closed += 1;
            return Err(PRELOGIN_PARTIAL_BYTES_SHARD_MAX.saturating_sub(others));
        }
        counters.prelogin_partial_bytes = (others + held) as u64;
        // Within the budget (it grew within it, or shrank), so it fits a u32.
        slot.partial_counted = held as u32;
        Ok(())
    }
}

/// The frame at the start of `buf` on a pre-login connection announces more than
/// [`PRELOGIN_FRAME_BYTES_MAX`]: the error to answer with.
pub(crate) fn frame_too_large(slot: &ConnSlot, buf: &[u8]) -> Option<proto::codec::FrameError> {
    if slot.logged_in {
        return None;
    }
    let header = buf.first_chunk::<FRAME_HEADER_BYTES>()?;
    let len = u32::from_be_bytes(*header) as usize;
    (len > PRELOGIN_FRAME_BYTES_MAX).then_some(proto::codec::FrameError::TooLarge {
        len,
        max: PRELOGIN_FRAME_BYTES_MAX,
    })
}

impl<S: Service> ShardCell<S> {
    /// A slot just registered (accepted or adopted): admitted, or closed at once because
    /// its prefix holds its share of pre-login connections.
    pub(crate) fn prelogin_admit(&mut self, id: ConnId) -> bool {
        let Some(slot) = self.io.conns.get_mut(id) else {
            return false;
        };
        if self.io.prelogin.admit(slot, &mut self.io.counters) {
            return true;
        }
        self.close_now(id, CloseReason::PreLoginLimit);
        false
    }

    /// `id` keeps the bytes of an unfinished frame (and of an unfinished TLS record, held
    /// back for the next read): counted if it is pre-login, and closed (false) when that
    /// would pass the shard's budget.
    pub(crate) fn prelogin_hold(&mut self, id: ConnId) -> bool {
        let Some(slot) = self.io.conns.get_mut(id) else {
            return true;
        };
        let record = slot.wire.tls.as_ref().map_or(0, |t| t.pending_in_len());
        let held = slot.wire.unread.len() + record;
        let Err(room) = self
            .io
            .prelogin
            .hold_partial(slot, held, &mut self.io.counters)
        else {
            return true;
        };
        if slot.state == SlotState::Open {
            // Told as an oversized frame: more than the shard holds for it now.
            let error = proto::codec::FrameError::TooLarge {
                len: held,
                max: room,
            };
            self.service.on_frame_error(&mut self.io, id, error);
            let _ = self.io.close_with(id, CloseReason::PreLoginLimit);
        } else {
            self.close_now(id, CloseReason::PreLoginLimit);
        }
        false
    }

    /// The next frame in `buf` is over the pre-login frame cap for `id`: counted, answered
    /// through the service and closed, as an oversized frame. True if it was.
    pub(crate) fn prelogin_oversized(&mut self, id: ConnId, buf: &[u8]) -> bool {
        let Some(e) = self.io.conns.get(id).and_then(|s| frame_too_large(s, buf)) else {
            return false;
        };
        self.io.counters.prelogin_frames_too_large += 1;
        self.service.on_frame_error(&mut self.io, id, e);
        let _ = self.io.close_with(id, CloseReason::FrameTooLarge);
        true
    }
}

impl<S: Service> ShardIo<S> {
    /// `conn` has logged in: the pre-login limits no longer apply to it (and what it held
    /// against them is given back). Services with a login call this once the login
    /// succeeded, and again for a logged-in connection they adopt.
    pub fn set_logged_in(&mut self, conn: ConnId) {
        if let Some(slot) = self.conns.get_mut(conn) {
            if !slot.logged_in {
                slot.logged_in = true;
                self.prelogin.release(slot, &mut self.counters);
            }
        }
    }

    /// Whether `conn` has logged in (always true for a service without a login).
    pub fn is_logged_in(&self, conn: ConnId) -> bool {
        self.conns.get(conn).is_some_and(|s| s.logged_in)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_prefixes_are_slash_24_and_ipv6_prefixes_slash_48() {
        let v4 = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap().to_ipv6_mapped();
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        assert_eq!(prefix_of(v4("10.1.2.3")), prefix_of(v4("10.1.2.250")));
        assert_ne!(prefix_of(v4("10.1.2.3")), prefix_of(v4("10.1.3.3")));
        assert_eq!(
            prefix_of(v6("2001:db8:1::1")),
            prefix_of(v6("2001:db8:1:ffff::2"))
        );
        assert_ne!(
            prefix_of(v6("2001:db8:1::1")),
            prefix_of(v6("2001:db8:2::1"))
        );
        // An IPv6 /48 never collides with an IPv4 /24.
        assert_ne!(prefix_of(v4("0.0.0.1")), prefix_of(v6("::1")));
    }
}

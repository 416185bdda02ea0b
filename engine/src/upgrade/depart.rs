//! A shard's side of a live upgrade: its connections leave for the next process, and in
//! the next process they arrive.
//!
//! Leaving, in order (the shard's stop with the upgrade flag, `shard::Loop::stop_and_drain`):
//! 1. the accept stops (the listener stays open: it goes to the next process, and the
//!    kernel queues new connections meanwhile), and the service flushes (`on_shutdown`);
//! 2. each open connection whose TLS runs on our record layer becomes `Departing` (TLS still
//!    on rustls cannot move: those close, counted in `upgrade_closed`). From here no frame a
//!    client sends is dispatched: bytes read are kept as unread plaintext, exactly as in a
//!    handoff between shards (`conn::handoff`); frames for the connection are still sent;
//! 3. the shards wait until every one of them is quiet (its service's log flush done, no
//!    mesh message queued or waiting): a log write or a peer may still owe a departing
//!    connection a frame (a `ServerAck` after the fsync, a delivery);
//! 4. a departing connection flushes its output, cancels its receive, waits for the
//!    receive's last completion, and the service says what goes with it
//!    ([`Service::depart`], `None`: close it instead); then it detaches ([`Departed`]);
//! 5. the shard exits when its table is empty, handing its listener and departures to the
//!    runtime ([`ShardExit`]).
//!
//! Arriving: the new shard registers each connection before its loop's first turn, the
//! service hears [`Service::on_arrive`] with the session bytes, and frames read before the
//! move are dispatched in order. At no time do two processes read one socket: the old one
//! has cancelled its receive and reaped its last completion before the blob is built.
//!
//! [`Departure`] is what the whole process hands over; it converts to and from the blob
//! ([`HandOver`]) and its descriptors. This module owns those steps; it must not touch the
//! ring (the wire's receive and send are `conn::io`'s).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use zeroize::Zeroizing;

use crate::conn::handoff::Detached;
use crate::conn::slot::{mark_dirty, SlotState};
use crate::service::{CloseReason, Service};
use crate::shard_io::ShardCell;
use crate::tls::session::TlsSession;
use crate::upgrade::blob::{ConnEntry, HandOver, HandOverError, ListenerEntry, TlsEntry};
use proto::ids::ConnId;

/// One connection detached for the next process, with its session bytes.
#[derive(Debug)]
pub struct Departed {
    pub(crate) detached: Detached,
    /// It had logged in: the pre-login limits do not apply to it on arrival either.
    pub(crate) logged_in: bool,
    pub(crate) session: Vec<u8>,
}

/// What one shard leaves behind when it stops for an upgrade.
#[derive(Debug)]
pub struct ShardExit {
    /// Its listening socket, still open.
    pub listener: OwnedFd,
    /// Its connections, detached.
    pub departed: Vec<Departed>,
}

/// Everything a process hands the next one: per shard, its listener and connections.
#[derive(Debug, Default)]
pub struct Departure {
    /// Indexed by shard.
    pub shards: Vec<ShardExit>,
}

impl Departure {
    /// Connections in it.
    pub fn conns(&self) -> usize {
        self.shards.iter().map(|s| s.departed.len()).sum()
    }

    /// The blob and the descriptors it names, in the order their indexes count. TLS keys
    /// are in the blob: it is zeroed on drop.
    pub fn to_hand_over(&self) -> (Zeroizing<Vec<u8>>, Vec<BorrowedFd<'_>>) {
        let mut h = HandOver {
            shards: self.shards.len() as u32,
            ..HandOver::default()
        };
        let mut fds = Vec::with_capacity(self.shards.len() + self.conns());
        for (shard, exit) in self.shards.iter().enumerate() {
            h.listeners.push(ListenerEntry {
                shard: shard as u32,
                fd: fds.len() as u32,
            });
            fds.push(exit.listener.as_fd());
        }
        for (shard, exit) in self.shards.iter().enumerate() {
            for d in &exit.departed {
                // A session that cannot export is left out: it closes with the departure.
                if let Some(entry) = conn_entry(shard as u32, fds.len() as u32, d) {
                    h.conns.push(entry);
                    fds.push(d.detached.fd.as_fd());
                }
            }
        }
        (h.encode(), fds)
    }

    /// The departure a blob and its descriptors describe, for a process running `shards`
    /// shards (checked against the blob, as everything else in it).
    pub fn from_hand_over(
        blob: &[u8],
        fds: Vec<OwnedFd>,
        shards: u32,
    ) -> Result<Departure, HandOverError> {
        let h = HandOver::decode(blob, shards, fds.len())?;
        let mut fds: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
        let mut take = |i: u32| {
            fds[i as usize]
                .take()
                .expect("decode checked: each index once")
        };
        let mut listeners: Vec<Option<OwnedFd>> = (0..shards).map(|_| None).collect();
        for l in &h.listeners {
            listeners[l.shard as usize] = Some(take(l.fd));
        }
        let mut out = Departure::default();
        for listener in listeners {
            let listener =
                listener.ok_or(HandOverError::Inconsistent("a shard without a listener"))?;
            out.shards.push(ShardExit {
                listener,
                departed: Vec::new(),
            });
        }
        for c in h.conns {
            let fd = take(c.fd);
            let tls = match &c.tls {
                Some(t) => Some(Box::new(
                    TlsSession::import(&t.state, &t.pending_in)
                        .map_err(|_| HandOverError::Inconsistent("TLS state"))?,
                )),
                None => None,
            };
            if !c.unsent.is_empty() {
                return Err(HandOverError::Inconsistent(
                    "unsent bytes (this binary flushes)",
                ));
            }
            out.shards[c.shard as usize].departed.push(Departed {
                detached: Detached {
                    fd,
                    tls,
                    unread: c.unread,
                },
                logged_in: c.logged_in,
                session: c.session,
            });
        }
        Ok(out)
    }
}

/// `d`'s entry; `None` if its TLS session does not export (it was checked movable when it
/// started departing, and a failure or the peer's close_notify since closes it instead, so
/// this is a bug's way out, not a panic).
fn conn_entry(shard: u32, fd: u32, d: &Departed) -> Option<ConnEntry> {
    let tls = match d.detached.tls.as_ref() {
        Some(t) => {
            let mut state = Zeroizing::new(Vec::new());
            let pending = t.export(&mut state)?;
            Some(TlsEntry {
                pending_in: pending.to_vec(),
                state,
            })
        }
        None => None,
    };
    Some(ConnEntry {
        shard,
        fd,
        logged_in: d.logged_in,
        tls,
        unread: d.detached.unread.clone(),
        unsent: Vec::new(),
        session: d.session.clone(),
    })
}

impl<S: Service> ShardCell<S> {
    /// Step 2 of the module doc: every open connection whose TLS runs on our record layer
    /// starts departing; the others close.
    pub(crate) fn depart_all(&mut self) {
        let ids: Vec<ConnId> = self.io.conns.iter().map(|(id, _)| id).collect();
        for id in ids {
            let Some(slot) = self.io.conns.get_mut(id) else {
                continue;
            };
            match slot.state {
                SlotState::Open if slot.wire.movable() => {
                    slot.state = SlotState::Departing;
                    mark_dirty(slot, &mut self.io.dirty, id);
                }
                SlotState::Open | SlotState::Handshaking => {
                    self.io.counters.upgrade_closed += 1;
                    let _ = self.io.close_with(id, CloseReason::Shutdown);
                }
                _ => {}
            }
        }
    }

    /// The loop says whether every shard is quiet: once it is, departing connections that
    /// flushed detach.
    pub(crate) fn set_depart_hold(&mut self, hold: bool) {
        let released = self.io.depart_hold && !hold;
        self.io.depart_hold = hold;
        if released {
            let ids: Vec<ConnId> = self.io.conns.iter().map(|(id, _)| id).collect();
            for id in ids {
                if let Some(slot) = self.io.conns.get_mut(id) {
                    if slot.state == SlotState::Departing {
                        mark_dirty(slot, &mut self.io.dirty, id);
                    }
                }
            }
        }
    }

    /// Step 3's end: `id` flushed, every shard is quiet and nothing is in flight on it; the
    /// service says what goes with it (now, so that it counts every frame sent), and it
    /// detaches, or closes if the service has nothing to move.
    pub(crate) fn depart_now(&mut self, id: ConnId) {
        let Some(session) = self.service.depart(&mut self.io, id) else {
            self.set_closing(id, CloseReason::Shutdown);
            return;
        };
        let slot = self.io.conns.get_mut(id).expect("caller checked the slot");
        let logged_in = slot.logged_in;
        let wire = std::mem::replace(
            &mut slot.wire,
            crate::conn::wire::Wire::new(-1, None, Vec::new()),
        );
        self.io.counters.upgrade_departed += 1;
        self.io.departures.push(Departed {
            detached: Detached::from_wire(wire),
            logged_in,
            session,
        });
        self.finish(id, CloseReason::Upgrade);
    }

    /// In the next process, before the first turn: `d` arrives on this shard.
    pub(crate) fn arrive(&mut self, d: Departed) {
        self.io.tick_clock();
        let registered = self.register(d.detached.into_wire(), false, false);
        if let (Ok(id), true) = (&registered, d.logged_in) {
            self.io
                .conns
                .get_mut(*id)
                .expect("just registered")
                .logged_in = true;
        }
        match registered {
            Ok(id) if !self.prelogin_admit(id) => {}
            Ok(id) => {
                self.io.counters.upgrade_arrived += 1;
                self.io.conns.get_mut(id).expect("just registered").opened = true;
                self.service.on_arrive(&mut self.io, id, &d.session);
                self.dispatch_unread(id);
            }
            Err(wire) => {
                self.io.counters.upgrade_closed += 1;
                // SAFETY: the table refused it; nothing else references the descriptor.
                unsafe { libc::close(wire.fd) };
            }
        }
    }
}

//! The adapter's side of a cluster of boxes (`crate::cluster`): a pre-login frame on a box
//! of a cluster waits for its phone's home box (`cluster/port.rs`) before the shard's state
//! machines see it, then is served here, redirected or refused. A box without `--cluster`
//! has no port and never comes here.

use std::net::IpAddr;

use engine::ShardIo;
use proto::ids::ConnId;
use proto::v1::{server_frame, ClientFrame};

use super::{send_frame, ServiceTimer, Switchboard};
use crate::cluster::port::{Now, Parked, Release};
use crate::cluster::{BUSY_RETRY_AFTER_MS, PORT_POLL_MS};

impl Switchboard {
    /// Parks `frame` until the gateway says where its phone's home is, or releases it now.
    pub(super) fn ask_home(
        &mut self,
        io: &mut ShardIo<Self>,
        conn: ConnId,
        frame: ClientFrame,
        peer: Option<IpAddr>,
    ) {
        let now = io.now_ms();
        let Some(port) = self.cluster.as_mut() else {
            return self.serve_prelogin(io, conn, frame, peer);
        };
        match port.ask(now, conn, frame.clone(), peer) {
            Ok(()) => self.poll_cluster_later(io),
            Err(Now::Busy) => {
                let busy = proto::v1::Busy {
                    retry_after_ms: BUSY_RETRY_AFTER_MS,
                    client_msg_id: 0,
                };
                send_frame(io, conn, server_frame::Kind::Busy(busy));
            }
            Err(Now::Release(r)) => self.release_parked(io, (conn, frame, peer), r),
        }
    }

    /// Serves a pre-login frame on this box, as a single box does.
    fn serve_prelogin(
        &mut self,
        io: &mut ShardIo<Self>,
        conn: ConnId,
        frame: ClientFrame,
        peer: Option<IpAddr>,
    ) {
        self.run(io, |s, now, out| {
            s.note_peer(conn, peer);
            s.on_frame(now, conn, frame, out)
        });
    }

    fn release_parked(
        &mut self,
        io: &mut ShardIo<Self>,
        (conn, frame, peer): (ConnId, ClientFrame, Option<IpAddr>),
        release: Release,
    ) {
        // Closed while it waited: its on_close has run, nothing may be served for it.
        if !io.is_open(conn) {
            return;
        }
        match release {
            Release::Serve => self.serve_prelogin(io, conn, frame, peer),
            Release::Redirect(addr) => {
                let redirect = proto::v1::Redirect { addr };
                send_frame(io, conn, server_frame::Kind::Redirect(redirect));
                let _ = io.close(conn);
            }
            Release::Refuse(code, detail) => {
                let frame = messaging::state::effect::error(code, detail, 0);
                send_frame(io, conn, frame);
            }
        }
    }

    /// Looks for answers in [`PORT_POLL_MS`] unless a poll is set. A full timer wheel
    /// leaves it unset: the next question tries again.
    fn poll_cluster_later(&mut self, io: &mut ShardIo<Self>) {
        let Some(port) = self.cluster.as_mut() else {
            return;
        };
        if !port.timer_set {
            let at = io.now_ms() + PORT_POLL_MS;
            port.timer_set = io.set_timer(at, ServiceTimer::ClusterAnswers).is_ok();
        }
    }

    /// [`ServiceTimer::ClusterAnswers`]: releases every answered or late frame.
    pub(super) fn poll_cluster(&mut self, io: &mut ShardIo<Self>) {
        let Some(port) = self.cluster.as_mut() else {
            return;
        };
        port.timer_set = false;
        let released = port.poll(io.now_ms());
        let more = port.waiting() > 0;
        for (
            Parked {
                conn, frame, peer, ..
            },
            r,
        ) in released
        {
            self.release_parked(io, (conn, frame, peer), r);
        }
        if more {
            self.poll_cluster_later(io);
        }
    }
}

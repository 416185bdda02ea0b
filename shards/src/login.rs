//! Registration, verification and login: the frames that name a phone before a session
//! exists. Each is handled at the phone's home shard: a connection whose first such frame
//! names a phone homed elsewhere is handed, live, to that shard with the frame, and stays
//! there for the rest of its life.

use engine::ConnId;
use proto::v1::{server_frame, ClientFrame, ErrorCode, LoadTestLogin, Login, Register, Verify};

use crate::effect::{AfterCommit, Effect, Out};
use crate::limits::DEVICE_KEY_BYTES;
use crate::mesh_msg::ShardMsg;
use crate::record::{record, AccountRec, Record};
use crate::registry::{constant_time_eq, hash_key, RegistryError};
use crate::state::ShardState;

impl ShardState {
    /// If `phone` is homed elsewhere, hands `conn` there with `frame` and returns true.
    fn route_home(
        &mut self,
        conn: ConnId,
        phone: &str,
        frame: client_frame_of::Frame,
        out: &mut Out,
    ) -> bool {
        let home = self.home(phone);
        if home == self.shard {
            return false;
        }
        if self.sessions.user_of(conn).is_some() {
            out.error(conn, ErrorCode::UnexpectedFrame, "already logged in", 0);
            return true;
        }
        let frame = ClientFrame { kind: Some(frame) };
        out.now.push(Effect::HandOff(
            conn,
            home,
            ShardMsg::Adopt(Box::new(frame)),
        ));
        true
    }

    pub(crate) fn on_register(&mut self, now: u64, conn: ConnId, r: Register, out: &mut Out) {
        if self.route_home(
            conn,
            &r.phone.clone(),
            client_frame_of::Frame::Register(r.clone()),
            out,
        ) {
            return;
        }
        let mut digits = [0u8; 4];
        (self.random)(&mut digits);
        let pin = format!("{:06}", u32::from_le_bytes(digits) % 1_000_000);
        match self.registry.start(&r.phone, pin.clone(), now) {
            Ok(expires_in_s) => {
                // PinSent goes out only once the gateway reports the PIN sent.
                out.now.push(Effect::Sms {
                    conn,
                    phone: r.phone.clone(),
                    pin,
                    on_sent: server_frame::Kind::PinSent(proto::v1::PinSent {
                        phone: r.phone,
                        expires_in_s: expires_in_s as u32,
                    }),
                });
            }
            Err(e) => {
                tracing::warn!(phone = %r.phone, "registration refused: {e}");
                out.error(conn, ErrorCode::RateLimited, &e.to_string(), 0);
            }
        }
    }

    pub(crate) fn on_verify(&mut self, now: u64, conn: ConnId, v: Verify, out: &mut Out) {
        if self.route_home(
            conn,
            &v.phone.clone(),
            client_frame_of::Frame::Verify(v.clone()),
            out,
        ) {
            return;
        }
        if let Err(e) = self.registry.check_pin(&v.phone, &v.pin, now) {
            let code = match e {
                RegistryError::RateLimited => ErrorCode::RateLimited,
                RegistryError::PinExpired => ErrorCode::PinExpired,
                _ => ErrorCode::BadPin,
            };
            tracing::warn!(phone = %v.phone, "PIN refused: {e}");
            return out.error(conn, code, &e.to_string(), 0);
        }
        let mut key = vec![0u8; DEVICE_KEY_BYTES];
        (self.random)(&mut key);
        self.set_key(&v.phone, &key, out);
        // The new key replaces the old one at once: an open session on the old key ends.
        if let Some(old) = self.sessions.conn_of(&v.phone) {
            if old != conn {
                out.fail(
                    old,
                    ErrorCode::BadKey,
                    "device key revoked by a new registration",
                );
            }
        }
        let verified = server_frame::Kind::Verified(proto::v1::Verified {
            phone: v.phone,
            device_key: key,
        });
        out.after_commit
            .push(AfterCommit::Effect(Effect::Frame(conn, verified)));
    }

    /// Stores `key`'s hash as `phone`'s key (a new account gets an id).
    fn set_key(&mut self, phone: &str, key: &[u8], out: &mut Out) {
        let user_id = match self.registry.verified(phone) {
            Some(a) => a.user_id,
            None => self.ids.issue(),
        };
        let rec = AccountRec {
            phone: phone.to_string(),
            user_id,
            key_hash: hash_key(key),
        };
        self.registry.apply(&rec);
        self.records_since_snapshot += 1;
        out.records.push(Record {
            kind: Some(record::Kind::Account(rec)),
        });
    }

    pub(crate) fn on_login(&mut self, now: u64, conn: ConnId, l: Login, out: &mut Out) {
        if self.route_home(
            conn,
            &l.phone.clone(),
            client_frame_of::Frame::Login(l.clone()),
            out,
        ) {
            return;
        }
        if !self.registry.key_matches(&l.phone, &l.device_key) {
            tracing::info!(phone = %l.phone, "login refused: bad key");
            return out.fail(conn, ErrorCode::BadKey, "unknown phone or wrong device key");
        }
        self.start_session(now, conn, l.phone, out);
    }

    pub(crate) fn on_load_test_login(
        &mut self,
        now: u64,
        conn: ConnId,
        l: LoadTestLogin,
        out: &mut Out,
    ) {
        let Some(secret) = self.settings.load_test_secret.clone() else {
            return out.fail(
                conn,
                ErrorCode::LoadTestDisabled,
                "load-test logins are disabled",
            );
        };
        if self.route_home(
            conn,
            &l.phone.clone(),
            client_frame_of::Frame::LoadTestLogin(l.clone()),
            out,
        ) {
            return;
        }
        if !constant_time_eq(&secret, &l.secret) {
            return out.fail(conn, ErrorCode::BadKey, "wrong load-test secret");
        }
        if !self.registry.exists(&l.phone) {
            let mut key = vec![0u8; DEVICE_KEY_BYTES];
            (self.random)(&mut key);
            self.set_key(&l.phone, &key, out);
        }
        self.start_session(now, conn, l.phone, out);
    }

    fn start_session(&mut self, now: u64, conn: ConnId, phone: String, out: &mut Out) {
        if let Some(other) = self.sessions.user_of(conn) {
            if *other != phone {
                return out.error(conn, ErrorCode::UnexpectedFrame, "already logged in", 0);
            }
        }
        if let Some(old) = self.sessions.login(&phone, conn) {
            out.fail(old, ErrorCode::SessionReplaced, "logged in elsewhere");
            self.queues.session_ended(&phone);
        }
        if let Some(q) = self.queues.get_mut(&phone) {
            q.push_notified = false;
        }
        let user_id = self.registry.verified(&phone).map_or(0, |a| a.user_id);
        let queued = self.queues.len_of(&phone) as u32;
        out.frame(
            conn,
            server_frame::Kind::LoggedIn(proto::v1::LoggedIn { user_id, queued }),
        );
        self.pump(&phone, out);
        self.presence_changed(&phone, true, now, out);
    }
}

/// The pre-login frames that can be handed to another shard.
pub(crate) mod client_frame_of {
    pub(crate) use proto::v1::client_frame::Kind as Frame;
}

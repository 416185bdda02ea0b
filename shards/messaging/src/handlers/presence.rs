//! Presence frames and events between homes.

use proto::v1::{server_frame, ErrorCode, PresenceVisibility};

use crate::state::effect::{rate_limited, Out};
use crate::state::home::Phone;
use crate::state::limits::PRESENCE_REASKS_PER_JOIN_MAX;
use crate::state::mesh_msg::ShardMsg;
use crate::state::ShardState;
use crate::tables::admission::PRESENCE_RENEWALS_PER_UNIT;
use crate::tables::presence::Follow;

/// What `subscriber` is told about `contact`.
fn presence_frame(contact: &str, online: bool, last_seen_ms: u64) -> server_frame::Kind {
    server_frame::Kind::Presence(proto::v1::Presence {
        phone: contact.to_string(),
        online,
        last_seen_ms,
        hidden: false,
    })
}

fn hidden_frame(contact: String) -> server_frame::Kind {
    server_frame::Kind::Presence(proto::v1::Presence {
        phone: contact,
        online: false,
        last_seen_ms: 0,
        hidden: true,
    })
}

impl ShardState {
    /// `PresenceSubscribe` at the subscriber's home (already past the `Busy` check):
    /// refused whole when its fan-out is over the user's budget, else each contact is
    /// followed and fans out if it must (step 1 above).
    pub(crate) fn on_presence_subscribe(
        &mut self,
        now: u64,
        conn: proto::ids::ConnId,
        user: String,
        contacts: Vec<String>,
        out: &mut Out,
    ) {
        let Some(me) = Phone::parse(&user) else {
            return; // logged-in users are E.164
        };
        let since = self.presence.session_since(me, conn, now);
        let (mut fanout, mut renewals) = (0u32, 0u32);
        for c in contacts.iter().filter_map(|c| Phone::parse(c)) {
            if self.presence.fans_out(me, c, since) {
                fanout += 1;
            } else {
                renewals += 1;
            }
        }
        let units = fanout + renewals.div_ceil(PRESENCE_RENEWALS_PER_UNIT);
        if let Err(retry_after_ms) = self.admission.presence.admit(me, units, now) {
            self.abuse.refused_presence_fanout += 1;
            let frame = rate_limited("presence subscriptions too fast", retry_after_ms);
            return out.frame(conn, frame);
        }
        let mut refused = 0;
        for contact in contacts {
            match self.presence.follow(&user, &contact, now, since) {
                Follow::Refused => refused += 1,
                Follow::Renewed => {}
                Follow::FansOut => self.fan_out_subscription(now, &user, contact, out),
            }
        }
        if refused > 0 {
            out.error(
                conn,
                ErrorCode::RateLimited,
                "presence subscriptions at the limit; some were not made",
                0,
            );
        }
    }

    /// `user` now follows `contact`: ask the contact's home for its presence, and show
    /// `user`'s to the contact if they follow each other now.
    fn fan_out_subscription(&mut self, now: u64, user: &str, contact: String, out: &mut Out) {
        // Mutual now? Then the contact, if it follows `user`, may see `user`.
        if self.presence.is_subscribed(user, &contact, now)
            && self.presence.allows(user, &contact, now)
        {
            let online = self.sessions.conn_of(user).is_some();
            let frame = presence_frame(user, online, 0);
            out.now.extend(self.to_user(&contact, frame));
        }
        let home = self.home(&contact);
        out.mesh(
            home,
            ShardMsg::PresenceSub {
                contact,
                subscriber: user.to_string(),
            },
        );
    }

    pub(crate) fn on_presence_privacy(&mut self, user: &str, visibility: PresenceVisibility) {
        self.presence.set_visibility(user, visibility);
    }

    pub(crate) fn on_presence_sub_at_home(
        &mut self,
        now: u64,
        contact: String,
        subscriber: String,
        out: &mut Out,
    ) {
        let known = self.registry.exists(&contact);
        if !known || !self.presence.subscribe(&contact, &subscriber, now) {
            if known {
                tracing::debug!("presence subscribers at limit");
            }
            let frame = hidden_frame(contact);
            return out.now.extend(self.to_user(&subscriber, frame));
        }
        let frame = if self.presence.allows(&contact, &subscriber, now) {
            let online = self.sessions.conn_of(&contact).is_some();
            let last_seen_ms = if online {
                0
            } else {
                self.registry.last_seen(&contact)
            };
            presence_frame(&contact, online, last_seen_ms)
        } else {
            hidden_frame(contact)
        };
        out.now.extend(self.to_user(&subscriber, frame));
    }

    /// Another box of a cluster joined or started again (it holds no presence state) or
    /// left (its users' presence is not known now): each user here who subscribed this
    /// session asks again about each contact it follows whose subscription has not lapsed;
    /// each contact's home answers as at a first subscription (a shard cannot tell a
    /// contact of another box from one of another shard of this box, whose home answers
    /// again too). At most `PRESENCE_REASKS_PER_JOIN_MAX`, the rest counted. A box alone
    /// never calls it.
    pub fn presence_ask_again(&mut self, now: u64, out: &mut Out) {
        let mut asks = Vec::new();
        let mut skipped = 0u64;
        for user in self.presence.sessions.keys() {
            let Some(set) = self.presence.following.get(user) else {
                continue;
            };
            for (contact, _) in set.iter().filter(|(_, &lapse)| lapse > now) {
                if asks.len() < PRESENCE_REASKS_PER_JOIN_MAX {
                    asks.push((contact.to_string(), user.to_string()));
                } else {
                    skipped += 1;
                }
            }
        }
        self.abuse.presence_reasks += asks.len() as u64;
        self.abuse.presence_reasks_skipped += skipped;
        for (contact, subscriber) in asks {
            let home = self.home(&contact);
            out.mesh(
                home,
                ShardMsg::PresenceSub {
                    contact,
                    subscriber,
                },
            );
        }
    }

    /// `user` came online or went offline: tell the subscribers `user` allows.
    pub(crate) fn presence_changed(&mut self, user: &str, online: bool, now: u64, out: &mut Out) {
        if self.busy.is_some() {
            // Nobody is owed a presence update: while the shard is overloaded, none is
            // fanned out (subscribers see the next change, or ask again).
            self.abuse.presence_updates_skipped += 1;
            return;
        }
        for s in self.presence.audience_of(user, now) {
            let frame = presence_frame(user, online, if online { 0 } else { now });
            out.now.extend(self.to_user(&s, frame));
        }
    }
}

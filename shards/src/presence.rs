//! Presence of users homed on this shard: who subscribed to whom, and last-seen times.
//! Kept in memory (clients subscribe again after each login). Pure state.

use std::collections::{HashMap, HashSet};

use crate::limits::PRESENCE_SUBSCRIBERS_PER_USER_MAX;

/// Presence state.
#[derive(Debug, Default)]
pub struct Presence {
    subscribers: HashMap<String, HashSet<String>>,
    last_seen_ms: HashMap<String, u64>,
}

impl Presence {
    /// `subscriber` follows `contact`; false when `contact` has too many subscribers.
    pub fn subscribe(&mut self, contact: &str, subscriber: &str) -> bool {
        let set = self.subscribers.entry(contact.to_string()).or_default();
        if set.len() >= PRESENCE_SUBSCRIBERS_PER_USER_MAX && !set.contains(subscriber) {
            return false;
        }
        set.insert(subscriber.to_string());
        true
    }

    /// Who follows `contact`.
    pub fn subscribers_of(&self, contact: &str) -> Vec<String> {
        self.subscribers
            .get(contact)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// `user` went offline at `now`.
    pub fn went_offline(&mut self, user: &str, now: u64) {
        self.last_seen_ms.insert(user.to_string(), now);
    }

    /// When `user` was last online (0 if unknown).
    pub fn last_seen(&self, user: &str) -> u64 {
        self.last_seen_ms.get(user).copied().unwrap_or(0)
    }
}

mod ops {
    //! Presence frames and events between homes.

    use proto::v1::server_frame;

    use crate::effect::Out;
    use crate::mesh_msg::ShardMsg;
    use crate::state::ShardState;

    impl ShardState {
        pub(crate) fn on_presence_subscribe(
            &mut self,
            user: String,
            contacts: Vec<String>,
            out: &mut Out,
        ) {
            for contact in contacts {
                let home = self.home(&contact);
                out.mesh(
                    home,
                    ShardMsg::PresenceSub {
                        contact,
                        subscriber: user.clone(),
                    },
                );
            }
        }

        pub(crate) fn on_presence_sub_at_home(
            &mut self,
            contact: String,
            subscriber: String,
            out: &mut Out,
        ) {
            if !self.presence.subscribe(&contact, &subscriber) {
                tracing::warn!(%contact, "presence subscribers at limit");
                return;
            }
            let online = self.sessions.conn_of(&contact).is_some();
            let last_seen_ms = if online {
                0
            } else {
                self.presence.last_seen(&contact)
            };
            let frame = server_frame::Kind::Presence(proto::v1::Presence {
                phone: contact,
                online,
                last_seen_ms,
            });
            out.mesh(
                self.home(&subscriber),
                ShardMsg::ToUser {
                    user: subscriber,
                    frame,
                },
            );
        }

        /// `user` came online or went offline: tell their subscribers' homes.
        pub(crate) fn presence_changed(
            &mut self,
            user: &str,
            online: bool,
            now: u64,
            out: &mut Out,
        ) {
            for s in self.presence.subscribers_of(user) {
                let frame = server_frame::Kind::Presence(proto::v1::Presence {
                    phone: user.to_string(),
                    online,
                    last_seen_ms: if online { 0 } else { now },
                });
                out.mesh(self.home(&s), ShardMsg::ToUser { user: s, frame });
            }
        }
    }
}

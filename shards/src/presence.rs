//! Presence of users homed on this shard: who follows whom, who may see whom, and last-seen
//! times. Kept in memory (clients subscribe again after each login). Pure state.
//!
//! Consent, step by step:
//! 1. `PresenceSubscribe` from S is handled at S's home: each contact C goes into S's
//!    *following* list (capped at `PRESENCE_SUBSCRIPTIONS_PER_USER_MAX`, each entry lapsing
//!    `PRESENCE_SUBSCRIPTION_TTL_MS` after it was made), then a `PresenceSub` goes to C's home.
//! 2. At C's home the subscription is stored only if C is a user here (a number nobody has
//!    leaves no state). S gets C's presence only if C allows it: by default (CONTACTS) while
//!    C follows S too — mutual contacts, checked against C's following list, which lives at
//!    C's home — or always (EVERYONE) or never (NOBODY), as C set with `PresencePrivacy`.
//!    Otherwise S gets `Presence { hidden: true }`: the same answer as for a stranger's
//!    number, so the reply reveals nothing.
//! 3. Online/offline changes go to C's subscribers that C allows at that moment.
//! 4. When C starts following S, S may now see C: C's home sends C's presence to S if S
//!    already subscribed to C.

use std::collections::HashMap;

use proto::v1::PresenceVisibility;

use crate::limits::{
    PRESENCE_SUBSCRIBERS_PER_USER_MAX, PRESENCE_SUBSCRIPTIONS_PER_USER_MAX,
    PRESENCE_SUBSCRIPTION_TTL_MS,
};

/// Phone → time its entry lapses.
type Expiring = HashMap<String, u64>;

/// Presence state.
#[derive(Debug, Default)]
pub struct Presence {
    /// Contact (homed here) → its subscribers, each with its lapse time.
    subscribers: HashMap<String, Expiring>,
    /// User (homed here) → the contacts they follow, each with its lapse time.
    following: HashMap<String, Expiring>,
    /// Users homed here who chose other than CONTACTS.
    visibility: HashMap<String, PresenceVisibility>,
    /// Subscriptions refused because the subscriber follows the most allowed.
    pub refused: u64,
}

fn prune(set: &mut Expiring, now: u64) {
    set.retain(|_, lapses| *lapses > now);
}

impl Presence {
    /// `user` follows `contact` from `now`; false when `user` follows the most allowed
    /// (a renewal of an existing one is always accepted).
    pub fn follow(&mut self, user: &str, contact: &str, now: u64) -> bool {
        let set = self.following.entry(user.to_string()).or_default();
        if !set.contains_key(contact) && set.len() >= PRESENCE_SUBSCRIPTIONS_PER_USER_MAX {
            prune(set, now);
            if set.len() >= PRESENCE_SUBSCRIPTIONS_PER_USER_MAX {
                self.refused += 1;
                return false;
            }
        }
        set.insert(contact.to_string(), now + PRESENCE_SUBSCRIPTION_TTL_MS);
        true
    }

    /// `subscriber` follows `contact` (homed here); false when `contact` has too many.
    pub fn subscribe(&mut self, contact: &str, subscriber: &str, now: u64) -> bool {
        let set = self.subscribers.entry(contact.to_string()).or_default();
        if !set.contains_key(subscriber) && set.len() >= PRESENCE_SUBSCRIBERS_PER_USER_MAX {
            prune(set, now);
            if set.len() >= PRESENCE_SUBSCRIBERS_PER_USER_MAX {
                return false;
            }
        }
        set.insert(subscriber.to_string(), now + PRESENCE_SUBSCRIPTION_TTL_MS);
        true
    }

    /// Whether `subscriber` currently subscribes to `contact` (homed here).
    pub fn is_subscribed(&self, contact: &str, subscriber: &str, now: u64) -> bool {
        self.subscribers
            .get(contact)
            .and_then(|s| s.get(subscriber))
            .is_some_and(|&lapses| lapses > now)
    }

    /// Whether `contact` (homed here) lets `subscriber` see its presence now.
    pub fn allows(&self, contact: &str, subscriber: &str, now: u64) -> bool {
        match self.visibility_of(contact) {
            PresenceVisibility::Everyone => true,
            PresenceVisibility::Nobody => false,
            PresenceVisibility::Contacts => self
                .following
                .get(contact)
                .and_then(|s| s.get(subscriber))
                .is_some_and(|&lapses| lapses > now),
        }
    }

    /// `user`'s privacy setting.
    pub fn visibility_of(&self, user: &str) -> PresenceVisibility {
        self.visibility
            .get(user)
            .copied()
            .unwrap_or(PresenceVisibility::Contacts)
    }

    /// Sets `user`'s privacy setting.
    pub fn set_visibility(&mut self, user: &str, v: PresenceVisibility) {
        match v {
            PresenceVisibility::Contacts => self.visibility.remove(user),
            v => self.visibility.insert(user.to_string(), v),
        };
    }

    /// Who follows `contact` and may see it now; lapsed subscriptions are dropped.
    pub fn audience_of(&mut self, contact: &str, now: u64) -> Vec<String> {
        let Some(set) = self.subscribers.get_mut(contact) else {
            return Vec::new();
        };
        prune(set, now);
        if set.is_empty() {
            self.subscribers.remove(contact);
            return Vec::new();
        }
        let subs: Vec<String> = set.keys().cloned().collect();
        subs.into_iter()
            .filter(|s| self.allows(contact, s, now))
            .collect()
    }

    /// Subscriptions held here (both sides), a gauge for the statistics.
    pub fn entries(&self) -> usize {
        self.subscribers.values().map(HashMap::len).sum::<usize>()
            + self.following.values().map(HashMap::len).sum::<usize>()
    }
}

mod ops {
    //! Presence frames and events between homes.

    use proto::v1::{server_frame, ErrorCode, PresenceVisibility};

    use crate::effect::Out;
    use crate::mesh_msg::ShardMsg;
    use crate::state::ShardState;

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
        pub(crate) fn on_presence_subscribe(
            &mut self,
            now: u64,
            conn: engine::ConnId,
            user: String,
            contacts: Vec<String>,
            out: &mut Out,
        ) {
            let mut refused = 0;
            for contact in contacts {
                if !self.presence.follow(&user, &contact, now) {
                    refused += 1;
                    continue;
                }
                // Mutual now? Then the contact, if it follows `user`, may see `user`.
                if self.presence.is_subscribed(&user, &contact, now)
                    && self.presence.allows(&user, &contact, now)
                {
                    let online = self.sessions.conn_of(&user).is_some();
                    let frame = presence_frame(&user, online, 0);
                    out.mesh(
                        self.home(&contact),
                        ShardMsg::ToUser {
                            user: contact.clone(),
                            frame,
                        },
                    );
                }
                let home = self.home(&contact);
                out.mesh(
                    home,
                    ShardMsg::PresenceSub {
                        contact,
                        subscriber: user.clone(),
                    },
                );
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
            let home = self.home(&subscriber);
            let known = self.registry.exists(&contact);
            if !known || !self.presence.subscribe(&contact, &subscriber, now) {
                if known {
                    tracing::debug!(%contact, "presence subscribers at limit");
                }
                let frame = hidden_frame(contact);
                return out.mesh(
                    home,
                    ShardMsg::ToUser {
                        user: subscriber,
                        frame,
                    },
                );
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
            out.mesh(
                home,
                ShardMsg::ToUser {
                    user: subscriber,
                    frame,
                },
            );
        }

        /// `user` came online or went offline: tell the subscribers `user` allows.
        pub(crate) fn presence_changed(
            &mut self,
            user: &str,
            online: bool,
            now: u64,
            out: &mut Out,
        ) {
            for s in self.presence.audience_of(user, now) {
                let frame = presence_frame(user, online, if online { 0 } else { now });
                out.mesh(self.home(&s), ShardMsg::ToUser { user: s, frame });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mutual_contacts_see_presence_by_default() {
        let mut p = Presence::default();
        assert!(p.subscribe("c", "s", 0));
        assert!(!p.allows("c", "s", 0), "a one-way follower sees nothing");
        assert!(p.audience_of("c", 0).is_empty());
        p.follow("c", "s", 0);
        assert!(p.allows("c", "s", 0));
        assert_eq!(p.audience_of("c", 0), vec!["s".to_string()]);
        p.set_visibility("c", PresenceVisibility::Nobody);
        assert!(p.audience_of("c", 0).is_empty());
        p.set_visibility("c", PresenceVisibility::Everyone);
        assert!(p.allows("c", "stranger", 0));
        assert!(
            p.audience_of("c", PRESENCE_SUBSCRIPTION_TTL_MS).is_empty(),
            "subscriptions lapse"
        );
        assert_eq!(p.entries(), 1, "only c's following entry is left");
    }

    #[test]
    fn follows_are_capped_per_subscriber_until_they_lapse() {
        let mut p = Presence::default();
        for i in 0..PRESENCE_SUBSCRIPTIONS_PER_USER_MAX {
            assert!(p.follow("s", &format!("+1555{i:07}"), 0));
        }
        assert!(!p.follow("s", "+15559999999", 1));
        assert!(p.follow("s", "+15550000000", 1), "renewals are fine");
        assert!(p.follow("s", "+15559999999", PRESENCE_SUBSCRIPTION_TTL_MS));
        assert_eq!(p.refused, 1);
    }
}

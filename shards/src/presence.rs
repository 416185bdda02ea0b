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

use crate::home::Phone;
use crate::limits::{
    PRESENCE_SUBSCRIBERS_PER_USER_MAX, PRESENCE_SUBSCRIPTIONS_PER_USER_MAX,
    PRESENCE_SUBSCRIPTION_TTL_MS,
};
use crate::steady_map::SteadyMap;

/// Phone → time its entry lapses.
type Expiring = HashMap<Phone, u64>;

/// Presence state. Phones are held as integers (`Phone`); the frames' strings are parsed
/// once here (every phone past validation is E.164; anything else has no presence).
#[derive(Debug, Default)]
pub struct Presence {
    /// Contact (homed here) → its subscribers, each with its lapse time.
    subscribers: SteadyMap<Phone, Expiring>,
    /// User (homed here) → the contacts they follow, each with its lapse time.
    following: SteadyMap<Phone, Expiring>,
    /// Users homed here who chose other than CONTACTS.
    visibility: HashMap<Phone, PresenceVisibility>,
    /// Entries in all of `subscribers` and `following`: a gauge kept as they change, so
    /// the statistics never walk every user.
    entries: usize,
    /// Subscriptions refused because the subscriber follows the most allowed.
    pub refused: u64,
}

/// Drops lapsed entries; returns how many.
fn prune(set: &mut Expiring, now: u64) -> usize {
    let before = set.len();
    set.retain(|_, lapses| *lapses > now);
    before - set.len()
}

/// Adds or renews `who` in `set` unless it is at `max` after pruning; returns (added or
/// renewed, entries dropped by pruning, entry new).
fn add(set: &mut Expiring, who: Phone, max: usize, now: u64) -> (bool, usize, bool) {
    let mut pruned = 0;
    if !set.contains_key(&who) && set.len() >= max {
        pruned = prune(set, now);
        if set.len() >= max {
            return (false, pruned, false);
        }
    }
    let new = set
        .insert(who, now + PRESENCE_SUBSCRIPTION_TTL_MS)
        .is_none();
    (true, pruned, new)
}

impl Presence {
    /// `user` follows `contact` from `now`; false when `user` follows the most allowed
    /// (a renewal of an existing one is always accepted).
    pub fn follow(&mut self, user: &str, contact: &str, now: u64) -> bool {
        let (Some(user), Some(contact)) = (Phone::parse(user), Phone::parse(contact)) else {
            return false;
        };
        let set = self.following.get_or_insert_with(user, HashMap::new);
        let max = PRESENCE_SUBSCRIPTIONS_PER_USER_MAX;
        let (added, pruned, new) = add(set, contact, max, now);
        self.entries = self.entries - pruned + usize::from(new);
        if !added {
            self.refused += 1;
        }
        added
    }

    /// `subscriber` follows `contact` (homed here); false when `contact` has too many.
    pub fn subscribe(&mut self, contact: &str, subscriber: &str, now: u64) -> bool {
        let (Some(contact), Some(subscriber)) = (Phone::parse(contact), Phone::parse(subscriber))
        else {
            return false;
        };
        let set = self.subscribers.get_or_insert_with(contact, HashMap::new);
        let max = PRESENCE_SUBSCRIBERS_PER_USER_MAX;
        let (added, pruned, new) = add(set, subscriber, max, now);
        self.entries = self.entries - pruned + usize::from(new);
        added
    }

    /// Whether `subscriber` currently subscribes to `contact` (homed here).
    pub fn is_subscribed(&self, contact: &str, subscriber: &str, now: u64) -> bool {
        lapses(&self.subscribers, contact, subscriber).is_some_and(|l| l > now)
    }

    /// Whether `user` (homed here) follows `contact` now: `contact` is in `user`'s address
    /// book.
    pub fn follows(&self, user: &str, contact: &str, now: u64) -> bool {
        lapses(&self.following, user, contact).is_some_and(|l| l > now)
    }

    /// Whether `contact` (homed here) lets `subscriber` see its presence now.
    pub fn allows(&self, contact: &str, subscriber: &str, now: u64) -> bool {
        match self.visibility_of(contact) {
            PresenceVisibility::Everyone => true,
            PresenceVisibility::Nobody => false,
            PresenceVisibility::Contacts => {
                lapses(&self.following, contact, subscriber).is_some_and(|l| l > now)
            }
        }
    }

    /// `user`'s privacy setting.
    pub fn visibility_of(&self, user: &str) -> PresenceVisibility {
        Phone::parse(user)
            .and_then(|u| self.visibility.get(&u).copied())
            .unwrap_or(PresenceVisibility::Contacts)
    }

    /// Sets `user`'s privacy setting.
    pub fn set_visibility(&mut self, user: &str, v: PresenceVisibility) {
        let Some(user) = Phone::parse(user) else {
            return;
        };
        match v {
            PresenceVisibility::Contacts => self.visibility.remove(&user),
            v => self.visibility.insert(user, v),
        };
    }

    /// Who follows `contact` and may see it now; lapsed subscriptions are dropped.
    pub fn audience_of(&mut self, contact: &str, now: u64) -> Vec<String> {
        let Some(phone) = Phone::parse(contact) else {
            return Vec::new();
        };
        let Some(set) = self.subscribers.get_mut(&phone) else {
            return Vec::new();
        };
        self.entries -= prune(set, now);
        if set.is_empty() {
            self.subscribers.remove(&phone);
            return Vec::new();
        }
        let subs: Vec<String> = set.keys().map(|s| s.to_string()).collect();
        subs.into_iter()
            .filter(|s| self.allows(contact, s, now))
            .collect()
    }

    /// Subscriptions held here (both sides), a gauge for the statistics.
    pub fn entries(&self) -> usize {
        self.entries
    }
}

/// When `b`'s entry under `a` lapses, if it has one.
fn lapses(map: &SteadyMap<Phone, Expiring>, a: &str, b: &str) -> Option<u64> {
    let (a, b) = (Phone::parse(a)?, Phone::parse(b)?);
    map.get(&a)?.get(&b).copied()
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
                    tracing::debug!("presence subscribers at limit");
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

    const C: &str = "+15550000001";
    const S: &str = "+15550000002";

    #[test]
    fn only_mutual_contacts_see_presence_by_default() {
        let mut p = Presence::default();
        assert!(p.subscribe(C, S, 0));
        assert!(!p.allows(C, S, 0), "a one-way follower sees nothing");
        assert!(p.audience_of(C, 0).is_empty());
        p.follow(C, S, 0);
        assert!(p.allows(C, S, 0));
        assert_eq!(p.audience_of(C, 0), vec![S.to_string()]);
        p.set_visibility(C, PresenceVisibility::Nobody);
        assert!(p.audience_of(C, 0).is_empty());
        p.set_visibility(C, PresenceVisibility::Everyone);
        assert!(p.allows(C, "+15550000003", 0));
        assert!(
            p.audience_of(C, PRESENCE_SUBSCRIPTION_TTL_MS).is_empty(),
            "subscriptions lapse"
        );
        assert_eq!(p.entries(), 1, "only c's following entry is left");
    }

    #[test]
    fn follows_are_capped_per_subscriber_until_they_lapse() {
        let mut p = Presence::default();
        for i in 0..PRESENCE_SUBSCRIPTIONS_PER_USER_MAX {
            assert!(p.follow(S, &format!("+1555{i:07}"), 0));
        }
        assert!(!p.follow(S, "+15559999999", 1));
        assert!(p.follow(S, "+15550000000", 1), "renewals are fine");
        assert!(p.follow(S, "+15559999999", PRESENCE_SUBSCRIPTION_TTL_MS));
        assert_eq!(p.refused, 1);
    }
}

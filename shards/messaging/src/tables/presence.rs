//! Presence of users homed on this shard: who follows whom, who may see whom, and last-seen
//! times. Kept in memory (clients subscribe again after each login). Pure state.
//!
//! Consent, step by step:
//! 1. `PresenceSubscribe` from S is handled at S's home: each contact C goes into S's
//!    *following* list (capped at `PRESENCE_SUBSCRIPTIONS_PER_USER_MAX`, each entry lapsing
//!    `PRESENCE_SUBSCRIPTION_TTL_MS` after it was made), then a `PresenceSub` goes to C's home.
//!    Only a new subscription, or the first renewal in a session (the client needs the
//!    contacts' presence again after it reconnects), fans out; later renewals in the same
//!    session only push the lapse back. The frame is admitted first: `Busy` while the shard
//!    is overloaded, and the fan-out spends the user's budget (`admission.rs`).
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

use proto::ids::ConnId;
use proto::v1::PresenceVisibility;

use crate::state::home::Phone;
use crate::state::limits::{
    PRESENCE_SUBSCRIBERS_PER_USER_MAX, PRESENCE_SUBSCRIPTIONS_PER_USER_MAX,
    PRESENCE_SUBSCRIPTION_TTL_MS,
};
use crate::tables::steady_map::SteadyMap;

/// Phone → time its entry lapses.
pub(crate) type Expiring = HashMap<Phone, u64>;

/// Presence state. Phones are held as integers (`Phone`); the frames' strings are parsed
/// once here (every phone past validation is E.164; anything else has no presence).
#[derive(Debug, Default)]
pub struct Presence {
    /// Contact (homed here) → its subscribers, each with its lapse time.
    pub(crate) subscribers: SteadyMap<Phone, Expiring>,
    /// User (homed here) → the contacts they follow, each with its lapse time.
    pub(crate) following: SteadyMap<Phone, Expiring>,
    /// Users homed here who chose other than CONTACTS.
    pub(crate) visibility: HashMap<Phone, PresenceVisibility>,
    /// Entries in all of `subscribers` and `following`: a gauge kept as they change, so
    /// the statistics never walk every user.
    pub(crate) entries: usize,
    /// Subscriptions refused because the subscriber follows the most allowed.
    pub refused: u64,
    /// User (homed here, online, who subscribed this session) → the session's connection
    /// and when it first subscribed: renewals made before that fan out once more. Dropped
    /// when the session ends.
    pub(crate) sessions: HashMap<Phone, (ConnId, u64)>,
}

/// What one contact of a `PresenceSubscribe` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Refused: the subscriber follows the most allowed.
    Refused,
    /// Renewed within the session: nothing to send.
    Renewed,
    /// New, or renewed for the first time this session: fans out.
    FansOut,
}

/// Drops lapsed entries; returns how many.
pub(crate) fn prune(set: &mut Expiring, now: u64) -> usize {
    let before = set.len();
    set.retain(|_, lapses| *lapses > now);
    before - set.len()
}

/// Adds or renews `who` in `set` unless it is at `max` after pruning; returns (added or
/// renewed, entries dropped by pruning, entry new).
pub(crate) fn add(set: &mut Expiring, who: Phone, max: usize, now: u64) -> (bool, usize, bool) {
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
    /// `user` follows `contact` from `now` in a session that first subscribed at `since`
    /// (a renewal of an existing one is always accepted).
    pub fn follow(&mut self, user: &str, contact: &str, now: u64, since: u64) -> Follow {
        let (Some(user), Some(contact)) = (Phone::parse(user), Phone::parse(contact)) else {
            return Follow::Refused;
        };
        let fans_out = self.fans_out(user, contact, since);
        let set = self.following.get_or_insert_with(user, HashMap::new);
        let max = PRESENCE_SUBSCRIPTIONS_PER_USER_MAX;
        let (added, pruned, new) = add(set, contact, max, now);
        self.entries = self.entries - pruned + usize::from(new);
        match (added, fans_out) {
            (false, _) => {
                self.refused += 1;
                Follow::Refused
            }
            (true, true) => Follow::FansOut,
            (true, false) => Follow::Renewed,
        }
    }

    /// Whether `user` following `contact` in a session that first subscribed at `since`
    /// would fan out: the subscription is new, or was last made before that session.
    pub fn fans_out(&self, user: Phone, contact: Phone, since: u64) -> bool {
        let made = |lapse: u64| lapse.saturating_sub(PRESENCE_SUBSCRIPTION_TTL_MS);
        self.following
            .get(&user)
            .and_then(|set| set.get(&contact))
            .is_none_or(|&lapse| made(lapse) < since)
    }

    /// Whether `user` follows `contact` now (a contact: writing to them is free).
    pub fn follows(&self, user: Phone, contact: Phone, now: u64) -> bool {
        self.following
            .get(&user)
            .and_then(|set| set.get(&contact))
            .is_some_and(|&lapse| lapse > now)
    }

    /// When `user`'s session on `conn` first subscribed (`now` if this is the first time).
    pub fn session_since(&mut self, user: Phone, conn: ConnId, now: u64) -> u64 {
        let e = self.sessions.entry(user).or_insert((conn, now));
        if e.0 != conn {
            *e = (conn, now);
        }
        e.1
    }

    /// `user`'s session ended.
    pub fn session_ended(&mut self, user: &str) {
        if let Some(u) = Phone::parse(user) {
            self.sessions.remove(&u);
        }
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
pub(crate) fn lapses(map: &SteadyMap<Phone, Expiring>, a: &str, b: &str) -> Option<u64> {
    let (a, b) = (Phone::parse(a)?, Phone::parse(b)?);
    map.get(&a)?.get(&b).copied()
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
        p.follow(C, S, 0, 0);
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
            assert_eq!(p.follow(S, &format!("+1555{i:07}"), 0, 0), Follow::FansOut);
        }
        assert_eq!(p.follow(S, "+15559999999", 1, 0), Follow::Refused);
        assert_eq!(
            p.follow(S, "+15550000000", 1, 0),
            Follow::Renewed,
            "renewals are fine"
        );
        let ttl = PRESENCE_SUBSCRIPTION_TTL_MS;
        assert_eq!(p.follow(S, "+15559999999", ttl, 0), Follow::FansOut);
        assert_eq!(p.refused, 1);
    }

    #[test]
    fn a_renewal_fans_out_once_per_session_and_never_again_within_it() {
        let mut p = Presence::default();
        let (s, a, b) = (
            Phone::parse(S).unwrap(),
            ConnId::from_u64(1),
            ConnId::from_u64(2),
        );
        let since = p.session_since(s, a, 10);
        assert_eq!(p.follow(S, C, 10, since), Follow::FansOut);
        assert_eq!(p.follow(S, C, 11, since), Follow::Renewed);
        assert_eq!(p.session_since(s, a, 500), 10, "the same session");
        assert_eq!(p.follow(S, C, 500, since), Follow::Renewed);
        let since = p.session_since(s, b, 1_000);
        assert_eq!(since, 1_000, "a new connection is a new session");
        assert_eq!(p.follow(S, C, 1_000, since), Follow::FansOut);
        assert_eq!(p.follow(S, C, 1_001, since), Follow::Renewed);
        p.session_ended(S);
        assert_eq!(p.session_since(s, b, 2_000), 2_000);
        assert!(p.follows(s, Phone::parse(C).unwrap(), 2_000));
    }
}

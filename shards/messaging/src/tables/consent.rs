//! Who may add a user to a group, and the group creations waiting for their members' homes
//! to answer (the steps are `handlers/group_consent.rs`'s). Pure state: each user's
//! `GroupPrivacy` choice, and at most [`GROUP_CREATES_PENDING_MAX`] pending creations.

use std::collections::HashMap;

use proto::v1::GroupAddPolicy;

use crate::state::home::Phone;
use crate::state::limits::GROUP_CREATES_PENDING_MAX;

/// A group creation waiting for its members' homes.
#[derive(Debug)]
pub(crate) struct PendingCreate {
    pub(crate) creator: String,
    pub(crate) name: String,
    pub(crate) client_req_id: u64,
    /// The members asked for, creator excluded, in request order.
    pub(crate) wanted: Vec<String>,
    pub(crate) accepted: Vec<String>,
    /// Members not yet answered about.
    pub(crate) members_left: usize,
    /// When the entry may be dropped if room is needed.
    pub(crate) expires_at_ms: u64,
}

/// The choices of users homed here, and the creations of groups homed here that wait for
/// answers.
#[derive(Debug, Default)]
pub struct GroupConsent {
    /// Users who chose other than CONTACTS.
    pub(crate) policies: HashMap<Phone, GroupAddPolicy>,
    /// Group id → its creation, until every member's home answered.
    pub(crate) pending: HashMap<u64, PendingCreate>,
}

impl GroupConsent {
    /// `user`'s choice.
    pub fn policy_of(&self, user: &str) -> GroupAddPolicy {
        Phone::parse(user)
            .and_then(|u| self.policies.get(&u).copied())
            .unwrap_or(GroupAddPolicy::Contacts)
    }

    /// Sets `user`'s choice.
    pub fn set_policy(&mut self, user: &str, p: GroupAddPolicy) {
        let Some(user) = Phone::parse(user) else {
            return;
        };
        match p {
            GroupAddPolicy::Contacts => self.policies.remove(&user),
            p => self.policies.insert(user, p),
        };
    }

    /// Creations waiting for answers.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Creations by `creator` waiting for answers (a scan: creations are budgeted per user,
    /// so this runs at most `GROUP_CREATES_PER_USER_PER_HOUR` times an hour per user).
    pub fn pending_by(&self, creator: &str) -> usize {
        self.pending
            .values()
            .filter(|p| p.creator == creator)
            .count()
    }

    /// Whether one more creation may wait, dropping expired ones if the table is full.
    pub(crate) fn room(&mut self, now: u64) -> bool {
        if self.pending.len() >= GROUP_CREATES_PENDING_MAX {
            self.pending.retain(|_, p| p.expires_at_ms > now);
        }
        self.pending.len() < GROUP_CREATES_PENDING_MAX
    }
}

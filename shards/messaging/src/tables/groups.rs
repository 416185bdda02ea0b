//! Groups homed on this shard (a group's home is the shard in its id): members, admin, and
//! the fan-outs of group sends still waiting for every member's copy to be stored. Phones
//! are kept as integers and given to the operations as strings. Pure state.

use std::collections::HashMap;

use crate::durable::record::GroupRec;
use crate::state::home::Phone;
use crate::state::limits::GROUP_FANOUTS_IN_FLIGHT_MAX;

/// One group, as the group operations read it (phones as strings).
#[derive(Debug, Clone)]
pub struct Group {
    /// Display name.
    pub name: String,
    /// The creator; only the admin adds or removes others.
    pub admin: String,
    /// Members, admin included, in join order.
    pub members: Vec<String>,
}

/// One group as it is kept: phones as integers.
#[derive(Debug)]
pub(crate) struct StoredGroup {
    pub(crate) name: String,
    pub(crate) admin: Phone,
    pub(crate) members: Vec<Phone>,
}

impl StoredGroup {
    /// The record of this group's state.
    pub(crate) fn record(&self, group_id: u64) -> GroupRec {
        GroupRec {
            group_id,
            name: self.name.clone(),
            admin: self.admin.to_string(),
            members: self.members.iter().map(Phone::to_string).collect(),
        }
    }
}

/// A group send as its fan-out is known: the group, the sender and the sender's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FanoutKey {
    /// The group.
    pub group_id: u64,
    /// The sender.
    pub sender: Phone,
    /// The sender's id for the send.
    pub client_msg_id: u64,
}

/// A group send waiting for its copies.
#[derive(Debug)]
pub(crate) struct Fanout {
    pub(crate) remaining: usize,
    pub(crate) ack_id: u64,
    /// A copy could not be handed on (`fail_fanout`): the send ends in `Busy`.
    pub(crate) failed: bool,
}

/// How a group send ended, once every copy is accounted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanoutEnd {
    /// Every copy stored: the sender's `ServerAck` carries this id.
    Stored(u64),
    /// A copy could not be handed on: the sender hears `Busy` and retries.
    Failed,
}

/// Groups homed here.
#[derive(Debug, Default)]
pub struct Groups {
    /// Grows in slices, and a snapshot walks it between events (`steady_map.rs`). Keyed by
    /// group ids, which only we issue (a peer names ids to look up, never inserts one): the
    /// id hasher.
    pub(crate) groups:
        crate::tables::steady_map::SteadyMap<u64, StoredGroup, crate::tables::id_hash::IdHash>,
    pub(crate) fanouts: HashMap<FanoutKey, Fanout>,
    /// Admin → groups here they administer (kept as groups change, replay included), for
    /// `GROUPS_ADMINISTERED_PER_USER_MAX`. At most one entry per group.
    pub(crate) administered: HashMap<Phone, u32>,
}

impl Groups {
    /// The group, if it exists.
    pub fn get(&self, id: u64) -> Option<Group> {
        self.groups.get(&id).map(|g| Group {
            name: g.name.clone(),
            admin: g.admin.to_string(),
            members: g.members.iter().map(Phone::to_string).collect(),
        })
    }

    /// Whether the group exists here (no copy of it made).
    pub fn contains(&self, id: u64) -> bool {
        self.groups.get(&id).is_some()
    }

    /// Groups here that `user` administers.
    pub fn administered_by(&self, user: &str) -> usize {
        Phone::parse(user)
            .and_then(|u| self.administered.get(&u))
            .map_or(0, |&n| n as usize)
    }

    /// Sets a group's state (creation, change, replay); no members deletes it.
    pub fn apply(&mut self, rec: &GroupRec) {
        // Phones in group records were validated before they were written.
        let members: Vec<Phone> = rec.members.iter().filter_map(|m| Phone::parse(m)).collect();
        let old = match Phone::parse(&rec.admin) {
            Some(admin) if !members.is_empty() => {
                let g = StoredGroup {
                    name: rec.name.clone(),
                    admin,
                    members,
                };
                *self.administered.entry(admin).or_default() += 1;
                self.groups.insert(rec.group_id, g)
            }
            _ => self.groups.remove(&rec.group_id),
        };
        if let Some(old) = old {
            if let std::collections::hash_map::Entry::Occupied(mut e) =
                self.administered.entry(old.admin)
            {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
    }

    /// Starts counting the copies of a group send. False if one is already counting (a
    /// retry while the first is in flight) or too many are in flight.
    pub fn start_fanout(&mut self, key: FanoutKey, copies: usize, ack_id: u64) -> bool {
        if self.fanouts.len() >= GROUP_FANOUTS_IN_FLIGHT_MAX || self.fanouts.contains_key(&key) {
            return false;
        }
        self.fanouts.insert(
            key,
            Fanout {
                remaining: copies,
                ack_id,
                failed: false,
            },
        );
        true
    }

    /// One copy is stored (`stored`) or could not be handed on; returns how the send ended
    /// when it was the last. A send with a copy failed ends only once every copy is
    /// accounted for, so a retry (answered "on its way" until then) never counts the first
    /// attempt's copies.
    pub fn copy_done(&mut self, key: &FanoutKey, stored: bool) -> Option<FanoutEnd> {
        let f = self.fanouts.get_mut(key)?;
        f.remaining = f.remaining.saturating_sub(1);
        f.failed |= !stored;
        if f.remaining > 0 {
            return None;
        }
        let f = self.fanouts.remove(key)?;
        Some(if f.failed {
            FanoutEnd::Failed
        } else {
            FanoutEnd::Stored(f.ack_id)
        })
    }
}

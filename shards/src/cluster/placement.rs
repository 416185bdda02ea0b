//! A phone's home box.
//!
//! ## Steps
//! 1. Look the phone up in the `switchboard_homes` KV bucket (key [`super::phone_key`],
//!    value the home's box id). Found: that is its home, for good.
//! 2. Not found, and the frame may create an account (Register, LoadTestLogin): choose a
//!    home by rendezvous hashing over the live boxes ([`choose`]) and record it with KV
//!    `create`, which succeeds for exactly one writer.
//! 3. `create` lost a race (another box recorded a home first): read the winner's record.
//!
//! Why it is safe: a home is written once, with `create`, so two boxes racing agree on the
//! first writer's choice; nothing here ever overwrites or deletes a home, so a box joining
//! or leaving moves nobody (only new phones see the new set of boxes). Rendezvous hashing
//! only spreads new phones evenly; correctness never depends on two boxes choosing alike.
//!
//! This module owns the choice and the record; it must not touch membership or the shards.

use async_nats::jetstream::kv;

use super::phone_key;

/// The bucket of homes.
pub const HOMES_BUCKET: &str = "switchboard_homes";

/// The live box that rendezvous hashing gives `phone`: the one with the highest score.
/// `None` when no box is live.
pub fn choose<'a>(phone: &str, live: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    live.into_iter().max_by_key(|b| (score(b, phone), *b))
}

/// The weight of box `box_id` for `phone`: FNV-1a over both (a 0 byte between), then a
/// 64-bit finaliser so that close inputs spread.
fn score(box_id: &str, phone: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in box_id.bytes().chain([0]).chain(phone.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finaliser.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Why a home could not be found or recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlaceError {
    /// The KV bucket did not answer.
    #[error("homes bucket: {0}")]
    Kv(String),
    /// The phone needs a home and no box is live (not even this one: it is not in the
    /// members bucket yet).
    #[error("no live box to place a new phone on")]
    NoLiveBox,
}

/// A phone's home as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// The home's box id.
    pub box_id: String,
    /// This look-up recorded it (a new phone).
    pub created: bool,
}

/// Steps 1-3: the home of `phone`, or `None` if it has none and `create` is false.
/// `live` is the live boxes now.
pub async fn home(
    homes: &kv::Store,
    phone: &str,
    create: bool,
    live: Vec<String>,
) -> Result<Option<Home>, PlaceError> {
    let key = phone_key(phone);
    let found = |box_id| Home {
        box_id,
        created: false,
    };
    if let Some(v) = get(homes, &key).await? {
        return Ok(Some(found(v)));
    }
    if !create {
        return Ok(None);
    }
    let chosen = choose(phone, live.iter().map(String::as_str))
        .ok_or(PlaceError::NoLiveBox)?
        .to_string();
    match homes.create(&key, chosen.clone().into()).await {
        Ok(_) => Ok(Some(Home {
            box_id: chosen,
            created: true,
        })),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => get(homes, &key)
            .await?
            .map(|v| Some(found(v)))
            .ok_or_else(|| PlaceError::Kv(format!("{key}: exists but reads as absent"))),
        Err(e) => Err(PlaceError::Kv(e.to_string())),
    }
}

/// What [`claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// Recorded now: `phone`'s home is the claiming box.
    Now,
    /// Its home was the claiming box already.
    Already,
    /// Its home is another box (named).
    Elsewhere(String),
}

/// Records `box_id` as `phone`'s home unless it has one (KV `create`: never moves a home).
pub async fn claim(homes: &kv::Store, phone: &str, box_id: &str) -> Result<Claimed, PlaceError> {
    let key = phone_key(phone);
    match homes.create(&key, box_id.to_string().into()).await {
        Ok(_) => Ok(Claimed::Now),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => match get(homes, &key).await? {
            Some(home) if home == box_id => Ok(Claimed::Already),
            Some(home) => Ok(Claimed::Elsewhere(home)),
            None => Err(PlaceError::Kv(format!("{key}: exists but reads as absent"))),
        },
        Err(e) => Err(PlaceError::Kv(e.to_string())),
    }
}

async fn get(homes: &kv::Store, key: &str) -> Result<Option<String>, PlaceError> {
    match homes.get(key).await {
        Ok(Some(v)) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
        Ok(None) => Ok(None),
        Err(e) => Err(PlaceError::Kv(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phones() -> impl Iterator<Item = String> {
        (0..3000).map(|i| format!("+1555{i:07}"))
    }

    #[test]
    fn no_live_box_places_nobody() {
        assert_eq!(choose("+15550000000", []), None);
    }

    #[test]
    fn phones_spread_over_the_boxes() {
        let boxes = ["a", "b", "c"];
        let mut n = [0usize; 3];
        for p in phones() {
            let b = choose(&p, boxes).unwrap();
            n[boxes.iter().position(|x| *x == b).unwrap()] += 1;
        }
        for c in n {
            assert!((800..=1200).contains(&c), "{n:?}");
        }
    }

    #[test]
    fn a_box_joining_takes_only_a_share_and_a_box_leaving_gives_only_its_own() {
        let three = ["a", "b", "c"];
        let four = ["a", "b", "c", "d"];
        let mut moved = 0;
        for p in phones() {
            let before = choose(&p, three).unwrap();
            let after = choose(&p, four).unwrap();
            if before != after {
                assert_eq!(after, "d", "a join only ever chooses the new box");
                moved += 1;
            }
            let without_b = choose(&p, ["a", "c"]).unwrap();
            if before != "b" {
                assert_eq!(without_b, before, "a leave only moves the leaver's phones");
            }
        }
        assert!((500..=1000).contains(&moved), "{moved} of 3000 moved to d");
    }

    #[test]
    fn the_order_boxes_are_listed_in_does_not_matter() {
        for p in phones().take(200) {
            assert_eq!(choose(&p, ["a", "b", "c"]), choose(&p, ["c", "a", "b"]));
        }
    }
}

//! Where things live: which shard is the home of a phone number or an id, and how ids are
//! made. Pure functions; no state.
//!
//! - A user's home is `fnv1a(phone) % shards`: stable across restarts with the same shard
//!   count. (Changing the shard count needs a re-home of the logs; not supported yet, so
//!   `data_layout` pins a data directory to the count it was written with.)
//! - Server ids (messages, receipts, users, groups) are `box << 58 | shard << 48 | sequence`,
//!   so an id names the shard that made it (a group's home is the shard in its id) and, in a
//!   cluster, the box (`cluster/box_number.rs`: 1..=63, claimed once per box; 0 for a box
//!   alone, so every id issued before a box joined keeps its meaning). Two boxes never issue
//!   the same id. Sequences start, after a
//!   restart, above both the largest id replayed from the log and a clock-derived floor, so
//!   an id is never issued twice even for ids that were never persisted.
//! - Ids are exposed before they are durable (a message is delivered before its record is
//!   written, and an item acked first is never written), so the log also holds a
//!   **reservation**: an id mark `ID_RESERVE_BLOCK` ahead of the next id, renewed when half
//!   of it is used, written in the batch of the event that renews it. A restart starts above
//!   the last durable reservation, hence above every id a phone may have seen, whatever the
//!   clock did and however fast ids were issued (as long as the log keeps up with half a
//!   block: 512 K ids).

use proto::ids::ShardId;

/// Bits of an id below the shard number.
pub const ID_SEQUENCE_BITS: u32 = 48;
/// Bits of an id for the shard number (shards of a box: at most 1,024).
pub const ID_SHARD_BITS: u32 = 10;
/// Where an id's box number starts: above the shard number.
pub const ID_BOX_SHIFT: u32 = ID_SEQUENCE_BITS + ID_SHARD_BITS;
/// The largest box number an id holds (6 bits; 0 is a box alone): clusters of up to 63 boxes.
pub const BOX_NUMBER_MAX: u8 = (1 << (64 - ID_BOX_SHIFT)) - 1;
/// Milliseconds since 2025-01-01T00:00:00Z are shifted up by this much to seed sequences.
pub const ID_CLOCK_SHIFT: u32 = 8;
/// The epoch of the clock seed (2025-01-01 in Unix ms).
pub const ID_EPOCH_MS: u64 = 1_735_689_600_000;

/// A phone number as an integer: the digits of its E.164 form (`+`, then 8..=15 digits, the
/// first not 0, so the digits alone are unique), 8 bytes instead of a `String`. Parsed once
/// where a phone enters the state; `Display` writes the E.164 form back.
/// Never 0 (an E.164 number's first digit is not 0), so `Option<Phone>` is 8 bytes too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Phone(std::num::NonZeroU64);

impl Phone {
    /// The phone `s` names, if it is E.164 (every phone past `proto::validate` is).
    pub fn parse(s: &str) -> Option<Phone> {
        // One pass, no `str::parse` (this runs several times per message): at most 15
        // digits, so the value fits a u64 without overflow checks.
        let digits = s.strip_prefix('+')?.as_bytes();
        let len_ok = (proto::limits::PHONE_DIGITS_MIN..=proto::limits::PHONE_DIGITS_MAX)
            .contains(&digits.len());
        if !len_ok || digits[0] == b'0' {
            return None;
        }
        let mut n: u64 = 0;
        for &b in digits {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            n = n * 10 + u64::from(d);
        }
        std::num::NonZeroU64::new(n).map(Phone)
    }

    /// The E.164 form (`+` and the digits), written without the formatting machinery.
    pub fn to_e164(self) -> String {
        let mut buf = [0u8; E164_BYTES_MAX];
        let s = self.write_e164(&mut buf);
        s.to_owned()
    }

    /// Appends the E.164 form to `out`.
    pub fn write_e164_into(self, out: &mut Vec<u8>) {
        let mut buf = [0u8; E164_BYTES_MAX];
        out.extend_from_slice(self.write_e164(&mut buf).as_bytes());
    }

    /// The E.164 form, written into `buf` (no allocation).
    pub fn e164_in(self, buf: &mut [u8; E164_BYTES_MAX]) -> &str {
        self.write_e164(buf)
    }

    /// Writes the E.164 form at the end of `buf`; returns it.
    fn write_e164(self, buf: &mut [u8; E164_BYTES_MAX]) -> &str {
        let mut n = self.0.get();
        let mut at = buf.len();
        while n > 0 {
            at -= 1;
            buf[at] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        at -= 1;
        buf[at] = b'+';
        // Only ASCII digits and '+' were written.
        std::str::from_utf8(&buf[at..]).expect("ASCII")
    }

    /// The digits as a number.
    pub fn get(self) -> u64 {
        self.0.get()
    }

    /// Bytes of the E.164 form (`+` and the digits).
    pub fn e164_len(self) -> usize {
        self.0.ilog10() as usize + 2
    }
}

/// Bytes of the longest E.164 form a `Phone` holds: `+` and up to 20 digits (any u64).
pub const E164_BYTES_MAX: usize = 21;

impl std::fmt::Display for Phone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; E164_BYTES_MAX];
        f.write_str(self.write_e164(&mut buf))
    }
}

/// A phone as the tables and handlers take it: a [`Phone`], or its E.164 text (parsed
/// there, `None` when it is not E.164). Lets a caller that holds a `Phone` skip the parse.
pub trait AsPhone {
    /// The phone, if this names one.
    fn as_phone(&self) -> Option<Phone>;
}

impl AsPhone for Phone {
    fn as_phone(&self) -> Option<Phone> {
        Some(*self)
    }
}

impl AsPhone for str {
    fn as_phone(&self) -> Option<Phone> {
        Phone::parse(self)
    }
}

impl AsPhone for String {
    fn as_phone(&self) -> Option<Phone> {
        Phone::parse(self)
    }
}

/// Through a reference, whatever the referent names (`&Phone`, `&str`, `&String`, …).
impl<T: AsPhone + ?Sized> AsPhone for &T {
    fn as_phone(&self) -> Option<Phone> {
        (**self).as_phone()
    }
}

impl AsPhone for Option<Phone> {
    fn as_phone(&self) -> Option<Phone> {
        *self
    }
}

/// The home shard of `phone`: [`home_of_phone`] of its E.164 form, printed on the stack.
pub fn home_of(phone: Phone, shards: usize) -> ShardId {
    let mut buf = [0u8; E164_BYTES_MAX];
    home_of_phone(phone.e164_in(&mut buf), shards)
}

/// The home shard of a phone number.
pub fn home_of_phone(phone: &str, shards: usize) -> ShardId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in phone.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ShardId((h % shards as u64) as usize)
}

/// The shard that issued `id` (a group's home).
pub fn home_of_id(id: u64) -> ShardId {
    ShardId(((id >> ID_SEQUENCE_BITS) & ((1 << ID_SHARD_BITS) - 1)) as usize)
}

/// The number of the box that issued `id` (0: a box alone).
pub fn box_of_id(id: u64) -> u8 {
    (id >> ID_BOX_SHIFT) as u8
}

/// Sequences a reservation covers ahead of the next id.
pub const ID_RESERVE_BLOCK: u64 = 1 << 20;

/// Issues ids for one shard.
#[derive(Debug)]
pub struct IdAllocator {
    shard: u64,
    /// This box's number in its cluster (0: alone), at [`ID_BOX_SHIFT`].
    box_number: u64,
    next: u64,
    /// Sequences below this are covered by a reservation recorded in the log (or on its
    /// way there); 0 until the first one.
    reserved: u64,
}

impl IdAllocator {
    /// Starts above `max_seen` (from the log) and above the clock floor for `now_ms`.
    pub fn new(shard: ShardId, max_seen_seq: u64, now_ms: u64) -> Self {
        let floor = now_ms.saturating_sub(ID_EPOCH_MS) << ID_CLOCK_SHIFT;
        let next = (max_seen_seq + 1).max(floor);
        assert!(next < 1 << ID_SEQUENCE_BITS, "id sequence space exhausted");
        IdAllocator {
            shard: shard.0 as u64,
            box_number: 0,
            next,
            reserved: 0,
        }
    }

    /// Ids issued from now on name box `number` (at most [`BOX_NUMBER_MAX`]; set before the
    /// log is replayed, so that replay recognises the box's own ids).
    pub fn set_box(&mut self, number: u8) {
        debug_assert!(number <= BOX_NUMBER_MAX);
        self.box_number = u64::from(number.min(BOX_NUMBER_MAX));
    }

    /// A fresh id.
    pub fn issue(&mut self) -> u64 {
        let id = (self.box_number << ID_BOX_SHIFT) | (self.shard << ID_SEQUENCE_BITS) | self.next;
        self.next += 1;
        id
    }

    /// The sequence the next id gets.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The mark a snapshot records: above every id issued and every reservation made.
    pub fn mark(&self) -> u64 {
        self.next.max(self.reserved)
    }

    /// A new reservation to record, when less than half a block is left: the caller writes
    /// it as an id mark record.
    pub fn reservation_due(&mut self) -> Option<u64> {
        if self.next + ID_RESERVE_BLOCK / 2 <= self.reserved {
            return None;
        }
        self.reserved = self.next + ID_RESERVE_BLOCK;
        Some(self.reserved)
    }

    /// Keeps future sequences at or above `seq` (replay of a high-water mark).
    pub fn observe_next_seq(&mut self, seq: u64) {
        self.next = self.next.max(seq);
    }

    /// Keeps future ids above `id` (replay): one this shard issued, as this box or before
    /// the box joined its cluster (box 0). Another box's ids (a group's, a message's) are
    /// its own sequence, not this one's.
    pub fn observe(&mut self, id: u64) {
        let seq = id & ((1 << ID_SEQUENCE_BITS) - 1);
        let from_box = u64::from(box_of_id(id));
        let ours = from_box == 0 || from_box == self.box_number;
        if ours && home_of_id(id).0 as u64 == self.shard && seq >= self.next {
            self.next = seq + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homes_are_stable_and_spread() {
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            let p = format!("+1555{i:07}");
            let h = home_of_phone(&p, 4);
            assert_eq!(h, home_of_phone(&p, 4));
            counts[h.0] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "uneven: {counts:?}");
    }

    #[test]
    fn phones_parse_to_their_digits_and_print_back() {
        for p in ["+15550000001", "+44123456", "+999999999999999"] {
            assert_eq!(Phone::parse(p).map(|x| x.to_string()).as_deref(), Some(p));
            assert_eq!(Phone::parse(p).map(Phone::e164_len), Some(p.len()));
        }
        for bad in ["15550000001", "+0555000000", "+1", "+1555000000a"] {
            assert_eq!(Phone::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn parse_takes_exactly_what_is_e164_takes_and_prints_as_display_does() {
        let cases = [
            "+",
            "+1234567",
            "+12345678",
            "+123456789012345",
            "+1234567890123456",
            "+1555 000000",
            "+1555-000000",
            "++15550000001",
            "+١٢٣٤٥٦٧٨٩",
            "+15550000001\n",
            "+9",
            "+10000000",
        ];
        for s in cases {
            let p = Phone::parse(s);
            assert_eq!(p.is_some(), proto::validate::is_e164(s), "{s:?}");
            if let Some(p) = p {
                assert_eq!(p.to_e164(), s);
                assert_eq!(p.to_e164(), p.to_string());
            }
        }
    }

    #[test]
    fn ids_name_their_shard_and_never_repeat_across_restarts() {
        let now = ID_EPOCH_MS + 1_000;
        let mut a = IdAllocator::new(ShardId(3), 0, now);
        let first = a.issue();
        let second = a.issue();
        assert_eq!(home_of_id(first), ShardId(3));
        assert!(second > first);
        // Restart a millisecond later without having persisted anything.
        let mut b = IdAllocator::new(ShardId(3), 0, now + 1);
        assert!(b.issue() > second);
        // Replay of a larger id pushes the sequence past it.
        let mut c = IdAllocator::new(ShardId(3), 0, now);
        c.observe(first + 1000);
        assert!(c.issue() > first + 1000);
    }

    #[test]
    fn ids_name_their_box_above_their_shard_and_ids_of_a_box_alone_keep_their_meaning() {
        let now = ID_EPOCH_MS + 1_000;
        let mut alone = IdAllocator::new(ShardId(1023), 0, now);
        let old = alone.issue();
        assert_eq!((box_of_id(old), home_of_id(old)), (0, ShardId(1023)));
        let mut boxed = IdAllocator::new(ShardId(1023), 0, now);
        boxed.set_box(BOX_NUMBER_MAX);
        boxed.observe(old); // replay of an id from before the box joined
        let new = boxed.issue();
        assert_eq!((box_of_id(new), home_of_id(new)), (63, ShardId(1023)));
        assert_eq!(
            new & ((1 << ID_SEQUENCE_BITS) - 1),
            (old & ((1 << ID_SEQUENCE_BITS) - 1)) + 1
        );
        // The same shard of two boxes started at once: never the same id.
        let mut other = IdAllocator::new(ShardId(1023), 0, now);
        other.set_box(2);
        assert_ne!(other.issue(), boxed.issue());
        // Another box's id is not this shard's sequence.
        let mut c = IdAllocator::new(ShardId(5), 0, now);
        c.set_box(1);
        let before = c.next_seq();
        c.observe((2 << ID_BOX_SHIFT) | (5 << ID_SEQUENCE_BITS) | (before + 1_000));
        assert_eq!(c.next_seq(), before);
    }
}

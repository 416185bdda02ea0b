//! Start-up replay, streamed: the shard log is read through a window of at most
//! [`REPLAY_WINDOW_BYTES`] and its records are applied one at a time, so what replay
//! buffers does not grow with the log (the state it rebuilds does, legitimately).
//!
//! Steps, and why each is safe:
//! 1. **Facts** ([`replay_log`]'s first pass, [`ShardState::replay_fact`]): every record is
//!    read, checked (length, checksum, kind) and applied in order, except queued items,
//!    which are only checked. Removals are remembered by id. This pass finds the end of the
//!    good records and classifies what follows ([`record::Tail`]), exactly as a replay
//!    from memory would: the same frame checks run on the same offsets.
//! 2. **Items** ([`ShardState::replay_item`]): the items before that end, read again, are
//!    queued unless removed or already queued. Every removal is known before the first item
//!    is queued, as when the whole log was held at once: a queue never holds, even for a
//!    moment, an item that a later tombstone removes, so replay never meets a queue limit
//!    that the live shard did not.
//!
//! A record straddling the window's end moves the window to the part that did not fit, read
//! again from the file (positioned reads: nothing is copied, at most one record re-read).
//! This module owns the window and the replay order; the framing and its damage rules are
//! [`crate::durable::record`]'s. The file is read through [`ReadAt`], which the server
//! implements over the journal file (blocking reads, once, before the shard serves).

use std::collections::{HashMap, HashSet};

use crate::durable::record::{self, ItemRec, LogBytes, Record, Scan};
use crate::state::home::Phone;
use crate::state::ShardState;
use crate::tables::queues::Item;

/// Bytes of a log that replay holds at once.
pub const REPLAY_WINDOW_BYTES: usize = 4 * 1024 * 1024;

// A whole record always fits the window.
const _: () =
    assert!(record::RECORD_HEADER_BYTES + record::RECORD_BYTES_MAX <= REPLAY_WINDOW_BYTES);

/// A file read at offsets: what a [`Window`] reads a journal through.
pub trait ReadAt {
    /// Why a read failed.
    type Error;
    /// The file's length in bytes.
    fn len(&self) -> u64;
    /// Whether the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` with the bytes at `at` (the range lies within the file).
    fn read_at(&self, buf: &mut [u8], at: u64) -> Result<(), Self::Error>;
}

/// A journal read through a window of at most `cap` bytes.
#[derive(Debug)]
pub struct Window<R> {
    reader: R,
    /// The bytes at `start..start + filled`; allocated once, `min(cap, log length)` long.
    buf: Vec<u8>,
    start: u64,
    filled: usize,
    data_end: Option<u64>,
    /// Reads done (each at most `buf.len()` bytes).
    pub reads: u64,
}

impl<R: ReadAt> Window<R> {
    /// A window of at most `cap` bytes over `reader` ([`REPLAY_WINDOW_BYTES`] in service).
    pub fn new(reader: R, cap: usize) -> Window<R> {
        let cap = cap.max(record::RECORD_HEADER_BYTES + record::RECORD_BYTES_MAX);
        let size = usize::try_from(reader.len()).map_or(cap, |len| len.min(cap));
        Window {
            reader,
            buf: vec![0; size],
            start: 0,
            filled: 0,
            data_end: None,
            reads: 0,
        }
    }

    /// Bytes the window has allocated (never more than its cap).
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }
}

impl<R: ReadAt> LogBytes for Window<R> {
    type Error = R::Error;

    fn len(&self) -> u64 {
        self.reader.len()
    }

    fn get(&mut self, at: u64, n: usize) -> Result<Option<&[u8]>, R::Error> {
        let Some(end) = at.checked_add(n as u64) else {
            return Ok(None);
        };
        if end > self.reader.len() || n > self.buf.len() {
            return Ok(None);
        }
        if at < self.start || end > self.start + self.filled as u64 {
            let want = (self.reader.len() - at).min(self.buf.len() as u64) as usize;
            self.reader.read_at(&mut self.buf[..want], at)?;
            self.reads += 1;
            self.start = at;
            self.filled = want;
        }
        let from = (at - self.start) as usize;
        Ok(Some(&self.buf[from..from + n]))
    }

    fn data_end(&mut self) -> Result<u64, R::Error> {
        if let Some(end) = self.data_end {
            return Ok(end);
        }
        let mut end = self.reader.len();
        let found = loop {
            if end == 0 {
                break 0;
            }
            let at = end.saturating_sub(self.buf.len() as u64);
            let n = (end - at) as usize;
            // `at..end` lies within the log and is at most the window long.
            let chunk = self.get(at, n)?.expect("within the log and the window");
            if let Some(p) = chunk.iter().rposition(|&b| b != 0) {
                break at + p as u64 + 1;
            }
            end = at;
        };
        self.data_end = Some(found);
        Ok(found)
    }
}

/// What replay remembers between its passes: bookkeeping per record, never a record.
#[derive(Debug, Default)]
pub struct Replaying {
    /// Items removed: server id → whose queue it was removed from.
    removed: HashMap<u64, Phone>,
    /// Items queued so far (a snapshot's item may come again after it, `snapshot.rs`).
    seen: HashSet<u64>,
}

impl ShardState {
    /// Applies one record of the first pass; queued items wait for [`Self::replay_item`].
    pub fn replay_fact(&mut self, r: &mut Replaying, rec: Record) {
        match rec.kind {
            Some(record::record::Kind::Account(a)) => {
                self.ids.observe(a.user_id);
                self.registry.apply(&a);
            }
            Some(record::record::Kind::Item(_)) | None => {}
            Some(record::record::Kind::Removed(x)) => {
                self.ids.observe(x.id);
                if let Some(user) = x.user {
                    r.removed.insert(x.id, user);
                }
            }
            Some(record::record::Kind::IdMark(m)) => self.ids.observe_next_seq(m.next_seq),
            Some(record::record::Kind::Group(g)) => {
                self.ids.observe(g.group_id);
                self.groups.apply(&g);
            }
            Some(record::record::Kind::Dedupe(d)) => {
                self.ids.observe(d.server_msg_id);
                self.dedupe.insert_durable(&d);
            }
        }
    }

    /// Queues one item of the second pass (replayed items are durable); the first copy of
    /// an id is kept, in its place in the queue.
    pub fn replay_item(&mut self, r: &mut Replaying, i: ItemRec) {
        self.ids.observe(i.id);
        if !r.seen.insert(i.id) {
            return;
        }
        if i.client_msg_id != 0 {
            self.dedupe.insert_from_item(&i);
        }
        if i.user.is_some_and(|u| r.removed.get(&i.id) == Some(&u)) {
            return;
        }
        // No frame: a send to a number nobody has, kept for dedupe only (`route.rs`).
        if i.frame.is_empty() {
            return;
        }
        if let Some(item) = Item::from_record(&i) {
            // Replay never exceeds what was accepted before, but a lowered limit could:
            // keep what is there rather than drop acknowledged messages.
            let _ = self.queues.restore(i.user, item);
        }
    }

    /// Rebuilds state from records held in memory (tests and the simulator), in the same
    /// two passes as [`replay_log`].
    pub fn replay(&mut self, records: Vec<Record>) {
        let mut r = Replaying::default();
        let mut items = Vec::new();
        for rec in records {
            match rec.kind {
                Some(record::record::Kind::Item(i)) => items.push(i),
                _ => self.replay_fact(&mut r, rec),
            }
        }
        for i in items {
            self.replay_item(&mut r, i);
        }
    }
}

/// Replays the log read through `src` into `state`, in the two passes of the module header.
pub fn replay_log<B: LogBytes>(src: &mut B, state: &mut ShardState) -> Result<Scan, B::Error> {
    let mut r = Replaying::default();
    let scan = record::replay_with(src, |rec| state.replay_fact(&mut r, rec))?;
    record::items_with(src, scan.valid_len, |i| state.replay_item(&mut r, i))?;
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::record::{encode, record::Kind, AccountRec, GroupRec, RemovedRec, Tail};
    use prost::Message as _;

    /// The smallest window there is: one largest record.
    const CAP: usize = record::RECORD_HEADER_BYTES + record::RECORD_BYTES_MAX;

    fn item(user: u64, id: u64, body_len: usize) -> Record {
        use proto::v1::{server_frame, Message as Msg, ServerFrame};
        let sender = format!("+1555100{:04}", id % 7_000);
        let frame = ServerFrame {
            kind: Some(server_frame::Kind::Message(Msg {
                from: sender.clone(),
                server_msg_id: id,
                body: vec![(id % 251) as u8 | 1; body_len],
                ..Default::default()
            })),
        }
        .encode_to_vec();
        Record {
            kind: Some(Kind::Item(ItemRec {
                user: crate::state::home::Phone::parse(&format!("+1555000{user:04}")),
                id,
                frame,
                sender: crate::state::home::Phone::parse(&sender),
                client_msg_id: id,
                group_id: 0,
                sender_device: 0,
            })),
        }
    }

    fn removed(user: u64, id: u64) -> Record {
        Record {
            kind: Some(Kind::Removed(RemovedRec {
                user: crate::state::home::Phone::parse(&format!("+1555000{user:04}")),
                id,
            })),
        }
    }

    /// About 3 MiB of accounts, groups, items of 0–70 KB and removals: records of every size
    /// end windows of [`CAP`] at every place, most of them inside a record.
    fn big_log() -> Vec<u8> {
        let mut log = Vec::new();
        let mut x: u64 = 0x9e37_79b9;
        let mut id = 1u64;
        while log.len() < 3 * 1024 * 1024 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let r = match (x >> 33) % 5 {
                0 => Record {
                    kind: Some(Kind::Account(AccountRec {
                        phone: format!("+1555000{:04}", id % 50),
                        user_id: id,
                        key_hash: vec![3; 32],
                    })),
                },
                1 => Record {
                    kind: Some(Kind::Group(GroupRec {
                        group_id: id,
                        name: "g".into(),
                        admin: "+15550000001".into(),
                        members: (1..=(x >> 40) % 200 + 1)
                            .map(|m| format!("+1555000{m:04}"))
                            .collect(),
                    })),
                },
                2 => removed(id % 50, id - 1),
                _ => item(id % 50, id, ((x >> 20) % 70_000) as usize),
            };
            encode(&r, &mut log);
            id += 1;
        }
        log
    }

    /// A journal held in memory, read at offsets like the file.
    #[derive(Debug)]
    struct InMemory(Vec<u8>);

    impl ReadAt for InMemory {
        type Error = std::convert::Infallible;
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_at(&self, buf: &mut [u8], at: u64) -> Result<(), Self::Error> {
            let at = at as usize;
            buf.copy_from_slice(&self.0[at..at + buf.len()]);
            Ok(())
        }
    }

    fn window_over(bytes: &[u8], _name: &str) -> Window<InMemory> {
        Window::new(InMemory(bytes.to_vec()), CAP)
    }

    fn state() -> ShardState {
        let settings = crate::state::ServiceSettings::default();
        let random: crate::state::RandomSource = Box::new(|b: &mut [u8]| b.fill(7));
        ShardState::new(proto::ids::ShardId(0), 1, settings, random, 0)
    }

    #[test]
    fn a_log_many_windows_long_replays_as_from_memory_holding_one_window() {
        let log = big_log();
        let mut w = window_over(&log, "big");
        let mut streamed = Vec::new();
        let scan = record::replay_with(&mut w, |r| streamed.push(r)).unwrap();
        let whole = record::replay(&log);
        assert_eq!(scan.tail, Tail::Clean);
        assert_eq!(scan.valid_len, log.len() as u64);
        assert_eq!(streamed.len() as u64, scan.records);
        assert!(streamed == whole.records, "the same records, in order");
        assert!(
            w.buffer_capacity() <= CAP,
            "{} > {CAP}",
            w.buffer_capacity()
        );
        assert!(
            w.reads >= (log.len() / CAP) as u64,
            "{} reads for {} windows' worth",
            w.reads,
            log.len() / CAP
        );

        // The state two passes rebuild is the one the records rebuild from memory.
        let mut from_window = state();
        let mut w = window_over(&log, "big-state");
        replay_log(&mut w, &mut from_window).unwrap();
        let mut from_memory = state();
        from_memory.replay(whole.records);
        assert!(from_memory.queued_total() > 0);
        assert_eq!(from_window.queued_total(), from_memory.queued_total());
        assert_eq!(from_window.queues.bytes(), from_memory.queues.bytes());
        // Each user's queue in order (users in any order).
        let queue = |s: &ShardState| {
            let mut q: Vec<_> = s
                .queues
                .iter()
                .map(|(u, i)| (u.to_string(), i.id))
                .collect();
            q.sort_by(|a, b| a.0.cmp(&b.0));
            q
        };
        assert_eq!(queue(&from_window), queue(&from_memory));
        assert!(w.buffer_capacity() <= CAP);
    }

    #[test]
    fn damage_read_through_a_window_is_classified_and_salvaged_as_from_memory() {
        let log = big_log();
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        cases.push(("torn", log[..log.len() - 1_000].to_vec()));
        let mut zeros = log.clone();
        zeros.extend_from_slice(&vec![0; 3 * CAP]);
        cases.push(("zeros", zeros));
        for at in [100, log.len() / 3, log.len() / 2 + 7, log.len() - 50] {
            let mut bad = log.clone();
            bad[at] ^= 0x40;
            cases.push(("flip", bad));
        }
        let mut huge_len = log.clone();
        let third = record::replay(&log[..log.len() / 3]).valid_len as usize;
        huge_len[third..third + 4].copy_from_slice(&0x7fff_u32.to_be_bytes());
        cases.push(("length", huge_len));
        for (i, (what, bytes)) in cases.iter().enumerate() {
            let whole = record::replay(bytes);
            let mut w = window_over(bytes, &format!("damage-{i}"));
            let scan = record::replay_with(&mut w, |_| {}).unwrap();
            assert_eq!(scan.tail, whole.tail, "{what} {i}");
            assert_eq!(scan.valid_len, whole.valid_len, "{what} {i}");
            assert_ne!(scan.tail, Tail::Clean, "{what} {i}");
            let mut kept = Vec::new();
            let (records, skipped) = record::salvage_with(&mut w, |f| {
                kept.extend_from_slice(f);
                Ok(())
            })
            .unwrap();
            let s = record::salvage(bytes);
            assert_eq!((records, &skipped), (s.records, &s.skipped), "{what} {i}");
            assert!(kept == s.kept, "{what} {i}: the same bytes kept");
            assert!(w.buffer_capacity() <= CAP);
        }
    }

    #[test]
    fn a_tombstone_written_after_later_items_never_costs_them_their_place() {
        use crate::state::limits::QUEUE_ITEMS_PER_USER_MAX;
        // A full queue was acked, a new message came, and the lazy tombstones were written
        // after it: at no moment did the live queue exceed its limit.
        let n = QUEUE_ITEMS_PER_USER_MAX as u64;
        let mut log = Vec::new();
        for id in 1..=n + 1 {
            encode(&item(1, id, 1), &mut log);
        }
        for id in 1..=n {
            encode(&removed(1, id), &mut log);
        }
        let mut s = state();
        let mut w = window_over(&log, "lazy");
        replay_log(&mut w, &mut s).unwrap();
        assert_eq!(s.queued_total(), 1, "the last message is kept");
        assert!(s.queues.contains("+15550000001", n + 1));
    }
}

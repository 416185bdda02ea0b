//! Unit tests of `journal.rs`: batching, failures and retries, cancelled items, lazy
//! tombstones, compaction, and the lists and buffers handed back.

use super::*;
use crate::durable::record::tests::item;
use crate::durable::record::{record, AccountRec, RemovedRec};
use crate::state::effect::Effect;

/// A stand-in for the log file: the journal only passes it around.
#[derive(Debug, PartialEq)]
struct File;

/// A record something waits for.
fn rec(id: u64) -> Record {
    Record {
        kind: Some(record::Kind::Account(AccountRec {
            phone: "+15550000001".into(),
            user_id: id,
            key_hash: vec![1; 32],
        })),
    }
}

fn removed(id: u64) -> Record {
    Record {
        kind: Some(record::Kind::Removed(RemovedRec {
            user: crate::state::home::Phone::parse("+15550000001"),
            id,
        })),
    }
}

fn push(phone: &str) -> AfterCommit {
    AfterCommit::Effect(Effect::Push {
        phone: phone.into(),
        user_id: 0,
    })
}

fn phones(after: &[AfterCommit]) -> Vec<String> {
    after
        .iter()
        .map(|a| match a {
            AfterCommit::Effect(Effect::Push { phone, .. }) => phone.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn encoded(ids: &[u64]) -> Vec<u8> {
    encoded_records(&ids.iter().map(|&id| rec(id)).collect::<Vec<_>>())
}

fn encoded_records(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        crate::durable::record::encode(r, &mut out);
    }
    out
}

fn append_bytes(job: Option<Job<File>>) -> Vec<u8> {
    match job {
        Some(Job::Append(File, bytes)) => bytes,
        _ => panic!("expected an append"),
    }
}

#[test]
fn effects_wait_for_their_batch_and_batches_group() {
    let mut j = Journal::new(0);
    // Nothing pending and nothing in flight: an effect without records goes at once.
    assert_eq!(j.add(vec![], vec![push("a")]).len(), 1);
    // With records, it waits; no file yet, so no job either.
    assert!(j.add(vec![rec(1)], vec![push("b")]).is_empty());
    assert!(j.next_append().is_none());
    assert!(j.add(vec![rec(2)], vec![push("c")]).is_empty());
    assert!(
        j.take_unblocked().is_empty(),
        "records are pending: nothing unblocks"
    );
    j.opened(File, 0);
    assert_eq!(append_bytes(j.next_append()), encoded(&[1, 2]));
    assert_eq!(phones(&j.finished(File, 10, Outcome::Appended)), ["b", "c"]);
    assert_eq!(j.commits(), 1);
}

/// Issue 27: the adapter's lists come back empty with their room, except effects that
/// need not wait, which stay for it to release.
#[test]
fn add_from_empties_the_callers_lists_and_leaves_what_need_not_wait() {
    let mut j = Journal::new(0);
    let (mut records, mut after) = (Vec::with_capacity(4), Vec::with_capacity(4));
    after.push(push("now"));
    assert!(
        j.add_from(&mut records, &mut after),
        "nothing pending: goes at once"
    );
    assert_eq!(phones(&after), ["now"]);
    after.clear();
    records.push(rec(1));
    after.push(push("waits"));
    assert!(!j.add_from(&mut records, &mut after));
    assert!(records.is_empty() && after.is_empty());
    assert!(
        records.capacity() >= 4 && after.capacity() >= 4,
        "room kept"
    );
    j.opened(File, 0);
    assert_eq!(append_bytes(j.next_append()), encoded(&[1]));
    assert_eq!(phones(&j.finished(File, 10, Outcome::Appended)), ["waits"]);
}

#[test]
fn a_failed_append_keeps_its_batch_in_front_and_releases_nothing_until_retried() {
    let mut j = Journal::new(0);
    j.opened(File, 0);
    j.add(vec![rec(1)], vec![push("first")]);
    assert_eq!(append_bytes(j.next_append()), encoded(&[1]));
    // While it is in flight the next batch gathers.
    j.add(vec![rec(2)], vec![push("second")]);
    assert!(j.finished(File, 0, Outcome::AppendFailed).is_empty());
    assert_eq!(j.failures(), 1);
    assert_eq!(j.pending_bytes(), encoded(&[1, 2]).len());
    // Retry scheduled: no job, and an effect without records must wait too.
    assert!(j.schedule_retry());
    assert!(!j.schedule_retry(), "one retry at a time");
    assert!(j.next_append().is_none());
    assert!(j.add(vec![], vec![push("third")]).is_empty());
    assert!(j.take_unblocked().is_empty());
    j.retry_due();
    assert_eq!(
        append_bytes(j.next_append()),
        encoded(&[1, 2]),
        "the failed batch first, in order"
    );
    assert_eq!(
        phones(&j.finished(File, 20, Outcome::Appended)),
        ["first", "second", "third"]
    );
    assert_eq!(j.pending_bytes(), 0);
}

#[test]
fn a_compaction_that_failed_before_its_rename_appends_the_batch_as_usual() {
    let mut j = Journal::new(0);
    j.opened(File, 0);
    j.add(vec![rec(1)], vec![push("a")]);
    assert!(j.compaction_due(1000, 0));
    let Some(Job::Compact(File, _)) = j.start_compaction(1000, vec![0; 10]) else {
        panic!("expected a compaction");
    };
    assert!(j.finished(File, 1000, Outcome::NotCompacted).is_empty());
    j.retry_due();
    assert_eq!(append_bytes(j.next_append()), encoded(&[1]));
    assert_eq!(phones(&j.finished(File, 1010, Outcome::Appended)), ["a"]);
}

#[test]
fn a_compaction_renamed_but_not_durable_owes_a_sync_before_anything_is_released() {
    let mut j = Journal::new(0);
    j.opened(File, 0);
    j.add(vec![rec(1)], vec![push("in-snapshot")]);
    assert!(j.compaction_due(1000, 0));
    assert!(j.start_compaction(1000, vec![0; 10]).is_some());
    assert!(j
        .finished(File, 10, Outcome::CompactedNotDurable)
        .is_empty());
    assert_eq!(j.pending_bytes(), 0, "the snapshot holds the batch");
    // Effects with no records of their own still wait for the owed sync.
    assert!(j.add(vec![], vec![push("later")]).is_empty());
    assert!(j.take_unblocked().is_empty());
    assert!(
        !j.compaction_due(10_000, 0),
        "no compaction while a sync is owed"
    );
    j.retry_due();
    assert_eq!(
        append_bytes(j.next_append()),
        Vec::<u8>::new(),
        "a sync-only job: nothing rewritten"
    );
    assert_eq!(
        phones(&j.finished(File, 10, Outcome::Appended)),
        ["in-snapshot", "later"]
    );
    assert_eq!(j.add(vec![], vec![push("now")]).len(), 1, "nothing owed");
}

#[test]
fn compaction_is_tried_when_the_log_doubles_or_the_queues_drain_and_only_if_it_pays() {
    let mut j: Journal<File> = Journal::new(100);
    j.opened(File, 0);
    assert!(!j.compaction_due(50, 0), "below the minimum");
    assert!(j.compaction_due(200, 40));
    assert!(!j.compaction_due(300, 40), "neither doubled nor drained");
    assert!(
        j.compaction_due(300, 9),
        "queues drained to under a quarter"
    );
    assert!(
        j.start_compaction(300, vec![0; 100]).is_none(),
        "a snapshot over a quarter of the log is not worth it"
    );
    assert!(j.start_compaction(400, vec![0; 100]).is_some());
}

#[test]
fn an_item_acked_before_its_batch_left_costs_no_write_and_no_tombstone() {
    let mut j = Journal::new(0);
    j.opened(File, 0);
    j.add(vec![item(1), item(2)], vec![push("a")]);
    j.add(vec![removed(1)], vec![]);
    assert_eq!(j.skipped_items(), 1);
    assert_eq!(j.pending_bytes(), encoded_records(&[item(2)]).len());
    assert_eq!(
        append_bytes(j.next_append()),
        encoded_records(&[item(2)]),
        "item 1 and its tombstone are gone; item 2 stays"
    );
    // Both acked before anything was written: nothing to write, nothing to wait for.
    j.finished(File, 10, Outcome::Appended);
    j.add(vec![item(3)], vec![push("b")]);
    assert!(j.take_unblocked().is_empty());
    j.add(vec![removed(3)], vec![]);
    assert!(!j.append_due(), "nothing left to write");
    assert_eq!(phones(&j.take_unblocked()), ["b"]);
}

#[test]
fn the_frames_of_items_cancelled_or_appended_are_handed_back_at_most_the_cap() {
    let mut j = Journal::new(0);
    j.opened(File, 0);
    j.add(vec![item(1), item(2)], vec![]);
    j.add(vec![removed(1)], vec![]);
    assert_eq!(j.spare_frames().count(), 1, "the cancelled item's");
    assert!(j.next_append().is_some());
    assert_eq!(j.spare_frames().count(), 0, "item 2's is in flight");
    j.finished(File, 10, Outcome::Appended);
    let frames: Vec<Vec<u8>> = j.spare_frames().collect();
    assert!(
        matches!(&frames[..], [f] if f.capacity() >= 3),
        "and once appended"
    );
    let ids = 10..10 + SPARE_FRAMES_MAX as u64 + 5;
    j.add(ids.clone().map(item).collect(), vec![]);
    j.add(ids.map(removed).collect(), vec![]);
    assert_eq!(j.spare_frames().count(), SPARE_FRAMES_MAX);
}

#[test]
fn the_list_of_released_effects_gathers_the_batch_after_next() {
    let mut j = Journal::new(0);
    j.opened(File, 0);
    j.add(vec![item(1)], vec![push("a"), push("b")]);
    assert!(j.next_append().is_some());
    let mut released = j.finished(File, 10, Outcome::Appended);
    assert_eq!(phones(&released), ["a", "b"]);
    released.clear();
    let room = released.as_ptr();
    j.keep_after(released);
    j.add(vec![item(2)], vec![push("c")]);
    assert!(j.next_append().is_some());
    j.add(vec![item(3)], vec![push("d")]);
    assert_eq!(j.pending_after.as_ptr(), room, "no new list for it");
    // A list grown past the cap is not kept.
    j.keep_after(Vec::with_capacity(SPARE_AFTER_MAX + 1));
    assert_eq!(j.spare_after.capacity(), 0);

    // Effects released with nothing to write (their item acked first) hand theirs back
    // too: two lists take turns.
    let mut j = Journal::new(0);
    j.opened(File, 0);
    let mut first = None;
    for id in 5..8 {
        j.add(vec![item(id)], vec![push("e")]);
        if id == 7 {
            assert_eq!(
                Some(j.pending_after.as_ptr()),
                first,
                "the first list again"
            );
        }
        j.add(vec![removed(id)], vec![]);
        let mut unblocked = j.take_unblocked();
        assert_eq!(phones(&unblocked), ["e"]);
        unblocked.clear();
        first = first.or(Some(unblocked.as_ptr()));
        j.keep_after(unblocked);
        // Nothing released, no room: the kept list stays.
        let none = j.take_unblocked();
        j.keep_after(none);
    }
}

#[test]
fn tombstones_of_written_items_ride_on_the_next_batch_or_a_requested_flush() {
    let mut j = Journal::new(0);
    j.opened(File, 0);
    j.add(vec![item(1)], vec![]);
    assert!(j.next_append().is_some());
    // Acked while its record is in flight: the tombstone is needed, but lazy.
    j.add(vec![removed(1)], vec![]);
    j.finished(File, 10, Outcome::Appended);
    assert!(j.lazy_waiting());
    assert_eq!(
        j.add(vec![], vec![push("now")]).len(),
        1,
        "nothing waits for a lazy tombstone"
    );
    assert!(!j.append_due(), "a tombstone alone starts no job");
    j.add(vec![rec(5)], vec![]);
    assert_eq!(
        append_bytes(j.next_append()),
        encoded_records(&[rec(5), removed(1)]),
        "it rides on the next batch"
    );
    j.finished(File, 20, Outcome::Appended);
    j.add(vec![removed(9)], vec![]);
    assert!(!j.append_due());
    j.request_lazy_flush();
    assert_eq!(
        append_bytes(j.next_append()),
        encoded_records(&[removed(9)])
    );
}

fn compact_bytes(job: Option<Job<File>>) -> Vec<u8> {
    match job {
        Some(Job::Compact(File, bytes)) => bytes,
        _ => panic!("expected a compaction"),
    }
}

#[test]
fn a_snapshot_built_during_appends_is_followed_by_every_batch_appended_since_it_began() {
    let mut j = Journal::new(0);
    j.opened(File, 0);
    // In flight when the snapshot begins: the state the snapshot reads already holds it.
    j.add(vec![rec(1)], vec![]);
    assert!(j.compaction_due(1000, 0));
    assert!(j.next_append().is_some());
    j.snapshot_began();
    assert!(!j.compaction_due(1_000_000, 0), "one snapshot at a time");
    j.add(vec![rec(2)], vec![push("two")]);
    j.finished(File, 10, Outcome::Appended);
    assert_eq!(j.trailing_bytes(), 0, "began before the snapshot");
    // Appended during the snapshot: kept. A failed append is kept once, when it lands.
    assert!(j.next_append().is_some());
    assert!(j.finished(File, 10, Outcome::AppendFailed).is_empty());
    assert_eq!(j.trailing_bytes(), 0, "nothing of a failed append");
    j.schedule_retry();
    assert!(!j.can_compact(), "not while a retry waits");
    j.retry_due();
    j.add(vec![rec(3)], vec![]);
    assert_eq!(append_bytes(j.next_append()), encoded(&[2, 3]));
    assert!(!j.can_compact(), "not while an append is in flight");
    assert_eq!(phones(&j.finished(File, 20, Outcome::Appended)), ["two"]);
    assert_eq!(j.trailing_bytes(), encoded(&[2, 3]).len());
    // Pending at the switch: written after them, and held in case it fails.
    j.add(vec![rec(4)], vec![push("four")]);
    assert!(j.can_compact());
    let mut want = b"SNAPSHOT".to_vec();
    want.extend(encoded(&[2, 3, 4]));
    assert_eq!(
        compact_bytes(j.start_compaction(1000, b"SNAPSHOT".to_vec())),
        want
    );
    assert!(j.finished(File, 40, Outcome::NotCompacted).is_empty());
    j.retry_due();
    assert_eq!(
        append_bytes(j.next_append()),
        encoded(&[4]),
        "a failed compaction appends what it held to the old log"
    );
    assert_eq!(phones(&j.finished(File, 50, Outcome::Appended)), ["four"]);
    assert_eq!(j.trailing_bytes(), 0, "the snapshot is over");
}

#[test]
fn a_snapshot_that_would_not_pay_is_dropped_with_what_it_kept() {
    let mut j = Journal::new(0);
    j.opened(File, 0);
    j.snapshot_began();
    j.add(vec![rec(1)], vec![]);
    assert!(j.next_append().is_some());
    j.finished(File, 10, Outcome::Appended);
    assert!(j.trailing_bytes() > 0);
    assert!(j.start_compaction(100, vec![0; 30]).is_none());
    assert_eq!(j.trailing_bytes(), 0);
    assert!(j.compaction_due(1000, 0), "another may begin");
}

#[test]
fn after_a_snapshot_that_did_not_pay_another_is_tried_once_the_queues_shrink_enough() {
    let mut j: Journal<File> = Journal::new(0);
    j.opened(File, 0);
    assert!(j.compaction_due(1000, 400));
    j.snapshot_began();
    assert!(
        j.start_compaction(1000, vec![0; 300]).is_none(),
        "300 B of 1,000 does not pay"
    );
    // Neither doubled nor drained to a quarter: only the estimate can call it.
    assert!(
        !j.compaction_due(1100, 300),
        "300 items of 300 B each would not pay"
    );
    assert!(
        !j.compaction_due(1100, 400),
        "no less queued than when it began"
    );
    assert!(
        j.compaction_due(1100, 200),
        "200 items: ~150 B, pays with room"
    );
    j.snapshot_began();
    assert!(
        j.start_compaction(1100, vec![0; 300]).is_none(),
        "it did not"
    );
    assert!(
        !j.compaction_due(1100, 190),
        "each try needs a fifth less queued than the last"
    );
    assert!(j.compaction_due(1100, 100));
    j.snapshot_began();
    assert!(j.start_compaction(1100, vec![0; 100]).is_some());
}

//! The simulator's durability through the real [`Journal`]: with [`Sim::with_journal`],
//! each shard's records go to its journal and reach an in-memory file only through the
//! journal's append jobs, which fail on demand ([`Sim::fail_appends`]); the effects that wait
//! for the disk are released when the journal says so, and a restart replays each shard from
//! its file's bytes with the real replay. The journal's promises (nothing released before
//! its batch is written, a failed batch written first by the next job, an item acked before
//! its batch left never written) then hold or fail under the service's own scenarios.
//!
//! What it does not run: the adapter's timing (the commit window, the retry timer) and
//! compaction; a commit here is every due job at once, a failed one retried at the next.

use crate::durable::journal::{Job, Journal, Outcome};
use crate::durable::replay::replay_log;
use crate::state::effect::AfterCommit;
use crate::state::ShardState;

use super::Sim;

/// A journal file in memory: the bytes every successful append wrote.
#[derive(Debug, Default)]
pub struct MemFile(pub Vec<u8>);

/// Each shard's real journal over its in-memory file, and the faults still to inject.
pub struct Journaled {
    journals: Vec<Journal<MemFile>>,
    /// Appends of each shard that will fail before one succeeds again.
    fail_appends: Vec<u32>,
}

impl Journaled {
    pub(super) fn new(n: usize) -> Journaled {
        Journaled {
            journals: (0..n).map(|_| opened(Vec::new())).collect(),
            fail_appends: vec![0; n],
        }
    }

    /// An event's records and waiting effects; returns the effects that need not wait.
    pub(super) fn add(
        &mut self,
        shard: usize,
        records: Vec<crate::durable::record::Record>,
        after: Vec<AfterCommit>,
    ) -> Vec<AfterCommit> {
        self.journals[shard].add(records, after)
    }

    /// Runs `shard`'s due appends (lazy tombstones included) until none is due or one
    /// fails; returns the effects they released. A failed batch waits for the next call.
    pub(super) fn write(&mut self, shard: usize) -> Vec<AfterCommit> {
        let j = &mut self.journals[shard];
        j.retry_due();
        j.request_lazy_flush();
        let mut released = j.take_unblocked();
        while let Some(job) = j.next_append() {
            let (mut file, bytes) = match job {
                Job::Append(file, bytes) => (file, bytes),
                // Never started here: compaction is not simulated.
                Job::Compact(file, _) => {
                    let len = file.0.len() as u64;
                    released.extend(j.finished(file, len, Outcome::NotCompacted));
                    break;
                }
            };
            if self.fail_appends[shard] > 0 {
                self.fail_appends[shard] -= 1;
                let len = file.0.len() as u64;
                released.extend(j.finished(file, len, Outcome::AppendFailed));
                j.schedule_retry();
                break;
            }
            file.0.extend_from_slice(&bytes);
            let len = file.0.len() as u64;
            released.extend(j.finished(file, len, Outcome::Appended));
            released.extend(j.take_unblocked());
        }
        released
    }

    /// The bytes `shard`'s file holds.
    pub fn bytes(&self, shard: usize) -> &[u8] {
        self.journals[shard].file().map_or(&[], |f| &f.0)
    }

    /// The records `shard`'s file holds, in order.
    pub fn records(&self, shard: usize) -> Vec<crate::durable::record::Record> {
        let mut out = Vec::new();
        let mut bytes = self.bytes(shard);
        crate::durable::record::replay_with(&mut bytes, |r| out.push(r))
            .unwrap_or_else(|never| match never {});
        out
    }

    /// A crash: what each journal gathered and did not write is gone; the files stay.
    pub(super) fn crash(&mut self) {
        for j in &mut self.journals {
            let bytes = j.file().map(|f| f.0.clone()).unwrap_or_default();
            *j = opened(bytes);
        }
    }

    /// Rebuilds `state` from `shard`'s file, as a shard does at start.
    pub(super) fn replay(&self, shard: usize, state: &mut ShardState) {
        let mut bytes = self.bytes(shard);
        let scan = replay_log(&mut bytes, state).unwrap_or_else(|never| match never {});
        assert_eq!(
            scan.valid_len,
            self.bytes(shard).len() as u64,
            "a file written only by whole appends replays to its end"
        );
    }
}

/// A journal over a file holding `bytes` (never compacted here).
fn opened(bytes: Vec<u8>) -> Journal<MemFile> {
    let mut j = Journal::new(u64::MAX);
    let len = bytes.len() as u64;
    j.opened(MemFile(bytes), len);
    j
}

impl Sim {
    /// A cluster of `n` shards whose durability is the real journal's, over in-memory files.
    pub fn with_journal(n: usize) -> Sim {
        let mut sim = Sim::new(n);
        sim.journaled = Some(Journaled::new(n));
        sim
    }

    /// The journals and their files, when built with [`Sim::with_journal`].
    pub fn journaled(&self) -> Option<&Journaled> {
        self.journaled.as_ref()
    }

    /// The next `n` appends of `shard`'s journal fail (a full disk, an I/O error).
    pub fn fail_appends(&mut self, shard: usize, n: u32) {
        let j = self
            .journaled
            .as_mut()
            .expect("built with Sim::with_journal");
        j.fail_appends[shard] = n;
    }
}

#[cfg(test)]
mod tests {
    use proto::v1::server_frame;

    use crate::sim::{text, Sim};

    const A: &str = "+15550000001";
    const B: &str = "+15550000002";
    const C: &str = "+15550000003";

    fn acks(sim: &mut Sim, conn: proto::ids::ConnId) -> Vec<u64> {
        sim.take(conn)
            .into_iter()
            .filter_map(|f| match f {
                server_frame::Kind::ServerAck(x) => Some(x.client_msg_id),
                _ => None,
            })
            .collect()
    }

    fn messages(sim: &mut Sim, conn: proto::ids::ConnId) -> Vec<u64> {
        sim.take(conn)
            .into_iter()
            .filter_map(|f| match f {
                server_frame::Kind::Message(m) => Some(m.client_msg_id),
                _ => None,
            })
            .collect()
    }

    /// A sender and a registered recipient who is offline, on one shard.
    fn pair() -> (Sim, proto::ids::ConnId) {
        let mut sim = Sim::with_journal(1);
        let a = sim.login(A, 0);
        let b = sim.login(B, 0);
        sim.close(b);
        sim.commit();
        (sim, a)
    }

    #[test]
    fn a_send_is_acked_only_once_its_batch_is_written_and_then_survives_a_restart() {
        let (mut sim, a) = pair();
        sim.fail_appends(0, 1);
        sim.send(a, text(B, 7));
        sim.commit();
        assert!(
            acks(&mut sim, a).is_empty(),
            "the batch failed: no ServerAck"
        );
        sim.commit();
        assert_eq!(
            acks(&mut sim, a),
            [7],
            "the retry writes it, then it is answered"
        );
        sim.restart();
        let b = sim.login(B, 0);
        assert_eq!(messages(&mut sim, b), [7], "replayed from the file's bytes");
    }

    #[test]
    fn a_send_never_written_was_never_acked_and_is_not_replayed() {
        let (mut sim, a) = pair();
        sim.fail_appends(0, u32::MAX);
        sim.send(a, text(B, 8));
        sim.commit();
        sim.commit();
        assert!(acks(&mut sim, a).is_empty());
        sim.fail_appends(0, 0);
        sim.restart();
        let b = sim.login(B, 0);
        assert!(
            messages(&mut sim, b).is_empty(),
            "nothing was acked, nothing is owed"
        );
    }

    fn load_test_login(phone: &str) -> proto::v1::client_frame::Kind {
        proto::v1::client_frame::Kind::LoadTestLogin(proto::v1::LoadTestLogin {
            protocol_version: proto::PROTOCOL_VERSION,
            phone: phone.into(),
            secret: b"s".to_vec(),
        })
    }

    /// Found by the cluster's restart tests under a 10 ms commit window: `LoggedIn` for a
    /// load-test login that made its account went out before the account's record was on
    /// disk, so a box killed right after answering came back without the account.
    #[test]
    fn a_login_that_makes_an_account_is_heard_of_once_the_account_is_durable() {
        use server_frame::Kind as S;
        let mut sim = Sim::with_journal(1);
        let b = sim.login(B, 0);
        sim.fail_appends(0, 1);
        let a = sim.connect(0);
        sim.send(a, load_test_login(A));
        sim.send(a, text(B, 1)); // pipelined behind the login: served at once
        assert!(
            sim.take(a).is_empty(),
            "nothing before the account is durable"
        );
        assert_eq!(messages(&mut sim, b), [1], "delivery does not wait");
        sim.commit();
        assert!(sim.take(a).is_empty(), "the append failed: still nothing");
        sim.commit();
        let frames = sim.take(a);
        assert!(
            matches!(&frames[..], [S::LoggedIn(_), S::ServerAck(x)] if x.client_msg_id == 1),
            "the retry wrote it: LoggedIn, then the rest in order: {frames:?}"
        );
        sim.restart();
        assert!(sim.shards[0].registry.exists(A), "heard of, so it survives");

        sim.fail_appends(0, u32::MAX);
        let c = sim.connect(0);
        sim.send(c, load_test_login(C));
        sim.commit();
        assert!(sim.take(c).is_empty(), "never durable, never heard of");
        sim.fail_appends(0, 0);
        sim.restart();
        assert!(
            !sim.shards[0].registry.exists(C),
            "and nobody was told it exists"
        );
    }

    #[test]
    fn a_second_login_to_an_account_in_flight_waits_for_it_too() {
        use server_frame::Kind as S;
        let mut sim = Sim::with_journal(1);
        let c = sim.connect(0);
        sim.send(c, load_test_login(A));
        let d = sim.connect(0);
        sim.send(d, load_test_login(A));
        assert!(sim.take(d).is_empty(), "the account is still in flight");
        assert!(sim.closed.contains(&c), "d replaced c's session");
        sim.close(c); // the engine drops c's held output with it
        sim.commit();
        assert!(matches!(sim.take(d).first(), Some(S::LoggedIn(_))));
        assert!(sim.take(c).is_empty());
        assert!(sim.shards[0].accounts_in_commit.is_empty());
        let e = sim.connect(0);
        sim.send(e, load_test_login(A));
        assert!(
            matches!(sim.take(e).first(), Some(S::LoggedIn(_))),
            "durable now: answered at once"
        );
    }
}

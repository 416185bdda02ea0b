//! Sampling a running process thread by thread: perf counters and /proc, as deltas.
//!
//! 1. [`Sampler::attach`] lists the threads and probes each wanted event on the main thread
//!    (`pid = TID`, `cpu = -1`). An event that fails there is recorded once as an
//!    [`OpenError`] and not tried on other threads; the rest are opened on every thread.
//! 2. Each [`Sampler::sample`] re-lists the threads: gone threads are dropped (closing their
//!    counters), new ones are opened and report /proc counts since their birth with perf
//!    counts from their discovery. Every other row is the change since the previous sample.
//! 3. At most [`THREADS_MAX`] threads (lowest tids) are followed, so descriptors stay bounded
//!    (`THREADS_MAX` × 10 events).

use std::collections::BTreeMap;
use std::io;

use crate::perf_event::{self, Counter, Event, OpenError, Target};
use crate::report::Row;
use crate::schedstat::{self, ThreadSample};

/// Most threads of one process followed at once.
pub const THREADS_MAX: usize = 1024;

/// One followed thread: its last /proc sample and its counters with their last values.
struct Tracked {
    last: ThreadSample,
    /// Aligned with [`Sampler::events`]; `None` where the open failed for this thread only.
    counters: Vec<Option<(Counter, u64)>>,
}

/// Per-thread counters of one process, sampled on demand.
pub struct Sampler {
    pid: i32,
    events: Vec<Event>,
    unavailable: Vec<OpenError>,
    user_only: Vec<Event>,
    threads: BTreeMap<i32, Tracked>,
}

impl Sampler {
    /// Attaches to `pid`, opening `wanted` events on each of its threads where possible.
    pub fn attach(pid: i32, wanted: &[Event]) -> io::Result<Sampler> {
        let tids = schedstat::list_tids(pid)?;
        let probe_tid = tids.first().copied().unwrap_or(pid);
        let mut sampler = Sampler {
            pid,
            events: Vec::new(),
            unavailable: Vec::new(),
            user_only: Vec::new(),
            threads: BTreeMap::new(),
        };
        for &event in wanted {
            match perf_event::open(event, Target::Thread(probe_tid)) {
                Ok(counter) => {
                    if counter.user_only {
                        sampler.user_only.push(event);
                    }
                    sampler.events.push(event);
                }
                Err(e) => sampler.unavailable.push(e),
            }
        }
        for tid in tids.into_iter().take(THREADS_MAX) {
            if let Some(now) = schedstat::sample_thread(pid, tid) {
                let tracked = sampler.track(now);
                sampler.threads.insert(tid, tracked);
            }
        }
        Ok(sampler)
    }

    /// Events counted per thread.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Events that could not be opened, with the reason.
    pub fn unavailable(&self) -> &[OpenError] {
        &self.unavailable
    }

    /// Events the kernel let us count in user space only.
    pub fn user_only(&self) -> &[Event] {
        &self.user_only
    }

    /// One row per live thread with counts since the previous call (or since attach).
    /// Fails when the process itself is gone.
    pub fn sample(&mut self) -> io::Result<Vec<Row>> {
        let tids = schedstat::list_tids(self.pid)?;
        let live: Vec<i32> = tids.into_iter().take(THREADS_MAX).collect();
        self.threads
            .retain(|tid, _| live.binary_search(tid).is_ok());
        let mut rows = Vec::with_capacity(live.len());
        for tid in live {
            let Some(now) = schedstat::sample_thread(self.pid, tid) else {
                self.threads.remove(&tid);
                continue;
            };
            let row = match self.threads.get_mut(&tid) {
                Some(tracked) => delta_row(tracked, now),
                None => {
                    let tracked = self.track(now.clone());
                    self.threads.insert(tid, tracked);
                    let counts = self.events.iter().map(|_| Some(0)).collect();
                    Row::from_sample(now, counts)
                }
            };
            rows.push(row);
        }
        Ok(rows)
    }

    /// Opens this sampler's events on a newly seen thread.
    fn track(&self, now: ThreadSample) -> Tracked {
        let counters = self
            .events
            .iter()
            .map(|&event| {
                let counter = perf_event::open(event, Target::Thread(now.tid)).ok()?;
                let start = counter.read().ok()?.scaled();
                Some((counter, start))
            })
            .collect();
        Tracked {
            last: now,
            counters,
        }
    }
}

/// The change in one thread since its last sample; updates the stored last values.
fn delta_row(tracked: &mut Tracked, now: ThreadSample) -> Row {
    let delta = now.since(&tracked.last);
    tracked.last = now;
    let counts = tracked
        .counters
        .iter_mut()
        .map(|slot| {
            let (counter, last) = slot.as_mut()?;
            let value = counter.read().ok()?.scaled();
            let d = value.saturating_sub(*last);
            *last = value;
            Some(d)
        })
        .collect();
    Row::from_sample(delta, counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_a_busy_thread_of_this_process() {
        let pid = std::process::id() as i32;
        let mut sampler = Sampler::attach(pid, &Event::ALL).unwrap();
        let spin = std::thread::Builder::new()
            .name("pmc-spin".into())
            .spawn(|| {
                let start = std::time::Instant::now();
                let mut x = 0u64;
                while start.elapsed() < std::time::Duration::from_millis(200) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                x
            })
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let rows = sampler.sample().unwrap();
        let row = rows
            .iter()
            .find(|r| r.comm == "pmc-spin")
            .expect("spin thread seen");
        assert!(row.cpu_ns > 0, "the spinning thread used CPU since birth");
        assert!(spin.join().unwrap() > 0);
        assert_eq!(
            sampler.events().len() + sampler.unavailable().len(),
            Event::ALL.len(),
            "every event is either counted or explained"
        );
    }
}

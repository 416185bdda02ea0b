//! Per-thread scheduler and fault counts from /proc, the counters that need no PMU.
//!
//! For each thread of a process (`/proc/PID/task/TID/`):
//! - `schedstat`: nanoseconds on CPU, nanoseconds runnable but waiting, and timeslices run
//!   (absent when the kernel lacks `CONFIG_SCHED_INFO`; then [`ThreadSample::sched`] is `None`).
//! - `stat`: thread name, state, minor/major faults, user/system ticks, last CPU.
//!
//! A thread may exit between listing the directory and reading its files; such a thread is
//! skipped, never an error. Parsing is pure ([`parse_schedstat`], [`parse_stat`]) and tested.

use std::fs;
use std::io;

/// The three numbers of `/proc/.../schedstat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedStat {
    /// Time spent on a CPU, ns.
    pub run_ns: u64,
    /// Time spent runnable on a run queue, waiting for a CPU, ns.
    pub wait_ns: u64,
    /// Timeslices run on a CPU.
    pub timeslices: u64,
}

/// The fields of `/proc/.../stat` that `pmc` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    /// Thread name (`comm`), up to 15 bytes; the server names shards `shard-<i>-<n>`.
    pub comm: String,
    /// State letter: R running, S sleeping, D disk, Z zombie, …
    pub state: char,
    /// Minor page faults.
    pub minflt: u64,
    /// Major page faults.
    pub majflt: u64,
    /// User-mode CPU time, clock ticks.
    pub utime_ticks: u64,
    /// Kernel-mode CPU time, clock ticks.
    pub stime_ticks: u64,
    /// CPU the thread last ran on.
    pub processor: i32,
}

/// One thread's /proc counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadSample {
    /// Thread id.
    pub tid: i32,
    /// From `stat`.
    pub stat: Stat,
    /// From `schedstat`, when the kernel keeps it.
    pub sched: Option<SchedStat>,
}

impl ThreadSample {
    /// Counts accumulated since `earlier` (a sample of the same thread). Name, state and CPU
    /// are this sample's. Counters never go backwards; saturate if a tid was reused.
    pub fn since(&self, earlier: &ThreadSample) -> ThreadSample {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let sched = match (self.sched, earlier.sched) {
            (Some(now), Some(then)) => Some(SchedStat {
                run_ns: d(now.run_ns, then.run_ns),
                wait_ns: d(now.wait_ns, then.wait_ns),
                timeslices: d(now.timeslices, then.timeslices),
            }),
            (now, _) => now,
        };
        ThreadSample {
            tid: self.tid,
            stat: Stat {
                minflt: d(self.stat.minflt, earlier.stat.minflt),
                majflt: d(self.stat.majflt, earlier.stat.majflt),
                utime_ticks: d(self.stat.utime_ticks, earlier.stat.utime_ticks),
                stime_ticks: d(self.stat.stime_ticks, earlier.stat.stime_ticks),
                ..self.stat.clone()
            },
            sched,
        }
    }

    /// CPU time in ns: schedstat's run time when present, else user+system ticks.
    pub fn cpu_ns(&self, ticks_per_second: u64) -> u64 {
        match self.sched {
            Some(s) => s.run_ns,
            None => {
                let ticks = self.stat.utime_ticks + self.stat.stime_ticks;
                ticks * 1_000_000_000 / ticks_per_second.max(1)
            }
        }
    }
}

/// Parses `/proc/.../schedstat`: `run_ns wait_ns timeslices`.
pub fn parse_schedstat(text: &str) -> Option<SchedStat> {
    let mut it = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    Some(SchedStat {
        run_ns: it.next()??,
        wait_ns: it.next()??,
        timeslices: it.next()??,
    })
}

/// Parses `/proc/.../stat`. The name sits in parentheses and may hold spaces or ')', so the
/// fields are counted from the last ')'.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // stat(5) numbers fields from 1; field 3 (state) is rest[0], so field N is rest[N - 3].
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        comm,
        state: rest.first()?.chars().next()?,
        minflt: field(10)?,
        majflt: field(12)?,
        utime_ticks: field(14)?,
        stime_ticks: field(15)?,
        processor: rest.get(39 - 3).and_then(|v| v.parse().ok()).unwrap_or(-1),
    })
}

/// Thread ids of `pid`, ascending.
pub fn list_tids(pid: i32) -> io::Result<Vec<i32>> {
    let mut tids: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

/// Reads one thread; `None` if it has gone (or its stat does not parse).
pub fn sample_thread(pid: i32, tid: i32) -> Option<ThreadSample> {
    let dir = format!("/proc/{pid}/task/{tid}");
    let stat = parse_stat(&fs::read_to_string(format!("{dir}/stat")).ok()?)?;
    let sched = fs::read_to_string(format!("{dir}/schedstat"))
        .ok()
        .and_then(|t| parse_schedstat(&t));
    Some(ThreadSample { tid, stat, sched })
}

/// Reads every thread of `pid`, at most `threads_max` of them (lowest tids first).
pub fn sample_process(pid: i32, threads_max: usize) -> io::Result<Vec<ThreadSample>> {
    Ok(list_tids(pid)?
        .into_iter()
        .take(threads_max)
        .filter_map(|tid| sample_thread(pid, tid))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real lines from this machine (a `sh` busy loop, and a shard thread with a space and a
    // parenthesis in its name to exercise the last-')' rule).
    const SCHEDSTAT: &str = "382654106 7055880 28\n";
    const STAT: &str = "31198 (shard-0 (x)) R 31192 31192 28779 0 -1 4194304 98 0 3 0 \
        250 17 0 0 20 0 1 0 555575 3133440 358 18446744073709551615 93867914530816 \
        93867914550697 140736859582272 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 93867914566704 \
        93867914568320 93868698947584 140736859585250 140736859585270 140736859585270 \
        140736859586539 0\n";

    #[test]
    fn parses_schedstat_line() {
        let s = parse_schedstat(SCHEDSTAT).unwrap();
        assert_eq!(
            s,
            SchedStat {
                run_ns: 382_654_106,
                wait_ns: 7_055_880,
                timeslices: 28
            }
        );
        assert_eq!(parse_schedstat("12 x 3"), None);
        assert_eq!(parse_schedstat("12 34"), None);
    }

    #[test]
    fn parses_stat_line_with_odd_name() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(s.comm, "shard-0 (x)");
        assert_eq!(s.state, 'R');
        assert_eq!(s.minflt, 98);
        assert_eq!(s.majflt, 3);
        assert_eq!(s.utime_ticks, 250);
        assert_eq!(s.stime_ticks, 17);
        assert_eq!(s.processor, 1);
        assert_eq!(parse_stat("12 (x) R 1 2"), None, "truncated line");
    }

    #[test]
    fn delta_subtracts_and_cpu_falls_back_to_ticks() {
        let a = ThreadSample {
            tid: 5,
            stat: parse_stat(STAT).unwrap(),
            sched: parse_schedstat(SCHEDSTAT),
        };
        let mut b = a.clone();
        b.stat.minflt += 10;
        b.stat.utime_ticks += 3;
        b.sched.as_mut().unwrap().run_ns += 1_000;
        let d = b.since(&a);
        assert_eq!(d.stat.minflt, 10);
        assert_eq!(d.sched.unwrap().run_ns, 1_000);
        assert_eq!(d.cpu_ns(100), 1_000);
        let no_sched = ThreadSample { sched: None, ..d };
        assert_eq!(
            no_sched.cpu_ns(100),
            3 * 10_000_000,
            "3 ticks at 100 Hz = 30 ms"
        );
    }

    #[test]
    fn samples_own_threads() {
        let pid = std::process::id() as i32;
        let all = sample_process(pid, 4096).unwrap();
        assert!(all.iter().any(|t| t.tid == pid), "main thread listed");
        assert!(all.iter().all(|t| !t.stat.comm.is_empty()));
    }
}

//! `perf stat` on a running server over a window: the kernel's software counters and its
//! syscall tracepoints, counted in the kernel (no per-event copy to user space, unlike
//! `strace` or `perf trace`).
//!
//! Steps of [`count`], bounded by the window:
//! 1. `perf stat -x , -e EVENTS -p PID -- sleep SECONDS`: perf opens one counter per event
//!    for every thread of PID, the `sleep` child bounds the window, and perf prints one CSV
//!    line per event on stderr.
//! 2. [`parse`] reads each line into a [`Reading`]: a count, "not supported" (hardware
//!    events: this VM has no PMU) or "not counted" (no thread of PID ran in the window).
//! 3. Without `perf`, or when it refuses, [`Counts::error`] says why and every figure reads
//!    n/a.
//!
//! The per-syscall events ([`syscall_events`]) are a fixed list of the calls servers like
//! ours make (io_uring, epoll, socket reads and writes, futexes, memory, timers); whatever
//! else the server entered is the `raw_syscalls:sys_enter` total minus their sum ("other").

use std::process::{Command, Stdio};

/// Every syscall entry, any syscall.
pub const SYSCALLS_ALL: &str = "raw_syscalls:sys_enter";

/// The events counted over every sending window: software counters, the syscall total, and
/// two hardware events so the report can say whether this machine counts them.
pub const WINDOW_EVENTS: [&str; 7] = [
    "task-clock",
    "context-switches",
    "cpu-migrations",
    "page-faults",
    SYSCALLS_ALL,
    "cycles",
    "instructions",
];

/// Syscalls counted one by one in the separate per-syscall run.
pub const SYSCALL_NAMES: [&str; 34] = [
    "io_uring_enter",
    "epoll_wait",
    "epoll_pwait",
    "epoll_ctl",
    "read",
    "write",
    "readv",
    "writev",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "accept4",
    "close",
    "futex",
    "nanosleep",
    "clock_nanosleep",
    "sched_yield",
    "mmap",
    "munmap",
    "madvise",
    "brk",
    "mprotect",
    "getrandom",
    "poll",
    "ppoll",
    "pselect6",
    "timerfd_settime",
    "eventfd2",
    "clock_gettime",
    "getpid",
    "tgkill",
    "rt_sigreturn",
    "rt_sigprocmask",
];

/// The tracepoints of [`SYSCALL_NAMES`] plus [`SYSCALLS_ALL`].
pub fn syscall_events() -> Vec<String> {
    SYSCALL_NAMES
        .iter()
        .map(|s| format!("syscalls:sys_enter_{s}"))
        .chain([SYSCALLS_ALL.to_string()])
        .collect()
}

/// One event's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    /// Counted (task-clock in ms, as perf prints it).
    Value(f64),
    /// The kernel has no such counter here (hardware events in a VM).
    NotSupported,
    /// Opened, but nothing ran to count it.
    NotCounted,
}

/// What one `perf stat` run read, event by event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// (event, reading), in perf's order.
    pub readings: Vec<(String, Reading)>,
    /// Why nothing was read (perf missing, refused), if so.
    pub error: Option<String>,
}

impl Counts {
    /// The value of `event`, if it was counted.
    pub fn get(&self, event: &str) -> Option<f64> {
        self.readings.iter().find_map(|(e, r)| match r {
            Reading::Value(v) if e == event => Some(*v),
            _ => None,
        })
    }

    /// The events that could not be read, each with why, e.g. `cycles (not supported)`.
    pub fn unreadable(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .readings
            .iter()
            .filter_map(|(e, r)| match r {
                Reading::Value(_) => None,
                Reading::NotSupported => Some(format!("{e} (not supported)")),
                Reading::NotCounted => Some(format!("{e} (not counted)")),
            })
            .collect();
        v.extend(self.error.iter().map(|e| format!("all ({e})")));
        v
    }

    /// Per-syscall counts from a [`syscall_events`] run, largest first, with "other" (the
    /// total minus the named ones) where it is above zero.
    pub fn syscalls_by_name(&self) -> Vec<(String, f64)> {
        let mut v: Vec<(String, f64)> = self
            .readings
            .iter()
            .filter_map(|(e, r)| match r {
                Reading::Value(n) if *n > 0.0 => e
                    .strip_prefix("syscalls:sys_enter_")
                    .map(|s| (s.to_string(), *n)),
                _ => None,
            })
            .collect();
        if let Some(all) = self.get(SYSCALLS_ALL) {
            let other = all - v.iter().map(|x| x.1).sum::<f64>();
            if other > 0.0 {
                v.push(("other".into(), other));
            }
        }
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    }
}

/// Parses `perf stat -x ,` output (stderr): one line per event,
/// `value,unit,event,run time,percent,...`.
pub fn parse(text: &str) -> Counts {
    let readings = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let (value, event) = (f.first()?.trim(), f.get(2)?.trim());
            if event.is_empty() {
                return None;
            }
            let r = match value {
                "<not supported>" => Reading::NotSupported,
                "<not counted>" => Reading::NotCounted,
                v => Reading::Value(v.parse().ok()?),
            };
            Some((event.to_string(), r))
        })
        .collect();
    Counts {
        readings,
        error: None,
    }
}

/// Counts `events` for every thread of `pid` over the next `seconds` (blocks that long, plus
/// perf's start-up).
pub fn count<S: AsRef<str>>(pid: u32, events: &[S], seconds: f64) -> Counts {
    let list = events
        .iter()
        .map(|e| e.as_ref())
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new("perf")
        .args(["stat", "-x", ",", "-e", &list, "-p"])
        .arg(pid.to_string())
        .args(["--", "sleep"])
        .arg(format!("{seconds}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match out {
        Err(e) => Counts {
            error: Some(format!("perf: {e}")),
            ..Counts::default()
        },
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stderr);
            let c = parse(&text);
            if c.readings.is_empty() {
                let why = text
                    .lines()
                    .next()
                    .unwrap_or("no output")
                    .trim()
                    .to_string();
                return Counts {
                    error: Some(format!("perf stat {}: {why}", o.status)),
                    ..c
                };
            }
            c
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
328.91,msec,task-clock,328909717,100.00,0.324,CPUs utilized
96,,context-switches,328909717,100.00,291.873,/sec
<not supported>,,cycles,0,100.00,,
<not counted>,,page-faults,0,100.00,,
10,,syscalls:sys_enter_write,1,100.00,,
0,,syscalls:sys_enter_read,1,100.00,,
30,,syscalls:sys_enter_io_uring_enter,1,100.00,,
45,,raw_syscalls:sys_enter,1,100.00,,
";

    #[test]
    fn parses_values_and_says_what_could_not_be_read() {
        let c = parse(SAMPLE);
        assert_eq!(c.get("task-clock"), Some(328.91));
        assert_eq!(c.get("context-switches"), Some(96.0));
        assert_eq!(c.get("cycles"), None);
        assert_eq!(
            c.unreadable(),
            vec!["cycles (not supported)", "page-faults (not counted)"]
        );
    }

    #[test]
    fn syscalls_by_name_sorts_and_keeps_the_rest_as_other() {
        let v = parse(SAMPLE).syscalls_by_name();
        let names: Vec<&str> = v.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(names, ["io_uring_enter", "write", "other"]);
        assert_eq!(v[2].1, 5.0, "45 in all − 30 − 10");
    }

    #[test]
    fn blank_and_comment_lines_are_skipped() {
        assert!(parse("\n# started on x\n").readings.is_empty());
    }

    #[test]
    fn the_syscall_list_ends_with_the_total() {
        let e = syscall_events();
        assert_eq!(e.len(), SYSCALL_NAMES.len() + 1);
        assert_eq!(e.last().map(|s| s.as_str()), Some(SYSCALLS_ALL));
    }
}

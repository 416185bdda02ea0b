//! Counting events through raw `perf_event_open(2)`, without a perf crate.
//!
//! One [`Counter`] is one kernel event file descriptor counting one [`Event`] for one task
//! (a thread, or a process and its descendants with `inherit`). Counters are opened in
//! counting mode (no sampling, no ring buffer): reading one costs a `read(2)` of 24 bytes.
//!
//! Steps, and why each is safe:
//! 1. [`open`] fills a zeroed `perf_event_attr` (the VER5 layout, 112 bytes, which every kernel
//!    since 4.1 accepts) and calls the syscall. A zeroed attr is valid: every field is an
//!    integer whose zero means "off".
//! 2. On failure the errno is kept in an [`OpenError`], whose `Display` says in words why the
//!    counter is unavailable (no PMU, permission and `perf_event_paranoid`, …). Callers print
//!    it and carry on with the counters that did open.
//! 3. On `EACCES`/`EPERM` the open is retried once counting user space only
//!    (`exclude_kernel`), which `perf_event_paranoid = 2` still allows for one's own tasks.
//! 4. [`Counter::read`] returns the raw value with enabled/running times; [`Reading::scaled`]
//!    corrects for multiplexing when the PMU had more events than registers.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};

const PERF_TYPE_HARDWARE: u32 = 0;
const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_TYPE_HW_CACHE: u32 = 3;

const PERF_COUNT_HW_CPU_CYCLES: u64 = 0;
const PERF_COUNT_HW_INSTRUCTIONS: u64 = 1;
const PERF_COUNT_HW_CACHE_REFERENCES: u64 = 2;
const PERF_COUNT_HW_CACHE_MISSES: u64 = 3;
const PERF_COUNT_HW_BRANCH_MISSES: u64 = 5;
/// dTLB (3) | read op (0 << 8) | miss result (1 << 16).
const PERF_COUNT_HW_CACHE_DTLB_READ_MISS: u64 = 3 | (1 << 16);
/// iTLB (4) | read op | miss result: code pages not in the TLB.
const PERF_COUNT_HW_CACHE_ITLB_READ_MISS: u64 = 4 | (1 << 16);
/// L1 instruction cache (1) | read op | miss result.
const PERF_COUNT_HW_CACHE_L1I_READ_MISS: u64 = 1 | (1 << 16);

const PERF_COUNT_SW_TASK_CLOCK: u64 = 1;
const PERF_COUNT_SW_PAGE_FAULTS: u64 = 2;
const PERF_COUNT_SW_CONTEXT_SWITCHES: u64 = 3;
const PERF_COUNT_SW_CPU_MIGRATIONS: u64 = 4;

const PERF_FORMAT_TOTAL_TIME_ENABLED: u64 = 1 << 0;
const PERF_FORMAT_TOTAL_TIME_RUNNING: u64 = 1 << 1;

const ATTR_FLAG_DISABLED: u64 = 1 << 0;
const ATTR_FLAG_INHERIT: u64 = 1 << 1;
const ATTR_FLAG_EXCLUDE_KERNEL: u64 = 1 << 5;
const ATTR_FLAG_EXCLUDE_HV: u64 = 1 << 6;
const ATTR_FLAG_ENABLE_ON_EXEC: u64 = 1 << 12;

const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// `struct perf_event_attr`, `PERF_ATTR_SIZE_VER5` layout. The bitfield word is `flags`.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
}

const PERF_ATTR_SIZE_VER5: usize = 112;
const _: () = assert!(std::mem::size_of::<PerfEventAttr>() == PERF_ATTR_SIZE_VER5);

/// An event `pmc` knows how to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// CPU cycles (hardware).
    Cycles,
    /// Retired instructions (hardware).
    Instructions,
    /// Last-level cache references (hardware).
    CacheReferences,
    /// Last-level cache misses (hardware).
    CacheMisses,
    /// Mispredicted branches (hardware).
    BranchMisses,
    /// Data-TLB load misses (hardware cache event).
    DtlbLoadMisses,
    /// Instruction-TLB misses (hardware cache event): what code on huge pages would cut.
    ItlbLoadMisses,
    /// L1 instruction-cache misses (hardware cache event): code run cold after a sleep.
    L1iLoadMisses,
    /// Time on CPU in nanoseconds (software).
    TaskClock,
    /// Context switches (software).
    ContextSwitches,
    /// Moves between CPUs (software).
    CpuMigrations,
    /// Page faults, minor and major (software).
    PageFaults,
}

impl Event {
    /// Every event, hardware first, in report order.
    pub const ALL: [Event; 12] = [
        Event::Cycles,
        Event::Instructions,
        Event::CacheReferences,
        Event::CacheMisses,
        Event::BranchMisses,
        Event::DtlbLoadMisses,
        Event::ItlbLoadMisses,
        Event::L1iLoadMisses,
        Event::TaskClock,
        Event::ContextSwitches,
        Event::CpuMigrations,
        Event::PageFaults,
    ];

    /// The name `perf stat` uses.
    pub fn name(self) -> &'static str {
        match self {
            Event::Cycles => "cycles",
            Event::Instructions => "instructions",
            Event::CacheReferences => "cache-references",
            Event::CacheMisses => "cache-misses",
            Event::BranchMisses => "branch-misses",
            Event::DtlbLoadMisses => "dTLB-load-misses",
            Event::ItlbLoadMisses => "iTLB-load-misses",
            Event::L1iLoadMisses => "L1-icache-load-misses",
            Event::TaskClock => "task-clock",
            Event::ContextSwitches => "context-switches",
            Event::CpuMigrations => "cpu-migrations",
            Event::PageFaults => "page-faults",
        }
    }

    /// A short column header for tables.
    pub fn short(self) -> &'static str {
        match self {
            Event::Cycles => "cycles",
            Event::Instructions => "instr",
            Event::CacheReferences => "cache-ref",
            Event::CacheMisses => "cache-miss",
            Event::BranchMisses => "br-miss",
            Event::DtlbLoadMisses => "dTLB-miss",
            Event::ItlbLoadMisses => "iTLB-miss",
            Event::L1iLoadMisses => "L1i-miss",
            Event::TaskClock => "task-clk-ms",
            Event::ContextSwitches => "ctx-sw",
            Event::CpuMigrations => "migr",
            Event::PageFaults => "faults",
        }
    }

    /// Whether the event needs a hardware PMU.
    pub fn is_hardware(self) -> bool {
        !matches!(
            self,
            Event::TaskClock | Event::ContextSwitches | Event::CpuMigrations | Event::PageFaults
        )
    }

    fn type_and_config(self) -> (u32, u64) {
        match self {
            Event::Cycles => (PERF_TYPE_HARDWARE, PERF_COUNT_HW_CPU_CYCLES),
            Event::Instructions => (PERF_TYPE_HARDWARE, PERF_COUNT_HW_INSTRUCTIONS),
            Event::CacheReferences => (PERF_TYPE_HARDWARE, PERF_COUNT_HW_CACHE_REFERENCES),
            Event::CacheMisses => (PERF_TYPE_HARDWARE, PERF_COUNT_HW_CACHE_MISSES),
            Event::BranchMisses => (PERF_TYPE_HARDWARE, PERF_COUNT_HW_BRANCH_MISSES),
            Event::DtlbLoadMisses => (PERF_TYPE_HW_CACHE, PERF_COUNT_HW_CACHE_DTLB_READ_MISS),
            Event::ItlbLoadMisses => (PERF_TYPE_HW_CACHE, PERF_COUNT_HW_CACHE_ITLB_READ_MISS),
            Event::L1iLoadMisses => (PERF_TYPE_HW_CACHE, PERF_COUNT_HW_CACHE_L1I_READ_MISS),
            Event::TaskClock => (PERF_TYPE_SOFTWARE, PERF_COUNT_SW_TASK_CLOCK),
            Event::ContextSwitches => (PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CONTEXT_SWITCHES),
            Event::CpuMigrations => (PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_MIGRATIONS),
            Event::PageFaults => (PERF_TYPE_SOFTWARE, PERF_COUNT_SW_PAGE_FAULTS),
        }
    }
}

/// What to count: one thread, or a process about to `exec` and everything it spawns.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// One thread (`pid = TID`, `cpu = -1`, no inherit), counting from now.
    Thread(i32),
    /// A stopped child and its descendants (`inherit`), counting from its next `exec`.
    ChildOnExec(i32),
}

/// One open event counter. Closing the descriptor (drop) stops it.
#[derive(Debug)]
pub struct Counter {
    file: File,
    /// The event counted.
    pub event: Event,
    /// True when the kernel refused kernel-mode counting and only user space is counted.
    pub user_only: bool,
}

/// One reading of a counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// Raw count.
    pub value: u64,
    /// Nanoseconds the event was enabled.
    pub enabled_ns: u64,
    /// Nanoseconds the event was actually on a counter (less than enabled when multiplexed).
    pub running_ns: u64,
}

impl Reading {
    /// The count scaled for multiplexing: `value * enabled / running`.
    pub fn scaled(&self) -> u64 {
        if self.running_ns == 0 || self.running_ns >= self.enabled_ns {
            return self.value;
        }
        let scaled =
            u128::from(self.value) * u128::from(self.enabled_ns) / u128::from(self.running_ns);
        u64::try_from(scaled).unwrap_or(u64::MAX)
    }
}

impl Counter {
    /// Reads the current count.
    pub fn read(&self) -> io::Result<Reading> {
        let mut buf = [0u8; 24];
        (&self.file).read_exact(&mut buf)?;
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[i * 8..i * 8 + 8]);
            u64::from_ne_bytes(b)
        };
        Ok(Reading {
            value: word(0),
            enabled_ns: word(1),
            running_ns: word(2),
        })
    }
}

/// Why an event could not be opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenError {
    /// The event.
    pub event: Event,
    /// The errno from `perf_event_open`.
    pub errno: i32,
}

impl OpenError {
    /// The reason in words, without the event name.
    pub fn reason(&self) -> String {
        let err = strerror(self.errno);
        let why = match self.errno {
            libc::ENOENT | libc::EOPNOTSUPP | libc::ENODEV if self.event.is_hardware() => {
                if under_hypervisor() {
                    "no hardware PMU in this VM".to_string()
                } else {
                    "this kernel or CPU exposes no such hardware event".to_string()
                }
            }
            libc::EACCES | libc::EPERM => format!(
                "permission denied; kernel.perf_event_paranoid = {} (lower it, or run with \
                 CAP_PERFMON)",
                paranoid_level().map_or_else(|| "unreadable".to_string(), |p| p.to_string())
            ),
            libc::EMFILE | libc::ENFILE => "out of file descriptors".to_string(),
            libc::ESRCH => "the thread exited".to_string(),
            libc::ENOSYS => "perf_event_open is not available in this kernel".to_string(),
            _ => "kernel refused the event".to_string(),
        };
        format!("perf_event_open: {err} — {why}")
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: not supported ({})",
            self.event.name(),
            self.reason()
        )
    }
}

impl std::error::Error for OpenError {}

/// Opens a counter for `event` on `target`, retrying user-space-only if the kernel says no.
pub fn open(event: Event, target: Target) -> Result<Counter, OpenError> {
    match open_raw(event, target, false) {
        Ok(file) => Ok(Counter {
            file,
            event,
            user_only: false,
        }),
        Err(errno) if errno == libc::EACCES || errno == libc::EPERM => {
            let file = open_raw(event, target, true).map_err(|errno| OpenError { event, errno })?;
            Ok(Counter {
                file,
                event,
                user_only: true,
            })
        }
        Err(errno) => Err(OpenError { event, errno }),
    }
}

fn open_raw(event: Event, target: Target, user_only: bool) -> Result<File, i32> {
    let (type_, config) = event.type_and_config();
    let mut flags = ATTR_FLAG_EXCLUDE_HV;
    if user_only {
        flags |= ATTR_FLAG_EXCLUDE_KERNEL;
    }
    let pid = match target {
        Target::Thread(tid) => tid,
        Target::ChildOnExec(pid) => {
            flags |= ATTR_FLAG_DISABLED | ATTR_FLAG_INHERIT | ATTR_FLAG_ENABLE_ON_EXEC;
            pid
        }
    };
    let attr = PerfEventAttr {
        type_,
        size: PERF_ATTR_SIZE_VER5 as u32,
        config,
        read_format: PERF_FORMAT_TOTAL_TIME_ENABLED | PERF_FORMAT_TOTAL_TIME_RUNNING,
        flags,
        ..PerfEventAttr::default()
    };
    let cpu: libc::c_int = -1;
    let group_fd: libc::c_int = -1;
    // SAFETY: `attr` is a valid, fully initialised perf_event_attr whose `size` matches its
    // layout; the kernel only reads it. The other arguments are plain integers.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            pid,
            cpu,
            group_fd,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}

/// `/proc/sys/kernel/perf_event_paranoid`, if readable.
pub fn paranoid_level() -> Option<i32> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether /proc/cpuinfo carries the `hypervisor` flag (we run in a VM).
fn under_hypervisor() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| {
            s.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|w| w == "hypervisor"))
        })
        .unwrap_or(false)
}

/// The C library's message for `errno`, without Rust's " (os error N)" suffix.
fn strerror(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_events_use_perfs_cache_encoding() {
        // `perf_event_open(2)`: config = cache id | (op << 8) | (result << 16), with
        // L1I = 1, DTLB = 3, ITLB = 4, op READ = 0, result MISS = 1.
        let encode = |id: u64, op: u64, result: u64| id | (op << 8) | (result << 16);
        for (event, id) in [
            (Event::L1iLoadMisses, 1),
            (Event::DtlbLoadMisses, 3),
            (Event::ItlbLoadMisses, 4),
        ] {
            assert_eq!(
                event.type_and_config(),
                (PERF_TYPE_HW_CACHE, encode(id, 0, 1)),
                "{}",
                event.name()
            );
            assert!(event.is_hardware());
        }
        let names: std::collections::HashSet<_> = Event::ALL.iter().map(|e| e.name()).collect();
        assert_eq!(names.len(), Event::ALL.len(), "each event has its own name");
    }

    #[test]
    fn scaling_corrects_for_multiplexing() {
        let r = Reading {
            value: 100,
            enabled_ns: 1000,
            running_ns: 250,
        };
        assert_eq!(r.scaled(), 400);
        let full = Reading {
            value: 7,
            enabled_ns: 10,
            running_ns: 10,
        };
        assert_eq!(full.scaled(), 7);
    }

    #[test]
    fn unsupported_line_names_counter_and_errno() {
        let e = OpenError {
            event: Event::Cycles,
            errno: libc::ENOENT,
        };
        let line = e.to_string();
        assert!(line.starts_with("cycles: not supported (perf_event_open: No such file"));
        let perm = OpenError {
            event: Event::Cycles,
            errno: libc::EACCES,
        };
        assert!(perm.to_string().contains("perf_event_paranoid"));
    }

    #[test]
    fn task_clock_counts_own_thread_busy_loop() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        let counter = match open(Event::TaskClock, Target::Thread(tid)) {
            Ok(c) => c,
            // A sandbox may forbid perf_event_open entirely; that is reported, not a bug.
            Err(e) if e.errno == libc::ENOSYS || e.errno == libc::EACCES => return,
            Err(e) => panic!("task-clock should open on any Linux: {e}"),
        };
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i * i));
        }
        assert!(x > 0);
        let ns = counter.read().unwrap().scaled();
        assert!(ns > 100_000, "5M iterations take more than 0.1 ms: {ns} ns");
    }
}

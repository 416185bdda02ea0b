//! The kernel's view of each system in a steady scenario, as Markdown tables:
//! - [`software_table`]: `perf stat` software counters over every main run's sending window
//!   (task-clock, context switches, CPU migrations, page faults, syscalls), per delivered
//!   message, and which counters this machine could not read;
//! - [`syscall_table`]: the syscalls one by one per delivered message, from a separate run
//!   per system (its overhead is measured against the main runs and stated).
//!
//! Pure functions of the runs: no I/O.

use std::fmt::Write as _;

use crate::compare::{System, WindowRun};
use crate::versus::{median, spread, SystemRuns};

/// Syscalls named per system in [`syscall_table`]; the rest are summed as "rest".
pub const TOP_SYSCALLS: usize = 6;

/// The software-counter table of one scenario's main runs, per delivered message.
pub fn software_table(all: &SystemRuns) -> String {
    software_table_per(all, "msg", &|w| w.delivered())
}

/// The software-counter table of one scenario's runs, per `unit` (`per` of them in a run).
pub fn software_table_per(all: &SystemRuns, unit: &str, per: &dyn Fn(&WindowRun) -> f64) -> String {
    let mut md = format!("perf software counters of the server over the same windows (`perf stat -e task-clock,context-switches,cpu-migrations,page-faults,raw_syscalls:sys_enter,cycles,instructions -p PID`, every thread, counted in the kernel; task-clock runs from perf's start to the window's end, while the /proc column spans the whole window at 10 ms tick resolution, perf's start-up included):\n\n| system | task-clock µs/{unit} | CPU µs/{unit} (/proc) | context switches/{unit} | CPU migrations (window) | page faults/{unit} | syscalls/{unit} | counters not readable here |\n|---|---:|---:|---:|---:|---:|---:|---|\n");
    let each = |w: &WindowRun, x: Option<f64>| match (x, per(w)) {
        (Some(x), n) if n > 0.0 => x / n,
        _ => f64::NAN,
    };
    for (sys, runs) in all {
        let col = |f: &dyn Fn(&WindowRun) -> f64| -> Vec<f64> { runs.iter().map(f).collect() };
        let perf = |event: &'static str| col(&move |w| each(w, w.server_perf.get(event)));
        let mut missing: Vec<String> = runs
            .iter()
            .flat_map(|w| w.server_perf.unreadable())
            .collect();
        missing.sort();
        missing.dedup();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            sys.name(),
            // task-clock is in ms.
            spread(&perf("task-clock"), 0.001, 1),
            spread(&col(&|w| each(w, Some(w.server.cpu_us() as f64))), 1.0, 1),
            spread(&perf("context-switches"), 1.0, 3),
            spread(
                &col(&|w| w.server_perf.get("cpu-migrations").unwrap_or(f64::NAN)),
                1.0,
                0
            ),
            spread(&perf("page-faults"), 1.0, 4),
            spread(&perf(crate::perf_stat::SYSCALLS_ALL), 1.0, 2),
            if missing.is_empty() {
                "none".to_string()
            } else {
                missing.join(", ")
            },
        );
    }
    md.push('\n');
    md
}

/// Calls per delivered message below this are summed into "rest" rather than named.
const NAMED_PER_MSG_MIN: f64 = 0.01;

/// `name n.nn` for the top syscalls per delivered message (at least
/// [`NAMED_PER_MSG_MIN`] each), the rest summed.
fn top_syscalls(w: &WindowRun) -> String {
    let all = w.server_perf.syscalls_by_name();
    if all.is_empty() {
        return "n/a".into();
    }
    let named = all
        .iter()
        .take(TOP_SYSCALLS)
        .take_while(|(_, n)| w.per_msg_f(*n) >= NAMED_PER_MSG_MIN)
        .count();
    let mut parts: Vec<String> = all[..named]
        .iter()
        .map(|(name, n)| format!("{name} {:.2}", w.per_msg_f(*n)))
        .collect();
    let rest = w.per_msg_f(all[named..].iter().map(|x| x.1).sum());
    if rest >= NAMED_PER_MSG_MIN {
        parts.push(format!("rest {rest:.2}"));
    } else if rest > 0.0 {
        parts.push(format!("rest < {NAMED_PER_MSG_MIN}"));
    }
    parts.join(", ")
}

/// The per-syscall table: one separate run per system (`counted`), compared with the main
/// runs (`main`) for the overhead of counting every syscall by name.
pub fn syscall_table(counted: &[(System, WindowRun)], main: &SystemRuns) -> String {
    let mut md = format!("Syscalls by name per delivered message, from one separate run per system with `perf stat -e syscalls:sys_enter_<name>,…,raw_syscalls:sys_enter -p PID` ({} named calls; \"other\" is the total minus them). Counting is in the kernel (no ptrace stop per call as with `strace -c -f`, which slowed a syscall-bound process about 50× here, nor a ring buffer read as with `perf trace -s`), but perf needs a second or so to open ~35 events per thread, which the window absorbs; the overhead column compares this run's server CPU per message with the main runs' median (noisy on this shared 2-CPU VM):\n\n| system | top syscalls per delivered message | syscalls/msg (this run) | server CPU µs/msg: this run / main runs |\n|---|---|---:|---:|\n", crate::perf_stat::SYSCALL_NAMES.len());
    for (sys, w) in counted {
        let base = main
            .iter()
            .find(|(s, _)| s == sys)
            .map(|(_, rs)| median(rs.iter().map(|r| r.per_msg(r.server.cpu_us())).collect()))
            .unwrap_or(f64::NAN);
        let here = w.per_msg(w.server.cpu_us());
        let _ = writeln!(
            md,
            "| {} | {} | {} | {here:.1} / {base:.1} ({:+.0} %) |",
            sys.name(),
            top_syscalls(w),
            spread(&[w.perf_per_msg(crate::perf_stat::SYSCALLS_ALL)], 1.0, 2),
            100.0 * (here / base - 1.0),
        );
    }
    md.push('\n');
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf_stat::parse;
    use crate::proc_stats::ProcSample;

    /// A run that delivered 1,000 messages with `perf`'s output `text` and 2 ms of CPU.
    fn run(text: &str) -> WindowRun {
        WindowRun {
            report: serde_json::json!({"delivered_per_s": 100.0, "params": {"duration_s": 10.0}}),
            server: ProcSample {
                user_us: 1_000,
                sys_us: 1_000,
                ..ProcSample::default()
            },
            farm: ProcSample::default(),
            server_rss_before: 0,
            server_rss_connected: 0,
            window_s: 10.0,
            server_hwm_connected: 0,
            server_perf: parse(text),
        }
    }

    #[test]
    fn top_syscalls_are_per_message_largest_first_with_the_rest_summed() {
        let mut text = String::new();
        for (i, name) in crate::perf_stat::SYSCALL_NAMES.iter().take(8).enumerate() {
            text += &format!("{},,syscalls:sys_enter_{name},1,100.00,,\n", (i + 1) * 100);
        }
        text += "4000,,raw_syscalls:sys_enter,1,100.00,,\n";
        let w = run(&text);
        // 8 named calls, 100..800 each (3,600 in all), 400 other, over 1,000 messages.
        let s = top_syscalls(&w);
        assert!(s.starts_with("writev 0.80, readv 0.70, "), "{s}");
        assert!(s.contains("other 0.40"), "{s}");
        assert!(s.ends_with("rest 0.60"), "300 + 200 + 100: {s}");
    }

    #[test]
    fn calls_too_rare_to_show_are_summed_as_rest() {
        let w = run("3000,,syscalls:sys_enter_read,1,100.00,,\n4,,syscalls:sys_enter_mmap,1,100.00,,\n3004,,raw_syscalls:sys_enter,1,100.00,,\n");
        assert_eq!(top_syscalls(&w), "read 3.00, rest < 0.01");
    }

    #[test]
    fn the_syscall_table_states_the_overhead_against_the_main_runs() {
        let counted = run("3000,,syscalls:sys_enter_io_uring_enter,1,100.00,,\n3000,,raw_syscalls:sys_enter,1,100.00,,\n");
        let mut main = run("");
        main.server.user_us = 500;
        main.server.sys_us = 500;
        let md = syscall_table(
            &[(System::Switchboard, counted)],
            &vec![(System::Switchboard, vec![main])],
        );
        assert!(
            md.contains("| Switchboard | io_uring_enter 3.00 | 3.00 | 2.0 / 1.0 (+100 %) |"),
            "{md}"
        );
    }

    #[test]
    fn the_software_table_names_what_could_not_be_read() {
        let w = run("2.5,msec,task-clock,1,100.00,,\n7,,cpu-migrations,1,100.00,,\n<not supported>,,cycles,0,100.00,,\n");
        let md = software_table(&vec![(System::Nats, vec![w])]);
        assert!(md.contains("| NATS | 2.5 | 2.0 |"), "{md}");
        assert!(md.contains("| 7 |"), "{md}");
        assert!(md.contains("cycles (not supported)"), "{md}");
    }
}

//! `pmc`: per-thread counters for a command or a running process, pmcstat-style.
//!
//! - `pmc [--json] -- CMD ARGS…` runs CMD and, when it exits, prints process-wide perf counts
//!   (the command and its descendants, counted with `inherit` from its `exec`) and a
//!   per-thread table from /proc sampled every [`RUN_SAMPLE_MS`] until it exits.
//! - `pmc --pid PID [--interval-ms 1000] [--count 10]` prints one per-thread table (perf
//!   counts per thread, plus /proc) every interval, `--count` times.
//! - `pmc --top --pid PID` redraws that table in place, busiest thread first.
//!
//! Hardware events (cycles, instructions, cache, dTLB, iTLB and L1i misses, branch misses) are tried
//! first; each one the kernel refuses gets a `NAME: not supported (…)` line with the reason,
//! and the software counters and /proc numbers are reported regardless.

use std::collections::BTreeMap;
use std::io::Write;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use perf::launch;
use perf::perf_event::{self, Counter, Event, OpenError, Target};
use perf::report::{self, Row};
use perf::sampler::{Sampler, THREADS_MAX};
use perf::schedstat::{self, ThreadSample};

/// How often /proc is read while a command runs; threads living less than this may be missed.
const RUN_SAMPLE_MS: u64 = 50;
/// Bounds on `--interval-ms`.
const INTERVAL_MS_MIN: u64 = 10;
const INTERVAL_MS_MAX: u64 = 3_600_000;
/// Bounds on `--count`, and its defaults.
const COUNT_MAX: u32 = 100_000;
const COUNT_DEFAULT: u32 = 10;
const TOP_COUNT_DEFAULT: u32 = 60;
const _: () = assert!(COUNT_DEFAULT <= COUNT_MAX && TOP_COUNT_DEFAULT <= COUNT_MAX);

#[derive(Parser)]
#[command(
    name = "pmc",
    about = "Per-thread hardware/software counters for a command (pmc -- CMD) or a process \
             (pmc --pid PID)"
)]
struct Args {
    /// Sample this running process (one row per thread) instead of running a command.
    #[arg(long)]
    pid: Option<i32>,
    /// Milliseconds between samples with --pid / --top.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Samples to take with --pid (default 10) or --top (default 60).
    #[arg(long)]
    count: Option<u32>,
    /// Redraw the table in place each interval, busiest thread first (needs --pid).
    #[arg(long, requires = "pid")]
    top: bool,
    /// Print JSON (one object per sample) instead of tables.
    #[arg(long)]
    json: bool,
    /// The command to run and count, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match (args.pid, args.command.is_empty()) {
        (Some(_), false) => bail!("give either --pid PID or -- CMD, not both"),
        (None, true) => bail!("nothing to count: give -- CMD ARGS… or --pid PID"),
        (Some(pid), true) => watch(pid, &args),
        (None, false) => {
            let code = run(&args.command, args.json)?;
            std::process::exit(code);
        }
    }
}

/// `pmc -- CMD`: returns the command's exit code.
fn run(command: &[String], json: bool) -> anyhow::Result<i32> {
    let child = launch::spawn_gated(command)?;
    let (counters, unavailable) = open_for_child(child.pid());
    let started = Instant::now();
    let running = child.release()?;
    let pid = running.pid();
    let mut threads: BTreeMap<i32, ThreadSample> = BTreeMap::new();
    loop {
        // Check before sampling, so the last sample is taken after the exit, from the zombie.
        let exited = running.has_exited().context("waitid on the command")?;
        for sample in schedstat::sample_process(pid, THREADS_MAX).unwrap_or_default() {
            threads.insert(sample.tid, sample);
        }
        if exited {
            break;
        }
        sleep(Duration::from_millis(RUN_SAMPLE_MS));
    }
    let wall = started.elapsed();
    let code = running.reap()?;
    let totals: Vec<(Event, u64)> = counters
        .iter()
        .filter_map(|c| Some((c.event, c.read().ok()?.scaled())))
        .collect();
    let rows: Vec<Row> = threads
        .into_values()
        .map(|s| Row::from_sample(s, Vec::new()))
        .collect();
    let wall_ns = u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX);
    let out = if json {
        format!(
            "{{\"command\":[{}],\"exit_code\":{code},\"wall_ns\":{wall_ns},\"totals\":{},\
             \"unavailable\":{},\"threads\":{}}}\n",
            command
                .iter()
                .map(|a| report::json_str(a))
                .collect::<Vec<_>>()
                .join(","),
            report::totals_json(&totals),
            report::unavailable_json(&unavailable),
            report::rows_json(&[], &rows)
        )
    } else {
        let user_only: Vec<Event> = counters
            .iter()
            .filter(|c| c.user_only)
            .map(|c| c.event)
            .collect();
        format!(
            "pmc: `{}` exited with {code} after {:.3} s\n{}{}\nprocess totals (the command and \
             its descendants, from exec):\n{}\nthreads (from /proc, each thread's whole life, \
             sampled every {RUN_SAMPLE_MS} ms):\n{}",
            command.join(" "),
            wall.as_secs_f64(),
            report::unavailable_lines(&unavailable),
            user_only_lines(&user_only),
            report::process_totals(&totals),
            report::thread_table(&[], &rows, wall_ns)
        )
    };
    print!("{out}");
    Ok(code)
}

/// Opens every event on the gated child with inherit + enable-on-exec.
fn open_for_child(pid: i32) -> (Vec<Counter>, Vec<OpenError>) {
    let mut counters = Vec::new();
    let mut unavailable = Vec::new();
    for event in Event::ALL {
        match perf_event::open(event, Target::ChildOnExec(pid)) {
            Ok(c) => counters.push(c),
            Err(e) => unavailable.push(e),
        }
    }
    (counters, unavailable)
}

fn user_only_lines(events: &[Event]) -> String {
    let level = perf_event::paranoid_level().map_or("?".to_string(), |p| p.to_string());
    events
        .iter()
        .map(|e| {
            format!(
                "{}: user space only (kernel.perf_event_paranoid = {level})\n",
                e.name()
            )
        })
        .collect()
}

/// `pmc --pid PID` and `pmc --top --pid PID`.
fn watch(pid: i32, args: &Args) -> anyhow::Result<()> {
    if !(INTERVAL_MS_MIN..=INTERVAL_MS_MAX).contains(&args.interval_ms) {
        bail!(
            "--interval-ms {} is outside {INTERVAL_MS_MIN}..={INTERVAL_MS_MAX}",
            args.interval_ms
        );
    }
    let count = args.count.unwrap_or(if args.top {
        TOP_COUNT_DEFAULT
    } else {
        COUNT_DEFAULT
    });
    if !(1..=COUNT_MAX).contains(&count) {
        bail!("--count {count} is outside 1..={COUNT_MAX}");
    }
    let mut sampler = Sampler::attach(pid, &Event::ALL)
        .with_context(|| format!("attaching to process {pid} (/proc/{pid}/task)"))?;
    let preamble = format!(
        "{}{}",
        report::unavailable_lines(sampler.unavailable()),
        user_only_lines(sampler.user_only())
    );
    if !args.json && !args.top {
        print!("{preamble}");
    }
    let mut last = Instant::now();
    for i in 1..=count {
        sleep(Duration::from_millis(args.interval_ms));
        let Ok(mut rows) = sampler.sample() else {
            eprintln!("pmc: process {pid} exited");
            break;
        };
        let span_ns = u64::try_from(last.elapsed().as_nanos()).unwrap_or(u64::MAX);
        last = Instant::now();
        let table = report::thread_table(sampler.events(), &rows, span_ns);
        let out = if args.json {
            format!(
                "{{\"sample\":{i},\"pid\":{pid},\"span_ns\":{span_ns},\"unavailable\":{},\
                 \"threads\":{}}}\n",
                report::unavailable_json(sampler.unavailable()),
                report::rows_json(sampler.events(), &rows)
            )
        } else if args.top {
            rows.sort_by(|a, b| b.cpu_ns.cmp(&a.cpu_ns).then(a.tid.cmp(&b.tid)));
            let table = report::thread_table(sampler.events(), &rows, span_ns);
            format!("\x1b[H\x1b[2Jpmc --top: pid {pid}, sample {i}/{count}, {:.3} s\n{preamble}\n{table}", span_ns as f64 / 1e9)
        } else {
            format!(
                "\n--- sample {i}/{count}: pid {pid}, {:.3} s ---\n{table}",
                span_ns as f64 / 1e9
            )
        };
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
    }
    Ok(())
}

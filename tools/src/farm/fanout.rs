//! The parent side of the farm: re-execute this binary as `--procs` workers, move them
//! through the phases together, and merge their results into one [`Report`].
//!
//! Line protocol (see [`super::worker`]): the parent writes a [`Hello`] line, then waits for
//! every worker's `ready` → writes `go` to all; waits for every `sent` → writes `drain` to
//! all; waits for every `result`. The barriers keep one worker's late senders from writing to
//! another worker's already closed recipients, which would look like loss. A worker that
//! exits without a result counts as a failure and no longer holds the barriers.
//!
//! Bounded: past `ramp_timeout + duration + 2 × drain + GRACE` the parent sends `stop`, and
//! `KILL_AFTER` later kills the workers that are left.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::ledger::Ledger;
use crate::progress::Progress;
use crate::report::{Report, Timings};
use crate::stats::Stats;
use crate::workload::{secs, Spec};

use super::driver::Snapshot;
use super::interval::Intervals;
use super::worker::{sum, Hello, WorkerEvent};

/// Slack on top of the run's phases before the parent stops the workers.
const GRACE: Duration = Duration::from_secs(60);
/// After `stop`, how long workers get to report before they are killed.
const KILL_AFTER: Duration = Duration::from_secs(15);

struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    ready: bool,
    sent: bool,
    done: bool,
}

impl Worker {
    fn say(&mut self, line: &str) {
        if let Some(s) = &mut self.stdin {
            if writeln!(s, "{line}").and_then(|_| s.flush()).is_err() {
                self.stdin = None;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Ramp,
    Run,
    Drain,
}

/// Runs the farm: `exe worker_args…` is how to start one worker. Returns the report.
pub fn run_farm(
    spec: &Spec,
    exe: &Path,
    worker_args: &[&str],
    quiet: bool,
) -> anyhow::Result<Report> {
    let (tx, rx) = mpsc::channel::<(usize, Option<WorkerEvent>)>();
    let mut workers = Vec::new();
    for w in 0..spec.procs {
        let mut child = Command::new(exe)
            .args(worker_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting worker {w} ({}): {e}", exe.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<WorkerEvent>(&line) {
                    Ok(ev) => {
                        let _ = tx.send((w, Some(ev)));
                    }
                    Err(e) => eprintln!("farm: worker {w}: unreadable line ({e}): {line}"),
                }
            }
            let _ = tx.send((w, None));
        });
        let mut worker = Worker {
            stdin: child.stdin.take(),
            child,
            ready: false,
            sent: false,
            done: false,
        };
        worker.say(&serde_json::to_string(&Hello {
            worker: w,
            spec: spec.clone(),
        })?);
        workers.push(worker);
    }
    drop(tx);
    let result = drive(spec, &mut workers, &rx, quiet);
    for w in &mut workers {
        if w.done {
            let _ = w.child.wait();
        } else {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
    }
    result
}

fn drive(
    spec: &Spec,
    workers: &mut [Worker],
    rx: &mpsc::Receiver<(usize, Option<WorkerEvent>)>,
    quiet: bool,
) -> anyhow::Result<Report> {
    let start = Instant::now();
    let stop_at = start + secs(spec.ramp_timeout_s + spec.duration_s + 2.0 * spec.drain_s) + GRACE;
    let mut stage = Stage::Ramp;
    let mut stopped = false;
    let mut timings = crate::report::Timings::default();
    let mut run_start = start;
    let mut snaps = vec![Snapshot::default(); workers.len()];
    let mut stats = Stats::default();
    let mut ledger = Ledger::default();
    let mut failures = 0u64;
    let mut progress = Progress::new(spec.conns, quiet);
    let mut intervals = None;
    while workers.iter().any(|w| !w.done) {
        let now = Instant::now();
        if now >= stop_at && !stopped {
            eprintln!("farm: run overdue, stopping workers");
            workers.iter_mut().for_each(|w| w.say("stop"));
            stopped = true;
        }
        if now >= stop_at + KILL_AFTER {
            eprintln!("farm: workers did not report, killing them");
            break;
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok((w, Some(ev))) => match ev {
                WorkerEvent::Ready => workers[w].ready = true,
                WorkerEvent::Sent => workers[w].sent = true,
                WorkerEvent::Progress(s) => snaps[w] = s,
                WorkerEvent::Result {
                    stats: s,
                    ledger: l,
                } => {
                    stats.merge(&Stats::from_wire(&s));
                    ledger.merge(*l);
                    workers[w].done = true;
                }
                WorkerEvent::Failed { error } => eprintln!("farm: worker {w} failed: {error}"),
            },
            Ok((w, None)) => {
                if !workers[w].done {
                    eprintln!("farm: worker {w} exited without a result");
                    failures += 1;
                    let x = &mut workers[w];
                    (x.done, x.ready, x.sent) = (true, true, true);
                }
            }
            Err(_) => {}
        }
        let live = |f: fn(&Worker) -> bool| workers.iter().all(|w| w.done || f(w));
        if stage == Stage::Ramp && live(|w| w.ready) {
            timings.ramp_s = start.elapsed().as_secs_f64();
            run_start = Instant::now();
            workers.iter_mut().for_each(|w| w.say("go"));
            // Observers (the bench) sample CPU over exactly the sending window from here.
            println!("farm: sending started ({:.3} s)", spec.duration_s);
            intervals = (spec.interval_s > 0.0).then(|| Intervals::new(spec.interval_s, run_start));
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            stage = Stage::Run;
        } else if stage == Stage::Run && live(|w| w.sent) {
            timings.measured_s = run_start.elapsed().as_secs_f64();
            workers.iter_mut().for_each(|w| w.say("drain"));
            stage = Stage::Drain;
        }
        let name = match stage {
            Stage::Ramp => "ramp",
            Stage::Run => "run",
            Stage::Drain => "drain",
        };
        let total = sum(&snaps);
        if let Some(line) = intervals
            .as_mut()
            .and_then(|i| i.tick(Instant::now(), &total))
        {
            println!("{}", line.render());
            let _ = std::io::stdout().flush();
        }
        progress.show(name, &total);
    }
    progress.finish();
    if timings.measured_s == 0.0 && stage != Stage::Ramp {
        timings.measured_s = run_start.elapsed().as_secs_f64();
    }
    failures += workers.iter().filter(|w| !w.done).count() as u64;
    let verdict = ledger.verify();
    Ok(Report::build(
        spec,
        &stats,
        &verdict,
        Timings { ..timings },
        failures,
    ))
}

//! One worker process: reads its [`Hello`] from stdin, runs `spec.threads` driver threads,
//! and speaks the worker side of the line protocol (see [`super::fanout`]).
//!
//! Worker → parent (stdout, one JSON [`WorkerEvent`] per line): `ready` once every thread
//! ramped, `progress` every second, `sent` once every thread stopped sending and has its
//! acks, then `result` with the stats and ledger. Parent → worker (stdin lines): `go`,
//! `drain`, `stop`. If stdin closes (the parent died) the worker stops at once.

use std::io::{BufRead, Write};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::ledger::Ledger;
use crate::net::TlsClient;
use crate::stats::{Stats, StatsWire};
use crate::workload::{secs, Spec};

use super::driver::{Command, Driver, Snapshot, ThreadEvent};

/// The first stdin line of a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// This worker's index, `0..spec.procs`.
    pub worker: usize,
    /// The run.
    pub spec: Spec,
}

/// A worker's stdout line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorkerEvent {
    /// Every thread finished its ramp.
    Ready,
    /// Sum over threads.
    Progress(Snapshot),
    /// Every thread stopped sending and has its acks (or gave up waiting).
    Sent,
    /// Final results.
    Result {
        /// Everything measured.
        stats: StatsWire,
        /// Exactly-once records (boxed: the largest variant by far).
        ledger: Box<Ledger>,
    },
    /// The worker could not run.
    Failed {
        /// Why.
        error: String,
    },
}

fn emit(ev: &WorkerEvent) {
    // Invariant: these types always serialise (no maps with non-string keys).
    let line = serde_json::to_string(ev).expect("worker events serialise");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs a worker to completion (stdin/stdout are the parent's pipes).
pub fn run_worker() -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let mut first = String::new();
    stdin.lock().read_line(&mut first)?;
    let hello: Hello = match serde_json::from_str(&first) {
        Ok(h) => h,
        Err(e) => {
            emit(&WorkerEvent::Failed {
                error: format!("bad hello line: {e}"),
            });
            anyhow::bail!("bad hello line: {e}");
        }
    };
    match work(hello) {
        Ok(()) => Ok(()),
        Err(e) => {
            emit(&WorkerEvent::Failed {
                error: format!("{e:#}"),
            });
            Err(e)
        }
    }
}

fn work(hello: Hello) -> anyhow::Result<()> {
    let spec = Arc::new(hello.spec);
    let tls = match &spec.tls_ca {
        Some(ca) if spec.tls_resume => Some(TlsClient::resuming(ca, &spec.server_name)?),
        Some(ca) => Some(TlsClient::trusting(ca, &spec.server_name)?),
        None => None,
    };
    let (ev_tx, ev_rx) = mpsc::channel();
    let mut cmd_txs = Vec::new();
    let mut handles = Vec::new();
    for t in 0..spec.threads {
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let driver = Driver::new(
            spec.clone(),
            hello.worker,
            t,
            tls.clone(),
            cmd_rx,
            ev_tx.clone(),
        )?;
        cmd_txs.push(cmd_tx);
        handles.push(
            std::thread::Builder::new()
                .name(format!("farm-{}-{t}", hello.worker))
                .spawn(move || driver.run())?,
        );
    }
    drop(ev_tx);
    spawn_stdin_reader(cmd_txs);
    let result = gather(&spec, ev_rx);
    for h in handles {
        let _ = h.join();
    }
    let (stats, ledger) = result?;
    emit(&WorkerEvent::Result {
        stats: stats.to_wire(),
        ledger: Box::new(ledger),
    });
    Ok(())
}

/// Forwards stdin commands to every thread; EOF means stop.
fn spawn_stdin_reader(cmd_txs: Vec<Sender<Command>>) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            let cmd = match stdin.lock().read_line(&mut line) {
                Ok(0) | Err(_) => Command::Stop,
                Ok(_) => match line.trim() {
                    "go" => Command::Go,
                    "drain" => Command::Drain,
                    _ => Command::Stop,
                },
            };
            for tx in &cmd_txs {
                let _ = tx.send(cmd);
            }
            if cmd == Command::Stop {
                return;
            }
        }
    });
}

/// Collects thread events until every thread is done; bounded by the run's total time.
fn gather(spec: &Spec, ev_rx: mpsc::Receiver<ThreadEvent>) -> anyhow::Result<(Stats, Ledger)> {
    let n = spec.threads;
    let deadline = Instant::now()
        + secs(spec.ramp_timeout_s + spec.duration_s + 2.0 * spec.drain_s)
        + Duration::from_secs(120);
    let (mut ready, mut sent, mut done) = (0, 0, 0);
    let mut snaps = vec![Snapshot::default(); n];
    let mut stats = Stats::default();
    let mut ledger = Ledger::default();
    let mut last_progress = Instant::now();
    while done < n {
        let wait = deadline.saturating_duration_since(Instant::now());
        match ev_rx.recv_timeout(wait.min(Duration::from_secs(1))) {
            Ok(ThreadEvent::Ready(_)) => {
                ready += 1;
                if ready == n {
                    emit(&WorkerEvent::Ready);
                }
            }
            Ok(ThreadEvent::Sent(_)) => {
                sent += 1;
                if sent == n {
                    emit(&WorkerEvent::Sent);
                }
            }
            Ok(ThreadEvent::Progress(t, s)) => snaps[t] = s,
            Ok(ThreadEvent::Done(_, s, l)) => {
                done += 1;
                stats.merge(&s);
                ledger.merge(l);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            emit(&WorkerEvent::Progress(sum(&snaps)));
            last_progress = Instant::now();
        }
        if Instant::now() >= deadline {
            anyhow::bail!("worker threads did not finish in time");
        }
    }
    if done < n {
        anyhow::bail!("{} worker threads exited without results", n - done);
    }
    Ok((stats, ledger))
}

/// Adds thread snapshots (p99s: the worst thread's; histograms merged).
pub fn sum(snaps: &[Snapshot]) -> Snapshot {
    let mut total = Snapshot::default();
    if snaps.iter().any(|s| !s.delivery.is_empty()) {
        let mut h = crate::stats::Latency::default();
        snaps
            .iter()
            .for_each(|s| h.merge(&crate::stats::Latency::from_pairs(&s.delivery)));
        total.delivery = h.to_pairs();
    }
    for s in snaps {
        total.up += s.up;
        total.connecting += s.connecting;
        total.counters.add(&s.counters);
        total.ack_p99_us = total.ack_p99_us.max(s.ack_p99_us);
        total.delivery_p99_us = total.delivery_p99_us.max(s.delivery_p99_us);
    }
    total
}

//! The farm's terminal progress line: connections up, message rates, p99s, errors.
//!
//! On a terminal the line rewrites itself (`\r`) every second; into a pipe or file a full
//! line is printed every [`PIPE_EVERY`] so logs stay short.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::farm::driver::Snapshot;

/// Period of progress lines when stderr is not a terminal.
pub const PIPE_EVERY: Duration = Duration::from_secs(5);

/// Prints progress to stderr.
pub struct Progress {
    tty: bool,
    quiet: bool,
    start: Instant,
    last_print: Option<Instant>,
    last: Option<(Instant, u64, u64)>,
    total_conns: u64,
}

impl Progress {
    /// `quiet` prints nothing.
    pub fn new(total_conns: u64, quiet: bool) -> Progress {
        // SAFETY: isatty only inspects the descriptor.
        let tty = unsafe { libc::isatty(2) } == 1;
        Progress {
            tty,
            quiet,
            start: Instant::now(),
            last_print: None,
            last: None,
            total_conns,
        }
    }

    /// Shows `s` (the farm's sum) in stage `stage`, if it is time to.
    pub fn show(&mut self, stage: &str, s: &Snapshot) {
        let now = Instant::now();
        let every = if self.tty {
            Duration::from_secs(1)
        } else {
            PIPE_EVERY
        };
        if self.quiet || self.last_print.is_some_and(|t| now - t < every) {
            return;
        }
        self.last_print = Some(now);
        let c = &s.counters;
        let (sent_rate, ack_rate) = match self.last {
            Some((t, sent, acked)) => {
                let dt = (now - t).as_secs_f64().max(1e-3);
                (
                    (c.messages_sent - sent.min(c.messages_sent)) as f64 / dt,
                    (c.server_acked - acked.min(c.server_acked)) as f64 / dt,
                )
            }
            None => (0.0, 0.0),
        };
        self.last = Some((now, c.messages_sent, c.server_acked));
        let line = line(
            (now - self.start).as_secs_f64(),
            stage,
            s,
            self.total_conns,
            sent_rate,
            ack_rate,
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{line}\x1b[K");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Ends the rewriting line.
    pub fn finish(&self) {
        if self.tty && !self.quiet && self.last_print.is_some() {
            eprintln!();
        }
    }
}

/// One progress line.
pub fn line(
    t: f64,
    stage: &str,
    s: &Snapshot,
    total: u64,
    sent_rate: f64,
    ack_rate: f64,
) -> String {
    let c = &s.counters;
    format!(
        "[{t:6.1}s] {stage:<6} up {}/{total} (+{} connecting, {} errors) | sent {} ({sent_rate:.0}/s) \
         acked {} ({ack_rate:.0}/s) delivered {} | p99 ack {:.1}ms delivery {:.1}ms",
        s.up,
        s.connecting,
        c.connect_errors + c.send_errors,
        c.messages_sent,
        c.server_acked,
        c.delivered,
        s.ack_p99_us as f64 / 1000.0,
        s.delivery_p99_us as f64 / 1000.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_the_numbers() {
        let mut s = Snapshot {
            up: 10,
            ack_p99_us: 1500,
            ..Snapshot::default()
        };
        s.counters.messages_sent = 7;
        let l = line(1.0, "run", &s, 20, 3.0, 2.0);
        assert!(l.contains("up 10/20"), "{l}");
        assert!(l.contains("sent 7 (3/s)"), "{l}");
        assert!(l.contains("p99 ack 1.5ms"), "{l}");
    }
}

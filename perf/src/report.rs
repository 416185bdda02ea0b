//! Turning counts into text: a per-thread table for people, JSON for programs.
//!
//! Pure functions of their inputs (no I/O, no clock), so the layout is tested directly.
//! Columns for unavailable events are left out of the table; those events are listed above it
//! by [`unavailable_lines`], one line each with the reason. The JSON is hand-written (a few
//! numbers and names) to keep `perf` free of a serializer dependency.

use std::fmt::Write as _;

use crate::perf_event::{Event, OpenError};
use crate::proc_stats::clock_ticks_per_second;
use crate::schedstat::ThreadSample;

/// One thread's counts over a span (an interval, or a whole run).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Thread id.
    pub tid: i32,
    /// Thread name.
    pub comm: String,
    /// State letter at the end of the span.
    pub state: char,
    /// CPU it last ran on.
    pub last_cpu: i32,
    /// Time on CPU, ns (schedstat run time, else user+system ticks).
    pub cpu_ns: u64,
    /// Time runnable but waiting for a CPU, ns; `None` without schedstat.
    pub wait_ns: Option<u64>,
    /// Timeslices; `None` without schedstat.
    pub timeslices: Option<u64>,
    /// Minor page faults.
    pub minflt: u64,
    /// Major page faults.
    pub majflt: u64,
    /// perf counts aligned with the report's event list; `None` if this thread's open failed.
    pub counts: Vec<Option<u64>>,
}

impl Row {
    /// A row from a /proc sample (already a delta) and perf counts.
    pub fn from_sample(s: ThreadSample, counts: Vec<Option<u64>>) -> Row {
        Row {
            tid: s.tid,
            cpu_ns: s.cpu_ns(clock_ticks_per_second()),
            wait_ns: s.sched.map(|x| x.wait_ns),
            timeslices: s.sched.map(|x| x.timeslices),
            state: s.stat.state,
            last_cpu: s.stat.processor,
            minflt: s.stat.minflt,
            majflt: s.stat.majflt,
            comm: s.stat.comm,
            counts,
        }
    }

    fn count(&self, events: &[Event], event: Event) -> Option<u64> {
        let i = events.iter().position(|&e| e == event)?;
        self.counts.get(i).copied().flatten()
    }
}

/// Instructions per cycle, when both were counted and cycles is nonzero.
pub fn ipc(cycles: Option<u64>, instructions: Option<u64>) -> Option<f64> {
    match (cycles, instructions) {
        (Some(c), Some(i)) if c > 0 => Some(i as f64 / c as f64),
        _ => None,
    }
}

/// One line per unavailable counter: `cycles: not supported (perf_event_open: … — …)`.
pub fn unavailable_lines(errors: &[OpenError]) -> String {
    errors.iter().fold(String::new(), |mut out, e| {
        let _ = writeln!(out, "{e}");
        out
    })
}

fn ms(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e6)
}

fn event_cell(event: Event, value: Option<u64>) -> String {
    match (event, value) {
        (_, None) => "-".to_string(),
        (Event::TaskClock, Some(ns)) => ms(ns),
        (_, Some(v)) => v.to_string(),
    }
}

/// The per-thread table. `span_ns` is the sampled span, for CPU% (100% = one core busy).
pub fn thread_table(events: &[Event], rows: &[Row], span_ns: u64) -> String {
    let show_ipc = events.contains(&Event::Cycles) && events.contains(&Event::Instructions);
    let mut header: Vec<String> = [
        "TID", "THREAD", "S", "CPU", "CPU%", "run-ms", "wait-ms", "slices", "minflt", "majflt",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(events.iter().map(|e| e.short().to_string()));
    if show_ipc {
        header.push("IPC".into());
    }
    let mut table = vec![header];
    for row in rows {
        let mut cells = vec![
            row.tid.to_string(),
            row.comm.clone(),
            row.state.to_string(),
            row.last_cpu.to_string(),
            format!("{:.1}", row.cpu_ns as f64 * 100.0 / span_ns.max(1) as f64),
            ms(row.cpu_ns),
            row.wait_ns.map_or("-".into(), ms),
            row.timeslices.map_or("-".into(), |t| t.to_string()),
            row.minflt.to_string(),
            row.majflt.to_string(),
        ];
        cells.extend(
            events
                .iter()
                .zip(&row.counts)
                .map(|(&e, &v)| event_cell(e, v)),
        );
        if show_ipc {
            let v = ipc(
                row.count(events, Event::Cycles),
                row.count(events, Event::Instructions),
            );
            cells.push(v.map_or("-".into(), |x| format!("{x:.2}")));
        }
        table.push(cells);
    }
    align(&table)
}

/// Left-aligns the name column, right-aligns numbers; two spaces between columns.
fn align(table: &[Vec<String>]) -> String {
    let cols = table.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            table
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
        })
        .map(|w| w.unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in table {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| match c {
                1 => format!("{cell:<w$}", w = widths[c]),
                _ => format!("{cell:>w$}", w = widths[c]),
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// Whole-process totals, `perf stat` style: one `value  name` line per counted event.
pub fn process_totals(counts: &[(Event, u64)]) -> String {
    let get = |e: Event| counts.iter().find(|(x, _)| *x == e).map(|&(_, v)| v);
    let mut out = String::new();
    for &(event, value) in counts {
        let shown = event_cell(event, Some(value));
        let unit = if event == Event::TaskClock { " ms" } else { "" };
        let _ = write!(out, "{shown:>16}{unit:<3}  {}", event.name());
        if event == Event::Instructions {
            if let Some(x) = ipc(get(Event::Cycles), Some(value)) {
                let _ = write!(out, "    # {x:.2} insn per cycle");
            }
        }
        out.push('\n');
    }
    out
}

/// A JSON string literal (the engine's escaper, shared by all hand-written JSON).
pub use engine::observe::stats_text::json_str;

fn json_opt(v: Option<u64>) -> String {
    v.map_or("null".into(), |x| x.to_string())
}

/// `[{"counter":"cycles","reason":"…"}, …]`
pub fn unavailable_json(errors: &[OpenError]) -> String {
    let items: Vec<String> = errors
        .iter()
        .map(|e| {
            format!(
                "{{\"counter\":{},\"errno\":{},\"reason\":{}}}",
                json_str(e.event.name()),
                e.errno,
                json_str(&e.reason())
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// `{"task-clock":123,…}` for whole-process totals.
pub fn totals_json(counts: &[(Event, u64)]) -> String {
    let items: Vec<String> = counts
        .iter()
        .map(|(e, v)| format!("{}:{v}", json_str(e.name())))
        .collect();
    format!("{{{}}}", items.join(","))
}

/// One JSON object per row; event counts keyed by event name.
pub fn rows_json(events: &[Event], rows: &[Row]) -> String {
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            let counts: Vec<String> = events
                .iter()
                .zip(&r.counts)
                .map(|(e, v)| format!("{}:{}", json_str(e.name()), json_opt(*v)))
                .collect();
            format!(
                "{{\"tid\":{},\"name\":{},\"state\":{},\"cpu\":{},\"run_ns\":{},\"wait_ns\":{},\
                 \"timeslices\":{},\"minflt\":{},\"majflt\":{},\"counters\":{{{}}}}}",
                r.tid,
                json_str(&r.comm),
                json_str(&r.state.to_string()),
                r.last_cpu,
                r.cpu_ns,
                json_opt(r.wait_ns),
                json_opt(r.timeslices),
                r.minflt,
                r.majflt,
                counts.join(",")
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tid: i32, comm: &str, counts: Vec<Option<u64>>) -> Row {
        Row {
            tid,
            comm: comm.into(),
            state: 'R',
            last_cpu: 1,
            cpu_ns: 500_000_000,
            wait_ns: Some(1_000_000),
            timeslices: Some(4),
            minflt: 9,
            majflt: 0,
            counts,
        }
    }

    #[test]
    fn table_has_one_line_per_thread_and_ipc_when_both_counted() {
        let events = [Event::Cycles, Event::Instructions, Event::TaskClock];
        let rows = [
            row(
                10,
                "shard-0-0",
                vec![Some(1000), Some(2500), Some(2_000_000)],
            ),
            row(11, "shard-1-0", vec![Some(0), Some(0), None]),
        ];
        let t = thread_table(&events, &rows, 1_000_000_000);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("IPC") && lines[0].contains("task-clk-ms"));
        assert!(
            lines[1].contains("shard-0-0") && lines[1].ends_with("2.50"),
            "{t}"
        );
        assert!(lines[1].contains(" 50.0 "), "500 ms of 1 s is 50%: {t}");
        assert!(lines[2].ends_with('-'), "no IPC from zero cycles: {t}");
    }

    #[test]
    fn json_escapes_and_keys_counters_by_name() {
        assert_eq!(json_str("a\"b\\\n"), "\"a\\\"b\\\\\\u000a\"");
        let j = rows_json(&[Event::PageFaults], &[row(1, "x", vec![Some(3)])]);
        assert!(j.contains("\"counters\":{\"page-faults\":3}"), "{j}");
        assert!(j.starts_with("[{\"tid\":1,"));
    }
}

//! The side-by-side charts of `bench` (every system on one chart, every run of a repeated
//! scenario plotted, not only the last): p99 and CPU per message against the offered rate,
//! latency by percentile per rate, bytes per idle connection. Each writes an SVG into the
//! report's directory and returns the Markdown that shows it.

use std::fmt::Write as _;
use std::path::Path;

use crate::compare::System;
use crate::plot::{line_chart, Series};
use crate::versus;

/// Every run's delivery p99 (µs) and server CPU per message (µs) of one system at one rate.
pub struct Curve {
    /// The system.
    pub system: System,
    /// Offered rate, msgs/s.
    pub rate: f64,
    /// Delivery p99 of each run, µs.
    pub p99: Vec<f64>,
    /// Server CPU per delivered message of each run, µs.
    pub cpu: Vec<f64>,
}

/// One chart per measure with every system on it: delivery p99 and server CPU per message
/// against the offered rate (every run plotted, not only the last).
pub fn versus_plots(dir: &Path, curves: &[Curve]) -> anyhow::Result<String> {
    let series = |pick: &dyn Fn(&Curve) -> &Vec<f64>, scale: f64| {
        crate::compare::SYSTEMS
            .iter()
            .filter_map(|sys| {
                let points: Vec<(f64, f64)> = curves
                    .iter()
                    .filter(|c| c.system == *sys)
                    .flat_map(|c| pick(c).iter().map(move |v| (c.rate, v / scale)))
                    .filter(|p| p.1.is_finite())
                    .collect();
                (!points.is_empty()).then(|| Series {
                    name: sys.name().into(),
                    points,
                })
            })
            .collect::<Vec<_>>()
    };
    let p99 = line_chart(
        "Delivery p99 vs offered rate (every run)",
        "offered msgs/s (log)",
        "ms",
        &series(&|c| &c.p99, 1000.0),
        true,
    );
    std::fs::write(dir.join("versus-p99.svg"), p99)?;
    let cpu = line_chart(
        "Server CPU per delivered message vs offered rate (every run)",
        "offered msgs/s (log)",
        "µs",
        &series(&|c| &c.cpu, 1.0),
        true,
    );
    std::fs::write(dir.join("versus-cpu.svg"), cpu)?;
    Ok("![p99 vs offered rate](versus-p99.svg)\n\n![CPU per message vs offered rate](versus-cpu.svg)\n\n".into())
}

/// Every run of every system as delivery latency (ms) against percentile.
pub fn percentile_series(runs: &versus::SystemRuns) -> Vec<Series> {
    let mut out = Vec::new();
    for (sys, rs) in runs {
        for (k, w) in rs.iter().enumerate() {
            let points = [
                (50.0, "p50"),
                (90.0, "p90"),
                (99.0, "p99"),
                (99.9, "p999"),
                (99.99, "p9999"),
            ]
            .iter()
            .map(|(p, key)| (*p, w.at(&["latency_us", "delivery", key]) / 1000.0))
            .collect();
            out.push(Series {
                name: format!("{} (run {})", sys.name(), k + 1),
                points,
            });
        }
    }
    out
}

/// One latency-percentile chart per offered rate, every system and run on it, on the
/// HdrHistogram axis.
pub fn percentile_plots(dir: &Path, per_rate: &[(u64, Vec<Series>)]) -> anyhow::Result<String> {
    let mut md = String::new();
    for (rate, series) in per_rate {
        let name = format!("versus-percentiles-{rate}.svg");
        let svg = crate::plot::percentile_chart(
            &format!("Delivery latency by percentile, {rate} msgs/s offered (every run)"),
            "ms",
            series,
        );
        std::fs::write(dir.join(&name), svg)?;
        let _ = writeln!(md, "![latency percentiles at {rate} msgs/s]({name})\n");
    }
    Ok(md)
}

/// Bytes per idle connection, one bar-like point per system.
pub fn memory_plot(dir: &Path, mem: &[(System, f64)]) -> anyhow::Result<String> {
    let series: Vec<Series> = mem
        .iter()
        .enumerate()
        .map(|(i, (s, b))| Series {
            name: s.name().into(),
            points: vec![(i as f64 + 1.0, *b)],
        })
        .collect();
    let svg = line_chart(
        "User-space bytes per idle connection (system 1..n as in the legend)",
        "system",
        "bytes",
        &series,
        false,
    );
    std::fs::write(dir.join("versus-idle-memory.svg"), svg)?;
    Ok("![bytes per idle connection](versus-idle-memory.svg)\n\n".into())
}

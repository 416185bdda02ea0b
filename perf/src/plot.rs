//! SVG charts for RESULTS.md, drawn with `plotters` (SVG backend only: deterministic text
//! output, no fonts or image codecs needed).
//!
//! - [`line_chart`]: y against x, linear or log10 x, one line per series (every system on
//!   one chart).
//! - [`percentile_chart`]: latency against percentile on the HdrHistogram axis, where x is
//!   log10(1 / (1 − p)) so 50 %, 90 %, 99 %, 99.9 % and 99.99 % are evenly apart (p50 and
//!   p99.9 no longer nearly touch).

use plotters::prelude::*;

/// One named series of (x, y) points.
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
}

const SIZE: (u32, u32) = (720, 405);
const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
];

fn nice_max(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

/// The HdrHistogram percentile axis: `p` in percent → log10(1 / (1 − p/100)).
pub fn percentile_x(p: f64) -> f64 {
    let q = (p / 100.0).clamp(0.0, 0.999_999);
    (1.0 / (1.0 - q)).log10()
}

/// A line chart; with `x_log` the x axis is log10 (points with x ≤ 0 are dropped).
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    x_log: bool,
) -> String {
    let map = |x: f64| if x_log { x.log10() } else { x };
    let label = |v: &f64| fmt_num(if x_log { 10f64.powf(*v) } else { *v });
    draw(title, x_label, y_label, series, &map, &label, None)
}

/// Values against percentiles (points are (percentile in %, value)) on the HdrHistogram
/// axis, ticks at 50, 90, 99, 99.9 and 99.99 %.
pub fn percentile_chart(title: &str, y_label: &str, series: &[Series]) -> String {
    let label = |v: &f64| {
        let p = 100.0 * (1.0 - 10f64.powf(-*v));
        let s = format!("{p:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string() + " %"
    };
    draw(
        title,
        "percentile",
        y_label,
        series,
        &percentile_x,
        &label,
        Some((0.0, 4.0, 5)),
    )
}

fn draw(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    map: &dyn Fn(f64) -> f64,
    x_fmt: &dyn Fn(&f64) -> String,
    x_range: Option<(f64, f64, usize)>,
) -> String {
    let mapped: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| {
            let pts = s
                .points
                .iter()
                .map(|&(x, y)| (map(x), y))
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            (s.name.clone(), pts)
        })
        .collect();
    let all = || mapped.iter().flat_map(|s| s.1.iter());
    let x_ticks = x_range.map_or(10, |r| r.2);
    let (x0, x1) = x_range.map(|r| (r.0, r.1)).unwrap_or_else(|| {
        let lo = all().map(|p| p.0).fold(f64::INFINITY, f64::min);
        let hi = all().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
        if lo.is_finite() && hi > lo {
            let pad = (hi - lo) * 0.05;
            (lo - pad, hi + pad)
        } else if lo.is_finite() {
            (lo - 1.0, lo + 1.0)
        } else {
            (0.0, 1.0)
        }
    });
    let y1 = nice_max(all().map(|p| p.1).fold(0.0, f64::max));
    let mut svg = String::new();
    // Invariant: drawing into a String cannot fail (no I/O, no fonts to load).
    render(
        &mut svg,
        title,
        x_label,
        y_label,
        &mapped,
        (x0, x1, x_ticks),
        y1,
        x_fmt,
    )
    .expect("drawing an SVG into a String");
    svg
}

#[allow(clippy::too_many_arguments)]
fn render(
    svg: &mut String,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    (x0, x1, x_ticks): (f64, f64, usize),
    y1: f64,
    x_fmt: &dyn Fn(&f64) -> String,
) -> Result<(), String> {
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, 0.0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(x_ticks)
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(x_fmt)
        .y_label_formatter(&|v| fmt_num(*v))
        .draw()
        .map_err(err)?;
    // Series named "X (run k)" share X's colour: every run of one system in one colour.
    let family = |name: &str| name.split(" (run").next().unwrap_or(name).to_string();
    let mut families: Vec<String> = Vec::new();
    for (name, pts) in series {
        let f = family(name);
        let i = families.iter().position(|x| *x == f).unwrap_or_else(|| {
            families.push(f);
            families.len() - 1
        });
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> Vec<Series> {
        vec![
            Series {
                name: "a".into(),
                points: vec![(1.0, 2.0), (2.0, 4.0)],
            },
            Series {
                name: "b".into(),
                points: vec![(1.0, 1.0), (2.0, 3.0)],
            },
        ]
    }

    #[test]
    fn chart_has_one_line_per_series_both_named_and_is_deterministic() {
        let svg = line_chart("t", "x", "y", &two(), false);
        for color in ["#1F77B4", "#D62728"] {
            let line = format!(r#"stroke="{color}" stroke-width="2""#);
            assert_eq!(svg.matches(&line).count(), 1, "one line per series: {svg}");
        }
        assert!(
            svg.contains("\na\n") && svg.contains("\nb\n"),
            "legend names"
        );
        assert_eq!(svg, line_chart("t", "x", "y", &two(), false));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn percentile_axis_spaces_nines_evenly() {
        let xs: Vec<f64> = [90.0, 99.0, 99.9, 99.99].map(percentile_x).to_vec();
        for w in xs.windows(2) {
            assert!((w[1] - w[0] - 1.0).abs() < 1e-9, "{xs:?}");
        }
        assert!((percentile_x(50.0) - 2f64.log10()).abs() < 1e-12);
        let svg = percentile_chart("p", "ms", &two());
        for tick in ["90 %", "99 %", "99.9 %", "99.99 %"] {
            assert!(svg.contains(&format!("\n{tick}\n")), "tick {tick}: {svg}");
        }
        assert!(!svg.contains("96.84 %"), "no ticks between the nines");
    }

    #[test]
    fn nice_max_rounds_up() {
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(12.0), 20.0);
        assert_eq!(nice_max(0.0), 1.0);
    }
}

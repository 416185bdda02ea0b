//! Minimal SVG line charts for RESULTS.md: no plotting dependency, deterministic output.

use std::fmt::Write;

/// One named series of (x, y) points.
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 640.0;
const H: f64 = 360.0;
const PAD: f64 = 56.0;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
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

/// A line chart with axes from 0 (or `x_log` for a log10 x axis).
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    x_log: bool,
) -> String {
    let fx = |x: f64| if x_log { x.max(1e-9).log10() } else { x };
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| fx(p.0)))
        .collect();
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .collect();
    let x_min = if x_log {
        xs.iter().cloned().fold(f64::INFINITY, f64::min).floor()
    } else {
        0.0
    };
    let x_max = if x_log {
        xs.iter()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max)
            .ceil()
            .max(x_min + 1.0)
    } else {
        nice_max(xs.iter().cloned().fold(0.0, f64::max))
    };
    let y_max = nice_max(ys.iter().cloned().fold(0.0, f64::max));
    let px = |x: f64| PAD + (fx(x) - x_min) / (x_max - x_min) * (W - 2.0 * PAD);
    let py = |y: f64| H - PAD - y / y_max * (H - 2.0 * PAD);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">{title}</text>
<line x1="{PAD}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">{x_label}</text>
<text x="14" y="{}" text-anchor="middle" transform="rotate(-90 14 {})">{y_label}</text>
"#,
        W / 2.0,
        H - PAD,
        W - PAD,
        H - PAD,
        H - PAD,
        W / 2.0,
        H - 12.0,
        H / 2.0,
        H / 2.0
    );
    for i in 0..=4 {
        let y = y_max * i as f64 / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            PAD - 4.0,
            py(y) + 4.0,
            fmt_num(y)
        );
        let xv = x_min + (x_max - x_min) * i as f64 / 4.0;
        let label = if x_log {
            fmt_num(10f64.powf(xv))
        } else {
            fmt_num(xv)
        };
        let xpix = PAD + (xv - x_min) / (x_max - x_min) * (W - 2.0 * PAD);
        let _ = writeln!(
            s,
            r#"<text x="{xpix}" y="{}" text-anchor="middle">{label}</text>"#,
            H - PAD + 16.0
        );
    }
    for (i, se) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        for &(x, y) in &se.points {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                px(x),
                py(y)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" fill="{color}">{}</text>"#,
            W - PAD - 150.0,
            PAD + 16.0 * i as f64,
            se.name
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_num(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_one_polyline_per_series_and_is_deterministic() {
        let series = vec![
            Series {
                name: "a".into(),
                points: vec![(1.0, 2.0), (2.0, 4.0)],
            },
            Series {
                name: "b".into(),
                points: vec![(1.0, 1.0), (2.0, 3.0)],
            },
        ];
        let svg = line_chart("t", "x", "y", &series, false);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg, line_chart("t", "x", "y", &series, false));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }

    #[test]
    fn nice_max_rounds_up() {
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(12.0), 20.0);
        assert_eq!(nice_max(0.0), 1.0);
    }
}

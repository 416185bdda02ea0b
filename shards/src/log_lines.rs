//! `--log-format json`: one JSON object per log line, for log shippers (Vector, Fluent Bit,
//! Promtail, journald's JSON mode). Levels still come from `RUST_LOG`.
//!
//! A line is `{"ts":"2026-01-02T03:04:05.678Z","level":"INFO","target":"shards::server",
//! "msg":"switchboard listening","addr":"127.0.0.1:5222",...,"spans":["name",...]}`:
//! the event's fields as JSON numbers, booleans or strings (anything else by its `Debug`
//! text), escaped by the one escaper of the project ([`engine::observe::stats_text::json_str`]).
//! Written by hand rather than through tracing-subscriber's `json` feature, which would add
//! `tracing-serde` to the build for a dozen lines of formatting.

use std::fmt::{self, Write as _};

use engine::observe::stats_text::json_str;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text (tracing's default format).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The JSON-lines event formatter.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

/// Collects an event's fields as `,"key":value` text.
#[derive(Default)]
struct Fields {
    msg: Option<String>,
    rest: String,
}

impl Fields {
    fn push(&mut self, field: &Field, json: &str) {
        let _ = write!(self.rest, ",{}:{json}", json_str(field.name()));
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = Some(value.to_string());
        } else {
            self.push(field, &json_str(value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, &value.to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, &value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, &value.to_string());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.push(field, &value.to_string());
        } else {
            self.push(field, &json_str(&value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.msg = Some(text);
        } else {
            self.push(field, &json_str(&text));
        }
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        write!(
            writer,
            "{{\"ts\":\"{}\",\"level\":\"{}\",\"target\":{}",
            rfc3339_ms(std::time::SystemTime::now()),
            meta.level(),
            json_str(meta.target())
        )?;
        if let Some(msg) = &fields.msg {
            write!(writer, ",\"msg\":{}", json_str(msg))?;
        }
        writer.write_str(&fields.rest)?;
        if let Some(scope) = ctx.event_scope() {
            let names: Vec<String> = scope.from_root().map(|s| json_str(s.name())).collect();
            write!(writer, ",\"spans\":[{}]", names.join(","))?;
        }
        writeln!(writer, "}}")
    }
}

/// `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn rfc3339_ms(t: std::time::SystemTime) -> String {
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let (days, ms_of_day) = (ms / 86_400_000, ms % 86_400_000);
    let (y, m, d) = civil_from_days(days as i64);
    let s = ms_of_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms_of_day % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2024-02-29T23:59:59.999Z: a leap day.
        let t = UNIX_EPOCH + Duration::from_millis(1_709_251_199_999);
        assert_eq!(rfc3339_ms(t), "2024-02-29T23:59:59.999Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_767_225_600_000);
        assert_eq!(rfc3339_ms(t), "2026-01-01T00:00:00.000Z");
    }
}

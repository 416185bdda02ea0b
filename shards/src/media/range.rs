//! The `Range` header of a download (RFC 9110 §14): one range of bytes, `a-b`, `a-` or
//! `-n`. A header we do not serve as a range (several ranges, other units, garbage) is
//! ignored and the whole object is sent, as the RFC allows; a range that starts past the end
//! is unsatisfiable (416).

/// What to send of an object of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// All of it (200).
    Whole,
    /// Bytes `start..=end` (206).
    Part {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// Nothing can be sent (416).
    Unsatisfiable,
}

/// The span `header` asks of an object of `len` bytes.
pub fn parse(header: Option<&str>, len: u64) -> Span {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Span::Whole;
    };
    if spec.contains(',') {
        return Span::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Span::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // The last `n` bytes.
        let Ok(n) = b.parse::<u64>() else {
            return Span::Whole;
        };
        if n == 0 || len == 0 {
            return Span::Unsatisfiable;
        }
        return Span::Part {
            start: len.saturating_sub(n),
            end: len - 1,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return Span::Whole;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return Span::Whole,
        }
    };
    if start >= len {
        return Span::Unsatisfiable;
    }
    Span::Part {
        start,
        end: end.min(len - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_the_rfc_reads() {
        let p = |s: &str| parse(Some(s), 100);
        assert_eq!(parse(None, 100), Span::Whole);
        assert_eq!(p("bytes=0-9"), Span::Part { start: 0, end: 9 });
        assert_eq!(p("bytes=90-"), Span::Part { start: 90, end: 99 });
        assert_eq!(p("bytes=90-1000"), Span::Part { start: 90, end: 99 });
        assert_eq!(p("bytes=-10"), Span::Part { start: 90, end: 99 });
        assert_eq!(p("bytes=-1000"), Span::Part { start: 0, end: 99 });
        assert_eq!(p("bytes=100-"), Span::Unsatisfiable);
        assert_eq!(p("bytes=-0"), Span::Unsatisfiable);
        for ignored in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-2",
            "bytes=x-",
            "bytes=",
            "junk",
        ] {
            assert_eq!(p(ignored), Span::Whole, "{ignored}");
        }
        assert_eq!(parse(Some("bytes=0-"), 0), Span::Unsatisfiable);
    }
}

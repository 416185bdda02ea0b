//! Text from the network, made safe to print on a terminal.
//!
//! A message body, a phone number, a group name or a server's error detail can hold control
//! characters: an escape sequence sets the window title, hides text or moves the cursor, a
//! newline or carriage return fakes a line of our own output, a bidi override reorders what
//! the reader sees. [`printable`] shows each such character as a visible escape instead
//! (`\n`, `\u{1b}`), and leaves all other text, emoji included, as it is.

use std::borrow::Cow;

/// Whether `c` must not reach the terminal as it is: C0 and C1 controls, DEL, and the
/// Unicode format characters that reorder or hide text (bidi embeddings, overrides and
/// isolates, the directional marks).
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every unsafe character escaped; borrowed when there is none (the usual case).
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_and_emoji_pass_unchanged() {
        for s in ["hello bob", "✓✓ read by +15550000002", "grüße 👋 日本", ""] {
            assert!(matches!(printable(s), Cow::Borrowed(b) if b == s));
        }
    }

    #[test]
    fn terminal_escapes_and_fake_lines_are_shown_not_obeyed() {
        let attack = "\u{1b}]0;pwned\u{7}hi\u{1b}[8mhidden\u{1b}[0m\r\n[00:00:00] +1555: fake";
        let shown = printable(attack);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
        assert_eq!(
            shown,
            "\\u{1b}]0;pwned\\u{7}hi\\u{1b}[8mhidden\\u{1b}[0m\\r\\n[00:00:00] +1555: fake"
        );
        assert_eq!(
            printable("a\u{9b}31mb\u{7f}"),
            "a\\u{9b}31mb\\u{7f}",
            "C1 CSI, DEL"
        );
        assert_eq!(
            printable("x\u{202e}gnp.exe"),
            "x\\u{202e}gnp.exe",
            "bidi override"
        );
        assert_eq!(printable("tab\there"), "tab\\there");
    }
}

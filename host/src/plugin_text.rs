//! Text a plugin hands the host — error messages, option names, log
//! records, captured output, its self-description, names it asks for — is
//! untrusted. Before any of it reaches a log line, an error, a gRPC status
//! or a terminal it is capped at [`MAX_PLUGIN_TEXT`] bytes and its control
//! characters are escaped, so a plugin can neither forge log lines nor make
//! the host print, send or keep megabytes.

use std::fmt::Write as _;

/// Most bytes of one plugin-supplied string the host passes on.
pub const MAX_PLUGIN_TEXT: usize = 1024;

/// `s` capped at [`MAX_PLUGIN_TEXT`] bytes (then `…` and how many bytes were
/// cut) with every control character escaped (`\n`, `\u{1b}`, …).
pub fn sanitize(s: &str) -> String {
    sanitize_to(s, MAX_PLUGIN_TEXT)
}

/// [`sanitize`] with an explicit cap on the escaped text.
pub fn sanitize_to(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 16);
    for (i, c) in s.char_indices() {
        let before = out.len();
        push_escaped(&mut out, c);
        if out.len() > max {
            out.truncate(before);
            let _ = write!(out, "… ({} more bytes)", s.len() - i);
            return out;
        }
    }
    out
}

/// [`sanitize`] for bytes that should be UTF-8 (captured output).
pub fn sanitize_bytes(b: &[u8]) -> String {
    sanitize(&String::from_utf8_lossy(b))
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        // C0, DEL, C1 controls; line and paragraph separators; bidi
        // overrides that can reorder what a terminal shows.
        c if c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
        {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, &str)] = &[
            ("plain text", "plain text"),
            ("two\nlines", "two\\nlines"),
            ("crlf\r\n", "crlf\\r\\n"),
            ("\x1b[31mred\x1b[0m", "\\u{1b}[31mred\\u{1b}[0m"),
            ("nul\0", "nul\\u{0}"),
            ("del\x7f", "del\\u{7f}"),
            ("sep\u{2028}x", "sep\\u{2028}x"),
            ("rtl\u{202e}txt", "rtl\\u{202e}txt"),
            ("ünïcødé ok", "ünïcødé ok"),
        ];
        for (input, want) in cases {
            assert_eq!(sanitize(input), *want, "{input:?}");
        }
    }

    #[test]
    fn capped_on_a_char_boundary_with_what_was_cut() {
        let long = "é".repeat(2000); // 4000 bytes
        let s = sanitize(&long);
        assert!(s.len() <= MAX_PLUGIN_TEXT + 32, "{}", s.len());
        assert!(s.ends_with("more bytes)"), "{s}");
        assert!(s.starts_with("éé"));
        // Escapes count toward the cap.
        let lines = "\n".repeat(1 << 20);
        let s = sanitize(&lines);
        assert!(s.len() <= MAX_PLUGIN_TEXT + 32);
        assert!(!s.contains('\n'));
        assert!(
            s.contains(&format!("({} more bytes)", (1 << 20) - MAX_PLUGIN_TEXT / 2)),
            "{s}"
        );
        assert_eq!(sanitize_to("abcdef", 3), "abc… (3 more bytes)");
        assert_eq!(sanitize_to("abc", 3), "abc");
    }

    #[test]
    fn bytes_are_decoded_lossily() {
        assert_eq!(sanitize_bytes(b"ok\xff\n"), "ok\u{fffd}\\n");
    }
}

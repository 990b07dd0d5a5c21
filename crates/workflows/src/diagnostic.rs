//! Problems found while checking a rule set, and the arithmetic that turns a
//! byte offset in a rule file into the `line:col` a person can jump to.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in one rule file, at a 1-based line and column.
///
/// Columns count characters (not bytes) so that an editor's "go to column"
/// lands on the right spot in lines with non-ASCII text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: u32,
    pub col: u32,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// The text of one rule file with its line starts, so byte offsets reported
/// by the TOML parser (and offsets inside expressions) become line:col.
pub(crate) struct SourceText<'a> {
    pub(crate) path: &'a Path,
    pub(crate) text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> SourceText<'a> {
    pub(crate) fn new(path: &'a Path, text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        SourceText {
            path,
            text,
            line_starts,
        }
    }

    /// 1-based (line, column) of a byte offset; offsets past the end or inside
    /// a UTF-8 sequence are clamped rather than trusted.
    pub(crate) fn position(&self, offset: usize) -> (u32, u32) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line_index = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line_index];
        let col = self.text[start..offset].chars().count() + 1;
        (to_u32(line_index + 1), to_u32(col))
    }

    pub(crate) fn at(&self, offset: usize, message: impl Into<String>) -> Diagnostic {
        let (line, col) = self.position(offset);
        Diagnostic {
            file: self.path.to_path_buf(),
            line,
            col,
            message: message.into(),
        }
    }

    /// A diagnostic inside a string value: `span` is the value's span in the
    /// file (quotes included) and `inner` a byte offset in the decoded string,
    /// e.g. where a CEL or template parser says the problem is.
    pub(crate) fn at_in_string(
        &self,
        span: &std::ops::Range<usize>,
        inner: usize,
        message: impl Into<String>,
    ) -> Diagnostic {
        let raw = self.text.get(span.clone()).unwrap_or("");
        self.at(span.start + raw_offset(raw, inner), message)
    }
}

fn is_ws(b: Option<&u8>) -> bool {
    matches!(b, Some(b' ' | b'\t' | b'\r' | b'\n'))
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Maps a byte offset in the decoded value of a TOML string token back to an
/// offset in the raw token, walking quotes, escapes and the newline that
/// TOML trims after an opening `"""`/`'''`. Without this a CEL error in
/// `when = "a == \"x\" &&"` would be reported a few columns too early.
pub(crate) fn raw_offset(raw: &str, target: usize) -> usize {
    let (quote, basic) = if raw.starts_with("\"\"\"") {
        (3, true)
    } else if raw.starts_with("'''") {
        (3, false)
    } else if raw.starts_with('"') {
        (1, true)
    } else if raw.starts_with('\'') {
        (1, false)
    } else {
        // Not a quoted string (a bare key, say): offsets are already raw.
        return target.min(raw.len());
    };
    let mut i = quote;
    if quote == 3 {
        if raw[i..].starts_with("\r\n") {
            i += 2;
        } else if raw[i..].starts_with('\n') {
            i += 1;
        }
    }
    let bytes = raw.as_bytes();
    let mut decoded = 0usize;
    loop {
        if basic && bytes.get(i) == Some(&b'\\') && is_ws(bytes.get(i + 1)) {
            // Line-ending backslash: the break and the following whitespace
            // vanish from the value, so skip them before counting.
            i += 1;
            while is_ws(bytes.get(i)) {
                i += 1;
            }
        }
        if i >= raw.len() || decoded >= target {
            break;
        }
        let Some(ch) = raw[i..].chars().next() else {
            break;
        };
        if !basic || ch != '\\' {
            decoded += ch.len_utf8();
            i += ch.len_utf8();
            continue;
        }
        let next = bytes.get(i + 1).copied().unwrap_or(b' ');
        match next {
            b'u' | b'U' | b'x' => {
                let width = match next {
                    b'u' => 4,
                    b'U' => 8,
                    _ => 2,
                };
                let hex = raw.get(i + 2..i + 2 + width).unwrap_or("");
                let len = u32::from_str_radix(hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .map_or(1, char::len_utf8);
                decoded += len;
                i += 2 + width;
            }
            _ => {
                decoded += 1;
                i += 2;
            }
        }
    }
    i.min(raw.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_counts_lines_and_chars() {
        let text = "ab\ncdé\nfg";
        let src = SourceText::new(Path::new("x.toml"), text);
        assert_eq!(src.position(0), (1, 1));
        assert_eq!(src.position(3), (2, 1));
        // 'é' is two bytes: the 'f' after the newline is line 3 col 1.
        assert_eq!(src.position(text.find('f').unwrap_or(0)), (3, 1));
        assert_eq!(src.position(text.find('é').unwrap_or(0) + 2), (2, 4));
    }

    #[test]
    fn raw_offset_walks_escapes_and_quotes() {
        assert_eq!(raw_offset("'abc'", 2), 3);
        assert_eq!(raw_offset(r#""a\"b""#, 2), 4);
        assert_eq!(raw_offset(r#""\u00e9x""#, 2), 7);
        assert_eq!(raw_offset("'''\nab'''", 1), 5);
        assert_eq!(raw_offset("\"\"\"a\\\n   b\"\"\"", 1), 9);
    }

    #[test]
    fn display_is_file_line_col_message() {
        let d = Diagnostic {
            file: PathBuf::from("w/a.toml"),
            line: 3,
            col: 7,
            message: "boom".into(),
        };
        assert_eq!(d.to_string(), "w/a.toml:3:7: boom");
    }
}

//! Finding credentials in free text: ours (`fpa_…` admin tokens, `fpw_…`
//! widget tokens, `fpe_…` Edge Connector tokens, any other `fp?_` prefix we
//! issue, `whsec_…` webhook secrets) and common third-party forms (Slack,
//! GitHub, AWS access key ids, OpenAI and Stripe keys, JWTs, `Bearer …`
//! headers, PEM private keys), anywhere in the text.
//!
//! Matching is by shape, not by verification: a match starts at a word
//! boundary and needs enough token characters after its prefix that prose
//! mentioning "the Bearer scheme" or "fpa_ tokens" is left alone. Signals
//! refuse what this finds (admin-posted signals answer 422), and visitor
//! text has it replaced by [`REDACTED`] before it is stored.

use std::borrow::Cow;
use std::ops::Range;

/// What a credential in visitor text is replaced with.
pub const REDACTED: &str = "[redacted credential]";

/// Characters of the tokens we and most services issue.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'+' | b'/' | b'=' | b'~')
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'=')
}

/// Length of the run of bytes from `i` that satisfy `f`.
fn run(s: &[u8], i: usize, f: impl Fn(u8) -> bool) -> usize {
    s[i.min(s.len())..].iter().take_while(|&&b| f(b)).count()
}

/// A token character run after a prefix, trimmed of the sentence
/// punctuation that may follow it ("my key is fpa_x.y.").
fn token_end(s: &[u8], from: usize, f: impl Fn(u8) -> bool) -> usize {
    let mut end = from + run(s, from, f);
    while end > from && matches!(s[end - 1], b'.' | b'-' | b'=' | b'/' | b'~' | b'+') {
        end -= 1;
    }
    end
}

fn starts_with_ci(s: &[u8], i: usize, prefix: &str) -> bool {
    s.len() >= i + prefix.len() && s[i..i + prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// A prefixed token: `prefix` then at least `min` characters of `f`.
fn prefixed(s: &[u8], i: usize, prefix: &str, min: usize, f: impl Fn(u8) -> bool) -> Option<usize> {
    if !s[i..].starts_with(prefix.as_bytes()) {
        return None;
    }
    let start = i + prefix.len();
    let end = token_end(s, start, f);
    (end - start >= min).then_some(end)
}

/// The end of a credential starting at `i`, if one does.
fn match_at(s: &[u8], i: usize) -> Option<usize> {
    let b = s[i];
    // Ours: fpa_, fpw_, fpe_, fps_, and any other fp?_ we come to issue.
    if b == b'f'
        && s.len() > i + 4
        && s[i + 1] == b'p'
        && s[i + 2].is_ascii_lowercase()
        && s[i + 3] == b'_'
    {
        let end = token_end(s, i + 4, is_token_char);
        if end - (i + 4) >= 3 {
            return Some(end);
        }
    }
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    prefixed(s, i, "whsec_", 3, is_token_char)
        // Slack: xoxb-, xoxp-, xoxa-, xoxs-, xoxr-, xoxe-.
        .or_else(|| {
            (s[i..].starts_with(b"xox")
                && s.len() > i + 4
                && matches!(s[i + 3], b'b' | b'p' | b'a' | b's' | b'r' | b'e')
                && s[i + 4] == b'-')
                .then(|| token_end(s, i + 5, |b| alnum(b) || b == b'-'))
                .filter(|&end| end - (i + 5) >= 10)
        })
        // GitHub: classic and fine-grained tokens.
        .or_else(|| {
            ["ghp_", "gho_", "ghs_", "ghu_", "ghr_"]
                .iter()
                .find_map(|p| prefixed(s, i, p, 20, alnum))
        })
        .or_else(|| prefixed(s, i, "github_pat_", 20, |b| alnum(b) || b == b'_'))
        // AWS access key ids: exactly 16 upper-case letters or digits.
        .or_else(|| {
            ["AKIA", "ASIA"].iter().find_map(|p| {
                let start = i + p.len();
                let n = run(s, start, |b| b.is_ascii_uppercase() || b.is_ascii_digit());
                (s[i..].starts_with(p.as_bytes()) && n == 16).then_some(start + n)
            })
        })
        // OpenAI (sk-…, sk-proj-…) and Stripe (sk_live_…, rk_live_…) keys.
        .or_else(|| prefixed(s, i, "sk-", 20, |b| alnum(b) || b == b'-' || b == b'_'))
        .or_else(|| {
            ["sk_live_", "rk_live_", "sk_test_", "rk_test_"]
                .iter()
                .find_map(|p| prefixed(s, i, p, 16, alnum))
        })
        .or_else(|| jwt(s, i))
        .or_else(|| bearer(s, i))
        .or_else(|| pem_private_key(s, i))
}

/// `eyJ…` header, payload and signature: three base64url parts.
fn jwt(s: &[u8], i: usize) -> Option<usize> {
    if !s[i..].starts_with(b"eyJ") {
        return None;
    }
    let mut end = i;
    for part in 0..3 {
        let n = run(s, end, is_base64url);
        if n < 4 {
            return None;
        }
        end += n;
        if part < 2 {
            if s.get(end) != Some(&b'.') {
                return None;
            }
            end += 1;
        }
    }
    Some(end)
}

/// `Bearer <token>` as in an `Authorization` header.
fn bearer(s: &[u8], i: usize) -> Option<usize> {
    if !starts_with_ci(s, i, "bearer ") {
        return None;
    }
    let start = i + "bearer ".len();
    let end = token_end(s, start, is_token_char);
    // A digit tells a token from a word ("bearer instruments").
    (end - start >= 8 && s[start..end].iter().any(u8::is_ascii_digit)).then_some(end)
}

/// A PEM private key block, to its END line (or the end of the text).
fn pem_private_key(s: &[u8], i: usize) -> Option<usize> {
    if !s[i..].starts_with(b"-----BEGIN ") {
        return None;
    }
    let line_end = s[i..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(s.len(), |p| i + p);
    let header = &s[i..line_end];
    if !header.windows(11).any(|w| w == b"PRIVATE KEY") {
        return None;
    }
    let rest = &s[line_end..];
    let end = rest
        .windows(8)
        .position(|w| w == b"-----END")
        .map(|p| {
            let after = line_end + p + 8;
            after
                + s[after..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap_or(s.len() - after)
        })
        .unwrap_or(s.len());
    Some(end)
}

/// Byte ranges of the credentials in `text`, in order, not overlapping.
pub fn find_all(text: &str) -> Vec<Range<usize>> {
    let s = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let at_boundary = i == 0 || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_');
        if at_boundary && let Some(end) = match_at(s, i) {
            found.push(i..end);
            i = end;
            continue;
        }
        i += 1;
    }
    found
}

/// Whether `text` holds anything shaped like a credential.
pub fn contains(text: &str) -> bool {
    !find_all(text).is_empty()
}

/// `text` with every credential replaced by [`REDACTED`].
pub fn redact(text: &str) -> Cow<'_, str> {
    let found = find_all(text);
    if found.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for r in found {
        out.push_str(&text[last..r.start]);
        out.push_str(REDACTED);
        last = r.end;
    }
    out.push_str(&text[last..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_tokens_anywhere() {
        for t in [
            "here it is: fpa_tok_01JQ.s3cretS3cretS3cret thanks",
            "my connector token fpe_edge_01JZX.abcdefghijklmnop",
            "(fpw_eyJ0.c2ln)",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "future fpv_abcdefgh",
        ] {
            assert!(contains(t), "{t}");
        }
    }

    #[test]
    fn finds_third_party_tokens() {
        for t in [
            "slack xoxb-123456789012-abcdefABCDEF",
            "gh ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 ok",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
            "aws AKIAIOSFODNN7EXAMPLE",
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
            "Authorization: Bearer abcdef0123456789",
            "openai sk-proj-abcdefghijklmnopqrstuvwxyz",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
        ] {
            assert!(contains(t), "{t}");
        }
    }

    #[test]
    fn leaves_prose_alone() {
        for t in [
            "where is my order #123?",
            "the Bearer scheme is described in RFC 6750",
            "bearer instruments, bearer well-known",
            "we use fpa_ tokens",
            "AKIA is how AWS key ids begin",
            "I like eyJ as a word",
            "my email is fpa@example.com",
            "ask for sk-short",
            "profpa_abcdefgh",
        ] {
            assert!(!contains(t), "{t}");
        }
    }

    #[test]
    fn redacts_every_match_and_keeps_the_rest() {
        let t = "token fpe_edge_01J.abcdefgh and ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789.";
        assert_eq!(
            redact(t),
            "token [redacted credential] and [redacted credential]."
        );
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
    }
}

//! Signal type patterns used by `on` and `cancel_on`: an exact type
//! (`webchat.message.received`) or a prefix ending in `*` (`webchat.*`, `*`).

use std::fmt;

/// A validated signal type pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypePattern {
    text: String,
}

impl TypePattern {
    /// Parses a pattern: letters, digits, `.`, `_`, `-`, `:` and `/`, with at
    /// most one `*`, which must come last.
    pub fn parse(text: &str) -> Result<TypePattern, String> {
        if text.is_empty() {
            return Err("signal type pattern is empty".to_owned());
        }
        let body = text.strip_suffix('*').unwrap_or(text);
        if let Some(bad) = body
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/')))
        {
            return Err(if bad == '*' {
                format!(
                    "invalid signal type pattern `{text}`: `*` is only allowed at the end (e.g. \"webchat.*\")"
                )
            } else {
                format!("invalid signal type pattern `{text}`: unexpected character {bad:?}")
            });
        }
        Ok(TypePattern {
            text: text.to_owned(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The prefix when this is a wildcard (`"webchat."` for `webchat.*`).
    pub fn prefix(&self) -> Option<&str> {
        self.text.strip_suffix('*')
    }

    pub fn matches(&self, signal_type: &str) -> bool {
        match self.prefix() {
            Some(prefix) => signal_type.starts_with(prefix),
            None => self.text == signal_type,
        }
    }
}

impl fmt::Display for TypePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether `pattern` (as stored on a planned directive's `cancel_on`)
/// matches `signal_type`; an invalid pattern matches nothing.
pub fn type_matches(pattern: &str, signal_type: &str) -> bool {
    TypePattern::parse(pattern).is_ok_and(|p| p.matches(signal_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_prefix() {
        assert!(type_matches(
            "webchat.message.received",
            "webchat.message.received"
        ));
        assert!(!type_matches(
            "webchat.message.received",
            "webchat.message.receivedx"
        ));
        assert!(type_matches("webchat.*", "webchat.reply.sent"));
        assert!(!type_matches("webchat.*", "webchat"));
        assert!(!type_matches("webchat.*", "email.sent"));
        assert!(type_matches("*", "anything"));
    }

    #[test]
    fn star_only_at_end() {
        assert!(TypePattern::parse("web*.x").is_err());
        assert!(TypePattern::parse("a b").is_err());
        assert!(TypePattern::parse("").is_err());
    }
}

//! Signals: persisted, replayable facts (`directive.failed`, a package's `<package>.<noun>.<verb>` …).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{DirectiveId, time::Millis};

/// Why a signal (or a directive's input) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A field is missing, empty, too long or has characters it may not have.
    #[error("{field}: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The payload holds something that looks like a credential.
    #[error("payload holds a secret at {path}: secrets never enter signals")]
    SecretInPayload {
        /// JSON pointer of the offending key or value.
        path: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ValidationError {
    ValidationError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// A dotted, lowercase name such as `directive.failed`.
///
/// Used for signal types and directive kinds alike: both are matched by
/// rules, so both keep to a shape that rule wildcards (`directive.*`) can rely on.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SignalType(String);

/// Checks the dotted-name shape shared by signal types and directive kinds.
pub(crate) fn check_dotted_name(field: &'static str, s: &str) -> Result<(), ValidationError> {
    if s.is_empty() || s.len() > 128 {
        return Err(invalid(field, "must be 1 to 128 characters"));
    }
    let ok = s.split('.').all(|seg| {
        !seg.is_empty()
            && seg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    });
    if !ok {
        return Err(invalid(
            field,
            "must be dot-separated segments of [a-z0-9_], e.g. directive.failed",
        ));
    }
    Ok(())
}

impl SignalType {
    /// Checks and wraps a signal type.
    pub fn parse(s: impl Into<String>) -> Result<Self, ValidationError> {
        let s = s.into();
        check_dotted_name("type", &s)?;
        Ok(Self(s))
    }

    /// The type as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SignalType {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl From<SignalType> for String {
    fn from(t: SignalType) -> String {
        t.0
    }
}

impl fmt::Display for SignalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SignalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// What a signal or directive is about, e.g. `conversation:conv_…`.
///
/// The audit timeline is keyed by subject.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subject(String);

impl Subject {
    /// Checks and wraps a subject.
    pub fn parse(s: impl Into<String>) -> Result<Self, ValidationError> {
        let s = s.into();
        if s.is_empty() || s.len() > 256 {
            return Err(invalid("subject", "must be 1 to 256 characters"));
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid("subject", "may not contain whitespace"));
        }
        Ok(Self(s))
    }

    /// The subject as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Subject {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl From<Subject> for String {
    fn from(s: Subject) -> String {
        s.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Checks a dedupe key: 1 to 512 printable characters.
pub fn check_dedupe_key(key: &str) -> Result<(), ValidationError> {
    if key.is_empty() || key.len() > 512 {
        return Err(invalid("dedupe_key", "must be 1 to 512 characters"));
    }
    if key.chars().any(char::is_control) {
        return Err(invalid("dedupe_key", "may not contain control characters"));
    }
    Ok(())
}

/// Largest accepted payload (or directive args), serialized.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// A signal about to be recorded.
#[derive(Debug, Clone)]
pub struct NewSignal {
    /// The signal's type.
    pub signal_type: SignalType,
    /// What it is about.
    pub subject: Subject,
    /// Validated JSON payload (an object).
    pub payload: Value,
    /// Unique per tenant: a second signal with the same key is a duplicate.
    pub dedupe_key: String,
    /// The directive whose outcome this signal reports, if any.
    pub caused_by: Option<DirectiveId>,
    /// When it happened (defaults to when it was recorded).
    pub occurred_at: Millis,
}

impl NewSignal {
    /// Validates every part of a signal, payload included.
    pub fn new(
        signal_type: &str,
        subject: &str,
        payload: Value,
        dedupe_key: impl Into<String>,
        occurred_at: Millis,
    ) -> Result<Self, ValidationError> {
        let dedupe_key = dedupe_key.into();
        check_dedupe_key(&dedupe_key)?;
        check_payload("payload", &payload)?;
        Ok(Self {
            signal_type: SignalType::parse(signal_type)?,
            subject: Subject::parse(subject)?,
            payload,
            dedupe_key,
            caused_by: None,
            occurred_at,
        })
    }
}

/// Checks a JSON payload: an object, at most [`MAX_PAYLOAD_BYTES`], and free
/// of anything that looks like a credential.
pub fn check_payload(field: &'static str, payload: &Value) -> Result<(), ValidationError> {
    if !payload.is_object() {
        return Err(invalid(field, "must be a JSON object"));
    }
    let size = serde_json::to_vec(payload).map(|v| v.len()).unwrap_or(0);
    if size > MAX_PAYLOAD_BYTES {
        return Err(invalid(
            field,
            format!("is {size} bytes; the limit is {MAX_PAYLOAD_BYTES}"),
        ));
    }
    find_secret(payload, &mut String::new()).map_or(Ok(()), |path| {
        Err(ValidationError::SecretInPayload { path })
    })
}

/// Returns the JSON pointer of the first secret-looking key or value.
fn find_secret(value: &Value, path: &mut String) -> Option<String> {
    match value {
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let len = path.len();
            path.push('/');
            path.push_str(k);
            let found = if is_secret_key(k) {
                Some(path.clone())
            } else {
                find_secret(v, path)
            };
            path.truncate(len);
            found
        }),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
            let len = path.len();
            path.push('/');
            path.push_str(&i.to_string());
            let found = find_secret(v, path);
            path.truncate(len);
            found
        }),
        Value::String(s) if looks_like_credential(s) => Some(path.clone()),
        _ => None,
    }
}

/// Splits `accessToken`, `api-key`, `X_Auth.Token` into lowercase words.
fn key_words(key: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if c == '_' || c == '-' || c == '.' || c == ' ' {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Whether a key names a credential. Matching is by word, so `prompt_tokens`
/// (LLM usage) passes while `access_token` and `apiKey` do not.
fn is_secret_key(key: &str) -> bool {
    let words = key_words(key);
    let has = |w: &str| words.iter().any(|x| x == w);
    let last = words.last().map(String::as_str).unwrap_or("");
    has("secret")
        || has("password")
        || has("passwd")
        || has("passphrase")
        || has("authorization")
        || has("cookie")
        || has("credentials")
        || last == "token"
        || last == "apikey"
        || (has("api") && last == "key")
        || (has("private") && last == "key")
        || (has("signing") && last == "key")
}

/// Whether a string holds a credential anywhere in it ([`crate::credential`]),
/// or is an `Authorization` value as a whole (`Bearer <anything>`, which in
/// running text needs a token-like word to count).
fn looks_like_credential(s: &str) -> bool {
    s.starts_with("Bearer ") || s.starts_with("bearer ") || crate::credential::contains(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn signal_types_are_dotted_lowercase() {
        assert!(SignalType::parse("shop.order.placed").is_ok());
        assert!(SignalType::parse("directive.succeeded").is_ok());
        assert!(SignalType::parse("Shop.Order").is_err());
        assert!(SignalType::parse("shop..x").is_err());
        assert!(SignalType::parse("").is_err());
        assert!(SignalType::parse("a b").is_err());
    }

    #[test]
    fn subjects_have_no_whitespace() {
        assert!(Subject::parse("conversation:abc").is_ok());
        assert!(Subject::parse("conversation abc").is_err());
        assert!(Subject::parse("").is_err());
    }

    #[test]
    fn refuses_secret_keys_at_any_depth() {
        for key in [
            "token",
            "access_token",
            "accessToken",
            "password",
            "client_secret",
            "Authorization",
            "api_key",
            "apiKey",
            "X-Api-Key",
            "private_key",
            "set-cookie",
        ] {
            let p = json!({ "outer": [{ key: "x" }] });
            match check_payload("payload", &p) {
                Err(ValidationError::SecretInPayload { path }) => {
                    assert_eq!(path, format!("/outer/0/{key}"))
                }
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn allows_ordinary_keys_that_merely_mention_tokens() {
        let p = json!({ "prompt_tokens": 12, "token_count": 3, "keyboard": "qwerty", "content": "my password is long" });
        assert_eq!(check_payload("payload", &p), Ok(()));
    }

    #[test]
    fn refuses_values_shaped_like_credentials() {
        for v in [
            "fpa_abc_def",
            "fpv_visitor-secret",
            "Bearer abc",
            "see Bearer abc123def456",
            "whsec_xyz",
            "my token is fpe_edge_01J.abcdefgh, keep it",
            "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
        ] {
            let p = json!({ "note": v });
            assert!(
                matches!(
                    check_payload("payload", &p),
                    Err(ValidationError::SecretInPayload { .. })
                ),
                "{v}"
            );
        }
    }

    #[test]
    fn payload_must_be_a_bounded_object() {
        assert!(check_payload("payload", &json!([1])).is_err());
        let big = "x".repeat(MAX_PAYLOAD_BYTES);
        assert!(check_payload("payload", &json!({ "big": big })).is_err());
    }
}

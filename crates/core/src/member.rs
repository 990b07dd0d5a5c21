//! Members of a tenant: the people who sign in, and their roles.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::signal::ValidationError;

/// What a member (or a token) may do. Ordered: an admin may do all an agent
/// may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads and answers conversations; changes no setting.
    Agent,
    /// Everything a tenant can do.
    Admin,
}

impl Role {
    /// The role as stored and shown.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "agent" => Ok(Self::Agent),
            "admin" => Ok(Self::Admin),
            _ => Err(ValidationError::Invalid {
                field: "role",
                reason: format!("must be admin or agent, not {s:?}"),
            }),
        }
    }
}

/// An email address as members are keyed by: trimmed and lower-cased, one
/// `@` with something on both sides, no whitespace, at most 254 bytes.
pub fn normalize_email(email: &str) -> Result<String, ValidationError> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        });
    if ok {
        Ok(e)
    } else {
        Err(ValidationError::Invalid {
            field: "email",
            reason: "must be an email address".into(),
        })
    }
}

/// Checks an email address well enough to catch typos: one `@`, a local
/// part, a dotted domain, no spaces, at most 254 characters.
pub fn check_email(email: &str) -> Result<(), &'static str> {
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be an email address like ada@example.com");
    }
    let (local, domain) = email.split_once('@').ok_or("must contain @")?;
    let ok = !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !domain.contains(['(', ')', '<', '>', ',', ';', ':', '[', ']', '"', '\\']);
    if ok {
        Ok(())
    } else {
        Err("must be an email address like ada@example.com")
    }
}

/// A member's display name: 1 to 200 characters, no control characters.
pub fn check_name(name: &str) -> Result<String, ValidationError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 200 || n.chars().any(char::is_control) {
        return Err(ValidationError::Invalid {
            field: "name",
            reason: "must be 1 to 200 characters, without control characters".into(),
        });
    }
    Ok(n.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_round_trip() {
        assert!(Role::Agent < Role::Admin);
        for r in [Role::Agent, Role::Admin] {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("owner".parse::<Role>().is_err());
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            normalize_email(" Ann@Example.COM ").unwrap(),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "@example.com",
            "ann@",
            "a b@example.com",
            "a@b@c",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }
}

//! Newtype ids with a typed prefix.
//!
//! Each id is a UUIDv7 (time-ordered, so primary-key inserts stay append-only)
//! rendered as `<prefix>_<32 hex>`. Parsing rejects another type's prefix, so a
//! directive id can never be passed where a signal id is expected.
//!
//! With the `sqlx` feature (the store's), every id is also a TEXT column
//! in that string form, read back with the same parse (`id/sql.rs`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

#[cfg(feature = "sqlx")]
mod sql;

/// An id string that is not of the expected type or shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {expected} id: {value:?}")]
pub struct IdError {
    /// The kind of id that was expected, e.g. `directive`.
    pub expected: &'static str,
    /// The rejected input, truncated for error messages.
    pub value: String,
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $noun:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// The prefix of this id's string form, without the underscore.
            pub const PREFIX: &'static str = $prefix;

            /// A new, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// The underlying UUID.
            pub fn uuid(&self) -> Uuid {
                self.0
            }

            /// The id built from a UUID, e.g. one read back from storage.
            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}_{}", $prefix, self.0.simple())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = || IdError {
                    expected: $noun,
                    value: s.chars().take(64).collect(),
                };
                let rest = s
                    .strip_prefix($prefix)
                    .and_then(|r| r.strip_prefix('_'))
                    .ok_or_else(err)?;
                if rest.len() != 32 {
                    return Err(err());
                }
                Uuid::try_parse(rest).map(Self).map_err(|_| err())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        #[cfg(feature = "sqlx")]
        sql::text_column!($name, |v| v.to_string());
    };
}

typed_id!(
    /// A tenant: the owner of every other record.
    TenantId, "ten", "tenant"
);
typed_id!(
    /// A persisted signal.
    SignalId, "sig", "signal"
);
typed_id!(
    /// A directive, which is also its own job.
    DirectiveId, "dir", "directive"
);
typed_id!(
    /// An outbound destination (webhook, Mattermost, LLM …).
    DestinationId, "dst", "destination"
);
typed_id!(
    /// An admin API token (the public half of the token string).
    TokenId, "tok", "token"
);
typed_id!(
    /// A member of a tenant: a person who signs in (admin or agent).
    MemberId, "mem", "member"
);
typed_id!(
    /// An Edge Connector registered by a tenant (the public half of its token).
    EdgeConnectorId, "edge", "edge connector"
);
typed_id!(
    /// A website registered for the chat widget.
    SiteId, "site", "site"
);
typed_id!(
    /// A chat conversation between a visitor and the tenant.
    ConversationId, "conv", "conversation"
);
typed_id!(
    /// One chat message (visitor, assistant or agent).
    MessageId, "msg", "message"
);
typed_id!(
    /// An anonymous website visitor, remembered by the widget.
    VisitorId, "vis", "visitor"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_its_string_form() {
        let id = DirectiveId::new();
        let s = id.to_string();
        assert!(s.starts_with("dir_"));
        assert_eq!(s.len(), 4 + 32);
        assert_eq!(s.parse::<DirectiveId>().unwrap(), id);
    }

    #[test]
    fn rejects_another_types_prefix() {
        let s = SignalId::new().to_string();
        let err = s.parse::<DirectiveId>().unwrap_err();
        assert_eq!(err.expected, "directive");
        assert!("dir_xyz".parse::<DirectiveId>().is_err());
        assert!("dir".parse::<DirectiveId>().is_err());
        assert!("".parse::<TenantId>().is_err());
    }

    #[test]
    fn ids_are_time_ordered() {
        let a = SignalId::new();
        let b = SignalId::new();
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn serde_uses_the_prefixed_form() {
        let id = TenantId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        let back: TenantId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<TenantId>("\"sig_0\"").is_err());
    }
}

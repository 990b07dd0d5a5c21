//! Newtype ids with a typed prefix.
//!
//! Each id is a UUIDv7 (time-ordered, so primary-key inserts stay append-only)
//! rendered as `<prefix>_<32 hex>`. Parsing rejects another type's prefix, so a
//! directive id can never be passed where a signal id is expected.
//!
//! With the `sqlx` feature (the store's), every id here is also a TEXT
//! column in that string form, read back with the same parse (`id/sql.rs`).
//! A package defines its own ids with [`define_id!`](crate::define_id).

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

/// Defines a newtype id with a typed prefix, for a package's own records:
/// `define_id!(/// docs, WidgetId, "wid", "widget");` gives `WidgetId`,
/// rendered as `wid_<32 hex>`, parsed back only with that prefix (else an
/// [`IdError`] whose `expected` is `"widget"`), serialized in that form.
///
/// Everything it expands to is named through `$crate`, so the caller needs
/// no dependency of its own on uuid or serde. A SQL column type is not
/// part of it: a package gives its ids one in its store module, with
/// `fleetprompt_store::package::text_column!`.
#[macro_export]
macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $noun:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name($crate::id::__private::Uuid);

        impl $name {
            /// The prefix of this id's string form, without the underscore.
            pub const PREFIX: &'static str = $prefix;

            /// A new, time-ordered id.
            pub fn new() -> Self {
                Self($crate::id::__private::Uuid::now_v7())
            }

            /// The underlying UUID.
            pub fn uuid(&self) -> $crate::id::__private::Uuid {
                self.0
            }

            /// The id built from a UUID, e.g. one read back from storage.
            pub fn from_uuid(uuid: $crate::id::__private::Uuid) -> Self {
                Self(uuid)
            }
        }

        impl ::std::default::Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::write!(f, "{}_{}", $prefix, self.0.simple())
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(self, f)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::id::IdError;

            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                let err = || $crate::id::IdError {
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
                $crate::id::__private::Uuid::try_parse(rest)
                    .map(Self)
                    .map_err(|_| err())
            }
        }

        impl $crate::id::__private::serde::Serialize for $name {
            fn serialize<S: $crate::id::__private::serde::Serializer>(
                &self,
                s: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> $crate::id::__private::serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::id::__private::serde::Deserializer<'de>>(
                d: D,
            ) -> ::std::result::Result<Self, D::Error> {
                let s = <::std::string::String as $crate::id::__private::serde::Deserialize>::deserialize(d)?;
                s.parse()
                    .map_err(<D::Error as $crate::id::__private::serde::de::Error>::custom)
            }
        }
    };
}

/// What [`define_id!`] expands to names, from the caller's crate.
#[doc(hidden)]
pub mod __private {
    pub use serde;
    pub use uuid::Uuid;
}

/// A platform id: [`define_id!`], and (with the `sqlx` feature) a TEXT
/// column. The `cfg` lives here, not in the exported macro, where it would
/// be read in the caller's crate.
macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $noun:literal) => {
        $crate::define_id!($(#[$doc])* $name, $prefix, $noun);

        #[cfg(feature = "sqlx")]
        $crate::text_column!($name, |v| v.to_string());
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

//! Ids (and the enums stored by name) as TEXT columns of SQLite and
//! PostgreSQL, behind the `sqlx` feature that only the store enables: core
//! itself does no I/O.
//!
//! A value is stored in its string form (`dir_<32 hex>`, `pending`) and read
//! back with the type's own parse, so a stored id of another type (a wrong
//! prefix) or an unknown status is a decode error, never a wrong value.

/// Implements sqlx's `Type`, `Encode` and `Decode` for `$ty` as text, for
/// every database whose `str` is text (SQLite, PostgreSQL, and `Any` over
/// them), plus PostgreSQL arrays (`$1::text[]`). `$text` turns a `&$ty` into
/// something that encodes as text; decoding uses `$ty`'s `FromStr`.
///
/// Exported (hidden) for the store to re-export to package store modules
/// (`fleetprompt_store::package::text_column!`); it names `::sqlx`, which
/// resolves in the crate that invokes it.
#[macro_export]
#[doc(hidden)]
macro_rules! text_column {
    ($ty:ty, |$v:ident| $text:expr) => {
        impl<DB: ::sqlx::Database> ::sqlx::Type<DB> for $ty
        where
            str: ::sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as ::sqlx::Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as ::sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: ::sqlx::Database> ::sqlx::Encode<'q, DB> for $ty
        where
            String: ::sqlx::Encode<'q, DB>,
            &'static str: ::sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut DB::ArgumentBuffer,
            ) -> Result<::sqlx::encode::IsNull, ::sqlx::error::BoxDynError> {
                let $v = self;
                ::sqlx::Encode::<'q, DB>::encode($text, buf)
            }
        }

        impl<'r, DB: ::sqlx::Database> ::sqlx::Decode<'r, DB> for $ty
        where
            &'r str: ::sqlx::Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, ::sqlx::error::BoxDynError> {
                let s = <&'r str as ::sqlx::Decode<'r, DB>>::decode(value)?;
                Ok(s.parse::<$ty>()?)
            }
        }

        impl ::sqlx::postgres::PgHasArrayType for $ty {
            fn array_type_info() -> ::sqlx::postgres::PgTypeInfo {
                <&str as ::sqlx::postgres::PgHasArrayType>::array_type_info()
            }

            fn array_compatible(ty: &::sqlx::postgres::PgTypeInfo) -> bool {
                <&str as ::sqlx::postgres::PgHasArrayType>::array_compatible(ty)
            }
        }
    };
}
crate::text_column!(crate::DirectiveStatus, |v| v.as_str());
crate::text_column!(crate::AttemptOutcome, |v| v.as_str());
crate::text_column!(crate::member::Role, |v| v.as_str());

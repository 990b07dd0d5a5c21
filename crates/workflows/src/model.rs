//! The shape of a rule file as written, straight from TOML.
//!
//! Every struct denies unknown keys so a typo (`dedup_key`) is an error at
//! check time instead of a silently ignored setting. Values that are later
//! parsed again (CEL, templates, durations, cron) keep their [`Spanned`]
//! byte range so those second-stage errors point into the file too.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// A whole rule file: any number of `[[rule]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileDoc {
    #[serde(default)]
    pub(crate) rule: Vec<RuleDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleDoc {
    pub(crate) id: Spanned<String>,
    #[serde(default)]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) on: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) schedule: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) timezone: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) when: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) enabled: Option<bool>,
    #[serde(default)]
    pub(crate) directive: Vec<DirectiveDoc>,
    #[serde(default)]
    pub(crate) emit: Option<Spanned<EmitDoc>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DirectiveDoc {
    pub(crate) kind: Spanned<String>,
    #[serde(default)]
    pub(crate) destination: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) dedupe_key: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) args: Option<Spanned<ArgNode>>,
    #[serde(default)]
    pub(crate) retry: Option<RetryDoc>,
    #[serde(default)]
    pub(crate) delay: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) cancel_on: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(crate) throttle: Option<ThrottleDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryDoc {
    #[serde(default)]
    pub(crate) max_attempts: Option<Spanned<i64>>,
    #[serde(default)]
    pub(crate) backoff: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) base: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) max: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ThrottleDoc {
    pub(crate) key: Spanned<String>,
    pub(crate) window: Spanned<String>,
}

/// What a cron rule emits instead of directives: a signal that then goes
/// through routing like any other.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmitDoc {
    #[serde(rename = "type")]
    pub(crate) signal_type: Spanned<String>,
    pub(crate) subject: Spanned<String>,
    #[serde(default)]
    pub(crate) payload: Option<Spanned<ArgNode>>,
    #[serde(default)]
    pub(crate) key: Option<Spanned<String>>,
}

/// Any TOML value under `args`/`payload`, with the span of every nested
/// value kept so a broken template deep inside is reported where it is.
/// (`toml::Value` would lose the spans.)
#[derive(Debug, Clone)]
pub(crate) enum ArgNode {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    /// TOML datetimes are passed through as their text, never templated.
    Datetime(String),
    Array(Vec<Spanned<ArgNode>>),
    /// Keys in file order.
    Table(Vec<(String, Spanned<ArgNode>)>),
}

// The name toml uses to smuggle a datetime through serde as a one-key map.
const TOML_DATETIME_KEY: &str = "$__toml_private_datetime";

impl<'de> Deserialize<'de> for ArgNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ArgVisitor)
    }
}

struct ArgVisitor;

impl<'de> Visitor<'de> for ArgVisitor {
    type Value = ArgNode;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<ArgNode, E> {
        Ok(ArgNode::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ArgNode, E> {
        Ok(ArgNode::Integer(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ArgNode, E> {
        i64::try_from(v)
            .map(ArgNode::Integer)
            .map_err(|_| E::custom("integer out of range"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ArgNode, E> {
        Ok(ArgNode::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ArgNode, E> {
        Ok(ArgNode::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<ArgNode, E> {
        Ok(ArgNode::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ArgNode, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<ArgNode>>()? {
            items.push(item);
        }
        Ok(ArgNode::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ArgNode, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == TOML_DATETIME_KEY {
                let text: String = map.next_value()?;
                return Ok(ArgNode::Datetime(text));
            }
            let value = map.next_value::<Spanned<ArgNode>>()?;
            entries.push((key, value));
        }
        Ok(ArgNode::Table(entries))
    }
}

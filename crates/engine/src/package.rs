//! Packages: what the platform knows of each through its manifest — the
//! signal types it emits, the directive kinds it provides, its default
//! workflow files, its settings schema and the destination kinds it uses.
//!
//! A manifest is a TOML file beside the package's code, embedded with
//! `include_str!` and parsed once, at first use (start-up reads it for the
//! handler registry and the rule check). A new package adds its manifest to
//! [`MANIFESTS`]; its unit tests then hold it to the code.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use fleetprompt_core::signal::ValidationError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every package's manifest, as embedded.
const MANIFESTS: &[&str] = &[include_str!("webchat/package.toml")];

/// What kind of work a package does, for the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Answering customers (website chat).
    CustomerService,
    /// Finding and following up leads.
    Sales,
}

/// A JSON type a payload field, an argument or a setting has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// A JSON string.
    String,
    /// A JSON integer.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
    /// Anything.
    Any,
}

impl FieldType {
    /// Whether `v` has this type.
    pub fn accepts(self, v: &Value) -> bool {
        match self {
            Self::String => v.is_string(),
            Self::Integer => v.is_i64() || v.is_u64(),
            Self::Boolean => v.is_boolean(),
            Self::Object => v.is_object(),
            Self::Array => v.is_array(),
            Self::Any => true,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::String => "a string",
            Self::Integer => "an integer",
            Self::Boolean => "true or false",
            Self::Object => "an object",
            Self::Array => "an array",
            Self::Any => "any value",
        }
    }
}

/// A payload field's type as the manifest writes it: `"string"`, or
/// `"string?"` for one that may be null or absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PayloadField {
    /// Its type.
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// Whether it may be null or absent.
    pub optional: bool,
}

impl<'de> Deserialize<'de> for PayloadField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let (name, optional) = match s.strip_suffix('?') {
            Some(n) => (n, true),
            None => (s.as_str(), false),
        };
        let ty = FieldType::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(name))?;
        Ok(Self { ty, optional })
    }
}

/// A signal type a package emits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SignalSpec {
    /// `webchat.message.received` …
    #[serde(rename = "type")]
    pub signal_type: String,
    /// What it means.
    pub description: String,
    /// Its payload's fields, by name.
    #[serde(default)]
    pub fields: BTreeMap<String, PayloadField>,
}

/// A typed argument of a directive kind, or a setting.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Its name.
    pub name: String,
    /// Its JSON type.
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// Whether it must be given.
    #[serde(default)]
    pub required: bool,
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A directive kind a package provides.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectiveSpec {
    /// `webchat.reply_send` …
    pub kind: String,
    /// What it does.
    pub description: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<FieldSpec>,
}

/// The schema of an installation's configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsSchema {
    /// Whether keys the schema does not declare are kept (true) or refused.
    #[serde(default)]
    pub additional: bool,
    /// The declared settings.
    #[serde(default, rename = "field")]
    pub fields: Vec<FieldSpec>,
}

impl SettingsSchema {
    /// Checks an installation's configuration: a JSON object whose declared
    /// keys have their types, with every required key, and no other keys
    /// unless the schema keeps them.
    pub fn check(&self, config: &Value) -> Result<(), ValidationError> {
        let bad = |reason: String| ValidationError::Invalid {
            field: "config",
            reason,
        };
        let Some(map) = config.as_object() else {
            return Err(bad("must be a JSON object".into()));
        };
        for f in &self.fields {
            match map.get(&f.name) {
                None | Some(Value::Null) if f.required => {
                    return Err(bad(format!("`{}` is required", f.name)));
                }
                Some(v) if !v.is_null() && !f.ty.accepts(v) => {
                    return Err(bad(format!("`{}` must be {}", f.name, f.ty.name())));
                }
                _ => {}
            }
        }
        if !self.additional
            && let Some(k) = map
                .keys()
                .find(|k| !self.fields.iter().any(|f| &f.name == *k))
        {
            let known: Vec<&str> = self.fields.iter().map(|f| f.name.as_str()).collect();
            return Err(bad(format!(
                "unknown setting `{k}`; known settings: {}",
                known.join(", ")
            )));
        }
        Ok(())
    }
}

/// A package's manifest.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Its name in installations and URLs: `website_chat`.
    pub slug: String,
    /// Its display name.
    pub name: String,
    /// One paragraph on what it does.
    pub description: String,
    /// Its version (what a new installation records).
    pub version: String,
    /// Its category.
    pub category: Category,
    /// Its default workflow files, by name in the workflows directory.
    #[serde(default)]
    pub workflows: Vec<String>,
    /// The destination kinds its directives deliver to.
    #[serde(default)]
    pub destinations: Vec<String>,
    /// The installation's configuration.
    #[serde(default)]
    pub settings: SettingsSchema,
    /// The signal types it emits.
    #[serde(default, rename = "signal")]
    pub signals: Vec<SignalSpec>,
    /// The directive kinds it provides.
    #[serde(default, rename = "directive")]
    pub directives: Vec<DirectiveSpec>,
}

impl Manifest {
    /// Parses a manifest and checks that it holds together: a slug, a
    /// version, no kind or signal type listed twice.
    pub fn parse(text: &str) -> Result<Self, String> {
        let m: Manifest = toml::from_str(text).map_err(|e| e.to_string())?;
        if m.slug.is_empty() || !m.slug.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(format!("slug {:?}: a-z and '_' only", m.slug));
        }
        if m.version.is_empty() {
            return Err(format!("{}: a version is required", m.slug));
        }
        let mut seen = BTreeSet::new();
        for t in m.signals.iter().map(|s| &s.signal_type) {
            fleetprompt_core::signal::SignalType::parse(t.as_str())
                .map_err(|e| format!("{}: signal {t:?}: {e}", m.slug))?;
            if !seen.insert(t) {
                return Err(format!("{}: signal {t:?} is listed twice", m.slug));
            }
        }
        let mut seen = BTreeSet::new();
        for k in m.directives.iter().map(|d| &d.kind) {
            if !seen.insert(k) {
                return Err(format!("{}: directive kind {k:?} is listed twice", m.slug));
            }
        }
        for d in &m.destinations {
            if !crate::destination::KINDS.contains(&d.as_str()) {
                return Err(format!("{}: unknown destination kind {d:?}", m.slug));
            }
        }
        Ok(m)
    }

    /// Whether this package provides directive `kind`.
    pub fn provides(&self, kind: &str) -> bool {
        self.directives.iter().any(|d| d.kind == kind)
    }

    /// Whether `file` (a rule's source path) is one of this package's
    /// default workflow files.
    pub fn owns_rule_file(&self, file: &std::path::Path) -> bool {
        file.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| self.workflows.iter().any(|w| w == n))
            // Tenant overrides (workflows/tenants/<slug>/…) are the
            // tenant's own, not the package's defaults.
            && !file.components().any(|c| c.as_os_str() == "tenants")
    }
}

/// Every package the platform ships, parsed once. A manifest that does not
/// parse is a bug of this build, caught by the unit tests.
pub fn all() -> &'static [Manifest] {
    static ALL: OnceLock<Vec<Manifest>> = OnceLock::new();
    ALL.get_or_init(|| {
        MANIFESTS
            .iter()
            .map(|t| Manifest::parse(t).unwrap_or_else(|e| panic!("package manifest: {e}")))
            .collect()
    })
}

/// The package `slug`.
pub fn get(slug: &str) -> Option<&'static Manifest> {
    all().iter().find(|m| m.slug == slug)
}

/// The package that provides directive `kind` (none: a platform kind).
pub fn of_kind(kind: &str) -> Option<&'static Manifest> {
    all().iter().find(|m| m.provides(kind))
}

/// Every signal type the packages emit.
pub fn signal_types() -> impl Iterator<Item = &'static str> {
    all()
        .iter()
        .flat_map(|m| m.signals.iter().map(|s| s.signal_type.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The kinds no package provides: the platform's own.
    const PLATFORM_KINDS: &[&str] = &["noop", "webhook.post"];

    #[test]
    fn every_manifest_parses() {
        assert_eq!(all().len(), MANIFESTS.len());
        let chat = get(crate::webchat::PACKAGE).expect("website chat's slug");
        assert_eq!(chat.category, Category::CustomerService);
        assert_eq!(chat.workflows, ["website_chat.toml"]);
    }

    /// The manifests and the handler registry name the same kinds: every
    /// registered kind is the platform's or exactly one package's, and
    /// every kind a manifest lists is registered.
    #[test]
    fn manifest_kinds_are_the_registered_kinds() {
        let registry = crate::handlers::platform();
        let registered: BTreeSet<&str> = registry.kinds().into_iter().collect();
        for kind in &registered {
            let owners = all().iter().filter(|m| m.provides(kind)).count();
            if PLATFORM_KINDS.contains(kind) {
                assert_eq!(owners, 0, "{kind} is the platform's, not a package's");
            } else {
                assert_eq!(owners, 1, "{kind} is registered: add it to one manifest");
            }
        }
        for m in all() {
            for d in &m.directives {
                assert!(
                    registered.contains(d.kind.as_str()),
                    "{} lists {}, which no handler is registered for",
                    m.slug,
                    d.kind
                );
            }
        }
    }

    /// A package's signals are exactly what its code records and what its
    /// handlers' results and creations record, beyond the platform's own
    /// `directive.*`.
    #[test]
    fn manifest_signals_are_what_the_code_records() {
        let registry = crate::handlers::platform();
        let listed: BTreeSet<&str> = signal_types().collect();
        let mut expected: BTreeSet<&str> = BTreeSet::new();
        for kind in registry.kinds() {
            if of_kind(kind).is_none() {
                continue;
            }
            let h = registry.get(kind).expect("registered");
            for r in std::iter::once(h.result_signals()).chain(h.also_result_signals()) {
                expected.insert(r.succeeded);
                expected.insert(r.failed);
            }
            expected.extend(h.created_signal());
        }
        expected.retain(|t| !t.starts_with("directive."));
        for t in &expected {
            assert!(listed.contains(t), "a package handler records {t}: list it");
        }
        // What the package's code records by name is checked by
        // `handlers::tests::every_signal_the_code_records_is_known`, which
        // reads the sources against this same list; here, that nothing is
        // listed that neither the handlers nor the sources record.
        let sources = recorded_in_sources();
        for t in &listed {
            assert!(
                expected.contains(t) || sources.contains(*t),
                "{t} is in a manifest, but no code records it"
            );
        }
    }

    /// Signal type literals passed to `NewSignal::new(` or `signal_of(`
    /// anywhere in the engine's sources.
    fn recorded_in_sources() -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut pending = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).expect("engine sources") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("source");
                for call in ["NewSignal::new(", "signal_of("] {
                    for (at, _) in text.match_indices(call) {
                        let rest = text[at + call.len()..].trim_start();
                        if let Some(literal) = rest.strip_prefix('"') {
                            out.insert(literal.split('"').next().unwrap_or_default().to_owned());
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn settings_are_checked_against_the_schema() {
        let schema = SettingsSchema {
            additional: false,
            fields: vec![
                FieldSpec {
                    name: "brand".into(),
                    ty: FieldType::String,
                    required: true,
                    description: None,
                },
                FieldSpec {
                    name: "limit".into(),
                    ty: FieldType::Integer,
                    required: false,
                    description: None,
                },
            ],
        };
        assert!(schema.check(&json!({ "brand": "Acme" })).is_ok());
        assert!(
            schema
                .check(&json!({ "brand": "Acme", "limit": 3 }))
                .is_ok()
        );
        for (bad, says) in [
            (json!([]), "JSON object"),
            (json!({}), "`brand` is required"),
            (json!({ "brand": 1 }), "`brand` must be a string"),
            (
                json!({ "brand": "A", "limit": "x" }),
                "`limit` must be an integer",
            ),
            (
                json!({ "brand": "A", "other": 1 }),
                "unknown setting `other`",
            ),
        ] {
            let e = schema.check(&bad).expect_err("refused").to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let open = SettingsSchema {
            additional: true,
            ..schema
        };
        assert!(open.check(&json!({ "brand": "A", "other": 1 })).is_ok());
    }

    #[test]
    fn a_payload_field_may_be_optional() {
        let m = get("website_chat").expect("website chat");
        let received = m
            .signals
            .iter()
            .find(|s| s.signal_type == "webchat.message.received")
            .expect("listed");
        assert_eq!(
            received.fields["quiet_ms"],
            PayloadField {
                ty: FieldType::Integer,
                optional: true
            }
        );
        assert!(!received.fields["role"].optional);
    }

    #[test]
    fn default_rules_are_told_from_tenant_overrides() {
        let m = get("website_chat").expect("website chat");
        assert!(m.owns_rule_file(std::path::Path::new("/srv/workflows/website_chat.toml")));
        assert!(!m.owns_rule_file(std::path::Path::new(
            "/srv/workflows/tenants/acme/website_chat.toml"
        )));
        assert!(!m.owns_rule_file(std::path::Path::new("/srv/workflows/mine.toml")));
    }

    #[test]
    fn a_bad_manifest_is_refused_with_its_reason() {
        let base = "slug = \"x\"\nname = \"X\"\ndescription = \"d\"\nversion = \"1\"\ncategory = \"sales\"\n";
        assert!(Manifest::parse(base).is_ok());
        let e = Manifest::parse(&base.replace("sales", "games")).unwrap_err();
        assert!(e.contains("category"), "{e}");
        let e = Manifest::parse(&format!("{base}destinations = [\"fax\"]\n")).unwrap_err();
        assert!(e.contains("fax"), "{e}");
        let twice = format!(
            "{base}[[directive]]\nkind = \"a.b\"\ndescription = \"\"\n[[directive]]\nkind = \"a.b\"\ndescription = \"\"\n"
        );
        assert!(Manifest::parse(&twice).unwrap_err().contains("twice"));
    }
}

//! Packages: what the platform knows of each through its manifest — the
//! signal types it emits, the directive kinds it provides, its default
//! workflow files, its settings schema and the destination kinds it uses.
//!
//! A package is a crate of its own (`crates/<package>`) that implements
//! [`Package`]: the engine asks it, once at start, for its manifest (a TOML
//! file beside the package's code, embedded with `include_str!`), its
//! directive handlers, its default rules, and what installing it sets up.
//! The binary passes the packages to [`Engine::new`](crate::Engine::new);
//! the platform crates name none of them. A package's unit tests hold its
//! manifest to its code (see [`check`]).

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use fleetprompt_core::TenantId;
use fleetprompt_core::signal::ValidationError;
use fleetprompt_store::Tx;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Engine, EngineError, HandlerRegistry};

/// What the engine asks of a package at start. Nothing here is about one
/// package in particular: a second package implements the same.
pub trait Package: Send + Sync + 'static {
    /// Its manifest, as TOML text (see `docs/packages.md`).
    fn manifest(&self) -> &'static str;

    /// Registers its directive handlers, each under a kind its manifest
    /// lists. Handlers that need the package's state hold an `Arc` of it.
    fn register(&self, handlers: &mut HandlerRegistry);

    /// Its state object, which its code reaches again through
    /// [`Engine::package_state`](crate::Engine::package_state) (from HTTP
    /// handlers, say). `None` for a package without one.
    fn state(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        None
    }

    /// What installing it for `tenant` sets up, in the install's
    /// transaction (also when an install happens in passing).
    fn on_install<'a>(
        &'a self,
        engine: &'a Engine,
        tx: &'a mut Tx,
        tenant: TenantId,
    ) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Its default rule files as shipped: `(file name, TOML text)`. The
    /// names are its manifest's `workflows`; the files themselves are
    /// deployed to the workflows directory.
    fn default_rules(&self) -> &'static [(&'static str, &'static str)];

    /// Describes its metrics (and registers their zero series); called
    /// once, at start.
    fn describe_metrics(&self) {}

    /// Its tables whose size follows traffic: the engine keeps their
    /// planner statistics fresh with the platform's
    /// ([`fleetprompt_store::statistics`]).
    fn growing_tables(&self) -> &'static [&'static str] {
        &[]
    }

    /// Its part of `fleetprompt prune`, for a package whose tables keep
    /// history that ages out: run with the platform's, in the same
    /// transactions ([`fleetprompt_store::retention`]).
    fn retention(&self) -> Option<&'static dyn fleetprompt_store::retention::PackageRetention> {
        None
    }
}

/// The manifests of the packages this process runs, set once by
/// [`load`].
static MANIFESTS: OnceLock<Vec<Manifest>> = OnceLock::new();

/// Parses and keeps the manifests of `packages` for [`all`], [`get`] and
/// [`of_kind`]; the first call in a process decides (one binary runs one
/// set of packages), later calls change nothing.
pub fn load(packages: &[Arc<dyn Package>]) -> Result<(), String> {
    if MANIFESTS.get().is_some() {
        return Ok(());
    }
    let parsed = packages
        .iter()
        .map(|p| Manifest::parse(p.manifest()))
        .collect::<Result<Vec<_>, _>>()?;
    let _ = MANIFESTS.set(parsed);
    Ok(())
}

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
    /// `<package>.message.received` …
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
    /// `<package>.reply_send` …
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
    /// Its name in installations and URLs (`snake_case`).
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

/// The platform's handlers and those `packages` register.
pub fn handlers(packages: &[Arc<dyn Package>]) -> HandlerRegistry {
    let mut r = crate::handlers::platform();
    for p in packages {
        p.register(&mut r);
    }
    r
}

/// Every package this process runs (none until [`load`]).
pub fn all() -> &'static [Manifest] {
    MANIFESTS.get().map(Vec::as_slice).unwrap_or_default()
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

/// Checks that hold a package's manifest to its code, for its unit tests
/// (and the platform's own): they panic with what drifted.
pub mod check {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use super::{Manifest, Package};
    use crate::HandlerRegistry;

    /// The kinds no package provides: the platform's own.
    pub const PLATFORM_KINDS: &[&str] = &["noop", "webhook.post"];

    /// The platform's handlers and `packages`' (as the engine builds them).
    pub fn registry(packages: &[Arc<dyn Package>]) -> HandlerRegistry {
        super::handlers(packages)
    }

    /// The manifests and the handler registry name the same kinds: every
    /// registered kind is the platform's or exactly one package's, and
    /// every kind a manifest lists is registered.
    pub fn kinds_are_registered(manifests: &[Manifest], registry: &HandlerRegistry) {
        let registered: BTreeSet<&str> = registry.kinds().into_iter().collect();
        for kind in &registered {
            let owners = manifests.iter().filter(|m| m.provides(kind)).count();
            if PLATFORM_KINDS.contains(kind) {
                assert_eq!(owners, 0, "{kind} is the platform's, not a package's");
            } else {
                assert_eq!(owners, 1, "{kind} is registered: add it to one manifest");
            }
        }
        for m in manifests {
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

    /// A package's signals are exactly what its code (the sources under
    /// `sources`) records and what its handlers' results and creations
    /// record, beyond the platform's own `directive.*`.
    pub fn signals_are_recorded(manifest: &Manifest, registry: &HandlerRegistry, sources: &Path) {
        let listed: BTreeSet<&str> = manifest
            .signals
            .iter()
            .map(|s| s.signal_type.as_str())
            .collect();
        let mut expected: BTreeSet<&str> = BTreeSet::new();
        for kind in registry.kinds() {
            if !manifest.provides(kind) {
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
        // [`recorded_signals_are_known`]; here, that nothing is listed that
        // neither the handlers nor the sources record.
        let sources = recorded_in_sources(sources);
        for t in &listed {
            assert!(
                expected.contains(t) || sources.iter().any(|(_, s)| s == t),
                "{t} is in a manifest, but no code records it"
            );
        }
    }

    /// Every signal type the code under `sources` records by name (the
    /// first argument of `NewSignal::new(` or ingest's `signal_of(`, when
    /// it is a string literal) is in `known`, so the lists cannot silently
    /// fall behind the code. Returns how many it found.
    pub fn recorded_signals_are_known(known: &BTreeSet<String>, sources: &Path) -> usize {
        let found = recorded_in_sources(sources);
        for (path, name) in &found {
            assert!(
                known.contains(name),
                "{} records {name:?}: add it to its package's manifest (or RECORDED_SIGNALS)",
                path.display()
            );
        }
        found.len()
    }

    /// Signal type literals passed to `NewSignal::new(` or `signal_of(` in
    /// the `.rs` files under `dir`, with the file each is in.
    fn recorded_in_sources(dir: &Path) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).expect("sources") {
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
                        let Some(literal) = rest.strip_prefix('"') else {
                            continue;
                        };
                        let name = literal.split('"').next().unwrap_or_default();
                        // Not a call at all (these checks' own needles).
                        if !name.contains('.') || name.contains(' ') {
                            continue;
                        }
                        out.push((path.clone(), name.to_owned()));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// With no package, the registry holds the platform's kinds alone.
    #[test]
    fn the_platform_registers_only_its_own_kinds() {
        let registry = check::registry(&[]);
        check::kinds_are_registered(&[], &registry);
        let kinds: BTreeSet<&str> = registry.kinds().into_iter().collect();
        assert_eq!(kinds, check::PLATFORM_KINDS.iter().copied().collect());
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

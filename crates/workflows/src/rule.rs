//! The compiled rule set: every rule with its CEL program and templates
//! already built, indexed by signal type so routing touches only the rules
//! that can match.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cron::CronTrigger;
use crate::expr::Condition;
use crate::pattern::TypePattern;
use crate::template::{Template, Templates};

/// Which tenants a rule applies to: shipped defaults apply to all of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Defaults,
    Tenant(String),
}

impl Scope {
    /// Whether rules of this scope apply to `tenant_slug`.
    pub fn applies_to(&self, tenant_slug: &str) -> bool {
        match self {
            Scope::Defaults => true,
            Scope::Tenant(slug) => slug == tenant_slug,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Defaults => f.write_str("defaults"),
            Scope::Tenant(slug) => write!(f, "tenant {slug}"),
        }
    }
}

/// One loaded rule file and the SHA-256 of its bytes, recorded on every
/// directive its rules create so a timeline shows which version acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleFile {
    pub path: PathBuf,
    pub scope: Scope,
    pub sha256: String,
}

/// What the caller knows about the platform, for checks the files alone
/// cannot make. `None` skips the corresponding check.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Directive kinds that have a handler (e.g. `webchat.escalate_to_mattermost`).
    pub known_kinds: Option<BTreeSet<String>>,
    /// Destination names that exist.
    pub destinations: Option<Destinations>,
    /// Checks a directive's arguments against its kind (the engine's
    /// handlers know their arguments' types; this crate does not).
    pub args_check: Option<ArgsCheck>,
}

/// Checks `(kind, args)`: the arguments as the file writes them, with the
/// rule's `destination` added as the engine adds it. Templated values are
/// passed as their source text; a problem at one of them is not reported,
/// since only the rendered value can tell.
#[derive(Clone)]
pub struct ArgsCheck(pub std::sync::Arc<ArgsCheckFn>);

/// The function an [`ArgsCheck`] calls: `(kind, args)`.
pub type ArgsCheckFn = dyn Fn(&str, &serde_json::Value) -> Result<(), ArgsProblem> + Send + Sync;

impl std::fmt::Debug for ArgsCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ArgsCheck")
    }
}

/// Arguments that do not fit their kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgsProblem {
    /// The path below `args` of the field at fault (`["to", "0"]`).
    pub path: Vec<String>,
    /// The whole message, naming the field (`args.destination: missing field`).
    pub message: String,
}

/// Known destination names. Shipped defaults may only name `shared`
/// destinations (ones every tenant is expected to configure); a tenant's
/// rules may name `shared` ones and that tenant's own.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    pub shared: BTreeSet<String>,
    pub per_tenant: BTreeMap<String, BTreeSet<String>>,
}

impl Destinations {
    pub(crate) fn allows(&self, scope: &Scope, name: &str) -> bool {
        self.shared.contains(name)
            || match scope {
                Scope::Defaults => false,
                Scope::Tenant(slug) => self.per_tenant.get(slug).is_some_and(|s| s.contains(name)),
            }
    }
}

/// How retries are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackoffKind {
    Exponential,
    Fixed,
}

/// Retry spacing: `base_ms` after the first failure, doubling (exponential)
/// or constant (fixed), never more than `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    pub kind: BackoffKind,
    pub base_ms: u64,
    pub max_ms: u64,
}

impl Backoff {
    /// The wait before retry number `failed_attempts` (1 = after the first
    /// failure).
    pub fn delay_ms(&self, failed_attempts: u32) -> u64 {
        match self.kind {
            BackoffKind::Fixed => self.base_ms.min(self.max_ms),
            BackoffKind::Exponential => {
                let shift = failed_attempts.saturating_sub(1).min(63);
                self.base_ms.saturating_mul(1u64 << shift).min(self.max_ms)
            }
        }
    }
}

/// A rule as the admin API and `workflows explain` list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSummary {
    pub id: String,
    pub scope: Scope,
    pub file: PathBuf,
    pub file_hash: String,
    pub description: Option<String>,
    pub enabled: bool,
    /// The `on` pattern, for signal rules.
    pub on: Option<String>,
    /// The cron expression and timezone, for schedule rules.
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub condition: Option<String>,
    /// Directive kinds in order; empty for a rule that emits a signal.
    pub directive_kinds: Vec<String>,
    /// The signal type a schedule rule emits.
    pub emits: Option<String>,
}

pub(crate) struct CompiledRule {
    pub(crate) id: String,
    pub(crate) description: Option<String>,
    pub(crate) file: usize,
    pub(crate) enabled: bool,
    pub(crate) trigger: Trigger,
    pub(crate) condition: Option<Condition>,
    pub(crate) action: Action,
    pub(crate) scope: Scope,
}

pub(crate) enum Trigger {
    Signal(TypePattern),
    /// Index into `RuleSet::crons`.
    Schedule(usize),
}

pub(crate) enum Action {
    Directives(Vec<CompiledDirective>),
    Emit(CompiledEmit),
}

pub(crate) struct CompiledDirective {
    pub(crate) kind: String,
    pub(crate) destination: Option<String>,
    /// `None` means the default key (see `route`).
    pub(crate) dedupe_key: Option<Template>,
    pub(crate) args: ArgTemplate,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) delay_ms: Option<u64>,
    pub(crate) cancel_on: Vec<TypePattern>,
    pub(crate) throttle: Option<(Template, u64)>,
}

pub(crate) struct CompiledEmit {
    pub(crate) signal_type: String,
    pub(crate) subject: Template,
    pub(crate) payload: ArgTemplate,
    pub(crate) key: Option<Template>,
}

/// `args`/`payload` with every string leaf compiled as a template.
pub(crate) enum ArgTemplate {
    Null,
    String(Template),
    Integer(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<ArgTemplate>),
    Table(Vec<(String, ArgTemplate)>),
}

/// Rule indices of one scope, by trigger.
#[derive(Default)]
pub(crate) struct ScopeIndex {
    /// Exact `on` type -> rule indices, in load order.
    pub(crate) exact: HashMap<String, Vec<usize>>,
    /// `(prefix, rule)` for wildcard `on` patterns; usually a handful, so a
    /// scan is cheaper than a trie.
    pub(crate) wildcard: Vec<(String, usize)>,
    /// Every rule of the scope, in load order (for `explain`).
    pub(crate) all: Vec<usize>,
    /// `(rule, directive)` pairs that have a `cancel_on`.
    pub(crate) cancellable: Vec<(usize, usize)>,
    pub(crate) by_id: HashMap<String, usize>,
}

impl ScopeIndex {
    pub(crate) fn add(&mut self, index: usize, rule: &CompiledRule) {
        self.all.push(index);
        self.by_id.insert(rule.id.clone(), index);
        if let Trigger::Signal(pattern) = &rule.trigger {
            match pattern.prefix() {
                Some(prefix) => self.wildcard.push((prefix.to_owned(), index)),
                None => self
                    .exact
                    .entry(pattern.as_str().to_owned())
                    .or_default()
                    .push(index),
            }
        }
        if let Action::Directives(ds) = &rule.action {
            for (i, d) in ds.iter().enumerate() {
                if !d.cancel_on.is_empty() {
                    self.cancellable.push((index, i));
                }
            }
        }
    }

    pub(crate) fn candidates(&self, signal_type: &str, out: &mut Vec<usize>) {
        if let Some(exact) = self.exact.get(signal_type) {
            out.extend_from_slice(exact);
        }
        out.extend(
            self.wildcard
                .iter()
                .filter(|(prefix, _)| signal_type.starts_with(prefix.as_str()))
                .map(|(_, i)| *i),
        );
    }
}

/// A validated, compiled set of rules. Immutable once built: a reload
/// builds a new one and swaps the `Arc`, so routing never sees a half-loaded
/// set. `Send + Sync`.
pub struct RuleSet {
    pub(crate) files: Vec<RuleFile>,
    pub(crate) rules: Vec<CompiledRule>,
    pub(crate) defaults: ScopeIndex,
    pub(crate) tenants: HashMap<String, ScopeIndex>,
    pub(crate) crons: Vec<CronTrigger>,
    pub(crate) cel: Arc<cel::Env>,
    pub(crate) templates: Templates,
    /// Every `on` and `cancel_on` pattern with its position, for
    /// [`RuleSet::unknown_signal_types`].
    pub(crate) signal_refs: Vec<crate::taxonomy::SignalRef>,
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("files", &self.files)
            .field("rules", &self.rules.len())
            .field("cron_rules", &self.crons.len())
            .finish_non_exhaustive()
    }
}

impl RuleSet {
    /// A set with no rules: routes nothing. Useful before the first load.
    pub fn empty() -> RuleSet {
        RuleSet {
            files: Vec::new(),
            rules: Vec::new(),
            defaults: ScopeIndex::default(),
            tenants: HashMap::new(),
            crons: Vec::new(),
            cel: crate::expr::cel_env(),
            templates: Templates::new(),
            signal_refs: Vec::new(),
        }
    }

    /// The files the set was built from, with their hashes.
    pub fn files(&self) -> &[RuleFile] {
        &self.files
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Tenant slugs that have their own rules.
    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        self.tenants.keys().map(String::as_str)
    }

    /// Every rule, defaults first then tenants, in file order.
    pub fn summaries(&self) -> Vec<RuleSummary> {
        self.rules.iter().map(|r| self.summary(r)).collect()
    }

    fn summary(&self, rule: &CompiledRule) -> RuleSummary {
        let file = &self.files[rule.file];
        let (on, schedule, timezone) = match &rule.trigger {
            Trigger::Signal(p) => (Some(p.as_str().to_owned()), None, None),
            Trigger::Schedule(i) => {
                let c = &self.crons[*i];
                (
                    None,
                    Some(c.schedule.clone()),
                    Some(c.timezone.name().to_owned()),
                )
            }
        };
        let (directive_kinds, emits) = match &rule.action {
            Action::Directives(ds) => (ds.iter().map(|d| d.kind.clone()).collect(), None),
            Action::Emit(e) => (Vec::new(), Some(e.signal_type.clone())),
        };
        RuleSummary {
            id: rule.id.clone(),
            scope: rule.scope.clone(),
            file: file.path.clone(),
            file_hash: file.sha256.clone(),
            description: rule.description.clone(),
            enabled: rule.enabled,
            on,
            schedule,
            timezone,
            condition: rule.condition.as_ref().map(|c| c.source.clone()),
            directive_kinds,
            emits,
        }
    }

    /// The ids of the enabled rules applying to `tenant_slug` that create
    /// a directive for the destination `name`: what deleting it would
    /// leave with nowhere to deliver.
    pub fn rules_naming_destination(&self, tenant_slug: &str, name: &str) -> Vec<String> {
        self.rules
            .iter()
            .filter(|r| r.enabled && r.scope.applies_to(tenant_slug))
            .filter(|r| match &r.action {
                Action::Directives(ds) => ds.iter().any(|d| d.destination.as_deref() == Some(name)),
                Action::Emit(_) => false,
            })
            .map(|r| r.id.clone())
            .collect()
    }

    pub(crate) fn scope_index(&self, scope: &Scope) -> Option<&ScopeIndex> {
        match scope {
            Scope::Defaults => Some(&self.defaults),
            Scope::Tenant(slug) => self.tenants.get(slug),
        }
    }
}

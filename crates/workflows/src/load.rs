//! Reading a workflows directory and turning its files into a [`RuleSet`],
//! collecting every problem as a [`Diagnostic`] instead of stopping at the
//! first one.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::cron::CronTrigger;
use crate::diagnostic::{Diagnostic, SourceText};
use crate::duration::parse_duration;
use crate::error::LoadError;
use crate::expr::{Condition, ExprProblem};
use crate::model::{ArgNode, DirectiveDoc, EmitDoc, FileDoc, RetryDoc, RuleDoc};
use crate::pattern::TypePattern;
use crate::rule::{
    Action, ArgTemplate, ArgsCheck, Backoff, BackoffKind, CheckOptions, CompiledDirective,
    CompiledEmit, CompiledRule, RuleFile, RuleSet, Scope, ScopeIndex, Trigger,
};
use crate::template::Template;

/// Retry policy when a directive says nothing.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
pub const DEFAULT_BACKOFF_BASE_MS: u64 = 2_000;
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 600_000;

/// Names a condition on a signal rule may use.
const SIGNAL_COND_VARS: &[&str] = &["signal", "tenant", "site", "now"];
const SIGNAL_TMPL_VARS: &[&str] = &["signal", "tenant", "site", "now", "destination"];
const CRON_COND_VARS: &[&str] = &["tick", "tenant", "site", "now"];
const CRON_TMPL_VARS: &[&str] = &["tick", "tenant", "site", "now", "destination"];

/// One rule file's text and where it came from.
#[derive(Debug, Clone)]
pub struct RuleSource {
    pub path: PathBuf,
    pub scope: Scope,
    pub bytes: Vec<u8>,
}

/// Lists `<dir>/*.toml` (defaults) and `<dir>/tenants/<slug>/*.toml`, each
/// group sorted by name so load order (and so evaluation order) is stable.
pub fn read_dir(dir: &Path) -> Result<Vec<RuleSource>, LoadError> {
    let mut sources = Vec::new();
    for path in toml_files(dir)? {
        sources.push(read_source(path, Scope::Defaults)?);
    }
    let tenants_dir = dir.join("tenants");
    if tenants_dir.is_dir() {
        let mut slugs = Vec::new();
        for entry in std::fs::read_dir(&tenants_dir).map_err(|e| io(&tenants_dir, e))? {
            let entry = entry.map_err(|e| io(&tenants_dir, e))?;
            if entry.path().is_dir() {
                slugs.push((
                    entry.file_name().to_string_lossy().into_owned(),
                    entry.path(),
                ));
            }
        }
        slugs.sort();
        for (slug, path) in slugs {
            for file in toml_files(&path)? {
                sources.push(read_source(file, Scope::Tenant(slug.clone()))?);
            }
        }
    }
    Ok(sources)
}

fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_source(path: PathBuf, scope: Scope) -> Result<RuleSource, LoadError> {
    let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
    Ok(RuleSource { path, scope, bytes })
}

fn io(path: &Path, source: std::io::Error) -> LoadError {
    LoadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl RuleSet {
    /// Reads and validates a workflows directory as a whole.
    pub fn load_dir(dir: &Path, options: &CheckOptions) -> Result<RuleSet, LoadError> {
        RuleSet::from_sources(read_dir(dir)?, options)
    }

    /// Validates and compiles rule files already in memory. All problems are
    /// returned together; the set is only built if there are none.
    pub fn from_sources(
        sources: Vec<RuleSource>,
        options: &CheckOptions,
    ) -> Result<RuleSet, LoadError> {
        // Defaults load first so their rules come first in every evaluation.
        let mut sources = sources;
        sources.sort_by_key(|s| matches!(s.scope, Scope::Tenant(_)));
        let mut builder = Builder {
            set: RuleSet::empty(),
            options,
            diagnostics: Vec::new(),
            seen_ids: HashMap::new(),
        };
        for source in &sources {
            builder.load_file(source);
        }
        if builder.diagnostics.is_empty() {
            Ok(builder.set)
        } else {
            Err(LoadError::Invalid(builder.diagnostics))
        }
    }
}

struct Builder<'o> {
    set: RuleSet,
    options: &'o CheckOptions,
    diagnostics: Vec<Diagnostic>,
    /// (scope, id) -> where it was first defined, for duplicate messages.
    seen_ids: HashMap<(Scope, String), String>,
}

/// Per-file state while compiling its rules.
struct FileCtx<'a> {
    src: SourceText<'a>,
    scope: &'a Scope,
    file_index: usize,
}

impl Builder<'_> {
    fn load_file(&mut self, source: &RuleSource) {
        let sha256 = hex::encode(Sha256::digest(&source.bytes));
        let file_index = self.set.files.len();
        self.set.files.push(RuleFile {
            path: source.path.clone(),
            scope: source.scope.clone(),
            sha256,
        });
        let Ok(text) = std::str::from_utf8(&source.bytes) else {
            self.diagnostics.push(Diagnostic {
                file: source.path.clone(),
                line: 1,
                col: 1,
                message: "file is not valid UTF-8".to_owned(),
            });
            return;
        };
        let ctx = FileCtx {
            src: SourceText::new(&source.path, text),
            scope: &source.scope,
            file_index,
        };
        let doc: FileDoc = match toml::from_str(text) {
            Ok(doc) => doc,
            Err(e) => {
                let offset = e.span().map_or(0, |s| s.start);
                self.diagnostics
                    .push(ctx.src.at(offset, e.message().trim_end().to_owned()));
                return;
            }
        };
        for rule in doc.rule {
            self.load_rule(&ctx, rule);
        }
    }

    fn signal_ref(
        &mut self,
        ctx: &FileCtx<'_>,
        offset: usize,
        key: &'static str,
        pattern: &TypePattern,
    ) {
        let (line, col) = ctx.src.position(offset);
        self.set.signal_refs.push(crate::taxonomy::SignalRef {
            file: ctx.src.path.to_path_buf(),
            line,
            col,
            key,
            pattern: pattern.clone(),
        });
    }

    fn err(&mut self, d: Diagnostic) {
        self.diagnostics.push(d);
    }

    fn load_rule(&mut self, ctx: &FileCtx<'_>, rule: RuleDoc) {
        let before = self.diagnostics.len();
        let id = rule.id.get_ref().clone();
        let id_span = rule.id.span();
        if let Err(m) = check_rule_id(&id) {
            self.err(ctx.src.at(id_span.start, m));
        }
        let key = (ctx.scope.clone(), id.clone());
        let here = {
            let (line, col) = ctx.src.position(id_span.start);
            format!("{}:{line}:{col}", ctx.src.path.display())
        };
        if let Some(first) = self.seen_ids.get(&key) {
            let msg = format!(
                "duplicate rule id `{id}` in {} (first defined at {first})",
                ctx.scope
            );
            self.err(ctx.src.at(id_span.start, msg));
        } else {
            self.seen_ids.insert(key, here);
        }

        // Trigger: exactly one of `on` and `schedule`.
        let trigger = match (&rule.on, &rule.schedule) {
            (Some(_), Some(schedule)) => {
                self.err(ctx.src.at(
                    schedule.span().start,
                    format!("rule `{id}` has both `on` and `schedule`: a rule is triggered by signals or by a schedule, not both"),
                ));
                None
            }
            (None, None) => {
                self.err(ctx.src.at(
                    id_span.start,
                    format!("rule `{id}` needs a trigger: `on = \"<signal type>\"` or `schedule = \"<cron>\"`"),
                ));
                None
            }
            (Some(on), None) => match TypePattern::parse(on.get_ref()) {
                Ok(p) => {
                    self.signal_ref(ctx, on.span().start, "on", &p);
                    Some(PendingTrigger::Signal(p))
                }
                Err(m) => {
                    self.err(ctx.src.at(on.span().start, m));
                    None
                }
            },
            (None, Some(schedule)) => self.cron_trigger(ctx, &id, schedule, rule.timezone.as_ref()),
        };
        if let (Some(_), Some(tz)) = (&rule.on, &rule.timezone) {
            self.err(ctx.src.at(
                tz.span().start,
                "`timezone` only applies to rules with a `schedule`",
            ));
        }
        let is_cron = rule.schedule.is_some() && rule.on.is_none();
        let (cond_vars, tmpl_vars) = if is_cron {
            (CRON_COND_VARS, CRON_TMPL_VARS)
        } else {
            (SIGNAL_COND_VARS, SIGNAL_TMPL_VARS)
        };

        let condition = rule.when.as_ref().and_then(|when| {
            match Condition::compile(&self.set.cel, when.get_ref()) {
                Ok(c) => {
                    let problems = c.undeclared(cond_vars);
                    if problems.is_empty() {
                        Some(c)
                    } else {
                        self.string_problems(ctx, &when.span(), problems);
                        None
                    }
                }
                Err(p) => {
                    self.string_problems(ctx, &when.span(), vec![p]);
                    None
                }
            }
        });

        // Action: directives, or (cron only) an emitted signal.
        let action = match (&rule.emit, rule.directive.is_empty(), is_cron) {
            (Some(emit), _, false) => {
                self.err(ctx.src.at(
                    emit.span().start,
                    "`emit` is only for rules with a `schedule`; a signal rule creates directives",
                ));
                None
            }
            (Some(emit), false, true) => {
                self.err(ctx.src.at(
                    emit.span().start,
                    format!("rule `{id}` has both `emit` and `[[rule.directive]]`: choose one"),
                ));
                None
            }
            (Some(emit), true, true) => self
                .emit(ctx, emit.get_ref(), CRON_COND_VARS)
                .map(Action::Emit),
            (None, true, _) => {
                let what = if is_cron {
                    "at least one `[[rule.directive]]` or an `[rule.emit]`"
                } else {
                    "at least one `[[rule.directive]]`"
                };
                self.err(
                    ctx.src
                        .at(id_span.start, format!("rule `{id}` needs {what}")),
                );
                None
            }
            (None, false, _) => {
                let mut out = Vec::new();
                for d in &rule.directive {
                    if let Some(c) = self.directive(ctx, d, tmpl_vars) {
                        out.push(c);
                    }
                }
                (out.len() == rule.directive.len()).then_some(Action::Directives(out))
            }
        };

        if self.diagnostics.len() != before {
            return;
        }
        let (Some(trigger), Some(action)) = (trigger, action) else {
            return;
        };
        let index = self.set.rules.len();
        let trigger = match trigger {
            PendingTrigger::Signal(p) => Trigger::Signal(p),
            PendingTrigger::Cron(mut c) => {
                c.rule = index;
                c.rule_id = id.clone();
                c.scope = ctx.scope.clone();
                c.file = ctx.src.path.to_path_buf();
                c.file_hash = self.set.files[ctx.file_index].sha256.clone();
                self.set.crons.push(*c);
                Trigger::Schedule(self.set.crons.len() - 1)
            }
        };
        let compiled = CompiledRule {
            id,
            description: rule.description,
            file: ctx.file_index,
            enabled: rule.enabled.unwrap_or(true),
            trigger,
            condition,
            action,
            scope: ctx.scope.clone(),
        };
        let index_for_scope: &mut ScopeIndex = match ctx.scope {
            Scope::Defaults => &mut self.set.defaults,
            Scope::Tenant(slug) => self.set.tenants.entry(slug.clone()).or_default(),
        };
        index_for_scope.add(index, &compiled);
        self.set.rules.push(compiled);
    }

    fn cron_trigger(
        &mut self,
        ctx: &FileCtx<'_>,
        id: &str,
        schedule: &Spanned<String>,
        timezone: Option<&Spanned<String>>,
    ) -> Option<PendingTrigger> {
        let tz = match timezone {
            None => Some(chrono_tz::UTC),
            Some(tz) => match chrono_tz::Tz::from_str(tz.get_ref()) {
                Ok(tz) => Some(tz),
                Err(_) => {
                    self.err(ctx.src.at(
                        tz.span().start,
                        format!(
                            "unknown timezone `{}` (use an IANA name such as \"Europe/Paris\" or \"UTC\")",
                            tz.get_ref()
                        ),
                    ));
                    None
                }
            },
        };
        let parsed = match crate::cron::parse_schedule(schedule.get_ref()) {
            Ok(s) => Some(s),
            Err(p) => {
                self.string_problems(ctx, &schedule.span(), vec![p]);
                None
            }
        };
        let (tz, parsed) = (tz?, parsed?);
        Some(PendingTrigger::Cron(Box::new(CronTrigger {
            rule_id: id.to_owned(),
            scope: Scope::Defaults,
            file: PathBuf::new(),
            file_hash: String::new(),
            schedule: schedule.get_ref().clone(),
            timezone: tz,
            parsed,
            rule: 0,
        })))
    }

    fn directive(
        &mut self,
        ctx: &FileCtx<'_>,
        d: &DirectiveDoc,
        vars: &[&'static str],
    ) -> Option<CompiledDirective> {
        let before = self.diagnostics.len();
        let kind = d.kind.get_ref();
        if let Some(known) = &self.options.known_kinds
            && !known.contains(kind)
        {
            let list: Vec<&str> = known.iter().map(String::as_str).collect();
            self.err(ctx.src.at(
                d.kind.span().start,
                format!(
                    "unknown directive kind `{kind}` (known: {})",
                    list.join(", ")
                ),
            ));
        }
        if let (Some(dest), Some(known)) = (&d.destination, &self.options.destinations)
            && !known.allows(ctx.scope, dest.get_ref())
        {
            let what = match ctx.scope {
                Scope::Defaults => "shared destinations".to_owned(),
                Scope::Tenant(slug) => format!("destinations of tenant `{slug}`"),
            };
            self.err(ctx.src.at(
                dest.span().start,
                format!(
                    "unknown destination `{}`: not among the {what}",
                    dest.get_ref()
                ),
            ));
        }
        if self.diagnostics.len() == before
            && let Some(check) = &self.options.args_check
        {
            self.check_args(ctx, d, check.clone());
        }
        // `destination` is only a template variable when the directive has one.
        let vars: Vec<&str> = vars
            .iter()
            .copied()
            .filter(|v| *v != "destination" || d.destination.is_some())
            .collect();
        let dedupe_key = d
            .dedupe_key
            .as_ref()
            .and_then(|k| self.template(ctx, k, &vars));
        let args = match &d.args {
            None => Some(ArgTemplate::Null),
            Some(args) => match args.get_ref() {
                ArgNode::Table(_) => self.arg_template(ctx, args, &vars),
                _ => {
                    self.err(ctx.src.at(
                        args.span().start,
                        "`args` must be a table, e.g. args = { text = \"...\" }",
                    ));
                    None
                }
            },
        };
        let (max_attempts, backoff) = self.retry(ctx, d.retry.as_ref());
        let delay_ms = d.delay.as_ref().and_then(|s| self.duration(ctx, s, false));
        let mut cancel_on = Vec::new();
        if let Some(list) = &d.cancel_on {
            if d.delay.is_none()
                && let Some(first) = list.first()
            {
                self.err(ctx.src.at(
                    first.span().start,
                    "`cancel_on` needs a `delay`: only a directive that is still waiting can be cancelled",
                ));
            }
            for p in list {
                match TypePattern::parse(p.get_ref()) {
                    Ok(parsed) => {
                        self.signal_ref(ctx, p.span().start, "cancel_on", &parsed);
                        cancel_on.push(parsed);
                    }
                    Err(m) => self.err(ctx.src.at(p.span().start, m)),
                }
            }
        }
        let throttle = d.throttle.as_ref().and_then(|t| {
            let key = self.template(ctx, &t.key, &vars);
            let window = self.duration(ctx, &t.window, true);
            Some((key?, window?))
        });
        if self.diagnostics.len() != before {
            return None;
        }
        Some(CompiledDirective {
            kind: kind.clone(),
            destination: d.destination.as_ref().map(|s| s.get_ref().clone()),
            dedupe_key,
            args: args?,
            max_attempts,
            backoff,
            delay_ms,
            cancel_on,
            throttle,
        })
    }

    fn emit(&mut self, ctx: &FileCtx<'_>, e: &EmitDoc, vars: &[&str]) -> Option<CompiledEmit> {
        let before = self.diagnostics.len();
        if let Err(m) = TypePattern::parse(e.signal_type.get_ref()).and_then(|p| {
            if p.prefix().is_some() {
                Err("an emitted signal needs a concrete type, not a pattern".to_owned())
            } else {
                Ok(p)
            }
        }) {
            self.err(ctx.src.at(e.signal_type.span().start, m));
        }
        let subject = self.template(ctx, &e.subject, vars);
        let payload = match &e.payload {
            None => Some(ArgTemplate::Null),
            Some(p) => match p.get_ref() {
                ArgNode::Table(_) => self.arg_template(ctx, p, vars),
                _ => {
                    self.err(ctx.src.at(p.span().start, "`payload` must be a table"));
                    None
                }
            },
        };
        let key = e.key.as_ref().and_then(|k| self.template(ctx, k, vars));
        if self.diagnostics.len() != before {
            return None;
        }
        Some(CompiledEmit {
            signal_type: e.signal_type.get_ref().clone(),
            subject: subject?,
            payload: payload?,
            key,
        })
    }

    fn retry(&mut self, ctx: &FileCtx<'_>, retry: Option<&RetryDoc>) -> (u32, Backoff) {
        let mut max_attempts = DEFAULT_MAX_ATTEMPTS;
        let mut backoff = Backoff {
            kind: BackoffKind::Exponential,
            base_ms: DEFAULT_BACKOFF_BASE_MS,
            max_ms: DEFAULT_BACKOFF_MAX_MS,
        };
        let Some(r) = retry else {
            return (max_attempts, backoff);
        };
        if let Some(n) = &r.max_attempts {
            match u32::try_from(*n.get_ref()) {
                Ok(v) if (1..=100).contains(&v) => max_attempts = v,
                _ => self.err(ctx.src.at(
                    n.span().start,
                    format!(
                        "`max_attempts` must be between 1 and 100, got {}",
                        n.get_ref()
                    ),
                )),
            }
        }
        if let Some(k) = &r.backoff {
            match k.get_ref().as_str() {
                "exponential" => backoff.kind = BackoffKind::Exponential,
                "fixed" => backoff.kind = BackoffKind::Fixed,
                other => self.err(ctx.src.at(
                    k.span().start,
                    format!("unknown backoff `{other}`: expected \"exponential\" or \"fixed\""),
                )),
            }
        }
        if let Some(b) = r.base.as_ref().and_then(|b| self.duration(ctx, b, true)) {
            backoff.base_ms = b;
        }
        if let Some(m) = &r.max {
            if let Some(ms) = self.duration(ctx, m, true) {
                if ms < backoff.base_ms {
                    self.err(
                        ctx.src
                            .at(m.span().start, "retry `max` is shorter than `base`"),
                    );
                } else {
                    backoff.max_ms = ms;
                }
            }
        } else if backoff.base_ms > backoff.max_ms {
            backoff.max_ms = backoff.base_ms;
        }
        (max_attempts, backoff)
    }

    fn duration(&mut self, ctx: &FileCtx<'_>, s: &Spanned<String>, positive: bool) -> Option<u64> {
        match parse_duration(s.get_ref()) {
            Ok(0) if positive => {
                self.err(ctx.src.at(
                    s.span().start,
                    format!("duration `{}` must be greater than zero", s.get_ref()),
                ));
                None
            }
            Ok(ms) => Some(ms),
            Err(m) => {
                self.err(ctx.src.at(s.span().start, m));
                None
            }
        }
    }

    fn template(
        &mut self,
        ctx: &FileCtx<'_>,
        s: &Spanned<String>,
        vars: &[&str],
    ) -> Option<Template> {
        match self.set.templates.compile(s.get_ref(), vars) {
            Ok(t) => Some(t),
            Err(problems) => {
                self.string_problems(ctx, &s.span(), problems);
                None
            }
        }
    }

    /// Asks the platform whether the directive's arguments fit its kind,
    /// and reports a misfit at the field (or the table missing it).
    fn check_args(&mut self, ctx: &FileCtx<'_>, d: &DirectiveDoc, check: ArgsCheck) {
        let mut args = match &d.args {
            Some(a) => literal(a.get_ref()),
            None => serde_json::Value::Object(Default::default()),
        };
        if let (Some(dest), serde_json::Value::Object(map)) = (&d.destination, &mut args) {
            map.entry("destination")
                .or_insert_with(|| serde_json::Value::String(dest.get_ref().clone()));
        }
        let Err(problem) = (check.0)(d.kind.get_ref(), &args) else {
            return;
        };
        // The deepest node of the path the file has, and whether the path
        // runs through a template (whose rendered value only tells).
        let mut at = d.args.as_ref().map(|a| a.span()).unwrap_or(d.kind.span());
        let mut node = d.args.as_ref();
        for key in &problem.path {
            let Some(n) = node else { break };
            if let ArgNode::String(s) = n.get_ref()
                && is_template(s)
            {
                return;
            }
            let next = match n.get_ref() {
                ArgNode::Table(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
                ArgNode::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            if key == "destination"
                && next.is_none()
                && let Some(dest) = &d.destination
            {
                at = dest.span();
            }
            node = next;
            if let Some(n) = node {
                at = n.span();
            }
        }
        if let Some(n) = node
            && let ArgNode::String(s) = n.get_ref()
            && is_template(s)
        {
            return;
        }
        self.err(ctx.src.at(
            at.start,
            format!("directive `{}`: {}", d.kind.get_ref(), problem.message),
        ));
    }

    fn arg_template(
        &mut self,
        ctx: &FileCtx<'_>,
        node: &Spanned<ArgNode>,
        vars: &[&str],
    ) -> Option<ArgTemplate> {
        Some(match node.get_ref() {
            ArgNode::String(s) => match self.set.templates.compile(s, vars) {
                Ok(t) => ArgTemplate::String(t),
                Err(problems) => {
                    self.string_problems(ctx, &node.span(), problems);
                    return None;
                }
            },
            ArgNode::Integer(i) => ArgTemplate::Integer(*i),
            ArgNode::Float(f) => ArgTemplate::Float(*f),
            ArgNode::Bool(b) => ArgTemplate::Bool(*b),
            ArgNode::Datetime(d) => ArgTemplate::Datetime(d.clone()),
            ArgNode::Array(items) => {
                let compiled: Vec<Option<ArgTemplate>> = items
                    .iter()
                    .map(|i| self.arg_template(ctx, i, vars))
                    .collect();
                ArgTemplate::Array(compiled.into_iter().collect::<Option<Vec<_>>>()?)
            }
            ArgNode::Table(entries) => {
                let compiled: Vec<Option<(String, ArgTemplate)>> = entries
                    .iter()
                    .map(|(k, v)| self.arg_template(ctx, v, vars).map(|t| (k.clone(), t)))
                    .collect();
                ArgTemplate::Table(compiled.into_iter().collect::<Option<Vec<_>>>()?)
            }
        })
    }

    fn string_problems(
        &mut self,
        ctx: &FileCtx<'_>,
        span: &Range<usize>,
        problems: Vec<ExprProblem>,
    ) {
        for p in problems {
            let d = match p.offset {
                Some(inner) => ctx.src.at_in_string(span, inner, p.message),
                None => ctx.src.at(span.start, p.message),
            };
            self.err(d);
        }
    }
}

enum PendingTrigger {
    Signal(TypePattern),
    Cron(Box<CronTrigger>),
}

fn check_rule_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("rule id is empty".to_owned());
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "rule id `{id}` has {c:?}: use letters, digits, `-`, `_` and `.`"
        ));
    }
    Ok(())
}

/// Whether a string of a rule file is a template (else it is taken as written).
fn is_template(s: &str) -> bool {
    ["{{", "{%", "{#"].iter().any(|m| s.contains(m))
}

/// An argument node as JSON, templates as their source text.
fn literal(node: &ArgNode) -> serde_json::Value {
    use serde_json::Value;
    match node {
        ArgNode::String(s) | ArgNode::Datetime(s) => Value::String(s.clone()),
        ArgNode::Integer(i) => Value::from(*i),
        ArgNode::Float(f) => Value::from(*f),
        ArgNode::Bool(b) => Value::Bool(*b),
        ArgNode::Array(items) => Value::Array(items.iter().map(|i| literal(i.get_ref())).collect()),
        ArgNode::Table(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), literal(v.get_ref())))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{load, options, rules, source, tenant};

    /// Loads one defaults file and returns its diagnostics (none if valid).
    /// A fake platform check: `email` needs `to`, a string.
    fn checked(text: &str) -> Vec<Diagnostic> {
        let mut o = options();
        o.args_check = Some(ArgsCheck(std::sync::Arc::new(|kind, args| {
            match (kind, args.get("to")) {
                ("email", None) => Err(crate::ArgsProblem {
                    path: vec!["to".into()],
                    message: "args.to: missing field".into(),
                }),
                ("email", Some(v)) if !v.is_string() => Err(crate::ArgsProblem {
                    path: vec!["to".into()],
                    message: "args.to: invalid type".into(),
                }),
                _ => Ok(()),
            }
        })));
        match RuleSet::from_sources(vec![source("w/a.toml", Scope::Defaults, text)], &o) {
            Ok(_) => Vec::new(),
            Err(e) => e.diagnostics(),
        }
    }

    #[test]
    fn arguments_that_do_not_fit_their_kind_are_reported_at_the_field() {
        let head = "[[rule]]\nid = \"r\"\non = \"a.b\"\n[[rule.directive]]\ndedupe_key = \"k\"\nkind = \"email\"\n";
        let missing = checked(&format!("{head}args = {{ subject = \"hi\" }}\n"));
        assert_eq!(missing.len(), 1, "{missing:?}");
        let m = missing[0].to_string();
        assert!(
            m.contains("a.toml:7:8") && m.contains("args.to: missing field"),
            "{m}"
        );
        let wrong = checked(&format!("{head}args = {{ subject = \"hi\", to = 3 }}\n"));
        let m = wrong[0].to_string();
        assert!(
            m.contains("a.toml:7:31") && m.contains("args.to: invalid type"),
            "{m}"
        );
        // No args at all: the kind is where the problem shows.
        let none = checked(head);
        assert!(none[0].to_string().contains("a.toml:6:8"), "{none:?}");
        // A template's value is only known when it renders.
        assert!(
            checked(&format!(
                "{head}args = {{ to = \"{{{{ signal.payload.n }}}}\" }}\n"
            ))
            .is_empty()
        );
        assert!(checked(&format!("{head}args = {{ to = \"a@b.c\" }}\n")).is_empty());
    }

    fn diags(text: &str) -> Vec<Diagnostic> {
        match load(vec![source("w/a.toml", Scope::Defaults, text)]) {
            Ok(_) => Vec::new(),
            Err(e) => e.diagnostics(),
        }
    }

    /// Asserts exactly one diagnostic at `line:col` whose message contains
    /// `needle`.
    fn expect_one(text: &str, line: u32, col: u32, needle: &str) {
        let d = diags(text);
        assert_eq!(d.len(), 1, "expected one diagnostic, got {d:#?}");
        assert_eq!((d[0].line, d[0].col), (line, col), "{}", d[0]);
        assert!(d[0].message.contains(needle), "{}", d[0]);
        assert_eq!(d[0].file, PathBuf::from("w/a.toml"));
    }

    const HEAD: &str = "[[rule]]\nid = \"r1\"\non = \"webchat.message.received\"\n";

    #[test]
    fn valid_file_loads() {
        let set = rules(&format!(
            "{HEAD}when = 'signal.payload.n > 1'\n[[rule.directive]]\nkind = \"notify\"\ndestination = \"support\"\n"
        ));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn bad_toml_syntax() {
        // Line 3: the value is a bare word, which TOML does not allow.
        expect_one("[[rule]]\nid = \"r1\"\non = webchat\n", 3, 6, "string");
    }

    #[test]
    fn unknown_key() {
        let d = diags(&format!(
            "{HEAD}[[rule.directive]]\nkind = \"notify\"\ndedup_key = \"k\"\n"
        ));
        eprintln!("{}", d[0]);
        expect_one(
            &format!("{HEAD}[[rule.directive]]\nkind = \"notify\"\ndedup_key = \"k\"\n"),
            6,
            1,
            "unknown field `dedup_key`",
        );
    }

    #[test]
    fn unknown_key_at_rule_level() {
        expect_one(
            &format!("{HEAD}  wen = 'true'\n"),
            4,
            3,
            "unknown field `wen`",
        );
    }

    #[test]
    fn bad_cel() {
        // `&& &&`: the second `&&` is at decoded offset 22, raw offset 25 past
        // the opening quote (col 8) because of the two `\"` escapes.
        expect_one(
            &format!(
                "{HEAD}when = \"signal.type == \\\"x\\\" && && true\"\n[[rule.directive]]\nkind = \"notify\"\n"
            ),
            4,
            33,
            "invalid CEL condition",
        );
    }

    #[test]
    fn bad_cel_at_end_of_literal_string() {
        expect_one(
            &format!("{HEAD}when = 'signal.payload.n > '\n[[rule.directive]]\nkind = \"notify\"\n"),
            4,
            28,
            "invalid CEL condition",
        );
    }

    #[test]
    fn bad_template() {
        // dedupe_key's quote is col 14; the stray `}` is at offset 15 inside.
        expect_one(
            &format!(
                "{HEAD}[[rule.directive]]\nkind = \"notify\"\ndedupe_key = \"x:{{{{ signal.id }}\"\n"
            ),
            6,
            30,
            "invalid template",
        );
    }

    #[test]
    fn bad_template_in_nested_args() {
        let text = format!(
            "{HEAD}[[rule.directive]]\nkind = \"notify\"\n[rule.directive.args]\nitems = [\"ok\", {{ text = \"{{% if %}}\" }}]\n"
        );
        // `text = "` opens at col 25; `{% if %}`'s error range starts at 6.
        expect_one(&text, 7, 32, "invalid template");
    }

    #[test]
    fn unknown_directive_kind() {
        expect_one(
            &format!("{HEAD}[[rule.directive]]\nkind = \"sms\"\n"),
            5,
            8,
            "unknown directive kind `sms`",
        );
    }

    #[test]
    fn unknown_destination() {
        expect_one(
            &format!("{HEAD}[[rule.directive]]\nkind = \"notify\"\ndestination = \"ops\"\n"),
            6,
            15,
            "unknown destination `ops`",
        );
    }

    #[test]
    fn tenant_destination_is_known_for_that_tenant_only() {
        let text = format!("{HEAD}[[rule.directive]]\nkind = \"notify\"\ndestination = \"ops\"\n");
        assert!(load(vec![source("w/tenants/acme/a.toml", tenant("acme"), &text)]).is_ok());
        let err = load(vec![source("w/tenants/beta/a.toml", tenant("beta"), &text)]);
        let d = err.err().map(|e| e.diagnostics()).unwrap_or_default();
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].line, d[0].col), (6, 15));
    }

    #[test]
    fn destinations_unchecked_without_catalog() {
        let text =
            format!("{HEAD}[[rule.directive]]\nkind = \"whatever\"\ndestination = \"anywhere\"\n");
        let set = RuleSet::from_sources(
            vec![source("w/a.toml", Scope::Defaults, &text)],
            &CheckOptions::default(),
        );
        assert!(set.is_ok());
    }

    #[test]
    fn duplicate_rule_id_in_same_scope() {
        let rule = "[[rule]]\nid = \"dup\"\non = \"a\"\n[[rule.directive]]\nkind = \"notify\"\n";
        let a = source("w/a.toml", Scope::Defaults, rule);
        let b = source("w/b.toml", Scope::Defaults, &format!("\n{rule}"));
        let err = load(vec![a, b])
            .err()
            .map(|e| e.diagnostics())
            .unwrap_or_default();
        assert_eq!(err.len(), 1, "{err:#?}");
        assert_eq!(err[0].file, PathBuf::from("w/b.toml"));
        assert_eq!((err[0].line, err[0].col), (3, 6));
        assert!(
            err[0].message.contains("first defined at w/a.toml:2:6"),
            "{}",
            err[0]
        );
    }

    #[test]
    fn same_rule_id_in_other_scope_is_fine() {
        let rule = "[[rule]]\nid = \"dup\"\non = \"a\"\n[[rule.directive]]\nkind = \"notify\"\n";
        let a = source("w/a.toml", Scope::Defaults, rule);
        let b = source("w/tenants/acme/a.toml", tenant("acme"), rule);
        let c = source("w/tenants/beta/a.toml", tenant("beta"), rule);
        assert!(load(vec![a, b, c]).is_ok());
    }

    #[test]
    fn invalid_cron() {
        expect_one(
            "[[rule]]\nid = \"c\"\nschedule = \"0 61 * * * *\"\n[[rule.directive]]\nkind = \"notify\"\n",
            3,
            15,
            "invalid cron expression",
        );
    }

    #[test]
    fn five_field_cron_is_refused() {
        expect_one(
            "[[rule]]\nid = \"c\"\nschedule = \"*/5 * * * *\"\n[[rule.directive]]\nkind = \"notify\"\n",
            3,
            12,
            "expected 6 fields",
        );
    }

    #[test]
    fn unknown_timezone() {
        expect_one(
            "[[rule]]\nid = \"c\"\nschedule = \"0 0 9 * * *\"\ntimezone = \"Mars/Olympus\"\n[[rule.directive]]\nkind = \"notify\"\n",
            4,
            12,
            "unknown timezone",
        );
    }

    #[test]
    fn invalid_duration() {
        expect_one(
            &format!("{HEAD}[[rule.directive]]\nkind = \"notify\"\ndelay = \"10 minutes\"\n"),
            6,
            9,
            "invalid duration",
        );
    }

    #[test]
    fn invalid_duration_in_retry_table() {
        // The value `"2x"` starts at col 36.
        expect_one(
            &format!(
                "{HEAD}[[rule.directive]]\nkind = \"notify\"\nretry = {{ max_attempts = 3, base = \"2x\" }}\n"
            ),
            6,
            36,
            "invalid duration `2x`",
        );
    }

    #[test]
    fn both_on_and_schedule() {
        expect_one(
            &format!("{HEAD}schedule = \"0 * * * * *\"\n[[rule.directive]]\nkind = \"notify\"\n"),
            4,
            12,
            "both `on` and `schedule`",
        );
    }

    #[test]
    fn neither_on_nor_schedule() {
        expect_one(
            "[[rule]]\nid = \"r1\"\n[[rule.directive]]\nkind = \"notify\"\n",
            2,
            6,
            "needs a trigger",
        );
    }

    #[test]
    fn undefined_variable_in_template() {
        // `text = "` opens at col 17; `user` starts 6 characters in.
        expect_one(
            &format!(
                "{HEAD}[[rule.directive]]\nkind = \"notify\"\nargs = {{ text = \"hi {{{{ user.name }}}}\" }}\n"
            ),
            6,
            24,
            "undefined variable `user`",
        );
    }

    #[test]
    fn destination_is_undefined_without_a_destination() {
        expect_one(
            &format!(
                "{HEAD}[[rule.directive]]\nkind = \"notify\"\ndedupe_key = \"{{{{ destination }}}}\"\n"
            ),
            6,
            18,
            "undefined variable `destination`",
        );
    }

    #[test]
    fn undefined_variable_in_cel() {
        // Quote at col 8, `sitee` 24 characters into the expression.
        expect_one(
            &format!(
                "{HEAD}when = 'signal.payload.n > 1 && sitee.x'\n[[rule.directive]]\nkind = \"notify\"\n"
            ),
            4,
            33,
            "undefined variable `sitee`",
        );
    }

    #[test]
    fn tick_is_only_for_schedule_rules() {
        expect_one(
            &format!("{HEAD}when = 'tick != \"\"'\n[[rule.directive]]\nkind = \"notify\"\n"),
            4,
            9,
            "undefined variable `tick`",
        );
    }

    #[test]
    fn cancel_on_needs_delay() {
        expect_one(
            &format!(
                "{HEAD}[[rule.directive]]\nkind = \"notify\"\ncancel_on = [\"webchat.reply.sent\"]\n"
            ),
            6,
            14,
            "needs a `delay`",
        );
    }

    #[test]
    fn emit_only_for_schedule_rules() {
        expect_one(
            &format!("{HEAD}[rule.emit]\ntype = \"x\"\nsubject = \"s\"\n"),
            4,
            1,
            "only for rules with a `schedule`",
        );
    }

    #[test]
    fn every_problem_is_reported_in_file_order() {
        let a = source(
            "w/a.toml",
            Scope::Defaults,
            &format!("{HEAD}[[rule.directive]]\nkind = \"sms\"\ndelay = \"soon\"\n"),
        );
        // TOML says where the closing `]]` is missing: right after `[[rule]`.
        let b = source("w/tenants/acme/b.toml", tenant("acme"), "[[rule]\n");
        let err = load(vec![b, a]).err();
        let d = err.as_ref().map(LoadError::diagnostics).unwrap_or_default();
        let got: Vec<String> = d
            .iter()
            .map(|d| format!("{}:{}:{}", d.file.display(), d.line, d.col))
            .collect();
        assert_eq!(
            got,
            ["w/a.toml:5:8", "w/a.toml:6:9", "w/tenants/acme/b.toml:1:8"]
        );
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.starts_with("3 problems in workflow rules\nw/a.toml:5:8: unknown directive kind"),
            "{text}"
        );
    }

    #[test]
    fn reads_defaults_and_tenant_directories() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let rule = "[[rule]]\nid = \"r\"\non = \"a\"\n[[rule.directive]]\nkind = \"notify\"\n";
        std::fs::write(dir.path().join("base.toml"), rule)?;
        std::fs::write(dir.path().join("README.md"), "not a rule")?;
        std::fs::create_dir_all(dir.path().join("tenants/acme"))?;
        std::fs::write(dir.path().join("tenants/acme/own.toml"), rule)?;
        let set = RuleSet::load_dir(dir.path(), &options())?;
        let scopes: Vec<Scope> = set.files().iter().map(|f| f.scope.clone()).collect();
        assert_eq!(scopes, [Scope::Defaults, tenant("acme")]);
        assert_eq!(
            set.files()[0].sha256,
            hex::encode(Sha256::digest(rule.as_bytes()))
        );
        assert!(matches!(
            RuleSet::load_dir(&dir.path().join("missing"), &options()),
            Err(LoadError::Io { .. })
        ));
        Ok(())
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;
    use crate::testing::source;

    #[test]
    fn missing_required_key_and_messages_as_documented() {
        let src = source(
            "w/a.toml",
            Scope::Defaults,
            "[[rule]]\nid = \"r\"\non = \"a\"\n[[rule.directive]]\ndestination = \"x\"\n",
        );
        let err = RuleSet::from_sources(vec![src], &CheckOptions::default()).err();
        let d = err.map(|e| e.diagnostics()).unwrap_or_default();
        assert_eq!(d.len(), 1);
        assert!(d[0].message.contains("missing field `kind`"), "{}", d[0]);
        // Reported at the `[[rule.directive]]` header of the incomplete table.
        assert_eq!((d[0].line, d[0].col), (4, 1), "{}", d[0]);
    }
}

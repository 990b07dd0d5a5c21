//! Routing a signal through the rules of its tenant: which rules match, why
//! the others were skipped, and the directives the matches plan.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cron::PlannedSignal;
use crate::expr::CelVars;
use crate::rule::{
    Action, ArgTemplate, Backoff, CompiledEmit, CompiledRule, RuleSet, Scope, Trigger,
};
use crate::template::json_to_jinja;

/// A signal as routing needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalInput {
    pub id: String,
    #[serde(rename = "type")]
    pub r#type: String,
    pub subject: String,
    #[serde(default)]
    pub payload: serde_json::Value,
    /// RFC 3339.
    pub occurred_at: String,
}

/// What else conditions and templates may see besides the signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteContext {
    /// The site the signal came from (`site.domain`, `site.settings...`);
    /// `Null` is presented to rules as an empty object.
    #[serde(default)]
    pub site: serde_json::Value,
    pub now: DateTime<Utc>,
}

impl RouteContext {
    pub fn new(site: serde_json::Value, now: DateTime<Utc>) -> Self {
        RouteContext { site, now }
    }
}

/// One rule's verdict on one signal (or cron tick).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleEvaluation {
    pub rule_id: String,
    pub scope: Scope,
    pub file: PathBuf,
    /// SHA-256 (hex) of the rule file, to record on created directives.
    pub file_hash: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The trigger and condition matched: create these directives.
    Matched {
        directives: Vec<PlannedDirective>,
    },
    /// A schedule rule's tick: ingest this signal.
    Emitted {
        signal: PlannedSignal,
    },
    Skipped {
        reason: SkipReason,
    },
    /// The condition or a template failed at run time (a missing payload
    /// field, a type error). Nothing is created; the message names the rule
    /// and the failing expression, for the signal's timeline.
    Error {
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum SkipReason {
    /// `enabled = false`.
    Disabled,
    /// `when` evaluated to false.
    ConditionFalse { condition: String },
    /// `on` does not match the signal type (only reported by `explain`).
    TriggerMismatch { on: String, signal_type: String },
    /// A schedule rule, which signals never trigger (only reported by `explain`).
    Scheduled { schedule: String },
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Disabled => f.write_str("disabled"),
            SkipReason::ConditionFalse { condition } => write!(f, "condition false: {condition}"),
            SkipReason::TriggerMismatch { on, signal_type } => {
                write!(f, "trigger `{on}` does not match `{signal_type}`")
            }
            SkipReason::Scheduled { schedule } => write!(f, "schedule rule (`{schedule}`)"),
        }
    }
}

/// A directive to create, fully rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedDirective {
    pub kind: String,
    pub destination: Option<String>,
    pub args: serde_json::Value,
    /// Unique per tenant: creating a directive whose key exists is a no-op,
    /// which is what makes replay idempotent. Defaults to
    /// `rule:<rule>:<signal id>` (`:<n>` appended for the n-th directive, n>0).
    pub dedupe_key: String,
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// Run no earlier than this long after the signal.
    pub delay_ms: Option<u64>,
    /// Signal type patterns that cancel this directive while it waits out
    /// its delay, when they arrive for the same subject.
    pub cancel_on: Vec<String>,
    pub throttle: Option<Throttle>,
}

/// At most one directive per rendered `key` per `window_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttle {
    pub key: String,
    pub window_ms: u64,
}

/// A delayed directive that a signal type can cancel (see
/// [`RuleSet::cancellers`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelTarget {
    pub rule_id: String,
    pub scope: Scope,
    /// Position of the directive in its rule (0-based).
    pub directive_index: usize,
    pub kind: String,
    pub cancel_on: Vec<String>,
}

impl RuleSet {
    /// Evaluates the rules of `tenant_slug` (shipped defaults, then the
    /// tenant's own) whose `on` matches the signal type. Cost is proportional
    /// to the rules that match the type, not to the size of the set.
    pub fn route(
        &self,
        tenant_slug: &str,
        signal: &SignalInput,
        ctx: &RouteContext,
    ) -> Vec<RuleEvaluation> {
        let mut candidates = Vec::new();
        self.defaults.candidates(&signal.r#type, &mut candidates);
        if let Some(tenant) = self.tenants.get(tenant_slug) {
            tenant.candidates(&signal.r#type, &mut candidates);
        }
        if candidates.is_empty() {
            return Vec::new();
        }
        // Exact and wildcard lists interleave: restore file order.
        candidates.sort_unstable();
        let eval = Evaluator::for_signal(self, tenant_slug, signal, ctx);
        candidates
            .into_iter()
            .map(|i| {
                let rule = &self.rules[i];
                eval.evaluation(rule, eval.evaluate(rule))
            })
            .collect()
    }

    /// Like [`route`](Self::route) but lists every rule of the tenant, with
    /// the non-matching ones skipped for their trigger: what
    /// `fleetprompt workflows explain` prints. Creates nothing.
    pub fn explain(
        &self,
        tenant_slug: &str,
        signal: &SignalInput,
        ctx: &RouteContext,
    ) -> Vec<RuleEvaluation> {
        let mut all = self.defaults.all.clone();
        if let Some(t) = self.tenants.get(tenant_slug) {
            all.extend_from_slice(&t.all);
        }
        let eval = Evaluator::for_signal(self, tenant_slug, signal, ctx);
        all.into_iter()
            .map(|i| {
                let rule = &self.rules[i];
                let outcome = match &rule.trigger {
                    Trigger::Signal(p) if p.matches(&signal.r#type) => eval.evaluate(rule),
                    Trigger::Signal(p) => Outcome::Skipped {
                        reason: SkipReason::TriggerMismatch {
                            on: p.as_str().to_owned(),
                            signal_type: signal.r#type.clone(),
                        },
                    },
                    Trigger::Schedule(c) => Outcome::Skipped {
                        reason: SkipReason::Scheduled {
                            schedule: self.crons[*c].schedule.clone(),
                        },
                    },
                };
                eval.evaluation(rule, outcome)
            })
            .collect()
    }

    /// Directives of `tenant_slug`'s rules that a signal of `signal_type`
    /// cancels while they wait out their delay. The engine cancels pending
    /// ones for the same subject. (Each [`PlannedDirective`] also carries its
    /// `cancel_on`, checkable with [`crate::type_matches`].)
    pub fn cancellers(&self, tenant_slug: &str, signal_type: &str) -> Vec<CancelTarget> {
        let mut pairs = self.defaults.cancellable.clone();
        if let Some(t) = self.tenants.get(tenant_slug) {
            pairs.extend_from_slice(&t.cancellable);
        }
        pairs
            .into_iter()
            .filter_map(|(r, d)| {
                let rule = &self.rules[r];
                let Action::Directives(ds) = &rule.action else {
                    return None;
                };
                let directive = ds.get(d)?;
                directive
                    .cancel_on
                    .iter()
                    .any(|p| p.matches(signal_type))
                    .then(|| CancelTarget {
                        rule_id: rule.id.clone(),
                        scope: rule.scope.clone(),
                        directive_index: d,
                        kind: directive.kind.clone(),
                        cancel_on: directive.cancel_on.iter().map(|p| p.to_string()).collect(),
                    })
            })
            .collect()
    }
}

/// The context of one routed signal or cron tick, converted once for CEL
/// and for templates, then shared by every rule evaluated for it.
pub(crate) struct Evaluator<'a> {
    set: &'a RuleSet,
    cel: CelVars,
    jinja: BTreeMap<String, minijinja::Value>,
    /// Default dedupe key prefix: `rule:<id>:<signal id>` or `cron:<id>:<ts>`.
    origin: Origin,
}

enum Origin {
    Signal(String),
    Tick(DateTime<Utc>),
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl<'a> Evaluator<'a> {
    fn common(set: &'a RuleSet, tenant: &str, ctx: &RouteContext, origin: Origin) -> Self {
        let site = if ctx.site.is_null() {
            json!({})
        } else {
            ctx.site.clone()
        };
        let now = json!(rfc3339(ctx.now));
        let tenant = json!(tenant);
        let mut cel = CelVars::new();
        let mut jinja = BTreeMap::new();
        for (name, value) in [("tenant", &tenant), ("site", &site), ("now", &now)] {
            cel.set(name, value);
            jinja.insert(name.to_owned(), json_to_jinja(value));
        }
        Evaluator {
            set,
            cel,
            jinja,
            origin,
        }
    }

    pub(crate) fn for_signal(
        set: &'a RuleSet,
        tenant: &str,
        signal: &SignalInput,
        ctx: &RouteContext,
    ) -> Self {
        let mut e = Self::common(set, tenant, ctx, Origin::Signal(signal.id.clone()));
        let value = json!({
            "id": signal.id,
            "type": signal.r#type,
            "subject": signal.subject,
            "payload": signal.payload,
            "occurred_at": signal.occurred_at,
        });
        e.cel.set("signal", &value);
        e.jinja.insert("signal".to_owned(), json_to_jinja(&value));
        e
    }

    pub(crate) fn for_tick(
        set: &'a RuleSet,
        tenant: &str,
        tick: DateTime<Utc>,
        ctx: &RouteContext,
    ) -> Self {
        let mut e = Self::common(set, tenant, ctx, Origin::Tick(tick));
        let value = json!(rfc3339(tick));
        e.cel.set("tick", &value);
        e.jinja.insert("tick".to_owned(), json_to_jinja(&value));
        e
    }

    pub(crate) fn evaluation(&self, rule: &CompiledRule, outcome: Outcome) -> RuleEvaluation {
        let file = &self.set.files[rule.file];
        RuleEvaluation {
            rule_id: rule.id.clone(),
            scope: rule.scope.clone(),
            file: file.path.clone(),
            file_hash: file.sha256.clone(),
            outcome,
        }
    }

    fn fail(&self, rule: &CompiledRule, what: &str) -> Outcome {
        let file = &self.set.files[rule.file];
        Outcome::Error {
            message: format!("rule `{}` ({}): {what}", rule.id, file.path.display()),
        }
    }

    /// Disabled? condition? then render the action.
    pub(crate) fn evaluate(&self, rule: &CompiledRule) -> Outcome {
        if !rule.enabled {
            return Outcome::Skipped {
                reason: SkipReason::Disabled,
            };
        }
        if let Some(cond) = &rule.condition {
            match cond.eval(&self.set.cel, &self.cel) {
                Ok(true) => {}
                Ok(false) => {
                    return Outcome::Skipped {
                        reason: SkipReason::ConditionFalse {
                            condition: cond.source.clone(),
                        },
                    };
                }
                Err(m) => return self.fail(rule, &m),
            }
        }
        match &rule.action {
            Action::Directives(ds) => {
                let mut planned = Vec::with_capacity(ds.len());
                for (i, d) in ds.iter().enumerate() {
                    match self.directive(rule, i, d) {
                        Ok(p) => planned.push(p),
                        Err(m) => {
                            return self
                                .fail(rule, &format!("directive {} (`{}`) {m}", i + 1, d.kind));
                        }
                    }
                }
                Outcome::Matched {
                    directives: planned,
                }
            }
            Action::Emit(emit) => match self.emit(rule, emit) {
                Ok(signal) => Outcome::Emitted { signal },
                Err(m) => self.fail(rule, &format!("emit {m}")),
            },
        }
    }

    fn default_key(&self, rule: &CompiledRule, index: usize) -> String {
        let base = match &self.origin {
            Origin::Signal(id) => format!("rule:{}:{id}", rule.id),
            Origin::Tick(t) => crate::cron::tick_key(&rule.id, *t),
        };
        if index == 0 {
            base
        } else {
            format!("{base}:{index}")
        }
    }

    fn directive(
        &self,
        rule: &CompiledRule,
        index: usize,
        d: &crate::rule::CompiledDirective,
    ) -> Result<PlannedDirective, String> {
        let mut vars = self.jinja.clone();
        if let Some(dest) = &d.destination {
            vars.insert(
                "destination".to_owned(),
                minijinja::Value::from(dest.as_str()),
            );
        }
        let ctx = minijinja::Value::from(vars);
        let dedupe_key = match &d.dedupe_key {
            Some(t) => self
                .set
                .templates
                .render(t, &ctx)
                .map_err(|m| format!("dedupe_key: {m}"))?,
            None => self.default_key(rule, index),
        };
        let args = self.render_args(&d.args, &ctx, "args")?;
        let throttle = match &d.throttle {
            Some((t, window_ms)) => Some(Throttle {
                key: self
                    .set
                    .templates
                    .render(t, &ctx)
                    .map_err(|m| format!("throttle.key: {m}"))?,
                window_ms: *window_ms,
            }),
            None => None,
        };
        Ok(PlannedDirective {
            kind: d.kind.clone(),
            destination: d.destination.clone(),
            args,
            dedupe_key,
            max_attempts: d.max_attempts,
            backoff: d.backoff,
            delay_ms: d.delay_ms,
            cancel_on: d.cancel_on.iter().map(|p| p.to_string()).collect(),
            throttle,
        })
    }

    fn emit(&self, rule: &CompiledRule, emit: &CompiledEmit) -> Result<PlannedSignal, String> {
        let ctx = minijinja::Value::from(self.jinja.clone());
        let subject = self
            .set
            .templates
            .render(&emit.subject, &ctx)
            .map_err(|m| format!("subject: {m}"))?;
        let payload = self.render_args(&emit.payload, &ctx, "payload")?;
        let idempotency_key = match &emit.key {
            Some(t) => self
                .set
                .templates
                .render(t, &ctx)
                .map_err(|m| format!("key: {m}"))?,
            None => self.default_key(rule, 0),
        };
        Ok(PlannedSignal {
            r#type: emit.signal_type.clone(),
            subject,
            payload,
            idempotency_key,
        })
    }

    /// Renders string leaves; `path` (`args.items[1].text`) locates errors.
    fn render_args(
        &self,
        node: &ArgTemplate,
        ctx: &minijinja::Value,
        path: &str,
    ) -> Result<serde_json::Value, String> {
        Ok(match node {
            ArgTemplate::Null => json!({}),
            ArgTemplate::String(t) => serde_json::Value::String(
                self.set
                    .templates
                    .render(t, ctx)
                    .map_err(|m| format!("{path}: {m}"))?,
            ),
            ArgTemplate::Integer(i) => json!(i),
            ArgTemplate::Float(f) => json!(f),
            ArgTemplate::Bool(b) => json!(b),
            ArgTemplate::Datetime(d) => json!(d),
            ArgTemplate::Array(items) => serde_json::Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.render_args(item, ctx, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            ArgTemplate::Table(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| {
                        self.render_args(v, ctx, &format!("{path}.{k}"))
                            .map(|v| (k.clone(), v))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{load, rules, source, tenant};
    use chrono::TimeZone;

    fn signal(kind: &str, payload: serde_json::Value) -> SignalInput {
        SignalInput {
            id: "sig-1".into(),
            r#type: kind.into(),
            subject: "conversation:7".into(),
            payload,
            occurred_at: "2025-03-01T10:00:00Z".into(),
        }
    }

    fn ctx() -> RouteContext {
        let now = Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 1).single();
        RouteContext::new(
            json!({"domain": "shop.example", "settings": {"quiet_hours": false}}),
            now.unwrap_or_else(|| panic!("valid date")),
        )
    }

    fn directives(e: &RuleEvaluation) -> &[PlannedDirective] {
        match &e.outcome {
            Outcome::Matched { directives } => directives,
            other => panic!("rule {} did not match: {other:?}", e.rule_id),
        }
    }

    const NOTIFY: &str = r#"
[[rule]]
id = "notify-first-message"
on = "webchat.message.received"
when = 'signal.payload.first_in_conversation && !(site.settings.quiet_hours)'
[[rule.directive]]
kind = "mattermost"
destination = "support"
dedupe_key = "webchat_mm_escalation:{{ tenant }}:{{ signal.payload.conversation_id }}:{{ destination }}"
args = { text = "New chat on {{ site.domain }}: {{ signal.payload.content | truncate(20) }}", n = 3, tags = ["a", "{{ signal.subject }}"] }
retry = { max_attempts = 8, backoff = "exponential", base = "2s", max = "10m" }
"#;

    #[test]
    fn rules_naming_a_destination_are_found() {
        let set = rules(NOTIFY);
        assert_eq!(
            set.rules_naming_destination("acme", "support"),
            vec!["notify-first-message".to_owned()]
        );
        assert!(set.rules_naming_destination("acme", "other").is_empty());
    }

    #[test]
    fn exact_type_renders_args_and_dedupe_key() {
        let set = rules(NOTIFY);
        let out = set.route(
            "acme",
            &signal(
                "webchat.message.received",
                json!({"first_in_conversation": true, "conversation_id": "c9", "content": "hello there, I need help with my order"}),
            ),
            &ctx(),
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rule_id, "notify-first-message");
        assert_eq!(out[0].file_hash, set.files()[0].sha256);
        let d = directives(&out[0]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].dedupe_key, "webchat_mm_escalation:acme:c9:support");
        assert_eq!(
            d[0].args,
            json!({"text": "New chat on shop.example: hello there, I...", "n": 3, "tags": ["a", "conversation:7"]})
        );
        assert_eq!(d[0].max_attempts, 8);
        assert_eq!(
            d[0].backoff,
            Backoff {
                kind: crate::BackoffKind::Exponential,
                base_ms: 2_000,
                max_ms: 600_000
            }
        );
        assert_eq!(d[0].backoff.delay_ms(3), 8_000);
        assert_eq!(d[0].backoff.delay_ms(30), 600_000);
        assert_eq!(d[0].delay_ms, None);
        assert!(
            set.route("acme", &signal("webchat.message.sent", json!({})), &ctx())
                .is_empty()
        );
    }

    #[test]
    fn condition_false_is_skipped_with_the_condition() {
        let set = rules(NOTIFY);
        let out = set.route(
            "acme",
            &signal(
                "webchat.message.received",
                json!({"first_in_conversation": false}),
            ),
            &ctx(),
        );
        assert_eq!(
            out[0].outcome,
            Outcome::Skipped {
                reason: SkipReason::ConditionFalse {
                    condition:
                        "signal.payload.first_in_conversation && !(site.settings.quiet_hours)"
                            .into()
                }
            }
        );
    }

    #[test]
    fn runtime_errors_name_rule_and_expression() {
        let set = rules(NOTIFY);
        // Condition reads a missing payload field.
        let out = set.route(
            "acme",
            &signal("webchat.message.received", json!({})),
            &ctx(),
        );
        let Outcome::Error { message } = &out[0].outcome else {
            panic!("expected an error, got {:?}", out[0].outcome);
        };
        assert!(message.starts_with("rule `notify-first-message` (w/a.toml): condition `signal.payload.first_in_conversation"), "{message}");
        assert!(message.contains("first_in_conversation"), "{message}");
        // Condition passes but the template reads a missing field.
        let out = set.route(
            "acme",
            &signal(
                "webchat.message.received",
                json!({"first_in_conversation": true, "content": "x"}),
            ),
            &ctx(),
        );
        let Outcome::Error { message } = &out[0].outcome else {
            panic!("expected an error, got {:?}", out[0].outcome);
        };
        assert!(
            message.contains("directive 1 (`mattermost`) dedupe_key"),
            "{message}"
        );
        assert!(
            message.contains("at `signal.payload.conversation_id`"),
            "{message}"
        );
    }

    #[test]
    fn wildcard_and_order() {
        let set = rules(
            r#"
[[rule]]
id = "all-webchat"
on = "webchat.*"
[[rule.directive]]
kind = "notify"
[[rule]]
id = "exact"
on = "webchat.reply.sent"
[[rule.directive]]
kind = "notify"
[[rule]]
id = "other"
on = "email.*"
[[rule.directive]]
kind = "notify"
"#,
        );
        let ids: Vec<String> = set
            .route("acme", &signal("webchat.reply.sent", json!({})), &ctx())
            .into_iter()
            .map(|e| e.rule_id)
            .collect();
        assert_eq!(ids, ["all-webchat", "exact"]);
        let out = set.route("acme", &signal("webchat.typing", json!({})), &ctx());
        assert_eq!(out.len(), 1);
        // Default dedupe key: rule and signal id.
        assert_eq!(directives(&out[0])[0].dedupe_key, "rule:all-webchat:sig-1");
        assert_eq!(directives(&out[0])[0].args, json!({}));
    }

    #[test]
    fn tenant_rules_never_apply_to_other_tenants() {
        let rule = |id: &str| {
            format!("[[rule]]\nid = \"{id}\"\non = \"a\"\n[[rule.directive]]\nkind = \"notify\"\n")
        };
        let set = load(vec![
            source("w/tenants/acme/r.toml", tenant("acme"), &rule("acme-only")),
            source("w/base.toml", Scope::Defaults, &rule("shared")),
            source("w/tenants/beta/r.toml", tenant("beta"), &rule("beta-only")),
        ]);
        let set = set.unwrap_or_else(|e| panic!("{e}"));
        let ids = |t: &str| -> Vec<String> {
            set.route(t, &signal("a", json!({})), &ctx())
                .into_iter()
                .map(|e| e.rule_id)
                .collect()
        };
        assert_eq!(ids("acme"), ["shared", "acme-only"]);
        assert_eq!(ids("beta"), ["shared", "beta-only"]);
        assert_eq!(ids("gamma"), ["shared"]);
        let explained: Vec<String> = set
            .explain("beta", &signal("a", json!({})), &ctx())
            .into_iter()
            .map(|e| e.rule_id)
            .collect();
        assert_eq!(explained, ["shared", "beta-only"]);
    }

    #[test]
    fn delay_cancel_on_and_throttle_are_carried() {
        let set = rules(
            r#"
[[rule]]
id = "email-if-unanswered"
on = "webchat.message.received"
[[rule.directive]]
kind = "email"
delay = "10m"
cancel_on = ["webchat.reply.sent", "webchat.conversation.*"]
throttle = { key = "unanswered:{{ signal.subject }}", window = "1h" }
"#,
        );
        let out = set.route(
            "acme",
            &signal("webchat.message.received", json!({})),
            &ctx(),
        );
        let d = &directives(&out[0])[0];
        assert_eq!(d.delay_ms, Some(600_000));
        assert_eq!(
            d.cancel_on,
            ["webchat.reply.sent", "webchat.conversation.*"]
        );
        assert_eq!(
            d.throttle,
            Some(Throttle {
                key: "unanswered:conversation:7".into(),
                window_ms: 3_600_000
            })
        );
        assert_eq!(d.max_attempts, crate::DEFAULT_MAX_ATTEMPTS);
        let cancels = set.cancellers("acme", "webchat.conversation.closed");
        assert_eq!(cancels.len(), 1);
        assert_eq!(cancels[0].rule_id, "email-if-unanswered");
        assert_eq!(cancels[0].directive_index, 0);
        assert!(
            set.cancellers("acme", "webchat.message.received")
                .is_empty()
        );
        assert!(
            d.cancel_on
                .iter()
                .any(|p| crate::type_matches(p, "webchat.reply.sent"))
        );
    }

    #[test]
    fn disabled_rules_and_explain_reasons() {
        let set = rules(
            r#"
[[rule]]
id = "off"
on = "a"
enabled = false
[[rule.directive]]
kind = "notify"
[[rule]]
id = "elsewhere"
on = "b"
[[rule.directive]]
kind = "notify"
[[rule]]
id = "ticker"
schedule = "0 0 * * * *"
[[rule.directive]]
kind = "notify"
"#,
        );
        let out = set.explain("acme", &signal("a", json!({})), &ctx());
        let reasons: Vec<String> = out
            .iter()
            .map(|e| match &e.outcome {
                Outcome::Skipped { reason } => reason.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            reasons,
            [
                "disabled",
                "trigger `b` does not match `a`",
                "schedule rule (`0 0 * * * *`)"
            ]
        );
        assert_eq!(set.route("acme", &signal("a", json!({})), &ctx()).len(), 1);
        let summaries = set.summaries();
        assert_eq!(summaries.len(), 3);
        assert!(!summaries[0].enabled);
        assert_eq!(summaries[1].on.as_deref(), Some("b"));
        assert_eq!(summaries[2].schedule.as_deref(), Some("0 0 * * * *"));
        assert_eq!(summaries[2].timezone.as_deref(), Some("UTC"));
        assert_eq!(summaries[2].directive_kinds, ["notify"]);
        assert_eq!(summaries[2].file_hash, set.files()[0].sha256);
    }

    #[test]
    fn absent_site_is_an_empty_object() {
        let set = rules(
            "[[rule]]\nid = \"r\"\non = \"a\"\nwhen = '!has(site.domain)'\n[[rule.directive]]\nkind = \"notify\"\n",
        );
        let mut c = ctx();
        c.site = serde_json::Value::Null;
        let out = set.route("acme", &signal("a", json!({})), &c);
        assert!(
            matches!(out[0].outcome, Outcome::Matched { .. }),
            "{:?}",
            out[0].outcome
        );
        let out = set.route("acme", &signal("a", json!({})), &ctx());
        assert!(
            matches!(out[0].outcome, Outcome::Skipped { .. }),
            "{:?}",
            out[0].outcome
        );
    }

    #[test]
    fn routing_touches_only_matching_rules() {
        let mut text = String::new();
        for i in 0..1000 {
            text.push_str(&format!(
                "[[rule]]\nid = \"r{i}\"\non = \"type.{i}\"\nwhen = 'signal.payload.n > {i}'\n[[rule.directive]]\nkind = \"notify\"\ndedupe_key = \"{{{{ signal.id }}}}:{i}\"\n"
            ));
        }
        let set = rules(&text);
        assert_eq!(set.len(), 1000);
        let out = set.route("acme", &signal("type.500", json!({"n": 501})), &ctx());
        assert_eq!(out.len(), 1);
        assert_eq!(directives(&out[0])[0].dedupe_key, "sig-1:500");
    }

    #[test]
    fn rule_set_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RuleSet>();
        assert_send_sync::<std::sync::Arc<RuleSet>>();
    }
}

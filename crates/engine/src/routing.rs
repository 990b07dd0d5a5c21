//! Routing: today's rules turn a signal into directives, inside the
//! transaction that records the signal. Rules are pure and in memory, so this
//! costs microseconds; replay calls the same function.

use fleetprompt_core::signal::ValidationError;
use fleetprompt_core::time::{Millis, now_ms, to_rfc3339};
use fleetprompt_core::{DirectiveId, DirectiveKind, Origin, RetryPolicy, SignalId, TenantId};
use fleetprompt_store::Tx;
use fleetprompt_store::directive::{self, Created, NewDirective};
use fleetprompt_store::evaluation::{self, EvaluationRow};
use fleetprompt_workflows::{
    BackoffKind, Outcome, PlannedDirective, RouteContext, RuleEvaluation, SignalInput,
};
use serde::Serialize;
use serde_json::Value;

use crate::{Engine, EngineError, metrics};

/// A signal as routing reads it.
#[derive(Debug, Clone)]
pub struct SignalView<'a> {
    /// Its id.
    pub id: SignalId,
    /// Its type.
    pub signal_type: &'a str,
    /// Its subject.
    pub subject: &'a str,
    /// Its payload.
    pub payload: &'a Value,
    /// When it happened.
    pub occurred_at: Millis,
}

impl<'a> SignalView<'a> {
    /// A signal about to be (or just) recorded under `id`.
    pub fn of(id: SignalId, s: &'a fleetprompt_core::NewSignal) -> Self {
        Self {
            id,
            signal_type: s.signal_type.as_str(),
            subject: s.subject.as_str(),
            payload: &s.payload,
            occurred_at: s.occurred_at,
        }
    }
}

/// What routing one or more signals did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RouteReport {
    /// New directives.
    pub directives_created: u64,
    /// Directives whose dedupe key was taken (nothing created).
    pub directives_deduplicated: u64,
    /// Pending directives cancelled by a rule's `cancel_on`.
    pub directives_cancelled: u64,
    /// Rules that failed at run time (recorded on the timeline).
    pub rule_errors: u64,
}

impl RouteReport {
    /// Adds another report's counts.
    pub fn add(&mut self, o: RouteReport) {
        self.directives_created += o.directives_created;
        self.directives_deduplicated += o.directives_deduplicated;
        self.directives_cancelled += o.directives_cancelled;
        self.rule_errors += o.rule_errors;
    }
}

fn evaluation_row(
    signal: &SignalView<'_>,
    ev: RuleEvaluation,
    outcome: &str,
    detail: String,
) -> EvaluationRow {
    EvaluationRow {
        signal_id: signal.id,
        subject: signal.subject.to_owned(),
        rule_id: ev.rule_id,
        file_hash: ev.file_hash,
        outcome: outcome.into(),
        detail,
        evaluated_at: now_ms(),
    }
}

fn input(s: &SignalView<'_>) -> SignalInput {
    SignalInput {
        id: s.id.to_string(),
        r#type: s.signal_type.to_owned(),
        subject: s.subject.to_owned(),
        payload: s.payload.clone(),
        occurred_at: to_rfc3339(s.occurred_at),
    }
}

impl Engine {
    /// Routes one signal through the active rules in `tx`: cancels what its
    /// arrival makes moot, creates (deduplicated) directives, and records
    /// every rule's verdict. With `dry_run`, writes nothing and reports what
    /// would be created.
    pub async fn route_signal(
        &self,
        tx: &mut Tx,
        tenant: TenantId,
        slug: &str,
        signal: &SignalView<'_>,
        dry_run: bool,
    ) -> Result<RouteReport, EngineError> {
        let rules = self.rules.current();
        let mut report = RouteReport::default();
        if rules.is_empty() {
            return Ok(report);
        }
        // Cancel first, so a signal that both triggers and cancels a rule
        // never cancels the directive it is about to create.
        let targets: Vec<(String, String)> = rules
            .cancellers(slug, signal.signal_type)
            .into_iter()
            .map(|t| (t.rule_id, t.kind))
            .collect();
        if !targets.is_empty() && !dry_run {
            let reason = format!(
                "cancelled: {} {} arrived first",
                signal.signal_type, signal.id
            );
            let cancelled =
                directive::cancel_pending_of_rules(tx, tenant, signal.subject, &targets, &reason)
                    .await?;
            report.directives_cancelled += cancelled.len() as u64;
        }
        let ctx = RouteContext::new(Value::Null, chrono::Utc::now());
        let evaluations = rules.route(slug, &input(signal), &ctx);
        let mut rows = Vec::with_capacity(evaluations.len());
        for ev in evaluations {
            let (outcome, detail) = self
                .apply(tx, tenant, signal, &ev, dry_run, &mut report)
                .await?;
            rows.push(evaluation_row(signal, ev, outcome, detail));
        }
        if !dry_run {
            evaluation::insert_many(tx, tenant, &rows).await?;
        }
        Ok(report)
    }

    /// Applies one evaluation (a cron tick's) and returns its timeline row.
    pub(crate) async fn apply_evaluation(
        &self,
        tx: &mut Tx,
        tenant: TenantId,
        signal: &SignalView<'_>,
        ev: &RuleEvaluation,
        report: &mut RouteReport,
    ) -> Result<EvaluationRow, EngineError> {
        let (outcome, detail) = self.apply(tx, tenant, signal, ev, false, report).await?;
        Ok(evaluation_row(signal, ev.clone(), outcome, detail))
    }

    async fn apply(
        &self,
        tx: &mut Tx,
        tenant: TenantId,
        signal: &SignalView<'_>,
        ev: &RuleEvaluation,
        dry_run: bool,
        report: &mut RouteReport,
    ) -> Result<(&'static str, String), EngineError> {
        let planned = match &ev.outcome {
            Outcome::Matched { directives } => directives,
            Outcome::Skipped { reason } => return Ok(("skipped", format!("skipped: {reason}"))),
            Outcome::Error { message } => {
                report.rule_errors += 1;
                return Ok(("error", message.clone()));
            }
            Outcome::Emitted { .. } => {
                return Ok(("skipped", "schedule rules do not route signals".into()));
            }
        };
        let mut notes = Vec::new();
        let mut not_configured = 0;
        for p in planned {
            let new = match self.directive_from_plan(tenant, signal, ev, p).await {
                Ok(new) => new,
                Err(EngineError::NotConfigured(why)) => {
                    not_configured += 1;
                    notes.push(format!("skipped {}: {why}", p.kind));
                    continue;
                }
                Err(e) => {
                    report.rule_errors += 1;
                    return Ok((
                        "error",
                        format!(
                            "rule {} ({}): directive {}: {e}",
                            ev.rule_id,
                            ev.file.display(),
                            p.kind
                        ),
                    ));
                }
            };
            if dry_run {
                let taken = directive::dedupe_key_taken(self.db(), tenant, &new.dedupe_key).await?;
                if taken {
                    report.directives_deduplicated += 1;
                    notes.push(format!(
                        "{} would be deduplicated ({})",
                        p.kind, new.dedupe_key
                    ));
                } else {
                    report.directives_created += 1;
                    notes.push(format!("would create {} ({})", p.kind, new.dedupe_key));
                }
                continue;
            }
            match directive::insert(tx, tenant, &new).await? {
                Created::New(id) => {
                    report.directives_created += 1;
                    metrics::directive_created(p.kind.as_str());
                    self.record_created(tx, tenant, id, &new).await?;
                    notes.push(format!("created {} {id}", p.kind));
                }
                Created::Existing(id) => {
                    report.directives_deduplicated += 1;
                    metrics::directive_deduplicated(p.kind.as_str());
                    notes.push(format!(
                        "{} {id} already existed (dedupe key {})",
                        p.kind, new.dedupe_key
                    ));
                }
            }
        }
        if not_configured == planned.len() {
            return Ok((
                "skipped",
                format!("rule {}: {}", ev.rule_id, notes.join("; ")),
            ));
        }
        Ok((
            "matched",
            format!(
                "rule {} matched signal {}: {}",
                ev.rule_id,
                signal.id,
                notes.join("; ")
            ),
        ))
    }

    async fn directive_from_plan(
        &self,
        tenant: TenantId,
        signal: &SignalView<'_>,
        ev: &RuleEvaluation,
        p: &PlannedDirective,
    ) -> Result<NewDirective, EngineError> {
        let kind = DirectiveKind::parse(p.kind.clone())?;
        let handler = self.handlers().get(kind.as_str()).ok_or_else(|| {
            EngineError::Validation(ValidationError::Invalid {
                field: "kind",
                reason: format!("unknown directive kind {:?}", p.kind),
            })
        })?;
        let mut args = p.args.clone();
        if let (Some(dest), Value::Object(map)) = (&p.destination, &mut args) {
            map.entry("destination")
                .or_insert_with(|| Value::String(dest.clone()));
        }
        fleetprompt_core::signal::check_payload("args", &args)?;
        handler.validate(self, tenant, &args).await?;
        let retry = RetryPolicy {
            max_attempts: p.max_attempts,
            base_ms: p.backoff.base_ms,
            factor: match p.backoff.kind {
                BackoffKind::Exponential => 2.0,
                BackoffKind::Fixed => 1.0,
            },
            max_ms: p.backoff.max_ms,
            jitter: 0.2,
        };
        // Throttle: one directive per key per window. Windows are counted
        // from the signal's own time, so a replay lands in the same window.
        let dedupe_key = match &p.throttle {
            Some(t) => {
                let window = t.window_ms.max(1) as i64;
                format!(
                    "throttle:{}:{}:{}",
                    ev.rule_id,
                    t.key,
                    signal.occurred_at.div_euclid(window)
                )
            }
            None => p.dedupe_key.clone(),
        };
        fleetprompt_core::signal::check_dedupe_key(&dedupe_key)?;
        let now = now_ms();
        let run_at = match p.delay_ms {
            Some(d) => (signal.occurred_at + d as i64).max(now),
            None => now,
        };
        Ok(NewDirective {
            id: DirectiveId::new(),
            kind,
            args,
            dedupe_key,
            subject: Some(signal.subject.to_owned()),
            retry,
            run_at,
            origin: Origin::Rule {
                rule_id: ev.rule_id.clone(),
                file_hash: ev.file_hash.clone(),
            },
            caused_by: Some(signal.id),
        })
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Signals re-routed.
    pub signals: u64,
    /// New directives.
    pub directives_created: u64,
    /// Directives whose dedupe key was already taken.
    pub directives_deduplicated: u64,
    /// Pending directives cancelled by `cancel_on`.
    pub directives_cancelled: u64,
    /// Rules that failed at run time.
    pub rule_errors: u64,
}

impl Engine {
    /// Re-routes a tenant's stored signals through today's rules, a page per
    /// transaction. Dedupe keys make a second replay create nothing.
    pub async fn replay(
        &self,
        tenant: TenantId,
        filter: &fleetprompt_store::signal::ReplayFilter,
        dry_run: bool,
    ) -> Result<ReplayReport, EngineError> {
        const PAGE: i64 = 500;
        let slug = self.tenant_slug(tenant).await?;
        let mut out = ReplayReport::default();
        let mut after = None;
        loop {
            let page =
                fleetprompt_store::signal::page_for_replay(self.db(), tenant, filter, after, PAGE)
                    .await?;
            let Some(last) = page.last() else { break };
            after = Some((last.recorded_at, last.id));
            let mut tx = self.db().begin().await?;
            let mut report = RouteReport::default();
            for s in &page {
                let view = SignalView {
                    id: s.id,
                    signal_type: &s.signal_type,
                    subject: &s.subject,
                    payload: &s.payload,
                    occurred_at: s.occurred_at,
                };
                report.add(
                    self.route_signal(&mut tx, tenant, &slug, &view, dry_run)
                        .await?,
                );
            }
            if dry_run {
                drop(tx);
            } else {
                tx.commit().await?;
            }
            out.signals += page.len() as u64;
            out.directives_created += report.directives_created;
            out.directives_deduplicated += report.directives_deduplicated;
            out.directives_cancelled += report.directives_cancelled;
            out.rule_errors += report.rule_errors;
            if (page.len() as i64) < PAGE {
                break;
            }
        }
        Ok(out)
    }
}

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
    BackoffKind, Outcome, PlannedDirective, RouteContext, RuleEvaluation, RuleSet, SignalInput,
};
use serde::Serialize;
use serde_json::Value;

use crate::{Engine, EngineError, metrics};

/// A stored signal as the rules see it (replays and backtests route stored
/// signals again).
pub(crate) fn stored_view(s: &fleetprompt_store::signal::SignalRow) -> SignalView<'_> {
    SignalView {
        id: s.id,
        signal_type: &s.signal_type,
        subject: &s.subject,
        payload: &s.payload,
        occurred_at: s.occurred_at,
    }
}

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

fn evaluation_row(signal: &SignalView<'_>, ev: &RuleEvaluation, outcome: &str) -> EvaluationRow {
    EvaluationRow {
        signal_id: signal.id,
        subject: signal.subject.to_owned(),
        rule_id: ev.rule_id.clone(),
        file_hash: ev.file_hash.clone(),
        outcome: outcome.into(),
        detail: String::new(),
        evaluated_at: now_ms(),
    }
}

/// A verdict's text: its first note, then the rest joined by `; `, each
/// directive named by what became of it.
fn detail(notes: &[Note], directives: &[(TenantId, NewDirective)], created: &[Created]) -> String {
    let text = |n: &Note| match n {
        Note::Text(t) => t.clone(),
        Note::Directive(i, kind) => match created[*i] {
            Created::New(id) => format!("created {kind} {id}"),
            Created::Existing(id) => format!(
                "{kind} {id} already existed (dedupe key {})",
                directives[*i].1.dedupe_key
            ),
        },
    };
    let mut notes = notes.iter();
    let head = notes.next().map(text).unwrap_or_default();
    let rest: Vec<String> = notes.map(text).collect();
    head + &rest.join("; ")
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

/// A rule's verdict on a signal, waiting for its batch's writes: the
/// directives it asked for are inserted with the batch's, and the notes
/// that name them are written once their fate is known.
struct Verdict {
    tenant: TenantId,
    row: EvaluationRow,
    notes: Vec<Note>,
}

enum Note {
    Text(String),
    /// The batch's `i`-th directive, of this kind.
    Directive(usize, String),
}

/// What a batch of routed signals will write.
#[derive(Default)]
pub(crate) struct Pending {
    directives: Vec<(TenantId, NewDirective)>,
    verdicts: Vec<Verdict>,
    /// In a dry run: the directives the rules would create, in order.
    pub(crate) trial: Vec<TrialDirective>,
    /// In a dry run: the dedupe keys taken so far by `trial`, so a key
    /// planned twice counts as the real routing would, once.
    trial_keys: std::collections::HashSet<String>,
}

impl Pending {
    /// In a dry run: each rule's verdicts, as `(rule_id, outcome)`.
    pub(crate) fn verdicts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.verdicts
            .iter()
            .map(|v| (v.row.rule_id.as_str(), v.row.outcome.as_str()))
    }
}

/// A directive a dry run would create (or find deduplicated).
#[derive(Debug, Clone, Serialize)]
pub struct TrialDirective {
    /// The signal that would cause it.
    pub signal_id: SignalId,
    /// The rule that would create it.
    pub rule_id: String,
    /// Its kind.
    pub kind: String,
    /// Its arguments.
    pub args: Value,
    /// Its dedupe key.
    pub dedupe_key: String,
    /// Whether the key is taken already (by a stored directive or one
    /// planned earlier in the same run): then nothing would be created.
    pub deduplicated: bool,
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
        signal: &SignalView<'_>,
        dry_run: bool,
    ) -> Result<RouteReport, EngineError> {
        self.route_signals(tx, &[(tenant, signal.clone())], dry_run)
            .await
    }

    /// Routes signals, in order, as [`Engine::route_signal`] would one by
    /// one, with a fixed number of statements: every directive they create
    /// is one insert and every verdict another (a `cancel_on` rule first
    /// writes what earlier signals created, so it can cancel it).
    pub async fn route_signals(
        &self,
        tx: &mut Tx,
        signals: &[(TenantId, SignalView<'_>)],
        dry_run: bool,
    ) -> Result<RouteReport, EngineError> {
        let rules = self.rules.current();
        let tx = (!dry_run).then_some(tx);
        self.route_with(&rules, tx, signals, &mut Pending::default())
            .await
    }

    /// Routes signals through `rules`: in `tx`, or, without one, as a dry
    /// run that writes nothing and leaves in `pending` what it would have
    /// written. The one routing path, for live signals, replays and
    /// backtests of candidate rules alike.
    pub(crate) async fn route_with(
        &self,
        rules: &RuleSet,
        mut tx: Option<&mut Tx>,
        signals: &[(TenantId, SignalView<'_>)],
        pending: &mut Pending,
    ) -> Result<RouteReport, EngineError> {
        let dry_run = tx.is_none();
        let mut report = RouteReport::default();
        if rules.is_empty() {
            return Ok(report);
        }
        let ctx = RouteContext::new(Value::Null, chrono::Utc::now());
        for (tenant, signal) in signals {
            let slug = self.tenant_slug(*tenant).await?;
            // Cancel first, so a signal that both triggers and cancels a rule
            // never cancels the directive it is about to create.
            let targets: Vec<(String, String)> = rules
                .cancellers(&slug, signal.signal_type)
                .into_iter()
                .map(|t| (t.rule_id, t.kind))
                .collect();
            if let Some(tx) = tx.as_deref_mut()
                && !targets.is_empty()
            {
                self.write_pending(tx, pending, &mut report).await?;
                let reason = format!(
                    "cancelled: {} {} arrived first",
                    signal.signal_type, signal.id
                );
                let cancelled = directive::cancel_pending_of_rules(
                    tx,
                    *tenant,
                    signal.subject,
                    &targets,
                    &reason,
                )
                .await?;
                report.directives_cancelled += cancelled.len() as u64;
            }
            for ev in rules.route(&slug, &input(signal), &ctx) {
                self.plan(*tenant, signal, ev, dry_run, pending, &mut report)
                    .await?;
            }
        }
        if let Some(tx) = tx {
            self.write_pending(tx, pending, &mut report).await?;
        }
        Ok(report)
    }

    /// Applies one evaluation (a cron tick's) and records its verdict.
    pub(crate) async fn apply_evaluation(
        &self,
        tx: &mut Tx,
        tenant: TenantId,
        signal: &SignalView<'_>,
        ev: RuleEvaluation,
    ) -> Result<RouteReport, EngineError> {
        let (mut pending, mut report) = (Pending::default(), RouteReport::default());
        self.plan(tenant, signal, ev, false, &mut pending, &mut report)
            .await?;
        self.write_pending(tx, &mut pending, &mut report).await?;
        Ok(report)
    }

    /// Turns an evaluation into its verdict and the directives it asks for.
    /// A rule acts whole: if one of its directives cannot be built, it
    /// creates none and its verdict is the error.
    async fn plan(
        &self,
        tenant: TenantId,
        signal: &SignalView<'_>,
        ev: RuleEvaluation,
        dry_run: bool,
        pending: &mut Pending,
        report: &mut RouteReport,
    ) -> Result<(), EngineError> {
        let mut verdict = |outcome: &str, notes: Vec<Note>, ev: &RuleEvaluation| {
            pending.verdicts.push(Verdict {
                tenant,
                row: evaluation_row(signal, ev, outcome),
                notes,
            });
        };
        // An uninstalled package's default rules do not run for the tenant;
        // a rule that did not match says so as it always has.
        if matches!(ev.outcome, Outcome::Matched { .. } | Outcome::Error { .. })
            && let Some(m) = self.uninstalled_rule_package(tenant, &ev.file).await?
        {
            let why = format!(
                "skipped: package {} is not installed for this tenant",
                m.slug
            );
            verdict("skipped", vec![Note::Text(why)], &ev);
            return Ok(());
        }
        let planned = match &ev.outcome {
            Outcome::Matched { directives } => directives,
            Outcome::Skipped { reason } => {
                verdict(
                    "skipped",
                    vec![Note::Text(format!("skipped: {reason}"))],
                    &ev,
                );
                return Ok(());
            }
            Outcome::Error { message } => {
                report.rule_errors += 1;
                verdict("error", vec![Note::Text(message.clone())], &ev);
                return Ok(());
            }
            Outcome::Emitted { .. } => {
                let why = "schedule rules do not route signals".to_owned();
                verdict("skipped", vec![Note::Text(why)], &ev);
                return Ok(());
            }
        };
        let mut notes = Vec::new();
        let mut directives = Vec::new();
        let mut not_configured = 0;
        for p in planned {
            match self.directive_from_plan(tenant, signal, &ev, p).await {
                Ok(new) => directives.push((p.kind.clone(), new)),
                Err(EngineError::NotConfigured(why) | EngineError::PackageNotInstalled(why)) => {
                    not_configured += 1;
                    notes.push(Note::Text(format!("skipped {}: {why}", p.kind)));
                }
                Err(e) => {
                    report.rule_errors += 1;
                    let why = format!(
                        "rule {} ({}): directive {}: {e}",
                        ev.rule_id,
                        ev.file.display(),
                        p.kind
                    );
                    verdict("error", vec![Note::Text(why)], &ev);
                    return Ok(());
                }
            }
        }
        for (kind, new) in directives {
            if dry_run {
                let taken = pending.trial_keys.contains(&new.dedupe_key)
                    || directive::dedupe_key_taken(self.db(), tenant, &new.dedupe_key).await?;
                pending.trial_keys.insert(new.dedupe_key.clone());
                pending.trial.push(TrialDirective {
                    signal_id: signal.id,
                    rule_id: ev.rule_id.clone(),
                    kind: kind.clone(),
                    args: new.args.clone(),
                    dedupe_key: new.dedupe_key.clone(),
                    deduplicated: taken,
                });
                let note = if taken {
                    report.directives_deduplicated += 1;
                    format!("{kind} would be deduplicated ({})", new.dedupe_key)
                } else {
                    report.directives_created += 1;
                    format!("would create {kind} ({})", new.dedupe_key)
                };
                notes.push(Note::Text(note));
            } else {
                notes.push(Note::Directive(pending.directives.len(), kind));
                pending.directives.push((tenant, new));
            }
        }
        let (outcome, head) = if not_configured == planned.len() {
            ("skipped", format!("rule {}: ", ev.rule_id))
        } else {
            let head = format!("rule {} matched signal {}: ", ev.rule_id, signal.id);
            ("matched", head)
        };
        let notes = std::iter::once(Note::Text(head)).chain(notes).collect();
        verdict(outcome, notes, &ev);
        Ok(())
    }

    /// Inserts the pending directives and verdicts, and empties `pending`.
    async fn write_pending(
        &self,
        tx: &mut Tx,
        pending: &mut Pending,
        report: &mut RouteReport,
    ) -> Result<(), EngineError> {
        let directives = std::mem::take(&mut pending.directives);
        let created = directive::insert_many(tx, &directives).await?;
        for ((tenant, new), c) in directives.iter().zip(&created) {
            match c {
                Created::New(id) => {
                    report.directives_created += 1;
                    metrics::directive_created(new.kind.as_str());
                    self.record_created(tx, *tenant, *id, new).await?;
                }
                Created::Existing(_) => {
                    report.directives_deduplicated += 1;
                    metrics::directive_deduplicated(new.kind.as_str());
                }
            }
        }
        let rows: Vec<(TenantId, EvaluationRow)> = std::mem::take(&mut pending.verdicts)
            .into_iter()
            .map(|v| {
                let mut row = v.row;
                row.detail = detail(&v.notes, &directives, &created);
                (v.tenant, row)
            })
            .collect();
        evaluation::insert_many(tx, &rows).await?;
        Ok(())
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
        self.require_kind_installed(tenant, kind.as_str()).await?;
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
        // An unknown tenant fails here, before any page is read.
        self.tenant_slug(tenant).await?;
        let mut out = ReplayReport::default();
        let mut after = None;
        loop {
            let page =
                fleetprompt_store::signal::page_for_replay(self.db(), tenant, filter, after, PAGE)
                    .await?;
            let Some(last) = page.last() else { break };
            after = Some((last.recorded_at, last.id));
            let mut tx = self.db().begin().await?;
            let views: Vec<(TenantId, SignalView<'_>)> =
                page.iter().map(|s| (tenant, stored_view(s))).collect();
            let report = self.route_signals(&mut tx, &views, dry_run).await?;
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

//! A subject's audit timeline: signal -> directive -> attempts -> result
//! signal, in causal and time order.

use crate::directive::{ATTEMPT_COLUMNS, AttemptRow, DirectiveRow};
use crate::evaluation::EvaluationRow;
use crate::signal::{SignalRow, list_by_subject};
use crate::{Db, Result, corrupt, on_db};
use fleetprompt_core::TenantId;
use fleetprompt_core::time::{Millis, to_rfc3339};
use serde::{Serialize, Serializer};

pub(crate) fn ser_ms<S: Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&to_rfc3339(*ms))
}

pub(crate) fn ser_opt_ms<S: Serializer>(ms: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&to_rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

/// One step of a timeline.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum Entry {
    /// A signal was recorded.
    Signal(SignalRow),
    /// A directive was created.
    Directive(DirectiveRow),
    /// A directive's attempt ended.
    Attempt(AttemptRow),
    /// A rule matched, skipped or failed on a signal.
    Rule(EvaluationRow),
}

impl Entry {
    fn at(&self) -> Millis {
        match self {
            Self::Signal(s) => s.recorded_at,
            Self::Directive(d) => d.created_at,
            Self::Attempt(a) => a.finished_at,
            Self::Rule(r) => r.evaluated_at,
        }
    }

    /// Within one millisecond, causes come before effects.
    fn rank(&self) -> u8 {
        match self {
            Self::Signal(s) if s.caused_by.is_none() => 0,
            Self::Rule(_) => 1,
            Self::Directive(_) => 2,
            Self::Attempt(_) => 3,
            Self::Signal(_) => 4,
        }
    }
}

/// A stretch of time, `from` inclusive and `until` exclusive; `None` leaves
/// that end open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    /// The first millisecond in it.
    pub from: Option<Millis>,
    /// The first millisecond after it.
    pub until: Option<Millis>,
}

impl Span {
    /// All of time.
    pub const ALL: Self = Self {
        from: None,
        until: None,
    };
}

/// The timeline of `subject`: its signals, the directives they caused or that
/// are about it, and every attempt, in causal and time order.
pub async fn for_subject(db: &Db, tenant: TenantId, subject: &str) -> Result<Vec<Entry>> {
    within(db, tenant, subject, Span::ALL).await
}

/// The part of `subject`'s timeline that happened within `span`: its
/// signals and rule verdicts recorded then, the directives created then or
/// caused by those signals, and every attempt of those directives (an
/// attempt may end after the span: it belongs to its directive).
pub async fn within(db: &Db, tenant: TenantId, subject: &str, span: Span) -> Result<Vec<Entry>> {
    let signals = list_by_subject(db, tenant, subject, span).await?;
    let signal_ids: Vec<_> = signals.iter().map(|s| s.id).collect();
    let directives: Vec<DirectiveRow> = on_db!(db, c => {
        // SQLite and PostgreSQL share no array syntax, so the cause set is
        // passed as JSON text and expanded on each side. Two selects, one
        // per index: with an OR, SQLite reads every directive of the tenant.
        let sql = match db.backend() {
            crate::Backend::Sqlite => format!(
                "SELECT {c} FROM directives WHERE tenant_id = $1 AND subject = $2
                   AND ($4 IS NULL OR created_at >= $4) AND ($5 IS NULL OR created_at < $5)
                 UNION SELECT {c} FROM directives WHERE tenant_id = $1
                   AND caused_by IN (SELECT value FROM json_each($3))
                 ORDER BY created_at, id LIMIT 10000",
                c = crate::directive::COLUMNS
            ),
            crate::Backend::Postgres => format!(
                "SELECT {c} FROM directives WHERE tenant_id = $1 AND subject = $2
                   AND ($4 IS NULL OR created_at >= $4) AND ($5 IS NULL OR created_at < $5)
                 UNION SELECT {c} FROM directives WHERE tenant_id = $1
                   AND caused_by IN (SELECT jsonb_array_elements_text($3::jsonb))
                 ORDER BY created_at, id LIMIT 10000",
                c = crate::directive::COLUMNS
            ),
        };
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(subject)
            .bind(serde_json::to_string(&signal_ids).map_err(corrupt)?)
            .bind(span.from)
            .bind(span.until)
            .fetch_all(c)
            .await?
    });
    let directive_ids: Vec<_> = directives.iter().map(|d| d.id).collect();
    let attempts: Vec<AttemptRow> = on_db!(db, c => {
        let sql = match db.backend() {
            crate::Backend::Sqlite => format!(
                "SELECT {ATTEMPT_COLUMNS} FROM directive_attempts WHERE tenant_id = $1
                 AND directive_id IN (SELECT value FROM json_each($2)) ORDER BY finished_at"
            ),
            crate::Backend::Postgres => format!(
                "SELECT {ATTEMPT_COLUMNS} FROM directive_attempts WHERE tenant_id = $1
                 AND directive_id IN (SELECT jsonb_array_elements_text($2::jsonb)) ORDER BY finished_at"
            ),
        };
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(serde_json::to_string(&directive_ids).map_err(corrupt)?)
            .fetch_all(c)
            .await?
    });
    let evaluations = crate::evaluation::list_by_subject(db, tenant, subject, span).await?;
    let mut entries: Vec<Entry> = signals
        .into_iter()
        .map(Entry::Signal)
        .chain(evaluations.into_iter().map(Entry::Rule))
        .chain(directives.into_iter().map(Entry::Directive))
        .chain(attempts.into_iter().map(Entry::Attempt))
        .collect();
    entries.sort_by_key(|e| (e.at(), e.rank()));
    Ok(entries)
}

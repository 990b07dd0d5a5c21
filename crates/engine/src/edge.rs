//! Edge Connectors: what the platform does for the `fleetprompt-edge`
//! processes tenants run next to their own mail server.
//!
//! A connector holds a token of its own (`fpe_…`), sends heartbeats (the
//! last-seen gauge and the silent-connector alert read them), claims due
//! tasks of the edge lane of its own tenant ([`claim_tasks`]) and reports
//! each attempt's outcome ([`report_result`]), which is written by the same
//! completion path as the platform workers' attempts. It never touches the
//! database: everything it does goes through these calls.

use std::time::{Duration, Instant};

use fleetprompt_core::secret::{IssuedEdgeToken, parse_edge_token};
use fleetprompt_core::signal::ValidationError;
use fleetprompt_core::time::{Millis, now_ms};
use fleetprompt_core::{DirectiveId, DirectiveStatus, EdgeConnectorId, Runner, TenantId};
use fleetprompt_store::edge::{self, EdgeConnector};
use fleetprompt_store::queue::{self, Claimed};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Engine, EngineError, Outcome, metrics};

/// Most tasks one claim may take.
pub const MAX_CLAIM: i64 = 50;
/// Longest a claim may wait for a task to come due.
pub const MAX_WAIT: Duration = Duration::from_secs(25);
/// How often a waiting claim looks again: edge tasks are few (one per
/// escalation), so a short poll costs little and needs no cross-node wake-up.
const WAIT_POLL: Duration = Duration::from_millis(250);
/// The lease of a claimed task unless the connector asks for another.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// Bounds of a requested lease.
pub const LEASE_BOUNDS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(600));
/// Longest error text kept from a connector's report.
const ERROR_MAX: usize = 2000;

/// Registers a connector for a tenant; the token is returned once.
pub async fn create_connector(
    engine: &Engine,
    tenant: TenantId,
    name: &str,
) -> Result<(EdgeConnector, IssuedEdgeToken), EngineError> {
    edge::check_name(name).map_err(invalid_name)?;
    let mut tx = engine.db().begin().await?;
    let created = edge::create(&mut tx, tenant, name).await?;
    tx.commit().await?;
    Ok(created)
}

fn invalid_name(reason: String) -> EngineError {
    invalid("name", reason)
}

/// Revokes a connector; its token stops working at once.
pub async fn revoke_connector(
    engine: &Engine,
    tenant: TenantId,
    id: EdgeConnectorId,
) -> Result<EdgeConnector, EngineError> {
    let mut tx = engine.db().begin().await?;
    edge::revoke(&mut tx, tenant, id)
        .await
        .map_err(|e| match e {
            fleetprompt_store::StoreError::NotFound { .. } => {
                EngineError::NotFound("edge connector".into())
            }
            other => other.into(),
        })?;
    tx.commit().await?;
    Ok(edge::get(engine.db(), tenant, id).await?)
}

/// The live connector a presented token belongs to; `None` for a token
/// that is malformed, unknown, revoked or wrong, alike.
pub async fn authenticate(
    engine: &Engine,
    token: &str,
) -> Result<Option<EdgeConnector>, EngineError> {
    let Some((id, secret)) = parse_edge_token(token.trim()) else {
        return Ok(None);
    };
    Ok(edge::authenticate(engine.db(), id, secret).await?)
}

/// Records a heartbeat: the connector is alive, running `version`.
pub async fn heartbeat(
    engine: &Engine,
    connector: &EdgeConnector,
    version: Option<&str>,
) -> Result<(), EngineError> {
    let mut tx = engine.db().begin().await?;
    edge::touch(
        &mut tx,
        connector.tenant_id,
        connector.id,
        version,
        now_ms(),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The lease holder name of a connector: attempts it claims are fenced by it.
pub fn worker_name(id: EdgeConnectorId) -> String {
    format!("edge:{id}")
}

/// What a connector asks for when it claims.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// The kinds it can run (each must be an edge kind).
    pub kinds: Vec<String>,
    /// Most tasks to take.
    pub limit: i64,
    /// How long to wait for a task when none is due.
    pub wait: Duration,
    /// How long each claimed task is leased.
    pub lease: Duration,
}

/// A task handed to a connector.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeTask {
    /// The directive.
    pub id: DirectiveId,
    /// Its kind.
    pub kind: String,
    /// This attempt's number: the connector reports it back (the fence).
    pub attempt: i32,
    /// Attempts allowed in all.
    pub max_attempts: i32,
    /// The kind's arguments.
    pub args: Value,
    /// Deterministic per directive: an idempotency key for receivers.
    pub dedupe_key: String,
    /// What it is about.
    pub subject: Option<String>,
    /// When the lease runs out (ms since the epoch).
    pub lease_until: Millis,
}

/// A request field that does not hold, as a validation error.
pub fn invalid(field: &'static str, reason: impl Into<String>) -> EngineError {
    EngineError::Validation(ValidationError::Invalid {
        field,
        reason: reason.into(),
    })
}

/// Claims due edge tasks of the connector's own tenant, waiting up to
/// `req.wait` for one to come due. Each is leased to the connector
/// (running, attempts + 1).
pub async fn claim_tasks(
    engine: &Engine,
    connector: &EdgeConnector,
    req: &ClaimRequest,
) -> Result<Vec<EdgeTask>, EngineError> {
    if req.kinds.is_empty() {
        return Err(invalid(
            "kinds",
            "name at least one kind, e.g. [\"email.send\"]",
        ));
    }
    for k in &req.kinds {
        if Runner::of_kind(k) != Runner::Edge {
            return Err(invalid(
                "kinds",
                format!(
                    "{k:?} is not a kind an Edge Connector runs; edge kinds: {}",
                    fleetprompt_core::directive::EDGE_KINDS.join(", ")
                ),
            ));
        }
    }
    if !(1..=MAX_CLAIM).contains(&req.limit) {
        return Err(invalid("limit", format!("must be 1 to {MAX_CLAIM}")));
    }
    let lease = req.lease.clamp(LEASE_BOUNDS.0, LEASE_BOUNDS.1);
    let deadline = Instant::now() + req.wait.min(MAX_WAIT);
    let worker = worker_name(connector.id);
    loop {
        let claimed = queue::claim_edge(
            engine.db(),
            connector.tenant_id,
            &connector.id.to_string(),
            &req.kinds,
            &worker,
            lease.as_millis() as i64,
            req.limit,
        )
        .await?;
        if !claimed.is_empty() {
            metrics::claimed(claimed.len());
            metrics::edge_tasks("claimed", claimed.len());
            let lease_until = now_ms() + lease.as_millis() as i64;
            return Ok(claimed
                .into_iter()
                .map(|c| EdgeTask {
                    id: c.id,
                    kind: c.kind,
                    attempt: c.attempt,
                    max_attempts: c.max_attempts,
                    args: c.args,
                    dedupe_key: c.dedupe_key,
                    subject: c.subject,
                    lease_until,
                })
                .collect());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || engine.is_shutting_down() {
            return Ok(Vec::new());
        }
        tokio::time::sleep(left.min(WAIT_POLL)).await;
    }
}

/// How a connector says an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportedOutcome {
    /// Delivered.
    Succeeded,
    /// Failed; another attempt may succeed (SMTP 4xx, connection trouble).
    Retry,
    /// Failed for good (SMTP 5xx, a malformed task).
    Failed,
}

/// A connector's report of one attempt.
#[derive(Debug, Clone)]
pub struct TaskResult {
    /// The attempt number it was handed (the fence).
    pub attempt: i32,
    /// How it ended.
    pub outcome: ReportedOutcome,
    /// What went wrong.
    pub error: Option<String>,
    /// The receiver's reference (the email's `Message-ID`).
    pub external_ref: Option<String>,
    /// The SMTP reply code, kept as the attempt's external status.
    pub smtp_code: Option<u16>,
    /// The SMTP server's reply text (e.g. `250 2.0.0 Ok: queued as 4F…`),
    /// shown on the timeline with the `Message-ID`.
    pub smtp_reply: Option<String>,
}

/// Records the outcome of an attempt a connector was leased, through the
/// platform workers' completion path: attempt row, status, backoff for a
/// retry, and the result signal routed in the same transaction, fenced by
/// the connector's lease and the attempt number.
pub async fn report_result(
    engine: &Engine,
    connector: &EdgeConnector,
    id: DirectiveId,
    report: TaskResult,
) -> Result<(), EngineError> {
    let tenant = connector.tenant_id;
    let row = fleetprompt_store::directive::get(engine.db(), tenant, id)
        .await
        .map_err(|e| match e {
            fleetprompt_store::StoreError::NotFound { .. } => EngineError::NotFound("task".into()),
            other => other.into(),
        })?;
    if Runner::of_kind(&row.kind) != Runner::Edge {
        // Another lane's directive of the same tenant: not the connector's to report.
        return Err(EngineError::NotFound("task".into()));
    }
    let claimed = Claimed {
        tenant,
        id,
        kind: row.kind.clone(),
        args: row.args.clone(),
        dedupe_key: row.dedupe_key.clone(),
        subject: row.subject.clone(),
        attempt: report.attempt,
        max_attempts: row.max_attempts,
        retry_policy: row.retry_policy,
        caused_by: row.caused_by,
        destination: None,
    };
    let error = report
        .error
        .map(|e| e.chars().take(ERROR_MAX).collect::<String>());
    let smtp_reply = report.smtp_reply.as_deref().map(|r| {
        r.chars()
            .filter(|c| !c.is_control())
            .take(ERROR_MAX)
            .collect::<String>()
    });
    let outcome = match report.outcome {
        ReportedOutcome::Succeeded => Outcome::Succeeded {
            result: json!({
                "smtp_code": report.smtp_code,
                "smtp_reply": smtp_reply,
                "message_id": report.external_ref,
            }),
            http_status: report.smtp_code,
            external_ref: report.external_ref,
        },
        ReportedOutcome::Retry => Outcome::Retry {
            error: error.unwrap_or_else(|| "the connector asked for a retry".into()),
            http_status: report.smtp_code,
            retry_after: None,
        },
        ReportedOutcome::Failed => Outcome::Fail {
            error: error.unwrap_or_else(|| "the connector reported a failure".into()),
            http_status: report.smtp_code,
            external_ref: report.external_ref,
        },
    };
    // The claim set updated_at; while the lease is held nothing else
    // touches the row, so it is when this attempt started.
    let started_at = if row.status == DirectiveStatus::Running {
        row.updated_at
    } else {
        now_ms()
    };
    let (mut completion, retry_delay) =
        crate::worker::completion_of(engine, &claimed, started_at, outcome);
    completion.worker = worker_name(connector.id);
    // The timeline shows what the SMTP server said and the Message-ID:
    // both go into the result signal (and its escalation twin).
    if let Some((_, s)) = completion.signal.as_mut() {
        s.payload["smtp_reply"] = json!(smtp_reply);
        s.payload["message_id"] = json!(completion.external_ref);
        s.payload["connector_id"] = json!(connector.id);
    }
    let applied =
        crate::worker::write_completions(engine, std::slice::from_ref(&completion)).await?;
    if !applied.first().copied().unwrap_or(false) {
        return Err(EngineError::Conflict(format!(
            "task {id} attempt {} is not leased to this connector (finished, reaped after its lease ran out, or another attempt)",
            report.attempt
        )));
    }
    let duration = Duration::from_millis((completion.finished_at - started_at).max(0) as u64);
    metrics::attempt(&row.kind, completion.outcome.as_str(), duration);
    metrics::edge_tasks(
        match completion.outcome {
            fleetprompt_core::AttemptOutcome::Succeeded => "sent",
            fleetprompt_core::AttemptOutcome::Failed => "failed",
            _ => "retry",
        },
        1,
    );
    if let Some(error) = &completion.error {
        // Kept on the connector for the admin listing: a connector that
        // heartbeats but cannot send shows why. Best effort: the attempt is
        // already written.
        let kept = async {
            let mut tx = engine.db().begin().await?;
            edge::set_last_error(&mut tx, tenant, connector.id, error, completion.finished_at)
                .await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = kept {
            tracing::warn!(error = %e, connector = %connector.id, "could not keep the connector's last error");
        }
    }
    if let Some(delay) = retry_delay {
        metrics::retry_scheduled(&row.kind, delay);
    }
    Ok(())
}

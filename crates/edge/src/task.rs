//! One claimed task, journaled end to end: look it up in the journal, send
//! its email at most once per unknown outcome, record the result, and report
//! it (now, or from the journal's report queue when the server is back).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::api::{ApiError, Client, Outcome, Task, TaskResult};
use crate::config::Config;
use crate::journal::{Journal, JournalError, State};
use crate::mail;
use crate::smtp::Smtp;

/// The task kinds this connector runs.
pub const KINDS: &[&str] = &["email.send"];

/// Running totals, logged with every task (the connector has no metrics
/// endpoint: it opens no port).
#[derive(Debug, Default)]
pub struct Counters {
    /// Tasks claimed from the server.
    pub claimed: AtomicU64,
    /// Emails the SMTP server accepted (including journal replays reported
    /// as sent).
    pub sent: AtomicU64,
    /// Tasks that failed for good.
    pub failed: AtomicU64,
    /// Attempts that will be retried.
    pub retried: AtomicU64,
    /// Tasks found in the journal: sent before (reported without sending)
    /// or with an unknown outcome (sent again).
    pub journal_replays: AtomicU64,
    /// Results reported from the journal's queue after a delay.
    pub late_reports: AtomicU64,
}

fn bump(c: &AtomicU64) -> u64 {
    c.fetch_add(1, Ordering::Relaxed) + 1
}

fn read(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// What a task needs: the server, the SMTP server, the journal, settings.
#[derive(Clone)]
pub struct Runner {
    /// The server.
    pub client: Client,
    /// The SMTP server.
    pub smtp: Smtp,
    /// The journal.
    pub journal: Journal,
    /// Settings.
    pub config: Config,
    /// Totals.
    pub counters: Arc<Counters>,
}

/// Why the loop must pause or stop.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The server refused the token: stop.
    #[error(transparent)]
    Unauthorized(ApiError),
    /// The server is away: results wait in the journal.
    #[error("the server is away: {0}")]
    ServerAway(ApiError),
    /// The journal cannot be written: no email is sent without it.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl Runner {
    /// Runs one claimed task and reports it.
    pub async fn handle(&self, task: &Task) -> Result<(), TaskError> {
        bump(&self.counters.claimed);
        // Ids go into a URL path and the journal; the server's are `dir_<hex>`.
        if !task
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            tracing::error!(task = %task.id, "ignoring a task with a malformed id");
            return Ok(());
        }
        let message_id = mail::message_id(&task.id, &self.config.message_id_domain);
        let result = if !KINDS.contains(&task.kind.as_str()) {
            let r = TaskResult {
                attempt: task.attempt,
                outcome: Outcome::Failed,
                error: Some(format!("this connector does not run {:?}", task.kind)),
                external_ref: None,
                smtp_code: None,
                smtp_reply: None,
            };
            self.journal
                .finish(&task.id, &message_id, State::Failed, None, &r)
                .await?;
            r
        } else {
            match self.journal.get(&task.id).await? {
                Some(e) if matches!(e.state, State::Sent | State::Failed) => {
                    // Done before; only the report was lost. Never send again.
                    let replays = bump(&self.counters.journal_replays);
                    let r = TaskResult {
                        attempt: task.attempt,
                        outcome: if e.state == State::Sent {
                            Outcome::Succeeded
                        } else {
                            Outcome::Failed
                        },
                        error: (e.state == State::Failed)
                            .then(|| e.smtp_reply.clone())
                            .flatten(),
                        external_ref: (e.state == State::Sent).then(|| e.message_id.clone()),
                        smtp_code: e.smtp_code,
                        smtp_reply: e.smtp_reply.clone(),
                    };
                    tracing::info!(task = %task.id, attempt = task.attempt, journaled_attempt = e.attempt,
                        state = ?e.state, journal_replays_total = replays,
                        "journal replay: this email was done already; reporting it without sending again");
                    self.journal.queue_report(&task.id, &r).await?;
                    r
                }
                Some(e) => {
                    if e.state == State::Sending {
                        let replays = bump(&self.counters.journal_replays);
                        tracing::warn!(task = %task.id, attempt = task.attempt, journaled_attempt = e.attempt,
                            journal_replays_total = replays,
                            "journal replay: an earlier DATA ended with an unknown outcome; sending again with the same Message-ID");
                    }
                    self.send(task, &message_id).await?
                }
                None => self.send(task, &message_id).await?,
            }
        };
        let c = &self.counters;
        match result.outcome {
            Outcome::Succeeded => bump(&c.sent),
            Outcome::Failed => bump(&c.failed),
            Outcome::Retry => bump(&c.retried),
        };
        tracing::info!(task = %task.id, attempt = task.attempt, outcome = result.outcome.as_str(),
            smtp_code = ?result.smtp_code, error = ?result.error,
            tasks_claimed_total = read(&c.claimed), tasks_sent_total = read(&c.sent),
            tasks_failed_total = read(&c.failed), journal_replays_total = read(&c.journal_replays),
            "email task done");
        self.report(&task.id, &result).await
    }

    /// Composes, connects, journals `sending`, sends, journals the end.
    async fn send(&self, task: &Task, message_id: &str) -> Result<TaskResult, TaskError> {
        let result = |outcome, error: Option<String>, smtp_code| TaskResult {
            attempt: task.attempt,
            outcome,
            smtp_reply: error.clone(),
            error,
            external_ref: None,
            smtp_code,
        };
        let email = match mail::compose(task, &self.config) {
            Ok(m) => m,
            Err(error) => {
                let r = result(Outcome::Failed, Some(error.clone()), None);
                self.journal
                    .finish(&task.id, message_id, State::Failed, Some(&error), &r)
                    .await?;
                return Ok(r);
            }
        };
        let mut session = match self.smtp.connect().await {
            Ok(s) => s,
            Err(e) => {
                let error = e.to_string();
                let outcome = if e.is_permanent() {
                    Outcome::Failed
                } else {
                    Outcome::Retry
                };
                let r = result(outcome, Some(error.clone()), e.code());
                self.journal
                    .finish(&task.id, message_id, State::Unsent, Some(&error), &r)
                    .await?;
                return Ok(r);
            }
        };
        // The at-least-once window opens here and closes at `sent` below.
        self.journal
            .sending(&task.id, task.attempt, message_id)
            .await?;
        let sent = session.send(&email).await;
        let r = match sent {
            Ok(reply) => {
                let r = TaskResult {
                    attempt: task.attempt,
                    outcome: Outcome::Succeeded,
                    error: None,
                    external_ref: Some(message_id.to_owned()),
                    smtp_code: Some(reply.code),
                    smtp_reply: Some(reply.text.clone()),
                };
                self.journal
                    .finish(&task.id, message_id, State::Sent, Some(&reply.text), &r)
                    .await?;
                tracing::info!(task = %task.id, reply = %reply.text, "the SMTP server accepted the email");
                r
            }
            Err(e) => {
                let error = e.to_string();
                let (outcome, state) = if e.is_permanent() {
                    (Outcome::Failed, State::Failed)
                } else if e.code().is_some() {
                    (Outcome::Retry, State::Unsent)
                } else {
                    // No reply (the connection dropped, a timeout): the
                    // message may have gone through; the outcome stays
                    // unknown, and the retry is a journal replay.
                    (Outcome::Retry, State::Sending)
                };
                let r = result(outcome, Some(error.clone()), e.code());
                self.journal
                    .finish(&task.id, message_id, state, Some(&error), &r)
                    .await?;
                r
            }
        };
        session.quit().await;
        Ok(r)
    }

    /// Reports one journaled result; when the server is away it stays in
    /// the journal for [`Runner::flush`].
    async fn report(&self, task_id: &str, result: &TaskResult) -> Result<(), TaskError> {
        match self.client.report(task_id, result).await {
            Ok(()) => {
                self.journal.reported(task_id, result.attempt).await?;
                Ok(())
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(task = %task_id, error = %e,
                    "could not report the result; it is kept in the journal and reported when the server is back");
                Err(TaskError::ServerAway(e))
            }
            Err(ApiError::Unauthorized) => Err(TaskError::Unauthorized(ApiError::Unauthorized)),
            Err(e) => {
                // 404/409: the lease ran out or the task finished. If the
                // task comes back, the journal answers for it.
                tracing::warn!(task = %task_id, attempt = result.attempt, error = %e,
                    "the server did not take the result");
                self.journal.reported(task_id, result.attempt).await?;
                Ok(())
            }
        }
    }

    /// Reports every result still in the journal, oldest first; stops at
    /// the first sign that the server is away.
    pub async fn flush(&self) -> Result<(), TaskError> {
        let pending = self.journal.pending_reports().await?;
        if pending.is_empty() {
            return Ok(());
        }
        tracing::info!(pending = pending.len(), "reporting journaled results");
        for (task_id, result) in pending {
            self.report(&task_id, &result).await?;
            let late = bump(&self.counters.late_reports);
            tracing::info!(task = %task_id, attempt = result.attempt, outcome = result.outcome.as_str(),
                late_reports_total = late, "reported a journaled result");
        }
        Ok(())
    }
}

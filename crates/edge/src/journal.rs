//! The connector's journal: a SQLite file in `--state-dir` that remembers,
//! across crashes and restarts, what happened to each task's email and which
//! results the server has not taken yet. All of the connector's SQL is here.
//!
//! One row per task:
//! - `sending` is written (durably) right before the session's `MAIL`,
//!   `RCPT`, `DATA`; `sent` with the SMTP reply right after the `250`. A
//!   crash in between leaves `sending`, and so does a session that ends with
//!   no reply (a dropped connection, a timeout): the outcome is unknown, and
//!   the next attempt sends again with the same `Message-ID`. That window,
//!   one `DATA` command, is the only place an email can go out twice.
//! - `sent` means the server accepted it: a later attempt of the task (its
//!   report was lost, its lease ran out) is reported sent without sending.
//! - `unsent` and `failed` mean nothing was accepted (a 4xx or no session;
//!   a 5xx or an unusable task).
//! - `report` holds the result the server has not taken yet (JSON), written
//!   in the same statement as the state it follows from, and cleared when
//!   the server answers: the report queue, replayed when the server is back.

use std::path::Path;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::api::TaskResult;

/// The journal's file name inside `--state-dir`.
pub const FILE: &str = "journal.sqlite";

/// Reported rows are kept this long (a task's retries end well before).
const KEEP: Duration = Duration::from_secs(30 * 24 * 3600);

/// Failures of the journal: the disk, or a file that is not ours.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The state directory cannot be created.
    #[error("cannot create the state directory {path}: {error}")]
    Dir {
        /// The directory.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// SQLite failed.
    #[error("the journal failed: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored report that does not parse (a file edited by hand).
    #[error("the journal holds an unreadable report for {0}")]
    Corrupt(String),
}

/// What the journal knows about a task's email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// `DATA` may be in flight: the outcome is unknown.
    Sending,
    /// The server answered `250`.
    Sent,
    /// Not accepted; may be retried.
    Unsent,
    /// Not accepted, for good.
    Failed,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Unsent => "unsent",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "sending" => Self::Sending,
            "sent" => Self::Sent,
            "unsent" => Self::Unsent,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// One task's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where its email stands.
    pub state: State,
    /// The attempt it was last written for.
    pub attempt: i32,
    /// The email's `Message-ID`.
    pub message_id: String,
    /// The SMTP reply code, when there was one.
    pub smtp_code: Option<u16>,
    /// The SMTP reply (`250 2.0.0 queued`) or the error.
    pub smtp_reply: Option<String>,
}

/// The open journal.
#[derive(Clone)]
pub struct Journal {
    pool: SqlitePool,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Journal {
    /// Opens (creating) `dir/journal.sqlite`.
    pub async fn open(dir: &Path) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(|error| JournalError::Dir {
            path: dir.display().to_string(),
            error,
        })?;
        let options = SqliteConnectOptions::new()
            .filename(dir.join(FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // `sent` must survive a power cut too, not only a crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS email_journal (
                task_id TEXT PRIMARY KEY,
                attempt INTEGER NOT NULL,
                message_id TEXT NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('sending', 'sent', 'unsent', 'failed')),
                smtp_code INTEGER,
                smtp_reply TEXT,
                report TEXT,
                updated_at INTEGER NOT NULL
            )",
        )
        .execute(&pool)
        .await?;
        sqlx::query("DELETE FROM email_journal WHERE report IS NULL AND updated_at < $1")
            .bind(now_ms() - KEEP.as_millis() as i64)
            .execute(&pool)
            .await?;
        Ok(Self { pool })
    }

    /// The task's row, if any.
    pub async fn get(&self, task_id: &str) -> Result<Option<Entry>, JournalError> {
        let row = sqlx::query(
            "SELECT state, attempt, message_id, smtp_code, smtp_reply FROM email_journal WHERE task_id = $1",
        )
        .bind(task_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let state: String = r.get("state");
            Ok(Entry {
                state: State::parse(&state).ok_or_else(|| JournalError::Corrupt(task_id.into()))?,
                attempt: r.get::<i64, _>("attempt") as i32,
                message_id: r.get("message_id"),
                smtp_code: r.get::<Option<i64>, _>("smtp_code").map(|c| c as u16),
                smtp_reply: r.get("smtp_reply"),
            })
        })
        .transpose()
    }

    /// Records that `DATA` is about to go out for `attempt`.
    pub async fn sending(
        &self,
        task_id: &str,
        attempt: i32,
        message_id: &str,
    ) -> Result<(), JournalError> {
        sqlx::query(
            "INSERT INTO email_journal (task_id, attempt, message_id, state, updated_at)
             VALUES ($1, $2, $3, 'sending', $4)
             ON CONFLICT (task_id) DO UPDATE SET attempt = excluded.attempt,
                message_id = excluded.message_id, state = 'sending', smtp_code = NULL,
                smtp_reply = NULL, report = NULL, updated_at = excluded.updated_at",
        )
        .bind(task_id)
        .bind(attempt)
        .bind(message_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records how the task's email ended and queues `report` for the
    /// server, in one statement.
    pub async fn finish(
        &self,
        task_id: &str,
        message_id: &str,
        state: State,
        smtp_reply: Option<&str>,
        report: &TaskResult,
    ) -> Result<(), JournalError> {
        sqlx::query(
            "INSERT INTO email_journal (task_id, attempt, message_id, state, smtp_code, smtp_reply, report, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (task_id) DO UPDATE SET attempt = excluded.attempt,
                message_id = excluded.message_id, state = excluded.state,
                smtp_code = excluded.smtp_code, smtp_reply = excluded.smtp_reply,
                report = excluded.report, updated_at = excluded.updated_at",
        )
        .bind(task_id)
        .bind(report.attempt)
        .bind(message_id)
        .bind(state.as_str())
        .bind(report.smtp_code.map(i64::from))
        .bind(smtp_reply)
        .bind(serde_json::to_string(report).unwrap_or_default())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Queues a report for a task whose email already has its state (a
    /// replay of a `sent` row for a later attempt).
    pub async fn queue_report(
        &self,
        task_id: &str,
        report: &TaskResult,
    ) -> Result<(), JournalError> {
        sqlx::query(
            "UPDATE email_journal SET attempt = $2, report = $3, updated_at = $4 WHERE task_id = $1",
        )
        .bind(task_id)
        .bind(report.attempt)
        .bind(serde_json::to_string(report).unwrap_or_default())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Results the server has not taken yet, oldest first.
    pub async fn pending_reports(&self) -> Result<Vec<(String, TaskResult)>, JournalError> {
        let rows = sqlx::query(
            "SELECT task_id, report FROM email_journal WHERE report IS NOT NULL ORDER BY updated_at, task_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.get("task_id");
                let text: String = r.get("report");
                let report =
                    serde_json::from_str(&text).map_err(|_| JournalError::Corrupt(id.clone()))?;
                Ok((id, report))
            })
            .collect()
    }

    /// The server answered the report of `attempt` (took it, or refused it
    /// for good): it leaves the queue. A newer report stays.
    pub async fn reported(&self, task_id: &str, attempt: i32) -> Result<(), JournalError> {
        sqlx::query(
            "UPDATE email_journal SET report = NULL, updated_at = $3
             WHERE task_id = $1 AND json_extract(report, '$.attempt') = $2",
        )
        .bind(task_id)
        .bind(attempt)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Outcome;

    fn result(attempt: i32, outcome: Outcome) -> TaskResult {
        TaskResult {
            attempt,
            outcome,
            error: None,
            external_ref: Some("<dir_1@x>".into()),
            smtp_code: Some(250),
            smtp_reply: Some("250 queued".into()),
        }
    }

    #[tokio::test]
    async fn states_and_reports_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("fp-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let j = Journal::open(&dir).await.unwrap();
        assert_eq!(j.get("dir_1").await.unwrap(), None);
        j.sending("dir_1", 1, "<dir_1@x>").await.unwrap();
        assert_eq!(j.get("dir_1").await.unwrap().unwrap().state, State::Sending);
        drop(j);

        let j = Journal::open(&dir).await.unwrap();
        assert_eq!(j.get("dir_1").await.unwrap().unwrap().state, State::Sending);
        let r = result(1, Outcome::Succeeded);
        j.finish("dir_1", "<dir_1@x>", State::Sent, Some("250 queued"), &r)
            .await
            .unwrap();
        let e = j.get("dir_1").await.unwrap().unwrap();
        assert_eq!((e.state, e.smtp_code), (State::Sent, Some(250)));
        assert_eq!(e.smtp_reply.as_deref(), Some("250 queued"));
        assert_eq!(j.pending_reports().await.unwrap(), [("dir_1".into(), r)]);

        // A newer report survives the answer to an older one.
        let r2 = result(2, Outcome::Succeeded);
        j.queue_report("dir_1", &r2).await.unwrap();
        j.reported("dir_1", 1).await.unwrap();
        assert_eq!(j.pending_reports().await.unwrap().len(), 1);
        j.reported("dir_1", 2).await.unwrap();
        assert!(j.pending_reports().await.unwrap().is_empty());
        assert_eq!(j.get("dir_1").await.unwrap().unwrap().state, State::Sent);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

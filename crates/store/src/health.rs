//! Whether the database can be used now, answered fast.
//!
//! - Outages are told apart from other failures where a `sqlx` error
//!   becomes a [`StoreError`] ([`classify`]): a database that cannot be
//!   reached is [`StoreError::Unavailable`], one with no room to write is
//!   [`StoreError::StorageFull`]. Both end by themselves, so callers answer
//!   "retry later" instead of "internal error", and both are counted.
//! - A breaker ([`Health`]): once PostgreSQL is known to be unreachable (a
//!   failed connect, or the monitor's probe), reads and transactions fail at
//!   once instead of each waiting out the pool's acquire timeout; the
//!   monitor closes it again as soon as a probe connects.
//! - Readiness ([`crate::Db::ready`]): a write that was refused in the last
//!   seconds, or a probe write (at most once a second, skipped while real
//!   commits succeed), says whether writes work.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use fleetprompt_core::time::now_ms;
use metrics::{Unit, counter, describe_counter};
use tokio::sync::Notify;

use crate::StoreError;

/// Database errors that are outages, by kind (`unavailable`, `storage_full`).
pub const DB_OUTAGE_ERRORS: &str = "fleetprompt_db_outage_errors_total";

/// Describes this crate's metrics. Call once at start.
pub fn describe() {
    describe_counter!(
        DB_OUTAGE_ERRORS,
        Unit::Count,
        "Database errors that are outages (unreachable, read-only, or no room to write), by kind."
    );
    // Exported at zero from the start, so an alert's `increase()` sees the
    // first outage too (a series born at 1 has no increase).
    for kind in ["unavailable", "storage_full"] {
        counter!(DB_OUTAGE_ERRORS, "kind" => kind).increment(0);
    }
}

/// How long after a refused write (storage full, read-only) readiness
/// stays failed, unless the error repeats. Short, so recovery shows at once
/// once space is freed; long enough that a node refusing every write is
/// taken out of a load balancer even while a probe write squeezes through
/// (a WAL frame reused after a checkpoint).
const REFUSED_WRITE_HOLD_MS: i64 = 2_000;

/// How often a cached readiness answer is reused.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How long a probe may take before readiness says no: `/readyz` answers
/// within a second either way.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// When a write was last refused for want of space or because the database
/// is read-only, in this process (milliseconds since the epoch; 0: never).
/// Process-wide because it is recorded where any `sqlx` error becomes a
/// [`StoreError`], which knows no [`crate::Db`]; a process has one.
static WRITE_REFUSED_AT: AtomicI64 = AtomicI64::new(0);

/// Whether that write was refused for want of space (else: read-only, or
/// a disk I/O error).
static REFUSED_FOR_SPACE: AtomicBool = AtomicBool::new(false);

/// Turns a `sqlx` error into this crate's, telling outages apart.
pub(crate) fn classify(e: sqlx::Error) -> StoreError {
    let outage = match &e {
        sqlx::Error::PoolTimedOut => Some(StoreError::Unavailable(
            "timed out waiting for a database connection".into(),
        )),
        sqlx::Error::PoolClosed => Some(StoreError::Unavailable(
            "the database connections are closed".into(),
        )),
        sqlx::Error::Io(io) => Some(StoreError::Unavailable(describe_io(io))),
        sqlx::Error::Tls(t) => Some(StoreError::Unavailable(format!("TLS: {t}"))),
        sqlx::Error::Database(d) => classify_database(d.as_ref()),
        _ => None,
    };
    match outage {
        Some(o) => {
            let kind = match &o {
                StoreError::StorageFull(_) => "storage_full",
                _ => "unavailable",
            };
            counter!(DB_OUTAGE_ERRORS, "kind" => kind).increment(1);
            o
        }
        None if crate::is_unique_violation(&e) => StoreError::Conflict(unique_violation(&e)),
        // A stored value of the wrong type or shape (a typed id with another
        // type's prefix, an unknown status, JSON that does not parse).
        None if matches!(e, sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_)) => {
            StoreError::Corrupt(e.to_string())
        }
        None => StoreError::Database(crate::DbError::new(e)),
    }
}

/// What a unique violation the store did not name itself means: which
/// constraint (PostgreSQL) or which columns (SQLite) already hold the value.
fn unique_violation(e: &sqlx::Error) -> String {
    let sqlx::Error::Database(d) = e else {
        return "already exists".into();
    };
    match d.constraint() {
        Some(c) => format!("already exists (unique constraint {c})"),
        // SQLite: "UNIQUE constraint failed: table.column, …".
        None => match d.message().split_once(": ") {
            Some((_, cols)) => format!("already exists (unique {cols})"),
            None => "already exists".into(),
        },
    }
}

fn classify_database(d: &dyn sqlx::error::DatabaseError) -> Option<StoreError> {
    let code = d.code()?;
    let message = d.message().to_owned();
    if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // SQLite reports extended codes; the primary code is the low byte.
        let primary = code.parse::<i32>().ok()? & 0xff;
        return match primary {
            // SQLITE_FULL: the disk (or a quota) is full.
            13 => {
                refused_write(true);
                Some(StoreError::StorageFull(message))
            }
            // SQLITE_IOERR: a write to the disk failed (on some file
            // systems a full disk shows up as this, not as SQLITE_FULL).
            10 => {
                refused_write(false);
                Some(StoreError::Unavailable(format!(
                    "disk I/O error: {message}"
                )))
            }
            _ => None,
        };
    }
    match code.as_ref() {
        // disk_full
        "53100" => {
            refused_write(true);
            Some(StoreError::StorageFull(message))
        }
        // read_only_sql_transaction: a standby, or a primary demoted.
        "25006" => {
            refused_write(false);
            Some(StoreError::Unavailable(format!("read-only: {message}")))
        }
        // insufficient_resources, out_of_memory, too_many_connections;
        // admin/crash shutdown, cannot_connect_now (starting up).
        "53000" | "53200" | "53300" | "57P01" | "57P02" | "57P03" => {
            Some(StoreError::Unavailable(message))
        }
        // connection_exception and its subclasses.
        c if c.starts_with("08") => Some(StoreError::Unavailable(message)),
        _ => None,
    }
}

/// Why a connection failed, in words, without counting it as an outage
/// error (the monitor's own probes are not requests).
pub(crate) fn reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => describe_io(io),
        other => other.to_string(),
    }
}

/// A connection-level I/O error in words, for logs and start-up messages.
fn describe_io(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".into(),
        K::ConnectionReset => "connection reset".into(),
        K::ConnectionAborted => "connection aborted".into(),
        K::UnexpectedEof | K::BrokenPipe => "connection closed".into(),
        K::TimedOut => "timed out".into(),
        K::NotConnected => "not connected".into(),
        _ => e.to_string(),
    }
}

fn refused_write(for_space: bool) {
    REFUSED_FOR_SPACE.store(for_space, Ordering::Release);
    WRITE_REFUSED_AT.store(now_ms(), Ordering::Release);
}

/// The outage a write refused in the last seconds says the database is
/// in, if any.
fn recently_refused() -> Option<StoreError> {
    let at = WRITE_REFUSED_AT.load(Ordering::Acquire);
    if at == 0 || now_ms() - at >= REFUSED_WRITE_HOLD_MS {
        return None;
    }
    let why = format!("a write was refused {} ms ago", now_ms() - at);
    Some(if REFUSED_FOR_SPACE.load(Ordering::Acquire) {
        StoreError::StorageFull(why)
    } else {
        StoreError::Unavailable(why)
    })
}

/// The breaker and readiness state of one [`crate::Db`].
#[derive(Debug)]
pub(crate) struct Health {
    /// While the breaker is open: since when (milliseconds since the
    /// epoch) and why. A watch, so callers waiting on a connection give up
    /// as soon as it opens.
    open: tokio::sync::watch::Sender<Option<(i64, String)>>,
    /// Wakes the monitor at once when a caller sees the database fail.
    pub(crate) failed: Notify,
    /// When a write transaction last committed (milliseconds since the epoch).
    last_commit: AtomicI64,
    /// The last probe's answer and when it was taken; the lock also makes
    /// concurrent readiness checks share one probe.
    probe: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            open: tokio::sync::watch::Sender::new(None),
            failed: Notify::new(),
            last_commit: AtomicI64::new(0),
            probe: tokio::sync::Mutex::new(None),
        }
    }
}

impl Health {
    /// Opens the breaker: the database is unreachable.
    pub(crate) fn mark_down(&self, reason: &str) {
        let opened = self.open.send_if_modified(|state| match state {
            Some((_, why)) => {
                // Already open: the latest reason, no wake-up.
                reason.clone_into(why);
                false
            }
            None => {
                *state = Some((now_ms(), reason.to_owned()));
                true
            }
        });
        if opened {
            tracing::warn!(
                reason,
                "database unreachable; answering 503 until it is back"
            );
        }
        self.failed.notify_one();
    }

    /// Closes the breaker: a probe connected.
    pub(crate) fn mark_up(&self) {
        let mut since = None;
        self.open.send_if_modified(|state| {
            since = state.take().map(|(at, _)| at);
            since.is_some()
        });
        if let Some(since) = since {
            tracing::info!(down_ms = now_ms() - since, "database reachable again");
        }
    }

    /// Follows whether the breaker is open.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<(i64, String)>> {
        self.open.subscribe()
    }

    /// Whether the breaker is open.
    pub(crate) fn is_down(&self) -> bool {
        self.open.borrow().is_some()
    }

    /// Fails fast while the breaker is open.
    pub(crate) fn check(&self) -> crate::Result<()> {
        match &*self.open.borrow() {
            Some((_, reason)) => {
                counter!(DB_OUTAGE_ERRORS, "kind" => "unavailable").increment(1);
                Err(StoreError::Unavailable(format!(
                    "database unreachable ({reason})"
                )))
            }
            None => Ok(()),
        }
    }

    /// Records a commit: writes work.
    pub(crate) fn committed(&self) {
        self.last_commit.store(now_ms(), Ordering::Release);
    }

    /// Whether writes work, probing with `probe` at most once a second
    /// unless a commit after the last refused write says so already.
    pub(crate) async fn ready<F>(&self, probe: F) -> crate::Result<()>
    where
        F: std::future::Future<Output = crate::Result<()>>,
    {
        self.check()?;
        if let Some(refused) = recently_refused() {
            return Err(refused);
        }
        let refused = WRITE_REFUSED_AT.load(Ordering::Acquire);
        let commit = self.last_commit.load(Ordering::Acquire);
        if commit > refused && now_ms() - commit < PROBE_EVERY.as_millis() as i64 {
            return Ok(());
        }
        let mut last = self.probe.lock().await;
        if let Some((at, answer)) = last.as_ref()
            && at.elapsed() < PROBE_EVERY
        {
            return answer.clone().map_err(StoreError::Unavailable);
        }
        let answer = match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "a probe write took longer than {} ms",
                PROBE_TIMEOUT.as_millis()
            )),
        };
        *last = Some((Instant::now(), answer.clone()));
        answer.map_err(StoreError::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn connection_failures_are_outages_and_others_are_not() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        match classify(sqlx::Error::Io(refused)) {
            StoreError::Unavailable(m) => assert_eq!(m, "connection refused"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            classify(sqlx::Error::RowNotFound),
            StoreError::Database(_)
        ));
        assert!(StoreError::Unavailable("x".into()).outage().is_some());
        assert!(StoreError::not_found("site").outage().is_none());
    }

    #[test]
    fn the_breaker_fails_fast_until_a_probe_connects() {
        let h = Health::default();
        assert!(h.check().is_ok());
        h.mark_down("connection refused");
        match h.check() {
            Err(StoreError::Unavailable(m)) => assert!(m.contains("connection refused"), "{m}"),
            other => panic!("{other:?}"),
        }
        h.mark_up();
        assert!(h.check().is_ok());
    }

    #[tokio::test]
    async fn readiness_probes_at_most_once_a_second() {
        let h = Health::default();
        let probes = AtomicUsize::new(0);
        let probe = || async {
            probes.fetch_add(1, Ordering::Relaxed);
            Err(StoreError::Unavailable("read-only".into()))
        };
        assert!(h.ready(probe()).await.is_err());
        assert!(h.ready(probe()).await.is_err());
        assert_eq!(probes.load(Ordering::Relaxed), 1, "the answer is reused");
        // A commit says writes work, without a probe.
        h.committed();
        assert!(h.ready(probe()).await.is_ok());
        assert_eq!(probes.load(Ordering::Relaxed), 1);
    }
}

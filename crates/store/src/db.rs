//! Connecting to SQLite or PostgreSQL, and the transaction type.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};
use tokio::sync::Notify;

use crate::health::Health;
use crate::{Result, StoreError};

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend's name, for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// How hard SQLite works to keep a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL` in WAL mode: survives a process crash; a power loss
    /// may lose the last commits (never corrupts).
    Normal,
    /// `synchronous=FULL`: survives power loss too, at one fsync per commit.
    Full,
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "normal" => Ok(Self::Normal),
            "full" => Ok(Self::Full),
            _ => Err(format!("durability must be `normal` or `full`, not {s:?}")),
        }
    }
}

#[derive(Debug)]
enum Pools {
    /// SQLite allows one writer at a time; one writer connection makes that
    /// queue explicit (no `SQLITE_BUSY` upgrades) while readers run in parallel.
    Sqlite {
        writer: SqlitePool,
        reader: SqlitePool,
    },
    Postgres(PgPool),
}

#[derive(Debug)]
struct Inner {
    pools: Pools,
    /// Woken after every commit that created due work, so an idle worker in
    /// this process starts it at once instead of at its next poll.
    work_available: Notify,
    /// Asks the PostgreSQL notifier to wake the other nodes' workers.
    wake_others: Arc<Notify>,
    /// Bumped whenever configuration (a site or a destination) may have
    /// changed (a commit here, or a notification from another node), so
    /// caches of it can tell.
    config_generation: AtomicU64,
    /// The breaker and readiness state.
    health: Arc<Health>,
}

/// A handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db(Arc<Inner>);

/// PostgreSQL connections of a task's own: see [`Db::own_pool`].
#[derive(Debug, Clone)]
pub struct OwnPool(PgPool);

impl OwnPool {
    /// Closes its connections.
    pub async fn close(&self) {
        self.0.close().await;
    }
}

/// The reading side of a [`Db`], for [`on_db!`](crate::on_db): the
/// store's own modules and package store modules ([`crate::package`])
/// name it only through that macro.
#[doc(hidden)]
pub enum Reader<'a> {
    Sqlite(&'a SqlitePool),
    Postgres(&'a PgPool),
}

/// The PostgreSQL channel that wakes workers on other nodes.
pub const WAKE_CHANNEL: &str = "fleetprompt_directives";

/// The PostgreSQL channel that tells other nodes a site or destination
/// changed.
pub const CONFIG_CHANNEL: &str = "fleetprompt_config";

impl Db {
    /// Connects to `url`: `sqlite://path` (created if missing) or `postgres://…`.
    pub async fn connect(url: &str, durability: Durability) -> Result<Self> {
        let pools = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?;
            // One plain connection first: the pool retries a refused
            // connection until its acquire timeout and then says only
            // "timed out", while a caller retrying at start-up needs the
            // cause (connection refused, no such database, bad password)
            // and at once.
            tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&opts))
                .await
                .map_err(|_| StoreError::Unavailable("timed out connecting".into()))??
                .close()
                .await?;
            let pool = PgPoolOptions::new()
                // Room for the completers (4), the claim loop, LISTEN and
                // the HTTP handlers' reads at once (the message batchers
                // have connections of their own: `own_pool`).
                .max_connections(32)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            Pools::Postgres(pool)
        } else {
            let path = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .unwrap_or(url);
            if let Some(dir) = Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Database(crate::DbError::new(sqlx::Error::Configuration(
                        format!("cannot create {}: {e}", dir.display()).into(),
                    )))
                })?;
            }
            let opts = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(match durability {
                    Durability::Normal => SqliteSynchronous::Normal,
                    Durability::Full => SqliteSynchronous::Full,
                })
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                .pragma("cache_size", "-16000")
                .pragma("temp_store", "memory");
            // The writer never checkpoints: its checkpoints (with their
            // fsyncs) would stall every transaction queued behind it. A
            // separate connection checkpoints in the background instead.
            // No ping before each transaction: a connection to a local file
            // does not go stale, and the ping is one more hand-off to the
            // connection's thread per transaction.
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .test_before_acquire(false)
                // When a write fails because the disk is full, SQLite may
                // roll the transaction back by itself; sqlx's ROLLBACK then
                // fails and leaves the connection's transaction depth at 1,
                // so every later BEGIN on it fails ("non-zero transaction
                // depth") until restart. A connection still in a
                // transaction when it is taken for the next write is closed
                // instead, and the pool opens a fresh one. Checked on
                // acquire, not on release: the pool pings a connection
                // before it takes it back, and that ping runs on the
                // connection's thread after a dropped transaction's queued
                // ROLLBACK, so the depth is final by then (and reading it
                // costs no hand-off to the thread).
                .before_acquire(|conn, _| {
                    Box::pin(async move {
                        if conn.is_in_transaction() {
                            tracing::warn!(
                                "the SQLite writer was left inside a transaction (SQLite rolled it back by itself); replacing the connection"
                            );
                            return Ok(false);
                        }
                        Ok(true)
                    })
                })
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(opts.clone().pragma("wal_autocheckpoint", "0"))
                .await?;
            let checkpointer = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts.clone())
                .await?;
            tokio::spawn(checkpoint_loop(checkpointer, writer.clone()));
            let reader = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(opts.read_only(true))
                .await?;
            Pools::Sqlite { writer, reader }
        };
        let wake_others = Arc::new(Notify::new());
        let health = Arc::new(Health::default());
        if let Pools::Postgres(pool) = &pools {
            tokio::spawn(notify_loop(pool.clone(), wake_others.clone()));
            tokio::spawn(monitor_loop(pool.clone(), health.clone()));
        }
        Ok(Self(Arc::new(Inner {
            pools,
            work_available: Notify::new(),
            wake_others,
            config_generation: AtomicU64::new(0),
            health,
        })))
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self.0.pools {
            Pools::Sqlite { .. } => Backend::Sqlite,
            Pools::Postgres(_) => Backend::Postgres,
        }
    }

    /// The PostgreSQL pool, when this is PostgreSQL (for LISTEN).
    pub(crate) fn pg_pool(&self) -> Option<&PgPool> {
        match &self.0.pools {
            Pools::Postgres(p) => Some(p),
            Pools::Sqlite { .. } => None,
        }
    }

    /// The pool reads go to; fails at once while the database is known
    /// to be unreachable, instead of waiting out the pool's timeout.
    #[doc(hidden)]
    pub fn reader(&self) -> Result<Reader<'_>> {
        self.0.health.check()?;
        Ok(match &self.0.pools {
            Pools::Sqlite { reader, .. } => Reader::Sqlite(reader),
            Pools::Postgres(p) => Reader::Postgres(p),
        })
    }

    /// A PostgreSQL pool of up to `size` connections of its own, for a
    /// task that runs on a runtime of its own: a connection's socket
    /// belongs to the runtime that opened it, and this pool opens its
    /// connections lazily, on the runtime of the first task to use them.
    /// `None` on SQLite, whose one writer is a thread already.
    pub fn own_pool(&self, size: u32) -> Option<OwnPool> {
        let Pools::Postgres(shared) = &self.0.pools else {
            return None;
        };
        let pool = PgPoolOptions::new()
            .max_connections(size)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with((*shared.connect_options()).clone());
        Some(OwnPool(pool))
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx> {
        self.begin_on(None).await
    }

    /// Starts a write transaction, on `own`'s connections when given.
    pub async fn begin_on(&self, own: Option<&OwnPool>) -> Result<Tx> {
        self.0.health.check()?;
        let inner = match (&self.0.pools, own) {
            (Pools::Postgres(_), Some(OwnPool(p))) => TxInner::Postgres(self.pg_begin(p).await?),
            (Pools::Sqlite { writer, .. }, _) => {
                // IMMEDIATE takes the write lock at once, waiting (busy
                // timeout) if another connection holds it; a deferred
                // transaction that read first would instead fail with
                // "database is locked" when its first write found it taken.
                TxInner::Sqlite(writer.begin_with("BEGIN IMMEDIATE").await?)
            }
            (Pools::Postgres(p), None) => TxInner::Postgres(self.pg_begin(p).await?),
        };
        Ok(Tx {
            inner,
            db: self.clone(),
            wake: false,
            config: false,
        })
    }

    /// Resolves when a commit in this process (or, with PostgreSQL, a
    /// notification from another node) says due work may exist.
    pub async fn work_available(&self) {
        self.0.work_available.notified().await
    }

    /// Wakes a worker waiting in [`Db::work_available`].
    pub fn wake_workers(&self) {
        self.0.work_available.notify_one();
    }

    /// A number that changes whenever a site or destination may have
    /// changed: a cached record read under an older number is stale.
    pub fn config_generation(&self) -> u64 {
        self.0.config_generation.load(Ordering::Acquire)
    }

    /// Marks every cached site and destination stale: another node changed
    /// one, or the notifications that would say so were interrupted.
    pub fn config_changed(&self) {
        self.0.config_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Starts a PostgreSQL transaction on `pool`. A wait for a connection
    /// ends as soon as the breaker opens, instead of at the pool's acquire
    /// timeout; and when a transaction cannot start for want of a
    /// connection, the breaker opens (the monitor, woken, closes it again
    /// if its own probe connects), so the requests behind this one fail at
    /// once.
    async fn pg_begin(&self, pool: &PgPool) -> Result<Transaction<'static, Postgres>> {
        let health = &self.0.health;
        let mut opened = health.subscribe();
        let begun = tokio::select! {
            begun = pool.begin() => Some(begun),
            // The guard `wait_for` returns is dropped inside, before
            // `check` reads the breaker again.
            _ = async { drop(opened.wait_for(Option::is_some).await) } => None,
        };
        let Some(begun) = begun else {
            return Err(health
                .check()
                .err()
                .unwrap_or_else(|| StoreError::Unavailable("database unreachable".into())));
        };
        begun.map_err(|e| {
            let lost = matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_));
            let e = StoreError::from(e);
            if lost && let StoreError::Unavailable(reason) = &e {
                health.mark_down(reason);
            }
            e
        })
    }

    /// Whether the database takes writes now, answered within a second:
    /// not while it is known to be unreachable, nor within seconds of a
    /// write refused for want of space (or on a read-only server), nor when
    /// a probe write fails. The probe (SQLite: rewriting the header's user
    /// version, one WAL frame; PostgreSQL: assigning a transaction id, one
    /// WAL commit record, on a server not read-only) runs at most once a
    /// second, and not at all while real commits succeed.
    pub async fn ready(&self) -> Result<()> {
        let probe = async {
            match &self.0.pools {
                Pools::Sqlite { .. } => {
                    let mut tx = self.begin().await?;
                    if let TxInner::Sqlite(t) = &mut tx.inner {
                        let v: i64 = sqlx::query_scalar("PRAGMA user_version")
                            .fetch_one(&mut **t)
                            .await?;
                        sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA user_version = {v}")))
                            .execute(&mut **t)
                            .await?;
                    }
                    tx.commit().await
                }
                Pools::Postgres(p) => {
                    let (_, read_only): (String, String) = sqlx::query_as(
                        "SELECT txid_current()::text, current_setting('transaction_read_only')",
                    )
                    .fetch_one(p)
                    .await?;
                    if read_only == "on" {
                        return Err(StoreError::Unavailable("the server is read-only".into()));
                    }
                    Ok(())
                }
            }
        };
        self.0.health.ready(probe).await
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        crate::on_db!(self, c => {
            sqlx::query("SELECT 1").execute(c).await?;
        });
        Ok(())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match &self.0.pools {
            Pools::Sqlite { writer, reader } => {
                writer.close().await;
                reader.close().await;
            }
            Pools::Postgres(p) => p.close().await,
        }
    }
}

/// Copies the WAL into the database every 50 ms, off the writer's path,
/// until the writer pool closes. `PASSIVE` never blocks the writer or
/// readers; frequent passes keep each one short.
async fn checkpoint_loop(checkpointer: SqlitePool, writer: SqlitePool) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Said once when checkpoints start failing (a full disk fails every
    // one, twenty a second) and once when they work again.
    let mut failing = false;
    while !writer.is_closed() {
        tick.tick().await;
        match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&checkpointer)
            .await
        {
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "WAL checkpoint failed; retrying every 50 ms");
            }
            Ok(_) if failing => {
                failing = false;
                tracing::info!("WAL checkpoints work again");
            }
            _ => {}
        }
    }
    // A last, complete checkpoint so the WAL does not outlive the process.
    let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&checkpointer)
        .await;
    checkpointer.close().await;
}

/// How long a connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the monitor's connect or `SELECT 1` may take before the
/// breaker opens. A refused or reset connection fails at once whatever
/// this is; it only bounds a server that does not answer at all, and is
/// generous so that a server slowed by load does not trip the breaker.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(2);

/// Watches PostgreSQL on a connection of its own, outside the pool (whose
/// every slot may be busy under load, which is no outage): `SELECT 1` every
/// second, every 250 ms while the breaker is open or right after a caller
/// saw a failure. A failed probe opens the breaker; the first one that
/// connects again closes it. Ends when the pool closes.
async fn monitor_loop(pool: PgPool, health: Arc<Health>) {
    let opts = (*pool.connect_options()).clone();
    let mut conn: Option<PgConnection> = None;
    while !pool.is_closed() {
        match probe(&mut conn, &opts).await {
            Ok(()) => health.mark_up(),
            Err(reason) => {
                conn = None;
                health.mark_down(&reason);
            }
        }
        let wait = if health.is_down() {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = health.failed.notified() => {}
        }
    }
    if let Some(c) = conn {
        let _ = c.close().await;
    }
}

/// One `SELECT 1` on the monitor's connection, connecting first if needed.
async fn probe(
    conn: &mut Option<PgConnection>,
    opts: &PgConnectOptions,
) -> std::result::Result<(), String> {
    if conn.is_none() {
        let c = tokio::time::timeout(MONITOR_TIMEOUT, PgConnection::connect_with(opts))
            .await
            .map_err(|_| "timed out connecting".to_owned())?
            .map_err(|e| crate::health::reason(&e))?;
        *conn = Some(c);
    }
    let c = conn.as_mut().expect("connected above");
    tokio::time::timeout(MONITOR_TIMEOUT, sqlx::query("SELECT 1").execute(&mut *c))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| crate::health::reason(&e))?;
    Ok(())
}

/// Wakes the other nodes' workers (`NOTIFY` on [`WAKE_CHANNEL`]) after
/// commits that created due work, one notification per burst of commits.
///
/// The notification is sent after the commit, in a transaction of its own,
/// rather than inside the committing transaction: PostgreSQL serializes the
/// commits of all transactions that issued `NOTIFY` on one lock held through
/// their WAL flush, which under load queued every ingest and completion
/// commit behind the others (`Lock:object` waits on `COMMIT`). A node that
/// dies between a commit and its notification leaves the work to the other
/// nodes' next poll.
async fn notify_loop(pool: PgPool, wake: Arc<Notify>) {
    while !pool.is_closed() {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
        }
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(WAKE_CHANNEL)
            .execute(&pool)
            .await
            && !pool.is_closed()
        {
            tracing::warn!(error = %e, "waking other nodes failed; they will poll");
        }
    }
}

/// A transaction's connection, for [`on_tx!`](crate::on_tx): named only
/// through that macro (see [`crate::package`]).
#[doc(hidden)]
pub enum TxInner {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// A write transaction. Dropping it without [`Tx::commit`] rolls back.
pub struct Tx {
    inner: TxInner,
    db: Db,
    /// Set by any write that creates due work, so commit wakes workers.
    wake: bool,
    /// Set by any write to a site or destination, so commit marks cached
    /// ones stale.
    config: bool,
}

impl Tx {
    #[doc(hidden)]
    pub fn inner_mut(&mut self) -> &mut TxInner {
        &mut self.inner
    }

    /// Which backend this transaction runs on.
    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// Marks that this transaction created work that is due now: once it
    /// commits, this process's worker and (PostgreSQL) the other nodes'
    /// workers are woken.
    pub(crate) fn mark_due_work(&mut self) {
        self.wake = true;
    }

    /// Marks that this transaction changed cached configuration (a
    /// destination, or a package's record such as a site): once it commits,
    /// caches of it here and (PostgreSQL) on the other nodes are stale.
    pub async fn mark_config_changed(&mut self) -> Result<()> {
        if !self.config {
            self.config = true;
            if let TxInner::Postgres(t) = &mut self.inner {
                sqlx::query("SELECT pg_notify($1, '')")
                    .bind(CONFIG_CHANNEL)
                    .execute(&mut **t)
                    .await?;
            }
        }
        Ok(())
    }

    /// Commits, then wakes this process's worker if due work was created.
    pub async fn commit(self) -> Result<()> {
        match self.inner {
            TxInner::Sqlite(t) => t.commit().await?,
            TxInner::Postgres(t) => t.commit().await?,
        }
        self.db.0.health.committed();
        if self.config {
            self.db.config_changed();
        }
        if self.wake {
            self.db.wake_workers();
            self.db.0.wake_others.notify_one();
        }
        Ok(())
    }
}

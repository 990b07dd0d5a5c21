//! Black-box system tests: they start the real `fleetprompt` binary on port 0
//! against a fresh database and talk to it over HTTP, like a user would.
//!
//! # Layout
//! - [`TestApp`]: one `fleetprompt serve` process (or several sharing a
//!   database), with request helpers and a tenant per test.
//! - [`TestDb`]: a fresh SQLite file or a fresh PostgreSQL database.
//! - [`Recorder`]: a real HTTP server on loopback that records what it
//!   receives and answers with scripted statuses, standing in for webhook
//!   receivers.
//! - [`SmtpSink`]: a real SMTP server on loopback that records the emails
//!   it accepts and answers `DATA` with scripted codes, standing in for
//!   Proton Mail Bridge (with [`SmtpSink::start_bridge`]: STARTTLS on a
//!   self-signed `CA:TRUE` certificate, and AUTH, like Bridge); [`Edge`] runs
//!   the real `fleetprompt-edge` against it.
//! - [`TcpProxy`]: a loopback TCP proxy a test can cut (connections refused
//!   and cut) and restore, onto a restarted server too: a real PostgreSQL
//!   or FleetPrompt server unreachable without stopping it.
//! - [`both_backends!`]: runs one test body on SQLite and on PostgreSQL.
//! - [`lifecycle`]: PATCH/DELETE requests, `If-Match`, and the error shape,
//!   for the tests of editing and deleting settings.
//! - [`webchat`]: the website chat steps tests share (a server on rule
//!   files, a site, a visitor, the conversation's timeline).
//!
//! PostgreSQL is expected at `FLEETPROMPT_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); its tests fail, not skip, when
//! it is not there.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub mod access;
pub mod console;
pub mod lifecycle;
pub mod packages;
pub mod rules_api;
pub mod webchat;

/// The database backends a test can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file in a temp directory.
    Sqlite,
    /// A fresh database on the local PostgreSQL server.
    Postgres,
}

/// Runs `async fn $name(backend: Backend)` once per backend.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Postgres).await
                }
            )*
        }
    };
}

/// What the tests allow outbound requests to reach: their stand-in servers
/// listen on loopback, which the outbound policy refuses by default.
pub const ALLOW_LOOPBACK: &str = "127.0.0.0/8,::1/128";

/// A fixed master key, so several processes on one database agree.
pub const MASTER_KEY: &str = "9f1c2d3e4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";

/// The `fleetprompt` binary built for this test run.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("FLEETPROMPT_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-exe> -> target/<profile>/fleetprompt
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let bin = dir.join("fleetprompt");
    assert!(
        bin.exists(),
        "{} does not exist: run the suite with `cargo test --workspace` so the binary is built",
        bin.display()
    );
    bin
}

/// The `fleetprompt-edge` binary built for this test run.
pub fn edge_binary() -> PathBuf {
    if let Ok(p) = std::env::var("FLEETPROMPT_EDGE_BIN") {
        return PathBuf::from(p);
    }
    let bin = binary().with_file_name("fleetprompt-edge");
    assert!(
        bin.exists(),
        "{} does not exist: run `cargo build --workspace` (or the suite with `cargo test --workspace`) so the binary is built",
        bin.display()
    );
    bin
}

/// A fresh database for one test.
pub struct TestDb {
    /// The URL to give `--database-url`.
    pub url: String,
    /// The temp directory (data dir, SQLite file, logs).
    pub dir: PathBuf,
    /// PostgreSQL: the database to drop at the end.
    pg_name: Option<String>,
}

fn pg_admin_url() -> String {
    std::env::var("FLEETPROMPT_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "fleetprompt-test-{tag}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

impl TestDb {
    /// Creates a fresh database on `backend`.
    pub async fn new(backend: Backend) -> anyhow::Result<Self> {
        let dir = temp_dir(match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "pg",
        });
        match backend {
            Backend::Sqlite => Ok(Self {
                url: format!("sqlite://{}", dir.join("fleetprompt.db").display()),
                dir,
                pg_name: None,
            }),
            Backend::Postgres => {
                let admin = pg_admin_url();
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .with_context(|| format!("PostgreSQL is required for this test at {admin} (set FLEETPROMPT_TEST_PG_URL)"))?;
                let name = format!("fp_test_{}", uuid::Uuid::now_v7().simple());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await?;
                let base = admin
                    .rsplit_once('/')
                    .map(|(b, _)| b)
                    .unwrap_or(&admin)
                    .to_owned();
                Ok(Self {
                    url: format!("{base}/{name}"),
                    dir,
                    pg_name: Some(name),
                })
            }
        }
    }

    /// Counts rows of a query returning one integer.
    pub async fn scalar(&self, sql: &str) -> anyhow::Result<i64> {
        if self.pg_name.is_some() {
            let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&self.url).await?;
            Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(&mut c)
                .await?)
        } else {
            let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&self.url).await?;
            Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(&mut c)
                .await?)
        }
    }

    /// Runs a statement that returns no rows (e.g. to damage a stored
    /// value on purpose); returns how many rows it changed.
    pub async fn execute(&self, sql: &str) -> anyhow::Result<u64> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        Ok(if self.pg_name.is_some() {
            let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&self.url).await?;
            sqlx::query(sql).execute(&mut c).await?.rows_affected()
        } else {
            let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&self.url).await?;
            sqlx::query(sql).execute(&mut c).await?.rows_affected()
        })
    }

    /// Runs a query returning one text column; returns its values.
    pub async fn strings(&self, sql: &str) -> anyhow::Result<Vec<String>> {
        if self.pg_name.is_some() {
            let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&self.url).await?;
            Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_all(&mut c)
                .await?)
        } else {
            let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&self.url).await?;
            Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_all(&mut c)
                .await?)
        }
    }

    /// Polls [`TestDb::scalar`] every 100 ms until `done` holds for its
    /// value, which it returns; panics with `what` after `timeout`.
    pub async fn wait_scalar(
        &self,
        sql: &str,
        done: impl Fn(i64) -> bool,
        timeout: Duration,
        what: &str,
    ) -> i64 {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.scalar(sql).await.unwrap();
            if done(n) {
                return n;
            }
            assert!(Instant::now() < deadline, "{what} (last value {n})");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Best effort, off the async runtime: a leftover database only costs disk.
            let admin = pg_admin_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async move {
                    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                        .await
                        .ok()?;
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut c)
                    .await
                    .ok()
                })
            })
            .join();
        }
        if std::env::var_os("FLEETPROMPT_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One running `fleetprompt serve` process.
pub struct Server {
    /// Its base URL.
    pub url: String,
    child: Child,
    /// Where its stderr (the logs) goes.
    pub log_path: PathBuf,
}

impl Server {
    /// Starts `fleetprompt serve` on `db` with extra flags, allowed to reach
    /// loopback ([`ALLOW_LOOPBACK`]) so it can call the stand-in servers,
    /// and waits until it is ready (`/readyz` 200): it listens before its
    /// database is connected and migrated.
    pub async fn start(db: &TestDb, name: &str, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_on(db, &db.url, name, extra).await
    }

    /// [`Server::start`] with the database at `url` (e.g. through a
    /// [`TcpProxy`]) instead of `db.url`.
    pub async fn start_on(
        db: &TestDb,
        url: &str,
        name: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut server = Self::start_unready(db, url, name, extra).await?;
        server.wait_ready(Duration::from_secs(60)).await?;
        Ok(server)
    }

    /// Polls `/readyz` until it answers 200; fails if the process exits
    /// first or `timeout` passes.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let http = http_client();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", self.url)).send().await
                && r.status() == reqwest::StatusCode::OK
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "fleetprompt serve exited with {status} before it was ready; see {}",
                    self.log_path.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "fleetprompt serve was not ready within {timeout:?}; see {}",
                    self.log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Starts `fleetprompt serve` with the default outbound policy (no
    /// internal address, loopback included, is reachable), and waits until
    /// it is ready.
    pub async fn start_guarded(db: &TestDb, name: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let mut server = Self::start_with_outbound(db, &db.url, name, extra, None).await?;
        server.wait_ready(Duration::from_secs(60)).await?;
        Ok(server)
    }

    /// Starts `fleetprompt serve` on the database at `url` and returns as
    /// soon as it listens, ready or not.
    pub async fn start_unready(
        db: &TestDb,
        url: &str,
        name: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_with_outbound(db, url, name, extra, Some(ALLOW_LOOPBACK)).await
    }

    async fn start_with_outbound(
        db: &TestDb,
        url: &str,
        name: &str,
        extra: &[&str],
        allow_outbound: Option<&str>,
    ) -> anyhow::Result<Self> {
        let log_path = db.dir.join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = Command::new(binary());
        match allow_outbound {
            Some(cidrs) => cmd.env("FLEETPROMPT_ALLOW_OUTBOUND", cidrs),
            None => cmd.env_remove("FLEETPROMPT_ALLOW_OUTBOUND"),
        };
        let mut child = cmd
            .args([
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--poll-ms",
                "50",
                "--reap-ms",
                "500",
            ])
            .args(extra)
            .arg("--data-dir")
            .arg(&db.dir)
            .arg("--database-url")
            .arg(url)
            .env("FLEETPROMPT_MASTER_KEY", MASTER_KEY)
            .env("RUST_LOG", "info,fleetprompt_server=debug")
            .env("FLEETPROMPT_LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("starting fleetprompt serve")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("fleetprompt serve did not print its URL within 30 s")??
            .with_context(|| format!("fleetprompt serve exited; see {}", log_path.display()))?;
        let url = line
            .strip_prefix("FleetPrompt listening on ")
            .with_context(|| format!("unexpected first line: {line}"))?
            .to_owned();
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            url,
            child,
            log_path,
        })
    }

    /// Its process id, for reading `/proc/<pid>/status`.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL: no graceful shutdown, no flushing.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGTERM, then waits for a graceful exit.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??;
        if !status.success() {
            bail!(
                "fleetprompt serve exited with {status}; its log:\n{}",
                self.logs()
            );
        }
        Ok(())
    }

    /// Everything it has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits for the process to exit by itself.
    pub async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        Ok(tokio::time::timeout(timeout, self.child.wait()).await??)
    }
}

/// A TCP proxy on loopback in front of a real server (PostgreSQL), which
/// a test can cut: while cut, connecting is refused (nothing listens on
/// its port) and every connection through it is closed; restored, it
/// listens on the same port again.
#[derive(Clone)]
pub struct TcpProxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    open: Arc<tokio::sync::watch::Sender<bool>>,
    target: Arc<Mutex<std::net::SocketAddr>>,
}

impl TcpProxy {
    /// Starts a proxy to `target` (`host:port`), open.
    pub async fn start(target: &str) -> anyhow::Result<Self> {
        let target: std::net::SocketAddr = target.parse()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (open, rx) = tokio::sync::watch::channel(true);
        let target = Arc::new(Mutex::new(target));
        tokio::spawn(proxy_loop(Some(listener), port, target.clone(), rx));
        Ok(Self {
            port,
            open: Arc::new(open),
            target,
        })
    }

    /// Starts a proxy in front of the HTTP server at `url`
    /// (`http://host:port`).
    pub async fn in_front_of_http(url: &str) -> anyhow::Result<Self> {
        Self::start(http_authority(url)).await
    }

    /// Its URL, for HTTP clients.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Points new connections at the HTTP server at `url` (a restarted
    /// server on another port).
    pub fn retarget(&self, url: &str) {
        *self.target.lock().expect("proxy lock") =
            http_authority(url).parse().expect("server address");
    }

    /// Starts a proxy to the server of the database URL `url`.
    pub async fn in_front_of(url: &str) -> anyhow::Result<Self> {
        let u = reqwest::Url::parse(url)?;
        let host = match u.host_str() {
            Some("localhost") | None => "127.0.0.1",
            Some(h) => h,
        };
        Self::start(&format!("{host}:{}", u.port().unwrap_or(5432))).await
    }

    /// A PostgreSQL URL like `url` but through this proxy.
    pub fn url_for(&self, url: &str) -> String {
        let mut u = reqwest::Url::parse(url).expect("database URL");
        u.set_host(Some("127.0.0.1")).expect("host");
        u.set_port(Some(self.port)).expect("port");
        u.to_string()
    }

    /// Cuts the proxy: new connections are refused, open ones closed.
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Restores the proxy: it listens again.
    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}

fn http_authority(url: &str) -> &str {
    url.trim_start_matches("http://").trim_end_matches('/')
}

async fn proxy_loop(
    mut listener: Option<tokio::net::TcpListener>,
    port: u16,
    target: Arc<Mutex<std::net::SocketAddr>>,
    mut open: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match listener.take() {
            Some(l) => tokio::select! {
                accepted = l.accept() => {
                    if let Ok((conn, _)) = accepted {
                        let to = *target.lock().expect("proxy lock");
                        tokio::spawn(proxy_pipe(conn, to, open.clone()));
                    }
                    listener = Some(l);
                }
                changed = open.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // Cut: the listener is dropped, so connecting is refused.
                    if *open.borrow() {
                        listener = Some(l);
                    }
                }
            },
            None => {
                if open.changed().await.is_err() {
                    return;
                }
                if *open.borrow() {
                    // The port was ours a moment ago; SO_REUSEADDR (set by
                    // tokio on Unix) lets it be bound again at once.
                    for _ in 0..100 {
                        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                            Ok(l) => {
                                listener = Some(l);
                                break;
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                        }
                    }
                }
            }
        }
    }
}

async fn proxy_pipe(
    mut conn: tokio::net::TcpStream,
    target: std::net::SocketAddr,
    mut open: tokio::sync::watch::Receiver<bool>,
) {
    let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream) => {}
        _ = open.wait_for(|open| !*open) => {}
    }
}

/// Runs `fleetprompt` with arguments against `db`; returns stdout.
pub async fn cli(db: &TestDb, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(binary())
        .args(args)
        .arg("--data-dir")
        .arg(&db.dir)
        .arg("--database-url")
        .arg(&db.url)
        .env("FLEETPROMPT_MASTER_KEY", MASTER_KEY)
        .env("FLEETPROMPT_ALLOW_OUTBOUND", ALLOW_LOOPBACK)
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "fleetprompt {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// A tenant and its admin token.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// Its id.
    pub id: String,
    /// Its slug.
    pub slug: String,
    /// Its admin token.
    pub token: String,
}

/// Creates a tenant with the CLI, as an operator would.
pub async fn create_tenant(db: &TestDb, slug: &str) -> anyhow::Result<Tenant> {
    let out = cli(db, &["tenant", "create", slug, "--json"]).await?;
    let v: Value = serde_json::from_str(out.trim())?;
    Ok(Tenant {
        id: v["tenant_id"].as_str().context("tenant_id")?.to_owned(),
        slug: v["slug"].as_str().context("slug")?.to_owned(),
        token: v["admin_token"].as_str().context("admin_token")?.to_owned(),
    })
}

/// A database, a tenant, and a running server: the usual start of a test.
pub struct TestApp {
    /// The database.
    pub db: TestDb,
    /// The server.
    pub server: Server,
    /// The tenant the helpers act as.
    pub tenant: Tenant,
    /// An HTTP client.
    pub http: reqwest::Client,
}

/// The HTTP client tests use.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

impl TestApp {
    /// Fresh database, tenant `acme`, one server.
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, &[]).await
    }

    /// Same, with extra `serve` flags.
    pub async fn spawn_with(backend: Backend, extra: &[&str]) -> Self {
        Self::spawn_inner(backend, extra, true).await
    }

    /// Fresh database, tenant `acme`, one server with the default outbound
    /// policy (loopback not reachable), for tests of that policy.
    pub async fn spawn_guarded(backend: Backend, extra: &[&str]) -> Self {
        Self::spawn_inner(backend, extra, false).await
    }

    async fn spawn_inner(backend: Backend, extra: &[&str], allow_loopback: bool) -> Self {
        let db = TestDb::new(backend).await.expect("test database");
        let tenant = create_tenant(&db, "acme").await.expect("tenant");
        let server = if allow_loopback {
            Server::start(&db, "server", extra).await
        } else {
            Server::start_guarded(&db, "server", extra).await
        }
        .expect("server");
        Self {
            db,
            server,
            tenant,
            http: http_client(),
        }
    }

    /// A request as `tenant`.
    pub async fn request_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.server.url))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = StatusCode::from_u16(resp.status().as_u16()).expect("status");
        let text = resp.text().await.expect("body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    /// The server's Prometheus exposition (`GET /metrics`).
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.server.url))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("/metrics body")
    }

    /// POST as this app's tenant.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request_as(&self.tenant.token, reqwest::Method::POST, path, Some(body))
            .await
    }

    /// GET as this app's tenant.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.request_as(&self.tenant.token, reqwest::Method::GET, path, None)
            .await
    }

    /// Registers an Edge Connector named `name` for the tenant whose admin
    /// token is `token`; returns the answer (its id, and its token shown once).
    pub async fn edge_connector_as(&self, token: &str, name: &str) -> Value {
        let (s, v) = self
            .request_as(
                token,
                reqwest::Method::POST,
                "/admin/v1/edge-connectors",
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    /// Registers a webhook destination pointing at `url`.
    pub async fn webhook(&self, name: &str, url: &str) -> Value {
        let (s, v) = self
            .post(
                "/admin/v1/destinations",
                json!({ "name": name, "kind": "webhook", "url": url }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    /// Polls a directive until its status is one of `statuses`.
    pub async fn wait_for_status(&self, id: &str, statuses: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (s, v) = self.get(&format!("/admin/v1/directives/{id}")).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            if statuses.contains(&v["status"].as_str().unwrap_or("")) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "directive {id} still {} after {timeout:?}: {v}",
                v["status"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One request the recorder received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The path.
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body, parsed as JSON when it is JSON.
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status to answer with.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

impl Reply {
    /// A bare status.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: vec![],
            body: String::new(),
        }
    }
}

#[derive(Default)]
struct RecorderState {
    received: Vec<Received>,
    script: HashMap<String, VecDeque<Reply>>,
    delay: HashMap<String, Duration>,
    /// Per path, how long to wait after taking a request before answering.
    answer_delay: HashMap<String, Duration>,
    /// Successful answers by `(path, pending_post_id)`, with when they were given.
    pending_posts: HashMap<(String, String), (Instant, Reply)>,
    /// Requests answered from `pending_posts` instead of being taken.
    deduplicated: Vec<Received>,
}

/// How long Mattermost remembers a `pending_post_id` (`app/post.go`
/// `PendingPostIDsCacheTTL`).
pub const PENDING_POST_ID_TTL: Duration = Duration::from_secs(30);

/// A real HTTP server on loopback that records requests and answers from a
/// per-path script (200 when the script is empty).
///
/// Like Mattermost's `POST /api/v4/posts`, a JSON body whose
/// `pending_post_id` was answered with a 2xx on the same path within
/// [`PENDING_POST_ID_TTL`] gets that answer again and creates nothing: it
/// is listed by [`Recorder::deduplicated`], not [`Recorder::received`].
#[derive(Clone)]
pub struct Recorder {
    /// Its base URL.
    pub url: String,
    state: Arc<Mutex<RecorderState>>,
}

async fn record(
    State(state): State<Arc<Mutex<RecorderState>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let path = uri.path().to_owned();
    let delay = state
        .lock()
        .expect("recorder lock")
        .delay
        .get(&path)
        .copied();
    if let Some(d) = delay {
        // A slow receiver, answering after the work is "done".
        tokio::time::sleep(d).await;
    }
    let (reply, answer_delay) = {
        let mut s = state.lock().expect("recorder lock");
        let received = Received {
            path: path.clone(),
            headers,
            body: serde_json::from_str(&body).unwrap_or(Value::String(body)),
            at: Instant::now(),
        };
        let pending = received
            .body
            .get("pending_post_id")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .map(|p| (path.clone(), p.to_owned()));
        let seen = pending
            .as_ref()
            .and_then(|k| s.pending_posts.get(k))
            .filter(|(at, _)| at.elapsed() < PENDING_POST_ID_TTL)
            .map(|(_, reply)| reply.clone());
        let reply = if let Some(reply) = seen {
            s.deduplicated.push(received);
            reply
        } else {
            s.received.push(received);
            let reply = s
                .script
                .get_mut(&path)
                .and_then(VecDeque::pop_front)
                .unwrap_or_else(|| Reply {
                    status: 200,
                    headers: vec![],
                    body: "ok".into(),
                });
            if let Some(k) = pending
                && (200..300).contains(&reply.status)
            {
                s.pending_posts.insert(k, (Instant::now(), reply.clone()));
            }
            reply
        };
        (reply, s.answer_delay.get(&path).copied())
    };
    if let Some(d) = answer_delay {
        // Taken (a post created) but answered late: a crash of the caller
        // meanwhile loses the answer, not the post.
        tokio::time::sleep(d).await;
    }
    let mut resp = (
        StatusCode::from_u16(reply.status).expect("status"),
        reply.body,
    )
        .into_response();
    for (k, v) in reply.headers {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            v.parse().expect("header value"),
        );
    }
    resp
}

impl Recorder {
    /// Starts a recorder on 127.0.0.1:0.
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(RecorderState::default()));
        let app = axum::Router::new()
            .fallback(record)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state }
    }

    /// Queues answers for `path`.
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.state
            .lock()
            .expect("recorder lock")
            .script
            .entry(path.to_owned())
            .or_default()
            .extend(replies);
    }

    /// Makes `path` take each request at once (it is recorded, and counts
    /// as a created post) but answer only after `delay`.
    pub fn slow_answer(&self, path: &str, delay: Duration) {
        self.state
            .lock()
            .expect("recorder lock")
            .answer_delay
            .insert(path.to_owned(), delay);
    }

    /// Drops the answers still queued for `path` (it answers 200 again).
    pub fn clear_script(&self, path: &str) {
        self.state
            .lock()
            .expect("recorder lock")
            .script
            .remove(path);
    }

    /// Makes `path` answer only after `delay`.
    pub fn slow(&self, path: &str, delay: Duration) {
        self.state
            .lock()
            .expect("recorder lock")
            .delay
            .insert(path.to_owned(), delay);
    }

    /// Everything received on `path`.
    pub fn received(&self, path: &str) -> Vec<Received> {
        self.state
            .lock()
            .expect("recorder lock")
            .received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Requests on `path` answered as repeats of a `pending_post_id` (see
    /// [`Recorder`]).
    pub fn deduplicated(&self, path: &str) -> Vec<Received> {
        self.state
            .lock()
            .expect("recorder lock")
            .deduplicated
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` has received at least `n` requests.
    pub async fn wait_for(&self, path: &str, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{path} received {} of {n} requests in {timeout:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One email the sink accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The message: headers and body, dot-unstuffed, CRLF line ends.
    pub data: String,
    /// Whether it arrived over TLS (after STARTTLS).
    pub tls: bool,
}

impl Mail {
    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.data
            .split("\r\n")
            .take_while(|l| !l.is_empty())
            .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_owned())
    }
}

impl Mail {
    /// The body, with quoted-printable soft line breaks and `=XX` escapes
    /// decoded (long lines, such as links, arrive wrapped).
    pub fn body_text(&self) -> String {
        let body = self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let joined = body.replace("=\r\n", "");
        let mut out = Vec::new();
        let bytes = joined.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'='
                && i + 2 < bytes.len()
                && let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
            {
                out.push(b);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A hook run when the sink is about to answer `250` to a `DATA`.
type AcceptHook = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct SmtpState {
    accepted: Vec<Mail>,
    /// Every end-of-DATA reply given, in order (0: held unanswered).
    replies: Vec<u16>,
    /// Codes to answer the next `DATA`s with (250 when empty; 0 holds the
    /// reply back until the client goes away, as a crash mid-DATA would
    /// see it).
    script: VecDeque<u16>,
    /// Run before each `250` to `DATA` is written.
    before_accept: Option<AcceptHook>,
}

/// The user name and password [`SmtpSink::start_bridge`] requires.
pub const BRIDGE_LOGIN: (&str, &str) = ("support@acme.example", "bridge-generated-password");

/// A real SMTP server on 127.0.0.1 (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP,
/// QUIT, STARTTLS when started with [`SmtpSink::start_tls`] or
/// [`SmtpSink::start_bridge`], AUTH PLAIN with the latter) that records what
/// it accepts.
#[derive(Clone)]
pub struct SmtpSink {
    /// Its port.
    pub port: u16,
    /// Its self-signed certificate (PEM), when it offers STARTTLS.
    pub cert_pem: Option<String>,
    /// The SHA-256 fingerprint of that certificate's DER, lowercase hex.
    pub cert_sha256: Option<String>,
    /// The login it requires (AUTH PLAIN after STARTTLS), if any.
    pub login: Option<(String, String)>,
    state: Arc<Mutex<SmtpState>>,
}

/// A fresh self-signed certificate for `127.0.0.1` and `localhost`, as a
/// TLS acceptor; `ca` marks it `CA:TRUE` as Proton Mail Bridge's is.
fn self_signed(ca: bool) -> (tokio_rustls::TlsAcceptor, String, Vec<u8>) {
    let signing_key = rcgen::KeyPair::generate().expect("key pair");
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("certificate params");
    if ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    let cert = params
        .self_signed(&signing_key)
        .expect("self-signed certificate");
    let key =
        tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)
    .expect("TLS server config");
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        cert.pem(),
        cert.der().to_vec(),
    )
}

/// SHA-256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl SmtpSink {
    /// Starts a plain sink on 127.0.0.1:0.
    pub async fn start() -> Self {
        Self::start_with(None, None).await
    }

    /// Starts a sink that offers (and for mail, requires) STARTTLS, with a
    /// fresh self-signed certificate for `127.0.0.1` and `localhost` (not a
    /// CA).
    pub async fn start_tls() -> Self {
        Self::start_secured(false, None).await
    }

    /// Starts a Proton Mail Bridge stand-in: STARTTLS required, on a
    /// self-signed certificate marked `CA:TRUE` (Bridge's
    /// `internal/certs/tls.go` sets `IsCA: true`), and AUTH PLAIN with
    /// [`BRIDGE_LOGIN`] required before `MAIL`.
    pub async fn start_bridge() -> Self {
        let login = (BRIDGE_LOGIN.0.to_owned(), BRIDGE_LOGIN.1.to_owned());
        Self::start_secured(true, Some(login)).await
    }

    async fn start_secured(ca: bool, login: Option<(String, String)>) -> Self {
        let (acceptor, pem, der) = self_signed(ca);
        let mut sink = Self::start_with(Some(acceptor), login.clone()).await;
        sink.cert_pem = Some(pem);
        sink.cert_sha256 = Some(sha256_hex(&der));
        sink.login = login;
        sink
    }

    async fn start_with(
        tls: Option<tokio_rustls::TlsAcceptor>,
        login: Option<(String, String)>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(SmtpState::default()));
        let shared = state.clone();
        let login = login.map(Arc::new);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(smtp_session(
                    stream,
                    tls.clone(),
                    login.clone(),
                    shared.clone(),
                ));
            }
        });
        Self {
            port,
            cert_pem: None,
            cert_sha256: None,
            login: None,
            state,
        }
    }

    /// Runs `hook` each time the sink is about to answer `250` to a `DATA`
    /// (e.g. to cut a [`TcpProxy`] so that the report cannot get through).
    pub fn before_accept(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.state.lock().expect("sink lock").before_accept = Some(Arc::new(hook));
    }

    /// Answers the next `DATA`s with these codes (e.g. 451, then 550).
    pub fn script(&self, codes: impl IntoIterator<Item = u16>) {
        self.state.lock().expect("sink lock").script.extend(codes);
    }

    /// Every email accepted so far.
    pub fn accepted(&self) -> Vec<Mail> {
        self.state.lock().expect("sink lock").accepted.clone()
    }

    /// Every end-of-DATA reply code given so far.
    pub fn replies(&self) -> Vec<u16> {
        self.state.lock().expect("sink lock").replies.clone()
    }

    /// Waits until `n` end-of-DATA replies have been given.
    pub async fn wait_for_replies(&self, n: usize, timeout: Duration) -> Vec<u16> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.replies();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the SMTP sink answered {} of {n} DATA commands in {timeout:?}: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

type Session = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A byte stream, plain or TLS: one type, so the session after STARTTLS is
/// the same function (a generic one would nest `TlsStream`s without end).
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// One SMTP conversation. With `tls`, STARTTLS is offered and mail is
/// refused until it is used; after the upgrade the session goes on over
/// TLS. With `login`, AUTH PLAIN is offered after STARTTLS and required
/// before `MAIL`.
fn smtp_session(
    stream: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    login: Option<Arc<(String, String)>>,
    state: Arc<Mutex<SmtpState>>,
) -> Session {
    smtp_conversation(Box::new(stream), tls, login, state, true, false)
}

fn smtp_conversation(
    stream: Box<dyn Io>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    login: Option<Arc<(String, String)>>,
    state: Arc<Mutex<SmtpState>>,
    greet: bool,
    secure: bool,
) -> Session {
    Box::pin(async move {
        use base64::Engine;
        use tokio::io::AsyncWriteExt;
        let (read, mut write) = tokio::io::split(stream);
        let mut lines = BufReader::new(read).lines();
        let mut from = String::new();
        let mut to = Vec::new();
        let mut authenticated = login.is_none();
        if greet && write.write_all(b"220 sink.test ESMTP\r\n").await.is_err() {
            return;
        }
        while let Ok(Some(line)) = lines.next_line().await {
            let upper = line.to_ascii_uppercase();
            let reply: String = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                if tls.is_some() {
                    "250-sink.test\r\n250-8BITMIME\r\n250 STARTTLS\r\n".into()
                } else if login.is_some() {
                    "250-sink.test\r\n250-8BITMIME\r\n250 AUTH PLAIN\r\n".into()
                } else {
                    "250-sink.test\r\n250 8BITMIME\r\n".into()
                }
            } else if upper == "STARTTLS" && tls.is_some() {
                if write
                    .write_all(b"220 2.0.0 ready to start TLS\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                // The client says nothing more before its handshake, so
                // the line reader holds no buffered bytes.
                let read = lines.into_inner().into_inner();
                let acceptor = tls.expect("checked above");
                let Ok(secured) = acceptor.accept(read.unsplit(write)).await else {
                    return;
                };
                return smtp_conversation(Box::new(secured), None, login, state, false, true).await;
            } else if tls.is_some() && !upper.starts_with("QUIT") {
                "530 5.7.0 must issue a STARTTLS command first\r\n".into()
            } else if let Some(rest) = upper.strip_prefix("AUTH PLAIN ") {
                // `\0user\0password`, base64 (RFC 4616), as the initial response.
                let expected = login.as_deref().map(|(u, p)| format!("\0{u}\0{p}"));
                let given = base64::engine::general_purpose::STANDARD
                    .decode(line[line.len() - rest.len()..].trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok());
                if expected.is_some() && given == expected {
                    authenticated = true;
                    "235 2.7.0 authentication succeeded\r\n".into()
                } else {
                    "535 5.7.8 authentication failed\r\n".into()
                }
            } else if !authenticated && !upper.starts_with("QUIT") {
                "530 5.7.0 authentication required\r\n".into()
            } else if let Some(rest) = upper.strip_prefix("MAIL FROM:") {
                from = line[line.len() - rest.len()..].trim().to_owned();
                to.clear();
                "250 OK\r\n".into()
            } else if let Some(rest) = upper.strip_prefix("RCPT TO:") {
                to.push(line[line.len() - rest.len()..].trim().to_owned());
                "250 OK\r\n".into()
            } else if upper == "DATA" {
                if write.write_all(b"354 go ahead\r\n").await.is_err() {
                    return;
                }
                let mut data = String::new();
                loop {
                    match lines.next_line().await {
                        Ok(Some(l)) if l == "." => break,
                        Ok(Some(l)) => {
                            // Dot-stuffing: a leading ".." stands for ".".
                            data.push_str(if l.starts_with("..") { &l[1..] } else { &l });
                            data.push_str("\r\n");
                        }
                        _ => return,
                    }
                }
                let (code, hook) = {
                    let mut s = state.lock().expect("sink lock");
                    let code = s.script.pop_front().unwrap_or(250);
                    s.replies.push(code);
                    (code, s.before_accept.clone())
                };
                if code == 0 {
                    // Held: answer nothing until the client is gone.
                    let _ = lines.next_line().await;
                    return;
                }
                if code == 250 {
                    if let Some(hook) = hook {
                        hook();
                    }
                    state.lock().expect("sink lock").accepted.push(Mail {
                        from: from.clone(),
                        to: to.clone(),
                        data,
                        tls: secure,
                    });
                    "250 2.0.0 queued\r\n".into()
                } else if code < 500 {
                    format!("{code} 4.3.0 try again later\r\n")
                } else {
                    format!("{code} 5.1.1 mailbox unavailable\r\n")
                }
            } else if upper == "QUIT" {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            } else if upper == "RSET" || upper == "NOOP" {
                "250 OK\r\n".into()
            } else {
                "502 command not implemented\r\n".into()
            };
            if write.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    })
}

/// A running `fleetprompt-edge` process.
pub struct Edge {
    child: Child,
    /// Where its logs go.
    pub log_path: PathBuf,
}

/// The flags that point `fleetprompt-edge` at `server_url` and `sink`:
/// STARTTLS when the sink offers it, trusting its certificate through
/// `--smtp-ca-file` (an operator's exported PEM) unless `extra` names a
/// trust flag itself; its login when it has one; the state directory
/// `dir/edge-state`, shared by every connector of a test so that a restart
/// finds the journal.
fn edge_args(
    dir: &Path,
    server_url: &str,
    sink: &SmtpSink,
    extra: &[&str],
) -> anyhow::Result<Vec<String>> {
    let mut args: Vec<String> = [
        "--server-url",
        server_url,
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        &sink.port.to_string(),
        "--from",
        "Acme Support <support@acme.example>",
        "--heartbeat-secs",
        "1",
        "--wait-ms",
        "500",
        "--smtp-timeout-secs",
        "10",
        "--state-dir",
        &dir.join("edge-state").display().to_string(),
        "--smtp-security",
    ]
    .map(str::to_owned)
    .into();
    let names_trust = extra
        .iter()
        .any(|a| *a == "--smtp-ca-file" || *a == "--smtp-cert-sha256");
    match &sink.cert_pem {
        Some(_) if names_trust => args.push("starttls".to_owned()),
        // STARTTLS, trusting the sink's certificate as an operator
        // trusts Proton Mail Bridge's exported one.
        Some(pem) => {
            let ca = dir.join(format!(
                "smtp-ca-{}-{}.pem",
                sink.port,
                uuid::Uuid::now_v7().simple()
            ));
            std::fs::write(&ca, pem)?;
            args.extend(["starttls".to_owned(), "--smtp-ca-file".to_owned()]);
            args.push(ca.display().to_string());
        }
        None => args.push("plain-text-insecure-loopback-only".to_owned()),
    }
    if let Some((user, _)) = &sink.login {
        args.extend(["--smtp-username".to_owned(), user.clone()]);
    }
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    Ok(args)
}

fn edge_command(sink: &SmtpSink, token: &str, args: &[String]) -> Command {
    let mut cmd = Command::new(edge_binary());
    cmd.args(args)
        .env("FLEETPROMPT_EDGE_TOKEN", token)
        .env("RUST_LOG", "info")
        .kill_on_drop(true);
    if let Some((_, password)) = &sink.login {
        cmd.env("FLEETPROMPT_EDGE_SMTP_PASSWORD", password);
    }
    cmd
}

impl Edge {
    /// Starts `fleetprompt-edge` for `server` with `token` (through the
    /// environment, as in production), SMTP to `sink` (see [`edge_args`]
    /// for the flags), and extra flags.
    pub fn start(
        dir: &Path,
        server: &Server,
        token: &str,
        sink: &SmtpSink,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_at(dir, &server.url, token, sink, extra)
    }

    /// [`Edge::start`] for a server at `server_url` (e.g. a [`TcpProxy`]'s).
    pub fn start_at(
        dir: &Path,
        server_url: &str,
        token: &str,
        sink: &SmtpSink,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let log_path = dir.join(format!("edge-{}.log", uuid::Uuid::now_v7().simple()));
        let log = std::fs::File::create(&log_path)?;
        let child = edge_command(sink, token, &edge_args(dir, server_url, sink, extra)?)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting fleetprompt-edge")?;
        Ok(Self { child, log_path })
    }

    /// Runs `fleetprompt-edge check` with the flags [`Edge::start`] would
    /// use; returns whether it exited 0, and its stdout and stderr.
    pub async fn check(
        dir: &Path,
        server: &Server,
        token: &str,
        sink: &SmtpSink,
        extra: &[&str],
    ) -> anyhow::Result<(bool, String)> {
        let mut args = vec!["check".to_owned()];
        args.extend(edge_args(dir, &server.url, sink, extra)?);
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            edge_command(sink, token, &args).output(),
        )
        .await
        .context("fleetprompt-edge check did not finish within 60 s")??;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        match out.status.code() {
            Some(0) => Ok((true, text)),
            Some(1) => Ok((false, text)),
            other => bail!("fleetprompt-edge check exited with {other:?}: {text}"),
        }
    }

    /// SIGKILL: no graceful shutdown, no flushing.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Waits until its log contains `text`.
    pub async fn wait_for_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.logs().contains(text) {
            assert!(
                Instant::now() < deadline,
                "fleetprompt-edge did not log {text:?} within {timeout:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    /// Waits for it to exit by itself (e.g. on a refused token).
    pub async fn wait(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        Ok(tokio::time::timeout(timeout, self.child.wait()).await??)
    }

    /// SIGTERM, then waits for a graceful exit.
    pub async fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        self.wait(Duration::from_secs(15)).await
    }

    /// Everything it has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// A real IMAP server for the Edge Connector's reply watch: Debian's
/// `dovecot-imapd`, started with a throwaway configuration in the test's
/// directory (127.0.0.1 on a free port, one passwd-file user, a maildir,
/// STARTTLS required on a self-signed `CA:TRUE` certificate like Proton
/// Mail Bridge's). Mail is delivered by writing it into the maildir.
pub struct Dovecot {
    child: Child,
    /// Its IMAP port.
    pub port: u16,
    /// The user's name (`team`).
    pub user: String,
    /// Its certificate (PEM), for `--imap-ca-file`.
    pub cert_path: PathBuf,
    /// A file holding the user's password, for `--imap-password-file`.
    pub password_path: PathBuf,
    /// Where it logs.
    pub log_path: PathBuf,
    maildir: PathBuf,
    root: PathBuf,
}

/// The uid and gid mail is stored as (`nobody`): Dovecot refuses to run a
/// mail process as root, and `nobody` exists everywhere.
const DOVECOT_MAIL_UID: u32 = 65534;

impl Dovecot {
    /// Starts Dovecot in a directory of its own. Panics (never skips) when
    /// it is not installed: CI installs `dovecot-imapd` in `.ci/run`.
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// Starts Dovecot with extra configuration lines (e.g. an
    /// `imap_capability` without `IDLE`, for the polling fallback).
    pub async fn start_with(extra_conf: &str) -> Self {
        let bin = std::env::var("DOVECOT_BIN").unwrap_or_else(|_| "/usr/sbin/dovecot".into());
        if !Path::new(&bin).exists() {
            let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
            panic!(
                "dovecot is required for the IMAP tests and was not found at {bin} (set DOVECOT_BIN). \
                 Install it with `apt-get update && apt-get install -y dovecot-imapd`.{}",
                if in_ci {
                    " CI must install it in .ci/run."
                } else {
                    ""
                }
            );
        }
        // Its sockets live under the base dir, and a Unix socket path is at
        // most 107 bytes: a short directory of its own, removed on drop.
        let id = uuid::Uuid::now_v7().simple().to_string();
        // The random end of a UUIDv7.
        let root = std::env::temp_dir().join(format!("fpdv-{}", &id[id.len() - 12..]));
        let maildir = root.join("mail/team/Maildir");
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
        }
        std::fs::create_dir_all(root.join("run")).expect("base dir");
        std::fs::create_dir_all(root.join("state")).expect("state dir");
        // The login and mail processes run unprivileged: they must reach
        // their sockets and the maildir.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755));
        }
        chown_tree(&root.join("mail"));

        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("certificate params");
        // Proton Mail Bridge's certificate is self-signed and CA-flagged.
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed certificate");
        let cert_path = root.join("cert.pem");
        let key_path = root.join("key.pem");
        std::fs::write(&cert_path, cert.pem()).expect("cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("key");
        let password_path = root.join("password");
        std::fs::write(&password_path, "correct horse battery").expect("password");
        std::fs::write(
            root.join("passwd"),
            format!(
                "team:{{PLAIN}}correct horse battery:{DOVECOT_MAIL_UID}:{DOVECOT_MAIL_UID}::{}::\n",
                root.join("mail/team").display()
            ),
        )
        .expect("passwd");

        // A free port: bind, note, release (Dovecot binds it right after).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log_path = root.join("dovecot.log");
        let r = root.display();
        let conf = format!(
            r#"protocols = imap
listen = 127.0.0.1
base_dir = {r}/run
state_dir = {r}/state
instance_name = fp-{port}
default_internal_user = root
default_internal_group = root
default_login_user = dovenull
log_path = {log}
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = yes
auth_mechanisms = plain login
mail_location = maildir:{r}/mail/%u/Maildir
first_valid_uid = 1000
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {r}/passwd
}}
userdb {{
  driver = static
  args = uid={DOVECOT_MAIL_UID} gid={DOVECOT_MAIL_UID} home={r}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
{extra_conf}
"#,
            log = log_path.display(),
            cert = cert_path.display(),
            key = key_path.display(),
        );
        let conf_path = root.join("dovecot.conf");
        std::fs::write(&conf_path, conf).expect("dovecot.conf");
        let out = std::fs::File::create(root.join("dovecot.out")).expect("out");
        let child = Command::new(&bin)
            .arg("-F")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::from(out.try_clone().expect("out")))
            .stderr(Stdio::from(out))
            .kill_on_drop(true)
            .spawn()
            .expect("starting dovecot");
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "dovecot did not listen on {port}: {}{}",
                std::fs::read_to_string(root.join("dovecot.out")).unwrap_or_default(),
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            port,
            user: "team".into(),
            cert_path,
            password_path,
            log_path,
            maildir,
            root,
        }
    }

    /// The `fleetprompt-edge` flags that watch this server's INBOX.
    pub fn edge_flags(&self) -> Vec<String> {
        vec![
            "--imap-host".into(),
            "127.0.0.1".into(),
            "--imap-port".into(),
            self.port.to_string(),
            "--imap-ca-file".into(),
            self.cert_path.display().to_string(),
            "--imap-username".into(),
            self.user.clone(),
            "--imap-password-file".into(),
            self.password_path.display().to_string(),
            "--imap-poll-secs".into(),
            "2".into(),
        ]
    }

    /// Delivers a raw message (CRLF line ends) into the INBOX, as a mail
    /// server does: written in `tmp/`, then moved into `new/`.
    pub fn deliver(&self, raw: &str) {
        let name = format!(
            "{}.{}.fleetprompt-test",
            chrono_secs(),
            uuid::Uuid::now_v7().simple()
        );
        let tmp = self.maildir.join("tmp").join(&name);
        std::fs::write(&tmp, raw).expect("write mail");
        let _ = std::os::unix::fs::chown(&tmp, Some(DOVECOT_MAIL_UID), Some(DOVECOT_MAIL_UID));
        std::fs::rename(&tmp, self.maildir.join("new").join(&name)).expect("deliver mail");
    }

    /// The flags of every message in the INBOX (maildir `:2,` info), by
    /// whether it has been seen: (seen, unseen).
    pub fn seen_counts(&self) -> (usize, usize) {
        let mut seen = 0;
        let mut unseen = 0;
        for sub in ["new", "cur"] {
            for e in std::fs::read_dir(self.maildir.join(sub))
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.split_once(":2,").is_some_and(|(_, f)| f.contains('S')) {
                    seen += 1;
                } else {
                    unseen += 1;
                }
            }
        }
        (seen, unseen)
    }

    /// Everything it has logged.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its children; kill_on_drop is the
        // fallback.
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        if std::env::var_os("FLEETPROMPT_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn chrono_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn chown_tree(path: &Path) {
    let _ = std::os::unix::fs::chown(path, Some(DOVECOT_MAIL_UID), Some(DOVECOT_MAIL_UID));
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            chown_tree(&e.path());
        }
    }
}

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
//!   Proton Mail Bridge; [`Edge`] runs the real `fleetprompt-edge` against it.
//! - [`both_backends!`]: runs one test body on SQLite and on PostgreSQL.
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
    /// Starts `fleetprompt serve` on `db` with extra flags.
    pub async fn start(db: &TestDb, name: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let log_path = db.dir.join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut child = Command::new(binary())
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
            .arg(&db.url)
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
            bail!("fleetprompt serve exited with {status}");
        }
        Ok(())
    }

    /// Everything it has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
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
        let db = TestDb::new(backend).await.expect("test database");
        let tenant = create_tenant(&db, "acme").await.expect("tenant");
        let server = Server::start(&db, "server", extra).await.expect("server");
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

#[derive(Default)]
struct SmtpState {
    accepted: Vec<Mail>,
    /// Every end-of-DATA reply given, in order.
    replies: Vec<u16>,
    /// Codes to answer the next `DATA`s with (250 when empty).
    script: VecDeque<u16>,
}

/// A real SMTP server on 127.0.0.1 (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP,
/// QUIT, and STARTTLS when started with [`SmtpSink::start_tls`]; no AUTH)
/// that records what it accepts.
#[derive(Clone)]
pub struct SmtpSink {
    /// Its port.
    pub port: u16,
    /// Its self-signed certificate (PEM), when it offers STARTTLS.
    pub cert_pem: Option<String>,
    state: Arc<Mutex<SmtpState>>,
}

impl SmtpSink {
    /// Starts a plain sink on 127.0.0.1:0.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Starts a sink that offers (and for mail, requires) STARTTLS, with a
    /// fresh self-signed certificate for `127.0.0.1` and `localhost`.
    pub async fn start_tls() -> Self {
        let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .expect("self-signed certificate");
        let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(
            signing_key.serialize_der().into(),
        );
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .expect("TLS server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let mut sink = Self::start_with(Some(acceptor)).await;
        sink.cert_pem = Some(cert.pem());
        sink
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(SmtpState::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(smtp_session(stream, tls.clone(), shared.clone()));
            }
        });
        Self {
            port,
            cert_pem: None,
            state,
        }
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
/// TLS.
fn smtp_session(
    stream: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<Mutex<SmtpState>>,
) -> Session {
    smtp_conversation(Box::new(stream), tls, state, true, false)
}

fn smtp_conversation(
    stream: Box<dyn Io>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<Mutex<SmtpState>>,
    greet: bool,
    secure: bool,
) -> Session {
    Box::pin(async move {
        use tokio::io::AsyncWriteExt;
        let (read, mut write) = tokio::io::split(stream);
        let mut lines = BufReader::new(read).lines();
        let mut from = String::new();
        let mut to = Vec::new();
        if greet && write.write_all(b"220 sink.test ESMTP\r\n").await.is_err() {
            return;
        }
        while let Ok(Some(line)) = lines.next_line().await {
            let upper = line.to_ascii_uppercase();
            let reply: String = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                if tls.is_some() {
                    "250-sink.test\r\n250-8BITMIME\r\n250 STARTTLS\r\n".into()
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
                return smtp_conversation(Box::new(secured), None, state, false, true).await;
            } else if tls.is_some() && !upper.starts_with("QUIT") {
                "530 5.7.0 must issue a STARTTLS command first\r\n".into()
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
                let mut s = state.lock().expect("sink lock");
                let code = s.script.pop_front().unwrap_or(250);
                s.replies.push(code);
                if code == 250 {
                    s.accepted.push(Mail {
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

impl Edge {
    /// Starts `fleetprompt-edge` for `server` with `token` (through the
    /// environment, as in production), SMTP to `sink` (STARTTLS when the sink
    /// offers it, else plain), and extra flags.
    pub fn start(
        dir: &Path,
        server: &Server,
        token: &str,
        sink: &SmtpSink,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let log_path = dir.join(format!("edge-{}.log", uuid::Uuid::now_v7().simple()));
        let log = std::fs::File::create(&log_path)?;
        let port = sink.port.to_string();
        let mut security = vec!["--smtp-security".to_owned()];
        match &sink.cert_pem {
            // STARTTLS, trusting the sink's certificate as an operator
            // trusts Proton Mail Bridge's exported one.
            Some(pem) => {
                let ca = dir.join(format!("smtp-ca-{port}.pem"));
                std::fs::write(&ca, pem)?;
                security.extend(["starttls".to_owned(), "--smtp-ca-file".to_owned()]);
                security.push(ca.display().to_string());
            }
            None => security.push("plain".to_owned()),
        }
        let child = Command::new(edge_binary())
            .args([
                "--server-url",
                &server.url,
                "--smtp-host",
                "127.0.0.1",
                "--smtp-port",
                &port,
                "--from",
                "Acme Support <support@acme.example>",
                "--heartbeat-secs",
                "1",
                "--wait-ms",
                "500",
            ])
            .args(&security)
            .args(extra)
            .env("FLEETPROMPT_EDGE_TOKEN", token)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("starting fleetprompt-edge")?;
        Ok(Self { child, log_path })
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

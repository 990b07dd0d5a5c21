//! Database faults against the real binary: a full disk under SQLite, a
//! PostgreSQL server that becomes unreachable (a TCP proxy in front of the
//! machine's PostgreSQL, cut and restored), and a start while it is
//! unreachable. Each fault is an outage that ends by itself: clients get
//! 503/507 with `Retry-After` at once, `/readyz` says so, and writes work
//! again soon after the fault ends, without a restart. Nothing answered 202
//! is lost.
//!
//! A full disk is SQLite's fault (a tmpfs of a few megabytes under the
//! data directory; mounting needs root, and with `CI=true` failing to mount
//! fails the test), and an unreachable server PostgreSQL's, so each test
//! runs on the backend its fault belongs to.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use fleetprompt_system_tests::{
    Backend, Server, TcpProxy, TestApp, TestDb, create_tenant, http_client,
};
use serde_json::{Value, json};

const ORIGIN: &str = "https://shop.example.com";

/// An answer with the headers the tests look at.
struct Resp {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
    took: Duration,
}

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let start = Instant::now();
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.server.url))
        .header("origin", ORIGIN);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = r.text().await.unwrap();
    Resp {
        status,
        retry_after,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        took: start.elapsed(),
    }
}

/// Installs the chat package and registers a site whose rate limits a
/// burst of test messages stays under; returns a widget token.
async fn widget_token(app: &TestApp) -> String {
    let (s, v) = app
        .post(
            "/admin/v1/installations",
            json!({ "package": "website_chat", "config": {} }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, site) = app
        .post(
            "/admin/v1/sites",
            json!({
                "domains": ["shop.example.com"],
                "mode": "native",
                "settings": { "rate_limit_visitor_per_min": 10000, "rate_limit_site_per_min": 1000000 },
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{site}");
    let key = site["public_key"].as_str().unwrap();
    let r = call(
        app,
        reqwest::Method::POST,
        &format!("/v1/widget/bootstrap?site_key={key}"),
        None,
        Some(json!({ "site_key": key })),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["token"].as_str().unwrap().to_owned()
}

async fn send(app: &TestApp, token: &str, cmid: &str, content: &str) -> Resp {
    call(
        app,
        reqwest::Method::POST,
        "/v1/widget/messages",
        Some(token),
        Some(json!({ "client_message_id": cmid, "content": content })),
    )
    .await
}

/// An admin read (`GET /admin/v1/sites`) as the app's tenant.
async fn admin_read(app: &TestApp) -> Resp {
    call(
        app,
        reqwest::Method::GET,
        "/admin/v1/sites",
        Some(&app.tenant.token),
        None,
    )
    .await
}

async fn readyz(app: &TestApp) -> Resp {
    call(app, reqwest::Method::GET, "/readyz", None, None).await
}

/// Polls `/readyz` until it answers `want`; every answer must come within
/// a second. Returns how long it took.
async fn wait_readyz(app: &TestApp, want: StatusCode, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let r = readyz(app).await;
        assert!(
            r.took < Duration::from_secs(1),
            "/readyz took {:?} (answered {})",
            r.took,
            r.status
        );
        if r.status == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "/readyz still {} ({}) after {timeout:?}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts an outage answer: `status`, a `Retry-After`, the JSON error
/// shape with `code`, and no more than a second's wait.
fn assert_outage(r: &Resp, status: StatusCode, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
    let secs: u64 = r
        .retry_after
        .as_deref()
        .unwrap_or_else(|| panic!("{what}: no Retry-After"))
        .parse()
        .expect("Retry-After in seconds");
    assert!(secs >= 1, "{what}: Retry-After {secs}");
    assert_eq!(r.body["error"]["code"], code, "{what}: {}", r.body);
    assert!(
        r.took < Duration::from_secs(1),
        "{what}: answered after {:?}, not at once",
        r.took
    );
}

/// The value of a counter series (its name and labels, as exposed) in a
/// Prometheus exposition; 0 when it is absent.
fn counter_value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Ingest batches written again message by message: an outage must never
/// cause that (every message would fail alike, each after its own wait).
const FALLBACKS: &str = "fleetprompt_webchat_ingest_batch_fallbacks_total";

/// Sends the first message, while the database is well: it is accepted.
/// Returns its client message id.
async fn send_before(app: &TestApp, token: &str) -> String {
    let id = cmid();
    assert_eq!(
        send(app, token, &id, "before").await.status,
        StatusCode::ACCEPTED
    );
    id
}

/// Sends each of `pending` (with `content`) again until it is accepted, which must happen
/// within 5 s of `since` (`what` came back then); records them in `accepted`.
async fn resend_until_accepted(
    app: &TestApp,
    token: &str,
    pending: &[String],
    content: &str,
    accepted: &mut HashSet<String>,
    since: Instant,
    what: &str,
) {
    for id in pending {
        loop {
            let r = send(app, token, id, content).await;
            if r.status == StatusCode::ACCEPTED {
                accepted.insert(id.clone());
                break;
            }
            assert!(
                since.elapsed() < Duration::from_secs(5),
                "writes still fail {:?} after {what}: {} {}",
                since.elapsed(),
                r.status,
                r.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// How many visitor messages are stored.
async fn visitor_messages(app: &TestApp) -> i64 {
    app.db
        .scalar("SELECT COUNT(*) FROM website_chat_messages WHERE role = 'visitor'")
        .await
        .unwrap()
}

fn cmid() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `dir`; `None` (the test is skipped) when
    /// that is not possible here, except under `CI=true`, where it fails.
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self(dir.to_owned())),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "cannot mount a tmpfs for the disk-full test (root is needed): {why}"
                );
                eprintln!("skipped: cannot mount a tmpfs (root is needed): {why}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        // The test database may have been dropped first, and could not
        // remove a mount point: remove what is left once it is empty.
        let _ = std::fs::remove_dir(&self.0);
        if let Some(parent) = self.0.parent()
            && std::env::var_os("FLEETPROMPT_KEEP_TEST_DIRS").is_none()
        {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// Writes to `path` until the disk is full.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut written = 0;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "filling: {e}");
                break;
            }
        }
    }
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_full_disk_is_an_outage_that_ends_by_itself() {
    let mut db = TestDb::new(Backend::Sqlite).await.unwrap();
    let disk = db.dir.join("disk");
    let Some(_tmpfs) = Tmpfs::mount(&disk, "12m") else {
        return;
    };
    let file = disk.join("fleetprompt.db");
    db.url = format!("sqlite://{}", file.display());
    let tenant = create_tenant(&db, "acme").await.unwrap();
    let server = Server::start(&db, "server", &["--demo", "false"])
        .await
        .unwrap();
    let app = TestApp {
        db,
        server,
        tenant,
        http: http_client(),
    };
    let token = widget_token(&app).await;
    let content = "x".repeat(3000);
    let mut accepted = HashSet::new();
    for _ in 0..5 {
        let id = cmid();
        let r = send(&app, &token, &id, &content).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        accepted.insert(id);
    }

    // Fill the disk, then write until the database runs out of room: the
    // first writes may still fit in pages SQLite holds already.
    let filler = disk.join("filler");
    let filled = fill(&filler);
    let mut refused = None;
    for _ in 0..4000 {
        let id = cmid();
        let r = send(&app, &token, &id, &content).await;
        if r.status == StatusCode::ACCEPTED {
            accepted.insert(id);
            continue;
        }
        refused = Some((id, r));
        break;
    }
    let (pending, r) = refused.expect("a write failed once the disk was full");
    eprintln!(
        "disk full after {filled} filler bytes and {} messages: {} {} in {:?}",
        accepted.len(),
        r.status,
        r.body,
        r.took
    );
    assert_outage(
        &r,
        StatusCode::INSUFFICIENT_STORAGE,
        "storage_full",
        "a message on a full disk",
    );
    let r = readyz(&app).await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "/readyz while writes fail: {}",
        r.body
    );
    assert_eq!(r.body, "database storage full");
    assert!(r.took < Duration::from_secs(1), "/readyz took {:?}", r.took);
    let metrics = app.metrics().await;
    assert!(
        counter_value(
            &metrics,
            "fleetprompt_db_outage_errors_total{kind=\"storage_full\"}"
        ) > 0.0,
        "the refused write is counted"
    );
    assert_eq!(
        counter_value(&metrics, FALLBACKS),
        0.0,
        "no one-by-one retry"
    );
    // Still full: still refused, and still answered at once.
    let r = send(&app, &token, &pending, &content).await;
    if r.status != StatusCode::ACCEPTED {
        assert_outage(
            &r,
            StatusCode::INSUFFICIENT_STORAGE,
            "storage_full",
            "a retry while the disk is full",
        );
    } else {
        accepted.insert(pending.clone());
    }

    // Space is freed: the widget's retry of the refused message, and every
    // write after it, succeed within seconds, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    resend_until_accepted(
        &app,
        &token,
        std::slice::from_ref(&pending),
        &content,
        &mut accepted,
        freed,
        "space was freed",
    )
    .await;
    let write_back = freed.elapsed();
    let ready_back = freed.elapsed()
        + wait_readyz(
            &app,
            StatusCode::OK,
            Duration::from_secs(5).saturating_sub(freed.elapsed()),
        )
        .await;
    eprintln!(
        "after space was freed: writes back in {write_back:?}, /readyz 200 in {ready_back:?}"
    );
    for _ in 0..20 {
        let id = cmid();
        let r = send(&app, &token, &id, "after the outage").await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        accepted.insert(id);
    }
    // Background writes work too: a site registration is a directive.
    let (s, v) = app
        .post("/admin/v1/sites", json!({ "domains": ["two.example.com"] }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["status"], "active", "{v}");

    let TestApp { db, mut server, .. } = app;
    server.stop().await.unwrap();
    // Every message answered 202 is stored, once.
    let stored = db
        .scalar("SELECT COUNT(*) FROM website_chat_messages WHERE role = 'visitor'")
        .await
        .unwrap();
    assert_eq!(stored as usize, accepted.len());
    let distinct = db
        .scalar("SELECT COUNT(DISTINCT client_message_id) FROM website_chat_messages WHERE role = 'visitor'")
        .await
        .unwrap();
    assert_eq!(distinct, stored);
    let check: String = {
        let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    assert_eq!(check, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_answers_503_at_once_and_recovers() {
    let db = TestDb::new(Backend::Postgres).await.unwrap();
    let tenant = create_tenant(&db, "acme").await.unwrap();
    let proxy = TcpProxy::in_front_of(&db.url).await.unwrap();
    let server = Server::start_on(&db, &proxy.url_for(&db.url), "server", &[])
        .await
        .unwrap();
    let app = TestApp {
        db,
        server,
        tenant,
        http: http_client(),
    };
    let token = widget_token(&app).await;
    let mut accepted = HashSet::new();
    accepted.insert(send_before(&app, &token).await);

    proxy.cut();
    // A message sent at the moment of the cut waits for a connection only
    // until the breaker opens (the monitor probes every second), not for
    // the pool's 10 s acquire timeout.
    let id = cmid();
    let r = send(&app, &token, &id, "at the cut").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert!(r.retry_after.is_some());
    assert!(
        r.took < Duration::from_secs(3),
        "a message at the cut waited {:?}",
        r.took
    );
    eprintln!(
        "a message sent at the cut was answered 503 after {:?}",
        r.took
    );
    let mut pending = vec![id];
    let detected = wait_readyz(
        &app,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(5),
    )
    .await;
    eprintln!("/readyz 503 {detected:?} after that");
    // Known unreachable: every request is answered 503 at once.
    let mut slowest = Duration::ZERO;
    for i in 0..5 {
        let id = cmid();
        let r = send(&app, &token, &id, &format!("during {i}")).await;
        slowest = slowest.max(r.took);
        assert_outage(
            &r,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "a message while the database is down",
        );
        pending.push(id);
    }
    let r = admin_read(&app).await;
    assert_outage(
        &r,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "an admin read while the database is down",
    );
    // A burst at once: one batch, answered together, not one by one.
    let burst: Vec<_> = (0..20)
        .map(|i| {
            let (app, token) = (&app, &token);
            async move { send(app, token, &cmid(), &format!("burst {i}")).await }
        })
        .collect();
    for r in futures::future::join_all(burst).await {
        assert_outage(
            &r,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "a burst while the database is down",
        );
    }
    eprintln!("messages while the database was down answered in at most {slowest:?}");
    let metrics = app.metrics().await;
    assert!(
        counter_value(
            &metrics,
            "fleetprompt_db_outage_errors_total{kind=\"unavailable\"}"
        ) > 0.0,
        "the refused requests are counted"
    );
    assert_eq!(
        counter_value(&metrics, FALLBACKS),
        0.0,
        "no one-by-one retry"
    );

    // Back: ready again and writing within seconds, without a restart.
    proxy.restore();
    let restored = Instant::now();
    let ready = wait_readyz(&app, StatusCode::OK, Duration::from_secs(5)).await;
    resend_until_accepted(
        &app,
        &token,
        &pending,
        "retried",
        &mut accepted,
        restored,
        "the database came back",
    )
    .await;
    eprintln!(
        "after the database came back: /readyz 200 in {ready:?}, writes in {:?}",
        restored.elapsed()
    );
    let (s, v) = app.get("/admin/v1/sites").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let stored = visitor_messages(&app).await;
    assert_eq!(stored as usize, accepted.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_with_postgres_unreachable_waits_then_serves() {
    let db = TestDb::new(Backend::Postgres).await.unwrap();
    let tenant = create_tenant(&db, "acme").await.unwrap();
    let proxy = TcpProxy::in_front_of(&db.url).await.unwrap();
    proxy.cut();
    let server = Server::start_unready(&db, &proxy.url_for(&db.url), "server", &[])
        .await
        .unwrap();
    let mut app = TestApp {
        db,
        server,
        tenant,
        http: http_client(),
    };
    // Alive, not ready, and every other route says "retry later".
    let r = call(&app, reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = readyz(&app).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert!(r.took < Duration::from_secs(1));
    let r = admin_read(&app).await;
    assert_outage(
        &r,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "a request while starting",
    );
    // It says why, and that it will try again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !app
        .server
        .logs()
        .contains("(connection refused), retrying in")
    {
        assert!(
            Instant::now() < deadline,
            "no retry message in the log:\n{}",
            app.server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(app.server.logs().contains("cannot connect to postgres://"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = readyz(&app).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);

    // Reachable: it connects on its next try (at most 5 s apart) and serves.
    proxy.restore();
    let restored = Instant::now();
    app.server
        .wait_ready(Duration::from_secs(15))
        .await
        .unwrap();
    eprintln!(
        "serving {:?} after the database became reachable",
        restored.elapsed()
    );
    let (s, v) = app.get("/admin/v1/sites").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let token = widget_token(&app).await;
    assert_eq!(
        send(&app, &token, &cmid(), "hello").await.status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_wait_gives_up_with_a_clear_message() {
    let db = TestDb::new(Backend::Postgres).await.unwrap();
    let proxy = TcpProxy::in_front_of(&db.url).await.unwrap();
    proxy.cut();
    let mut server =
        Server::start_unready(&db, &proxy.url_for(&db.url), "server", &["--db-wait", "2"])
            .await
            .unwrap();
    let status = server.wait_exit(Duration::from_secs(15)).await.unwrap();
    assert!(!status.success());
    let logs = server.logs();
    assert!(
        logs.contains("(connection refused); gave up after 2 s (--db-wait)"),
        "{logs}"
    );
}

/// Runs statements on a connection of the test's own to `url`, as an
/// operator at a `psql` prompt would.
async fn pg_exec(url: &str, statements: &[&str]) {
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .unwrap();
    for s in statements {
        sqlx::query(sqlx::AssertSqlSafe(s.to_string()))
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

/// A failover as the server sees it: every session of the database but
/// this one ends.
fn end_sessions(name: &str) -> String {
    format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_read_only_answers_503_and_recovers() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let token = widget_token(&app).await;
    let mut accepted = HashSet::new();
    accepted.insert(send_before(&app, &token).await);
    let name = app.db.url.rsplit('/').next().unwrap().to_owned();

    // The database turns read-only and its sessions end, as when a primary
    // is demoted: the server reconnects to a database that refuses writes.
    pg_exec(
        &app.db.url,
        &[
            &format!("ALTER DATABASE {name} SET default_transaction_read_only = on"),
            &end_sessions(&name),
        ],
    )
    .await;
    // Past the moment the ended sessions open the breaker: what is left is
    // a reachable database that refuses every write.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut pending = vec![];
    for i in 0..3 {
        let id = cmid();
        let r = send(&app, &token, &id, &format!("read-only {i}")).await;
        assert_outage(
            &r,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "a message to a read-only database",
        );
        pending.push(id);
    }
    let r = readyz(&app).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.body, "database unavailable");
    assert!(r.took < Duration::from_secs(1));
    // Reads still work: only writes are refused.
    let (s, v) = app.get("/admin/v1/sites").await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Writable again (a new primary): ready and writing within seconds.
    pg_exec(
        &app.db.url,
        &[
            "SET default_transaction_read_only = off",
            &format!("ALTER DATABASE {name} RESET default_transaction_read_only"),
            &end_sessions(&name),
        ],
    )
    .await;
    let back = Instant::now();
    wait_readyz(&app, StatusCode::OK, Duration::from_secs(5)).await;
    resend_until_accepted(
        &app,
        &token,
        &pending,
        "retried",
        &mut accepted,
        back,
        "the database became writable",
    )
    .await;
    eprintln!("writable again: writes back in {:?}", back.elapsed());
    let stored = visitor_messages(&app).await;
    assert_eq!(stored as usize, accepted.len());
}

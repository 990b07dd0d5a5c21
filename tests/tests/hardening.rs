//! The HTTP surface under hostile input, end to end over HTTP, on SQLite
//! and PostgreSQL: every error is JSON (unknown routes, wrong methods, bad
//! queries, bad paths, oversize bodies), and a NUL character in any string
//! of any route is refused with 400 `invalid_text` before anything is
//! written (PostgreSQL cannot store it, so it used to be a 500). And the
//! connection discipline: slow and idle connections are closed after the
//! header timeout, the connection cap holds, and so do the caps on live
//! widget streams per visitor and per site.

use std::time::Duration;

use axum::http::StatusCode;
use fleetprompt_system_tests::webchat::{self, ORIGIN};
use fleetprompt_system_tests::{Backend, TestApp, both_backends};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw answer: status, content type and body text.
struct Raw {
    status: StatusCode,
    content_type: String,
    body: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// Asserts a JSON error with `status` and `code`.
    fn assert_error(&self, what: &str, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{what}: {}", self.body);
        assert!(
            self.content_type.starts_with("application/json"),
            "{what}: content type {:?}, body {:?}",
            self.content_type,
            self.body
        );
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "{what}: {}", self.body);
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {}",
            self.body
        );
    }
}

async fn raw(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> Raw {
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.server.url))
        .header("origin", ORIGIN);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let r = req.send().await.expect("request");
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Raw {
        status,
        content_type,
        body: r.text().await.unwrap_or_default(),
    }
}

/// POSTs `body` over a raw connection, reading the answer while writing.
async fn raw_tcp(app: &TestApp, path: &str, token: &str, body: Vec<u8>) -> Raw {
    let addr = app.server.url.trim_start_matches("http://").to_owned();
    let conn = TcpStream::connect(&addr).await.unwrap();
    let (mut rd, mut wr) = conn.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_ok() {
            // The server may stop reading; a failed write is expected.
            let _ = wr.write_all(&body).await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&answer);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head.lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    });
                    if len.is_some_and(|len| body.len() >= len) {
                        break;
                    }
                }
            }
        }
    }
    writer.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    Raw {
        status,
        content_type,
        body: body.to_owned(),
    }
}

async fn errors_are_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = Some(app.tenant.token.as_str());
    use reqwest::Method as M;
    let cases: Vec<(&str, M, &str, StatusCode, &str)> = vec![
        (
            "unknown route",
            M::GET,
            "/nope",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "unknown admin route",
            M::GET,
            "/admin/v1/nope",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "unknown edge route",
            M::POST,
            "/edge/v1/nope",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "unknown widget route",
            M::GET,
            "/v1/widget/nope",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "an old widget script",
            M::GET,
            "/widget/0000000000000000.js",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "wrong method (admin)",
            M::DELETE,
            "/admin/v1/sites",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "wrong method (widget)",
            M::PUT,
            "/v1/widget/messages",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "wrong method (edge)",
            M::GET,
            "/edge/v1/heartbeat",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "wrong method (ops)",
            M::POST,
            "/healthz",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "query without subject",
            M::GET,
            "/admin/v1/timeline",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "query limit=abc",
            M::GET,
            "/admin/v1/directives?limit=abc",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "query limit=abc (conversations)",
            M::GET,
            "/admin/v1/conversations?limit=abc",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "path not UTF-8",
            M::GET,
            "/admin/v1/conversations/%FF",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "path not UTF-8 (sites)",
            M::GET,
            "/admin/v1/sites/%FF",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ];
    for (what, method, path, status, code) in cases {
        raw(&app, method, path, admin, None)
            .await
            .assert_error(what, status, code);
    }

    // A 10 MB admin body: a JSON 413, not axum's text/plain one. Sent raw,
    // reading while writing: the server answers before the body is in, and
    // an HTTP client would report its failed write instead of the answer.
    let big = format!(
        "{{\"type\":\"x.y\",\"subject\":\"s:1\",\"dedupe_key\":\"k\",\"payload\":{{\"pad\":\"{}\"}}}}",
        "a".repeat(10 * 1024 * 1024)
    );
    raw_tcp(
        &app,
        "/admin/v1/signals",
        &app.tenant.token,
        big.into_bytes(),
    )
    .await
    .assert_error(
        "10 MB admin body",
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    // A body just under the 1 MiB admin limit is still read (and judged on
    // its content), so the limit is the documented one.
    let under = json!({ "type": "x.y", "subject": "s:1", "dedupe_key": "k", "payload": { "pad": "a".repeat(900 * 1024) } });
    let r = raw(
        &app,
        M::POST,
        "/admin/v1/signals",
        admin,
        Some(under.to_string().into_bytes()),
    )
    .await;
    assert_ne!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    // And the widget's smaller limit answers JSON too.
    let widget_big = format!("{{\"site_key\":\"{}\"}}", "k".repeat(200 * 1024));
    raw(
        &app,
        M::POST,
        "/v1/widget/bootstrap",
        None,
        Some(widget_big.into_bytes()),
    )
    .await
    .assert_error(
        "oversize widget body",
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
}

/// Every variant of `body` with a NUL appended to exactly one string leaf
/// (keys included), with the path of that leaf.
fn nul_variants(body: &Value) -> Vec<(String, Value)> {
    fn walk(v: &Value, at: &str, out: &mut Vec<(String, Value)>, rebuild: &dyn Fn(Value) -> Value) {
        match v {
            Value::String(s) => out.push((at.to_owned(), rebuild(json!(format!("{s}\u{0}x"))))),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let items = items.clone();
                    walk(item, &format!("{at}[{i}]"), out, &|x| {
                        let mut items = items.clone();
                        items[i] = x;
                        rebuild(Value::Array(items))
                    });
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let m = map.clone();
                    let key = k.clone();
                    walk(item, &format!("{at}.{k}"), out, &|x| {
                        let mut m = m.clone();
                        m.insert(key.clone(), x);
                        rebuild(Value::Object(m))
                    });
                }
                let mut m = map.clone();
                m.insert("k\u{0}".into(), json!(1));
                out.push((format!("{at} (a key)"), rebuild(Value::Object(m))));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(body, "", &mut out, &|x| x);
    out
}

async fn nul_bytes_are_refused_everywhere(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    use reqwest::Method as M;
    let admin = app.tenant.token.clone();

    // A site, a visitor with a conversation, an Edge Connector.
    let site = webchat::site(&app).await;
    let key = site["public_key"].as_str().expect("public_key").to_owned();
    let site_id = site["site_id"].as_str().unwrap().to_owned();
    let boot = raw(
        &app,
        M::POST,
        &format!("/v1/widget/bootstrap?site_key={key}"),
        None,
        Some(json!({ "site_key": key }).to_string().into_bytes()),
    )
    .await;
    assert_eq!(boot.status, StatusCode::OK, "{}", boot.body);
    let widget = boot.json()["token"].as_str().unwrap().to_owned();
    let visitor = boot.json()["visitor_id"].as_str().unwrap().to_owned();
    let sent = raw(
        &app,
        M::POST,
        "/v1/widget/messages",
        Some(&widget),
        Some(
            json!({ "client_message_id": uuid::Uuid::now_v7().to_string(), "content": "hello" })
                .to_string()
                .into_bytes(),
        ),
    )
    .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    let conv = sent.json()["conversation_id"].as_str().unwrap().to_owned();
    let (s, edge) = app
        .post("/admin/v1/edge-connectors", json!({ "name": "mailer" }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{edge}");
    let edge_token = edge["token"].as_str().unwrap().to_owned();
    let edge_id = edge["id"].as_str().unwrap().to_owned();
    let directive = "dir_0000000000000000000000000";

    // Every route with a body, with a body that names every string field.
    let bodies: Vec<(&str, String, Value)> = vec![
        (
            "admin",
            "/admin/v1/destinations".into(),
            json!({ "name": "hook", "kind": "webhook", "url": "http://127.0.0.1:9/x", "headers": { "x-a": "b" } }),
        ),
        (
            "admin",
            "/admin/v1/directives".into(),
            json!({ "kind": "webhook.post", "args": { "destination": "hook", "body": { "a": "b" } }, "dedupe_key": "d-1", "subject": "s:1", "backoff": {} }),
        ),
        (
            "admin",
            "/admin/v1/edge-connectors".into(),
            json!({ "name": "second" }),
        ),
        (
            "admin",
            "/admin/v1/installations".into(),
            json!({ "package": "website_chat", "config": { "a": "b" } }),
        ),
        (
            "admin",
            "/admin/v1/signals".into(),
            json!({ "type": "x.y", "subject": "s:1", "payload": { "text": "hi", "list": ["a", "b"] }, "dedupe_key": "k-1", "occurred_at": "2026-01-01T00:00:00Z" }),
        ),
        (
            "admin",
            "/admin/v1/sites".into(),
            json!({ "domains": ["other.example.com"], "mode": "native", "settings": { "greeting": "hi" } }),
        ),
        (
            "admin",
            format!("/admin/v1/sites/{site_id}/rotate_secret"),
            json!({ "note": "x" }),
        ),
        (
            "admin",
            format!("/admin/v1/conversations/{conv}/reply"),
            json!({ "content": "an answer" }),
        ),
        (
            "admin",
            "/admin/v1/replay".into(),
            json!({ "type": "webchat.message.received", "subject": "s:1", "since": "2026-01-01T00:00:00Z", "until": "2027-01-01T00:00:00Z", "dry_run": true }),
        ),
        (
            "admin",
            "/admin/v1/workflows/check".into(),
            json!({ "files": { "a.toml": "# nothing" } }),
        ),
        (
            "admin",
            "/admin/v1/workflows/backtest".into(),
            json!({ "files": { "a.toml": "# nothing" }, "since": "2026-01-01T00:00:00Z" }),
        ),
        (
            "widget",
            format!("/v1/widget/bootstrap?site_key={key}"),
            json!({ "site_key": key, "visitor_id": visitor }),
        ),
        (
            "widget",
            "/v1/widget/messages".into(),
            json!({ "client_message_id": uuid::Uuid::now_v7().to_string(), "content": "hello again", "page_url": "https://shop.example.com/" }),
        ),
        (
            "widget",
            "/v1/widget/contact".into(),
            json!({ "email": "a@example.com", "name": "Ann" }),
        ),
        (
            "edge",
            "/edge/v1/heartbeat".into(),
            json!({ "version": "1.0" }),
        ),
        (
            "edge",
            "/edge/v1/tasks/claim".into(),
            json!({ "kinds": ["email.send"] }),
        ),
        (
            "edge",
            format!("/edge/v1/tasks/{directive}/result"),
            json!({ "attempt": 1, "outcome": "failed", "error": "boom", "external_ref": "<m@x>" }),
        ),
    ];
    let token_of = |who: &str| match who {
        "admin" => admin.clone(),
        "widget" => widget.clone(),
        _ => edge_token.clone(),
    };
    let mut checked = 0;
    for (who, path, body) in &bodies {
        let variants = nul_variants(body);
        assert!(!variants.is_empty(), "{path}");
        for (field, variant) in variants {
            let r = raw(
                &app,
                M::POST,
                path,
                Some(&token_of(who)),
                Some(variant.to_string().into_bytes()),
            )
            .await;
            r.assert_error(
                &format!("POST {path} with NUL in {field}"),
                StatusCode::BAD_REQUEST,
                "invalid_text",
            );
            checked += 1;
        }
    }

    // Every query and path parameter.
    let gets: Vec<(&str, M, String)> = vec![
        ("admin", M::GET, "/admin/v1/timeline?subject=s%00x".into()),
        (
            "admin",
            M::GET,
            "/admin/v1/directives?status=pending%00".into(),
        ),
        (
            "admin",
            M::GET,
            "/admin/v1/conversations?site_id=a%00&status=open".into(),
        ),
        (
            "admin",
            M::GET,
            "/admin/v1/conversations?status=open%00".into(),
        ),
        ("admin", M::GET, "/admin/v1/conversations/conv%00".into()),
        (
            "admin",
            M::GET,
            "/admin/v1/conversations/conv%00/drafts".into(),
        ),
        (
            "admin",
            M::POST,
            format!("/admin/v1/conversations/{conv}/drafts/d%00/approve"),
        ),
        (
            "admin",
            M::POST,
            format!("/admin/v1/conversations/{conv}/drafts/d%00/discard"),
        ),
        (
            "admin",
            M::POST,
            "/admin/v1/conversations/c%00/reply".into(),
        ),
        ("admin", M::GET, "/admin/v1/sites/site%00".into()),
        ("admin", M::POST, "/admin/v1/sites/site%00/disable".into()),
        (
            "admin",
            M::POST,
            "/admin/v1/sites/site%00/test-message".into(),
        ),
        ("admin", M::GET, "/admin/v1/directives/dir%00".into()),
        ("admin", M::POST, "/admin/v1/directives/dir%00/retry".into()),
        (
            "admin",
            M::POST,
            "/admin/v1/directives/dir%00/cancel".into(),
        ),
        (
            "admin",
            M::POST,
            format!("/admin/v1/edge-connectors/{edge_id}%00/revoke"),
        ),
        ("widget", M::GET, "/v1/widget/messages?after=m%00".into()),
        (
            "widget",
            M::POST,
            format!("/v1/widget/close?site_key={key}%00"),
        ),
        ("edge", M::POST, "/edge/v1/tasks/dir%00/result".into()),
        ("none", M::GET, "/widget/%00.js".into()),
    ];
    for (who, method, path) in gets {
        let body = (method == M::POST).then(|| b"{}".to_vec());
        let r = raw(&app, method.clone(), &path, Some(&token_of(who)), body).await;
        r.assert_error(
            &format!("{method} {path}"),
            StatusCode::BAD_REQUEST,
            "invalid_text",
        );
        checked += 1;
    }
    println!("{checked} NUL cases refused with 400 invalid_text");

    // Nothing was written by any of them: the one message and the one
    // connector are all there is, and the server logged no internal error.
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM website_chat_messages")
            .await
            .unwrap(),
        1
    );
    assert!(
        !app.server.logs().contains("internal error"),
        "{}",
        app.server.logs()
    );
}

/// A site allowing `ORIGIN`; returns its public key.
async fn site(app: &TestApp) -> String {
    webchat::site(app).await["public_key"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A new visitor's widget token.
async fn widget_token(app: &TestApp, key: &str) -> String {
    let r = raw(
        app,
        reqwest::Method::POST,
        &format!("/v1/widget/bootstrap?site_key={key}"),
        None,
        Some(json!({ "site_key": key }).to_string().into_bytes()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.json()["token"].as_str().unwrap().to_owned()
}

/// Opens a live stream; the answer, to read with [`read_until`].
async fn open_stream(app: &TestApp, token: &str) -> reqwest::Response {
    app.http
        .get(format!("{}/v1/widget/stream", app.server.url))
        .header("origin", ORIGIN)
        .bearer_auth(token)
        .send()
        .await
        .expect("stream request")
}

/// Reads a stream until its text contains `needle` (true) or it ends or
/// `timeout` passes (false).
async fn read_until(
    resp: &mut reqwest::Response,
    seen: &mut String,
    needle: &str,
    timeout: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while !seen.contains(needle) {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(c))) => seen.push_str(&String::from_utf8_lossy(&c)),
            _ => return false,
        }
    }
    true
}

/// Whether the server closes `conn` within `timeout` (reads return EOF or
/// an error), draining whatever it sends first.
async fn closed_within(conn: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// The hard open-file limit this test process (and so its child) has.
fn hard_open_files() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    let hard = line.split_whitespace().nth(4).expect("hard limit");
    hard.parse().unwrap_or(u64::MAX)
}

async fn slow_and_idle_connections_are_closed(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--header-timeout-secs", "1"]).await;
    let addr = app.server.url.trim_start_matches("http://").to_owned();
    let limit = Duration::from_secs(4);

    // A connection that sends nothing.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    // One that sends its headers a byte at a time, forever.
    let mut dripping = TcpStream::connect(&addr).await.unwrap();
    dripping
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let drip = tokio::spawn(async move {
        for _ in 0..40 {
            if dripping.write_all(b"X").await.is_err() {
                return (dripping, true);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (dripping, false)
    });
    // A keep-alive connection left idle after one request.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    assert!(
        closed_within(&mut silent, limit).await,
        "a silent connection stayed open"
    );
    assert!(
        closed_within(&mut idle, limit).await,
        "an idle keep-alive connection stayed open"
    );
    let (mut dripping, write_failed) = drip.await.unwrap();
    assert!(
        write_failed || closed_within(&mut dripping, Duration::from_millis(100)).await,
        "a connection dripping its headers stayed open"
    );

    // A live stream is not a connection waiting for headers: it outlives
    // the timeout, and still gets its events.
    let key = site(&app).await;
    let token = widget_token(&app, &key).await;
    let mut stream = open_stream(&app, &token).await;
    assert_eq!(stream.status().as_u16(), 200);
    let mut seen = String::new();
    assert!(
        read_until(&mut stream, &mut seen, "event: ready", limit).await,
        "{seen}"
    );
    assert!(
        !read_until(
            &mut stream,
            &mut seen,
            "event: reconnect",
            Duration::from_secs(3)
        )
        .await,
        "the stream ended early: {seen}"
    );
    let (s, _) = app.get("/admin/v1/sites").await;
    assert_eq!(s, StatusCode::OK, "the server still serves");

    // It raised its open-file limit to the hard limit, and said so.
    let logs = app.server.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("open-file limit raised"))
        .expect("the open-file limit is logged");
    let v: Value = serde_json::from_str(line).unwrap();
    let figure = v["fields"]["open_files"].as_u64().unwrap_or(0);
    let hard = hard_open_files();
    assert!(
        figure >= 1024 && (figure == hard || hard == u64::MAX),
        "{line} (hard limit {hard})"
    );
}

async fn the_connection_cap_holds(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &["--max-connections", "4", "--header-timeout-secs", "30"],
    )
    .await;
    let addr = app.server.url.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    // The loop stops accepting: a fifth connection gets no answer.
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let refused = quick
        .get(format!("{}/healthz", app.server.url))
        .send()
        .await;
    assert!(refused.is_err(), "answered past the cap: {refused:?}");
    let logs = app.server.logs();
    assert!(logs.contains("connection limit reached"), "{logs}");
    // One closes: the waiting connections are served.
    held.pop();
    let r = app
        .http
        .get(format!("{}/healthz", app.server.url))
        .send()
        .await;
    assert_eq!(
        r.expect("served once a slot is free").status().as_u16(),
        200
    );
    drop(held);
}

async fn stream_caps_hold(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--streams-per-site", "5"]).await;
    let key = site(&app).await;
    let limit = Duration::from_secs(5);

    // A fourth stream of one visitor replaces the oldest.
    let a = widget_token(&app, &key).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut s = open_stream(&app, &a).await;
        assert_eq!(s.status().as_u16(), 200);
        let mut seen = String::new();
        assert!(
            read_until(&mut s, &mut seen, "event: ready", limit).await,
            "{seen}"
        );
        streams.push((s, seen));
    }
    let mut fourth = open_stream(&app, &a).await;
    let mut seen = String::new();
    assert!(
        read_until(&mut fourth, &mut seen, "event: ready", limit).await,
        "{seen}"
    );
    let (oldest, oldest_seen) = &mut streams[0];
    assert!(
        read_until(oldest, oldest_seen, "event: replaced", limit).await,
        "the oldest stream was not closed: {oldest_seen}"
    );
    assert!(oldest.chunk().await.ok().flatten().is_none(), "it ended");
    for (s, seen) in &mut streams[1..] {
        assert!(!read_until(s, seen, "event: replaced", Duration::from_millis(300)).await);
    }
    streams.remove(0);

    // The site holds 5: a's 3 and b's 2; c's is refused, as JSON.
    let b = widget_token(&app, &key).await;
    let mut bs = Vec::new();
    for _ in 0..2 {
        let mut s = open_stream(&app, &b).await;
        let mut seen = String::new();
        assert!(
            read_until(&mut s, &mut seen, "event: ready", limit).await,
            "{seen}"
        );
        bs.push(s);
    }
    let c = widget_token(&app, &key).await;
    let refused = open_stream(&app, &c).await;
    assert_eq!(refused.status().as_u16(), 429);
    let v: Value = refused.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limited", "{v}");
    // One goes away: c gets its stream.
    drop(bs.pop());
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut s = open_stream(&app, &c).await;
        if s.status().as_u16() == 200 {
            let mut seen = String::new();
            assert!(read_until(&mut s, &mut seen, "event: ready", limit).await);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the freed place was not reused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((streams, fourth));
}

both_backends!(
    errors_are_json,
    nul_bytes_are_refused_everywhere,
    slow_and_idle_connections_are_closed,
    the_connection_cap_holds,
    stream_caps_hold
);

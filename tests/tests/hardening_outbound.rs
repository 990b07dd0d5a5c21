//! Hardening of what leaves the server and what a visitor can put in: the
//! outbound policy (no request reaches an internal address unless the
//! operator allows it), bounded reads of outbound answers, inert visitor
//! text in Mattermost, credentials redacted from visitor messages, and the
//! rotation grace cap on every path.

use std::time::Duration;

use axum::http::StatusCode;
use fleetprompt_system_tests::webchat::{self, ORIGIN};
use fleetprompt_system_tests::{
    Backend, Recorder, Reply, Server, TestApp, TestDb, both_backends, create_tenant, http_client,
};
use serde_json::{Value, json};

/// Every kind of destination with `url` in the field that holds its address.
fn destinations_at(url: &str) -> Vec<Value> {
    vec![
        json!({ "name": "w", "kind": "webhook", "url": url }),
        json!({ "name": "m", "kind": "mattermost", "webhook_url": url }),
        json!({ "name": "a", "kind": "mattermost_api", "base_url": url, "token": "t0ken", "channel_id": "c1" }),
        json!({ "name": "l", "kind": "llm", "base_url": url, "model": "m" }),
    ]
}

async fn ssrf_is_refused_at_creation(backend: Backend) {
    let app = TestApp::spawn_guarded(backend, &[]).await;
    for url in [
        "http://127.0.0.1:5432/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "http://localhost:9/",
    ] {
        for body in destinations_at(url) {
            let (s, v) = app.post("/admin/v1/destinations", body.clone()).await;
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
            assert_eq!(v["error"]["code"], "destination_not_allowed", "{body}: {v}");
            let message = v["error"]["message"].as_str().unwrap();
            assert!(message.contains("not allowed"), "{message}");
            if url.contains("localhost") {
                assert!(
                    !message.contains("127.0.0.1") && !message.contains("::1"),
                    "the resolved address is not shown: {message}"
                );
            }
        }
    }
    let (_, list) = app.get("/admin/v1/destinations").await;
    assert_eq!(list["destinations"], json!([]), "nothing was stored");
}

/// Starts a server on `db` that allows loopback (by the flag, not the
/// harness's environment) or not at all.
async fn server(db: &TestDb, name: &str, allow: bool) -> Server {
    let flags: &[&str] = if allow {
        &["--allow-outbound", "127.0.0.0/8,::1/128"]
    } else {
        &[]
    };
    Server::start_guarded(db, name, flags).await.unwrap()
}

async fn post_webhook(app: &TestApp, destination: &str, key: &str) -> Value {
    let (s, v) = app
        .post(
            "/admin/v1/directives",
            json!({
                "kind": "webhook.post",
                "args": { "destination": destination, "body": { "n": key } },
                "dedupe_key": key,
                "max_attempts": 2,
                "backoff": { "base_ms": 100 },
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&id, &["succeeded", "failed"], Duration::from_secs(20))
        .await
}

async fn connections_are_checked_again_when_made(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let tenant = create_tenant(&db, "acme").await.unwrap();
    let rec = Recorder::start().await;
    let port = rec.url.rsplit(':').next().unwrap().to_owned();
    let mut app = TestApp {
        server: server(&db, "allowed", true).await,
        db,
        tenant,
        http: http_client(),
    };
    // Allowed by the operator: a name that resolves to loopback, and a literal.
    app.webhook("by-name", &format!("http://localhost:{port}/by-name"))
        .await;
    app.webhook("by-ip", &format!("{}/by-ip", rec.url)).await;
    rec.script(
        "/by-name",
        [Reply {
            status: 200,
            headers: vec![],
            body: "y".repeat(5000),
        }],
    );
    let d = post_webhook(&app, "by-name", "first").await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(
        d["result"]["body"].as_str().unwrap().len(),
        1024,
        "an answer is kept to 1 KiB: {d}"
    );
    assert_eq!(
        post_webhook(&app, "by-ip", "first-ip").await["status"],
        "succeeded"
    );
    // Without the allowlist, the same stored destinations are refused when
    // the connection is made (by name: the resolver; by IP: before sending).
    app.server.stop().await.unwrap();
    app.server = server(&app.db, "guarded", false).await;
    for (dest, key) in [("by-name", "second"), ("by-ip", "second-ip")] {
        let d = post_webhook(&app, dest, key).await;
        assert_eq!(d["status"], "failed", "{d}");
        assert_eq!(d["attempts"], 1, "a refused address is not retried: {d}");
        let error = d["last_error"].as_str().unwrap();
        assert!(error.contains("destination_not_allowed"), "{error}");
        assert!(error.contains("not allowed"), "{error}");
    }
    assert_eq!(
        rec.received("/by-name").len(),
        1,
        "the receiver got nothing more"
    );
    assert_eq!(
        rec.received("/by-ip").len(),
        1,
        "the receiver got nothing more"
    );
}

/// `VmRSS` or `VmHWM` (peak) of a process, in bytes.
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

/// A receiver that answers every request with `total` bytes, streamed in
/// 64 KiB chunks without a length (chunked), never held in memory.
async fn huge_receiver(total: usize) -> String {
    let app = axum::Router::new().fallback(move || async move {
        const CHUNK: usize = 64 * 1024;
        let chunk = axum::body::Bytes::from(vec![b'x'; CHUNK]);
        let stream = futures::stream::iter(
            (0..total / CHUNK).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
        );
        axum::body::Body::from_stream(stream)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

async fn a_huge_answer_fails_the_attempt_and_memory_stays_bounded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let url = huge_receiver(400 * 1024 * 1024).await;
    app.webhook("huge", &format!("{url}/hook")).await;
    let pid = app.server.pid().expect("server pid");
    // Warm up: the first directive loads what any directive needs.
    let small = Recorder::start().await;
    app.webhook("small", &format!("{}/ok", small.url)).await;
    assert_eq!(
        post_webhook(&app, "small", "warm").await["status"],
        "succeeded"
    );
    let before = memory(pid, "VmRSS");
    let d = post_webhook(&app, "huge", "huge-1").await;
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["attempts"], 1, "a too-large answer is permanent: {d}");
    let error = d["last_error"].as_str().unwrap();
    assert!(error.contains("response_too_large"), "{error}");
    assert!(error.len() < 2048, "{error}");
    let after = memory(pid, "VmRSS");
    let peak = memory(pid, "VmHWM");
    const BOUND: u64 = 50 * 1024 * 1024;
    assert!(
        after < before + BOUND,
        "RSS grew from {before} to {after} bytes"
    );
    assert!(
        peak < before + BOUND,
        "peak RSS {peak} bytes, {before} before the answer"
    );
}

/// A server with the shipped rules, whose first visitor message of a
/// conversation is posted to the `mattermost` destination.
async fn spawn_with_rules(backend: Backend) -> TestApp {
    webchat::spawn_with_rules(backend, &[], |dir| {
        std::fs::copy(webchat::SHIPPED_RULES, dir.join("website_chat.toml")).unwrap();
    })
    .await
}

/// A site and a visitor token on it.
async fn visitor(app: &TestApp) -> (String, String) {
    let site = webchat::site(app).await;
    let token = webchat::visitor(app, site["public_key"].as_str().unwrap()).await;
    (site["site_id"].as_str().unwrap().to_owned(), token)
}

/// Sends a visitor message; returns the conversation id.
async fn say(app: &TestApp, token: &str, content: &str) -> String {
    let r = app
        .http
        .post(format!("{}/v1/widget/messages", app.server.url))
        .header("origin", ORIGIN)
        .bearer_auth(token)
        .json(&json!({ "client_message_id": uuid::Uuid::now_v7().to_string(), "content": content }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let v: Value = r.json().await.unwrap();
    v["conversation_id"].as_str().unwrap().to_owned()
}

async fn visitor_markdown_reaches_mattermost_escaped(backend: Backend) {
    let app = spawn_with_rules(backend).await;
    let mm = Recorder::start().await;
    let (s, v) = app
        .post(
            "/admin/v1/destinations",
            json!({ "name": "mattermost", "kind": "mattermost", "webhook_url": format!("{}/hooks/k3y", mm.url) }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, token) = visitor(&app).await;
    let conv = say(
        &app,
        &token,
        "![p](http://tracker.test/p.gif) [Open conversation](https://phish.test) <img src=x> **now** @channel",
    )
    .await;
    let posts = mm.wait_for("/hooks/k3y", 1, Duration::from_secs(10)).await;
    let text = posts[0].body["text"].as_str().unwrap();
    assert!(
        text.contains(r"\!\[p\]\(http\://tracker.test/p.gif\)"),
        "image escaped: {text}"
    );
    assert!(
        text.contains(r"\[Open conversation\]\(https\://phish.test\)"),
        "link escaped: {text}"
    );
    assert!(text.contains(r"\<img src=x\>"), "HTML escaped: {text}");
    assert!(text.contains(r"\*\*now\*\*"), "emphasis escaped: {text}");
    assert!(!text.contains("@channel"), "mention defused: {text}");
    // Exactly one live link: ours.
    assert_eq!(text.matches("](").count(), 1, "{text}");
    assert!(
        text.contains("](http://") && text.contains(&format!("/console/conversations/{conv})")),
        "our deep link stays a link: {text}"
    );
}

async fn credentials_in_visitor_text_are_stored_redacted(backend: Backend) {
    let app = spawn_with_rules(backend).await;
    let (_, token) = visitor(&app).await;
    let edge = "fpe_edge_01JZX8Y3K4M5N6P7Q8R9S0T1V2.Zm9vYmFyYmF6cXV4cXV1eHh5eg";
    let github = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789";
    let conv = say(
        &app,
        &token,
        &format!("my connector token is {edge} and my GitHub one {github}, can you help?"),
    )
    .await;
    let expected = "my connector token is [redacted credential] and my GitHub one [redacted credential], can you help?";
    let (s, v) = app.get(&format!("/admin/v1/conversations/{conv}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["messages"][0]["content"], expected, "{v}");
    let (_, tl) = app
        .get(&format!("/admin/v1/timeline?subject=conversation:{conv}"))
        .await;
    let received: Vec<&Value> = tl["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["entry"] == "signal" && e["type"] == "webchat.message.received")
        .collect();
    assert_eq!(received.len(), 1, "{tl}");
    assert_eq!(received[0]["payload"]["content"], expected, "{tl}");
    // Nowhere in the database, in any table.
    for (table, column) in [
        ("website_chat_messages", "content"),
        ("signals", "CAST(payload AS TEXT)"),
    ] {
        let n = app
            .db
            .scalar(&format!(
                "SELECT COUNT(*) FROM {table} WHERE {column} LIKE '%ghp_aBcDeF%' OR {column} LIKE '%fpe_edge_%'"
            ))
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} holds a credential");
    }
    // An admin-posted signal with a token inside its text is refused.
    let (s, v) = app
        .post(
            "/admin/v1/signals",
            json!({
                "type": "custom.note",
                "subject": "note:1",
                "payload": { "text": format!("the token is {edge}") },
                "dedupe_key": "note-1",
            }),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "secret_in_payload", "{v}");
}

async fn a_huge_grace_is_refused_on_the_directives_api(backend: Backend) {
    let app = spawn_with_rules(backend).await;
    let (site, _) = visitor(&app).await;
    for grace in [
        json!(1e12),
        json!(1_000_000_000_000u64),
        json!(7 * 86_400 + 1),
    ] {
        let (s, v) = app
            .post(
                "/admin/v1/directives",
                json!({
                    "kind": "webchat.site.rotate_secret",
                    "args": { "site_id": site, "from_key_id": 1, "grace_secs": grace },
                    "dedupe_key": format!("rotate-{grace}"),
                }),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{grace}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("7 days"),
            "{v}"
        );
    }
    // The sites API says the same, and a grace within the cap works on both.
    let (s, v) = app
        .post(
            &format!("/admin/v1/sites/{site}/rotate_secret"),
            json!({ "grace_secs": 7 * 86_400 + 1 }),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = app
        .post(
            "/admin/v1/directives",
            json!({
                "kind": "webchat.site.rotate_secret",
                "args": { "site_id": site, "from_key_id": 1, "grace_secs": 60 },
                "dedupe_key": "rotate-ok",
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

both_backends!(
    ssrf_is_refused_at_creation,
    connections_are_checked_again_when_made,
    a_huge_answer_fails_the_attempt_and_memory_stays_bounded,
    visitor_markdown_reaches_mattermost_escaped,
    credentials_in_visitor_text_are_stored_redacted,
    a_huge_grace_is_refused_on_the_directives_api,
);

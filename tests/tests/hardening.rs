//! The HTTP surface under hostile input, end to end over HTTP, on SQLite
//! and PostgreSQL: every error is JSON (unknown routes, wrong methods, bad
//! queries, bad paths, oversize bodies), and a NUL character in any string
//! of any route is refused with 400 `invalid_text` before anything is
//! written (PostgreSQL cannot store it, so it used to be a 500).

use axum::http::StatusCode;
use fleetprompt_system_tests::{Backend, TestApp, both_backends};
use serde_json::{Value, json};

const ORIGIN: &str = "https://shop.example.com";

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

    // A 10 MB admin body: a JSON 413, not axum's text/plain one.
    let big = format!(
        "{{\"type\":\"x.y\",\"subject\":\"s:1\",\"dedupe_key\":\"k\",\"payload\":{{\"pad\":\"{}\"}}}}",
        "a".repeat(10 * 1024 * 1024)
    );
    raw(
        &app,
        M::POST,
        "/admin/v1/signals",
        admin,
        Some(big.into_bytes()),
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
    let (s, site) = app
        .post(
            "/admin/v1/sites",
            json!({ "domains": ["shop.example.com"], "mode": "native" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{site}");
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

both_backends!(errors_are_json, nul_bytes_are_refused_everywhere);

//! Engine core, end to end: signals, directives, retries, failures, tenancy,
//! logs and metrics, on SQLite and on PostgreSQL.

use std::time::Duration;

use axum::http::StatusCode;
use fleetprompt_system_tests::{Backend, Recorder, Reply, TestApp, both_backends, create_tenant};
use serde_json::{Value, json};

both_backends!(
    signal_dedupe,
    signal_validation,
    directive_dedupe_creates_one_job,
    retries_with_growing_backoff_then_succeeds,
    permanent_failure_is_failed_after_one_attempt_and_can_be_redriven,
    closing_a_missing_conversation_fails_once,
    retry_after_is_honoured,
    cancel_pending_directive,
    tenants_cannot_see_each_other,
    admin_api_requires_a_valid_token,
    logs_hold_no_secrets,
    metrics_and_health,
);

async fn signal_dedupe(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = json!({
        "type": "webchat.message.received",
        "subject": "conversation:c1",
        "payload": { "content": "hello" },
        "dedupe_key": "msg-1"
    });
    let (s1, v1) = app.post("/admin/v1/signals", body.clone()).await;
    assert_eq!(s1, StatusCode::CREATED, "{v1}");
    assert!(v1["id"].as_str().unwrap().starts_with("sig_"));
    assert!(v1.get("duplicate").is_none());
    let (s2, v2) = app.post("/admin/v1/signals", body).await;
    assert_eq!(s2, StatusCode::OK, "{v2}");
    assert_eq!(v2["id"], v1["id"]);
    assert_eq!(v2["duplicate"], true);
    // This tenant's: the demo tenant of an embedded database has its own.
    let n = app
        .db
        .scalar(&format!(
            "SELECT COUNT(*) FROM signals WHERE tenant_id = '{}'",
            app.tenant.id
        ))
        .await
        .unwrap();
    assert_eq!(n, 1);
}

async fn signal_validation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (payload, code) in [
        (json!({ "password": "hunter2" }), "secret_in_payload"),
        (
            json!({ "nested": { "access_token": "x" } }),
            "secret_in_payload",
        ),
        (
            json!({ "note": app.tenant.token.clone() }),
            "secret_in_payload",
        ),
        (json!({ "auth": "Bearer abc" }), "secret_in_payload"),
    ] {
        let (s, v) = app
            .post(
                "/admin/v1/signals",
                json!({ "type": "custom.thing", "subject": "s:1", "payload": payload, "dedupe_key": "k" }),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
    }
    let (s, v) = app
        .post(
            "/admin/v1/signals",
            json!({ "type": "Bad Type", "subject": "s:1", "dedupe_key": "k" }),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("type"),
        "{v}"
    );
    let (s, v) = app
        .post(
            "/admin/v1/signals",
            json!({ "type": "a.b", "subject": "s:1", "dedupe_key": "k", "tenant_id": "ten_x" }),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown fields are refused: {v}"
    );
    // Not JSON at all.
    let resp = app
        .http
        .post(format!("{}/admin/v1/signals", app.server.url))
        .bearer_auth(&app.tenant.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "bad_request");
    assert_eq!(
        app.db
            .scalar(&format!(
                "SELECT COUNT(*) FROM signals WHERE tenant_id = '{}'",
                app.tenant.id
            ))
            .await
            .unwrap(),
        0,
        "nothing refused was written"
    );
}

async fn directive_dedupe_creates_one_job(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = json!({ "kind": "noop", "dedupe_key": "once", "subject": "order:1" });
    let (s1, v1) = app.post("/admin/v1/directives", body.clone()).await;
    assert_eq!(s1, StatusCode::CREATED, "{v1}");
    assert_eq!(v1["duplicate"], false);
    let (s2, v2) = app.post("/admin/v1/directives", body).await;
    assert_eq!(s2, StatusCode::OK, "{v2}");
    assert_eq!(v2["id"], v1["id"]);
    assert_eq!(v2["duplicate"], true);
    let id = v1["id"].as_str().unwrap();
    let done = app
        .wait_for_status(id, &["succeeded"], Duration::from_secs(10))
        .await;
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["attempt_log"].as_array().unwrap().len(), 1);
    // A third request after it ran still creates nothing.
    let (s3, v3) = app
        .post(
            "/admin/v1/directives",
            json!({ "kind": "noop", "dedupe_key": "once" }),
        )
        .await;
    assert_eq!(s3, StatusCode::OK);
    assert_eq!(v3["status"], "succeeded");
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM directives")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM directive_attempts")
            .await
            .unwrap(),
        1
    );
    // Its result signal is in the subject's timeline, caused by the directive.
    let (_, t) = app.get("/admin/v1/timeline?subject=order:1").await;
    let entries = t["entries"].as_array().unwrap();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["entry"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["directive", "attempt", "signal"], "{t}");
    assert_eq!(entries[2]["type"], "directive.succeeded");
    assert_eq!(entries[2]["caused_by"], v1["id"]);
}

fn attempt_times(d: &Value) -> Vec<(i64, i64)> {
    d["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let t = |k: &str| chrono_ms(a[k].as_str().unwrap());
            (t("started_at"), t("finished_at"))
        })
        .collect()
}

fn chrono_ms(s: &str) -> i64 {
    // RFC 3339 with milliseconds and Z, e.g. 2026-11-25T20:58:43.986Z.
    let (date, time) = s.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, ms) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    // Days since epoch (civil from days, Howard Hinnant's algorithm).
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    ((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + ms.parse::<i64>().unwrap()
}

async fn retries_with_growing_backoff_then_succeeds(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let hook = Recorder::start().await;
    hook.script(
        "/flaky",
        [Reply::status(503), Reply::status(503), Reply::status(200)],
    );
    let dest = app.webhook("flaky", &format!("{}/flaky", hook.url)).await;
    let (s, v) = app
        .post(
            "/admin/v1/directives",
            json!({
                "kind": "webhook.post",
                "args": { "destination": "flaky", "body": { "hello": "world" } },
                "dedupe_key": "flaky-1",
                "backoff": { "base_ms": 300, "factor": 2.0 }
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap();
    let d = app
        .wait_for_status(id, &["succeeded", "failed"], Duration::from_secs(20))
        .await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(d["attempts"], 3);
    let log = d["attempt_log"].as_array().unwrap();
    let outcomes: Vec<&str> = log.iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["retrying", "retrying", "succeeded"]);
    assert_eq!(log[0]["http_status"], 503);
    assert_eq!(log[2]["http_status"], 200);
    let times = attempt_times(&d);
    let gap1 = times[1].0 - times[0].1;
    let gap2 = times[2].0 - times[1].1;
    assert!(
        gap1 >= 240,
        "first retry waited {gap1} ms, expected ~300 ms"
    );
    assert!(gap2 > gap1, "backoff must grow: {gap1} ms then {gap2} ms");
    // The receiver saw three deliveries of the same signed message.
    let got = hook.received("/flaky");
    assert_eq!(got.len(), 3);
    for r in &got {
        assert_eq!(r.body, json!({ "hello": "world" }));
        assert_eq!(r.headers["webhook-id"], id);
        assert!(
            r.headers["webhook-signature"]
                .to_str()
                .unwrap()
                .starts_with("v1,")
        );
    }
    // The signature verifies with the secret shown once at registration.
    let secret = dest["signing_secret"].as_str().unwrap();
    let r = &got[2];
    let expected = fleetprompt_connectors_sign(secret, id, r);
    assert_eq!(r.headers["webhook-signature"].to_str().unwrap(), expected);
}

/// Recomputes a Standard Webhooks signature, independently of the server.
fn fleetprompt_connectors_sign(
    secret: &str,
    id: &str,
    r: &fleetprompt_system_tests::Received,
) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let ts = r.headers["webhook-timestamp"].to_str().unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{}", r.body).as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// A conversation that does not exist cannot appear by retrying: closing
/// it fails at the first attempt instead of using up the retry budget.
async fn closing_a_missing_conversation_fails_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let missing = fleetprompt_webchat::types::id::ConversationId::new();
    let (s, v) = app
        .post(
            "/admin/v1/directives",
            json!({
                "kind": "webchat.conversation.close",
                "args": { "conversation_id": missing },
                "dedupe_key": "close-missing",
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let d = app
        .wait_for_status(&id, &["failed", "succeeded"], Duration::from_secs(10))
        .await;
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["attempts"], 1, "{d}");
    assert_eq!(d["attempt_log"].as_array().unwrap().len(), 1, "{d}");
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("conversation does not exist"),
        "{d}"
    );
}

async fn permanent_failure_is_failed_after_one_attempt_and_can_be_redriven(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let hook = Recorder::start().await;
    hook.script("/gone", [Reply::status(404)]);
    app.webhook("gone", &format!("{}/gone", hook.url)).await;
    let (_, v) = app
        .post(
            "/admin/v1/directives",
            json!({ "kind": "webhook.post", "args": { "destination": "gone" }, "dedupe_key": "gone-1", "subject": "conversation:9" }),
        )
        .await;
    let id = v["id"].as_str().unwrap().to_owned();
    let d = app
        .wait_for_status(&id, &["failed", "succeeded"], Duration::from_secs(10))
        .await;
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["attempts"], 1);
    assert_eq!(d["attempt_log"][0]["outcome"], "failed");
    assert_eq!(d["attempt_log"][0]["http_status"], 404);
    assert!(d["last_error"].as_str().unwrap().contains("404"));
    let (_, t) = app.get("/admin/v1/timeline?subject=conversation:9").await;
    let failed: Vec<&Value> = t["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "directive.failed")
        .collect();
    assert_eq!(failed.len(), 1, "{t}");
    assert_eq!(failed[0]["caused_by"], json!(id));
    // Visible among failed directives, and re-drivable.
    let (_, list) = app.get("/admin/v1/directives?status=failed").await;
    assert_eq!(list["directives"].as_array().unwrap().len(), 1);
    let (s, r) = app
        .post(&format!("/admin/v1/directives/{id}/retry"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let d = app
        .wait_for_status(&id, &["succeeded"], Duration::from_secs(10))
        .await;
    assert_eq!(d["attempts"], 2);
    // A succeeded directive cannot be re-driven or cancelled.
    let (s, r) = app
        .post(&format!("/admin/v1/directives/{id}/retry"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{r}");
    assert_eq!(r["error"]["code"], "invalid_state");
}

async fn retry_after_is_honoured(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let hook = Recorder::start().await;
    hook.script(
        "/busy",
        [Reply {
            status: 429,
            headers: vec![("retry-after".into(), "2".into())],
            body: "slow down".into(),
        }],
    );
    app.webhook("busy", &format!("{}/busy", hook.url)).await;
    let (_, v) = app
        .post(
            "/admin/v1/directives",
            json!({ "kind": "webhook.post", "args": { "destination": "busy" }, "dedupe_key": "busy-1",
                    "backoff": { "base_ms": 100 } }),
        )
        .await;
    let id = v["id"].as_str().unwrap();
    let d = app
        .wait_for_status(id, &["succeeded"], Duration::from_secs(15))
        .await;
    let times = attempt_times(&d);
    assert_eq!(times.len(), 2);
    let gap = times[1].0 - times[0].1;
    assert!(
        gap >= 1900,
        "Retry-After: 2 must delay the retry by ~2 s, not the 100 ms backoff; waited {gap} ms"
    );
    assert_eq!(d["attempt_log"][0]["http_status"], 429);
}

async fn cancel_pending_directive(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, v) = app
        .post(
            "/admin/v1/directives",
            json!({ "kind": "noop", "dedupe_key": "later", "delay_ms": 60_000 }),
        )
        .await;
    let id = v["id"].as_str().unwrap();
    assert_eq!(v["status"], "pending");
    let (s, c) = app
        .post(&format!("/admin/v1/directives/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["status"], "cancelled");
    let (s, c) = app
        .post(&format!("/admin/v1/directives/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{c}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, d) = app.get(&format!("/admin/v1/directives/{id}")).await;
    assert_eq!(d["status"], "cancelled");
    assert_eq!(d["attempts"], 0, "a cancelled directive never runs");
}

async fn tenants_cannot_see_each_other(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let other = create_tenant(&app.db, "globex").await.unwrap();
    let hook = Recorder::start().await;
    app.webhook("mine", &format!("{}/mine", hook.url)).await;
    let (_, v) = app
        .post("/admin/v1/directives", json!({ "kind": "noop", "dedupe_key": "shared-key", "subject": "order:7", "delay_ms": 60_000 }))
        .await;
    let id = v["id"].as_str().unwrap();
    app.post(
        "/admin/v1/signals",
        json!({ "type": "a.b", "subject": "order:7", "dedupe_key": "shared-key" }),
    )
    .await;
    use reqwest::Method;
    for (m, p) in [
        (Method::GET, format!("/admin/v1/directives/{id}")),
        (Method::POST, format!("/admin/v1/directives/{id}/cancel")),
        (Method::POST, format!("/admin/v1/directives/{id}/retry")),
    ] {
        let (s, v) = app.request_as(&other.token, m, &p, Some(json!({}))).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{p}: {v}");
    }
    let (_, t) = app
        .request_as(
            &other.token,
            Method::GET,
            "/admin/v1/timeline?subject=order:7",
            None,
        )
        .await;
    assert_eq!(t["entries"], json!([]));
    let (_, l) = app
        .request_as(&other.token, Method::GET, "/admin/v1/directives", None)
        .await;
    assert_eq!(l["directives"], json!([]));
    let (_, d) = app
        .request_as(&other.token, Method::GET, "/admin/v1/destinations", None)
        .await;
    assert_eq!(d["destinations"], json!([]));
    // Another tenant's destination name cannot be used either.
    let (s, e) = app
        .request_as(
            &other.token,
            Method::POST,
            "/admin/v1/directives",
            Some(json!({ "kind": "webhook.post", "args": { "destination": "mine" }, "dedupe_key": "x" })),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    // Dedupe keys are per tenant: the same key is a new directive for globex.
    let (s, _) = app
        .request_as(
            &other.token,
            Method::POST,
            "/admin/v1/directives",
            Some(json!({ "kind": "noop", "dedupe_key": "shared-key" })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, still) = app.get(&format!("/admin/v1/directives/{id}")).await;
    assert_eq!(still["status"], "pending");
}

async fn admin_api_requires_a_valid_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let url = format!("{}/admin/v1/directives", app.server.url);
    let forged = {
        let (id, _) = app.tenant.token.split_once('.').unwrap();
        format!("{id}.not-the-secret")
    };
    for auth in [
        None,
        Some("Bearer nope".to_owned()),
        Some(format!("Bearer {forged}")),
        Some(format!("Basic {}", app.tenant.token)),
    ] {
        let mut req = app.http.get(&url);
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{auth:?}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unauthorized");
    }
}

async fn logs_hold_no_secrets(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let hook = Recorder::start().await;
    hook.script("/h", [Reply::status(500)]);
    let dest_url = format!("{}/h?key=supersecretquerykey", hook.url);
    let dest = app.webhook("h", &dest_url).await;
    assert!(
        !dest.to_string().contains("supersecretquerykey"),
        "destination URL secrets are never echoed: {dest}"
    );
    let (_, d) = app
        .post(
            "/admin/v1/directives",
            json!({ "kind": "webhook.post", "args": { "destination": "h" }, "dedupe_key": "h1",
                                              "backoff": { "base_ms": 50 } }),
        )
        .await;
    app.wait_for_status(
        d["id"].as_str().unwrap(),
        &["succeeded"],
        Duration::from_secs(10),
    )
    .await;
    let _ = app
        .request_as(
            "fpa_tok_bogus.secretvalue123",
            reqwest::Method::GET,
            "/admin/v1/directives",
            None,
        )
        .await;
    let mut server = app.server;
    server.stop().await.unwrap();
    let logs = server.logs();
    assert!(
        logs.contains("directive worker started"),
        "the log was captured"
    );
    let (_, secret_half) = app.tenant.token.split_once('.').unwrap();
    for needle in [
        app.tenant.token.as_str(),
        secret_half,
        dest["signing_secret"].as_str().unwrap(),
        "supersecretquerykey",
        "secretvalue123",
        fleetprompt_system_tests::MASTER_KEY,
    ] {
        assert!(!logs.contains(needle), "log contains a secret ({needle})");
    }
    let signals = app.db.scalar("SELECT COUNT(*) FROM signals WHERE payload LIKE '%supersecretquerykey%' OR payload LIKE '%whsec_%'").await.unwrap();
    assert_eq!(signals, 0, "no secret reached a signal");
}

async fn metrics_and_health(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, v) = app
        .post(
            "/admin/v1/directives",
            json!({ "kind": "noop", "dedupe_key": "m1" }),
        )
        .await;
    app.post(
        "/admin/v1/directives",
        json!({ "kind": "noop", "dedupe_key": "m1" }),
    )
    .await;
    app.post(
        "/admin/v1/signals",
        json!({ "type": "webchat.message.received", "subject": "c:1", "dedupe_key": "s" }),
    )
    .await;
    app.wait_for_status(
        v["id"].as_str().unwrap(),
        &["succeeded"],
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let get = |p: &str| app.http.get(format!("{}{p}", app.server.url)).send();
    assert_eq!(get("/healthz").await.unwrap().status().as_u16(), 200);
    assert_eq!(get("/readyz").await.unwrap().status().as_u16(), 200);
    let text = get("/metrics").await.unwrap().text().await.unwrap();
    for needle in [
        r#"fleetprompt_signals_recorded_total{type="webchat.message.received"} 1"#,
        r#"fleetprompt_directives_created_total{kind="noop"} 1"#,
        r#"fleetprompt_directives_deduplicated_total{kind="noop"} 1"#,
        r#"fleetprompt_directive_attempts_total{kind="noop",outcome="succeeded"} 1"#,
        "fleetprompt_directive_attempt_duration_seconds_bucket",
        "fleetprompt_directives_pending ",
        r#"fleetprompt_http_requests_total{route="/admin/v1/directives",status="201"} 1"#,
        "fleetprompt_http_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}:\n{text}");
    }
    for line in text
        .lines()
        .filter(|l| l.starts_with("# TYPE fleetprompt_"))
    {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no description"
        );
    }
}

//! Edge Connectors against the real server: registration (admin API and
//! CLI), heartbeats, the last-seen gauge, token refusals, the edge lane of
//! the queue (claims, results, fencing, reaping) over plain HTTP, and the
//! real `fleetprompt-edge` binary delivering to a real SMTP server on
//! loopback ([`SmtpSink`]).

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use fleetprompt_system_tests::webchat::timeline;
use fleetprompt_system_tests::{
    Backend, Edge, Server, SmtpSink, TcpProxy, TestApp, TestDb, both_backends, cli, create_tenant,
    http_client,
};
use serde_json::{Value, json};

both_backends!(
    connectors_register_heartbeat_and_report_last_seen,
    bad_tokens_are_refused_alike,
    edge_tasks_are_claimed_by_their_tenants_connector_and_completed_like_platform_ones,
    the_edge_binary_delivers_retries_and_fails_email_through_real_smtp,
    a_bridge_like_ca_certificate_is_trusted_when_pinned_and_checked,
    a_crash_between_250_and_the_report_sends_once,
    the_server_down_while_reporting_is_caught_up,
    a_lease_that_expires_mid_data_is_sent_once_by_the_next_run,
    bridge_replies_451_then_250_are_retried_and_554_fails_with_its_text,
);

/// A rule that escalates every `order.created` to email.
const EMAIL_RULE: &str = r#"[[rule]]
id = "email-the-team"
on = "order.created"

[[rule.directive]]
kind = "webchat.escalate_to_email"
dedupe_key = "email:{{ signal.id }}"
args = { conversation_id = "{{ signal.payload.conversation_id }}", to = "team@example.com" }
"#;

/// A server whose tenant `acme` escalates `order.created` to email, with a
/// quick reaper.
pub async fn email_app(backend: Backend) -> TestApp {
    let db = TestDb::new(backend).await.expect("test database");
    let wf = db.dir.join("workflows");
    std::fs::create_dir_all(wf.join("tenants/acme")).unwrap();
    std::fs::write(wf.join("tenants/acme/rules.toml"), EMAIL_RULE).unwrap();
    let tenant = create_tenant(&db, "acme").await.expect("tenant");
    let server = Server::start(&db, "server", &["--workflows", wf.to_str().unwrap()])
        .await
        .expect("server");
    TestApp {
        db,
        server,
        tenant,
        http: http_client(),
    }
}

/// A fresh conversation id, as the widget would have made.
fn conversation_id() -> String {
    format!("conv_{}", uuid::Uuid::now_v7().simple())
}

/// Records an `order.created` about `conv` (the rule escalates it).
async fn escalate(app: &TestApp, conv: &str) {
    let (s, v) = app
        .post(
            "/admin/v1/signals",
            json!({ "type": "order.created", "subject": format!("conversation:{conv}"),
                    "payload": { "conversation_id": conv }, "dedupe_key": format!("order:{conv}") }),
        )
        .await;
    assert!(s.is_success(), "{v}");
}

/// Waits for the tenant's `email.send` directive about `conv`.
async fn email_task(app: &TestApp, conv: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, v) = app.get("/admin/v1/directives?limit=1000").await;
        if let Some(d) = v["directives"].as_array().into_iter().flatten().find(|d| {
            d["kind"] == "email.send" && d["subject"] == format!("conversation:{conv}").as_str()
        }) {
            return d.clone();
        }
        assert!(Instant::now() < deadline, "no email.send for {conv}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn claim(app: &TestApp, token: &str, body: Value) -> (StatusCode, Value) {
    app.request_as(
        token,
        reqwest::Method::POST,
        "/edge/v1/tasks/claim",
        Some(body),
    )
    .await
}

async fn report(app: &TestApp, token: &str, id: &str, body: Value) -> (StatusCode, Value) {
    app.request_as(
        token,
        reqwest::Method::POST,
        &format!("/edge/v1/tasks/{id}/result"),
        Some(body),
    )
    .await
}

fn has_signal(entries: &[Value], t: &str) -> bool {
    entries
        .iter()
        .any(|e| e["entry"] == "signal" && (e["type"] == t || e["signal_type"] == t))
}

async fn edge_tasks_are_claimed_by_their_tenants_connector_and_completed_like_platform_ones(
    backend: Backend,
) {
    let app = email_app(backend).await;
    let (_, token) = connector(&app, "bridge-host").await;
    let other = create_tenant(&app.db, "other").await.unwrap();
    let v = app.edge_connector_as(&other.token, "theirs").await;
    let foreign = v["token"].as_str().unwrap().to_owned();

    let conv = conversation_id();
    escalate(&app, &conv).await;
    let task = email_task(&app, &conv).await;
    let id = task["id"].as_str().unwrap().to_owned();
    assert_eq!(task["args"]["to"], "team@example.com");
    assert!(
        task["args"]["text"].as_str().unwrap().contains(&conv),
        "{task}"
    );
    // Due at once (not parked), and no platform worker takes it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, d) = app.get(&format!("/admin/v1/directives/{id}")).await;
    assert_eq!(d["status"], "pending", "{d}");
    assert_eq!(d["attempts"], 0, "{d}");

    // Bad claims are refused with JSON errors.
    let (s, v) = claim(&app, &token, json!({ "kinds": ["webhook.post"] })).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = claim(&app, "fpe_bogus", json!({ "kinds": ["email.send"] })).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["code"], "unauthorized");

    // Another tenant's connector sees nothing and cannot report on it.
    let (s, v) = claim(
        &app,
        &foreign,
        json!({ "kinds": ["email.send"], "wait_ms": 300 }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["tasks"], json!([]), "{v}");

    // Attempt 1: claimed, then a 4xx: retried with backoff.
    let (s, v) = claim(&app, &token, json!({ "kinds": ["email.send"], "limit": 5 })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let tasks = v["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{v}");
    assert_eq!(tasks[0]["id"], id.as_str());
    assert_eq!(tasks[0]["attempt"], 1);
    let (_, d) = app.get(&format!("/admin/v1/directives/{id}")).await;
    assert_eq!(d["status"], "running", "{d}");
    let (s, v) = report(
        &app,
        &foreign,
        &id,
        json!({ "attempt": 1, "outcome": "succeeded" }),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = report(
        &app,
        &token,
        &id,
        json!({ "attempt": 1, "outcome": "retry", "error": "451 try later", "smtp_code": 451 }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "pending", "{v}");
    // A stale report of the same attempt is fenced off.
    let (s, v) = report(
        &app,
        &token,
        &id,
        json!({ "attempt": 1, "outcome": "succeeded" }),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    // Attempt 2 comes due after the backoff (2 s ± 20 %): a long poll waits.
    let started = Instant::now();
    let (s, v) = claim(
        &app,
        &token,
        json!({ "kinds": ["email.send"], "wait_ms": 10000, "lease_ms": 1000 }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["tasks"][0]["attempt"], 2, "{v}");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    // Its 1 s lease runs out unreported: the reaper takes it back.
    let d = app
        .wait_for_status(&id, &["pending"], Duration::from_secs(10))
        .await;
    assert_eq!(d["attempts"], 2, "{d}");
    let (s, v) = report(
        &app,
        &token,
        &id,
        json!({ "attempt": 2, "outcome": "succeeded" }),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    // Attempt 3 is delivered.
    let (s, v) = claim(
        &app,
        &token,
        json!({ "kinds": ["email.send"], "wait_ms": 10000 }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["tasks"][0]["attempt"], 3, "{v}");
    let (s, v) = report(
        &app,
        &token,
        &id,
        json!({ "attempt": 3, "outcome": "succeeded", "smtp_code": 250, "external_ref": format!("<{id}@edge.fleetprompt>") }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "succeeded", "{v}");
    let (_, d) = app.get(&format!("/admin/v1/directives/{id}")).await;
    let log = d["attempt_log"].as_array().unwrap();
    let outcomes: Vec<&str> = log.iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["retrying", "lease_expired", "succeeded"], "{d}");
    assert_eq!(log[0]["http_status"], 451);
    assert_eq!(log[2]["http_status"], 250);
    assert!(
        log[2]["worker"].as_str().unwrap().starts_with("edge:edge_"),
        "{d}"
    );
    assert!(has_signal(
        &timeline(&app, &conv).await,
        "email.outbound.sent"
    ));
    assert!(has_signal(
        &timeline(&app, &conv).await,
        "email.outbound.requested"
    ));
    assert!(!app.server.logs().contains(&token));

    // A long poll in progress does not hold up the server's graceful stop.
    let poll = {
        let http = app.http.clone();
        let url = format!("{}/edge/v1/tasks/claim", app.server.url);
        let token = token.clone();
        tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "kinds": ["email.send"], "wait_ms": 20000 }))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut app = app;
    let stopping = Instant::now();
    app.server.stop().await.unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "{:?}",
        stopping.elapsed()
    );
    let (status, v) = poll.await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["tasks"], json!([]));
}

/// Registers a connector through the admin API; returns (id, token).
async fn connector(app: &TestApp, name: &str) -> (String, String) {
    let v = app.edge_connector_as(&app.tenant.token, name).await;
    let token = v["token"].as_str().expect("token shown once").to_owned();
    assert!(token.starts_with("fpe_edge_"), "{token}");
    (v["id"].as_str().unwrap().to_owned(), token)
}

async fn heartbeat(app: &TestApp, token: &str) -> (StatusCode, Value) {
    app.request_as(
        token,
        reqwest::Method::POST,
        "/edge/v1/heartbeat",
        Some(json!({ "version": "0.1.0-test" })),
    )
    .await
}

async fn connectors_register_heartbeat_and_report_last_seen(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (id, token) = connector(&app, "bridge-host").await;

    // Listed without its token, never seen yet.
    let (s, v) = app.get("/admin/v1/edge-connectors").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let listed = &v["edge_connectors"][0];
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(listed["name"], "bridge-host");
    assert!(listed["last_seen_at"].is_null(), "{listed}");
    assert!(
        !v.to_string().contains(&token),
        "the token must not be listed"
    );

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let (s, v) = heartbeat(&app, &token).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["connector_id"], id.as_str());
    assert_eq!(v["tenant_id"], app.tenant.id.as_str());
    let (_, v) = app.get("/admin/v1/edge-connectors").await;
    assert!(v["edge_connectors"][0]["last_seen_at"].is_string(), "{v}");
    assert_eq!(v["edge_connectors"][0]["version"], "0.1.0-test");

    // The gauge is refreshed from the database by the periodic upkeep.
    let line_start =
        format!("fleetprompt_edge_connector_last_seen_timestamp_seconds{{connector=\"{id}\"}} ");
    let deadline = Instant::now() + Duration::from_secs(10);
    let value = loop {
        let text = app.metrics().await;
        if let Some(l) = text.lines().find(|l| l.starts_with(&line_start)) {
            break l[line_start.len()..].trim().parse::<f64>().unwrap();
        }
        assert!(Instant::now() < deadline, "no last-seen gauge:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        value >= before - 1.0 && value <= before + 30.0,
        "{value} vs {before}"
    );

    // The server never logs a token.
    assert!(!app.server.logs().contains(&token));

    // Revoked: the token stops working at once.
    let (s, v) = app
        .post(&format!("/admin/v1/edge-connectors/{id}/revoke"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["revoked_at"].is_string(), "{v}");
    let (s, v) = heartbeat(&app, &token).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    // Its last-seen series leaves /metrics (twelve upkeep passes of 500 ms
    // later), so the silent-connector alert does not fire for it forever;
    // the queue's gauges, refreshed by every pass, stay.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = app.metrics().await;
        if !text.lines().any(|l| l.starts_with(&line_start)) {
            assert!(
                text.lines()
                    .any(|l| l.starts_with("fleetprompt_directives_pending ")),
                "{text}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a revoked connector's last-seen gauge stayed:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The CLI registers connectors too, printing the token once.
    let out = cli(
        &app.db,
        &[
            "edge-connector",
            "create",
            "--tenant",
            "acme",
            "--name",
            "second",
            "--json",
        ],
    )
    .await
    .unwrap();
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let (s, hb) = heartbeat(&app, v["token"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{hb}");
    let out = cli(&app.db, &["edge-connector", "list", "--tenant", "acme"])
        .await
        .unwrap();
    assert!(out.contains("second") && out.contains("revoked"), "{out}");
    assert!(!out.contains("fpe_"), "{out}");
}

async fn bad_tokens_are_refused_alike(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (id, token) = connector(&app, "bridge-host").await;
    let (secret_less, _) = token.split_once('.').unwrap();
    let wrong_secret = format!("{secret_less}.not-the-secret");
    let unknown = format!("fpe_edge_{}.secret", "0".repeat(32));
    for bad in [
        wrong_secret.as_str(),
        unknown.as_str(),
        "fpe_nonsense",
        // An admin token is not a connector token.
        app.tenant.token.as_str(),
        "",
    ] {
        let (s, v) = heartbeat(&app, bad).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{bad}: {v}");
        assert_eq!(v["error"]["code"], "unauthorized", "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("fpe_"));
    }
    // And a connector token is not an admin token.
    let (s, _) = app
        .request_as(&token, reqwest::Method::GET, "/admin/v1/directives", None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Another tenant cannot revoke it.
    let other = fleetprompt_system_tests::create_tenant(&app.db, "other")
        .await
        .unwrap();
    let (s, _) = app
        .request_as(
            &other.token,
            reqwest::Method::POST,
            &format!("/admin/v1/edge-connectors/{id}/revoke"),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = heartbeat(&app, &token).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!app.server.logs().contains(&token));
}

async fn the_edge_binary_delivers_retries_and_fails_email_through_real_smtp(backend: Backend) {
    let app = email_app(backend).await;
    let (connector_id, token) = connector(&app, "bridge-host").await;
    let sink = SmtpSink::start().await;
    // The first email is refused with a 4xx, then accepted.
    sink.script([451, 250]);
    let mut edge = Edge::start(&app.db.dir, &app.server, &token, &sink, &[]).unwrap();

    let conv = conversation_id();
    escalate(&app, &conv).await;
    let task = email_task(&app, &conv).await;
    let id = task["id"].as_str().unwrap().to_owned();
    let d = app
        .wait_for_status(&id, &["succeeded", "failed"], Duration::from_secs(30))
        .await;
    assert_eq!(d["status"], "succeeded", "{d}\n{}", edge.logs());
    let (_, d) = app.get(&format!("/admin/v1/directives/{id}")).await;
    let log = d["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 2, "{d}");
    assert_eq!(log[0]["outcome"], "retrying");
    assert_eq!(log[0]["http_status"], 451);
    assert_eq!(log[1]["outcome"], "succeeded");
    assert_eq!(log[1]["http_status"], 250);
    let message_id = format!("<{id}@edge.fleetprompt>");
    assert_eq!(log[1]["external_ref"], message_id.as_str());
    assert_eq!(sink.replies(), [451, 250]);

    // The email: to the rule's recipient, from the connector's sender, with
    // a Message-ID derived from the directive and a link to the chat.
    let mails = sink.accepted();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.to, ["<team@example.com>"]);
    assert_eq!(mail.from, "<support@acme.example>");
    assert_eq!(
        mail.header("Message-ID").as_deref(),
        Some(message_id.as_str())
    );
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some(
            format!(
                "[FleetPrompt] Conversation with a visitor on your website (#{})",
                &conv[conv.len() - 4..]
            )
            .as_str()
        )
    );
    assert!(
        mail.body_text()
            .contains(&format!("/console/conversations/{conv}")),
        "{}",
        mail.data
    );

    let entries = timeline(&app, &conv).await;
    assert!(has_signal(&entries, "email.outbound.requested"));
    assert!(has_signal(&entries, "email.outbound.sent"));

    // A 5xx fails the task for good, with email.outbound.failed.
    sink.script([550]);
    let conv2 = conversation_id();
    escalate(&app, &conv2).await;
    let id2 = email_task(&app, &conv2).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = app
        .wait_for_status(&id2, &["succeeded", "failed"], Duration::from_secs(30))
        .await;
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["attempts"], 1, "{d}");
    let (_, d) = app.get(&format!("/admin/v1/directives/{id2}")).await;
    assert_eq!(d["attempt_log"][0]["http_status"], 550, "{d}");
    assert!(has_signal(
        &timeline(&app, &conv2).await,
        "email.outbound.failed"
    ));
    assert_eq!(sink.accepted().len(), 1);

    // Its heartbeats were recorded.
    let (_, v) = app.get("/admin/v1/edge-connectors").await;
    let c = v["edge_connectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == connector_id.as_str())
        .unwrap();
    assert!(c["last_seen_at"].is_string(), "{c}");

    // SIGTERM: a clean, prompt exit. The token is in neither log.
    let status = edge.stop().await.unwrap();
    assert!(status.success(), "{status}\n{}", edge.logs());
    assert!(!edge.logs().contains(&token), "{}", edge.logs());
    assert!(!app.server.logs().contains(&token));

    // A revoked token stops a connector at start with an error.
    let (s, _) = app
        .post(
            &format!("/admin/v1/edge-connectors/{connector_id}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let mut refused = Edge::start(&app.db.dir, &app.server, &token, &sink, &[]).unwrap();
    let status = refused.wait(Duration::from_secs(15)).await.unwrap();
    assert!(!status.success());
    assert!(
        refused.logs().contains("refused the connector token"),
        "{}",
        refused.logs()
    );
}

/// STARTTLS (the default, as with Proton Mail Bridge): the connector sends
/// only to a server whose certificate it trusts (`--smtp-ca-file`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_goes_over_starttls_and_only_to_a_trusted_certificate() {
    let app = email_app(Backend::Sqlite).await;
    let (_, token) = connector(&app, "bridge-host").await;
    let sink = SmtpSink::start_tls().await;

    // A connector told to trust another certificate: the handshake fails,
    // the attempt is retried, nothing is sent.
    let mut impostor = sink.clone();
    impostor.cert_pem = SmtpSink::start_tls().await.cert_pem;
    let mut wrong = Edge::start(&app.db.dir, &app.server, &token, &impostor, &[]).unwrap();
    let conv = conversation_id();
    escalate(&app, &conv).await;
    let id = email_task(&app, &conv).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = first_attempt(&app, &id, &wrong).await;
    assert_eq!(first["outcome"], "retrying", "{first}");
    assert!(sink.accepted().is_empty());
    assert!(wrong.stop().await.unwrap().success());

    // The right certificate: delivered, over TLS.
    let mut edge = Edge::start(&app.db.dir, &app.server, &token, &sink, &[]).unwrap();
    let d = app
        .wait_for_status(&id, &["succeeded", "failed"], Duration::from_secs(30))
        .await;
    assert_eq!(d["status"], "succeeded", "{d}\n{}", edge.logs());
    let mails = sink.accepted();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].tls, "the email must arrive after STARTTLS");
    assert!(edge.stop().await.unwrap().success());
}

/// Waits up to 20 s for the first attempt on `id`; returns it.
async fn first_attempt(app: &TestApp, id: &str, edge: &Edge) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, d) = app.get(&format!("/admin/v1/directives/{id}")).await;
        if let Some(a) = d["attempt_log"].as_array().and_then(|l| l.first()) {
            return a.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no attempt: {d}\n{}",
            edge.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for `id` to finish; asserts it succeeded.
async fn succeeded(app: &TestApp, id: &str, edge: &Edge) -> Value {
    let d = app
        .wait_for_status(id, &["succeeded", "failed"], Duration::from_secs(40))
        .await;
    assert_eq!(d["status"], "succeeded", "{d}\n{}", edge.logs());
    let (_, d) = app.get(&format!("/admin/v1/directives/{id}")).await;
    d
}

/// Escalates a new conversation; returns (conversation, directive id).
async fn escalate_one(app: &TestApp) -> (String, String) {
    let conv = conversation_id();
    escalate(app, &conv).await;
    let id = email_task(app, &conv).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (conv, id)
}

/// A sink standing in for Proton Mail Bridge (self-signed `CA:TRUE`
/// certificate, STARTTLS, AUTH): pinned by fingerprint and by the exported
/// PEM, the email arrives once; another pin is refused with both
/// fingerprints; `check` agrees.
async fn a_bridge_like_ca_certificate_is_trusted_when_pinned_and_checked(backend: Backend) {
    let app = email_app(backend).await;
    let (_, token) = connector(&app, "bridge-host").await;
    let sink = SmtpSink::start_bridge().await;
    let fingerprint = sink.cert_sha256.clone().unwrap();
    let other = SmtpSink::start_bridge().await.cert_sha256.unwrap();
    // As an operator copies it from `openssl x509 -fingerprint -sha256`.
    let colons = fingerprint
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    let dir = &app.db.dir;

    // `check` passes with the right pin, each way, and names the fingerprint.
    for extra in [&["--smtp-cert-sha256", colons.as_str()][..], &[]] {
        let (ok, out) = Edge::check(dir, &app.server, &token, &sink, extra)
            .await
            .unwrap();
        assert!(ok, "{out}");
        assert!(out.contains(&fingerprint), "{out}");
        assert!(out.contains("login was accepted"), "{out}");
        assert!(out.contains("All checks passed"), "{out}");
    }
    // And fails with another pin, naming both certificates.
    let (ok, out) = Edge::check(
        dir,
        &app.server,
        &token,
        &sink,
        &["--smtp-cert-sha256", &other],
    )
    .await
    .unwrap();
    assert!(!ok, "{out}");
    assert!(out.contains(&fingerprint) && out.contains(&other), "{out}");
    assert!(out.contains("not the pinned certificate"), "{out}");
    // A bad token is named too.
    let (ok, out) = Edge::check(dir, &app.server, "fpe_bogus", &sink, &[])
        .await
        .unwrap();
    assert!(!ok, "{out}");
    assert!(out.contains("refused the connector token"), "{out}");

    // Pinned by fingerprint: exactly one email, over TLS, after AUTH.
    let mut edge = Edge::start(
        dir,
        &app.server,
        &token,
        &sink,
        &["--smtp-cert-sha256", &fingerprint],
    )
    .unwrap();
    let (conv, id) = escalate_one(&app).await;
    let d = succeeded(&app, &id, &edge).await;
    let message_id = format!("<{id}@edge.fleetprompt>");
    assert_eq!(d["attempt_log"][0]["external_ref"], message_id.as_str());
    let mails = sink.accepted();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert!(mail.tls);
    assert_eq!(mail.to, ["<team@example.com>"]);
    assert_eq!(mail.from, "<support@acme.example>");
    assert_eq!(
        mail.header("Message-ID").as_deref(),
        Some(message_id.as_str())
    );
    assert_eq!(
        mail.header("From").as_deref(),
        Some("\"Acme Support\" <support@acme.example>")
    );
    assert!(mail.header("Subject").is_some(), "{}", mail.data);
    assert!(
        mail.body_text()
            .contains(&format!("/console/conversations/{conv}")),
        "{}",
        mail.data
    );
    assert!(edge.stop().await.unwrap().success(), "{}", edge.logs());

    // Pinned by the exported PEM file (the default in `Edge::start`).
    let mut edge = Edge::start(dir, &app.server, &token, &sink, &[]).unwrap();
    let (_, id2) = escalate_one(&app).await;
    succeeded(&app, &id2, &edge).await;
    assert_eq!(sink.accepted().len(), 2);
    assert!(edge.stop().await.unwrap().success(), "{}", edge.logs());

    // Another pin: the handshake is refused, the attempt is retried with
    // an error naming both fingerprints, and nothing is sent.
    let mut wrong = Edge::start(
        dir,
        &app.server,
        &token,
        &sink,
        &["--smtp-cert-sha256", &other],
    )
    .unwrap();
    let (_, id3) = escalate_one(&app).await;
    let first = first_attempt(&app, &id3, &wrong).await;
    assert_eq!(first["outcome"], "retrying", "{first}");
    let error = first["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&fingerprint) && error.contains(&other),
        "{first}"
    );
    assert_eq!(sink.accepted().len(), 2);
    assert!(wrong.stop().await.unwrap().success());
    assert!(
        !wrong
            .logs()
            .contains(fleetprompt_system_tests::BRIDGE_LOGIN.1)
    );
}

/// kill -9 right after the SMTP server answered `250` (the gate to the
/// FleetPrompt server closes as the sink answers, so the report cannot have
/// been taken), and the connector stays down until its lease runs out: the
/// restarted connector gets the task again, finds it `sent` in its journal,
/// and reports it without sending again. (A restart within the lease
/// reports from the journal's queue, the path
/// `the_server_down_while_reporting_is_caught_up` takes.)
async fn a_crash_between_250_and_the_report_sends_once(backend: Backend) {
    let app = email_app(backend).await;
    let (_, token) = connector(&app, "bridge-host").await;
    let sink = SmtpSink::start_bridge().await;
    let gate = TcpProxy::in_front_of_http(&app.server.url).await.unwrap();
    let closing = gate.clone();
    sink.before_accept(move || closing.cut());
    let lease = ["--lease-secs", "10"];
    let mut edge = Edge::start_at(&app.db.dir, &gate.url(), &token, &sink, &lease).unwrap();
    let (_, id) = escalate_one(&app).await;
    sink.wait_for_replies(1, Duration::from_secs(30)).await;
    edge.wait_for_log("kept in the journal", Duration::from_secs(20))
        .await;
    edge.kill9().await;
    let (_, d) = app.get(&format!("/admin/v1/directives/{id}")).await;
    assert_eq!(
        d["status"], "running",
        "the report must not have arrived: {d}"
    );
    app.wait_for_status(&id, &["pending"], Duration::from_secs(30))
        .await;

    gate.restore();
    let edge = Edge::start_at(&app.db.dir, &gate.url(), &token, &sink, &lease).unwrap();
    let d = succeeded(&app, &id, &edge).await;
    let log = d["attempt_log"].as_array().unwrap();
    let outcomes: Vec<&str> = log.iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["lease_expired", "succeeded"], "{d}");
    assert_eq!(log[1]["http_status"], 250);
    assert_eq!(
        log[1]["external_ref"],
        format!("<{id}@edge.fleetprompt>").as_str()
    );
    assert!(
        edge.logs().contains("reporting it without sending again"),
        "{}",
        edge.logs()
    );
    // No second email, even after a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.replies(), [250]);
    assert_eq!(sink.accepted().len(), 1);
    assert!(has_signal(
        &timeline(&app, &edge_conv(&app, &id).await).await,
        "email.outbound.sent"
    ));
}

/// The conversation a directive is about.
async fn edge_conv(app: &TestApp, id: &str) -> String {
    let (_, d) = app.get(&format!("/admin/v1/directives/{id}")).await;
    d["subject"]
        .as_str()
        .unwrap()
        .trim_start_matches("conversation:")
        .to_owned()
}

/// The server goes down as the email is accepted, and a new server process
/// comes up on the same database: the connector reports from its journal
/// when it is back, without restarting and without sending again.
async fn the_server_down_while_reporting_is_caught_up(backend: Backend) {
    let mut app = email_app(backend).await;
    let (_, token) = connector(&app, "bridge-host").await;
    let sink = SmtpSink::start_bridge().await;
    let gate = TcpProxy::in_front_of_http(&app.server.url).await.unwrap();
    let closing = gate.clone();
    sink.before_accept(move || closing.cut());
    let edge = Edge::start_at(&app.db.dir, &gate.url(), &token, &sink, &[]).unwrap();
    let (_, id) = escalate_one(&app).await;
    sink.wait_for_replies(1, Duration::from_secs(30)).await;
    edge.wait_for_log("kept in the journal", Duration::from_secs(20))
        .await;
    app.server.stop().await.unwrap();
    let wf = app.db.dir.join("workflows");
    app.server = Server::start(&app.db, "server2", &["--workflows", wf.to_str().unwrap()])
        .await
        .unwrap();
    gate.retarget(&app.server.url);
    gate.restore();
    let d = succeeded(&app, &id, &edge).await;
    assert_eq!(d["attempt_log"].as_array().unwrap().len(), 1, "{d}");
    assert_eq!(sink.accepted().len(), 1);
    assert!(
        edge.logs().contains("reported a journaled result"),
        "{}",
        edge.logs()
    );
}

/// The connector dies while the SMTP server holds its `DATA` unanswered
/// (outcome unknown, journaled `sending`); the lease runs out and the next
/// run sends again with the same `Message-ID`: one email arrives.
async fn a_lease_that_expires_mid_data_is_sent_once_by_the_next_run(backend: Backend) {
    let app = email_app(backend).await;
    let (_, token) = connector(&app, "bridge-host").await;
    let sink = SmtpSink::start_bridge().await;
    sink.script([0]);
    let mut edge = Edge::start(
        &app.db.dir,
        &app.server,
        &token,
        &sink,
        &["--lease-secs", "10"],
    )
    .unwrap();
    let (_, id) = escalate_one(&app).await;
    sink.wait_for_replies(1, Duration::from_secs(30)).await;
    edge.kill9().await;
    assert!(sink.accepted().is_empty());

    let edge = Edge::start(
        &app.db.dir,
        &app.server,
        &token,
        &sink,
        &["--lease-secs", "10"],
    )
    .unwrap();
    let d = succeeded(&app, &id, &edge).await;
    let outcomes: Vec<&str> = d["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["lease_expired", "succeeded"], "{d}");
    let mails = sink.accepted();
    assert_eq!(mails.len(), 1);
    assert_eq!(
        mails[0].header("Message-ID").as_deref(),
        Some(format!("<{id}@edge.fleetprompt>").as_str())
    );
    assert!(edge.logs().contains("journal replay"), "{}", edge.logs());
}

/// Bridge-like: a `451` is retried and then sent; a `554` fails for good
/// with the server's reply text on the conversation's timeline.
async fn bridge_replies_451_then_250_are_retried_and_554_fails_with_its_text(backend: Backend) {
    let app = email_app(backend).await;
    let (_, token) = connector(&app, "bridge-host").await;
    let sink = SmtpSink::start_bridge().await;
    sink.script([451, 250]);
    let edge = Edge::start(&app.db.dir, &app.server, &token, &sink, &[]).unwrap();
    let (_, id) = escalate_one(&app).await;
    let d = succeeded(&app, &id, &edge).await;
    let log = d["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 2, "{d}");
    assert_eq!(
        (log[0]["outcome"].as_str(), log[0]["http_status"].as_i64()),
        (Some("retrying"), Some(451))
    );
    assert_eq!(log[1]["http_status"], 250);
    assert_eq!(sink.accepted().len(), 1);

    sink.script([554]);
    let (conv, id2) = escalate_one(&app).await;
    let d = app
        .wait_for_status(&id2, &["succeeded", "failed"], Duration::from_secs(30))
        .await;
    assert_eq!(d["status"], "failed", "{d}");
    let entries = timeline(&app, &conv).await;
    let attempt = entries
        .iter()
        .find(|e| e["entry"] == "attempt" && e["directive_id"] == id2.as_str())
        .unwrap_or_else(|| panic!("no attempt on the timeline: {entries:?}"));
    assert!(
        attempt.to_string().contains("mailbox unavailable"),
        "{attempt}"
    );
    assert!(has_signal(&entries, "email.outbound.failed"));
    assert_eq!(sink.accepted().len(), 1);
}

//! Edge Connectors against the real server: registration (admin API and
//! CLI), heartbeats, the last-seen gauge, and token refusals.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use fleetprompt_system_tests::{Backend, TestApp, both_backends, cli};
use serde_json::{Value, json};

both_backends!(
    connectors_register_heartbeat_and_report_last_seen,
    bad_tokens_are_refused_alike,
);

/// Registers a connector through the admin API; returns (id, token).
async fn connector(app: &TestApp, name: &str) -> (String, String) {
    let (s, v) = app
        .post("/admin/v1/edge-connectors", json!({ "name": name }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
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
        let text = app
            .http
            .get(format!("{}/metrics", app.server.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
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

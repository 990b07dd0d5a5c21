//! Helpers for tests of the rules a tenant publishes over the admin API:
//! a server with a rules directory of its own, raw TOML uploads, and
//! requests to any node of a cluster as the same tenant.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::{Backend, Server, TestApp, TestDb, create_tenant, http_client};

/// The rule the server's own directory gives tenant `acme`
/// (`tenants/acme/disk.toml`): a `noop` for every `order.created`.
pub const DISK_RULES: &str = r#"
[[rule]]
id = "disk-order"
on = "order.created"

[[rule.directive]]
kind = "noop"
dedupe_key = "disk-order:{{ signal.payload.order_id }}"
"#;

/// The flags a node of these tests is started with.
pub fn serve_flags(dir: &std::path::Path) -> Vec<String> {
    vec![
        "--workflows".into(),
        dir.display().to_string(),
        "--workflows-poll-ms".into(),
        "100".into(),
        "--demo".into(),
        "false".into(),
    ]
}

/// A server whose rules directory holds [`DISK_RULES`], and the directory.
pub struct RulesApp {
    /// The app (tenant `acme`).
    pub app: TestApp,
    /// The rules directory (`--workflows`).
    pub dir: PathBuf,
}

/// Fresh database, tenant `acme`, one server with [`DISK_RULES`] on disk.
pub async fn spawn(backend: Backend) -> RulesApp {
    let db = TestDb::new(backend).await.expect("test database");
    let dir = db.dir.join("workflows");
    std::fs::create_dir_all(dir.join("tenants/acme")).expect("rules dir");
    std::fs::write(dir.join("tenants/acme/disk.toml"), DISK_RULES).expect("disk rules");
    let tenant = create_tenant(&db, "acme").await.expect("tenant");
    let flags = serve_flags(&dir);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start(&db, "server", &flags).await.expect("server");
    RulesApp {
        app: TestApp {
            db,
            server,
            tenant,
            http: http_client(),
        },
        dir,
    }
}

/// A request to the node at `url` as `app`'s tenant, with a raw text body
/// (`Content-Type: application/toml`) when `toml` is given.
pub async fn request_at(
    app: &TestApp,
    url: &str,
    method: reqwest::Method,
    path: &str,
    toml: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = app
        .http
        .request(method, format!("{url}{path}"))
        .bearer_auth(&app.tenant.token);
    if let Some(t) = toml {
        req = req
            .header("content-type", "application/toml")
            .body(t.to_owned());
    }
    let resp = req.send().await.expect("request");
    let status = StatusCode::from_u16(resp.status().as_u16()).expect("status");
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `PUT /admin/v1/workflows/files/{name}` with `toml` as the body.
pub async fn put_file(app: &TestApp, name: &str, toml: &str) -> (StatusCode, Value) {
    request_at(
        app,
        &app.server.url,
        reqwest::Method::PUT,
        &format!("/admin/v1/workflows/files/{name}"),
        Some(toml),
    )
    .await
}

/// `DELETE /admin/v1/workflows/files/{name}`.
pub async fn delete_file(app: &TestApp, name: &str) -> (StatusCode, Value) {
    request_at(
        app,
        &app.server.url,
        reqwest::Method::DELETE,
        &format!("/admin/v1/workflows/files/{name}"),
        None,
    )
    .await
}

/// Records an `order.created` signal for order `order` through the node at
/// `url`; returns its id.
pub async fn order_at(app: &TestApp, url: &str, order: &str, total: i64) -> String {
    let resp = app
        .http
        .post(format!("{url}/admin/v1/signals"))
        .bearer_auth(&app.tenant.token)
        .json(&json!({
            "type": "order.created",
            "subject": format!("order:{order}"),
            "payload": { "order_id": order, "total": total },
            "dedupe_key": format!("order-{order}"),
        }))
        .send()
        .await
        .expect("POST /admin/v1/signals");
    let status = resp.status();
    let v: Value = resp.json().await.expect("signal answer");
    assert!(status.is_success(), "{status}: {v}");
    v["id"].as_str().expect("signal id").to_owned()
}

/// Records an `order.created` signal through `app`'s own node.
pub async fn order(app: &TestApp, order: &str, total: i64) -> String {
    order_at(app, &app.server.url, order, total).await
}

/// The dedupe keys of the tenant's directives, sorted.
pub async fn directive_keys(app: &TestApp) -> Vec<String> {
    let (s, v) = app.get("/admin/v1/directives?limit=1000").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut keys: Vec<String> = v["directives"]
        .as_array()
        .expect("directives")
        .iter()
        .map(|d| d["dedupe_key"].as_str().unwrap_or_default().to_owned())
        .collect();
    keys.sort();
    keys
}

/// The ids of the rules `GET /admin/v1/workflows` on the node at `url`
/// lists for the tenant, with their sources.
pub async fn active_rules_at(app: &TestApp, url: &str) -> Vec<(String, String)> {
    let (s, v) = request_at(app, url, reqwest::Method::GET, "/admin/v1/workflows", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or_default().to_owned(),
                r["source"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Polls the node at `url` until its active rules satisfy `done`; returns
/// how long that took, or panics after `timeout`.
pub async fn wait_rules_at(
    app: &TestApp,
    url: &str,
    done: impl Fn(&[(String, String)]) -> bool,
    timeout: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let rules = active_rules_at(app, url).await;
        if done(&rules) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "rules at {url} still {rules:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! Steps the website chat tests share: a server on rule files the test
//! writes, a site on [`ORIGIN`], a visitor and their messages, and the
//! conversation's timeline. One copy here, so a change to the widget API is
//! followed in one place.

use std::path::Path;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::{Backend, Server, TestApp, TestDb, cli, create_tenant, http_client};

/// The origin every test site allows.
pub const ORIGIN: &str = "https://shop.example.com";

/// The shipped website chat rule file.
pub const SHIPPED_RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../workflows/website_chat.toml"
);

/// Fresh database, tenant `acme`, one server reading the rule files in
/// `<db dir>/workflows`, which `prepare` writes first (the folder exists).
pub async fn spawn_with_rules(
    backend: Backend,
    extra: &[&str],
    prepare: impl FnOnce(&Path),
) -> TestApp {
    let db = TestDb::new(backend).await.unwrap();
    let dir = db.dir.join("workflows");
    std::fs::create_dir_all(&dir).unwrap();
    prepare(&dir);
    let tenant = create_tenant(&db, "acme").await.unwrap();
    let mut flags = vec!["--workflows", dir.to_str().unwrap()];
    flags.extend_from_slice(extra);
    let server = Server::start(&db, "server", &flags).await.unwrap();
    TestApp {
        db,
        server,
        tenant,
        http: http_client(),
    }
}

/// A native site on `shop.example.com`; returns what the API answered.
pub async fn site(app: &TestApp) -> Value {
    site_with(
        app,
        json!({ "domains": ["shop.example.com"], "mode": "native" }),
    )
    .await
}

/// A site made from `body`; returns what the API answered.
pub async fn site_with(app: &TestApp, body: Value) -> Value {
    let (s, v) = app.post("/admin/v1/sites", body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

/// A widget bootstrap on the site with public key `key`, from [`ORIGIN`];
/// the answer as it came.
pub async fn bootstrap(app: &TestApp, key: &str) -> reqwest::Response {
    bootstrap_from(app, ORIGIN, key).await
}

/// A widget bootstrap from the page origin `origin`.
pub async fn bootstrap_from(app: &TestApp, origin: &str, key: &str) -> reqwest::Response {
    app.http
        .post(format!(
            "{}/v1/widget/bootstrap?site_key={key}",
            app.server.url
        ))
        .header("origin", origin)
        .json(&json!({ "site_key": key }))
        .send()
        .await
        .unwrap()
}

/// A visitor's token on the site with public key `key`.
pub async fn visitor(app: &TestApp, key: &str) -> String {
    visitor_from(app, ORIGIN, key).await
}

/// A visitor's token on a page of `origin`.
pub async fn visitor_from(app: &TestApp, origin: &str, key: &str) -> String {
    let v: Value = bootstrap_from(app, origin, key).await.json().await.unwrap();
    v["token"].as_str().expect("token").to_owned()
}

/// Sends a visitor message; returns the conversation id.
pub async fn say(app: &TestApp, token: &str, content: &str) -> String {
    say_from(app, ORIGIN, token, content).await
}

/// Sends a visitor message from a page of `origin`; returns the
/// conversation id.
pub async fn say_from(app: &TestApp, origin: &str, token: &str, content: &str) -> String {
    let r = app
        .http
        .post(format!("{}/v1/widget/messages", app.server.url))
        .header("origin", origin)
        .bearer_auth(token)
        .json(&json!({ "client_message_id": uuid::Uuid::now_v7().to_string(), "content": content }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let v: Value = r.json().await.unwrap();
    v["conversation_id"]
        .as_str()
        .expect("conversation_id")
        .to_owned()
}

/// The conversation's timeline entries.
pub async fn timeline(app: &TestApp, conv: &str) -> Vec<Value> {
    let (s, v) = app
        .get(&format!("/admin/v1/timeline?subject=conversation:{conv}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["entries"].as_array().cloned().unwrap_or_default()
}

/// The timeline's signals of type `t`.
pub fn signals_of<'a>(entries: &'a [Value], t: &str) -> Vec<&'a Value> {
    entries
        .iter()
        .filter(|e| e["entry"] == "signal" && (e["type"] == t || e["signal_type"] == t))
        .collect()
}

/// The timeline's directives of kind `kind`.
pub fn directives_of<'a>(entries: &'a [Value], kind: &str) -> Vec<&'a Value> {
    entries
        .iter()
        .filter(|e| e["entry"] == "directive" && e["kind"] == kind)
        .collect()
}

/// Waits until the conversation's timeline has a signal of type `t`.
pub async fn wait_signal(app: &TestApp, conv: &str, t: &str, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let entries = timeline(app, conv).await;
        if !signals_of(&entries, t).is_empty() {
            return entries;
        }
        assert!(
            Instant::now() < deadline,
            "no {t} within {timeout:?}: {}",
            serde_json::to_string_pretty(&entries).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `probe` every 100 ms until it gives a value, which it returns;
/// panics with `what` after `timeout`.
pub async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `fleetprompt replay --json` for tenant acme over the app's rule files,
/// with `extra` arguments; returns its output.
pub async fn replay(app: &TestApp, extra: &[&str]) -> String {
    let workflows = app.db.dir.join("workflows");
    let mut args = vec!["replay", "--tenant", "acme"];
    args.extend_from_slice(extra);
    args.extend(["--json", "--workflows", workflows.to_str().unwrap()]);
    cli(&app.db, &args).await.unwrap()
}

//! Steps the lifecycle tests share: requests with any method and headers
//! (PATCH, DELETE, `If-Match`), the error shape every refusal must have,
//! and the caller's own token id as the timeline names it.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::TestApp;

/// A request as the app's tenant with extra headers; the status, the
/// response's headers and its JSON body (or its text as a string).
pub async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.server.url))
        .bearer_auth(&app.tenant.token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = StatusCode::from_u16(resp.status().as_u16()).expect("status");
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, v)
}

/// PATCH as the app's tenant.
pub async fn patch(app: &TestApp, path: &str, body: Value) -> (StatusCode, Value) {
    app.request_as(&app.tenant.token, reqwest::Method::PATCH, path, Some(body))
        .await
}

/// DELETE as the app's tenant.
pub async fn delete(app: &TestApp, path: &str) -> (StatusCode, Value) {
    app.request_as(&app.tenant.token, reqwest::Method::DELETE, path, None)
        .await
}

/// Asserts a refusal: `status`, and the JSON error shape with `code`.
/// Returns the message.
#[track_caller]
pub fn refused(got: (StatusCode, Value), status: StatusCode, code: &str) -> String {
    let (s, v) = got;
    assert_eq!(s, status, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {v}"))
        .to_owned()
}

/// The id of the app's admin token (`fpa_<id>.<secret>`), as directives'
/// origins record it.
pub fn token_id(app: &TestApp) -> String {
    let rest = app.tenant.token.strip_prefix("fpa_").expect("fpa_ token");
    rest.split('.').next().expect("token id").to_owned()
}

/// Creates a Mattermost (incoming webhook) destination.
pub async fn mattermost(app: &TestApp, name: &str, url: &str) -> Value {
    let (s, v) = app
        .post(
            "/admin/v1/destinations",
            json!({ "name": name, "kind": "mattermost", "webhook_url": url }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

//! Steps the access tests share: members added with the CLI, browser
//! sessions (cookie and CSRF token) and requests made with them.

use anyhow::Context;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::{TestDb, cli};

/// A member added with `fleetprompt user add`, and the one-time password
/// it printed.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its id (`mem_…`).
    pub id: String,
    /// Its email.
    pub email: String,
    /// Its password.
    pub password: String,
}

/// Adds a member to the tenant `slug` with the CLI (`--json`).
pub async fn add_member(
    db: &TestDb,
    slug: &str,
    email: &str,
    name: &str,
    role: &str,
) -> anyhow::Result<Member> {
    let out = cli(
        db,
        &[
            "user", "add", "--tenant", slug, "--email", email, "--name", name, "--role", role,
            "--json",
        ],
    )
    .await?;
    let v: Value = serde_json::from_str(out.trim())?;
    Ok(Member {
        id: v["member"]["id"].as_str().context("member.id")?.to_owned(),
        email: email.to_owned(),
        password: v["password"].as_str().context("password")?.to_owned(),
    })
}

/// A signed-in browser session: the cookie's `name=value` and the CSRF
/// token that unsafe requests carry.
#[derive(Debug, Clone)]
pub struct Session {
    /// `fleetprompt_session=fps_…`, as a `Cookie` header sends it.
    pub cookie: String,
    /// The whole `Set-Cookie` header the sign-in answered.
    pub set_cookie: String,
    /// The CSRF token.
    pub csrf: String,
    /// The sign-in's answer.
    pub body: Value,
}

/// `POST /admin/v1/session` on `base` with `body`; the status, the
/// `Retry-After` header if any, and the answer.
pub async fn sign_in_raw(
    http: &reqwest::Client,
    base: &str,
    body: Value,
) -> (StatusCode, Option<String>, Option<String>, Value) {
    let r = http
        .post(format!("{base}/admin/v1/session"))
        .json(&body)
        .send()
        .await
        .expect("sign-in request");
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    let header = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after = header("retry-after");
    let set_cookie = header("set-cookie");
    let v = r.json().await.unwrap_or(Value::Null);
    (status, retry_after, set_cookie, v)
}

/// Signs in with email and password; panics unless it works.
pub async fn sign_in(http: &reqwest::Client, base: &str, email: &str, password: &str) -> Session {
    let (s, _, set_cookie, v) =
        sign_in_raw(http, base, json!({ "email": email, "password": password })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let set_cookie = set_cookie.expect("a session cookie");
    let cookie = set_cookie.split(';').next().unwrap().trim().to_owned();
    Session {
        cookie,
        set_cookie,
        csrf: v["csrf_token"].as_str().expect("csrf_token").to_owned(),
        body: v,
    }
}

/// A request with a session's cookie, and its CSRF token when `csrf`.
pub async fn with_session(
    http: &reqwest::Client,
    base: &str,
    session: &Session,
    csrf: bool,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http
        .request(method, format!("{base}{path}"))
        .header("cookie", &session.cookie);
    if csrf {
        req = req.header("x-csrf-token", &session.csrf);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A request with a bearer token on `base`.
pub async fn with_token(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A route pattern (`/admin/v1/sites/{id}`) with every parameter filled
/// with a placeholder, so it can be requested.
pub fn fill(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                "x0"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

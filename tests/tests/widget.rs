//! The website chat widget API, end to end over HTTP, on SQLite and
//! PostgreSQL: sites as directives, bootstrap and CORS, signed tokens,
//! idempotent ingestion, contact capture, history, live replies, idle
//! sweeps, rate limits, size limits, and secrets kept out of logs and
//! signals.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use fleetprompt_system_tests::{Backend, TestApp, both_backends, http_client};
use reqwest::header::{HeaderMap, HeaderName};
use serde_json::{Value, json};

const ORIGIN: &str = "https://shop.example.com";
const OTHER: &str = "https://evil.example.net";

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    origin: Option<&str>,
    token: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.server.url));
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    Resp {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(HeaderName::from_bytes(name.as_bytes()).unwrap())
        .and_then(|v| v.to_str().ok())
}

/// Registers a site allowing `ORIGIN`, waiting for its directive.
async fn register(app: &TestApp, settings: Value) -> Value {
    let (s, v) = app
        .post(
            "/admin/v1/sites",
            json!({ "domains": ["shop.example.com", "http://127.0.0.1:9"], "mode": "native", "settings": settings }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["status"], "active", "{v}");
    v
}

/// A bootstrap; `visitor` is a remembered `(visitor_id, visitor_secret)`.
async fn bootstrap(
    app: &TestApp,
    key: &str,
    origin: Option<&str>,
    visitor: Option<(&str, &str)>,
) -> Resp {
    let mut body = json!({ "site_key": key });
    if let Some((v, secret)) = visitor {
        body["visitor_id"] = json!(v);
        body["visitor_secret"] = json!(secret);
    }
    call(
        app,
        reqwest::Method::POST,
        &format!("/v1/widget/bootstrap?site_key={key}"),
        origin,
        None,
        Some(body),
    )
    .await
}

async fn token(app: &TestApp, key: &str) -> (String, String) {
    let r = bootstrap(app, key, Some(ORIGIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    (
        r.body["token"].as_str().unwrap().to_owned(),
        r.body["visitor_id"].as_str().unwrap().to_owned(),
    )
}

async fn send(app: &TestApp, token: &str, cmid: &str, content: &str) -> Resp {
    call(
        app,
        reqwest::Method::POST,
        "/v1/widget/messages",
        Some(ORIGIN),
        Some(token),
        Some(json!({ "client_message_id": cmid, "content": content, "page_url": "https://shop.example.com/cart?coupon=X" })),
    )
    .await
}

fn cmid() -> String {
    uuid::Uuid::now_v7().to_string()
}

async fn timeline(app: &TestApp, subject: &str) -> Vec<Value> {
    let (s, v) = app
        .get(&format!("/admin/v1/timeline?subject={subject}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["entries"].as_array().cloned().unwrap_or_default()
}

fn signals_of<'a>(entries: &'a [Value], ty: &str) -> Vec<&'a Value> {
    entries
        .iter()
        .filter(|e| e["entry"] == "signal" && e["type"] == ty)
        .collect()
}

async fn sites_and_bootstrap(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (s, v) = app
        .post(
            "/admin/v1/installations",
            json!({ "package": "website_chat", "config": { "brand": "Acme" } }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = app
        .post(
            "/admin/v1/installations",
            json!({ "package": "website_chat", "config": {} }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = app
        .post("/admin/v1/installations", json!({ "package": "nope" }))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    let site = register(&app, json!({ "title": "Help" })).await;
    let key = site["public_key"].as_str().unwrap();
    let site_id = site["site_id"].as_str().unwrap();
    assert!(key.starts_with("pk_"));
    assert!(
        site["embed_snippet"]
            .as_str()
            .unwrap()
            .contains(&format!("data-site-key=\"{key}\""))
    );
    assert_eq!(site["directive"]["status"], "succeeded");
    assert_eq!(
        site["allowed_origins"],
        json!(["https://shop.example.com", "http://127.0.0.1:9"])
    );
    // Registration is a directive in the site's audit timeline.
    let tl = timeline(&app, &format!("site:{site_id}")).await;
    assert!(
        tl.iter()
            .any(|e| e["entry"] == "directive" && e["kind"] == "webchat.site.register"),
        "{tl:?}"
    );
    let (s, v) = app.get("/admin/v1/sites").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["sites"].as_array().unwrap().len(), 1);
    assert!(
        !v.to_string().contains("sealed"),
        "secrets never leave: {v}"
    );
    let (s, _) = app
        .post("/admin/v1/sites", json!({ "domains": ["not a domain"] }))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // An allowed origin gets a token and a CORS grant.
    let r = bootstrap(&app, key, Some(ORIGIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["token"].as_str().unwrap().starts_with("fpw_"));
    assert!(r.body["visitor_id"].as_str().unwrap().starts_with("vis_"));
    assert_eq!(r.body["settings"]["title"], "Help");
    assert_eq!(
        header(&r.headers, "access-control-allow-origin"),
        Some(ORIGIN)
    );
    assert!(header(&r.headers, "vary").unwrap().contains("Origin"));
    // A remembered visitor keeps their id, with the secret issued to them.
    let vis = r.body["visitor_id"].as_str().unwrap();
    let secret = r.body["visitor_secret"].as_str().unwrap();
    assert!(secret.starts_with("fpv_"));
    let r2 = bootstrap(&app, key, Some(ORIGIN), Some((vis, secret))).await;
    assert_eq!(r2.body["visitor_id"], vis);
    assert_eq!(r2.body["visitor_secret"], Value::Null, "issued only once");

    // Other origins get no token and no grant; so do `null` and none.
    for o in [
        Some(OTHER),
        Some("null"),
        Some("http://shop.example.com"),
        Some("https://shop.example.com:8443"),
        None,
    ] {
        let r = bootstrap(&app, key, o, None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{o:?}: {}", r.body);
        assert!(r.body["error"]["code"].is_string());
        assert!(
            header(&r.headers, "access-control-allow-origin").is_none(),
            "{o:?}"
        );
        assert!(header(&r.headers, "vary").unwrap().contains("Origin"));
    }
    // Preflights pass only for allowed origins.
    let pre = |o: &'static str| {
        app.http
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/v1/widget/messages?site_key={key}", app.server.url),
            )
            .header("origin", o)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let ok = pre(ORIGIN).await.unwrap();
    assert_eq!(ok.status().as_u16(), 204);
    assert_eq!(
        header(ok.headers(), "access-control-allow-origin"),
        Some(ORIGIN)
    );
    assert!(
        header(ok.headers(), "access-control-allow-headers")
            .unwrap()
            .contains("authorization")
    );
    let no = pre(OTHER).await.unwrap();
    assert_eq!(no.status().as_u16(), 403);
    assert!(header(no.headers(), "access-control-allow-origin").is_none());

    // Tenant or site fields in the body or query are refused, never trusted.
    let r = call(
        &app,
        reqwest::Method::POST,
        "/v1/widget/bootstrap",
        Some(ORIGIN),
        None,
        Some(json!({ "site_key": key, "tenant_id": "ten_0" })),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = call(
        &app,
        reqwest::Method::POST,
        "/v1/widget/bootstrap?tenant_id=ten_x",
        Some(ORIGIN),
        None,
        Some(json!({ "site_key": key })),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = bootstrap(&app, "pk_doesnotexist", Some(ORIGIN), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // What is kept about the visitor is reduced.
    let ua: (i64,) = (app.db.scalar("SELECT COUNT(*) FROM website_chat_identities WHERE ip_hash LIKE '%127.0.0.1%' OR ip_hash IS NULL").await.unwrap(),);
    assert_eq!(ua.0, 0, "IPs are stored only as keyed hashes");
}

async fn messages_contact_history_close(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let site = register(&app, json!({})).await;
    let key = site["public_key"].as_str().unwrap();
    let (tok, visitor) = token(&app, key).await;

    let id1 = cmid();
    let r = send(&app, &tok, &id1, "Where is my order?").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let conv = r.body["conversation_id"].as_str().unwrap().to_owned();
    let msg = r.body["message_id"].as_str().unwrap().to_owned();
    assert!(conv.starts_with("conv_") && msg.starts_with("msg_"));
    assert_eq!(r.body["duplicate"], false);
    // A retry with the same client_message_id returns the same ids, writes nothing.
    let again = send(&app, &tok, &id1, "Where is my order?").await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["message_id"], msg.as_str());
    assert_eq!(again.body["conversation_id"], conv.as_str());
    assert_eq!(again.body["duplicate"], true);
    let r = send(&app, &tok, &cmid(), "Order 1234").await;
    assert_eq!(r.body["conversation_id"], conv.as_str());

    let tl = timeline(&app, &format!("conversation:{conv}")).await;
    assert_eq!(
        signals_of(&tl, "webchat.session.started").len(),
        1,
        "{tl:?}"
    );
    let received = signals_of(&tl, "webchat.message.received");
    assert_eq!(received.len(), 2, "{tl:?}");
    let site_id = site["site_id"].as_str().unwrap();
    assert_eq!(
        received[0]["dedupe_key"],
        format!("webchat_msg:{}:{site_id}:{conv}:{id1}", app.tenant.id)
    );
    assert_eq!(received[0]["payload"]["content"], "Where is my order?");
    assert_eq!(
        received[0]["payload"]["page_url"], "https://shop.example.com/cart",
        "query strings are dropped"
    );
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM website_chat_messages")
            .await
            .unwrap(),
        2
    );

    // Bad input: empty, not a UUID, unknown fields.
    assert_eq!(
        send(&app, &tok, &cmid(), "   ").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        send(&app, &tok, "not-a-uuid", "hi").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let r = call(
        &app,
        reqwest::Method::POST,
        "/v1/widget/messages",
        Some(ORIGIN),
        Some(&tok),
        Some(json!({ "client_message_id": cmid(), "content": "x", "site_id": "site_0" })),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // A body over the size limit: 413.
    let r = send(&app, &tok, &cmid(), &"x".repeat(4097)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "payload_too_large");
    assert_eq!(
        send(&app, &tok, &cmid(), &"é".repeat(2048)).await.status,
        StatusCode::ACCEPTED
    );

    // History, and paging after a message.
    let h = call(
        &app,
        reqwest::Method::GET,
        "/v1/widget/messages",
        Some(ORIGIN),
        Some(&tok),
        None,
    )
    .await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.body);
    assert_eq!(h.body["conversation_id"], conv.as_str());
    let msgs = h.body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[0]["role"], "visitor");
    assert_eq!(msgs[0]["client_message_id"], id1.as_str());
    let h2 = call(
        &app,
        reqwest::Method::GET,
        &format!("/v1/widget/messages?after={msg}"),
        Some(ORIGIN),
        Some(&tok),
        None,
    )
    .await;
    assert_eq!(h2.body["messages"].as_array().unwrap().len(), 2);

    // Contact capture.
    let r = call(
        &app,
        reqwest::Method::POST,
        "/v1/widget/contact",
        Some(ORIGIN),
        Some(&tok),
        Some(json!({ "email": "nope" })),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = call(
        &app,
        reqwest::Method::POST,
        "/v1/widget/contact",
        Some(ORIGIN),
        Some(&tok),
        Some(json!({ "email": "ada@example.com", "name": "Ada" })),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let tl = timeline(&app, &format!("conversation:{conv}")).await;
    let captured = signals_of(&tl, "webchat.contact.captured");
    assert_eq!(captured.len(), 1);
    assert_eq!(captured[0]["payload"]["email"], "ada@example.com");
    let (s, v) = app.get(&format!("/admin/v1/conversations/{conv}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["visitor"]["email"], "ada@example.com");
    assert_eq!(v["visitor"]["visitor_id"], visitor.as_str());

    // The visitor closes the chat; the next message opens a new conversation.
    let r = call(
        &app,
        reqwest::Method::POST,
        "/v1/widget/close",
        Some(ORIGIN),
        Some(&tok),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let tl = timeline(&app, &format!("conversation:{conv}")).await;
    let ended = signals_of(&tl, "webchat.session.ended");
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0]["payload"]["reason"], "visitor_closed");
    let r = send(&app, &tok, &cmid(), "one more thing").await;
    assert_ne!(r.body["conversation_id"], conv.as_str());
    // A request from a disallowed origin with a valid token is refused.
    let r = call(
        &app,
        reqwest::Method::GET,
        "/v1/widget/messages",
        Some(OTHER),
        Some(&tok),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

fn forge(token: &str, f: impl Fn(&mut Vec<String>)) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let rest = token.strip_prefix("fpw_").unwrap();
    let (p, mac) = rest.split_once('.').unwrap();
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
    let mut parts: Vec<String> = payload.split('.').map(str::to_owned).collect();
    f(&mut parts);
    format!("fpw_{}.{mac}", URL_SAFE_NO_PAD.encode(parts.join(".")))
}

async fn tokens_are_checked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = register(&app, json!({ "token_ttl_secs": 2 })).await;
    let b = register(&app, json!({})).await;
    let (ka, kb) = (
        a["public_key"].as_str().unwrap(),
        b["public_key"].as_str().unwrap(),
    );
    let (tok, _) = token(&app, ka).await;
    let app = &app;
    let get = |t: String| async move {
        call(
            app,
            reqwest::Method::GET,
            "/v1/widget/messages",
            Some(ORIGIN),
            Some(&t),
            None,
        )
        .await
        .status
    };
    assert_eq!(get(tok.clone()).await, StatusCode::OK);
    // Tampered: another visitor, a longer expiry, a flipped MAC byte.
    assert_eq!(
        get(forge(&tok, |p| p[2] =
            "vis_0190a0b0c0d07e8f9a0b1c2d3e4f5a6b".into()))
        .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(forge(&tok, |p| p[4] =
            (p[4].parse::<i64>().unwrap() + 3_600_000).to_string()))
        .await,
        StatusCode::UNAUTHORIZED
    );
    let mut flipped = tok.clone().into_bytes();
    let i = flipped.len() - 3;
    flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        get(String::from_utf8(flipped).unwrap()).await,
        StatusCode::UNAUTHORIZED
    );
    // Wrong site: site A's token presented as site B's.
    let b_id = b["site_id"].as_str().unwrap().to_owned();
    assert_eq!(
        get(forge(&tok, |p| p[1] = b_id.clone())).await,
        StatusCode::UNAUTHORIZED
    );
    // Wrong key id.
    assert_eq!(
        get(forge(&tok, |p| p[5] = "2".into())).await,
        StatusCode::UNAUTHORIZED
    );
    // Garbage, an admin token, none.
    assert_eq!(get("fpw_garbage".into()).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(app.tenant.token.clone()).await,
        StatusCode::UNAUTHORIZED
    );
    let r = call(
        app,
        reqwest::Method::GET,
        "/v1/widget/messages",
        Some(ORIGIN),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["error"]["code"], "invalid_token");
    // Expired (site A's tokens live 2 s).
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(get(tok.clone()).await, StatusCode::UNAUTHORIZED);

    // Rotation without grace: old tokens stop at once, new ones work.
    let (old, _) = token(app, kb).await;
    let b_path = format!("/admin/v1/sites/{b_id}");
    let (s, v) = app
        .post(&format!("{b_path}/rotate_secret"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["key_id"], 2);
    assert_eq!(get(old).await, StatusCode::UNAUTHORIZED);
    let (new, _) = token(app, kb).await;
    assert_eq!(get(new.clone()).await, StatusCode::OK);
    // Rotation with a grace period: the old key keeps working until it ends.
    let (s, v) = app
        .post(
            &format!("{b_path}/rotate_secret"),
            json!({ "grace_secs": 60 }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["key_id"], 3);
    assert!(v["previous_key_valid_until"].is_string());
    assert_eq!(get(new.clone()).await, StatusCode::OK);
    let tl = timeline(app, &format!("site:{b_id}")).await;
    assert_eq!(
        tl.iter()
            .filter(|e| e["entry"] == "directive" && e["kind"] == "webchat.site.rotate_secret")
            .count(),
        2
    );

    // Disabling: tokens stop at once and no new ones are issued.
    let (s, v) = app.post(&format!("{b_path}/disable"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "disabled");
    assert_eq!(get(new).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        bootstrap(app, kb, Some(ORIGIN), None).await.status,
        StatusCode::FORBIDDEN
    );
    let tl = timeline(app, &format!("site:{b_id}")).await;
    assert!(
        tl.iter()
            .any(|e| e["entry"] == "directive" && e["kind"] == "webchat.site.disable")
    );
    // Another tenant cannot see or touch this tenant's site.
    let other = fleetprompt_system_tests::create_tenant(&app.db, "other")
        .await
        .unwrap();
    let (s, _) = app
        .request_as(&other.token, reqwest::Method::GET, &b_path, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .request_as(
            &other.token,
            reqwest::Method::POST,
            &format!("{b_path}/disable"),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A metric's value in a Prometheus exposition (0 when absent).
fn metric_value(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Many visitors sending at once, with retries racing their originals:
/// the group commit writes each message exactly once, opens one
/// conversation per visitor, and answers a retry with the original's ids,
/// whether or not they landed in the same transaction.
async fn concurrent_messages_are_written_exactly_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // 64 messages from one address: above its default share of 60 a minute.
    let site = register(&app, json!({ "rate_limit_address_per_min": 1000 })).await;
    let key = site["public_key"].as_str().unwrap();
    let mut sends = Vec::new();
    for _ in 0..8 {
        let (tok, visitor) = token(&app, key).await;
        let ids: Vec<String> = (0..6).map(|_| cmid()).collect();
        for id in &ids {
            sends.push((tok.clone(), visitor.clone(), id.clone()));
        }
        for id in &ids[..2] {
            sends.push((tok.clone(), visitor.clone(), id.clone()));
        }
    }
    let answers = futures::future::join_all(
        sends
            .iter()
            .map(|(tok, _, id)| send(&app, tok, id, "Is this in stock?")),
    )
    .await;

    let mut by_message: std::collections::HashMap<&str, Vec<&Value>> = Default::default();
    let mut conversations: std::collections::HashMap<&str, HashSet<String>> = Default::default();
    for ((_, visitor, id), r) in sends.iter().zip(&answers) {
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        by_message.entry(id).or_default().push(&r.body);
        conversations
            .entry(visitor)
            .or_default()
            .insert(r.body["conversation_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(by_message.len(), 48);
    for (id, bodies) in &by_message {
        let firsts = bodies.iter().filter(|b| b["duplicate"] == false).count();
        assert_eq!(
            firsts, 1,
            "{id}: exactly one send is the original: {bodies:?}"
        );
        assert!(
            bodies
                .iter()
                .all(|b| b["message_id"] == bodies[0]["message_id"]
                    && b["conversation_id"] == bodies[0]["conversation_id"]),
            "{id}: a retry answers with the original's ids: {bodies:?}"
        );
    }
    assert_eq!(conversations.len(), 8);
    assert!(
        conversations.values().all(|c| c.len() == 1),
        "one conversation per visitor: {conversations:?}"
    );
    let db = &app.db;
    let count = |sql: &'static str| db.scalar(sql);
    assert_eq!(
        count("SELECT COUNT(*) FROM website_chat_messages")
            .await
            .unwrap(),
        48
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM website_chat_conversations")
            .await
            .unwrap(),
        8
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM signals WHERE type = 'webchat.message.received'")
            .await
            .unwrap(),
        48
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM signals WHERE type = 'webchat.session.started'")
            .await
            .unwrap(),
        8
    );
    // Every message row points at its own signal.
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM website_chat_messages m JOIN signals s
               ON s.tenant_id = m.tenant_id AND s.id = m.signal_id
             WHERE s.payload LIKE '%' || m.client_message_id || '%'"
        )
        .await
        .unwrap(),
        48
    );
    // All of it went through the batch path, none of it through the
    // message-by-message fallback.
    let metrics = app.metrics().await;
    assert_eq!(
        metric_value(&metrics, "fleetprompt_webchat_ingest_batch_size_sum"),
        sends.len() as f64,
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "fleetprompt_webchat_ingest_batch_fallbacks_total"),
        0.0
    );
}

async fn rate_limits_hold_under_a_burst(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--trusted-proxies", "127.0.0.1/32"]).await;
    let site = register(&app, json!({})).await;
    let key = site["public_key"].as_str().unwrap().to_owned();
    let (tok, _) = token(&app, &key).await;
    let sends = (0..100).map(|i| {
        let (app, tok) = (&app, tok.clone());
        async move { (send(app, &tok, &cmid(), &format!("burst {i}")).await, i) }
    });
    let results = futures::future::join_all(sends).await;
    let accepted: Vec<&Resp> = results
        .iter()
        .map(|(r, _)| r)
        .filter(|r| r.status == StatusCode::ACCEPTED)
        .collect();
    let limited: Vec<&Resp> = results
        .iter()
        .map(|(r, _)| r)
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(
        accepted.len(),
        20,
        "the default is 20 messages a minute per visitor"
    );
    assert_eq!(limited.len(), 80);
    for r in &limited {
        let secs: u64 = header(&r.headers, "retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&secs));
        assert_eq!(r.body["error"]["code"], "rate_limited");
    }
    // Nothing accepted is lost: every accepted message is stored and signalled.
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM website_chat_messages")
            .await
            .unwrap(),
        20
    );
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM signals WHERE type = 'webchat.message.received'")
            .await
            .unwrap(),
        20
    );
    // Concurrent first messages of one visitor open one conversation.
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM website_chat_conversations")
            .await
            .unwrap(),
        1
    );
    let h = call(
        &app,
        reqwest::Method::GET,
        "/v1/widget/messages",
        Some(ORIGIN),
        Some(&tok),
        None,
    )
    .await;
    let ids: HashSet<&str> = h.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for r in &accepted {
        assert!(ids.contains(r.body["message_id"].as_str().unwrap()));
    }

    // The per-site limit holds across visitors and addresses; one address
    // gets at most half of it (2 of 5).
    let small = register(&app, json!({ "rate_limit_site_per_min": 5 })).await;
    let sk = small["public_key"].as_str().unwrap();
    let mut statuses = vec![];
    for ip in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        let (t, _) = token(&app, sk).await;
        for _ in 0..2 {
            let r = app
                .http
                .post(format!("{}/v1/widget/messages", app.server.url))
                .header("origin", ORIGIN)
                .header("x-forwarded-for", ip)
                .bearer_auth(&t)
                .json(&json!({ "client_message_id": cmid(), "content": "hi" }))
                .send()
                .await
                .unwrap();
            statuses.push(r.status().as_u16());
        }
    }
    assert_eq!(statuses, [202, 202, 202, 202, 202, 429]);

    let m = app.metrics().await;
    assert!(
        m.contains("fleetprompt_widget_rejected_total{reason=\"rate_limit_visitor\"} 80"),
        "{m}"
    );
    assert!(
        m.contains("fleetprompt_widget_rejected_total{reason=\"rate_limit_site\"} 1"),
        "{m}"
    );
}

async fn live_replies_and_idle_sessions(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--webchat-sweep-ms", "200"]).await;
    let site = register(&app, json!({ "idle_timeout_secs": 2 })).await;
    let key = site["public_key"].as_str().unwrap();
    let (tok, _) = token(&app, key).await;
    let stream = app
        .http
        .get(format!("{}/v1/widget/stream", app.server.url))
        .header("origin", ORIGIN)
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    assert!(
        header(stream.headers(), "content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = stream;

    let r = send(&app, &tok, &cmid(), "Hello?").await;
    let conv = r.body["conversation_id"].as_str().unwrap().to_owned();
    let (s, v) = app.get("/admin/v1/conversations?status=open").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["conversations"][0]["id"], conv.as_str());
    let (s, v) = app
        .post(
            &format!("/admin/v1/conversations/{conv}/reply"),
            json!({ "content": "Hi, Ada here!" }),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["directive"]["kind"], "webchat.reply_send");

    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("Hi, Ada here!") {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .expect("reply streamed in time")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: message"), "{seen}");
    let tl = timeline(&app, &format!("conversation:{conv}")).await;
    assert_eq!(signals_of(&tl, "webchat.reply.sent").len(), 1);
    let (_, v) = app.get(&format!("/admin/v1/conversations/{conv}")).await;
    let roles: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["visitor", "agent"]);
    let (s, _) = app
        .post(
            "/admin/v1/conversations/conv_00000000000000000000000000000000/reply",
            json!({ "content": "x" }),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Idle for longer than the site's timeout: the sweep ends it.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let tl = timeline(&app, &format!("conversation:{conv}")).await;
        let ended = signals_of(&tl, "webchat.session.ended");
        if let Some(e) = ended.first() {
            assert_eq!(e["payload"]["reason"], "idle");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "conversation never ended: {tl:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, v) = app.get(&format!("/admin/v1/conversations/{conv}")).await;
    assert_eq!(v["conversation"]["status"], "ended");
}

async fn secrets_stay_out_of_logs_and_signals(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let site = register(&app, json!({})).await;
    let key = site["public_key"].as_str().unwrap();
    let site_id = site["site_id"].as_str().unwrap();
    let mut tokens = vec![];
    for _ in 0..2 {
        let (t, _) = token(&app, key).await;
        let r = send(&app, &t, &cmid(), "my card is on file").await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        // A visitor pasting a credential: stored, but withheld from the signal.
        send(&app, &t, &cmid(), &format!("Bearer {t}")).await;
        call(
            &app,
            reqwest::Method::POST,
            "/v1/widget/contact",
            Some(ORIGIN),
            Some(&t),
            Some(json!({ "email": "a@b.co" })),
        )
        .await;
        call(
            &app,
            reqwest::Method::GET,
            "/v1/widget/messages",
            Some(ORIGIN),
            Some(&t),
            None,
        )
        .await;
        call(
            &app,
            reqwest::Method::GET,
            "/v1/widget/messages",
            Some(OTHER),
            Some(&t),
            None,
        )
        .await;
        tokens.push(t);
    }
    let (s, _) = app
        .post(
            &format!("/admin/v1/sites/{site_id}/rotate_secret"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    for t in &tokens {
        call(
            &app,
            reqwest::Method::GET,
            "/v1/widget/messages",
            Some(ORIGIN),
            Some(t),
            None,
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = app.server.logs();
    assert!(!logs.is_empty());
    let payloads = payload_dump(&app).await;
    for t in &tokens {
        assert!(!logs.contains(t.as_str()), "a widget token is in the logs");
        assert!(
            !payloads.contains(t.as_str()),
            "a widget token is in a signal"
        );
        let mac = t.rsplit_once('.').unwrap().1;
        assert!(!logs.contains(mac) && !payloads.contains(mac));
    }
    for needle in [app.tenant.token.as_str(), "fpw_", "Bearer", "sealed"] {
        assert!(!logs.contains(needle), "{needle} is in the logs");
        assert!(!payloads.contains(needle), "{needle} is in a signal");
    }
}

/// Every signal payload and dedupe key, as one string.
async fn payload_dump(app: &TestApp) -> String {
    let url = &app.db.url;
    if url.starts_with("postgres") {
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(url)
            .await
            .unwrap();
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT payload, dedupe_key FROM signals")
            .fetch_all(&mut c)
            .await
            .unwrap();
        rows.into_iter().map(|(p, d)| p + &d).collect()
    } else {
        let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(url)
            .await
            .unwrap();
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT payload, dedupe_key FROM signals")
            .fetch_all(&mut c)
            .await
            .unwrap();
        rows.into_iter().map(|(p, d)| p + &d).collect()
    }
}

async fn script_and_demo_are_served(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let http = http_client();
    let r = http
        .get(format!("{}/widget.js", app.server.url))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(header(r.headers(), "content-encoding"), Some("gzip"));
    assert_eq!(
        header(r.headers(), "cache-control"),
        Some("public, max-age=300")
    );
    assert!(
        header(r.headers(), "content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    let etag = header(r.headers(), "etag")
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let gz = r.bytes().await.unwrap().len();
    println!("widget.js gzipped: {gz} bytes");
    assert!(
        gz <= 15 * 1024,
        "widget.js is {gz} bytes gzipped; budget 15360"
    );
    let r = http
        .get(format!("{}/widget/{etag}.js", app.server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        header(r.headers(), "cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert!(r.text().await.unwrap().contains("attachShadow"));
    let r = http
        .get(format!("{}/widget/0000.js", app.server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // The embedded (SQLite) setup serves a demo with a working site.
    let r = http
        .get(format!("{}/demo", app.server.url))
        .send()
        .await
        .unwrap();
    if backend == Backend::Sqlite {
        assert_eq!(r.status().as_u16(), 200);
        let page = r.text().await.unwrap();
        let key = page
            .split("data-site-key=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned();
        assert!(key.starts_with("pk_"));
        let r = bootstrap(&app, &key, Some(&app.server.url), None).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "the demo site allows the server's own origin: {}",
            r.body
        );
        assert!(app.db.dir.join("demo-admin-token").exists());
    } else {
        assert_eq!(r.status().as_u16(), 404);
    }
}

both_backends!(
    sites_and_bootstrap,
    messages_contact_history_close,
    concurrent_messages_are_written_exactly_once,
    tokens_are_checked,
    rate_limits_hold_under_a_burst,
    live_replies_and_idle_sessions,
    secrets_stay_out_of_logs_and_signals,
    script_and_demo_are_served,
);

//! Widget flood control, end to end over HTTP on SQLite and PostgreSQL:
//! limits keyed by client address (trusted proxies only), visitor secrets
//! that make a stolen visitor id worthless, the proof-of-work challenge,
//! and the spam score on message signals.
//!
//! The figures (site defaults): one address may start 60 new visitors a
//! minute and send 60 messages a minute across its visitors, never more
//! than half the site's budget; a visitor sends 20.

use std::time::Duration;

use axum::http::StatusCode;
use fleetprompt_system_tests::{Backend, Server, TestApp, both_backends};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ORIGIN: &str = "https://shop.example.com";
const TRUST_LOOPBACK: &[&str] = &["--trusted-proxies", "127.0.0.1/32"];

struct Resp {
    status: StatusCode,
    retry_after: Option<u64>,
    body: Value,
}

/// A widget call to `server_url`, as the client at `from` behind the
/// loopback proxy (an `X-Forwarded-For` hop) when given.
async fn widget_at(
    app: &TestApp,
    server_url: &str,
    path: &str,
    from: Option<&str>,
    token: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let mut req = match &body {
        Some(b) => app.http.post(format!("{server_url}{path}")).json(b),
        None => app.http.get(format!("{server_url}{path}")),
    }
    .header("origin", ORIGIN);
    if let Some(ip) = from {
        req = req.header("x-forwarded-for", ip);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("request");
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let text = r.text().await.unwrap();
    Resp {
        status,
        retry_after,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

async fn widget(
    app: &TestApp,
    path: &str,
    from: Option<&str>,
    token: Option<&str>,
    body: Option<Value>,
) -> Resp {
    widget_at(app, &app.server.url, path, from, token, body).await
}

async fn register(app: &TestApp, settings: Value) -> String {
    let (s, v) = app
        .post(
            "/admin/v1/sites",
            json!({ "domains": ["shop.example.com"], "mode": "native", "settings": settings }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["public_key"].as_str().unwrap().to_owned()
}

async fn bootstrap(app: &TestApp, key: &str, from: Option<&str>, extra: Value) -> Resp {
    let mut body = json!({ "site_key": key });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    widget(
        app,
        &format!("/v1/widget/bootstrap?site_key={key}"),
        from,
        None,
        Some(body),
    )
    .await
}

async fn send(app: &TestApp, key: &str, from: Option<&str>, token: &str, content: &str) -> Resp {
    widget(
        app,
        &format!("/v1/widget/messages?site_key={key}"),
        from,
        Some(token),
        Some(json!({ "client_message_id": uuid::Uuid::now_v7().to_string(), "content": content })),
    )
    .await
}

async fn history(app: &TestApp, key: &str, token: &str) -> Vec<Value> {
    let r = widget(
        app,
        &format!("/v1/widget/messages?site_key={key}"),
        None,
        Some(token),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["messages"].as_array().cloned().unwrap()
}

/// A returning visitor bootstraps with their id and secret; they get a token.
async fn returning(app: &TestApp, key: &str, vis: &str, secret: &str) -> Resp {
    let r = bootstrap(
        app,
        key,
        None,
        json!({ "visitor_id": vis, "visitor_secret": secret }),
    )
    .await;
    token_of(&r);
    r
}

fn token_of(r: &Resp) -> String {
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["token"].as_str().unwrap().to_owned()
}

fn count(statuses: &[StatusCode], s: StatusCode) -> usize {
    statuses.iter().filter(|x| **x == s).count()
}

/// One address floods bootstrap and messages, rotating visitor ids; it is
/// refused (429 with Retry-After) while another address still gets in.
async fn a_flood_from_one_address_leaves_others_in(backend: Backend) {
    let app = TestApp::spawn_with(backend, TRUST_LOOPBACK).await;
    // A small site: 100 messages a minute, so one address's share is 50.
    let key = register(&app, json!({ "rate_limit_site_per_min": 100 })).await;
    let (a, b) = (Some("203.0.113.7"), Some("198.51.100.20"));

    // Bootstrap: 60 new visitors a minute per address.
    let mut tokens = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..70 {
        let r = bootstrap(&app, &key, a, json!({})).await;
        statuses.push(r.status);
        if r.status == StatusCode::OK {
            tokens.push(token_of(&r));
        } else {
            assert_eq!(r.body["error"]["code"], "rate_limited", "{}", r.body);
            assert!((1..=60).contains(&r.retry_after.unwrap()));
        }
    }
    assert_eq!(count(&statuses, StatusCode::OK), 60, "{statuses:?}");
    assert_eq!(count(&statuses, StatusCode::TOO_MANY_REQUESTS), 10);
    let other = token_of(&bootstrap(&app, &key, b, json!({})).await);
    // Only admitted visitors were written.
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM website_chat_identities")
            .await
            .unwrap(),
        61
    );

    // Messages: address A rotates through its visitors, one message each.
    let mut statuses = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let r = send(&app, &key, a, t, &format!("flood {i}")).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.retry_after.is_some());
        }
        statuses.push(r.status);
    }
    assert_eq!(count(&statuses, StatusCode::ACCEPTED), 50, "{statuses:?}");
    assert_eq!(count(&statuses, StatusCode::TOO_MANY_REQUESTS), 10);
    // The site still has room for everyone else.
    let r = send(&app, &key, b, &other, "I am a real customer").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    // A's token sent from B's address counts against B, not A.
    let r = send(&app, &key, b, &tokens[0], "moved to another network").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);

    let m = app.metrics().await;
    assert!(
        m.contains("fleetprompt_widget_rejected_total{reason=\"rate_limit_address\"} 10"),
        "{m}"
    );
    assert!(
        m.contains("fleetprompt_widget_rejected_total{reason=\"rate_limit_new_visitors\"} 10"),
        "{m}"
    );
    // Registered at zero from the start: the site's own limit never hit.
    assert!(
        m.contains("fleetprompt_widget_rejected_total{reason=\"rate_limit_site\"} 0"),
        "{m}"
    );
}

/// Without `--trusted-proxies`, forwarding headers are anyone's to write,
/// so they are ignored: every request counts against the TCP peer.
async fn forwarding_headers_are_ignored_without_trusted_proxies(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = register(&app, json!({ "rate_limit_new_visitors_per_min": 5 })).await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let ip = format!("203.0.113.{i}");
        statuses.push(bootstrap(&app, &key, Some(&ip), json!({})).await.status);
    }
    assert_eq!(count(&statuses, StatusCode::OK), 5, "{statuses:?}");
    assert_eq!(count(&statuses, StatusCode::TOO_MANY_REQUESTS), 3);
    // And `Forwarded` alike.
    let r = app
        .http
        .post(format!(
            "{}/v1/widget/bootstrap?site_key={key}",
            app.server.url
        ))
        .header("origin", ORIGIN)
        .header("forwarded", "for=192.0.2.99")
        .json(&json!({ "site_key": key }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
}

/// A visitor id alone is worth nothing: without the secret issued with it,
/// bootstrap starts a new visitor who sees none of the old history.
async fn a_stolen_visitor_id_gets_a_new_visitor(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = register(&app, json!({})).await;
    let first = bootstrap(&app, &key, None, json!({})).await;
    let tok = token_of(&first);
    let vis = first.body["visitor_id"].as_str().unwrap().to_owned();
    let secret = first.body["visitor_secret"].as_str().unwrap().to_owned();
    let r = send(&app, &key, None, &tok, "my address is 1 Private Road").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);

    for presented in [
        json!({ "visitor_id": vis }),
        json!({ "visitor_id": vis, "visitor_secret": "fpv_guessed" }),
        json!({ "visitor_id": vis, "visitor_secret": "" }),
    ] {
        let r = bootstrap(&app, &key, None, presented.clone()).await;
        let thief = token_of(&r);
        assert_ne!(r.body["visitor_id"], vis.as_str(), "{presented}");
        assert!(r.body["visitor_secret"].as_str().is_some());
        assert!(history(&app, &key, &thief).await.is_empty(), "{presented}");
    }
    // An unknown id is not adopted either.
    let unknown = "vis_01890000000000000000000000";
    let r = bootstrap(&app, &key, None, json!({ "visitor_id": unknown })).await;
    token_of(&r);
    assert_ne!(r.body["visitor_id"], unknown);

    // The owner, with the secret, is still themselves.
    let r = bootstrap(
        &app,
        &key,
        None,
        json!({ "visitor_id": vis, "visitor_secret": secret }),
    )
    .await;
    let again = token_of(&r);
    assert_eq!(r.body["visitor_id"], vis.as_str());
    assert!(r.body["visitor_secret"].is_null());
    let h = history(&app, &key, &again).await;
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["content"], "my address is 1 Private Road");
    // Only hashes are stored.
    let stored = app
        .db
        .scalar(&format!(
            "SELECT COUNT(*) FROM website_chat_identities WHERE secret_hash LIKE '%{}%'",
            &secret[4..]
        ))
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

/// A widget from before visitor secrets (its identity has none) keeps its
/// conversation: its first bootstrap adopts the id and issues a secret,
/// and from then on the id needs that secret.
async fn a_visitor_from_before_secrets_is_adopted_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = register(&app, json!({})).await;
    let first = bootstrap(&app, &key, None, json!({})).await;
    let tok = token_of(&first);
    let vis = first.body["visitor_id"].as_str().unwrap().to_owned();
    assert_eq!(
        send(&app, &key, None, &tok, "order 77?").await.status,
        StatusCode::ACCEPTED
    );
    // As the row was before migration 0011.
    let n = app
        .db
        .scalar(&format!(
            "UPDATE website_chat_identities SET secret_hash = NULL WHERE visitor_id = '{vis}' RETURNING CAST(1 AS BIGINT)"
        ))
        .await
        .unwrap();
    assert_eq!(n, 1);

    let r = bootstrap(&app, &key, None, json!({ "visitor_id": vis })).await;
    let adopted = token_of(&r);
    assert_eq!(r.body["visitor_id"], vis.as_str(), "the id is adopted");
    let secret = r.body["visitor_secret"].as_str().unwrap().to_owned();
    assert_eq!(history(&app, &key, &adopted).await.len(), 1);

    // Adopted once: the bare id no longer works.
    let r = bootstrap(&app, &key, None, json!({ "visitor_id": vis })).await;
    token_of(&r);
    assert_ne!(r.body["visitor_id"], vis.as_str());
    let r = returning(&app, &key, &vis, &secret).await;
    assert_eq!(r.body["visitor_id"], vis.as_str());
}

fn solve(c: &Value) -> Value {
    let salt = c["salt"].as_str().unwrap();
    let want = c["challenge"].as_str().unwrap();
    let max = c["max_number"].as_u64().unwrap();
    let number = (0..=max)
        .find(|n| hex(&Sha256::digest(format!("{salt}{n}").as_bytes())) == want)
        .expect("a challenge has a solution");
    json!({ "salt": salt, "challenge": want, "max_number": max,
            "signature": c["signature"], "number": number })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn challenge_at(app: &TestApp, url: &str, key: &str) -> Value {
    let r = widget_at(
        app,
        url,
        &format!("/v1/widget/challenge?site_key={key}"),
        None,
        None,
        Some(json!({ "site_key": key })),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["algorithm"], "SHA-256");
    r.body
}

/// With `challenge = "proof_of_work"`, a new visitor needs a solved,
/// server-signed, unused challenge; reuse (on any node) and forgery are
/// refused; a returning visitor with their secret needs none.
async fn proof_of_work_is_required_signed_and_single_use(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = register(&app, json!({ "challenge": "proof_of_work" })).await;
    let url = app.server.url.clone();

    let r = bootstrap(&app, &key, None, json!({})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "challenge_required");

    let c = challenge_at(&app, &url, &key).await;
    assert_eq!(c["max_number"], 20_000, "the default difficulty");
    let good = solve(&c);
    let r = bootstrap(&app, &key, None, json!({ "proof_of_work": good })).await;
    let tok = token_of(&r);
    assert_eq!(r.body["settings"]["challenge"], "proof_of_work");
    let vis = r.body["visitor_id"].as_str().unwrap().to_owned();
    let secret = r.body["visitor_secret"].as_str().unwrap().to_owned();
    assert_eq!(
        send(&app, &key, None, &tok, "hello").await.status,
        StatusCode::ACCEPTED
    );

    // Reused: refused here and on a second node of the same database.
    let r = bootstrap(&app, &key, None, json!({ "proof_of_work": good })).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "challenge_failed");
    let mut second = Server::start(&app.db, "second", &[]).await.unwrap();
    let fresh = solve(&challenge_at(&app, &second.url, &key).await);
    let reuse = widget_at(
        &app,
        &second.url,
        &format!("/v1/widget/bootstrap?site_key={key}"),
        None,
        None,
        Some(json!({ "site_key": key, "proof_of_work": good })),
    )
    .await;
    assert_eq!(reuse.status, StatusCode::FORBIDDEN, "{}", reuse.body);
    assert_eq!(reuse.body["error"]["code"], "challenge_failed");
    // A challenge from one node is good on the other (one derived key).
    let r = bootstrap(&app, &key, None, json!({ "proof_of_work": fresh })).await;
    token_of(&r);
    second.stop().await.unwrap();

    // Forged: an easier puzzle, a wrong answer, a made-up signature, or a
    // challenge for another site.
    let c = challenge_at(&app, &url, &key).await;
    let solved = solve(&c);
    let mut easier = solved.clone();
    easier["max_number"] = json!(10);
    let mut wrong = solved.clone();
    wrong["number"] = json!((solved["number"].as_u64().unwrap() + 1) % 20_001);
    let mut unsigned = solved.clone();
    unsigned["signature"] = json!("00".repeat(32));
    let other_site = register(&app, json!({ "challenge": "proof_of_work" })).await;
    let foreign = solve(&challenge_at(&app, &url, &other_site).await);
    for bad in [easier, wrong, unsigned, foreign] {
        let r = bootstrap(&app, &key, None, json!({ "proof_of_work": bad })).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{bad}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "challenge_failed");
    }
    // The good one still works once: refusals did not spend it.
    token_of(&bootstrap(&app, &key, None, json!({ "proof_of_work": solved })).await);

    // A returning visitor, with their secret, is not asked again.
    let r = returning(&app, &key, &vis, &secret).await;
    assert_eq!(r.body["visitor_id"], vis.as_str());

    // The work rises with the address's recent rate: it doubles for every
    // ten challenges this address took in the minute.
    let mut maxes = Vec::new();
    for _ in 0..20 {
        maxes.push(
            challenge_at(&app, &url, &key).await["max_number"]
                .as_u64()
                .unwrap(),
        );
    }
    assert!(maxes.windows(2).all(|w| w[0] <= w[1]), "{maxes:?}");
    assert_eq!(maxes[0], 20_000, "{maxes:?}");
    assert!(maxes.contains(&40_000), "{maxes:?}");
    assert_eq!(*maxes.last().unwrap(), 80_000, "{maxes:?}");
}

/// Links and repeated content raise `spam_score` in the message signal;
/// the message is stored and signalled all the same.
async fn spam_score_marks_the_signal_and_drops_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = register(&app, json!({})).await;
    let tok = token_of(&bootstrap(&app, &key, None, json!({})).await);
    let spam = "cheap pills http://a.example http://b.example https://c.example www.d.example";
    let mut sent = Vec::new();
    for content in ["Where is my order?", spam, spam] {
        let r = send(&app, &key, None, &tok, content).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        sent.push(r.body["message_id"].as_str().unwrap().to_owned());
    }
    let conv = {
        let (_, v) = app.get("/admin/v1/conversations").await;
        v["conversations"][0]["id"].as_str().unwrap().to_owned()
    };
    let mut scores = Vec::new();
    for _ in 0..50 {
        let (_, tl) = app
            .get(&format!("/admin/v1/timeline?subject=conversation:{conv}"))
            .await;
        scores = tl["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["entry"] == "signal" && e["type"] == "webchat.message.received")
            .map(|e| {
                (
                    e["payload"]["message_id"].as_str().unwrap().to_owned(),
                    e["payload"]["spam_score"].as_u64().unwrap(),
                )
            })
            .collect::<Vec<_>>();
        if scores.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let score = |id: &str| scores.iter().find(|(m, _)| m == id).unwrap().1;
    assert_eq!(score(&sent[0]), 0, "{scores:?}");
    assert_eq!(score(&sent[1]), 50, "four links: {scores:?}");
    assert_eq!(score(&sent[2]), 80, "four links, seen before: {scores:?}");
    assert_eq!(history(&app, &key, &tok).await.len(), 3);
}

both_backends!(
    a_flood_from_one_address_leaves_others_in,
    forwarding_headers_are_ignored_without_trusted_proxies,
    a_stolen_visitor_id_gets_a_new_visitor,
    a_visitor_from_before_secrets_is_adopted_once,
    proof_of_work_is_required_signed_and_single_use,
    spam_score_marks_the_signal_and_drops_nothing,
);

//! Members, roles, sessions and tokens, end to end: an agent is refused on
//! every admin-only route of the router's own table; a revoked token and a
//! signed-out session are refused at once on both nodes; sign-in is
//! throttled; an agent's reply names them on the timeline; the CLI's
//! one-time password signs in.

use std::time::Duration;

use axum::http::StatusCode;
use fleetprompt_core::member::Role;
use fleetprompt_system_tests::access::{
    Session, add_member, fill, sign_in, sign_in_raw, with_session, with_token,
};
use fleetprompt_system_tests::webchat::{say, signals_of, site, visitor, wait_signal};
use fleetprompt_system_tests::{Backend, Server, TestApp, both_backends, cli};
use reqwest::Method;
use serde_json::{Value, json};

fn method(m: &str) -> Method {
    Method::from_bytes(m.as_bytes()).unwrap()
}

async fn an_agent_is_refused_on_every_admin_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let base = app.server.url.clone();
    let agent = add_member(&app.db, "acme", "ann@example.com", "Ann Agent", "agent")
        .await
        .unwrap();
    let session = sign_in(&app.http, &base, &agent.email, &agent.password).await;
    assert_eq!(session.body["role"], "agent", "{}", session.body);
    // A personal token of the agent acts as the agent too.
    let (s, v) = with_session(
        &app.http,
        &base,
        &session,
        true,
        Method::POST,
        "/admin/v1/tokens",
        Some(json!({ "name": "laptop" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let token = v["token"]["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("fpa_"), "{v}");

    // The binary's table: the platform's routes and website chat's.
    let table = fleetprompt_server::admin::table(&[std::sync::Arc::new(
        fleetprompt_webchat::http::WebchatHttp::default(),
    )]);
    let admin_only: Vec<_> = table.iter().filter(|r| r.role == Role::Admin).collect();
    // The table is the router's: it holds the settings routes, and more
    // than a handful of them.
    for (m, p) in [
        ("POST", "/admin/v1/sites"),
        ("POST", "/admin/v1/destinations"),
        ("POST", "/admin/v1/directives"),
        ("GET", "/admin/v1/members"),
        ("POST", "/admin/v1/members"),
        ("GET", "/admin/v1/workflows"),
    ] {
        assert!(
            admin_only.iter().any(|r| r.method == m && r.path == p),
            "{m} {p} is not in the table as admin-only: {table:?}"
        );
    }
    assert!(admin_only.len() >= 20, "{admin_only:?}");

    for r in &admin_only {
        let path = fill(&r.path);
        let body = (r.method != "GET").then(|| json!({}));
        let (s, v) = with_token(
            &app.http,
            &base,
            &token,
            method(&r.method),
            &path,
            body.clone(),
        )
        .await;
        assert_eq!(
            s,
            StatusCode::FORBIDDEN,
            "{} {path} with a token: {v}",
            r.method
        );
        assert_eq!(v["error"]["code"], "forbidden", "{} {path}: {v}", r.method);
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("admin") && msg.contains("agent"), "{msg}");
        let (s, v) = with_session(
            &app.http,
            &base,
            &session,
            true,
            method(&r.method),
            &path,
            body,
        )
        .await;
        assert_eq!(
            s,
            StatusCode::FORBIDDEN,
            "{} {path} with a session: {v}",
            r.method
        );
        assert_eq!(v["error"]["code"], "forbidden", "{} {path}: {v}", r.method);
    }

    // Every admin-only GET of the table is a real route: the tenant's own
    // token is let through to it (never 403, never "route not found").
    for r in admin_only.iter().filter(|r| r.method == "GET") {
        let (s, v) = app
            .request_as(&app.tenant.token, Method::GET, &fill(&r.path), None)
            .await;
        assert_ne!(s, StatusCode::FORBIDDEN, "{} {}: {v}", r.method, r.path);
        assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{}: {v}", r.path);
        assert_ne!(v["error"]["message"], "route not found", "{}: {v}", r.path);
    }
    // Nothing an agent was refused was done. (Acme's members: on SQLite
    // the demo tenant has its console member too.)
    let members = app
        .db
        .scalar(&format!(
            "SELECT COUNT(*) FROM members WHERE tenant_id = '{}'",
            app.tenant.id
        ))
        .await
        .unwrap();
    assert_eq!(members, 1);

    // What agents may do, they can.
    let (s, v) = with_token(
        &app.http,
        &base,
        &token,
        Method::GET,
        "/admin/v1/conversations",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = with_session(
        &app.http,
        &base,
        &session,
        false,
        Method::GET,
        "/admin/v1/me",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["member"]["name"], "Ann Agent", "{v}");
    assert_eq!(v["csrf_token"], session.csrf.as_str(), "{v}");
    // A cookie without the CSRF token cannot change anything.
    let (s, v) = with_session(
        &app.http,
        &base,
        &session,
        false,
        Method::POST,
        "/admin/v1/tokens",
        Some(json!({ "name": "forged" })),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "csrf_failed", "{v}");
}

/// Requests `GET /admin/v1/me` on each node; the statuses.
async fn me_everywhere(
    app: &TestApp,
    nodes: &[&str],
    auth: &dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Vec<StatusCode> {
    let mut out = Vec::new();
    for base in nodes {
        let r = auth(app.http.get(format!("{base}/admin/v1/me")))
            .send()
            .await
            .unwrap();
        out.push(StatusCode::from_u16(r.status().as_u16()).unwrap());
    }
    out
}

async fn revocations_hold_at_once_on_both_nodes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let second = Server::start(&app.db, "second", &["--demo", "false"])
        .await
        .unwrap();
    let (a, b) = (app.server.url.clone(), second.url.clone());
    let nodes = [a.as_str(), b.as_str()];
    let admin = add_member(&app.db, "acme", "bo@example.com", "Bo Admin", "admin")
        .await
        .unwrap();
    let session = sign_in(&app.http, &a, &admin.email, &admin.password).await;
    let (s, v) = with_session(
        &app.http,
        &a,
        &session,
        true,
        Method::POST,
        "/admin/v1/tokens",
        Some(json!({ "name": "ci" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let token = v["token"]["token"].as_str().unwrap().to_owned();
    let token_id = v["token"]["id"].as_str().unwrap().to_owned();
    let bearer = |r: reqwest::RequestBuilder| r.bearer_auth(&token);
    let cookie = |r: reqwest::RequestBuilder| r.header("cookie", &session.cookie);
    assert_eq!(
        me_everywhere(&app, &nodes, &bearer).await,
        [StatusCode::OK; 2]
    );
    assert_eq!(
        me_everywhere(&app, &nodes, &cookie).await,
        [StatusCode::OK; 2]
    );

    // Listed with its prefix, name and last use; revoked on the second node.
    let (s, v) = with_token(&app.http, &b, &token, Method::GET, "/admin/v1/tokens", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let listed = &v["tokens"][0];
    assert_eq!(listed["name"], "ci", "{v}");
    assert!(token.starts_with(listed["prefix"].as_str().unwrap()), "{v}");
    assert!(listed["last_used_at"].is_string(), "{v}");
    assert!(
        !v.to_string().contains(token.split('.').nth(1).unwrap()),
        "{v}"
    );
    let (s, v) = with_session(
        &app.http,
        &b,
        &session,
        true,
        Method::DELETE,
        &format!("/admin/v1/tokens/{token_id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(
        me_everywhere(&app, &nodes, &bearer).await,
        [StatusCode::UNAUTHORIZED; 2]
    );

    // Signed out on the first node: refused on both at once.
    let (s, v) = with_session(
        &app.http,
        &a,
        &session,
        true,
        Method::DELETE,
        "/admin/v1/session",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(
        me_everywhere(&app, &nodes, &cookie).await,
        [StatusCode::UNAUTHORIZED; 2]
    );

    // The tenant's own token, rotated: the old one is refused on both
    // nodes, the new one (printed once) works.
    let old = app.tenant.token.clone();
    let out = cli(&app.db, &["tenant", "rotate-token", "acme", "--json"])
        .await
        .unwrap();
    let new: Value = serde_json::from_str(out.trim()).unwrap();
    let new = new["admin_token"].as_str().unwrap().to_owned();
    let old_bearer = |r: reqwest::RequestBuilder| r.bearer_auth(&old);
    let new_bearer = |r: reqwest::RequestBuilder| r.bearer_auth(&new);
    assert_eq!(
        me_everywhere(&app, &nodes, &old_bearer).await,
        [StatusCode::UNAUTHORIZED; 2]
    );
    assert_eq!(
        me_everywhere(&app, &nodes, &new_bearer).await,
        [StatusCode::OK; 2]
    );
    // The tenant's own token lists the tenant's tokens: the old one revoked.
    let (s, v) = with_token(&app.http, &b, &new, Method::GET, "/admin/v1/tokens", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let tokens = v["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "{v}");
    assert!(
        tokens[0]["revoked_at"].is_null() && tokens[1]["revoked_at"].is_string(),
        "{v}"
    );
    assert!(tokens.iter().all(|t| t["member_id"].is_null()), "{v}");

    // Each of these admin changes is on the tenant's audit log.
    let (s, v) = with_token(
        &app.http,
        &a,
        &new,
        Method::GET,
        &format!("/admin/v1/timeline?subject=tenant:{}", app.tenant.id),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let entries = v["entries"].as_array().unwrap();
    for t in [
        "member.added",
        "token.created",
        "token.revoked",
        "tenant.token_rotated",
    ] {
        assert_eq!(signals_of(entries, t).len(), 1, "{t}: {v}");
    }
    let created = signals_of(entries, "token.created")[0];
    assert_eq!(
        created["payload"]["origin"]["name"], "Bo Admin",
        "{created}"
    );
    assert!(!v.to_string().contains(&new) && !v.to_string().contains(&token));
}

async fn sign_in_is_throttled_after_repeated_wrong_passwords(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let base = app.server.url.clone();
    let m = add_member(&app.db, "acme", "cy@example.com", "Cy", "agent")
        .await
        .unwrap();
    let other = add_member(&app.db, "acme", "di@example.com", "Di", "agent")
        .await
        .unwrap();
    let wrong = json!({ "email": m.email, "password": "not the password" });
    for i in 0..5 {
        let (s, retry, cookie, v) = sign_in_raw(&app.http, &base, wrong.clone()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "attempt {i}: {v}");
        assert_eq!(v["error"]["code"], "sign_in_failed", "{v}");
        assert!(retry.is_none() && cookie.is_none());
    }
    // The sixth is refused before the password is looked at: even the
    // right one.
    let (s, retry, cookie, v) = sign_in_raw(
        &app.http,
        &base,
        json!({ "email": m.email, "password": m.password }),
    )
    .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["error"]["code"], "rate_limited", "{v}");
    assert!(cookie.is_none());
    let secs: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=900).contains(&secs), "{secs}");
    // Another account from the same address is not held up by it.
    sign_in(&app.http, &base, &other.email, &other.password).await;

    // Per address: past its limit, every account from it is refused.
    let mut limited = false;
    for i in 0..20 {
        let (s, _, _, v) = sign_in_raw(
            &app.http,
            &base,
            json!({ "email": format!("nobody{i}@example.com"), "password": "guess guess" }),
        )
        .await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    }
    assert!(limited, "20 failures from one address are throttled");
    let (s, retry, _, v) = sign_in_raw(
        &app.http,
        &base,
        json!({ "email": other.email, "password": other.password }),
    )
    .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(retry.is_some());
}

async fn an_agents_reply_names_them_on_the_timeline(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let base = app.server.url.clone();
    let site = site(&app).await;
    let visitor_token = visitor(&app, site["public_key"].as_str().unwrap()).await;
    let conv = say(&app, &visitor_token, "where is my parcel?").await;
    let agent = add_member(&app.db, "acme", "eve@example.com", "Eve Agent", "agent")
        .await
        .unwrap();
    let session = sign_in(&app.http, &base, &agent.email, &agent.password).await;
    let (s, v) = with_session(
        &app.http,
        &base,
        &session,
        true,
        Method::POST,
        &format!("/admin/v1/conversations/{conv}/reply"),
        Some(json!({ "content": "It ships today." })),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let entries = wait_signal(&app, &conv, "webchat.reply.sent", Duration::from_secs(10)).await;
    // Who replied, and when: the directive's origin names the member.
    let reply = entries
        .iter()
        .find(|e| e["entry"] == "directive" && e["kind"] == "webchat.reply_send")
        .unwrap_or_else(|| panic!("{entries:?}"));
    assert_eq!(reply["origin"]["type"], "member", "{reply}");
    assert_eq!(reply["origin"]["name"], "Eve Agent", "{reply}");
    assert_eq!(reply["origin"]["member_id"], agent.id.as_str(), "{reply}");
    assert!(reply["created_at"].is_string(), "{reply}");
    let sent = signals_of(&entries, "webchat.reply.sent")[0];
    assert_eq!(sent["payload"]["author"]["name"], "Eve Agent", "{sent}");
    // The agent reads the same timeline.
    let (s, v) = with_session(
        &app.http,
        &base,
        &session,
        false,
        Method::GET,
        &format!("/admin/v1/timeline?subject=conversation:{conv}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

async fn cli_user_add_prints_a_password_that_signs_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let base = app.server.url.clone();
    let out = cli(
        &app.db,
        &[
            "user",
            "add",
            "--tenant",
            "acme",
            "--email",
            "Fay@Example.com",
            "--name",
            "Fay",
            "--role",
            "admin",
        ],
    )
    .await
    .unwrap();
    let password = out
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap_or_else(|| panic!("no password line in {out:?}"))
        .trim()
        .to_owned();
    assert!(password.len() >= 16, "{password}");
    let session = sign_in(&app.http, &base, "fay@example.com", &password).await;
    let c = session.set_cookie.to_ascii_lowercase();
    assert!(c.contains("httponly") && c.contains("samesite=lax"), "{c}");
    assert!(!c.contains("secure"), "plain http: {c}");
    assert_eq!(session.body["member"]["role"], "admin");
    // An admin member may manage members.
    let (s, v) = with_session(
        &app.http,
        &base,
        &session,
        false,
        Method::GET,
        "/admin/v1/members",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["members"][0]["email"], "fay@example.com", "{v}");
    assert!(!v.to_string().contains("argon2"), "{v}");
    let stored = app
        .db
        .strings("SELECT password_hash FROM members")
        .await
        .unwrap();
    assert!(stored[0].starts_with("$argon2id$"), "{stored:?}");

    let list = cli(&app.db, &["user", "list", "--tenant", "acme"])
        .await
        .unwrap();
    assert!(
        list.contains("fay@example.com") && list.contains("active"),
        "{list}"
    );

    // A reset signs out everywhere; the new password works, the old not.
    let out = cli(
        &app.db,
        &[
            "user",
            "reset-password",
            "fay@example.com",
            "--tenant",
            "acme",
        ],
    )
    .await
    .unwrap();
    let new = out
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap()
        .trim()
        .to_owned();
    refused_after(&app, &session, "fay@example.com", &password).await;
    let session = sign_in(&app.http, &base, "fay@example.com", &new).await;

    // Disabled: the session stops at once, and sign-in fails.
    cli(
        &app.db,
        &["user", "disable", "fay@example.com", "--tenant", "acme"],
    )
    .await
    .unwrap();
    refused_after(&app, &session, "fay@example.com", &new).await;
}

/// After a change that signs a member out: their session is refused at
/// once, and so is signing in with `password`.
async fn refused_after(app: &TestApp, session: &Session, email: &str, password: &str) {
    let base = &app.server.url;
    let (s, v) = with_session(
        &app.http,
        base,
        session,
        false,
        Method::GET,
        "/admin/v1/me",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, _, _, _) = sign_in_raw(
        &app.http,
        base,
        json!({ "email": email, "password": password }),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

both_backends!(
    an_agent_is_refused_on_every_admin_route,
    revocations_hold_at_once_on_both_nodes,
    sign_in_is_throttled_after_repeated_wrong_passwords,
    an_agents_reply_names_them_on_the_timeline,
    cli_user_add_prints_a_password_that_signs_in,
);

//! Settings that change after they are made, and what an operator does to
//! a conversation by hand: sites edited under their version and enabled
//! again, destinations changed (rotated) and deleted, and conversations
//! escalated, closed, reopened and assigned, each on the timeline with who
//! did it. On both backends, with the real binary.

use std::time::Duration;

use axum::http::StatusCode;
use fleetprompt_core::id::MemberId;
use fleetprompt_system_tests::lifecycle::{delete, mattermost, patch, refused, send, token_id};
use fleetprompt_system_tests::webchat::{
    ORIGIN, SHIPPED_RULES, bootstrap, directives_of, say, signals_of, site, spawn_with_rules,
    timeline, visitor, wait_until,
};
use fleetprompt_system_tests::{Backend, Recorder, Reply, Server, TestApp, both_backends};
use serde_json::{Value, json};

const HOOK: &str = "/hooks/old-k3y";
const NEW_HOOK: &str = "/hooks/new-k3y";

/// A server on the shipped website chat rules.
async fn spawn(backend: Backend) -> TestApp {
    spawn_with_rules(backend, &[], |dir| {
        std::fs::copy(SHIPPED_RULES, dir.join("website_chat.toml")).unwrap();
    })
    .await
}

async fn site_timeline(app: &TestApp, site: &str) -> Vec<Value> {
    let (s, v) = app
        .get(&format!("/admin/v1/timeline?subject=site:{site}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["entries"].as_array().cloned().unwrap_or_default()
}

async fn a_stale_site_version_is_refused_and_a_fresh_one_applies(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = site(&app).await;
    let id = created["site_id"].as_str().unwrap().to_owned();
    let path = format!("/admin/v1/sites/{id}");

    let (s, headers, v) = send(&app, reqwest::Method::GET, &path, None, &[]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v1 = v["version"].as_i64().expect("a version");
    assert_eq!(headers["etag"], format!("\"{v1}\"").as_str());

    // A fresh version (in the body) applies, and bumps the version.
    let (s, v) = patch(
        &app,
        &path,
        json!({ "settings": { "title": "Ask us" }, "version": v1 }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["settings"]["title"], "Ask us", "{v}");
    // Settings not named stay as they were.
    assert_eq!(
        v["settings"]["greeting"], created["settings"]["greeting"],
        "{v}"
    );
    let v2 = v["version"].as_i64().unwrap();
    assert!(v2 > v1, "{v1} -> {v2}");

    // The version read before that edit is stale now, by header or body.
    for stale in [
        send(
            &app,
            reqwest::Method::PATCH,
            &path,
            Some(json!({ "settings": { "title": "Lost update" } })),
            &[("if-match", &format!("\"{v1}\""))],
        )
        .await,
        {
            let (s, v) = patch(
                &app,
                &path,
                json!({ "settings": { "title": "Lost update" }, "version": v1 }),
            )
            .await;
            (s, Default::default(), v)
        },
    ] {
        let (s, _, v) = stale;
        let m = refused((s, v), StatusCode::CONFLICT, "version_conflict");
        assert!(m.contains(&v2.to_string()), "{m}");
    }
    let (_, v) = app.get(&path).await;
    assert_eq!(v["settings"]["title"], "Ask us", "{v}");
    assert_eq!(v["version"], v2, "{v}");

    // The current version by If-Match applies; so does an edit naming none.
    let (s, _, v) = send(
        &app,
        reqwest::Method::PATCH,
        &path,
        Some(json!({ "domains": ["other.example.com"] })),
        &[("if-match", &format!("\"{v2}\""))],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["allowed_origins"], json!(["https://other.example.com"]));
    // The old origin is refused at once.
    let key = created["public_key"].as_str().unwrap();
    assert_eq!(bootstrap(&app, key).await.status().as_u16(), 403);
    let (s, v) = patch(&app, &path, json!({ "domains": ["shop.example.com"] })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(bootstrap(&app, key).await.status().as_u16(), 200);

    // Two edits made at once against the same version: exactly one applies.
    let v3 = app.get(&path).await.1["version"].as_i64().unwrap();
    let (a, b) = tokio::join!(
        patch(
            &app,
            &path,
            json!({ "settings": { "title": "A" }, "version": v3 })
        ),
        patch(
            &app,
            &path,
            json!({ "settings": { "title": "B" }, "version": v3 })
        ),
    );
    let (won, lost) = if a.0 == StatusCode::OK {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(won.0, StatusCode::OK, "{}", won.1);
    refused(lost, StatusCode::CONFLICT, "version_conflict");
    let (_, now) = app.get(&path).await;
    assert_eq!(
        now["settings"]["title"], won.1["settings"]["title"],
        "{now}"
    );
    assert_eq!(now["version"], v3 + 1, "{now}");

    // Each edit is a directive on the site's timeline, with its actor.
    let entries = site_timeline(&app, &id).await;
    let updates: Vec<&Value> = directives_of(&entries, "webchat.site.update")
        .into_iter()
        .filter(|u| u["status"] == "succeeded")
        .collect();
    assert_eq!(updates.len(), 4, "{entries:#?}");
    for u in &updates {
        assert_eq!(u["origin"]["type"], "api", "{u}");
        assert_eq!(u["origin"]["token_id"], token_id(&app).as_str(), "{u}");
    }

    // Bad input: 4xx JSON errors, and nothing changes.
    let before = app.get(&path).await.1;
    refused(
        patch(&app, &path, json!({ "domains": [] })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    refused(
        patch(&app, &path, json!({ "domains": ["javascript:alert(1)"] })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    refused(
        patch(&app, &path, json!({ "settings": { "color": "red" } })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    refused(
        patch(&app, &path, json!({ "settings": { "tenant_id": "x" } })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    refused(
        patch(&app, &path, json!({ "mode": "proxy" })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (s, _, v) = send(
        &app,
        reqwest::Method::PATCH,
        &path,
        Some(json!({ "settings": { "title": "x" } })),
        &[("if-match", "yesterday")],
    )
    .await;
    refused((s, v), StatusCode::BAD_REQUEST, "bad_request");
    let (s, _, v) = send(
        &app,
        reqwest::Method::PATCH,
        &path,
        Some(json!({ "settings": { "title": "x" }, "version": 1 })),
        &[("if-match", "\"2\"")],
    )
    .await;
    refused((s, v), StatusCode::BAD_REQUEST, "bad_request");
    refused(
        patch(&app, "/admin/v1/sites/site_nope", json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let after = app.get(&path).await.1;
    assert_eq!(before, after);
}

async fn a_re_enabled_site_accepts_widget_traffic_again(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = site(&app).await;
    let id = created["site_id"].as_str().unwrap();
    let key = created["public_key"].as_str().unwrap();
    let token = visitor(&app, key).await;
    say(&app, &token, "hello").await;

    for round in 0..2 {
        let (s, v) = app
            .post(&format!("/admin/v1/sites/{id}/disable"), json!({}))
            .await;
        assert_eq!(s, StatusCode::OK, "round {round}: {v}");
        assert_eq!(v["status"], "disabled", "{v}");
        assert_eq!(bootstrap(&app, key).await.status().as_u16(), 403);
        let r = app
            .http
            .post(format!("{}/v1/widget/messages", app.server.url))
            .header("origin", ORIGIN)
            .bearer_auth(&token)
            .json(&json!({ "client_message_id": uuid::Uuid::now_v7().to_string(), "content": "anyone?" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "round {round}");

        let (s, v) = app
            .post(&format!("/admin/v1/sites/{id}/enable"), json!({}))
            .await;
        assert_eq!(s, StatusCode::OK, "round {round}: {v}");
        assert_eq!(v["status"], "active", "{v}");
        assert_eq!(v["directive"]["kind"], "webchat.site.enable", "{v}");
        let fresh = visitor(&app, key).await;
        say(&app, &fresh, "back again").await;
    }
    // Enabling an active site changes nothing and says so plainly.
    let (s, v) = app
        .post(&format!("/admin/v1/sites/{id}/enable"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "active", "{v}");
    let entries = site_timeline(&app, id).await;
    assert_eq!(directives_of(&entries, "webchat.site.disable").len(), 2);
    assert!(directives_of(&entries, "webchat.site.enable").len() >= 2);

    refused(
        app.post("/admin/v1/sites/site_nope/enable", json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

async fn a_destination_in_use_is_not_deleted_unless_forced(backend: Backend) {
    let app = spawn(backend).await;
    let mm = Recorder::start().await;
    mattermost(&app, "mattermost", &format!("{}{HOOK}", mm.url)).await;

    // The shipped rules name `mattermost`.
    let m = refused(
        delete(&app, "/admin/v1/destinations/mattermost").await,
        StatusCode::CONFLICT,
        "destination_in_use",
    );
    assert!(m.contains("webchat.auto-notify"), "{m}");

    // A directive waiting to deliver to `hook` keeps it too.
    let hook = Recorder::start().await;
    let created = app.webhook("hook", &format!("{}/in", hook.url)).await;
    let hook_id = created["id"].as_str().unwrap().to_owned();
    let (s, d) = app
        .post(
            "/admin/v1/directives",
            json!({ "kind": "webhook.post", "args": { "destination": "hook" },
                    "dedupe_key": "later-1", "delay_ms": 600_000 }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let directive = d["id"].as_str().unwrap().to_owned();
    let m = refused(
        delete(&app, "/admin/v1/destinations/hook").await,
        StatusCode::CONFLICT,
        "destination_in_use",
    );
    assert!(m.contains(&directive), "{m}");
    let (s, v) = app.get(&format!("/admin/v1/destinations/{hook_id}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "hook", "{v}");

    // Forced, by id: the directive is cancelled, with the reason and who.
    let (s, v) = delete(
        &app,
        &format!("/admin/v1/destinations/{hook_id}?force=true"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["cancelled_directives"], json!([directive]), "{v}");
    let d = app
        .wait_for_status(&directive, &["cancelled"], Duration::from_secs(5))
        .await;
    let reason = d["last_error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("\"hook\" was deleted") && reason.contains(&token_id(&app)),
        "{d}"
    );
    refused(
        app.get("/admin/v1/destinations/hook").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hook.received("/in").is_empty());

    // Forced past the rules too: they skip it from now on.
    let (s, v) = delete(&app, "/admin/v1/destinations/mattermost?force=true").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = app.get("/admin/v1/destinations").await;
    assert_eq!(v["destinations"], json!([]), "{v}");

    // An unused one goes at once.
    app.webhook("spare", &format!("{}/in", hook.url)).await;
    let (s, v) = delete(&app, "/admin/v1/destinations/spare").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["cancelled_directives"], json!([]), "{v}");

    refused(
        delete(&app, "/admin/v1/destinations/nope").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    refused(
        delete(&app, "/admin/v1/destinations/x?force=maybe").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );

    // Each change is in the tenant's audit log, with who made it and
    // without the destination's secrets.
    let (s, v) = app
        .get(&format!(
            "/admin/v1/timeline?subject=tenant:{}",
            app.tenant.id
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let entries = v["entries"].as_array().unwrap();
    let created = signals_of(entries, "destination.created");
    let deleted = signals_of(entries, "destination.deleted");
    assert_eq!(created.len(), 3, "mattermost, hook, spare: {v}");
    assert_eq!(deleted.len(), 3, "{v}");
    let me = format!("token:{}", token_id(&app));
    for e in created.iter().chain(&deleted) {
        assert_eq!(e["payload"]["actor"], me.as_str(), "{e}");
        assert!(!e.to_string().contains(&hook.url), "no URL in the log: {e}");
    }
}

async fn a_patched_mattermost_url_is_used_by_the_next_attempt(backend: Backend) {
    let app = spawn(backend).await;
    let old = Recorder::start().await;
    let new = Recorder::start().await;
    // The old Mattermost is failing (the reason to rotate): it answers 503.
    old.script(HOOK, (0..20).map(|_| Reply::status(503)));
    let created = mattermost(&app, "mattermost", &format!("{}{HOOK}", old.url)).await;
    let s = site(&app).await;
    let token = visitor(&app, s["public_key"].as_str().unwrap()).await;
    let conv = say(&app, &token, "is anyone there?").await;
    old.wait_for(HOOK, 1, Duration::from_secs(10)).await;

    // Rotate: patch in the new URL.
    let (st, v) = patch(
        &app,
        "/admin/v1/destinations/mattermost",
        json!({ "webhook_url": format!("{}{NEW_HOOK}", new.url) }),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["id"], created["id"], "{v}");
    // Write-only: neither answer nor listing shows the secret path.
    let (_, shown) = app.get("/admin/v1/destinations/mattermost").await;
    let (_, listed) = app.get("/admin/v1/destinations").await;
    for text in [v.to_string(), shown.to_string(), listed.to_string()] {
        assert!(!text.contains("k3y"), "secret shown: {text}");
    }

    // The retry of the same directive posts to the new URL.
    let posts = new.wait_for(NEW_HOOK, 1, Duration::from_secs(20)).await;
    assert!(
        posts[0].body["text"]
            .as_str()
            .unwrap_or_default()
            .contains("is anyone there?"),
        "{:?}",
        posts[0].body
    );
    let entries = timeline(&app, &conv).await;
    let escalations = directives_of(&entries, "webchat.escalate_to_mattermost");
    assert_eq!(escalations.len(), 1, "{entries:#?}");
    let sent_old = old.received(HOOK).len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        old.received(HOOK).len(),
        sent_old,
        "the old URL is still used"
    );

    // Validated as at creation: shape, outbound policy, immutable fields.
    let path = "/admin/v1/destinations/mattermost";
    for (body, code) in [
        (json!({ "webhook_url": "not a url" }), "validation_failed"),
        (
            json!({ "webhook_url": "ftp://chat.example.com/x" }),
            "validation_failed",
        ),
        (json!({ "webhook_url": null }), "validation_failed"),
        (
            json!({ "webhook_url": "http://10.1.2.3/hooks/x" }),
            "destination_not_allowed",
        ),
        (json!({ "name": "renamed" }), "validation_failed"),
        (json!({ "kind": "webhook" }), "validation_failed"),
        (json!({ "max_in_flight": 0 }), "validation_failed"),
    ] {
        refused(
            patch(&app, path, body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
        );
    }
    refused(
        patch(&app, path, json!(["not", "an", "object"])).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    refused(
        patch(&app, "/admin/v1/destinations/nope", json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // Nothing of that was written: the new URL is still in use.
    let (_, after) = app.get(path).await;
    assert_eq!(after["config"], v["config"]);
}

async fn a_manual_escalation_and_the_rules_make_one_post(backend: Backend) {
    let app = spawn(backend).await;
    let mm = Recorder::start().await;
    mattermost(&app, "mattermost", &format!("{}{HOOK}", mm.url)).await;
    let s = site(&app).await;
    let token = visitor(&app, s["public_key"].as_str().unwrap()).await;
    let conv = say(&app, &token, "my order is late").await;
    mm.wait_for(HOOK, 1, Duration::from_secs(10)).await;

    let path = format!("/admin/v1/conversations/{conv}/escalate");
    let (st, v) = app
        .post(&path, json!({ "destination": "mattermost" }))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["created"], false, "{v}");
    let entries = timeline(&app, &conv).await;
    let escalations = directives_of(&entries, "webchat.escalate_to_mattermost");
    assert_eq!(escalations.len(), 1, "{entries:#?}");
    assert_eq!(escalations[0]["id"], v["directive"]["id"]);
    assert_eq!(escalations[0]["origin"]["type"], "rule");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(mm.received(HOOK).len(), 1);

    // To a second Mattermost destination, by hand only: one post there,
    // made by this token.
    let other = Recorder::start().await;
    mattermost(&app, "mm-sales", &format!("{}{NEW_HOOK}", other.url)).await;
    let (st, v) = app.post(&path, json!({ "destination": "mm-sales" })).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["created"], true, "{v}");
    assert_eq!(
        v["directive"]["origin"]["token_id"],
        token_id(&app).as_str()
    );
    let (st, again) = app.post(&path, json!({ "destination": "mm-sales" })).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["created"], false, "{again}");
    other.wait_for(NEW_HOOK, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(other.received(NEW_HOOK).len(), 1);
    assert_eq!(mm.received(HOOK).len(), 1);

    // Bad input.
    let hook = Recorder::start().await;
    app.webhook("plain-hook", &format!("{}/in", hook.url)).await;
    for body in [
        json!({ "destination": "plain-hook" }),
        json!({ "destination": "nope" }),
        json!({}),
        json!({ "destination": "mattermost", "extra": 1 }),
    ] {
        refused(
            app.post(&path, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
    }
    refused(
        app.post(
            "/admin/v1/conversations/conv_nope/escalate",
            json!({ "destination": "mattermost" }),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

async fn close_reopen_and_assign_are_on_the_timeline_with_their_actor(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = site(&app).await;
    let key = s["public_key"].as_str().unwrap();
    let conv = say(&app, &visitor(&app, key).await, "hello").await;
    let other = say(&app, &visitor(&app, key).await, "hi too").await;
    let me = token_id(&app);
    let member = fleetprompt_system_tests::access::add_member(
        &app.db,
        "acme",
        "ann@example.com",
        "Ann Agent",
        "agent",
    )
    .await
    .unwrap()
    .id;
    let base = format!("/admin/v1/conversations/{conv}");

    // Assign, and the inbox filters by it.
    let (st, v) = app
        .post(&format!("{base}/assign"), json!({ "member_id": member }))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["conversation"]["assignee"], member.as_str(), "{v}");
    let ids = |v: &Value| -> Vec<String> {
        v["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, mine) = app
        .get(&format!("/admin/v1/conversations?assignee={member}"))
        .await;
    assert_eq!(ids(&mine), vec![conv.clone()]);
    let (_, nobody) = app.get("/admin/v1/conversations?assignee=none").await;
    assert_eq!(ids(&nobody), vec![other.clone()]);
    let (_, all) = app.get("/admin/v1/conversations").await;
    assert_eq!(ids(&all).len(), 2);

    // Close: the seed's directive, reason `operator`.
    let (st, v) = app.post(&format!("{base}/close"), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["conversation"]["status"], "ended", "{v}");
    assert_eq!(v["conversation"]["ended_reason"], "operator", "{v}");
    refused(
        app.post(&format!("{base}/close"), json!({})).await,
        StatusCode::CONFLICT,
        "invalid_state",
    );

    // Reopen.
    let (st, v) = app.post(&format!("{base}/reopen"), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["conversation"]["status"], "open", "{v}");
    assert_eq!(v["conversation"]["ended_reason"], Value::Null, "{v}");
    refused(
        app.post(&format!("{base}/reopen"), json!({})).await,
        StatusCode::CONFLICT,
        "invalid_state",
    );

    // Unassign.
    let (st, v) = app
        .post(&format!("{base}/assign"), json!({ "member_id": null }))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["conversation"]["assignee"], Value::Null, "{v}");
    let (_, nobody) = app.get("/admin/v1/conversations?assignee=none").await;
    assert_eq!(ids(&nobody).len(), 2);

    // The timeline: each action a directive by this token, with its signal.
    let entries = wait_until(
        "the reopen and assign signals",
        Duration::from_secs(5),
        async || {
            let e = timeline(&app, &conv).await;
            (signals_of(&e, "webchat.session.assigned").len() == 2
                && !signals_of(&e, "webchat.session.reopened").is_empty())
            .then_some(e)
        },
    )
    .await;
    for (kind, n) in [
        ("webchat.conversation.assign", 2),
        ("webchat.conversation.close", 1),
        ("webchat.conversation.reopen", 1),
    ] {
        let ds = directives_of(&entries, kind);
        assert_eq!(ds.len(), n, "{kind}: {entries:#?}");
        for d in ds {
            assert_eq!(d["status"], "succeeded", "{d}");
            assert_eq!(d["origin"]["type"], "api", "{d}");
            assert_eq!(d["origin"]["token_id"], me.as_str(), "{d}");
        }
    }
    let ended = signals_of(&entries, "webchat.session.ended");
    assert_eq!(ended.len(), 1, "{entries:#?}");
    assert_eq!(ended[0]["payload"]["reason"], "operator", "{}", ended[0]);

    // Bad input, and a member who is not one of this tenant's.
    for body in [
        json!({ "member_id": MemberId::new().to_string() }),
        json!({ "member_id": "bob" }),
        json!({ "member_id": 7 }),
        json!({}),
        json!({ "member_id": null, "role": "admin" }),
    ] {
        refused(
            app.post(&format!("{base}/assign"), body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
    }
    refused(
        app.get("/admin/v1/conversations?assignee=bob").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    for action in ["close", "reopen", "assign"] {
        refused(
            app.post(
                &format!("/admin/v1/conversations/conv_nope/{action}"),
                json!({ "member_id": null }),
            )
            .await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
}

/// Two PostgreSQL nodes: the change is made through one, the attempts
/// run on the other, which must not keep delivering to the old URL from
/// its cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_patched_on_one_node_is_used_by_the_other() {
    let mut app = TestApp::spawn_with(Backend::Postgres, &["--role", "api"]).await;
    let mut worker = Server::start(&app.db, "worker", &["--role", "worker"])
        .await
        .unwrap();
    let old = Recorder::start().await;
    let new = Recorder::start().await;
    old.script("/in", (0..200).map(|_| Reply::status(503)));
    app.webhook("hook", &format!("{}/in", old.url)).await;
    let (s, d) = app
        .post(
            "/admin/v1/directives",
            json!({ "kind": "webhook.post", "args": { "destination": "hook" },
                    "dedupe_key": "rotate-1", "max_attempts": 100,
                    "backoff": { "base_ms": 100, "max_ms": 200 } }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    old.wait_for("/in", 2, Duration::from_secs(10)).await;
    let (s, v) = patch(
        &app,
        "/admin/v1/destinations/hook",
        json!({ "url": format!("{}/in", new.url) }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    new.wait_for("/in", 1, Duration::from_secs(10)).await;
    let id = d["id"].as_str().unwrap();
    app.wait_for_status(id, &["succeeded"], Duration::from_secs(5))
        .await;
    let sent_old = old.received("/in").len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(old.received("/in").len(), sent_old);
    assert_eq!(new.received("/in").len(), 1);
    worker.stop().await.unwrap();
    app.server.stop().await.unwrap();
}

both_backends!(
    a_stale_site_version_is_refused_and_a_fresh_one_applies,
    a_re_enabled_site_accepts_widget_traffic_again,
    a_destination_in_use_is_not_deleted_unless_forced,
    a_patched_mattermost_url_is_used_by_the_next_attempt,
    a_manual_escalation_and_the_rules_make_one_post,
    close_reopen_and_assign_are_on_the_timeline_with_their_actor,
);

//! `fleetprompt prune`, on SQLite and PostgreSQL: old finished work goes,
//! with its attempts, signals, evaluations and ended conversations; live
//! work and everything it points at stays.

use std::time::Duration;

use axum::http::StatusCode;
use fleetprompt_system_tests::webchat::{ORIGIN, site, spawn_with_rules};
use fleetprompt_system_tests::{Backend, Recorder, Reply, TestApp, both_backends, cli};
use serde_json::{Value, json};

both_backends!(prune_deletes_old_finished_work_and_keeps_live_work);

const RULES: &str = r#"
[[rule]]
id = "echo"
on = "order.created"

[[rule.directive]]
kind = "noop"
dedupe_key = "echo:{{ signal.id }}"

[[rule.directive]]
kind = "noop"
dedupe_key = "later:{{ signal.id }}"
delay = "1h"

[[rule]]
id = "notes"
on = "custom.note"

[[rule.directive]]
kind = "noop"
dedupe_key = "note:{{ signal.id }}"
"#;

async fn spawn(backend: Backend) -> TestApp {
    spawn_with_rules(backend, &["--demo", "false"], |dir| {
        std::fs::create_dir_all(dir.join("tenants/acme")).unwrap();
        std::fs::write(dir.join("tenants/acme/rules.toml"), RULES).unwrap();
    })
    .await
}

async fn widget(app: &TestApp, path: &str, token: Option<&str>, body: Option<Value>) -> Value {
    let mut req = app
        .http
        .post(format!("{}{path}", app.server.url))
        .header("origin", ORIGIN);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

/// A visitor who sends one message; returns (token, conversation id).
async fn visitor_message(app: &TestApp, key: &str) -> (String, String) {
    let boot = widget(
        app,
        &format!("/v1/widget/bootstrap?site_key={key}"),
        None,
        Some(json!({ "site_key": key })),
    )
    .await;
    let token = boot["token"].as_str().unwrap().to_owned();
    let sent = widget(
        app,
        &format!("/v1/widget/messages?site_key={key}"),
        Some(&token),
        Some(json!({ "client_message_id": uuid::Uuid::now_v7().to_string(), "content": "hello" })),
    )
    .await;
    (token, sent["conversation_id"].as_str().unwrap().to_owned())
}

async fn directive(app: &TestApp, body: Value) -> String {
    let (s, v) = app.post("/admin/v1/directives", body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    app.db.scalar(sql).await.unwrap()
}

async fn exists(app: &TestApp, table: &str, id: &str) -> bool {
    count(
        app,
        &format!("SELECT COUNT(*) FROM {table} WHERE id = '{id}'"),
    )
    .await
        == 1
}

async fn prune(app: &TestApp, now_ms: i64, extra: &[&str]) -> Value {
    let now = now_ms.to_string();
    let mut args = vec![
        "prune",
        "--older-than",
        "1h",
        "--json",
        "--batch",
        "2",
        "--now-ms",
        &now,
    ];
    args.extend_from_slice(extra);
    let out = cli(&app.db, &args).await.unwrap();
    serde_json::from_str(out.trim()).unwrap()
}

async fn prune_deletes_old_finished_work_and_keeps_live_work(backend: Backend) {
    let app = spawn(backend).await;
    let hook = Recorder::start().await;
    hook.script("/gone", [Reply::status(404)]);
    app.webhook("gone", &format!("{}/gone", hook.url)).await;
    let wait = Duration::from_secs(10);

    // Old work.
    let ok = directive(&app, json!({ "kind": "noop", "dedupe_key": "ok" })).await;
    let failed = directive(
        &app,
        json!({ "kind": "webhook.post", "args": { "destination": "gone" }, "dedupe_key": "gone" }),
    )
    .await;
    let cancelled = directive(
        &app,
        json!({ "kind": "noop", "dedupe_key": "cancel", "delay_ms": 3_600_000 }),
    )
    .await;
    let (s, _) = app
        .post(
            &format!("/admin/v1/directives/{cancelled}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // A signal whose rule makes one directive that runs now and one that
    // waits an hour: the waiting one keeps the signal and its evaluations.
    let (s, held) = app
        .post(
            "/admin/v1/signals",
            json!({ "type": "order.created", "subject": "order:1", "dedupe_key": "o1" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{held}");
    let held = held["id"].as_str().unwrap().to_owned();
    let (_, plain) = app
        .post(
            "/admin/v1/signals",
            json!({ "type": "custom.note", "subject": "note:1", "dedupe_key": "n1" }),
        )
        .await;
    let plain = plain["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&ok, &["succeeded"], wait).await;
    app.wait_for_status(&failed, &["failed"], wait).await;

    // Conversations: one ended, one ended that a pending directive names,
    // one still open.
    let site = site(&app).await;
    let key = site["public_key"].as_str().unwrap().to_owned();
    let (t1, ended) = visitor_message(&app, &key).await;
    widget(&app, "/v1/widget/close", Some(&t1), None).await;
    let (t2, named) = visitor_message(&app, &key).await;
    widget(&app, "/v1/widget/close", Some(&t2), None).await;
    let follow_up = directive(
        &app,
        json!({ "kind": "noop", "dedupe_key": "follow-up", "subject": format!("conversation:{named}"), "delay_ms": 3_600_000 }),
    )
    .await;
    let (_, open) = visitor_message(&app, &key).await;

    // The cutoff, then new work.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let recent = directive(&app, json!({ "kind": "noop", "dedupe_key": "recent" })).await;
    app.wait_for_status(&recent, &["succeeded"], wait).await;
    let (_, new_signal) = app
        .post(
            "/admin/v1/signals",
            json!({ "type": "custom.note", "subject": "note:2", "dedupe_key": "n2" }),
        )
        .await;
    let new_signal = new_signal["id"].as_str().unwrap().to_owned();
    // Let the engine finish its own follow-ups (completion signals) first.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let directives_before = count(&app, "SELECT COUNT(*) FROM directives").await;
    let signals_before = count(&app, "SELECT COUNT(*) FROM signals").await;
    let now = cutoff + 3_600_000;

    // A dry run counts and deletes nothing.
    let dry = prune(&app, now, &["--dry-run"]).await;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM directives").await,
        directives_before
    );
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM signals").await,
        signals_before
    );
    let d = &dry["total"];
    assert!(d["directives"].as_u64().unwrap() >= 3, "{dry}");
    assert!(d["attempts"].as_u64().unwrap() >= 2, "{dry}");
    assert!(d["signals"].as_u64().unwrap() >= 1, "{dry}");
    assert!(d["evaluations"].as_u64().unwrap() >= 1, "{dry}");
    assert_eq!(d["conversations"], 1, "{dry}");
    assert_eq!(d["messages"], 1, "{dry}");

    // The real run deletes exactly what the dry run counted, in batches of 2.
    let real = prune(&app, now, &[]).await;
    assert_eq!(real["total"], dry["total"], "{real}");
    assert_eq!(real["tenants"]["acme"], dry["total"]);

    // Gone: old finished directives (not failed ones), their attempts, old
    // signals, the ended conversation and its message.
    for id in [&ok, &cancelled] {
        assert!(
            !exists(&app, "directives", id).await,
            "{id} should be pruned"
        );
        assert_eq!(
            count(
                &app,
                &format!("SELECT COUNT(*) FROM directive_attempts WHERE directive_id = '{id}'")
            )
            .await,
            0
        );
    }
    assert!(!exists(&app, "signals", &plain).await);
    assert!(!exists(&app, "website_chat_conversations", &ended).await);
    assert_eq!(
        count(
            &app,
            &format!(
                "SELECT COUNT(*) FROM website_chat_messages WHERE conversation_id = '{ended}'"
            )
        )
        .await,
        0
    );
    // Kept: failed directives (without --include-failed), pending ones and
    // what they point at, recent work, open conversations.
    assert!(exists(&app, "directives", &failed).await);
    assert!(exists(&app, "directives", &follow_up).await);
    assert!(exists(&app, "directives", &recent).await);
    assert!(
        exists(&app, "signals", &held).await,
        "a pending directive points at it"
    );
    assert!(
        count(
            &app,
            &format!("SELECT COUNT(*) FROM rule_evaluations WHERE signal_id = '{held}'")
        )
        .await
            >= 1,
        "its evaluations stay too"
    );
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM directives WHERE status IN ('pending', 'running')"
        )
        .await,
        2,
        "the rule's delayed directive and the follow-up"
    );
    assert!(exists(&app, "signals", &new_signal).await);
    assert!(exists(&app, "website_chat_conversations", &named).await);
    assert!(exists(&app, "website_chat_conversations", &open).await);
    assert_eq!(
        count(
            &app,
            &format!("SELECT COUNT(*) FROM website_chat_messages WHERE conversation_id = '{open}'")
        )
        .await,
        1
    );
    let evaluations_of = |id: String| {
        let app = &app;
        async move {
            count(
                app,
                &format!("SELECT COUNT(*) FROM rule_evaluations WHERE signal_id = '{id}'"),
            )
            .await
        }
    };
    assert_eq!(evaluations_of(plain.clone()).await, 0);
    assert!(evaluations_of(new_signal.clone()).await >= 1);

    // Failed directives go when asked; a rerun finds nothing.
    let with_failed = prune(&app, now, &["--include-failed"]).await;
    assert_eq!(with_failed["total"]["directives"], 1, "{with_failed}");
    assert!(!exists(&app, "directives", &failed).await);
    let again = prune(&app, now, &["--include-failed"]).await;
    for v in again["total"].as_object().unwrap().values() {
        assert_eq!(v, 0, "{again}");
    }
    // The server kept working throughout.
    let (s, _) = app.get("/admin/v1/directives").await;
    assert_eq!(s, StatusCode::OK);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

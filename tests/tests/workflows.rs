//! Workflow rules end to end: routing, replay, delay + cancel-on, throttle,
//! hot reload that refuses a broken set, and the CLI's check and explain.

use std::path::Path;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use fleetprompt_system_tests::{
    Backend, Server, TestApp, TestDb, binary, both_backends, create_tenant, http_client,
};
use futures::StreamExt;
use serde_json::{Value, json};

both_backends!(
    rules_turn_a_signal_into_exactly_the_expected_directives,
    replaying_twice_creates_nothing_new,
    a_replayed_page_routes_as_its_signals_did_one_by_one,
    replay_pages_through_many_signals_exactly_once,
    delay_and_cancel_on_both_ways,
    throttle_allows_one_per_key_per_window,
    result_signals_are_routed_like_any_signal,
    a_broken_edit_keeps_the_last_good_rules,
    a_truncate_then_write_under_traffic_loses_no_signal,
    an_emptied_file_keeps_the_last_good_rules,
);

const RULES: &str = r#"
[[rule]]
id = "big-order"
on = "order.created"
when = 'signal.payload.total > 100'

[[rule.directive]]
kind = "noop"
dedupe_key = "big-order:{{ signal.payload.order_id }}"
args = { note = "order {{ signal.payload.order_id }} from {{ tenant }}" }

[[rule]]
id = "tiny-order"
on = "order.*"
when = 'signal.payload.total < 5'

[[rule.directive]]
kind = "noop"
dedupe_key = "tiny-order:{{ signal.payload.order_id }}"

[[rule]]
id = "remind-if-no-reply"
on = "webchat.contact.captured"

[[rule.directive]]
kind = "noop"
dedupe_key = "remind:{{ signal.subject }}"
delay = "1500ms"
cancel_on = ["webchat.reply.sent"]

[[rule]]
id = "page-once-per-host"
on = "alert.raised"

[[rule.directive]]
kind = "noop"
throttle = { key = "{{ signal.payload.host }}", window = "1h" }

[[rule]]
id = "follow-up-failures"
on = "directive.failed"

[[rule.directive]]
kind = "noop"
dedupe_key = "follow-up:{{ signal.payload.directive_id }}"
"#;

struct RulesApp {
    app: TestApp,
    dir: std::path::PathBuf,
}

async fn spawn(backend: Backend) -> RulesApp {
    let db = TestDb::new(backend).await.unwrap();
    let dir = db.dir.join("workflows");
    std::fs::create_dir_all(dir.join("tenants/acme")).unwrap();
    std::fs::write(dir.join("tenants/acme/rules.toml"), RULES).unwrap();
    let tenant = create_tenant(&db, "acme").await.unwrap();
    let server = Server::start(
        &db,
        "server",
        &[
            "--workflows",
            dir.to_str().unwrap(),
            "--workflows-poll-ms",
            "100",
            "--demo",
            "false",
        ],
    )
    .await
    .unwrap();
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

async fn signal(app: &TestApp, t: &str, subject: &str, payload: Value, key: &str) -> String {
    let (s, v) = app
        .post(
            "/admin/v1/signals",
            json!({ "type": t, "subject": subject, "payload": payload, "dedupe_key": key }),
        )
        .await;
    assert!(s == StatusCode::CREATED || s == StatusCode::OK, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

async fn directives(app: &TestApp) -> Vec<Value> {
    let (_, v) = app.get("/admin/v1/directives?limit=1000").await;
    v["directives"].as_array().unwrap().clone()
}

async fn rules_turn_a_signal_into_exactly_the_expected_directives(backend: Backend) {
    let RulesApp { app, .. } = spawn(backend).await;
    let sig = signal(
        &app,
        "order.created",
        "order:1",
        json!({ "order_id": "o-1", "total": 250 }),
        "o1",
    )
    .await;
    let ds = directives(&app).await;
    assert_eq!(ds.len(), 1, "{ds:?}");
    let d = &ds[0];
    assert_eq!(d["kind"], "noop");
    assert_eq!(d["dedupe_key"], "big-order:o-1");
    assert_eq!(d["args"]["note"], "order o-1 from acme");
    assert_eq!(d["caused_by"], json!(sig));
    assert_eq!(d["origin"]["type"], "rule");
    assert_eq!(d["origin"]["rule_id"], "big-order");
    assert_eq!(d["origin"]["file_hash"].as_str().unwrap().len(), 64);
    // The timeline says which rule matched and which one skipped, and why.
    let (_, t) = app.get("/admin/v1/timeline?subject=order:1").await;
    let rules: Vec<&Value> = t["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["entry"] == "rule")
        .collect();
    assert_eq!(rules.len(), 2, "{t}");
    let matched = rules.iter().find(|r| r["rule_id"] == "big-order").unwrap();
    assert_eq!(matched["outcome"], "matched");
    assert!(
        matched["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("rule big-order matched signal {sig}"))
    );
    let skipped = rules.iter().find(|r| r["rule_id"] == "tiny-order").unwrap();
    assert_eq!(skipped["outcome"], "skipped");
    assert!(
        skipped["detail"]
            .as_str()
            .unwrap()
            .contains("condition false"),
        "{skipped}"
    );
    // A signal no rule wants creates nothing; a runtime error is recorded, not fatal.
    signal(
        &app,
        "order.created",
        "order:2",
        json!({ "order_id": "o-2", "total": 50 }),
        "o2",
    )
    .await;
    signal(
        &app,
        "order.created",
        "order:3",
        json!({ "order_id": "o-3" }),
        "o3",
    )
    .await;
    assert_eq!(directives(&app).await.len(), 1);
    let (_, t) = app.get("/admin/v1/timeline?subject=order:3").await;
    let errors: Vec<&Value> = t["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "error")
        .collect();
    assert!(!errors.is_empty(), "{t}");
    assert!(
        errors[0]["detail"].as_str().unwrap().contains("big-order"),
        "{t}"
    );
    // The rules are listed with their file hash.
    let (_, w) = app.get("/admin/v1/workflows").await;
    assert_eq!(w["rules"].as_array().unwrap().len(), 5, "{w}");
    assert_eq!(w["files"][0]["sha256"], d["origin"]["file_hash"]);
    assert_eq!(w["status"]["last_error"], Value::Null);
}

async fn replaying_twice_creates_nothing_new(backend: Backend) {
    let RulesApp { app, dir } = spawn(backend).await;
    for i in 0..5 {
        signal(
            &app,
            "order.created",
            &format!("order:{i}"),
            json!({ "order_id": i, "total": 500 }),
            &format!("o{i}"),
        )
        .await;
    }
    assert_eq!(directives(&app).await.len(), 5);
    // Everything: the orders and their directives' result signals.
    let (s, r) = app.post("/admin/v1/replay", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert!(r["signals"].as_u64().unwrap() >= 5, "{r}");
    assert_eq!(r["directives_created"], 0);
    assert_eq!(r["directives_deduplicated"], 5);
    let (_, r) = app
        .post(
            "/admin/v1/replay",
            json!({ "type": "order.created", "dry_run": true }),
        )
        .await;
    assert_eq!(r["signals"], 5, "{r}");
    assert_eq!(r["directives_created"], 0, "{r}");
    assert_eq!(r["directives_deduplicated"], 5, "{r}");
    // The CLI replays the same way, and reports JSON.
    let out = tokio::process::Command::new(binary())
        .args([
            "replay",
            "--tenant",
            "acme",
            "--type",
            "order.created",
            "--json",
            "--workflows",
            dir.to_str().unwrap(),
        ])
        .arg("--data-dir")
        .arg(&app.db.dir)
        .arg("--database-url")
        .arg(&app.db.url)
        .env(
            "FLEETPROMPT_MASTER_KEY",
            fleetprompt_system_tests::MASTER_KEY,
        )
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["signals"], 5);
    assert_eq!(v["directives_created"], 0);
    assert_eq!(v["directives_deduplicated"], 5);
    assert_eq!(directives(&app).await.len(), 5);
}

/// A replay routes a page of signals as one batch: one insert for all their
/// directives. The outcome must be what routing them one by one gives: a
/// later signal's dedupe key finds the directive an earlier one created, and
/// a `cancel_on` signal cancels the directive an earlier one created.
async fn a_replayed_page_routes_as_its_signals_did_one_by_one(backend: Backend) {
    let RulesApp { app, dir } = spawn(backend).await;
    write(
        &dir,
        "[[rule]]\nid = \"unused\"\non = \"nothing.happens\"\n[[rule.directive]]\nkind = \"noop\"\n",
    );
    wait_reload(&app, |w| w["rules"].as_array().unwrap().len() == 1).await;
    for (t, subject, customer) in [
        ("ticket.opened", "ticket:1", "c1"),
        ("ticket.opened", "ticket:2", "c1"),
        ("ticket.closed", "ticket:1", "c1"),
        ("ticket.opened", "ticket:3", "c2"),
    ] {
        signal(
            &app,
            t,
            subject,
            json!({ "customer": customer }),
            &format!("{t}:{subject}"),
        )
        .await;
    }
    assert!(directives(&app).await.is_empty());
    write(
        &dir,
        r#"[[rule]]
id = "chase"
on = "ticket.opened"

[[rule.directive]]
kind = "noop"
dedupe_key = "chase:{{ signal.payload.customer }}"
delay = "1h"
cancel_on = ["ticket.closed"]
"#,
    );
    wait_reload(&app, |w| w["rules"][0]["id"] == "chase").await;
    let (s, r) = app.post("/admin/v1/replay", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["signals"], 4, "{r}");
    assert_eq!(r["directives_created"], 2, "{r}");
    assert_eq!(r["directives_deduplicated"], 1, "{r}");
    assert_eq!(r["directives_cancelled"], 1, "{r}");
    let ds = directives(&app).await;
    let status = |key: &str| {
        let d = ds.iter().find(|d| d["dedupe_key"] == key).unwrap();
        d["status"].as_str().unwrap().to_owned()
    };
    assert_eq!(ds.len(), 2, "{ds:?}");
    assert_eq!(status("chase:c1"), "cancelled");
    assert_eq!(status("chase:c2"), "pending");
    // The second ticket's verdict names the directive it found.
    let (_, t) = app.get("/admin/v1/timeline?subject=ticket:2").await;
    let verdict = t["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["entry"] == "rule")
        .unwrap_or_else(|| panic!("no verdict: {t}"))
        .clone();
    assert_eq!(verdict["outcome"], "matched", "{verdict}");
    let first = ds.iter().find(|d| d["dedupe_key"] == "chase:c1").unwrap();
    let detail = verdict["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "noop {} already existed (dedupe key chase:c1)",
            first["id"].as_str().unwrap()
        )),
        "{detail}"
    );
}

/// Replay reads 500 signals a page, from a cursor in recording order; many
/// signals share a millisecond, so the cursor's tie-break on the id must hold.
async fn replay_pages_through_many_signals_exactly_once(backend: Backend) {
    let RulesApp { app, .. } = spawn(backend).await;
    // 1,150 signals: 650 orders created (each makes a directive), 500
    // updated (none), interleaved.
    let big = 650;
    let sends = (0..1150).map(|i| {
        let (t, total) = if i % 2 == 0 || i >= 1000 {
            ("order.created", 500)
        } else {
            ("order.updated", 50)
        };
        let body = json!({ "type": t, "subject": format!("order:{i}"),
            "payload": { "order_id": i, "total": total }, "dedupe_key": format!("many-{i}") });
        let app = &app;
        async move {
            let (s, v) = app.post("/admin/v1/signals", body).await;
            assert!(s == StatusCode::CREATED, "{v}");
        }
    });
    // A few at a time, so many land in the same millisecond.
    futures::stream::iter(sends)
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    let (s, r) = app
        .post("/admin/v1/replay", json!({ "type": "order.created" }))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["signals"], big, "{r}");
    assert_eq!(r["directives_deduplicated"], big, "{r}");
    assert_eq!(r["directives_created"], 0, "{r}");
    // Once the directives have run, no more signals (their results) come.
    app.db
        .wait_scalar(
            "SELECT COUNT(*) FROM directives WHERE status <> 'succeeded'",
            |n| n == 0,
            Duration::from_secs(30),
            "directives did not finish",
        )
        .await;
    let stored = app
        .db
        .scalar(&format!(
            "SELECT COUNT(*) FROM signals WHERE tenant_id = '{}'",
            app.tenant.id
        ))
        .await
        .unwrap();
    let (_, r) = app
        .post("/admin/v1/replay", json!({ "dry_run": true }))
        .await;
    assert_eq!(r["signals"].as_i64().unwrap(), stored, "{r}");
}

async fn wait_status(app: &TestApp, dedupe_key: &str, status: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let ds = directives(app).await;
        if let Some(d) = ds
            .iter()
            .find(|d| d["dedupe_key"] == dedupe_key && d["status"] == status)
        {
            return d.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{dedupe_key} never became {status}: {ds:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn delay_and_cancel_on_both_ways(backend: Backend) {
    let RulesApp { app, .. } = spawn(backend).await;
    let start = Instant::now();
    signal(
        &app,
        "webchat.contact.captured",
        "conversation:answered",
        json!({}),
        "c1",
    )
    .await;
    signal(
        &app,
        "webchat.contact.captured",
        "conversation:ignored",
        json!({}),
        "c2",
    )
    .await;
    let ds = directives(&app).await;
    assert_eq!(ds.len(), 2);
    assert!(
        ds.iter().all(|d| d["status"] == "pending"),
        "delayed, not run yet: {ds:?}"
    );
    // An operator answers one conversation before the delay is over.
    signal(
        &app,
        "webchat.reply.sent",
        "conversation:answered",
        json!({ "by": "alice" }),
        "r1",
    )
    .await;
    let cancelled = wait_status(
        &app,
        "remind:conversation:answered",
        "cancelled",
        Duration::from_secs(1),
    )
    .await;
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "cancelled before the delay ran out"
    );
    assert_eq!(cancelled["attempts"], 0);
    assert!(
        cancelled["last_error"]
            .as_str()
            .unwrap()
            .contains("webchat.reply.sent"),
        "{cancelled}"
    );
    // The other one runs once its delay is over, and not before.
    let done = wait_status(
        &app,
        "remind:conversation:ignored",
        "succeeded",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        start.elapsed() >= Duration::from_millis(1400),
        "ran after {:?}",
        start.elapsed()
    );
    assert_eq!(done["attempts"], 1);
    // A reply after it ran cancels nothing.
    signal(
        &app,
        "webchat.reply.sent",
        "conversation:ignored",
        json!({}),
        "r2",
    )
    .await;
    wait_status(
        &app,
        "remind:conversation:ignored",
        "succeeded",
        Duration::from_secs(1),
    )
    .await;
}

async fn throttle_allows_one_per_key_per_window(backend: Backend) {
    let RulesApp { app, .. } = spawn(backend).await;
    for i in 0..3 {
        signal(
            &app,
            "alert.raised",
            "host:db1",
            json!({ "host": "db1" }),
            &format!("a{i}"),
        )
        .await;
    }
    signal(
        &app,
        "alert.raised",
        "host:web1",
        json!({ "host": "web1" }),
        "b0",
    )
    .await;
    let ds = directives(&app).await;
    assert_eq!(ds.len(), 2, "one directive per host per hour: {ds:?}");
    let keys: Vec<&str> = ds
        .iter()
        .map(|d| d["dedupe_key"].as_str().unwrap())
        .collect();
    assert!(
        keys.iter().any(|k| k.contains(":db1:")) && keys.iter().any(|k| k.contains(":web1:")),
        "{keys:?}"
    );
}

async fn result_signals_are_routed_like_any_signal(backend: Backend) {
    let RulesApp { app, .. } = spawn(backend).await;
    let (_, v) = app
        .post("/admin/v1/directives", json!({ "kind": "webhook.post", "args": { "destination": "nowhere" }, "dedupe_key": "x" }))
        .await;
    assert_eq!(
        v["error"]["code"], "validation_failed",
        "unknown destination refused: {v}"
    );
    let hook = fleetprompt_system_tests::Recorder::start().await;
    hook.script("/h", [fleetprompt_system_tests::Reply::status(404)]);
    app.webhook("h", &format!("{}/h", hook.url)).await;
    let (_, v) = app
        .post("/admin/v1/directives", json!({ "kind": "webhook.post", "args": { "destination": "h" }, "dedupe_key": "fails" }))
        .await;
    let id = v["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&id, &["failed"], Duration::from_secs(10))
        .await;
    let follow = wait_status(
        &app,
        &format!("follow-up:{id}"),
        "succeeded",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(follow["origin"]["rule_id"], "follow-up-failures");
    assert!(follow["caused_by"].as_str().unwrap().starts_with("sig_"));
}

async fn wait_reload(app: &TestApp, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, w) = app.get("/admin/v1/workflows").await;
        if pred(&w) {
            return w;
        }
        assert!(Instant::now() < deadline, "reload not seen: {w}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn write(dir: &Path, text: &str) {
    std::fs::write(dir.join("tenants/acme/rules.toml"), text).unwrap();
}

async fn a_broken_edit_keeps_the_last_good_rules(backend: Backend) {
    let RulesApp { app, dir } = spawn(backend).await;
    // A typo'd key on line 3: the whole set is refused.
    write(&dir, "[[rule]]\nid = \"only\"\nonn = \"order.created\"\n");
    let w = wait_reload(&app, |w| !w["status"]["last_error"].is_null()).await;
    let err = w["status"]["last_error"].as_str().unwrap();
    assert!(err.contains("rules.toml:3:1"), "{err}");
    assert_eq!(
        w["rules"].as_array().unwrap().len(),
        5,
        "the old rules stay active"
    );
    signal(
        &app,
        "order.created",
        "order:9",
        json!({ "order_id": "o-9", "total": 900 }),
        "o9",
    )
    .await;
    assert_eq!(directives(&app).await.len(), 1, "old rules still route");
    // Fixing it makes the new set active.
    write(
        &dir,
        "[[rule]]\nid = \"only\"\non = \"order.created\"\n[[rule.directive]]\nkind = \"noop\"\ndedupe_key = \"only:{{ signal.id }}\"\n",
    );
    let w = wait_reload(&app, |w| {
        w["status"]["last_error"].is_null() && w["rules"].as_array().unwrap().len() == 1
    })
    .await;
    assert_eq!(w["rules"][0]["id"], "only");
    signal(
        &app,
        "order.created",
        "order:10",
        json!({ "order_id": "o-10", "total": 1 }),
        "o10",
    )
    .await;
    let ds = directives(&app).await;
    assert_eq!(ds.len(), 2);
    assert!(ds.iter().any(|d| d["origin"]["rule_id"] == "only"));
    let metrics = app
        .http
        .get(format!("{}/metrics", app.server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"fleetprompt_workflow_reloads_total{result="error"}"#),
        "{metrics}"
    );
}

/// `cp rules.toml workflows/…` truncates the file and then writes it; a
/// watcher that loads in between drops the file's rules. Under a steady
/// stream of signals, brief and slow truncations alike must leave every
/// signal routed by the full set.
async fn a_truncate_then_write_under_traffic_loses_no_signal(backend: Backend) {
    let RulesApp { app, dir } = spawn(backend).await;
    let app = std::sync::Arc::new(app);
    let sent = 60;
    let traffic = {
        let app = app.clone();
        tokio::spawn(async move {
            for i in 0..sent {
                signal(
                    &app,
                    "order.created",
                    &format!("order:{i}"),
                    json!({ "order_id": format!("t-{i}"), "total": 500 }),
                    &format!("t{i}"),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let path = dir.join("tenants/acme/rules.toml");
    let truncate = || {
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
    };
    // Quick copies: the empty file lasts less than the settle time.
    for _ in 0..3 {
        truncate();
        tokio::time::sleep(Duration::from_millis(250)).await;
        write(&dir, RULES);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A slow one: the empty file settles, and is refused.
    truncate();
    let w = wait_reload(&app, |w| !w["status"]["last_error"].is_null()).await;
    assert_eq!(w["rules"].as_array().unwrap().len(), 5, "{w}");
    write(&dir, RULES);
    traffic.await.unwrap();
    let routed = directives(&app)
        .await
        .iter()
        .filter(|d| {
            d["dedupe_key"]
                .as_str()
                .is_some_and(|k| k.starts_with("big-order:t-"))
        })
        .count();
    assert_eq!(routed, sent, "every signal was routed by the full set");
}

async fn an_emptied_file_keeps_the_last_good_rules(backend: Backend) {
    let RulesApp { app, dir } = spawn(backend).await;
    write(&dir, "");
    let w = wait_reload(&app, |w| !w["status"]["last_error"].is_null()).await;
    let err = w["status"]["last_error"].as_str().unwrap();
    assert!(
        err.contains("rules.toml") && err.contains("# fleetprompt: empty"),
        "{err}"
    );
    assert_eq!(
        w["rules"].as_array().unwrap().len(),
        5,
        "the old rules stay"
    );
    signal(
        &app,
        "order.created",
        "order:1",
        json!({ "order_id": "e-1", "total": 900 }),
        "e1",
    )
    .await;
    assert_eq!(directives(&app).await.len(), 1, "old rules still route");
    // A comment-only file is as empty as an empty one.
    write(&dir, "# nothing here yet\n");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, w) = app.get("/admin/v1/workflows").await;
    assert_eq!(w["rules"].as_array().unwrap().len(), 5, "{w}");
    assert!(!w["status"]["last_error"].is_null(), "{w}");
    // Saying so empties it.
    write(&dir, "# fleetprompt: empty\n");
    wait_reload(&app, |w| {
        w["status"]["last_error"].is_null() && w["rules"].as_array().unwrap().is_empty()
    })
    .await;
}

#[tokio::test]
async fn check_reports_file_line_and_column_and_explain_shows_each_rule() {
    let dir = std::env::temp_dir().join(format!("fp-wf-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(dir.join("tenants/acme")).unwrap();
    std::fs::write(dir.join("tenants/acme/rules.toml"), RULES).unwrap();
    let run = |args: Vec<String>| async move {
        tokio::process::Command::new(binary())
            .args(args)
            .output()
            .await
            .unwrap()
    };
    let d = dir.to_str().unwrap().to_owned();
    let ok = run(vec!["workflows".into(), "check".into(), d.clone()]).await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("5 rules in 1 files are valid"));

    std::fs::write(dir.join("bad.toml"), "[[rule]]\nid = \"x\"\non = \"a.b\"\nwhen = 'signal.payload.x >'\n[[rule.directive]]\nkind = \"teleport\"\n").unwrap();
    let bad = run(vec!["workflows".into(), "check".into(), d.clone()]).await;
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("bad.toml:4:"),
        "CEL error with its position: {err}"
    );
    assert!(
        err.contains("bad.toml:6:8") && err.contains("teleport"),
        "unknown kind with its position: {err}"
    );
    std::fs::remove_file(dir.join("bad.toml")).unwrap();

    let sig = dir.join("signal.json");
    std::fs::write(&sig, json!({ "type": "order.created", "subject": "order:1", "payload": { "order_id": "o-1", "total": 2 } }).to_string()).unwrap();
    let out = run(vec![
        "workflows".into(),
        "explain".into(),
        "--tenant".into(),
        "acme".into(),
        "--signal".into(),
        sig.to_str().unwrap().into(),
        "--workflows".into(),
        d.clone(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("skipped  rule big-order") && text.contains("condition false"),
        "{text}"
    );
    assert!(
        text.contains("MATCHED  rule tiny-order") && text.contains("tiny-order:o-1"),
        "{text}"
    );
    assert!(
        text.contains("trigger `alert.raised` does not match"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

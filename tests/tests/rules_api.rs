//! Rules a tenant publishes over the admin API: uploads checked before
//! anything changes, version history with actors, delete, backtest against
//! a real replay, `workflows push`, and a second node that follows.

use std::time::Duration;

use axum::http::StatusCode;
use fleetprompt_system_tests::rules_api::{
    active_rules_at, delete_file, directive_keys, order, order_at, put_file, request_at,
    serve_flags, spawn, wait_rules_at,
};
use fleetprompt_system_tests::{Backend, Server, both_backends, cli, sha256_hex};
use serde_json::{Value, json};

both_backends!(
    a_syntax_error_names_its_line_and_column_and_keeps_the_old_rules,
    history_lists_each_version_with_its_sha256_and_actor,
    delete_removes_the_rule_from_routing,
    a_rule_id_taken_on_disk_is_refused,
    backtest_matches_a_real_replay_of_the_same_window,
    push_publishes_a_directory,
    published_files_are_the_tenants_own,
);

const BIG: &str = r#"
[[rule]]
id = "big-order"
on = "order.created"
when = 'signal.payload.total > 100'

[[rule.directive]]
kind = "noop"
dedupe_key = "big:{{ signal.payload.order_id }}"
args = { total = "{{ signal.payload.total }}" }
"#;

const BIG_V2: &str = r#"
[[rule]]
id = "big-order"
on = "order.created"
when = 'signal.payload.total > 1000'

[[rule.directive]]
kind = "noop"
dedupe_key = "huge:{{ signal.payload.order_id }}"
"#;

/// Line 4 has no closing quote.
const BROKEN: &str =
    "[[rule]]\nid = \"big-order\"\non = \"order.created\"\nwhen = 'signal.payload.total > 100\n";

async fn a_syntax_error_names_its_line_and_column_and_keeps_the_old_rules(backend: Backend) {
    let r = spawn(backend).await;
    let app = &r.app;
    let (s, v) = put_file(app, "orders.toml", BIG).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["rules"], json!(["big-order"]));
    // No code records `order.created`: a warning, which does not stop it.
    assert_eq!(v["warnings"][0]["file"], "orders.toml", "{v}");
    assert_eq!(v["warnings"][0]["line"], 4, "{v}");

    let (s, v) = put_file(app, "orders.toml", BROKEN).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "invalid_workflow", "{v}");
    let details = v["error"]["details"].as_array().expect("details");
    assert_eq!(details.len(), 1, "{v}");
    assert_eq!(details[0]["file"], "orders.toml", "{v}");
    assert_eq!(details[0]["line"], 4, "{v}");
    assert!(details[0]["col"].as_u64().unwrap() >= 1, "{v}");
    assert!(!details[0]["message"].as_str().unwrap().is_empty());

    // Nothing changed: one version, and the old rule still fires.
    let (_, f) = app.get("/admin/v1/workflows/files/orders.toml").await;
    assert_eq!(f["history"].as_array().unwrap().len(), 1, "{f}");
    assert_eq!(f["file"]["sha256"], sha256_hex(BIG.as_bytes()));
    order(app, "o-1", 500).await;
    let keys = directive_keys(app).await;
    assert_eq!(keys, ["big:o-1", "disk-order:o-1"], "{keys:?}");

    // `check` validates without publishing, broken or not.
    let (s, v) = app
        .post(
            "/admin/v1/workflows/check",
            json!({ "files": { "orders.toml": BROKEN, "more.toml": BIG_V2 } }),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["details"][0]["line"], 4, "{v}");
    let (s, v) = app
        .post(
            "/admin/v1/workflows/check",
            json!({ "files": { "orders.toml": BIG_V2 } }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, f) = app.get("/admin/v1/workflows/files/orders.toml").await;
    assert_eq!(f["file"]["sha256"], sha256_hex(BIG.as_bytes()), "{f}");

    // A body that is not TOML text, and a bad name, change nothing either.
    let (s, _) = request_at(
        app,
        &app.server.url,
        reqwest::Method::PUT,
        "/admin/v1/workflows/files/..toml",
        Some(BIG),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, v) = app
        .request_as(
            &app.tenant.token,
            reqwest::Method::PUT,
            "/admin/v1/workflows/files/orders.toml",
            Some(json!({ "rule": [] })),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}

async fn history_lists_each_version_with_its_sha256_and_actor(backend: Backend) {
    let r = spawn(backend).await;
    let app = &r.app;
    assert_eq!(
        put_file(app, "orders.toml", BIG).await.0,
        StatusCode::CREATED
    );
    let (s, v) = put_file(app, "orders.toml", BIG_V2).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 2);
    // The same text again is no new version.
    let (s, v) = put_file(app, "orders.toml", BIG_V2).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["changed"], false, "{v}");

    let (s, f) = app.get("/admin/v1/workflows/files/orders.toml").await;
    assert_eq!(s, StatusCode::OK, "{f}");
    let history = f["history"].as_array().unwrap();
    let shas: Vec<&str> = history
        .iter()
        .map(|h| h["sha256"].as_str().unwrap())
        .collect();
    assert_eq!(
        shas,
        [
            sha256_hex(BIG.as_bytes()).as_str(),
            sha256_hex(BIG_V2.as_bytes()).as_str()
        ]
    );
    for h in history {
        assert_eq!(h["actor"]["type"], "api", "{h}");
        assert!(h["actor"]["token_id"].as_str().is_some(), "{h}");
        assert!(h["at"].as_str().is_some(), "{h}");
    }
    assert_eq!(f["file"]["body"], BIG_V2);

    let (_, list) = app.get("/admin/v1/workflows/files").await;
    assert_eq!(list["files"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["files"][0]["version"], 2, "{list}");

    // Each source is named: the published file by name@sha, the disk one by path.
    let rules = active_rules_at(app, &app.server.url).await;
    let sha = sha256_hex(BIG_V2.as_bytes());
    assert!(
        rules.contains(&("big-order".into(), format!("published:orders.toml@{sha}"))),
        "{rules:?}"
    );
    assert!(
        rules.iter().any(|(id, src)| id == "disk-order"
            && src.starts_with("file:")
            && src.ends_with("disk.toml")),
        "{rules:?}"
    );

    // The tenant's audit log: one signal per version, with actor and hash.
    let payloads = app
        .db
        .strings(&format!(
            "SELECT payload FROM signals WHERE type = 'workflow.published' AND subject = 'tenant:{}' ORDER BY recorded_at",
            app.tenant.id
        ))
        .await
        .unwrap();
    assert_eq!(payloads.len(), 2, "{payloads:?}");
    let last: Value = serde_json::from_str(&payloads[1]).unwrap();
    assert_eq!(last["sha256"], sha, "{last}");
    assert_eq!(last["origin"]["type"], "api", "{last}");
    assert!(
        last["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("token:tok_")),
        "{last}"
    );
}

async fn delete_removes_the_rule_from_routing(backend: Backend) {
    let r = spawn(backend).await;
    let app = &r.app;
    assert_eq!(
        put_file(app, "orders.toml", BIG).await.0,
        StatusCode::CREATED
    );
    order(app, "o-1", 500).await;
    assert_eq!(directive_keys(app).await, ["big:o-1", "disk-order:o-1"]);

    let (s, v) = delete_file(app, "orders.toml").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    order(app, "o-2", 500).await;
    assert_eq!(
        directive_keys(app).await,
        ["big:o-1", "disk-order:o-1", "disk-order:o-2"],
        "the deleted rule no longer routes"
    );
    let rules = active_rules_at(app, &app.server.url).await;
    assert!(rules.iter().all(|(id, _)| id != "big-order"), "{rules:?}");

    let (s, f) = app.get("/admin/v1/workflows/files/orders.toml").await;
    assert_eq!(s, StatusCode::OK, "{f}");
    assert_eq!(f["deleted"], true, "{f}");
    let actions: Vec<&str> = f["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["published", "deleted"]);
    let (_, list) = app.get("/admin/v1/workflows/files").await;
    assert_eq!(list["files"], json!([]));
    let deleted = app
        .db
        .scalar("SELECT COUNT(*) FROM signals WHERE type = 'workflow.deleted'")
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(
        delete_file(app, "orders.toml").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/admin/v1/workflows/files/never.toml").await.0,
        StatusCode::NOT_FOUND
    );
}

async fn a_rule_id_taken_on_disk_is_refused(backend: Backend) {
    let r = spawn(backend).await;
    let app = &r.app;
    let clash = fleetprompt_system_tests::rules_api::DISK_RULES;
    let (s, v) = put_file(app, "clash.toml", clash).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let d = &v["error"]["details"][0];
    assert_eq!(d["file"], "clash.toml", "{v}");
    assert!(
        d["message"]
            .as_str()
            .unwrap()
            .contains("duplicate rule id `disk-order`"),
        "{v}"
    );
    let (_, list) = app.get("/admin/v1/workflows/files").await;
    assert_eq!(list["files"], json!([]));
}

async fn backtest_matches_a_real_replay_of_the_same_window(backend: Backend) {
    let r = spawn(backend).await;
    let app = &r.app;
    let since = fleetprompt_core::time::to_rfc3339(fleetprompt_core::time::now_ms());
    for (i, total) in [50, 150, 250, 2000, 90, 300].iter().enumerate() {
        order(app, &format!("o-{i}"), *total).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let until = fleetprompt_core::time::to_rfc3339(fleetprompt_core::time::now_ms());
    let directives_before = app
        .db
        .scalar("SELECT COUNT(*) FROM directives")
        .await
        .unwrap();
    let evaluations_before = app
        .db
        .scalar("SELECT COUNT(*) FROM rule_evaluations")
        .await
        .unwrap();

    let (s, bt) = app
        .post(
            "/admin/v1/workflows/backtest",
            json!({ "files": { "orders.toml": BIG }, "since": since, "until": until }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{bt}");
    // The orders, and the noops' own result signals (which no rule takes).
    assert!(bt["signals"].as_u64().unwrap() >= 6, "{bt}");
    assert_eq!(bt["rules"]["big-order"]["matched"], 4, "{bt}");
    assert_eq!(bt["rules"]["big-order"]["skipped"], 2, "{bt}");
    // The disk rule's directives exist already: planned again, deduplicated.
    assert_eq!(bt["rules"]["disk-order"]["directives"], 6, "{bt}");
    assert_eq!(bt["directives_created"], 4, "{bt}");
    assert_eq!(bt["directives_deduplicated"], 6, "{bt}");
    assert_eq!(bt["current"]["directives_created"], 6, "{bt}");
    assert_eq!(
        bt["current"]["rules"]["disk-order"]["directives"], 6,
        "{bt}"
    );
    let would: Vec<String> = bt["directives"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["deduplicated"] == false)
        .map(|d| {
            assert_eq!(d["kind"], "noop", "{d}");
            d["dedupe_key"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(would, ["big:o-1", "big:o-2", "big:o-3", "big:o-5"]);
    let o1 = bt["directives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["dedupe_key"] == "big:o-1")
        .unwrap();
    assert_eq!(o1["args"]["total"], "150", "{o1}");

    // A dry run: nothing written.
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM directives")
            .await
            .unwrap(),
        directives_before
    );
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM rule_evaluations")
            .await
            .unwrap(),
        evaluations_before
    );

    // The same rules published and replayed over the same window do as
    // the backtest said.
    assert_eq!(
        put_file(app, "orders.toml", BIG).await.0,
        StatusCode::CREATED
    );
    let (s, replay) = app
        .post(
            "/admin/v1/replay",
            json!({ "since": since, "until": until }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{replay}");
    assert_eq!(replay["signals"], bt["signals"], "{replay} vs {bt}");
    assert_eq!(
        replay["directives_created"], bt["directives_created"],
        "{replay} vs {bt}"
    );
    assert_eq!(
        replay["directives_deduplicated"], bt["directives_deduplicated"],
        "{replay} vs {bt}"
    );
    let keys = directive_keys(app).await;
    for k in &would {
        assert!(keys.contains(k), "{k} not created by the replay: {keys:?}");
    }
    assert_eq!(keys.len(), 10, "{keys:?}");

    // After the replay, the current rules' record shows what it created.
    let (_, bt2) = app
        .post(
            "/admin/v1/workflows/backtest",
            json!({ "files": {}, "since": since, "until": until }),
        )
        .await;
    assert_eq!(bt2["current"]["directives_created"], 10, "{bt2}");
    assert_eq!(bt2["directives_created"], 0, "{bt2}");

    // Too long a window is refused, clearly.
    let (s, v) = app
        .post(
            "/admin/v1/workflows/backtest",
            json!({ "files": {}, "since": "2020-01-01T00:00:00Z", "until": until }),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "too_large", "{v}");
    // A broken candidate is the same 422 as an upload's.
    let (s, v) = app
        .post(
            "/admin/v1/workflows/backtest",
            json!({ "files": { "orders.toml": BROKEN }, "since": since }),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["details"][0]["line"], 4, "{v}");
}

async fn push_publishes_a_directory(backend: Backend) {
    let r = spawn(backend).await;
    let app = &r.app;
    let push_dir = app.db.dir.join("push");
    std::fs::create_dir_all(&push_dir).unwrap();
    std::fs::write(push_dir.join("orders.toml"), BIG).unwrap();
    std::fs::write(push_dir.join("README.md"), "not a rule file").unwrap();
    let push = |prune: bool| {
        let mut args = vec![
            "workflows".to_owned(),
            "push".into(),
            push_dir.display().to_string(),
            "--tenant".into(),
            "acme".into(),
            "--workflows".into(),
            r.dir.display().to_string(),
        ];
        if prune {
            args.push("--prune".into());
        }
        args
    };
    let args = push(false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cli(&app.db, &args).await.unwrap();
    assert!(out.contains("published orders.toml version 1"), "{out}");

    // The server, another process, takes it up at once.
    wait_rules_at(
        app,
        &app.server.url,
        |rules| rules.iter().any(|(id, _)| id == "big-order"),
        Duration::from_secs(3),
    )
    .await;
    order(app, "o-1", 500).await;
    assert!(directive_keys(app).await.contains(&"big:o-1".to_owned()));

    // Again: unchanged. A broken file: its path, line and column, and
    // nothing published (not even the good file beside it).
    let out = cli(&app.db, &args).await.unwrap();
    assert!(out.contains("unchanged orders.toml"), "{out}");
    std::fs::write(push_dir.join("orders.toml"), BIG_V2).unwrap();
    std::fs::write(push_dir.join("broken.toml"), BROKEN).unwrap();
    let err = cli(&app.db, &args).await.unwrap_err().to_string();
    let at = format!("{}:4:", push_dir.join("broken.toml").display());
    assert!(err.contains(&at), "{err}");
    let (_, f) = app.get("/admin/v1/workflows/files/orders.toml").await;
    assert_eq!(f["file"]["version"], 1, "{f}");

    // --prune removes what the directory no longer has.
    std::fs::remove_file(push_dir.join("broken.toml")).unwrap();
    std::fs::remove_file(push_dir.join("orders.toml")).unwrap();
    std::fs::write(push_dir.join("other.toml"), BIG_V2).unwrap();
    let args = push(true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cli(&app.db, &args).await.unwrap();
    assert!(out.contains("published other.toml"), "{out}");
    assert!(out.contains("deleted orders.toml"), "{out}");
    let (_, list) = app.get("/admin/v1/workflows/files").await;
    let names: Vec<&str> = list["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["other.toml"]);
}

/// Two nodes on one PostgreSQL database: a file published through one is
/// in force on the other within a second, and a refused upload changes
/// neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_takes_effect_on_a_second_node_within_a_second() {
    let r = spawn(Backend::Postgres).await;
    let app = &r.app;
    let flags = serve_flags(&r.dir);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut second = Server::start(&app.db, "second", &flags).await.unwrap();

    assert_eq!(
        put_file(app, "orders.toml", BIG).await.0,
        StatusCode::CREATED
    );
    let took = wait_rules_at(
        app,
        &second.url,
        |rules| rules.iter().any(|(id, _)| id == "big-order"),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        took < Duration::from_secs(1),
        "the second node took {took:?}"
    );
    order_at(app, &second.url, "o-1", 500).await;
    assert!(directive_keys(app).await.contains(&"big:o-1".to_owned()));

    // A broken upload changes nothing anywhere.
    assert_eq!(
        put_file(app, "orders.toml", BROKEN).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    order_at(app, &second.url, "o-2", 500).await;
    assert!(directive_keys(app).await.contains(&"big:o-2".to_owned()));

    // A delete too reaches the second node within a second.
    assert_eq!(
        delete_file(app, "orders.toml").await.0,
        StatusCode::NO_CONTENT
    );
    let took = wait_rules_at(
        app,
        &second.url,
        |rules| rules.iter().all(|(id, _)| id != "big-order"),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        took < Duration::from_secs(1),
        "the second node took {took:?}"
    );
    second.stop().await.unwrap();
}

/// Two nodes whose rules directories differ: a file published through the
/// first collides, on the second, with a rule id on the second's disk. The
/// second keeps that tenant's last good published files (and says why),
/// while another tenant's publish still takes effect there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_load_a_tenants_file_keeps_its_last_good_one() {
    let r = spawn(Backend::Postgres).await;
    let app = &r.app;
    let beta = fleetprompt_system_tests::create_tenant(&app.db, "beta")
        .await
        .unwrap();
    let other_dir = app.db.dir.join("workflows-second");
    std::fs::create_dir_all(other_dir.join("tenants/acme")).unwrap();
    std::fs::write(other_dir.join("tenants/acme/disk.toml"), BIG_V2).unwrap();
    let flags = serve_flags(&other_dir);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut second = Server::start(&app.db, "second", &flags).await.unwrap();

    // Accepted by the first node: its disk has no `big-order`.
    assert_eq!(
        put_file(app, "orders.toml", BIG).await.0,
        StatusCode::CREATED
    );
    // Beta publishes too, after acme.
    let resp = app
        .http
        .put(format!(
            "{}/admin/v1/workflows/files/beta.toml",
            app.server.url
        ))
        .bearer_auth(&beta.token)
        .header("content-type", "text/plain")
        .body(BIG.replace("big-order", "beta-order"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);

    // The second node takes beta's file...
    let took = async {
        let start = std::time::Instant::now();
        loop {
            let resp = app
                .http
                .get(format!("{}/admin/v1/workflows", second.url))
                .bearer_auth(&beta.token)
                .send()
                .await
                .unwrap();
            let v: Value = resp.json().await.unwrap();
            if v["rules"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["id"] == "beta-order")
            {
                return (start.elapsed(), v);
            }
            assert!(start.elapsed() < Duration::from_secs(5), "{v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (_, v) = took.await;
    // ...without showing beta acme's problem...
    assert!(v["status"]["last_error"].is_null(), "{v}");
    // ...which acme sees, named.
    let (_, v) = request_at(
        app,
        &second.url,
        reqwest::Method::GET,
        "/admin/v1/workflows",
        None,
    )
    .await;
    let error = v["status"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("duplicate rule id `big-order`"), "{v}");
    // Acme's rules on the second node: its disk's only, from disk.
    let rules = active_rules_at(app, &second.url).await;
    let big: Vec<_> = rules.iter().filter(|(id, _)| id == "big-order").collect();
    assert_eq!(big.len(), 1, "{rules:?}");
    assert!(big[0].1.starts_with("file:"), "{rules:?}");
    // On the first node, acme's published rule routes.
    order(app, "o-1", 5000).await;
    assert!(directive_keys(app).await.contains(&"big:o-1".to_owned()));
    second.stop().await.unwrap();
}

async fn published_files_are_the_tenants_own(backend: Backend) {
    let r = spawn(backend).await;
    let app = &r.app;
    let beta = fleetprompt_system_tests::create_tenant(&app.db, "beta")
        .await
        .unwrap();
    assert_eq!(
        put_file(app, "orders.toml", BIG).await.0,
        StatusCode::CREATED
    );
    let as_beta = |method: reqwest::Method, path: &'static str| {
        app.request_as(&beta.token, method, path, None)
    };
    let (s, v) = as_beta(reqwest::Method::GET, "/admin/v1/workflows/files").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["files"], json!([]), "{v}");
    let (s, _) = as_beta(
        reqwest::Method::GET,
        "/admin/v1/workflows/files/orders.toml",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = as_beta(
        reqwest::Method::DELETE,
        "/admin/v1/workflows/files/orders.toml",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, v) = as_beta(reqwest::Method::GET, "/admin/v1/workflows").await;
    assert!(
        v["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["id"] != "big-order"),
        "{v}"
    );
    // Beta may publish a file of the same name, with the same rule id: its own scope.
    let resp = app
        .http
        .put(format!(
            "{}/admin/v1/workflows/files/orders.toml",
            app.server.url
        ))
        .bearer_auth(&beta.token)
        .header("content-type", "text/plain; charset=utf-8")
        .body(BIG_V2)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let (_, f) = app.get("/admin/v1/workflows/files/orders.toml").await;
    assert_eq!(
        f["file"]["sha256"],
        sha256_hex(BIG.as_bytes()),
        "acme's file is untouched: {f}"
    );
    // Acme's rule routes acme's signals only.
    order(app, "o-1", 500).await;
    assert_eq!(directive_keys(app).await, ["big:o-1", "disk-order:o-1"]);
    let (_, v) = app
        .request_as(
            &beta.token,
            reqwest::Method::GET,
            "/admin/v1/directives",
            None,
        )
        .await;
    assert_eq!(v["directives"], json!([]), "{v}");
    // Without a token, nothing.
    let resp = app
        .http
        .get(format!("{}/admin/v1/workflows/files", app.server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}

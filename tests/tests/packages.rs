//! The package model: the catalogue, installing, uninstalling (what stops,
//! what is kept) and installing again, through the admin API and the CLI.

use axum::http::StatusCode;
use fleetprompt_system_tests::packages::{catalogue_entry, execute, install, uninstall};
use fleetprompt_system_tests::webchat::{ORIGIN, bootstrap, say, site, spawn_with_rules, visitor};
use fleetprompt_system_tests::{Backend, Server, TestApp, both_backends, cli};
use serde_json::{Value, json};

/// Stands in for the package's shipped rules: a file with the name the
/// manifest lists as website chat's default workflow file.
const DEFAULT_RULES: &str = r#"
[[rule]]
id = "chat.default-poke"
on = "test.poke"

[[rule.directive]]
kind = "noop"
dedupe_key = "poke:{{ signal.payload.n }}"
"#;

/// A tenant's own rule that asks for one of the package's directive kinds.
const TENANT_RULES: &str = r#"
[[rule]]
id = "acme.close-on-request"
on = "test.close"

[[rule.directive]]
kind = "webchat.conversation.close"
dedupe_key = "close:{{ signal.payload.conversation_id }}"
args = { conversation_id = "{{ signal.payload.conversation_id }}" }
"#;

async fn spawn(backend: Backend) -> TestApp {
    spawn_with_rules(backend, &[], |dir| {
        std::fs::write(dir.join("website_chat.toml"), DEFAULT_RULES).unwrap();
        std::fs::create_dir_all(dir.join("tenants/acme")).unwrap();
        std::fs::write(dir.join("tenants/acme/rules.toml"), TENANT_RULES).unwrap();
    })
    .await
}

async fn signal(app: &TestApp, t: &str, subject: &str, payload: Value, key: &str) -> String {
    let (s, v) = app
        .post(
            "/admin/v1/signals",
            json!({ "type": t, "subject": subject, "payload": payload, "dedupe_key": key }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

/// The directives of `kind`.
async fn directives(app: &TestApp, kind: &str) -> Vec<Value> {
    let (s, v) = app.get("/admin/v1/directives?limit=1000").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["directives"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == kind)
        .cloned()
        .collect()
}

/// The rule verdicts on `subject`'s timeline.
async fn verdicts(app: &TestApp, subject: &str) -> Vec<Value> {
    let (s, v) = app
        .get(&format!("/admin/v1/timeline?subject={subject}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["entry"] == "rule")
        .cloned()
        .collect()
}

async fn history(app: &TestApp, key: &str, token: &str) -> reqwest::Response {
    app.http
        .get(format!(
            "{}/v1/widget/messages?site_key={key}",
            app.server.url
        ))
        .header("origin", ORIGIN)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn the_catalogue_lists_website_chat_with_the_tenants_state(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let chat = catalogue_entry(&app, "website_chat").await;
    assert_eq!(chat["name"], "Website chat", "{chat}");
    assert_eq!(chat["category"], "customer_service", "{chat}");
    assert_eq!(chat["state"], "not_installed", "{chat}");
    assert_eq!(chat["installation"], Value::Null, "{chat}");
    assert_eq!(chat["workflows"], json!(["website_chat.toml"]), "{chat}");
    for kind in [
        "webchat.reply_send",
        "webchat.conversation.close",
        "email.send",
    ] {
        assert!(
            chat["directives"]
                .as_array()
                .unwrap()
                .contains(&json!(kind)),
            "{kind}: {chat}"
        );
    }
    assert!(
        chat["signals"]
            .as_array()
            .unwrap()
            .contains(&json!("webchat.message.received")),
        "{chat}"
    );
    assert!(
        chat["settings"]["field"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "brand"),
        "{chat}"
    );

    // A setting of the wrong type is refused, naming it; nothing is written.
    let (s, v) = install(&app, "website_chat", json!({ "brand": 7 })).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`brand`"),
        "{v}"
    );
    assert_eq!(
        catalogue_entry(&app, "website_chat").await["state"],
        "not_installed"
    );
    // Unknown packages: refused to install, not found to uninstall.
    let (s, v) = install(&app, "billing", json!({})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("known packages: website_chat"),
        "{v}"
    );
    let (s, v) = uninstall(&app, "billing").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    // Nothing to uninstall before an install.
    let (s, v) = uninstall(&app, "website_chat").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

    let (s, v) = install(&app, "website_chat", json!({ "brand": "Acme" })).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["status"], "installed", "{v}");
    let chat = catalogue_entry(&app, "website_chat").await;
    assert_eq!(chat["state"], "installed", "{chat}");
    assert_eq!(chat["installation"]["version"], chat["version"], "{chat}");
    assert_eq!(chat["installation"]["config"]["brand"], "Acme", "{chat}");
    // The list of installations and the catalogue agree, and so does the
    // generic table behind both.
    let (s, list) = app.get("/admin/v1/installations").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["installations"][0]["package"], "website_chat");
    assert_eq!(list["installations"][0]["status"], "installed");
    let sql = format!(
        "SELECT COUNT(*) FROM installations WHERE tenant_id = '{}' AND package = 'website_chat' AND status = 'installed'",
        app.tenant.id
    );
    assert_eq!(app.db.scalar(&sql).await.unwrap(), 1);
}

async fn uninstalling_stops_the_package_and_installing_again_restores_it(backend: Backend) {
    let app = spawn(backend).await;
    // Registering a site installs the package, as it always has.
    let s1 = site(&app).await;
    let key = s1["public_key"].as_str().unwrap().to_owned();
    let token = visitor(&app, &key).await;
    let conv = say(&app, &token, "hello before").await;
    assert_eq!(
        catalogue_entry(&app, "website_chat").await["state"],
        "installed"
    );
    signal(&app, "test.poke", "poke:1", json!({ "n": 1 }), "poke-1").await;
    assert_eq!(
        directives(&app, "noop").await.len(),
        1,
        "the default rule runs"
    );

    let (s, v) = uninstall(&app, "website_chat").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "uninstalled", "{v}");
    assert_eq!(
        catalogue_entry(&app, "website_chat").await["state"],
        "uninstalled"
    );
    // Uninstalling twice is harmless.
    let (s, v) = uninstall(&app, "website_chat").await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Its public endpoints refuse the tenant's site: a new bootstrap, and a
    // token issued before.
    let r = bootstrap(&app, &key).await;
    assert_eq!(r.status().as_u16(), 409);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "package_not_installed", "{v}");
    let r = history(&app, &key, &token).await;
    assert_eq!(r.status().as_u16(), 409);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "package_not_installed", "{v}");

    // Its directive kinds are refused through the API …
    let (s, v) = app
        .post(
            "/admin/v1/directives",
            json!({ "kind": "webchat.conversation.close", "args": { "conversation_id": conv }, "dedupe_key": "close-api" }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "package_not_installed", "{v}");
    // … and so are new sites.
    let (s, v) = app
        .post(
            "/admin/v1/sites",
            json!({ "domains": ["other.example.com"], "mode": "native" }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "package_not_installed", "{v}");
    // … and a tenant rule that asks for one is skipped, saying why.
    let subject = format!("conversation:{conv}");
    signal(
        &app,
        "test.close",
        &subject,
        json!({ "conversation_id": conv }),
        "close-1",
    )
    .await;
    assert!(
        directives(&app, "webchat.conversation.close")
            .await
            .is_empty()
    );
    let v = verdicts(&app, &subject).await;
    let close = v
        .iter()
        .find(|e| e["rule_id"] == "acme.close-on-request")
        .unwrap_or_else(|| panic!("no verdict: {v:?}"));
    assert_eq!(close["outcome"], "skipped", "{close}");
    assert!(
        close["detail"]
            .as_str()
            .unwrap()
            .contains("package website_chat is not installed"),
        "{close}"
    );
    // Its default rules do not run on a new signal.
    signal(&app, "test.poke", "poke:2", json!({ "n": 2 }), "poke-2").await;
    assert_eq!(directives(&app, "noop").await.len(), 1, "no new directive");
    let v = verdicts(&app, "poke:2").await;
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0]["outcome"], "skipped", "{}", v[0]);
    assert!(
        v[0]["detail"]
            .as_str()
            .unwrap()
            .contains("package website_chat is not installed for this tenant"),
        "{}",
        v[0]
    );
    // Its data is kept.
    let (s, c) = app.get(&format!("/admin/v1/conversations/{conv}")).await;
    assert_eq!(s, StatusCode::OK, "{c}");

    // Installing again restores it: 200 (not a first install), the same
    // site, the same visitor token, the old conversation.
    let (s, v) = install(&app, "website_chat", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "installed", "{v}");
    let r = bootstrap(&app, &key).await;
    assert_eq!(r.status().as_u16(), 200);
    let r = history(&app, &key, &token).await;
    assert_eq!(r.status().as_u16(), 200);
    let h: Value = r.json().await.unwrap();
    assert_eq!(h["conversation_id"], json!(conv), "{h}");
    assert_eq!(h["messages"][0]["content"], "hello before", "{h}");
    assert_eq!(say(&app, &token, "hello after").await, conv);
    signal(&app, "test.poke", "poke:3", json!({ "n": 3 }), "poke-3").await;
    assert_eq!(
        directives(&app, "noop").await.len(),
        2,
        "the default rule runs again"
    );
}

async fn the_cli_lists_installs_and_uninstalls(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let line = list(&app.db).await;
    assert!(
        line.starts_with("website_chat\tnot_installed\t-\tWebsite chat"),
        "{line}"
    );
    // The package's settings are `--settings`; `--config` names the
    // configuration file for every command, after the command too.
    let out = cli(
        &app.db,
        &[
            "package",
            "install",
            "website_chat",
            "--tenant",
            "acme",
            "--settings",
            r#"{"brand":"Acme"}"#,
        ],
    )
    .await
    .unwrap();
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["config"]["brand"], "Acme", "{v}");
    assert!(
        list(&app.db)
            .await
            .starts_with("website_chat\tinstalled\t1.0.0\t")
    );
    // The server sees it at once.
    assert_eq!(
        catalogue_entry(&app, "website_chat").await["state"],
        "installed"
    );
    cli(
        &app.db,
        &["package", "uninstall", "website_chat", "--tenant", "acme"],
    )
    .await
    .unwrap();
    assert!(
        list(&app.db)
            .await
            .starts_with("website_chat\tuninstalled\t")
    );
    // Installing again without --settings keeps the configuration.
    let out = cli(
        &app.db,
        &["package", "install", "website_chat", "--tenant", "acme"],
    )
    .await
    .unwrap();
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["status"], "installed", "{v}");
    assert_eq!(v["config"]["brand"], "Acme", "{v}");
    let json = cli(&app.db, &["package", "list", "--tenant", "acme", "--json"])
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["slug"], "website_chat", "{v}");
    assert_eq!(v[0]["state"], "installed", "{v}");
    // A bad setting is refused by the CLI as by the API.
    let err = cli(
        &app.db,
        &[
            "package",
            "install",
            "website_chat",
            "--tenant",
            "acme",
            "--settings",
            r#"{"brand":1}"#,
        ],
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("`brand` must be a string"),
        "{err}"
    );
}

/// A database as the release before the package model left it (website
/// chat's own installations table, with its IP-hash key) is migrated into
/// the generic table: the installation, its configuration and its key
/// survive, and the server carries on with the same site.
async fn the_migration_moves_website_chat_installations(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let (s, v) = install(&app, "website_chat", json!({ "brand": "Acme" })).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let s1 = site(&app).await;
    let key = s1["public_key"].as_str().unwrap().to_owned();
    let token = visitor(&app, &key).await;
    let conv = say(&app, &token, "hello from the old release").await;
    let ip_key = format!(
        "SELECT sealed_ip_key FROM website_chat_ip_keys WHERE tenant_id = '{}'",
        app.tenant.id
    );
    let sealed = app.db.strings(&ip_key).await.unwrap();
    assert_eq!(sealed.len(), 1);
    app.server.stop().await.unwrap();

    // Back to the old schema: migration 0016 not applied, its rows where
    // the release before kept them.
    execute(
        &app.db,
        &[
            "CREATE TABLE website_chat_installations (
                tenant_id TEXT NOT NULL REFERENCES tenants (id), package TEXT NOT NULL,
                config TEXT NOT NULL, sealed_ip_key TEXT NOT NULL,
                installed_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
                PRIMARY KEY (tenant_id, package))",
            "INSERT INTO website_chat_installations
             SELECT i.tenant_id, i.package, i.config, k.sealed_ip_key, i.installed_at, i.updated_at
             FROM installations i JOIN website_chat_ip_keys k ON k.tenant_id = i.tenant_id",
            "DROP TABLE installations",
            "DROP TABLE website_chat_ip_keys",
            "DELETE FROM fleetprompt_migrations WHERE version = 16",
        ],
    )
    .await
    .unwrap();
    cli(&app.db, &["migrate"]).await.unwrap();

    assert_eq!(
        app.db.strings(&ip_key).await.unwrap(),
        sealed,
        "the key moved"
    );
    app.server = Server::start(&app.db, "server", &[]).await.unwrap();
    let chat = catalogue_entry(&app, "website_chat").await;
    assert_eq!(chat["state"], "installed", "{chat}");
    assert_eq!(chat["installation"]["version"], "1.0.0", "{chat}");
    assert_eq!(chat["installation"]["config"]["brand"], "Acme", "{chat}");
    let r = history(&app, &key, &token).await;
    assert_eq!(r.status().as_u16(), 200);
    let h: Value = r.json().await.unwrap();
    assert_eq!(h["conversation_id"], json!(conv), "{h}");
    // Uninstalling works on a migrated installation as on a new one.
    let (s, v) = uninstall(&app, "website_chat").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(bootstrap(&app, &key).await.status().as_u16(), 409);
}

/// `fleetprompt package list --tenant acme`.
async fn list(db: &fleetprompt_system_tests::TestDb) -> String {
    cli(db, &["package", "list", "--tenant", "acme"])
        .await
        .unwrap()
}

both_backends!(
    the_catalogue_lists_website_chat_with_the_tenants_state,
    uninstalling_stops_the_package_and_installing_again_restores_it,
    the_cli_lists_installs_and_uninstalls,
    the_migration_moves_website_chat_installations,
);

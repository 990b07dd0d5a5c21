//! A real browser (headless Debian Chromium, driven by Playwright in
//! `tests/browser/e2e.mjs`) embeds the widget served by FleetPrompt into a
//! page on another origin, chats, and receives an operator's reply live; a
//! page on an origin the site does not allow gets no widget. The site asks
//! new visitors for a proof of work, which the widget solves in a Web
//! Worker; the solve times are printed. The screenshot
//! of the open widget is saved as `target/widget-e2e.png`.
//!
//! Needs `node`, `/usr/bin/chromium` (`apt-get install chromium`) and
//! `npm ci --prefix tests/browser` (run here when `node_modules` is missing).

use std::path::PathBuf;
use std::process::Stdio;

use axum::http::StatusCode;
use axum::response::Html;
use fleetprompt_system_tests::{Backend, Recorder, TestApp};
use serde_json::{Value, json};

/// Serves one HTML page on 127.0.0.1:0; returns its URL.
async fn host_page(html: String) -> String {
    let app = axum::Router::new().route("/", axum::routing::get(move || async move { Html(html) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Debian's Chromium (or `$CHROMIUM`) and `tests/browser` with its npm
/// packages, installed by `npm ci` when one is missing.
async fn browser_tools() -> (String, PathBuf) {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: apt-get install -y chromium"
    );
    let dir = repo_root().join("tests/browser");
    let installed = ["playwright-core", "@axe-core/playwright"]
        .iter()
        .all(|m| dir.join("node_modules").join(m).exists());
    if !installed {
        let ok = tokio::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .await
            .expect("npm")
            .success();
        assert!(ok, "npm ci in tests/browser failed");
    }
    (chromium, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widget_works_in_a_real_browser() {
    let (chromium, dir) = browser_tools().await;

    // The shipped website_chat rules, and a Mattermost stand-in.
    let workflows = repo_root().join("workflows");
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &["--workflows", workflows.to_str().unwrap()],
    )
    .await;
    let mm = Recorder::start().await;
    let (s, v) = app
        .post(
            "/admin/v1/destinations",
            json!({ "name": "mattermost", "kind": "mattermost", "webhook_url": format!("{}/hooks/e2e", mm.url) }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Two host pages on two origins; the site allows only the first.
    let page = |key: &str, fp: &str| {
        format!(
            "<!doctype html><html><head><meta charset=utf-8><title>Shop</title></head>\
             <body><h1>A shop</h1><p>Our products.</p>\
             <script async src=\"{fp}/widget.js\" data-site-key=\"{key}\"></script></body></html>"
        )
    };
    // The site must name the host's origin before the page exists: bind
    // first with a placeholder key, then register, then serve the real page.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host_url = format!("http://{}", listener.local_addr().unwrap());
    let (s, site) = app
        .post(
            "/admin/v1/sites",
            json!({ "domains": [host_url], "settings": { "title": "Acme help", "challenge": "proof_of_work" } }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{site}");
    let key = site["public_key"].as_str().unwrap().to_owned();
    let html = page(&key, &app.server.url);
    let posts = mm.clone();
    let router = axum::Router::new()
        .route(
            "/",
            axum::routing::get({
                let html = html.clone();
                move || async move { Html(html) }
            }),
        )
        // What the Mattermost stand-in received, for the script to wait on.
        .route(
            "/mm-posts",
            axum::routing::get(move || {
                let posts = posts.clone();
                async move {
                    let texts: Vec<Value> = posts
                        .received("/hooks/e2e")
                        .into_iter()
                        .map(|r| r.body["text"].clone())
                        .collect();
                    axum::Json(json!({ "texts": texts }))
                }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let bad_url = host_page(html).await;

    let shot = repo_root().join("target/widget-e2e.png");
    let out = tokio::process::Command::new("node")
        .arg("e2e.mjs")
        .current_dir(&dir)
        .env("FP_URL", &app.server.url)
        .env("HOST_URL", &host_url)
        .env("BAD_URL", &bad_url)
        .env("ADMIN_TOKEN", &app.tenant.token)
        .env("SCREENSHOT", &shot)
        .env("CHROMIUM", &chromium)
        .env("MM_POSTS_URL", format!("{host_url}/mm-posts"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "e2e.mjs failed:\n{stdout}\n{}\nserver log: {}",
        String::from_utf8_lossy(&out.stderr),
        app.server.log_path.display()
    );
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("JSON result");
    assert_eq!(r["message_signal"], true, "{r}");
    assert_eq!(r["mattermost_post"], true, "{r}");
    assert_eq!(r["reply_seen"], true, "{r}");
    assert_eq!(r["history_after_reload"], true, "{r}");
    assert_eq!(r["bad_origin_widget"], 0, "{r}");
    assert_eq!(r["page_errors"], json!([]), "{r}");
    // Proof of work: solved once by the first visit, not again after the
    // reload (the widget returned with its visitor secret); then once per
    // fresh profile. The figures are printed for docs/website-chat.md.
    assert_eq!(r["main_page_solves"], 1, "{r}");
    let solves: Vec<u64> = r["pow_solve_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(solves.len(), 9, "{r}");
    let mut sorted = solves.clone();
    sorted.sort_unstable();
    println!(
        "proof of work at the default difficulty, solve times in headless Chromium: {solves:?} ms, median {} ms, max {} ms",
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    );
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM website_chat_challenges")
            .await
            .unwrap(),
        9,
        "each solve spent one challenge"
    );
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM website_chat_identities WHERE secret_hash IS NULL")
            .await
            .unwrap(),
        0
    );
    assert!(shot.exists(), "screenshot saved");

    // The message and its signal, seen through the admin API.
    let conv = r["conversation_id"].as_str().unwrap();
    let (_, v) = app.get(&format!("/admin/v1/conversations/{conv}")).await;
    let roles: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["visitor", "agent"]);
    assert_eq!(v["visitor"]["browser"], "chrome");
    // Exactly one post for the conversation, with its deep link.
    let posts = mm.received("/hooks/e2e");
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert!(
        posts[0].body["text"]
            .as_str()
            .unwrap()
            .contains(&format!("/console/conversations/{conv}"))
    );
}

/// The operator console in a real browser (`tests/browser/console.mjs`):
/// sign in; a visitor's message through the widget on another origin
/// appears in the open inbox live; the reply reaches the visitor; Escalate
/// to Mattermost shows the attempt and result on the timeline, and the one
/// post's deep link opens the conversation after sign-in; a site
/// registered in the console gets a snippet that works on its origin;
/// Verify installation succeeds; a rule file with an error shows it at its
/// line, and fixed it backtests with counts, publishes and acts on the next
/// visitor message; axe finds no serious or critical violation on the
/// console's pages or the widget. Screenshots go to
/// `target/console-*.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_works_in_a_real_browser() {
    use std::sync::{Arc, Mutex};

    let (chromium, dir) = browser_tools().await;
    let workflows = repo_root().join("workflows");
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &["--workflows", workflows.to_str().unwrap()],
    )
    .await;
    let admin = fleetprompt_system_tests::access::add_member(
        &app.db,
        "acme",
        "ops@acme.test",
        "Olive Ops",
        "admin",
    )
    .await
    .unwrap();
    let mm = Recorder::start().await;
    let (s, v) = app
        .post(
            "/admin/v1/destinations",
            json!({ "name": "mattermost", "kind": "mattermost", "webhook_url": format!("{}/hooks/e2e", mm.url) }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // The first site, registered over the API, and its page.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host_url = format!("http://{}", listener.local_addr().unwrap());
    let (s, site) = app
        .post(
            "/admin/v1/sites",
            json!({ "domains": [host_url], "settings": { "title": "Acme help" } }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{site}");
    let key = site["public_key"].as_str().unwrap().to_owned();
    let page = |embed: &str| {
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=utf-8><title>Shop</title></head>\
             <body><main><h1>A shop</h1><p>Our products.</p></main>{embed}</body></html>"
        )
    };
    let html = page(&format!(
        "<script async src=\"{}/widget.js\" data-site-key=\"{key}\"></script>",
        app.server.url
    ));
    let posts = mm.clone();
    let router = axum::Router::new()
        .route("/", axum::routing::get(move || async move { Html(html) }))
        .route(
            "/mm-posts",
            axum::routing::get(move || {
                let posts = posts.clone();
                async move {
                    let texts: Vec<Value> = posts
                        .received("/hooks/e2e")
                        .into_iter()
                        .map(|r| r.body["text"].clone())
                        .collect();
                    axum::Json(json!({ "texts": texts }))
                }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });

    // The second origin: its page embeds whatever snippet the console gave.
    let embed = Arc::new(Mutex::new(String::new()));
    let new_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let new_host = format!("http://{}", new_listener.local_addr().unwrap());
    let new_router = axum::Router::new()
        .route(
            "/",
            axum::routing::get({
                let embed = embed.clone();
                move || {
                    let body = page(&embed.lock().unwrap());
                    async move { Html(body) }
                }
            }),
        )
        .route(
            "/snippet",
            axum::routing::post({
                let embed = embed.clone();
                move |body: String| async move {
                    // Only a script tag is taken: the snippet and nothing else.
                    if body.starts_with("<script async src=") && body.ends_with("</script>") {
                        *embed.lock().unwrap() = body;
                        StatusCode::NO_CONTENT
                    } else {
                        StatusCode::UNPROCESSABLE_ENTITY
                    }
                }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(new_listener, new_router).await;
    });

    let shots = repo_root().join("target");
    let out = tokio::process::Command::new("node")
        .arg("console.mjs")
        .current_dir(&dir)
        .env("FP_URL", &app.server.url)
        .env("HOST_URL", &host_url)
        .env("NEW_HOST_URL", &new_host)
        .env("EMAIL", &admin.email)
        .env("PASSWORD", &admin.password)
        .env("MM_POSTS_URL", format!("{host_url}/mm-posts"))
        .env("SHOT_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "console.mjs failed:\n{stdout}\n{}\nserver log: {}",
        String::from_utf8_lossy(&out.stderr),
        app.server.log_path.display()
    );
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("JSON result");
    println!("{r:#}");
    assert!(
        r["signed_in"].as_str().unwrap().contains("Olive Ops"),
        "{r}"
    );
    assert_eq!(
        r["inbox_live"], true,
        "the message arrived without a reload: {r}"
    );
    assert_eq!(r["unread"], true, "{r}");
    assert_eq!(r["reply_seen"], true, "{r}");
    assert_eq!(r["reply_progress_in_place"], true, "{r}");
    assert!(
        r["escalation_attempt"]
            .as_str()
            .unwrap()
            .contains("succeeded"),
        "{r}"
    );
    assert!(r["escalation_result"].as_u64().unwrap() >= 1, "{r}");
    assert!(
        r["chain"].as_u64().unwrap() >= 1,
        "the causal view nests: {r}"
    );
    assert_eq!(r["mattermost_posts"], 1, "{r}");
    assert_eq!(r["deep_link"], true, "{r}");
    assert!(
        r["register_flash"].as_str().unwrap().contains("done"),
        "{r}"
    );
    assert!(
        r["snippet"]
            .as_str()
            .unwrap()
            .contains(&format!("{}/widget.js", app.server.url)),
        "{r}"
    );
    assert_eq!(r["new_site_message"], true, "{r}");
    assert_eq!(r["verify"], "Verification succeeded", "{r}");
    for k in [
        "phone_overflow",
        "phone_overflow_conversation",
        "phone_overflow_sites",
    ] {
        assert!(r[k].as_i64().unwrap() <= 0, "{k}: {r}");
    }
    assert_eq!(r["page_errors"], json!([]), "{r}");
    for (page, violations) in r["axe"].as_object().unwrap() {
        assert_eq!(violations, &json!([]), "axe on {page}: {violations}");
    }
    assert!(r["axe"].as_object().unwrap().len() >= 7, "{r}");
    for page in [
        "login",
        "home",
        "rules",
        "rules_new",
        "rules_problems",
        "rules_backtest",
        "directives",
        "destinations",
        "packages",
        "members",
        "tokens",
        "saved_replies",
    ] {
        assert!(r["axe"].get(page).is_some(), "axe ran on {page}: {r}");
    }
    // A saved reply goes where the cursor was, in place.
    assert_eq!(
        r["saved_reply_inserted"], "Hello. We answer from 9 to 5, Monday to Friday.",
        "{r}"
    );
    assert_eq!(r["saved_reply_in_place"], true, "{r}");
    assert_eq!(r["saved_reply_focus"], "reply", "{r}");
    // The rules editor: the error at its file, line and column, the line
    // marked; the backtest's counts; the published rule in force.
    let problem = r["rule_problem"].as_str().unwrap();
    assert!(problem.starts_with("refunds.toml:3:"), "{r}");
    let col = problem["refunds.toml:3:".len()..]
        .split(':')
        .next()
        .unwrap();
    assert!(col.parse::<u32>().is_ok(), "{r}");
    assert_eq!(r["rule_marked_visible"], true, "{r}");
    assert_eq!(r["rule_marked_line"], "3", "{r}");
    assert!(
        r["rule_valid"].as_str().unwrap().contains("e2e.refund"),
        "{r}"
    );
    let signals: u64 = r["backtest_signals"]
        .as_str()
        .unwrap()
        .parse()
        .expect("a count");
    assert!(
        signals >= 1,
        "the visitors' messages are in the window: {r}"
    );
    assert!(
        r["rule_published"]
            .as_str()
            .unwrap()
            .contains("Published refunds.toml"),
        "{r}"
    );
    assert!(r["rule_took_effect"].as_u64().unwrap() >= 1, "{r}");
    for shot in [
        "console-inbox.png",
        "console-conversation.png",
        "console-sites.png",
        "console-rules.png",
    ] {
        assert!(shots.join(shot).exists(), "{shot}");
    }
    // The conversation, as the API sees it: the operator's reply, from
    // the console, by name.
    let conv = r["conversation_id"].as_str().unwrap();
    let (_, v) = app.get(&format!("/admin/v1/conversations/{conv}")).await;
    let roles: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["visitor", "agent"], "{v}");
}

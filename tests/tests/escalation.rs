//! Escalation to Mattermost, operator replies and reply drafts, end to end,
//! with the shipped `workflows/website_chat.toml` defaults and local
//! stand-ins for Mattermost and an OpenAI-compatible server.

use std::time::Duration;

use axum::http::StatusCode;
use fleetprompt_system_tests::webchat::{
    SHIPPED_RULES, directives_of, replay, say, signals_of, site, spawn_with_rules, timeline,
    visitor, wait_signal,
};
use fleetprompt_system_tests::{Backend, Recorder, Reply, Server, TestApp, both_backends, cli};
use serde_json::{Value, json};

const PUBLIC: &str = "https://fleet.example.com";
const HOOK: &str = "/hooks/k3y";

const FAQ: &str = r#"
[[faq]]
question = "What are your opening hours?"
answer = "We are open from 9:00 to 17:00, Monday to Friday."

[[faq]]
question = "How do I reset my password?"
answer = "Use the 'Forgot password' link on the sign-in page."

[[faq]]
question = "Do you ship internationally?"
answer = "Yes, we ship to 30 countries; delivery abroad takes 5 to 10 days."
"#;

/// A server running the shipped defaults (plus an FAQ for tenant acme when asked).
async fn spawn(backend: Backend, faq: bool) -> TestApp {
    spawn_with_rules(backend, &["--public-url", PUBLIC], |dir| {
        // Knowledge lives in a subdirectory: every *.toml directly in
        // tenants/<slug>/ is a rule file.
        std::fs::create_dir_all(dir.join("tenants/acme/knowledge")).unwrap();
        std::fs::copy(SHIPPED_RULES, dir.join("website_chat.toml")).unwrap();
        if faq {
            std::fs::write(dir.join("tenants/acme/knowledge/faq.toml"), FAQ).unwrap();
        }
    })
    .await
}

async fn destination(app: &TestApp, body: Value) {
    let (s, v) = app.post("/admin/v1/destinations", body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let text = v.to_string();
    assert!(
        !text.contains("k3y") && !text.contains("s3cret"),
        "secret echoed: {text}"
    );
}

async fn first_message_posts_once_with_deep_link(backend: Backend) {
    let app = spawn(backend, false).await;
    let mm = Recorder::start().await;
    destination(
        &app,
        json!({ "name": "mattermost", "kind": "mattermost", "webhook_url": format!("{}{HOOK}", mm.url) }),
    )
    .await;
    let site = site(&app).await;
    let token = visitor(&app, site["public_key"].as_str().unwrap()).await;
    let conv = say(&app, &token, "Hello @channel, where is my order #123?").await;
    say(&app, &token, "Still there?").await;
    let posts = mm.wait_for(HOOK, 1, Duration::from_secs(10)).await;
    let text = posts[0].body["text"].as_str().unwrap().to_owned();
    assert!(
        text.contains(&format!("{PUBLIC}/console/conversations/{conv}")),
        "{text}"
    );
    assert!(text.contains("where is my order #123?"), "{text}");
    assert!(!text.contains("@channel"), "mention not defused: {text}");
    let entries = wait_signal(
        &app,
        &conv,
        "webchat.escalation.notified",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(signals_of(&entries, "webchat.escalation.created").len(), 1);

    // Replaying every signal creates no second notification.
    let out = replay(&app, &[]).await;
    assert!(out.contains("\"directives_created\":0"), "{out}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(mm.received(HOOK).len(), 1);
    // The installation check goes through the same path.
    let sid = site["site_id"].as_str().unwrap();
    let (s, v) = app
        .post(&format!("/admin/v1/sites/{sid}/test-message"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["signal"]["type"], "webchat.message.received", "{v}");
    assert_eq!(v["escalations"][0]["status"], "succeeded", "{v}");
    assert_eq!(v["escalations"][0]["http_status"], 200, "{v}");
    assert_eq!(mm.received(HOOK).len(), 2);
    // And so does the CLI's.
    let out = cli(
        &app.db,
        &[
            "site",
            "test-message",
            sid,
            "--tenant",
            "acme",
            "--workflows",
            app.db.dir.join("workflows").to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["signal"]["type"], "webchat.message.received", "{v}");
    assert_eq!(v["escalations"][0]["status"], "succeeded", "{v}");
    assert_eq!(mm.received(HOOK).len(), 3);
}

/// Routing remembers that a tenant has no `mattermost` destination (it
/// checks on every message); creating one must end that at once.
async fn a_destination_created_after_a_miss_is_used_at_once(backend: Backend) {
    let app = spawn(backend, false).await;
    let mm = Recorder::start().await;
    let site = site(&app).await;
    let key = site["public_key"].as_str().unwrap();
    let before = say(&app, &visitor(&app, key).await, "Anyone there?").await;
    let skipped = timeline(&app, &before).await;
    let verdict = skipped
        .iter()
        .find(|e| e["entry"] == "rule" && e["rule_id"] == "webchat.auto-notify")
        .unwrap_or_else(|| panic!("no auto-notify verdict: {skipped:?}"));
    assert_eq!(verdict["outcome"], "skipped", "{verdict}");
    assert!(
        verdict["detail"]
            .as_str()
            .unwrap()
            .contains("\"mattermost\" does not exist"),
        "{verdict}"
    );
    destination(
        &app,
        json!({ "name": "mattermost", "kind": "mattermost", "webhook_url": format!("{}{HOOK}", mm.url) }),
    )
    .await;
    let after = say(&app, &visitor(&app, key).await, "Hello?").await;
    let posts = mm.wait_for(HOOK, 1, Duration::from_secs(10)).await;
    let text = posts[0].body["text"].as_str().unwrap();
    assert!(text.contains(&after), "{text}");
    assert!(!text.contains(&before), "{text}");
}

async fn retries_503_then_notifies(backend: Backend) {
    let app = spawn(backend, false).await;
    let mm = Recorder::start().await;
    mm.script(HOOK, [Reply::status(503), Reply::status(503)]);
    destination(
        &app,
        json!({ "name": "mattermost", "kind": "mattermost", "webhook_url": format!("{}{HOOK}", mm.url) }),
    )
    .await;
    let site = site(&app).await;
    let token = visitor(&app, site["public_key"].as_str().unwrap()).await;
    let conv = say(&app, &token, "Help please").await;
    let entries = wait_signal(
        &app,
        &conv,
        "webchat.escalation.notified",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(mm.received(HOOK).len(), 3);
    let d = directives_of(&entries, "webchat.escalate_to_mattermost");
    let id = d[0]["id"].as_str().unwrap();
    let v = app
        .wait_for_status(id, &["succeeded"], Duration::from_secs(5))
        .await;
    assert_eq!(v["attempts"], 3, "{v}");
}

async fn mattermost_404_fails_visibly(backend: Backend) {
    let app = spawn(backend, false).await;
    let mm = Recorder::start().await;
    mm.script(
        HOOK,
        [Reply {
            status: 404,
            headers: vec![("content-type".into(), "application/json".into())],
            body: r#"{"id":"web.incoming_webhook.invalid.app_error","message":"Invalid webhook.","detailed_error":"","request_id":"x","status_code":404}"#.into(),
        }],
    );
    destination(
        &app,
        json!({ "name": "mattermost", "kind": "mattermost", "webhook_url": format!("{}{HOOK}", mm.url) }),
    )
    .await;
    let site = site(&app).await;
    let token = visitor(&app, site["public_key"].as_str().unwrap()).await;
    let conv = say(&app, &token, "Anyone?").await;
    let entries = wait_signal(
        &app,
        &conv,
        "webchat.escalation.failed",
        Duration::from_secs(10),
    )
    .await;
    let d = directives_of(&entries, "webchat.escalate_to_mattermost");
    let id = d[0]["id"].as_str().unwrap();
    let v = app
        .wait_for_status(id, &["failed"], Duration::from_secs(5))
        .await;
    assert_eq!(v["attempts"], 1, "{v}");
    let attempt = entries
        .iter()
        .find(|e| e["entry"] == "attempt")
        .expect("attempt on the timeline");
    assert_eq!(attempt["http_status"], 404, "{attempt}");
    assert_eq!(
        attempt["external_ref"],
        "web.incoming_webhook.invalid.app_error"
    );
    assert_eq!(mm.received(HOOK).len(), 1);
}

async fn rest_mode_threads_follow_ups(backend: Backend) {
    let app = spawn(backend, false).await;
    let mm = Recorder::start().await;
    let path = "/api/v4/posts";
    mm.script(
        path,
        [
            Reply {
                status: 201,
                headers: vec![],
                body: r#"{"id":"rootpost1","message":"x"}"#.into(),
            },
            Reply {
                status: 201,
                headers: vec![],
                body: r#"{"id":"reply2","root_id":"rootpost1"}"#.into(),
            },
        ],
    );
    destination(
        &app,
        json!({ "name": "mattermost", "kind": "mattermost_api", "base_url": mm.url, "token": "s3cret-token", "channel_id": "chan1" }),
    )
    .await;
    let site = site(&app).await;
    let token = visitor(&app, site["public_key"].as_str().unwrap()).await;
    let conv = say(&app, &token, "First question").await;
    let posts = mm.wait_for(path, 1, Duration::from_secs(10)).await;
    assert_eq!(posts[0].body["channel_id"], "chan1");
    assert!(posts[0].body.get("root_id").is_none(), "{}", posts[0].body);
    assert_eq!(
        posts[0].headers["authorization"].to_str().unwrap(),
        "Bearer s3cret-token"
    );
    wait_signal(
        &app,
        &conv,
        "webchat.escalation.notified",
        Duration::from_secs(10),
    )
    .await;
    // A follow-up notification of the same conversation goes into the thread.
    let (s, v) = app
        .post(
            "/admin/v1/directives",
            json!({
                "kind": "webchat.escalate_to_mattermost",
                "args": { "destination": "mattermost", "conversation_id": conv },
                "dedupe_key": format!("followup:{conv}"),
            }),
        )
        .await;
    assert!(s.is_success(), "{v}");
    let posts = mm.wait_for(path, 2, Duration::from_secs(10)).await;
    assert_eq!(posts[1].body["root_id"], "rootpost1", "{}", posts[1].body);
    assert!(
        posts[1].body["message"]
            .as_str()
            .unwrap()
            .contains("Follow-up")
    );
}

/// Every attempt of one REST-mode notification carries the same
/// `pending_post_id`, derived from the directive id, so Mattermost (and its
/// stand-in) takes a retry within 30 s as the post it already created.
async fn rest_mode_retries_carry_one_pending_post_id(backend: Backend) {
    let app = spawn(backend, false).await;
    let mm = Recorder::start().await;
    let path = "/api/v4/posts";
    mm.script(
        path,
        [
            Reply::status(503),
            Reply {
                status: 201,
                headers: vec![],
                body: r#"{"id":"post1","message":"x"}"#.into(),
            },
        ],
    );
    destination(
        &app,
        json!({ "name": "mattermost", "kind": "mattermost_api", "base_url": mm.url, "token": "s3cret-token", "channel_id": "chan1" }),
    )
    .await;
    let site = site(&app).await;
    let token = visitor(&app, site["public_key"].as_str().unwrap()).await;
    let conv = say(&app, &token, "Is anyone there?").await;
    let entries = wait_signal(
        &app,
        &conv,
        "webchat.escalation.notified",
        Duration::from_secs(15),
    )
    .await;
    let notified = signals_of(&entries, "webchat.escalation.notified")[0].clone();
    let directive = notified["payload"]["directive_id"].as_str().unwrap();
    let posts = mm.received(path);
    assert_eq!(posts.len(), 2, "one failed attempt, one retry");
    let ids: Vec<&str> = posts
        .iter()
        .map(|p| p.body["pending_post_id"].as_str().expect("pending_post_id"))
        .collect();
    assert_eq!(ids[0], ids[1], "stable across attempts");
    assert_eq!(ids[0], format!("fleetprompt:{directive}"));
    // The same post sent again (as after a crash between Mattermost's answer
    // and our commit) is taken as the one already created.
    let again = app
        .http
        .post(format!("{}{path}", mm.url))
        .json(&posts[1].body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 201);
    assert_eq!(mm.received(path).len(), 2);
    assert_eq!(mm.deduplicated(path).len(), 1);
}

/// kill -9 while REST-mode posts are in flight: Mattermost (its stand-in)
/// already created them, and the retries on the restarted node, within
/// Mattermost's 30 s, carry the same `pending_post_id`: every conversation
/// is notified exactly once in the channel.
async fn rest_mode_shows_no_duplicate_post_after_a_crash(backend: Backend) {
    let mut app = spawn(backend, false).await;
    let mm = Recorder::start().await;
    let path = "/api/v4/posts";
    mm.slow_answer(path, Duration::from_millis(400));
    destination(
        &app,
        json!({ "name": "mattermost", "kind": "mattermost_api", "base_url": mm.url, "token": "s3cret-token", "channel_id": "chan1" }),
    )
    .await;
    let site = site(&app).await;
    let key = site["public_key"].as_str().unwrap().to_owned();
    let n = 30;
    for i in 0..n {
        let token = visitor(&app, &key).await;
        say(&app, &token, &format!("Question {i}")).await;
    }
    mm.wait_for(path, 5, Duration::from_secs(20)).await;
    app.server.kill9().await;
    let taken_at_kill = mm.received(path).len();
    app.server = Server::start(
        &app.db,
        "restarted",
        &[
            "--workflows",
            app.db.dir.join("workflows").to_str().unwrap(),
            "--public-url",
            PUBLIC,
        ],
    )
    .await
    .unwrap();
    app.db
        .wait_scalar(
            "SELECT COUNT(*) FROM signals WHERE type = 'webchat.escalation.notified'",
            |c| c == n as i64,
            Duration::from_secs(40),
            "not every conversation was notified",
        )
        .await;
    let posts = mm.received(path);
    let mut ids: Vec<&str> = posts
        .iter()
        .map(|p| p.body["pending_post_id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    let repeats = mm.deduplicated(path).len();
    println!(
        "{backend:?}: {taken_at_kill} posts taken before kill -9; {repeats} repeats deduplicated by pending_post_id"
    );
    assert_eq!(posts.len(), n, "one post per conversation in the channel");
    assert_eq!(ids.len(), n);
}

async fn llm_draft_is_stored_and_approval_sends_it(backend: Backend) {
    let app = spawn(backend, false).await;
    let llm = Recorder::start().await;
    let path = "/v1/chat/completions";
    llm.script(
        path,
        [Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: json!({
                "id": "c1", "model": "tiny-1",
                "choices": [{ "index": 0, "message": { "role": "assistant", "content": "Your order ships tomorrow." } }],
                "usage": { "prompt_tokens": 42, "completion_tokens": 6, "total_tokens": 48 }
            })
            .to_string(),
        }],
    );
    destination(
        &app,
        json!({ "name": "llm", "kind": "llm", "base_url": llm.url, "model": "tiny-1", "api_key": "sk-s3cret" }),
    )
    .await;
    let site = site(&app).await;
    let token = visitor(&app, site["public_key"].as_str().unwrap()).await;
    let conv = say(&app, &token, "When does my order ship?").await;
    let entries = wait_signal(
        &app,
        &conv,
        "webchat.reply.generated",
        Duration::from_secs(10),
    )
    .await;
    let generated = signals_of(&entries, "webchat.reply.generated")[0].clone();
    assert_eq!(
        generated["payload"]["usage"]["total_tokens"], 48,
        "{generated}"
    );
    assert_eq!(generated["payload"]["model"], "tiny-1");
    let req = &llm.received(path)[0];
    assert_eq!(req.body["model"], "tiny-1");
    assert_eq!(
        req.body["messages"].as_array().unwrap().last().unwrap()["content"],
        "When does my order ship?"
    );
    let (_, d) = app
        .get(&format!("/admin/v1/conversations/{conv}/drafts"))
        .await;
    let draft = d["drafts"][0].clone();
    assert_eq!(draft["status"], "pending", "{d}");
    assert_eq!(draft["usage"]["prompt_tokens"], 42);
    // Approval sends it to the visitor as the assistant.
    let did = draft["id"].as_str().unwrap();
    let (s, v) = app
        .post(
            &format!("/admin/v1/conversations/{conv}/drafts/{did}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    wait_signal(&app, &conv, "webchat.reply.sent", Duration::from_secs(10)).await;
    let (_, c) = app.get(&format!("/admin/v1/conversations/{conv}")).await;
    let m = c["messages"].as_array().unwrap();
    assert!(
        m.iter()
            .any(|m| m["role"] == "assistant" && m["content"] == "Your order ships tomorrow."),
        "{c}"
    );
    // A second approval is refused.
    let (s, _) = app
        .post(
            &format!("/admin/v1/conversations/{conv}/drafts/{did}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
}

async fn llm_timeout_retries_then_fails(backend: Backend) {
    let app = spawn(backend, false).await;
    let llm = Recorder::start().await;
    let path = "/v1/chat/completions";
    llm.slow(path, Duration::from_secs(3));
    destination(
        &app,
        json!({ "name": "llm", "kind": "llm", "base_url": llm.url, "model": "slow", "timeout_ms": 300 }),
    )
    .await;
    let site = site(&app).await;
    let token = visitor(&app, site["public_key"].as_str().unwrap()).await;
    let conv = say(&app, &token, "Hello?").await;
    let entries = wait_signal(&app, &conv, "directive.failed", Duration::from_secs(30)).await;
    let d = directives_of(&entries, "webchat.reply_generate");
    let id = d[0]["id"].as_str().unwrap();
    let v = app
        .wait_for_status(id, &["failed"], Duration::from_secs(5))
        .await;
    assert_eq!(v["attempts"], 3, "{v}");
    let err = v["last_error"].as_str().unwrap();
    assert!(err.contains("timed out"), "{err}");
}

/// The visitor asks `question`; once a reply draft is generated, returns
/// the conversation and its drafts as the admin API lists them.
async fn drafted(app: &TestApp, token: &str, question: &str) -> (String, Value) {
    let conv = say(app, token, question).await;
    wait_signal(
        app,
        &conv,
        "webchat.reply.generated",
        Duration::from_secs(10),
    )
    .await;
    let (_, d) = app
        .get(&format!("/admin/v1/conversations/{conv}/drafts"))
        .await;
    (conv, d)
}

async fn faq_drafts_paraphrases_and_nothing_for_unrelated(backend: Backend) {
    let app = spawn(backend, true).await;
    let site = site(&app).await;
    let key = site["public_key"].as_str().unwrap().to_owned();
    let token = visitor(&app, &key).await;
    let (_, d) = drafted(&app, &token, "when are you open on mondays?").await;
    assert_eq!(d["drafts"].as_array().unwrap().len(), 1, "{d}");
    assert!(
        d["drafts"][0]["content"].as_str().unwrap().contains("9:00"),
        "{d}"
    );
    assert_eq!(d["drafts"][0]["source"], "faq");

    let other = visitor(&app, &key).await;
    let conv2 = say(&app, &other, "what is the capital of France?").await;
    let entries = wait_signal(&app, &conv2, "directive.succeeded", Duration::from_secs(10)).await;
    assert!(signals_of(&entries, "webchat.reply.generated").is_empty());
    let (_, d) = app
        .get(&format!("/admin/v1/conversations/{conv2}/drafts"))
        .await;
    assert_eq!(d["drafts"].as_array().unwrap().len(), 0, "{d}");
}

async fn a_discarded_draft_is_never_sent(backend: Backend) {
    let app = spawn(backend, true).await;
    let site = site(&app).await;
    let token = visitor(&app, site["public_key"].as_str().unwrap()).await;
    let (conv, d) = drafted(&app, &token, "when are you open on mondays?").await;
    let did = d["drafts"][0]["id"].as_str().unwrap().to_owned();
    let discard = format!("/admin/v1/conversations/{conv}/drafts/{did}/discard");

    let (s, v) = app.post(&discard, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["draft"]["status"], "discarded", "{v}");
    let (_, d) = app
        .get(&format!("/admin/v1/conversations/{conv}/drafts"))
        .await;
    assert_eq!(d["drafts"][0]["status"], "discarded", "{d}");

    // Neither approved afterwards nor discarded twice; unknown drafts are 404.
    let (s, v) = app
        .post(
            &format!("/admin/v1/conversations/{conv}/drafts/{did}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v) = app.post(&discard, json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "invalid_state", "{v}");
    let (s, _) = app
        .post(
            &format!("/admin/v1/conversations/{conv}/drafts/nope/discard"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The timeline says who discarded it (the token's id, never the token),
    // and nothing was sent.
    let entries = timeline(&app, &conv).await;
    let discarded = signals_of(&entries, "webchat.draft.discarded");
    assert_eq!(discarded.len(), 1, "{entries:?}");
    assert_eq!(discarded[0]["payload"]["draft_id"], did.as_str());
    let by = discarded[0]["payload"]["discarded_by"].as_str().unwrap();
    assert!(by.starts_with("tok_"), "{by}");
    assert!(
        !serde_json::to_string(&entries)
            .unwrap()
            .contains(&app.tenant.token)
    );
    assert!(directives_of(&entries, "webchat.reply_send").is_empty());
    let (_, c) = app.get(&format!("/admin/v1/conversations/{conv}")).await;
    assert!(
        !c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["role"] == "assistant"),
        "{c}"
    );
}

async fn operator_reply_is_a_directive_on_the_timeline(backend: Backend) {
    let app = spawn(backend, false).await;
    let site = site(&app).await;
    let token = visitor(&app, site["public_key"].as_str().unwrap()).await;
    let conv = say(&app, &token, "hi there").await;
    // Without a Mattermost destination the defaults skip, not fail.
    let entries = timeline(&app, &conv).await;
    assert!(directives_of(&entries, "webchat.escalate_to_mattermost").is_empty());
    let (s, v) = app
        .post(
            &format!("/admin/v1/conversations/{conv}/reply"),
            json!({ "content": "Hello from the team" }),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let entries = wait_signal(&app, &conv, "webchat.reply.sent", Duration::from_secs(10)).await;
    let sent = signals_of(&entries, "webchat.reply.sent")[0];
    assert_eq!(sent["payload"]["author"]["kind"], "operator", "{sent}");
    assert_eq!(directives_of(&entries, "webchat.reply_send").len(), 1);
}

both_backends!(
    first_message_posts_once_with_deep_link,
    a_destination_created_after_a_miss_is_used_at_once,
    retries_503_then_notifies,
    mattermost_404_fails_visibly,
    rest_mode_threads_follow_ups,
    rest_mode_retries_carry_one_pending_post_id,
    rest_mode_shows_no_duplicate_post_after_a_crash,
    llm_draft_is_stored_and_approval_sends_it,
    llm_timeout_retries_then_fails,
    faq_drafts_paraphrases_and_nothing_for_unrelated,
    a_discarded_draft_is_never_sent,
    operator_reply_is_a_directive_on_the_timeline,
);

//! Typed directive arguments, end to end: arguments that do not fit their
//! kind are refused when the directive is created (422 naming the field,
//! nothing written), a rule whose arguments do not fit is an error on the
//! timeline, and `workflows check` reports it with file:line:col.

use std::time::Duration;

use axum::http::StatusCode;
use fleetprompt_system_tests::{
    Backend, Server, TestApp, TestDb, binary, both_backends, create_tenant, http_client,
};
use serde_json::{Value, json};

both_backends!(
    bad_arguments_are_refused_naming_the_field,
    a_rule_whose_arguments_do_not_fit_is_an_error_on_the_timeline,
    closing_a_missing_conversation_by_subject_fails_once,
);

const RULES: &str = r#"
[[rule]]
id = "hook-without-destination"
on = "order.created"

[[rule.directive]]
kind = "webhook.post"
dedupe_key = "hook:{{ signal.id }}"
args = { body = { order = "{{ signal.payload.order_id }}" } }
"#;

/// A directive request's refusal: its status, code and message.
async fn refused(app: &TestApp, kind: &str, args: Value) -> (StatusCode, String, String) {
    let (s, v) = app
        .post(
            "/admin/v1/directives",
            json!({ "kind": kind, "args": args, "dedupe_key": format!("bad-{kind}") }),
        )
        .await;
    (
        s,
        v["error"]["code"].as_str().unwrap_or_default().to_owned(),
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

async fn bad_arguments_are_refused_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conv = fleetprompt_webchat::types::id::ConversationId::new();
    let cases = [
        (
            "webhook.post",
            json!({ "body": {} }),
            "args.destination: missing field",
        ),
        (
            "webhook.post",
            json!({ "destination": 7 }),
            "args.destination: invalid type: integer `7`",
        ),
        (
            "webchat.reply_send",
            json!({ "conversation_id": conv }),
            "args.content: missing field",
        ),
        (
            "webchat.reply_send",
            json!({ "conversation_id": conv, "content": "hi", "role": "robot" }),
            "args.role: unknown variant `robot`",
        ),
        (
            "webchat.conversation.close",
            json!({ "conversation_id": "conv_nope" }),
            "args.conversation_id: ",
        ),
        (
            "email.send",
            json!({ "subject": "s", "to": 5 }),
            "args.to: must be an address or a list of addresses",
        ),
        (
            "email.send",
            json!({ "to": "a@b.c" }),
            "args.subject: missing field",
        ),
    ];
    for (kind, args, message) in cases {
        let (s, code, m) = refused(&app, kind, args.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{kind} {args}: {m}");
        assert_eq!(code, "validation_failed", "{kind} {args}: {m}");
        assert!(m.starts_with(message), "{kind} {args}: {m:?}");
    }
    // Nothing was written: no directive, no job.
    let written = app
        .db
        .scalar("SELECT COUNT(*) FROM directives")
        .await
        .unwrap();
    assert_eq!(written, 0);
    // Arguments that fit are taken, extra keys and all.
    let (s, v) = app
        .post(
            "/admin/v1/directives",
            json!({ "kind": "noop", "args": { "anything": [1, 2] }, "dedupe_key": "fits" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

async fn a_rule_whose_arguments_do_not_fit_is_an_error_on_the_timeline(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let dir = db.dir.join("workflows");
    std::fs::create_dir_all(dir.join("tenants/acme")).unwrap();
    std::fs::write(dir.join("tenants/acme/rules.toml"), RULES).unwrap();
    let tenant = create_tenant(&db, "acme").await.unwrap();
    let server = Server::start(
        &db,
        "server",
        &["--workflows", dir.to_str().unwrap(), "--demo", "false"],
    )
    .await
    .unwrap();
    let app = TestApp {
        db,
        server,
        tenant,
        http: http_client(),
    };
    let (s, v) = app
        .post(
            "/admin/v1/signals",
            json!({ "type": "order.created", "subject": "order:1",
                    "payload": { "order_id": "o-1" }, "dedupe_key": "o1" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, t) = app.get("/admin/v1/timeline?subject=order:1").await;
    let rules: Vec<&Value> = t["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["entry"] == "rule")
        .collect();
    assert_eq!(rules.len(), 1, "{t}");
    assert_eq!(rules[0]["outcome"], "error", "{t}");
    let detail = rules[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("hook-without-destination")
            && detail.contains("webhook.post")
            && detail.contains("args.destination: missing field"),
        "{detail}"
    );
    let written = app
        .db
        .scalar("SELECT COUNT(*) FROM directives")
        .await
        .unwrap();
    assert_eq!(written, 0, "{t}");
}

/// No arguments at all: the conversation is the subject's, and one that
/// does not exist fails the first attempt instead of being retried.
async fn closing_a_missing_conversation_by_subject_fails_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let missing = fleetprompt_webchat::types::id::ConversationId::new();
    let (s, v) = app
        .post(
            "/admin/v1/directives",
            json!({
                "kind": "webchat.conversation.close",
                "subject": format!("conversation:{missing}"),
                "dedupe_key": "close-by-subject",
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let d = app
        .wait_for_status(&id, &["failed", "succeeded"], Duration::from_secs(10))
        .await;
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["attempts"], 1, "{d}");
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("conversation does not exist"),
        "{d}"
    );
}

#[tokio::test]
async fn workflows_check_reports_arguments_that_do_not_fit_with_their_position() {
    let dir = std::env::temp_dir().join(format!("fp-args-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap().to_owned();
    let check = || async {
        tokio::process::Command::new(binary())
            .args(["workflows", "check", d.as_str()])
            .output()
            .await
            .unwrap()
    };
    std::fs::write(dir.join("hooks.toml"), RULES).unwrap();
    let bad = check().await;
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    // Line 9, at the `args` table that lacks the field.
    assert!(
        err.contains("hooks.toml:9:8")
            && err.contains("directive `webhook.post`: args.destination: missing field"),
        "{err}"
    );
    // A value of the wrong type is shown where it is written; a template's
    // value is only known when it renders, so it is not judged here.
    std::fs::write(
        dir.join("hooks.toml"),
        RULES
            .replace(
                "args = { body",
                "destination = \"h\"\nargs = { follow_up = \"{{ signal.id }}\", body",
            )
            .replace(
                "kind = \"webhook.post\"",
                "kind = \"webchat.escalate_to_mattermost\"",
            ),
    )
    .unwrap();
    let templated = check().await;
    assert!(
        templated.status.success(),
        "{}",
        String::from_utf8_lossy(&templated.stderr)
    );
    std::fs::write(
        dir.join("hooks.toml"),
        RULES
            .replace(
                "args = { body",
                "destination = \"h\"\nargs = { follow_up = \"yes\", body",
            )
            .replace(
                "kind = \"webhook.post\"",
                "kind = \"webchat.escalate_to_mattermost\"",
            ),
    )
    .unwrap();
    let wrong = check().await;
    assert_eq!(wrong.status.code(), Some(1));
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        err.contains("hooks.toml:10:22") && err.contains("args.follow_up: invalid type"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

//! Email escalation both ways, end to end, with the shipped
//! `workflows/website_chat.toml` rules (their delay shortened): an `email`
//! destination names the Edge Connector and the team; the real
//! `fleetprompt-edge` sends through a real SMTP server on loopback
//! ([`SmtpSink`]) and watches a real IMAP server ([`Dovecot`], Debian's
//! dovecot-imapd with a CA-flagged self-signed certificate like Proton Mail
//! Bridge's) for replies, which reach the visitor's widget.

use std::time::Duration;

use axum::http::StatusCode;
use fleetprompt_system_tests::webchat::{
    ORIGIN, SHIPPED_RULES, directives_of, replay, signals_of, site_with, spawn_with_rules,
    timeline, visitor, wait_signal, wait_until,
};
use fleetprompt_system_tests::{
    Backend, Dovecot, Edge, Server, SmtpSink, TestApp, both_backends, cli, create_tenant,
};
use serde_json::{Value, json};

both_backends!(
    email_destinations_name_a_connector_of_the_tenant_and_real_addresses,
    the_shipped_rule_emails_once_and_the_teams_reply_reaches_the_visitor,
    an_operator_reply_during_the_delay_cancels_the_email,
    a_refused_email_fails_the_escalation_and_shows_on_the_connector,
    a_destinations_email_goes_only_to_its_connector,
);

const PUBLIC: &str = "https://fleet.example.com";
const TEAM: &str = "team@example.com";

/// A server running the shipped defaults, the email rule's delay cut to `delay`.
async fn spawn(backend: Backend, delay: &str) -> TestApp {
    spawn_with_rules(backend, &["--public-url", PUBLIC], |dir| {
        let shipped = std::fs::read_to_string(SHIPPED_RULES).unwrap();
        let rule = "delay = \"10m\"\ncancel_on = [\"webchat.reply.sent\"";
        assert!(
            shipped.contains(rule),
            "the email rule's delay moved: {shipped}"
        );
        std::fs::write(
            dir.join("website_chat.toml"),
            shipped.replace(
                rule,
                &format!("delay = \"{delay}\"\ncancel_on = [\"webchat.reply.sent\""),
            ),
        )
        .unwrap();
    })
    .await
}

async fn connector(app: &TestApp, name: &str) -> (String, String) {
    let v = app.edge_connector_as(&app.tenant.token, name).await;
    (
        v["id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

/// A destination made from `body`.
async fn destination(app: &TestApp, body: Value) {
    let (s, v) = app.post("/admin/v1/destinations", body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// The `email` destination the shipped rule uses: to the team, through
/// connector `connector_id`.
async fn email_to_team(app: &TestApp, connector_id: &str) {
    destination(
        app,
        json!({ "name": "email", "kind": "email", "connector": connector_id, "to": [TEAM] }),
    )
    .await;
}

/// The connector as the listing shows it.
async fn listed_connector(app: &TestApp, connector_id: &str) -> Value {
    let (_, v) = app.get("/admin/v1/edge-connectors").await;
    v["edge_connectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == connector_id)
        .unwrap()
        .clone()
}

/// The real connector, sending through `sink` and watching `dovecot`.
fn edge_on(app: &TestApp, token: &str, sink: &SmtpSink, dovecot: &Dovecot) -> Edge {
    Edge::start(
        &app.db.dir,
        &app.server,
        token,
        sink,
        &dovecot
            .edge_flags()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .unwrap()
}

/// A site whose notifications may show the visitor's name.
async fn notifying_site(app: &TestApp) -> Value {
    site_with(
        app,
        json!({ "domains": ["shop.example.com"], "mode": "native", "settings": { "notify_contact": true } }),
    )
    .await
}

async fn widget(app: &TestApp, token: &str, path: &str, body: Value) -> Value {
    let r = app
        .http
        .post(format!("{}{path}", app.server.url))
        .header("origin", ORIGIN)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

/// A visitor says something, then leaves their name and address (which
/// starts the shipped rule's delay). Returns the conversation.
async fn visitor_waits(app: &TestApp, token: &str) -> String {
    let v = widget(
        app,
        token,
        "/v1/widget/messages",
        json!({ "client_message_id": uuid::Uuid::now_v7().to_string(), "content": "Where is my order #123?" }),
    )
    .await;
    let conv = v["conversation_id"].as_str().unwrap().to_owned();
    widget(
        app,
        token,
        "/v1/widget/contact",
        json!({ "email": "ana@visitor.example", "name": "Ana" }),
    )
    .await;
    conv
}

/// A new visitor on `site` who waits; returns the conversation.
async fn new_visitor_waits(app: &TestApp, site: &Value) -> String {
    visitor_waits(
        app,
        &visitor(app, site["public_key"].as_str().unwrap()).await,
    )
    .await
}

async fn agent_messages(app: &TestApp, conv: &str) -> Vec<String> {
    let (_, c) = app.get(&format!("/admin/v1/conversations/{conv}")).await;
    c["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "agent")
        .filter_map(|m| m["content"].as_str().map(str::to_owned))
        .collect()
}

/// Waits for the first agent messages in the conversation.
async fn wait_agent_messages(app: &TestApp, conv: &str, what: &str) -> Vec<String> {
    wait_until(what, Duration::from_secs(30), async || {
        let m = agent_messages(app, conv).await;
        (!m.is_empty()).then_some(m)
    })
    .await
}

/// The team's reply (`message_id`) to the email `in_reply_to`.
fn team_reply(message_id: &str, in_reply_to: &str, words: &str) -> String {
    reply_email(&format!("Team <{TEAM}>"), message_id, in_reply_to, words)
}

fn reply_email(from: &str, message_id: &str, in_reply_to: &str, words: &str) -> String {
    format!(
        "From: {from}\r\nTo: Acme Support <support@acme.example>\r\nSubject: Re: [FleetPrompt] Conversation with Ana\r\n\
         Message-ID: <{message_id}>\r\nIn-Reply-To: {in_reply_to}\r\nReferences: {in_reply_to}\r\n\
         Date: Tue, 1 Dec 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         {words}\r\n\r\n-- \r\nThe Acme team\r\n\r\nOn Tue, 1 Dec 2026, Acme Support <support@acme.example> wrote:\r\n\
         > A visitor on https://shop.example.com is waiting for an answer in the chat.\r\n"
    )
}

async fn email_destinations_name_a_connector_of_the_tenant_and_real_addresses(backend: Backend) {
    let app = spawn(backend, "10m").await;
    let (id, _) = connector(&app, "bridge-host").await;
    let other = create_tenant(&app.db, "other").await.unwrap();
    let v = app.edge_connector_as(&other.token, "theirs").await;
    let theirs = v["id"].as_str().unwrap().to_owned();

    for (body, field) in [
        (
            json!({ "name": "email", "kind": "email", "connector": theirs, "to": [TEAM] }),
            "connector",
        ),
        (
            json!({ "name": "email", "kind": "email", "connector": "nope", "to": [TEAM] }),
            "connector",
        ),
        (
            json!({ "name": "email", "kind": "email", "connector": id, "to": ["not an address"] }),
            "to",
        ),
        (
            json!({ "name": "email", "kind": "email", "connector": id, "to": [] }),
            "to",
        ),
        (
            json!({ "name": "email", "kind": "email", "connector": id, "to": [TEAM], "from": "Acme <nope>" }),
            "from",
        ),
    ] {
        let (s, v) = app.post("/admin/v1/destinations", body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{body}: {v}"
        );
    }
    // By name or by id; shown with the connector's name.
    let (s, v) = app
        .post(
            "/admin/v1/destinations",
            json!({ "name": "email", "kind": "email", "connector": "bridge-host", "to": [TEAM], "from": "Acme Desk <desk@acme.example>" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["config"]["connector_id"], id.as_str(), "{v}");
    assert_eq!(v["config"]["connector"], "bridge-host", "{v}");
    assert_eq!(v["config"]["to"], json!([TEAM]), "{v}");
    assert_eq!(v["config"]["from"], "Acme Desk <desk@acme.example>", "{v}");
}

async fn the_shipped_rule_emails_once_and_the_teams_reply_reaches_the_visitor(backend: Backend) {
    let app = spawn(backend, "1s").await;
    let (connector_id, token) = connector(&app, "bridge-host").await;
    let site = notifying_site(&app).await;
    let visitor_token = visitor(&app, site["public_key"].as_str().unwrap()).await;

    // Without an `email` destination the rule stays quiet: skipped, with a note.
    let quiet = new_visitor_waits(&app, &site).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let entries = timeline(&app, &quiet).await;
    assert!(
        directives_of(&entries, "webchat.escalate_to_email").is_empty(),
        "{entries:?}"
    );

    email_to_team(&app, &connector_id).await;
    let sink = SmtpSink::start().await;
    let dovecot = Dovecot::start().await;
    let mut edge = edge_on(&app, &token, &sink, &dovecot);

    let conv = visitor_waits(&app, &visitor_token).await;
    sink.wait_for_replies(1, Duration::from_secs(30)).await;
    let mails = sink.accepted();
    assert_eq!(mails.len(), 1, "{}", edge.logs());
    let mail = &mails[0];
    assert_eq!(mail.to, [format!("<{TEAM}>")]);
    let tag = &conv[conv.len() - 4..];
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some(format!("[FleetPrompt] Conversation with Ana (#{tag})").as_str())
    );
    let message_id = mail.header("Message-ID").unwrap();
    assert!(message_id.starts_with("<dir_"), "{message_id}");
    assert_eq!(
        mail.header("Reply-To").as_deref(),
        Some("\"Acme Support\" <support@acme.example>")
    );
    let thread = format!("<{conv}@edge.fleetprompt>");
    assert_eq!(mail.header("References").as_deref(), Some(thread.as_str()));
    assert!(mail.data.contains("multipart/alternative"), "{}", mail.data);
    let body = mail.body_text();
    for want in [
        "Where is my order #123?",
        "Ana <ana@visitor.example>",
        &format!("{PUBLIC}/console/conversations/{conv}"),
    ] {
        assert!(body.contains(want), "{want:?} not in {body}");
    }

    // The signals say what happened, in order, with the SMTP reply.
    let entries = wait_signal(
        &app,
        &conv,
        "webchat.escalation.notified",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(signals_of(&entries, "email.outbound.requested").len(), 1);
    let sent = signals_of(&entries, "email.outbound.sent");
    assert_eq!(sent.len(), 1, "{entries:?}");
    let sent = sent[0].to_string();
    assert!(sent.contains("250 2.0.0 queued"), "{sent}");
    assert!(
        sent.contains(&message_id[1..message_id.len() - 1]),
        "{sent}"
    );
    assert!(signals_of(&entries, "webchat.escalation.failed").is_empty());

    // The team answers by email: the visitor sees it in the widget, without
    // the quote or the signature.
    dovecot.deliver(&team_reply(
        "r1@example.com",
        &message_id,
        "Your order ships tomorrow.",
    ));
    let got = wait_agent_messages(&app, &conv, "the reply in the conversation").await;
    assert_eq!(got, ["Your order ships tomorrow."], "{}", edge.logs());
    let r = app
        .http
        .get(format!("{}/v1/widget/messages", app.server.url))
        .header("origin", ORIGIN)
        .bearer_auth(&visitor_token)
        .send()
        .await
        .unwrap();
    let history: Value = r.json().await.unwrap();
    assert!(
        history["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["role"] == "agent" && m["content"] == "Your order ships tomorrow."),
        "{history}"
    );

    // A stranger's reply is recorded, not sent; the same reply seen twice
    // (a second copy in the mailbox) makes one message.
    dovecot.deliver(&reply_email(
        "Mallory <mallory@elsewhere.example>",
        "r2@elsewhere.example",
        &message_id,
        "Click my link.",
    ));
    dovecot.deliver(&team_reply(
        "r1@example.com",
        &message_id,
        "Your order ships tomorrow.",
    ));
    // A reply with no words of its own (only the quote) is recorded, not sent.
    dovecot.deliver(&team_reply("r3@example.com", &message_id, ""));
    // Unrelated mail is left alone.
    dovecot.deliver(
        "From: news@shop.example\r\nMessage-ID: <n1@shop.example>\r\nSubject: News\r\n\r\nHello\r\n",
    );
    wait_until(
        "four inbound emails recorded or deduped",
        Duration::from_secs(30),
        async || {
            let (seen, _) = dovecot.seen_counts();
            (seen >= 4).then_some(())
        },
    )
    .await;
    let entries = timeline(&app, &conv).await;
    let received = signals_of(&entries, "email.inbound.received");
    assert_eq!(received.len(), 3, "{received:?}");
    let stranger = received
        .iter()
        .find(|s| s.to_string().contains("mallory@elsewhere.example"))
        .expect("the stranger's reply is recorded");
    assert!(
        stranger.to_string().contains("\"known_sender\":false"),
        "{stranger}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        agent_messages(&app, &conv).await,
        ["Your order ships tomorrow."]
    );
    // Processed mail is marked seen, never deleted; other mail stays unread.
    assert_eq!(dovecot.seen_counts(), (4, 1), "{}", dovecot.logs());
    let metrics = app.metrics().await;
    for want in [
        "fleetprompt_edge_inbound_emails_total{outcome=\"matched\"} 2",
        "fleetprompt_edge_inbound_emails_total{outcome=\"stranger\"} 1",
        "fleetprompt_edge_inbound_emails_total{outcome=\"duplicate\"} 1",
        "fleetprompt_edge_tasks_total{event=\"sent\"} 1",
    ] {
        assert!(metrics.contains(want), "{want} not in\n{metrics}");
    }

    // Replaying the conversation's signals creates no second email task.
    let out = replay(&app, &["--subject", &format!("conversation:{conv}")]).await;
    assert!(out.contains("\"directives_created\":0"), "{out}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.accepted().len(), 1);
    let entries = timeline(&app, &conv).await;
    assert_eq!(directives_of(&entries, "email.send").len(), 1);

    // The connector's listing shows its version and last contact.
    let c = listed_connector(&app, &connector_id).await;
    assert!(c["last_seen_at"].is_string(), "{c}");
    assert!(c["version"].is_string(), "{c}");
    assert!(c["last_error"].is_null(), "{c}");
    let status = edge.stop().await.unwrap();
    assert!(status.success(), "{status}\n{}", edge.logs());
    assert!(!edge.logs().contains("correct horse battery"));
}

async fn an_operator_reply_during_the_delay_cancels_the_email(backend: Backend) {
    let app = spawn(backend, "3s").await;
    let (connector_id, token) = connector(&app, "bridge-host").await;
    email_to_team(&app, &connector_id).await;
    let sink = SmtpSink::start().await;
    let mut edge = Edge::start(&app.db.dir, &app.server, &token, &sink, &[]).unwrap();
    let site = notifying_site(&app).await;
    let visitor_token = visitor(&app, site["public_key"].as_str().unwrap()).await;
    let conv = visitor_waits(&app, &visitor_token).await;
    let (s, v) = app
        .post(
            &format!("/admin/v1/conversations/{conv}/reply"),
            json!({ "content": "Hi Ana, looking now." }),
        )
        .await;
    assert!(s.is_success(), "{v}");
    let escalation = wait_until(
        "the escalation cancelled",
        Duration::from_secs(15),
        async || {
            let e = timeline(&app, &conv).await;
            directives_of(&e, "webchat.escalate_to_email")
                .first()
                .filter(|d| d["status"] == "cancelled")
                .map(|d| (*d).clone())
        },
    )
    .await;
    assert_eq!(
        escalation["dedupe_key"],
        format!("webchat_email_escalation:acme:{conv}:email").as_str(),
        "{escalation}"
    );
    // Past the delay, no email went out.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(sink.accepted().is_empty());
    assert!(directives_of(&timeline(&app, &conv).await, "email.send").is_empty());
    edge.stop().await.unwrap();
}

async fn a_refused_email_fails_the_escalation_and_shows_on_the_connector(backend: Backend) {
    let app = spawn(backend, "1s").await;
    let (connector_id, token) = connector(&app, "bridge-host").await;
    email_to_team(&app, &connector_id).await;
    let sink = SmtpSink::start().await;
    sink.script([554]);
    let mut edge = Edge::start(&app.db.dir, &app.server, &token, &sink, &[]).unwrap();
    let site = notifying_site(&app).await;
    let conv = new_visitor_waits(&app, &site).await;
    let entries = wait_signal(
        &app,
        &conv,
        "webchat.escalation.failed",
        Duration::from_secs(30),
    )
    .await;
    let failed = signals_of(&entries, "email.outbound.failed");
    assert_eq!(failed.len(), 1, "{entries:?}");
    assert!(failed[0].to_string().contains("554"), "{}", failed[0]);
    assert!(signals_of(&entries, "webchat.escalation.notified").is_empty());
    assert!(signals_of(&entries, "email.outbound.sent").is_empty());
    let c = listed_connector(&app, &connector_id).await;
    assert!(
        c["last_error"].as_str().unwrap_or("").contains("554"),
        "{c}"
    );
    assert!(c["last_error_at"].is_string(), "{c}");
    let out = cli(&app.db, &["edge-connector", "list", "--tenant", "acme"])
        .await
        .unwrap();
    assert!(out.contains("last error") && out.contains("554"), "{out}");
    assert!(out.contains("version 0."), "{out}");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("fleetprompt_edge_tasks_total{event=\"failed\"} 1"),
        "{metrics}"
    );
    edge.stop().await.unwrap();
}

async fn a_destinations_email_goes_only_to_its_connector(backend: Backend) {
    let app = spawn(backend, "1s").await;
    let (chosen, chosen_token) = connector(&app, "bridge-host").await;
    let (_, other_token) = connector(&app, "spare-host").await;
    destination(
        &app,
        json!({ "name": "email", "kind": "email", "connector": chosen, "to": [TEAM], "from": "Acme Desk <desk@acme.example>" }),
    )
    .await;
    let site = notifying_site(&app).await;
    let conv = new_visitor_waits(&app, &site).await;
    wait_until("the email task", Duration::from_secs(15), async || {
        let e = timeline(&app, &conv).await;
        (!directives_of(&e, "email.send").is_empty()).then_some(())
    })
    .await;
    let claim = |token: String| {
        let app = &app;
        async move {
            app.request_as(
                &token,
                reqwest::Method::POST,
                "/edge/v1/tasks/claim",
                Some(json!({ "kinds": ["email.send"], "wait_ms": 500 })),
            )
            .await
        }
    };
    let (s, v) = claim(other_token).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["tasks"], json!([]), "another connector took it: {v}");
    let (s, v) = claim(chosen_token).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let task = &v["tasks"][0];
    assert_eq!(task["args"]["connector_id"], chosen.as_str(), "{v}");
    assert_eq!(task["args"]["to"], json!([TEAM]), "{v}");
    assert_eq!(task["args"]["from"], "Acme Desk <desk@acme.example>", "{v}");
    assert_eq!(task["args"]["thread_id"], conv.as_str(), "{v}");
    assert!(
        task["args"]["html"].as_str().unwrap().contains("<html>"),
        "{v}"
    );
}

/// The reply watch trusts exactly the pinned certificate: pinned to another
/// one, it refuses the server, naming both fingerprints, and reads nothing.
#[tokio::test]
async fn the_reply_watch_refuses_a_certificate_it_was_not_given() {
    let app = spawn(Backend::Sqlite, "10m").await;
    let (_, token) = connector(&app, "bridge-host").await;
    let sink = SmtpSink::start().await;
    let dovecot = Dovecot::start().await;
    let other = Dovecot::start().await;
    let mut flags = dovecot.edge_flags();
    let ca = flags.iter().position(|f| f == "--imap-ca-file").unwrap();
    flags[ca + 1] = other.cert_path.display().to_string();
    let mut edge = Edge::start(
        &app.db.dir,
        &app.server,
        &token,
        &sink,
        &flags.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap();
    dovecot.deliver(&team_reply(
        "r9@example.com",
        "<dir_0193a1b2c3d4e5f60718293a4b5c6d7e@edge.fleetprompt>",
        "hello",
    ));
    let logs = wait_until(
        "the refusal in the log",
        Duration::from_secs(20),
        async || {
            let l = edge.logs();
            l.contains("not the pinned").then_some(l)
        },
    )
    .await;
    assert!(logs.contains("SHA-256 fingerprint"), "{logs}");
    assert!(
        !dovecot.logs().contains("Login: user=<team>"),
        "{}",
        dovecot.logs()
    );
    assert_eq!(dovecot.seen_counts(), (0, 1));
    edge.stop().await.unwrap();
}

/// A server without IDLE is polled: the reply still reaches the visitor.
#[tokio::test]
async fn replies_are_found_by_polling_when_the_server_has_no_idle() {
    let app = spawn(Backend::Sqlite, "1s").await;
    let (connector_id, token) = connector(&app, "bridge-host").await;
    email_to_team(&app, &connector_id).await;
    let sink = SmtpSink::start().await;
    let dovecot = Dovecot::start_with("imap_capability = IMAP4rev1 LITERAL+ SASL-IR ENABLE").await;
    let mut edge = edge_on(&app, &token, &sink, &dovecot);
    let site = notifying_site(&app).await;
    let conv = new_visitor_waits(&app, &site).await;
    sink.wait_for_replies(1, Duration::from_secs(30)).await;
    let message_id = sink.accepted()[0].header("Message-ID").unwrap();
    dovecot.deliver(&team_reply(
        "p1@example.com",
        &message_id,
        "Polled, and answered.",
    ));
    let got = wait_agent_messages(&app, &conv, "the polled reply in the conversation").await;
    assert_eq!(got, ["Polled, and answered."]);
    // Without colours: the log is a file, but the formatter colours anyway.
    let mut plain = String::new();
    let mut in_escape = false;
    for c in edge.logs().chars() {
        match (in_escape, c) {
            (false, '\u{1b}') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, c) => plain.push(c),
        }
    }
    assert!(plain.contains("idle=false"), "{plain}");
    edge.stop().await.unwrap();
}

/// A reply found while the server is away stays unseen in the mailbox and
/// is reported once the server is back: nothing the team wrote is lost.
/// (The server comes back on a new port, so the connector is restarted
/// pointing at it; what matters is that the failed report left the mail
/// unseen for the next look.)
#[tokio::test]
async fn a_reply_found_while_the_server_is_away_arrives_when_it_is_back() {
    let mut app = spawn(Backend::Sqlite, "1s").await;
    let (connector_id, token) = connector(&app, "bridge-host").await;
    email_to_team(&app, &connector_id).await;
    let sink = SmtpSink::start().await;
    let dovecot = Dovecot::start().await;
    let mut edge = edge_on(&app, &token, &sink, &dovecot);
    let site = notifying_site(&app).await;
    let conv = new_visitor_waits(&app, &site).await;
    sink.wait_for_replies(1, Duration::from_secs(30)).await;
    let message_id = sink.accepted()[0].header("Message-ID").unwrap();
    wait_signal(&app, &conv, "email.outbound.sent", Duration::from_secs(15)).await;

    app.server.kill9().await;
    dovecot.deliver(&team_reply(
        "away1@example.com",
        &message_id,
        "Sent while you were away.",
    ));
    wait_until(
        "a failed report in the log",
        Duration::from_secs(20),
        async || {
            edge.logs()
                .contains("could not report the reply")
                .then_some(())
        },
    )
    .await;
    assert_eq!(dovecot.seen_counts(), (0, 1), "left unseen");

    let wf = app.db.dir.join("workflows");
    app.server = Server::start(
        &app.db,
        "back",
        &["--workflows", wf.to_str().unwrap(), "--public-url", PUBLIC],
    )
    .await
    .unwrap();
    edge.stop().await.unwrap();
    let mut edge = edge_on(&app, &token, &sink, &dovecot);
    let got = wait_agent_messages(&app, &conv, "the reply after the restart").await;
    assert_eq!(got, ["Sent while you were away."], "{}", edge.logs());
    wait_until(
        "the reply marked seen",
        Duration::from_secs(10),
        async || (dovecot.seen_counts() == (1, 0)).then_some(()),
    )
    .await;
    edge.stop().await.unwrap();
}

/// The server side of `/edge/v1/inbound` on its own: tenant from the
/// connector, references to another tenant's email ignored.
#[tokio::test]
async fn inbound_reports_are_scoped_to_the_connectors_tenant() {
    let app = spawn(Backend::Sqlite, "10m").await;
    let (_, token) = connector(&app, "bridge-host").await;
    let (s, v) = app
        .request_as(
            &token,
            reqwest::Method::POST,
            "/edge/v1/inbound",
            Some(json!({ "message_id": "x@y", "references": ["dir_0193a1b2c3d4e5f60718293a4b5c6d7e"], "from": TEAM, "text": "hi" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["recorded"], false, "{v}");
    let (s, v) = app
        .request_as(
            &token,
            reqwest::Method::POST,
            "/edge/v1/inbound",
            Some(json!({ "message_id": "x@y", "references": [], "from": "not an address", "text": "hi" })),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // An admin token is not a connector token.
    let (s, _) = app
        .request_as(
            &app.tenant.token,
            reqwest::Method::POST,
            "/edge/v1/inbound",
            Some(json!({ "message_id": "x@y", "references": [], "from": TEAM, "text": "hi" })),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

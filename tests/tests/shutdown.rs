//! Prompt shutdown, end to end, on SQLite and PostgreSQL: SIGTERM with 50
//! live widget streams and a directive attempt that will not finish in
//! time. The process exits within its drain deadline, every stream got
//! `event: reconnect`, and no lease is left held: the cut attempt is
//! recorded and its directive is due again at once.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use fleetprompt_system_tests::webchat::{self, ORIGIN};
use fleetprompt_system_tests::{Backend, Recorder, TestApp, both_backends};
use serde_json::json;

const STREAMS: usize = 50;
const GRACE_SECS: u64 = 3;

async fn sigterm_ends_streams_and_releases_leases(backend: Backend) {
    let mut app =
        TestApp::spawn_with(backend, &["--shutdown-grace", &GRACE_SECS.to_string()]).await;

    // A receiver that takes far longer than the grace period.
    let slow = Recorder::start().await;
    slow.slow("/slow", Duration::from_secs(60));
    app.webhook("slow", &format!("{}/slow", slow.url)).await;
    let (s, v) = app
        .post(
            "/admin/v1/directives",
            json!({ "kind": "webhook.post", "args": { "destination": "slow", "body": {} }, "dedupe_key": "slow-1" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&id, &["running"], Duration::from_secs(10))
        .await;

    // 50 visitors, each with a live stream.
    let site = webchat::site(&app).await;
    let key = site["public_key"].as_str().unwrap().to_owned();
    let mut readers = Vec::new();
    for _ in 0..STREAMS {
        let (s, boot) = {
            let r = webchat::bootstrap(&app, &key).await;
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        };
        assert_eq!(s, 200, "{boot}");
        let token = boot["token"].as_str().unwrap().to_owned();
        let mut stream = app
            .http
            .get(format!("{}/v1/widget/stream", app.server.url))
            .header("origin", ORIGIN)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status().as_u16(), 200);
        let mut seen = String::new();
        while !seen.contains("event: ready") {
            let c = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
                .await
                .expect("ready in time")
                .unwrap()
                .expect("stream open");
            seen.push_str(&String::from_utf8_lossy(&c));
        }
        // Read it to its end, whenever that comes.
        readers.push(tokio::spawn(async move {
            loop {
                match tokio::time::timeout(Duration::from_secs(30), stream.chunk()).await {
                    Ok(Ok(Some(c))) => seen.push_str(&String::from_utf8_lossy(&c)),
                    _ => return seen,
                }
            }
        }));
    }

    // SIGTERM: the process exits within the grace period (plus the time to
    // release leases and close the database).
    let start = Instant::now();
    app.server.stop().await.expect("a clean exit");
    let took = start.elapsed();
    println!("exited {took:?} after SIGTERM ({GRACE_SECS} s grace, {STREAMS} streams)");
    assert!(
        took < Duration::from_secs(GRACE_SECS + 3),
        "exit took {took:?} with a {GRACE_SECS} s grace; the log:\n{}",
        app.server.logs()
    );

    for r in readers {
        let seen = r.await.unwrap();
        assert!(
            seen.contains("event: reconnect"),
            "a stream ended without the reconnect event: {seen:?}"
        );
    }

    // No lease is left held: the cut attempt was recorded, and the
    // directive is due again now, for any node.
    let running = app
        .db
        .scalar("SELECT COUNT(*) FROM directives WHERE status = 'running' OR locked_by IS NOT NULL OR lease_until IS NOT NULL")
        .await
        .unwrap();
    assert_eq!(running, 0, "{}", app.server.logs());
    let pending = app
        .db
        .scalar(&format!(
            "SELECT COUNT(*) FROM directives WHERE id = '{id}' AND status = 'pending'"
        ))
        .await
        .unwrap();
    assert_eq!(pending, 1);
    let attempts = app
        .db
        .scalar(&format!(
            "SELECT COUNT(*) FROM directive_attempts WHERE directive_id = '{id}'"
        ))
        .await
        .unwrap();
    assert_eq!(attempts, 1, "the cut attempt is on record");
    let logs = app.server.logs();
    assert!(logs.contains("released the leases"), "{logs}");

    // A new process takes it over and runs it (the receiver answers now).
    slow.slow("/slow", Duration::ZERO);
    app.server = fleetprompt_system_tests::Server::start(&app.db, "second", &[])
        .await
        .unwrap();
    let d = app
        .wait_for_status(&id, &["succeeded"], Duration::from_secs(20))
        .await;
    assert_eq!(d["attempts"], 2, "{d}");
}

both_backends!(sigterm_ends_streams_and_releases_leases);

//! Durability: crashes lose nothing and duplicate nothing the database can
//! see; retries wait in the database; several nodes share one queue.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use fleetprompt_system_tests::{Backend, Recorder, Reply, Server, TestApp, both_backends};
use serde_json::json;

both_backends!(crash_mid_run_loses_nothing, durable_retry_survives_a_crash);

/// Short leases so a killed node's claims come back within seconds.
const FAST_LEASE: &[&str] = &[
    "--lease-secs",
    "3",
    "--handler-timeout-secs",
    "2",
    "--concurrency",
    "8",
];

async fn create_webhooks(app: &TestApp, n: usize, prefix: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let (s, v) = app
            .post(
                "/admin/v1/directives",
                json!({ "kind": "webhook.post", "args": { "destination": "sink", "body": { "n": i } },
                        "dedupe_key": format!("{prefix}-{i}"), "backoff": { "base_ms": 200 } }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    ids
}

async fn crash_mid_run_loses_nothing(backend: Backend) {
    let mut app = TestApp::spawn_with(backend, FAST_LEASE).await;
    let sink = Recorder::start().await;
    sink.slow("/sink", Duration::from_millis(25));
    app.webhook("sink", &format!("{}/sink", sink.url)).await;
    let ids = create_webhooks(&app, 200, "crash").await;

    // Kill -9 once some, but not all, have been delivered.
    sink.wait_for("/sink", 40, Duration::from_secs(30)).await;
    app.server.kill9().await;
    let before_restart = sink.received("/sink").len();
    assert!(
        before_restart < 200,
        "the crash must happen mid-way ({before_restart} delivered)"
    );

    app.server = Server::start(&app.db, "restarted", FAST_LEASE)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = app
            .db
            .scalar("SELECT COUNT(*) FROM directives WHERE status = 'succeeded'")
            .await
            .unwrap();
        if done == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of 200 succeeded after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM directives")
            .await
            .unwrap(),
        200,
        "no directive was created twice"
    );
    let got = sink.received("/sink");
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in &got {
        *per_id
            .entry(r.headers["webhook-id"].to_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for id in &ids {
        assert!(per_id.contains_key(id), "{id} was never delivered");
    }
    assert_eq!(per_id.len(), 200);
    let duplicates = got.len() - 200;
    println!(
        "{backend:?}: {before_restart} delivered before kill -9; {duplicates} at-least-once duplicate deliveries after restart"
    );
    // Only attempts in flight at the kill can repeat: at most the concurrency.
    assert!(
        duplicates <= 8,
        "{duplicates} duplicates exceed the 8 attempts that could have been in flight"
    );
    let lost = app
        .db
        .scalar("SELECT COUNT(*) FROM directive_attempts WHERE outcome = 'lease_expired'")
        .await
        .unwrap();
    assert!(lost as usize <= 8, "{lost} lease-expired attempts");
}

async fn durable_retry_survives_a_crash(backend: Backend) {
    let mut app = TestApp::spawn_with(backend, FAST_LEASE).await;
    let sink = Recorder::start().await;
    sink.script("/sink", [Reply::status(503), Reply::status(200)]);
    app.webhook("sink", &format!("{}/sink", sink.url)).await;
    let (_, v) = app
        .post(
            "/admin/v1/directives",
            json!({ "kind": "webhook.post", "args": { "destination": "sink" }, "dedupe_key": "retry-crash",
                    "backoff": { "base_ms": 1500, "jitter": 0.0 } }),
        )
        .await;
    let id = v["id"].as_str().unwrap();
    let d = app
        .wait_for_status(id, &["pending"], Duration::from_secs(10))
        .await;
    // Wait for the first attempt to be recorded, then crash during the backoff.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut d = d;
    while d["attempts"] != 1 || d["status"] != "pending" {
        assert!(Instant::now() < deadline, "{d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        d = app.get(&format!("/admin/v1/directives/{id}")).await.1;
    }
    app.server.kill9().await;
    app.server = Server::start(&app.db, "restarted", FAST_LEASE)
        .await
        .unwrap();
    let d = app
        .wait_for_status(id, &["succeeded"], Duration::from_secs(15))
        .await;
    assert_eq!(d["attempts"], 2, "{d}");
    let log = d["attempt_log"].as_array().unwrap();
    let first_end = log[0]["finished_at"].as_str().unwrap().to_owned();
    let second_start = log[1]["started_at"].as_str().unwrap().to_owned();
    let got = sink.received("/sink");
    assert_eq!(got.len(), 2);
    let gap = got[1].at.duration_since(got[0].at);
    assert!(
        gap >= Duration::from_millis(1400),
        "the retry kept its schedule across the crash: {first_end} -> {second_start} ({gap:?})"
    );
}

/// kill -9 of one of two PostgreSQL nodes with the default 10 s lease: the
/// directives it held start again on the other node and finish within
/// 15 s (the lease, which the dead node renewed by heartbeat until it died,
/// plus one reaper pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_directives_finish_on_the_other_within_15_s() {
    let flags = &["--concurrency", "8"];
    let mut app = TestApp::spawn_with(Backend::Postgres, flags).await;
    let sink = Recorder::start().await;
    // Slow enough that the first node is still waiting on its 8 requests when it dies.
    sink.slow("/sink", Duration::from_secs(20));
    app.webhook("sink", &format!("{}/sink", sink.url)).await;
    create_webhooks(&app, 12, "takeover").await;
    // The first node holds its 8, mid-request, before the second starts.
    app.db
        .wait_scalar(
            "SELECT COUNT(*) FROM directives WHERE status = 'running'",
            |n| n == 8,
            Duration::from_secs(10),
            "the first node did not claim its 8",
        )
        .await;
    let held = app
        .db
        .strings("SELECT id FROM directives WHERE status = 'running'")
        .await
        .unwrap();
    let mut second = Server::start(&app.db, "second", flags).await.unwrap();
    app.server.kill9().await;
    let killed = Instant::now();
    // The receiver answers at once from now on (the second node's first 4
    // requests still wait out their 20 s).
    sink.slow("/sink", Duration::ZERO);
    let ids = held
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(", ");
    app.db
        .wait_scalar(
            &format!(
                "SELECT COUNT(*) FROM directives WHERE status = 'succeeded' AND id IN ({ids})"
            ),
            |n| n == 8,
            Duration::from_secs(15),
            "the killed node's directives did not finish within 15 s",
        )
        .await;
    println!(
        "the killed node's 8 directives finished {:?} after kill -9",
        killed.elapsed()
    );
    let expired = app
        .db
        .scalar("SELECT COUNT(*) FROM directive_attempts WHERE outcome = 'lease_expired'")
        .await
        .unwrap();
    assert_eq!(expired, 8, "each held directive was reaped once");
    app.db
        .wait_scalar(
            "SELECT COUNT(*) FROM directives WHERE status = 'succeeded'",
            |n| n == 12,
            Duration::from_secs(30),
            "not every directive succeeded",
        )
        .await;
    second.stop().await.unwrap();
}

/// Two nodes on one PostgreSQL database: every directive delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_one_postgres_queue() {
    let flags = &["--concurrency", "16"];
    let app = TestApp::spawn_with(Backend::Postgres, flags).await;
    let mut second = Server::start(&app.db, "second", flags).await.unwrap();
    let sink = Recorder::start().await;
    sink.slow("/sink", Duration::from_millis(3));
    app.webhook("sink", &format!("{}/sink", sink.url)).await;
    let ids = create_webhooks(&app, 1000, "pair").await;
    sink.wait_for("/sink", 1000, Duration::from_secs(120)).await;
    app.db
        .wait_scalar(
            "SELECT COUNT(*) FROM directives WHERE status = 'succeeded'",
            |n| n >= 1000,
            Duration::from_secs(30),
            "not all directives succeeded",
        )
        .await;
    let got = sink.received("/sink");
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in &got {
        *per_id
            .entry(r.headers["webhook-id"].to_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_id.len(), 1000);
    assert!(
        ids.iter().all(|id| per_id.get(id) == Some(&1)),
        "each directive delivered exactly once"
    );
    assert_eq!(got.len(), 1000);
    let workers = app
        .db
        .scalar("SELECT COUNT(DISTINCT worker) FROM directive_attempts")
        .await
        .unwrap();
    assert_eq!(workers, 2, "both nodes took a share of the work");
    second.stop().await.unwrap();
}

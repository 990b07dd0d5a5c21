//! Fair work: a slow receiver of one tenant holds at most its destination's
//! cap of the worker, so other tenants' work keeps flowing; a failing
//! destination opens a circuit breaker, and its backlog is delivered soon
//! after it recovers; a live worker keeps its lease by heartbeat.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use fleetprompt_system_tests::{
    Backend, Recorder, Reply, Tenant, TestApp, both_backends, create_tenant,
};
use serde_json::{Value, json};

both_backends!(
    a_slow_tenant_does_not_delay_another,
    a_failing_destination_opens_its_breaker_and_drains_on_recovery,
    a_live_worker_keeps_its_lease_past_the_lease_time,
    a_destination_keeps_to_its_own_cap,
);

async fn destination_as(app: &TestApp, tenant: &Tenant, name: &str, url: &str) {
    let (s, v) = app
        .request_as(
            &tenant.token,
            reqwest::Method::POST,
            "/admin/v1/destinations",
            Some(json!({ "name": name, "kind": "webhook", "url": url })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

async fn webhook_as(app: &TestApp, tenant: &Tenant, destination: &str, n: usize, extra: Value) {
    let mut body = json!({
        "kind": "webhook.post",
        "args": { "destination": destination, "body": { "n": n } },
        "dedupe_key": format!("{destination}-{n}"),
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (s, v) = app
        .request_as(
            &tenant.token,
            reqwest::Method::POST,
            "/admin/v1/directives",
            Some(body),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// The value of an unlabelled metric in a Prometheus exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Tenant A's receiver takes 5 s per request with 200 posts queued; tenant
/// B's directives meanwhile reach B's receiver within a second (p99), and A
/// never holds more than its destination's cap (16) of the worker's 64 slots.
async fn a_slow_tenant_does_not_delay_another(backend: Backend) {
    // Fewer slots than A's backlog: without per-destination caps A's 200
    // would fill all 64, and B would wait 5 s for each slot to free.
    let app = TestApp::spawn_with(backend, &["--concurrency", "64"]).await;
    let a = app.tenant.clone();
    let b = create_tenant(&app.db, "beta").await.unwrap();
    let sink = Recorder::start().await;
    sink.slow("/a", Duration::from_secs(5));
    destination_as(&app, &a, "slow", &format!("{}/a", sink.url)).await;
    destination_as(&app, &b, "quick", &format!("{}/b", sink.url)).await;
    for n in 0..200 {
        webhook_as(&app, &a, "slow", n, json!({})).await;
    }
    let a_id = &a.id;
    let running_a = format!(
        "SELECT COUNT(*) FROM directives WHERE tenant_id = '{a_id}' AND status = 'running'"
    );
    app.db
        .wait_scalar(&running_a, |n| n > 0, Duration::from_secs(10), "A started")
        .await;
    let mut sent = HashMap::new();
    let mut most_running_a = 0;
    for n in 0..40 {
        sent.insert(n, Instant::now());
        webhook_as(&app, &b, "quick", n, json!({})).await;
        most_running_a = most_running_a.max(app.db.scalar(&running_a).await.unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = sink.wait_for("/b", 40, Duration::from_secs(20)).await;
    let mut latencies: Vec<Duration> = got
        .iter()
        .map(|r| {
            let n = r.body["n"].as_u64().unwrap() as usize;
            r.at.duration_since(sent[&n])
        })
        .collect();
    latencies.sort();
    let p99 = latencies[(latencies.len() * 99).div_ceil(100) - 1];
    println!(
        "{backend:?}: B's p50 {:?}, p99 {p99:?}; A held at most {most_running_a} running",
        latencies[latencies.len() / 2]
    );
    assert!(
        p99 <= Duration::from_secs(1),
        "B waited behind A: p99 {p99:?}"
    );
    assert!(
        (1..=16).contains(&most_running_a),
        "A's destination held {most_running_a} attempts at once, above its cap of 16"
    );
    // A's backlog is still there, waiting its turn, not lost.
    let pending_a = app
        .db
        .scalar(&format!(
            "SELECT COUNT(*) FROM directives WHERE tenant_id = '{a_id}' AND status IN ('pending', 'running')"
        ))
        .await
        .unwrap();
    assert!(pending_a > 100, "{pending_a}");
}

/// A destination failing every attempt opens its breaker: its directives
/// are deferred (only a probe now and then reaches the receiver). Once the
/// receiver answers again, the next probe gets through, the breaker closes,
/// and the whole backlog, retries backed off 30 s included, arrives within
/// 5 s.
async fn a_failing_destination_opens_its_breaker_and_drains_on_recovery(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = app.tenant.clone();
    let sink = Recorder::start().await;
    sink.script("/down", std::iter::repeat_n(Reply::status(503), 10_000));
    destination_as(&app, &t, "down", &format!("{}/down", sink.url)).await;
    let total = 30;
    // All due at one moment, after they are all created.
    let due = Instant::now() + Duration::from_secs(3);
    for n in 0..total {
        let delay_ms = due.saturating_duration_since(Instant::now()).as_millis() as u64;
        webhook_as(
            &app,
            &t,
            "down",
            n,
            json!({ "delay_ms": delay_ms, "backoff": { "base_ms": 30_000, "jitter": 0.0 } }),
        )
        .await;
    }
    // The breaker opens after five failures in a row.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = app.metrics().await;
        if metric(&m, "fleetprompt_destination_breakers_open") == Some(1.0) {
            assert!(
                metric(&m, "fleetprompt_destination_breakers_opened_total").unwrap_or(0.0) >= 1.0
            );
            break;
        }
        assert!(Instant::now() < deadline, "the breaker never opened:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // While open, the due directives are not attempted (attempts already
    // in flight when it opened end first).
    tokio::time::sleep(Duration::from_millis(150)).await;
    let at_open = sink.received("/down").len();
    assert!(
        at_open < total,
        "{at_open} attempts before the breaker opened"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sink.received("/down").len(),
        at_open,
        "attempted while the breaker was open"
    );
    let never_tried = app
        .db
        .scalar("SELECT COUNT(*) FROM directives WHERE status = 'pending' AND attempts = 0")
        .await
        .unwrap();
    assert!(
        never_tried > 0,
        "due directives were deferred, not attempted"
    );
    // After a second, one probe; it fails, and the breaker stays open for
    // twice as long. The receiver recovers right after it.
    let probe = sink
        .wait_for("/down", at_open + 1, Duration::from_secs(3))
        .await;
    sink.clear_script("/down");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sink.received("/down").len(),
        at_open + 1,
        "one probe at a time"
    );
    let _ = probe;
    let recovered = Instant::now();
    app.db
        .wait_scalar(
            "SELECT COUNT(*) FROM directives WHERE status = 'succeeded'",
            |n| n == total as i64,
            Duration::from_secs(5),
            "the backlog did not drain within 5 s of recovery",
        )
        .await;
    println!(
        "{backend:?}: {at_open} attempts before the breaker opened; drained {:?} after recovery",
        recovered.elapsed()
    );
    let m = app.metrics().await;
    assert_eq!(
        metric(&m, "fleetprompt_destination_breakers_open"),
        Some(0.0),
        "{m}"
    );
}

/// With a 3 s lease and a receiver that takes 5 s, the attempt keeps its
/// lease by heartbeat: no lease expires, and it runs once.
async fn a_live_worker_keeps_its_lease_past_the_lease_time(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &["--lease-secs", "3", "--handler-timeout-secs", "10"],
    )
    .await;
    let sink = Recorder::start().await;
    sink.slow("/slow", Duration::from_secs(5));
    app.webhook("slow", &format!("{}/slow", sink.url)).await;
    let (_, v) = app
        .post(
            "/admin/v1/directives",
            json!({ "kind": "webhook.post", "args": { "destination": "slow" }, "dedupe_key": "long" }),
        )
        .await;
    let id = v["id"].as_str().unwrap();
    let d = app
        .wait_for_status(id, &["succeeded"], Duration::from_secs(15))
        .await;
    assert_eq!(d["attempts"], 1, "{d}");
    assert_eq!(sink.received("/slow").len(), 1);
    let expired = app
        .db
        .scalar("SELECT COUNT(*) FROM directive_attempts WHERE outcome = 'lease_expired'")
        .await
        .unwrap();
    assert_eq!(expired, 0);
}

/// A destination created with `max_in_flight = 2` never has more than two
/// attempts at once, its first claim on a node included (claimed before the
/// node knew the cap, any over it are handed back unattempted), and no
/// attempt is counted but the ten that ran.
async fn a_destination_keeps_to_its_own_cap(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let sink = Recorder::start().await;
    sink.slow("/two", Duration::from_millis(300));
    let (s, v) = app
        .post(
            "/admin/v1/destinations",
            json!({ "name": "bad", "kind": "webhook", "url": format!("{}/two", sink.url), "max_in_flight": 0 }),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = app
        .post(
            "/admin/v1/destinations",
            json!({ "name": "two", "kind": "webhook", "url": format!("{}/two", sink.url), "max_in_flight": 2 }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["config"]["max_in_flight"], 2, "{v}");
    let t = app.tenant.clone();
    let due = Instant::now() + Duration::from_secs(1);
    for n in 0..10 {
        let delay_ms = due.saturating_duration_since(Instant::now()).as_millis() as u64;
        webhook_as(&app, &t, "two", n, json!({ "delay_ms": delay_ms })).await;
    }
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let running = app
            .db
            .scalar("SELECT COUNT(*) FROM directives WHERE status = 'running'")
            .await
            .unwrap();
        most = most.max(running);
        let done = app
            .db
            .scalar("SELECT COUNT(*) FROM directives WHERE status = 'succeeded'")
            .await
            .unwrap();
        if done == 10 {
            break;
        }
        assert!(Instant::now() < deadline, "{done} of 10 succeeded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let attempts = app
        .db
        .scalar("SELECT COUNT(*) FROM directive_attempts")
        .await
        .unwrap();
    assert_eq!(attempts, 10, "handed-back claims count no attempt");
    assert_eq!(sink.received("/two").len(), 10);
    // Running rows include claims about to be handed back; what reached the
    // receiver at once is what the cap bounds.
    let got = sink.received("/two");
    let mut at_once = 0;
    for r in &got {
        let started = r.at - Duration::from_millis(300);
        let overlapping = got
            .iter()
            .filter(|o| o.at > started && o.at - Duration::from_millis(300) <= r.at)
            .count();
        at_once = at_once.max(overlapping);
    }
    println!("{backend:?}: at most {most} running rows, {at_once} requests at once");
    assert!(at_once <= 2, "{at_once} requests at once");
}

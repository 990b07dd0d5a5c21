//! Schedule rules: each tick fires once across nodes; missed ticks are
//! caught up at most once (run-once) or not at all (skip).

use std::time::{Duration, Instant};

use fleetprompt_system_tests::{Backend, Server, TestDb, create_tenant};

const EVERY_SECOND: &str = r#"
[[rule]]
id = "every-second"
schedule = "* * * * * *"

[[rule.directive]]
kind = "noop"
"#;

const EVERY_MINUTE: &str = r#"
[[rule]]
id = "every-minute"
schedule = "0 * * * * *"

[[rule.directive]]
kind = "noop"
"#;

fn rules_dir(db: &TestDb, text: &str) -> String {
    let dir = db.dir.join("workflows");
    std::fs::create_dir_all(dir.join("tenants/acme")).unwrap();
    std::fs::write(dir.join("tenants/acme/cron.toml"), text).unwrap();
    dir.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tick_fires_once_with_two_nodes_on_postgres() {
    let db = TestDb::new(Backend::Postgres).await.unwrap();
    create_tenant(&db, "acme").await.unwrap();
    let dir = rules_dir(&db, EVERY_SECOND);
    let flags = ["--workflows", dir.as_str(), "--demo", "false"];
    let mut a = Server::start(&db, "a", &flags).await.unwrap();
    let mut b = Server::start(&db, "b", &flags).await.unwrap();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    let ticks = db
        .scalar("SELECT COUNT(*) FROM signals WHERE type = 'cron.tick'")
        .await
        .unwrap();
    let directives = db
        .scalar("SELECT COUNT(*) FROM directives WHERE rule_id = 'every-second'")
        .await
        .unwrap();
    let evaluations = db
        .scalar("SELECT COUNT(*) FROM rule_evaluations WHERE rule_id = 'every-second'")
        .await
        .unwrap();
    let distinct = db
        .scalar("SELECT COUNT(DISTINCT dedupe_key) FROM directives WHERE rule_id = 'every-second'")
        .await
        .unwrap();
    assert!(ticks >= 3, "{ticks} ticks in 4.5 s");
    assert_eq!(directives, ticks, "one directive per tick");
    assert_eq!(distinct, directives);
    assert_eq!(evaluations, ticks, "each tick evaluated by one node only");
    let ran = db.scalar("SELECT COUNT(*) FROM directives WHERE rule_id = 'every-second' AND status = 'succeeded'").await.unwrap();
    assert_eq!(ran, directives);
}

async fn missed_ticks(backend: Backend, policy: &str) -> (i64, i64) {
    let db = TestDb::new(backend).await.unwrap();
    create_tenant(&db, "acme").await.unwrap();
    let dir = rules_dir(&db, EVERY_MINUTE);
    let mut s = Server::start(
        &db,
        "s",
        &[
            "--workflows",
            dir.as_str(),
            "--demo",
            "false",
            "--cron-catch-up",
            policy,
        ],
    )
    .await
    .unwrap();
    // The rule is tracked from its first sighting; pretend the last tick was an hour ago.
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.scalar("SELECT COUNT(*) FROM cron_ticks").await.unwrap() == 0 {
        assert!(
            Instant::now() < deadline,
            "the scheduler never saw the rule"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hour_ago = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64)
        - 3_600_000;
    db.scalar(&format!(
        "UPDATE cron_ticks SET last_tick = {hour_ago} RETURNING last_tick"
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.stop().await.unwrap();
    let fired = db
        .scalar("SELECT COUNT(*) FROM signals WHERE type = 'cron.tick'")
        .await
        .unwrap();
    let latest = db
        .scalar("SELECT COALESCE(MAX(occurred_at), 0) FROM signals WHERE type = 'cron.tick'")
        .await
        .unwrap();
    (fired, latest)
}

fn minute_floor_now() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    now - now % 60_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_ticks_run_once() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (fired, latest) = missed_ticks(backend, "run-once").await;
        // Sixty ticks were missed; one fires (two if a minute turned during the test).
        assert!((1..=2).contains(&fired), "{backend:?}: {fired} ticks fired");
        assert!(
            latest >= minute_floor_now() - 60_000,
            "{backend:?}: the latest missed tick fired, not an old one"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_ticks_can_be_skipped() {
    let start = minute_floor_now();
    let (fired, latest) = missed_ticks(Backend::Sqlite, "skip").await;
    // None of the missed ticks fire; only a minute turning during the test could.
    assert!(fired <= 1, "{fired} ticks fired");
    if fired == 1 {
        assert!(
            latest > start,
            "only a tick that came due during the test fired"
        );
    }
}

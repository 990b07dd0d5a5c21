//! A short run of `fleetprompt bench engine`, so the benchmark cannot rot.
//! It checks correctness (every directive executed once, with its attempt
//! recorded — the bench itself fails otherwise), never speed.

use fleetprompt_system_tests::{Backend, TestDb, binary, both_backends};
use serde_json::Value;

both_backends!(bench_engine_smoke, bench_ingest_smoke);

async fn bench_engine_smoke(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let mut cmd = tokio::process::Command::new(binary());
    cmd.args([
        "bench",
        "engine",
        "--directives",
        "500",
        "--runs",
        "2",
        "--batch",
        "100",
        "--latency-samples",
        "5",
        "--json",
    ]);
    if backend == Backend::Postgres {
        cmd.args(["--database-url", &db.url]);
    }
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["directives"], 500);
    assert_eq!(v["runs"], 2);
    assert_eq!(v["executed_per_s_all"].as_array().unwrap().len(), 2);
    assert!(v["executed_per_s_median"].as_f64().unwrap() > 0.0);
    assert_eq!(v["idle_start_latency_ms"]["samples"], 5);
    if backend == Backend::Postgres {
        // Two runs and the latency probe, each its own tenant, all executed once.
        assert_eq!(
            db.scalar("SELECT COUNT(*) FROM directives").await.unwrap(),
            1005
        );
        assert_eq!(
            db.scalar("SELECT COUNT(*) FROM directive_attempts")
                .await
                .unwrap(),
            1005
        );
        assert_eq!(
            db.scalar("SELECT COUNT(*) FROM directives WHERE status <> 'succeeded'")
                .await
                .unwrap(),
            0
        );
    }
}

async fn bench_ingest_smoke(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let mut cmd = tokio::process::Command::new(binary());
    cmd.args([
        "bench",
        "ingest",
        "--messages",
        "300",
        "--connections",
        "8",
        "--visitors",
        "16",
        "--rate",
        "100",
        "--seconds",
        "1",
        "--json",
    ]);
    if backend == Backend::Postgres {
        cmd.args(["--database-url", &db.url]);
    }
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Every message accepted over HTTP is persisted exactly once (the bench
    // counts message rows, signals and the directives its rule creates, and
    // fails otherwise).
    assert_eq!(v["accepted"], 300, "{v}");
    assert_eq!(v["refused"], 0, "{v}");
    assert_eq!(v["persisted_exactly_once"], true);
    assert_eq!(v["latency_ms"]["samples"], 100);
    assert!(v["rss_kib"]["idle"].as_u64().unwrap() > 0);
    // Read from the server's own batch-size histogram.
    assert!(v["mean_batch"].as_f64().unwrap() >= 1.0, "{v}");
}

//! The dashboards and alerts, proven against a real Prometheus.
//!
//! Starts `fleetprompt serve` (fresh SQLite, port 0), then Prometheus (the
//! Debian `prometheus` package, or `PROMETHEUS_BIN` and `PROMTOOL_BIN`)
//! scraping it every second with `dashboards/alerts.yml` loaded, drives a
//! short synthetic load that touches every metric (signals, directives that
//! succeed, retry and fail, an expired lease, widget messages and refusals,
//! a refused workflow reload, an Edge Connector's heartbeat), and then
//! evaluates every panel query of every dashboard and every alert expression
//! through Prometheus's HTTP API: each must parse, and each panel must return
//! data. It also checks that `promtool check rules` passes, that every metric
//! a dashboard names is in `/metrics`, and that every `fleetprompt_*` metric
//! has a description and a unit.
//!
//! Prometheus is required: a missing binary is a failure, never a skip.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use fleetprompt_system_tests::{
    Recorder, Reply, Server, TestApp, TestDb, create_tenant, http_client,
};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const ORIGIN: &str = "https://shop.example.com";

/// Short leases, so a killed node's claim expires within the test.
const FLAGS: &[&str] = &[
    "--lease-secs",
    "2",
    "--handler-timeout-secs",
    "1",
    "--workflows-poll-ms",
    "100",
    "--demo",
    "false",
];

/// Metrics whose value is a dimensionless count of things (a gauge or a
/// batch-size histogram), which Prometheus naming leaves without a unit
/// suffix. Any other `fleetprompt_*` metric must end in a base unit or
/// `_total`. A new unitless metric fails here until it is added on purpose.
const DIMENSIONLESS: &[&str] = &[
    "fleetprompt_directives_pending",
    "fleetprompt_directives_failed",
    "fleetprompt_directives_in_flight",
    "fleetprompt_edge_tasks_pending",
    "fleetprompt_destination_breakers_open",
    "fleetprompt_directive_claim_batch_size",
    "fleetprompt_directive_complete_batch_size",
    "fleetprompt_webchat_ingest_batch_size",
];

const UNIT_SUFFIXES: &[&str] = &["_seconds", "_bytes", "_ratio", "_total"];

/// Grafana's built-in interval variables, as fixed windows long enough to
/// hold several 1 s scrapes.
const GRAFANA_VARS: &[(&str, &str)] = &[
    ("$__rate_interval", "10s"),
    ("$__interval", "5s"),
    ("$__range", "5m"),
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_owned()
}

fn dashboards_dir() -> PathBuf {
    repo_root().join("dashboards")
}

/// Where the Prometheus binaries are; fails loudly when they are not.
fn prometheus_bin(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_uppercase());
    if let Ok(p) = std::env::var(&var) {
        return PathBuf::from(p);
    }
    let default = PathBuf::from("/usr/bin").join(name);
    if default.exists() {
        return default;
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    panic!(
        "{name} is required for the dashboard test and was not found at {} (set {var}). \
         Install it with `apt-get update && apt-get install -y prometheus`.{}",
        default.display(),
        if in_ci {
            " CI must install it in .ci/run."
        } else {
            ""
        }
    );
}

/// Every (dashboard, panel title, expression) in the dashboards directory,
/// rows' nested panels included.
fn panel_queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dashboards_dir())
        .expect("dashboards/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "expected at least two dashboards");
    let datasource =
        std::fs::read_to_string(dashboards_dir().join("provisioning/datasources/prometheus.yaml"))
            .expect("provisioning/datasources/prometheus.yaml");
    assert!(
        datasource.contains("uid: fleetprompt-prometheus"),
        "the provisioned datasource must have the uid the dashboards use"
    );
    let mut uids = BTreeSet::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read dashboard");
        assert!(
            !text.contains("${DS_"),
            "{}: ${{DS_…}} placeholders are not resolved by file provisioning",
            path.display()
        );
        let d: Value = serde_json::from_str(&text).expect("dashboard JSON");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let uid = d["uid"].as_str().unwrap_or_default().to_owned();
        assert!(!uid.is_empty(), "{name} has no uid");
        assert!(uids.insert(uid.clone()), "{name}: uid {uid} is used twice");
        fn walk(panels: &Value, name: &str, out: &mut Vec<(String, String, String)>) {
            for p in panels.as_array().into_iter().flatten() {
                walk(&p["panels"], name, out);
                let title = p["title"].as_str().unwrap_or("").to_owned();
                if p["type"] == "row" {
                    continue;
                }
                let ds = &p["datasource"];
                assert_eq!(
                    ds["uid"], "fleetprompt-prometheus",
                    "{name} / {title}: datasource must be the fixed uid"
                );
                let targets = p["targets"].as_array().cloned().unwrap_or_default();
                assert!(!targets.is_empty(), "{name} / {title} has no query");
                for t in targets {
                    let expr = t["expr"].as_str().expect("target expr").to_owned();
                    out.push((name.to_owned(), title.clone(), expr));
                }
            }
        }
        walk(&d["panels"], &name, &mut out);
    }
    out
}

fn substitute(expr: &str) -> String {
    let mut e = expr.to_owned();
    for (var, value) in GRAFANA_VARS {
        e = e.replace(var, value);
    }
    assert!(!e.contains('$'), "unsupported dashboard variable in {expr}");
    e
}

/// `fleetprompt_*` names in an expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("fleetprompt_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every `fleetprompt_*` metric the dashboards' panels and the alert rules
/// name, as queried (a histogram by its `_bucket` series).
fn dashboard_and_alert_metrics(queries: &[(String, String, String)]) -> BTreeSet<String> {
    let alerts = std::fs::read_to_string(dashboards_dir().join("alerts.yml")).expect("alerts.yml");
    queries
        .iter()
        .map(|(_, _, expr)| expr.as_str())
        .chain(std::iter::once(alerts.as_str()))
        .flat_map(metric_names)
        .collect()
}

/// The names in `names` that no sample line of a `/metrics` text has.
fn missing_metrics(metrics: &str, names: &BTreeSet<String>) -> Vec<String> {
    names
        .iter()
        .filter(|name| {
            !metrics.lines().filter(|l| !l.starts_with('#')).any(|l| {
                l.strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
        })
        .cloned()
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A Prometheus process and its HTTP API.
struct Prometheus {
    url: String,
    child: Child,
    log: PathBuf,
    http: reqwest::Client,
}

impl Prometheus {
    async fn start(dir: &Path, target: &str) -> Self {
        let bin = prometheus_bin("prometheus");
        let port = free_port();
        let rules = dashboards_dir().join("alerts.yml");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: fleetprompt\n    static_configs:\n      - targets: ['{target}']\n",
                rules.display()
            ),
        )
        .expect("write prometheus.yml");
        let log = dir.join("prometheus.log");
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let p = Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
            log,
            http: http_client(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = p.http.get(format!("{}/-/ready", p.url)).send().await
                && r.status().is_success()
            {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready in 20 s:\n{}",
                p.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.url), params)
            .expect("query URL");
        let r = self.http.get(url).send().await.expect("Prometheus API");
        let text = r.text().await.expect("body");
        serde_json::from_str(&text).unwrap_or_else(|_| json!({ "status": "error", "error": text }))
    }

    /// An instant query: its `data.result`, or the error text.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let v = self.api("/api/v1/query", &[("query", expr)]).await;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn post(app: &TestApp, path: &str, body: Value) -> (StatusCode, Value) {
    app.post(path, body).await
}

/// A widget call with an Origin and optional token.
async fn widget(
    app: &TestApp,
    path: &str,
    origin: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut req = app
        .http
        .post(format!("{}{path}", app.server.url))
        .header("origin", origin)
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("widget request");
    let s = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        s,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// One round of traffic: signals (through a rule), directives, widget
/// messages and refusals.
async fn load_round(app: &TestApp, round: usize, site_key: &str, token: &str) {
    for i in 0..5 {
        let key = format!("r{round}-{i}");
        post(
            app,
            "/admin/v1/signals",
            json!({ "type": "order.created", "subject": format!("order:{key}"), "payload": { "n": i }, "dedupe_key": format!("o-{key}") }),
        )
        .await;
        post(
            app,
            "/admin/v1/signals",
            json!({ "type": "webchat.note.added", "subject": format!("c:{key}"), "dedupe_key": format!("w-{key}") }),
        )
        .await;
        post(
            app,
            "/admin/v1/directives",
            json!({ "kind": "noop", "dedupe_key": format!("n-{key}") }),
        )
        .await;
        // A duplicate, for the deduplication counter.
        post(
            app,
            "/admin/v1/directives",
            json!({ "kind": "noop", "dedupe_key": format!("n-{key}") }),
        )
        .await;
        post(
            app,
            "/admin/v1/directives",
            json!({ "kind": "webhook.post", "args": { "destination": "ok" }, "dedupe_key": format!("ok-{key}") }),
        )
        .await;
        let (s, v) = widget(
            app,
            &format!("/v1/widget/messages?site_key={site_key}"),
            ORIGIN,
            Some(token),
            json!({ "client_message_id": uuid::Uuid::now_v7().to_string(), "content": format!("hello {key}") }),
        )
        .await;
        assert_eq!(s, 202, "widget message: {v}");
    }
    // Refusals: a foreign origin, a bad token, an oversized message.
    widget(
        app,
        &format!("/v1/widget/bootstrap?site_key={site_key}"),
        "https://evil.example.net",
        None,
        json!({ "site_key": site_key }),
    )
    .await;
    widget(
        app,
        &format!("/v1/widget/messages?site_key={site_key}"),
        ORIGIN,
        Some("fpw_not-a-token"),
        json!({ "client_message_id": "x", "content": "x" }),
    )
    .await;
    widget(
        app,
        &format!("/v1/widget/messages?site_key={site_key}"),
        ORIGIN,
        Some(token),
        json!({ "client_message_id": uuid::Uuid::now_v7().to_string(), "content": "x".repeat(5000) }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_and_alert_works_against_real_prometheus() {
    let started = Instant::now();
    // promtool first: cheap, and fails early when Prometheus is missing.
    let promtool = prometheus_bin("promtool");
    let out = std::process::Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(dashboards_dir().join("alerts.yml"))
        .output()
        .expect("running promtool");
    assert!(
        out.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let queries = panel_queries();

    // A server with a valid rule set and short leases.
    let db = TestDb::new(fleetprompt_system_tests::Backend::Sqlite)
        .await
        .unwrap();
    let wf = db.dir.join("workflows");
    std::fs::create_dir_all(wf.join("tenants/acme")).unwrap();
    std::fs::write(
        wf.join("tenants/acme/rules.toml"),
        "[[rule]]\nid = \"echo\"\non = \"order.created\"\n\n[[rule.directive]]\nkind = \"noop\"\ndedupe_key = \"echo:{{ signal.id }}\"\n",
    )
    .unwrap();
    // The shipped website_chat rules too, so widget messages are escalated.
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../workflows/website_chat.toml"
        ),
        wf.join("website_chat.toml"),
    )
    .unwrap();
    let tenant = create_tenant(&db, "acme").await.unwrap();
    let mut flags = vec!["--workflows", wf.to_str().unwrap()];
    flags.extend_from_slice(FLAGS);
    let server = Server::start(&db, "first", &flags).await.unwrap();
    let mut app = TestApp {
        db,
        server,
        tenant,
        http: http_client(),
    };

    // A fresh server, before any traffic (the harness's `/readyz` polls
    // aside), already exports every metric a dashboard or an alert names:
    // a series born on its first event leaves panels at "No data" and
    // makes `rate()` and `increase()` miss that event.
    let fresh = app.metrics().await;
    // Read after the scrape, so the scrape saw no admin traffic.
    let (s, connectors) = app.get("/admin/v1/edge-connectors").await;
    assert_eq!(s, StatusCode::OK, "{connectors}");
    let no_connector = connectors["edge_connectors"]
        .as_array()
        .is_some_and(|c| c.is_empty());
    let missing = missing_metrics(&fresh, &dashboard_and_alert_metrics(&queries))
        .into_iter()
        // A gauge per connector: while no connector is registered there is
        // no series to export, and a made-up one would trip the silent
        // connector alert. Once one exists it must be there (checked after
        // the load below).
        .filter(|name| {
            !(no_connector && name == "fleetprompt_edge_connector_last_seen_timestamp_seconds")
        })
        .collect::<Vec<_>>();
    assert!(
        missing.is_empty(),
        "a fresh server's /metrics lacks {missing:?}:\n{fresh}"
    );

    // Receivers: one that answers 200, one 500 then 200 (a retry), one 404
    // (a permanent failure), one too slow to answer before we kill the node.
    let hook = Recorder::start().await;
    hook.script("/flaky", [Reply::status(500), Reply::status(500)]);
    hook.script("/gone", [Reply::status(404)]);
    hook.slow("/slow", Duration::from_secs(30));
    for name in ["ok", "flaky", "gone", "slow"] {
        app.webhook(name, &format!("{}/{name}", hook.url)).await;
    }
    // The team's Mattermost, for the escalation panel and alert.
    let (s, v) = post(
        &app,
        "/admin/v1/destinations",
        json!({ "name": "mattermost", "kind": "mattermost", "webhook_url": format!("{}/mm", hook.url) }),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // An expired lease: kill -9 the node mid-attempt; its successor reaps it.
    let (s, slow) = post(
        &app,
        "/admin/v1/directives",
        json!({ "kind": "webhook.post", "args": { "destination": "slow" }, "dedupe_key": "slow-1", "max_attempts": 1 }),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{slow}");
    app.wait_for_status(
        slow["id"].as_str().unwrap(),
        &["running"],
        Duration::from_secs(10),
    )
    .await;
    app.server.kill9().await;
    app.server = Server::start(&app.db, "second", &flags).await.unwrap();
    let target = app.server.url.trim_start_matches("http://").to_owned();

    let prom_dir = app.db.dir.join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom = Prometheus::start(&prom_dir, &target).await;

    // A site and a visitor token.
    let (s, site) = post(
        &app,
        "/admin/v1/sites",
        json!({ "domains": ["shop.example.com"], "mode": "native", "settings": { "rate_limit_visitor_per_min": 600, "rate_limit_site_per_min": 6000 } }),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{site}");
    let key = site["public_key"].as_str().unwrap().to_owned();
    let (s, boot) = widget(
        &app,
        &format!("/v1/widget/bootstrap?site_key={key}"),
        ORIGIN,
        None,
        json!({ "site_key": key }),
    )
    .await;
    assert_eq!(s, 200, "{boot}");
    let token = boot["token"].as_str().unwrap().to_owned();

    // An Edge Connector that reports in, for the last-seen panel and alert.
    let (s, connector) = post(
        &app,
        "/admin/v1/edge-connectors",
        json!({ "name": "bridge-host" }),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{connector}");
    let (s, v) = app
        .request_as(
            connector["token"].as_str().unwrap(),
            reqwest::Method::POST,
            "/edge/v1/heartbeat",
            Some(json!({ "version": "test" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Directives that retry, then succeed; and one that fails.
    for (dest, key) in [("flaky", "flaky-1"), ("gone", "gone-1")] {
        let (s, v) = post(
            &app,
            "/admin/v1/directives",
            json!({ "kind": "webhook.post", "args": { "destination": dest }, "dedupe_key": key, "backoff": { "base_ms": 200 } }),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    // Traffic while Prometheus scrapes; a refused rule change midway.
    for round in 0..4 {
        load_round(&app, round, &key, &token).await;
        if round == 1 {
            std::fs::write(wf.join("tenants/acme/broken.toml"), "[[rule]\nid = ").unwrap();
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }

    // /metrics after traffic: every metric a dashboard or alert names
    // exists, the connector's gauge included; every metric has a
    // description and a unit.
    let metrics = app.metrics().await;
    let mut problems: Vec<String> =
        missing_metrics(&metrics, &dashboard_and_alert_metrics(&queries))
            .into_iter()
            .map(|name| format!("{name} is not in /metrics"))
            .collect();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("# TYPE fleetprompt_"))
    {
        let name = line.split_whitespace().nth(2).unwrap();
        if !metrics.contains(&format!("# HELP {name} ")) {
            problems.push(format!("{name} has no description (HELP)"));
        }
        if !UNIT_SUFFIXES.iter().any(|s| name.ends_with(s)) && !DIMENSIONLESS.contains(&name) {
            problems.push(format!(
                "{name} has no unit suffix ({UNIT_SUFFIXES:?}) and is not a known dimensionless count"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\n/metrics:\n{metrics}",
        problems.join("\n")
    );

    // Every panel query parses and returns data. Retry while the last
    // scrapes and rule evaluations land.
    let deadline = Instant::now() + Duration::from_secs(20);
    let failures = loop {
        let mut failures = Vec::new();
        for (dash, title, expr) in &queries {
            match prom.query(&substitute(expr)).await {
                Ok(r) if r.is_empty() => {
                    failures.push(format!("{dash} / {title}: no data for {expr}"))
                }
                Ok(_) => {}
                Err(e) => failures.push(format!("{dash} / {title}: {expr} does not parse: {e}")),
            }
        }
        if failures.is_empty() || Instant::now() > deadline {
            break failures;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        failures.is_empty(),
        "{} of {} panel queries failed:\n{}\n\nPrometheus log:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n"),
        prom.logs()
    );

    // Every alert rule was loaded, evaluates without error, and its
    // expression parses as a query.
    let declared = std::fs::read_to_string(dashboards_dir().join("alerts.yml"))
        .unwrap()
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    let deadline = Instant::now() + Duration::from_secs(10);
    let rules = loop {
        let v = prom.api("/api/v1/rules", &[]).await;
        assert_eq!(v["status"], "success", "{v}");
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        if rules.iter().all(|r| r["health"] != "unknown") || Instant::now() > deadline {
            break rules;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(rules.len(), declared, "Prometheus loaded {rules:?}");
    for r in &rules {
        let expr = r["query"].as_str().unwrap();
        assert_eq!(
            r["health"], "ok",
            "alert {} does not evaluate: {}",
            r["name"], r["lastError"]
        );
        if let Err(e) = prom.query(expr).await {
            panic!("alert {}: {expr} does not parse: {e}", r["name"]);
        }
        for name in metric_names(expr) {
            assert!(
                metrics.contains(&name),
                "alert {} names {name}, which /metrics does not export",
                r["name"]
            );
        }
    }
    eprintln!(
        "{} panel queries and {} alerts checked in {:?}",
        queries.len(),
        rules.len(),
        started.elapsed()
    );
}

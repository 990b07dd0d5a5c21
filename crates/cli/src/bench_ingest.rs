//! `fleetprompt bench ingest`: visitor messages over HTTP, the way widgets
//! send them, against a real `fleetprompt serve` child process.
//!
//! It starts the server (this same binary) on a fresh SQLite file or the
//! given PostgreSQL database, registers a site with rate limits raised out of
//! the way, bootstraps visitors, then measures:
//! - throughput: `--connections` concurrent senders, closed loop, until
//!   `--messages` are accepted; every accepted message is then checked to be
//!   persisted exactly once (message row, `webchat.message.received` and the
//!   directive a rule creates for it);
//! - latency: an open loop at `--rate` messages/s for `--seconds`, p50/p99;
//! - the server's resident memory, idle and at its peak (`/proc`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::settings::Common;

/// Flags of `bench ingest`.
#[derive(Args)]
pub struct IngestArgs {
    /// Messages to accept in the throughput phase.
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Messages sent before the throughput phase and not measured: a new
    /// database first runs on plans made for empty tables, until the
    /// upkeep analyzes them.
    #[arg(long, default_value_t = 5_000)]
    pub warmup: usize,
    /// Concurrent senders in the throughput phase.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Distinct visitors (each sender uses its own).
    #[arg(long, default_value_t = 256)]
    pub visitors: usize,
    /// Messages per second in the latency phase (0 skips it).
    #[arg(long, default_value_t = 1_000)]
    pub rate: u64,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A rule that gives every message a directive, so a message accepted is a
/// message, its signal, its rule's verdict and its directive persisted in
/// one transaction. The directive is due in an hour: this benchmark
/// measures accepting work, `bench engine` measures running it.
const FOLLOW_UP_RULE: &str = r#"
[[rule]]
id = "bench.follow-up"
on = "webchat.message.received"

[[rule.directive]]
kind = "noop"
dedupe_key = "follow-up:{{ signal.payload.message_id }}"
delay = "1h"
"#;

/// The origin every benchmark site allows.
pub(crate) const ORIGIN: &str = "http://bench.fleetprompt.test";

/// A `fleetprompt serve` child process.
pub(crate) struct ServerProc {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) pid: u32,
}

/// Starts `fleetprompt serve` on port 0 with `data` as its data directory and
/// `rules` (file name, text) as its workflows.
pub(crate) async fn start_server(
    common: &Common,
    data: &Path,
    rules: &[(&str, &str)],
) -> anyhow::Result<ServerProc> {
    let exe = std::env::current_exe()?;
    let workflows = data.join("workflows");
    std::fs::create_dir_all(&workflows)?;
    for (name, text) in rules {
        std::fs::write(workflows.join(name), text)?;
    }
    let mut cmd = Command::new(&exe);
    cmd.args([
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--demo",
        "false",
        "--durability",
        &common.durability,
        // The benchmarks' stand-in receivers listen on loopback.
        "--allow-outbound",
        "127.0.0.0/8,::1/128",
    ])
    .arg("--workflows")
    .arg(&workflows)
    .arg("--data-dir")
    .arg(data)
    .env("RUST_LOG", "warn")
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::inherit())
    .kill_on_drop(true);
    if let Some(url) = &common.database_url {
        cmd.arg("--database-url").arg(url);
    }
    let mut child = cmd.spawn().context("starting fleetprompt serve")?;
    let pid = child.id().context("server pid")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .context("the server did not start within 30 s")??
        .context("the server exited")?;
    let url = first
        .strip_prefix("FleetPrompt listening on ")
        .context("unexpected first line")?
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    // It listens before its database is ready: wait until it says ready.
    let http = crate::bench::http_client(1);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match http.get(format!("{url}/readyz")).send().await {
            Ok(r) if r.status().is_success() => break,
            _ if std::time::Instant::now() > deadline => {
                anyhow::bail!("the server was not ready within 60 s")
            }
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    Ok(ServerProc { child, url, pid })
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
pub(crate) fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time a process has used (user + system), in milliseconds; the
/// throughput phase reports the server's CPU per message, which unlike
/// messages per second does not depend on what else the machine runs.
pub(crate) fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces), from field 3 on:
    // utime and stime are fields 14 and 15, in ticks of 1/100 s.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    ticks * 10
}

/// CPU time of each process of this machine named `name` (PostgreSQL's
/// backends, when the database runs here), in milliseconds, by pid.
pub(crate) fn cpu_ms_by_process(name: &str) -> HashMap<u32, u64> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .map(|pid| (pid, cpu_ms(pid)))
        .collect()
}

/// CPU the processes of `before` (and any started since) used until now.
/// A process that exited meanwhile takes its time with it, so this counts
/// each live process's own growth rather than subtracting two totals.
pub(crate) fn cpu_ms_since(name: &str, before: &HashMap<u32, u64>) -> u64 {
    cpu_ms_by_process(name)
        .into_iter()
        .map(|(pid, now)| now.saturating_sub(before.get(&pid).copied().unwrap_or(0)))
        .sum()
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

pub(crate) async fn send(http: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<u16> {
    let resp = http
        .post(format!("{url}/v1/widget/messages"))
        .header("origin", ORIGIN)
        .bearer_auth(token)
        .json(&json!({ "client_message_id": uuid::Uuid::now_v7(), "content": "Hello, do you ship to Norway? I'd like to order two of the blue ones." }))
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

/// The mean of a histogram the server exports, from its `/metrics`.
pub(crate) async fn mean_of(
    http: &reqwest::Client,
    url: &str,
    histogram: &str,
) -> anyhow::Result<f64> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let value = |suffix: &str| {
        let name = format!("{histogram}{suffix} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&name)?.trim().parse::<f64>().ok())
            .with_context(|| format!("{histogram}{suffix} is not in /metrics"))
    };
    Ok(value("_sum")? / value("_count")?.max(1.0))
}

/// A tenant created with the CLI, as an operator would, and a site whose
/// rate limits are raised out of the benchmark's way. Returns the CLI's JSON,
/// the admin token and the site key.
pub(crate) async fn tenant_and_site(
    common: &Common,
    data: &Path,
    http: &reqwest::Client,
    url: &str,
) -> anyhow::Result<(Value, String, String)> {
    let exe = std::env::current_exe()?;
    let slug = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let mut cmd = Command::new(&exe);
    cmd.args(["tenant", "create", &slug[..30], "--json"])
        .arg("--data-dir")
        .arg(data);
    if let Some(u) = &common.database_url {
        cmd.arg("--database-url").arg(u);
    }
    let out = cmd.output().await?;
    if !out.status.success() {
        bail!(
            "tenant create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tenant: Value = serde_json::from_slice(&out.stdout)?;
    let admin = tenant["admin_token"]
        .as_str()
        .context("admin token")?
        .to_owned();
    let site: Value = http
        .post(format!("{url}/admin/v1/sites"))
        .bearer_auth(&admin)
        .json(&json!({ "domains": [ORIGIN], "mode": "native",
                       // Every simulated visitor comes from 127.0.0.1: lift the
                       // per-address limits along with the others.
                       "settings": { "rate_limit_visitor_per_min": 10000, "rate_limit_site_per_min": 1000000,
                                     "rate_limit_address_per_min": 1000000,
                                     "rate_limit_new_visitors_per_min": 1000000 } }))
        .send()
        .await?
        .json()
        .await?;
    let key = site["public_key"]
        .as_str()
        .with_context(|| format!("site: {site}"))?
        .to_owned();
    Ok((tenant, admin, key))
}

/// A widget token for a new visitor.
pub(crate) async fn bootstrap(
    http: &reqwest::Client,
    url: &str,
    key: &str,
) -> anyhow::Result<String> {
    let b: Value = http
        .post(format!("{url}/v1/widget/bootstrap?site_key={key}"))
        .header("origin", ORIGIN)
        .json(&json!({ "site_key": key }))
        .send()
        .await?
        .json()
        .await?;
    Ok(b["token"]
        .as_str()
        .with_context(|| format!("bootstrap: {b}"))?
        .to_owned())
}

/// Sends `messages` from `connections` concurrent senders, each keeping to
/// its own visitors (no two in-flight messages of one visitor, as with real
/// widgets), as fast as they are answered. Returns how long it took and how
/// many were refused.
async fn closed_loop(
    http: &reqwest::Client,
    url: &str,
    tokens: &Arc<Vec<String>>,
    connections: usize,
    messages: usize,
) -> (Duration, usize) {
    let remaining = Arc::new(AtomicUsize::new(messages));
    let refused = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for c in 0..connections {
        let (http, url, tokens, remaining, refused) = (
            http.clone(),
            url.to_owned(),
            tokens.clone(),
            remaining.clone(),
            refused.clone(),
        );
        senders.spawn(async move {
            let mut i = c;
            while remaining
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
            {
                let token = &tokens[i % tokens.len()];
                i += connections;
                match send(&http, &url, token).await {
                    Ok(202) => {}
                    _ => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while senders.join_next().await.is_some() {}
    (start.elapsed(), refused.load(Ordering::Relaxed))
}

/// Runs the ingest benchmark.
pub async fn run(common: &Common, args: IngestArgs) -> anyhow::Result<()> {
    let dir = tempfile::TempDir::new()?;
    let mut server = start_server(common, dir.path(), &[("bench.toml", FOLLOW_UP_RULE)]).await?;
    let url = server.url.clone();
    let http = crate::bench::http_client(args.connections);

    let (tenant, _admin, key) = tenant_and_site(common, dir.path(), &http, &url).await?;
    let mut tokens = Vec::with_capacity(args.visitors);
    for _ in 0..args.visitors.max(args.connections) {
        tokens.push(bootstrap(&http, &url, &key).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle_rss, _) = memory_kib(server.pid);

    let tokens = Arc::new(tokens);
    let mut warmed_up = 0;
    if args.warmup > 0 {
        let (_, refused) = closed_loop(&http, &url, &tokens, args.connections, args.warmup).await;
        warmed_up = args.warmup - refused;
        // Past the upkeep's next statistics pass.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // Throughput: closed loop.
    let cpu_start = cpu_ms(server.pid);
    let db_cpu_start = cpu_ms_by_process("postgres");
    let (elapsed, refused) =
        closed_loop(&http, &url, &tokens, args.connections, args.messages).await;
    let cpu = cpu_ms(server.pid) - cpu_start;
    let db_cpu = cpu_ms_since("postgres", &db_cpu_start);
    let accepted = args.messages - refused;
    let cpu_us_per_message = cpu as f64 * 1000.0 / accepted.max(1) as f64;
    let db_cpu_us_per_message = db_cpu as f64 * 1000.0 / accepted.max(1) as f64;
    let throughput = accepted as f64 / elapsed.as_secs_f64();

    // Latency: open loop at a fixed rate.
    let mut latencies = Vec::new();
    if args.rate > 0 {
        let total = (args.rate * args.seconds) as usize;
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut inflight = tokio::task::JoinSet::new();
        for n in 0..total {
            tick.tick().await;
            let (http, url, token) = (http.clone(), url.clone(), tokens[n % tokens.len()].clone());
            inflight.spawn(async move {
                let t = Instant::now();
                let ok = matches!(send(&http, &url, &token).await, Ok(202));
                (ok, t.elapsed())
            });
        }
        while let Some(r) = inflight.join_next().await {
            let (ok, d) = r?;
            if !ok {
                bail!("a message was refused during the latency phase");
            }
            latencies.push(d);
        }
        latencies.sort();
    }
    let (_, peak_rss) = memory_kib(server.pid);
    let mean_batch = mean_of(&http, &url, fleetprompt_webchat::INGEST_BATCH).await?;

    // Every accepted message persisted exactly once.
    let expected = warmed_up + accepted + latencies.len();
    let db = common.open_db_at(dir.path()).await?;
    let tenant_id: fleetprompt_core::TenantId =
        tenant["tenant_id"].as_str().context("tenant id")?.parse()?;
    let (messages, signals) =
        fleetprompt_webchat::store::message::count_with_signals(&db, tenant_id).await?;
    let directives =
        fleetprompt_store::directive::count_of_rule(&db, tenant_id, "bench.follow-up").await?;
    if [messages, signals, directives] != [expected as i64; 3] {
        bail!(
            "{expected} messages accepted, but {messages} message rows, {signals} message signals and {directives} directives persisted"
        );
    }
    db.close().await;
    if let Some(pid) = server.child.id() {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    }
    let _ = server.child.wait().await;

    let backend = if common
        .database_url
        .as_deref()
        .is_some_and(|u| u.starts_with("postgres"))
    {
        "postgres"
    } else {
        "sqlite"
    };
    let (p50, p99, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    if args.json {
        println!(
            "{}",
            json!({
                "backend": backend, "durability": common.durability,
                "warmup": warmed_up, "accepted": accepted, "refused": refused, "throughput_per_s": throughput.round(),
                "server_cpu_us_per_message": cpu_us_per_message.round(),
                "postgres_cpu_us_per_message": (backend == "postgres").then(|| db_cpu_us_per_message.round()), "mean_batch": mean_batch,
                "latency_rate_per_s": args.rate, "latency_ms": { "p50": p50, "p99": p99, "max": max, "samples": latencies.len() },
                "rss_kib": { "idle": idle_rss, "peak": peak_rss },
                "persisted_exactly_once": true,
            })
        );
    } else {
        println!(
            "backend                     {backend} (durability {})",
            common.durability
        );
        println!(
            "accepted and persisted      {accepted} in {:.2} s = {throughput:.0} messages/s ({} connections, after {warmed_up} to warm up)",
            elapsed.as_secs_f64(),
            args.connections
        );
        println!("server CPU                  {cpu_us_per_message:.0} µs per message");
        if backend == "postgres" && db_cpu > 0 {
            println!(
                "PostgreSQL CPU              {db_cpu_us_per_message:.0} µs per message (its processes on this machine)"
            );
        }
        println!("messages per transaction    {mean_batch:.1} (mean of all batches)");
        if args.rate > 0 {
            println!(
                "latency at {} msg/s        p50 {p50:.2} ms  p99 {p99:.2} ms  max {max:.2} ms ({} samples)",
                args.rate,
                latencies.len()
            );
        }
        println!(
            "server RSS                  idle {} MiB, peak {} MiB",
            idle_rss / 1024,
            peak_rss / 1024
        );
        println!(
            "persisted exactly once      yes ({expected} messages, {expected} signals, {expected} directives)"
        );
    }
    Ok(())
}

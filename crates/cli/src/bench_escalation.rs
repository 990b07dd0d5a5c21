//! `fleetprompt bench escalation`: from a visitor's message to the team's
//! Mattermost channel, with the shipped `website_chat` rules.
//!
//! A real `fleetprompt serve` child runs the shipped defaults; a Mattermost
//! stand-in (an HTTP server in this process) records when each post arrives.
//! Each message opens a new conversation (a fresh visitor), so each one is
//! escalated; the latency is from the start of the visitor's POST to the
//! stand-in receiving the post, matched by the conversation's deep link.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::extract::State;
use clap::Args;
use serde_json::{Value, json};

use crate::bench_ingest::{ORIGIN, bootstrap, percentile, start_server, tenant_and_site};
use crate::settings::Common;

/// The shipped rules, so the benchmark measures what users run.
const SHIPPED_RULES: &str = include_str!("../../../workflows/website_chat.toml");

/// Flags of `bench escalation`.
#[derive(Args)]
pub struct EscalationArgs {
    /// Message rates to measure, per second.
    #[arg(long, value_delimiter = ',', default_value = "50,200")]
    pub rates: Vec<u64>,
    /// Seconds per rate.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn mattermost(State(arrivals): State<Arrivals>, body: String) -> &'static str {
    let at = Instant::now();
    let text = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["text"].as_str().map(str::to_owned))
        .unwrap_or_default();
    if let Some(i) = text.find("/console/conversations/") {
        let id: String = text[i + 23..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        arrivals.lock().expect("arrivals").entry(id).or_insert(at);
    }
    "ok"
}

/// Runs the escalation latency benchmark.
pub async fn run(common: &Common, args: EscalationArgs) -> anyhow::Result<()> {
    let arrivals: Arrivals = Arc::default();
    let app = axum::Router::new()
        .route("/hooks/bench", axum::routing::post(mattermost))
        .with_state(arrivals.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hooks/bench", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let dir = tempfile::TempDir::new()?;
    let mut server =
        start_server(common, dir.path(), &[("website_chat.toml", SHIPPED_RULES)]).await?;
    let url = server.url.clone();
    let http = crate::bench::http_client(64);
    let (_, admin, key) = tenant_and_site(common, dir.path(), &http, &url).await?;
    let resp = http
        .post(format!("{url}/admin/v1/destinations"))
        .bearer_auth(&admin)
        .json(&json!({ "name": "mattermost", "kind": "mattermost", "webhook_url": hook }))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!(
            "creating the Mattermost destination failed: {}",
            resp.text().await?
        );
    }

    let mut report = Vec::new();
    for &rate in &args.rates {
        let total = (rate * args.seconds) as usize;
        let mut tokens = Vec::with_capacity(total);
        for _ in 0..total {
            tokens.push(bootstrap(&http, &url, &key).await?);
        }
        let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut inflight = tokio::task::JoinSet::new();
        for token in tokens {
            tick.tick().await;
            let (http, url, sent) = (http.clone(), url.clone(), sent.clone());
            inflight.spawn(async move {
                let start = Instant::now();
                let r: Value = http
                    .post(format!("{url}/v1/widget/messages"))
                    .header("origin", ORIGIN)
                    .bearer_auth(&token)
                    .json(&json!({ "client_message_id": uuid::Uuid::now_v7(), "content": "Hi! Is the blue one in stock?" }))
                    .send()
                    .await?
                    .json()
                    .await?;
                let conv = r["conversation_id"].as_str().context("conversation id")?.to_owned();
                sent.lock().expect("sent").insert(conv, start);
                Ok::<(), anyhow::Error>(())
            });
        }
        while let Some(r) = inflight.join_next().await {
            r??;
        }
        // Wait for every post.
        let deadline = Instant::now() + Duration::from_secs(60);
        let latencies = loop {
            let sent = sent.lock().expect("sent").clone();
            let got = arrivals.lock().expect("arrivals").clone();
            let matched: Vec<Duration> = sent
                .iter()
                .filter_map(|(conv, start)| {
                    got.get(conv).map(|at| at.saturating_duration_since(*start))
                })
                .collect();
            if matched.len() == sent.len() {
                break matched;
            }
            if Instant::now() > deadline {
                bail!(
                    "only {} of {} escalations arrived within 60 s",
                    matched.len(),
                    sent.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut latencies = latencies;
        latencies.sort();
        let (p50, p99, max) = (
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
        );
        if !args.json {
            println!(
                "{rate} msg/s for {} s: visitor POST -> Mattermost post  p50 {p50:.1} ms  p99 {p99:.1} ms  max {max:.1} ms ({} posts)",
                args.seconds,
                latencies.len()
            );
        }
        report.push(json!({ "rate_per_s": rate, "posts": latencies.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max }));
    }
    if args.json {
        println!(
            "{}",
            json!({ "durability": common.durability, "rates": report })
        );
    }
    if let Some(pid) = server.child.id() {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    }
    let _ = server.child.wait().await;
    Ok(())
}

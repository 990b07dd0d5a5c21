//! `fleetprompt bench console`: how fast the operator console answers with
//! a tenant of realistic size, against a real `fleetprompt serve` child.
//!
//! It seeds a tenant through the widget API, as visitors would: one
//! conversation per visitor (10,000 by default) and one conversation of 500
//! messages; a rule gives every message a `noop` directive, which runs, so
//! the conversation's timeline holds signals, rule verdicts, directives,
//! attempts and results. Then, signed in as an admin member:
//! - the server time of the inbox's first page (`/console/conversations`)
//!   and of the long conversation's page (`/console/conversations/<id>`),
//!   p50/p99 over `--requests` sequential requests, read from the
//!   `Server-Timing` header every console answer carries (the handler and
//!   its rendering, without the network); the round trip on loopback is
//!   reported beside it;
//! - the latency from a visitor's message (`POST /v1/widget/messages`) to
//!   its event on an open inbox stream (`--stream-path`, SSE with the
//!   member's session), p50/p99 over `--stream-messages` messages, each
//!   matched by its conversation id.
//!
//! A page or stream that does not answer 200 (a build without the website
//! chat's console pages) is reported with its status and not timed.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::bench_ingest::{
    ORIGIN, ServerProc, bootstrap, percentile, start_server, tenant_and_site,
};
use crate::settings::Common;

/// Flags of `bench console`.
#[derive(Args)]
pub struct ConsoleArgs {
    /// Conversations to seed (one visitor and one message each).
    #[arg(long, default_value_t = 10_000)]
    pub conversations: usize,
    /// Messages of the one long conversation.
    #[arg(long, default_value_t = 500)]
    pub messages: usize,
    /// Timed requests per page (after 10 untimed ones).
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    /// Visitor messages timed to their arrival on the inbox stream (0 skips it).
    #[arg(long, default_value_t = 200)]
    pub stream_messages: usize,
    /// The inbox's live stream (SSE), under the console.
    #[arg(long, default_value = "/console/live")]
    pub stream_path: String,
    /// Concurrent visitors while seeding.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Every message gets a directive that runs at once, so a conversation's
/// timeline has directives, attempts and result signals as in production.
const RULE: &str = r#"
[[rule]]
id = "bench.console"
on = "webchat.message.received"

[[rule.directive]]
kind = "noop"
dedupe_key = "console:{{ signal.payload.message_id }}"
"#;

/// A visitor message; the conversation it went to.
async fn say(http: &reqwest::Client, url: &str, token: &str, text: &str) -> anyhow::Result<String> {
    let resp = http
        .post(format!("{url}/v1/widget/messages"))
        .header("origin", ORIGIN)
        .bearer_auth(token)
        .json(&json!({ "client_message_id": uuid::Uuid::now_v7(), "content": text }))
        .send()
        .await?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("a visitor message was refused: {status} {v}");
    }
    Ok(v["conversation_id"]
        .as_str()
        .with_context(|| format!("no conversation id in {v}"))?
        .to_owned())
}

/// Seeds `n` one-message conversations from `concurrency` senders.
async fn seed_conversations(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (http, url, key, next) = (http.clone(), url.to_owned(), key.to_owned(), next.clone());
        tasks.spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let token = bootstrap(&http, &url, &key).await?;
                say(&http, &url, &token, "Hello, is my order on its way?").await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// An admin member of the tenant, added with the CLI, and its session
/// cookie (`fleetprompt_session=…`) from signing in over the API.
async fn member_session(
    common: &Common,
    data: &std::path::Path,
    http: &reqwest::Client,
    url: &str,
    slug: &str,
) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let email = "bench-console@fleetprompt.test";
    let mut cmd = Command::new(&exe);
    cmd.args([
        "user", "add", "--tenant", slug, "--email", email, "--role", "admin", "--json",
    ])
    .arg("--data-dir")
    .arg(data);
    if let Some(u) = &common.database_url {
        cmd.arg("--database-url").arg(u);
    }
    let out = cmd.output().await?;
    if !out.status.success() {
        bail!("user add failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let added: Value = serde_json::from_slice(&out.stdout)?;
    let password = added["password"].as_str().context("password")?;
    let resp = http
        .post(format!("{url}/admin/v1/session"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("sign-in failed: {}", resp.status());
    }
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("fleetprompt_session="))
        .and_then(|v| v.split(';').next())
        .context("no session cookie")?
        .to_owned();
    Ok(cookie)
}

/// Waits until no directive of the tenant is pending or running, so the
/// timings are of a settled tenant (up to two minutes).
async fn settle(http: &reqwest::Client, url: &str, admin: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    for status in ["pending", "running"] {
        loop {
            let v: Value = http
                .get(format!("{url}/admin/v1/directives?status={status}&limit=1"))
                .bearer_auth(admin)
                .send()
                .await?
                .json()
                .await?;
            if v["directives"].as_array().is_none_or(Vec::is_empty) {
                break;
            }
            if Instant::now() > deadline {
                bail!("directives were still {status} after two minutes");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Server time (from `Server-Timing: app;dur=…`) and round trips of one page.
struct PageTimes {
    path: String,
    status: u16,
    server: Vec<Duration>,
    round_trip: Vec<Duration>,
    bytes: usize,
}

fn server_timing(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp.headers().get("server-timing")?.to_str().ok()?;
    let ms: f64 = v
        .split(',')
        .find_map(|m| m.trim().strip_prefix("app;dur="))?
        .parse()
        .ok()?;
    Some(Duration::from_secs_f64(ms / 1000.0))
}

async fn time_page(
    http: &reqwest::Client,
    url: &str,
    cookie: &str,
    path: &str,
    requests: usize,
) -> anyhow::Result<PageTimes> {
    let mut t = PageTimes {
        path: path.to_owned(),
        status: 0,
        server: Vec::with_capacity(requests),
        round_trip: Vec::with_capacity(requests),
        bytes: 0,
    };
    for i in 0..requests + 10 {
        let start = Instant::now();
        let resp = http
            .get(format!("{url}{path}"))
            .header("cookie", cookie)
            .send()
            .await?;
        t.status = resp.status().as_u16();
        let server = server_timing(&resp);
        let body = resp.bytes().await?;
        let rt = start.elapsed();
        if t.status != 200 {
            // Not there on this build: say so, time nothing.
            return Ok(t);
        }
        t.bytes = body.len();
        if i >= 10 {
            t.server
                .push(server.context("a console answer without Server-Timing")?);
            t.round_trip.push(rt);
        }
    }
    t.server.sort();
    t.round_trip.sort();
    Ok(t)
}

/// The result of the stream phase.
enum StreamTimes {
    /// The stream did not open (its status or content type).
    Unavailable(String),
    /// Latencies, sorted, and how many messages never showed up.
    Measured(Vec<Duration>, usize),
}

/// Reads server-sent events from `resp`, sending each `data:` with the
/// time it arrived.
async fn read_events(mut resp: reqwest::Response, tx: mpsc::UnboundedSender<(Instant, String)>) {
    let mut buf = String::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let at = Instant::now();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let data: String = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect::<Vec<_>>()
                .join("\n");
            if tx.send((at, data)).is_err() {
                return;
            }
        }
    }
}

async fn time_stream(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    cookie: &str,
    path: &str,
    messages: usize,
) -> anyhow::Result<StreamTimes> {
    // No overall timeout on the stream's client: the stream stays open.
    let stream_client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let resp = stream_client
        .get(format!("{url}{path}"))
        .header("cookie", cookie)
        .header("accept", "text/event-stream")
        .send()
        .await?;
    let kind = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if resp.status() != 200 || !kind.starts_with("text/event-stream") {
        return Ok(StreamTimes::Unavailable(format!(
            "{path} answered HTTP {} ({kind})",
            resp.status().as_u16()
        )));
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let reader = tokio::spawn(read_events(resp, tx));
    let mut visitors = Vec::with_capacity(16);
    for _ in 0..16 {
        visitors.push(bootstrap(http, url, key).await?);
    }
    // Past the stream's first event (`ready`).
    tokio::time::sleep(Duration::from_millis(200)).await;
    while rx.try_recv().is_ok() {}
    let mut latencies = Vec::with_capacity(messages);
    let mut lost = 0;
    for n in 0..messages {
        let start = Instant::now();
        let conversation = say(http, url, &visitors[n % visitors.len()], "Any news?").await?;
        let deadline = start + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some((at, data))) if data.contains(&conversation) => {
                    latencies.push(at.duration_since(start));
                    break;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    lost += 1;
                    break;
                }
            }
        }
        // Events of this message that came late are not the next one's.
        tokio::time::sleep(Duration::from_millis(5)).await;
        while rx.try_recv().is_ok() {}
    }
    reader.abort();
    latencies.sort();
    Ok(StreamTimes::Measured(latencies, lost))
}

fn stop(server: &mut ServerProc) {
    if let Some(pid) = server.child.id() {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    }
}

/// Runs the console benchmark.
pub async fn run(common: &Common, args: ConsoleArgs) -> anyhow::Result<()> {
    let dir = tempfile::TempDir::new()?;
    let mut server = start_server(common, dir.path(), &[("bench.toml", RULE)]).await?;
    let url = server.url.clone();
    let http = crate::bench::http_client(args.concurrency);
    let (tenant, admin, key) = tenant_and_site(common, dir.path(), &http, &url).await?;
    let slug = tenant["slug"].as_str().context("slug")?.to_owned();
    let cookie = member_session(common, dir.path(), &http, &url, &slug).await?;

    let seed_start = Instant::now();
    // The long conversation first, so the inbox's first page is of the
    // one-message conversations seeded after it.
    let long_visitor = bootstrap(&http, &url, &key).await?;
    let mut long = String::new();
    for n in 0..args.messages {
        long = say(
            &http,
            &url,
            &long_visitor,
            &format!("Message {n} of a long conversation."),
        )
        .await?;
    }
    seed_conversations(&http, &url, &key, args.conversations, args.concurrency).await?;
    settle(&http, &url, &admin).await?;
    let seeded = seed_start.elapsed();
    // Past the upkeep's next statistics pass over the fresh tables.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let inbox = time_page(
        &http,
        &url,
        &cookie,
        "/console/conversations",
        args.requests,
    )
    .await?;
    let conversation = time_page(
        &http,
        &url,
        &cookie,
        &format!("/console/conversations/{long}"),
        args.requests,
    )
    .await?;
    let stream = if args.stream_messages > 0 {
        Some(
            time_stream(
                &http,
                &url,
                &key,
                &cookie,
                &args.stream_path,
                args.stream_messages,
            )
            .await?,
        )
    } else {
        None
    };
    stop(&mut server);
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
    let page_json = |t: &PageTimes| {
        json!({
            "path": t.path, "status": t.status, "bytes": t.bytes, "samples": t.server.len(),
            "server_ms": { "p50": percentile(&t.server, 0.5), "p99": percentile(&t.server, 0.99), "max": percentile(&t.server, 1.0) },
            "round_trip_ms": { "p50": percentile(&t.round_trip, 0.5), "p99": percentile(&t.round_trip, 0.99) },
        })
    };
    let stream_json = match &stream {
        None => Value::Null,
        Some(StreamTimes::Unavailable(why)) => json!({ "unavailable": why }),
        Some(StreamTimes::Measured(l, lost)) => json!({
            "path": args.stream_path, "samples": l.len(), "lost": lost,
            "latency_ms": { "p50": percentile(l, 0.5), "p99": percentile(l, 0.99), "max": percentile(l, 1.0) },
        }),
    };
    if args.json {
        println!(
            "{}",
            json!({
                "backend": backend, "durability": common.durability,
                "conversations": args.conversations + 1, "long_conversation_messages": args.messages,
                "seed_seconds": seeded.as_secs_f64(),
                "inbox": page_json(&inbox), "conversation": page_json(&conversation),
                "stream": stream_json,
            })
        );
        return Ok(());
    }
    println!(
        "backend                  {backend} (durability {})",
        common.durability
    );
    println!(
        "seeded                   {} conversations (one of {} messages) in {:.1} s",
        args.conversations + 1,
        args.messages,
        seeded.as_secs_f64()
    );
    for (label, t) in [
        ("inbox first page", &inbox),
        ("conversation page", &conversation),
    ] {
        if t.status != 200 {
            println!(
                "{label:<24} {} answered HTTP {}: not timed",
                t.path, t.status
            );
            continue;
        }
        println!(
            "{label:<24} server p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms; round trip p50 {:.2} ms  p99 {:.2} ms ({} requests, {} KiB)",
            percentile(&t.server, 0.5),
            percentile(&t.server, 0.99),
            percentile(&t.server, 1.0),
            percentile(&t.round_trip, 0.5),
            percentile(&t.round_trip, 0.99),
            t.server.len(),
            t.bytes / 1024
        );
    }
    match &stream {
        None => {}
        Some(StreamTimes::Unavailable(why)) => {
            println!("message to open inbox    not measured: {why}");
        }
        Some(StreamTimes::Measured(l, lost)) => println!(
            "message to open inbox    p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms ({} messages on {}, {lost} never arrived)",
            percentile(l, 0.5),
            percentile(l, 0.99),
            percentile(l, 1.0),
            l.len(),
            args.stream_path
        ),
    }
    Ok(())
}

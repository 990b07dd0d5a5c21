//! `fleetprompt bench engine`: how fast directives are created and executed.
//!
//! Runs the real engine (the same apalis worker, claims and batched
//! completions as `serve`) in this process against a fresh SQLite file or the
//! given PostgreSQL database, with a fresh tenant per run. A producer creates
//! `noop` directives in batched transactions while the worker drains them;
//! a run ends when every directive has succeeded and has its attempt row.
//! Then, with the worker idle, directives are created one at a time to
//! measure how soon each starts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use fleetprompt_core::secret::MasterKey;
use fleetprompt_core::{DirectiveId, DirectiveKind, Origin, RetryPolicy, TenantId};
use fleetprompt_engine::{DirectiveRequest, Engine, EngineConfig};
use fleetprompt_store::Db;
use fleetprompt_store::db::Durability;
use fleetprompt_store::directive::{self, NewDirective};
use serde_json::json;
use tokio::sync::watch;

use crate::settings::Common;

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// No-op directives created and executed per second, and idle start latency.
    Engine(EngineArgs),
    /// Workflow rule evaluation: N rules against one signal, and routing throughput.
    Rules(RulesArgs),
    /// Visitor messages over HTTP against a real server: throughput, latency, memory.
    Ingest(crate::bench_ingest::IngestArgs),
    /// From a visitor's message to the Mattermost post, with the shipped rules.
    Escalation(crate::bench_escalation::EscalationArgs),
    /// The operator console with 10,000 conversations: server time of the inbox and of a long conversation, and a message's latency to an open inbox.
    Console(crate::bench_console::ConsoleArgs),
}

/// Flags of `bench rules`.
#[derive(Args)]
pub struct RulesArgs {
    /// Rules listening to the benchmark signal's type.
    #[arg(long, default_value_t = 1_000)]
    pub rules: usize,
    /// Routing passes to time.
    #[arg(long, default_value_t = 200)]
    pub iterations: usize,
}

/// Flags of `bench engine`.
#[derive(Args)]
pub struct EngineArgs {
    /// Directives per run.
    #[arg(long, default_value_t = 50_000)]
    pub directives: usize,
    /// Runs; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Directives per producer transaction.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Worker concurrency: directives claimed and not yet completed. High
    /// values let the next claim overlap the previous batch's commit on
    /// PostgreSQL; SQLite's single writer does best with smaller batches.
    /// Default: 512 on SQLite, 2048 on PostgreSQL.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Directives created one at a time on an idle worker to measure start latency.
    #[arg(long, default_value_t = 200)]
    pub latency_samples: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs a benchmark.
pub async fn run(common: &Common, cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Engine(args) => engine(common, args).await,
        BenchCommand::Rules(args) => rules(args),
        BenchCommand::Ingest(args) => crate::bench_ingest::run(common, args).await,
        BenchCommand::Escalation(args) => crate::bench_escalation::run(common, args).await,
        BenchCommand::Console(args) => crate::bench_console::run(common, args).await,
    }
}

struct RunResult {
    created_per_s: f64,
    executed_per_s: f64,
    seconds: f64,
}

async fn open(common: &Common) -> anyhow::Result<(Db, Option<tempfile::TempDir>)> {
    let durability: Durability = common.durability.parse().map_err(anyhow::Error::msg)?;
    let (url, dir) = match &common.database_url {
        Some(url) => (url.clone(), None),
        None => {
            let dir = tempfile::TempDir::new()?;
            (
                format!("sqlite://{}", dir.path().join("bench.db").display()),
                Some(dir),
            )
        }
    };
    let db = Db::connect(&url, durability).await.context("connecting")?;
    fleetprompt_store::migrate::run(&db).await?;
    Ok((db, dir))
}

async fn new_tenant(db: &Db) -> anyhow::Result<fleetprompt_core::TenantId> {
    let slug = format!(
        "bench-{}",
        fleetprompt_core::secret::random_token(6)
            .to_lowercase()
            .replace(['-', '_'], "x")
    );
    let slug = format!("b{}", &slug[..slug.len().min(40)]);
    let mut tx = db.begin().await?;
    let (t, _) = fleetprompt_store::tenant::create(&mut tx, &slug).await?;
    tx.commit().await?;
    Ok(t.id)
}

fn concurrency(args: &EngineArgs, db: &Db) -> usize {
    args.concurrency.unwrap_or(match db.backend() {
        fleetprompt_store::Backend::Sqlite => 512,
        fleetprompt_store::Backend::Postgres => 2048,
    })
}

fn engine_config(args: &EngineArgs, db: &Db) -> EngineConfig {
    let concurrency = concurrency(args, db);
    EngineConfig {
        concurrency,
        claim_batch: concurrency.min(1000),
        complete_batch: 1000,
        ..EngineConfig::default()
    }
}

async fn engine(common: &Common, args: EngineArgs) -> anyhow::Result<()> {
    if args.directives == 0 || args.runs == 0 || args.batch == 0 {
        bail!("--directives, --runs and --batch must be at least 1");
    }
    let (db, _dir) = open(common).await?;
    let backend = db.backend().as_str();
    eprintln!(
        "bench engine: {backend}, {} noop directives x {} runs, batch {}, concurrency {}",
        args.directives,
        args.runs,
        args.batch,
        concurrency(&args, &db)
    );
    let mut results = Vec::new();
    for run in 1..=args.runs {
        let r = one_run(&db, &args).await?;
        eprintln!(
            "  run {run}: {:.0} created/s, {:.0} created+executed/s ({:.2} s)",
            r.created_per_s, r.executed_per_s, r.seconds
        );
        results.push(r);
    }
    results.sort_by(|a, b| a.executed_per_s.total_cmp(&b.executed_per_s));
    let median = &results[results.len() / 2];
    let latencies = start_latency(&db, &args).await?;
    let pct = |p: f64| -> i64 {
        if latencies.is_empty() {
            return 0;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i]
    };
    if args.json {
        println!(
            "{}",
            json!({
                "backend": backend,
                "durability": common.durability,
                "directives": args.directives,
                "runs": args.runs,
                "executed_per_s_median": median.executed_per_s.round(),
                "created_per_s_median": median.created_per_s.round(),
                "executed_per_s_all": results.iter().map(|r| r.executed_per_s.round()).collect::<Vec<_>>(),
                "idle_start_latency_ms": { "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0), "samples": latencies.len() },
            })
        );
    } else {
        println!(
            "backend                     {backend} (durability {})",
            common.durability
        );
        println!("directives per run          {}", args.directives);
        println!(
            "created+executed per second {:.0} (median of {})",
            median.executed_per_s, args.runs
        );
        println!("created per second          {:.0}", median.created_per_s);
        println!(
            "idle start latency (ms)     p50 {}  p99 {}  max {}  ({} samples)",
            pct(0.5),
            pct(0.99),
            pct(1.0),
            latencies.len()
        );
    }
    db.close().await;
    Ok(())
}

async fn start_worker(
    db: &Db,
    args: &EngineArgs,
) -> (
    Arc<Engine>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let engine = Engine::new(
        db.clone(),
        MasterKey::generate(),
        engine_config(args, db),
        crate::packages(),
    );
    let (stop, stop_rx) = watch::channel(false);
    let handle = tokio::spawn(fleetprompt_engine::worker::supervise(
        engine.clone(),
        stop_rx,
    ));
    (engine, stop, handle)
}

async fn one_run(db: &Db, args: &EngineArgs) -> anyhow::Result<RunResult> {
    let tenant = new_tenant(db).await?;
    let (_engine, stop, worker) = start_worker(db, args).await;
    let kind = DirectiveKind::parse("noop")?;
    let origin = Origin::System {
        component: "bench".into(),
    };
    let start = Instant::now();
    let producer = {
        let db = db.clone();
        let n = args.directives;
        let batch = args.batch;
        tokio::spawn(async move {
            let mut made = 0;
            let mut last = None;
            while made < n {
                let size = batch.min(n - made);
                let now = fleetprompt_core::time::now_ms();
                let rows: Vec<(TenantId, NewDirective)> = (made..made + size)
                    .map(|i| {
                        (
                            tenant,
                            NewDirective {
                                id: DirectiveId::new(),
                                kind: kind.clone(),
                                args: json!({}),
                                dedupe_key: format!("bench:{i}"),
                                subject: None,
                                retry: RetryPolicy::default(),
                                run_at: now,
                                origin: origin.clone(),
                                caused_by: None,
                            },
                        )
                    })
                    .collect();
                let mut tx = db.begin().await?;
                let created = directive::insert_many(&mut tx, &rows)
                    .await?
                    .iter()
                    .filter(|c| matches!(c, directive::Created::New(_)))
                    .count();
                tx.commit().await?;
                anyhow::ensure!(
                    created == size,
                    "only {created} of {size} directives were new"
                );
                made += size;
                last = rows.last().map(|(_, d)| d.id);
            }
            Ok::<_, anyhow::Error>((start.elapsed(), last))
        })
    };
    let (created_in, last) = producer.await??;
    // Waits on the last directive created, by primary key, before counting:
    // any query over the whole queue (a count by status, or the backlog
    // through the queue's index, 140 ms each on PostgreSQL mid-run) polled
    // while the worker runs takes a core from the database being measured.
    // Claims go in creation order, so when the last is done at most the
    // worker's concurrency is still running.
    if let Some(last) = last {
        while !directive::get(db, tenant, last).await?.status.is_terminal() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    loop {
        let counts = directive::count_by_status(db, tenant).await?;
        let done = counts
            .iter()
            .find(|(s, _)| s == "succeeded")
            .map(|(_, n)| *n)
            .unwrap_or(0);
        if done as usize >= args.directives {
            break;
        }
        if let Some((_, n)) = counts.iter().find(|(s, _)| s == "failed") {
            bail!("{n} noop directives failed");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let _ = stop.send(true);
    let _ = worker.await;
    let attempts = directive::count_attempts(db, tenant).await?;
    anyhow::ensure!(
        attempts as usize == args.directives,
        "{attempts} attempt rows for {} directives",
        args.directives
    );
    Ok(RunResult {
        created_per_s: args.directives as f64 / created_in.as_secs_f64(),
        executed_per_s: args.directives as f64 / elapsed.as_secs_f64(),
        seconds: elapsed.as_secs_f64(),
    })
}

/// Creates directives one at a time on an idle worker, each after the
/// previous one finished, and reads how long each waited to start.
async fn start_latency(db: &Db, args: &EngineArgs) -> anyhow::Result<Vec<i64>> {
    if args.latency_samples == 0 {
        return Ok(vec![]);
    }
    let tenant = new_tenant(db).await?;
    let (engine, stop, worker) = start_worker(db, args).await;
    // Let the worker settle into its idle wait.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..args.latency_samples {
        let req = DirectiveRequest {
            kind: "noop".into(),
            args: json!({}),
            dedupe_key: format!("latency:{i}"),
            max_attempts: None,
            subject: None,
            delay_ms: None,
            backoff: Default::default(),
        };
        let (created, _) = engine
            .create_directive(
                tenant,
                req,
                Origin::System {
                    component: "bench".into(),
                },
            )
            .await?;
        let id = created.id();
        loop {
            let d = directive::get(db, tenant, id).await?;
            if d.status.is_terminal() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Idle again before the next one, like a quiet server.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    let _ = worker.await;
    Ok(directive::start_latencies_ms(db, tenant).await?)
}

/// Writes `n` rules on one signal type (each with a CEL condition, half of
/// them true, and templated args and dedupe key) plus 50 rules on other
/// types, loads them as the server would, and times routing.
fn rules(args: RulesArgs) -> anyhow::Result<()> {
    use fleetprompt_workflows::{RouteContext, RuleSet, SignalInput};
    let dir = tempfile::TempDir::new()?;
    let mut text = String::new();
    for i in 0..args.rules {
        text.push_str(&format!(
            "[[rule]]\nid = \"r{i}\"\non = \"webchat.message.received\"\nwhen = 'signal.payload.n % 2 == {parity} && tenant == \"acme\"'\n\
             [[rule.directive]]\nkind = \"noop\"\ndedupe_key = \"r{i}:{{{{ signal.payload.conversation_id }}}}\"\n\
             args = {{ text = \"New chat: {{{{ signal.payload.content | truncate(50) }}}}\" }}\n\n",
            parity = i % 2
        ));
    }
    for i in 0..50 {
        text.push_str(&format!("[[rule]]\nid = \"other{i}\"\non = \"order.created\"\n[[rule.directive]]\nkind = \"noop\"\n\n"));
    }
    std::fs::create_dir_all(dir.path().join("tenants/acme"))?;
    std::fs::write(dir.path().join("tenants/acme/bench.toml"), text)?;
    let load_start = Instant::now();
    let set =
        RuleSet::load_dir(dir.path(), &Default::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let load = load_start.elapsed();
    let ctx = RouteContext::new(serde_json::Value::Null, chrono::Utc::now());
    let signal = |n: usize| SignalInput {
        id: format!("sig_{n}"),
        r#type: "webchat.message.received".into(),
        subject: "conversation:c1".into(),
        payload: json!({ "n": n, "conversation_id": "c1", "content": "Hello, I would like to know about your pricing plans" }),
        occurred_at: "2026-01-01T00:00:00Z".into(),
    };
    let mut matched = 0;
    let start = Instant::now();
    for i in 0..args.iterations {
        let evs = set.route("acme", &signal(i), &ctx);
        matched += evs.len();
    }
    let per_signal = start.elapsed() / args.iterations as u32;
    anyhow::ensure!(
        matched == args.rules * args.iterations,
        "every rule on the type is evaluated"
    );
    // Throughput of the router on a signal type no rule listens to, and on
    // one that one rule listens to: the common case of a large rule set.
    let quiet = SignalInput {
        r#type: "webchat.session.started".into(),
        ..signal(0)
    };
    let n = 200_000;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(set.route("acme", &quiet, &ctx));
    }
    let quiet_rate = n as f64 / t.elapsed().as_secs_f64();
    println!("rules on the signal's type     {}", args.rules);
    println!(
        "load and compile               {:.1} ms",
        load.as_secs_f64() * 1000.0
    );
    println!(
        "route one signal through them  {:.3} ms ({:.0} signals/s)",
        per_signal.as_secs_f64() * 1000.0,
        1.0 / per_signal.as_secs_f64()
    );
    println!("route a signal no rule wants   {:.0} signals/s", quiet_rate);
    Ok(())
}

/// An HTTP client for load generation: a connection per sender.
pub fn http_client(connections: usize) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections * 2)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("static client configuration")
}

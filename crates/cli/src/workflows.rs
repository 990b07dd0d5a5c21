//! `fleetprompt workflows check|explain|push` and `fleetprompt replay`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use fleetprompt_core::time::{now_ms, parse_rfc3339};
use fleetprompt_workflows::{
    ArgsCheck, ArgsProblem, CheckOptions, Outcome, RouteContext, RuleSet, SignalInput,
};
use serde_json::{Value, json};

use crate::settings::Common;

/// Workflow rule commands.
#[derive(Subcommand)]
pub enum WorkflowsCommand {
    /// Validate every rule file; print `file:line:col: message` for each
    /// problem, and `file:line:col: warning: …` for an `on`/`cancel_on`
    /// that names a signal type nothing records.
    Check {
        /// The workflows directory.
        #[arg(default_value = "./workflows")]
        dir: PathBuf,
    },
    /// Show what each rule would do with a signal, creating nothing.
    Explain {
        /// The tenant whose rules apply.
        #[arg(long)]
        tenant: String,
        /// A JSON file: {"type", "subject", "payload", "id"?, "occurred_at"?}.
        #[arg(long)]
        signal: PathBuf,
        /// The workflows directory.
        #[arg(
            long = "workflows",
            env = "FLEETPROMPT_WORKFLOWS_DIR",
            default_value = "./workflows"
        )]
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Publish a directory's `*.toml` files as a tenant's rules, as
    /// `PUT /admin/v1/workflows/files/{name}` does, after checking them
    /// all together: one problem anywhere publishes nothing.
    Push(PushArgs),
}

/// Flags of `workflows push`.
#[derive(Args)]
pub struct PushArgs {
    /// The directory whose `*.toml` files are published (not recursive).
    pub dir: PathBuf,
    /// The tenant that publishes them.
    #[arg(long)]
    pub tenant: String,
    /// Also delete the tenant's published files that are not in `dir`.
    #[arg(long)]
    pub prune: bool,
    /// The server's workflows directory, whose rules the pushed files must
    /// not collide with.
    #[arg(
        long = "workflows",
        env = "FLEETPROMPT_WORKFLOWS_DIR",
        default_value = "./workflows"
    )]
    pub workflows: PathBuf,
}

/// Flags of `replay`.
#[derive(Args)]
pub struct ReplayArgs {
    /// The tenant whose signals are replayed.
    #[arg(long)]
    pub tenant: String,
    /// Only signals of this type.
    #[arg(long = "type")]
    pub signal_type: Option<String>,
    /// Only signals of this subject.
    #[arg(long)]
    pub subject: Option<String>,
    /// Only signals recorded at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only signals recorded before this RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
    /// Report what would be created without creating it.
    #[arg(long)]
    pub dry_run: bool,
    /// The workflows directory.
    #[arg(
        long = "workflows",
        env = "FLEETPROMPT_WORKFLOWS_DIR",
        default_value = "./workflows"
    )]
    pub dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn check_options() -> CheckOptions {
    let registry = std::sync::Arc::new(crate::handler_registry());
    CheckOptions {
        known_kinds: Some(registry.kinds().into_iter().map(str::to_owned).collect()),
        destinations: None,
        args_check: Some(ArgsCheck(std::sync::Arc::new(move |kind, args| {
            registry.check_args(kind, args).map_err(|e| ArgsProblem {
                message: e.to_string(),
                path: e.path,
            })
        }))),
    }
}

/// Loads a rule set or turns its problems into one error listing each.
fn load(dir: &Path) -> anyhow::Result<RuleSet> {
    RuleSet::load_dir(dir, &check_options()).map_err(|e| anyhow::anyhow!("{}", e.report()))
}

/// Runs a workflows command; `Ok(false)` means problems were reported.
pub async fn run(common: &Common, cmd: WorkflowsCommand) -> anyhow::Result<bool> {
    match cmd {
        WorkflowsCommand::Push(args) => push(common, args).await,
        WorkflowsCommand::Check { dir } => match RuleSet::load_dir(&dir, &check_options()) {
            Ok(set) => {
                // Warnings do not fail the check: a signal posted through
                // the admin API may carry a type no code records.
                let known = fleetprompt_engine::handlers::signal_types(&crate::handler_registry());
                let warnings = set.unknown_signal_types(&known);
                for w in &warnings {
                    eprintln!("{w}");
                }
                println!(
                    "{}: {} rules in {} files are valid{}",
                    dir.display(),
                    set.len(),
                    set.files().len(),
                    match warnings.len() {
                        0 => String::new(),
                        n => format!(", with {n} warning(s)"),
                    }
                );
                Ok(true)
            }
            Err(e) => {
                // Never empty: an I/O failure is a diagnostic too.
                let problems = e.diagnostics();
                for p in &problems {
                    eprintln!("{p}");
                }
                eprintln!(
                    "{} problem(s); no rule from this set would take effect",
                    problems.len()
                );
                Ok(false)
            }
        },
        WorkflowsCommand::Explain {
            tenant,
            signal,
            dir,
            json,
        } => {
            let set = load(&dir)?;
            let text = std::fs::read_to_string(&signal)
                .with_context(|| format!("reading {}", signal.display()))?;
            let v: Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", signal.display()))?;
            let input = SignalInput {
                id: v["id"].as_str().unwrap_or("sig_explain").to_owned(),
                r#type: v["type"]
                    .as_str()
                    .context("the signal needs a \"type\"")?
                    .to_owned(),
                subject: v["subject"].as_str().unwrap_or("explain:1").to_owned(),
                payload: v.get("payload").cloned().unwrap_or_else(|| json!({})),
                occurred_at: v["occurred_at"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| fleetprompt_core::time::to_rfc3339(now_ms())),
            };
            let site = v.get("site").cloned().unwrap_or(Value::Null);
            let evaluations = set.explain(
                &tenant,
                &input,
                &RouteContext::new(site, chrono::Utc::now()),
            );
            if json {
                println!("{}", serde_json::to_string_pretty(&evaluations)?);
                return Ok(true);
            }
            for ev in &evaluations {
                let head = format!("rule {} ({})", ev.rule_id, ev.file.display());
                match &ev.outcome {
                    Outcome::Matched { directives } => {
                        println!("MATCHED  {head}");
                        for d in directives {
                            println!("    -> {} dedupe_key={:?}", d.kind, d.dedupe_key);
                            println!("       args={}", d.args);
                            if let Some(ms) = d.delay_ms {
                                println!("       delay={ms}ms cancel_on={:?}", d.cancel_on);
                            }
                            if let Some(t) = &d.throttle {
                                println!(
                                    "       throttle key={:?} window={}ms",
                                    t.key, t.window_ms
                                );
                            }
                        }
                    }
                    Outcome::Skipped { reason } => println!("skipped  {head}: {reason}"),
                    Outcome::Error { message } => println!("ERROR    {head}: {message}"),
                    Outcome::Emitted { signal } => println!("emits    {head}: {}", signal.r#type),
                }
            }
            if evaluations.is_empty() {
                println!("no rules apply to tenant {tenant}");
            }
            Ok(true)
        }
    }
}

/// `fleetprompt replay`.
pub async fn replay(common: &Common, args: ReplayArgs) -> anyhow::Result<()> {
    let time = |s: &Option<String>, flag: &str| -> anyhow::Result<Option<i64>> {
        s.as_deref()
            .map(|t| {
                parse_rfc3339(t).with_context(|| format!("--{flag} {t:?} is not an RFC 3339 time"))
            })
            .transpose()
    };
    let filter = fleetprompt_store::signal::ReplayFilter {
        signal_type: args.signal_type.clone(),
        subject: args.subject.clone(),
        since: time(&args.since, "since")?,
        until: time(&args.until, "until")?,
    };
    let (db, tenant, engine) = crate::tenant_engine(common, &args.tenant).await?;
    fleetprompt_engine::rules::load(&engine, &args.dir)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.report()))?;
    let report = engine.replay(tenant.id, &filter, args.dry_run).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} signals replayed{}: {} directives created, {} deduplicated, {} cancelled, {} rule errors",
            report.signals,
            if args.dry_run { " (dry run)" } else { "" },
            report.directives_created,
            report.directives_deduplicated,
            report.directives_cancelled,
            report.rule_errors
        );
    }
    db.close().await;
    Ok(())
}

/// `fleetprompt workflows push`; `Ok(false)` means problems were reported.
async fn push(common: &Common, args: PushArgs) -> anyhow::Result<bool> {
    let mut files = std::collections::BTreeMap::new();
    let entries =
        std::fs::read_dir(&args.dir).with_context(|| format!("reading {}", args.dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if !path.is_file() || path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{}: the name is not UTF-8", path.display()))?
            .to_owned();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        files.insert(name, text);
    }
    let (db, tenant, engine) = crate::tenant_engine(common, &args.tenant).await?;
    let result = push_files(&engine, tenant.id, &args, &files).await;
    db.close().await;
    match result {
        Ok(()) => Ok(true),
        Err(fleetprompt_engine::EngineError::InvalidWorkflow(problems)) => {
            for p in &problems {
                // The problem names the file as published; point at the
                // file on disk (a default or tenant file keeps its path).
                let file = if args.dir.join(&p.file).is_file() {
                    args.dir.join(&p.file)
                } else {
                    p.file.clone()
                };
                eprintln!("{}:{}:{}: {}", file.display(), p.line, p.col, p.message);
            }
            eprintln!("{} problem(s); nothing was published", problems.len());
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

async fn push_files(
    engine: &fleetprompt_engine::Engine,
    tenant: fleetprompt_core::TenantId,
    args: &PushArgs,
    files: &std::collections::BTreeMap<String, String>,
) -> Result<(), fleetprompt_engine::EngineError> {
    // The server's rules, so a pushed rule id that one of them already
    // has is refused here too.
    fleetprompt_engine::rules::load(engine, &args.workflows).await?;
    let mut changes: std::collections::BTreeMap<String, Option<String>> = files
        .iter()
        .map(|(n, t)| (n.clone(), Some(t.clone())))
        .collect();
    if args.prune {
        for f in engine.workflow_files(tenant).await? {
            changes.entry(f.name).or_insert(None);
        }
    }
    let actor = fleetprompt_core::Origin::System {
        component: "cli: workflows push".into(),
    };
    // All together: a rule may move from one file to another.
    let done = engine
        .change_workflow_files(tenant, &changes, actor)
        .await?;
    let mut changed = 0;
    for r in &done {
        let name = &r.name;
        match (&changes[name], r.changed) {
            (Some(_), true) => println!(
                "published {name} version {} sha256 {} ({} rule(s))",
                r.version,
                r.sha256,
                r.rules.len()
            ),
            (Some(_), false) => println!("unchanged {name}"),
            (None, _) => println!("deleted {name}"),
        }
        for w in &r.warnings {
            eprintln!(
                "{}",
                w.to_string().replacen(
                    name.as_str(),
                    &args.dir.join(name).display().to_string(),
                    1
                )
            );
        }
        changed += usize::from(r.changed);
    }
    println!(
        "{}: {} file(s), {changed} changed",
        args.dir.display(),
        files.len()
    );
    Ok(())
}

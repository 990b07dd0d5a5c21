//! `fleetprompt workflows check|explain` and `fleetprompt replay`.

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
    let registry = std::sync::Arc::new(fleetprompt_engine::handlers::platform());
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
pub fn run(cmd: WorkflowsCommand) -> anyhow::Result<bool> {
    match cmd {
        WorkflowsCommand::Check { dir } => match RuleSet::load_dir(&dir, &check_options()) {
            Ok(set) => {
                // Warnings do not fail the check: a signal posted through
                // the admin API may carry a type no code records.
                let known = fleetprompt_engine::handlers::signal_types(
                    &fleetprompt_engine::handlers::platform(),
                );
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

//! `prune`: deletes what has aged out, in batches, one tenant at a time.
//!
//! See [`fleetprompt_store::retention`] for exactly what goes and what is
//! always kept. Safe to run while servers are running, and to stop and rerun:
//! every batch is its own short transaction.

use anyhow::Context;
use clap::Args;
use fleetprompt_store::retention::{self, Counts, PackageRetention, Policy};

use crate::settings::Common;

/// `fleetprompt prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Delete records older than this: a duration such as `30d`, `12h` or `90d`.
    #[arg(long, value_parser = parse_age)]
    pub older_than: u64,
    /// Also delete failed directives (dead letters nobody re-drove).
    #[arg(long)]
    pub include_failed: bool,
    /// Count what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Rows of each kind per transaction.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub batch: i64,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
    /// Pretend the current time is this (ms since the epoch): lets tests
    /// age records without waiting or rewriting their ids.
    #[arg(long, hide = true)]
    pub now_ms: Option<i64>,
}

/// Ages under an hour are almost certainly a typo (`30m` for `30d`), and
/// would delete the history of work still in progress in people's heads.
fn parse_age(text: &str) -> Result<u64, String> {
    let ms = fleetprompt_workflows::parse_duration(text)?;
    if ms < 3_600_000 {
        return Err(format!("`{text}` is less than an hour; use at least 1h"));
    }
    Ok(ms)
}

/// Runs the prune and prints what it deleted (or would delete).
pub async fn run(common: &Common, args: PruneArgs) -> anyhow::Result<()> {
    let db = common.open_db().await?;
    fleetprompt_store::migrate::run(&db)
        .await
        .context("migrating")?;
    let policy = Policy {
        cutoff: args.now_ms.unwrap_or_else(fleetprompt_core::time::now_ms) - args.older_than as i64,
        include_failed: args.include_failed,
        batch: args.batch,
    };
    // The packages' tables go with the platform's, batch by batch.
    let packages = crate::packages();
    let parts: Vec<&dyn PackageRetention> = packages.iter().filter_map(|p| p.retention()).collect();
    let mut total = Counts::default();
    let mut per_tenant = Vec::new();
    for tenant in fleetprompt_store::tenant::list(&db).await? {
        let counts = if args.dry_run {
            retention::count(&db, tenant.id, &policy, &parts).await?
        } else {
            let mut counts = Counts::default();
            loop {
                let mut tx = db.begin().await?;
                let batch = retention::prune_batch(&mut tx, tenant.id, &policy, &parts)
                    .await
                    .with_context(|| format!("pruning tenant {}", tenant.slug))?;
                tx.commit().await?;
                counts.add(&batch);
                if batch.is_zero() {
                    break;
                }
            }
            counts
        };
        tracing::info!(tenant = %tenant.slug, ?counts, dry_run = args.dry_run, "pruned");
        total.add(&counts);
        per_tenant.push((tenant.slug, counts));
    }
    if args.json {
        let tenants: serde_json::Map<String, serde_json::Value> = per_tenant
            .into_iter()
            .map(|(slug, c)| (slug, serde_json::json!(c)))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "dry_run": args.dry_run,
                "cutoff_ms": policy.cutoff,
                "include_failed": args.include_failed,
                "total": total,
                "tenants": tenants,
            })
        );
    } else {
        let verb = if args.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        let packages: String = total
            .packages
            .iter()
            .map(|(kind, n)| format!(", {n} {kind}"))
            .collect();
        println!(
            "{verb}: {} directives ({} attempts), {} signals, {} rule evaluations{packages}",
            total.directives, total.attempts, total.signals, total.evaluations,
        );
    }
    Ok(())
}

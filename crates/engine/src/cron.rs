//! Schedule rules: each tick fires once per tenant, across all nodes.
//!
//! Every worker node runs this loop. A tick is claimed by moving the rule's
//! `last_tick` with a compare-and-set in the transaction that records the
//! tick's `cron.tick` signal and its directives (or the signal the rule
//! emits), so exactly one node fires it, and the dedupe keys
//! (`cron:<rule>:<tick>`) would stop a second one anyway. After downtime,
//! missed ticks are caught up at most once: `run-once` fires the latest
//! missed tick, `skip` fires none of them.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use fleetprompt_core::time::Millis;
use fleetprompt_core::{NewSignal, TenantId};
use fleetprompt_store::{cron as ticks, tenant};
use fleetprompt_workflows::{CronTrigger, Outcome, RouteContext};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::routing::SignalView;
use crate::{Engine, EngineError};

/// What to do with ticks missed while no node was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Fire the latest missed tick once.
    RunOnce,
    /// Fire none of them; wait for the next tick.
    Skip,
}

impl std::str::FromStr for CatchUp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "run-once" => Ok(Self::RunOnce),
            "skip" => Ok(Self::Skip),
            _ => Err(format!(
                "cron catch-up must be `run-once` or `skip`, not {s:?}"
            )),
        }
    }
}

/// A tick later than this after its time counts as missed.
const LATE: Millis = 60_000;

fn at(ms: Millis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_else(Utc::now)
}

/// The latest tick after `last` that is due at `now`, and how many were due.
fn latest_due(
    trigger: &CronTrigger,
    last: Millis,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, usize) {
    let mut due = None;
    let mut n = 0;
    let mut next = trigger.next_after(at(last));
    while let Some(t) = next {
        if t > now || n >= 100_000 {
            break;
        }
        due = Some(t);
        n += 1;
        next = trigger.next_after(t);
    }
    (due, n)
}

/// Fires every due tick once; returns how many fired.
pub async fn run_due(engine: &Engine, catch_up: CatchUp) -> Result<usize, EngineError> {
    let rules = engine.rules().current();
    if rules.cron_rules().is_empty() {
        return Ok(0);
    }
    let tenants = tenant::list(engine.db()).await?;
    let now = Utc::now();
    let mut fired = 0;
    for trigger in rules.cron_rules() {
        for t in tenants.iter().filter(|t| trigger.scope.applies_to(&t.slug)) {
            let Some(last) = ticks::last_tick(engine.db(), t.id, &trigger.rule_id).await? else {
                let mut tx = engine.db().begin().await?;
                ticks::start(&mut tx, t.id, &trigger.rule_id, now.timestamp_millis()).await?;
                tx.commit().await?;
                continue;
            };
            let (Some(tick), due) = latest_due(trigger, last, now) else {
                continue;
            };
            let missed = due > 1 || (now - tick).num_milliseconds() > LATE;
            let mut tx = engine.db().begin().await?;
            if !ticks::advance(
                &mut tx,
                t.id,
                &trigger.rule_id,
                last,
                tick.timestamp_millis(),
            )
            .await?
            {
                continue;
            }
            if missed && catch_up == CatchUp::Skip {
                tx.commit().await?;
                tracing::info!(rule = %trigger.rule_id, tenant = %t.slug, missed = due, "skipped missed cron ticks");
                continue;
            }
            fire(engine, &mut tx, t.id, &t.slug, trigger, tick).await?;
            tx.commit().await?;
            fired += 1;
        }
    }
    Ok(fired)
}

async fn fire(
    engine: &Engine,
    tx: &mut fleetprompt_store::Tx,
    tenant: TenantId,
    slug: &str,
    trigger: &CronTrigger,
    tick: DateTime<Utc>,
) -> Result<(), EngineError> {
    let rules = engine.rules().current();
    let ctx = RouteContext::new(Value::Null, Utc::now());
    let Some(ev) = rules.cron_tick(&trigger.scope, &trigger.rule_id, slug, tick, &ctx) else {
        return Ok(());
    };
    // The tick itself is a signal: the cause on the timeline of what it creates.
    let subject = format!("cron:{}", trigger.rule_id);
    let tick_signal = NewSignal::new(
        "cron.tick",
        &subject,
        json!({ "rule_id": trigger.rule_id, "tick": tick.to_rfc3339(), "schedule": trigger.schedule }),
        trigger.tick_key(tick),
        tick.timestamp_millis(),
    )?;
    let recorded = engine.record_in_tx(tx, tenant, &tick_signal).await?;
    if recorded.duplicate {
        return Ok(());
    }
    if let Outcome::Emitted { signal } = &ev.outcome {
        let s = NewSignal::new(
            &signal.r#type,
            &signal.subject,
            signal.payload.clone(),
            signal.idempotency_key.clone(),
            tick.timestamp_millis(),
        )?;
        engine.record_in_tx(tx, tenant, &s).await?;
        return Ok(());
    }
    let view = SignalView::of(recorded.id, &tick_signal);
    engine.apply_evaluation(tx, tenant, &view, ev).await?;
    Ok(())
}

/// Runs the scheduler until shutdown.
pub async fn run(engine: Arc<Engine>, catch_up: CatchUp, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = run_due(&engine, catch_up).await {
            tracing::error!(error = %e, "firing schedule rules failed");
        }
    }
}

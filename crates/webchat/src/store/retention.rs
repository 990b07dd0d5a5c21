//! The package's part of `fleetprompt prune`: ended conversations with
//! their messages, by the time they ended, unless a pending or running
//! directive names the conversation in its `subject`.
//!
//! Signals go by age alone (the platform's rule): a message kept in an
//! open (or protected) conversation may name a signal that was pruned. Its
//! `signal_id` then points at nothing, which the timeline tolerates;
//! keeping such signals would need an index on
//! `website_chat_messages.signal_id` that nothing else uses.
//!
//! Run by the platform's [`retention`](fleetprompt_store::retention) after
//! its own rows, in the same transaction per batch.

use fleetprompt_core::TenantId;
use fleetprompt_store::package::TxInner;
use fleetprompt_store::retention::{PackageRetention, Policy, cut_id};
use fleetprompt_store::{Db, Result, Tx, corrupt, on_db, on_tx};
use futures::future::BoxFuture;

/// The package's retention, handed to the prune by
/// [`Package::retention`](fleetprompt_engine::package::Package::retention).
pub static RETENTION: Retention = Retention;

/// Website chat's [`PackageRetention`].
pub struct Retention;

/// The kinds it reports, in the order of its counts.
const KINDS: &[&str] = &["conversations", "messages"];

// $1 is the tenant, $2 the cutoff in ms, $3 the cutoff id.
macro_rules! old_conversations {
    () => {
        "x.tenant_id = $1 AND x.id < $3 AND x.status <> 'open'
         AND x.ended_at IS NOT NULL AND x.ended_at < $2
         AND NOT EXISTS (SELECT 1 FROM directives p WHERE p.tenant_id = x.tenant_id
                         AND p.subject = 'conversation:' || x.id AND p.status IN ('pending', 'running'))"
    };
}

impl PackageRetention for Retention {
    fn kinds(&self) -> &'static [&'static str] {
        KINDS
    }

    fn count<'a>(
        &'a self,
        db: &'a Db,
        tenant: TenantId,
        p: &'a Policy,
    ) -> BoxFuture<'a, Result<Vec<u64>>> {
        Box::pin(count(db, tenant, p))
    }

    fn prune_batch<'a>(
        &'a self,
        tx: &'a mut Tx,
        tenant: TenantId,
        p: &'a Policy,
    ) -> BoxFuture<'a, Result<Vec<u64>>> {
        Box::pin(prune_batch(tx, tenant, p))
    }
}

/// Ended conversations and their messages a prune would delete.
async fn count(db: &Db, tenant: TenantId, p: &Policy) -> Result<Vec<u64>> {
    let t = tenant.to_string();
    let queries: [&'static str; 2] = [
        concat!(
            "SELECT COUNT(*) FROM website_chat_conversations x WHERE ",
            old_conversations!()
        ),
        concat!(
            "SELECT COUNT(*) FROM website_chat_messages m JOIN website_chat_conversations x
               ON x.tenant_id = m.tenant_id AND x.id = m.conversation_id WHERE ",
            old_conversations!()
        ),
    ];
    let mut n = Vec::with_capacity(queries.len());
    for sql in queries {
        let v: i64 = on_db!(db, c => {
            sqlx::query_scalar(sql)
                .bind(&t)
                .bind(p.cutoff)
                .bind(cut_id("conv", p.cutoff))
                .fetch_one(c)
                .await?
        });
        n.push(v.max(0) as u64);
    }
    Ok(n)
}

/// Deletes one batch of ended conversations, then the messages of exactly
/// those that went.
async fn prune_batch(tx: &mut Tx, tenant: TenantId, p: &Policy) -> Result<Vec<u64>> {
    let t = tenant.to_string();
    let convs: Vec<String> = on_tx!(tx, c => {
        sqlx::query_scalar(concat!(
            "DELETE FROM website_chat_conversations WHERE tenant_id = $1 AND status <> 'open'
               AND id IN (SELECT x.id FROM website_chat_conversations x WHERE ",
            old_conversations!(),
            " ORDER BY x.id LIMIT $4) RETURNING id"
        ))
        .bind(&t)
        .bind(p.cutoff)
        .bind(cut_id("conv", p.cutoff))
        .bind(p.batch)
        .fetch_all(&mut *c)
        .await?
    });
    let mut messages = 0;
    if !convs.is_empty() {
        messages = delete_of_conversations(tx, "website_chat_messages", &t, &convs).await?;
        delete_of_conversations(tx, "website_chat_reads", &t, &convs).await?;
    }
    Ok(vec![convs.len() as u64, messages])
}

/// Deletes the rows of `table` (a name fixed in this module: messages or
/// read marks) that belong to `conversations`. The statements differ by
/// backend only in how a list is bound: a PostgreSQL array, or a JSON
/// array that SQLite unpacks with `json_each`.
async fn delete_of_conversations(
    tx: &mut Tx,
    table: &'static str,
    tenant: &str,
    conversations: &[String],
) -> Result<u64> {
    let n = match tx.inner_mut() {
        TxInner::Postgres(t) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE tenant_id = $1 AND conversation_id = ANY($2)"
        )))
        .bind(tenant)
        .bind(conversations)
        .execute(&mut **t)
        .await?
        .rows_affected(),
        TxInner::Sqlite(t) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE tenant_id = $1
               AND conversation_id IN (SELECT value FROM json_each($2))"
        )))
        .bind(tenant)
        .bind(serde_json::to_string(conversations).map_err(corrupt)?)
        .execute(&mut **t)
        .await?
        .rows_affected(),
    };
    Ok(n)
}

//! Retention: deleting what has aged out, in small batches, one tenant at a
//! time.
//!
//! What goes, when older than the cutoff:
//! - finished directives (`succeeded`, `cancelled`, and `failed` when asked)
//!   with their attempts, by the time they finished;
//! - signals, by the time they were recorded;
//! - rule evaluations, by the time they ran;
//! - ended website chat conversations with their messages, by the time they
//!   ended.
//!
//! What never goes: pending or running directives, and anything one of them
//! points at: the signal or directive in its `caused_by`, that signal's rule
//! evaluations, and the conversation named by its `subject`.
//!
//! Signals go by age alone otherwise: a message kept in an open (or
//! protected) conversation may name a signal that was pruned. Its
//! `signal_id` then points at nothing, which the timeline tolerates; keeping
//! such signals would need an index on `website_chat_messages.signal_id`
//! that nothing else uses.
//!
//! Every batch is its own transaction, so a prune never holds locks for long
//! and can be stopped and rerun at any time. Ids are UUIDv7 in their string
//! form, so `id < prefix_<cutoff ms in hex>` bounds each scan to rows created
//! before the cutoff and the primary key serves it.

use fleetprompt_core::TenantId;
use fleetprompt_core::time::Millis;
use serde::Serialize;

use crate::db::TxInner;
use crate::{Db, Result, Tx, on_db, on_tx};

/// What to prune.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Records older than this (ms since the epoch) go.
    pub cutoff: Millis,
    /// Also delete `failed` directives (dead letters nobody re-drove).
    pub include_failed: bool,
    /// Rows per batch (per transaction).
    pub batch: i64,
}

/// How many rows of each kind were (or, in a dry run, would be) deleted.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Finished directives.
    pub directives: u64,
    /// Their attempts.
    pub attempts: u64,
    /// Signals.
    pub signals: u64,
    /// Rule evaluations.
    pub evaluations: u64,
    /// Ended conversations.
    pub conversations: u64,
    /// Their messages.
    pub messages: u64,
}

impl Counts {
    /// Adds another tenant's counts.
    pub fn add(&mut self, o: Counts) {
        self.directives += o.directives;
        self.attempts += o.attempts;
        self.signals += o.signals;
        self.evaluations += o.evaluations;
        self.conversations += o.conversations;
        self.messages += o.messages;
    }
}

/// The smallest id string, with `prefix`, of a UUIDv7 minted at `ms` or
/// later: the first 12 hex digits of a UUIDv7 are its milliseconds.
fn cut_id(prefix: &str, ms: Millis) -> String {
    let hex = format!("{:012x}", ms.clamp(0, 0xffff_ffff_ffff));
    if prefix.is_empty() {
        hex
    } else {
        format!("{prefix}_{hex}")
    }
}

/// The third status a prune may delete: `failed` when asked, otherwise a
/// repeat of `cancelled` (so the SQL stays static).
fn third_status(p: &Policy) -> &'static str {
    if p.include_failed {
        "failed"
    } else {
        "cancelled"
    }
}

/// Rows pointed at by a live directive are kept: this is the test, for a
/// row of alias `x` whose referenced id is `$col`.
macro_rules! unreferenced {
    ($col:literal) => {
        concat!(
            "NOT EXISTS (SELECT 1 FROM directives p WHERE p.tenant_id = x.tenant_id AND p.caused_by = ",
            $col,
            " AND p.status IN ('pending', 'running'))"
        )
    };
}

// The conditions, shared by the counts of a dry run and the deletes. In all
// of them $1 is the tenant, $2 the cutoff in ms, $3 the cutoff id.

/// Finished directives; $4 is [`third_status`].
macro_rules! old_directives {
    () => {
        concat!(
            "x.tenant_id = $1 AND x.id < $3 AND x.status IN ('succeeded', 'cancelled', $4)
             AND COALESCE(x.finished_at, x.updated_at) < $2 AND ",
            unreferenced!("x.id")
        )
    };
}
macro_rules! old_signals {
    () => {
        concat!(
            "x.tenant_id = $1 AND x.id < $3 AND x.recorded_at < $2 AND ",
            unreferenced!("x.id")
        )
    };
}
macro_rules! old_evaluations {
    () => {
        concat!(
            "x.tenant_id = $1 AND x.id < $3 AND x.evaluated_at < $2 AND ",
            unreferenced!("x.signal_id")
        )
    };
}
macro_rules! old_conversations {
    () => {
        "x.tenant_id = $1 AND x.id < $3 AND x.status <> 'open'
         AND x.ended_at IS NOT NULL AND x.ended_at < $2
         AND NOT EXISTS (SELECT 1 FROM directives p WHERE p.tenant_id = x.tenant_id
                         AND p.subject = 'conversation:' || x.id AND p.status IN ('pending', 'running'))"
    };
}

/// Counts what a prune would delete for `tenant`, deleting nothing.
pub async fn count(db: &Db, tenant: TenantId, p: &Policy) -> Result<Counts> {
    let t = tenant.to_string();
    // (query, id prefix, whether it takes $4)
    let queries: [(&'static str, &str, bool); 6] = [
        (
            concat!(
                "SELECT COUNT(*) FROM directives x WHERE ",
                old_directives!()
            ),
            "dir",
            true,
        ),
        (
            concat!(
                "SELECT COUNT(*) FROM directive_attempts a JOIN directives x
                   ON x.tenant_id = a.tenant_id AND x.id = a.directive_id WHERE ",
                old_directives!()
            ),
            "dir",
            true,
        ),
        (
            concat!("SELECT COUNT(*) FROM signals x WHERE ", old_signals!()),
            "sig",
            false,
        ),
        (
            concat!(
                "SELECT COUNT(*) FROM rule_evaluations x WHERE ",
                old_evaluations!()
            ),
            "",
            false,
        ),
        (
            concat!(
                "SELECT COUNT(*) FROM website_chat_conversations x WHERE ",
                old_conversations!()
            ),
            "conv",
            false,
        ),
        (
            concat!(
                "SELECT COUNT(*) FROM website_chat_messages m JOIN website_chat_conversations x
                   ON x.tenant_id = m.tenant_id AND x.id = m.conversation_id WHERE ",
                old_conversations!()
            ),
            "conv",
            false,
        ),
    ];
    let mut n = [0u64; 6];
    for (i, (sql, prefix, status)) in queries.into_iter().enumerate() {
        let v: i64 = on_db!(db, c => {
            let mut q = sqlx::query_scalar(sql)
                .bind(&t)
                .bind(p.cutoff)
                .bind(cut_id(prefix, p.cutoff));
            if status {
                q = q.bind(third_status(p));
            }
            q.fetch_one(c).await?
        });
        n[i] = v.max(0) as u64;
    }
    Ok(Counts {
        directives: n[0],
        attempts: n[1],
        signals: n[2],
        evaluations: n[3],
        conversations: n[4],
        messages: n[5],
    })
}

/// Deletes one batch of each kind for `tenant`. Returns what it deleted;
/// all zeros means the tenant is done.
pub async fn prune_batch(tx: &mut Tx, tenant: TenantId, p: &Policy) -> Result<Counts> {
    let t = tenant.to_string();
    let mut out = Counts::default();

    // Directives first, re-checking their status as they go (a re-drive may
    // have raced us), then the attempts of exactly those that went.
    let ids: Vec<String> = on_tx!(tx, c => {
        sqlx::query_scalar(concat!(
            "DELETE FROM directives WHERE tenant_id = $1 AND status IN ('succeeded', 'cancelled', $4)
               AND id IN (SELECT x.id FROM directives x WHERE ",
            old_directives!(),
            " ORDER BY x.id LIMIT $5) RETURNING id"
        ))
        .bind(&t)
        .bind(p.cutoff)
        .bind(cut_id("dir", p.cutoff))
        .bind(third_status(p))
        .bind(p.batch)
        .fetch_all(&mut *c)
        .await?
    });
    out.directives = ids.len() as u64;
    if !ids.is_empty() {
        out.attempts = delete_children(tx, Child::Attempts, &t, &ids).await?;
    }

    out.signals = on_tx!(tx, c => {
        sqlx::query(concat!(
            "DELETE FROM signals WHERE tenant_id = $1 AND id IN (SELECT x.id FROM signals x WHERE ",
            old_signals!(),
            " ORDER BY x.id LIMIT $4)"
        ))
        .bind(&t)
        .bind(p.cutoff)
        .bind(cut_id("sig", p.cutoff))
        .bind(p.batch)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });

    out.evaluations = on_tx!(tx, c => {
        sqlx::query(concat!(
            "DELETE FROM rule_evaluations WHERE tenant_id = $1 AND id IN
               (SELECT x.id FROM rule_evaluations x WHERE ",
            old_evaluations!(),
            " ORDER BY x.id LIMIT $4)"
        ))
        .bind(&t)
        .bind(p.cutoff)
        .bind(cut_id("", p.cutoff))
        .bind(p.batch)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });

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
    out.conversations = convs.len() as u64;
    if !convs.is_empty() {
        out.messages = delete_children(tx, Child::Messages, &t, &convs).await?;
    }
    Ok(out)
}

/// Rows deleted with their parent.
#[derive(Clone, Copy)]
enum Child {
    /// A directive's attempts.
    Attempts,
    /// A conversation's messages.
    Messages,
}

/// Deletes the children of `parents`. The statements differ by backend
/// only in how a list is bound: a PostgreSQL array, or a JSON array that
/// SQLite unpacks with `json_each`.
async fn delete_children(
    tx: &mut Tx,
    child: Child,
    tenant: &str,
    parents: &[String],
) -> Result<u64> {
    let n = match tx.inner_mut() {
        TxInner::Postgres(t) => sqlx::query(match child {
            Child::Attempts => {
                "DELETE FROM directive_attempts WHERE tenant_id = $1 AND directive_id = ANY($2)"
            }
            Child::Messages => {
                "DELETE FROM website_chat_messages WHERE tenant_id = $1 AND conversation_id = ANY($2)"
            }
        })
        .bind(tenant)
        .bind(parents)
        .execute(&mut **t)
        .await?
        .rows_affected(),
        TxInner::Sqlite(t) => sqlx::query(match child {
            Child::Attempts => {
                "DELETE FROM directive_attempts WHERE tenant_id = $1
                   AND directive_id IN (SELECT value FROM json_each($2))"
            }
            Child::Messages => {
                "DELETE FROM website_chat_messages WHERE tenant_id = $1
                   AND conversation_id IN (SELECT value FROM json_each($2))"
            }
        })
        .bind(tenant)
        .bind(serde_json::to_string(parents).map_err(crate::corrupt)?)
        .execute(&mut **t)
        .await?
        .rows_affected(),
    };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_ids_order_like_uuidv7_ids() {
        let ms = 1_700_000_000_000;
        let before = format!(
            "sig_{}",
            uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
                uuid::NoContext,
                1_699_999_999,
                999_000_000
            ))
            .simple()
        );
        let at = format!(
            "sig_{}",
            uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
                uuid::NoContext,
                1_700_000_000,
                0
            ))
            .simple()
        );
        let cut = cut_id("sig", ms);
        assert!(before < cut, "{before} < {cut}");
        assert!(at >= cut, "{at} >= {cut}");
        assert_eq!(cut_id("", 0), "000000000000");
    }
}

//! Retention: deleting what has aged out, in small batches, one tenant at a
//! time.
//!
//! What goes, when older than the cutoff:
//! - finished directives (`succeeded`, `cancelled`, and `failed` when asked)
//!   with their attempts, by the time they finished;
//! - signals, by the time they were recorded;
//! - rule evaluations, by the time they ran;
//! - what each package's [`PackageRetention`] deletes of its own tables,
//!   in the same transactions, after the platform's rows.
//!
//! What never goes: pending or running directives, and anything one of them
//! points at: the signal or directive in its `caused_by`, that signal's rule
//! evaluations (and, kept by the package, the record named by its
//! `subject`).
//!
//! Signals go by age alone otherwise: a package's row kept for longer may
//! name a signal that was pruned, and must tolerate that.
//!
//! Every batch is its own transaction, so a prune never holds locks for long
//! and can be stopped and rerun at any time. Ids are UUIDv7 in their string
//! form, so `id < prefix_<cutoff ms in hex>` bounds each scan to rows created
//! before the cutoff and the primary key serves it.

use std::collections::BTreeMap;

use fleetprompt_core::TenantId;
use fleetprompt_core::time::Millis;
use futures::future::BoxFuture;
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
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Finished directives.
    pub directives: u64,
    /// Their attempts.
    pub attempts: u64,
    /// Signals.
    pub signals: u64,
    /// Rule evaluations.
    pub evaluations: u64,
    /// The packages' kinds ([`PackageRetention::kinds`]), beside the
    /// platform's in the serialized form.
    #[serde(flatten)]
    pub packages: BTreeMap<&'static str, u64>,
}

impl Counts {
    /// Adds another batch's or tenant's counts.
    pub fn add(&mut self, o: &Counts) {
        self.directives += o.directives;
        self.attempts += o.attempts;
        self.signals += o.signals;
        self.evaluations += o.evaluations;
        for (kind, n) in &o.packages {
            *self.packages.entry(kind).or_default() += n;
        }
    }

    /// Whether nothing was (or would be) deleted.
    pub fn is_zero(&self) -> bool {
        self.directives == 0
            && self.attempts == 0
            && self.signals == 0
            && self.evaluations == 0
            && self.packages.values().all(|n| *n == 0)
    }

    /// Records a package's counts, one per kind, in its kinds' order.
    fn add_package(&mut self, package: &dyn PackageRetention, counts: &[u64]) {
        for (kind, n) in package.kinds().iter().zip(counts) {
            *self.packages.entry(kind).or_default() += n;
        }
    }
}

/// A package's part of a prune: its own tables' rows that aged out, under
/// the same [`Policy`]. Its store module holds the SQL; the binary hands
/// the packages' parts to [`count`] and [`prune_batch`].
pub trait PackageRetention: Send + Sync {
    /// The kinds of rows it deletes, as they are reported (a plural noun),
    /// in the order of the numbers its methods return.
    fn kinds(&self) -> &'static [&'static str];

    /// Counts, per kind, what a prune would delete for `tenant`.
    fn count<'a>(
        &'a self,
        db: &'a Db,
        tenant: TenantId,
        p: &'a Policy,
    ) -> BoxFuture<'a, Result<Vec<u64>>>;

    /// Deletes one batch (at most `p.batch` rows of each kind it selects)
    /// for `tenant` in the prune's transaction, after the platform's rows
    /// of that batch. All zeros means it is done with the tenant.
    fn prune_batch<'a>(
        &'a self,
        tx: &'a mut Tx,
        tenant: TenantId,
        p: &'a Policy,
    ) -> BoxFuture<'a, Result<Vec<u64>>>;
}

/// The smallest id string, with `prefix`, of a UUIDv7 minted at `ms` or
/// later: the first 12 hex digits of a UUIDv7 are its milliseconds. A
/// package's prune bounds its scans with it too.
pub fn cut_id(prefix: &str, ms: Millis) -> String {
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
/// Counts what a prune would delete for `tenant`, the platform's rows and
/// then each of `packages`', deleting nothing.
pub async fn count(
    db: &Db,
    tenant: TenantId,
    p: &Policy,
    packages: &[&dyn PackageRetention],
) -> Result<Counts> {
    let t = tenant.to_string();
    // (query, id prefix, whether it takes $4)
    let queries: [(&'static str, &str, bool); 4] = [
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
    ];
    let mut n = [0u64; 4];
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
    let mut counts = Counts {
        directives: n[0],
        attempts: n[1],
        signals: n[2],
        evaluations: n[3],
        packages: BTreeMap::new(),
    };
    for package in packages {
        let n = package.count(db, tenant, p).await?;
        counts.add_package(*package, &n);
    }
    Ok(counts)
}

/// Deletes one batch of each kind for `tenant`, the platform's and then
/// each of `packages`', in `tx`. Returns what it deleted; all zeros
/// ([`Counts::is_zero`]) means the tenant is done.
pub async fn prune_batch(
    tx: &mut Tx,
    tenant: TenantId,
    p: &Policy,
    packages: &[&dyn PackageRetention],
) -> Result<Counts> {
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

    for package in packages {
        let n = package.prune_batch(tx, tenant, p).await?;
        out.add_package(*package, &n);
    }
    Ok(out)
}

/// Rows deleted with their parent.
#[derive(Clone, Copy)]
enum Child {
    /// A directive's attempts.
    Attempts,
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

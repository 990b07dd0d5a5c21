//! Planner statistics on PostgreSQL for the tables that grow with traffic.
//!
//! A prepared statement keeps one generic plan per connection, and a plan
//! made while a table was small and had no statistics can be very wrong
//! once it is large: with every index looking equally cheap, a lookup may
//! take an index that matches only `tenant_id` and filter the whole tenant.
//! Autovacuum analyzes a table at most once a minute and only after enough
//! changes, so a new deployment (or one whose traffic grew fast) would run
//! on such plans for a while. Analyzing a table makes PostgreSQL plan the
//! statements that use it afresh, with statistics that tell the indexes
//! apart.
//!
//! Packages name their own growing tables (the engine's
//! `Package::growing_tables`), analyzed in the same pass.

use crate::{Db, Result};

/// The platform's tables whose size follows traffic.
const GROWING: &[&str] = &[
    "signals",
    "directives",
    "directive_attempts",
    "rule_evaluations",
];

/// [`analyze_grown_with`] the platform's tables alone.
pub async fn analyze_grown(db: &Db) -> Result<Vec<String>> {
    analyze_grown_with(db, &[]).await
}

/// Analyzes each growing table, the platform's and `packages`' (names
/// fixed in a package's code, never input), that holds at least a hundred rows and
/// has never been analyzed, or has more than doubled since its size was
/// last measured. Only growth changes plans: updates (a row
/// touched by every event) do not, and counting them had the busiest
/// tables analyzed every pass. Returns the tables analyzed. A no-op on
/// SQLite, whose planner does not depend on statistics this way.
pub async fn analyze_grown_with(db: &Db, packages: &[&str]) -> Result<Vec<String>> {
    let Some(pool) = db.pg_pool() else {
        return Ok(vec![]);
    };
    let tables: Vec<&str> = GROWING.iter().chain(packages).copied().collect();
    let grown: Vec<String> = sqlx::query_scalar(
        "SELECT s.relname::text FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
         WHERE s.schemaname = current_schema() AND s.relname = ANY($1)
           AND s.n_live_tup >= 100
           AND (COALESCE(s.last_analyze, s.last_autoanalyze) IS NULL
                OR s.n_live_tup > 2 * c.reltuples)",
    )
    .bind(tables)
    .fetch_all(pool)
    .await?;
    for table in &grown {
        // The name is a table's that matched a list fixed in code (the one
        // above, or a package's), never input.
        sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {table}")))
            .execute(pool)
            .await?;
    }
    Ok(grown)
}

//! Embedded, checksummed, forward-only migrations.
//!
//! A tiny migrator of our own instead of `sqlx::migrate!`: the macro would
//! compile both database drivers a second time for the host, and we need no
//! more than "apply what is new, refuse what was edited".

use sha2::{Digest, Sha256};

use crate::{Db, Result, StoreError, on_db};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "engine",
        sqlite: include_str!("../../../migrations/sqlite/0001_engine.sql"),
        postgres: include_str!("../../../migrations/postgres/0001_engine.sql"),
    },
    Migration {
        version: 2,
        name: "webchat",
        sqlite: include_str!("../../../migrations/sqlite/0002_webchat.sql"),
        postgres: include_str!("../../../migrations/postgres/0002_webchat.sql"),
    },
    Migration {
        version: 3,
        name: "escalation",
        sqlite: include_str!("../../../migrations/sqlite/0003_escalation.sql"),
        postgres: include_str!("../../../migrations/postgres/0003_escalation.sql"),
    },
    Migration {
        version: 4,
        name: "edge",
        sqlite: include_str!("../../../migrations/sqlite/0004_edge.sql"),
        postgres: include_str!("../../../migrations/postgres/0004_edge.sql"),
    },
    Migration {
        version: 5,
        name: "hot_tables",
        sqlite: include_str!("../../../migrations/sqlite/0005_hot_tables.sql"),
        postgres: include_str!("../../../migrations/postgres/0005_hot_tables.sql"),
    },
    Migration {
        version: 6,
        name: "signals_by_time",
        sqlite: include_str!("../../../migrations/sqlite/0006_signals_by_time.sql"),
        postgres: include_str!("../../../migrations/postgres/0006_signals_by_time.sql"),
    },
    Migration {
        version: 7,
        name: "conversation_touch",
        sqlite: include_str!("../../../migrations/sqlite/0007_conversation_touch.sql"),
        postgres: include_str!("../../../migrations/postgres/0007_conversation_touch.sql"),
    },
    Migration {
        version: 8,
        name: "queue_claim_in_place",
        sqlite: include_str!("../../../migrations/sqlite/0008_queue_claim_in_place.sql"),
        postgres: include_str!("../../../migrations/postgres/0008_queue_claim_in_place.sql"),
    },
    Migration {
        version: 9,
        name: "draft_discard",
        sqlite: include_str!("../../../migrations/sqlite/0009_draft_discard.sql"),
        postgres: include_str!("../../../migrations/postgres/0009_draft_discard.sql"),
    },
    Migration {
        version: 10,
        name: "email",
        sqlite: include_str!("../../../migrations/sqlite/0010_email.sql"),
        postgres: include_str!("../../../migrations/postgres/0010_email.sql"),
    },
    Migration {
        version: 11,
        name: "visitor_secret",
        sqlite: include_str!("../../../migrations/sqlite/0011_visitor_secret.sql"),
        postgres: include_str!("../../../migrations/postgres/0011_visitor_secret.sql"),
    },
    Migration {
        version: 12,
        name: "directive_destination",
        sqlite: include_str!("../../../migrations/sqlite/0012_directive_destination.sql"),
        postgres: include_str!("../../../migrations/postgres/0012_directive_destination.sql"),
    },
    Migration {
        version: 13,
        name: "members",
        sqlite: include_str!("../../../migrations/sqlite/0013_members.sql"),
        postgres: include_str!("../../../migrations/postgres/0013_members.sql"),
    },
    Migration {
        version: 14,
        name: "lifecycle",
        sqlite: include_str!("../../../migrations/sqlite/0014_lifecycle.sql"),
        postgres: include_str!("../../../migrations/postgres/0014_lifecycle.sql"),
    },
    Migration {
        version: 15,
        name: "workflow_files",
        sqlite: include_str!("../../../migrations/sqlite/0015_workflow_files.sql"),
        postgres: include_str!("../../../migrations/postgres/0015_workflow_files.sql"),
    },
    Migration {
        version: 16,
        name: "installations",
        sqlite: include_str!("../../../migrations/sqlite/0016_installations.sql"),
        postgres: include_str!("../../../migrations/postgres/0016_installations.sql"),
    },
    Migration {
        version: 17,
        name: "saved_replies",
        sqlite: include_str!("../../../migrations/sqlite/0017_saved_replies.sql"),
        postgres: include_str!("../../../migrations/postgres/0017_saved_replies.sql"),
    },
    Migration {
        version: 18,
        name: "conversation_reads",
        sqlite: include_str!("../../../migrations/sqlite/0018_conversation_reads.sql"),
        postgres: include_str!("../../../migrations/postgres/0018_conversation_reads.sql"),
    },
];

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS fleetprompt_migrations (
    version BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)";

/// Splits a migration file into statements. Our migrations hold no string
/// literals or bodies with semicolons, which keeps this honest.
fn statements(sql: &str) -> Vec<String> {
    let code: Vec<&str> = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect();
    code.join("\n")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Applies every migration not yet recorded; returns how many ran.
pub async fn run(db: &Db) -> Result<usize> {
    let mut tx = db.begin().await?;
    crate::on_tx!(tx, c => {
        sqlx::query(CREATE_TABLE).execute(&mut *c).await?;
    });
    if let crate::db::TxInner::Postgres(t) = tx.inner_mut() {
        // Several nodes may start together: one migrates, the others wait.
        sqlx::query("SELECT pg_advisory_xact_lock(7046617)")
            .execute(&mut **t)
            .await?;
    }
    tx.commit().await?;

    let applied: Vec<(i64, String)> = on_db!(db, c => {
        sqlx::query_as("SELECT version, checksum FROM fleetprompt_migrations ORDER BY version")
            .fetch_all(c)
            .await?
    });
    let mut ran = 0;
    for m in MIGRATIONS {
        let sql = match db.backend() {
            crate::Backend::Sqlite => m.sqlite,
            crate::Backend::Postgres => m.postgres,
        };
        let checksum = hex::encode(Sha256::digest(sql.as_bytes()));
        if let Some((_, seen)) = applied.iter().find(|(v, _)| *v == m.version) {
            if *seen != checksum {
                return Err(StoreError::Migration {
                    version: m.version,
                    reason: format!(
                        "{} was edited after it was applied; add a new migration instead",
                        m.name
                    ),
                });
            }
            continue;
        }
        let mut tx = db.begin().await?;
        if let crate::db::TxInner::Postgres(t) = tx.inner_mut() {
            sqlx::query("SELECT pg_advisory_xact_lock(7046617)")
                .execute(&mut **t)
                .await?;
        }
        let already: Option<i64> = crate::on_tx!(tx, c => {
            sqlx::query_scalar("SELECT version FROM fleetprompt_migrations WHERE version = $1")
                .bind(m.version)
                .fetch_optional(&mut *c)
                .await?
        });
        if already.is_some() {
            continue;
        }
        for stmt in statements(sql) {
            crate::on_tx!(tx, c => {
                sqlx::query(sqlx::AssertSqlSafe(stmt.as_str()))
                    .execute(&mut *c)
                    .await
                    .map_err(|e| StoreError::Migration {
                        version: m.version,
                        reason: e.to_string(),
                    })?;
            });
        }
        crate::on_tx!(tx, c => {
            sqlx::query(
                "INSERT INTO fleetprompt_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(&checksum)
            .bind(fleetprompt_core::time::now_ms())
            .execute(&mut *c)
            .await?;
        });
        tx.commit().await?;
        ran += 1;
    }
    Ok(ran)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_and_drops_comments() {
        let s = statements("-- a; b\nCREATE TABLE a (x INT);\n\n-- b\nCREATE INDEX i ON a (x);\n");
        assert_eq!(s.len(), 2);
        assert!(s[0].contains("CREATE TABLE a"));
        assert!(!s[0].contains("--"));
    }
}

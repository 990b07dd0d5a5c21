//! The store's own functions on a real database, where what they promise
//! is about the database itself:
//! - a lease holds its directive until it ends, even past its due time, and
//!   on PostgreSQL a claim rewrites no index entry (a heap-only update),
//!   which the engine's throughput depends on;
//! - a conversation's last activity never moves back, whichever of two
//!   touches (a visitor's batch, an operator's reply) commits last;
//! - the statistics pass analyzes a growing PostgreSQL table when it first
//!   holds a hundred rows and again each time it has doubled, and not
//!   otherwise;
//! - a stored value that does not decode (an id of another type, an
//!   unknown status, JSON that does not parse) is a corrupt record, on
//!   every read that meets it (a list, a claim), never a wrong value or a
//!   panic.

use std::time::Duration;

use fleetprompt_core::time::now_ms;
use fleetprompt_core::{DirectiveId, DirectiveKind, Origin, RetryPolicy, TenantId};
use fleetprompt_store::db::Durability;
use fleetprompt_store::directive::{self, NewDirective};
use fleetprompt_store::queue;
use fleetprompt_store::{Db, StoreError};
use fleetprompt_system_tests::{Backend, TestDb, both_backends};
use fleetprompt_webchat::store::{batch, conversation};
use fleetprompt_webchat::types::id::{ConversationId, SiteId, VisitorId};
use serde_json::json;

both_backends!(
    a_lease_holds_its_directive_until_it_ends,
    a_claim_shares_its_batch_and_keeps_destinations_in_their_room,
    a_conversation_touch_never_moves_back,
    a_value_that_does_not_decode_is_corrupt,
);

const LEASE_MS: i64 = 60_000;

async fn open(backend: Backend) -> (TestDb, Db) {
    let test_db = TestDb::new(backend).await.unwrap();
    let db = Db::connect(&test_db.url, Durability::Normal).await.unwrap();
    fleetprompt_store::migrate::run(&db).await.unwrap();
    (test_db, db)
}

async fn new_tenant(db: &Db) -> TenantId {
    let mut tx = db.begin().await.unwrap();
    let (tenant, _) = fleetprompt_store::tenant::create(&mut tx, "store-test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    tenant.id
}

/// Creates `n` no-op directives due a second ago; returns their ids.
async fn due_directives(db: &Db, tenant: TenantId, n: usize) -> Vec<DirectiveId> {
    insert_due(db, tenant, n, "noop", json!({}), "store-test", |_| {
        now_ms() - 1_000
    })
    .await
}

/// Inserts `n` directives of `tenant` of `kind` with `args`, the i-th due
/// at `run_at(i)`, in one transaction; returns their ids.
async fn insert_due(
    db: &Db,
    tenant: TenantId,
    n: usize,
    kind: &str,
    args: serde_json::Value,
    key_prefix: &str,
    run_at: impl Fn(usize) -> i64,
) -> Vec<DirectiveId> {
    let rows: Vec<(TenantId, NewDirective)> = (0..n)
        .map(|i| {
            let id = DirectiveId::new();
            let new = NewDirective {
                id,
                kind: DirectiveKind::parse(kind).unwrap(),
                args: args.clone(),
                dedupe_key: format!("{key_prefix}:{id}"),
                subject: None,
                retry: RetryPolicy::default(),
                run_at: run_at(i),
                origin: Origin::System {
                    component: "test".into(),
                },
                caused_by: None,
            };
            (tenant, new)
        })
        .collect();
    let mut tx = db.begin().await.unwrap();
    let created = directive::insert_many(&mut tx, &rows).await.unwrap();
    tx.commit().await.unwrap();
    created.into_iter().map(|c| c.id()).collect()
}

async fn a_lease_holds_its_directive_until_it_ends(backend: Backend) {
    let (test_db, db) = open(backend).await;
    let tenant = new_tenant(&db).await;
    // Due a second ago, so the lease (not the due time) must hold it.
    let id = due_directives(&db, tenant, 1).await[0];

    let claimed = queue::claim(&db, "worker-a", LEASE_MS, 10, queue::ClaimShape::EARLIEST)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!((claimed[0].id, claimed[0].attempt), (id, 1));

    // Running, past its due time, lease live: no other claim takes it and
    // the reaper leaves it alone.
    assert!(
        queue::claim(&db, "worker-b", LEASE_MS, 10, queue::ClaimShape::EARLIEST)
            .await
            .unwrap()
            .is_empty(),
        "a running directive was claimed twice"
    );
    assert!(
        queue::expired_leases(&db, now_ms(), 10)
            .await
            .unwrap()
            .is_empty(),
        "a live lease was reaped"
    );
    let row = directive::get(&db, tenant, id).await.unwrap();
    assert_eq!(row.status.as_str(), "running");
    // The heartbeat renews only its holder's lease, at its attempt.
    let held = queue::Held {
        tenant,
        id,
        attempt: 1,
    };
    assert_eq!(
        queue::renew(&db, "worker-b", LEASE_MS, &[held])
            .await
            .unwrap(),
        0
    );
    let stale = queue::Held { attempt: 2, ..held };
    assert_eq!(
        queue::renew(&db, "worker-a", LEASE_MS, &[stale])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        queue::renew(&db, "worker-a", LEASE_MS, &[held])
            .await
            .unwrap(),
        1
    );

    // Once the lease has run out, the reaper finds it, with its holder.
    let expired = queue::expired_leases(&db, now_ms() + LEASE_MS + 1_000, 10)
        .await
        .unwrap();
    assert_eq!(expired.len(), 1, "an expired lease was not found");
    assert_eq!(
        (
            expired[0].id,
            expired[0].attempt,
            expired[0].worker.as_str()
        ),
        (id, 1, "worker-a")
    );

    if backend == Backend::Postgres {
        // The claim changed no indexed column: PostgreSQL counted it as a
        // heap-only update. Statistics reach the view a while after the
        // backend goes idle, so both counts are read in one statement: -1
        // until the update shows, then the number of non-HOT updates.
        let non_hot = test_db
            .wait_scalar(
                "SELECT COALESCE(SUM(CASE WHEN n_tup_upd = 0 THEN -1 ELSE n_tup_upd - n_tup_hot_upd END), -1)::bigint
                 FROM pg_stat_user_tables WHERE relname = 'directives'",
                |n| n >= 0,
                Duration::from_secs(20),
                "the claim's update never reached pg_stat_user_tables",
            )
            .await;
        assert_eq!(non_hot, 0, "the claim or the renewal rewrote index entries");
    }
    db.close().await;
}

/// Creates `n` directives of `tenant` for `destination`, due `ago_ms` ago
/// (each one a millisecond later than the one before).
async fn due_for(
    db: &Db,
    tenant: TenantId,
    destination: &str,
    n: usize,
    ago_ms: i64,
) -> Vec<DirectiveId> {
    let now = now_ms();
    insert_due(
        db,
        tenant,
        n,
        "webhook.post",
        json!({ "destination": destination }),
        "shape",
        |i| now - ago_ms + i as i64,
    )
    .await
}

async fn a_claim_shares_its_batch_and_keeps_destinations_in_their_room(backend: Backend) {
    let (_test_db, db) = open(backend).await;
    let a = new_tenant(&db).await;
    let mut tx = db.begin().await.unwrap();
    let (b, _) = fleetprompt_store::tenant::create(&mut tx, "store-test-b")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let b = b.id;
    // A's burst is older than all of B's work: the earliest-due claim
    // would take only A's.
    due_for(&db, a, "slow", 20, 60_000).await;
    due_for(&db, a, "other", 20, 50_000).await;
    due_for(&db, b, "quick", 5, 1_000).await;
    let shape = queue::ClaimShape {
        window: 100,
        default_room: 3,
        rooms: &[queue::DestinationRoom {
            tenant: a,
            destination: "slow".into(),
            room: 2,
        }],
    };
    let got = queue::claim(&db, "w", LEASE_MS, 8, shape).await.unwrap();
    let count = |t: TenantId, d: &str| {
        got.iter()
            .filter(|c| c.tenant == t && c.destination.as_deref() == Some(d))
            .count()
    };
    assert_eq!(got.len(), 8, "{got:?}");
    assert_eq!(count(a, "slow"), 2, "held to its room");
    assert_eq!(count(b, "quick"), 3, "held to the default room");
    // Round-robin by tenant: B's three come first in their rounds though
    // A's are older; the rounds B has nothing for go to A.
    assert_eq!(count(a, "other"), 3);
    // A destination with no room is stepped over.
    let shape = queue::ClaimShape {
        window: 100,
        default_room: 100,
        rooms: &[queue::DestinationRoom {
            tenant: a,
            destination: "slow".into(),
            room: 0,
        }],
    };
    let got = queue::claim(&db, "w", LEASE_MS, 100, shape).await.unwrap();
    assert!(
        got.iter().all(|c| c.destination.as_deref() != Some("slow")),
        "{got:?}"
    );
    assert_eq!(got.len(), 17 + 2, "the rest of A's other, and of B's quick");
    // Handing a claim back undoes it: pending again, its attempt not counted.
    let first = &got[0];
    let held = queue::Held {
        tenant: first.tenant,
        id: first.id,
        attempt: first.attempt,
    };
    assert_eq!(queue::unclaim(&db, "w", &[held]).await.unwrap(), 1);
    let row = directive::get(&db, first.tenant, first.id).await.unwrap();
    assert_eq!(row.status.as_str(), "pending");
    assert_eq!(row.attempts, 0);
    // Pulling forward makes a destination's waiting retries due now, and
    // leaves a directive delayed on purpose alone.
    due_for(&db, a, "later", 3, 100).await;
    due_for(&db, a, "later", 1, -600_000).await;
    let closed = |tenant, destination: &str| queue::DestinationRoom {
        tenant,
        destination: destination.into(),
        room: 0,
    };
    let only_later = [closed(a, "slow"), closed(a, "other"), closed(b, "quick")];
    let shape = queue::ClaimShape {
        window: 100,
        default_room: 100,
        rooms: &only_later,
    };
    let tried = queue::claim(&db, "w", LEASE_MS, 100, shape).await.unwrap();
    assert_eq!(tried.len(), 3, "{tried:?}");
    let now = now_ms();
    let retries: Vec<queue::Completion> = tried
        .iter()
        .map(|c| queue::Completion {
            tenant: c.tenant,
            id: c.id,
            attempt: c.attempt,
            worker: "w".into(),
            started_at: now,
            finished_at: now,
            outcome: fleetprompt_core::AttemptOutcome::Retrying,
            error: Some("503".into()),
            http_status: Some(503),
            external_ref: None,
            next_attempt_at: Some(now + 600_000),
            result: None,
            signal: None,
        })
        .collect();
    assert_eq!(retries.len(), 3);
    let mut tx = db.begin().await.unwrap();
    queue::complete(&mut tx, &retries).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        queue::pull_forward(&db, a, "later", Some(1)).await.unwrap(),
        1
    );
    assert_eq!(queue::pull_forward(&db, a, "later", None).await.unwrap(), 2);
    assert_eq!(queue::pull_forward(&db, a, "later", None).await.unwrap(), 0);
    assert_eq!(queue::pull_forward(&db, b, "later", None).await.unwrap(), 0);
    db.close().await;
}

async fn a_conversation_touch_never_moves_back(backend: Backend) {
    let (_test_db, db) = open(backend).await;
    let tenant = new_tenant(&db).await;
    let t0 = now_ms();
    let id = ConversationId::new();
    let mut tx = db.begin().await.unwrap();
    batch::write(
        &mut tx,
        &batch::Rows {
            conversations: vec![(
                tenant,
                conversation::ConversationRow {
                    id,
                    site_id: SiteId::new(),
                    visitor_id: VisitorId::new(),
                    status: "open".into(),
                    page_url: None,
                    started_at: t0,
                    last_message_at: t0,
                    ended_at: None,
                    ended_reason: None,
                    assignee: None,
                },
            )],
            now: t0,
            ..batch::Rows::default()
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // An operator's reply at t0 + 2 s commits first ...
    touch_as(&db, Toucher::Reply, tenant, id, t0 + 2_000).await;
    assert_eq!(last_message_at(&db, tenant, id).await, t0 + 2_000);
    // ... then a visitor's batch stamped t0 + 1 s: the later time stays.
    touch_as(&db, Toucher::Batch, tenant, id, t0 + 1_000).await;
    assert_eq!(
        last_message_at(&db, tenant, id).await,
        t0 + 2_000,
        "a batch moved it back"
    );
    // The same the other way round, and a later touch still moves it on.
    touch_as(&db, Toucher::Reply, tenant, id, t0 + 1_500).await;
    assert_eq!(
        last_message_at(&db, tenant, id).await,
        t0 + 2_000,
        "a reply moved it back"
    );
    touch_as(&db, Toucher::Batch, tenant, id, t0 + 3_000).await;
    assert_eq!(last_message_at(&db, tenant, id).await, t0 + 3_000);
    db.close().await;
}

/// The two paths that move a conversation's last activity.
enum Toucher {
    /// An operator's reply: `conversation::touch`.
    Reply,
    /// A batch of visitor messages: `batch::write`.
    Batch,
}

/// Touches conversation `id` at `at` through `how`, in a transaction of its own.
async fn touch_as(db: &Db, how: Toucher, tenant: TenantId, id: ConversationId, at: i64) {
    let mut tx = db.begin().await.unwrap();
    match how {
        Toucher::Reply => conversation::touch(&mut tx, tenant, id, at).await.unwrap(),
        Toucher::Batch => {
            let rows = batch::Rows {
                touched: vec![(tenant, id)],
                now: at,
                ..batch::Rows::default()
            };
            batch::write(&mut tx, &rows).await.unwrap();
        }
    }
    tx.commit().await.unwrap();
}

async fn last_message_at(db: &Db, tenant: TenantId, id: ConversationId) -> i64 {
    conversation::get(db, tenant, id)
        .await
        .unwrap()
        .last_message_at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_follow_growth_only() {
    let (test_db, db) = open(Backend::Postgres).await;
    // Autovacuum's own analyze would race the pass under test.
    // On a connection of the test's own: the store lends out no pool.
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&test_db.url)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE directives SET (autovacuum_enabled = false)")
        .execute(&mut c)
        .await
        .unwrap();
    let tenant = new_tenant(&db).await;
    // Table statistics reach pg_stat_user_tables a second or two after the
    // writing backend goes idle: each step waits until they show the rows
    // it wrote, then runs one pass.
    let pass_after = |live: i64| {
        let (db, test_db) = (db.clone(), &test_db);
        async move {
            test_db
                .wait_scalar(
                    "SELECT COALESCE(SUM(n_live_tup), 0)::bigint FROM pg_stat_user_tables
                     WHERE relname = 'directives'",
                    |n| n >= live,
                    Duration::from_secs(15),
                    "the directives' row count never reached pg_stat_user_tables",
                )
                .await;
            fleetprompt_store::statistics::analyze_grown(&db)
                .await
                .unwrap()
                .contains(&"directives".to_owned())
        }
    };

    due_directives(&db, tenant, 60).await;
    assert!(!pass_after(60).await, "a table of 60 rows was analyzed");
    due_directives(&db, tenant, 60).await;
    assert!(
        pass_after(120).await,
        "a never-analyzed table of 120 rows was not analyzed"
    );
    // Analyzed at 120 rows: updates, and growth short of double, do not count.
    due_directives(&db, tenant, 100).await;
    let running =
        fleetprompt_store::queue::claim(&db, "w", 60_000, 200, queue::ClaimShape::EARLIEST)
            .await
            .unwrap();
    assert_eq!(running.len(), 200);
    assert!(
        !pass_after(220).await,
        "the table was analyzed again before it doubled"
    );
    due_directives(&db, tenant, 100).await;
    assert!(
        pass_after(320).await,
        "the table was not analyzed again once it had doubled"
    );
    db.close().await;
}

async fn a_value_that_does_not_decode_is_corrupt(backend: Backend) {
    let (test_db, db) = open(backend).await;
    let tenant = new_tenant(&db).await;
    let ids = due_directives(&db, tenant, 1).await;
    let id = ids[0];
    // Undamaged, the row reads back as written.
    let row = directive::get(&db, tenant, id).await.unwrap();
    assert_eq!(row.id, id);
    assert_eq!(row.args, json!({}));

    // An id of another type (a signal's prefix) where a directive id is
    // stored: the row no longer decodes, whether listed or claimed.
    let signal_id = fleetprompt_core::SignalId::new();
    let damage = |sql: String| {
        let test_db = &test_db;
        async move { assert_eq!(test_db.execute(&sql).await.unwrap(), 1, "{sql}") }
    };
    damage(format!(
        "UPDATE directives SET id = '{signal_id}' WHERE id = '{id}'"
    ))
    .await;
    let m = corrupt(
        "a list",
        directive::list(&db, tenant, None, 10)
            .await
            .map(|r| r.len()),
    );
    assert!(m.contains("invalid directive id"), "{m}");
    let m = corrupt(
        "a claim",
        queue::claim(&db, "w1", LEASE_MS, 10, queue::ClaimShape::EARLIEST)
            .await
            .map(|c| c.len()),
    );
    assert!(m.contains("invalid directive id"), "{m}");
    // The failed claim wrote nothing: its transaction rolled back.
    assert_eq!(
        test_db
            .scalar("SELECT COUNT(*) FROM directives WHERE status = 'pending'")
            .await
            .unwrap(),
        1
    );

    // The id restored, an unknown status, then arguments that are not JSON.
    damage(format!(
        "UPDATE directives SET id = '{id}', status = 'lost' WHERE id = '{signal_id}'"
    ))
    .await;
    let m = corrupt("a get", directive::get(&db, tenant, id).await.map(|r| r.id));
    assert!(m.contains("unknown status"), "{m}");
    damage(format!(
        "UPDATE directives SET status = 'pending', args = '{{not json' WHERE id = '{id}'"
    ))
    .await;
    corrupt("a get", directive::get(&db, tenant, id).await.map(|r| r.id));
    corrupt(
        "a claim",
        queue::claim(&db, "w1", LEASE_MS, 10, queue::ClaimShape::EARLIEST)
            .await
            .map(|c| c.len()),
    );

    // Repaired, it reads and claims again.
    damage(format!(
        "UPDATE directives SET args = '{{}}' WHERE id = '{id}'"
    ))
    .await;
    let claimed = queue::claim(&db, "w1", LEASE_MS, 10, queue::ClaimShape::EARLIEST)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!((claimed[0].tenant, claimed[0].id), (tenant, id));
    db.close().await;
}

/// The message of a corrupt record, which `r` must be.
fn corrupt<T: std::fmt::Debug>(what: &str, r: Result<T, StoreError>) -> String {
    match r {
        Err(StoreError::Corrupt(m)) => m,
        other => panic!("{what}: expected a corrupt record, got {other:?}"),
    }
}
